# Shared by the benchmark scripts: ports, readiness, timing, and a monolithic push with curl.
# shellcheck shell=bash

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_up() { for _ in $(seq 200); do curl -fs "http://$1/v2/" >/dev/null && return; sleep 0.05; done; echo "$1 did not start" >&2; exit 1; }
location() { tr -d '\r' | awk 'tolower($1)=="location:" {print $2}'; }
absolute() { case "$2" in http*) echo "$2";; *) echo "http://$1$2";; esac; }
with_query() { case "$1" in *\?*) echo "$1&$2";; *) echo "$1?$2";; esac; }
now() { date +%s.%N; }
mibps() { python3 -c "print(f'{$1/($3-$2):.0f}')"; }
# CPU time (user + system, ms) a process has used so far, all its threads included.
cpu_ms() { awk -v hz="$(getconf CLK_TCK)" '{printf "%d", ($14 + $15) * 1000 / hz}' "/proc/$1/stat"; }
# CPU time (ms) of this script's children that have been waited for: the clients (curl) it ran.
children_ms() { awk -v hz="$(getconf CLK_TCK)" '{printf "%d", ($16 + $17) * 1000 / hz}' "/proc/$$/stat"; }
per() { python3 -c "print(f'{($2-$1)/$3:.3f}')"; } # before after units: CPU ms per unit
median() { python3 -c "import statistics,sys; m=statistics.median(map(float, sys.argv[1:])); print(f'{m:.0f}' if m >= 10 else f'{m:.3g}')" "$@"; }
push_monolithic() { # host file digest repo
  local loc; loc=$(curl -s -D - -o /dev/null -X POST "http://$1/v2/$4/blobs/uploads/" | location)
  loc=$(absolute "$1" "$loc")
  curl -sf -o /dev/null -X PUT -H 'Content-Type: application/octet-stream' -T "$2" "$(with_query "$loc" "digest=$3")"
}
