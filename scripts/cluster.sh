#!/usr/bin/env bash
# A latchkey cluster on this machine, without Docker: PostgreSQL, three nodes and nginx in front
# (deploy/nginx.conf), as docs/scale-out.md describes.
#
#   scripts/cluster.sh [start] [--database URL] [--source | --binary FILE] [--dir DIR]
#   scripts/cluster.sh status  [--dir DIR]
#   scripts/cluster.sh stop    [--dir DIR] [--purge]
#
# start   PostgreSQL of its own (Debian's server, initdb into DIR/postgres, port 9109) unless
#         --database names an existing one (also LATCHKEY_DATABASE_URL); nodes on 127.0.0.1:9101,
#         9102 and 9103 (mutual TLS on 9451-9453) from dist/latchkey (npm run build), or with
#         --source from src/main.ts through Bun; nginx on 127.0.0.1:9100.
#         admin's password: LATCHKEY_ADMIN_PASSWORD, or one generated into DIR/admin-password.
# stop    stops the nodes, nginx and its own PostgreSQL; --purge also deletes DIR.
#
# DIR is $LATCHKEY_CLUSTER_DIR or ${TMPDIR:-/tmp}/latchkey-cluster; logs are DIR/*.log.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LB_PORT=9100
NODE_PORTS=(9101 9102 9103)
MTLS_PORTS=(9451 9452 9453)
PG_PORT=9109

die() {
  echo "cluster.sh: $*" >&2
  exit 1
}

usage() {
  sed -n '5,7p' "$0" | sed 's/^# //' >&2
  exit 2
}

action=start
case "${1:-}" in
  start | stop | status) action=$1; shift ;;
  -h | --help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac

database="${LATCHKEY_DATABASE_URL:-}"
dir="${LATCHKEY_CLUSTER_DIR:-${TMPDIR:-/tmp}/latchkey-cluster}"
binary="$ROOT/dist/latchkey"
source_mode=0
purge=0
while [ $# -gt 0 ]; do
  case "$1" in
    --database) [ $# -ge 2 ] || usage; database=$2; shift 2 ;;
    --database=*) database=${1#*=}; shift ;;
    --dir) [ $# -ge 2 ] || usage; dir=$2; shift 2 ;;
    --dir=*) dir=${1#*=}; shift ;;
    --binary) [ $# -ge 2 ] || usage; binary=$2; shift 2 ;;
    --binary=*) binary=${1#*=}; shift ;;
    --source) source_mode=1; shift ;;
    --purge) purge=1; shift ;;
    *) echo "cluster.sh: unknown argument $1" >&2; usage ;;
  esac
done

# --- what runs where -----------------------------------------------------------------------

pg_bin() {
  local found
  found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -n | tail -n 1)
  [ -n "$found" ] && [ -x "$found/initdb" ] && echo "$found"
}

# PostgreSQL refuses to run as root: as root, its commands run as the postgres user.
as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then
    command -v runuser >/dev/null 2>&1 || die "runuser is missing (util-linux); it runs PostgreSQL as the postgres user"
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

find_nginx() {
  command -v nginx 2>/dev/null || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || true
}

latchkey_cmd() {
  if [ "$source_mode" -eq 1 ]; then
    local bun
    bun=$(command -v bun 2>/dev/null || true)
    [ -n "$bun" ] || bun="$ROOT/node_modules/.bin/bun"
    [ -x "$bun" ] || die "Bun is missing: run npm install in $ROOT (the bun package provides it), or build and drop --source"
    echo "$bun $ROOT/src/main.ts"
  else
    [ -x "$binary" ] || die "$binary does not exist: run npm run build in $ROOT first, or use --source to run src/main.ts with Bun"
    echo "$binary"
  fi
}

port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

pid_alive() {
  [ -f "$1" ] && kill -0 "$(cat "$1" 2>/dev/null)" 2>/dev/null
}

# --- stop and status -----------------------------------------------------------------------

stop_pid() {
  local file=$1 what=$2 pid
  pid_alive "$file" || { rm -f "$file"; return 0; }
  pid=$(cat "$file")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "  $what did not stop within 10 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
  echo "  stopped $what"
}

