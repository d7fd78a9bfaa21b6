#!/usr/bin/env bash
# P7 (issue 9): what a packet reader costs a live server. nta-httpd (uring,
# 1 worker, pinned to CPU 0) under `wrk -t1 -c64 -d10s` on /1k (wrk pinned to
# CPU 1), three ways, interleaved over ROUNDS rounds:
#   none     no reader;
#   sniffer  `nta-sniffer capture --hold --write /dev/null` attached to the
#            export socket (unpinned);
#   tcpdump  `tcpdump -i lo -w /dev/null` on the loopback (unpinned).
# Prints one markdown report: req/s per round and the median, the ratio to
# `none` (of the medians, and round by round against the `none` run of the
# same round), what a reader costs in CPU (the server's CPU time per
# request, and nta-sniffer's own CPU time per descriptor), and what each
# reader says it saw and dropped. On a shared 2-CPU host req/s moves by
# +-10% from round to round, so read the rounds' ratios as well as the
# medians' (and, for a verdict, more than one run).
#
#   bash benches/web/p7.sh                   # ~2 minutes
#   ROUNDS=1 SECONDS_PER_RUN=3 bash benches/web/p7.sh   # a quick look
#
# Needs: wrk, tcpdump, curl, taskset, /usr/bin/time (apt-get install -y wrk
# tcpdump curl time).
# Loopback only; everything it starts it stops on exit.
set -Eeuo pipefail
cd "$(dirname "$0")/../.."

SECONDS_PER_RUN="${SECONDS_PER_RUN:-10}"
ROUNDS="${ROUNDS:-3}"
PATH_1K="${PATH_1K:-/1k}"

for tool in wrk tcpdump curl taskset python3 /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "benches/web/p7.sh: $tool is missing (apt-get install -y wrk tcpdump curl time)" >&2; exit 2; }
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

# CPU time (user + system) of process $1 so far, in clock ticks.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz="$(getconf CLK_TCK)"

# Runs wrk once; prints req/s and the server's CPU µs per request.
load() {
  local before after
  before="$(ticks "${pids[0]}")"
  taskset -c 1 wrk -t1 -c64 -d"${SECONDS_PER_RUN}s" "$url$PATH_1K" >"$work/wrk.out"
  after="$(ticks "${pids[0]}")"
  awk -v cpu=$((after - before)) -v hz="$hz" '
    /^Requests\/sec:/ {rps = $2}
    / requests in / {n = $1}
    END {printf "%s %.3f\n", rps, cpu / hz * 1e6 / n}' "$work/wrk.out"
}

declare -A rps cpu
sniffer_ns=""
notes=()
for round in $(seq "$ROUNDS"); do
  for way in none sniffer tcpdump; do
    case "$way" in
      none) r=$(load) ;;
      sniffer)
        /usr/bin/time -f "%U %S" -o "$work/sniffer.time" \
          "$sniffer" capture --socket "$sock" --hold --write /dev/null --duration $((SECONDS_PER_RUN + 3)) \
          >"$work/sniffer.out" 2>"$work/sniffer.err" &
        spid=$!
        sleep 1
        r=$(load)
        wait "$spid" || true
        descs="$(sed -n 's/.* descriptors \([0-9]*\).*/\1/p' "$work/sniffer.err" | head -1)"
        sniffer_ns="$sniffer_ns $(awk -v d="${descs:-0}" 'NR == 1 && d > 0 {printf "%.0f", ($1 + $2) * 1e9 / d}' "$work/sniffer.time")"
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
    rps[$way]="${rps[$way]:-} ${r% *}"
    cpu[$way]="${cpu[$way]:-} ${r#* }"
  done
done
held="$(curl -sf "$url/stats" | awk '/^nta_pool_held_bytes/ {print $2}')"

python3 - "$ROUNDS" "${rps[none]}" "${rps[sniffer]}" "${rps[tcpdump]}" "$held" \
  "${cpu[none]}" "${cpu[sniffer]}" "${cpu[tcpdump]}" "$sniffer_ns" <<'PY'
import statistics, sys
rounds, none, sniffer, tcpdump, held, cpu_none, cpu_sniffer, cpu_tcpdump, sniffer_ns = sys.argv[1:10]
ways = {"none": none, "sniffer": sniffer, "tcpdump": tcpdump}
cpus = {"none": cpu_none, "sniffer": cpu_sniffer, "tcpdump": cpu_tcpdump}
nums = lambda v: [float(x) for x in v.split()]
med = {k: statistics.median(nums(v)) for k, v in ways.items()}
cpu_med = {k: statistics.median(nums(v)) for k, v in cpus.items()}
by_round = {k: [a / b for a, b in zip(nums(v), nums(none))] for k, v in ways.items()}
print("| reader | req/s per round | median req/s | ÷ none (medians) | ÷ none, round by round | median of those | server CPU µs per request (median) | ÷ none |")
print("|---|---|---|---|---|---|---|---|")
for k, v in ways.items():
    rounds_txt = " / ".join(f"{r:.2f}" for r in by_round[k])
    print(f"| {k} | {' / '.join(f'{x:,.0f}' for x in nums(v))} | {med[k]:,.0f} | {med[k] / med['none']:.3f} "
          f"| {rounds_txt} | {statistics.median(by_round[k]):.3f} | {cpu_med[k]:.2f} | {cpu_med[k] / cpu_med['none']:.3f} |")
ratio = med["sniffer"] / med["none"]
print()
print(f"Goal: attached ≥ 0.95× unattached: {'**met**' if ratio >= 0.95 else '**missed**'} ({ratio:.3f} of the medians; "
      f"{statistics.median(by_round['sniffer']):.3f} as the median of the rounds' ratios). "
      f"nta_pool_held_bytes after the runs: {held}.")
ns = nums(sniffer_ns)
if ns:
    print()
    print(f"nta-sniffer's own CPU time (user + system, its whole run) per descriptor, by round: "
          f"{' / '.join(f'{x:.0f}' for x in ns)} ns (median {statistics.median(ns):.0f}).")
PY
echo
echo "What the readers reported (their own summaries):"
echo
for n in "${notes[@]}"; do echo "- $n"; done
echo
echo "Machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs; $(uname -sr); $(date -u '+%Y-%m-%d %H:%M UTC'); commit $(git rev-parse --short=12 HEAD)."
