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
