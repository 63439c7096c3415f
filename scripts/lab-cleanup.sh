#!/usr/bin/env bash
# Removes what a hard-killed test run left behind (a killed `go test` cannot
# run its cleanups): lab and test agents with their containerds and shims,
# pod and node network namespaces, lab bridges and their iptables rules.
# Only touches names the tests use: flab*, flta*, /run/flotilla.
set -uo pipefail
for ns in $(ip netns list | awk '{print $1}' | grep -E '^(flab|flta)'); do
  for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
done
pkill -9 -f 'flotilla-agent .*--(data-dir|node-name) /?tmp|flotilla-acc-' 2>/dev/null
pkill -9 -f 'containerd --config .*/tmp/' 2>/dev/null
# Test agents' ingress proxies (nginx in a process group of its own).
for pid in $(pgrep -f 'nginx: master process .*-p /tmp/'); do
  kill -9 -- "-$(ps -o pgid= "$pid" | tr -d ' ')" 2>/dev/null
done
pkill -9 -f 'containerd-shim-runc-v2 .*-address /run/flotilla/' 2>/dev/null
sleep 1
grep -E ' /(tmp|run/flotilla|run/netns/fl)' /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null
for ns in $(ip netns list | awk '{print $1}' | grep -E '^(flab|flta)'); do ip netns del "$ns"; done
for l in $(ip -o link | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -E '^(flab|flta)'); do ip link del "$l" 2>/dev/null; done 2>/dev/null
iptables -S FORWARD | grep -E 'flotilla-lab|FLTA' | sed 's/^-A/-D/' | while read -r rule; do eval iptables "$rule"; done
# Test agents' chains: the pod network's (filter, nat) and the services'
# (FLTA<n>-SVC-*, filter and nat). Their routes went with their bridges.
for t in filter nat; do
  for c in $(iptables -t $t -S | awk '/^-N FLTA/{print $2}'); do iptables -t $t -F "$c"; done
  iptables -t $t -S | grep -E '^-A .* -j FLTA' | sed 's/^-A/-D/' | while read -r rule; do eval iptables -t $t "$rule"; done
  for c in $(iptables -t $t -S | awk '/^-N FLTA/{print $2}'); do iptables -t $t -X "$c"; done
done
# Socket and state dirs of agents whose containerd is gone.
for d in /run/flotilla/*/; do
  [ -d "$d" ] || continue
  pgrep -f "containerd --config .*${d%/}" >/dev/null || pgrep -f "address ${d%/}" >/dev/null || rm -rf "$d"
done
rmdir /run/flotilla 2>/dev/null
echo "lab-cleanup: done; left: $(ip netns list | wc -l) netns, $(ip -o link | grep -cE 'flab|flta') links"
