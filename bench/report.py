#!/usr/bin/env python3
"""Turns the raw results of scripts/bench.sh into docs/BENCHMARKS.md.

    python3 bench/report.py --results target/bench/STAMP/results.jsonl --out docs/BENCHMARKS.md …
    python3 bench/report.py --summary-line echo_d1 < one-json-line      # a one-line summary

Each line of the results file is {"server", "bench", "round", "load", "result"} where
result is the JSON line printed by `gatehouse bench`. Standard library only.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys

SERVERS = ["gatehouse", "baseline", "erlang", "limit"]
LABEL = {"gatehouse": "gatehouse", "baseline": "gatehouse before", "erlang": "Erlang (seed)",
         "limit": "tokio limit"}


def summary(bench, r):
    if bench.startswith("echo"):
        return (f"{r['requests_per_sec']:.0f} req/s, p50 {r['latency']['p50_us']:.0f} µs, "
                f"p99 {r['latency']['p99_us']:.0f} µs, errors {r['errors']}, lost {r['lost']}")
    if bench == "storm":
        t = r["all_answered_s"]
        return (f"{r['answered']}/{r['count']} answered, all in "
                f"{'—' if t is None else f'{t:.3f} s'}, failed {r['failed']}")
    if bench == "broadcast":
        m = r["median_time_to_all_ms"]
        return f"median time-to-all {'—' if m is None else f'{m:.1f} ms'}, lost {r['lost']}"
    if bench == "idle":
        rss = r["rss_per_connection_bytes"]
        cpu = r["cpu_percent_of_core"]
        return (f"{r['alive']}/{r['count']} alive, "
                f"{'—' if rss is None else f'{rss:.0f} B'} RSS/conn, "
                f"{'—' if cpu is None else f'{cpu:.2f} %'} CPU")
    return json.dumps(r)


def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            mem_kib = int(next(l for l in f if l.startswith("MemTotal")).split()[1])
    except (OSError, StopIteration, ValueError):
        mem_kib = 0
    otp = sh("erl", "-noshell", "-eval",
             'io:format("OTP ~s, erts ~s", [erlang:system_info(otp_release), '
             'erlang:system_info(version)]), halt().')
    return {
        "cores (nproc)": str(os.cpu_count()),
        "CPU": model,
        "memory": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "kernel": f"{platform.system()} {platform.release()}",
        "rustc": sh("rustc", "--version"),
        "Erlang/OTP": otp,
        "open files (ulimit -n)": sh("bash", "-c", "ulimit -n"),
        "net.core.somaxconn": sh("cat", "/proc/sys/net/core/somaxconn"),
    }


def source_state():
    """The commit measured, and whether the server's sources differed from it."""
    head = sh("git", "rev-parse", "--short", "HEAD")
    dirty = sh("git", "status", "--porcelain", "--", "crates/gatehouse/src",
               "crates/gatehouse-protocol/src", "crates/gatehouse-cli/src", "bench/limit-server",
               "bench/erlang/src")
    if dirty and dirty != "unknown":
        files = ", ".join(f"`{l.split(maxsplit=1)[-1]}`" for l in dirty.splitlines())
        return f"`{head}` plus uncommitted changes to {files}"
    return f"`{head}` (server sources as committed)"


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, digits=0, unit=""):
    if v is None:
        return "—"
    if isinstance(v, float) and v == float("inf"):
        return "∞"
    return f"{v:,.{digits}f}{unit}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


