"""Where a guest's directory goes (--output, the config's output, the XDG data dir), and
--explain with --set."""

from __future__ import annotations

from typer.testing import CliRunner

from vscen.cli import app


def run(*args):
    return CliRunner().invoke(app, list(args))


def test_the_config_files_output_is_used_without_output(tmp_path):
    config = tmp_path / "vscen.toml"
    config.write_text(f'output = "{tmp_path / "guests"}"\n')
    result = run("run", "desktop", "--connect", "test:///default", "--config", str(config))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "guests" / "desktop" / "domain.xml").exists()
    # and status/destroy find it there through the same config (user config here)
    user = tmp_path / "config" / "vscen"
    user.mkdir(parents=True, exist_ok=True)
    (user / "config.toml").write_text(config.read_text())
    assert "desktop" in run("status").output
    assert run("destroy", "desktop").exit_code == 0
    assert not (tmp_path / "guests" / "desktop").exists()


def test_output_option_wins_over_the_config(tmp_path):
    config = tmp_path / "vscen.toml"
    config.write_text(f'output = "{tmp_path / "from-config"}"\n')
    result = run("run", "desktop", "--connect", "test:///default", "--config", str(config),
                 "--output", str(tmp_path / "from-option"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "from-option" / "desktop" / "domain.xml").exists()
    assert not (tmp_path / "from-config").exists()
    # the in-process test driver outlives the test while any connection to it is open
    assert run("destroy", "desktop", "--output", str(tmp_path / "from-option")).exit_code == 0


def test_explain_shows_a_set_value_once_with_what_it_replaced():
    result = run("run", "desktop", "--connect", "test:///default", "--dry-run", "--explain",
                 "--set", "./vcpu=3")
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.startswith("/domain/vcpu ")]
    assert len(rows) == 2  # the element, then its text
    assert "user (--set)" not in rows[0]
    assert rows[1].split()[1] == "3" and "user (--set), was '2'" in rows[1]


def test_shell_completion_offers_scenarios_and_features():
    import os
    import subprocess
    import sys

    def complete(words: str) -> list[str]:
        env = dict(os.environ, _VSCEN_COMPLETE="complete_bash", COMP_WORDS=words,
                   COMP_CWORD=str(len(words.split()) - 1))
        code = "import sys; sys.argv[0] = 'vscen'; from vscen.cli import main; main()"
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout
        return out.split()

    assert complete("vscen run sec") == ["secure-vm"]
    assert "+storage-perf" in complete("vscen run desktop --feature +stor")
    assert complete("vscen run desktop --feature +aud") == ["+audio"]


def test_status_and_destroy_check_the_name_as_run_does(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "journal.json").write_text("{}")
    for command in (("status", "../x"), ("destroy", "../x"), ("status", "x/..")):
        from vscen.errors import UsageError

        result = run(*command, "--output", str(tmp_path / "out"))
        assert isinstance(result.exception, UsageError) and str(result.exception).startswith("name: '"), command
