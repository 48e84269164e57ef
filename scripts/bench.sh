#!/usr/bin/env bash
# The side-by-side benchmark of issue 4: gatehouse, the Erlang rendering of the
# seed (bench/erlang) and the bare tokio limit (bench/limit-server), through the
# same scenarios of `gatehouse bench`, interleaved, several rounds each; then the
# criterion micro-benchmarks; then docs/BENCHMARKS.md is written from the results.
#
#   scripts/bench.sh                 # the full run: 5 rounds, about 18 minutes on 2 cores
#   scripts/bench.sh --quick         # a smoke run: small counts, 1 round (~3 minutes)
#   scripts/bench.sh --rounds 5      # more rounds
#   scripts/bench.sh --no-micro      # skip the criterion benchmarks
#   scripts/bench.sh --out FILE      # write the report elsewhere (default docs/BENCHMARKS.md)
#   scripts/bench.sh --report DIR    # only rewrite the report from an earlier run's
#                                    # target/bench/<time> (e.g. after editing bench/NOTES.md)
#   scripts/bench.sh --baseline REV  # also measure gatehouse as of commit REV (built from
#                                    # `git archive REV`), for a before/after table
#   scripts/bench.sh --no-pin        # do not pin the server and the generator apart
#   scripts/bench.sh --scenarios "broadcast echo_d1"  # only these scenarios (with --out)
#
# Everything runs on 127.0.0.0/8. Each server is started fresh for each scenario
# (on a free port), stopped after it, and every server still running is stopped on
# exit or error. Raw results (one JSON line per run) are kept in target/bench/.
# With two cores or more, the server runs on core 0 and the generator on core 1
# (taskset), so that neither takes CPU from the other.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"

command_line="scripts/bench.sh${*:+ $*}"
report_only=""
quick=0
rounds=""
micro=1
out="docs/BENCHMARKS.md"
threads="${GEN_THREADS:-1}"
baseline=""
only_scenarios=""
pin=1
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1 ;;
        --rounds) rounds="$2"; shift ;;
        --no-micro) micro=0 ;;
        --out) out="$2"; shift ;;
        --report) report_only="$2"; shift ;;
        --baseline) baseline="$2"; shift ;;
        --scenarios) only_scenarios="$2"; shift ;;
        --no-pin) pin=0 ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

if [ $quick = 1 ]; then
    rounds="${rounds:-1}"
    many=2000            # storm, broadcast, idle
    echo_secs=3; echo_warmup=1
    hold=5; bcast_rounds=3
else
    rounds="${rounds:-5}"
    many=15000
    echo_secs=10; echo_warmup=2
    hold=20; bcast_rounds=5
fi
# Heartbeats every 60 s (a fifth of the 5-minute idle limit both servers are given):
# a connection's first comes 45-60 s after the hold begins, so none falls inside the
# settle + hold window and the idle CPU is measured with no client traffic at all.
heartbeat=60

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
results_dir="target/bench/$stamp"
results="$results_dir/results.jsonl"
log="$results_dir/bench.log"
say() { echo "[bench $(date +%H:%M:%S)] $*" | tee -a "$log" >&2; }

# ---- pinning: the server on core 0, the generator on core 1 --------------------------
pin_server=()
pin_gen=()
if [ $pin = 1 ] && [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
    pin_server=(taskset -c 0)
    pin_gen=(taskset -c 1)
else
    pin=0
fi

# ---- the baseline: gatehouse as of another commit --------------------------------------
baseline_rev=""
baseline_dir=""
if [ -n "$baseline" ]; then
    baseline_rev="$(git rev-parse --short "$baseline")"
    baseline_dir="target/bench/baseline-$baseline_rev"
fi

# ---- servers ---------------------------------------------------------------------
server_pid=""
server_addr=""
server_out=""

stop_server() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    server_pid=""
    server_addr=""
}
trap 'stop_server' EXIT
trap 'stop_server; exit 130' INT TERM

start_server() { # NAME
    local name="$1"
    server_out="$results_dir/server-$name.out"
    case "$name" in
        gatehouse)
            "${pin_server[@]}" target/release/gatehouse serve --service bench \
                --config bench/gatehouse-bench.toml --port 0 --log warn \
                >"$server_out" 2>>"$results_dir/server-$name.err" &
            ;;
        baseline)
            "${pin_server[@]}" "$baseline_dir/target/release/gatehouse" serve --service bench \
                --config "$baseline_dir/bench/gatehouse-bench.toml" --port 0 --log warn \
                >"$server_out" 2>>"$results_dir/server-$name.err" &
            ;;
        erlang)
            # IDLE_SEC 300: the same idle limit as bench/gatehouse-bench.toml.
            "${pin_server[@]}" bench/erlang/run.sh 0 300 \
                >"$server_out" 2>>"$results_dir/server-$name.err" &
            ;;
        limit)
            "${pin_server[@]}" target/release/gatehouse-limit --port 0 \
                >"$server_out" 2>>"$results_dir/server-$name.err" &
            ;;
    esac
    server_pid=$!
    for _ in $(seq 1 300); do
        # "listening on tcp://ADDR" (older gatehouse and the anchors: "listening on ADDR")
        server_addr="$(sed -n 's/^listening on \(tcp:\/\/\)\{0,1\}\([0-9.]*:[0-9]*\)$/\2/p' "$server_out" | head -n1)"
        [ -n "$server_addr" ] && break
        kill -0 "$server_pid" 2>/dev/null || { echo "$name died at start" >&2; cat "$results_dir/server-$name.err" >&2; exit 1; }
        sleep 0.1
    done
    [ -n "$server_addr" ] || { echo "$name did not start" >&2; exit 1; }
}

