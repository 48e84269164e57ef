%% connection: one process per TCP connection, the seed's parallel server.
%% spawn_connection/1, parallel_connect/1 and loop/2 follow the seed line by
%% line; the additions are marked "added".
-module(connection).
-author("jinqing").

%% API
-export([spawn_connection/1]).
-export([parallel_connect/1, loop/2]).

-spec spawn_connection(ListenSocket :: gen_tcp:socket()) -> pid().
spawn_connection(ListenSocket) ->
    spawn(fun() -> ?MODULE:parallel_connect(ListenSocket) end).

-spec parallel_connect(ListenSocket :: gen_tcp:socket()) -> ok.
parallel_connect(ListenSocket) ->
    parallel_connect(ListenSocket, none).

%% The seed matches {ok, Socket} = gen_tcp:accept(ListenSocket): one accept
%% error (emfile under a connection flood) would kill the only acceptor and
%% the server would never accept again. Added: retry every 10 ms, logging
%% once per run of the same error.
parallel_connect(ListenSocket, LastError) ->
    case gen_tcp:accept(ListenSocket) of
        {ok, Socket} ->
            connected(ListenSocket, Socket);
        {error, closed} ->
            ok;
        {error, LastError} ->
            timer:sleep(10),
            parallel_connect(ListenSocket, LastError);
        {error, Reason} ->
            logger:error("accept: ~p (retrying every 10 ms)", [Reason]),
            timer:sleep(10),
            parallel_connect(ListenSocket, Reason)
    end.

connected(ListenSocket, Socket) ->
    %% The trick of the parallel server: spawn the next acceptor at once.
    spawn_connection(ListenSocket),
    gs_svr:cast_connection_new(self()),
    ConnStat = conn_stat:new(),
    erlang:send_after(1000, self(), timer_sec),
    try ?MODULE:loop(Socket, ConnStat)
    catch
        Type:E:Stacktrace ->
            logger:error("loop() ~p:~p. ~p", [Type, E, Stacktrace])
    end,
    gs_svr:cast_connection_ended(self()),
    ok.

-spec loop(Socket :: gen_tcp:socket(), ConnStat :: conn_stat:conn_stat()) -> any().
loop(Socket, ConnStat) ->
    receive
        {tcp, Socket, Bin} ->
            NewConnStat = rpc_handler:handle_bin(Socket, Bin, ConnStat),
            inet:setopts(Socket, [{active, once}]),
            NewConnStat2 = cutil_dos_checker:on_data(size(Bin), NewConnStat),
            ?MODULE:loop(Socket, NewConnStat2#{idle_sec => 0});
        {tcp_closed, Socket} ->
            save_on_end(ConnStat);
        {tcp_error, Socket, _Reason} ->
            save_on_end(ConnStat);
        {gs_to_connection, Msg} ->
            NewConnStat = handle_gs_msg(Msg, Socket, ConnStat),
            ?MODULE:loop(Socket, NewConnStat);
        timer_sec ->
            case conn_timer:timer_sec(ConnStat) of
                {ok, NewConnStat} ->
                    erlang:send_after(1000, self(), timer_sec),
                    ?MODULE:loop(Socket, NewConnStat);
                {stop, {Code, Text}} ->
                    %% Elided in the seed; added: kick, then end as on close.
                    rpc_handler:kick(Socket, Code, Text),
                    save_on_end(ConnStat)
            end;
        Other ->
            logger:error("Unknown msg: ~p", [Other]),
            ?MODULE:loop(Socket, ConnStat)
    end. % This is tail-recursive.

%% A message from gs_svr for this connection.
handle_gs_msg({push, Bin}, Socket, ConnStat) ->
    _ = gen_tcp:send(Socket, Bin),
    ConnStat;
handle_gs_msg({kick, Code, Text}, Socket, ConnStat) ->
    rpc_handler:kick(Socket, Code, Text),
    ConnStat;
handle_gs_msg(Msg, _Socket, ConnStat) ->
    logger:error("Unknown gs msg: ~p", [Msg]),
    ConnStat.

%% The seed saves the player here; the bench only counts the calls.
save_on_end(_ConnStat) ->
    counters:add(persistent_term:get(gs_saves), 1, 1).
