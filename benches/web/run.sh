#!/usr/bin/env bash
# The web load test of issue 8: nta-httpd (each backend, each --alloc) and
# nginx (Debian, 1 worker, same files) under `wrk -t1 -c64 -d10s` on /1k and
# /64k, the server pinned to CPU 0 and wrk to CPU 1; then the RSS of each
# server holding 10k idle keep-alive connections. Prints one markdown report
# (machine, date, commit, the tables, the goal verdicts) on stdout.
#
#   bash benches/web/run.sh                 # the full run (~12 minutes)
#   ROUNDS=1 SECONDS_PER_RUN=2 IDLE_CONNS=1000 bash benches/web/run.sh   # a quick look
#
# Needs: wrk, nginx, curl, python3, taskset (apt-get install -y wrk nginx
# curl). Loopback only. Run as root or with a hard `ulimit -n` of 30000+.
# Everything it starts it stops (by pid) on exit.
set -Eeuo pipefail
cd "$(dirname "$0")/../.."

SECONDS_PER_RUN="${SECONDS_PER_RUN:-10}"
ROUNDS="${ROUNDS:-3}"
IDLE_CONNS="${IDLE_CONNS:-10000}"
BACKENDS="${BACKENDS:-epoll uring tokio}"
ALLOCS="${ALLOCS:-nta system}"
SERVER_CPU=0
CLIENT_CPU=1

for tool in wrk nginx curl python3 taskset; do
  command -v "$tool" >/dev/null || { echo "benches/web/run.sh: $tool is missing (apt-get install -y wrk nginx curl)" >&2; exit 2; }
done
if [ "$(nproc)" -lt 2 ]; then
  echo "benches/web/run.sh: needs 2 CPUs (server and wrk pinned apart)" >&2
  exit 2
fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'echo "benches/web/run.sh: line $LINENO failed (status $?)" >&2' ERR

cargo build --release -q -p nta-examples --bin nta-httpd
httpd=target/release/nta-httpd

# The files both servers serve.
mkdir -p "$work/www"
chmod 755 "$work"  # nginx's worker (www-data) reads the files
head -c 1024 /dev/urandom >"$work/www/1k"
head -c 65536 /dev/urandom >"$work/www/64k"

# Starts "nginx" or "nta-httpd BACKEND ALLOC"; sets server_pid and
# server_url.
start_server() {
  if [ "$1" = nginx ]; then
    start_nginx
  else
    # shellcheck disable=SC2086
    set -- $1
    start_httpd "$2" "$3"
  fi
}

# Starts nta-httpd pinned to SERVER_CPU; sets server_pid and server_url.
start_httpd() {
  local backend=$1 alloc=$2
  rm -f "$work/httpd.out"  # the banner read below must be this server's
  taskset -c "$SERVER_CPU" "$httpd" --listen 127.0.0.1:0 --backend "$backend" --alloc "$alloc" \
    --root "$work/www" >"$work/httpd.out" 2>"$work/httpd.err" &
  server_pid=$!
  pids+=("$server_pid")
  for _ in $(seq 100); do
    if grep -q "serving http" "$work/httpd.out" 2>/dev/null; then break; fi
    sleep 0.05
  done
  server_url="$(head -1 "$work/httpd.out" | sed 's/.*serving //; s#/$##')"
  [ -n "$server_url" ] || { cat "$work/httpd.err" >&2; exit 1; }
}

# Starts nginx with a generated loopback-only config; sets server_pid and
# server_url (the master's pid; its one worker is its child).
start_nginx() {
  local port
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  mkdir -p "$work/nginx/logs"
  cat >"$work/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/logs/error.log warn;
worker_rlimit_nofile 65536;
events { worker_connections 20000; }
http {
  access_log off;
  sendfile on;
  tcp_nodelay on;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:$port;
    root $work/www;
  }
}
EOF
  taskset -c "$SERVER_CPU" nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" &
  server_pid=$!
  pids+=("$server_pid")
  server_url="http://127.0.0.1:$port"
  for _ in $(seq 100); do
    if curl -sf -o /dev/null "$server_url/1k"; then break; fi
    sleep 0.05
  done
}

