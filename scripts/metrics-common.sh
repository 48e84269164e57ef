# What scripts/bench-metrics.sh and scripts/callgrind-metrics.sh share (sourced, not
# run): the results directory, the release build and the generator's copy of it,
# pinning the server and the generator apart, the two servers compared (metrics on
# and off), and waiting for a server's TCP listener.
#
#   metrics_setup NAME    sets dir, say(), pin_server, pin_gen; builds the binary
#   build_baseline REV    sets baseline_rev, baseline_dir; builds gatehouse as of REV
#                         (from `git archive REV`, once: scripts/bench.sh shares it)

metrics_setup() { # NAME
    local name="$1"
    dir="target/$name/$(date -u +%Y%m%dT%H%M%SZ)"
    mkdir -p "$dir"
    eval "say() { echo \"[$name] \$*\" >&2; }"
    say "building the release binary"
    cargo build --release -p gatehouse-cli >&2
    cp target/release/gatehouse "$dir/gatehouse-gen"
    pin_server=(); pin_gen=()
    if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
        pin_server=(taskset -c 0); pin_gen=(taskset -c 1)
    fi
}

# The `gatehouse serve --service bench` flags of MODE: `on` (the admin listener up,
# metrics counted) or `off` (neither).
metrics_flags() { # MODE -> flags
    if [ "$1" = on ]; then flags=(--admin-port 0); else flags=(--no-admin --no-metrics); fi
}

# Waits (at most TENTHS tenths of a second) for the server writing OUT to print its
# TCP listener; sets addr, or exits naming ERR.
wait_for_tcp() { # OUT ERR TENTHS -> addr
    addr=""
    for _ in $(seq 1 "$3"); do
        addr="$(sed -n 's/^listening on tcp:\/\///p' "$1")"
        [ -n "$addr" ] && return 0
        sleep 0.1
    done
    echo "the server did not start; see $2" >&2
    exit 1
}

# Builds the release binary of gatehouse as of commit REV in target/bench/baseline-REV
# (kept, so that later runs and scripts/bench.sh reuse it).
build_baseline() { # REV -> baseline_rev, baseline_dir
    baseline_rev="$(git rev-parse --short "$1")"
    baseline_dir="target/bench/baseline-$baseline_rev"
    if [ ! -x "$baseline_dir/target/release/gatehouse" ]; then
        echo "building the baseline $baseline_rev in $baseline_dir" >&2
        rm -rf "$baseline_dir"
        mkdir -p "$baseline_dir"
        git archive "$baseline_rev" | tar -x -C "$baseline_dir"
        (cd "$baseline_dir" && cargo build --release -p gatehouse-cli 2>&1 | tail -n 2 >&2)
    fi
}
