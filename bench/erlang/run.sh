#!/usr/bin/env bash
# Compiles the Erlang rendering of the seed and runs it in the foreground.
#   bench/erlang/run.sh PORT [IDLE_SEC]
# PORT 0 picks a free port. Prints "listening on 127.0.0.1:PORT" on stdout when
# ready. SIGTERM stops it gracefully (init:stop), SIGINT at once.
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $0 PORT [IDLE_SEC]" >&2
    exit 2
fi

here="$(cd "$(dirname "$0")" && pwd)"
build="$here/_build"

if ! command -v erlc >/dev/null 2>&1; then
    echo "erlc not found: installing erlang-base" >&2
    if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -qq >&2
    $sudo apt-get install -y -qq erlang-base >&2
fi

mkdir -p "$build"
erlc -Wall -o "$build" "$here"/src/*.erl >&2

# +P: processes (one per connection, plus the acceptor); +Q: ports (one per
# socket). Both far above 20,000; the real cap is `ulimit -n` (20000 here).
# +K true: kernel poll (always on since OTP 21; kept for older releases).
# +Bd: no break handler, so SIGINT ends the emulator at once.
# -noinput: no shell, stdin not read.
exec erl -noinput +K true +P 1048576 +Q 65536 +Bd \
    -pa "$build" -run gs_main start "$@"
