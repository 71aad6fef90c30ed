"""A restarted simulator is the same company: same start, same event ids, after what it sent."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from producers import cli
from producers.resume import SimulatorRun
from producers.simulator import INVALID_REASONS, CompanySimulator, Emission, Faults
from schemas.errors import ConfigurationError

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z
DAY = 86400.0
GRACE = 3600.0
# "future" events are placed by the wall clock: the rest of the stream is a pure function.
FAULTS = Faults.spread(
    out_of_order=0.05,
    duplicates=0.02,
    invalid=0.05,
    reasons=[r for r in INVALID_REASONS if r != "future"],
)


def simulator(clock: float, start: float = START) -> CompanySimulator:
    return CompanySimulator(7, start, clock=lambda: clock, grace_seconds=GRACE, faults=FAULTS)


def ids(emissions: list[Emission]) -> list[str]:
    """Each message's event id (invalid ones may have none: their whole payload instead)."""
    return [
        str(e.payload.get("event_id", e.payload))
        if isinstance(e.payload, dict)
        else repr(e.payload)
        for e in emissions
    ]


def test_a_restart_skipping_what_was_sent_goes_on_with_the_same_stream() -> None:
    first = simulator(START + 2 * DAY)
    sent = list(first)  # the first run got two simulated days out, then stopped
    assert len(sent) > 1000
    later = list(simulator(START + 6 * DAY))  # what one run would have sent up to day 6

    restarted = simulator(START + 6 * DAY)
    restarted.skip_to(len(sent))
    assert restarted.now == first.now and restarted.published == len(sent)
    rest = list(restarted)
    assert sent + rest == later
    assert len(rest) > 500


def test_what_was_sent_after_the_last_save_comes_again_with_the_same_ids() -> None:
    sent = list(simulator(START + DAY))
    saved = len(sent) - 300  # the run crashed 300 messages after its last save
    restarted = simulator(START + DAY)
    restarted.skip_to(saved)
    again = list(restarted)
    # The same event ids at the same simulated times: duplicates to the worker, not late.
    assert ids(again) == ids(sent[saved:])
    assert [e.payload for e in again] == [e.payload for e in sent[saved:]]


def test_another_start_is_another_company() -> None:
    # What a restart without the state file did: a new start, new ids for the same days.
    one = ids(list(simulator(START + DAY)))
    other = ids(list(simulator(START + DAY, start=START + 60)))
    event_ids = [{i for i in run if i.startswith("sim-")} for run in (one, other)]
    assert len(event_ids[0]) > 500 and not event_ids[0] & event_ids[1]


# -- the state file ------------------------------------------------------------------------

COMPANY = {"seed": 7, "start": "2d", "domains": ["invoices"], "scale": 10.0}


def test_a_new_state_file_records_the_start(tmp_path: Path) -> None:
    path = tmp_path / "sim.json"
    run = SimulatorRun.open(path, COMPANY, START)
    assert (run.start, run.published, run.published_upto) == (START, 0, START)
    doc = json.loads(path.read_text())
    assert doc["start"] == START and doc["settings"] == COMPANY and doc["published"] == 0


def test_a_restart_takes_the_recorded_start_and_progress(tmp_path: Path) -> None:
    path = tmp_path / "sim.json"
    SimulatorRun.open(path, COMPANY, START).save(1234, START + 5000)
    # "2d" an hour later is another time: the recorded start wins.
    run = SimulatorRun.open(path, dict(COMPANY), START + 3600)
    assert (run.start, run.published, run.published_upto) == (START, 1234, START + 5000)
    assert not path.with_name("sim.json.tmp").exists()


def test_other_settings_are_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "sim.json"
    SimulatorRun.open(path, COMPANY, START)
    with pytest.raises(ConfigurationError) as error:
        SimulatorRun.open(path, {**COMPANY, "seed": 8}, START)
    message = str(error.value)
    assert "\n" not in message
    assert "seed 7 there, 8 now" in message and "delete it" in message
    with pytest.raises(ConfigurationError, match="start '2d' there, '3d' now"):
        SimulatorRun.open(path, {**COMPANY, "start": "3d"}, START)


@pytest.mark.parametrize("text", ["", "{}", "[1]", '{"version": 99}', "not json"])
def test_a_broken_state_file_is_a_one_line_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "sim.json"
    path.write_text(text)
    with pytest.raises(ConfigurationError, match="is not a simulator state file") as error:
        SimulatorRun.open(path, COMPANY, START)
    assert "\n" not in str(error.value)


def test_an_unwritable_place_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot write --state-file"):
        SimulatorRun.open(tmp_path / "missing-dir" / "sim.json", COMPANY, START)


# -- kpi simulate --state-file, with a publisher that keeps what it is sent ----------------


class KeepingPublisher:
    sent: list[tuple[str, str, Any]] = []
    flushes = 0

    def __init__(self, settings: Any) -> None:
        pass

    async def __aenter__(self) -> KeepingPublisher:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        pass

    async def send(self, topic: str, key: str, payload: Any) -> None:
        KeepingPublisher.sent.append((topic, key, payload))

    async def flush(self) -> None:
        KeepingPublisher.flushes += 1


def simulate(monkeypatch: pytest.MonkeyPatch, **options: Any) -> list[str]:
    monkeypatch.setattr(cli, "Publisher", KeepingPublisher)
    KeepingPublisher.sent = []
    cli.simulate(speed=0, rate=0, create_topics=False, **options)
    return [
        str(p.get("event_id", p)) if isinstance(p, dict) else repr(p)
        for _t, _k, p in KeepingPublisher.sent
    ]


def test_simulate_with_a_state_file_continues_the_company(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "sim.json"
    first = simulate(monkeypatch, start="2d", count=300, state_file=path, duplicates=0.02)
    recorded = json.loads(path.read_text())
    assert recorded["published"] == 300
    # Restarted later with the same command: the relative start means another time now.
    monkeypatch.setattr(cli.time, "time", lambda: recorded["start"] + 2 * DAY + 120)
    second = simulate(monkeypatch, start="2d", count=300, state_file=path, duplicates=0.02)
    assert json.loads(path.read_text())["published"] == 600
    # One run from the recorded start, 600 messages: the two runs' ids, in order.
    start = datetime.fromtimestamp(recorded["start"], tz=UTC).isoformat()
    whole = simulate(monkeypatch, start=start, count=600, duplicates=0.02)
    assert first + second == whole
    assert len(set(first)) > 250 and not set(first) & set(second) - set(first)
