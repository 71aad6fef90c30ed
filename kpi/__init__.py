"""The ``kpi`` command: the product's and the tooling's sub-commands behind one entry point.

``main`` is the installed script: it needs the worker extra, and says so in one line when
only the base install (the reader: ``redis``) is there.
"""

from __future__ import annotations

import re
import sys
from importlib.metadata import PackageNotFoundError, distribution, version

WORKER_EXTRA_MISSING = (
    "kpi: error: the kpi command needs the worker extra: pip install 'backoffice-kpi[worker]'"
)


def missing_worker_requirements() -> list[str]:
    """The distributions of the worker extra that are not installed (by the package's metadata)."""
    try:
        requires = distribution("backoffice-kpi").requires or []
    except PackageNotFoundError:  # run from a source tree that was never installed
        return []
    missing = []
    for text in requires:
        if re.search(r"""extra\s*==\s*["']worker["']""", text):
            name = re.match(r"[A-Za-z0-9._-]+", text)
            try:
                version(name.group(0) if name else text)
            except PackageNotFoundError:
                missing.append(text.split(";")[0].strip())
    return missing


def main() -> None:
    """Run ``kpi``; without the worker extra, one line on stderr and exit 2."""
    try:
        from kpi import cli
    except ModuleNotFoundError:
        if not missing_worker_requirements():
            raise  # a broken install, not a missing extra: the traceback says what
        print(WORKER_EXTRA_MISSING, file=sys.stderr)
        sys.exit(2)
    cli.main()
