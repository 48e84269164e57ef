#!/usr/bin/env bash
# Transports side by side: one gatehouse bench server, and the same scenarios of
# `gatehouse bench` over TCP, TLS, WebSocket and WebSocket over TLS, interleaved,
# several rounds; medians are printed as the markdown table of docs/BENCHMARKS.md.
#
#   scripts/bench-transports.sh              # 3 rounds (~12 minutes on 2 cores)
#   scripts/bench-transports.sh --rounds 5
#   scripts/bench-transports.sh --quick      # 1 round, small counts (~2 minutes)
#
# Each run gets a fresh server (all four listeners, a development certificate from
# `gatehouse dev-cert`), pinned to core 0, the generator (a copy of the binary) to core
# 1. Scenarios: echo at depth 1 and 16 (100 connections, 64-byte payloads; requests/s
# and the server's CPU time per request), broadcast to N listeners (median time until
# every listener has the push), and N idle connections (the server's RSS per
# connection, heartbeats only). Everything runs on 127.0.0.0/8; raw JSON lines go to
# target/bench-transports/<time>/results.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=3
many=5000
echo_secs=8; echo_warmup=2; hold=10; bcast_rounds=5
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds="$2"; shift ;;
        --quick) rounds=1; many=1000; echo_secs=3; echo_warmup=1; hold=4; bcast_rounds=3 ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

dir="target/bench-transports/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$dir"
results="$dir/results.jsonl"
: > "$results"
say() { echo "[bench-transports] $*" >&2; }

say "building the release binary"
cargo build --release -p gatehouse-cli >&2
cp target/release/gatehouse "$dir/gatehouse-gen"
target/release/gatehouse dev-cert --out "$dir" >/dev/null

pin_server=(); pin_gen=()
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
    pin_server=(taskset -c 0); pin_gen=(taskset -c 1)
fi

server_pid=""
stop_server() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
}
trap stop_server EXIT

start_server() { # -> server_pid, addr_tcp, addr_tls, addr_ws, addr_wss
    "${pin_server[@]}" target/release/gatehouse serve --service bench \
        --config bench/gatehouse-bench.toml --log warn --admin-port 0 \
        --listen tcp://127.0.0.1:0 --listen tls://127.0.0.1:0 \
        --listen ws://127.0.0.1:0 --listen wss://127.0.0.1:0 \
        --cert "$dir/dev-cert.pem" --key "$dir/dev-key.pem" \
        > "$dir/server.out" 2>> "$dir/server.err" &
    server_pid=$!
    for _ in $(seq 1 100); do
        [ "$(grep -c '^listening on' "$dir/server.out" || true)" -ge 4 ] && return 0
        sleep 0.1
    done
    echo "the server did not start; see $dir/server.err" >&2
    exit 1
}

gen() { "${pin_gen[@]}" "$dir/gatehouse-gen" bench "$@" --quiet --ca "$dir/dev-cert.pem"; }

run() { # SCENARIO TRANSPORT ROUND
    local scenario="$1" transport="$2" round="$3" addr json
    start_server
    addr="$(sed -n "s/^listening on $transport:\/\///p" "$dir/server.out")"
    case "$scenario" in
        echo_d1|echo_d16)
            json="$(gen echo --addr "$addr" --transport "$transport" --connections 100 \
                --depth "${scenario#echo_d}" --payload 64 --duration "$echo_secs" \
                --warmup "$echo_warmup" --server-pid "$server_pid")" ;;
        broadcast)
            json="$(gen broadcast --addr "$addr" --transport "$transport" --listeners "$many" \
                --rounds "$bcast_rounds" --payload 64)" ;;
        idle)
            json="$(gen connections --addr "$addr" --transport "$transport" --count "$many" \
                --hold "$hold" --heartbeat 5 --settle 2 --server-pid "$server_pid")" ;;
    esac
    stop_server
    printf '{"transport":"%s","bench":"%s","round":%d,"result":%s}\n' \
        "$transport" "$scenario" "$round" "$json" >> "$results"
    say "$scenario $transport round $round done"
    sleep 1
}

for round in $(seq 1 "$rounds"); do
    for scenario in echo_d1 echo_d16 broadcast idle; do
        for transport in tcp tls ws wss; do
            run "$scenario" "$transport" "$round"
        done
    done
done

python3 - "$results" "$rounds" "$many" <<'PY'
import json, statistics, sys
path, rounds, many = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
runs = [json.loads(line) for line in open(path)]
def med(transport, bench, key):
    values = [r["result"].get(key) for r in runs
              if r["transport"] == transport and r["bench"] == bench]
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None
transports = ["tcp", "tls", "ws", "wss"]
def fmt(v, spec):
    return "n/a" if v is None else format(v, spec)
print(f"| transport | echo d1 req/s | d1 server µs/req | echo d16 req/s | d16 server µs/req | broadcast to {many}: time to all (ms) | idle: server bytes per connection |")
print("|---|---|---|---|---|---|---|")
base = {}
for t in transports:
    row = {
        "d1": med(t, "echo_d1", "requests_per_sec"),
        "d1cpu": med(t, "echo_d1", "server_cpu_us_per_request"),
        "d16": med(t, "echo_d16", "requests_per_sec"),
        "d16cpu": med(t, "echo_d16", "server_cpu_us_per_request"),
        "bcast": med(t, "broadcast", "median_time_to_all_ms"),
        "idle": med(t, "idle", "rss_per_connection_bytes"),
    }
    if t == "tcp":
        base = row
    def ratio(k):
        return "" if t == "tcp" or row[k] is None or not base.get(k) else f" ({row[k] / base[k]:.2f}x)"
    print(f"| {t} | {fmt(row['d1'], ',.0f')}{ratio('d1')} | {fmt(row['d1cpu'], '.2f')}{ratio('d1cpu')} "
          f"| {fmt(row['d16'], ',.0f')}{ratio('d16')} | {fmt(row['d16cpu'], '.2f')}{ratio('d16cpu')} "
          f"| {fmt(row['bcast'], '.1f')}{ratio('bcast')} | {fmt(row['idle'], ',.0f')}{ratio('idle')} |")
errors = [(r["transport"], r["bench"], r["round"]) for r in runs
          if r["result"].get("errors") or r["result"].get("lost") or r["result"].get("dead")]
print(f"\n{rounds} rounds, medians; runs with errors, losses or dead connections: {errors or 'none'}")
PY
say "raw results: $results"
