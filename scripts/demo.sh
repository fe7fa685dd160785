#!/usr/bin/env bash
# demo.sh — the whole system on one machine in about ten seconds:
#   build the static binary, start a software TPM, the registrar, the verifier and an agent, add the
#   agent with a tpm_policy, show it attested, change a PCR behind the agent's back, show the verifier
#   catch it with a readable reason, and clean everything up.
# Usage: scripts/demo.sh            (KEEP=1 keeps the work directory; DEMO_DIR picks it)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
die() { echo "demo: $*" >&2; exit 1; }

if ! command -v swtpm >/dev/null || ! command -v swtpm_setup >/dev/null || ! command -v tpm2_pcrextend >/dev/null; then
	step "installing swtpm and tpm2-tools (Debian packages)"
	if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO=sudo; fi
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq swtpm swtpm-tools tpm2-tools >/dev/null
fi
command -v go >/dev/null || export PATH=$PATH:/usr/local/go/bin

step "building the static binary"
CGO_ENABLED=0 go build -o "$ROOT/keylime" .
ls -l "$ROOT/keylime" | awk '{print "keylime: " $5 " bytes"}'

DIR=${DEMO_DIR:-$(mktemp -d /tmp/keylime-demo.XXXXXX)}
mkdir -p "$DIR"
PIDS=()
cleanup() {
	for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	"$ROOT/scripts/swtpm.sh" stop "$DIR/tpm" >/dev/null 2>&1 || true
	if [ -z "${KEEP:-}" ]; then rm -rf "$DIR"; else echo "demo: kept $DIR"; fi
}
trap cleanup EXIT

# Ports: the defaults shifted by 10000 so the demo does not collide with a real installation.
REG_PORT=18890 REG_TLS=18891 VER_PORT=18881 AGENT_PORT=19002
cat >"$DIR/keylime.toml" <<EOC
[registrar]
keylime_dir = "$DIR"
port = $REG_PORT
tls_port = $REG_TLS

[verifier]
keylime_dir = "$DIR"
port = $VER_PORT
quote_interval = "1s"
retry_interval = "1s"
max_retries = 3

[tenant]
keylime_dir = "$DIR"
verifier_port = $VER_PORT
registrar_port = $REG_TLS
tpm_cert_store = "$DIR/certstore"

[agent]
keylime_dir = "$DIR/agent"
uuid = "d432fbb3-d2f1-4a97-9ef7-75bd81c00000"
port = $AGENT_PORT
contact_port = $AGENT_PORT
registrar_port = $REG_PORT
trusted_client_ca = "$DIR/cv_ca/cacert.crt"
tpm = "swtpm:$DIR/tpm/swtpm.sock"
EOC
export KEYLIME_CONFIG="$DIR/keylime.toml"
K="$ROOT/keylime"
UUID=d432fbb3-d2f1-4a97-9ef7-75bd81c00000

step "software TPM (swtpm) with EK certificates from a local CA"
"$ROOT/scripts/swtpm.sh" start "$DIR/tpm"
# The tenant's EK cert store: the local CA's root and the intermediate that signed the EK certificates.
mkdir -p "$DIR/certstore"
cp "$DIR/tpm/ca/swtpm-localca-rootca-cert.pem" "$DIR/tpm/ca/issuercert.pem" "$DIR/certstore/"

wait_for() { # description, command…
	local what=$1; shift
	for _ in $(seq 100); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
	die "$what did not come up (logs in $DIR/*.log)"
}

step "registrar (creates the Keylime CA in $DIR/cv_ca on first start)"
"$K" registrar >"$DIR/registrar.log" 2>&1 & PIDS+=($!)
wait_for registrar curl -sf "http://127.0.0.1:$REG_PORT/version"

step "verifier"
"$K" verifier >"$DIR/verifier.log" 2>&1 & PIDS+=($!)
wait_for verifier curl -sf --cacert "$DIR/cv_ca/cacert.crt" "https://127.0.0.1:$VER_PORT/version"

step "agent on the swtpm: registers its EK, EK certificate and AK, answers the credential challenge"
mkdir -p "$DIR/agent"
"$K" agent >"$DIR/agent.log" 2>&1 & PIDS+=($!)
wait_for "agent registration" "$K" tenant regstatus -u "$UUID" --json
"$K" tenant regstatus -u "$UUID"

step "tenant add: EK certificate checked against the cert store, identity quote checked, policy on PCR 15"
PCR15=$(tpm2_pcrread -T "swtpm:path=$DIR/tpm/swtpm.sock" sha256:15 | awk '/^ *15 *:/{print tolower($NF)}' | sed 's/^0x//')
"$K" tenant add -u "$UUID" --tpm_policy "{\"15\": [\"$PCR15\"]}"
sleep 2.5
"$K" tenant status -u "$UUID"

step "something measures an unexpected value into PCR 15 behind the agent's back"
tpm2_pcrextend -T "swtpm:path=$DIR/tpm/swtpm.sock" "15:sha256=$(printf 'rootkit' | sha256sum | cut -d' ' -f1)"
sleep 2.5
step "the verifier caught it"
"$K" tenant status -u "$UUID" || true
echo
echo "demo: done. Logs: registrar, verifier and agent logs were in $DIR (KEEP=1 keeps them)."
