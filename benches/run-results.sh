#!/usr/bin/env bash
# Regenerates benches/RESULTS.md's allocator tables in one command:
# every workload (P1..P6) on every allocator, then every recorded trace in
# benches/traces/, written above the kept-marker of RESULTS.md (what is below
# it stays as it is). Extra arguments go to `nta-bench results`, e.g.
#   benches/run-results.sh --quick --repeat 1 --trace-runs 1   (a quick try)
#   benches/run-results.sh --hugepages                         (every allocator on huge pages)
# Takes about 10 minutes on 2 cores at full size. Commit first: the file
# names the commit and says if the tree had uncommitted changes.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p nta-bench
exec target/release/nta-bench results --write benches/RESULTS.md "$@"
