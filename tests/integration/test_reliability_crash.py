"""SIGKILL the worker at several points of a multi-day log; the results stay exact.

The log (tests/eventgen.py, faults included) streams into Kafka in chunks while the worker is
killed and restarted:

1. at a random point of the stream (a random number of processed messages);
2. right after a window closes (as soon as a new history member shows in Redis);
3. in a burst of Redis writes: the last partition of every topic is held back, then its
   whole remainder (with its flush event) is published at once, which closes the windows of
   two days of every KPI in one go; the kill follows the first new member;
4. right after a restarted worker restored its partitions (a random fraction of a second).

Each restart waits out the killed worker's consumer-group session (10 s). In the end Redis
history equals tests/reference.py for every closed window of every KPI, window and scope; no
history holds two members for one window; the dead-letter topic holds every invalid message
exactly once. ``CHAOS_SEED`` fixes the log and the random kill thresholds of a run (printed,
and part of the failure message); the rest of the timing is the machine's.

A second test makes the most delicate kill point deterministic: after a batch's Redis write
(history, progress) and before its state reached the changelog.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest
import redis

from streams.config import Settings
from tests.integration.chaos import (
    StreamPublisher,
    as_published,
    assert_exact,
    batched_messages,
    dedicated_stack,
    events_processed,
    health,
    history_total,
    live_log,
    split_tenths,
    start_kafka,
    stop_kafka,
    topic_end,
    wait_caught_up,
    wait_unchanged,
    worker_settings,
)
from tests.integration.helpers import Worker, publish, wait_until
from tests.reference import TOPICS
from tooling.stack import stack_paths


def chaos_seed() -> int:
    return int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(1, 10**6))


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_sigkill_at_four_points_leaves_exact_results(kpi_env: Settings, tmp_path: Path) -> None:
    seed = chaos_seed()
    rnd = random.Random(seed)
    log = live_log(kpi_env, seed=seed, n_events=6000, days=6)
    assert log.n_windows > 1500
    held = {(t, kpi_env.partitions - 1) for t in TOPICS}
    n = len(log.messages)
    first = log.messages[: int(n * 0.35)]
    second = log.messages[int(n * 0.35) : int(n * 0.65)]
    rest = log.messages[int(n * 0.65) :]
    third = [m for m in rest if (m.topic, m.partition) not in held]
    burst = [m for m in rest if (m.topic, m.partition) in held]
    # The last message of each held partition is published after the fourth start: a worker
    # restores a partition when it first gets a batch of it, and kill 3 may land after the
    # burst was written and committed.
    last = {(m.topic, m.partition): i for i, m in enumerate(burst)}
    tail = [burst[i] for i in sorted(last.values())]
    burst = [m for i, m in enumerate(burst) if i not in set(last.values())]
    keys = log.history_keys
    r = redis.Redis.from_url(kpi_env.redis_url)
    worker = Worker(kpi_env, tmp_path / "worker.log")
    kills: list[str] = []

    def note(what: str) -> None:
        kills.append(f"{time.strftime('%X')} {what}")
        print(f"CHAOS_SEED={seed}: {kills[-1]}")

    try:
        worker.start()
        # The first two parts stream in the background, through kills 1 and 2.
        streaming = StreamPublisher(kpi_env, first + second, chunk=60, pause_s=0.1)
        streaming.start()

        # 1: a random point of the stream.
        threshold = rnd.randint(100, len(first))
        wait_until(lambda: events_processed(worker) >= threshold, timeout_s=120, interval_s=0.02)
        worker.kill()
        note(f"kill 1 after >= {threshold} messages, {streaming.sent} published")

        # 2: right after a window closes.
        worker.start()
        before = history_total(r, keys)
        wait_until(lambda: history_total(r, keys) > before, timeout_s=120, interval_s=0.01)
        worker.kill()
        note(f"kill 2 after history {before} -> {history_total(r, keys)}")

        # 3: the held-back partitions close many windows at once.
        worker.start()
        streaming.finish()
        publish(kpi_env, as_published(third))
        wait_caught_up(kpi_env)
        before = history_total(r, keys)
        publish(kpi_env, as_published(burst))
        wait_until(lambda: history_total(r, keys) > before, timeout_s=60, interval_s=0.005)
        worker.kill()
        note(
            f"kill 3 in the burst of {len(burst)} messages: history {before} -> "
            f"{history_total(r, keys)} of {log.n_windows}"
        )

        # 4: right after the restore.
        worker.start()
        publish(kpi_env, as_published(tail))
        wait_until(lambda: health(worker)[1].get("partitions"), timeout_s=90, interval_s=0.05)
        time.sleep(rnd.uniform(0.0, 0.5))
        worker.kill()
        note(f"kill 4 after the restore: history {history_total(r, keys)} of {log.n_windows}")

        worker.start()
        try:
            assert_exact(r, log, timeout_s=180)
        except AssertionError as exc:
            raise AssertionError(f"CHAOS_SEED={seed}, kills {kills}: {exc}") from exc
        assert worker.log().count("restored") >= 4
    finally:
        worker.stop()
        r.close()


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_kill_after_the_redis_write_before_the_state_commit(tmp_path: Path) -> None:
    """The crash point the exactness argument hinges on, made deterministic.

    The last partition of every topic is held back for a fifth of the log, so its windows
    stay open while the others move on. Then Redis is SIGSTOPped and the held-back messages
    are published (the worker paused meanwhile, so that it takes them in one batch): the
    worker's next batch moves the frontier by hours, closes many windows,
    sends its dead letters and blocks in its Redis write. The broker is SIGKILLed, so no
    changelog record of that batch can reach it; Redis resumes and takes the batch's history
    (and whatever else the batch writes); the worker is SIGKILLed. Its successor restores
    the state as of the batch before, replays the batch and must end with exactly the
    reference, as docs/ARCHITECTURE.md promises ("a crash anywhere"). A stack of the test's
    own: its broker and Redis are the ones stopped.
    """
    with dedicated_stack(tmp_path / "stack") as stack:
        settings = worker_settings(stack)
        log = live_log(settings, seed=505, n_events=3000, days=4)
        first, second, rest = split_tenths(log.messages, 4, 6)
        held = [m for m in second if m.partition == settings.partitions - 1]
        others = [m for m in second if m.partition != settings.partitions - 1]
        keys = log.history_keys
        redis_pid = int(stack_paths(stack).redis_pid.read_text())
        r = redis.Redis.from_url(settings.redis_url)
        worker = Worker(settings, tmp_path / "worker.log").start()
        redis_stopped = False
        try:
            publish(settings, as_published(first))
            wait_caught_up(settings)
            publish(settings, as_published(others))
            wait_caught_up(settings)
            before = history_total(r, keys)

            taken = batched_messages(worker)
            os.kill(redis_pid, signal.SIGSTOP)
            redis_stopped = True
            # Ticks (one a second) meet the stopped Redis first; batches must not wait for them.
            time.sleep(1.5)
            # The held messages reach the worker in one fetch, so its next batch closes the
            # windows they move past: it is paused while they are published, after its
            # pending fetch was answered (empty, after fetch.max.wait.ms = 500 ms).
            assert worker.proc is not None
            os.kill(worker.proc.pid, signal.SIGSTOP)
            try:
                time.sleep(1.0)
                publish(settings, as_published(held))
            finally:
                os.kill(worker.proc.pid, signal.SIGCONT)
            # The worker processes them, sends the batch's dead letters and blocks in the
            # batch's Redis write.
            wait_until(lambda: batched_messages(worker) >= taken + len(held), timeout_s=30)
            wait_unchanged(lambda: topic_end(settings, settings.dead_letter_topic), quiet_s=2.0)
            stop_kafka(stack, signal.SIGKILL)
            os.kill(redis_pid, signal.SIGCONT)
            redis_stopped = False
            wait_until(lambda: history_total(r, keys) > before, timeout_s=60, interval_s=0.05)
            worker.kill()
            note = f"the batch wrote {history_total(r, keys) - before} history members"

            start_kafka(stack)
            worker.start()
            publish(settings, as_published(rest))
            try:
                assert_exact(r, log)
            except AssertionError as exc:
                raise AssertionError(f"{note}: {exc}") from exc
            assert "restored" in worker.log()
        finally:
            if redis_stopped:
                os.kill(redis_pid, signal.SIGCONT)
            worker.stop()
            r.close()
