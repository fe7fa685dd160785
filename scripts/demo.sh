#!/usr/bin/env bash
# demo.sh — the whole system on one machine in about ten seconds:
#   build the static binary, start a software TPM and replay a real UEFI boot into it (the OVMF event log
#   in testdata/vm-ovmf-ima-ng), start the registrar, the verifier and an agent that serves that boot log
#   and an IMA log of a few "executed" programs (PCR 10 extended as the kernel would, boot_aggregate over
#   the replayed PCRs 0-9), build a measured-boot reference state and a runtime policy from the logs, add
#   the agent with both and a tpm_policy, show it attested, run a program the policy does not know, show
#   the verifier catch it naming the file, and clean everything up.
# Usage: scripts/demo.sh
#   KEEP=1         keep the work directory          DEMO_DIR=dir   use dir as the work directory
#   KEYLIME_BIN=f  use the binary f instead of building ./keylime
#   DEMO_REGISTRAR_PORT, DEMO_REGISTRAR_TLS_PORT, DEMO_VERIFIER_PORT, DEMO_AGENT_PORT   other ports
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

if [ -n "${KEYLIME_BIN:-}" ]; then
	K=$KEYLIME_BIN
	step "using the binary $K (KEYLIME_BIN)"
	[ -x "$K" ] || die "KEYLIME_BIN=$K is not an executable"
else
	K="$ROOT/keylime"
	step "building the static binary"
	CGO_ENABLED=0 go build -o "$K" .
fi
ls -lL "$K" | awk '{print "keylime: " $5 " bytes"}'

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
REG_PORT=${DEMO_REGISTRAR_PORT:-18890} REG_TLS=${DEMO_REGISTRAR_TLS_PORT:-18891}
VER_PORT=${DEMO_VERIFIER_PORT:-18881} AGENT_PORT=${DEMO_AGENT_PORT:-19002}
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
measuredboot_ml_path = "$DIR/boot/binary_bios_measurements"
EOC
export KEYLIME_CONFIG="$DIR/keylime.toml"
UUID=d432fbb3-d2f1-4a97-9ef7-75bd81c00000

step "software TPM (swtpm) with EK certificates from a local CA"
"$ROOT/scripts/swtpm.sh" start "$DIR/tpm"
# The tenant's EK cert store: the local CA's root and the intermediate that signed the EK certificates.
mkdir -p "$DIR/certstore"
cp "$DIR/tpm/ca/swtpm-localca-rootca-cert.pem" "$DIR/tpm/ca/issuercert.pem" "$DIR/certstore/"
TCTI="swtpm:path=$DIR/tpm/swtpm.sock"
BOOT=testdata/vm-ovmf-ima-ng   # a real boot: OVMF, Secure Boot off, Debian kernel with IMA (meta.txt)
pcr_values() { # PCRS (comma list) — "bank pcr hex" lines read from the swtpm, sha1 and sha256
	tpm2_pcrread -T "$TCTI" "sha1:$1+sha256:$1" | awk '/^ *sha(1|256):/{bank=$1; sub(/:/, "", bank)} /0x/{print bank, $1, tolower(substr($NF, 3))}'
}

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
	tpm2_pcrextend -T "$TCTI" "10:sha1=$th,sha256=$(sha256sum "$tmpl" | cut -d' ' -f1)"
}

wait_for() { # description, command…
	local what=$1; shift
	for _ in $(seq 100); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
	die "$what did not come up (logs in $DIR/*.log)"
}

step "the machine boots: a real OVMF boot ($BOOT/binary_bios_measurements) replayed into the swtpm"
# The firmware, played by the demo: every measured event of the boot's UEFI event log is extended, in
# log order, into the swtpm's sha1 and sha256 banks (the banks scripts/swtpm.sh activates), and the agent
# serves a copy of the log. EV_NO_ACTION events are not measured (the Spec ID event, StartupLocality).
# A StartupLocality event says PCR 0 started at 00…0‖locality, which no extend from locality 0 can
# produce: such a log is refused.
mkdir -p "$DIR/boot"
cp "$ROOT/$BOOT/binary_bios_measurements" "$DIR/boot/"
tpm2_eventlog "$DIR/boot/binary_bios_measurements" >"$DIR/boot/eventlog.yaml" 2>"$DIR/boot/eventlog.err" || die "tpm2_eventlog: $(tail -n 3 "$DIR/boot/eventlog.err")"
# One "PCR:sha1=…,sha256=…" argument per measured event; "skip" per EV_NO_ACTION; "locality N".
awk '
function flush() {
	if (pcr == "") return
	if (type == "EV_NO_ACTION") print "skip"
	else print pcr ":sha1=" d["sha1"] ",sha256=" d["sha256"]
	pcr = ""; delete d
}
/^- EventNum:/ { flush() }
/^pcrs:/ { flush(); exit }
/^  PCRIndex:/ { pcr = $2 }
/^  EventType:/ { type = $2 }
/^  - AlgorithmId:/ { alg = $3 }
/^    Digest:/ { gsub(/"/, "", $2); d[alg] = $2 }
/^  Event: "537461727475704c6f63616c69747900/ { gsub(/"/, "", $2); print "locality 0x" substr($2, 33, 2) }
END { flush() }' "$DIR/boot/eventlog.yaml" >"$DIR/boot/extends"
if grep -q '^locality' "$DIR/boot/extends"; then
	die "the boot log has a StartupLocality event ($(grep '^locality' "$DIR/boot/extends")): PCR 0 cannot be reproduced on swtpm"
