#!/usr/bin/env bash
# setup_postgres.sh: prepare PostgreSQL for tron-usdt-monitor (production). Idempotent.
#
#   ./setup_postgres.sh (as root)                   # role tron_user, database tron_payments on localhost:5432
#   DATABASE_URL=postgresql://app:pw@localhost:5432/payments ./setup_postgres.sh
#
# What it does, each step only when needed (a second run changes nothing):
#   1. local server only: installs PostgreSQL from Debian packages (`apt-get install -y postgresql`)
#      when psql or the server is missing, and starts the cluster listening on the URL's port;
#   2. creates the role: LOGIN, NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
#      an existing role gets exactly those attributes back if it had more (the role `postgres` is refused);
#   3. creates the database (UTF8) owned by that role, so the role can create the schema in it and
#      nothing else; CONNECT on it is revoked from PUBLIC and granted to the role;
#   4. prints the DATABASE_URL to put in `.env`, and checks that the role can log in over TCP.
#
# Configuration (environment):
#   DATABASE_URL        postgresql://USER[:PASSWORD]@HOST[:PORT]/DB; default
#                       postgresql://tron_user:<generated>@localhost:5432/tron_payments
#   POSTGRES_ADMIN_URL  how to reach the server as a superuser, e.g. postgresql://postgres@127.0.0.1:5432
#                       (needed for a remote server); unset: the OS user `postgres` over the local socket
#                       (runuser as root, otherwise sudo -u postgres)
#   PASSWORD_FILE       where a generated password is kept; default .data/postgres-password-<role>
#                       next to this script
#
# Passwords (decision):
#   - a password given in DATABASE_URL is the role's password: it is applied on every run (same value,
#     so nothing changes in effect);
#   - without one, a random password is generated only when the role is created (unless PASSWORD_FILE
#     already holds one), stored in PASSWORD_FILE (mode 0600) before the role is created with it; later
#     runs read it back from that file and do not touch the role's password;
#   - without one, for a role that already exists and no PASSWORD_FILE: the password is left alone and
#     the URL is printed with <existing password>; give DATABASE_URL with the password to set a new one.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DEFAULT_URL="postgresql://tron_user@localhost:5432/tron_payments"

say() { printf '%s\n' "$*"; }
die() { printf 'setup_postgres.sh: error: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
}

case "${1:-}" in
    -h|--help) usage; exit 0 ;;
    "") ;;
    *) die "unknown argument '$1' (configuration is by environment; see --help)" ;;
esac

urldecode() {   # percent-decoding only ('+' stays '+' in the user and password, as libpq reads them)
    local data="${1//\\/\\\\}"
    printf '%b' "${data//%/\\x}"
}

