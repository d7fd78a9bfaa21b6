#!/usr/bin/env bash
# Builds the LD_PRELOAD allocation logger and its self-test program:
#   build-tracer.sh OUT_DIR
# writes OUT_DIR/libntatrace.so and OUT_DIR/trace_selftest, and prints the
# path of the library. Needs a C compiler ($CC or cc).
set -euo pipefail
out=${1:?usage: build-tracer.sh OUT_DIR}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
"${CC:-cc}" -O2 -g -fPIC -shared -Wall -Wextra -Werror -std=gnu11 \
  -o "$out/libntatrace.so" "$here/alloc_trace.c" -lpthread -ldl
"${CC:-cc}" -O0 -fno-builtin -Wall -Wextra -Werror -std=gnu11 -pthread \
  -o "$out/trace_selftest" "$here/trace_selftest.c"
echo "$out/libntatrace.so"