stop_cluster() {
  [ -d "$dir" ] || { echo "no cluster in $dir"; return 0; }
  echo "stopping the cluster in $dir"
  for i in 1 2 3; do stop_pid "$dir/node$i.pid" "node $i"; done
  if pid_alive "$dir/nginx/nginx.pid"; then
    kill -QUIT "$(cat "$dir/nginx/nginx.pid")" 2>/dev/null || true
    for _ in $(seq 1 50); do pid_alive "$dir/nginx/nginx.pid" || break; sleep 0.1; done
    echo "  stopped nginx"
  fi
  if [ -f "$dir/postgres/data/postmaster.pid" ]; then
    local bin
    bin=$(pg_bin) || die "PostgreSQL's pg_ctl is gone; stop the server in $dir/postgres/data by hand"
    as_postgres "$bin/pg_ctl" -D "$dir/postgres/data" -m fast -w stop >/dev/null && echo "  stopped PostgreSQL"
  fi
  if [ "$purge" -eq 1 ]; then
    rm -rf "$dir"
    echo "  deleted $dir"
  fi
}

status_cluster() {
  [ -d "$dir" ] || { echo "no cluster in $dir"; exit 1; }
  local running=0
  for i in 1 2 3; do
    if pid_alive "$dir/node$i.pid"; then echo "node $i: running (pid $(cat "$dir/node$i.pid")), http://127.0.0.1:${NODE_PORTS[$((i - 1))]}"; running=$((running + 1))
    else echo "node $i: stopped"; fi
  done
  if pid_alive "$dir/nginx/nginx.pid"; then echo "nginx: running, http://127.0.0.1:$LB_PORT"; else echo "nginx: stopped"; fi
  if [ -f "$dir/database-url" ]; then echo "database: $(sed -E 's#//([^:@/]+):[^@/]*@#//\1:***@#' "$dir/database-url")"; fi
  [ "$running" -gt 0 ]
}

# --- start ---------------------------------------------------------------------------------

start_postgres() {
  local bin
  bin=$(pg_bin) || die "PostgreSQL's server is not installed (no /usr/lib/postgresql/*/bin/initdb): sudo apt-get install -y postgresql, or give --database postgres://USER:PASSWORD@HOST:PORT/DB"
  if port_in_use "$PG_PORT"; then die "port $PG_PORT (PostgreSQL) is in use; stop what holds it, or give --database URL"; fi
  mkdir -p "$dir/postgres"
  if [ "$(id -u)" -eq 0 ]; then
    id -u postgres >/dev/null 2>&1 || die "there is no postgres user (it comes with the postgresql package)"
    chown postgres:postgres "$dir/postgres"
  fi
  if [ ! -f "$dir/postgres/data/PG_VERSION" ]; then
    echo "initialising PostgreSQL in $dir/postgres/data"
    as_postgres "$bin/initdb" -D "$dir/postgres/data" -U latchkey -A trust -E UTF8 >"$dir/postgres/initdb.log" 2>&1 ||
      die "initdb failed; see $dir/postgres/initdb.log"
  fi
  as_postgres "$bin/pg_ctl" -D "$dir/postgres/data" -l "$dir/postgres/server.log" -w \
    -o "-p $PG_PORT -k $dir/postgres -c listen_addresses=127.0.0.1" start >/dev/null ||
    die "PostgreSQL did not start; see $dir/postgres/server.log"
  if ! "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U latchkey -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'latchkey'" | grep -q 1; then
    "$bin/createdb" -h 127.0.0.1 -p "$PG_PORT" -U latchkey latchkey || die "creating the database latchkey failed"
  fi
  database="postgres://latchkey@127.0.0.1:$PG_PORT/latchkey"
  echo "PostgreSQL: $database (trust authentication on 127.0.0.1; for trying things out only)"
}

start_node() {
  local i=$1 cmd=$2 port=${NODE_PORTS[$((i - 1))]} mtls=${MTLS_PORTS[$((i - 1))]}
  mkdir -p "$dir/node$i"
  # The URL, with its password, goes in the environment rather than on a command line others can read.
  # shellcheck disable=SC2086
  LATCHKEY_DATABASE_URL="$database" LATCHKEY_ADMIN_PASSWORD="$password" setsid $cmd server \
    --data-dir "$dir/node$i" --listen "127.0.0.1:$port" --mtls-listen "127.0.0.1:$mtls" \
    --trusted-proxy 127.0.0.1/32 </dev/null >"$dir/node$i.log" 2>&1 &
  echo $! >"$dir/node$i.pid"
  for _ in $(seq 1 300); do
    grep -q "latchkey listening" "$dir/node$i.log" 2>/dev/null && { echo "node $i: http://127.0.0.1:$port (mTLS 127.0.0.1:$mtls)"; return 0; }
    pid_alive "$dir/node$i.pid" || break
    sleep 0.1
  done
  echo "node $i did not start; the end of $dir/node$i.log:" >&2
  tail -n 20 "$dir/node$i.log" >&2
  stop_cluster >&2
  exit 1
}

