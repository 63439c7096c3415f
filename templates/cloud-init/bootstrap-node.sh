#!/usr/bin/env bash
# bootstrap-node.sh: install and start flotilla-agent on a Debian or Ubuntu
# machine so that it joins its fleet. cloud-init runs it from the user-data
# that flotilla_cluster renders (cloud_init_server, cloud_init_client); the
# acceptance lab runs the same file with FLOTILLA_FOREGROUND=1. Safe to run
# again: it installs only what is missing and rewrites the same unit.
#
# Settings come from $FLOTILLA_CONFIG_DIR/env (written by cloud-init) when it
# exists; a variable already set in the environment wins over the file.
#
#   FLOTILLA_ROLE              server or client (required)
#   FLOTILLA_RETRY_JOIN        server addresses, space-separated (required for clients)
#   FLOTILLA_BOOTSTRAP_EXPECT  servers: bootstrap once this many servers joined
#                              (default: the number of FLOTILLA_RETRY_JOIN addresses, at least 1)
#   FLOTILLA_CLUSTER_POD_CIDR  servers: range split into one pod range per node (default 10.244.0.0/16)
#   FLOTILLA_SERVICE_CIDR      servers: range service addresses are given from (default 10.96.0.0/16)
#   FLOTILLA_API_PORT          port of the HTTPS API on the advertise address (default 7400)
#   FLOTILLA_AGENT_URL         https URL of flotilla-agent, downloaded if FLOTILLA_AGENT_BIN is
#                              missing or does not match FLOTILLA_AGENT_SHA256
#   FLOTILLA_AGENT_SHA256      its SHA-256 (hex), required with the URL; checked before install
#   FLOTILLA_NODE_NAME         default: the short host name
#   FLOTILLA_ADVERTISE_ADDR    default: the IPv4 address of the default route's interface
#   FLOTILLA_CONFIG_DIR        default /etc/flotilla: ca.pem, ca-key.pem (servers), gossip.key,
#                              join.token, api-token.sha256 (the API token's hash), env
#   FLOTILLA_DATA_DIR          default /var/lib/flotilla
#   FLOTILLA_AGENT_BIN         default /usr/local/bin/flotilla-agent
#   FLOTILLA_LABELS            node labels, space-separated key=value (e.g. "zone=eu-1a disk=ssd"):
#                              what node_selector and anti_affinity match; "zone" spreads replicas
#   FLOTILLA_EXTRA_ARGS        more agent flags, split on white space
#   FLOTILLA_FOREGROUND        1: exec the agent in the foreground instead of
#                              installing and starting a systemd unit
#   FLOTILLA_SKIP_INSTALL      1: do not install missing packages (tests, prepared images)
set -euo pipefail

log() { echo "flotilla-bootstrap: $*" >&2; }
die() {
  log "error: $*"
  exit 1
}

settings=(FLOTILLA_ROLE FLOTILLA_RETRY_JOIN FLOTILLA_BOOTSTRAP_EXPECT FLOTILLA_CLUSTER_POD_CIDR
  FLOTILLA_SERVICE_CIDR FLOTILLA_API_PORT FLOTILLA_AGENT_URL FLOTILLA_AGENT_SHA256 FLOTILLA_NODE_NAME FLOTILLA_ADVERTISE_ADDR
  FLOTILLA_DATA_DIR FLOTILLA_AGENT_BIN FLOTILLA_LABELS FLOTILLA_EXTRA_ARGS FLOTILLA_FOREGROUND FLOTILLA_SKIP_INSTALL)

FLOTILLA_CONFIG_DIR=${FLOTILLA_CONFIG_DIR:-/etc/flotilla}
env_file=$FLOTILLA_CONFIG_DIR/env
if [ -f "$env_file" ]; then
  # Remember what the caller set, read the file, then put the caller's
  # values back: the environment overrides the file.
  declare -A from_env=()
  for v in "${settings[@]}"; do
    if [ -n "${!v+set}" ]; then from_env[$v]=${!v}; fi
  done
  log "reading $env_file"
  # shellcheck disable=SC1090
  . "$env_file"
  for v in "${!from_env[@]}"; do printf -v "$v" '%s' "${from_env[$v]}"; done
fi

role=${FLOTILLA_ROLE:-}
retry_join=${FLOTILLA_RETRY_JOIN:-}
read -r -a join_addrs <<<"$retry_join" || true
pod_cidr=${FLOTILLA_CLUSTER_POD_CIDR:-10.244.0.0/16}
export FLOTILLA_SERVICE_CIDR=${FLOTILLA_SERVICE_CIDR:-10.96.0.0/16}
api_port=${FLOTILLA_API_PORT:-7400}
agent_url=${FLOTILLA_AGENT_URL:-}
agent_sha256=${FLOTILLA_AGENT_SHA256:-}
agent_sha256=${agent_sha256,,}
data_dir=${FLOTILLA_DATA_DIR:-/var/lib/flotilla}
agent_bin=${FLOTILLA_AGENT_BIN:-/usr/local/bin/flotilla-agent}
read -r -a extra_args <<<"${FLOTILLA_EXTRA_ARGS:-}" || true
foreground=${FLOTILLA_FOREGROUND:-0}
conf=$FLOTILLA_CONFIG_DIR

