#!/usr/bin/env bash
# A throwaway PostgreSQL for tests and benchmarks: data under a temp dir, listening on
# 127.0.0.1 only (a free port, a private socket dir), one database and user with a password.
#
#   scripts/postgres.sh install                   # apt-get PostgreSQL 15 and openssl if missing
#   scripts/postgres.sh start [--fsync on|off] [--tls] [--env FILE]
#   scripts/postgres.sh stop DIR                  # DIR: INFINITIC_PG_DIR from the env file
#   scripts/postgres.sh kill DIR                  # SIGKILL the server, keep its data (crash tests)
#   scripts/postgres.sh restart DIR               # start it again on its data, port and options
#
# `start` writes an env file (default: DIR/env) and prints its path; `source` it to get
#   INFINITIC_PG_URL      postgres://infinitic:PASSWORD@127.0.0.1:PORT/infinitic
#   INFINITIC_PG_READER_URL  the same database as `infinitic_reader`, a role that can log in
#                         and nothing else (grant it reads: clients that must not write)
#   INFINITIC_PG_DIR      the server's directory (for `stop`)
# and with --tls (the server then accepts TLS and plain connections alike):
#   INFINITIC_PG_CA       the CA that signed the server's certificate
#   INFINITIC_PG_WRONG_CA another CA, that did not (to test the error)
# Tests may run with `--fsync off` (the default here); benchmarks must use `--fsync on`.
# initdb refuses to run as root: the data dir belongs to `postgres` and the server runs as it.
set -euo pipefail

die() { echo "postgres.sh: $*" >&2; exit 1; }

bindir() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$dir" ] && [ -x "$dir/initdb" ] || die "PostgreSQL is not installed: run '$0 install'"
    echo "$dir"
}

install() {
    if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v openssl >/dev/null \
        && command -v psql >/dev/null && [ -e /usr/include/openssl/ssl.h ] \
        && command -v pkg-config >/dev/null; then
        return 0
    fi
    [ "$(id -u)" = 0 ] || die "install needs root (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # libssl-dev and pkg-config: the driver's TLS builds against the system OpenSSL.
    apt-get install -y -qq --no-install-recommends postgresql openssl libssl-dev pkg-config \
        >/dev/null
    # Debian starts a cluster of its own on 5432: not ours, not needed.
    if command -v pg_ctlcluster >/dev/null; then
        pg_lsclusters -h 2>/dev/null | while read -r version name _; do
            pg_ctlcluster "$version" "$name" stop 2>/dev/null || true
        done
    fi
}

free_port() {
    local port
    for _ in $(seq 1 50); do
        port=$((20000 + RANDOM % 40000))
        # Nothing answers there (a refused connection means it is free).
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    die "no free port found"
}

# A CA (ca.crt) and a certificate it signs for 127.0.0.1 and localhost (server.crt/key), plus
# a second CA (wrong-ca.crt) that signed nothing.
certificates() {
    local tls=$1
    mkdir -p "$tls"
    (
        cd "$tls"
        openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=infinitic test CA" \
            -keyout ca.key -out ca.crt 2>/dev/null
        openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=another CA" \
            -keyout wrong-ca.key -out wrong-ca.crt 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
            -keyout server.key -out server.csr 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > san.ext
        openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
            -extfile san.ext -out server.crt 2>/dev/null
    )
    chown postgres:postgres "$tls/server.key" "$tls/server.crt"
    chmod 600 "$tls/server.key"
}

