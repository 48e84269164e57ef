%% gs_svr: the GameServer gen_server of the seed. It starts the TCP listener
%% (gs_listener:start_parallel/0 from init/1, as in the seed) and keeps the
%% connection registry: cast_connection_new / cast_connection_ended maintain
%% it, count/0 reads it, broadcast/2 sends {gs_to_connection, {push, Bin}}
%% to every connection process.
-module(gs_svr).
-author("jinqing").
-behaviour(gen_server).

%% API
-export([start_link/0]).
-export([cast_connection_new/1, cast_connection_ended/1]).
-export([count/0, broadcast/2]).
%% gen_server callbacks
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-spec start_link() -> {ok, pid()} | ignore | {error, term()}.
start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

-spec cast_connection_new(pid()) -> ok.
cast_connection_new(Pid) ->
    gen_server:cast(?MODULE, {connection_new, Pid}).

-spec cast_connection_ended(pid()) -> ok.
cast_connection_ended(Pid) ->
    gen_server:cast(?MODULE, {connection_ended, Pid}).

%% Live connections, the caller included (it registered before its first frame).
-spec count() -> non_neg_integer().
count() ->
    gen_server:call(?MODULE, count, infinity).

%% Pushes Payload on Route to every connection. Like the seed's other gs_svr
%% traffic it is a cast: the caller does not wait for the fan-out.
-spec broadcast(Route :: 0..65535, Payload :: binary()) -> ok.
broadcast(Route, Payload) ->
    gen_server:cast(?MODULE, {broadcast, Route, Payload}).

%% The state is the seed's map: connection pid => true.
init([]) ->
    gs_listener:start_parallel(),
    {ok, #{}}.

handle_call(count, _From, Conns) ->
    {reply, map_size(Conns), Conns};
handle_call(Request, _From, Conns) ->
    logger:error("gs_svr: unknown call ~p", [Request]),
    {reply, {error, unknown_call}, Conns}.

handle_cast({connection_new, Pid}, Conns) ->
    {noreply, Conns#{Pid => true}};
handle_cast({connection_ended, Pid}, Conns) ->
    {noreply, maps:remove(Pid, Conns)};
handle_cast({broadcast, Route, Payload}, Conns) ->
    %% Encoded once; a binary over 64 bytes is reference-counted, so every
    %% connection gets a reference rather than a copy.
    Bin = <<4, Route:16, Payload/binary>>,
    Msg = {gs_to_connection, {push, Bin}},
    maps:foreach(fun(Pid, _) -> Pid ! Msg end, Conns),
    {noreply, Conns};
handle_cast(Msg, Conns) ->
    logger:error("gs_svr: unknown cast ~p", [Msg]),
    {noreply, Conns}.

handle_info(Info, Conns) ->
    logger:error("gs_svr: unknown message ~p", [Info]),
    {noreply, Conns}.