# What each scenario's table shows: (column title, how to get it from a result,
# digits, unit); the first is the headline metric, compared between servers.
ECHO_COLUMNS = [
    ("requests/s", lambda r: r["requests_per_sec"], 0, ""),
    ("p50", lambda r: r["latency"]["p50_us"], 0, " µs"),
    ("p99", lambda r: r["latency"]["p99_us"], 0, " µs"),
    ("p99.9", lambda r: r["latency"]["p999_us"], 0, " µs"),
    ("server CPU", lambda r: r.get("server_cpu_percent"), 0, " %"),
    ("server CPU per request", lambda r: r.get("server_cpu_us_per_request"), 2, " µs"),
]
METRICS = {
    "echo_d1": ECHO_COLUMNS,
    "echo_d16": ECHO_COLUMNS,
    "storm": [
        ("all answered in", lambda r: r["all_answered_s"] if r["all_answered_s"] is not None
         else float("inf"), 3, " s"),
        ("p50 per connect", lambda r: r["time_to_answer"]["p50_us"] / 1e3, 1, " ms"),
        ("p99 per connect", lambda r: r["time_to_answer"]["p99_us"] / 1e3, 1, " ms"),
    ],
    "broadcast": [
        ("time to all (median of rounds)", lambda r: r["median_time_to_all_ms"]
         if r["median_time_to_all_ms"] is not None else float("inf"), 1, " ms"),
        ("p50 listener", lambda r: median([x["p50_ms"] for x in r["per_round"]]), 1, " ms"),
        ("p99 listener", lambda r: median([x["p99_ms"] for x in r["per_round"]]), 1, " ms"),
    ],
    "idle": [
        ("RSS per connection", lambda r: r["rss_per_connection_bytes"], 0, " B"),
        ("CPU while idle", lambda r: r["cpu_percent_of_core"], 2, " % of a core"),
    ],
}

# Failures counted per run (summed over runs in the tables).
FAILURES = {
    "echo_d1": lambda r: r["errors"] + r["lost"] + (r["connections"] - r["connected"]),
    "echo_d16": lambda r: r["errors"] + r["lost"] + (r["connections"] - r["connected"]),
    "storm": lambda r: r["failed"],
    "broadcast": lambda r: r["lost"] + r["duplicates"] + r["wrong_payload"],
    "idle": lambda r: r["dead"],
}

TITLES = {
    "echo_d1": "Echo, 100 connections, 64 B, depth 1",
    "echo_d16": "Echo, 100 connections, 64 B, depth 16",
    "storm": "Connect storm",
    "broadcast": "Broadcast",
    "idle": "Idle connections",
}

HIGHER_IS_BETTER = {"echo_d1", "echo_d16"}


def load(path):
    runs = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                runs.setdefault(row["bench"], {}).setdefault(row["server"], []).append(row)
    return runs


def headline(runs, bench, server):
    rows = runs.get(bench, {}).get(server, [])
    return median([METRICS[bench][0][1](row["result"]) for row in rows])


def per_round_ratios(runs, bench, other):
    """gatehouse ÷ other within each round (the two ran minutes apart, under the same
    conditions), for the headline metric."""
    get = METRICS[bench][0][1]
    by_round = lambda s: {r["round"]: get(r["result"]) for r in runs.get(bench, {}).get(s, [])}
    mine, theirs = by_round("gatehouse"), by_round(other)
    return [ratio(mine[k], theirs[k]) for k in sorted(mine) if k in theirs
            and ratio(mine[k], theirs[k]) is not None]


def criterion_results(root):
    found = []
    for dirpath, _dirs, files in os.walk(root):
        if os.path.basename(dirpath) != "new" or "estimates.json" not in files:
            continue
        try:
            with open(os.path.join(dirpath, "benchmark.json")) as f:
                meta = json.load(f)
            with open(os.path.join(dirpath, "estimates.json")) as f:
                est = json.load(f)
        except (OSError, ValueError):
            continue
        found.append((meta, est))
    found.sort(key=lambda m: m[0].get("full_id", ""))
    return found


def ns(v):
    if v < 1e3:
        return f"{v:.1f} ns"
    if v < 1e6:
        return f"{v / 1e3:.2f} µs"
    return f"{v / 1e6:.2f} ms"


