//! The connect-four server: serves the game on tcp://127.0.0.1:7001 until Ctrl-C,
//! keeping records in SQLite (`data/connect-four/gatehouse.db`, created on first
//! run). Ctrl-C stops it cleanly: every player is kicked `shutdown`, every
//! disconnect hook runs, every save lands.

use std::process::ExitCode;

use connect_four::{ConnectFour, Options};
use gatehouse::{Config, Server};
use gatehouse_store::{AnyStore, SaveWriter, StoreConfig};
use tracing_subscriber::EnvFilter;

type Error = Box<dyn std::error::Error>;

#[tokio::main]
async fn main() -> ExitCode {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match serve().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("connect-four: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The server and the parts it owns: the game rooms and the save writer.
async fn serve() -> Result<(), Error> {
    // Not arena's `data`: its players are saved under the same keys, their names.
    let config = StoreConfig {
        data_dir: "data/connect-four".into(),
        ..StoreConfig::default()
    };
    let store = AnyStore::open(&config).await?;
    let writer = SaveWriter::start(store, config.writer());
    let game = ConnectFour::new(writer.clone(), Options::default())?;
    let games = game.games().clone();
    let server = Server::new(Config::default(), game)?
        .with_rooms("connect-four", &games)
        .with_store(&writer, config.flush_timeout);
    let listener = gatehouse::bind("127.0.0.1:7001".parse()?).await?;
    println!("listening on tcp://{}", listener.local_addr()?);
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    server.run(listener, ctrl_c).await?;
    Ok(())
}
