//! The connect-four server: serves the game over TCP (127.0.0.1:7001 unless told
//! otherwise) until Ctrl-C, keeping records in SQLite (`data/connect-four/gatehouse.db`,
//! created on first run) or, with `--memory`, in memory. Ctrl-C stops it cleanly:
//! every player is kicked `shutdown`, every disconnect hook runs, every save lands.
//!
//! `cargo run -p connect-four -- --help` lists the options.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use connect_four::{ConnectFour, Options};
use gatehouse::{Config, Server};
use gatehouse_store::{AnyStore, MemoryStore, SaveWriter, Store, StoreConfig};
use tracing_subscriber::EnvFilter;

/// Serves connect-four.
#[derive(Parser)]
struct Args {
    /// The address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:7001")]
    listen: SocketAddr,
    /// The directory of the SQLite file of records (created on first run).
    // Not arena's `data`: its players are saved under the same keys, their names.
    #[arg(long, default_value = "data/connect-four")]
    data: PathBuf,
    /// Keep records in memory only: they are gone when the server stops.
    #[arg(long)]
    memory: bool,
}

type Error = Box<dyn std::error::Error>;

#[tokio::main]
async fn main() -> ExitCode {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let store = StoreConfig {
        data_dir: args.data,
        ..StoreConfig::default()
    };
    let served = if args.memory {
        serve(MemoryStore::new(), &store, args.listen).await
    } else {
        match AnyStore::open(&store).await {
            Ok(opened) => serve(opened, &store, args.listen).await,
            Err(e) => Err(format!("cannot open {}: {e}", store.data_dir.display()).into()),
        }
    };
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("connect-four: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The server and the parts it owns: the game rooms and the save writer.
async fn serve<S: Store>(store: S, config: &StoreConfig, listen: SocketAddr) -> Result<(), Error> {
    let writer = SaveWriter::start(store, config.writer());
    let game = ConnectFour::new(writer.clone(), Options::default())?;
    let games = game.games().clone();
    let server = Server::new(Config::default(), game)?
        .with_rooms("connect-four", &games)
        .with_store(&writer, config.flush_timeout);
    let listener = gatehouse::bind(listen).await?;
    println!("listening on tcp://{}", listener.local_addr()?);
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    server.run(listener, ctrl_c).await?;
    Ok(())
}
