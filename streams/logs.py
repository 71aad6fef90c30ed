"""Log records as an operator wants them: retried errors as warnings, repeats folded, JSON.

aiokafka logs at ERROR what it retries by itself (a new partition whose leader is not ready,
a coordinator not available yet: a few lines at every fresh start), and while the broker is
down it logs the same failed connection about ten times a second, thousands of lines an
outage. The outage itself is reported by ``/health`` and the metrics.

``KPI_LOG_FORMAT=json`` (``kpi worker --log-format json``) writes one JSON object a line,
for a log collector (``JsonFormatter``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import orjson
from aiokafka.errors import KafkaError

from schemas.errors import KpiError

REPEAT_WINDOW_S = 30.0
#: Repeat keys remembered before those past their window are forgotten.
MAX_KINDS = 1024


def _retriable(args: object) -> bool:
    values = args if isinstance(args, tuple) else (args,)
    return any(isinstance(a, KafkaError) and a.retriable for a in values)


class LibraryNoise(logging.Filter):
    """Retriable Kafka errors become WARNING; a warning or error repeated is held back a while.

    A repeat is the same logger, format string and arguments other than the exception
    (``"Unable connect to node with id %s: %s"`` for node 1, whatever the ``OSError``): the
    first one is let through; the same within ``window_s`` after it is counted and dropped;
    the next one let through after that says how many were dropped. Records below WARNING
    and records with a traceback are never held back.
    """

    def __init__(
        self, window_s: float = REPEAT_WINDOW_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.window_s = window_s
        self.clock = clock
        # repeat key -> (when last let through, how many dropped since)
        self._last: dict[tuple[str, str, tuple[str, ...]], tuple[float, int]] = {}
        self._swept_at = clock()

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether to log ``record`` (its level and text possibly changed)."""
        if record.levelno >= logging.ERROR and _retriable(record.args):
            record.levelno = logging.WARNING
            record.levelname = logging.getLevelName(logging.WARNING)
            # The logger checked its level for ERROR; one set to ERROR drops the warning.
            if not logging.getLogger(record.name).isEnabledFor(logging.WARNING):
                return False
        if record.levelno < logging.WARNING or record.exc_info:
            return True
        args = record.args if isinstance(record.args, tuple) else (record.args,)
        key = (
            record.name,
            str(record.msg),
            tuple(repr(a) for a in args if not isinstance(a, BaseException)),
        )
        now = self.clock()
        if len(self._last) > MAX_KINDS and now - self._swept_at >= self.window_s:
            self._forget_before(now - self.window_s)
            self._swept_at = now
        seen = self._last.get(key)
        if seen is not None and now - seen[0] < self.window_s:
            self._last[key] = (seen[0], seen[1] + 1)
            return False
        self._last[key] = (now, 0)
        if seen is not None and seen[1]:
            # Appended to the format string (the note has no %), so the arguments are
            # formatted where logging formats them, errors included.
            record.msg = (
                f"{record.msg} ({seen[1]} more like it in the {now - seen[0]:.0f} s before, "
                "not shown)"
            )
        return True

    def _forget_before(self, cutoff: float) -> None:
        # Messages with ever new arguments (offsets, say) would fill the table; the ones let
        # through before ``cutoff`` hold nothing back any more (their count is lost).
        self._last = {k: v for k, v in self._last.items() if v[0] >= cutoff}


def quiet_library_logs(window_s: float = REPEAT_WINDOW_S) -> LibraryNoise:
    """Put one ``LibraryNoise`` on every aiokafka logger created so far (call after imports).

    A logger's filters see only the records created on it, not those of its children, so
    each module's logger gets it.
    """
    noise = LibraryNoise(window_s)
    for name in list(logging.root.manager.loggerDict):
        if name == "aiokafka" or name.startswith("aiokafka."):
            logging.getLogger(name).addFilter(noise)
    return noise


class SaidInOneLine(logging.Filter):
    """Drops mode's "Crashed reason=..." record (with its traceback) for our own errors.

    A ``KpiError`` that stops a service (a state kept in another calendar) is logged first
    as one ``kpi: error:`` line; mode's ``Service.crash`` would log it again, with the
    traceback that the one line replaces. Other crashes keep theirs.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether the record is logged."""
        message = record.msg if isinstance(record.msg, str) else ""
        if not message.endswith("Crashed reason=%r") or not isinstance(record.args, tuple):
            return True
        return not (record.args and isinstance(record.args[0], KpiError))


@contextlib.contextmanager
def quiet_logger(logger_name: str) -> Iterator[None]:
    """Silence a library logger for a while (aiokafka's retry noise when an error says it)."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``time`` (RFC 3339, UTC), ``level``, ``logger``, ``message``.

    Plus ``exception`` (the traceback as text) when the record carries one, and ``stack``
    when it carries a stack. The message is the one the text format shows (the same
    arguments, so the same redactions: settings and URLs are logged with their passwords
    as ``***``); a newline in it stays inside the JSON string, so the line is one record.
    """

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line (without the newline the handler adds)."""
        when = datetime.fromtimestamp(record.created, UTC)
        entry: dict[str, str] = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry).decode()


def use_json_format(logger: logging.Logger) -> None:
    """Give every handler of ``logger`` (the root, once faust set it up) the JSON format."""
    formatter = JsonFormatter()
    for handler in logger.handlers:
        handler.setFormatter(formatter)
