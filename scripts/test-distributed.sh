#!/usr/bin/env bash
# The distributed features' tests: installs PostgreSQL if missing, starts a throwaway server
# (fsync off, TLS on with a generated CA; it accepts plain connections too), runs clippy and
# the tests with `--features postgres` under CI=true (a test whose server is missing fails),
# and stops the server on exit; then the Pulsar transport's tests (scripts/test-pulsar.sh);
# then, with PostgreSQL still up and a Pulsar broker of its own, the deployments suite
# (tests/deployments) on its distributed deployment, the billing example as three processes
# (scripts/billing-distributed.sh), 1,000 durable timers across a broker SIGKILL
# (tests/pulsar_timers.rs, on a broker the test starts itself) and, last, the short chaos run
# (it kills and restarts that PostgreSQL). Run by .ci/run after the embedded steps.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== servers"
scripts/postgres.sh install
env_file=$(scripts/postgres.sh start --fsync off --tls)
# shellcheck disable=SC1090
source "$env_file"
# The deployments suite's broker (started at the end), in a run dir of its own.
pulsar_run="${TMPDIR:-/tmp}/infinitic-pulsar-deployments-$$"
cleanup() {
    INFINITIC_PULSAR_RUN="$pulsar_run" scripts/pulsar.sh stop 2>/dev/null || true
    # The timers test's own broker (it stops it itself, unless it was interrupted).
    INFINITIC_PULSAR_RUN="$pulsar_run/timers" scripts/pulsar.sh stop 2>/dev/null || true
    rm -rf "$pulsar_run"
    scripts/postgres.sh stop "$INFINITIC_PG_DIR"
}
trap cleanup EXIT
echo "PostgreSQL at ${INFINITIC_PG_URL##*@} (TLS CA $INFINITIC_PG_CA)"

echo "== lint (--features postgres)"
cargo clippy --workspace --all-targets --features postgres -- -D warnings

echo "== test (--features postgres)"
# The store's own tests and the state-store contract on every store, PostgreSQL included;
# the runtime's unit and doc tests with the feature on. The rest does not change with it.
export CI=true
cargo test -p infinitic-runtime --features postgres
cargo test -p infinitic --features postgres --test postgres --test store

echo "== pulsar (scripts/test-pulsar.sh)"
bash scripts/test-pulsar.sh

echo "== deployments suite on Pulsar + PostgreSQL (tests/deployments)"
# test-pulsar.sh installed what a broker needs, fetched its jars and stopped its brokers;
# PostgreSQL is still up. The same suite runs on the embedded deployment in `cargo test`.
export INFINITIC_PULSAR_RUN="$pulsar_run"
# shellcheck disable=SC1090
source "$(scripts/pulsar.sh start)"
cargo clippy --workspace --all-targets --features postgres,pulsar -- -D warnings
cargo test --features postgres,pulsar --test deployments

echo "== billing example as three processes on Pulsar + PostgreSQL (scripts/billing-distributed.sh)"
# The servers above are reused: a service worker, a workflow worker and a client, configured by
# examples/billing/distributed.toml with environment overrides.
bash scripts/billing-distributed.sh

echo "== 1,000 durable timers across a broker SIGKILL (tests/pulsar_timers.rs)"
cargo test --features postgres,pulsar --test pulsar_timers -- --nocapture

echo "== chaos, short (benches/chaos --quick)"
# 50 workflows on two workflow and two service worker processes, each kind SIGKILLed once, the
# broker (its own, under $INFINITIC_PULSAR_RUN) and the PostgreSQL above SIGKILLed and
# restarted once; fails unless every check holds. The full run: see benches/chaos/main.rs.
cargo test --features postgres,pulsar --bench chaos -- --quick
