#!/usr/bin/env bash
# Side-by-side download benchmark: `cryptobucket get` (encrypted, checkpointed, durable) against
# rclone's multi-thread download from a plain S3 remote and from a crypt remote, the latter also
# followed by `sync FILE` (the same durability as ours: the file is on disk when the command
# ends), on the same in-process s3s-fs server (examples/s3_server.rs, release build), the same
# number of parallel streams, a fresh server data dir per round. The order of the five runs
# changes every round (a Williams design: over 10 rounds every run comes right after each
# other run twice and takes every position twice), so no run always follows the same one.
#
#   scripts/bench-download.sh [SIZE_MIB=1024] [STREAMS=4] [ROUNDS=3]
#
# `cryptobucket-nofsync` is `get --no-fsync`: no sync, no checkpoint, the durability rclone has.
#
# Needs rclone (Debian's `rclone`, installed here when missing). Prints one line per run (MiB/s,
# the client's CPU seconds, and the machine's: every process and the kernel, so the server and
# the writeback of dirty pages too, from /proc/stat) and a summary: best and median MiB/s per
# tool.
# DROP_CACHES=1 also empties the page cache before every run (root only), so each run reads the
# server's copy from disk: needed when the objects outgrow memory, else whoever runs right
# after a download of the same object reads it from the cache that download left.
# CB_PREFIX=eatmydata runs our durable download with fsync
# turned into a no-op, to show what durability costs. The numbers in BENCHMARKS.md come from this script.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MIB="${1:-1024}"
STREAMS="${2:-4}"
ROUNDS="${3:-3}"

if ! command -v rclone >/dev/null 2>&1 || [ ! -x /usr/bin/time ]; then
  apt-get update -qq && apt-get install -y -qq rclone time >/dev/null
fi
cargo build --release --quiet --example s3_server --bin cryptobucket
CB="$PWD/target/release/cryptobucket"
. scripts/bench-lib.sh

WORK="$(mktemp -d)"
trap 'stop_server; rm -rf "$WORK"' EXIT
make_source "$WORK" "$SIZE_MIB"

# rclone's S3 backend refuses to start when AWS_CA_BUNDLE is set (and nothing here uses TLS).
unset AWS_CA_BUNDLE
export RCLONE_CONFIG=/nonexistent
export RCLONE_CONFIG_S3_TYPE=s3 RCLONE_CONFIG_S3_PROVIDER=Other
export RCLONE_CONFIG_S3_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID"
export RCLONE_CONFIG_S3_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY"
export RCLONE_CONFIG_S3_FORCE_PATH_STYLE=true
export RCLONE_CONFIG_SC_TYPE=crypt RCLONE_CONFIG_SC_REMOTE=s3:bench/crypt
RCLONE_CONFIG_SC_PASSWORD="$(rclone obscure benchmark-password)"
export RCLONE_CONFIG_SC_PASSWORD
RC=(rclone --multi-thread-streams "$STREAMS" --multi-thread-cutoff 1M --s3-chunk-size 16M
    --s3-upload-concurrency "$STREAMS" -q)
CBA=(--force-path-style --rsa-public-key "$WORK/public.pem" --rsa-private-key "$WORK/private.pem")

machine_cpu() { # busy ticks of all CPUs since boot: user nice system irq softirq
  awk '/^cpu /{print $2 + $3 + $4 + $7 + $8}' /proc/stat
}

timed() { # NAME CMD... : runs CMD, prints and records MiB/s
  local name=$1; shift
  rm -f "$WORK/out"
  # Every run starts with nothing dirty in the page cache: without this, whoever syncs pays
  # for the writeback of the uploads (and ext4's ordered journal commits wait for it), and
  # whoever does not leaves its own writeback to the next run.
  sync
  if [ -n "${DROP_CACHES:-}" ]; then echo 3 > /proc/sys/vm/drop_caches; fi
  local t0 t1 m0 m1
  m0=$(machine_cpu)
  t0=$(date +%s.%N)
  /usr/bin/time -f '%U %S' -o "$WORK/cpu" "$@"
  t1=$(date +%s.%N)
  m1=$(machine_cpu)
  cmp -s "$WORK/src" "$WORK/out" || { echo "$name: downloaded file differs" >&2; exit 1; }
  local rate cpu
  rate=$(echo "$SIZE_MIB / ($t1 - $t0)" | bc -l)
  cpu=$(awk '{printf "%.2f", $1 + $2}' "$WORK/cpu")
  printf '%-22s %8.1f MiB/s  client CPU %5s s  machine CPU %5.2f s\n' "$name" "$rate" "$cpu" \
    "$(echo "($m1 - $m0) / $(getconf CLK_TCK)" | bc -l)"
  echo "$name $rate" >> "$WORK/results"
}

run_cb()     { timed "cryptobucket-get" ${CB_PREFIX:-} "$CB" "${CBA[@]}" get s3://bench/cb.bin "$WORK/out" \
                 --concurrency "$STREAMS" --no-progress --checkpoint-dir "$WORK/cp" 2>/dev/null; }
run_cb_nofsync() { timed "cryptobucket-nofsync" "$CB" "${CBA[@]}" get s3://bench/cb.bin "$WORK/out" \
                 --concurrency "$STREAMS" --no-progress --no-fsync 2>/dev/null; }
run_plain()  { timed "rclone-plain" "${RC[@]}" copyto s3:bench/plain.bin "$WORK/out"; }
run_crypt()  { timed "rclone-crypt" "${RC[@]}" copyto sc:crypt.bin "$WORK/out"; }
run_crypt_sync() { timed "rclone-crypt+sync" sh -c '"$@" && sync "$0"' "$WORK/out" \
                     "${RC[@]}" copyto sc:crypt.bin "$WORK/out"; }

RUNS=(run_cb run_plain run_crypt run_crypt_sync run_cb_nofsync)
echo "download of ${SIZE_MIB} MiB, ${STREAMS} parallel streams, ${ROUNDS} rounds ($(rclone version | head -1))"
for round in $(seq "$ROUNDS"); do
  start_server "$WORK"
  "$CB" "${CBA[@]}" put "$WORK/src" s3://bench/cb.bin --no-progress --checkpoint-dir "$WORK/cp" 2>/dev/null
  "${RC[@]}" copyto "$WORK/src" s3:bench/plain.bin
  "${RC[@]}" copyto "$WORK/src" sc:crypt.bin
  # Williams design for 5 runs: round k (from 0) shifts the base order 0 1 4 2 3 by k/2 and
  # reverses it when k is odd.
  k=$((round - 1)); order=()
  for j in 0 1 4 2 3; do order+=("${RUNS[$(((j + k / 2) % 5))]}"); done
  if [ $((k % 2)) = 1 ]; then
    order=("${order[4]}" "${order[3]}" "${order[2]}" "${order[1]}" "${order[0]}")
  fi
  for run in "${order[@]}"; do "$run"; done
  stop_server
done
echo "summary (best / median MiB/s):"
for name in cryptobucket-get cryptobucket-nofsync rclone-plain rclone-crypt rclone-crypt+sync; do
  grep "^$name " "$WORK/results" | awk '{print $2}' | sort -n | awk -v n="$name" '
    { v[NR] = $1 } END { printf "  %-20s %8.1f / %8.1f\n", n, v[NR], v[int((NR + 1) / 2)] }'
done
