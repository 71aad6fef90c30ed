"""aiokafka's retried errors become warnings, and a flood of repeats becomes a line a while."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import aiokafka
import orjson
import pytest
from aiokafka.errors import KafkaError, NotLeaderForPartitionError, UnsupportedVersionError

from streams.logs import MAX_KINDS, LibraryNoise, quiet_library_logs


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(
    msg: str, *args: object, level: int = logging.ERROR, name: str = "aiokafka"
) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_retriable_kafka_errors_are_warnings_others_stay_errors() -> None:
    noise = LibraryNoise(clock=Clock())
    retried = record("Failed fetch offsets from %s: %s", 1, NotLeaderForPartitionError())
    assert noise.filter(retried)
    assert (retried.levelno, retried.levelname) == (logging.WARNING, "WARNING")

    fatal = record("Unexpected error from %s: %s", 1, UnsupportedVersionError())
    assert not UnsupportedVersionError.retriable
    assert noise.filter(fatal)
    assert (fatal.levelno, fatal.levelname) == (logging.ERROR, "ERROR")

    refused = record("Unable connect to node with id %s: %s", 1, OSError(111, "refused"))
    assert noise.filter(refused)
    assert refused.levelno == logging.ERROR


def test_repeats_are_held_back_and_counted() -> None:
    clock = Clock()
    noise = LibraryNoise(window_s=30.0, clock=clock)
    template = "Unable connect to node with id %s: %s"
    let_through = []
    for i in range(100):  # ten a second for ten seconds
        clock.now = 1000.0 + i / 10
        r = record(template, 1, OSError(111, f"refused {i}"))
        if noise.filter(r):
            let_through.append(r.getMessage())
    assert let_through == ["Unable connect to node with id 1: [Errno 111] refused 0"]

    # Another kind of message is not held back by the first.
    other = record("Unable to update metadata from %s", [1])
    assert noise.filter(other)
    assert other.getMessage() == "Unable to update metadata from [1]"

    clock.now = 1031.0
    late = record(template, 1, OSError(111, "refused again"))
    assert noise.filter(late)
    assert late.getMessage() == (
        "Unable connect to node with id 1: [Errno 111] refused again "
        "(99 more like it in the 31 s before, not shown)"
    )
    # The count starts again.
    clock.now = 1070.0
    quiet = record(template, 1, OSError(111, "refused"))
    assert noise.filter(quiet)
    assert quiet.getMessage() == "Unable connect to node with id 1: [Errno 111] refused"


def test_the_same_format_on_another_logger_is_another_kind() -> None:
    noise = LibraryNoise(clock=Clock())
    assert noise.filter(record("Heartbeat failed: %s", KafkaError(), name="aiokafka.conn"))
    assert noise.filter(record("Heartbeat failed: %s", KafkaError(), name="aiokafka.client"))
    assert not noise.filter(record("Heartbeat failed: %s", KafkaError(), name="aiokafka.conn"))


def test_installed_on_every_aiokafka_logger(caplog: pytest.LogCaptureFixture) -> None:
    assert aiokafka.__version__
    noise = quiet_library_logs()
    try:
        fetcher = logging.getLogger("aiokafka.consumer.fetcher")
        client = logging.getLogger("aiokafka")  # aiokafka/client.py logs under the package name
        assert noise in fetcher.filters and noise in client.filters
        assert noise not in logging.getLogger("faust").filters
        with caplog.at_level(logging.INFO, logger="aiokafka"):
            for _ in range(5):
                fetcher.error("Failed fetch offsets from %s: %s", 1, NotLeaderForPartitionError())
        shown = [r for r in caplog.records if r.name == "aiokafka.consumer.fetcher"]
        assert [r.levelname for r in shown] == ["WARNING"]
    finally:
        for name in list(logging.root.manager.loggerDict):
            if name.startswith("aiokafka"):
                logging.getLogger(name).removeFilter(noise)


def test_other_arguments_are_another_kind_and_the_exception_is_not() -> None:
    noise = LibraryNoise(clock=Clock())
    template = "Unable connect to node with id %s: %s"
    assert noise.filter(record(template, 1, OSError(111, "refused")))
    assert noise.filter(record(template, 2, OSError(111, "refused")))  # another broker
    assert not noise.filter(record(template, 2, OSError(110, "timed out")))
    metadata = "Unable to update metadata from %s"
    assert noise.filter(record(metadata, [1]))  # a list argument (unhashable) is fine
    assert not noise.filter(record(metadata, [1]))
    assert noise.filter(record(metadata, [1, 2]))


def test_tracebacks_and_records_below_warning_are_never_held_back() -> None:
    noise = LibraryNoise(clock=Clock())
    for _ in range(3):
        assert noise.filter(
            record("Heartbeat session expired - marking coordinator dead", level=logging.INFO)
        )
        assert noise.filter(
            record("Sending offset-commit request with %s", {"a": 1}, level=logging.DEBUG)
        )
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            failed = record("User provided listener failed on partition assignment: %s", "tp")
            failed.exc_info = sys.exc_info()
        assert noise.filter(failed)


def test_a_logger_set_to_error_drops_the_demoted_warning() -> None:
    logger = logging.getLogger("aiokafka.test-level")
    logger.setLevel(logging.ERROR)
    try:
        noise = LibraryNoise(clock=Clock())
        retried = record(
            "Failed fetch offsets from %s: %s", 1, NotLeaderForPartitionError(), name=logger.name
        )
        assert not noise.filter(retried)
    finally:
        logger.setLevel(logging.NOTSET)


def test_arguments_that_do_not_format_are_left_to_logging() -> None:
    clock = Clock()
    noise = LibraryNoise(window_s=30.0, clock=clock)
    assert noise.filter(record("Fetch for %s: %s", "tp"))  # one argument short
    assert not noise.filter(record("Fetch for %s: %s", "tp"))
    clock.now += 31
    late = record("Fetch for %s: %s", "tp")
    assert noise.filter(late)  # the note is added without formatting the record
    assert late.msg == "Fetch for %s: %s (1 more like it in the 31 s before, not shown)"
    with pytest.raises(TypeError):
        late.getMessage()  # as it would without the filter: logging reports it, not aiokafka


def test_the_table_of_repeats_is_swept() -> None:
    clock = Clock()
    noise = LibraryNoise(window_s=30.0, clock=clock)
    for i in range(3000):  # offsets: a new argument every time, 100 a second
        clock.now = 1000.0 + i / 100
        assert noise.filter(record("Fetch offset %s is out of range", i, level=logging.WARNING))
    # Within one window nothing can go (each may still hold back a repeat).
    assert len(noise._last) == 3000 > MAX_KINDS
    clock.now += 31
    noise.filter(record("Fetch offset %s is out of range", -1, level=logging.WARNING))
    assert len(noise._last) < 10


# -- KPI_LOG_FORMAT=json --------------------------------------------------------------


def json_line(rec: logging.LogRecord) -> dict[str, object]:
    from streams.logs import JsonFormatter

    line = JsonFormatter().format(rec)
    assert "\n" not in line
    parsed: dict[str, object] = orjson.loads(line)
    return parsed


def test_a_json_log_line_has_time_level_logger_and_message() -> None:
    rec = record("Redis %s failed (%s)", "write", "refused", level=logging.WARNING, name="x.y")
    rec.created = 1_700_000_000.25
    assert json_line(rec) == {
        "time": "2023-11-14T22:13:20.250Z",
        "level": "WARNING",
        "logger": "x.y",
        "message": "Redis write failed (refused)",
    }


def test_a_json_log_line_carries_the_traceback_in_one_line() -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        rec = logging.LogRecord("w", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    entry = json_line(rec)
    assert entry["message"] == "failed"
    exception = str(entry["exception"])
    assert exception.startswith("Traceback") and "ValueError: boom\nsecond line" in exception


def test_settings_logged_in_json_keep_the_redis_password_hidden() -> None:
    from pydantic import SecretStr

    from streams.config import Settings

    settings = Settings(
        redis_url="redis://app:s3cr3t-pw@redis:6379/0", web_token=SecretStr("tok-9f")
    )
    entry = json_line(record("settings %s", settings, level=logging.INFO))
    assert "s3cr3t-pw" not in str(entry) and "tok-9f" not in str(entry)
    assert "redis://app:***@redis:6379/0" in str(entry["message"])


def test_use_json_format_sets_every_handler_of_the_logger() -> None:
    from streams.logs import JsonFormatter, use_json_format

    logger = logging.getLogger("test.json.format")
    handlers = [logging.StreamHandler(), logging.StreamHandler()]
    for h in handlers:
        logger.addHandler(h)
    try:
        use_json_format(logger)
        assert all(isinstance(h.formatter, JsonFormatter) for h in handlers)
    finally:
        for h in handlers:
            logger.removeHandler(h)


def test_a_bad_log_format_is_one_line_from_the_option_and_from_the_environment(
    tmp_path: Path,
) -> None:
    from tests.cli import run_kpi

    done = run_kpi(tmp_path, "worker", "--log-format", "xml")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == "kpi: error: --log-format must be text or json, not 'xml'\n"
    done = run_kpi(tmp_path, "worker", KPI_LOG_FORMAT="yaml")
    assert done.returncode == 2
    assert done.stderr.startswith("kpi: error: bad setting KPI_LOG_FORMAT: ")
    assert len(done.stderr.splitlines()) == 1
