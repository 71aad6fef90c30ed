"""The product's errors: one root, a few specific kinds, decided at the edges."""

from __future__ import annotations


class KpiError(Exception):
    """Root of every error the product raises on purpose."""


class ConfigurationError(KpiError):
    """A setting or argument is unusable; the message is one line for the user."""


class StackError(KpiError):
    """The local Kafka/Redis stack could not be started, stopped or inspected."""


class InvalidEvent(KpiError):
    """An input message cannot be applied; it goes to the dead-letter topic with ``reason``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
