"""The publisher and ``kpi simulate`` without a broker: fakes for aiokafka, real failures."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
import typer
from typer.testing import CliRunner

import producers.cli as cli
import producers.publisher as publisher_module
import streams.kafka as kafka_module
from producers.publisher import Publisher, PublishError
from schemas.errors import KpiError
from streams.config import Settings


class FakeProducer:
    """Stands in for AIOKafkaProducer: records sends, delivers (or fails) shortly after."""

    instances: list[FakeProducer] = []

    def __init__(self, **config: Any) -> None:
        self.config = config
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.fail_with: Exception | None = None
        self.started = self.stopped = False
        FakeProducer.instances.append(self)

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future[Any]:
        self.sent.append((topic, value, key))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        error = self.fail_with

        def deliver() -> None:
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(SimpleNamespace(topic=topic))

        asyncio.get_running_loop().call_later(0.01, deliver)
        return future


@pytest.fixture
def fake_producer(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FakeProducer]]:
    FakeProducer.instances = []
    monkeypatch.setattr(kafka_module, "AIOKafkaProducer", FakeProducer)

    async def granted(settings: Settings, role: str) -> None:
        # The fake broker has no authorizer: every right is granted.
        assert role == "publisher"

    monkeypatch.setattr(publisher_module, "check_kafka_access", granted)
    yield FakeProducer


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_send_prefixes_topic_serialises_and_keys(fake_producer: type[FakeProducer]) -> None:
    settings = Settings(topic_prefix="t1.")
    async with Publisher(settings) as pub:
        await pub.send("invoices", "inv-1", {"event_id": "e1", "amount": 12.5})
        await pub.send("incidents", "tkt-1", b"\xff not json")
    (producer,) = fake_producer.instances
    assert producer.sent == [
        ("t1.invoices", orjson.dumps({"event_id": "e1", "amount": 12.5}), b"inv-1"),
        ("t1.incidents", b"\xff not json", b"tkt-1"),
    ]
    assert pub.sent == pub.delivered == 2
    assert producer.stopped


async def test_producer_is_idempotent_and_lingers(fake_producer: type[FakeProducer]) -> None:
    async with Publisher(Settings(kafka_bootstrap="broker:1234")):
        pass
    config = fake_producer.instances[0].config
    assert config["enable_idempotence"] is True
    assert config["acks"] == "all"
    assert 5 <= config["linger_ms"] <= 20
    assert config["bootstrap_servers"] == "broker:1234"


async def test_sends_do_not_wait_for_each_delivery(fake_producer: type[FakeProducer]) -> None:
    async with Publisher(Settings(), flush_every=4) as pub:
        for n in range(3):
            await pub.send("hiring", f"k{n}", {"n": n})
        assert pub.delivered == 0  # enqueued, not yet acknowledged
        await pub.send("hiring", "k3", {"n": 3})
        assert pub.delivered == 4  # the 4th send collected the batch's results
        await pub.send("hiring", "k4", {"n": 4})
    assert pub.delivered == 5  # and leaving flushed the rest


async def test_failed_delivery_is_one_publish_error(fake_producer: type[FakeProducer]) -> None:
    from aiokafka.errors import KafkaTimeoutError

    pub = Publisher(Settings())
    await pub.start()
    fake_producer.instances[0].fail_with = KafkaTimeoutError("batch expired\nmore")
    await pub.send("invoices", "k", {"a": 1})
    with pytest.raises(PublishError, match=r"^1 message\(s\) not delivered") as info:
        await pub.flush()
    assert "\n" not in str(info.value)
    await pub.stop()


async def test_send_before_start_is_an_error() -> None:
    with pytest.raises(PublishError, match="before start"):
        await Publisher(Settings()).send("invoices", "k", {})


async def test_unreachable_kafka_is_one_line() -> None:
    bootstrap = f"127.0.0.1:{closed_port()}"
    with pytest.raises(PublishError) as info:
        async with Publisher(Settings(kafka_bootstrap=bootstrap), start_timeout_s=10):
            pass
    assert isinstance(info.value, KpiError)
    assert str(info.value).startswith(f"cannot reach Kafka at {bootstrap}")
    assert "\n" not in str(info.value)


@pytest.fixture
async def silent_server() -> AsyncIterator[str]:
    """A TCP server that accepts connections and never answers: a hung broker."""

    async def ignore(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    server = await asyncio.start_server(ignore, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"127.0.0.1:{port}"
    server.close()


async def test_hung_kafka_times_out_on_start(silent_server: str) -> None:
    began = time.monotonic()
    with pytest.raises(PublishError, match="timed out"):
        await Publisher(Settings(kafka_bootstrap=silent_server), start_timeout_s=0.5).start()
    assert time.monotonic() - began < 5


# -- kpi simulate, with a fake publisher ---------------------------------------------------


class FakePublisher:
    sent: list[tuple[str, str, Any]] = []
    settings: Settings | None = None

    def __init__(self, settings: Settings) -> None:
        FakePublisher.settings = settings

    async def __aenter__(self) -> FakePublisher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass

    async def send(self, topic: str, key: str, payload: Any) -> None:
        FakePublisher.sent.append((topic, key, payload))

    async def flush(self) -> None:
        pass


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    FakePublisher.sent, FakePublisher.settings = [], None
    monkeypatch.setattr(cli, "Publisher", FakePublisher)

    async def no_topics(settings: Settings) -> list[str]:
        return []

    monkeypatch.setattr(cli, "create_published_topics", no_topics)
    app = typer.Typer(pretty_exceptions_enable=False)
    cli.register(app)

    @app.callback()
    def main() -> None:
        """Keep ``simulate`` a sub-command, as under ``kpi``."""

    return app


def test_simulate_publishes_and_summarises(app: typer.Typer) -> None:
    result = CliRunner().invoke(
        app,
        ["simulate", "--count", "2000", "--start", "10d", "--speed", "0", "--rate", "0"]
        + ["--invalid", "0.1", "--duplicates", "0.05", "--seed", "3"],
        env={"KPI_TOPIC_PREFIX": "demo."},
    )
    assert result.exit_code == 0, result.output
    assert len(FakePublisher.sent) == 2000
    assert FakePublisher.settings is not None and FakePublisher.settings.topic_prefix == "demo."
    assert {topic for topic, _, _ in FakePublisher.sent} == {"invoices", "hiring", "incidents"}
    assert "count reached; sent 2,000 messages" in result.output
    assert "employee.hired" in result.output  # the per-type table
    assert "injected faults" in result.output and "duplicate" in result.output


def test_simulate_json_summary_is_the_only_thing_on_stdout(app: typer.Typer) -> None:
    args = ["simulate", "--count", "2000", "--start", "10d", "--speed", "0", "--rate", "0"]
    result = CliRunner().invoke(app, [*args, "--duplicates", "0.05", "--seed", "3", "--json"])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("\n") == 1
    summary = orjson.loads(result.stdout)
    assert (summary["stopped_by"], summary["sent"]) == ("count reached", 2000)
    by_type = summary["by_topic_and_type"]
    assert sum(row["count"] for row in by_type) == 2000
    assert {row["topic"] for row in by_type} == {"invoices", "hiring", "incidents"}
    assert summary["injected_faults"]["duplicate"] > 0
    assert summary["simulated_from"] < summary["simulated_to"]
    assert summary["simulated_to"].endswith("Z") and "T" in summary["simulated_to"]


def test_simulate_interrupted_summarises_then_exits_130(app: typer.Typer) -> None:
    # SIGINT to this process while the command runs, as Ctrl-C sends it.
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        args = ["simulate", "--duration", "20", "--start", "1d", "--speed", "60", "--json"]
        result = CliRunner().invoke(app, args)
    finally:
        timer.cancel()
    assert result.exit_code == 130, result.output
    summary = orjson.loads(result.stdout)
    assert summary["stopped_by"] == "interrupted" and summary["elapsed_s"] < 20


def test_simulate_restricts_domains(app: typer.Typer) -> None:
    args = ["simulate", "--count", "50", "--start", "5d", "--speed", "0", "--rate", "0"]
    result = CliRunner().invoke(app, [*args, "--domains", "invoices"])
    assert result.exit_code == 0, result.output
    assert {topic for topic, _, _ in FakePublisher.sent} == {"invoices"}


def test_simulate_rate_caps_throughput(app: typer.Typer) -> None:
    began = time.monotonic()
    args = ["simulate", "--count", "60", "--start", "5d", "--speed", "0", "--rate", "100"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert time.monotonic() - began >= 0.5


def test_simulate_pacing_follows_simulated_time(app: typer.Typer) -> None:
    # An hour simulated per wall second, for one second: about an hour of events, no more.
    args = ["simulate", "--duration", "1", "--start", "3d", "--speed", "3600", "--rate", "0"]
    result = CliRunner().invoke(app, [*args, "--domains", "incidents"])
    assert result.exit_code == 0, result.output
    assert "duration reached" in result.output
    times = [p["occurred_at"] for _, _, p in FakePublisher.sent]
    assert times and max(times) < time.strftime(
        "%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 3 * 86400 + 2 * 3600)
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--start", "yesterday-ish"], "--start"),
        (["--start", "2999-01-01T00:00:00Z"], "future"),
        (["--domains", "invoices,payroll"], "payroll"),
        (["--invalid", "0.1", "--invalid-reasons", "schema,late"], "late"),
        (["--late", "2"], "--late"),
        (["--count", "0"], "--count"),
        (["--currencies", "EUR,eur"], "--currencies"),
        (["--currencies", "EUR,USD"], "reporting currency"),
        (["--timezone", "Mars/Olympus"], "--timezone"),
    ],
)
def test_simulate_rejects_bad_arguments(app: typer.Typer, args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["simulate", *args])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert FakePublisher.sent == []


def test_simulate_books_foreign_currencies(app: typer.Typer) -> None:
    args = ["simulate", "--count", "3000", "--start", "20d", "--speed", "0", "--rate", "0"]
    result = CliRunner().invoke(app, [*args, "--domains", "invoices", "--currencies", "EUR, GBP"])
    assert result.exit_code == 0, result.output
    priced = [p for _, _, p in FakePublisher.sent if "currency" in p]
    foreign = [p for p in priced if p["currency"] != "USD"]
    assert {p["currency"] for p in foreign} == {"EUR", "GBP"}
    assert all(p["reporting_amount"] > 0 for p in foreign)
    assert len(foreign) < len(priced)


def test_simulate_office_hours_follow_kpi_timezone_unless_given(
    app: typer.Typer, monkeypatch: pytest.MonkeyPatch
) -> None:
    zones: list[str] = []
    real = cli.CompanySimulator

    def simulator(*args: Any, **kwargs: Any) -> cli.CompanySimulator:
        zones.append(kwargs["timezone"])
        return real(*args, **kwargs)

    monkeypatch.setattr(cli, "CompanySimulator", simulator)
    args = ["simulate", "--count", "5", "--start", "1d", "--speed", "0", "--rate", "0"]
    env = {"KPI_TIMEZONE": "Asia/Kolkata"}
    for extra in ([], ["--timezone", "America/New_York"]):
        result = CliRunner().invoke(app, [*args, *extra], env=env)
        assert result.exit_code == 0, result.output
    assert zones == ["Asia/Kolkata", "America/New_York"]
