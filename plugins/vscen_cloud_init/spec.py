"""What ``--cloud-init`` takes (``KEY=VALUE``, several per option joined by ``,``, or the
option repeated) and the NoCloud files made of it: ``user-data``, ``meta-data`` and, when
given, ``network-config``.

A root password is read from its file only when the seed is written, or compared with a seed
that exists (in memory: the same command run again changes nothing), never at parse time; it
goes nowhere but into the seed."""

from __future__ import annotations

import os
import re
import stat

#: the keys of --cloud-init: files of one's own, or shortcuts that write the user-data
FILE_KEYS = ("user-data", "meta-data", "network-config")
SHORTCUTS = ("ssh-key", "root-password-file", "hostname")
KEYS = FILE_KEYS + SHORTCUTS
#: what a user-data file may start with: the formats cloud-init recognises
USER_DATA_HEADERS = (b"#cloud-config", b"#!", b"#include", b"#cloud-boothook", b"Content-Type:",
                     b"## template: jinja", b"#part-handler", b"#cloud-config-archive", b"\x1f\x8b")
#: a seed file larger than this is a mistake (cloud-init reads it all into memory)
MAX_FILE = 16 * 1024**2
_HOSTNAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
_PUBLIC_KEY = re.compile(r"(ssh-(rsa|ed25519|dss)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com)"
                         r" [A-Za-z0-9+/]+={0,3}( [^\n]*)?")


def parse_item(text: str) -> tuple[tuple[str, str], ...]:
    """``KEY=VALUE[,KEY=VALUE...]`` -> ((key, value), ...), each checked; a ValueError (the
    message completes "cloud_init: 'TEXT' ...") otherwise."""
    out = []
    for part in filter(None, str(text).split(",")):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in KEYS:
            raise ValueError(f"is not KEY=VALUE with KEY one of {', '.join(KEYS)}")
        if not value:
            raise ValueError(f"gives {key} no value")
        out.append((key, _value(key, value)))
    if not out:
        raise ValueError(f"is empty; give KEY=VALUE with KEY one of {', '.join(KEYS)}")
    return tuple(out)


def _value(key: str, value: str) -> str:
    if key == "hostname":
        if not _HOSTNAME.fullmatch(value):
            raise ValueError(f"hostname '{value}' is not a host name (letters, digits and '-' in "
                             "labels of up to 63, joined by '.')")
        return value
    path = os.path.abspath(os.path.expanduser(value))
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ValueError(f"{key}: cannot read {path} ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{key}: {path} is not a regular file")
    if st.st_size > MAX_FILE:
        raise ValueError(f"{key}: {path} is larger than {MAX_FILE // 1024**2}MiB")
    if key == "root-password-file":
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ValueError(f"root-password-file: {path} can be read by others; chmod 600 it")
        return path  # read only when the seed is written
    data = _read(key, path)
    if key == "ssh-key":
        public_keys(data, path)
    elif key == "user-data" and not data.lstrip().startswith(USER_DATA_HEADERS):
        raise ValueError(f"user-data: {path} starts with none of #cloud-config, #!, #include, "
                         "Content-Type: (cloud-init would ignore it)")
    elif key in ("meta-data", "network-config") and not data.strip():
        raise ValueError(f"{key}: {path} is empty")
    return path


