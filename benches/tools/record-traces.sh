#!/usr/bin/env bash
# Records the real-program allocation traces in benches/traces/ with the
# LD_PRELOAD logger (alloc_trace.c) and converts them to the replay format:
#
#   benches/tools/record-traces.sh [nginx] [tshark] [redis]     (default: all)
#
# Each trace is written as benches/traces/<name>.trace.gz, with a note
# <name>.txt (date, program versions, the load, what the converter could not
# explain). Everything talks to 127.0.0.1 only, on ports 18080, 18081 and
# 16399, and stops by itself.
#
# Needs: cc, and the programs: apt-get install -y nginx wrk tshark curl
# redis-server redis-tools (tshark brings dumpcap, which captures on lo and
# needs root or the capture capabilities).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
tools=$root/benches/tools
traces=$root/benches/traces
work=$(mktemp -d /tmp/nta-record.XXXXXX)
# nginx's worker drops to user nobody: it must read the document root and
# write its trace files.
chmod 755 "$work"
pids=()

cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

need() {
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "record-traces.sh: $tool is not installed" >&2; exit 2; }
  done
}

# Waits until "$@" succeeds (up to 10 s).
wait_for() {
  for _ in $(seq 100); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "record-traces.sh: timed out waiting for: $*" >&2
  exit 1
}

# Waits for process $1 to exit (up to 30 s).
wait_exit() {
  for _ in $(seq 300); do
    kill -0 "$1" 2>/dev/null || return 0
    sleep 0.1
  done
  echo "record-traces.sh: process $1 did not exit" >&2
  exit 1
}

(cd "$root" && cargo build --release -p nta-bench --quiet)
bench=$root/target/release/nta-bench
lib=$("$tools/build-tracer.sh" "$work/build")
mkdir -p "$traces"

# A document root: pages of several sizes, text and binary.
make_www() {
  local www=$1
  mkdir -p "$www"
  head -c 1500 /usr/share/common-licenses/GPL-3 >"$www/index.html"
  for n in 1 2 3 4 5 6 7 8; do cat /usr/share/common-licenses/GPL-3; done >"$www/page.html"
  head -c 262144 /dev/urandom >"$www/image.bin"
  head -c 16384 /dev/urandom >"$www/icon.bin"
}

# An nginx configuration serving $2 on port $3 with one worker.
nginx_conf() {
  local dir=$1 www=$2 port=$3
  mkdir -p "$dir/tmp"
  cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
daemon off;
master_process on;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 1024; }
http {
  include /etc/nginx/mime.types;
  access_log $dir/access.log;
  client_body_temp_path $dir/tmp/body;
  proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi;
  scgi_temp_path $dir/tmp/scgi;
  gzip on;
  gzip_types text/plain;
  server {
    listen 127.0.0.1:$port;
    root $www;
  }
}
EOF
}

note() {
  local name=$1 load=$2 stats=$3
  {
    echo "trace: $name.trace.gz"
    echo "recorded: $(date -u +%Y-%m-%dT%H:%MZ) on $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) CPUs"
    echo "recorder: benches/tools/record-traces.sh at $(git -C "$root" rev-parse --short HEAD)"
    echo "load: $load"
    echo "converter: $stats"
  } >"$traces/$name.txt"
  echo "== $name: $stats"
}

convert() {
  local name=$1 logs=$2 load=$3
  local stats
  stats=$("$bench" convert "$logs" -o "$traces/$name.trace.gz" 2>&1 >/dev/null)
  note "$name" "$load" "$stats"
}

