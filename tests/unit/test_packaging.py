"""pyproject.toml's ranges and constraints.txt's pins agree; tooling.lock's closure walk."""

from __future__ import annotations

import importlib
import tomllib
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from tooling import build, lock

REPO = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def constraint_pins() -> dict[str, Version]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = Version(version)
    return pins


def direct_requirements() -> list[Requirement]:
    texts = list(PROJECT["dependencies"])
    for extra in PROJECT["optional-dependencies"].values():
        texts += extra
    requirements = [Requirement(t) for t in texts]
    return [r for r in requirements if canonicalize_name(r.name) != PROJECT["name"]]


def test_python_has_a_floor_and_no_cap() -> None:
    supported = SpecifierSet(PROJECT["requires-python"])
    assert "3.11" in supported and "3.12" in supported and "3.13" in supported
    assert "3.10" not in supported


def test_base_install_is_the_reader_only() -> None:
    assert [Requirement(r).name for r in PROJECT["dependencies"]] == ["redis"]
    extras = PROJECT["optional-dependencies"]
    assert "backoffice-kpi[worker]" in extras["dev"]
    worker = {Requirement(r).name for r in extras["worker"]}
    assert {"faust-streaming", "aiokafka", "pydantic", "typer"} <= worker


def test_every_direct_requirement_is_a_range_pinned_within_it() -> None:
    pins = constraint_pins()
    for req in direct_requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} has no pin in constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), (str(req), pins[name])
        operators = {spec.operator for spec in req.specifier}
        if name == "grafana-foundation-sdk":
            # Its versions are <build time>!<Grafana version>: only an exact pin is safe.
            assert operators == {"=="}
        else:
            assert operators & {">=", "~="}, f"{req}: a range, not a pin"


def test_constraints_pin_each_package_once() -> None:
    names = [
        canonicalize_name(line.split("==")[0])
        for line in (REPO / "constraints.txt").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert len(names) == len(set(names))
    assert names == sorted(names)


# -- tooling.lock's closure, on made-up distributions --------------------------------------


@dataclass
class FakeDist:
    name: str
    version: str
    requires: list[str] | None = None
    metadata: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.metadata = {"Name": self.name}


def finder(*dists: FakeDist) -> Any:
    by_name = {canonicalize_name(d.name): d for d in dists}

    def find(name: str) -> FakeDist:
        try:
            return by_name[canonicalize_name(name)]
        except KeyError:
            raise PackageNotFoundError(name) from None

    return find


PROJECT_DIST = FakeDist(
    "demo",
    "1.0",
    [
        "base-dep>=1",
        'worker-dep>=2; extra == "worker"',
        'demo[worker]; extra == "dev"',
        'test-dep; extra == "dev"',
        'old-python-only; python_version < "3.0"',
    ],
)


def test_closure_follows_extras_markers_and_the_projects_own_extra() -> None:
    find = finder(
        PROJECT_DIST,
        FakeDist("base-dep", "1.2"),
        FakeDist("Worker_Dep", "2.0", ["inner[fast]", 'speedups; extra == "fast"']),
        FakeDist("inner", "3.0", ['speedups; extra == "fast"', 'unused; extra == "slow"']),
        FakeDist("speedups", "0.1"),
        FakeDist("test-dep", "9"),
    )
    pins = lock.closure("demo", ["dev"], find)
    assert sorted(pins) == ["base-dep", "inner", "speedups", "test-dep", "worker-dep"]
    text = lock.render(pins, "3.11.7")
    body = [line for line in text.splitlines() if not line.startswith("#")]
    assert body == [
        "base-dep==1.2",
        "inner==3.0",
        "speedups==0.1",
        "test-dep==9",
        "Worker_Dep==2.0",
    ]
    assert "Python 3.11.7" in text


def test_closure_without_extras_is_the_base() -> None:
    find = finder(PROJECT_DIST, FakeDist("base-dep", "1.2"))
    assert sorted(lock.closure("demo", [], find)) == ["base-dep"]


def test_closure_refuses_an_incomplete_environment() -> None:
    find = finder(PROJECT_DIST, FakeDist("base-dep", "1.2"))
    with pytest.raises(lock.LockError, match="worker-dep>=2"):
        lock.closure("demo", ["worker"], find)


@pytest.mark.parametrize("module", ["tooling.lock", "tooling.build"])
def test_tooling_commands_take_no_arguments_and_help_writes_nothing(
    module: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # ``--help`` once rewrote constraints.txt (and would have removed the engine's build):
    # both exit in argparse before any work, which these stand-ins would record.
    done: list[str] = []

    def closure(*_args: object, **_kwargs: object) -> dict[str, object]:
        done.append("closure")
        return {}

    def sources_digest() -> str:
        done.append("digest")
        return ""

    monkeypatch.setattr(lock, "closure", closure)
    monkeypatch.setattr(build, "sources_digest", sources_digest)
    main = importlib.import_module(module).main
    with pytest.raises(SystemExit) as helped:
        main(["--help"])
    assert helped.value.code == 0
    assert f"python -m {module}" in capsys.readouterr().out
    with pytest.raises(SystemExit) as refused:
        main(["--upgrade"])
    assert refused.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("error: unrecognized arguments: --upgrade")
    assert done == []
