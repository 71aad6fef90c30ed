"""backoffice-kpi: a streaming back-office KPI processor (Kafka -> Faust -> Redis, Prometheus).

Importing it does nothing else: whether the engine runs as its mypyc build is chosen by an
explicit call, ``streams.engine_build.select()``, at the start of each entry point.
"""

__version__ = "0.1.0"
