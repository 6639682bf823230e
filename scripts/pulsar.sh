#!/usr/bin/env bash
# A real Apache Pulsar 4.0.7 broker for the Pulsar transport's tests and benchmark: standalone
# in one JVM (broker + in-process bookie, RocksDB metadata, no ZooKeeper), on 127.0.0.1 only,
# from the jars on Maven Central. No Docker.
#
#   scripts/pulsar.sh fetch                 resolve the jars into the cache (skipped if present)
#   scripts/pulsar.sh start [--auth]        start a broker, wait until it is ready, write its env file
#   scripts/pulsar.sh env [--auth]          print the env file's path (source it)
#   scripts/pulsar.sh stop [--auth]         SIGTERM (SIGKILL after a timeout), remove its data
#   scripts/pulsar.sh kill [--auth]         SIGKILL, keep the data (for crash tests)
#   scripts/pulsar.sh restart [--auth]      start again on the kept data and ports
#   scripts/pulsar.sh wait [--auth]         wait until the running broker is ready
#
# Two brokers can run side by side: the plain one and one with token authentication
# (`--auth`: the script generates a secret key and a token for the superuser role `admin`).
# The env file exports, for the plain broker, INFINITIC_PULSAR_URL and INFINITIC_PULSAR_ADMIN_URL;
# for the `--auth` one, INFINITIC_PULSAR_AUTH_URL, INFINITIC_PULSAR_AUTH_ADMIN_URL and
# INFINITIC_PULSAR_AUTH_TOKEN. Sourcing both is fine.
#
# Environment: INFINITIC_PULSAR_HOME (jar cache, outside the clone; default
# ~/.cache/infinitic/pulsar-4.0.7), INFINITIC_PULSAR_RUN (run dirs; default
# ${TMPDIR:-/tmp}/infinitic-pulsar), INFINITIC_PULSAR_HEAP (default 512m).
set -euo pipefail

VERSION=4.0.7
HERE="$(cd "$(dirname "$0")" && pwd)"
HOME_DIR="${INFINITIC_PULSAR_HOME:-$HOME/.cache/infinitic/pulsar-$VERSION}"
LIB="$HOME_DIR/lib"
RUN_ROOT="${INFINITIC_PULSAR_RUN:-${TMPDIR:-/tmp}/infinitic-pulsar}"
HEAP="${INFINITIC_PULSAR_HEAP:-512m}"
READY_TIMEOUT="${INFINITIC_PULSAR_READY_TIMEOUT:-120}"

log() { echo "pulsar.sh: $*" >&2; }
die() { log "$*"; exit 1; }

