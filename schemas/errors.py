"""The product's errors: one root, a few specific kinds, decided at the edges.

They belong to the contract (``schemas``), which every other package imports.
"""

from __future__ import annotations

from typing import Final


class KpiError(Exception):
    """Root of every error the product raises on purpose."""


class ConfigurationError(KpiError):
    """A setting or argument is unusable; the message is one line for the user."""


class UnavailableError(KpiError):
    """A service the command needs (Kafka, Redis) cannot be reached or refused it."""


class StackError(KpiError):
    """The local Kafka/Redis stack could not be started, stopped or inspected."""


class InvalidEvent(KpiError):
    """An input message cannot be applied; it goes to the dead-letter topic with ``reason``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


#: The dead-letter reason of an event from the future, and how far ahead of the clock
#: ``occurred_at`` may be. The engine judges by them; ``kpi publish`` checks rows the same way.
FUTURE: Final = "future"
FUTURE_TOLERANCE_S: Final = 300


class NothingToShow(KpiError):
    """The command ran, but there is nothing to show (no value yet, no such closed window).

    Not an error of the user's input nor of a service: ``kpi`` ends with exit code 1 for it,
    so that a script can tell "nothing yet" from "could not ask" (2).
    """


# The exit codes of every ``kpi`` command (README, "Exit codes"); decided in ``kpi.cli.main``.
#: Done; what was asked is shown.
EXIT_OK: Final = 0
#: Nothing to show, or a check failed (a stale generated file, invalid rows, a stack down).
EXIT_NOTHING: Final = 1
#: A usage error (bad option or argument, unknown KPI), a bad setting, or a service (Kafka,
#: Redis) that cannot be reached or refused the command.
EXIT_ERROR: Final = 2
#: Interrupted (Ctrl-C, SIGINT): 128 + the signal's number, as shells report it.
EXIT_INTERRUPTED: Final = 130
