"""Hostile input, generated: whatever the options, ``--set`` items, config files, host facts files
or domain files, vscen exits 0 with a schema-valid domain, or exits with a documented code and
an ``error:`` line; never an "internal error", never a traceback, never a file written outside
the output directory.

The command line runs in this process (``vscen.cli.main``), so thousands of inputs take
seconds. Examples are derandomised (the same ones every run) and bounded; ``HYPOTHESIS_PROFILE=
nightly`` runs many more, with fresh randomness.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path

import pytest
from conftest import DATA, RECORDED_HOSTS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

settings.register_profile("ci", max_examples=60, derandomize=True, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("nightly", max_examples=int(os.environ.get("VSCEN_FUZZ_EXAMPLES", "3000")), deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

#: the exit codes the README documents
DOCUMENTED = {0, 1, 2, 3, 4, 5, 6, 7}


def vscen(*args: str) -> tuple[int, str, str]:
    """``vscen ARGS`` in this process: (exit code, stdout, stderr)."""
    from vscen.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["vscen", *args]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
    return code, out.getvalue(), err.getvalue()


def assert_handled(code: int, out: str, err: str, args) -> None:
    """The property: a documented exit, an error line for a failure, no internal error."""
    shown = f"args={args!r:.300}\nstderr:\n{err[-1500:]}"
    assert "internal error" not in err and "Traceback" not in err, shown
    assert code in DOCUMENTED, shown
    if code:
        assert any(line.startswith(("error: ", "Error: ")) or "Error:" in line for line in err.splitlines()), shown
    elif "--dry-run" in args and "<domain" in out:
        from vscen.validate import schema_errors

        assert schema_errors(out[out.index("<domain"):]) == [], shown


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """A directory the runs may write in (the output directory is inside it); nothing else."""
    root = tmp_path_factory.mktemp("fuzz")
    (root / "out").mkdir()
    return root


def files_outside(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if not str(p.relative_to(root)).startswith("out")}


# -- strategies --------------------------------------------------------------------------------

#: text as hostile users type it: anything, including control characters, lone surrogates (what
#: Python makes of bytes that are not UTF-8 on a command line), XML's specials, huge numbers
hostile_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=12),
    st.sampled_from(["", " ", "0", "-1", "9" * 400, "1e309", "nan", "inf", "4GiB", "../..", "/", "//x",
                     "/tmp/../etc/passwd", "<x>", "]]>", "'\"&", "\x00", "\udcff", "a\nb", "\t", "🙂",
                     "0-9999999999", "0000:03:00.0", "usb:046d:c52b", "q35", "network=default",
                     "source=/srv,target=t", "size=1G,path=/a b", "none", "user", "yes", "no"]),
)

RUN_OPTIONS = ["--name", "--memory", "--vcpu", "--machine", "--boot", "--arch", "--virt-type", "--firmware",
               "--disk", "--cdrom", "--network", "--graphics", "--disk-size", "--feature", "--set",
               "--hugepages", "--hostdev", "--peer", "--filesystem", "--pool", "--passphrase-file"]


# -- the properties ----------------------------------------------------------------------------


@given(scenario=st.sampled_from(["secure-vm", "desktop", "computation", "os-testing", "soft-rt", "nonsense"]),
       options=st.lists(st.tuples(st.sampled_from(RUN_OPTIONS), hostile_text), max_size=4))
def test_run_options(sandbox, scenario, options):
    args = ["run", scenario, "--dry-run", "--connect", "test:///default", "--output", str(sandbox / "out")]
    for option, value in options:
        args += [option, value]
    assert_handled(*vscen(*args), args)
    assert files_outside(sandbox) == set()


xpath_parts = st.sampled_from(["./", "/domain/", "//", "./devices/", "@", "[", "]", "=", "name", "vcpu",
                               "memory", "@unit", "disk", "[1]", "text()", "..", "*", "|", "'", '"', "x"])


@given(items=st.lists(st.one_of(st.builds(lambda parts, v: "".join(parts) + "=" + v,
                                          st.lists(xpath_parts, min_size=1, max_size=6), hostile_text),
                                hostile_text), min_size=1, max_size=3))
def test_set_items(sandbox, items):
    args = ["run", "desktop", "--dry-run", "--connect", "test:///default", "--output", str(sandbox / "out")]
    for item in items:
        args += ["--set", item]
    assert_handled(*vscen(*args), args)


toml_scalars = st.one_of(st.booleans(), st.integers(min_value=-(2 ** 63), max_value=2 ** 63 - 1),
                         st.floats(allow_nan=False, allow_infinity=False), hostile_text)
toml_values = st.recursive(toml_scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                                st.dictionaries(st.sampled_from(["size", "format", "x"]),
                                                                                inner, max_size=2)),
                           max_leaves=6)
CONFIG_KEYS = ["name", "memory", "vcpu", "machine", "boot", "arch", "virt_type", "firmware", "cdrom", "network",
               "graphics", "connect", "output", "disabled_plugins", "filesystem", "hugepages", "peers", "hostdev",
               "pool", "tune_host", "passphrase_file", "transient", "disk", "bogus"]


def toml_dump(table: dict) -> str:
    """A minimal TOML writer (the standard library reads TOML but does not write it)."""
    import json

    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return "{" + ", ".join(f"{json.dumps(k)} = {value(x)}" for k, x in v.items()) + "}"

    return "".join(f"{k} = {value(v)}\n" for k, v in table.items())


@given(config=st.one_of(st.dictionaries(st.sampled_from(CONFIG_KEYS), toml_values, max_size=4).map(toml_dump),
                        st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
                        st.integers(min_value=1, max_value=3000).map(lambda n: "a = " + "[" * n + "]" * n + "\n")))
def test_config_files(sandbox, config):
    path = sandbox / "out" / "config.toml"
    try:
        path.write_text(config, encoding="utf-8", errors="surrogateescape")
    except UnicodeEncodeError:
        path.write_bytes(config.encode("utf-8", "surrogatepass"))
    args = ["run", "desktop", "--dry-run", "--connect", "test:///default", "--config", str(path)]
    assert_handled(*vscen(*args), args)
    assert files_outside(sandbox) == set()


HOST_FILES = sorted(p for p in RECORDED_HOSTS.glob("*.xml")) + [DATA / "hosts" / "numa4-rt-local.xml"]


@st.composite
def mutated_xml(draw):
    """A recorded host file with hostile edits: numbers and names replaced, elements dropped, or
    the bytes cut or flipped."""
    import re

    text = draw(st.sampled_from(HOST_FILES)).read_text()
    how = draw(st.sampled_from(["values", "drop", "cut", "flip"]))
    if how == "values":
        spots = [m.start() for m in re.finditer(r"(?<==['\"])[^'\"]*|(?<=>)[^<]+(?=<)", text)][:400]
        for _ in range(draw(st.integers(min_value=1, max_value=6))):
            at = draw(st.sampled_from(spots)) if spots else 0
            end = at + len(re.match(r"[^'\"<]*", text[at:]).group(0))
            new = draw(st.sampled_from(["-1", "0", "9" * 30, "0-9999999999", "x", "", "1e999", "&amp;", "2,",
                                        "1-3,7", "4294967296", "yes", "kvm", "sev"]))
            text = text[:at] + new + text[end:]
    elif how == "drop":
        tags = re.findall(r"<([a-zA-Z]+)[ >/]", text)
        tag = draw(st.sampled_from(tags))
        text = re.sub(rf"<{tag}\b[^>]*/>|<{tag}\b.*?</{tag}>", "", text, count=draw(st.integers(1, 3)), flags=re.S)
    elif how == "cut":
        text = text[:draw(st.integers(min_value=0, max_value=len(text)))]
    else:
        at = draw(st.integers(min_value=0, max_value=max(0, len(text) - 1)))
        text = text[:at] + draw(st.sampled_from(["\x00", "\udcff", "<", "&", "]]>", "\x1f"])) + text[at + 1:]
    return text


@given(document=mutated_xml(), scenario=st.sampled_from(["computation", "secure-vm", "soft-rt", "desktop"]))
def test_host_facts_files(sandbox, document, scenario):
    path = sandbox / "out" / "host.xml"
    path.write_bytes(document.encode("utf-8", "surrogateescape"))
    args = ["run", scenario, "--dry-run", "--host-facts", str(path), "--output", str(sandbox / "out")]
    assert_handled(*vscen(*args), args)


@given(document=st.one_of(mutated_xml(), st.binary(max_size=300).map(lambda b: b.decode("latin-1"))))
def test_validate_files(sandbox, document):
    path = sandbox / "out" / "domain.xml"
    path.write_bytes(document.encode("utf-8", "surrogateescape"))
    args = ["validate", str(path)]
    assert_handled(*vscen(*args), args)


def test_the_property_itself_fails_on_an_internal_error():
    """The check is not hollow: an internal error is refused, a documented error accepted."""
    with pytest.raises(AssertionError):
        assert_handled(1, "", "error: internal error: ValueError: x (run with --debug for the traceback)\n", [])
    with pytest.raises(AssertionError):
        assert_handled(99, "", "error: x\n", [])
    assert_handled(2, "", "error: memory: 'x' is not a size\n", [])


# -- the families a fuzz campaign found (issue 8), each pinned ------------------------------------

def _file(tmp_path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def _rt_local(cpus: str) -> bytes:
    return (DATA / "hosts" / "numa4-rt-local.xml").read_bytes().replace(b"<isolatedCpus>2-7", f"<isolatedCpus>{cpus}".encode())


FAMILIES = [
    (lambda t: ["run", "computation", "--memory", "9" * 400], "memory: '"),
    (lambda t: ["run", "computation", "--disk-size", "9" * 400], "disk.size: '"),
    (lambda t: ["run", "desktop", "--set", "/domain/@1bad=x"], "--set: '1bad'"),
    (lambda t: ["run", "desktop", "--set", "./name=a\x01b"], "--set: "),
    (lambda t: ["run", "desktop", "--set", "./name\udcff=x"], "--set: "),
    (lambda t: ["run", "desktop", "--set", "./@xmlns=]]>"], "--set: 'xmlns'"),
    (lambda t: ["run", "desktop", "--cdrom", "/isos/\udcff.iso"], "cdrom: '"),
    (lambda t: ["run", "easy-migration", "--peer", "qemu+ssh://\udcff/system"], "peers: "),
    (lambda t: ["run", "desktop", "--config", _file(t, "c1.toml", b"filesystem = [1]\n")], "filesystem: '1'"),
    (lambda t: ["run", "desktop", "--config", _file(t, "c2.toml", b"output = 1.5\n")], "output: 1.5 in config"),
    (lambda t: ["run", "desktop", "--config", _file(t, "c3.toml", b"connect = 5\n")], "connect: 5 in config"),
    (lambda t: ["run", "desktop", "--config", _file(t, "c4.toml", b"a = " + b"[" * 3000 + b"]" * 3000 + b"\n")],
     "nested too deeply"),
    (lambda t: ["run", "desktop", "--config", _file(t, "c5.toml", b"name = '\xff'\n")], "not UTF-8"),
    (lambda t: ["validate", _file(t, "d.xml", b"\xff<domain/>")], "is not UTF-8 text"),
    (lambda t: ["run", "soft-rt", "--host-facts", str(RECORDED_HOSTS / "caps-numa4-hugepages.xml"), "--host-facts",
                str(RECORDED_HOSTS / "domcaps-kvm-q35.xml"), "--host-facts",
                _file(t, "rt.xml", _rt_local("0-9999999999"))], "malformed <local> element"),
]


@pytest.mark.parametrize("make,message", FAMILIES, ids=[m for _, m in FAMILIES])
def test_each_family_is_a_one_line_usage_error(tmp_path, make, message):
    args = [*make(tmp_path), "--dry-run", "--connect", "test:///default"] if make(tmp_path)[0] == "run" else make(tmp_path)
    code, out, err = vscen(*args)
    assert_handled(code, out, err, args)
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and message in errors[0], err


json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                                     hostile_text),
                           lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                   st.dictionaries(st.sampled_from(
                                                       ["kind", "path", "name", "uuid", "previous", "identity",
                                                        "storage", "record", "owner", "seq", "pool", "x"]),
                                                       inner, max_size=4)),
                           max_leaves=12)
record = st.fixed_dictionaries({"kind": st.sampled_from(["dirs", "file", "domain", "running", "transient",
                                                         "volume", "pool", "network", "secret", "hugepages",
                                                         "sysfs", "bogus"])}, optional={
    "path": st.one_of(hostile_text, st.sampled_from(["/etc/passwd", "/ANY/FILE", "../../x", "/tmp"])),
    "previous": st.one_of(st.none(), hostile_text), "name": hostile_text, "uuid": hostile_text,
    "dirs": st.lists(hostile_text, max_size=3), "identity": json_values, "storage": st.booleans()})
entries = st.lists(st.one_of(st.fixed_dictionaries({"owner": st.sampled_from(["vscen", "storage-volume", "networks",
                                                                               "hugepages", "host-tuning", "nope"]),
                                                     "record": record},
                                                    optional={"seq": st.integers()}),
                             json_values), max_size=4)


@given(document=st.one_of(st.fixed_dictionaries({"name": st.just("fuzzed"), "uri": st.just("test:///default"),
                                                  "entries": entries}),
                          json_values.map(lambda v: v),
                          st.integers(min_value=1, max_value=5000).map(lambda n: "[" * n + "]" * n)),
       command=st.sampled_from(["status", "destroy"]))
def test_journals(sandbox, document, command):
    """Whatever a journal holds, status and destroy answer with a documented error or do only
    what vscen can prove it made (the journal's own checks; nothing outside the sandbox)."""
    import json as _json

    guest = sandbox / "out" / "fuzzed"
    guest.mkdir(mode=0o700, exist_ok=True)
    for old in guest.iterdir():
        old.unlink()
    text = document if isinstance(document, str) else _json.dumps(document)
    path = guest / "journal.json"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    os.chmod(path, 0o600)
    args = [command, "fuzzed", "--output", str(sandbox / "out")] + (["--connect", "test:///default"]
                                                                    if command == "destroy" else [])
    assert_handled(*vscen(*args), args)
    assert files_outside(sandbox) == set()
