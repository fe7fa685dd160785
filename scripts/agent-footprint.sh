#!/usr/bin/env bash
# agent-footprint.sh — the memory footprint of `keylime agent` on a software TPM (issue 7: idle RSS ≤ 12 MB,
# binary ≤ 20 MB).
#
# Builds the release binary (CGO_ENABLED=0 go build, as README's Build section), starts a provisioned swtpm
# (scripts/swtpm.sh), a registrar and an agent, waits until the agent has registered and activated, lets it
# sit idle for --idle seconds and reads /proc/PID/smaps_rollup (Rss, Pss) and /proc/PID/status (RssAnon,
# RssFile, VmHWM). Then (unless --quotes 0) it starts a verifier, adds the agent with `keylime tenant add`
# (quote_interval 0.2s, no policies), waits until the verifier counts --quotes attestations, stops the
# verifier and measures again after --idle seconds. "Idle" is registered and never polled; the figure after
# quotes is the steady state of an agent under attestation (VmHWM is the peak, reached during start-up).
#
# The agent runs from its own copy of the binary, evicted from the page cache before it starts (dd
# iflag=nocache), so that the registrar's and verifier's use of the same file does not pre-fault pages the
# agent would map by fault-around: the agent's RssFile is what the agent itself touches.
#
# Usage: scripts/agent-footprint.sh [--quotes N] [--idle SECONDS] [--runs N] [--bin PATH] [--json] [--keep]
#   --quotes N   quotes to answer before the second measurement (default 20; 0: idle figure only)
#   --idle S     seconds idle before each measurement (default 5)
#   --runs N     start the agent N times on the same identity (the first run creates AK, NK and mTLS
#                certificate; later runs load them) and print one row per run (default 2)
#   --bin PATH   measure this binary instead of building one (e.g. to compare build flags)
#   --json       one JSON document on stdout instead of the table
#   --keep       keep the work directory (logs, smaps of every measurement)
# Environment: BUILD_FLAGS extra `go build` flags, split on spaces (e.g. '-tags=urfave_cli_no_docs'; for
#   flags with spaces such as -ldflags='-s -w' build yourself and pass --bin); AGENT_ENV extra environment
#   for the agent only (e.g. 'GODEBUG=inittrace=1' — the trace lands in agent-N.log); MEASURE_HOOK a command
#   run as `$MEASURE_HOOK PID LABEL DIR` at each measurement (e.g. to read /proc/PID/pagemap).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
die() { echo "agent-footprint: $*" >&2; exit 1; }
note() { echo "agent-footprint: $*" >&2; }

QUOTES=20 IDLE=5 RUNS=2 BIN="" JSON="" KEEP=""
while [ $# -gt 0 ]; do
	case $1 in
	--quotes) QUOTES=$2; shift 2 ;;
	--idle) IDLE=$2; shift 2 ;;
	--runs) RUNS=$2; shift 2 ;;
	--bin) BIN=$2; shift 2 ;;
	--json) JSON=1; shift ;;
	--keep) KEEP=1; shift ;;
	-h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown argument $1 (see --help)" ;;
	esac
done
[[ $QUOTES =~ ^[0-9]+$ && $RUNS =~ ^[1-9][0-9]*$ && $IDLE =~ ^[0-9.]+$ ]] || die "--quotes, --runs and --idle take numbers"
command -v go >/dev/null || export PATH=$PATH:/usr/local/go/bin
for b in swtpm swtpm_setup curl; do command -v "$b" >/dev/null || die "$b not found (apt-get install -y swtpm swtpm-tools curl)"; done

DIR=$(mktemp -d /tmp/kl-fp.XXXXXX)
PIDS=()
cleanup() {
	for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	"$ROOT/scripts/swtpm.sh" stop "$DIR/tpm" >/dev/null 2>&1 || true
	if [ -n "$KEEP" ]; then note "kept $DIR"; else rm -rf "$DIR"; fi
}
trap cleanup EXIT

if [ -z "$BIN" ]; then
	note "building (CGO_ENABLED=0 go build ${BUILD_FLAGS:-})"
	# shellcheck disable=SC2086 # BUILD_FLAGS is a list of flags
	CGO_ENABLED=0 go build ${BUILD_FLAGS:-} -o "$DIR/keylime" .
else
	cp "$BIN" "$DIR/keylime"
fi
K=$DIR/keylime
cp "$K" "$DIR/keylime-agent"
BIN_SIZE=$(stat -c %s "$K")

# Ports away from the defaults and from demo.sh's.
REG_PORT=28890 REG_TLS=28891 VER_PORT=28881 AGENT_PORT=29002
UUID=d432fbb3-d2f1-4a97-9ef7-75bd81c0f007
cat >"$DIR/keylime.toml" <<EOC
[registrar]
keylime_dir = "$DIR"
port = $REG_PORT
tls_port = $REG_TLS

[verifier]
keylime_dir = "$DIR"
port = $VER_PORT
quote_interval = "0.2s"
retry_interval = "1s"
max_retries = 3

[tenant]
keylime_dir = "$DIR"
verifier_port = $VER_PORT
registrar_port = $REG_TLS
tpm_cert_store = "$DIR/certstore"

