#!/usr/bin/env bash
# The game-shaped benchmark: `gatehouse bench arena` against a fresh release arena
# server, for rooms of each size, at a growing number of bot players, until a run
# misses the bar: tick lateness p99 under 5 ms, no delta missed, no bot dropped, and
# at least 19 deltas per bot per second (a room ticks 20 times a second and every
# bot keeps walking, so nearly every tick changes something). Prints the curve and
# the largest N that held, per room size.
#
#   scripts/bench-arena.sh                          # rooms of 10 and 50, N = 100 … 6400
#   scripts/bench-arena.sh --sizes "10"             # one room size
#   scripts/bench-arena.sh --players "100 200 400"  # the steps of N
#   scripts/bench-arena.sh --duration 10            # measured seconds per run
#   scripts/bench-arena.sh --bin PATH               # measure this gatehouse binary
#                                                   # (another commit's) instead of
#                                                   # building this tree's
#
# Everything runs on 127.0.0.0/8; each run starts its own server (SQLite in a fresh
# directory) on a free port and stops it. With two cores or more the server runs on
# core 0 and the generator on core 1. Raw results (one JSON line per run) are kept
# in target/bench/arena-<time>/results.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."

sizes="10 50"
players="100 200 400 800 1200 1600 2400 3200 4800 6400"
duration=10
bin=""
while [ $# -gt 0 ]; do
    case "$1" in
        --sizes) sizes="$2"; shift ;;
        --players) players="$2"; shift ;;
        --duration) duration="$2"; shift ;;
        --bin) bin="$(realpath "$2")"; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

if [ -z "$bin" ]; then
    cargo build --release -q -p gatehouse-cli
    bin="$(pwd)/target/release/gatehouse"
fi
out="target/bench/arena-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"
# The generator runs from its own copy of the binary (see scripts/bench.sh).
gen_bin="$out/gatehouse-gen"
cp "$bin" "$gen_bin"
results="$out/results.jsonl"
server_cpu=""; gen_cpu=""
if [ "$(nproc)" -ge 2 ]; then server_cpu="taskset -c 0"; gen_cpu="taskset -c 1"; fi

server_pid=""
stop_server() {
    if [ -n "$server_pid" ]; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
}
trap stop_server EXIT

# Starts an arena server in a fresh directory; sets server_pid and addr.
start_server() {
    local dir="$1"
    mkdir -p "$dir"
    # Every bot logs in from 127.0.0.1, 32 at a time, into the lobby first: lift the
    # per-address share of a room's seats and of new accounts.
    printf '[[listeners]]\ntransport = "tcp"\naddress = "127.0.0.1:0"\n[store]\ndata_dir = "%s/data"\n[server]\nmax_connections = 20000\nmax_connections_per_ip = 20000\n[game]\nmax_room_players_per_ip = 20000\nnew_accounts_per_ip_per_hour = 1000000\n' \
        "$(pwd)/$dir" > "$dir/gatehouse.toml"
    $server_cpu "$bin" serve --config "$dir/gatehouse.toml" --log warn --admin-port 0 \
        > "$dir/stdout" 2> "$dir/stderr" &
    server_pid=$!
    for _ in $(seq 1 100); do
        addr="$(sed -n 's/^listening on tcp:\/\///p' "$dir/stdout")"
        [ -n "$addr" ] && return 0
        sleep 0.1
    done
    echo "the server did not start; see $dir/stderr" >&2
    exit 1
}

summary=""
for size in $sizes; do
    best=0
    printf '\nrooms of %s\n%8s %8s %10s %10s %10s %8s %8s %8s %10s\n' "$size" \
        players rooms p50_us p99_us max_us late missing deltas/s server_cpu%
    for n in $players; do
        run_dir="$out/size$size-n$n"
        start_server "$run_dir"
        line="$($gen_cpu "$gen_bin" bench arena --addr "$addr" --players "$n" --room-size "$size" \
            --duration "$duration" --server-pid "$server_pid" --quiet 2> "$run_dir/bench.stderr" || true)"
        stop_server
        if [ -z "$line" ]; then
            echo "  N=$n: the generator failed; see $run_dir/bench.stderr"
            break
        fi
        echo "$line" >> "$results"
        verdict="$(python3 - "$line" <<'EOF'
import json, sys
r = json.loads(sys.argv[1])
ok = (r["lateness_p99_us"] < 5000 and r["missing"] == 0 and r["dropped"] == 0
      and r["deltas_per_bot_per_sec"] >= 19.0)
print("%8d %8d %10d %10d %10d %8d %8d %8.2f %10.1f %s" % (
    r["players"], r["rooms"], r["lateness_p50_us"], r["lateness_p99_us"], r["lateness_max_us"],
    r["late_ticks"], r["missing"], r["deltas_per_bot_per_sec"], r["server_cpu_percent"] or 0,
    "ok" if ok else "MISSED"))
EOF
)"
        echo "$verdict"
        case "$verdict" in
            *MISSED) break ;;
            *) best=$n ;;
        esac
    done
    summary="$summary\nrooms of $size: held up to N = $best"
done
printf "%b\n" "$summary"
echo "raw results: $results"
