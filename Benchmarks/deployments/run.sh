#!/usr/bin/env bash
# Deployments in a local 3-node cluster: rollback latency, controller failover, weight convergence
# (Benchmarks/deployments/bench.py; method and figures in Docs/BENCHMARKS.md).
#
# Needs python3 (standard library only) and the `teal` and `teal-demo` products of PACKAGE_DIR
# (default: the repository root), built here unless SKIP_BUILD=1.
#
# Environment knobs: PACKAGE_DIR, CONFIGURATION (debug or release, default debug), SCRATCH_PATH
# (swift build --scratch-path, default PACKAGE_DIR/.build), SKIP_BUILD=1. Every other argument goes
# to bench.py: --rollback-trials N, --failover-trials N, --linear-step P, --election-timeout-ms MS,
# --json FILE, --only rollback,failover,convergence, ... (bench.py --help).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
PACKAGE_DIR="${PACKAGE_DIR:-$(cd "$here/../.." && pwd)}"
CONFIGURATION="${CONFIGURATION:-debug}"
SCRATCH_PATH="${SCRATCH_PATH:-$PACKAGE_DIR/.build}"

build=(swift build --package-path "$PACKAGE_DIR" --scratch-path "$SCRATCH_PATH" -c "$CONFIGURATION")
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  "${build[@]}" --product teal
  "${build[@]}" --product teal-demo
fi
bin="$("${build[@]}" --show-bin-path)"

exec python3 "$here/bench.py" --teal "$bin/teal" --demo "$bin/teal-demo" "$@"