[agent]
keylime_dir = "$DIR/agent"
uuid = "$UUID"
port = $AGENT_PORT
contact_port = $AGENT_PORT
registrar_port = $REG_PORT
trusted_client_ca = "$DIR/cv_ca/cacert.crt"
tpm = "swtpm:$DIR/tpm/swtpm.sock"
ima_ml_path = "$DIR/no-ima-log"
measuredboot_ml_path = "$DIR/no-mb-log"
EOC
export KEYLIME_CONFIG=$DIR/keylime.toml

wait_for() { # description, tries (0.1 s each), command…
	local what=$1 n=$2; shift 2
	for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
	die "$what did not happen (logs in $DIR; --keep keeps them)"
}

"$ROOT/scripts/swtpm.sh" start "$DIR/tpm" >/dev/null
mkdir -p "$DIR/certstore" "$DIR/agent"
cp "$DIR/tpm/ca/swtpm-localca-rootca-cert.pem" "$DIR/tpm/ca/issuercert.pem" "$DIR/certstore/"

"$K" registrar >"$DIR/registrar.log" 2>&1 & PIDS+=($!)
wait_for "registrar start" 100 curl -sf "http://127.0.0.1:$REG_PORT/version"

kb() { awk -v k="$1:" '$1 == k {print $2}' "$2"; }
# measure PID LABEL: one result line "label rss anon file pss hwm" (kB), and the smaps kept in DIR.
measure() {
	local pid=$1 label=$2
	[ -r "/proc/$pid/smaps_rollup" ] || die "agent (pid $pid) is gone before measuring $label"
	cat "/proc/$pid/smaps_rollup" >"$DIR/$label.smaps_rollup"
	cat "/proc/$pid/status" >"$DIR/$label.status"
	cat "/proc/$pid/smaps" >"$DIR/$label.smaps"
	# shellcheck disable=SC2086 # MEASURE_HOOK is a command line
	[ -z "${MEASURE_HOOK:-}" ] || $MEASURE_HOOK "$pid" "$label" "$DIR" >&2
	echo "$label $(kb Rss "$DIR/$label.smaps_rollup") $(kb RssAnon "$DIR/$label.status") $(kb RssFile "$DIR/$label.status") $(kb Pss "$DIR/$label.smaps_rollup") $(kb VmHWM "$DIR/$label.status")"
}

ROWS=()
VERIFIER_UP=""
for run in $(seq "$RUNS"); do
	sync "$DIR/keylime-agent" && dd if="$DIR/keylime-agent" iflag=nocache count=0 status=none 2>/dev/null || true
	log=$DIR/agent-$run.log
	# shellcheck disable=SC2086 # AGENT_ENV is a list of VAR=value words
	env ${AGENT_ENV:-} "$DIR/keylime-agent" agent >"$log" 2>&1 & apid=$!
	PIDS+=("$apid")
	wait_for "agent registration (run $run)" 300 grep -q "registered and activated" "$log"
	sleep "$IDLE"
	ROWS+=("$(measure "$apid" "run$run-idle")")
	if [ "$run" = "$RUNS" ] && [ "$QUOTES" -gt 0 ]; then
		"$K" verifier >"$DIR/verifier.log" 2>&1 & vpid=$!
		PIDS+=("$vpid")
		wait_for "verifier start" 100 curl -sf --cacert "$DIR/cv_ca/cacert.crt" "https://127.0.0.1:$VER_PORT/version"
		"$K" tenant add -u "$UUID" --wait 20s >"$DIR/tenant.log" 2>&1 || die "tenant add failed: $(tail -n 3 "$DIR/tenant.log")"
		count() { "$K" tenant status -u "$UUID" --json 2>/dev/null | grep -o '"attestation_count": *[0-9]*' | grep -o '[0-9]*$' | head -n1; }
		quotes_done() { local n; n=$(count); [ -n "$n" ] && [ "$n" -ge "$QUOTES" ]; }
		wait_for "$QUOTES attestations" $((QUOTES * 10 + 300)) quotes_done
		kill "$vpid"; wait "$vpid" 2>/dev/null || true
		sleep "$IDLE"
		ROWS+=("$(measure "$apid" "run$run-after-${QUOTES}-quotes")")
	fi
	kill "$apid"; wait "$apid" 2>/dev/null || true
done

if [ -n "$JSON" ]; then
	printf '{"binary_bytes": %s, "go": "%s", "measurements": [' "$BIN_SIZE" "$(go env GOVERSION)"
	sep=""
	for r in "${ROWS[@]}"; do
		read -r label rss anon file pss hwm <<<"$r"
		printf '%s\n  {"label": "%s", "rss_kb": %s, "rss_anon_kb": %s, "rss_file_kb": %s, "pss_kb": %s, "hwm_kb": %s}' "$sep" "$label" "$rss" "$anon" "$file" "$pss" "$hwm"
		sep=","
	done
	printf '\n]}\n'
else
	printf 'binary: %s bytes (%.1f MiB), %s\n' "$BIN_SIZE" "$(echo "$BIN_SIZE / 1048576" | bc -l)" "$(go env GOVERSION)"
	printf '%-24s %9s %9s %9s %9s %9s\n' measurement "Rss kB" "RssAnon" "RssFile" "Pss kB" "VmHWM"
	for r in "${ROWS[@]}"; do
		# shellcheck disable=SC2086 # one row, split into columns
		printf '%-24s %9s %9s %9s %9s %9s\n' $r
	done
fi
