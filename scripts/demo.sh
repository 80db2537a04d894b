#!/usr/bin/env bash
# `make demo`: start the simulated plant, run edgeopt against it, and show how
# to query it. Runs until Ctrl-C (or for DEMO_SECONDS, for scripted runs).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=.venv/bin
STATE=${DEMO_STATE:-demo-state}
PORT=${DEMO_BASE_PORT:-15020}
SOCK=$STATE/edgeopt.sock
CONFIG=config/demo.yaml
mkdir -p "$STATE"

# Keep the logs of the last few runs: edgeopt.log is this run, edgeopt.log.1 the one before.
rotate() {
  local log=$1 i
  for i in 4 3 2 1; do
    if [ -f "$log.$i" ]; then mv -f "$log.$i" "$log.$((i + 1))"; fi
  done
  if [ -f "$log" ]; then mv -f "$log" "$log.1"; fi
}
rotate "$STATE/simulator.log"
rotate "$STATE/edgeopt.log"

pids=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "demo stopped; logs are in $STATE/"
}
trap cleanup EXIT INT TERM

if [ "$PORT" != 15020 ] || [ "$STATE" != demo-state ]; then
  # Somewhere else than the committed demo config points: generate a matching one.
  CONFIG=$STATE/edgeopt.yaml
  $BIN/python -m simulators config --plant demo --host 127.0.0.1 --base-port "$PORT" \
    --state-dir "$STATE" --socket "$SOCK" -o "$CONFIG"
fi

echo "== starting the simulated plant (4 Modbus TCP devices on 127.0.0.1:$PORT..)"
$BIN/python -m simulators serve --plant demo --host 127.0.0.1 --base-port "$PORT" \
  >"$STATE/simulator.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  grep -q '^ready' "$STATE/simulator.log" 2>/dev/null && break
  if ! kill -0 "${pids[0]}" 2>/dev/null; then cat "$STATE/simulator.log"; exit 1; fi
  sleep 0.1
done

echo "== starting edgeopt: $BIN/edgeopt run --config $CONFIG"
$BIN/edgeopt run --config "$CONFIG" >"$STATE/edgeopt.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  $BIN/edgeoptctl --socket "$SOCK" status >/dev/null 2>&1 && break
  if ! kill -0 "${pids[1]}" 2>/dev/null; then cat "$STATE/edgeopt.log"; exit 1; fi
  sleep 0.1
done
sleep 3
grep -m1 'read plan' "$STATE/edgeopt.log" || true

show() {
  echo
  echo "\$ edgeoptctl --socket $SOCK $*"
  $BIN/edgeoptctl --socket "$SOCK" "$@" || true
}
show status
show devices
show tags --device meter1
show query meter1/voltage_l1 --since -1m --limit 5

cat <<MSG

edgeopt is polling the simulated plant. From another terminal, try:
  $BIN/edgeoptctl --socket $SOCK status
  $BIN/edgeoptctl --socket $SOCK tags --device inverter1
  $BIN/edgeoptctl --socket $SOCK query plc1/tank1_temp --since -10m --csv
  $BIN/edgeoptctl --socket $SOCK events --follow
Logs: $STATE/edgeopt.log and $STATE/simulator.log (earlier runs: .1 to .5). Press Ctrl-C to stop.
MSG

if [ -n "${DEMO_SECONDS:-}" ]; then
  sleep "$DEMO_SECONDS"
else
  wait "${pids[1]}"
fi
