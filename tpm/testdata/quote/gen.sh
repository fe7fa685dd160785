#!/usr/bin/env bash
# gen.sh — regenerates the tpm2-tools quote fixtures of this directory with the real tools (tpm2-tools 5.x)
# against a fresh swtpm. Run from the repository root: tpm/testdata/quote/gen.sh
#
# Files written (all quotes use the nonce "keylimegoldennonce01", given to tpm2_quote as hex):
#   ak-rsa.pub, ak-ecc.pub          TPM2B_PUBLIC of the AKs (tpm2_createak -f tss ... -u)
#   rsa-sha256-all.{attest,sig,pcrs}  RSASSA-SHA256 quote of sha256:0-23 (3 TPML_DIGESTs in the blob)
#   ecc-sha256-16.{attest,sig,pcrs}   ECDSA-SHA256 quote of sha256:16 (an identity quote's selection)
#   rsa-multibank.{attest,sig,pcrs}   quote of sha1:0-10+sha256:10,16 (two banks, 13 digests)
#   pcrread.yaml                     tpm2_pcrread sha1:all+sha256:all right after the quotes
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd -P)
root=$(cd "$here/../../.." && pwd -P)
state=$(mktemp -d /tmp/quotegen.XXXXXX)
trap '"$root/scripts/swtpm.sh" stop "$state" >/dev/null 2>&1 || true; rm -rf "$state"' EXIT
"$root/scripts/swtpm.sh" start "$state" >/dev/null
export TPM2TOOLS_TCTI="swtpm:path=$state/swtpm.sock"
cd "$state"
flush() { tpm2_flushcontext -t >/dev/null; tpm2_flushcontext -s >/dev/null; }

# Distinct, reproducible values in both banks: PCR i is extended once with H("pcr <i>").
for i in $(seq 0 15) 23; do
	s1=$(printf 'pcr %d' "$i" | sha1sum | cut -d' ' -f1)
	s256=$(printf 'pcr %d' "$i" | sha256sum | cut -d' ' -f1)
	tpm2_pcrextend "$i:sha1=$s1,sha256=$s256"
done
# PCR 16 as a Keylime agent leaves it: reset, then one extend with H(data).
tpm2_pcrreset 16
tpm2_pcrextend "16:sha1=$(printf nk | sha1sum | cut -d' ' -f1),sha256=$(printf nk | sha256sum | cut -d' ' -f1)"

nonce=$(printf keylimegoldennonce01 | xxd -p -c 256)
all=$(seq -s, 0 23)
tpm2_createak -C 0x81010001 -c ak-rsa.ctx -G rsa -g sha256 -s rsassa -u ak-rsa.pub -f tss -n ak-rsa.name >/dev/null
flush
tpm2_quote -c ak-rsa.ctx -l "sha256:$all" -q "$nonce" -m rsa-sha256-all.attest -s rsa-sha256-all.sig -o rsa-sha256-all.pcrs -g sha256 >/dev/null
flush
tpm2_quote -c ak-rsa.ctx -l "sha1:0,1,2,3,4,5,6,7,8,9,10+sha256:10,16" -q "$nonce" -m rsa-multibank.attest -s rsa-multibank.sig -o rsa-multibank.pcrs -g sha256 >/dev/null
flush
tpm2_createak -C 0x81010001 -c ak-ecc.ctx -G ecc -g sha256 -s ecdsa -u ak-ecc.pub -f tss -n ak-ecc.name >/dev/null
flush
tpm2_quote -c ak-ecc.ctx -l "sha256:16" -q "$nonce" -m ecc-sha256-16.attest -s ecc-sha256-16.sig -o ecc-sha256-16.pcrs -g sha256 >/dev/null
flush
tpm2_pcrread "sha1:all+sha256:all" >pcrread.yaml
for f in ak-rsa.pub ak-ecc.pub pcrread.yaml rsa-sha256-all.* ecc-sha256-16.* rsa-multibank.*; do
	cp "$f" "$here/$f"
done
