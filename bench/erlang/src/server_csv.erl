%% server_csv: stands in for the seed's server table; the port comes from the
%% command line (gs_main:start/1 puts it in the application environment).
-module(server_csv).

-export([get_my_port/0]).

-spec get_my_port() -> inet:port_number().
get_my_port() ->
    {ok, Port} = application:get_env(gs, port),
    Port.
