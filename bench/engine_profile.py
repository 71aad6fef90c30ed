"""Micro-benchmark of the pure engine: ``Engine.process`` and the state commit, per event.

No Kafka, no Redis: a fixed simulated log (bench.workload, fixed seed) is cut into the
batches a worker would see (8 partitions per topic by message key, batches of 2000) and fed
to a fresh engine, timing ``process`` and the ``PartitionState.commit`` of the dirty
states after each batch (what ``Runtime._commit_state`` does). Two catalogs: all sixteen
KPIs on all topics, and the single-KPI mode (``invoice_processing_time``, ``1h``) on the
invoices only, as ``python -m bench`` runs them. Prints the median of the runs in µs per
input event, and a digest of everything the engine produced (window values, dead letters,
changelog records), which must not change when the engine is made faster.

Run: ``.venv/bin/python -m bench.engine_profile [--events N] [--runs N] [--mode all|single]``.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import statistics
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench.config import BenchConfig
from bench.workload import generate
from streams import engine_build
from streams.config import INPUT_TOPICS, Settings

# The engine's modules are imported in the functions: main() chooses its build first.
if TYPE_CHECKING:
    from streams.core.records import Message
    from streams.kpis.base import Kpi

BATCH = 2000
PARTITIONS = 8
SINGLE_KPI = "invoice_processing_time"
SINGLE_WINDOWS = "1h"


@dataclass
class Run:
    """One pass over the log with a fresh engine."""

    events: int
    process_s: float
    commit_s: float
    #: Of both, the time in the garbage collector (it scans the growing state).
    gc_s: float
    #: Of the outputs (window values, dead letters, counters) / of the changelog records.
    digest: str

    def us(self, seconds: float) -> float:
        """Seconds as µs per input event."""
        return seconds / self.events * 1e6


def build_log(
    log: Sequence[tuple[str, bytes, bytes]], *, topics: Sequence[str] | None = None
) -> list[list[Message]]:
    """The log as batches of Messages, each topic spread over partitions by key."""
    from streams.core.records import Message

    offsets: dict[tuple[str, int], int] = {}
    messages: list[Message] = []
    for topic, key, value in log:
        if topics is not None and topic not in topics:
            continue
        # Kafka's partitioner hashes the key (murmur2); any stable hash spreads alike.
        p = zlib.crc32(key) % PARTITIONS
        off = offsets.get((topic, p), 0)
        offsets[(topic, p)] = off + 1
        messages.append(Message(topic, p, off, value))
    return [messages[i : i + BATCH] for i in range(0, len(messages), BATCH)]


def run_once(batches: list[list[Message]], catalog: Sequence[Kpi], now: float) -> Run:
    """Process every batch with a fresh engine, committing after each batch."""
    from streams.core.engine import Engine

    settings = Settings()
    engine = Engine(
        partitions=dict.fromkeys(INPUT_TOPICS, PARTITIONS),
        grace_s=settings.grace_seconds,
        currency=settings.currency,
        clock=lambda: now,
        catalog=catalog,
        max_dimension_values=settings.max_dimension_values,
    )
    digest = hashlib.sha256()
    changelog = hashlib.sha256()
    process_s = commit_s = 0.0
    gc_s = [0.0, 0.0]  # total, start of the running collection

    def on_gc(phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            gc_s[1] = time.perf_counter()
        else:
            gc_s[0] += time.perf_counter() - gc_s[1]

    events = 0
    perf = time.perf_counter
    gc.callbacks.append(on_gc)
    for batch in batches:
        events += len(batch)
        began = perf()
        result = engine.process(batch)
        processed = perf()
        records = [r for st in engine.states.values() if st.dirty for r in st.commit()]
        committed = perf()
        gc.disable()  # the digest is not timed
        process_s += processed - began
        commit_s += committed - processed
        for wv in (*result.closed, *result.current):
            digest.update(repr(wv).encode())
        for dl in result.dead_letters:
            digest.update(f"{dl.reason}|{dl.detail}|{dl.topic}|{dl.partition}|{dl.offset}".encode())
        digest.update(repr(sorted(result.applied.items())).encode())
        digest.update(repr(sorted(result.duplicates.items())).encode())
        # Sorted: the order of the records within a commit follows the order of string sets,
        # which changes with every process (hash randomization) and does not matter.
        for key, value in sorted((r.key, r.value or b"") for r in records):
            changelog.update(key + b"=" + value)
        gc.enable()
    gc.callbacks.remove(on_gc)
    return Run(
        events,
        process_s,
        commit_s,
        gc_s[0],
        f"{digest.hexdigest()[:12]}/{changelog.hexdigest()[:12]}",
    )


def single_catalog() -> tuple[Kpi, ...]:
    """The catalog the worker uses with KPI_ONLY_KPIS / KPI_ONLY_WINDOWS set."""
    from streams.selection import selected_catalog

    settings = Settings(only_kpis=SINGLE_KPI, only_windows=SINGLE_WINDOWS)
    return selected_catalog(settings)


def main(argv: Sequence[str] | None = None) -> None:
    """Time both catalogs and print medians in µs per event."""
    engine_build.select()
    from streams.catalog import CATALOG

    parser = argparse.ArgumentParser(prog="python -m bench.engine_profile")
    parser.add_argument("--events", type=int, default=200_000, help="simulated events")
    parser.add_argument("--runs", type=int, default=3, help="runs per mode (median)")
    parser.add_argument("--mode", choices=("all", "single", "both"), default="both")
    args = parser.parse_args(argv)
    modes = ("all", "single") if args.mode == "both" else (args.mode,)
    began = time.perf_counter()
    cfg = BenchConfig()
    wl = generate(args.events, seed=cfg.seed, start=cfg.start, scale=cfg.scale)
    now = wl.last_time + 3600.0  # nothing is in the future
    logs = {
        "all": (build_log(wl.messages), CATALOG),
        "single": (build_log(wl.messages, topics=("invoices",)), single_catalog()),
    }
    print(f"log: {args.events:,} events generated in {time.perf_counter() - began:.1f} s")
    # A worker holds one batch of messages, not the whole log: keep the log's objects out
    # of the garbage collector's full collections, which scan every tracked object. The
    # engine's own state is still scanned, as in the worker.
    del wl
    gc.collect()
    gc.freeze()
    results: dict[str, list[Run]] = {m: [] for m in modes}
    for _ in range(args.runs):
        for mode in modes:  # alternate, so drifting machine load hits both alike
            batches, catalog = logs[mode]
            gc.collect()
            results[mode].append(run_once(batches, catalog, now))
    for mode in modes:
        runs = results[mode]
        proc = statistics.median(r.us(r.process_s) for r in runs)
        comm = statistics.median(r.us(r.commit_s) for r in runs)
        total = statistics.median(r.us(r.process_s + r.commit_s) for r in runs)
        in_gc = statistics.median(r.us(r.gc_s) for r in runs)
        digests = {r.digest for r in runs}
        print(
            f"{mode:6} {runs[0].events:>8,} events: process {proc:6.2f} µs/event, "
            f"commit {comm:5.2f} µs/event, total {total:6.2f} µs/event "
            f"({1e6 / total:,.0f} events/s; gc {in_gc:5.2f}), digest {', '.join(sorted(digests))}"
        )


if __name__ == "__main__":
    main()
