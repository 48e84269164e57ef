%% cutil_dos_checker: the seed's DoS checker. Here it only accounts bytes and
%% frames per second (reset by the 1-second timer); it never kicks, so the
%% bench measures the servers, not their limits.
-module(cutil_dos_checker).

-export([on_data/2, on_sec/1]).

-spec on_data(non_neg_integer(), conn_stat:conn_stat()) -> conn_stat:conn_stat().
on_data(Size, #{sec_bytes := B, sec_frames := F} = ConnStat) ->
    ConnStat#{sec_bytes := B + Size, sec_frames := F + 1}.

-spec on_sec(conn_stat:conn_stat()) -> conn_stat:conn_stat().
on_sec(ConnStat) ->
    ConnStat#{sec_bytes := 0, sec_frames := 0}.