def write_report(args):
    runs = load(args.results)
    quick = args.quick == "1"
    out = []
    w = out.append
    # The run's start, from its results directory (target/bench/YYYYMMDDTHHMMSSZ).
    stamp = os.path.basename(os.path.dirname(os.path.abspath(args.results)))
    try:
        now = datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    w("# Benchmarks")
    w("")
    w("<!-- Written by scripts/bench.sh (bench/report.py); edit those, not this file. -->")
    w("")
    w("gatehouse side by side with the Erlang rendering of the seed (`bench/erlang`) and the")
    w("barest tokio server with the same wire behaviour (`bench/limit-server`, the practical")
    w("limit on the measuring machine), through the same scenarios of `gatehouse bench`, in")
    w("one run" + (f", with gatehouse as of `{args.baseline}` beside it (*before*)." if args.baseline
                   else "."))
    w("")
    if quick:
        w("> **This is a `--quick` smoke run** (small counts, one round): it shows the script")
        w("> works, not how the servers compare. Run `scripts/bench.sh` for the real numbers.")
        w("")
    w(f"- Run: {now}, `{args.command}`, {args.rounds} round(s) per scenario and server;")
    w(f"  the scenarios took {int(args.elapsed) // 60} min {int(args.elapsed) % 60} s.")
    w(f"- Load average before the run {args.load_before}, after it {args.load_after}, and at")
    if args.pinned == "1":
        w("  each measurement in the raw results. The server ran on core 0 and the generator on")
        w("  core 1 (`taskset`), so each had one core to itself; anything else running (a")
        w("  compile) makes the numbers noisy.")
    else:
        w("  each measurement in the raw results: the generator and the server shared the")
        w("  machine's cores; anything else running (a compile) makes the numbers noisy.")
    w(f"- Sources measured: {args.source_state}.")
    w("- Raw results: one JSON line per measurement, in `target/bench/<time>/results.jsonl`.")
    w("")
    w("## Reproduce")
    w("")
    w("```sh")
    w("scripts/bench.sh                      # everything, then rewrites this file")
    w("scripts/bench.sh --baseline REV       # the same, with gatehouse as of commit REV beside it")
    w("scripts/bench.sh --quick              # a 3-minute smoke run with small counts")
    w("cargo bench -p gatehouse-protocol     # the criterion micro-benchmarks alone (codec) …")
    w("cargo bench -p gatehouse              # … and the hub's fan-out")
    w("scripts/bench-transports.sh           # TCP, TLS, WebSocket, wss side by side (its table: below)")
    w("scripts/callgrind-metrics.sh          # metrics on vs off, instructions per request (below)")
    w("scripts/callgrind-metrics.sh --baseline REV  # this tree vs commit REV, instructions per request")
    w("scripts/bench-metrics.sh              # metrics on vs off, wall clock (below)")
    w("scripts/bench-logins.sh               # arena logins under creation floods (below)")
    w("```")
    w("")
    w("## The measuring machine")
    w("")
    w("| | |")
    w("|---|---|")
    for k, v in machine().items():
        w(f"| {k} | {v} |")
    w("")
    w("## How it is measured")
    w("")
    w("- Each server is started fresh for each measurement, on a free port of 127.0.0.1, and")
    w("  stopped after it: gatehouse as `gatehouse serve --service bench --config")
    w("  bench/gatehouse-bench.toml --port 0 --log warn` (the defaults, with the connection")
    w("  caps and the DoS checker's rates raised out of the way; the checker still runs),")
    w("  the Erlang seed as `bench/erlang/run.sh 0 300` (OTP defaults), the limit as")
    w("  `gatehouse-limit --port 0` (tokio's default runtime: one worker per available core)."
      + (f" *Before* is `gatehouse serve` built from `git archive {args.baseline}`, with that"
         " commit's own `bench/gatehouse-bench.toml`." if args.baseline else ""))
    w("- Order is interleaved: each scenario runs every server in turn, and the order is")
    w("  rotated each round (gatehouse, Erlang, limit, … then Erlang, limit, …, gatehouse).")
    w("  Tables show the **median** over rounds.")
    w(f"- The generator is `gatehouse bench … --threads {args.threads}`"
      + (": one current-thread runtime, so it takes at most one core and the server has"
         if args.threads == "1" else ".")
      )
    if args.threads == "1":
        w("  the other (see *The generator* below). It binds its sockets to")
    else:
        w("  It binds its sockets to")
    w("  127.x.y.z source addresses, 5,000 connections per address.")
    w("- Every server speaks the same envelope (`docs/PROTOCOL.md`), so the generator needs")
    w("  no raw mode; it relies on nothing only gatehouse does (no kicks expected, timers and")
    w("  unexpected frames tolerated) and checks every response it counts.")
    many = "2,000" if quick else "15,000"
    w("")
    w("| scenario | what is measured |")
    w("|---|---|")
    w("| echo depth 1 | 100 connections, 64 B payloads, one request in flight each; requests/s and latency over the measured window, after a warm-up |")
    w("| echo depth 16 | the same with 16 requests in flight per connection (pipelined) |")
    w(f"| storm | {many} connects at once, each then pings; time until the last pong |")
    w(f"| broadcast | {many} listeners + 1 sender; the sender broadcasts (route 2) one push at a time; time from the send until the last listener has read it, and losses (not within 5 s) |")
    w(f"| idle | {many} connections opened, then held idle; server RSS after − before, per connection; server CPU (utime + stime) over the hold, no client traffic in it |")
    w("")

    # ---- targets
    servers = [srv for srv in SERVERS if any(srv in per for per in runs.values())]
    if args.baseline:
        LABEL["baseline"] = f"gatehouse before (`{args.baseline}`)"
    w("## Targets (issue 7: the server's cost per request down to the limit's)")
    w("")
    w("| target | measured | met? |")
    w("|---|---|---|")
    for name, measured, met in evaluate_structure(runs):
        w(f"| {name} | {measured} | {'**met**' if met else '**not met**' if met is False else 'no data'} |")
    w("")
    if "baseline" in servers:
        w("## Before and after")
        w("")
        w(f"gatehouse as of `{args.baseline}` (*before*) and as measured (*after*), in the same run,")
        w("same machine, same generator; medians over rounds.")
        w("")
        w("| scenario | metric | before | after | after ÷ before |")
        w("|---|---|---|---|---|")
        for bench in ["echo_d1", "echo_d16", "storm", "broadcast", "idle"]:
            if bench not in runs:
                continue
            for title, get, digits, unit in METRICS[bench]:
                if title in ("p50", "p99.9", "server CPU", "p50 listener", "p50 per connect"):
                    continue
                b = median([get(r["result"]) for r in runs[bench].get("baseline", [])])
                a = median([get(r["result"]) for r in runs[bench].get("gatehouse", [])])
                w(f"| {TITLES[bench]} | {title} | {fmt(b, digits, unit)} | {fmt(a, digits, unit)} "
                  f"| {fmt(ratio(a, b), 2)} |")
        w("")
    w("## Targets (issue 4)")
    w("")
    targets = evaluate(runs)
    w("| target | measured | met? |")
    w("|---|---|---|")
    for name, measured, met in targets:
        w(f"| {name} | {measured} | {'**met**' if met else '**not met**' if met is False else 'no data'} |")
    w("")
    if quick:
        w("(A quick run uses smaller counts than the targets name: its verdicts are indicative only.)")
        w("")

    # ---- per scenario
    w("## Results")
    w("")
    w("Ratios are gatehouse ÷ the other server on the first column: "
      "above 1 is better for requests/s, below 1 is better for times and costs. "
      "The targets are judged on the ratio of the medians; the per-round ratios (each "
      "pair measured minutes apart) show how much the machine's noise moves it.")
    w("")
    for bench in ["echo_d1", "echo_d16", "storm", "broadcast", "idle"]:
        if bench not in runs:
            continue
        w(f"### {TITLES[bench]}")
        w("")
        cols = METRICS[bench]
        head = ["server"] + [c[0] for c in cols] + ["runs", "failures"]
        w("| " + " | ".join(head) + " |")
        w("|" + "---|" * len(head))
        for server in servers:
            rows = runs[bench].get(server, [])
            if not rows:
                continue
            cells = [LABEL[server]]
            for _title, get, digits, unit in cols:
                cells.append(fmt(median([get(r["result"]) for r in rows]), digits, unit))
            cells.append(str(len(rows)))
            cells.append(str(sum(FAILURES[bench](r["result"]) for r in rows)))
            w("| " + " | ".join(cells) + " |")
        w("")
        gh = headline(runs, bench, "gatehouse")
        for other in [o for o in ["baseline", "erlang", "limit"] if o in servers]:
            r = ratio(gh, headline(runs, bench, other))
            paired = per_round_ratios(runs, bench, other)
            w(f"- gatehouse / {LABEL[other]}: **{fmt(r, 2)}** (ratio of the medians); "
              f"median of the per-round ratios {fmt(median(paired), 2)}, "
              f"range {fmt(min(paired, default=None), 2)}–{fmt(max(paired, default=None), 2)}")
        if bench.startswith("echo"):
            per = lambda s: median([r["result"].get("server_cpu_us_per_request")
                                    for r in runs[bench].get(s, [])])
            for other in [o for o in ["baseline", "erlang", "limit"] if o in servers]:
                r = ratio(per("gatehouse"), per(other))
                w(f"- server CPU per request, gatehouse / {LABEL[other]}: **{fmt(r, 2)}**"
                  " (below 1: gatehouse spends less CPU per request)")
        spread = [METRICS[bench][0][1](row["result"]) for row in runs[bench].get("gatehouse", [])]
        if len(spread) > 1:
            w(f"- gatehouse per round: {', '.join(fmt(v, cols[0][2]) for v in spread)}")
        w("")

    # ---- micro
    w("## Micro-benchmarks (criterion)")
    w("")
    if args.criterion and os.path.isdir(args.criterion):
        w("`cargo bench -p gatehouse-protocol --bench codec` and `cargo bench -p gatehouse "
          "--bench broadcast`, each `-- --warm-up-time 1 --measurement-time 3` (run by the "
          "script after the servers; sources in `crates/gatehouse-protocol/benches/` and "
          "`crates/gatehouse/benches/`). Time per iteration: the mean and its 95 % "
          "confidence interval.")
        w("")
        w("| benchmark | time | throughput |")
        w("|---|---|---|")
        for meta, est in criterion_results(args.criterion):
            full = meta.get("full_id", "?")
            if not (full.startswith("codec/") or full.startswith("broadcast/")):
                continue
            med = est["mean"]["point_estimate"]
            lo = est["mean"]["confidence_interval"]["lower_bound"]
            hi = est["mean"]["confidence_interval"]["upper_bound"]
            tp = meta.get("throughput") or {}
            through = ""
            if "Bytes" in tp and "/decode/" not in full:
                through = f"{tp['Bytes'] / med * 1e9 / 2**30:.2f} GiB/s"
            elif "Elements" in tp:
                per = med / tp["Elements"]
                through = f"{per:.1f} ns per recipient"
            w(f"| `{full}` | {ns(med)} [{ns(lo)} – {ns(hi)}] | {through} |")
        w("")
        w("`broadcast/fan_out` runs the hub's real broadcast handling and `Mailbox::deliver`")
        w("over detached mailboxes (`gatehouse::hub::bench_support`). It does not include")
        w("waking the connection tasks, which the end-to-end broadcast scenario above does.")
    else:
        w("(Not run this time: `scripts/bench.sh` without `--no-micro` runs them.)")
    w("")
    if args.notes and os.path.exists(args.notes):
        with open(args.notes) as f:
            w(f.read().rstrip())
        w("")
    with open(args.out, "w") as f:
        f.write("\n".join(out) + "\n")


