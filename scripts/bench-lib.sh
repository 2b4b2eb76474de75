# Shared by the bench-*.sh scripts (sourced, not run): a release examples/s3_server in a fresh
# data dir, with the credentials and region the CLI needs exported.
#
#   . scripts/bench-lib.sh
#   start_server "$WORK" [s3_server arguments, e.g. --slow-gets-at BYTE --slow-rate MIB]
#   ... ; stop_server
#
# start_server (re)creates "$WORK/data" (or $SERVER_DATA_DIR: e.g. a tmpfs, so that the
# server's reads do not share the client's disk, as with a remote store; the caller removes
# it), serves bucket `bench` from it, sets SERVER_PID and exports AWS_ENDPOINT_URL (and
# RCLONE_CONFIG_S3_ENDPOINT, for the rclone remotes).
# make_source WORK MIB writes WORK/src (random bytes) and an RSA key pair (WORK/private.pem,
# WORK/public.pem) for the CLI's --rsa-*-key options.

SERVER_PID=
export AWS_ACCESS_KEY_ID=cryptobucket-test AWS_SECRET_ACCESS_KEY=cryptobucket-test-secret
export AWS_REGION=us-east-1 AWS_CONFIG_FILE=/nonexistent AWS_SHARED_CREDENTIALS_FILE=/nonexistent

start_server() {
  local work=$1; shift
  local data="${SERVER_DATA_DIR:-$work/data}"
  rm -rf "$data"
  mkdir -p "$data"
  target/release/examples/s3_server --dir "$data" --bucket bench "$@" \
    > "$work/server.out" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 100); do
    grep -q AWS_ENDPOINT_URL "$work/server.out" 2>/dev/null && break
    sleep 0.1
  done
  AWS_ENDPOINT_URL="$(sed -n 's/^export AWS_ENDPOINT_URL=//p' "$work/server.out")"
  [ -n "$AWS_ENDPOINT_URL" ] || { echo "s3_server did not start:" >&2; cat "$work/server.out" >&2; return 1; }
  export AWS_ENDPOINT_URL RCLONE_CONFIG_S3_ENDPOINT="$AWS_ENDPOINT_URL"
}

stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}

make_source() {
  head -c "$(($2 << 20))" /dev/urandom > "$1/src"
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1/private.pem" 2>/dev/null
  openssl pkey -in "$1/private.pem" -pubout -out "$1/public.pem"
}
