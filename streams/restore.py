"""Restoring input partitions: their state from the changelog, their sent dead letters.

A restored partition equals its state at the end of the last batch whose commit completed
(``PartitionState.restore``); the dead letters a crashed batch sent after that commit are
read back, so the replay does not send them twice (``streams/dead_letters.py``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from aiokafka import TopicPartition

from streams.config import Settings
from streams.core.state import PartitionState
from streams.dead_letters import DeadLetters
from streams.kafka import read_partitions
from streams.topics import changelog_topic

log = logging.getLogger(__name__)


class Restorer:
    """Reads changelogs and dead letters back for the partitions a worker is given."""

    def __init__(self, settings: Settings, dead_letters: DeadLetters) -> None:
        self._settings = settings
        self._dead_letters = dead_letters
        #: When a restore last read records (``time.time()``; 0 before any): the stall
        #: watchdog counts it as progress, so a restore longer than ``KPI_STALL_SECONDS``
        #: that keeps reading is not a stall (nor a failed ``/livez``).
        self.progress_at = 0.0

    def _progressed(self) -> None:
        self.progress_at = time.time()

    async def restore(self, wanted: Sequence[tuple[str, int]]) -> list[PartitionState]:
        """The states of ``wanted`` (logical topic, partition), in that order."""
        started = time.monotonic()
        changelog = {
            TopicPartition(changelog_topic(self._settings, t), p): (t, p) for t, p in wanted
        }
        records = await read_partitions(
            self._settings, list(changelog), on_records=self._progressed
        )
        states = [
            PartitionState.restore(t, p, ((k, v) for k, v in records[tp] if k is not None))
            for tp, (t, p) in changelog.items()
        ]
        start = self._dead_letters.read_back_from(states)
        sent = await read_partitions(self._settings, list(start), start)
        self._dead_letters.recall(states, (v for recs in sent.values() for _k, v in recs))
        log.info(
            "restored %d partition(s) in %.2f s: %s",
            len(states),
            time.monotonic() - started,
            ", ".join(f"{st.topic}-{st.partition}@{st.applied_offset}" for st in states),
        )
        return states
