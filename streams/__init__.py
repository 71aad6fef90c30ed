"""backoffice-kpi: a streaming KPI processor for the back office (Kafka -> Faust -> Redis, Prometheus)."""

__version__ = "0.1.0"
