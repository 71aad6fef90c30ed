"""The base install (``pip install backoffice-kpi``) is the reader: redis and the stdlib only.

Without the worker extra, ``kpi`` says in one line what to install (exit 2).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import venv
from importlib.metadata import packages_distributions, requires
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import kpi

REPO = Path(__file__).resolve().parents[2]


def redis_modules() -> set[str]:
    """``redis`` and the top-level modules of what redis itself needs on this Python."""
    needed = {"redis"}
    for text in requires("redis") or []:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            needed.add(req.name.lower())
    providers = packages_distributions()
    return {
        module
        for module, dists in providers.items()
        if any(d.lower().replace("_", "-") in needed for d in dists)
    } | {"redis"}


# Refuses every top-level import outside the stdlib, the project's package and ``allowed``,
# then imports the reader and builds one (redis.asyncio.from_url connects lazily).
READER_ONLY = textwrap.dedent(
    """
    import json, sys

    allowed = set(json.loads(sys.argv[1])) | set(sys.stdlib_module_names) | {"streams"}
    refused = []

    def importer():
        frame = sys._getframe(2)
        while frame.f_globals.get("__name__", "").startswith(("importlib", "__main__")):
            frame = frame.f_back
        return frame.f_globals.get("__name__", "?")

    class Refuse:
        def find_spec(self, name, path=None, target=None):
            top = name.partition(".")[0]
            # _sysconfigdata_*: the stdlib's build data, named per platform.
            if top not in allowed and not top.startswith("_sysconfigdata"):
                # (what, who asked): redis tries its optional speedups and falls back.
                refused.append([top, importer()])
                raise ModuleNotFoundError(f"refused for this test: {name}", name=name)
            return None

    sys.meta_path.insert(0, Refuse())
    from streams.reader import KpiReader, KpiValue  # noqa: F401

    reader = KpiReader("redis://127.0.0.1:1/0", prefix="kpi")
    import asyncio
    asyncio.run(reader.close())
    loaded = sorted({m.partition(".")[0] for m in sys.modules} - set(sys.stdlib_module_names))
    print(json.dumps({"refused": refused, "loaded": loaded}))
    """
)


def test_reader_imports_only_redis_and_the_standard_library() -> None:
    allowed = sorted(redis_modules())
    done = subprocess.run(
        [sys.executable, "-c", READER_ONLY, json.dumps(allowed)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    # Only optional imports of redis (hiredis, xxhash, ...) and of the stdlib (copy tries
    # Jython's org.python) may have been refused: they went on without them.
    tolerant = set(sys.stdlib_module_names) | {"redis"}
    for what, who in report["refused"]:
        assert who.partition(".")[0] in tolerant, f"{who} needs {what}"
    # Interpreter start-up hooks (.pth files: editable finders, virtualenv) may add their own.
    ours = {m for m in report["loaded"] if not m.startswith("_")}
    assert ours <= set(allowed) | {"streams"}, ours
    assert "redis" in ours and "streams" in ours


def test_the_hook_refuses_what_the_worker_needs() -> None:
    # The same check on a module that needs pydantic (the settings) must fail.
    script = READER_ONLY.replace(
        "from streams.reader", "import streams.config\nfrom streams.reader"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(sorted(redis_modules()))],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0 and "refused for this test: pydantic" in done.stderr


# -- kpi without the worker extra ----------------------------------------------------------


def test_kpi_without_the_worker_extra_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # kpi.cli cannot be imported (None in sys.modules raises ModuleNotFoundError), and the
    # metadata says typer is missing.
    monkeypatch.setitem(sys.modules, "kpi.cli", None)
    monkeypatch.delattr(kpi, "cli", raising=False)
    monkeypatch.setattr(kpi, "missing_worker_requirements", lambda: ["typer>=0.29,<0.30"])
    with pytest.raises(SystemExit) as exit_:
        kpi.main()
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err == (
        "kpi: error: the kpi command needs the worker extra: pip install 'backoffice-kpi[worker]'\n"
    )


def test_kpi_with_the_extra_installed_keeps_a_real_import_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "kpi.cli", None)
    monkeypatch.delattr(kpi, "cli", raising=False)
    monkeypatch.setattr(kpi, "missing_worker_requirements", lambda: [])
    with pytest.raises(ModuleNotFoundError):
        kpi.main()


def test_missing_worker_requirements_reads_the_package_metadata(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert kpi.missing_worker_requirements() == []  # this .venv has the dev extra
    real_version = kpi.version

    def version(name: str) -> str:
        if name in ("typer", "faust-streaming"):
            raise kpi.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(kpi, "version", version)
    missing = kpi.missing_worker_requirements()
    assert sorted(Requirement(m).name for m in missing) == ["faust-streaming", "typer"]


# -- a real base install in a fresh virtualenv ---------------------------------------------


def pinned(name: str) -> str:
    for line in (REPO / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if line.lower().startswith(f"{name}=="):
            return line
    pytest.fail(f"{name} is not in constraints.txt")


@pytest.mark.slow
def test_base_install_in_a_fresh_venv(tmp_path: Path) -> None:
    """``pip install`` the project without extras (redis from the constraints, from PyPI)."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for package in ("streams", "schemas", "producers", "tooling", "kpi"):
        shutil.copytree(
            REPO / package,
            source / package,
            ignore=shutil.ignore_patterns("__pycache__", "*.so", "_compiled.sha256"),
        )
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"

    def run(*args: str | Path, cwd: Path = tmp_path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(a) for a in args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    installed = run(python, "-m", "pip", "install", "-q", "--no-deps", pinned("redis"), source)
    assert installed.returncode == 0, installed.stderr
    listed = run(python, "-m", "pip", "list", "--format=json")
    names = {d["name"].lower() for d in json.loads(listed.stdout)}
    assert {"backoffice-kpi", "redis"} <= names
    assert not names & {"faust-streaming", "pydantic", "typer", "orjson", "aiokafka"}

    # Outside the source tree: the installed package, not the checkout, is imported.
    reader = run(
        python,
        "-c",
        "from streams.reader import KpiReader; import streams.reader as r; "
        "KpiReader('redis://127.0.0.1:1/0'); print(r.__file__)",
    )
    assert reader.returncode == 0, reader.stderr
    assert str(env_dir) in reader.stdout

    command = run(env_dir / "bin" / "kpi", "--version")
    assert command.returncode == 2
    assert command.stdout == ""
    assert command.stderr == (
        "kpi: error: the kpi command needs the worker extra: pip install 'backoffice-kpi[worker]'\n"
    )