def evaluate_structure(runs):
    """Issue 7's targets: [(target, measured text, met: True/False/None)]"""
    out = []
    h = lambda b, s: headline(runs, b, s)
    cpu = lambda b, s: median([r["result"].get("server_cpu_us_per_request")
                               for r in runs.get(b, {}).get(s, [])])
    for bench, depth in [("echo_d1", 1), ("echo_d16", 16)]:
        g, lim = cpu(bench, "gatehouse"), cpu(bench, "limit")
        r = ratio(g, lim)
        out.append((f"server CPU per request at depth {depth} ≤ 1.1 × the limit's",
                    f"{fmt(g, 2)} vs {fmt(lim, 2)} µs = {fmt(r, 2)} ×",
                    None if r is None else r <= 1.1))
    g, lim = h("echo_d16", "gatehouse"), h("echo_d16", "limit")
    r = ratio(g, lim)
    out.append(("requests/s at depth 16 ≥ 0.9 × the limit (generator pinned apart)",
                f"{fmt(g)} vs {fmt(lim)} req/s = {fmt(r, 2)} ×",
                None if r is None else r >= 0.9))
    rss = h("idle", "gatehouse")
    if rss is not None:
        out.append(("idle memory per connection not above 2.5 KiB (2,560 B)",
                    f"{fmt(rss)} B", rss <= 2560))
    for bench, what in [("storm", "storm: all answered"), ("broadcast", "broadcast: time to all")]:
        a, b = h(bench, "gatehouse"), h(bench, "baseline")
        r = ratio(a, b)
        unit = " s" if bench == "storm" else " ms"
        digits = 3 if bench == "storm" else 1
        # "Not slower": within the run-to-run noise of these scenarios (10 %).
        out.append((f"{what} not slower than before",
                    f"{fmt(a, digits, unit)} vs {fmt(b, digits, unit)} before = {fmt(r, 2)} ×",
                    None if r is None else r <= 1.1))
    return out


