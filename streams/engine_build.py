"""Which engine runs: its mypyc build or its sources, chosen once by an explicit call.

``python -m tooling.build`` compiles ``COMPILED_MODULES`` into extensions beside their
sources and stamps the sources' digest. ``select()`` keeps the extensions only while the
sources still match that stamp; otherwise (sources edited since, no build, or
``KPI_PURE_PYTHON=1``) it makes Python import the ``.py`` files, so what runs is always what
they say. Entry points call it before anything imports ``streams.core``: ``kpi``, the
benchmarks and the tests' ``conftest.py``.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

#: The modules ``python -m tooling.build`` compiles (the per-event hot path): the engine
#: and the KPIs' measures, which it calls per event (interpreted, they made the engine 4-8%
#: slower per event than before the KPIs became objects; compiled, it is faster than
#: before: interleaved pairs of ``bench.engine_profile``). Not ``streams/kpis/base.py``,
#: which defines ``Kpi`` and
#: ``Target``: a compiled class turns ``float`` fields' integer targets into floats, and the
#: generated dashboards, rules and Redis catalog would change (``20`` -> ``20.0``). The
#: domain modules only construct those classes, so their integers stay integers.
COMPILED_MODULES = (
    "streams.core.calendar",
    "streams.core.closing",
    "streams.core.distributions",
    "streams.core.engine",
    "streams.core.judge",
    "streams.core.keys",
    "streams.core.lifecycle",
    "streams.core.panes",
    "streams.core.records",
    "streams.core.replicas",
    "streams.core.retention",
    "streams.core.state",
    "streams.core.timelines",
    "streams.core.windows",
    "streams.kpis.fact",
    "streams.kpis.finance",
    "streams.kpis.it",
    "streams.kpis.people",
)
ROOT = Path(__file__).resolve().parent.parent
#: The digest of the sources the extensions were built from (empty: no usable build).
STAMP = Path(__file__).resolve().parent / "_compiled.sha256"

_choice: str | None = None


def compiled_sources() -> dict[str, Path]:
    """Module name -> its source file."""
    return {name: ROOT / (name.replace(".", "/") + ".py") for name in COMPILED_MODULES}


def sources_digest() -> str:
    """SHA-256 over the compiled modules' sources (names and bytes)."""
    digest = hashlib.sha256()
    for name, path in sorted(compiled_sources().items()):
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


class _SourceFinder:
    """Imports the listed modules from their ``.py`` files, even when an extension exists."""

    def __init__(self, sources: dict[str, Path]) -> None:
        self.sources = sources

    def find_spec(
        self, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        source = self.sources.get(name)
        return None if source is None else importlib.util.spec_from_file_location(name, source)


def _build_is_current() -> bool:
    try:
        built = STAMP.read_text().strip()
    except OSError:
        return False
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    extensions = [ROOT / "streams" / f"_engine__mypyc{suffix}"] + [
        path.with_name(path.stem + suffix) for path in compiled_sources().values()
    ]
    return bool(built) and all(p.exists() for p in extensions) and built == sources_digest()


def select() -> str:
    """Choose the engine for this process: ``"compiled"`` or ``"python"`` (once; idempotent).

    Raises ``RuntimeError`` when it comes too late: an extension of a module that must now
    run from its source was imported already (the stale build would run).
    """
    global _choice
    if _choice is not None:
        return _choice
    if not os.environ.get("KPI_PURE_PYTHON") and _build_is_current():
        _choice = "compiled"
        return _choice
    loaded = [sys.modules[name] for name in COMPILED_MODULES if name in sys.modules]
    stale = [m.__name__ for m in loaded if not str(getattr(m, "__file__", "")).endswith(".py")]
    if stale:
        msg = f"{', '.join(stale)} imported before streams.engine_build.select(): call it first"
        raise RuntimeError(msg)
    sys.meta_path.insert(0, _SourceFinder(compiled_sources()))
    _choice = "python"
    return _choice


def current() -> str:
    """``"compiled"`` when the engine runs as its mypyc build, else ``"python"``.

    The choice ``select()`` made; a process whose entry point did not call it chooses now.
    """
    return _choice or select()
