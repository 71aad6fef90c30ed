"""The peer: invoice processing time (tumbling 1 h mean per department) in Quix Streams.

Runs as a script in the Quix virtualenv (``.venv/quix``: quixstreams pins pydantic < 2.14, the
product pins 2.14, so the two cannot share one environment). It imports nothing from this
repository.

Dataflow, the idiomatic Quix way:
  invoices (keyed by invoice_id) -> join received -> approved/rejected in the key's state
  -> event time = decision time -> group_by(department) (a repartition topic)
  -> tumbling_window(1 h, grace 1 h).mean(seconds).final() -> output topic

Writes one JSON line to ``--out`` when every invoice message has been consumed and every
decision has been through the window step (or the timeout passed), then stops.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from datetime import datetime, timedelta
from typing import Any

from quixstreams import Application
from quixstreams.dataframe.windows import Mean

DECISIONS = frozenset({"invoice.approved", "invoice.rejected"})


def main() -> None:
    """Run the peer until done; the result goes to ``--out``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--expected-in", type=int, required=True)
    parser.add_argument("--expected-decisions", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--grace-s", type=int, default=3600)
    parser.add_argument("--timeout-s", type=float, default=900.0)
    args = parser.parse_args()

    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=args.state_dir,
        loglevel="WARNING",
    )
    source = app.topic(args.topic, value_deserializer="json", key_deserializer="str")
    output = app.topic(f"{args.group}-invoice-processing-time-1h", value_serializer="json")

    stats: dict[str, Any] = {
        "first": None,
        "in": 0,
        "decisions": 0,
        "late": 0,
        "unmatched": 0,
        "windows": 0,
        "done": None,
    }
    started = time.time()

    def finish_if_done() -> None:
        if (
            stats["done"] is None
            and stats["in"] >= args.expected_in
            and stats["decisions"] + stats["late"] >= args.expected_decisions
        ):
            stats["done"] = time.time()
            app.stop()

    def count_in(value: Any) -> None:
        if stats["first"] is None:
            stats["first"] = time.time()
        stats["in"] += 1
        if stats["in"] >= args.expected_in:
            finish_if_done()
        elif time.time() - started > args.timeout_s:
            app.stop()

    def join(value: dict[str, Any], state: Any) -> dict[str, Any] | None:
        kind = value.get("type")
        if kind == "invoice.received":
            state.set("r", (_ms(value["occurred_at"]), value["department"]))
            return None
        received = state.get("r")
        if received is None:
            stats["unmatched"] += 1
            return None
        state.delete("r")
        at = _ms(value["occurred_at"])
        return {"department": received[1], "seconds": (at - received[0]) / 1000.0, "t": at}

    def counted(aggregated: Any, value: Any, key: Any, timestamp_ms: int, headers: Any) -> bool:
        stats["decisions"] += 1
        finish_if_done()
        return False

    def late(*_args: Any, **_kwargs: Any) -> bool:
        stats["late"] += 1
        finish_if_done()
        return False

    def emitted(value: Any) -> None:
        stats["windows"] += 1

    sdf = app.dataframe(source)
    sdf = sdf.update(count_in)
    sdf = sdf.filter(lambda v: v.get("type") == "invoice.received" or v.get("type") in DECISIONS)
    sdf = sdf.apply(join, stateful=True)
    sdf = sdf.filter(lambda v: v is not None)
    sdf = sdf.set_timestamp(lambda value, key, ts, headers: value["t"])
    sdf = sdf.group_by("department")
    sdf = (
        sdf.tumbling_window(
            timedelta(hours=1),
            grace_ms=timedelta(seconds=args.grace_s),
            on_late=late,
            after_update=counted,
        )
        .agg(value=Mean("seconds"))
        .final()
    )
    sdf = sdf.update(emitted)
    sdf.to_topic(output)

    app.run()
    stats["stopped"] = time.time()
    stats["expected_in"] = args.expected_in
    stats["expected_decisions"] = args.expected_decisions
    stats["quixstreams"] = _version()
    with open(args.out, "w") as fh:
        fh.write(json.dumps(stats) + "\n")
    sys.exit(0 if stats["done"] is not None else 3)


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def _version() -> str:
    from importlib.metadata import version

    return version("quixstreams")


if __name__ == "__main__":
    logging.getLogger("quixstreams").setLevel(logging.WARNING)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
