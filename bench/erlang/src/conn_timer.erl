%% conn_timer: the per-second work of a connection, run on its 1-second
%% timer_sec message. idle_sec counts the seconds since the last frame
%% (connection:loop/2 resets it to 0 on every {tcp, ...}); at the idle limit
%% the connection stops (kicked idle, as gatehouse does). The limit is the
%% optional IDLE_SEC command-line argument (default 60, 0 = never).
-module(conn_timer).

-export([timer_sec/1]).

-spec timer_sec(conn_stat:conn_stat()) ->
    {ok, conn_stat:conn_stat()} | {stop, {non_neg_integer(), binary()}}.
timer_sec(#{idle_sec := Idle} = ConnStat) ->
    IdleSec = Idle + 1,
    case persistent_term:get(gs_idle_sec, 60) of
        Limit when Limit > 0, IdleSec >= Limit ->
            {stop, {1, iolist_to_binary(io_lib:format("no frame for ~Bs", [Limit]))}};
        _ ->
            {ok, cutil_dos_checker:on_sec(ConnStat#{idle_sec => IdleSec})}
    end.