fi
mapfile -t EXTENDS < <(grep -v '^skip' "$DIR/boot/extends")
tpm2_pcrextend -T "$TCTI" "${EXTENDS[@]}"
echo "extended ${#EXTENDS[@]} measured events into PCRs $(printf '%s\n' "${EXTENDS[@]}" | cut -d: -f1 | sort -nu | paste -sd, -) (sha1, sha256); skipped $(grep -c '^skip' "$DIR/boot/extends") EV_NO_ACTION"
# The swtpm's PCRs 0-9 must be the real machine's (pcrs.txt, read from its TPM after boot).
awk '$1 ~ /^sha(1|256)$/ && $2 <= 9 {print $1, $2, tolower($3)}' "$ROOT/$BOOT/pcrs.txt" | sort >"$DIR/boot/pcrs.want"
pcr_values 0,1,2,3,4,5,6,7,8,9 | sort >"$DIR/boot/pcrs.got"
diff "$DIR/boot/pcrs.want" "$DIR/boot/pcrs.got" >&2 || die "the replayed PCRs differ from $BOOT/pcrs.txt (< want, > got)"
echo "PCRs 0-9 equal the real machine's in both banks ($BOOT/pcrs.txt), e.g. sha256 PCR 0 = $(awk '$1=="sha256" && $2==0 {print substr($3, 1, 16)}' "$DIR/boot/pcrs.got")…"

step "registrar (creates the Keylime CA in $DIR/cv_ca on first start)"
"$K" registrar >"$DIR/registrar.log" 2>&1 & PIDS+=($!)
wait_for registrar curl -sf "http://127.0.0.1:$REG_PORT/version"

step "verifier"
"$K" verifier >"$DIR/verifier.log" 2>&1 & PIDS+=($!)
wait_for verifier curl -sf --cacert "$DIR/cv_ca/cacert.crt" "https://127.0.0.1:$VER_PORT/version"

step "agent on the swtpm (serves the boot log): registers its EK, EK certificate and AK, answers the credential challenge"
mkdir -p "$DIR/agent"
"$K" agent >"$DIR/agent.log" 2>&1 & PIDS+=($!)
wait_for "agent registration" "$K" tenant regstatus -u "$UUID" --json
"$K" tenant regstatus -u "$UUID"

step "the machine runs programs: IMA logs each one (after the boot aggregate) and extends PCR 10"
# boot_aggregate: sha256(PCR 0 ‖ … ‖ PCR 9) of the sha256 bank, as Linux ≥ 5.8 computes it for ima_hash=sha256;
# after the replay it equals the aggregate the real machine's kernel logged.
printf "$(pcr_values 0,1,2,3,4,5,6,7,8,9 | awk '$1=="sha256"{print $3}' | tr -d '\n' | sed 's/../\\x&/g')" >"$DIR/ima/pcrs0-9"
ima_measure boot_aggregate "$DIR/ima/pcrs0-9"
AGG=$(sha256sum "$DIR/ima/pcrs0-9" | cut -d' ' -f1)
grep -q "sha256:$AGG boot_aggregate\$" "$ROOT/$BOOT/ascii_runtime_measurements" || die "boot_aggregate $AGG is not the real machine's ($BOOT/ascii_runtime_measurements)"
for f in /usr/bin/env /usr/bin/bash /usr/bin/ls /usr/bin/cat; do ima_measure "$f"; done
cat "$IMA_LOG"
echo "boot_aggregate = sha256(PCR 0 ‖ … ‖ PCR 9) = ${AGG:0:16}…, what the real machine's kernel logged"

step "runtime policy from the known-good log (keylime policy create runtime)"
"$K" policy create runtime --ima-log "$IMA_LOG" -o "$DIR/runtime-policy.json"
"$K" policy evaluate runtime --ima-log "$IMA_LOG" --runtime-policy "$DIR/runtime-policy.json"

step "measured-boot reference state from the known-good boot log (keylime policy create measured-boot)"
"$K" policy create measured-boot --without-secureboot -e "$DIR/boot/binary_bios_measurements" -o "$DIR/mb-refstate.json"
echo "reference state: S-CRTM and firmware, $(grep -o '"[a-z_]*_sha256": "0x[0-9a-f]\{8\}' "$DIR/mb-refstate.json" |
	sed 's/"\([a-z_]*\)_sha256": "0x\(.*\)/\1 \2…/' | paste -sd, - | sed 's/,/, /g'), Secure Boot off"

# The measured-boot policy judges PCRs 0-9 and 11-15, so tpm_policy takes a PCR outside them: PCR 17
# (D-RTM) is all ones until a dynamic launch, which this machine must not have had since boot.
step "tenant add: EK certificate checked against the cert store, identity quote checked, policies on PCR 17, measured boot and IMA"
PCR17=$(pcr_values 17 | awk '$1=="sha256"{print $3}')
"$K" tenant add -u "$UUID" --tpm_policy "{\"17\": [\"$PCR17\"]}" --mb-policy "$DIR/mb-refstate.json" \
	--runtime-policy "$DIR/runtime-policy.json" --wait 20s
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