case "$role" in
server) expect=${FLOTILLA_BOOTSTRAP_EXPECT:-${#join_addrs[@]}} ;;
client) [ "${#join_addrs[@]}" -gt 0 ] || die "FLOTILLA_RETRY_JOIN is empty: a client needs the servers' addresses" ;;
*) die "FLOTILLA_ROLE is '$role'; set it to server or client (in $env_file or the environment)" ;;
esac
if [ "$role" = server ]; then
  [ "$expect" -ge 1 ] 2>/dev/null || expect=1
fi
case "$api_port" in
'' | *[!0-9]*) die "FLOTILLA_API_PORT '$api_port' is not a port number" ;;
esac
# The agent runs as root with the cluster's secrets: download only over
# https, and run nothing that does not match the configured checksum.
case "$agent_url" in
'' | https://*) ;;
*) die "FLOTILLA_AGENT_URL '$agent_url' is not an https URL" ;;
esac
[ -z "$agent_url" ] || [ -n "$agent_sha256" ] || die "FLOTILLA_AGENT_URL is set but FLOTILLA_AGENT_SHA256 is empty; refusing to download a binary that cannot be checked (set agent_sha256 on flotilla_cluster)"
[ -z "$agent_sha256" ] || [[ "$agent_sha256" =~ ^[0-9a-f]{64}$ ]] || die "FLOTILLA_AGENT_SHA256 '$agent_sha256' is not a SHA-256 (64 hex digits)"

# install_packages installs, with apt-get, what the agent needs and the
# machine lacks: a cloud image has some of it, a minimal one none.
install_packages() {
  local need=()
  command -v containerd >/dev/null 2>&1 || need+=(containerd)
  command -v runc >/dev/null 2>&1 || need+=(runc)
  { [ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ]; } || need+=(containernetworking-plugins)
  command -v iptables >/dev/null 2>&1 || need+=(iptables)
  command -v ip >/dev/null 2>&1 || need+=(iproute2)
  [ -x /usr/sbin/nginx ] || need+=(nginx-light) # the agent's ingress proxy
  if [ -n "$agent_url" ] && ! command -v curl >/dev/null 2>&1; then
    need+=(curl ca-certificates)
  fi
  if [ "${#need[@]}" -eq 0 ]; then
    log "packages: nothing to install"
    return
  fi
  command -v apt-get >/dev/null 2>&1 || die "missing ${need[*]} and there is no apt-get to install them; use a Debian or Ubuntu image or install them first"
  log "packages: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # On first boot unattended-upgrades may hold the dpkg lock for a while.
  local apt=(apt-get -o DPkg::Lock::Timeout=600 -o Acquire::Retries=5)
  "${apt[@]}" update -qq
  # Packages start no service (nginx's would take port 80).
  local p=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then p=/usr/sbin/policy-rc.d; printf '#!/bin/sh\nexit 101\n' >$p; chmod 755 $p; fi
  "${apt[@]}" install -y -qq --no-install-recommends "${need[@]}" || { rm -f $p; return 1; }
  rm -f $p
  systemctl disable --now nginx >/dev/null 2>&1 || true
}

# default_addr prints the IPv4 address of the interface the default route uses.
default_addr() {
  local dev
  dev=$(ip -4 route show default | awk '{for (i = 1; i < NF; i++) if ($i == "dev") { print $(i + 1); exit }}')
  [ -n "$dev" ] || return 1
  ip -4 -o addr show dev "$dev" scope global | awk '{split($4, a, "/"); print a[1]; exit}'
}

# sha256_of prints a file's SHA-256 (from stdin: no file name escaping).
sha256_of() {
  local sum
  sum=$(sha256sum <"$1") || return 1
  printf '%s' "${sum%% *}"
}

