#!/usr/bin/env bash
# `cryptobucket gocryptfs pull` of two CLI builds side by side: a tree of SMALL × 1 MiB and
# 2 × LARGE_MIB MiB files is pushed once (with NEW) to a fresh examples/s3_server, then OLD and
# NEW pull it in alternating order, `sync` before each run; every pull is compared with the
# source (`diff -r`). Client CPU is user + system seconds of the pulling process.
#
#   git worktree add /tmp/old <commit> && (cd /tmp/old && cargo build --release --bin cryptobucket)
#   scripts/bench-gocryptfs-pull.sh /tmp/old/target/release/cryptobucket \
#       target/release/cryptobucket [ROUNDS=3] [SMALL=100] [LARGE_MIB=512]
#
# The numbers in BENCHMARKS.md ("gocryptfs pull through the download engine") come from it.
set -euo pipefail
cd "$(dirname "$0")/.."

OLD="$(realpath "$1")"
NEW="$(realpath "$2")"
ROUNDS="${3:-3}"
SMALL="${4:-100}"
LARGE_MIB="${5:-512}"

cargo build --release --quiet --example s3_server
. scripts/bench-lib.sh
WORK="$(mktemp -d)"
trap 'stop_server; rm -rf "$WORK"' EXIT

mkdir -p "$WORK/src"
start_server "$WORK"
export CRYPTOBUCKET_CHECKPOINT_DIR="$WORK/checkpoints"

for i in $(seq "$SMALL"); do head -c 1048576 /dev/urandom > "$WORK/src/f$i.bin"; done
for i in 0 1; do head -c "$((LARGE_MIB << 20))" /dev/urandom > "$WORK/src/shard-$i.bin"; done
echo "bench password" > "$WORK/pass"
"$NEW" --force-path-style gocryptfs push "$WORK/src" s3://bench/g/ \
  --password-file "$WORK/pass" --scryptn 10 --no-progress
bytes="$(du -sb "$WORK/src" | cut -f1)"

for r in $(seq "$ROUNDS"); do
  order=(old new)
  if [ $((r % 2)) -eq 0 ]; then order=(new old); fi
  for which in "${order[@]}"; do
    bin="$OLD"
    if [ "$which" = new ]; then bin="$NEW"; fi
    rm -rf "$WORK/out"
    sync
    start=$(date +%s.%N)
    /usr/bin/time -f '%U %S' -o "$WORK/cpu" \
      "$bin" --force-path-style gocryptfs pull s3://bench/g/ "$WORK/out" \
      --password-file "$WORK/pass" > /dev/null 2>&1
    end=$(date +%s.%N)
    diff -r "$WORK/src" "$WORK/out" > /dev/null
    cpu=$(awk '{printf "%.2f", $1 + $2}' "$WORK/cpu")
    awk -v r="$r" -v w="$which" -v s="$start" -v e="$end" -v b="$bytes" -v c="$cpu" \
      'BEGIN { printf "round %s %s: %.2f s (%.0f MB/s), client CPU %s s\n", r, w, e - s, b / (e - s) / 1e6, c }'
  done
done
