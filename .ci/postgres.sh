#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on loopback, for the tests (sourced by .ci/run; usable by hand).
#
#   source .ci/postgres.sh && pg_throwaway_start     # exports NEEDS_REC_TEST_POSTGRES_URL
#   ...                                              # run the tests
#   pg_throwaway_stop                                # stops the server and deletes the cluster
#
# Installs the Debian package `postgresql` when its binaries are missing. The cluster lives in a
# temporary directory (never the machine's default cluster), listens on 127.0.0.1 on a free port
# with no Unix socket elsewhere, and runs as an unprivileged user: PostgreSQL refuses to run as root,
# and CI runs as root, so then the `postgres` system user (created by the package) owns it.

pg_bin_dir() {
    local dir
    for dir in /usr/lib/postgresql/*/bin; do
        [ -x "$dir/initdb" ] && { echo "$dir"; return 0; }
    done
    command -v initdb >/dev/null 2>&1 && { dirname "$(command -v initdb)"; return 0; }
    return 1
}

pg_throwaway_start() {
    local bin
    if ! bin=$(pg_bin_dir); then
        echo "postgres: installing the Debian package postgresql" >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
        bin=$(pg_bin_dir) || { echo "postgres: initdb not found after installing postgresql" >&2; return 1; }
    fi
    PG_THROWAWAY_DIR=$(mktemp -d /tmp/needs_rec_pg.XXXXXX)
    local as=()
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
        chown postgres "$PG_THROWAWAY_DIR"
        as=(runuser -u postgres --)
    fi
    PG_THROWAWAY_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    # C.UTF-8: byte-order collation (stable across machines) with Unicode case folding (lower() of Cyrillic names).
    "${as[@]}" "$bin/initdb" -D "$PG_THROWAWAY_DIR/data" -U needs_rec --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
    "${as[@]}" "$bin/pg_ctl" -D "$PG_THROWAWAY_DIR/data" -l "$PG_THROWAWAY_DIR/log" -w -t 60 start \
        -o "-c listen_addresses=127.0.0.1 -p $PG_THROWAWAY_PORT -c unix_socket_directories=$PG_THROWAWAY_DIR -c fsync=on" \
        >/dev/null || { cat "$PG_THROWAWAY_DIR/log" >&2; return 1; }
    "${as[@]}" "$bin/createdb" -h 127.0.0.1 -p "$PG_THROWAWAY_PORT" -U needs_rec needs_rec_test
    PG_THROWAWAY_BIN=$bin
    PG_THROWAWAY_AS="${as[*]}"
    export NEEDS_REC_TEST_POSTGRES_URL="postgresql+psycopg://needs_rec@127.0.0.1:$PG_THROWAWAY_PORT/needs_rec_test"
    echo "postgres: throwaway cluster on 127.0.0.1:$PG_THROWAWAY_PORT ($PG_THROWAWAY_DIR)" >&2
}

pg_throwaway_stop() {
    [ -n "${PG_THROWAWAY_DIR:-}" ] || return 0
    # shellcheck disable=SC2086
    $PG_THROWAWAY_AS "$PG_THROWAWAY_BIN/pg_ctl" -D "$PG_THROWAWAY_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$PG_THROWAWAY_DIR"
    unset PG_THROWAWAY_DIR NEEDS_REC_TEST_POSTGRES_URL
}