# systemd_quote quotes one ExecStart argument for systemd.
systemd_quote() {
  local s=$1
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//%/%%}
  s=${s//\$/\$\$}
  printf '"%s"' "$s"
}

if [ "${FLOTILLA_SKIP_INSTALL:-0}" = 1 ]; then
  log "packages: skipped (FLOTILLA_SKIP_INSTALL=1)"
else
  install_packages
fi

download=0
if [ ! -x "$agent_bin" ]; then
  [ -n "$agent_url" ] || die "$agent_bin does not exist and FLOTILLA_AGENT_URL is empty: bake flotilla-agent into the image or set agent_url and agent_sha256 on flotilla_cluster"
  download=1
elif [ -n "$agent_sha256" ]; then
  have=$(sha256_of "$agent_bin") || die "cannot read $agent_bin"
  if [ "$have" != "$agent_sha256" ]; then
    [ -n "$agent_url" ] || die "$agent_bin has SHA-256 $have, not FLOTILLA_AGENT_SHA256 $agent_sha256, and FLOTILLA_AGENT_URL is empty"
    log "$agent_bin has SHA-256 $have, not $agent_sha256 (another release?); downloading it again"
    download=1
  fi
fi
if [ "$download" = 1 ]; then
  log "downloading $agent_url"
  mkdir -p "$(dirname "$agent_bin")"
  # mktemp's mode 0600: nothing can run it before the checksum matched.
  tmp=$(mktemp "$agent_bin.XXXXXX")
  curl --fail --silent --show-error --location --proto =https --proto-redir =https \
    --retry 10 --retry-delay 3 --retry-connrefused --output "$tmp" "$agent_url" || {
    rm -f "$tmp"
    die "download of $agent_url failed"
  }
  got=$(sha256_of "$tmp") || got="(unreadable)"
  if [ "$got" != "$agent_sha256" ]; then
    rm -f "$tmp"
    die "checksum mismatch for $agent_url: expected $agent_sha256, got $got; the binary was not installed (check agent_sha256 on flotilla_cluster)"
  fi
  chmod 0755 "$tmp"
  mv -f "$tmp" "$agent_bin"
  log "installed $agent_bin (SHA-256 $got)"
fi

node_name=${FLOTILLA_NODE_NAME:-}
[ -n "$node_name" ] || node_name=$(hostname -s 2>/dev/null || hostname)
advertise=${FLOTILLA_ADVERTISE_ADDR:-}
if [ -z "$advertise" ]; then
  advertise=$(default_addr) || true
  [ -n "$advertise" ] || die "no IPv4 address on the default route's interface; set FLOTILLA_ADVERTISE_ADDR"
fi

required=(ca.pem gossip.key join.token api-token.sha256)
[ "$role" = server ] && required+=(ca-key.pem)
for f in "${required[@]}"; do
  [ -s "$conf/$f" ] || die "$conf/$f is missing or empty; it comes from flotilla_cluster's cloud-init user-data"
done
mkdir -p "$data_dir"
chmod 0700 "$data_dir"

args=(--node-name "$node_name" --data-dir "$data_dir" --advertise-addr "$advertise"
  --api-addr "$advertise:$api_port" --ca-file "$conf/ca.pem")
[ "$role" = server ] && args+=(--ca-key-file "$conf/ca-key.pem")
args+=(--gossip-key-file "$conf/gossip.key" --join-token-file "$conf/join.token"
  --api-token-hash-file "$conf/api-token.sha256")
for a in "${join_addrs[@]}"; do args+=(--retry-join "$a"); done
read -r -a labels <<<"${FLOTILLA_LABELS:-}" || true
for l in "${labels[@]}"; do
  [[ $l == *=* ]] || die "FLOTILLA_LABELS: \"$l\" is not key=value"
  args+=(--label "$l")
done
[ "$role" = server ] && args+=(--server --bootstrap-expect "$expect" --cluster-pod-cidr "$pod_cidr" --service-cidr "$FLOTILLA_SERVICE_CIDR")
args+=("${extra_args[@]}")

log "$role $node_name at $advertise: $agent_bin ${args[*]}"
if [ "$foreground" = 1 ]; then
  exec "$agent_bin" "${args[@]}"
fi

command -v systemctl >/dev/null 2>&1 || die "systemctl not found; run with FLOTILLA_FOREGROUND=1 under another supervisor"
unit=/etc/systemd/system/flotilla-agent.service
exec_start=$(systemd_quote "$agent_bin")
for a in "${args[@]}"; do exec_start+=" $(systemd_quote "$a")"; done
new_unit=$(
  cat <<UNIT
# Written by bootstrap-node.sh (flotilla_cluster cloud-init).
[Unit]
Description=Flotilla agent
Documentation=https://github.com/flotilla-io/flotilla
Wants=network-online.target
After=network-online.target

[Service]
Environment=FLOTILLA_SERVICE_CIDR=$FLOTILLA_SERVICE_CIDR
ExecStart=$exec_start
Restart=always
RestartSec=5
# The agent creates cgroups for pods and supervises containerd; stopping or
# restarting it must not kill the pods (it adopts them when it starts again).
Delegate=yes
KillMode=process
LimitNOFILE=1048576
TasksMax=infinity

[Install]
WantedBy=multi-user.target
UNIT
)
if [ -f "$unit" ] && [ "$(cat "$unit")" = "$new_unit" ]; then
  log "systemd: $unit is up to date"
  changed=$download # a new binary needs a restart too
else
  log "systemd: writing $unit"
  printf '%s\n' "$new_unit" >"$unit"
  changed=1
fi
systemctl daemon-reload
if [ "$changed" = 1 ] && systemctl is-active --quiet flotilla-agent.service; then
  log "systemd: restarting flotilla-agent.service with the new unit or binary"
  systemctl restart flotilla-agent.service
fi
systemctl enable --now flotilla-agent.service
log "flotilla-agent.service is $(systemctl is-active flotilla-agent.service || true); logs: journalctl -u flotilla-agent"