record_nginx() {
  need nginx wrk curl
  local dir=$work/nginx logs=$work/logs-nginx
  make_www "$work/www"
  nginx_conf "$dir" "$work/www" 18080
  mkdir -p "$logs"
  chmod 1777 "$logs"
  cat >"$dir/paths.lua" <<'EOF'
-- Round-robin over five paths; every other request accepts gzip.
local paths = { "/", "/page.html", "/image.bin", "/icon.bin", "/missing" }
local n = 0
request = function()
  n = n + 1
  local headers = {}
  if n % 2 == 0 then headers["Accept-Encoding"] = "gzip" end
  return wrk.format("GET", paths[n % #paths + 1], headers)
end
EOF
  NTA_TRACE_DIR=$logs LD_PRELOAD=$lib nginx -c "$dir/nginx.conf" &
  local master=$!
  pids+=("$master")
  wait_for curl -sf "http://127.0.0.1:18080/"
  local load="nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'), 1 worker, gzip on; wrk -t2 -c32 -d10s over /, /page.html (gzip for half), /image.bin, /icon.bin, /missing (404)"
  wrk -t2 -c32 -d10s -s "$dir/paths.lua" "http://127.0.0.1:18080" | sed -n 's/^ *\(Requests\/sec\|.*requests in\)/  wrk: \1/p'
  kill -QUIT "$master"
  wait_exit "$master"
  convert nginx-wrk "$logs" "$load"
}

record_tshark() {
  need nginx curl tshark dumpcap
  local dir=$work/nginx-capture logs=$work/logs-tshark capture=$work/http.pcapng
  make_www "$work/www"
  nginx_conf "$dir" "$work/www" 18081
  mkdir -p "$logs"
  nginx -c "$dir/nginx.conf" &
  local master=$!
  pids+=("$master")
  wait_for curl -sf "http://127.0.0.1:18081/"
  dumpcap -q -i lo -f "tcp port 18081" -w "$capture" &
  local capturer=$!
  pids+=("$capturer")
  sleep 1
  for round in $(seq 40); do
    for path in / /page.html /image.bin /icon.bin /missing; do
      curl -s -o /dev/null "http://127.0.0.1:18081$path"
      curl -s -o /dev/null -H "Accept-Encoding: gzip" "http://127.0.0.1:18081$path?round=$round"
    done
  done
  sleep 1
  kill -INT "$capturer"
  wait_exit "$capturer"
  kill -QUIT "$master"
  wait_exit "$master"
  local packets
  packets=$(capinfos -c -M "$capture" 2>/dev/null | sed -n 's/^Number of packets: *//p' || echo "?")
  NTA_TRACE_DIR=$logs LD_PRELOAD=$lib tshark -r "$capture" -V >/dev/null
  local load="tshark $(tshark --version | head -1 | awk '{print $3}') -r capture -V (full dissection to /dev/null); capture: dumpcap on lo, $packets packets, 400 curl requests (new connection each) over 5 paths, half with gzip"
  convert tshark-http "$logs" "$load"
}

record_redis() {
  need redis-server redis-benchmark redis-cli
  local logs=$work/logs-redis
  mkdir -p "$logs"
  NTA_TRACE_DIR=$logs LD_PRELOAD=$lib redis-server --port 16399 --bind 127.0.0.1 --save "" --appendonly no \
    --daemonize no --logfile "$work/redis.log" --dir "$work" &
  local server=$!
  pids+=("$server")
  wait_for redis-cli -p 16399 ping
  local tests=set,get,incr,lpush,rpush,lpop,rpop,sadd,hset,spop,zadd,lrange_100,mset
  redis-benchmark -p 16399 -n 5000 -c 20 -r 20000 -d 128 -t "$tests" -q 2>&1 | tr '\r' '\n' |
    grep 'requests per second' | sed 's/^/  /'
  redis-cli -p 16399 shutdown nosave >/dev/null 2>&1 || true
  wait_exit "$server"
  local load="redis-server $(redis-server --version | awk '{print $3}' | sed 's/v=//') (Debian build linked with jemalloc; under the logger its malloc calls go to glibc), no persistence; redis-benchmark -n 5000 -c 20 -r 20000 -d 128 -t $tests"
  convert redis-benchmark "$logs" "$load"
}

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(nginx tshark redis)
for target in "${targets[@]}"; do
  case $target in
    nginx) record_nginx ;;
    tshark) record_tshark ;;
    redis) record_redis ;;
    *) echo "record-traces.sh: unknown trace $target (nginx, tshark, redis)" >&2; exit 2 ;;
  esac
done
ls -l "$traces"