stop_server() {
  kill -TERM "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
}

# RSS in KiB of the server: the process and its children (nginx's worker).
# Pages of hugetlb segments (the NTA pool takes them when the machine has
# hugepages reserved) are not in VmRSS; they are added (HugetlbPages).
server_rss_kib() {
  local total=0 pid kib
  for pid in "$server_pid" $(pgrep -P "$server_pid" || true); do
    kib="$(awk '/^(VmRSS|HugetlbPages):/ {sum += $2} END {print sum + 0}' "/proc/$pid/status" 2>/dev/null || echo 0)"
    total=$((total + kib))
  done
  echo "$total"
}

# "value unit" from wrk -> milliseconds.
to_ms() {
  awk '{ v = $1; sub(/[a-z]+$/, "", v); u = $1; sub(/^[0-9.]+/, "", u);
         if (u == "us") v /= 1000; else if (u == "s") v *= 1000; else if (u == "m") v *= 60000;
         printf "%.3f", v }' <<<"$1"
}

# Runs wrk on path $1; sets rps, p50, p99.
run_wrk() {
  local out
  curl -sf --retry 5 --retry-delay 1 --retry-all-errors -o /dev/null "$server_url$1"
  out="$(taskset -c "$CLIENT_CPU" wrk -t1 -c64 -d"${SECONDS_PER_RUN}s" --latency "$server_url$1")"
  echo "$out" >>"$work/wrk.log"
  rps="$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")"
  p50="$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")"
  p99="$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")"
  if grep -q "Non-2xx\|Socket errors" <<<"$out"; then
    echo "warning: $(grep "Non-2xx\|Socket errors" <<<"$out") ($server_url$1)" >&2
  fi
}

declare -A RPS P50 P99 RSS ALL IDLE_BASE IDLE_RSS
servers=()
for backend in $BACKENDS; do
  for alloc in $ALLOCS; do
    servers+=("nta-httpd $backend $alloc")
  done
done
servers+=("nginx")

# ROUNDS rounds, the servers in turn within each: a disturbance on the
# shared machine hits one run, not one server; each server keeps its best
# run per path (highest req/s, with that run's latencies and RSS).
for round in $(seq "$ROUNDS"); do
  for server in "${servers[@]}"; do
    start_server "$server"
    for path in /1k /64k; do
      run_wrk "$path"
      key="$server $path"
      ALL["$key"]="${ALL[$key]:-}${ALL[$key]:+ }$(printf '%.0f' "$rps")"
      if awk -v a="$rps" -v b="${RPS[$key]:-0}" 'BEGIN { exit !(a > b) }'; then
        RPS["$key"]=$rps
        P50["$key"]=$p50
        P99["$key"]=$p99
        RSS["$key"]=$(server_rss_kib)
      fi
    done
    stop_server
    echo "round $round: $server" >&2
  done
done

# 10k idle keep-alive connections: each sends one request, reads the
# answer, and stays open; RSS before and while they are held.
cat >"$work/idle.py" <<'EOF'
import socket, sys, time
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
conns = []
request = b"GET /1k HTTP/1.1\r\nHost: bench\r\n\r\n"
for _ in range(count):
    s = socket.create_connection((host, port))
    s.sendall(request)
    got = b""
    while b"\r\n\r\n" not in got or len(got) < got.index(b"\r\n\r\n") + 4 + 1024:
        chunk = s.recv(4096)
        if not chunk:
            raise SystemExit("connection closed")
        got += chunk
    conns.append(s)
print("ready", flush=True)
time.sleep(30)
EOF
for server in "${servers[@]}"; do
  start_server "$server"
  curl -sf --retry 5 --retry-delay 1 --retry-all-errors -o /dev/null "$server_url/1k"
  IDLE_BASE["$server"]=$(server_rss_kib)
  hostport="${server_url#http://}"
  rm -f "$work/idle.out"
  taskset -c "$CLIENT_CPU" python3 "$work/idle.py" "${hostport%:*}" "${hostport#*:}" "$IDLE_CONNS" >"$work/idle.out" &
  client_pid=$!
  pids+=("$client_pid")
  for _ in $(seq 1200); do
    if grep -q ready "$work/idle.out" 2>/dev/null; then break; fi
    sleep 0.05
  done
  grep -q ready "$work/idle.out" || { echo "idle client did not get ready for $server" >&2; exit 1; }
  sleep 1
  IDLE_RSS["$server"]=$(server_rss_kib)
  kill "$client_pid" 2>/dev/null || true
  wait "$client_pid" 2>/dev/null || true
  stop_server
  echo "measured idle: $server" >&2
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

