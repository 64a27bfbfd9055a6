#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on 127.0.0.1 for the test run (CI and developers).
#   eval "$(bash scripts/postgres_test_cluster.sh start DIR)"   start one in DIR, print the export of its URL
#   bash scripts/postgres_test_cluster.sh stop DIR              stop it (DIR can then be removed)
# Needs the server binaries (Debian: postgresql); .ci/run installs them when missing. initdb refuses
# to run as root, so as root the cluster runs as the `postgres` system user.
set -euo pipefail
action=${1:?start or stop}
dir=${2:?cluster directory}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$bin" ] || { echo "no PostgreSQL server in /usr/lib/postgresql" >&2; exit 1; }
as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
case "$action" in
  start)
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    as_owner "$bin/initdb" -D "$dir/data" -U postgres -A trust --no-sync >/dev/null
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=200" start >/dev/null
    echo "export DSOMARKET_TEST_POSTGRES=postgresql://postgres@127.0.0.1:$port/postgres"
    ;;
  stop)
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    ;;
  *) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
