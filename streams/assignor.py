"""The input group's partition assignor: every topic split evenly, its leaders spread.

A topic is led (its windows closed and published, the other partitions' changelogs
followed) by the worker that owns its partition 0 (``streams/runtime.py``). Kafka's
round-robin assignor lays the sorted partitions of all topics out in one row, so with an
even partition count one worker owns every partition 0 and does all the leading while the
others wait for it. This assignor deals each topic's partitions round-robin too, but starts
topic ``i`` (topics sorted by name) at member ``i``: each topic is still split within one
partition, and partition 0 of consecutive topics goes to different members.

With two workers and three topics the leaders are split 2 + 1; with three, one each.
Members that do not subscribe to a topic are skipped for it, as with round-robin.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)


def spread(
    partitions: Mapping[str, Iterable[int]], subscriptions: Mapping[str, Iterable[str]]
) -> dict[str, dict[str, list[int]]]:
    """Member -> topic -> partitions: each topic dealt round-robin from member ``i``.

    ``partitions`` maps each topic to its partitions, ``subscriptions`` each member to
    its topics. Members are ordered by id, topics by name, so every member computes the
    same assignment.
    """
    members = sorted(subscriptions)
    subscribed = {m: set(subscriptions[m]) for m in members}
    out: dict[str, dict[str, list[int]]] = {m: defaultdict(list) for m in members}
    for i, topic in enumerate(sorted(partitions)):
        takers = [m for m in members if topic in subscribed[m]]
        if not takers:
            continue
        for j, p in enumerate(sorted(partitions[topic])):
            out[takers[(i + j) % len(takers)]][topic].append(p)
    return {m: dict(by_topic) for m, by_topic in out.items()}


class SpreadLeadersAssignor(AbstractPartitionAssignor):  # type: ignore[misc]
    """Round-robin per topic, each topic starting at the next member (see module doc)."""

    name = "backoffice-spread-leaders"
    version = 0

    @classmethod
    def assign(
        cls,
        cluster: ClusterMetadata,
        members: Mapping[str, ConsumerProtocolMemberMetadata],
    ) -> dict[str, ConsumerProtocolMemberAssignment]:
        """The group leader's plan for every member (see ``spread``)."""
        topics = {t for metadata in members.values() for t in metadata.subscription}
        known = {t: cluster.partitions_for_topic(t) or set() for t in topics}
        plan = spread(known, {m: md.subscription for m, md in members.items()})
        return {
            m: ConsumerProtocolMemberAssignment(cls.version, sorted(plan[m].items()), b"")
            for m in members
        }

    @classmethod
    def metadata(cls, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        """What a member tells the group: its topics, nothing else."""
        return ConsumerProtocolMemberMetadata(cls.version, list(topics), b"")

    @classmethod
    def on_assignment(cls, assignment: ConsumerProtocolMemberAssignment) -> None:
        """Nothing to remember between rebalances."""