def _read(key: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(MAX_FILE + 1)
    except OSError as exc:
        raise ValueError(f"{key}: cannot read {path} ({exc.strerror})") from None


def public_keys(data: bytes, path: str) -> list[str]:
    """The OpenSSH public keys of an ``ssh-key`` file (one a line, ``#`` comments allowed)."""
    text = data.decode("utf-8", "replace")
    if "PRIVATE KEY" in text:
        raise ValueError(f"ssh-key: {path} is a private key; give the public one ({os.path.basename(path)}.pub)")
    keys = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    bad = [k for k in keys if not _PUBLIC_KEY.fullmatch(k)]
    if not keys or bad:
        raise ValueError(f"ssh-key: {path} is not an OpenSSH public key file (lines such as "
                         "'ssh-ed25519 AAAA... user@host')")
    return keys


def pairs(value) -> list[tuple[str, str]]:
    """The setting's value (a tuple of items, each a tuple of pairs) as one list of pairs."""
    return [pair for item in value or () for pair in item]


def check(value, settings) -> None:
    """Each key once (ssh-key as often as wanted); a file of one's own and the shortcuts that
    would write the same file are not combined."""
    given = pairs(value)
    keys = [k for k, _ in given]
    twice = sorted({k for k in keys if keys.count(k) > 1 and k != "ssh-key"})
    if twice:
        raise ValueError(f"{twice[0]} is given {keys.count(twice[0])} times; give it once")
    if "user-data" in keys and ({"ssh-key", "root-password-file"} & set(keys)):
        raise ValueError("user-data=FILE cannot be combined with ssh-key or root-password-file, which "
                         "write a user-data of their own; put them into FILE, or leave out user-data")
    if "meta-data" in keys and "hostname" in keys:
        raise ValueError("meta-data=FILE cannot be combined with hostname, which writes the meta-data's "
                         "local-hostname; put it into FILE, or leave out meta-data")


def default_hostname(name: str) -> str:
    """A host name from the guest's name (which may hold '_', '+', '.')."""
    host = re.sub(r"[^A-Za-z0-9-]+", "-", name).strip("-")[:63].rstrip("-")
    return host or "guest"


def _q(text: str) -> str:
    """A YAML double-quoted scalar (JSON's string syntax is YAML's)."""
    import json  # here: the seed is made in few runs

    return json.dumps(text, ensure_ascii=False)


def describe(value) -> str:
    """What the seed holds, for the plan: names and sources, never a secret."""
    given = pairs(value)
    by_key = dict(given)
    if "user-data" in by_key:
        user = f"user-data from {by_key['user-data']}"
    else:
        parts = [f"ssh keys of {', '.join(p for k, p in given if k == 'ssh-key')}"] if "ssh-key" in by_key else []
        if "root-password-file" in by_key:
            parts.append(f"root's password from {by_key['root-password-file']}")
        if "hostname" in by_key:
            parts.append(f"hostname {by_key['hostname']}")
        user = "#cloud-config user-data" + (f" ({'; '.join(parts)})" if parts else " (empty)")
    meta = f"meta-data from {by_key['meta-data']}" if "meta-data" in by_key else "meta-data (instance-id, local-hostname)"
    net = f", network-config from {by_key['network-config']}" if "network-config" in by_key else ""
    return f"{user}, {meta}{net}"


def seed_files(value, guest: str) -> dict[str, bytes]:
    """The seed's files by name (the root password read from its file here)."""
    given = pairs(value)
    files: dict[str, bytes] = {}
    by_key = dict(given)
    hostname = by_key.get("hostname")
    if "user-data" in by_key:
        files["user-data"] = _read("user-data", by_key["user-data"])
    else:
        lines = ["#cloud-config", "# written by vscen"]
        if hostname:
            lines.append(f"hostname: {_q(hostname)}")
        keys = [k for key, path in given if key == "ssh-key" for k in public_keys(_read("ssh-key", path), path)]
        if keys:
            lines += ["ssh_authorized_keys:", *[f"  - {_q(k)}" for k in keys],
                      "users:", "  - default", "  - name: root", "    ssh_authorized_keys:", *[f"      - {_q(k)}" for k in keys],
                      "disable_root: false"]
        if "root-password-file" in by_key:
            password = root_password(by_key["root-password-file"])
            lines += ["chpasswd:", "  expire: false", "  users:", "    - name: root",
                      f"      password: {_q(password)}", "      type: text"]
        files["user-data"] = ("\n".join(lines) + "\n").encode()
    if "meta-data" in by_key:
        files["meta-data"] = _read("meta-data", by_key["meta-data"])
    else:
        files["meta-data"] = (f"instance-id: {_q('vscen-' + guest)}\n"
                              f"local-hostname: {_q(hostname or default_hostname(guest))}\n").encode()
    if "network-config" in by_key:
        files["network-config"] = _read("network-config", by_key["network-config"])
    return files


def root_password(path: str) -> str:
    from vscen import UsageError

    try:
        with open(path, encoding="utf-8") as f:
            first = f.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cloud_init: root-password-file: cannot read {path} ({getattr(exc, 'strerror', None) or exc})") from None
    if not first:
        raise UsageError(f"cloud_init: root-password-file: {path} holds no password on its first line")
    return first
