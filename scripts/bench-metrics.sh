#!/usr/bin/env bash
# What the metrics cost on the hot path: echo at depth 1 and 16 against the same
# release binary with metrics on (the admin listener up, scraped once a second, as
# Prometheus would more slowly) and off (`--no-admin --no-metrics`: no per-frame
# counting, no handler timing), interleaved, several rounds; medians and the on/off
# ratio are printed as the markdown table of docs/BENCHMARKS.md.
#
#   scripts/bench-metrics.sh              # 5 rounds (~6 minutes on 2 cores)
#   scripts/bench-metrics.sh --rounds 9
#
# Each run gets a fresh server pinned to core 0, the generator (a copy of the binary)
# and the scraper to core 1; 100 connections, 64-byte payloads, 8 s measured after 2 s
# of warm-up. Everything runs on 127.0.0.0/8; raw JSON lines go to
# target/bench-metrics/<time>/results.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=5
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds="$2"; shift ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

# shellcheck source=scripts/metrics-common.sh
. scripts/metrics-common.sh
metrics_setup bench-metrics
results="$dir/results.jsonl"
: > "$results"

server_pid=""; scraper_pid=""
stop_server() {
    if [ -n "$scraper_pid" ]; then
        kill "$scraper_pid" 2>/dev/null || true
        wait "$scraper_pid" 2>/dev/null || true
        scraper_pid=""
    fi
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
}
trap stop_server EXIT

start_server() { # MODE -> server_pid, addr
    local mode="$1" flags
    metrics_flags "$mode"
    "${pin_server[@]}" target/release/gatehouse serve --service bench \
        --config bench/gatehouse-bench.toml --log warn "${flags[@]}" \
        > "$dir/server.out" 2>> "$dir/server.err" &
    server_pid=$!
    wait_for_tcp "$dir/server.out" "$dir/server.err" 100
    if [ "$mode" = on ]; then
        local admin
        admin="$(sed -n 's/^admin listening on //p' "$dir/server.out")"
        # A scrape a second, from the generator's core.
        "${pin_gen[@]}" bash -c "while :; do curl -sf -o /dev/null $admin/metrics || true; sleep 1; done" &
        scraper_pid=$!
    fi
}

run() { # MODE DEPTH ROUND
    local mode="$1" depth="$2" round="$3" json
    start_server "$mode"
    json="$("${pin_gen[@]}" "$dir/gatehouse-gen" bench echo --quiet --addr "$addr" \
        --connections 100 --depth "$depth" --payload 64 --duration 8 --warmup 2 \
        --server-pid "$server_pid")"
    stop_server
    printf '{"metrics":"%s","depth":%d,"round":%d,"result":%s}\n' \
        "$mode" "$depth" "$round" "$json" >> "$results"
    say "depth $depth metrics $mode round $round done"
    sleep 1
}

for round in $(seq 1 "$rounds"); do
    for depth in 1 16; do
        # Alternate which goes first, so that neither always follows the other.
        if [ $((round % 2)) -eq 1 ]; then order=(on off); else order=(off on); fi
        for mode in "${order[@]}"; do
            run "$mode" "$depth" "$round"
        done
    done
done

python3 - "$results" "$rounds" <<'PY'
import json, statistics, sys
path, rounds = sys.argv[1], int(sys.argv[2])
runs = [json.loads(line) for line in open(path)]
def med(mode, depth, key):
    values = [r["result"][key] for r in runs if r["metrics"] == mode and r["depth"] == depth]
    return statistics.median(values)
print("| echo, 100 connections, 64 B | metrics off: req/s | off: server µs/req | metrics on: req/s | on: server µs/req | on / off: server µs/req |")
print("|---|---|---|---|---|---|")
for depth in (1, 16):
    off_r, off_c = med("off", depth, "requests_per_sec"), med("off", depth, "server_cpu_us_per_request")
    on_r, on_c = med("on", depth, "requests_per_sec"), med("on", depth, "server_cpu_us_per_request")
    print(f"| depth {depth} | {off_r:,.0f} | {off_c:.3f} | {on_r:,.0f} ({on_r / off_r:.3f}x) | {on_c:.3f} | **{on_c / off_c:.3f}** |")
errors = [(r["metrics"], r["depth"], r["round"]) for r in runs if r["result"].get("errors")]
print(f"\n{rounds} rounds, medians; runs with errors: {errors or 'none'}")
PY
say "raw results: $results"
