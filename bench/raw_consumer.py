"""The limit: a bare aiokafka consumer that decodes every message with orjson, nothing else.

``python -m bench.raw_consumer --bootstrap H:P --topics a,b,c --expected N --out FILE`` reads
every partition of the topics from the beginning (no group, no commits) with ``getmany``
until it has decoded ``N`` messages, and writes one JSON line: when the first ``getmany``
was called (connected, assigned and positioned), when the last message was decoded, and how
many.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition


async def consume(
    bootstrap: str, topics: list[str], partitions: int, expected: int, timeout_s: float
) -> dict[str, object]:
    """Read and decode ``expected`` messages; when the first arrived and the last was done."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        loads = orjson.loads
        n = 0
        # From the first fetch on: the consumer is connected and positioned, as a worker is
        # once it has joined its group.
        first = time.time()
        deadline = time.monotonic() + timeout_s
        while n < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                for r in records:
                    loads(r.value)
                n += len(records)
        done = time.time()
        return {"first": first, "done": done, "messages": n, "partitions": len(tps)}
    finally:
        await consumer.stop()


def main() -> None:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topics", required=True)
    parser.add_argument("--partitions", type=int, required=True)
    parser.add_argument("--expected", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--timeout-s", type=float, default=600.0)
    args = parser.parse_args()
    topics = [t for t in args.topics.split(",") if t]
    result = asyncio.run(
        consume(args.bootstrap, topics, args.partitions, args.expected, args.timeout_s)
    )
    with open(args.out, "w") as fh:
        fh.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
