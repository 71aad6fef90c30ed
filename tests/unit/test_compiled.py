"""The mypyc build of the engine: same results as the sources, and never used when stale."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import streams

REPO = streams.ROOT
PROBE = "import streams, streams.core.engine as e; print(streams.ENGINE_BUILD, e.__file__)"

needs_build = pytest.mark.skipif(
    streams.ENGINE_BUILD != "compiled",
    reason="no current mypyc build (python -m tooling.build; make install runs it)",
)


def copy_packages(to: Path) -> None:
    """The packages with their build (sources, extensions, stamp), as a separate tree."""
    for package in ("streams", "schemas"):
        shutil.copytree(REPO / package, to / package)


def run(args: list[str], cwd: Path, **env: str) -> str:
    environment = {k: v for k, v in os.environ.items() if k != "KPI_PURE_PYTHON"}
    environment.update(env, PYTHONPATH=str(cwd))
    done = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=environment, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_build_is_current_after_make_install() -> None:
    # make install compiles when a C compiler is there (it is, on every machine we run on):
    # this fails if the build silently stopped working and the speed-up was lost.
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler")
    assert streams.ENGINE_BUILD == "compiled", "run: python -m tooling.build (build/mypyc.log)"


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


def test_pure_python_on_request() -> None:
    state, used = run(["-c", PROBE], REPO, KPI_PURE_PYTHON="1").split()
    assert state == "python" and used.endswith("engine.py")