def evaluate(runs):
    """[(target, measured text, met: True/False/None)]"""
    out = []
    h = lambda b, s: headline(runs, b, s)

    def failures(bench, server):
        return sum(FAILURES[bench](r["result"]) for r in runs.get(bench, {}).get(server, []))

    gh, erl, lim = h("echo_d1", "gatehouse"), h("echo_d1", "erlang"), h("echo_d1", "limit")
    r = ratio(gh, erl)
    out.append(("echo depth 1 ≥ 1.8 × Erlang",
                f"{fmt(gh)} vs {fmt(erl)} req/s = {fmt(r, 2)} ×",
                None if r is None else r >= 1.8))
    r = ratio(gh, lim)
    out.append(("echo depth 1 ≥ 0.9 × the tokio limit",
                f"{fmt(gh)} vs {fmt(lim)} req/s = {fmt(r, 2)} ×",
                None if r is None else r >= 0.9))
    gh, erl = h("echo_d16", "gatehouse"), h("echo_d16", "erlang")
    r = ratio(gh, erl)
    out.append(("echo depth 16 ≥ 2 × Erlang",
                f"{fmt(gh)} vs {fmt(erl)} req/s = {fmt(r, 2)} ×",
                None if r is None else r >= 2.0))
    storm = runs.get("storm", {}).get("gatehouse", [])
    if storm:
        times = [x["result"]["all_answered_s"] for x in storm]
        worst = max(float("inf") if t is None else t for t in times)
        med = median([float("inf") if t is None else t for t in times])
        n = storm[0]["result"]["count"]
        out.append((f"storm of {n:,} connects all answered in < 2 s",
                    f"median {fmt(med, 3)} s, worst {fmt(worst, 3)} s, failed {failures('storm', 'gatehouse')}",
                    med < 2.0 and failures("storm", "gatehouse") == 0))
    gh, erl = h("broadcast", "gatehouse"), h("broadcast", "erlang")
    if gh is not None:
        r = ratio(gh, erl)
        lost = failures("broadcast", "gatehouse")
        out.append(("broadcast: median time-to-all ≤ 0.5 × Erlang's, nothing lost",
                    f"{fmt(gh, 1)} vs {fmt(erl, 1)} ms = {fmt(r, 2)} ×, lost {lost}",
                    None if r is None else (r <= 0.5 and lost == 0)))
    rss = h("idle", "gatehouse")
    cpu = median([x["result"]["cpu_percent_of_core"] for x in runs.get("idle", {}).get("gatehouse", [])])
    if rss is not None:
        n = runs["idle"]["gatehouse"][0]["result"]["count"]
        out.append(("idle: ≤ 3 KiB of server RSS per connection",
                    f"{fmt(rss)} B ({n:,} connections)", rss <= 3072))
    if cpu is not None:
        out.append((f"idle: < 1 % of a core with {n:,} idle",
                    f"{fmt(cpu, 2)} %", cpu < 1.0))
    dead = failures("idle", "gatehouse")
    echo_fail = failures("echo_d1", "gatehouse") + failures("echo_d16", "gatehouse")
    out.append(("every echo response verified, every idle connection alive (gatehouse)",
                f"{echo_fail} echo errors or losses, {dead} dead", echo_fail == 0 and dead == 0))
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--summary-line")
    p.add_argument("--results")
    p.add_argument("--out", default="docs/BENCHMARKS.md")
    p.add_argument("--command", default="scripts/bench.sh")
    p.add_argument("--quick", default="0")
    p.add_argument("--rounds", default="3")
    p.add_argument("--threads", default="1")
    p.add_argument("--elapsed", type=float, default=0)
    p.add_argument("--load-before", default="?")
    p.add_argument("--load-after", default="?")
    p.add_argument("--criterion")
    p.add_argument("--notes")
    p.add_argument("--source-state")
    p.add_argument("--pinned", default="0")
    p.add_argument("--baseline")
    args = p.parse_args()
    if args.summary_line:
        print(summary(args.summary_line.replace("echo_d1", "echo").replace("echo_d16", "echo"),
                      json.loads(sys.stdin.read())))
        return
    if not args.source_state:
        args.source_state = source_state()
    write_report(args)


if __name__ == "__main__":
    main()
