#!/usr/bin/env bash
# The project's test command (README "Test"): from a fresh clone it creates the Python venv with
# the reference SDK (oss2 2.19.1), boto3 and moto[server] (a local AWS KMS), then runs formatting and lint checks and the whole
# test suite, interop tests included (they fail, never skip, without the venv).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${CRYPTOBUCKET_VENV:-$PWD/.venv}"
need_venv() {
  [ ! -x "$VENV/bin/python" ] || [ ! -x "$VENV/bin/moto_server" ] ||
    ! "$VENV/bin/python" -c 'import oss2, boto3, moto, aliyunsdkcore; assert oss2.__version__ == "2.19.1" and moto.__version__ == "5.1.22" and aliyunsdkcore.__version__ == "2.16.1"' 2>/dev/null
}
# Also when tests/interop/requirements.txt changed since the venv was made.
if [ -x "$VENV/bin/python" ] && ! cmp -s tests/interop/requirements.txt "$VENV/requirements.txt"; then
  rm -rf "$VENV"
fi
if need_venv; then
  echo "== creating Python venv at $VENV (oss2 2.19.1, boto3, moto[server] 5.1.22)"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r tests/interop/requirements.txt
  cp tests/interop/requirements.txt "$VENV/requirements.txt"
fi
export CRYPTOBUCKET_PYTHON="$VENV/bin/python"

# A fresh clone gains nothing from incremental compilation; its cache was 1.7 GB of the build.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
echo "== disk free: $(df -h . | awk 'NR==2 {print $4}')"

# The >64 GiB counter test checks against the OpenSSL command line.
if ! command -v openssl >/dev/null 2>&1; then
  echo "== installing openssl"
  apt-get update -qq && apt-get install -y -qq openssl
fi

# The CLI test of `get --no-fsync` checks its system calls with strace.
if ! command -v strace >/dev/null 2>&1; then
  echo "== installing strace"
  apt-get update -qq && apt-get install -y -qq strace
fi

# The gocryptfs interop tests mount trees with the real gocryptfs (FUSE, as root).
if ! command -v gocryptfs >/dev/null 2>&1 || ! command -v fusermount3 >/dev/null 2>&1; then
  echo "== installing gocryptfs and fuse3"
  apt-get update -qq && apt-get install -y -qq gocryptfs fuse3
fi

# Garage is built before the project so that its build directory (removed when the install
# ends) and the project's target/ never take disk space at the same time.
scripts/garage-cluster.sh install

# Supply chain: licenses, bans (RUSTSEC-2023-0071's rsa crate among them) and sources.
if ! cargo deny --version 2>/dev/null | grep -q "0.20.2"; then
  echo "== installing cargo-deny 0.20.2"
  cargo install cargo-deny --version 0.20.2 --locked --quiet
fi
echo "== cargo deny check bans licenses sources"
cargo deny check bans licenses sources

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo doc (broken or private intra-doc links are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --lib --locked --quiet
echo "== cargo test"
cargo test --locked

# The same paths against a real distributed store: a 3-node Garage cluster on loopback
# (installs garage 2.5.0 from crates.io when missing: about 9 minutes, once per machine).
echo "== Garage 3-node cluster suite"
trap 'scripts/garage-cluster.sh stop >/dev/null 2>&1 || true' EXIT
scripts/garage-cluster.sh start > target/garage.env
set -a; . target/garage.env; set +a
cargo test --locked --test garage --test providers -- --ignored
