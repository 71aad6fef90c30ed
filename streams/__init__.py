"""backoffice-kpi: a streaming back-office KPI processor (Kafka -> Faust -> Redis, Prometheus)."""

__version__ = "0.1.0"
