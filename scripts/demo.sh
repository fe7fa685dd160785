#!/usr/bin/env bash
# demo.sh — the whole system on one machine in about ten seconds:
#   build the static binary, start a software TPM, the registrar, the verifier and an agent whose
#   machine "runs" a few programs (an IMA log, with PCR 10 extended as the kernel would), build a runtime
#   policy from that log, add the agent with it and a tpm_policy, show it attested, run a program the
#   policy does not know, show the verifier catch it naming the file, and clean everything up.
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
ima_ml_path = "$DIR/ima/ascii_runtime_measurements"
EOC
export KEYLIME_CONFIG="$DIR/keylime.toml"
K="$ROOT/keylime"
UUID=d432fbb3-d2f1-4a97-9ef7-75bd81c00000

step "software TPM (swtpm) with EK certificates from a local CA"
"$ROOT/scripts/swtpm.sh" start "$DIR/tpm"
# The tenant's EK cert store: the local CA's root and the intermediate that signed the EK certificates.
mkdir -p "$DIR/certstore"
cp "$DIR/tpm/ca/swtpm-localca-rootca-cert.pem" "$DIR/tpm/ca/issuercert.pem" "$DIR/certstore/"

# The kernel's IMA, played by the demo: each "executed" file gets an ima-ng line in the ASCII log and
# PCR 10 is extended (sha1 and sha256 banks) with the hash of the entry's template data.
IMA_LOG="$DIR/ima/ascii_runtime_measurements"
mkdir -p "$DIR/ima" && : >"$IMA_LOG"
le32() { printf "\\x$(printf %02x $(($1 & 255)))\\x$(printf %02x $((($1 >> 8) & 255)))\\x00\\x00"; }
ima_measure() { # NAME [CONTENT_FILE]
	local name=$1 file=${2:-$1} digest tmpl th
	digest=$(sha256sum "$file" | cut -d' ' -f1)
	tmpl="$DIR/ima/template"
	{ le32 40; printf 'sha256:\0'; printf "$(sed 's/../\\x&/g' <<<"$digest")"; le32 $((${#name} + 1)); printf '%s\0' "$name"; } >"$tmpl"
	th=$(sha1sum "$tmpl" | cut -d' ' -f1)
	echo "10 $th ima-ng sha256:$digest $name" >>"$IMA_LOG"
	tpm2_pcrextend -T "swtpm:path=$DIR/tpm/swtpm.sock" "10:sha1=$th,sha256=$(sha256sum "$tmpl" | cut -d' ' -f1)"
}

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

step "the machine boots and runs programs: IMA logs each one and extends PCR 10"
head -c 256 /dev/zero >"$DIR/ima/pcrs0-7"   # boot_aggregate: H(PCR 0 || … || PCR 7), all zero on swtpm
ima_measure boot_aggregate "$DIR/ima/pcrs0-7"
for f in /usr/bin/env /usr/bin/bash /usr/bin/ls /usr/bin/cat; do ima_measure "$f"; done
cat "$IMA_LOG"

step "runtime policy from the known-good log (keylime policy create runtime)"
"$K" policy create runtime --ima-log "$IMA_LOG" -o "$DIR/runtime-policy.json"
"$K" policy evaluate runtime --ima-log "$IMA_LOG" --runtime-policy "$DIR/runtime-policy.json"

step "tenant add: EK certificate checked against the cert store, identity quote checked, policies on PCR 15 and IMA"
PCR15=$(tpm2_pcrread -T "swtpm:path=$DIR/tpm/swtpm.sock" sha256:15 | awk '/^ *15 *:/{print tolower($NF)}' | sed 's/^0x//')
"$K" tenant add -u "$UUID" --tpm_policy "{\"15\": [\"$PCR15\"]}" --runtime-policy "$DIR/runtime-policy.json" --wait 20s
sleep 2.5
"$K" tenant status -u "$UUID"

step "someone runs a program the policy does not know"
printf '#!/bin/sh\necho mining\n' >"$DIR/cryptominer"
ima_measure /tmp/cryptominer "$DIR/cryptominer"
sleep 2.5
step "the verifier caught it, naming the file"
"$K" tenant status -u "$UUID" || true
echo
echo "demo: done. Logs: registrar, verifier and agent logs were in $DIR (KEEP=1 keeps them)."