# --- parse DATABASE_URL --------------------------------------------------------------------------
parse_url() {
    local url="$1" rest userinfo hostport
    case "$url" in
        postgresql://*) rest="${url#postgresql://}" ;;
        postgres://*) rest="${url#postgres://}" ;;
        postgresql+psycopg2://*) rest="${url#postgresql+psycopg2://}" ;;
        *) die "DATABASE_URL must start with postgresql://" ;;
    esac
    rest="${rest%%\?*}"
    [[ "$rest" == *@* ]] || die "DATABASE_URL must name a user: postgresql://USER[:PASSWORD]@HOST:PORT/DB"
    userinfo="${rest%@*}"
    rest="${rest##*@}"
    [[ "$rest" == */* ]] || die "DATABASE_URL must name a database: postgresql://USER@HOST:PORT/DB"
    hostport="${rest%%/*}"
    DB_NAME="$(urldecode "${rest#*/}")"
    DB_USER="$(urldecode "${userinfo%%:*}")"
    if [[ "$userinfo" == *:* ]]; then
        DB_PASSWORD="$(urldecode "${userinfo#*:}")"
        PASSWORD_GIVEN=1
    else
        DB_PASSWORD=""
        PASSWORD_GIVEN=0
    fi
    if [[ "$hostport" == \[*\]* ]]; then            # [::1]:5432
        DB_HOST="${hostport%%]*}"; DB_HOST="${DB_HOST#[}"
        DB_PORT="${hostport##*]}"; DB_PORT="${DB_PORT#:}"
    else
        DB_HOST="${hostport%%:*}"
        DB_PORT=""
        [[ "$hostport" == *:* ]] && DB_PORT="${hostport#*:}"
    fi
    DB_HOST="${DB_HOST:-localhost}"
    DB_PORT="${DB_PORT:-5432}"
}

validate() {
    local ident='^[A-Za-z_][A-Za-z0-9_]{0,62}$'
    [[ "$DB_USER" =~ $ident ]] || die "role name '$DB_USER' must be letters, digits and _ (at most 63)"
    [[ "$DB_NAME" =~ $ident ]] || die "database name '$DB_NAME' must be letters, digits and _ (at most 63)"
    [[ "$DB_PORT" =~ ^[0-9]{1,5}$ ]] || die "port '$DB_PORT' is not a number"
    [[ "$DB_USER" != "postgres" ]] || die "use a dedicated role for the service, not postgres"
    [[ "$DB_PASSWORD" != *$'\n'* ]] || die "the password must not contain a newline"
}

is_local_host() {
    [[ "$DB_HOST" == "localhost" || "$DB_HOST" == "127.0.0.1" || "$DB_HOST" == "::1" ]]
}

# --- install and start (local server only) -------------------------------------------------------
server_installed() {
    command -v psql >/dev/null 2>&1 && compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null
}

install_server() {
    server_installed && return 0
    [[ $EUID -eq 0 ]] || die "PostgreSQL is not installed: run this script as root to install it with apt-get"
    say "installing PostgreSQL (apt-get install -y postgresql)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
}

server_ready() {
    pg_isready -q -h 127.0.0.1 -p "$DB_PORT" >/dev/null 2>&1 || pg_isready -q -p "$DB_PORT" >/dev/null 2>&1
}

start_server() {
    server_ready && return 0
    local version="" cluster="" v c p
    while read -r v c p _; do
        if [[ "$p" == "$DB_PORT" ]]; then version="$v"; cluster="$c"; break; fi
    done < <(pg_lsclusters -h 2>/dev/null || true)
    [[ -n "$version" ]] || die "no PostgreSQL cluster is set up for port $DB_PORT (see pg_lsclusters, pg_createcluster)"
    say "starting PostgreSQL cluster $version/$cluster"
    if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
        systemctl start "postgresql@$version-$cluster"
    else
        pg_ctlcluster --skip-systemctl-redirect "$version" "$cluster" start
    fi
    local i
    for i in $(seq 1 30); do
        server_ready && return 0
        sleep 1
    done
    die "PostgreSQL $version/$cluster did not accept connections on port $DB_PORT within 30 s"
}

# --- superuser access ----------------------------------------------------------------------------
admin_psql() {   # admin_psql DBNAME [psql args...]; SQL on stdin or -c
    local db="$1"; shift
    local opts=(-X -q -At -v ON_ERROR_STOP=1)
    if [[ -n "${POSTGRES_ADMIN_URL:-}" ]]; then
        local base="${POSTGRES_ADMIN_URL%%\?*}" scheme="${POSTGRES_ADMIN_URL%%://*}://"
        local rest="${base#*://}"
        rest="${rest%%/*}"
        psql "${opts[@]}" "${scheme}${rest}/${db}" "$@"
    elif [[ "$(id -un)" == "postgres" ]]; then
        psql "${opts[@]}" -p "$DB_PORT" -d "$db" "$@"
    elif [[ $EUID -eq 0 ]]; then
        (cd / && runuser -u postgres -- psql "${opts[@]}" -p "$DB_PORT" -d "$db" "$@")
    else
        (cd / && sudo -n -u postgres psql "${opts[@]}" -p "$DB_PORT" -d "$db" "$@")
    fi
}

sql_literal() {   # 'text' with quotes doubled (standard_conforming_strings is on since PostgreSQL 9.1)
    printf "'%s'" "${1//\'/\'\'}"
}

# --- role, password, database --------------------------------------------------------------------
role_exists() {
    [[ "$(admin_psql postgres -c "SELECT 1 FROM pg_roles WHERE rolname = '$DB_USER'")" == "1" ]]
}

generate_password() {
    od -An -tx1 -N24 /dev/urandom | tr -d ' \n'
}

read_password_file() {
    [[ -f "$PASSWORD_FILE" ]] || return 1
    DB_PASSWORD="$(head -n 1 "$PASSWORD_FILE")"
    [[ -n "$DB_PASSWORD" ]]
}

write_password_file() {
    mkdir -p "$(dirname "$PASSWORD_FILE")"
    (umask 077 && printf '%s\n' "$DB_PASSWORD" > "$PASSWORD_FILE")
    chmod 600 "$PASSWORD_FILE"
    say "stored the generated password in $PASSWORD_FILE (mode 0600)"
}

ROLE_ATTRIBUTES="LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"

set_password() {   # the SQL goes through stdin, so the password never shows in the process list
    admin_psql postgres <<<"ALTER ROLE \"$DB_USER\" PASSWORD $(sql_literal "$DB_PASSWORD");"
}

create_role() {
    if [[ $PASSWORD_GIVEN -eq 0 ]]; then
        if read_password_file; then
            say "using the password kept in $PASSWORD_FILE"
        else
            DB_PASSWORD="$(generate_password)"
            write_password_file
        fi
    fi
    admin_psql postgres <<<"CREATE ROLE \"$DB_USER\" $ROLE_ATTRIBUTES PASSWORD $(sql_literal "$DB_PASSWORD");"
    say "created role $DB_USER (LOGIN, no superuser/createdb/createrole) with its password"
}

ensure_role() {
    PASSWORD_KNOWN=1
    if ! role_exists; then
        create_role
        return 0
    fi
    say "role $DB_USER exists"
    ensure_role_attributes
    if [[ $PASSWORD_GIVEN -eq 1 ]]; then
        set_password
        say "applied the password from DATABASE_URL to role $DB_USER"
    elif read_password_file; then
        say "kept the password of role $DB_USER (from $PASSWORD_FILE)"
    else
        PASSWORD_KNOWN=0
        say "kept the existing password of role $DB_USER (unknown to this script)"
    fi
}

ensure_role_attributes() {
    local attrs
    attrs="$(admin_psql postgres -c "SELECT concat_ws(',', rolcanlogin, rolsuper, rolcreatedb, rolcreaterole,
        rolreplication, rolbypassrls) FROM pg_roles WHERE rolname = '$DB_USER'")"
    if [[ "$attrs" != "t,f,f,f,f,f" ]]; then
        admin_psql postgres -c "ALTER ROLE \"$DB_USER\" $ROLE_ATTRIBUTES"
        say "reduced role $DB_USER to LOGIN only (it had more privileges than the service needs)"
    fi
}

ensure_database() {
    local owner
    owner="$(admin_psql postgres -c "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '$DB_NAME'")"
    if [[ -z "$owner" ]]; then
        admin_psql postgres -c "CREATE DATABASE \"$DB_NAME\" OWNER \"$DB_USER\" ENCODING 'UTF8' TEMPLATE template0"
        say "created database $DB_NAME owned by $DB_USER"
    elif [[ "$owner" != "$DB_USER" ]]; then
        admin_psql postgres -c "ALTER DATABASE \"$DB_NAME\" OWNER TO \"$DB_USER\""
        say "database $DB_NAME exists; changed its owner from $owner to $DB_USER"
    else
        say "database $DB_NAME exists, owned by $DB_USER"
    fi
    ensure_database_access
}

ensure_database_access() {
    # Only the service's role (and superusers) may connect; the role owns the public schema so it can
    # create tables on PostgreSQL < 15 too (15+ gives it to the database owner already).
    local public_connect schema_owner
    public_connect="$(admin_psql postgres -c "SELECT has_database_privilege('public', '$DB_NAME', 'CONNECT')")"
    if [[ "$public_connect" == "t" ]]; then
        admin_psql postgres -c "REVOKE CONNECT, TEMPORARY ON DATABASE \"$DB_NAME\" FROM PUBLIC"
        admin_psql postgres -c "GRANT CONNECT, TEMPORARY ON DATABASE \"$DB_NAME\" TO \"$DB_USER\""
        say "restricted CONNECT on $DB_NAME to $DB_USER"
    fi
    schema_owner="$(admin_psql "$DB_NAME" -c "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'public'")"
    if [[ -n "$schema_owner" && "$schema_owner" != "$DB_USER" && "$schema_owner" != "pg_database_owner" ]]; then
        admin_psql "$DB_NAME" -c "ALTER SCHEMA public OWNER TO \"$DB_USER\""
        say "gave schema public of $DB_NAME to $DB_USER"
    fi
}

url_host() {
    [[ "$DB_HOST" == *:* ]] && printf '[%s]' "$DB_HOST" || printf '%s' "$DB_HOST"
}

check_login() {
    [[ $PASSWORD_KNOWN -eq 1 ]] || return 0
    local host="$DB_HOST"
    if PGPASSWORD="$DB_PASSWORD" PGCONNECT_TIMEOUT=10 psql -X -q -At -h "$host" -p "$DB_PORT" -U "$DB_USER" \
            -d "$DB_NAME" -c "SELECT 1" >/dev/null 2>&1; then
        say "checked: $DB_USER can log in to $DB_NAME on $host:$DB_PORT with its password"
    else
        die "$DB_USER cannot log in to $DB_NAME on $host:$DB_PORT with its password: check pg_hba.conf and listen_addresses"
    fi
}

print_url() {
    local shown
    if [[ $PASSWORD_GIVEN -eq 1 ]]; then
        shown="$GIVEN_URL"
    elif [[ $PASSWORD_KNOWN -eq 1 ]]; then
        shown="postgresql://$DB_USER:$DB_PASSWORD@$(url_host):$DB_PORT/$DB_NAME"
    else
        shown="postgresql://$DB_USER:<existing password>@$(url_host):$DB_PORT/$DB_NAME"
    fi
    say ""
    say "Put this line in .env (keep it private):"
    say "DATABASE_URL=$shown"
    if [[ $PASSWORD_KNOWN -eq 0 ]]; then
        say "(the role existed before and its password is unknown here: use it, or run again with"
        say " DATABASE_URL=postgresql://$DB_USER:NEW_PASSWORD@$(url_host):$DB_PORT/$DB_NAME to set a new one)"
    fi
    say "Then create the tables: .venv/bin/python db_manager.py create-tables"
}

main() {
    GIVEN_URL="${DATABASE_URL:-$DEFAULT_URL}"
    parse_url "$GIVEN_URL"
    validate
    PASSWORD_FILE="${PASSWORD_FILE:-$SCRIPT_DIR/.data/postgres-password-$DB_USER}"
    if is_local_host; then
        if ! command -v psql >/dev/null 2>&1 || ! server_ready; then
            install_server
            start_server
        fi
    elif [[ -z "${POSTGRES_ADMIN_URL:-}" ]]; then
        die "DATABASE_URL points to $DB_HOST: set POSTGRES_ADMIN_URL to a superuser URL for that server"
    fi
    command -v psql >/dev/null 2>&1 || die "psql is missing: apt-get install -y postgresql-client"
    admin_psql postgres -c "SELECT 1" >/dev/null || die "cannot connect to PostgreSQL as a superuser (see POSTGRES_ADMIN_URL)"
    ensure_role
    ensure_database
    check_login
    print_url
}

main