start() {
    local fsync=off tls=no env_file=""
    while [ $# -gt 0 ]; do
        case $1 in
            --fsync) fsync=$2; shift 2 ;;
            --tls) tls=yes; shift ;;
            --env) env_file=$2; shift 2 ;;
            *) die "unknown option $1" ;;
        esac
    done
    case $fsync in on|off) ;; *) die "--fsync on|off" ;; esac
    [ "$(id -u)" = 0 ] || die "start needs root (to run the server as postgres)"
    local bin dir port password
    bin=$(bindir)
    dir=$(mktemp -d /tmp/infinitic-pg.XXXXXX)
    chmod 755 "$dir"
    mkdir -p "$dir/data" "$dir/sock" "$dir/log"
    chown postgres:postgres "$dir/data" "$dir/sock" "$dir/log"
    password=$(openssl rand -hex 16)
    reader_password=$(openssl rand -hex 16)
    # Local socket: trusted (only to create the user); TCP: password (SCRAM).
    runuser -u postgres -- "$bin/initdb" -D "$dir/data" --auth-local=trust \
        --auth-host=scram-sha-256 -U postgres -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
    local ssl_options=()
    if [ "$tls" = yes ]; then
        certificates "$dir/tls"
        ssl_options=(-c ssl=on -c "ssl_cert_file=$dir/tls/server.crt"
            -c "ssl_key_file=$dir/tls/server.key")
    fi
    local started=no
    for _ in 1 2 3 4 5; do
        port=$(free_port)
        # Kept for `restart`, which starts the server again on the same port and options.
        echo "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir/sock \
            -c fsync=$fsync -c synchronous_commit=on -c max_connections=200 \
            ${ssl_options[*]}" > "$dir/options"
        if runuser -u postgres -- "$bin/pg_ctl" -D "$dir/data" -l "$dir/log/server.log" -w -t 30 \
            -o "$(cat "$dir/options")" start >/dev/null 2>&1; then
            started=yes
            break
        fi
    done
    [ "$started" = yes ] || { tail -n 20 "$dir/log/server.log" >&2; die "the server did not start"; }
    runuser -u postgres -- "$bin/psql" -q -h "$dir/sock" -p "$port" -U postgres -d postgres \
        -v ON_ERROR_STOP=1 >/dev/null <<SQL
CREATE ROLE infinitic LOGIN CREATEDB PASSWORD '$password';
CREATE ROLE infinitic_reader LOGIN PASSWORD '$reader_password';
CREATE DATABASE infinitic OWNER infinitic;
SQL
    env_file=${env_file:-$dir/env}
    {
        echo "export INFINITIC_PG_DIR=$dir"
        echo "export INFINITIC_PG_URL=postgres://infinitic:$password@127.0.0.1:$port/infinitic"
        echo "export INFINITIC_PG_READER_URL=postgres://infinitic_reader:$reader_password@127.0.0.1:$port/infinitic"
        echo "export INFINITIC_PG_FSYNC=$fsync"
        if [ "$tls" = yes ]; then
            echo "export INFINITIC_PG_CA=$dir/tls/ca.crt"
            echo "export INFINITIC_PG_WRONG_CA=$dir/tls/wrong-ca.crt"
        fi
    } > "$env_file"
    echo "$env_file"
}

stop() {
    local dir=${1:-${INFINITIC_PG_DIR:-}}
    [ -n "$dir" ] || die "stop DIR (INFINITIC_PG_DIR)"
    case $dir in /tmp/infinitic-pg.*) ;; *) die "$dir is not a directory this script made" ;; esac
    if [ -d "$dir/data" ]; then
        runuser -u postgres -- "$(bindir)/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 \
            || true
    fi
    rm -rf "$dir"
}

# The postmaster's pid, from its pid file (empty when it is not running).
postmaster_pid() {
    head -n 1 "$1/data/postmaster.pid" 2>/dev/null || true
}

checked_dir() {
    local dir=${1:-${INFINITIC_PG_DIR:-}}
    [ -n "$dir" ] || die "$2 DIR (INFINITIC_PG_DIR)"
    case $dir in /tmp/infinitic-pg.*) ;; *) die "$dir is not a directory this script made" ;; esac
    [ -f "$dir/options" ] || die "$dir has no saved options (started by an older script?)"
    echo "$dir"
}

# SIGKILL the postmaster (its backends notice and exit): a crash, the data is kept.
kill_server() {
    local dir pid
    dir=$(checked_dir "${1:-}" kill)
    pid=$(postmaster_pid "$dir")
    [ -n "$pid" ] || die "no server running in $dir"
    kill -KILL "$pid" 2>/dev/null || true
}

# Starts the server again on its data dir (crash recovery runs), same port and options. The
# backends of a killed postmaster hold its shared memory until they exit: tried until they have.
restart() {
    local dir bin
    dir=$(checked_dir "${1:-}" restart)
    bin=$(bindir)
    for _ in $(seq 1 30); do
        if runuser -u postgres -- "$bin/pg_ctl" -D "$dir/data" -l "$dir/log/server.log" -w -t 30 \
            -o "$(cat "$dir/options")" start >/dev/null 2>&1; then
            return 0
        fi
        sleep 1
    done
    tail -n 20 "$dir/log/server.log" >&2
    die "the server did not start again"
}

command=${1:-}
shift || true
case $command in
    install) install ;;
    start) start "$@" ;;
    stop) stop "$@" ;;
    kill) kill_server "$@" ;;
    restart) restart "$@" ;;
    *) die "usage: $0 install | start [--fsync on|off] [--tls] [--env FILE] | stop DIR | kill DIR | restart DIR" ;;
esac
