"""Producers: a deterministic virtual company and a Kafka publisher for its events.

``producers.simulator`` is pure (no Kafka); ``producers.publisher`` and ``producers.cli``
(the ``kpi simulate`` command) talk to Kafka.
"""

from producers.simulator import FAULT_KINDS, INVALID_REASONS, CompanySimulator, Emission, Faults

__all__ = ["FAULT_KINDS", "INVALID_REASONS", "CompanySimulator", "Emission", "Faults"]
