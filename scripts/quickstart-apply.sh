#!/usr/bin/env bash
# Applies examples/quickstart against the local dev agent. Terraform finds the
# provider in the local mirror `make install` filled, whatever CLI config the
# machine has: this run uses a CLI config of its own that points there.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_DIR=${DATA_DIR:-/var/lib/flotilla}
RUN=$PWD/.flotilla
mkdir -p "$RUN"
cat >"$RUN/terraformrc" <<RC
provider_installation {
  filesystem_mirror {
    path    = "$HOME/.terraform.d/plugins"
    include = ["registry.terraform.io/flotilla-io/flotilla"]
  }
  direct {
    exclude = ["registry.terraform.io/flotilla-io/flotilla"]
  }
}
RC
export TF_CLI_CONFIG_FILE=$RUN/terraformrc CHECKPOINT_DISABLE=1
FLOTILLA_TOKEN=$(cat "$DATA_DIR/token")
export FLOTILLA_ADDR=http://127.0.0.1:7400 FLOTILLA_TOKEN
cd examples/quickstart
# The provider binary changes with every build; -upgrade re-records its checksum.
terraform init -input=false -upgrade >/dev/null
terraform apply -input=false -auto-approve
url=$(terraform output -json urls | sed -n 's/^\["\([^"]*\)".*/\1/p')
echo
echo "The demo app answers at: $(terraform output -json urls)"
[ -n "$url" ] && echo "curl $url → $(curl -sf -m 5 "$url")"
# answer URL: the body of the first answer at URL within 10 s (the service
# rules and the ingress proxy follow an apply within a second or so).
answer() {
  local reply=""
  for _ in $(seq 10); do
    reply=$(curl -sf -m 2 "$1") && break
    sleep 1
  done
  echo "${reply:-no answer (see .flotilla/agent.log)}"
}
svc=$(terraform output -raw service_url 2>/dev/null || true)
if [ -n "$svc" ]; then
  echo "The service in front of them answers at: $svc"
  echo "curl $svc → $(answer "$svc")"
fi
ing=$(terraform output -raw ingress_url 2>/dev/null || true)
if [ -n "$ing" ]; then
  echo "And through the ingress, from outside: $ing"
  echo "curl $ing → $(answer "$ing")"
fi
echo
echo "The agent keeps running. Try: cd examples/quickstart && FLOTILLA_TOKEN=\$(cat $DATA_DIR/token) terraform apply -var replicas=5"
echo "Stop it and remove everything with: make down"
