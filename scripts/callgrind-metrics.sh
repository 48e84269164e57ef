#!/usr/bin/env bash
# What the metrics cost per request, in instructions: the release server under
# `valgrind --tool=callgrind`, metrics on and off (or this tree against an earlier
# commit, with --baseline), echo at depth 1 and 16. Each case
# runs twice, with a short and a long load; the difference in the server's
# user-space instructions divided by the difference in requests answered is the
# marginal cost of one request (start-up, connecting and shutdown cancel out).
# Instruction counts do not depend on what else the machine does, so this settles
# what wall-clock runs on a shared host cannot (bench/NOTES.md).
#
#   scripts/callgrind-metrics.sh                 # ~6 minutes on 2 cores
#   scripts/callgrind-metrics.sh --baseline REV  # instead: gatehouse as of commit REV
#                                                # beside this tree's, metrics on in both
#   scripts/callgrind-metrics.sh --resume        # instead: this tree with connections
#                                                # logged in to resumable sessions
#                                                # (acknowledging) beside plain ones
#
# Everything runs on 127.0.0.0/8; raw figures go to target/callgrind-metrics/<time>/.
set -euo pipefail
cd "$(dirname "$0")/.."

baseline=""
resume=""
while [ $# -gt 0 ]; do
    case "$1" in
        --baseline) baseline="$2"; shift ;;
        --resume) resume=1 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

command -v valgrind >/dev/null || { echo "valgrind is needed (apt install valgrind)" >&2; exit 1; }
# shellcheck source=scripts/metrics-common.sh
. scripts/metrics-common.sh
metrics_setup callgrind-metrics
# The two servers compared: metrics off and on, or the baseline and this tree.
modes=(off on)
if [ -n "$baseline" ]; then
    build_baseline "$baseline"
    modes=(before after)
elif [ -n "$resume" ]; then
    modes=(plain resumed)
fi

server_pid=""
stop_server() {
    if [ -n "$server_pid" ]; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
}
trap stop_server EXIT

# MODE DEPTH SECONDS -> one line: instructions requests
measure() {
    local mode="$1" depth="$2" secs="$3" out="$dir/callgrind.$1.d$2.s$3" flags json root=.
    local gen_flags=()
    case "$mode" in
        before) root="$baseline_dir"; flags=() ;;
        after|plain) flags=() ;;
        resumed) flags=(); gen_flags=(--resume) ;;
        *) metrics_flags "$mode" ;;
    esac
    "${pin_server[@]}" valgrind --tool=callgrind --callgrind-out-file="$out" \
        "$root/target/release/gatehouse" serve --service bench \
        --config "$root/bench/gatehouse-bench.toml" \
        --log warn "${flags[@]}" > "$out.stdout" 2> "$out.stderr" &
    server_pid=$!
    wait_for_tcp "$out.stdout" "$out.stderr" 600
    json="$("${pin_gen[@]}" "$dir/gatehouse-gen" bench echo --quiet --addr "$addr" \
        --connections 100 --depth "$depth" --payload 64 --duration "$secs" --warmup 0 \
        "${gen_flags[@]}")"
    stop_server
    python3 - "$out" "$json" <<'PY'
import json, sys
out, result = sys.argv[1], json.loads(sys.argv[2])
totals = [l for l in open(out) if l.startswith(("summary:", "totals:"))]
print(int(totals[-1].split()[1]), result["verified"], result["errors"])
PY
}

results="$dir/results.txt"
: > "$results"
for depth in 1 16; do
    for mode in "${modes[@]}"; do
        read -r short_ir short_req short_err < <(measure "$mode" "$depth" 3)
        read -r long_ir long_req long_err < <(measure "$mode" "$depth" 9)
        echo "$mode $depth $short_ir $short_req $long_ir $long_req $((short_err + long_err))" >> "$results"
        say "depth $depth $mode done"
    done
done

python3 - "$results" "${modes[@]}" "${baseline_rev:-}" <<'PY'
import sys
results, first, second, rev = sys.argv[1:5]
rows = {}
for line in open(results):
    mode, depth, s_ir, s_req, l_ir, l_req, errors = line.split()
    per = (int(l_ir) - int(s_ir)) / (int(l_req) - int(s_req))
    rows[(mode, int(depth))] = (per, int(errors))
if rev:
    head = f"gatehouse as of `{rev}`: instructions per request | this tree | this / `{rev}`"
elif first == "plain":
    head = "resume off: instructions per request | resume on (logged in, acknowledging) | on / off"
else:
    head = "metrics off: instructions per request | metrics on | on / off"
print(f"| echo, 100 connections, 64 B | {head} |")
print("|---|---|---|---|")
for depth in (1, 16):
    a, b = rows[(first, depth)][0], rows[(second, depth)][0]
    print(f"| depth {depth} | {a:,.0f} | {b:,.0f} | **{b / a:.3f}** |")
errors = sum(e for _, e in rows.values())
print(f"\nUser-space instructions of the server (callgrind), marginal per request between a 3 s and a 9 s load; errors: {errors}")
PY
say "raw figures: $dir"
