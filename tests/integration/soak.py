"""Rebalance soak: workers of one group come and go at random while a multi-day log streams in.

One seeded run publishes a live log in parts while two or three ``kpi worker`` processes of
one consumer group are killed (SIGKILL), stopped (SIGTERM), started and restarted at random
moments, some changes within the session timeout of each other. Afterwards every closed
window in Redis must equal the batch reference, every dead letter be there once, and no
worker may have reported a stall. ``tests/integration/test_rebalance.py`` runs a short seed
in ``make test``; ``make soak SEED=7 MINUTES=10`` (``python -m tests.integration.soak``) a
longer one on a stack of its own.
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import redis

from streams.config import Settings
from tests.integration.chaos import (
    LiveLog,
    StreamPublisher,
    assert_exact,
    dedicated_stack,
    health,
    live_log,
    wait_caught_up,
    worker_settings,
)
from tests.integration.helpers import Worker
from tooling.stack import free_port

#: The worker's consumer session timeout (``streams/consumer.py``): changes closer than
#: this overlap in one rebalance.
SESSION_TIMEOUT_S = 10.0
#: A worker reports a stall after this long without a batch while input waits.
STALL_S = 30.0


@dataclass
class Slot:
    """One worker identity: its own web port and log, started again after a kill or stop."""

    settings: Settings
    log_path: Path
    worker: Worker | None = None

    @property
    def running(self) -> bool:
        proc = self.worker.proc if self.worker else None
        return proc is not None and proc.poll() is None

    def start(self) -> None:
        self.worker = Worker(self.settings, self.log_path).start()

    def stop(self, sig: int) -> None:
        worker = self.worker
        if worker is None or worker.proc is None or worker.proc.poll() is not None:
            return
        if sig == signal.SIGKILL:
            worker.kill()
        else:
            worker.stop()


@dataclass
class SoakReport:
    """What one soak did and saw."""

    seed: int
    events: int
    windows: int
    dead_letters: int
    changes: Counter[str] = field(default_factory=Counter)
    quick_pairs: int = 0
    seconds: float = 0.0
    stalls: list[str] = field(default_factory=list)

    def line(self) -> str:
        changes = ", ".join(f"{n} {kind}" for kind, n in sorted(self.changes.items()))
        return (
            f"soak seed={self.seed}: {sum(self.changes.values())} membership changes "
            f"({changes}; {self.quick_pairs} within the session timeout of the previous), "
            f"{self.events} events, {self.windows} closed windows and {self.dead_letters} "
            f"dead letters equal to the reference, {len(self.stalls)} stalls, "
            f"{self.seconds:.0f} s"
        )


def soak(
    stack: Settings,
    root: Path,
    *,
    seed: int,
    changes: int = 10,
    days: int = 8,
    n_events: int = 8000,
    max_workers: int = 3,
) -> SoakReport:
    """Run one seeded soak on ``stack``; raise AssertionError on any difference or stall."""
    began = time.monotonic()
    rnd = random.Random(seed)
    # A Redis database of its own, empty: seeds run one after the other on one stack.
    redis_url = stack.redis_url.rsplit("/", 1)[0] + f"/{seed % 15 + 1}"
    redis.Redis.from_url(redis_url).flushdb()
    settings = worker_settings(stack, stall_seconds=STALL_S, redis_url=redis_url)
    log: LiveLog = live_log(settings, seed=seed, n_events=n_events, days=days)
    report = SoakReport(seed, len(log.messages), log.n_windows, len(log.expected.dead_letters))
    slots = [
        Slot(settings.model_copy(update={"web_port": free_port()}), root / f"w{i}.log")
        for i in range(max_workers)
    ]
    # The log in as many parts as there are changes (+1): each change lands while a part is
    # being published, at a random point in it.
    cuts = sorted(rnd.sample(range(1, len(log.messages)), changes))
    parts = [log.messages[a:b] for a, b in zip([0, *cuts], [*cuts, len(log.messages)], strict=True)]
    try:
        slots[0].start()
        slots[1].start()
        last_change = time.monotonic()
        for part in parts[:-1]:
            publisher = StreamPublisher(settings, part, chunk=200, pause_s=0.05)
            publisher.start()
            # Half the changes follow the previous one within the session timeout.
            quick = rnd.random() < 0.5
            pause = rnd.uniform(0.2, 4.0) if quick else rnd.uniform(SESSION_TIMEOUT_S, 16.0)
            time.sleep(max(0.0, last_change + pause - time.monotonic()))
            kind = _change(rnd, slots)
            report.changes[kind] += 1
            if time.monotonic() - last_change < SESSION_TIMEOUT_S:
                report.quick_pairs += 1
            last_change = time.monotonic()
            publisher.finish()
        if not any(s.running for s in slots):
            slots[0].start()
            report.changes["start (none left)"] += 1
        publisher = StreamPublisher(settings, parts[-1], chunk=200, pause_s=0.05)
        publisher.start()
        publisher.finish()
        wait_caught_up(settings, timeout_s=180)
        assert_exact(redis.Redis.from_url(settings.redis_url), log, timeout_s=180)
        for slot in slots:
            text = slot.log_path.read_text(errors="replace") if slot.log_path.exists() else ""
            report.stalls += [line for line in text.splitlines() if "stalled" in line]
            if slot.running and slot.worker is not None:
                status, body = health(slot.worker)
                if body.get("problems"):
                    report.stalls.append(f"{slot.log_path.name}: {body['problems']}")
        assert not report.stalls, report.stalls[:5]
    finally:
        for slot in slots:
            slot.stop(signal.SIGTERM)
    report.seconds = time.monotonic() - began
    return report


def _change(rnd: random.Random, slots: list[Slot]) -> str:
    """One random membership change; at least one worker keeps running."""
    running = [s for s in slots if s.running]
    idle = [s for s in slots if not s.running]
    options = []
    if len(running) > 1:
        options += ["kill", "kill", "stop"]
    if idle:
        options += ["start", "start"]
    kind = rnd.choice(options)
    if kind == "start":
        slot = rnd.choice(idle)
        kind = "restart" if slot.worker is not None else "start"
        slot.start()
    else:
        rnd.choice(running).stop(signal.SIGKILL if kind == "kill" else signal.SIGTERM)
    return kind


def main(argv: list[str] | None = None) -> int:
    """``make soak``: one or more seeds, each on a fresh stack of its own, bounded in time."""
    parser = argparse.ArgumentParser(prog="python -m tests.integration.soak")
    parser.add_argument("--seed", type=int, default=1, help="first seed (default 1)")
    parser.add_argument("--seeds", type=int, default=1, help="how many seeds in a row")
    parser.add_argument(
        "--minutes", type=float, default=10.0, help="stop starting new seeds after this"
    )
    parser.add_argument("--changes", type=int, default=20, help="membership changes per seed")
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.minutes * 60
    # Kept after a failure (the workers' logs); removed after a pass.
    root = Path(tempfile.mkdtemp(prefix="kpi-soak-"))
    with dedicated_stack(root / "stack") as stack:
        for seed in range(args.seed, args.seed + args.seeds):
            if time.monotonic() > deadline:
                print(f"soak: time is up before seed {seed}")
                break
            run_root = root / f"seed-{seed}"
            run_root.mkdir()
            try:
                report = soak(stack, run_root, seed=seed, changes=args.changes)
            except AssertionError as exc:
                print(f"soak seed={seed}: FAILED: {exc}")
                print(f"soak: the workers' logs are in {run_root}")
                return 1
            print(report.line(), flush=True)
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
