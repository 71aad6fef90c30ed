"""The input group's assignor: each topic split evenly, partition 0s on different members."""

from __future__ import annotations

from collections import Counter

from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata
from hypothesis import given
from hypothesis import strategies as st

from streams.assignor import SpreadLeadersAssignor, spread

TOPICS = ("kpi.hiring", "kpi.incidents", "kpi.invoices")


class Cluster:
    def __init__(self, partitions: dict[str, int]) -> None:
        self.partitions = partitions

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        n = self.partitions.get(topic)
        return set(range(n)) if n else None


def test_two_members_three_topics_split_each_topic_and_the_leaders() -> None:
    plan = spread({t: range(8) for t in TOPICS}, {"b": TOPICS, "a": TOPICS})
    assert plan["a"] == {
        "kpi.hiring": [0, 2, 4, 6],
        "kpi.incidents": [1, 3, 5, 7],
        "kpi.invoices": [0, 2, 4, 6],
    }
    assert plan["b"] == {
        "kpi.hiring": [1, 3, 5, 7],
        "kpi.incidents": [0, 2, 4, 6],
        "kpi.invoices": [1, 3, 5, 7],
    }


def test_three_members_lead_one_topic_each() -> None:
    plan = spread({t: range(8) for t in TOPICS}, {m: TOPICS for m in "abc"})
    leaders = {t: m for m in plan for t, ps in plan[m].items() if 0 in ps}
    assert leaders == {"kpi.hiring": "a", "kpi.incidents": "b", "kpi.invoices": "c"}


@given(
    counts=st.lists(st.integers(min_value=1, max_value=12), min_size=1, max_size=4),
    n_members=st.integers(min_value=1, max_value=6),
)
def test_every_partition_once_and_each_topic_balanced(counts: list[int], n_members: int) -> None:
    topics = {f"t{i}": range(n) for i, n in enumerate(counts)}
    members = {f"m{j}": tuple(topics) for j in range(n_members)}
    plan = spread(topics, members)
    for topic, parts in topics.items():
        got = sorted(p for m in plan for p in plan[m].get(topic, []))
        assert got == list(parts)
        per_member = [len(plan[m].get(topic, [])) for m in members]
        assert max(per_member) - min(per_member) <= 1
    # Leaders rotate: partition 0 of topic i goes to the i-th member (mod the count).
    for i, topic in enumerate(sorted(topics)):
        assert 0 in plan[sorted(members)[i % n_members]][topic]


def test_members_skip_topics_they_do_not_subscribe() -> None:
    plan = spread({"x": range(4), "y": range(2)}, {"a": ("x",), "b": ("x", "y")})
    assert plan == {"a": {"x": [0, 2]}, "b": {"x": [1, 3], "y": [0, 1]}}


def test_assign_through_the_aiokafka_protocol() -> None:
    members = {m: ConsumerProtocolMemberMetadata(0, list(TOPICS), b"") for m in ("m-2", "m-1")}
    out = SpreadLeadersAssignor.assign(Cluster({t: 8 for t in TOPICS}), members)
    owned = Counter()
    for member, assignment in out.items():
        for topic, parts in assignment.assignment:
            owned.update((topic, p) for p in parts)
            assert len(parts) == 4, (member, topic)
    assert set(owned.values()) == {1} and len(owned) == 24
    leaders = {topic: m for m, a in out.items() for topic, parts in a.assignment if 0 in parts}
    assert leaders["kpi.hiring"] == leaders["kpi.invoices"] == "m-1"
    assert leaders["kpi.incidents"] == "m-2"
