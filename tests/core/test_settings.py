"""Settings: every bad value is a UsageError naming the field and the value; units; layers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from vscen_host_filesystem import SETTINGS as FS_SETTINGS
from vscen_host_filesystem import Filesystem, parse_filesystem

import vscen.config
from vscen import settings as settings_mod
from vscen.config import config_layers, load_config
from vscen.errors import UsageError
from vscen.settings import Network, build_settings, parse_network, parse_size

#: a plugin's setting among the core's, as the pipeline passes the registry's
DECLARED = {s.name: s for s in FS_SETTINGS}

GiB = 1024**3


def build(options=None, scenarios=(), layers=(), disks=None, name="vm"):
    """build_settings as the pipeline calls it: name layer, config layers, then options."""
    all_layers = [("default", {"name": name}), *layers, ("option", dict(options or {}))]
    return build_settings(list(scenarios), all_layers, disks, DECLARED)


def settings(**options):
    s, problems = build(options)
    assert problems == []
    return s


def usage_error(fn, *args, **kwargs) -> str:
    with pytest.raises(UsageError) as exc:
        fn(*args, **kwargs)
    return str(exc.value)


# -- every bad input names the field and the value ------------------------------------------

#: (option, value, the field the message starts with, the value it quotes)
BAD_OPTIONS = [
    ("memory", "4XB", "memory", "4XB"), ("memory", "lots", "memory", "lots"),
    ("memory", "-1G", "memory", "-1G"), ("memory", "0", "memory", "0"),
    ("memory", "0.5", "memory", "0.5"), ("memory", "4 G B", "memory", "4 G B"),
    ("vcpu", "0", "vcpu", "0"), ("vcpu", "abc", "vcpu", "abc"), ("vcpu", "-2", "vcpu", "-2"),
    ("vcpu", "4097", "vcpu", "4097"), ("vcpu", "1.5", "vcpu", "1.5"),
    ("name", "a/b", "name", "a/b"), ("name", "a..b", "name", "a..b"), ("name", "..", "name", ".."),
    ("name", "<vm>", "name", "<vm>"), ("name", "my vm", "name", "my vm"),
    ("name", "-dash-first", "name", "-dash-first"), ("name", "x" * 65, "name", "x" * 65),
    ("name", "vm&co", "name", "vm&co"),
    ("boot", "floppy", "boot", "floppy"), ("boot", "hd,usb", "boot", "usb"),
    ("arch", "sparc", "arch", "sparc"), ("virt_type", "xen", "virt_type", "xen"),
    ("firmware", "coreboot", "firmware", "coreboot"), ("graphics", "rdp", "graphics", "rdp"),
    ("machine", "q35; rm -rf /", "machine", "q35; rm -rf /"), ("machine", "<q35>", "machine", "<q35>"),
    ("cdrom", "relative.iso", "cdrom", "relative.iso"),
    ("cdrom", "/isos/a<b>.iso", "cdrom", "/isos/a<b>.iso"),
    ("network", "bogus", "network", "bogus"), ("network", "network=", "network", "network="),
    ("network", "network=default,bridge=br0", "network", "network=default,bridge=br0"),
    ("network", "bridge=br 0", "network", "bridge=br 0"),
    ("network", "network=default,model=E1000!", "network", "E1000!"),
    ("network", "network=default,speed=fast", "network", "network=default,speed=fast"),
    ("filesystem", "source=/srv/data", "filesystem", "source=/srv/data"),
    ("filesystem", "source=relative,target=data", "filesystem.source", "relative"),
    ("filesystem", "source=/srv,target=bad tag", "filesystem", "source=/srv,target=bad tag"),
    ("filesystem", "source=/srv,target=t,readonly=maybe", "filesystem", "source=/srv,target=t,readonly=maybe"),
    ("filesystem", "source=/srv,target=t,cache=always", "filesystem", "source=/srv,target=t,cache=always"),
    ("filesystem", "/srv:" + "t" * 37, "filesystem", "/srv:" + "t" * 37),
]


@pytest.mark.parametrize("key,value,field,shown", BAD_OPTIONS, ids=[f"{k}={v[:20]}" for k, v, _, _ in BAD_OPTIONS])
def test_a_bad_option_names_the_field_and_the_value(key, value, field, shown):
    msg = usage_error(build, {key: value})
    assert msg.startswith(f"{field}: ") or msg.startswith(f"{field} "), msg
    assert f"'{shown}'" in msg, msg


@pytest.mark.parametrize("spec,field,shown", [
    ("size=abc", "disk.size", "abc"),
    ("size=0", "disk.size", "0"),
    ("format=vmdk", "disk.format", "vmdk"),
    ("bus=ide", "disk.bus", "ide"),
    ("cache=fast", "disk.cache", "fast"),
    ("io=magic", "disk.io", "magic"),
    ("discard=yes", "disk.discard", "yes"),
    ("path=relative.qcow2", "disk.path", "relative.qcow2"),
    ("path=/var/lib/<x>.qcow2", "disk.path", "/var/lib/<x>.qcow2"),
    ("sise=10G", "disk", "sise=10G"),
    ("format", "disk", "format"),
    ("size=10G,,colour=blue", "disk", "colour=blue"),
])
def test_a_bad_disk_spec_names_the_field_and_the_value(spec, field, shown):
    msg = usage_error(build, {}, disks=[spec])
    assert msg.startswith(f"{field}: "), msg
    assert f"'{shown}'" in msg


def test_a_bad_disk_in_second_place_is_caught_too():
    msg = usage_error(build, {}, disks=["size=10G", "format=vhd"])
    assert msg.startswith("disk.format: 'vhd'")


def test_unknown_setting_keys_are_refused():
    msg = usage_error(build, {}, layers=[("config /etc/x.toml", {"memroy": "4G"})])
    assert msg.startswith("settings: unknown key 'memroy'")
    assert "memory" in msg


def test_unknown_disk_keys_in_a_config_are_refused():
    # "[disk] sise = ..." in a config file must not be silently ignored
    msg = usage_error(build, {}, layers=[("config /x.toml", {"disk.sise": "10G"})])
    assert "disk.sise" in msg


@pytest.mark.parametrize("value", ["path=/vm/x.qcow2,format=raw", ["size=5G"]])
def test_a_disk_key_that_is_not_a_table_is_refused(value):
    msg = usage_error(build, {}, layers=[("config /x.toml", {"disk": value})])
    assert msg.startswith("disk")


@pytest.mark.parametrize("value", [True, 2.7, 0.0])
def test_vcpu_from_a_config_file_must_be_a_whole_number(value):
    # TOML gives bools and floats: they must not be truncated into a vcpu count
    msg = usage_error(build, {}, layers=[("config /x.toml", {"vcpu": value})])
    assert msg.startswith(f"vcpu: '{value}'")


def test_no_name_at_all_is_an_error():
    assert usage_error(build, {}, name="").startswith("name:")


# -- units ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value,kib", [
    ("4GiB", 4 * 1024**2), ("4G", 4 * 1024**2), ("4g", 4 * 1024**2), ("512M", 512 * 1024),
    ("512MiB", 512 * 1024), ("1024", 1024 * 1024), (1024, 1024 * 1024), ("2GB", 2 * 10**9 // 1024),
    ("1.5GiB", 1536 * 1024), ("1TiB", 1024**3), ("1048576K", 1024**2), ("1048576KiB", 1024**2),
    ("2048MB", 2048 * 10**6 // 1024), (" 8GiB ", 8 * 1024**2),
])
def test_memory_units(value, kib):
    assert settings(memory=value).memory == kib


def test_sizes_in_bytes_and_default_units():
    assert parse_size("x", "2GB") == 2_000_000_000
    assert parse_size("x", "2G") == 2 * GiB
    assert parse_size("x", "1024") == 1024**3  # a bare number is MiB
    assert parse_size("x", "20", "g") == 20 * GiB  # disk sizes default to GiB
    assert parse_size("x", "512b") == 512
    assert usage_error(parse_size, "disk.size", "20Q").startswith("disk.size: '20Q'")


def test_disk_specs():
    s, _ = build({}, disks=["/vm/a.qcow2", "size=10,format=raw,bus=scsi,cache=none,io=native,discard=unmap"])
    first, second = s.disks
    assert first.path == "/vm/a.qcow2" and first.size == 20 * GiB and first.format == "qcow2"
    assert second.path is None and second.size == 10 * GiB and second.format == "raw"
    assert (second.bus, second.cache, second.io, second.discard) == ("scsi", "none", "native", "unmap")
    assert s.disk_path(0) == "/vm/a.qcow2"
    assert s.disk_path(1) == f"{settings_mod.IMAGES_DIR}/vm-1.raw"
    assert s.source("disks") == "option"
    none, _ = build({}, disks=["none"])
    assert none.disks == ()
    default, _ = build({})
    assert len(default.disks) == 1 and default.disk_path(0) == f"{settings_mod.IMAGES_DIR}/vm.qcow2"


def test_networks_filesystems_and_boot():
    assert parse_network("network=default") == Network("network", "default", "virtio")
    assert parse_network("bridge=br0,model=e1000e") == Network("bridge", "br0", "e1000e")
    assert parse_network("user") == Network("user")
    assert parse_network("none") == Network("none")
    assert parse_filesystem("source=/srv/data,target=data") == Filesystem("/srv/data", "data", False)
    assert parse_filesystem("/srv/data/:data:ro") == Filesystem("/srv/data", "data", True)
    assert parse_filesystem("source=/srv,target=d,readonly=yes").readonly is True
    s = settings(boot="cdrom, hd", cdrom="/isos/x.iso", filesystem=["/a:a", "/b:b"])
    assert s.boot == ("cdrom", "hd")
    assert [f.target for f in s.filesystem] == ["a", "b"]
    assert settings(cdrom="/isos/x.iso").boot == ("cdrom", "hd")  # a cdrom boots first
    assert settings().boot == ("hd",)
    assert settings(name="vm-1.test_x+y").name == "vm-1.test_x+y"
    assert settings(name="x" * 64).name == "x" * 64


# -- layers -----------------------------------------------------------------------------------


def test_each_layer_overrides_the_one_before_and_sources_say_where_from():
    scen = [("big", {"memory": "4GiB", "vcpu": 4, "machine": "q35"})]
    conf = [("config /etc/vscen/config.toml", {"memory": "8GiB", "vcpu": 6}),
            ("config /home/u/.config/vscen/config.toml", {"memory": "16GiB"})]
    s, problems = build({"memory": "32GiB"}, scen, conf)
    assert problems == []
    assert s.memory == 32 * 1024**2 and s.source("memory") == "option" and s.level("memory") == "user"
    assert s.vcpu == 6 and s.source("vcpu") == "config /etc/vscen/config.toml" and s.level("vcpu") == "user"
    assert s.machine == "q35" and s.source("machine") == "scenario big" and s.level("machine") == "scenario"
    assert s.network == Network("network", "default") and s.source("network") == "default"
    assert s.level("network") == "default"
    s, _ = build({}, scen, conf)
    assert s.memory == 16 * 1024**2 and s.source("memory") == "config /home/u/.config/vscen/config.toml"
    s, _ = build({}, scen)
    assert s.memory == 4 * 1024**2 and s.source("memory") == "scenario big"
    s, _ = build({})
    assert s.memory == 2 * 1024**2 and s.source("memory") == "default" and s.vcpu == 2


def test_options_given_as_none_do_not_override():
    s, _ = build({"memory": None}, [("big", {"memory": "4GiB"})])
    assert s.memory == 4 * 1024**2


def test_scenario_default_clashes_are_reported_unless_the_user_decides():
    scen = [("alpha", {"memory": "4GiB", "disk": {"format": "raw"}, "vcpu": 2}),
            ("beta", {"memory": "8GiB", "disk": {"format": "qcow2"}, "vcpu": 2})]
    _, problems = build({}, scen)
    assert len(problems) == 2
    mem = next(p for p in problems if p.startswith("memory:"))
    assert "'alpha'" in mem and "'4GiB'" in mem and "'beta'" in mem and "'8GiB'" in mem
    assert "--memory" in mem
    fmt = next(p for p in problems if p.startswith("disk.format:"))
    assert "'raw'" in fmt and "'qcow2'" in fmt and "--disk format=" in fmt
    _, problems = build({"memory": "6GiB"}, scen)
    assert [p.split(":")[0] for p in problems] == ["disk.format"]
    _, problems = build({}, scen, [("config /c.toml", {"memory": "6GiB", "disk.format": "raw"})])
    assert problems == []


def test_agreeing_scenario_defaults_are_no_clash():
    _, problems = build({}, [("a", {"machine": "q35"}), ("b", {"machine": "q35"})])
    assert problems == []


# -- config files -----------------------------------------------------------------------------


@pytest.fixture
def system_config(tmp_path, monkeypatch):
    path = tmp_path / "etc" / "vscen" / "config.toml"
    monkeypatch.setattr(vscen.config, "SYSTEM_CONFIG", path)
    return path


def user_config() -> Path:
    path = Path(os.environ["XDG_CONFIG_HOME"]) / "vscen" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_config_files_in_precedence_order(system_config, tmp_path):
    system_config.parent.mkdir(parents=True)
    system_config.write_text('memory = "4GiB"\nvcpu = 3\nmachine = "pc"\n')
    user_config().write_text('memory = "8GiB"\nvirt-type = "qemu"\n[disk]\nformat = "raw"\ncache = "none"\n')
    explicit = tmp_path / "mine.toml"
    explicit.write_text('memory = "16GiB"\n')
    layers = config_layers(explicit)
    assert [label for label, _ in layers] == [
        f"config {system_config}", f"config {user_config()}", f"config {explicit}"]
    assert layers[1][1] == {"memory": "8GiB", "virt_type": "qemu", "disk.format": "raw", "disk.cache": "none"}
    s, _ = build({"vcpu": 5}, [("sc", {"machine": "q35", "vcpu": 1})], layers)
    assert s.memory == 16 * 1024**2 and s.source("memory") == f"config {explicit}"
    assert s.vcpu == 5 and s.source("vcpu") == "option"
    assert s.machine == "pc" and s.source("machine") == f"config {system_config}"
    assert s.virt_type == "qemu" and s.disks[0].format == "raw" and s.disks[0].cache == "none"


def test_missing_config_files_are_fine_but_a_missing_explicit_one_is_not(system_config, tmp_path):
    assert [values for _, values in config_layers(None)] == [{}, {}]
    missing = tmp_path / "nope.toml"
    msg = usage_error(config_layers, missing)
    assert msg.startswith("--config:") and str(missing) in msg


@pytest.mark.parametrize("text", ['memory = "4GiB', "memory 4GiB\n", "[disk\nformat='raw'", "vcpu = = 2"])
def test_malformed_toml_is_a_usage_error_naming_the_file(system_config, text):
    path = user_config()
    path.write_text(text)
    msg = usage_error(config_layers, None)
    assert str(path) in msg and "not valid TOML" in msg


def test_an_unreadable_config_is_a_usage_error(system_config, tmp_path):
    folder = tmp_path / "a-directory.toml"
    folder.mkdir()
    msg = usage_error(load_config, folder, True)
    assert str(folder) in msg and "cannot read" in msg


def test_a_bad_value_in_a_config_file_names_the_field(system_config):
    user_config().write_text('vcpu = "many"\n')
    msg = usage_error(build, {}, layers=config_layers(None))
    assert msg.startswith("vcpu: 'many'")


def test_a_name_with_a_trailing_newline_is_refused():
    assert usage_error(build, {"name": "vm\n"}).startswith("name: 'vm\\n' holds characters that are not text")
