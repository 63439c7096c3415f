#!/usr/bin/env bash
# Stops the dev agent and removes all it made: containers, pod networks,
# bridge, iptables chains, its containerd and its data. Safe to run twice.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_DIR=${DATA_DIR:-/var/lib/flotilla}
RUN=.flotilla

if [ -s "$RUN/agent.pid" ]; then
  pid=$(cat "$RUN/agent.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  fi
  rm -f "$RUN/agent.pid"
fi
if [ -x bin/flotilla-agent ]; then
  bin/flotilla-agent cleanup --purge --data-dir "$DATA_DIR"
fi
rm -rf examples/quickstart/.terraform examples/quickstart/terraform.tfstate* examples/quickstart/.terraform.lock.hcl
echo "agent stopped; its containers, networks and data are removed"
