#!/usr/bin/env bash
# `cryptobucket get` of two CLI builds side by side: one object of SIZE_MIB MiB is uploaded
# once (with NEW) to a fresh examples/s3_server, then OLD and NEW download it in alternating
# order with STREAMS parallel streams, `sync` before each run; every download is compared with
# the source (`cmp`). Arguments after `--` go to the server, e.g. `--slow-gets-at 268435456
# --slow-rate 10` to make the GET that starts at 256 MiB (the second of four spans of 1 GiB)
# a slow connection.
#
#   git worktree add /tmp/old <commit> && (cd /tmp/old && cargo build --release --bin cryptobucket)
#   scripts/bench-get-ab.sh /tmp/old/target/release/cryptobucket target/release/cryptobucket \
#       [PAIRS=5] [SIZE_MIB=1024] [STREAMS=4] [-- SERVER_ARGS...]
#
# GET_ARGS adds arguments to both `get`s (e.g. GET_ARGS=--no-fsync). Each line gives the
# client's CPU seconds, user + system, from /usr/bin/time.
#
# The numbers in BENCHMARKS.md ("Downloads whose streams share the work") come from it.
set -euo pipefail
cd "$(dirname "$0")/.."

OLD="$(realpath "$1")"
NEW="$(realpath "$2")"
shift 2
POS=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do POS+=("$1"); shift; done
[ $# -gt 0 ] && shift
PAIRS="${POS[0]:-5}"
SIZE_MIB="${POS[1]:-1024}"
STREAMS="${POS[2]:-4}"

cargo build --release --quiet --example s3_server
. scripts/bench-lib.sh
WORK="$(mktemp -d)"
trap 'stop_server; rm -rf "$WORK"' EXIT

make_source "$WORK" "$SIZE_MIB"
A=(--force-path-style --rsa-public-key "$WORK/public.pem" --rsa-private-key "$WORK/private.pem")
export CRYPTOBUCKET_CHECKPOINT_DIR="$WORK/checkpoints"

start_server "$WORK" "$@"
"$NEW" "${A[@]}" put "$WORK/src" s3://bench/obj --no-progress > /dev/null

run() { # NAME BINARY
  rm -f "$WORK/out"
  sync
  local t0 t1
  t0=$(date +%s.%N)
  # shellcheck disable=SC2086 # GET_ARGS: several words
  /usr/bin/time -f '%U %S' -o "$WORK/cpu" "$2" "${A[@]}" get s3://bench/obj "$WORK/out" \
    --concurrency "$STREAMS" --no-progress ${GET_ARGS:-} > /dev/null 2> "$WORK/err" ||
    { cat "$WORK/err" >&2; exit 1; }
  t1=$(date +%s.%N)
  cmp -s "$WORK/src" "$WORK/out" || { echo "$1: downloaded file differs" >&2; exit 1; }
  printf '%-4s %8.1f MiB/s  client CPU %s s (user %s)\n' "$1" \
    "$(echo "$SIZE_MIB / ($t1 - $t0)" | bc -l)" \
    "$(awk '{printf "%.2f", $1 + $2}' "$WORK/cpu")" "$(awk '{print $1}' "$WORK/cpu")"
}

echo "get ${GET_ARGS:-} of ${SIZE_MIB} MiB, ${STREAMS} streams, ${PAIRS} pairs, server args: ${*:-none}"
for i in $(seq "$PAIRS"); do
  if [ $((i % 2)) -eq 1 ]; then run old "$OLD"; run new "$NEW"; else run new "$NEW"; run old "$OLD"; fi
done