start_nginx() {
  local nginx prefix="$dir/nginx"
  nginx=$(find_nginx)
  [ -n "$nginx" ] || die "nginx is not installed: sudo apt-get install -y nginx-light"
  mkdir -p "$prefix/temp"
  # nginx's workers do not run as root: they must reach the prefix.
  if [ "$(id -u)" -eq 0 ]; then chmod 0755 "$prefix"; fi
  sed -e "s#{{LISTEN}}#127.0.0.1:$LB_PORT#" \
    -e "s#{{NODE1}}#127.0.0.1:${NODE_PORTS[0]}#" -e "s#{{NODE2}}#127.0.0.1:${NODE_PORTS[1]}#" -e "s#{{NODE3}}#127.0.0.1:${NODE_PORTS[2]}#" \
    -e "s#{{ERROR_LOG}}#$prefix/error.log#" -e "s#{{ACCESS_LOG}}#$prefix/access.log#" \
    "$ROOT/deploy/nginx.conf" >"$prefix/nginx.conf"
  "$nginx" -p "$prefix" -c "$prefix/nginx.conf" -g "pid $prefix/nginx.pid;" 2>>"$prefix/error.log" ||
    { tail -n 5 "$prefix/error.log" >&2; stop_cluster >&2; die "nginx did not start; see $prefix/error.log"; }
}

start_cluster() {
  local cmd
  if [ -d "$dir" ]; then
    for f in "$dir"/node1.pid "$dir"/node2.pid "$dir"/node3.pid "$dir"/nginx/nginx.pid; do
      if pid_alive "$f"; then die "a cluster is already running in $dir: scripts/cluster.sh stop first (or --dir another directory)"; fi
    done
  fi
  if [ -n "$database" ] && [[ "$database" != postgres://* && "$database" != postgresql://* ]]; then
    die "--database must be a PostgreSQL URL, e.g. postgres://latchkey:secret@db.example:5432/latchkey"
  fi
  cmd=$(latchkey_cmd)
  [ -n "$(find_nginx)" ] || die "nginx is not installed: sudo apt-get install -y nginx-light"
  for port in "$LB_PORT" "${NODE_PORTS[@]}" "${MTLS_PORTS[@]}"; do
    if port_in_use "$port"; then die "port $port is in use; stop what holds it (scripts/cluster.sh stop, if it is an earlier cluster)"; fi
  done
  mkdir -p "$dir"
  # Others may only pass through (as root, PostgreSQL and nginx's workers run as other users);
  # the password files in it are 0600.
  chmod 0711 "$dir"
  if [ -z "$database" ]; then start_postgres; fi
  (umask 077 && printf '%s\n' "$database" >"$dir/database-url")

  if [ -n "${LATCHKEY_ADMIN_PASSWORD:-}" ]; then
    password=$LATCHKEY_ADMIN_PASSWORD
    password_source="LATCHKEY_ADMIN_PASSWORD"
  else
    [ -f "$dir/admin-password" ] || (umask 077 && head -c 18 /dev/urandom | base64 | tr '+/' '-_' >"$dir/admin-password")
    password=$(cat "$dir/admin-password")
    password_source="$dir/admin-password (generated; set LATCHKEY_ADMIN_PASSWORD to choose it)"
  fi

  # The first node migrates the database and creates the admin account and the CA; then the others.
  for i in 1 2 3; do start_node "$i" "$cmd"; done
  start_nginx

  local dir_flag=""
  if [ "$dir" != "${TMPDIR:-/tmp}/latchkey-cluster" ]; then dir_flag=" --dir $dir"; fi
  cat <<EOF

latchkey cluster running:
  URL             http://127.0.0.1:$LB_PORT  (nginx; nodes on ${NODE_PORTS[*]}, mTLS on ${MTLS_PORTS[*]})
  admin password  $password_source
  logs            $dir/node1.log $dir/node2.log $dir/node3.log $dir/nginx/error.log
  admin CLI       $cmd user list --database "\$(cat $dir/database-url)"
  stop            scripts/cluster.sh stop$dir_flag   (--purge also deletes $dir)
EOF
}

case "$action" in
  start) start_cluster ;;
  stop) stop_cluster ;;
  status) status_cluster ;;
esac
