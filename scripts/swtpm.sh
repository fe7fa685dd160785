#!/usr/bin/env bash
# swtpm.sh start|stop STATE_DIR — a provisioned software TPM 2.0 for demos and local runs.
#
# start: on first use provisions STATE_DIR/tpm with swtpm_setup (RSA-2048 EK at 0x81010001 with its
#        certificate in NV 0x01c00002, ECC P-384 EK at 0x81010016 with its certificate in NV 0x01c00016,
#        both signed by a local CA in STATE_DIR/ca), then runs `swtpm socket` on STATE_DIR/swtpm.sock
#        (control: STATE_DIR/swtpm.sock.ctrl) and waits until it answers. Prints the agent's TPM spec
#        (swtpm:STATE_DIR/swtpm.sock). The EK CA certificates are in STATE_DIR/ca/*.pem.
# stop:  stops that swtpm (control channel, then SIGTERM); the state is kept.
set -euo pipefail
die() { echo "swtpm.sh: $*" >&2; exit 1; }
[ $# -eq 2 ] || die "usage: $0 start|stop STATE_DIR"
cmd=$1
mkdir -p "$2"
STATE=$(cd "$2" && pwd -P)
SOCK=$STATE/swtpm.sock
PIDFILE=$STATE/swtpm.pid
[ ${#SOCK} -le 100 ] || die "state dir path too long for a unix socket: $STATE"

alive() { local pid; pid=$(cat "$PIDFILE" 2>/dev/null) || return 1; [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = swtpm ]; }

case $cmd in
stop)
	if alive; then
		swtpm_ioctl --unix "$SOCK.ctrl" -s >/dev/null 2>&1 || kill "$(cat "$PIDFILE")" 2>/dev/null || true
		for _ in $(seq 50); do alive || break; sleep 0.1; done
	fi
	rm -f "$PIDFILE" "$SOCK" "$SOCK.ctrl"
	exit 0 ;;
start) ;;
*) die "usage: $0 start|stop STATE_DIR" ;;
esac

for b in swtpm swtpm_setup swtpm_localca swtpm_ioctl; do
	command -v "$b" >/dev/null || die "$b not found: apt-get install -y swtpm swtpm-tools tpm2-tools"
done
if [ ! -s "$STATE/tpm/tpm2-00.permall" ]; then
	mkdir -p "$STATE/tpm" "$STATE/ca" "$STATE/setup"
	cat >"$STATE/setup/localca.conf" <<EOC
statedir = $STATE/ca
signingkey = $STATE/ca/signkey.pem
issuercert = $STATE/ca/issuercert.pem
certserial = $STATE/ca/certserial
EOC
	printf -- '--platform-manufacturer keylime-go\n--platform-version 2.1\n--platform-model swtpm\n' >"$STATE/setup/localca.options"
	cat >"$STATE/setup/swtpm_setup.conf" <<EOC
create_certs_tool = $(command -v swtpm_localca)
create_certs_tool_config = $STATE/setup/localca.conf
create_certs_tool_options = $STATE/setup/localca.options
active_pcr_banks = sha1,sha256
EOC
	swtpm_setup --tpm2 --tpmstate "$STATE/tpm" --createek --create-ek-cert --create-platform-cert \
		--pcr-banks sha1,sha256 --not-overwrite --config "$STATE/setup/swtpm_setup.conf" \
		--logfile "$STATE/swtpm_setup.log" >/dev/null 2>&1 || { tail -n 20 "$STATE/swtpm_setup.log" >&2; die "swtpm_setup failed"; }
fi
if ! alive; then
	swtpm socket --tpm2 --server "type=unixio,path=$SOCK" --ctrl "type=unixio,path=$SOCK.ctrl" \
		--tpmstate "dir=$STATE/tpm" --flags not-need-init,startup-clear --pid "file=$PIDFILE" \
		--log "file=$STATE/swtpm.log,level=1" --daemon || die "swtpm failed to start (see $STATE/swtpm.log)"
fi
for _ in $(seq 100); do
	swtpm_ioctl --unix "$SOCK.ctrl" -c >/dev/null 2>&1 && [ -S "$SOCK" ] && { echo "swtpm:$SOCK"; exit 0; }
	sleep 0.05
done
die "swtpm did not answer (see $STATE/swtpm.log)"
