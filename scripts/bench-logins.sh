#!/usr/bin/env bash
# A legitimate arena login's latency while other addresses flood the server with
# account creations (each one an Argon2id hash): no flood, a flood from one address,
# a flood from 20 addresses (127.0.0.2 .. 127.0.0.21, 32 connections each). Each
# scenario runs against a fresh release server twice: with the default `[game]`
# limits, and with new accounts unlimited (new_accounts_per_ip_per_hour = 1000000),
# which leaves the fair hashing queue alone to protect the login; and, for
# reference, a flood from one address of logins refused before any work (an invalid
# name: what the connections alone cost). Prints a table;
# the raw JSON lines (scripts/login-flood.py) go to target/bench/logins-<time>/.
#
#   scripts/bench-logins.sh                       # build and measure this tree
#   scripts/bench-logins.sh --bin PATH --no-limits-key
#                                                 # another build (one without the
#                                                 # [game] limit keys, e.g. an older one)
#   scripts/bench-logins.sh --duration 30         # measured seconds per scenario
#
# Everything runs on 127.0.0.0/8 (Linux routes all of it to loopback).
set -euo pipefail
cd "$(dirname "$0")/.."

bin=""
duration=20
limits_key=1
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) bin="$2"; shift ;;
        --duration) duration="$2"; shift ;;
        --no-limits-key) limits_key=0 ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

if [ -z "$bin" ]; then
    cargo build --release -q -p gatehouse-cli
    bin="$(pwd)/target/release/gatehouse"
fi
out="target/bench/logins-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"

# shellcheck source=scripts/metrics-common.sh
. scripts/metrics-common.sh # wait_for_tcp

server_pid=""
trap '[ -z "$server_pid" ] || kill -TERM "$server_pid" 2>/dev/null || true' EXIT

# Starts an arena server in a fresh directory with `extra` [game] lines; sets
# server_pid and addr.
start_server() {
    local dir="$1" extra="$2"
    mkdir -p "$dir"
    printf '[[listeners]]\ntransport = "tcp"\naddress = "127.0.0.1:0"\n[store]\ndata_dir = "%s/data"\n[game]\n%s' \
        "$(pwd)/$dir" "$extra" > "$dir/gatehouse.toml"
    : > "$dir/stdout" # there before the server writes it, for wait_for_tcp
    "$bin" serve --config "$dir/gatehouse.toml" --log warn --admin-port 0 \
        > "$dir/stdout" 2> "$dir/stderr" &
    server_pid=$!
    wait_for_tcp "$dir/stdout" "$dir/stderr" 100
}

configs=("defaults|")
if [ "$limits_key" = 1 ]; then
    configs+=("new accounts unlimited|new_accounts_per_ip_per_hour = 1000000\n")
fi

printf '%-24s %-14s %7s %8s %8s %8s %10s %10s %s\n' config flood logins p50_ms p99_ms max_ms answers/s accounts/s "flood statuses"
# NAME FLOOD EXTRA [FLOOD OPTIONS]: one scenario on a fresh server, one table row.
scenario() {
    local name="$1" flood="$2" extra="$3" run_dir line flooders=32
    shift 3
    run_dir="$out/$(echo "$name" | tr ' ' '-')-flood$flood"
    start_server "$run_dir" "$extra"
    [ "$flood" = 0 ] && flooders=0
    line="$(python3 scripts/login-flood.py --addr "$addr" --flood-addresses "$flood" \
        --flooders "$flooders" --duration "$duration" "$@" 2> "$run_dir/flood.stderr" || true)"
    kill -TERM "$server_pid"; wait "$server_pid" || true; server_pid=""
    if [ -z "$line" ]; then
        echo "  $name, flood from $flood: failed; see $run_dir/flood.stderr"
        return
    fi
    echo "$line" >> "$out/results.jsonl"
    python3 - "$name" "$flood" "$line" <<'EOF'
import json, sys
name, flood, r = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
where = "none" if flood == "0" else f"{flood} address{'es' if flood != '1' else ''}"
print("%-24s %-14s %7d %8s %8s %8s %10s %10s %s" % (
    name, where, r["logins"], r["login_p50_ms"], r["login_p99_ms"], r["login_max_ms"],
    r["flood_answers_per_sec"], r["flood_accounts_per_sec"], r["flood_statuses"]))
EOF
}

for config in "${configs[@]}"; do
    name="${config%%|*}"
    extra="$(printf '%b' "${config#*|}")"
    for flood in 0 1 20; do
        scenario "$name" "$flood" "$extra"
    done
done
scenario "invalid names" 1 "" --invalid-names
echo "raw results: $out/results.jsonl"
