"""Subprocesses of the benchmark (workers, the raw consumer, the Quix app, py-spy).

Every child is started in its own session (a Ctrl-C in the terminal reaches only the bench,
which then stops them) and registered, so ``stop_all`` can end exactly those, by pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

_children: dict[int, subprocess.Popen[bytes]] = {}


def spawn(argv: list[str], *, env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    """Start ``argv`` with output to ``log``; registered for ``stop_all``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    cwd.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _children[proc.pid] = proc
    return proc


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> None:
    """Signal ``proc`` and wait; SIGKILL when it does not exit in time."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(10)
    _children.pop(proc.pid, None)


def stop_all() -> None:
    """Stop every child still running (on failure or Ctrl-C)."""
    for proc in list(_children.values()):
        stop(proc, timeout_s=10.0)


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_get(url: str, timeout_s: float = 2.0) -> bytes | None:
    """The body of a GET (any status), or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - loopback
            body: bytes = resp.read()
            return body
    except urllib.error.HTTPError as exc:
        return exc.read()
    except (urllib.error.URLError, OSError, TimeoutError):
        return None


def http_json(url: str, timeout_s: float = 2.0) -> Any:
    """A GET decoded as JSON, or None."""
    body = http_get(url, timeout_s)
    if body is None:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def proc_status(pid: int) -> dict[str, int]:
    """VmHWM / VmRSS (kB) of ``pid`` from /proc, empty when it is gone."""
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmHWM", "VmRSS"):
            out[name] = int(rest.split()[0])
    return out


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds ``pid`` has used so far."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def dir_size(path: Path, suffix: str = "") -> int:
    """Bytes on disk (allocated blocks) of the files below ``path`` whose name ends in ``suffix``.

    Allocated, not apparent, size: Kafka preallocates each segment's index files (10 MB
    sparse files), which would otherwise count as state.
    """
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            if name.endswith(suffix):
                with contextlib.suppress(OSError):
                    total += os.stat(os.path.join(root, name)).st_blocks * 512
    return total


def wait_for(check: Any, timeout_s: float, interval_s: float = 0.05, what: str = "") -> Any:
    """Poll ``check()`` until truthy; TimeoutError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            msg = f"timed out after {timeout_s:.0f} s waiting for {what or 'a condition'}"
            raise TimeoutError(msg)
        time.sleep(interval_s)