fetch() {
    if [ -f "$LIB/pulsar-broker-$VERSION.jar" ] && [ "$(ls "$LIB" | wc -l)" -ge 300 ]; then
        return 0
    fi
    command -v mvn >/dev/null || die "mvn not found (apt-get install maven)"
    command -v java >/dev/null || die "java not found (apt-get install openjdk-17-jre-headless)"
    log "fetching Pulsar $VERSION jars into $LIB (Maven Central, ~230 MB)"
    mkdir -p "$LIB"
    (cd "$HERE/pulsar" && mvn -q -B dependency:copy-dependencies -DincludeScope=runtime \
        -DoutputDirectory="$LIB")
    [ -f "$LIB/pulsar-broker-$VERSION.jar" ] || die "the jars did not resolve (see mvn output)"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Selects the broker's run dir from the arguments: "plain" or "auth".
name_of() {
    if [ "${1:-}" = "--auth" ]; then echo auth; else echo plain; fi
}

java_cmd() {
    local dir="$1"
    local opens=(
        --add-opens java.base/java.io=ALL-UNNAMED
        --add-opens java.base/java.util.zip=ALL-UNNAMED
        --add-opens java.base/sun.net=ALL-UNNAMED
        --add-opens java.management/sun.management=ALL-UNNAMED
        --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED
        --add-opens java.base/jdk.internal.platform=ALL-UNNAMED
        --add-opens java.base/java.lang=ALL-UNNAMED
        --add-opens java.base/java.nio=ALL-UNNAMED
        --add-opens java.base/jdk.internal.misc=ALL-UNNAMED
        --add-exports java.base/jdk.internal.misc=ALL-UNNAMED
    )
    JAVA_ARGS=(java "-Xmx$HEAP" "-Xms128m" -XX:+UseG1GC "${opens[@]}"
        -Dio.netty.tryReflectionSetAccessible=true
        -Dpulsar.allocator.exit_on_oom=true
        -Dlog4j2.formatMsgNoLookups=true
        -cp "$LIB/*"
        org.apache.pulsar.PulsarStandaloneStarter
        --config "$dir/standalone.conf"
        --no-functions-worker --no-stream-storage
        --metadata-dir "$dir/data/metadata"
        --bookkeeper-dir "$dir/data/bookkeeper"
        --bookkeeper-port "$(cat "$dir/bookie.port")"
        -a 127.0.0.1)
}

write_config() {
    local dir="$1" auth="$2" port="$3" web="$4"
    {
        echo "clusterName=standalone"
        echo "bindAddress=127.0.0.1"
        echo "advertisedAddress=127.0.0.1"
        echo "brokerServicePort=$port"
        echo "webServicePort=$web"
        # Empty: RocksDB metadata in --metadata-dir, no ZooKeeper.
        echo "metadataStoreUrl="
        # Keep the in-process bookie on 127.0.0.1.
        echo "listeningInterface=lo"
        echo "allowEphemeralPorts=true"
        # Flush the journal as soon as its queue is empty (sequential publish 210/s -> 500-880/s).
        echo "journalFlushWhenQueueEmpty=true"
        echo "managedLedgerDefaultEnsembleSize=1"
        echo "managedLedgerDefaultWriteQuorum=1"
        echo "managedLedgerDefaultAckQuorum=1"
        # Delayed messages are checked every 10 ms (the default, 1 s, makes timers late).
        echo "delayedDeliveryEnabled=true"
        echo "delayedDeliveryTickTimeMillis=10"
        # Never before deliverAt (by default a delayed message may come up to a tick early:
        # a durable timer firing before its time; benches/chaos saw 39 of 1,500, 1-5 ms early).
        echo "isDelayedDeliveryDeliverAtTimeStrict=true"
        # Consumers that caught up are told of new entries at once (the default waits 10 ms,
        # which is the whole of a sequential publish-to-receive latency otherwise).
        echo "managedLedgerNewEntriesCheckDelayInMillis=0"
        echo "allowAutoTopicCreation=true"
        echo "allowAutoTopicCreationType=non-partitioned"
        # Test topics and their dead letters stay until the broker's data is removed.
        echo "brokerDeleteInactiveTopicsEnabled=false"
        echo "maxMessageSize=5242880"
        if [ "$auth" = auth ]; then
            echo "authenticationEnabled=true"
            echo "authenticationProviders=org.apache.pulsar.broker.authentication.AuthenticationProviderToken"
            echo "tokenSecretKey=file://$dir/secret.key"
            echo "superUserRoles=admin"
            echo "authorizationEnabled=false"
            # The broker's own client (standalone setup, internal admin calls) authenticates too.
            echo "brokerClientAuthenticationPlugin=org.apache.pulsar.client.impl.auth.AuthenticationToken"
            echo "brokerClientAuthenticationParameters=file://$dir/admin.token"
        fi
    } > "$dir/standalone.conf"
}

make_token() {
    local dir="$1"
    local cli=(java -cp "$LIB/*" org.apache.pulsar.utils.auth.tokens.TokensCliUtils)
    "${cli[@]}" create-secret-key --output "$dir/secret.key" >/dev/null 2>>"$dir/token.log"
    "${cli[@]}" create --secret-key "file://$dir/secret.key" --subject admin \
        > "$dir/admin.token" 2>>"$dir/token.log"
    [ -s "$dir/admin.token" ] || die "could not create a token (see $dir/token.log)"
}

curl_admin() {
    local dir="$1" path="$2"
    local web
    web="$(cat "$dir/web.port")"
    if [ -f "$dir/admin.token" ]; then
        curl -sf --max-time 3 -H "Authorization: Bearer $(cat "$dir/admin.token")" \
            "http://127.0.0.1:$web$path"
    else
        curl -sf --max-time 3 "http://127.0.0.1:$web$path"
    fi
}

wait_ready() {
    local dir="$1"
    local pid
    pid="$(cat "$dir/pid")"
    local deadline=$((SECONDS + READY_TIMEOUT))
    while [ $SECONDS -lt $deadline ]; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 40 "$dir/broker.log" >&2 || true
            die "the broker (pid $pid) exited during startup; log: $dir/broker.log"
        fi
        if curl_admin "$dir" /admin/v2/clusters 2>/dev/null | grep -q standalone \
            && curl_admin "$dir" /admin/v2/namespaces/public 2>/dev/null | grep -q 'public/default' \
            && (exec 3<>"/dev/tcp/127.0.0.1/$(cat "$dir/broker.port")") 2>/dev/null; then
            log "ready: pulsar://127.0.0.1:$(cat "$dir/broker.port") (${SECONDS}s, $(basename "$dir"))"
            return 0
        fi
        sleep 0.5
    done
    tail -n 40 "$dir/broker.log" >&2 || true
    die "the broker was not ready within ${READY_TIMEOUT}s; log: $dir/broker.log"
}

write_env() {
    local dir="$1" name="$2"
    local url="pulsar://127.0.0.1:$(cat "$dir/broker.port")"
    local admin="http://127.0.0.1:$(cat "$dir/web.port")"
    if [ "$name" = auth ]; then
        {
            echo "export INFINITIC_PULSAR_AUTH_URL=$url"
            echo "export INFINITIC_PULSAR_AUTH_ADMIN_URL=$admin"
            echo "export INFINITIC_PULSAR_AUTH_TOKEN=$(cat "$dir/admin.token")"
        } > "$dir/env"
    else
        {
            echo "export INFINITIC_PULSAR_URL=$url"
            echo "export INFINITIC_PULSAR_ADMIN_URL=$admin"
        } > "$dir/env"
    fi
}

launch() {
    local dir="$1"
    java_cmd "$dir"
    # setsid: the broker outlives this script and gets its own process group.
    setsid "${JAVA_ARGS[@]}" >>"$dir/broker.log" 2>&1 < /dev/null &
    echo $! > "$dir/pid"
}

start() {
    local name
    name="$(name_of "${1:-}")"
    local dir="$RUN_ROOT/$name"
    if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
        log "already running ($name, pid $(cat "$dir/pid"))"
        wait_ready "$dir"
        write_env "$dir" "$name"
        echo "$dir/env"
        return 0
    fi
    fetch
    rm -rf "$dir"
    mkdir -p "$dir/data"
    free_port > "$dir/broker.port"
    free_port > "$dir/web.port"
    free_port > "$dir/bookie.port"
    write_config "$dir" "$name" "$(cat "$dir/broker.port")" "$(cat "$dir/web.port")"
    if [ "$name" = auth ]; then
        make_token "$dir"
    fi
    launch "$dir"
    wait_ready "$dir"
    write_env "$dir" "$name"
    echo "$dir/env"
}

stop_pid() {
    local dir="$1" signal_first="$2"
    [ -f "$dir/pid" ] || return 0
    local pid
    pid="$(cat "$dir/pid")"
    if kill -0 "$pid" 2>/dev/null; then
        kill "-$signal_first" "$pid" 2>/dev/null || true
        for _ in $(seq 1 60); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "pid $pid ignored SIG$signal_first for 30 s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$dir/pid"
}

stop() {
    local dir
    dir="$RUN_ROOT/$(name_of "${1:-}")"
    stop_pid "$dir" TERM
    rm -rf "$dir"
}

kill_broker() {
    local dir
    dir="$RUN_ROOT/$(name_of "${1:-}")"
    stop_pid "$dir" KILL
}

restart() {
    local name
    name="$(name_of "${1:-}")"
    local dir="$RUN_ROOT/$name"
    [ -f "$dir/standalone.conf" ] || die "no broker data in $dir: start one first"
    stop_pid "$dir" TERM
    launch "$dir"
    wait_ready "$dir"
    write_env "$dir" "$name"
}

case "${1:-}" in
    fetch) fetch ;;
    start) start "${2:-}" ;;
    stop) stop "${2:-}" ;;
    kill) kill_broker "${2:-}" ;;
    restart) restart "${2:-}" ;;
    wait) wait_ready "$RUN_ROOT/$(name_of "${2:-}")" ;;
    env) echo "$RUN_ROOT/$(name_of "${2:-}")/env" ;;
    *) die "usage: $0 fetch | start [--auth] | stop [--auth] | kill [--auth] | restart [--auth] | wait [--auth] | env [--auth]" ;;
esac