echo "Date: $(date -u '+%Y-%m-%d %H:%M UTC'). Machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) CPUs, kernel $(uname -r)."
dirty=""
if ! git diff --quiet HEAD -- nta-core/src nta-net/src examples/src; then dirty=" (with uncommitted changes to the server's sources)"; fi
echo "Commit: $(git rev-parse --short HEAD)$dirty. $(nginx -v 2>&1 | sed 's#nginx version: ##'), $( (wrk -v 2>&1 || true) | head -1 | awk '{print $1, $2}')."
echo "Server pinned to CPU $SERVER_CPU, wrk to CPU $CLIENT_CPU; \`wrk -t1 -c64 -d${SECONDS_PER_RUN}s --latency\`; nta-httpd with --threads 1 --root (the same two files as nginx). Hugepages reserved: $(cat /proc/sys/vm/nr_hugepages); RSS counts them (VmRSS + HugetlbPages)."
echo
echo "Best of $ROUNDS rounds (servers in turn within a round); every round's req/s in the last column."
echo
echo "| server | path | req/s | p50 ms | p99 ms | server RSS MiB | req/s / nginx | all rounds, req/s |"
echo "|---|---|---|---|---|---|---|---|"
for server in "${servers[@]}"; do
  for path in /1k /64k; do
    key="$server $path"
    echo "| $server | $path | ${RPS[$key]} | ${P50[$key]} | ${P99[$key]} | $(mib "${RSS[$key]}") | $(ratio "${RPS[$key]}" "${RPS[nginx $path]}") | ${ALL[$key]} |"
  done
done
echo
echo "Idle keep-alive connections: $IDLE_CONNS, each after one GET /1k."
echo
echo "| server | RSS MiB before | RSS MiB with $IDLE_CONNS idle | KiB per connection | RSS / same backend with --alloc system |"
echo "|---|---|---|---|---|"
for server in "${servers[@]}"; do
  base=${IDLE_BASE[$server]}; held=${IDLE_RSS[$server]}
  per=$(awk -v a="$held" -v b="$base" -v n="$IDLE_CONNS" 'BEGIN { printf "%.2f", (a - b) / n }')
  vs="n/a"
  case "$server" in
    "nta-httpd "*" nta") vs=$(ratio "$held" "${IDLE_RSS[${server% nta} system]:-0}") ;;
  esac
  echo "| $server | $(mib "$base") | $(mib "$held") | $per | $vs |"
done
echo
echo "Goals:"
for backend in $BACKENDS; do
  if [ "$backend" = uring ]; then
    for alloc in $ALLOCS; do
      r=$(ratio "${RPS[nta-httpd uring $alloc /1k]}" "${RPS[nginx /1k]}")
      echo "- uring ($alloc) >= 1.1x nginx req/s on /1k: $(awk -v r="$r" 'BEGIN { print (r >= 1.1) ? "met" : "missed" }') ($r)"
    done
  fi
  for path in /1k /64k; do
    r=$(ratio "${RPS[nta-httpd $backend nta $path]:-0}" "${RPS[nta-httpd $backend system $path]:-0}")
    echo "- $backend $path: --alloc nta at least as fast as system: $(awk -v r="$r" 'BEGIN { print (r >= 1.0) ? "met" : "missed" }') ($r)"
  done
  r=$(ratio "${IDLE_RSS[nta-httpd $backend nta]:-0}" "${IDLE_RSS[nta-httpd $backend system]:-0}")
  echo "- $backend: RSS with $IDLE_CONNS idle connections <= 0.5x system: $(awk -v r="$r" 'BEGIN { print (r <= 0.5) ? "met" : "missed" }') ($r)"
done
