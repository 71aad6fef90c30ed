"""``python -m bench`` (``make bench``): throughput, latency and memory of the product.

See bench/README.md. In short: a dedicated local stack (own ports, own stack dir) is started,
a fixed simulator workload is published (not timed), then, in rounds of ``BENCH_REPEAT``:
the raw consumer (the limit), ``kpi worker`` with all sixteen KPIs, two such workers in one
consumer group (scale-out), ``kpi worker`` with only the invoice processing time KPI, and the
same KPI in Quix Streams; then one profiled worker run (py-spy) and the latency run at half
the product's throughput. The stack is stopped and its directory removed at the end, also on
failure or Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from rich.console import Console

from bench import procs, report
from bench.config import (
    REPO,
    RESULTS_DIR,
    SCALE_PROCESSES,
    SINGLE_KPI,
    SINGLE_WINDOWS,
    BenchConfig,
)
from bench.profile import analyze
from bench.runs import run_quix, run_raw, run_worker
from bench.workload import generate, publish
from streams import engine_build
from streams.config import Settings
from tooling.stack import stack_down, stack_up

FULL_PREFIX = "bench."
INVOICES_PREFIX = "bench-inv."
LATENCY_PREFIX = "bench-lat."


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "cpus": str(os.cpu_count())}
    for name in ("faust-streaming", "aiokafka", "orjson", "pydantic", "py-spy"):
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out["git"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    return out


def _sigterm(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> int:
    """Run the benchmark; 0 when every phase ran (targets do not decide the exit code)."""
    # First, so that nothing in this process imports a stale build of the engine (the
    # workers it starts choose for themselves, in kpi).
    engine_build.select()
    cfg = BenchConfig.from_env()
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 140)
    signal.signal(signal.SIGTERM, _sigterm)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    workdir = RESULTS_DIR / f"run-{stamp}"
    workdir.mkdir(parents=True, exist_ok=True)
    scratch = cfg.stack_dir / "work"
    tag = uuid.uuid4().hex[:6]
    began = time.monotonic()

    def say(text: str) -> None:
        console.print(f"[dim]{time.monotonic() - began:7.1f}s[/] {text}")

    base = Settings(
        kafka_bootstrap=cfg.kafka_bootstrap,
        redis_url=cfg.redis_db(0),
        stack_dir=str(cfg.stack_dir),
        partitions=cfg.partitions,
    )
    results: dict[str, Any] = {
        "config": {
            "events": cfg.events,
            "seed": cfg.seed,
            "scale": cfg.scale,
            "start": cfg.start,
            "repeat": cfg.repeat,
            "partitions": cfg.partitions,
            "phases": list(cfg.phases),
            "kafka_bootstrap": cfg.kafka_bootstrap,
            "redis_url": cfg.redis_url,
            "stack_dir": str(cfg.stack_dir),
        },
        "versions": _versions(),
        "started_at": stamp,
        # Other work on the (2-core) machine skews every figure: recorded at both ends.
        "loadavg_start": os.getloadavg(),
        "logs": str(workdir),
        "runs": {},
        "errors": [],
    }
    runs: dict[str, list[dict[str, Any]]] = results["runs"]
    interrupted = False

    def attempt(name: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - one failed phase must not lose the others
            say(f"[red]{name} failed:[/] {exc}")
            results["errors"].append({"phase": name, "error": str(exc)})
            (workdir / f"error-{name}.txt").write_text(traceback.format_exc())
            return None

    try:
        # A fresh stack every time: leftovers of an interrupted run are stopped and removed.
        if cfg.stack_dir.exists():
            stack_down(base, echo=say)
            shutil.rmtree(cfg.stack_dir)
        stack_up(base, echo=say)

        say(f"generating {cfg.events:,} events (seed {cfg.seed}, scale {cfg.scale:g})")
        wl = generate(cfg.events, seed=cfg.seed, start=cfg.start, scale=cfg.scale)
        results["workload"] = wl.describe()
        say(
            f"generated in {wl.generate_s:.1f} s: {dict(wl.per_topic)}, "
            f"{results['workload']['event_time_days']} days of event time"
        )
        full = base.model_copy(update={"topic_prefix": FULL_PREFIX})
        n, secs = publish(full, wl.messages, lambda k: say(f"  published {k:,}"))
        results["publish"] = {"full": {"messages": n, "seconds": secs, "eps": n / secs}}
        say(f"published {n:,} messages to {FULL_PREFIX}* in {secs:.1f} s ({n / secs:,.0f}/s)")
        invoices = [m for m in wl.messages if m[0] == "invoices"]
        n_inv, n_dec = len(invoices), wl.invoice_decisions
        inv = base.model_copy(update={"topic_prefix": INVOICES_PREFIX})
        if {"single", "quix"} & set(cfg.phases):
            n, secs = publish(inv, invoices)
            results["publish"]["invoices"] = {"messages": n, "seconds": secs, "eps": n / secs}
            say(f"published {n:,} invoice messages to {INVOICES_PREFIX}invoices in {secs:.1f} s")

        def worker_settings(kind: str, i: int, src: Settings, db: int) -> Settings:
            return src.model_copy(
                update={
                    "app_id": f"bench-{kind}-{i}-{tag}",
                    "redis_url": cfg.redis_db(db),
                    "web_port": procs.free_port(),
                }
            )

        for i in range(1, cfg.repeat + 1):
            if "raw" in cfg.phases:
                r = attempt(
                    "raw",
                    lambda: run_raw(cfg, full, list(full.input_topics), cfg.events, workdir),
                )
                if r:
                    runs.setdefault("raw", []).append(r)
                    say(f"raw #{i}: {r['eps']:,.0f} events/s ({r['seconds']:.1f} s)")
            if "product" in cfg.phases:
                s = worker_settings("product", i, full, 1)
                r = attempt(
                    "product",
                    lambda s=s: run_worker(cfg, s, cfg.events, workdir, scratch, slices=cfg.slices),
                )
                if r:
                    runs.setdefault("product", []).append(r)
                    say(
                        f"product #{i}: {r['eps']:,.0f} events/s ({r['seconds']:.1f} s, start-up "
                        f"{r['startup_s']:.1f} s, VmHWM {r['rss_hwm_mb']:.0f} MB, worker CPU "
                        f"{r['worker_cpu_util'] or 0:.2f}, accounted "
                        f"{r['metrics']['accounted']:.0f}/{cfg.events}, history digest "
                        f"{r['redis_digest']['history']})"
                    )
            if "scale" in cfg.phases:
                s = worker_settings("scale", i, full, 5)
                # Done when Redis holds the one-worker run's history (the leader closes the
                # last windows once it has read the others' final commits).
                single_run = next(iter(runs.get("product", [])), None)
                expect = single_run["redis_digest"]["history"] if single_run else None
                r = attempt(
                    "scale",
                    lambda s=s, e=expect: run_worker(
                        cfg,
                        s,
                        cfg.events,
                        workdir,
                        scratch,
                        processes=SCALE_PROCESSES,
                        expect_history=e,
                        slices=cfg.slices,
                    ),
                )
                if r:
                    runs.setdefault("scale", []).append(r)
                    cpus = " + ".join(f"{w['cpu_util'] or 0:.2f}" for w in r["workers"] or [])
                    say(
                        f"scale #{i}: {r['eps']:,.0f} events/s with {r['processes']} workers "
                        f"({r['seconds']:.1f} s, start-up {r['startup_s']:.1f} s, assignment "
                        f"settled at {r['assignment_settled_s'] or 0:.1f} s, all workers busy "
                        f"from {r['all_active_s'] or 0:.1f} s at {r['eps_all_active'] or 0:,.0f} "
                        f"events/s, replayed "
                        f"{r['replayed']}, worker CPU "
                        f"{cpus}, accounted "
                        f"{r['metrics']['accounted']:.0f}/{cfg.events}, history digest "
                        f"{r['redis_digest']['history']})"
                    )
            if "single" in cfg.phases:
                s = worker_settings("single", i, inv, 2)
                only = {"KPI_ONLY_KPIS": SINGLE_KPI, "KPI_ONLY_WINDOWS": SINGLE_WINDOWS}
                r = attempt(
                    "single",
                    lambda s=s, o=only: run_worker(cfg, s, n_inv, workdir, scratch, extra_env=o),
                )
                if r:
                    runs.setdefault("single", []).append(r)
                    honored = r["redis_kpis"] == {SINGLE_KPI: [SINGLE_WINDOWS]}
                    results["single_kpi_mode"] = (
                        "KPI_ONLY_* honored" if honored else "KPI_ONLY_* ignored: all invoice KPIs"
                    )
                    say(
                        f"single #{i}: {r['eps']:,.0f} events/s ({r['seconds']:.1f} s), "
                        f"{results['single_kpi_mode']}"
                    )
            if "quix" in cfg.phases:
                group = f"bench-quix-{i}-{tag}"
                r = attempt(
                    "quix",
                    lambda g=group: run_quix(
                        cfg, inv, inv.topic("invoices"), n_inv, n_dec, g, workdir, scratch
                    ),
                )
                if r:
                    runs.setdefault("quix", []).append(r)
                    say(
                        f"quix #{i}: {r['eps']:,.0f} events/s ({r['seconds']:.1f} s, start-up "
                        f"{r['startup_s']:.1f} s, late {r['late']}, windows {r['windows_emitted']})"
                    )

        if "profile" in cfg.phases:
            out = workdir / "worker-profile.txt"
            s = worker_settings("profile", 0, full, 4)
            r = attempt(
                "profile",
                lambda: run_worker(cfg, s, cfg.events, workdir, scratch, profile_to=out),
            )
            if r and out.exists():
                results["profile"] = {
                    **analyze(out),
                    "file": str(out),
                    "run_eps_under_profiler": r["eps"],
                }
                say(f"profile: {results['profile']['samples']:,} samples in {out}")

        if "latency" in cfg.phases:
            product_eps = report.median([r["eps"] for r in runs.get("product", [])])
            rate = cfg.latency_rate or (product_eps / 2 if product_eps else None)
            if rate is None:
                say("[yellow]latency skipped: no product throughput (set BENCH_LATENCY_RATE)[/]")
            else:
                from bench.latency import measure

                lat = base.model_copy(
                    update={
                        "topic_prefix": LATENCY_PREFIX,
                        "app_id": f"bench-latency-{tag}",
                        "redis_url": cfg.redis_db(3),
                        "web_port": procs.free_port(),
                    }
                )
                say(f"latency: {rate:,.0f} events/s for {cfg.latency_seconds:.0f} s")
                r = attempt(
                    "latency",
                    lambda: asyncio.run(measure(cfg, lat, wl, rate, workdir, scratch)),
                )
                if r:
                    results["latency"] = r
    except KeyboardInterrupt:
        interrupted = True
        results["errors"].append({"phase": "all", "error": "interrupted"})
        console.print("[yellow]bench: interrupted, stopping everything[/]")
    except Exception as exc:  # noqa: BLE001 - reported below, after cleaning up
        results["errors"].append({"phase": "setup", "error": str(exc)})
        (workdir / "error-setup.txt").write_text(traceback.format_exc())
        console.print(f"[red]bench: {exc}[/]")
    finally:
        procs.stop_all()
        with contextlib.suppress(Exception):
            stack_down(base, echo=say)
        if not cfg.keep_stack:
            shutil.rmtree(cfg.stack_dir, ignore_errors=True)

    results["loadavg_end"] = os.getloadavg()
    results["summary"] = report.summarize(results)
    results["duration_s"] = time.monotonic() - began
    report.write(results, RESULTS_DIR / "latest.json")
    report.write(results, workdir / "results.json")
    line = report.show(results, console)
    if results["errors"]:
        console.print(f"[red]errors:[/] {results['errors']}")
    console.print(f"report: {RESULTS_DIR / 'latest.json'}  logs: {workdir}")
    print(line, flush=True)
    if interrupted:
        return 130
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
