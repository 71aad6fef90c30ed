"""``kpi worker``: create the topics, then run the faust worker until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

import faust

from schemas.errors import EXIT_ERROR, KpiError
from streams.access import check_kafka_access
from streams.config import Settings
from streams.logs import quiet_library_logs, use_json_format
from streams.redis_client import check_reachable
from streams.selection import selected_catalog
from streams.topics import ensure_topics

log = logging.getLogger(__name__)

GC_THRESHOLD_GEN0 = 50_000


def tune_gc() -> None:
    """The garbage collector's settings for a worker process, applied once at start-up.

    The state is millions of long-lived containers, and every batch allocates many short
    ones: with the default thresholds the collector runs every 700 allocations and keeps
    rescanning the state. Collect young objects less often, and leave everything that
    exists at start-up (modules, faust's graph) out of the scans.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD_GEN0, 20, 100)


class WorkerProcess(faust.Worker):
    """faust's worker, logging in the format of ``KPI_LOG_FORMAT``.

    With ``json`` the root logger's handlers get ``JsonFormatter`` once faust has set them
    up, and faust prints nothing besides (no banner, no spinner): every line is a record.
    """

    def __init__(self, app: Any, *, log_format: str, **kwargs: Any) -> None:
        self._json_logs = log_format == "json"
        super().__init__(app, quiet=self._json_logs, **kwargs)
        if self._json_logs:
            self.spinner = None

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        """Set up as faust does, then give every root handler the JSON format."""
        super().on_setup_root_logger(logger, level)
        if self._json_logs:
            use_json_format(logger)


def run_worker(settings: Settings, loglevel: str = "info") -> None:
    """Run one worker process (blocks)."""
    from streams.app import create_app

    # Redis and the topics first, on a loop of our own: an unreachable Redis or Kafka at
    # start ends the command in one line (later, Redis outages are waited out); faust
    # subscribes as soon as it starts, and the engine is made for the topics' partitions.
    selected_catalog(settings)  # KPI_ONLY_*: a bad name stops here, before any connection
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(check_reachable(settings.redis_url, **settings.redis_options()))
        partitions = loop.run_until_complete(ensure_topics(settings)).partitions
        # A missing ACL is one line now, not a crash at the first dead letter.
        loop.run_until_complete(check_kafka_access(settings, "worker"))
    finally:
        loop.close()
    asyncio.set_event_loop(asyncio.new_event_loop())
    app, _worker = create_app(settings, partitions)
    quiet_library_logs()

    tune_gc()
    worker = WorkerProcess(
        app, log_format=settings.log_format, loglevel=loglevel, redirect_stdouts=False
    )
    try:
        worker.execute_from_commandline()
    except SystemExit as done:
        # mode exits 1 on any crash. One of ours (a state kept in another calendar, found
        # at restore) was said in one ``kpi: error:`` line as the worker stopped: exit as
        # the settings checked before the start do.
        if done.code and isinstance(worker.crash_reason, KpiError):
            raise SystemExit(EXIT_ERROR) from None
        raise
