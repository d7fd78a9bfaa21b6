#!/usr/bin/env bash
# P7 (issue 9): what a packet reader costs a live server. nta-httpd (uring,
# 1 worker, pinned to CPU 0) under `wrk -t1 -c64 -d10s` on /1k (wrk pinned to
# CPU 1), three ways, interleaved over ROUNDS rounds:
#   none     no reader;
#   sniffer  `nta-sniffer capture --hold --write /dev/null` attached to the
#            export socket (unpinned);
#   tcpdump  `tcpdump -i lo -w /dev/null` on the loopback (unpinned).
# Prints one markdown report: req/s per round and the median, the ratio to
# `none`, and what each reader says it saw and dropped.
#
#   bash benches/web/p7.sh                   # ~2 minutes
#   ROUNDS=1 SECONDS_PER_RUN=3 bash benches/web/p7.sh   # a quick look
#
# Needs: wrk, tcpdump, curl, taskset (apt-get install -y wrk tcpdump curl).
# Loopback only; everything it starts it stops on exit.
set -Eeuo pipefail
cd "$(dirname "$0")/../.."

SECONDS_PER_RUN="${SECONDS_PER_RUN:-10}"
ROUNDS="${ROUNDS:-3}"
PATH_1K="${PATH_1K:-/1k}"

for tool in wrk tcpdump curl taskset python3; do
  command -v "$tool" >/dev/null || { echo "benches/web/p7.sh: $tool is missing (apt-get install -y wrk tcpdump curl)" >&2; exit 2; }
done
[ "$(nproc)" -ge 2 ] || { echo "benches/web/p7.sh: needs 2 CPUs" >&2; exit 2; }

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'echo "benches/web/p7.sh: line $LINENO failed (status $?)" >&2' ERR

cargo build --release -q -p nta-examples --bin nta-httpd
cargo build --release -q -p nta-sniffer
httpd=target/release/nta-httpd
sniffer=target/release/nta-sniffer
sock="$work/export.sock"

taskset -c 0 "$httpd" --listen 127.0.0.1:0 --backend uring --export "$sock" >"$work/banner" 2>"$work/httpd.err" &
pids+=($!)
for _ in $(seq 100); do grep -q "serving http" "$work/banner" 2>/dev/null && break; sleep 0.1; done
url="$(sed -n 's/^nta-httpd: serving \(http:[^ ]*\)$/\1/p' "$work/banner")"
[ -n "$url" ] || { echo "nta-httpd did not start: $(cat "$work/httpd.err")" >&2; exit 1; }
url="${url%/}"
curl -sf "$url$PATH_1K" -o /dev/null

# Runs wrk once; prints req/s.
load() {
  taskset -c 1 wrk -t1 -c64 -d"${SECONDS_PER_RUN}s" "$url$PATH_1K" >"$work/wrk.out"
  awk '/^Requests\/sec:/ {print $2}' "$work/wrk.out"
}

declare -A rps
notes=()
for round in $(seq "$ROUNDS"); do
  for way in none sniffer tcpdump; do
    case "$way" in
      none) r=$(load) ;;
      sniffer)
        "$sniffer" capture --socket "$sock" --hold --write /dev/null --duration $((SECONDS_PER_RUN + 3)) \
          >"$work/sniffer.out" 2>"$work/sniffer.err" &
        spid=$!
        sleep 1
        r=$(load)
        wait "$spid" || true
        notes+=("round $round sniffer: $(tr '\n' ' ' <"$work/sniffer.err" | sed 's/\r//g' | tail -c 400)")
        ;;
      tcpdump)
        tcpdump -i lo -w /dev/null -q >"$work/tcpdump.out" 2>"$work/tcpdump.err" &
        tpid=$!
        sleep 1
        r=$(load)
        kill -INT "$tpid"
        wait "$tpid" || true
        notes+=("round $round tcpdump: $(grep -E 'captured|dropped' "$work/tcpdump.err" | tr '\n' ' ')")
        ;;
    esac
    rps[$way]="${rps[$way]:-} $r"
  done
done
held="$(curl -sf "$url/stats" | awk '/^nta_pool_held_bytes/ {print $2}')"

python3 - "$ROUNDS" "${rps[none]}" "${rps[sniffer]}" "${rps[tcpdump]}" "$held" <<'PY'
import statistics, sys
rounds, none, sniffer, tcpdump, held = sys.argv[1:6]
ways = {"none": none, "sniffer": sniffer, "tcpdump": tcpdump}
med = {k: statistics.median(float(x) for x in v.split()) for k, v in ways.items()}
print("| reader | req/s per round | median req/s | ÷ none |")
print("|---|---|---|---|")
for k, v in ways.items():
    print(f"| {k} | {' / '.join(f'{float(x):,.0f}' for x in v.split())} | {med[k]:,.0f} | {med[k] / med['none']:.3f} |")
ratio = med["sniffer"] / med["none"]
print()
print(f"Goal: attached ≥ 0.95× unattached: {'**met**' if ratio >= 0.95 else '**missed**'} ({ratio:.3f}). "
      f"nta_pool_held_bytes after the runs: {held}.")
PY
echo
echo "What the readers reported (their own summaries):"
echo
for n in "${notes[@]}"; do echo "- $n"; done
echo
echo "Machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs; $(uname -sr); $(date -u '+%Y-%m-%d %H:%M UTC'); commit $(git rev-parse --short=12 HEAD)."
