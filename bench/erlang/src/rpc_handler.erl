%% rpc_handler: handle_bin/3 of the seed, the RPC dispatch of one frame.
%% Added: it speaks gatehouse's envelope (docs/PROTOCOL.md) for the bench
%% service only. With {packet, 4} the socket strips and adds the 4-byte
%% length, so Bin is one frame body and every send is one frame body.
%%
%%   request (1): id u32, route u16, payload -> response (3): id, status u16, payload
%%     route 1 echo:      status 0, the payload
%%     route 2 broadcast: push (4) route 2 payload to every connection via gs_svr,
%%                        then status 0, empty payload
%%     route 3 count:     status 0, live connections as u32 big-endian
%%     other:             status 404, "unknown route N"
%%   notify (2): route 1 -> push route 1 payload back; route 2 -> broadcast; other ignored
%%   ping (5) nonce -> pong (6) same nonce; pong ignored; empty frame ignored
%%   anything else -> kick protocol_error (7) and close
-module(rpc_handler).

-export([handle_bin/3, kick/3]).

-define(ECHO, 1).
-define(BROADCAST, 2).
-define(COUNT, 3).
-define(MAX_NONCE, 64).
-define(PROTOCOL_ERROR, 7).

-spec handle_bin(gen_tcp:socket(), binary(), conn_stat:conn_stat()) -> conn_stat:conn_stat().
handle_bin(_Socket, <<>>, ConnStat) ->
    ConnStat;
handle_bin(Socket, <<1, Id:32, Route:16, Payload/binary>>, ConnStat) ->
    {Status, Reply} = request(Route, Payload),
    _ = gen_tcp:send(Socket, [<<3, Id:32, Status:16>>, Reply]),
    ConnStat;
handle_bin(Socket, <<2, Route:16, Payload/binary>>, ConnStat) ->
    notify(Socket, Route, Payload),
    ConnStat;
handle_bin(Socket, <<5, Nonce/binary>>, ConnStat) when byte_size(Nonce) =< ?MAX_NONCE ->
    _ = gen_tcp:send(Socket, [<<6>>, Nonce]),
    ConnStat;
handle_bin(_Socket, <<6, Nonce/binary>>, ConnStat) when byte_size(Nonce) =< ?MAX_NONCE ->
    ConnStat;
handle_bin(Socket, _Malformed, ConnStat) ->
    kick(Socket, ?PROTOCOL_ERROR, <<"malformed or unexpected frame">>),
    ConnStat.

request(?ECHO, Payload) ->
    {0, Payload};
request(?BROADCAST, Payload) ->
    gs_svr:broadcast(?BROADCAST, Payload),
    {0, <<>>};
request(?COUNT, _Payload) ->
    {0, <<(gs_svr:count()):32>>};
request(Route, _Payload) ->
    {404, iolist_to_binary(io_lib:format("unknown route ~B", [Route]))}.

notify(Socket, ?ECHO, Payload) ->
    _ = gen_tcp:send(Socket, [<<4, ?ECHO:16>>, Payload]);
notify(_Socket, ?BROADCAST, Payload) ->
    gs_svr:broadcast(?BROADCAST, Payload);
notify(_Socket, _Route, _Payload) ->
    ok.

%% Sends a kick and ends the connection: shut the write side (the kick is
%% flushed first), then tell loop/2 the socket is closed so that it runs
%% save_on_end and exits; the socket closes with the process.
-spec kick(gen_tcp:socket(), 0..65535, binary()) -> ok.
kick(Socket, Code, Text) ->
    _ = gen_tcp:send(Socket, <<7, Code:16, Text/binary>>),
    _ = gen_tcp:shutdown(Socket, write),
    self() ! {tcp_closed, Socket},
    ok.
