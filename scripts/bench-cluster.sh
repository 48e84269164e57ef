#!/usr/bin/env bash
# What a cluster costs a broadcast: N listeners on one gatehouse (no cluster) against
# the same N split over two gatehouse nodes of a cluster (a nats-server of this
# script's own, on loopback), the bench service, one sender. For each, the CPU of
# every server process (gatehouse, and nats-server) per delivery, as the difference
# between a long and a short run divided by the difference in deliveries (start-up,
# connecting and shutdown cancel out), and the time from the send to the median and
# to the last listener. Then take-over logins, and arena's rooms of 10 played 5 + 5
# from two nodes against the same rooms on one node (needs PostgreSQL: a cluster
# refuses SQLite): the CPU of every server process over the same measured window,
# and how much later a room's far half gets each delta than its near half. The
# generator runs on one core, the servers on the other.
#
#   scripts/bench-cluster.sh                                # 5,000 listeners, 3 repeats
#   scripts/bench-cluster.sh --listeners 2000 --repeat 1
#   scripts/bench-cluster.sh --steps rooms                  # any of: broadcast logins rooms
#   scripts/bench-cluster.sh --players 400                  # arena bots in rooms of 10 (200)
#   scripts/bench-cluster.sh --nats /usr/sbin/nats-server   # else $GATEHOUSE_TEST_NATS_SERVER or PATH
#   scripts/bench-cluster.sh --postgres URL                 # else $GATEHOUSE_TEST_POSTGRES_URL;
#                                                           # without one, no rooms step
#
# Everything runs on 127.0.0.0/8 and stops by itself; raw JSON goes to
# target/bench-cluster/<time>/.
set -euo pipefail
cd "$(dirname "$0")/.."

listeners=5000
repeat=3
steps="broadcast logins rooms"
players=200
postgres="${GATEHOUSE_TEST_POSTGRES_URL:-}"
short=20
long=220
nats_bin="${GATEHOUSE_TEST_NATS_SERVER:-$(command -v nats-server || echo /usr/sbin/nats-server)}"
while [ $# -gt 0 ]; do
    case "$1" in
        --listeners) listeners="$2"; shift ;;
        --repeat) repeat="$2"; shift ;;
        --nats) nats_bin="$2"; shift ;;
        --steps) steps="$2"; shift ;;
        --players) players="$2"; shift ;;
        --postgres) postgres="$2"; shift ;;
        -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
[ -x "$nats_bin" ] || { echo "no nats-server at $nats_bin (apt install nats-server)" >&2; exit 1; }
step() { [[ " $steps " == *" $1 "* ]]; }
case "$postgres" in *'"'*|*'\'*) echo "a PostgreSQL URL with \" or \\ cannot go into TOML here" >&2; exit 2 ;; esac
if step rooms && [ -z "$postgres" ]; then
    echo "no PostgreSQL (--postgres or GATEHOUSE_TEST_POSTGRES_URL): skipping the rooms step" >&2
    steps="${steps/rooms/}"
fi

# shellcheck source=scripts/metrics-common.sh
. scripts/metrics-common.sh
metrics_setup bench-cluster
bin="$dir/gatehouse-gen"

pids=()
stop_all() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
}
trap stop_all EXIT

# User + system CPU ticks of PID (fields 14 and 15 after the command name).
ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }

