#!/usr/bin/env bash
# The billing example as three processes on Apache Pulsar + PostgreSQL: a service worker (the
# billing services only), a workflow worker (the billing workflow only) and a client, all
# configured by examples/billing/distributed.toml with environment overrides. Checks that the
# client saw every workflow complete, that each worker ran only its part, and that both
# workers stop gracefully on SIGTERM.
#
#   scripts/billing-distributed.sh [USERS]      # default 4 users
#
# Servers: uses those of the environment (INFINITIC_PG_URL from scripts/postgres.sh,
# INFINITIC_PULSAR_URL from scripts/pulsar.sh) when set; otherwise starts throwaway ones and
# stops them on exit. Run by scripts/test-distributed.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

users="${1:-4}"
run="$(mktemp -d "${TMPDIR:-/tmp}/billing-distributed.XXXXXX")"
pids=()
started_pg=""
started_pulsar=""
cleanup() {
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    if [ -n "$started_pulsar" ]; then
        INFINITIC_PULSAR_RUN="$started_pulsar" scripts/pulsar.sh stop 2>/dev/null || true
        rm -rf "$started_pulsar"
    fi
    if [ -n "$started_pg" ]; then scripts/postgres.sh stop "$started_pg" || true; fi
    rm -rf "$run"
}
trap cleanup EXIT
fail() {
    echo "billing-distributed: FAILED: $*" >&2
    for log in "$run"/*.log; do echo "== $log" >&2; tail -n 30 "$log" >&2; done
    exit 1
}

t0=$SECONDS
if [ -z "${INFINITIC_PG_URL:-}" ]; then
    scripts/postgres.sh install
    # shellcheck disable=SC1090
    source "$(scripts/postgres.sh start --fsync off)"
    started_pg="$INFINITIC_PG_DIR"
fi
if [ -z "${INFINITIC_PULSAR_URL:-}" ]; then
    export INFINITIC_PULSAR_RUN="$run/pulsar"
    started_pulsar="$INFINITIC_PULSAR_RUN"
    # shellcheck disable=SC1090
    source "$(scripts/pulsar.sh start)"
fi
echo "== servers ready ($((SECONDS - t0)) s): Pulsar at $INFINITIC_PULSAR_URL, PostgreSQL at ${INFINITIC_PG_URL##*@}"

cargo build --features postgres,pulsar --example billing
billing="${CARGO_TARGET_DIR:-target}/debug/examples/billing"
config=examples/billing/distributed.toml

# The overrides: the servers' addresses (the URL holds the password: never in the file), and
# a schema, topics and subscription of this run only, so a run never sees an earlier one's
# workflows.
export INFINITIC_POSTGRES_URL="$INFINITIC_PG_URL"   # INFINITIC_PULSAR_URL comes from pulsar.sh
export INFINITIC_POSTGRES_SCHEMA="billing_$$"
export INFINITIC_PULSAR_TOPIC_PREFIX="billing$$"
export INFINITIC_PULSAR_SUBSCRIPTION="billing$$"
# A server started with --tls (as scripts/test-distributed.sh does): connect with TLS, checked
# against its CA.
if [ -n "${INFINITIC_PG_CA:-}" ]; then export INFINITIC_POSTGRES_CA_FILE="$INFINITIC_PG_CA"; fi

t1=$SECONDS
"$billing" service-worker --config "$config" > "$run/service-worker.log" 2>&1 &
pids+=($!)
"$billing" workflow-worker --config "$config" > "$run/workflow-worker.log" 2>&1 &
pids+=($!)
# The client needs no database writes: once the workers have created the schema, it
# connects as a role granted reads only (scripts/postgres.sh creates `infinitic_reader`).
client_url="$INFINITIC_PG_URL"
if [ -n "${INFINITIC_PG_READER_URL:-}" ]; then
    for _ in $(seq 300); do
        found=$(psql "$INFINITIC_PG_URL" -XAtqc \
            "SELECT 1 FROM pg_tables WHERE schemaname = '$INFINITIC_POSTGRES_SCHEMA' AND tablename = 'schema_version'" 2>/dev/null || true)
        [ "$found" = 1 ] && break
        sleep 0.1
    done
    [ "$found" = 1 ] || fail "the workers did not create schema $INFINITIC_POSTGRES_SCHEMA"
    psql "$INFINITIC_PG_URL" -Xqc "GRANT USAGE ON SCHEMA $INFINITIC_POSTGRES_SCHEMA TO infinitic_reader;
        GRANT SELECT ON ALL TABLES IN SCHEMA $INFINITIC_POSTGRES_SCHEMA TO infinitic_reader;" \
        || fail "cannot grant reads to infinitic_reader"
    client_url="$INFINITIC_PG_READER_URL"
fi
echo "== client: $users users (service worker pid ${pids[0]}, workflow worker pid ${pids[1]}; PostgreSQL as ${client_url%%:*}://${client_url#*://}" | sed 's/:[^:@]*@/:***@/'
INFINITIC_POSTGRES_URL="$client_url" timeout 90 "$billing" client --config "$config" \
    --users "$users" --month-ms 500 > "$run/client.log" 2>&1 || fail "the client exited with $?"
cat "$run/client.log"
client_seconds=$((SECONDS - t1))

completed=$(grep -c "workflow completed" "$run/client.log" || true)
[ "$completed" -eq "$users" ] || fail "$completed of $users workflows completed"
grep -q "payment of .* requested" "$run/service-worker.log" || fail "the service worker ran no payment"
if grep -q "consumption is\|payment of" "$run/workflow-worker.log"; then
    fail "the workflow worker ran a service (it hosts the workflow only)"
fi

echo "== stopping the workers (SIGTERM)"
for pid in "${pids[@]}"; do kill -TERM "$pid"; done
for pid in "${pids[@]}"; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && fail "worker $pid did not stop within 10 s of SIGTERM"
    wait "$pid" || fail "worker $pid exited with $?"
done
pids=()
grep -q "service worker stopped" "$run/service-worker.log" || fail "the service worker did not stop gracefully"
grep -q "workflow worker stopped" "$run/workflow-worker.log" || fail "the workflow worker did not stop gracefully"
echo "== billing on Pulsar + PostgreSQL: $completed/$users workflows completed across 3 processes (client run ${client_seconds} s, total $((SECONDS - t0)) s)"
