"""Running the ``kpi`` command as a user does, in a subprocess (tests only)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_kpi(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m kpi ARGS`` with no inherited ``KPI_*`` variable but ``env``."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("KPI_")}
    full_env.update(KPI_STACK_DIR=str(tmp_path / "stack"), **env)
    return subprocess.run(
        [sys.executable, "-m", "kpi", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
