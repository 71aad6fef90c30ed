"""The state file of ``kpi simulate --state-file``: which company a run simulates, how far.

The simulator is a pure function of its settings and its start time, and its event ids
embed both. A run started with ``--start 2d`` and restarted a minute later would otherwise
be another company (new ids, its first two days long past the worker's grace): the file
keeps the first run's start, so a restart is the same company, and how many messages were
flushed to Kafka, so it goes on after them. What was sent after the last save is sent
again with the same event ids: the worker counts those as duplicates, never as ``late``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.errors import ConfigurationError

VERSION = 1


@dataclass(frozen=True)
class SimulatorRun:
    """One simulated company: its settings, its start, the messages already published."""

    path: Path
    #: The settings that make the company (seed, ``--start`` as written, faults, scale...).
    settings: dict[str, Any]
    start: float
    published: int = 0
    #: Simulated publication time of the last message published (the start when none).
    published_upto: float = 0.0

    @classmethod
    def open(cls, path: Path, settings: dict[str, Any], start: float) -> SimulatorRun:
        """The run recorded at ``path``, or a new one from ``start`` (written there now).

        ``ConfigurationError`` when the file records other settings: it would be another
        company under the same name, so the user decides (delete the file to start anew).
        """
        settings = json.loads(json.dumps(settings))  # as it reads back: lists, floats
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            run = cls(path, settings, start, 0, start)
            run.save(0, start)
            return run
        except OSError as exc:
            msg = f"cannot read --state-file {path}: {exc.strerror or exc}"
            raise ConfigurationError(msg) from None
        try:
            doc = json.loads(text)
            if doc["version"] != VERSION:
                msg = f"version {doc['version']}, expected {VERSION}"
                raise ValueError(msg)
            recorded = cls(
                path,
                dict(doc["settings"]),
                float(doc["start"]),
                int(doc["published"]),
                float(doc["published_upto"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            msg = f"--state-file {path} is not a simulator state file ({exc}); delete it"
            raise ConfigurationError(msg) from None
        changed = [
            f"{key} {recorded.settings.get(key)!r} there, {settings.get(key)!r} now"
            for key in sorted(set(settings) | set(recorded.settings))
            if recorded.settings.get(key) != settings.get(key)
        ]
        if changed:
            msg = (
                f"--state-file {path} records another company ({'; '.join(changed)}): "
                "delete it to start a new one"
            )
            raise ConfigurationError(msg)
        return recorded

    def save(self, published: int, published_upto: float) -> None:
        """Record the progress: written to a temporary file, then renamed over the old one."""
        doc = {
            "version": VERSION,
            "settings": self.settings,
            "start": self.start,
            "published": published,
            "published_upto": published_upto,
        }
        temporary = self.path.with_name(self.path.name + ".tmp")
        try:
            temporary.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
            os.replace(temporary, self.path)
        except OSError as exc:
            msg = f"cannot write --state-file {self.path}: {exc.strerror or exc}"
            raise ConfigurationError(msg) from None
