"""``kpi --version``: one line with the package version and the engine build, exit 0."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

from tests.cli import run_kpi


def test_version_is_one_line_and_exit_zero(tmp_path: Path) -> None:
    done = run_kpi(tmp_path, "--version")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    release = re.escape(version("backoffice-kpi"))
    expected = rf"kpi {release} \(engine (compiled|python), Python 3\.\d+\.\d+\)\n"
    assert re.fullmatch(expected, done.stdout), done.stdout


def test_commands_still_run_with_the_root_option_in_place(tmp_path: Path) -> None:
    done = run_kpi(tmp_path, "get", "dso", "-w", "2x")
    assert done.returncode == 2
    assert done.stderr.startswith("kpi: error: unknown window '2x' for dso")