# ---- scenarios -------------------------------------------------------------------
# The generator runs from its own copy of the binary: a server started from the very
# file the generator runs measured broadcast 10-15 % slower than the same server from
# a copy (2026-11-26), which biased gatehouse against the other servers.
gen() { "${pin_gen[@]}" "$results_dir/gatehouse-gen" bench "$@" --quiet --threads "$threads"; }

run_scenario() { # SCENARIO SERVER ROUND
    local scenario="$1" name="$2" round="$3" json
    start_server "$name"
    case "$scenario" in
        echo_d1)
            json="$(gen echo --addr "$server_addr" --connections 100 --depth 1 --payload 64 \
                --duration "$echo_secs" --warmup "$echo_warmup" --server-pid "$server_pid")" ;;
        echo_d16)
            json="$(gen echo --addr "$server_addr" --connections 100 --depth 16 --payload 64 \
                --duration "$echo_secs" --warmup "$echo_warmup" --server-pid "$server_pid")" ;;
        storm)
            json="$(gen storm --addr "$server_addr" --count "$many")" ;;
        broadcast)
            json="$(gen broadcast --addr "$server_addr" --listeners "$many" --rounds "$bcast_rounds" --payload 64)" ;;
        idle)
            json="$(gen connections --addr "$server_addr" --count "$many" --hold "$hold" \
                --heartbeat "$heartbeat" --settle 2 --server-pid "$server_pid")" ;;
    esac
    stop_server
    printf '{"server":"%s","bench":"%s","round":%d,"load":"%s","result":%s}\n' \
        "$name" "$scenario" "$round" "$(cut -d' ' -f1-3 /proc/loadavg)" "$json" >>"$results"
    say "$scenario $name round $round: $(python3 bench/report.py --summary-line "$scenario" <<<"$json")"
    # Let the kernel finish closing this run's sockets before the next server.
    sleep 1
}

write_report() { # RESULTS_DIR
    local dir="$1"
    # shellcheck disable=SC1091
    . "$dir/meta.env"
    echo "[bench] writing $out from $dir" >&2
    python3 bench/report.py --results "$dir/results.jsonl" --out "$out" --command "$command_line" \
        --quick "$quick" --rounds "$rounds" --threads "$threads" --elapsed "$elapsed" \
        --load-before "$load_before" --load-after "$load_after" \
        --pinned "${pinned:-0}" ${baseline_rev:+--baseline "$baseline_rev"} \
        ${micro_dir:+--criterion "$micro_dir"} --notes bench/NOTES.md \
        ${source_state:+--source-state "$source_state"}
}

if [ -n "$report_only" ]; then
    write_report "$report_only"
    exit 0
fi

# ---- run -------------------------------------------------------------------------
mkdir -p "$results_dir"
: > "$results"
say "building release binaries"
cargo build --release -p gatehouse-cli -p gatehouse-limit 2>&1 | tail -n 2 >&2
cp target/release/gatehouse "$results_dir/gatehouse-gen"
if [ -n "$baseline_rev" ]; then
    # shellcheck source=scripts/metrics-common.sh
    . scripts/metrics-common.sh
    build_baseline "$baseline_rev"
fi
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
# What is measured: the commit, and any uncommitted change to a server's sources.
source_state="$(python3 -c 'import sys; sys.path.insert(0, "bench"); import report; print(report.source_state())')"
started="$(date +%s)"

servers=(gatehouse erlang limit)
[ -n "$baseline_rev" ] && servers+=(baseline)
scenarios=(echo_d1 echo_d16 storm broadcast idle)
# shellcheck disable=SC2206
[ -n "$only_scenarios" ] && scenarios=($only_scenarios)
for round in $(seq 1 "$rounds"); do
    # Rotate the order each round: A B C, B C A, C A B, …
    shift_by=$(( (round - 1) % ${#servers[@]} ))
    order=("${servers[@]:$shift_by}" "${servers[@]:0:$shift_by}")
    for scenario in "${scenarios[@]}"; do
        for name in "${order[@]}"; do
            run_scenario "$scenario" "$name" "$round"
        done
    done
done
elapsed=$(( $(date +%s) - started ))
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

micro_dir=""
if [ $micro = 1 ]; then
    say "criterion micro-benchmarks"
    micro_args=(-- --warm-up-time 1 --measurement-time 3 --noplot)
    [ $quick = 1 ] && micro_args=(-- --warm-up-time 0.5 --measurement-time 1 --noplot)
    cargo bench -p gatehouse-protocol --bench codec "${micro_args[@]}" \
        >"$results_dir/criterion.txt" 2>&1
    cargo bench -p gatehouse --bench broadcast "${micro_args[@]}" \
        >>"$results_dir/criterion.txt" 2>&1
    micro_dir="target/criterion"
fi

cat >"$results_dir/meta.env" <<EOF
command_line='$command_line'
quick='$quick'
rounds='$rounds'
threads='$threads'
elapsed='$elapsed'
load_before='$load_before'
source_state='$source_state'
load_after='$load_after'
micro_dir='$micro_dir'
pinned='$pin'
baseline_rev='$baseline_rev'
EOF
write_report "$results_dir"
say "done in $(( $(date +%s) - started )) s; raw results in $results_dir"
