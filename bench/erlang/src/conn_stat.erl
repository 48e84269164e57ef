%% conn_stat: the per-connection state map the seed threads through loop/2.
-module(conn_stat).

-export([new/0]).
-export_type([conn_stat/0]).

-type conn_stat() :: #{idle_sec := non_neg_integer(),
                       sec_bytes := non_neg_integer(),
                       sec_frames := non_neg_integer(),
                       atom() => term()}.

-spec new() -> conn_stat().
new() ->
    #{idle_sec => 0, sec_bytes => 0, sec_frames => 0}.
