"""Every command, with each dependency unreachable, answers in one line (SPEC section 6).

One table: each command that talks to Kafka or Redis, run as a user runs it (a ``kpi``
subprocess), once with each of its dependencies unreachable in two ways, the other one
being the session's real stack:

* refused: a loopback port nothing listens on (the connection is refused at once);
* silent: a port that accepts connections and never answers (a server hung, a proxy with
  nothing behind it): only a timeout can end the wait, so this proves there is one.

Each row must end within 30 s with exit code 2 and exactly one line, on stderr,
``kpi: error: ...``, naming the dependency, its address (a Redis password as ``***``) and
why; nothing else, no traceback, no secret (the Kafka rows carry a SASL password too).
``kpi stack status`` keeps its own convention: it reads the stack directory's pid files (it
connects to nothing) and exits 1 with one line per service when one does not run. Not rows:
``kpi rules``, ``dashboards``, ``schema`` and ``stack fetch`` talk to neither; ``stack up``
and ``stack down`` start and stop them.

The rows run concurrently (most of their time is spent waiting for a timeout), so the whole
table takes about as long as its slowest row.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

import pytest

from streams.config import Settings
from tests.cli import run_kpi
from tests.integration.conftest import Stack
from tests.unreachable import SilentServer
from tooling.stack import free_port

pytestmark = pytest.mark.integration

#: What every row must answer within (SPEC section 6, issue 14).
LIMIT_S = 30.0
PASSWORD = "s3cret-PW"
EVENT = (
    '{"event_id":"e1","type":"invoice.received","occurred_at":"2024-05-01T12:00:00Z",'
    '"invoice_id":"INV-1","amount":1250.5,"currency":"USD","department":"finance",'
    '"vendor_id":"V-1"}\n'
)


@dataclass(frozen=True)
class Row:
    """One command with one dependency unreachable."""

    command: tuple[str, ...]
    dependency: str  # kafka or redis
    how: str  # refused or silent

    @property
    def id(self) -> str:
        return f"{' '.join(self.command)} / {self.dependency} {self.how}"


@dataclass(frozen=True)
class Answer:
    """What the command did."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float


KAFKA_COMMANDS = [
    ("worker",),
    ("simulate", "--count", "5"),
    ("simulate", "--count", "5", "--no-create-topics"),
    ("publish", "{file}"),
    ("publish", "{file}", "--no-create-topics"),
]
REDIS_COMMANDS = [
    ("worker",),
    ("get", "dso"),
    ("get", "dso", "--history", "3"),
    ("get", "--all"),
    ("get", "--all", "--watch", "1"),
    ("watch", "-n", "0.2"),
    ("why", "ticket_resolution_time", "-w", "1d"),
    ("why", "ticket_resolution_time", "--label", "2026-03-08"),
]
STATUS = ("stack", "status")
ROWS = [
    *(Row(c, "kafka", how) for c in KAFKA_COMMANDS for how in ("refused", "silent")),
    *(Row(c, "redis", how) for c in REDIS_COMMANDS for how in ("refused", "silent")),
    *(Row(STATUS, dep, how) for dep in ("kafka", "redis") for how in ("refused", "silent")),
]


def _run(row: Row, tmp: Path, env: dict[str, str], file: Path) -> Answer:
    args = [a.replace("{file}", str(file)) for a in row.command]
    began = time.monotonic()
    try:
        done = run_kpi(tmp, *args, **env)
    except subprocess.TimeoutExpired as exc:  # a hang: reported with what it said so far
        said = [b.decode() if isinstance(b, bytes) else b or "" for b in (exc.stdout, exc.stderr)]
        return Answer(-1, *said, time.monotonic() - began)
    return Answer(done.returncode, done.stdout, done.stderr, time.monotonic() - began)


def _environment(stack: Stack) -> dict[str, str]:
    """A ``kpi`` subprocess's environment: the session's stack, a namespace of its own."""
    tag = uuid4().hex[:8]
    settings = Settings(
        kafka_bootstrap=stack.bootstrap,
        redis_url=stack.redis_url,  # only PINGed (the worker's start, Kafka unreachable)
        topic_prefix=f"t{tag}.",
        app_id=f"kpi-test-{tag}",
        web_port=free_port(),
    )
    env = settings.environment()
    del env["KPI_STACK_DIR"]  # run_kpi's own, with nothing started there (`stack status`)
    return env


