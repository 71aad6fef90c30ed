"""aiokafka's log records as an operator wants them: retried errors as warnings, repeats folded.

aiokafka logs at ERROR what it retries by itself (a new partition whose leader is not ready,
a coordinator not available yet: a few lines at every fresh start), and while the broker is
down it logs the same failed connection about ten times a second, thousands of lines an
outage. The outage itself is reported by ``/health`` and the metrics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from aiokafka.errors import KafkaError

REPEAT_WINDOW_S = 30.0


def _retriable(args: object) -> bool:
    values = args if isinstance(args, tuple) else (args,)
    return any(isinstance(a, KafkaError) and a.retriable for a in values)


class LibraryNoise(logging.Filter):
    """Retriable Kafka errors become WARNING; a message logged again is held back a while.

    Messages are told apart by logger and format string (``"Unable connect to node with id
    %s: %s"``), not by their arguments. The first one is let through; the same kind within
    ``window_s`` after it is counted and dropped; the next one let through after that says
    how many were dropped.
    """

    def __init__(
        self, window_s: float = REPEAT_WINDOW_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.window_s = window_s
        self.clock = clock
        # (logger, format string) -> (when last let through, how many dropped since)
        self._last: dict[tuple[str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether to log ``record`` (its level and text possibly changed)."""
        if record.levelno >= logging.ERROR and _retriable(record.args):
            record.levelno = logging.WARNING
            record.levelname = logging.getLevelName(logging.WARNING)
        key = (record.name, str(record.msg))
        now = self.clock()
        seen = self._last.get(key)
        if seen is not None and now - seen[0] < self.window_s:
            self._last[key] = (seen[0], seen[1] + 1)
            return False
        self._last[key] = (now, 0)
        if seen is not None and seen[1]:
            record.msg = (
                f"{record.getMessage()} ({seen[1]} more like it in the {now - seen[0]:.0f} s "
                "before, not shown)"
            )
            record.args = None
        return True


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
