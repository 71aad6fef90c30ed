"""The exit codes of ``kpi`` (README, "Exit codes"), as a script sees them.

0 done, 1 nothing to show or a check failed, 2 a usage, setting or connection error, 130
interrupted. "No value yet" (1) needs a Redis that answers: tests/integration/
test_cli_scripting.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from schemas.errors import EXIT_ERROR, EXIT_INTERRUPTED
from tests.cli import interruptible, run_kpi
from tests.unreachable import SilentServer
from tooling.stack import free_port


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("get", "dso", "--bogus"), "No such option: --bogus"),
        (("get", "dso", "--history", "many"), "Invalid value for '--history'"),
        (("get",), "give a KPI name, or --all"),
        (("get", "nope"), "unknown KPI 'nope'; one of: "),
        (("get", "--all", "--json", "-w", "2y"), "unknown window '2y'; one of: "),
        (("why", "dso", "--json"), "dso has no worst entities"),
        (("nosuchcommand",), "No such command 'nosuchcommand'."),
    ],
)
def test_usage_errors_exit_2_in_one_line(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    # A closed port: none of these may get as far as Redis.
    done = run_kpi(tmp_path, *args, KPI_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    assert done.returncode == EXIT_ERROR, done
    assert done.stderr.startswith("kpi: error: ") and message in done.stderr
    assert len(done.stderr.splitlines()) == 1 and done.stdout == ""


def test_a_bad_setting_exits_2(tmp_path: Path) -> None:
    done = run_kpi(tmp_path, "get", "dso", "--json", KPI_TIMEZONE="Mars/Olympus")
    assert done.returncode == EXIT_ERROR
    assert done.stderr.startswith("kpi: error: bad setting KPI_TIMEZONE: unknown time zone")
    assert done.stdout == ""


@pytest.mark.parametrize(
    "args",
    [
        ("get", "dso"),
        ("get", "dso", "--json"),
        ("get", "--all", "--json"),
        ("watch", "--json"),
        ("why", "ticket_resolution_time", "--json"),
    ],
)
def test_an_unreachable_redis_exits_2_with_nothing_on_stdout(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    done = run_kpi(tmp_path, *args, KPI_REDIS_URL=url)
    assert done.returncode == EXIT_ERROR
    assert done.stderr.startswith(f"kpi: error: cannot read Redis at {url}: connection refused")
    assert len(done.stderr.splitlines()) == 1 and done.stdout == ""


@pytest.mark.parametrize("args", [("watch",), ("get", "--all", "--json", "--watch", "1")])
def test_ctrl_c_inside_the_event_loop_exits_130_without_a_traceback(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    """SIGINT while the command awaits Redis (a server that never answers): 130, quietly."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KPI_")}
    with SilentServer() as silent:
        env.update(
            KPI_REDIS_URL=f"redis://127.0.0.1:{silent.port}/0",
            KPI_STACK_DIR=str(tmp_path / "stack"),
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "kpi", *args],
            env=env,
            preexec_fn=interruptible,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            # Connected: the command is inside asyncio.run, waiting for an answer.
            deadline = time.monotonic() + 30
            while not silent.accepted and time.monotonic() < deadline:
                assert proc.poll() is None, proc.communicate()
                time.sleep(0.05)
            assert silent.accepted, "the command never connected"
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert "Traceback" not in err and out == ""
