"""``python -m tooling.build``: compile the engine's modules with mypyc (``make install``).

The engine (``streams/core``) is plain, fully typed Python; mypyc turns its modules into C
extensions placed beside the sources, which run the same code ~1.35x faster (all fourteen
KPIs, ``python -m bench.engine_profile``; results are bit-identical, a test checks it). A
digest of the sources goes to ``streams/_compiled.sha256``: ``streams.engine_build.select()``
uses the extensions only while the sources still match it, so an edited engine never runs as
its stale build. Without a C compiler the build is skipped and everything runs as Python.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from streams.engine_build import ROOT, STAMP, compiled_sources, sources_digest

#: mypyc's name for the shared library of the compiled modules (a module of the package).
GROUP = "streams._engine"


def built_extensions() -> list[Path]:
    """The extension files a build left in the tree (modules and mypyc's shared library).

    Every extension in the compiled modules' folders, also of modules no longer compiled
    (renamed or removed): a stale one would still be importable.
    """
    found = set((ROOT / "streams").glob("_engine__mypyc.*.so"))
    for folder in {source.parent for source in compiled_sources().values()}:
        found.update(folder.glob("*.so"))
    return sorted(found)


def main(argv: list[str] | None = None) -> int:
    """Remove the old build, compile, write the stamp; 0 also when compiling is impossible.

    A failed build leaves an empty stamp (the engine runs as Python, and ``make`` does not
    retry at every call; ``python -m tooling.build`` does, e.g. after installing gcc).
    It takes no arguments: ``--help`` or anything else touches nothing.
    """
    argparse.ArgumentParser(
        prog="python -m tooling.build",
        description="Compile the engine's modules with mypyc, beside their sources (make install).",
    ).parse_args(argv)
    STAMP.unlink(missing_ok=True)
    # The digest of what is compiled, taken before: an edit saved during the build must
    # not be stamped as built.
    digest = sources_digest()
    for path in built_extensions():
        path.unlink()
    sources = [str(p.relative_to(ROOT)) for p in compiled_sources().values()]
    log = ROOT / "build" / "mypyc.log"
    log.parent.mkdir(exist_ok=True)
    # The shared library goes into the package (streams/_engine__mypyc...so), where an
    # installed ``kpi`` finds it; mypyc's command line would put it beside the repository.
    script = (
        "import sys\n"
        "from setuptools import setup\n"
        "from mypyc.build import mypycify\n"
        "setup(name='backoffice-kpi-engine', py_modules=[], packages=[],\n"
        "      ext_modules=mypycify(sys.argv[1:], group_name=GROUP),\n"
        "      script_args=['build_ext', '--inplace', '--build-temp', 'build/mypyc'])\n"
    ).replace("GROUP", repr(GROUP))
    with log.open("w") as out:
        done = subprocess.run(
            [sys.executable, "-c", script, *sources], cwd=ROOT, stdout=out, stderr=out
        )
    if done.returncode != 0:
        for path in built_extensions():
            path.unlink()
        STAMP.write_text("")
        print(
            f"tooling.build: mypyc failed (see {log}); the engine runs as pure Python",
            file=sys.stderr,
        )
        return 0
    if sources_digest() != digest:
        STAMP.write_text("")
        print("tooling.build: sources changed during the build; run it again", file=sys.stderr)
        return 0
    STAMP.write_text(digest + "\n")
    print(f"tooling.build: compiled {len(sources)} modules with mypyc")
    return 0


if __name__ == "__main__":
    sys.exit(main())
