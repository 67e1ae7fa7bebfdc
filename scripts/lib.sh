# Shared by scripts/demo and scripts/test (sourced, not run): the project's virtualenv and its local services.
# Everything is derived from the repository's own files: Python 3.11+, pyproject.toml and constraints.txt.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${AUTO_RENDITIONS_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"

log() { printf '==> %s\n' "$*" >&2; }

find_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3.11 python3.12 python3.13 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    echo "error: Python 3.11 or newer is needed (set PYTHON=/path/to/python3.11)" >&2
    return 1
}

# python_for X.Y: print the path of a working pythonX.Y: on PATH, or installed by pyenv when its shim does not
# select that version (pyenv's shims only run the versions named in its version file).
python_for() {
    local want="python$1" candidate
    if command -v "$want" >/dev/null 2>&1 && "$want" -c '' 2>/dev/null; then
        command -v "$want"
        return 0
    fi
    for candidate in "${PYENV_ROOT:-$HOME/.pyenv}/versions/$1".*/bin/"$want"; do
        if [ -x "$candidate" ] && "$candidate" -c '' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

# ensure_venv EXTRAS: create $VENV if needed and install the project with EXTRAS (e.g. "test" or
# "postgres,redis") pinned by constraints.txt. Skipped when pyproject.toml, constraints.txt and EXTRAS are
# unchanged since the last install.
ensure_venv() {
    local extras="$1" python stamp want
    if [ ! -x "$PY" ]; then
        python="$(find_python)" || return 1
        log "creating virtualenv $VENV with $python"
        "$python" -m venv "$VENV" || return 1
    fi
    stamp="$VENV/.auto-renditions-installed-${extras//,/-}"
    want="$(cat "$ROOT/pyproject.toml" "$ROOT/constraints.txt" | "$PY" -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return 0
    fi
    log "installing the project with [$extras] (pinned by constraints.txt)"
    (cd "$ROOT" && "$PY" -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[$extras]") || return 1
    echo "$want" >"$stamp"
}

# ensure_mysql_client_build: what pip needs to build mysqlclient (the [mysql] extra): the MariaDB client headers
# found through pkg-config, and a C compiler. Installs Debian's packages when apt is available.
ensure_mysql_client_build() {
    if pkg-config --exists mysqlclient 2>/dev/null || pkg-config --exists libmariadb 2>/dev/null; then
        command -v cc >/dev/null 2>&1 && return 0
    fi
    command -v apt-get >/dev/null 2>&1 || return 1
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
    log "installing Debian's libmariadb-dev, pkg-config and gcc to build mysqlclient"
    $sudo apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq libmariadb-dev pkg-config gcc >&2
}

mysql_up() {
    "$PY" - <<'EOF' >/dev/null 2>&1
import os, MySQLdb
MySQLdb.connect(
    host=os.environ.get("AUTO_RENDITIONS_MYSQL_HOST", "127.0.0.1"), port=int(os.environ.get("AUTO_RENDITIONS_MYSQL_PORT", "3306")),
    user=os.environ.get("AUTO_RENDITIONS_MYSQL_USER", "root"), password=os.environ.get("AUTO_RENDITIONS_MYSQL_PASSWORD", ""),
    connect_timeout=3,
).close()
EOF
}

pg_up() {
    "$PY" - <<'EOF' >/dev/null 2>&1
import os, psycopg
psycopg.connect(
    host=os.environ.get("AUTO_RENDITIONS_PG_HOST", "127.0.0.1"), port=os.environ.get("AUTO_RENDITIONS_PG_PORT", "5432"),
    user=os.environ.get("AUTO_RENDITIONS_PG_USER", "postgres"), dbname="postgres", connect_timeout=3,
).close()
EOF
}

redis_up() {
    "$PY" - <<'EOF' >/dev/null 2>&1
import os, redis
redis.Redis.from_url(os.environ.get("AUTO_RENDITIONS_REDIS_URL", "redis://127.0.0.1:6379/15"), socket_connect_timeout=3).ping()
EOF
}

wait_for() { # wait_for CHECK SECONDS
    local i
    for ((i = 0; i < $2; i++)); do
        "$1" && return 0
        sleep 1
    done
    return 1
}

# ensure_postgres / ensure_redis: start the local server if it is not answering and this machine can start it.
ensure_postgres() {
    pg_up && return 0
    if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
        local version
        version="$(ls /etc/postgresql | sort -V | tail -n 1)"
        log "starting PostgreSQL $version"
        pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2 || true
    fi
    wait_for pg_up 30
}

ensure_mysql() {
    mysql_up && return 0
    if command -v service >/dev/null 2>&1 && [ -x /etc/init.d/mariadb ]; then
        log "starting MariaDB"
        service mariadb start >&2 || true
    fi
    wait_for mysql_up 60
}

ensure_redis() {
    redis_up && return 0
    if command -v redis-server >/dev/null 2>&1; then
        log "starting Redis"
        mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
        redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
            --dir /var/lib/redis --logfile /var/log/redis/ci.log >&2 || true
    fi
    wait_for redis_up 15
}
