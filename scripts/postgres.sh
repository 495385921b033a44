# Starts a throwaway PostgreSQL 15 on a free loopback port, for tests and benchmarks; sourced by scripts/test and
# scripts/bench. Sets KEYHAVEN_TEST_POSTGRES_URL and stops and removes the server when the calling script exits.

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

postgres_install() {
    if [ ! -x "$PG_BIN/initdb" ]; then
        echo "==> installing postgresql-15"
        export DEBIAN_FRONTEND=noninteractive
        $SUDO apt-get update -qq
        $SUDO apt-get install -y -qq postgresql-15 >/dev/null
    fi
}

# Runs a PostgreSQL binary as the postgres user when we are root (the server refuses to run as root).
as_postgres() {
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/false postgres
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    local port
    for _ in $(seq 1 100); do
        port=$((20000 + RANDOM % 20000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    echo "no free port found" >&2
    return 1
}

postgres_stop() {
    if [ -n "${PG_DIR:-}" ] && [ -d "$PG_DIR" ]; then
        as_postgres "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
        rm -rf "$PG_DIR"
    fi
}

postgres_start() {
    postgres_install
    PG_DIR=$(mktemp -d /tmp/keyhaven-pg.XXXXXX)
    chmod 755 "$PG_DIR"
    [ "$(id -u)" = 0 ] && chown postgres "$PG_DIR" 2>/dev/null || true
    trap postgres_stop EXIT
    local password port
    password="pw-$RANDOM$RANDOM"
    port=$(free_port)
    echo "$password" >"$PG_DIR/pwfile"
    [ "$(id -u)" = 0 ] && chown postgres "$PG_DIR/pwfile"
    as_postgres "$PG_BIN/initdb" -D "$PG_DIR/data" -U keyhaven --pwfile="$PG_DIR/pwfile" -A scram-sha-256 \
        -E UTF8 --no-sync >"$PG_DIR/initdb.log" 2>&1 || { cat "$PG_DIR/initdb.log"; return 1; }
    # Every test opens its own pool (up to 16 connections, more for the tests that run two servers), and the
    # suites run in parallel: room for all of them at once.
    as_postgres "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $PG_DIR -c fsync=off -c max_connections=600" start \
        >/dev/null || { cat "$PG_DIR/server.log"; return 1; }
    export KEYHAVEN_TEST_POSTGRES_URL="postgres://keyhaven:$password@127.0.0.1:$port/postgres?sslmode=disable"
    echo "==> PostgreSQL 15 running on 127.0.0.1:$port"
}

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi
