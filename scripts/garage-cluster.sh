#!/usr/bin/env bash
# A 3-node Garage 2.5.0 cluster on loopback for the Garage integration suite (tests/garage.rs).
#
#   scripts/garage-cluster.sh install # installs garage if missing
#   scripts/garage-cluster.sh start   # installs garage if missing, starts 3 nodes, prints env
#   scripts/garage-cluster.sh stop    # stops the nodes and removes the data
#   scripts/garage-cluster.sh env     # prints the environment the tests read
#   scripts/garage-cluster.sh kill N / revive N   # stop / restart node N (1..3), data kept
#
# Nodes listen on 127.0.0.1: S3 API 39N0, RPC 39N1, admin 39N3 (N = 1..3); replication
# factor 3; region "garage"; fixed test credentials; bucket "cryptobucket-test". State lives in
# $GARAGE_TEST_DIR (default: target/garage-cluster).
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=2.5.0
DIR="${GARAGE_TEST_DIR:-$PWD/target/garage-cluster}"
GARAGE="${GARAGE_BIN:-$(command -v garage || true)}"
KEY_ID=GK31c2f218a2e44f485b94239e
KEY_SECRET=b892c0665f0ada8a4755dae98baa3b133590e11dae3bcc1f9d769d67f16c3835
BUCKET=cryptobucket-test
RPC_SECRET=4425f5c26c5e11581d3223904324dcb5b5d5dfb14e5e7f35e38c595424f5f1e6

ensure_garage() {
  if [ -n "$GARAGE" ] && "$GARAGE" --version 2>/dev/null | grep -q "$VERSION"; then return; fi
  echo "== installing garage $VERSION from crates.io (about 9 minutes, cached afterwards)" >&2
  cargo install garage --version "$VERSION" --locked --quiet
  GARAGE="$(command -v garage || echo "$HOME/.cargo/bin/garage")"
}

conf() { echo "$DIR/node$1/garage.toml"; }

write_conf() {
  local n=$1
  mkdir -p "$DIR/node$n/meta" "$DIR/node$n/data"
  cat > "$(conf "$n")" <<EOF
metadata_dir = "$DIR/node$n/meta"
data_dir = "$DIR/node$n/data"
db_engine = "sqlite"
replication_factor = 3
consistency_mode = "consistent"
rpc_bind_addr = "127.0.0.1:39${n}1"
rpc_public_addr = "127.0.0.1:39${n}1"
rpc_secret = "$RPC_SECRET"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:39${n}0"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:39${n}3"
admin_token = "cryptobucket-test-admin"
EOF
}

start_node() {
  local n=$1
  nohup "$GARAGE" -c "$(conf "$n")" server > "$DIR/node$n/log" 2>&1 &
  echo $! > "$DIR/node$n/pid"
  for _ in $(seq 1 100); do
    if (exec 3<>/dev/tcp/127.0.0.1/39${n}0) 2>/dev/null; then return; fi
    sleep 0.1
  done
  echo "garage node $n did not start; see $DIR/node$n/log" >&2
  exit 1
}

g() { "$GARAGE" -c "$(conf 1)" "$@"; }

healthy_count() {
  "$GARAGE" -c "$(conf "$1")" status 2>/dev/null |
    awk '/HEALTHY NODES/{h=1; next} /FAILED NODES/{h=0} h && /^[0-9a-f]+ /{n++} END{print n+0}'
}

# Reconnects node N and the live nodes in both directions, then waits until every live node
# sees every live node as healthy.
rejoin() {
  local n=$1 live=() id_n
  id_n=$("$GARAGE" -c "$(conf "$n")" node id -q)
  for m in 1 2 3; do
    [ "$m" = "$n" ] && continue
    if kill -0 "$(cat "$DIR/node$m/pid" 2>/dev/null)" 2>/dev/null; then live+=("$m"); fi
  done
  for m in "${live[@]}"; do
    id_m=$("$GARAGE" -c "$(conf "$m")" node id -q)
    "$GARAGE" -c "$(conf "$n")" node connect "$id_m" >/dev/null 2>&1 || true
    "$GARAGE" -c "$(conf "$m")" node connect "$id_n" >/dev/null 2>&1 || true
  done
  local want=$(( ${#live[@]} + 1 ))
  for _ in $(seq 1 300); do
    local ok=1
    for m in "$n" "${live[@]}"; do
      [ "$(healthy_count "$m")" -ge "$want" ] || ok=0
    done
    [ "$ok" = 1 ] && return
    sleep 0.1
  done
  echo "node $n did not rejoin the cluster" >&2
  exit 1
}

print_env() {
  echo "GARAGE_ENDPOINTS=http://127.0.0.1:3910,http://127.0.0.1:3920,http://127.0.0.1:3930"
  echo "GARAGE_ACCESS_KEY_ID=$KEY_ID"
  echo "GARAGE_SECRET_ACCESS_KEY=$KEY_SECRET"
  echo "GARAGE_REGION=garage"
  echo "GARAGE_BUCKET=$BUCKET"
  echo "GARAGE_CLUSTER_SCRIPT=$PWD/scripts/garage-cluster.sh"
}

case "${1:-}" in
  install)
    ensure_garage
    ;;
  start)
    ensure_garage
    "$0" stop >/dev/null 2>&1 || true
    for n in 1 2 3; do write_conf "$n"; start_node "$n"; done
    # Join the nodes, give each 1 GB in its own zone, apply the layout.
    for n in 2 3; do
      id=$("$GARAGE" -c "$(conf "$n")" node id -q)
      g node connect "$id" >/dev/null
    done
    for n in 1 2 3; do
      id=$("$GARAGE" -c "$(conf "$n")" node id -q | cut -d@ -f1)
      g layout assign -z "zone$n" -c 1G "$id" >/dev/null
    done
    g layout apply --version 1 >/dev/null
    g key import --yes -n cryptobucket-test "$KEY_ID" "$KEY_SECRET" >/dev/null
    g bucket create "$BUCKET" >/dev/null
    g bucket allow --read --write --owner "$BUCKET" --key cryptobucket-test >/dev/null
    print_env
    ;;
  stop)
    for n in 1 2 3; do
      if [ -f "$DIR/node$n/pid" ]; then kill "$(cat "$DIR/node$n/pid")" 2>/dev/null || true; fi
    done
    # Any node of this cluster left behind (e.g. by an interrupted run).
    pkill -f "garage -c $DIR/" 2>/dev/null || true
    sleep 0.5
    rm -rf "$DIR"
    ;;
  kill)
    pid="$(cat "$DIR/node$2/pid")"
    kill -9 "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    ;;
  revive)
    if kill -0 "$(cat "$DIR/node$2/pid")" 2>/dev/null; then
      echo "node $2 is running" >&2
      exit 1
    fi
    start_node "$2"
    rejoin "$2"
    ;;
  env)
    print_env
    ;;
  *)
    echo "usage: $0 install|start|stop|env|kill N|revive N" >&2
    exit 2
    ;;
esac
