%% gs_listener: start_parallel/0 of the seed, run from gs_svr:init/1, so the
%% listen socket belongs to gs_svr.
-module(gs_listener).
-author("jinqing").

-export([start_parallel/0]).

-spec start_parallel() -> pid().
start_parallel() ->
    Port = server_csv:get_my_port(),
    logger:info("Starting game server on port ~p...", [Port]),
    {ok, ListenSocket} = gen_tcp:listen(Port,
        [binary, {packet, 4},
         {packet_size, 256 * 1024}, % limit packet size
         {reuseaddr, true},
         {nodelay, true},
         {backlog, 999999},
         {active, once},
         %% Added for the bench: loopback only (the seed listens on every interface).
         {ip, {127, 0, 0, 1}}]),
    {ok, RealPort} = inet:port(ListenSocket),
    %% The benchmark script waits for exactly this line on stdout.
    io:format("listening on 127.0.0.1:~p~n", [RealPort]),
    connection:spawn_connection(ListenSocket).