@pytest.fixture(scope="module")
def answers(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[Row, tuple[Answer, str]]]:
    """Every row's answer, run concurrently, with the address it was given."""
    base = _environment(stack)
    tmp = tmp_path_factory.mktemp("unreachable")
    file = tmp / "events.jsonl"
    file.write_text(EVENT)
    with SilentServer() as silent:
        ports = {"refused": free_port(), "silent": silent.port}
        jobs = {}
        for row in ROWS:
            env = dict(base)
            port = ports[row.how]
            if row.dependency == "kafka":
                address = f"127.0.0.1:{port}"
                env["KPI_KAFKA_BOOTSTRAP"] = address
                # A Kafka password too: it must not show anywhere either.
                env["KPI_KAFKA_SECURITY_PROTOCOL"] = "SASL_PLAINTEXT"
                env["KPI_KAFKA_SASL_MECHANISM"] = "SCRAM-SHA-512"
                env["KPI_KAFKA_SASL_USERNAME"] = "kpi"
                env["KPI_KAFKA_SASL_PASSWORD"] = PASSWORD
            else:
                address = f"redis://kpi:***@127.0.0.1:{port}/0"
                env["KPI_REDIS_URL"] = f"redis://kpi:{PASSWORD}@127.0.0.1:{port}/0"
            jobs[row] = (env, address)
        # Four at a time: the rows mostly wait, but each starts a Python interpreter.
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = {
                row: pool.submit(_run, row, tmp, env, file) for row, (env, _) in jobs.items()
            }
            table = {row: (futures[row].result(), jobs[row][1]) for row in ROWS}
        # The table itself, for `pytest -s` (and the closing note of issue 14).
        for row, (answer, _) in table.items():
            said = (answer.stderr.strip() or answer.stdout.strip()).replace("\n", " | ")
            print(f"{row.id:58} exit {answer.returncode} {answer.seconds:5.1f} s  {said}")
        yield table


#: Why, by dependency and how it is unreachable.
REASONS = {
    ("kafka", "refused"): "connection refused (is Kafka running there?)",
    ("kafka", "silent"): "timed out",
    ("redis", "refused"): "connection refused (is Redis running there?)",
    ("redis", "silent"): "timed out",
}


def _expected(row: Row, address: str) -> str:
    """The one line the row must print."""
    reason = REASONS[row.dependency, row.how]
    if row.dependency == "kafka":
        return f"kpi: error: cannot reach Kafka at {address}: {reason}"
    # The worker needs to reach it; the readers read it.
    verb = "reach" if row.command == ("worker",) else "read"
    return f"kpi: error: cannot {verb} Redis at {address}: {reason}"


@pytest.mark.parametrize("row", [r for r in ROWS if r.command != STATUS], ids=lambda r: r.id)
def test_the_command_answers_in_one_line(answers: dict[Row, tuple[Answer, str]], row: Row) -> None:
    answer, address = answers[row]
    assert answer.returncode == 2, (
        f"exit {answer.returncode} after {answer.seconds:.1f} s: {answer.stderr}"
    )
    assert answer.stderr.strip().splitlines() == [_expected(row, address)]
    assert answer.stdout == ""
    assert answer.seconds < LIMIT_S, f"{answer.seconds:.1f} s"
    assert PASSWORD not in answer.stdout + answer.stderr


@pytest.mark.parametrize("row", [r for r in ROWS if r.command == STATUS], ids=lambda r: r.id)
def test_stack_status_says_what_does_not_run(
    answers: dict[Row, tuple[Answer, str]], row: Row
) -> None:
    answer, _ = answers[row]
    assert answer.returncode == 1, answer.stderr
    assert answer.stderr == ""
    lines = answer.stdout.strip().splitlines()
    assert [line.split()[:2] for line in lines] == [["kafka", "stopped"], ["redis", "stopped"]]
    assert answer.seconds < LIMIT_S
    assert PASSWORD not in answer.stdout
