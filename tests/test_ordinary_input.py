"""Right answers for ordinary input (issue 8, item 5), on the real command line in this
process: what a careful user of virt-install would expect vscen to decide or refuse."""

from __future__ import annotations

import json

from conftest import RECORDED_HOSTS
from test_fuzz import vscen

RUN = ("--dry-run", "--connect", "test:///default")


def test_a_chosen_cache_decides_io_unless_io_is_chosen_too():
    code, out, err = vscen("run", "computation", *RUN, "--disk", "cache=unsafe")
    assert code == 0, err
    assert 'cache="unsafe" io="threads"' in out
    assert "note: disk 1: io=threads, since io=native needs cache=none or directsync and cache=unsafe was chosen" in err
    # both chosen, and contradicting: the domain check refuses, saying which to change
    code, out, err = vscen("run", "computation", *RUN, "--disk", "cache=unsafe,io=native")
    assert code == 5 and "io='native' needs cache='none' or 'directsync'" in err


def test_filesystem_brings_its_feature_and_says_so():
    code, out, err = vscen("run", "desktop", *RUN, "--filesystem", "source=/srv/data,target=data")
    assert code == 0, err
    assert "host-filesystem (implied by --filesystem)" in err and '<source dir="/srv/data"/>' in out
    code, _, err = vscen("run", "desktop", *RUN, "--filesystem", "source=/srv,target=d", "--feature", "-host-filesystem")
    assert code == 3 and "error: --filesystem needs host-filesystem, which --feature -host-filesystem removes" in err


def test_the_machine_type_is_checked_against_the_hosts_list():
    facts = ["--host-facts", str(RECORDED_HOSTS / "caps-local-libvirt9.xml"),
             "--host-facts", str(RECORDED_HOSTS / "domcaps-local-libvirt9-q35.xml")]
    code, _, err = vscen("run", "desktop", "--dry-run", *facts, "--machine", "pc-q35-2.0")
    assert code == 4
    assert "error: machine: 'pc-q35-2.0' is not offered by" in err and "(did you mean 'pc-q35-2.10'?)" in err
    assert "it offers pc, q35," in err
    assert vscen("run", "desktop", "--dry-run", *facts, "--machine", "pc-q35-7.2")[0] == 0


def test_memory_has_a_sane_range():
    for memory in ("1MiB", "15MiB", "65TiB"):
        code, _, err = vscen("run", "computation", *RUN, "--memory", memory)
        assert code == 2 and "give from 16MiB" in err, memory
    assert vscen("run", "computation", *RUN, "--memory", "16MiB")[0] == 0


def test_a_name_with_a_newline_is_refused():
    code, _, err = vscen("run", "desktop", *RUN, "--name", "vm\n")
    assert code == 2 and err.startswith("error: name: 'vm\\n' holds characters that are not text")


def test_a_vnc_desktop_has_no_sound_card_that_plays_into_nothing():
    code, out, err = vscen("run", "desktop", *RUN, "--graphics", "vnc")
    assert code == 0, err
    assert "<sound" not in out and "<audio" not in out
    assert "note: audio: no sound device: a vnc display carries no sound (spice does: --graphics spice)" in err
    code, out, _ = vscen("run", "desktop", *RUN)
    assert '<audio id="1" type="spice"/>' in out


def test_dry_run_json_is_one_json_document_holding_the_xml():
    code, out, err = vscen("run", "desktop", *RUN, "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["dry_run"] is True and summary["domain_xml"].startswith("<domain")
    assert summary["name"] == "desktop"


def test_an_existing_image_is_used_as_it_is_on_the_embedded_driver(tmp_path):
    image = tmp_path / "exists.raw"
    with open(image, "wb") as fh:
        fh.truncate(1024**3)
    code, out, err = vscen("run", "computation", *RUN, "--disk", f"path={image}", "--network", "none",
                           "--output", str(tmp_path / "out"))
    assert code == 0, err
    assert f"note: disk {image} exists with 1GiB (raw): used as it is" in err
    assert "create volume" not in err