# The median of the numbers in WORDS (separated by spaces).
median() { # WORDS
    printf '%s\n' $1 | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# A nats-server with JetStream, its store in STORE, on a free port; sets port, adds
# its pid.
start_nats() { # STORE
    port="$(free_port)"
    mkdir -p "$1"
    "${pin_server[@]}" "$nats_bin" -a 127.0.0.1 -p "$port" -js -sd "$1" > "$dir/nats.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nats-server did not start; see $dir/nats.log" >&2
    exit 1
}

# A gatehouse of the bench service on its own port; sets addr, adds its pid.
start_gatehouse() { # NAME ARGS...
    local name="$1"; shift
    # bench/gatehouse-bench.toml: the caps and rates a load generator needs.
    "${pin_server[@]}" "$bin" serve -c bench/gatehouse-bench.toml --no-admin \
        --listen tcp://127.0.0.1:0 --log warn "$@" > "$dir/$name.out" 2> "$dir/$name.log" &
    pids+=($!)
    wait_for_tcp "$dir/$name.out" "$dir/$name.log" 200
}

# One run of MODE (single | split) with ROUNDS broadcasts: prints
# "ticks deliveries p50_ms time_to_all_ms" and keeps the report.
run_once() { # MODE ROUNDS N (in a subshell: its servers stop with it)
    local mode="$1" rounds="$2" n="$3" also=() json
    trap stop_all EXIT
    if [ "$mode" = split ]; then
        start_nats "$dir/nats-$n-$rounds"
        start_gatehouse b --node b --nats "nats://127.0.0.1:$port"
        also=(--also "$addr")
        start_gatehouse a --node a --nats "nats://127.0.0.1:$port"
        # Both nodes hear each other before the first round (heartbeats, 2 s).
        sleep 3
    else
        start_gatehouse single
    fi
    local before=0 after=0 pid
    for pid in "${pids[@]}"; do before=$((before + $(ticks "$pid"))); done
    json="$dir/$mode-r$rounds-$n.json"
    "${pin_gen[@]}" "$bin" bench broadcast --addr "$addr" "${also[@]}" --quiet \
        --listeners "$listeners" --rounds "$rounds" --timeout 5 > "$json"
    for pid in "${pids[@]}"; do after=$((after + $(ticks "$pid"))); done
    stop_all
    python3 - "$json" "$((after - before))" "$rounds" "$listeners" <<'EOF'
import json, statistics, sys
report = json.load(open(sys.argv[1]))
ticks, rounds, listeners = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
if report["lost"] or report["duplicates"]:
    sys.exit(f"{sys.argv[1]}: lost {report['lost']}, duplicates {report['duplicates']}")
p50 = statistics.median(r["p50_ms"] for r in report["per_round"])
print(ticks, rounds * listeners, round(p50, 3), report["median_time_to_all_ms"])
EOF
}

declare -A cost p50 all
step broadcast && for mode in single split; do
    costs=(); p50s=(); alls=()
    for i in $(seq 1 "$repeat"); do
        say "$mode, repeat $i: $short and $long broadcasts to $listeners"
        read -r t1 d1 _ _ < <(run_once "$mode" "$short" "$i")
        read -r t2 d2 m2 a2 < <(run_once "$mode" "$long" "$i")
        # Ticks are 10 ms of CPU; microseconds per delivery.
        costs+=("$(python3 -c "print(round(($t2 - $t1) * 10000 / ($d2 - $d1), 3))")")
        p50s+=("$m2"); alls+=("$a2")
    done
    cost[$mode]="$(median "${costs[*]}")"
    p50[$mode]="$(median "${p50s[*]}")"
    all[$mode]="$(median "${alls[*]}")"
    say "$mode: CPU per delivery ${costs[*]} µs; p50 ${p50s[*]} ms; to all ${alls[*]} ms"
done

# Take-over logins (scripts/cluster-logins.py): on the same node, and from the other.
takeovers() { # -> "same_node_p50 other_node_p50 fresh_p50" in ms
    trap stop_all EXIT
    local b
    start_nats "$dir/nats-logins"
    start_gatehouse b --node b --nats "nats://127.0.0.1:$port"
    b="$addr"
    start_gatehouse a --node a --nats "nats://127.0.0.1:$port"
    sleep 3
    "${pin_gen[@]}" python3 scripts/cluster-logins.py "$addr" "$b" 200
    stop_all
}
if step logins; then
    say "take-over logins, 200 of each"
    read -r same_ms other_ms fresh_ms < <(takeovers)
fi

# An arena server on PostgreSQL on its own port, in a cluster as NODE when given;
# sets addr, adds its pid. Every bot logs in from 127.0.0.1: the per-address caps
# are lifted (as in scripts/bench-arena.sh).
start_arena() { # NAME [NODE]
    local name="$1" node="${2:-}" conf="$dir/$1.toml"
    printf '[game]\nservice = "arena"\nmax_room_players_per_ip = 20000\nnew_accounts_per_ip_per_hour = 1000000\n[server]\nmax_connections = 20000\nmax_connections_per_ip = 20000\n[store]\nbackend = "postgres"\npostgres_url = "%s"\n' \
        "$postgres" > "$conf"
    if [ -n "$node" ]; then
        printf '[cluster]\nenabled = true\nnats_url = "nats://127.0.0.1:%s"\nnode = "%s"\n' "$port" "$node" >> "$conf"
    fi
    "${pin_server[@]}" "$bin" serve -c "$conf" --no-admin --listen tcp://127.0.0.1:0 \
        --log warn > "$dir/$name.out" 2> "$dir/$name.log" &
    pids+=($!)
    wait_for_tcp "$dir/$name.out" "$dir/$name.log" 200
}

# One run of arena's rooms, MODE local (one node) or split (5 + 5 over two): prints
# "cpu_percent far_after_near_p50_us p99_us lateness_p99_us".
rooms_once() { # MODE RUN (in a subshell: its servers stop with it)
    local mode="$1" also=() json
    trap stop_all EXIT
    if [ "$mode" = split ]; then
        start_nats "$dir/nats-rooms-$2"
        start_arena b b
        also=(--also "$addr")
        start_arena a a
        sleep 3 # both nodes hear each other (heartbeats, 2 s)
    else
        start_arena local
    fi
    local pid_args=()
    for pid in "${pids[@]}"; do pid_args+=(--server-pid "$pid"); done
    json="$dir/rooms-$mode-$2.json"
    "${pin_gen[@]}" "$bin" bench arena --addr "$addr" "${also[@]}" "${pid_args[@]}" --quiet \
        --players "$players" --room-size 10 --duration 20 --warmup 3 > "$json"
    stop_all
    python3 - "$json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
if r["missing"] or r["dropped"]:
    sys.exit(f"{sys.argv[1]}: {r['missing']} deltas missed, {r['dropped']} bots dropped")
if r["far_after_near_p50_us"] is None:
    sys.exit(f"{sys.argv[1]}: no delta reached both halves of a room")
print(round(r["server_cpu_percent"], 2), r["far_after_near_p50_us"],
      r["far_after_near_p99_us"], r["lateness_p99_us"])
EOF
}

declare -A rcpu rp50 rp99 rlate
if step rooms; then
    for i in $(seq 1 "$repeat"); do
        for mode in local split; do # interleaved: the machine's drift falls on both
            say "rooms, $mode, repeat $i: $players bots in rooms of 10"
            read -r c l50 l99 late < <(rooms_once "$mode" "$i")
            rcpu[$mode]+="$c "; rp50[$mode]+="$l50 "; rp99[$mode]+="$l99 "; rlate[$mode]+="$late "
        done
    done
fi

if step broadcast; then
ratio="$(python3 -c "print(round(${cost[split]} / ${cost[single]}, 3))")"
printf '\n%-34s %12s %12s %14s\n' "broadcast to $listeners (median of $repeat)" "CPU/delivery" "p50 (ms)" "to all (ms)"
printf '%-34s %10s µs %12s %14s\n' "one node, no cluster" "${cost[single]}" "${p50[single]}" "${all[single]}"
printf '%-34s %10s µs %12s %14s\n' "two nodes + nats-server" "${cost[split]}" "${p50[split]}" "${all[split]}"
printf '%-34s %12s\n' "ratio, split ÷ one node" "$ratio"
fi
step logins && printf '\nlogin p50 (ms, 200 each): fresh %s; taking over on the same node %s; from the other node %s\n' \
    "$fresh_ms" "$same_ms" "$other_ms"
if step rooms; then
    printf '\n%-30s %14s %22s %22s %16s\n' "arena, $players bots, rooms of 10" "CPU (% core)" \
        "far − near p50 (µs)" "far − near p99 (µs)" "tick late p99"
    for mode in local split; do
        printf '%-30s %14s %22s %22s %16s\n' "$mode (median of $repeat)" "$(median "${rcpu[$mode]}")" \
            "$(median "${rp50[$mode]}")" "$(median "${rp99[$mode]}")" "$(median "${rlate[$mode]}")"
    done
    printf '%-30s %14s\n' "CPU ratio, split ÷ local" \
        "$(python3 -c "print(round($(median "${rcpu[split]}") / $(median "${rcpu[local]}"), 3))")"
    printf 'each run: CPU %s (local), %s (split); far − near p50 %s (local), %s (split)\n' \
        "${rcpu[local]}" "${rcpu[split]}" "${rp50[local]}" "${rp50[split]}"
fi
echo "raw reports: $dir" >&2
