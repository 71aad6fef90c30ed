"""The table, the JSON report and the one-line summary."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.config import (
    TARGET_P99_MS,
    TARGET_PRODUCT_EPS,
    TARGET_QUIX_RATIO,
    TARGET_RATIO,
    TARGET_RSS_MB,
    TARGET_SCALE_CPU,
    TARGET_SCALE_RATIO,
    TARGET_SLICE_DRIFT,
)


def median(values: Sequence[float | None]) -> float | None:
    """Median of the values that are numbers, or None."""
    nums = [v for v in values if isinstance(v, int | float)]
    return statistics.median(nums) if nums else None


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """The headline figures from the raw per-run results."""
    runs = results.get("runs", {})

    def eps(name: str) -> float | None:
        return median([r["eps"] for r in runs.get(name, [])])

    product, raw = eps("product"), eps("raw")
    scale = eps("scale")
    scale_runs = runs.get("scale", [])
    single, quix = eps("single"), eps("quix")
    lat = results.get("latency") or {}
    product_runs = runs.get("product", [])
    rss = max((r["rss_hwm_mb"] for r in product_runs), default=None)
    product_cpu = median([r.get("worker_cpu_us_per_event") for r in product_runs])
    scale_cpu = median([r.get("worker_cpu_us_per_event") for r in scale_runs])
    return {
        "product_eps": product,
        "raw_eps": raw,
        "ratio": product / raw if product and raw else None,
        "single_eps": single,
        "quix_eps": quix,
        "quix_ratio": single / quix if single and quix else None,
        "p99_ms": lat.get("marker_p99_ms"),
        "p50_ms": lat.get("marker_p50_ms"),
        "max_ms": lat.get("marker_max_ms"),
        "histogram_p50_ms": lat.get("histogram_p50_ms"),
        "histogram_p99_ms": lat.get("histogram_p99_ms"),
        "rss_mb": rss,
        "startup_s": median([r["startup_s"] for r in product_runs]),
        "changelog_mb": (
            median([r["changelog_bytes"] / 1e6 for r in product_runs]) if product_runs else None
        ),
        "worker_cpu_util": median([r.get("worker_cpu_util") for r in product_runs]),
        "kafka_cpu_util": median([r.get("kafka_cpu_util") for r in product_runs]),
        "scale_eps": scale,
        # Two workers over one, both medians of this bench run.
        "scale_ratio": scale / product if scale and product else None,
        # Both workers together, and each (workers in start order), in cores.
        "scale_worker_cpu_util": median([r.get("worker_cpu_util") for r in scale_runs]),
        "scale_worker_cpu_utils": _per_worker(scale_runs, "cpu_util"),
        "scale_kafka_cpu_util": median([r.get("kafka_cpu_util") for r in scale_runs]),
        # The product's last slice over its first (throughput, CPU per event), medians.
        "slice_drift": median([_drift(r, "eps") for r in product_runs]),
        "slice_cpu_drift": median([_drift(r, "cpu_us_per_event") for r in product_runs]),
        # CPU microseconds per message of every worker: two workers' over one's.
        "product_cpu_us_per_event": product_cpu,
        "scale_cpu_us_per_event": scale_cpu,
        "scale_cpu": scale_cpu / product_cpu if scale_cpu and product_cpu else None,
        # Two workers must write the same closed windows to Redis as one.
        "scale_history_matches": (
            len({r["redis_digest"]["history"] for r in product_runs + scale_runs}) == 1
            if product_runs and scale_runs
            else None
        ),
    }


def _drift(run: dict[str, Any], key: str) -> float | None:
    """The last slice's ``key`` over the first's in one run (None with fewer than 2)."""
    slices = run.get("slices") or []
    if len(slices) < 2:
        return None
    first, last = slices[0].get(key), slices[-1].get(key)
    return last / first if first and last is not None else None


def _per_worker(runs: list[dict[str, Any]], key: str) -> list[float | None]:
    """Median of ``key`` of the k-th worker (start order) over multi-worker runs, per k."""
    workers = [r.get("workers") or [] for r in runs]
    n = max((len(w) for w in workers), default=0)
    return [median([w[k].get(key) for w in workers if len(w) > k]) for k in range(n)]


def _fmt(v: Any, digits: int = 0) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _verdict(value: float | None, ok: bool | None) -> str:
    if value is None or ok is None:
        return "[yellow]n/a[/]"
    return "[green]pass[/]" if ok else "[red]FAIL[/]"


def table(results: dict[str, Any], s: dict[str, Any]) -> Table:
    """The rich table of every figure, with the targets."""
    runs = results.get("runs", {})
    events = results["config"]["events"]
    t = Table(title=f"make bench: {events:,} events, median of {results['config']['repeat']}")
    for col in ("figure", "value", "runs", "target", "result"):
        t.add_column(col, justify="right" if col in ("value", "runs") else "left")

    def runs_of(name: str, key: str = "eps", digits: int = 0) -> str:
        return " / ".join(_fmt(r.get(key), digits) for r in runs.get(name, []))

    t.add_row(
        "product: kpi worker, all 16 KPIs (events/s)",
        _fmt(s["product_eps"]),
        runs_of("product"),
        f">= {TARGET_PRODUCT_EPS:,}",
        _verdict(s["product_eps"], (s["product_eps"] or 0) >= TARGET_PRODUCT_EPS),
    )
    t.add_row("limit: aiokafka getmany + orjson (events/s)", _fmt(s["raw_eps"]), runs_of("raw"))
    t.add_row(
        "ratio product / limit",
        _fmt(s["ratio"], 3),
        "",
        f">= {TARGET_RATIO}",
        _verdict(s["ratio"], (s["ratio"] or 0) >= TARGET_RATIO),
    )
    t.add_row(
        "worker start-up to first batch (s)",
        _fmt(s["startup_s"], 1),
        runs_of("product", "startup_s", 1),
    )
    t.add_row(
        "worker CPU / Kafka CPU during run (cores)",
        f"{_fmt(s['worker_cpu_util'], 2)} / {_fmt(s['kafka_cpu_util'], 2)}",
    )
    single_note = results.get("single_kpi_mode", "")
    t.add_row(
        f"single KPI, our worker ({single_note}) (events/s)",
        _fmt(s["single_eps"]),
        runs_of("single"),
    )
    t.add_row("single KPI, Quix Streams (events/s)", _fmt(s["quix_eps"]), runs_of("quix"))
    t.add_row(
        "ratio ours / Quix (single KPI)",
        _fmt(s["quix_ratio"], 2),
        "",
        f">= {TARGET_QUIX_RATIO}",
        _verdict(s["quix_ratio"], (s["quix_ratio"] or 0) >= TARGET_QUIX_RATIO),
    )
    lat = results.get("latency") or {}
    t.add_row(
        f"latency p50 / p99 / max (ms) at {_fmt(lat.get('rate_achieved'))} ev/s, markers",
        f"{_fmt(s['p50_ms'], 1)} / {_fmt(s['p99_ms'], 1)} / {_fmt(s['max_ms'], 1)}",
        f"{lat.get('markers', 0)} markers",
        f"p99 <= {TARGET_P99_MS:.0f}",
        _verdict(s["p99_ms"], s["p99_ms"] is not None and s["p99_ms"] <= TARGET_P99_MS),
    )
    t.add_row(
        "latency p50 / p99 (ms), worker histogram",
        f"{_fmt(s['histogram_p50_ms'], 1)} / {_fmt(s['histogram_p99_ms'], 1)}",
        f"{_fmt(lat.get('histogram_events'))} events",
    )
    t.add_row(
        "worker peak RSS, VmHWM (MB)",
        _fmt(s["rss_mb"], 1),
        runs_of("product", "rss_hwm_mb", 1),
        f"<= {TARGET_RSS_MB:.0f}" + ("" if events >= 1_000_000 else " (1M run)"),
        _verdict(s["rss_mb"], s["rss_mb"] is not None and s["rss_mb"] <= TARGET_RSS_MB),
    )
    t.add_row(
        "state on disk: changelog log dirs (MB)",
        _fmt(s["changelog_mb"], 1),
        " / ".join(_fmt(r["changelog_bytes"] / 1e6, 1) for r in runs.get("product", [])),
    )
    t.add_row(
        "scale: 2 kpi workers, one group (events/s)",
        _fmt(s["scale_eps"]),
        runs_of("scale"),
    )
    t.add_row(
        "ratio 2 workers / 1 worker",
        _fmt(s["scale_ratio"], 2),
        "",
        f">= {TARGET_SCALE_RATIO}",
        _verdict(s["scale_ratio"], (s["scale_ratio"] or 0) >= TARGET_SCALE_RATIO),
    )
    t.add_row(
        "scale: CPU of worker 1 + worker 2 / Kafka (cores)",
        f"{' + '.join(_fmt(v, 2) for v in s['scale_worker_cpu_utils']) or '-'} / "
        f"{_fmt(s['scale_kafka_cpu_util'], 2)}",
        runs_of("scale", "worker_cpu_util", 2),
    )
    t.add_row(
        "scale: worker CPU per event, 2 workers / 1 (us)",
        f"{_fmt(s['scale_cpu'], 2)}",
        f"{_fmt(s['scale_cpu_us_per_event'], 1)} / {_fmt(s['product_cpu_us_per_event'], 1)}",
        f"<= {TARGET_SCALE_CPU}",
        _verdict(s["scale_cpu"], s["scale_cpu"] is not None and s["scale_cpu"] <= TARGET_SCALE_CPU),
    )
    t.add_row(
        "product: last slice / first slice (events/s; CPU per event)",
        f"{_fmt(s['slice_drift'], 2)}; {_fmt(s['slice_cpu_drift'], 2)}",
        " / ".join(_fmt(_drift(r, "eps"), 2) for r in runs.get("product", [])),
        f">= {TARGET_SLICE_DRIFT}",
        _verdict(s["slice_drift"], (s["slice_drift"] or 0) >= TARGET_SLICE_DRIFT),
    )
    t.add_row(
        "scale: Redis history digest equals product's",
        _fmt({True: "yes", False: "NO"}.get(s["scale_history_matches"])),
        " / ".join(r["redis_digest"]["history"] for r in runs.get("scale", [])),
    )
    return t


def final_line(s: dict[str, Any]) -> str:
    """``bench: product_eps=N raw_eps=N ratio=R ... scale_ratio=S`` (the last line printed)."""

    def n(v: Any) -> str:
        return "nan" if v is None else f"{v:.0f}"

    def r(v: Any, d: int) -> str:
        return "nan" if v is None else f"{v:.{d}f}"

    return (
        f"bench: product_eps={n(s['product_eps'])} raw_eps={n(s['raw_eps'])} "
        f"ratio={r(s['ratio'], 3)} single_eps={n(s['single_eps'])} quix_eps={n(s['quix_eps'])} "
        f"quix_ratio={r(s['quix_ratio'], 2)} p99_ms={r(s['p99_ms'], 1)} rss_mb={r(s['rss_mb'], 1)} "
        f"scale_ratio={r(s.get('scale_ratio'), 2)} slice_drift={r(s.get('slice_drift'), 2)} "
        f"scale_cpu={r(s.get('scale_cpu'), 2)}"
    )


def write(results: dict[str, Any], path: Path) -> None:
    """The JSON report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=False, default=str) + "\n")


