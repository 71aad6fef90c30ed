"""backoffice-kpi: a streaming back-office KPI processor (Kafka -> Faust -> Redis, Prometheus).

The engine's modules may be compiled with mypyc (``python -m tooling.build``, run by
``make install``). The extensions are used only while the sources match the digest the build
wrote; otherwise (sources edited since, no build, or ``KPI_PURE_PYTHON=1``) the sources are
imported instead, so what runs is always what the ``.py`` files say. ``ENGINE_BUILD`` tells
which: ``"compiled"`` or ``"python"``.
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

__version__ = "0.1.0"

#: The modules ``python -m tooling.build`` compiles (the per-event hot path).
#: Not the catalog: compiled, its ``float`` fields turn the integer targets into floats, and
#: the generated dashboards and rules would change (``20`` -> ``20.0``) for ~1% of speed.
COMPILED_MODULES = (
    "streams.core.engine",
    "streams.core.measures",
    "streams.core.state",
    "streams.core.uptime",
    "streams.core.windows",
)
ROOT = Path(__file__).resolve().parent.parent
STAMP = Path(__file__).resolve().parent / "_compiled.sha256"


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


def _engine_build() -> str:
    try:
        built = STAMP.read_text().strip()
    except OSError:
        built = ""
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    extensions = [ROOT / "streams" / f"_engine__mypyc{suffix}"] + [
        path.with_name(path.stem + suffix) for path in compiled_sources().values()
    ]
    if (
        built
        and not os.environ.get("KPI_PURE_PYTHON")
        and all(path.exists() for path in extensions)
        and built == sources_digest()
    ):
        return "compiled"
    sys.meta_path.insert(0, _SourceFinder(compiled_sources()))
    return "python"


#: ``"compiled"`` when the engine runs as its mypyc build, else ``"python"``.
ENGINE_BUILD = _engine_build()
