"""The checkpoint's write order, with fakes: every step after the last, and a crash anywhere.

A batch's effects become durable in one order: dead letters, the sinks (Redis, then
Prometheus), the changelog, the closing progress, and the input offsets last. A step that
raises must leave every later step undone and, above all, the offsets uncommitted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import pytest
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from streams.checkpoint import Changelog, Checkpoint, Commit
from streams.core.records import DeadLetter, WindowValue
from streams.core.state import ChangelogRecord
from streams.sinks.base import SinkBatch
from streams.sinks.metrics import Metrics
from streams.watchdog import Steps

TP = TopicPartition("invoices", 3)
WV = WindowValue("dso", "1h", "all", 0, 3600, "1970-01-01T00", 1.5, 2, True)
COMMIT = Commit(
    dead_letters=[DeadLetter("schema", "bad", "invoices", 3, 7, b"{")],
    sinks=SinkBatch(closed=[WV], current=[WV]),
    changelog=[("invoices", 3, [ChangelogRecord(b"k", b"v")])],
    progress={"invoices": 3600.0},
    offsets={TP: 9},
    timestamps=[1_000, 2_000],
)
STEPS = ["dead letters", "redis", "prometheus", "changelog", "progress", "offsets"]


class Boom(Exception):
    pass


class Journal:
    """What each fake step did, in order; ``fail`` names the step that raises."""

    def __init__(self, fail: str | None = None) -> None:
        self.done: list[tuple[str, object]] = []
        self.fail = fail
        # Steps held until released (to see batches overlap, or not).
        self.gates: dict[str, asyncio.Event] = {}

    async def step(self, name: str, what: object) -> None:
        gate = self.gates.get(name)
        if gate is not None:
            await gate.wait()
        if name == self.fail:
            raise Boom(name)
        self.done.append((name, what))

    def names(self) -> list[str]:
        return [name for name, _ in self.done]


class FakeDeadLetters:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    async def send(self, dead_letters: Sequence[DeadLetter]) -> None:
        await self.journal.step("dead letters", list(dead_letters))


class FakeSink:
    def __init__(self, journal: Journal, name: str) -> None:
        self.journal, self.name = journal, name
        self.started = self.closed = False

    async def start(self) -> None:
        self.started = True

    async def write(self, batch: SinkBatch) -> None:
        await self.journal.step(self.name, batch)

    async def close(self) -> None:
        self.closed = True


class FakeChangelog:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    async def send(self, changelog: Changelog) -> None:
        await self.journal.step("changelog", list(changelog))


class FakeProgress:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    async def write(self, progress: Mapping[str, float]) -> None:
        await self.journal.step("progress", dict(progress))


class FakeOffsets:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.committed: dict[TopicPartition, int] = {}

    async def commit(self, processed: Mapping[TopicPartition, int]) -> None:
        await self.journal.step("offsets", dict(processed))
        self.committed.update(processed)


def checkpoint(journal: Journal) -> tuple[Checkpoint, FakeOffsets, list[FakeSink]]:
    offsets = FakeOffsets(journal)
    sinks = [FakeSink(journal, "redis"), FakeSink(journal, "prometheus")]
    made = Checkpoint(
        dead_letters=FakeDeadLetters(journal),
        sinks=sinks,
        changelog=FakeChangelog(journal),
        progress=FakeProgress(journal),
        offsets=offsets,
        metrics=Metrics(CollectorRegistry()),
        steps=Steps(),
        clock=lambda: 10.0,
    )
    return made, offsets, sinks


async def test_a_batch_is_written_in_order_and_its_offsets_committed_last() -> None:
    journal = Journal()
    cp, offsets, _ = checkpoint(journal)
    await cp.write(COMMIT)
    assert journal.done == [
        ("dead letters", list(COMMIT.dead_letters)),
        ("redis", COMMIT.sinks),
        ("prometheus", COMMIT.sinks),
        ("changelog", list(COMMIT.changelog)),
        ("progress", {"invoices": 3600.0}),
        ("offsets", {TP: 9}),
    ]
    assert offsets.committed == {TP: 9}
    assert (cp.stats.events, cp.stats.last_batch_at, cp.stats.last_input_at) == (2, 10.0, 10.0)


@pytest.mark.parametrize("failing", STEPS)
async def test_a_crash_at_any_step_leaves_the_later_ones_undone(failing: str) -> None:
    journal = Journal(fail=failing)
    cp, offsets, _ = checkpoint(journal)
    last_input_at = cp.stats.last_input_at
    with pytest.raises(Boom):
        await cp.write(COMMIT)
    assert journal.names() == STEPS[: STEPS.index(failing)]
    assert offsets.committed == {}
    if STEPS.index(failing) < STEPS.index("offsets"):
        # Nothing counts as written: no health or stall report sees progress.
        assert (cp.stats.events, cp.stats.last_input_at) == (0, last_input_at)


async def test_no_progress_is_no_progress_write() -> None:
    journal = Journal()
    cp, _, _ = checkpoint(journal)
    await cp.write(Commit(offsets={TP: 1}))
    assert journal.names() == ["dead letters", "redis", "prometheus", "changelog", "offsets"]


async def test_a_tick_without_input_commits_what_is_due_but_is_no_input_progress() -> None:
    journal = Journal()
    cp, _, _ = checkpoint(journal)
    before = cp.stats.last_input_at
    await cp.write(Commit())
    assert journal.names()[-1] == "offsets"
    assert cp.stats.last_batch_at == 10.0
    assert cp.stats.last_input_at == before


async def test_batches_are_written_one_after_the_other_in_submission_order() -> None:
    journal = Journal()
    cp, _, _ = checkpoint(journal)
    held = journal.gates["changelog"] = asyncio.Event()
    first = Commit(offsets={TP: 1})
    second = Commit(offsets={TP: 2})
    await cp.submit(first)  # returns at once: the writes run in the background
    submitting = asyncio.ensure_future(cp.submit(second))
    await asyncio.sleep(0.01)
    # The second batch's writes wait for the first's, held in its changelog step.
    assert journal.names() == ["dead letters", "redis", "prometheus"]
    assert not submitting.done()
    held.set()
    await submitting
    await cp.drain()
    assert [what for name, what in journal.done if name == "offsets"] == [{TP: 1}, {TP: 2}]
    assert journal.names() == (STEPS[:4] + ["offsets"]) * 2


async def test_a_failed_background_write_stops_the_worker_and_raises_on_drain() -> None:
    journal = Journal(fail="changelog")
    cp, offsets, _ = checkpoint(journal)
    await cp.submit(COMMIT)
    for _ in range(10):
        await asyncio.sleep(0)
    assert cp.crashed
    with pytest.raises(Boom):
        await cp.drain()
    assert offsets.committed == {}


async def test_the_sinks_live_as_long_as_the_checkpoint() -> None:
    cp, _, sinks = checkpoint(Journal())
    await cp.start()
    assert all(s.started and not s.closed for s in sinks)
    await cp.stop()
    assert all(s.closed for s in sinks)
