#!/usr/bin/env bash
# Starts a single-node dev agent in the background, with its pid and log in
# .flotilla/, and waits until its API answers. A running agent is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_DIR=${DATA_DIR:-/var/lib/flotilla}
RUN=.flotilla
mkdir -p "$RUN"
addr=http://127.0.0.1:7400

answers() {
  [ -s "$DATA_DIR/token" ] && curl -sf -m 2 -H "Authorization: Bearer $(cat "$DATA_DIR/token")" "$addr/v1/status" >/dev/null
}

if [ -s "$RUN/agent.pid" ] && kill -0 "$(cat "$RUN/agent.pid")" 2>/dev/null && answers; then
  echo "agent already running (pid $(cat "$RUN/agent.pid")) at $addr"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "the agent needs root (network namespaces, bridges, iptables, cgroups): run as root or with sudo" >&2
  exit 1
fi

# A FLOTILLA_TOKEN exported from an earlier quickstart must not replace the
# generated token the scripts read from $DATA_DIR/token.
setsid env -u FLOTILLA_TOKEN bin/flotilla-agent --dev --data-dir "$DATA_DIR" --image-dir bin/images >"$RUN/agent.log" 2>&1 < /dev/null &
echo $! >"$RUN/agent.pid"
for _ in $(seq 1 120); do
  if answers; then
    echo "agent running (pid $(cat "$RUN/agent.pid")) at $addr; log: $RUN/agent.log; token: $DATA_DIR/token"
    exit 0
  fi
  if ! kill -0 "$(cat "$RUN/agent.pid")" 2>/dev/null; then
    echo "the agent exited; last lines of $RUN/agent.log:" >&2
    tail -20 "$RUN/agent.log" >&2
    exit 1
  fi
  sleep 0.5
done
echo "the agent did not answer within 60s; see $RUN/agent.log" >&2
exit 1
