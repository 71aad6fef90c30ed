"""The mypyc build of the engine: same results as the sources, and never used when stale."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from streams import engine_build

REPO = engine_build.ROOT
SELECT = "from streams import engine_build as b; b.select(); "
PROBE = SELECT + "import streams.core.engine as e; print(b.current(), e.__file__)"
#: The entry points that call select(): importing them must not import the engine yet.
ENTRY_POINTS = ("kpi.cli", "bench.__main__", "bench.engine_profile", "bench.restore")

needs_build = pytest.mark.skipif(
    engine_build.current() != "compiled",
    reason="no current mypyc build (python -m tooling.build; make install runs it)",
)


def copy_packages(to: Path) -> None:
    """The packages with their build (sources, extensions, stamp), as a separate tree."""
    for package in ("streams", "schemas"):
        shutil.copytree(REPO / package, to / package)


def spawn(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "KPI_PURE_PYTHON"}
    environment.update(env, PYTHONPATH=str(cwd))
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=environment, capture_output=True, text=True
    )


def run(args: list[str], cwd: Path, **env: str) -> str:
    done = spawn(args, cwd, **env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_build_is_current_after_make_install() -> None:
    # make install compiles when a C compiler is there (it is, on every machine we run on):
    # this fails if the build silently stopped working and the speed-up was lost.
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler")
    assert engine_build.current() == "compiled", "run: python -m tooling.build (build/mypyc.log)"


@needs_build
def test_compiled_engine_produces_what_the_sources_produce() -> None:
    profile = ["-m", "bench.engine_profile", "--events", "20000", "--runs", "1"]
    compiled = run(profile, REPO)
    source = run(profile, REPO, KPI_PURE_PYTHON="1")
    digests = [re.findall(r"digest (\S+)", out) for out in (compiled, source)]
    assert len(digests[0]) == 2 and digests[0] == digests[1]


@needs_build
def test_an_edited_source_runs_as_python_until_rebuilt(tmp_path: Path) -> None:
    copy_packages(tmp_path)
    state, built = run(["-c", PROBE], tmp_path).split()
    assert state == "compiled" and built.endswith(".so")
    engine = tmp_path / "streams" / "core" / "engine.py"
    engine.write_text(engine.read_text() + "\n# edited\n")
    state, used = run(["-c", PROBE], tmp_path).split()
    assert state == "python" and used == str(engine)


@needs_build
def test_a_stamp_without_its_extensions_runs_as_python(tmp_path: Path) -> None:
    copy_packages(tmp_path)
    for extension in (tmp_path / "streams" / "core").glob("state.*.so"):
        extension.unlink()
    state, used = run(["-c", PROBE], tmp_path).split()
    assert state == "python" and used.endswith("engine.py")


@needs_build
def test_choosing_after_a_stale_build_was_imported_fails(tmp_path: Path) -> None:
    copy_packages(tmp_path)
    engine = tmp_path / "streams" / "core" / "engine.py"
    engine.write_text(engine.read_text() + "\n# edited\n")
    done = spawn(["-c", "import streams.core.engine; " + SELECT], tmp_path)
    assert done.returncode == 1
    assert "imported before streams.engine_build.select()" in done.stderr


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_entry_points_import_no_engine_before_choosing(module: str) -> None:
    probe = f"import sys, {module}; print([n for n in sys.modules if n.startswith('streams.core')])"
    assert run(["-c", probe], REPO).strip() == "[]"


def test_pure_python_on_request() -> None:
    state, used = run(["-c", PROBE], REPO, KPI_PURE_PYTHON="1").split()
    assert state == "python" and used.endswith("engine.py")
