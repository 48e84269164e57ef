%% gs_main: command-line entry point (not in the seed).
%%   erl -noinput -run gs_main start PORT [IDLE_SEC]
%% PORT 0 picks a free port; the real one is printed by gs_listener.
%% IDLE_SEC (default 60, as gatehouse's idle_timeout; 0 = never) is the idle
%% limit conn_timer applies; the 1-second timer runs either way.
-module(gs_main).

-export([start/1]).

-spec start([string()]) -> ok.
start(Args) ->
    {Port, IdleSec} =
        case Args of
            [P] -> {list_to_integer(P), 60};
            [P, I] -> {list_to_integer(P), list_to_integer(I)};
            _ -> usage()
        end,
    preload(),
    ok = application:set_env(gs, port, Port),
    persistent_term:put(gs_idle_sec, IdleSec),
    %% The seed's save_on_end would write the player to storage; here it
    %% only bumps this counter.
    persistent_term:put(gs_saves, counters:new(1, [write_concurrency])),
    {ok, Pid} = gs_svr:start_link(),
    %% start_link links gs_svr to this -run process, which exits normally
    %% when start/1 returns; unlink so that gs_svr stays up.
    unlink(Pid),
    ok.

%% Loads every module of kernel, stdlib and this server now. In interactive
%% mode modules load on first use, which needs a file descriptor: at the fd
%% limit (emfile) the error path itself (logger, timer, ...) could not load.
preload() ->
    Dirs = [code:lib_dir(kernel, ebin), code:lib_dir(stdlib, ebin),
            filename:dirname(code:which(?MODULE))],
    _ = [code:ensure_loaded(list_to_atom(filename:basename(F, ".beam")))
         || D <- Dirs, F <- filelib:wildcard(filename:join(D, "*.beam"))],
    ok.

usage() ->
    io:format(standard_error, "usage: erl -run gs_main start PORT [IDLE_SEC]~n", []),
    erlang:halt(2).
