"""Running the ``kpi`` command as a user does, in a subprocess (tests only)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


def run_kpi(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m kpi ARGS`` with no inherited ``KPI_*`` variable but ``env``."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("KPI_")}
    full_env.update(KPI_STACK_DIR=str(tmp_path / "stack"), **env)
    return run_kpi_in(full_env, *args)


def run_kpi_in(
    env: dict[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``python -m kpi ARGS`` in exactly the environment ``env``."""
    return subprocess.run(
        [sys.executable, "-m", "kpi", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def interruptible() -> None:
    """``preexec_fn`` of a ``kpi`` a test interrupts: SIGINT back to its default in the child.

    A shell starts background jobs with SIGINT ignored (as CI may run the tests), a child
    inherits that, and Python then installs no KeyboardInterrupt handler: the test's SIGINT
    (Ctrl-C) would do nothing.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
