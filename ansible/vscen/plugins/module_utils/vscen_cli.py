# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Running the ``vscen`` command on the managed node, for the modules of vscen.kvm: the
executable (``vscen_path``, else ``vscen`` on PATH) with an argument list, never a shell;
vscen's JSON from stdout; its one-line error from stderr, as the task's failure message.

Settings reach ``vscen run`` as a config file (``--config``): every vscen setting, the core's
and each plugin's, is a config key by design, with the same parsing and checks as its option,
so the module needs no table of option names that would age with the plugins installed.
"""

import json
import os
import re

#: what a config key looks like (vscen's setting names: ``memory``, ``tune_host``, ``disk.size``)
_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_-]*\Z")
#: settings that are options of the module itself: they also steer ``vscen status``/``destroy``
MODULE_OPTIONS = {"name": "name", "output": "output", "connect": "uri"}
#: keeps Typer's error boxes and vscen's output plain, whatever the managed node's terminal
PLAIN = {"NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200"}


class SettingsError(ValueError):
    """A setting the module cannot hand to vscen; the message names it."""


def vscen_command(module):
    """The vscen executable: ``vscen_path`` if given, else ``vscen`` on PATH; fails the task
    with a message saying which was looked for."""
    path = module.params.get("vscen_path")
    if path:
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            module.fail_json(msg="vscen_path: '%s' is not an executable file" % path)
        return path
    found = module.get_bin_path("vscen")
    if not found:
        module.fail_json(msg="vscen: no 'vscen' executable on PATH (%s) of the managed node; install vscen "
                             "there or give vscen_path" % os.environ.get("PATH", ""))
    return found


def error_message(stderr, stdout=""):
    """vscen's error as one line: its ``error: ...`` line, with the problems it lists after it
    joined by '; '; else the last line on stderr (a usage error of the CLI itself)."""
    lines = [line.rstrip() for line in (stderr or "").splitlines()]
    for i, line in enumerate(lines):
        if line.startswith("error: "):
            problems = []
            for more in lines[i + 1:]:
                if not more.startswith("  - "):
                    break
                problems.append(more[4:])
            head = line[len("error: "):]
            return head + (" " + "; ".join(problems) if problems else "")
    useful = [line.strip(" \u2502\u2500\u256d\u256e\u2570\u256f|") for line in lines]
    useful = [line for line in useful if line]
    return useful[-1] if useful else (stdout or "").strip()[-300:] or "vscen failed with no message"


def run_vscen(module, args, rewrite=None):
    """Run vscen with *args*: (stdout, stderr); on failure the task fails with vscen's message
    (*rewrite*: {text: replacement} applied to it, for the module's own temporary paths)."""
    cmd = [vscen_command(module)] + list(args)
    rc, out, err = module.run_command(cmd, environ_update=PLAIN)
    if rc != 0:
        fail(module, rc, out, err, cmd, rewrite)
    return out, err


def fail(module, rc, out, err, cmd, rewrite=None):
    msg = error_message(err, out)
    for text, replacement in (rewrite or {}).items():
        msg = msg.replace(text, replacement)
    module.fail_json(msg=msg, rc=rc, stdout=out, stderr=err, cmd=cmd)


def load_json(module, out, cmd):
    try:
        return json.loads(out)
    except ValueError as exc:
        module.fail_json(msg="vscen %s printed no JSON (%s); is it a vscen that knows --json?" % (cmd, exc),
                         stdout=out)


def warn_lines(module, stderr):
    """vscen's ``warning:`` lines become the task's warnings."""
    for line in (stderr or "").splitlines():
        if line.startswith("warning: "):
            module.warn("vscen: " + line[len("warning: "):])


# -- settings as a vscen config file (TOML) -----------------------------------------------------

def split_settings(settings):
    """(config values, --set items) of the task's *settings*: keys that are XPaths (``./...``,
    ``/...``) customise the finished XML (``--set XPATH=VALUE``), the others are vscen settings.
    A dotted key (``disk.size``) is a key of the table before the dot (``[disk] size``)."""
    values, sets = {}, []
    for key, value in (settings or {}).items():
        key = str(key)
        if value is None:
            continue
        if key.startswith(("./", "/")):
            if isinstance(value, bool) or isinstance(value, (list, dict)):
                raise SettingsError("settings: '%s' customises the XML and takes one string value "
                                    "(quote yes/no/on/off), not %r" % (key, value))
            sets.append("%s=%s" % (key, value))
            continue
        table, _, sub = key.partition(".")
        if key in MODULE_OPTIONS:
            raise SettingsError("settings: '%s' is the module's option '%s'; give it there"
                                % (key, MODULE_OPTIONS[key]))
        for part in (table, sub) if sub else (table,):
            if not _KEY.match(part):
                raise SettingsError("settings: '%s' is not a vscen setting name (letters, digits, '_' and '-', "
                                    "'disk.KEY' for a disk key) nor an XPath ('./devices/...')" % key)
        if sub:
            values.setdefault(table, {})
            if not isinstance(values[table], dict):
                raise SettingsError("settings: '%s' and '%s' both given" % (table, key))
            values[table][sub] = value
        elif isinstance(value, dict):
            if not isinstance(values.setdefault(key, {}), dict):
                raise SettingsError("settings: '%s' given twice" % key)
            for sub, item in value.items():
                if not _KEY.match(str(sub)):
                    raise SettingsError("settings: '%s.%s' is not a vscen setting name" % (key, sub))
                values[key][str(sub)] = item
        else:
            if isinstance(values.get(key), dict):
                raise SettingsError("settings: '%s' and '%s.KEY' both given" % (key, key))
            values[key] = value
    return values, sets


def to_toml(values):
    """*values* (scalars, lists of scalars, one level of tables) as TOML text."""
    top, tables = [], []
    for key in values:
        value = values[key]
        if isinstance(value, dict):
            tables.append("[%s]" % key)
            tables.extend("%s = %s" % (sub, _value("%s.%s" % (key, sub), item)) for sub, item in value.items()
                          if item is not None)
        else:
            top.append("%s = %s" % (key, _value(key, value)))
    return "\n".join(top + tables) + "\n"


def _value(key, value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        if any(isinstance(item, (list, tuple, dict)) for item in value):
            raise SettingsError("settings: '%s' must be a value or a list of values, not nested lists or tables" % key)
        return "[" + ", ".join(_value(key, item) for item in value) + "]"
    if isinstance(value, dict):
        raise SettingsError("settings: '%s' must be a value, not a table" % key)
    return _string(key, str(value))


def _string(key, text):
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif 0xD800 <= code <= 0xDFFF:
            raise SettingsError("settings: '%s' holds a character that is not text (U+%04X)" % (key, code))
        elif code < 0x20 or code == 0x7F:
            out.append("\\u%04X" % code)
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def write_private(directory, filename, text):
    """Write *text* to a new file only its owner can read; its path."""
    path = os.path.join(directory, filename)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    return path
