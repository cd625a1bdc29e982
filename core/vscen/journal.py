"""The journal of a guest: what vscen created or changed for it, one record per step, kept
beside the domain XML (``<output>/<name>/journal.json``).

It is written after every step, so whatever happens, it lists what exists because of vscen;
a failed run takes its own records back, and ``vscen destroy`` takes back all of them.
"""

from __future__ import annotations

import json
from pathlib import Path

from vscen.errors import UsageError

FILENAME = "journal.json"


class Journal:
    def __init__(self, path: Path, name: str, uri: str, entries: list[dict] | None = None):
        self.path = path
        self.name = name
        self.uri = uri
        #: [{"owner": action or "vscen", "record": {...}}], oldest first
        self.entries: list[dict] = entries or []

    @classmethod
    def open(cls, directory: Path, name: str, uri: str) -> Journal:
        path = directory / FILENAME
        return cls.load(path) if path.exists() else cls(path, name, uri)

    @classmethod
    def load(cls, path: Path) -> Journal:
        try:
            data = json.loads(path.read_text())
            return cls(path, data["name"], data["uri"], list(data["entries"]))
        except FileNotFoundError:
            raise UsageError(f"journal: {path} does not exist") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"journal: {path} is unreadable or damaged ({exc})") from None

    def add(self, owner: str, record: dict) -> dict:
        entry = {"owner": owner, "record": record}
        self.entries.append(entry)
        self.save()
        return entry

    def remove(self, entry: dict) -> None:
        self.entries.remove(entry)
        self.save()

    def save(self) -> None:
        from vscen.files import atomic_write

        if not self.entries:
            self.path.unlink(missing_ok=True)
            return
        if not self.path.parent.is_dir():
            return  # its directory was taken back: nothing left to record
        data = {"name": self.name, "uri": self.uri, "entries": self.entries}
        atomic_write(self.path, json.dumps(data, indent=2) + "\n", mode=0o600)
