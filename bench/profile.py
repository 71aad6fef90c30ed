"""Reading a py-spy ``--format raw`` profile (collapsed stacks) into the top functions."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

from bench.config import REPO

# Frames every sample passes through (entry point, CLI, mode's worker, the asyncio loop,
# thread start-up): they say nothing about where the time goes, so the table skips them.
TRUNK = frozenset(
    {
        "_run_module_as_main",
        "_run_code",
        "<module>",
        "main",
        "worker",
        "run_worker",
        "Typer.__call__",
        "Command.__call__",
        "TyperGroup.main",
        "_main",
        "TyperGroup.invoke",
        "Command.invoke",
        "Context.invoke",
        "get_callback.<locals>.wrapper",
        "Worker.execute_from_commandline",
        "BaseEventLoop.run_until_complete",
        "BaseEventLoop.run_forever",
        "BaseEventLoop._run_once",
        "Handle._run",
        "Thread._bootstrap",
        "Thread._bootstrap_inner",
        "ServiceThread._start_thread",
        "WorkerThread.run",
        "Service._execute_task",
    }
)
#: The consumer thread faust runs aiokafka in (its own event loop).
CONSUMER_THREAD = "WorkerThread.run"
SELECT = "EpollSelector.select"
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _short(path: str) -> str:
    for marker in ("site-packages/", "lib/python3.11/"):
        i = path.rfind(marker)
        if i >= 0:
            return path[i + len(marker) :]
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return path


def _split(frame: str) -> tuple[str, str]:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip(), ""
    return m.group("func"), _short(m.group("file"))


def analyze(path: Path, top: int = 15) -> dict[str, Any]:
    """Cumulative (inclusive) and self shares of the functions in a collapsed-stack file."""
    cumulative: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = consumer_thread = selecting = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_split(f) for f in stack.split(";") if f.strip()]
        total += count
        if not frames:
            continue
        names = {name for name, _file in frames}
        if CONSUMER_THREAD in names:
            consumer_thread += count
        if frames[-1][0] == SELECT:
            selecting += count
        functions = {f"{name} ({file})" for name, file in frames if name not in TRUNK}
        for fn in functions:
            cumulative[fn] += count
        own["{} ({})".format(*frames[-1])] += count
    if total == 0:
        return {"samples": 0, "cumulative": [], "self": []}
    return {
        "samples": total,
        "consumer_thread_share": consumer_thread / total,
        "select_share": selecting / total,
        "cumulative": [
            {"function": fn, "share": n / total, "self_share": own[fn] / total, "samples": n}
            for fn, n in cumulative.most_common(top)
        ],
        "self": [
            {"function": fn, "share": n / total, "samples": n} for fn, n in own.most_common(top)
        ],
    }
