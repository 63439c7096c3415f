#!/usr/bin/env bash
# Installs what Flotilla needs on a Debian/Ubuntu machine, only what is
# missing: containerd, runc, CNI plugins, iptables, iproute2, Debian's
# docker-registry (tests serve their images from it on loopback),
# busybox-static (tests run a shell in containers), nginx-light (the ingress
# data plane every agent runs), wrk, dnsperf and dnsmasq
# for the benchmarks, then the Go modules. Safe to run again.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have containerd || need+=(containerd)
have runc || need+=(runc)
[ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] || need+=(containernetworking-plugins)
have iptables || need+=(iptables)
have ip || need+=(iproute2)
have nsenter || need+=(util-linux)
have docker-registry || need+=(docker-registry)
have curl || need+=(curl)
have ping || need+=(iputils-ping)
have cloud-init || need+=(cloud-init) # tests check the rendered user-data with `cloud-init schema`
have shellcheck || need+=(shellcheck) # tests lint bootstrap-node.sh
# make bench's services part compares with these (HTTP load, DNS load, a
# reference DNS server); small, and Debian's own.
have wrk || need+=(wrk)
have dnsperf || need+=(dnsperf)
have conntrack || need+=(conntrack) # the services bench starts each run from empty connection tracking
have dnsmasq || need+=(dnsmasq-base)
# Every agent's ingress is an nginx it runs itself (agent/ingress); the
# package's own service must not start (it would take port 80).
have nginx || need+=(nginx-light)
# Sandbox tests build an image with a shell from it; Debian's plain busybox is dynamically linked.
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed' || need+=(busybox-static)

if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing ${need[*]}; run as root (or with sudo) to install them" >&2
    exit 1
  fi
  echo "install-deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # No service a package brings may start: a policy-rc.d that refuses, for
  # the time of the install, unless the machine has one already.
  policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  [ -n "$policy" ] && rm -f "$policy"
  # A system nginx that started all the same (an init that ignores
  # policy-rc.d) is stopped: the agent runs its own.
  if [ -s /run/nginx.pid ] && grep -q nginx "/proc/$(cat /run/nginx.pid)/cmdline" 2>/dev/null; then
    kill -QUIT "$(cat /run/nginx.pid)" || true
  fi
fi

have terraform || echo "install-deps: terraform is not on PATH; install Terraform >= 1.5 to apply the examples and run acceptance tests" >&2
have go || { echo "install-deps: Go is not on PATH; install Go $(sed -n 's/^go //p' go.mod)" >&2; exit 1; }
go mod download
