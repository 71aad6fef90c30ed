#!/usr/bin/env bash
# make demo: the local stack, the worker and a simulated company, with the KPIs live in the
# terminal. Ctrl-C stops everything this script started (and only that).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN=.venv/bin
STACK_DIR=${KPI_STACK_DIR:-.stack}
mkdir -p "$STACK_DIR"
WORKER_LOG="$STACK_DIR/worker.log"
SIM_LOG="$STACK_DIR/simulator.log"
# A simulated company that started two days ago, replayed at five simulated minutes per
# second (a new hour every 12 s) until it catches up with the wall clock after about ten
# minutes, then live: windows close and history fills in while you watch.
DEMO_START=${DEMO_START:-2d}
DEMO_SPEED=${DEMO_SPEED:-300}
DEMO_RATE=${DEMO_RATE:-1000}
# Ten times the activity of the default company, so even the current night-time hour
# has invoices being decided.
DEMO_SCALE=${DEMO_SCALE:-10}

pids=()
started_stack=0
cleanup() {
  trap - INT TERM HUP EXIT
  echo
  echo "demo: stopping the worker and the simulator"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "$started_stack" = 1 ]; then "$BIN/kpi" stack down || true; fi
  echo "demo: logs kept in $WORKER_LOG and $SIM_LOG"
}
trap cleanup INT TERM HUP EXIT

if "$BIN/kpi" stack status >/dev/null 2>&1; then
  echo "demo: using the running stack"
else
  "$BIN/kpi" stack up
  started_stack=1
fi

# Each run replays the simulated company from two days ago: it gets topics and a consumer
# group of its own (an earlier run's watermarks would make every replayed event late), and
# the KPI keys of an earlier run are removed from Redis.
RUN_ID=$(date +%s)
export KPI_TOPIC_PREFIX=${KPI_TOPIC_PREFIX:-demo-$RUN_ID.}
export KPI_APP_ID=${KPI_APP_ID:-demo-$RUN_ID}
"$BIN/python" - <<'PY'
import redis
from streams.config import Settings

client = redis.Redis.from_url(Settings().redis_url)
keys = list(client.scan_iter(match="kpi:*", count=1000))
if keys:
    client.delete(*keys)
    print(f"demo: removed {len(keys)} kpi:* keys of an earlier run from {Settings().redis_url}")
PY

echo "demo: starting the worker (log: $WORKER_LOG, topics $KPI_TOPIC_PREFIX*)"
"$BIN/kpi" worker >"$WORKER_LOG" 2>&1 &
pids+=($!)
port=${KPI_WEB_PORT:-6066}
for _ in $(seq 1 120); do
  if curl -fs "http://localhost:$port/health" >/dev/null 2>&1; then break; fi
  if ! kill -0 "${pids[0]}" 2>/dev/null; then echo "demo: the worker died; see $WORKER_LOG"; exit 1; fi
  sleep 0.5
done

PROM_PORT=${DEMO_PROMETHEUS_PORT:-9090}
if command -v prometheus >/dev/null 2>&1; then
  if curl -fs "http://localhost:$PROM_PORT/-/ready" >/dev/null 2>&1; then
    echo "demo: something already answers on :$PROM_PORT; not starting Prometheus"
  else
    # The committed config scrapes localhost:6066; follow KPI_WEB_PORT when it differs.
    mkdir -p "$STACK_DIR/prometheus"
    sed "s/localhost:6066/localhost:$port/" ops/prometheus/prometheus.yml \
      | sed "s#rules/\*.yml#$PWD/ops/prometheus/rules/*.yml#" >"$STACK_DIR/prometheus/prometheus.yml"
    echo "demo: starting Prometheus with the KPI alert rules on http://localhost:$PROM_PORT (log: $STACK_DIR/prometheus.log)"
    prometheus --config.file="$STACK_DIR/prometheus/prometheus.yml" \
      --storage.tsdb.path="$STACK_DIR/prometheus/data" \
      --web.listen-address="127.0.0.1:$PROM_PORT" >"$STACK_DIR/prometheus.log" 2>&1 &
    pids+=($!)
  fi
else
  echo "demo: Prometheus is not installed (apt-get install prometheus); skipping it"
fi

echo "demo: starting the simulator, seed 7, from $DEMO_START ago at ${DEMO_SPEED}x (log: $SIM_LOG)"
"$BIN/kpi" simulate --seed 7 --start "$DEMO_START" --speed "$DEMO_SPEED" --rate "$DEMO_RATE" \
  --scale "$DEMO_SCALE" \
  --out-of-order 0.02 --duplicates 0.01 --invalid 0.005 >"$SIM_LOG" 2>&1 &
pids+=($!)

cat <<INFO
demo: running. While it runs, try in another terminal:
  redis-cli -u ${KPI_REDIS_URL:-redis://localhost:6379/0} HGETALL kpi:invoice_processing_time:1h:all
  curl -s localhost:$port/metrics | grep ^backoffice_
  curl -s localhost:$port/kpis
  .venv/bin/kpi get dso --window 1d --history 5
  http://localhost:$PROM_PORT/alerts   (Prometheus: KPI targets as alert rules, if started)
Ctrl-C stops the demo.
INFO
sleep 3
"$BIN/kpi" watch
