#!/bin/sh
# Verifier benchmark: builds the release binary (CGO_ENABLED=0, as shipped) and fleetbench, then runs
# fleetbench with the arguments given, e.g.
#
#   scripts/bench.sh -n 1000 -interval 2s -duration 60s
#   scripts/bench.sh -n 5000 -json -out bench-5000.json
#   scripts/bench.sh -n 1000 -duration 30s -pprof /tmp/prof   # profiles of the verifier
#
# fleetbench -h lists every flag. BENCH_BIN (default: a new temporary directory) receives the binaries.
set -eu
cd "$(dirname "$0")/.."
bin=${BENCH_BIN:-$(mktemp -d)}
CGO_ENABLED=0 go build -o "$bin/keylime" .
go build -o "$bin/fleetbench" ./internal/testbed/fleet/cmd/fleetbench
echo "binaries in $bin" >&2
exec "$bin/fleetbench" -keylime "$bin/keylime" "$@"
