#!/usr/bin/env bash
# The Pulsar transport's tests against real brokers: installs what the build needs (protoc,
# OpenSSL headers, Java 17, Maven), fetches the broker's jars (cached outside the clone),
# starts a plain broker and one with token authentication, runs clippy and the transport
# contract suite with `--features pulsar` under CI=true (a missing broker fails, never skips),
# runs workflows across a broker SIGKILL and restart (`tests/pulsar_restart.rs`, on a third
# broker the test starts and stops itself), and stops the brokers on exit.
#
#   scripts/test-pulsar.sh            everything
#   scripts/test-pulsar.sh --bench    also the benchmark (`cargo bench --bench pulsar`)
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v protoc >/dev/null || need+=(protobuf-compiler)
command -v pkg-config >/dev/null || need+=(pkg-config)
dpkg -s libssl-dev >/dev/null 2>&1 || need+=(libssl-dev)
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need+=(maven)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
    echo "== installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
fi

export INFINITIC_PULSAR_RUN="${INFINITIC_PULSAR_RUN:-${TMPDIR:-/tmp}/infinitic-pulsar-test-$$}"
cleanup() {
    scripts/pulsar.sh stop || true
    scripts/pulsar.sh stop --auth || true
    # The restart test's own brokers (it stops them itself, unless it was interrupted).
    for own in restart two-workers; do
        INFINITIC_PULSAR_RUN="$INFINITIC_PULSAR_RUN/$own" scripts/pulsar.sh stop || true
    done
    rm -rf "$INFINITIC_PULSAR_RUN"
}
trap cleanup EXIT

echo "== pulsar: fetch jars"
scripts/pulsar.sh fetch
echo "== pulsar: start brokers (plain, token auth)"
# shellcheck disable=SC1090
source "$(scripts/pulsar.sh start)"
# shellcheck disable=SC1090
source "$(scripts/pulsar.sh start --auth)"

echo "== pulsar: lint"
cargo clippy --workspace --all-targets --features pulsar -- -D warnings

echo "== pulsar: tests (transport contract on SQLite, memory and Pulsar)"
CI=true cargo test --features pulsar --test transport
CI=true cargo test -p infinitic-runtime --features pulsar --lib store::pulsar
CI=true cargo test -p infinitic-runtime --features pulsar --doc store::pulsar

echo "== pulsar: workflows across a broker SIGKILL and restart (a broker of the test's own)"
CI=true cargo test --features pulsar --test pulsar_restart -- --nocapture

if [ "${1:-}" = "--bench" ]; then
    echo "== pulsar: benchmark"
    cargo bench --bench pulsar --features pulsar
fi
