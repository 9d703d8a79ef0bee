#!/usr/bin/env bash
# A local 3-node cluster holding 1,000 services and 100 deployments: node memory, commit cost,
# restart time (Benchmarks/scale/scale.py; method and figures in Docs/BENCHMARKS.md).
#
# Needs python3 (standard library only), a C compiler (cc) for tiny-task.c, and the `teal` product
# of PACKAGE_DIR (default: the repository root), built here unless SKIP_BUILD=1. Each node opens two
# listeners per service and the tasks one socket each: the run raises the open-file limit to its hard
# limit (1,000 services need about 2,500 files per node).
#
# Environment knobs: PACKAGE_DIR, CONFIGURATION (debug or release, default release), SCRATCH_PATH
# (swift build --scratch-path, default PACKAGE_DIR/.build), SKIP_BUILD=1. Every other argument goes
# to scale.py: --services N, --deployments D, --workers W, --json FILE, ... (scale.py --help).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
PACKAGE_DIR="${PACKAGE_DIR:-$(cd "$here/../.." && pwd)}"
CONFIGURATION="${CONFIGURATION:-release}"
SCRATCH_PATH="${SCRATCH_PATH:-$PACKAGE_DIR/.build}"

build=(swift build --package-path "$PACKAGE_DIR" --scratch-path "$SCRATCH_PATH" -c "$CONFIGURATION")
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  "${build[@]}" --product teal
fi
bin="$("${build[@]}" --show-bin-path)"
task="$(mktemp -d)/tiny-task"
cc -O2 -Wall -Wextra -Werror -o "$task" "$here/tiny-task.c"
ulimit -n "$(ulimit -Hn)"

exec python3 "$here/scale.py" --teal "$bin/teal" --task "$task" "$@"