def show(results: dict[str, Any], console: Console) -> str:
    """Print the table (and the profile) and return the final line."""
    s = results["summary"]
    console.print(table(results, s))
    prof = results.get("profile") or {}
    if prof.get("cumulative"):
        pt = Table(title=f"worker profile (py-spy, {prof['samples']:,} samples, below the loop)")
        pt.add_column("cumulative")
        pt.add_column("function")
        pt.add_column("self")
        for e in prof["cumulative"]:
            pt.add_row(f"{e['share']:.1%}", e["function"], f"{e['self_share']:.1%}")
        console.print(pt)
    for run in results.get("runs", {}).get("product", []):
        if run.get("slices"):
            console.print(slices_table(run))
    return final_line(s)


#: The state sizes a slice row shows (``/state``), in this order.
_STATE_COLUMNS = ("entities", "panes", "distributions", "dedup_ids", "keys")


def slices_table(run: dict[str, Any]) -> Table:
    """One product run's slices: throughput, CPU per event, and RSS and state at each end."""
    t = Table(title=f"product run {run['app_id']}: {len(run['slices'])} slices")
    for col in ("slice", "events", "events/s", "CPU us/event", "RSS MB", *_STATE_COLUMNS):
        t.add_column(col, justify="right")
    for i, sl in enumerate(run["slices"], 1):
        state = sl.get("state") or {}
        t.add_row(
            str(i),
            _fmt(sl["events_end"]),
            _fmt(sl["eps"]),
            _fmt(sl["cpu_us_per_event"], 1),
            _fmt(sl["rss_mb"], 0),
            *(_fmt(state.get(name)) for name in _STATE_COLUMNS),
        )
    return t
