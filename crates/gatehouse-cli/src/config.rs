//! The `gatehouse` binary's configuration file: the runtime's sections (`[server]`,
//! `[limits]`, `[supervisor]`, `[metrics]`, `[resume]`, owned and validated by the library), and the binary's
//! own: where to listen (`[[listeners]]`, each entry checked by the library), what to
//! serve (`[game]`), where arena saves (`[store]`, owned by gatehouse-store) and the
//! admin listener (`[admin]`, its token checked by the library). Also
//! the seed's `servers.csv` port table.
//!
//! Every key has a default, so no file at all is a working server; unknown keys and
//! bad values are refused with a message naming the key.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _};
use arena::ArenaOptions;
use gatehouse::admin::{AdminConfig, AdminLimits};
use gatehouse::cluster::ClusterConfig;
use gatehouse::config::{
    LimitsConfig, MetricsConfig, ResumeConfig, ServerConfig, SupervisorConfig,
};
use gatehouse::ListenerConfig;
use gatehouse_store::{StoreBackend, StoreConfig};
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct FileConfig {
    /// `[[listeners]]`: where to listen and what each socket speaks. An entry in the
    /// file replaces the whole default list.
    pub(crate) listeners: Vec<ListenerConfig>,
    /// `[game]`: what to serve.
    pub(crate) game: GameConfig,
    /// `[server]`: admission, the hub's queue, fault injection (the runtime's).
    pub(crate) server: ServerConfig,
    /// `[limits]`: every connection's limits and timers (the runtime's).
    pub(crate) limits: LimitsConfig,
    /// `[supervisor]`: restart intensity and shutdown (the runtime's).
    pub(crate) supervisor: SupervisorConfig,
    /// `[store]`: arena's saves.
    pub(crate) store: StoreConfig,
    /// `[metrics]`: what the server measures (the runtime's).
    pub(crate) metrics: MetricsConfig,
    /// `[resume]`: session resume, for a game that offers it (the runtime's).
    pub(crate) resume: ResumeConfig,
    /// `[admin]`: the admin listener (health, metrics, the JSON API, the console).
    pub(crate) admin: AdminSection,
    /// `[cluster]`: one node of a cluster over NATS (the runtime's keys, and whether).
    pub(crate) cluster: ClusterSection,
}

/// `[cluster]`: `enabled`, and the runtime's keys ([`ClusterConfig`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "toml::Table")]
pub(crate) struct ClusterSection {
    /// Join the cluster at `nats_url` as `node`.
    pub(crate) enabled: bool,
    /// The runtime's keys.
    pub(crate) config: ClusterConfig,
}

impl TryFrom<toml::Table> for ClusterSection {
    type Error = String;

    /// `enabled` is the binary's; the rest go to the runtime's section, which
    /// refuses unknown keys by name (serde's `flatten` would let them through).
    fn try_from(mut table: toml::Table) -> Result<Self, String> {
        let enabled = match table.remove("enabled") {
            None => false,
            Some(toml::Value::Boolean(enabled)) => enabled,
            Some(other) => {
                return Err(format!(
                    "cluster.enabled: expected true or false, found {other}"
                ))
            }
        };
        let config = ClusterConfig::deserialize(table).map_err(|e| format!("cluster: {e}"))?;
        Ok(ClusterSection { enabled, config })
    }
}

/// `[admin]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct AdminSection {
    /// Serve the admin listener at all.
    pub(crate) enabled: bool,
    /// Where (loopback by default: the API can kick players and drain the server).
    pub(crate) address: SocketAddr,
    /// The bearer token (16+ printable characters); `GATEHOUSE_ADMIN_TOKEN` overrides
    /// it. Unset: read-only endpoints open, mutating ones off.
    pub(crate) token: Option<String>,
    /// Host names the API answers to besides IP addresses and `localhost`.
    pub(crate) allowed_hosts: Vec<String>,
    /// `[admin.limits]`: connections served at once, and each one's deadlines.
    pub(crate) limits: AdminLimits,
}

impl Default for AdminSection {
    fn default() -> Self {
        AdminSection {
            enabled: true,
            address: SocketAddr::from(([127, 0, 0, 1], 7070)),
            token: None,
            allowed_hosts: Vec::new(),
            limits: AdminLimits::default(),
        }
    }
}

impl AdminSection {
    /// The library's settings.
    pub(crate) fn config(&self) -> AdminConfig {
        AdminConfig {
            token: self.token.clone(),
            allowed_hosts: self.allowed_hosts.clone(),
            limits: self.limits.clone(),
        }
    }
}

impl Default for FileConfig {
    fn default() -> Self {
        FileConfig {
            listeners: ListenerConfig::defaults(),
            game: GameConfig::default(),
            server: ServerConfig::default(),
            limits: LimitsConfig::default(),
            supervisor: SupervisorConfig::default(),
            store: StoreConfig::default(),
            metrics: MetricsConfig::default(),
            resume: ResumeConfig::default(),
            admin: AdminSection::default(),
            cluster: ClusterSection::default(),
        }
    }
}

/// `[game]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct GameConfig {
    /// `arena` (the reference game) or `bench` (the benchmark service).
    pub(crate) service: Game,
    /// arena: the rooms' tick period.
    #[serde(with = "humantime_serde")]
    pub(crate) tick: Duration,
    /// arena: players one room takes.
    pub(crate) max_room_players: usize,
    /// arena: players one address may have in one room (the lobby included).
    pub(crate) max_room_players_per_ip: usize,
    /// arena: accounts one address may create, at once and then per hour.
    pub(crate) new_accounts_per_ip_per_hour: u32,
}

impl Default for GameConfig {
    fn default() -> Self {
        let arena = ArenaOptions::default();
        GameConfig {
            service: Game::Arena,
            tick: arena.tick,
            max_room_players: arena.max_room_players,
            max_room_players_per_ip: arena.max_room_players_per_ip,
            new_accounts_per_ip_per_hour: arena.new_accounts_per_ip_per_hour.get(),
        }
    }
}

/// The services the binary can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Game {
    /// The reference game, with saved players.
    Arena,
    /// The benchmark service: echo, broadcast, count.
    Bench,
}

impl FileConfig {
    /// Parses and validates a TOML document (the tests' way in).
    #[cfg(test)]
    pub(crate) fn from_toml_str(text: &str) -> anyhow::Result<FileConfig> {
        let config: FileConfig = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a TOML file; the caller validates it once the command line
    /// has had its say (a flag or the environment may mend what the file has).
    pub(crate) fn from_file(path: &Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("in {}", path.display()))
    }

    /// Checks every section with its owner's rules.
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        if self.listeners.is_empty() {
            bail!("listeners: at least one listener is needed");
        }
        let mut addresses = HashSet::new();
        for listener in &self.listeners {
            listener.validate()?;
            if listener.address.port() != 0 && !addresses.insert(listener.address) {
                bail!("listeners: {} is used by two listeners", listener.address);
            }
        }
        self.runtime().validate()?;
        self.store.validate()?;
        if self.cluster.enabled {
            self.cluster.config.validate()?;
            // Every node loads and saves the same players: one database for all.
            if self.game.service == Game::Arena && self.store.backend == StoreBackend::Sqlite {
                bail!(
                    "cluster.enabled: the nodes must share one database; set store.backend = \"postgres\" (sqlite is one node's file)"
                );
            }
        }
        self.admin.config().validate()?;
        let admin = self.admin.address;
        let overlaps = |game: SocketAddr| {
            let same_ip = game.ip() == admin.ip()
                || game.ip().is_unspecified()
                || admin.ip().is_unspecified();
            game.port() == admin.port() && admin.port() != 0 && same_ip
        };
        if self.admin.enabled && self.listeners.iter().any(|l| overlaps(l.address)) {
            bail!("admin.address: {admin} is a game listener's port too");
        }
        if self.game.tick.is_zero() {
            bail!("game.tick: must be above zero");
        }
        if self.game.max_room_players == 0 {
            bail!("game.max_room_players: must be at least 1");
        }
        if self.game.max_room_players_per_ip == 0 {
            bail!("game.max_room_players_per_ip: must be at least 1");
        }
        if self.game.new_accounts_per_ip_per_hour == 0 {
            bail!("game.new_accounts_per_ip_per_hour: must be at least 1");
        }
        Ok(())
    }

    /// arena's options: `[game]`, with the runtime's fault injection.
    pub(crate) fn arena(&self) -> ArenaOptions {
        ArenaOptions {
            tick: self.game.tick,
            max_room_players: self.game.max_room_players,
            max_room_players_per_ip: self.game.max_room_players_per_ip,
            new_accounts_per_ip_per_hour: NonZeroU32::new(self.game.new_accounts_per_ip_per_hour)
                .unwrap_or(NonZeroU32::MIN), // validated: at least 1
            fault_injection: self.server.allow_fault_injection,
            ..ArenaOptions::default()
        }
    }

    /// The part the runtime uses.
    pub(crate) fn runtime(&self) -> gatehouse::Config {
        gatehouse::Config {
            server: self.server.clone(),
            limits: self.limits.clone(),
            supervisor: self.supervisor.clone(),
            metrics: self.metrics.clone(),
            resume: self.resume.clone(),
        }
    }
}

/// One row of the seed's server table: `server_id,host,port,…` (more columns are
/// allowed and ignored).
#[derive(Debug, Deserialize)]
struct ServerRow {
    server_id: String,
    #[allow(dead_code)] // part of the table's format; the bind address comes from config
    host: String,
    port: u16,
}

/// The port of `server_id` in a `servers.csv` table, as the seed's
/// `server_csv:get_my_port()`.
pub(crate) fn port_from_servers_csv(path: &Path, server_id: &str) -> anyhow::Result<u16> {
    let table = path.display();
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(true)
        .from_path(path)
        .with_context(|| format!("{table}"))?;
    for (index, row) in reader.deserialize::<ServerRow>().enumerate() {
        let row = row.with_context(|| format!("{table}: row {}", index + 2))?;
        if row.server_id == server_id {
            return Ok(row.port);
        }
    }
    bail!("{table}: no row with server_id {server_id}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn error_of(text: &str) -> String {
        format!("{:#}", FileConfig::from_toml_str(text).unwrap_err())
    }

    /// The TOML block of the README's "Configuration" section.
    fn readme_config_block() -> String {
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
                .unwrap();
        let section = readme
            .find("\n## Configuration\n")
            .expect("a Configuration section in the README");
        let start = section
            + readme[section..]
                .find("```toml\n")
                .expect("a toml block in the README's Configuration section")
            + 8;
        let len = readme[start..].find("```").unwrap();
        readme[start..start + len].to_owned()
    }

    #[test]
    fn the_readme_configuration_block_is_exactly_the_defaults() {
        let documented = FileConfig::from_toml_str(&readme_config_block()).unwrap();
        assert_eq!(documented, FileConfig::default());
    }

    #[test]
    fn the_readme_configuration_block_names_every_key() {
        let block = readme_config_block();
        // A key missing from the block would still parse to its default, so the first
        // test cannot see it: every field name of the config must appear as `key =`.
        let debug = format!("{:?}", FileConfig::default());
        let keys: Vec<&str> = debug
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| {
                w.contains('_') || ["transport", "address", "service", "backend"].contains(w)
            })
            .filter(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            .collect();
        assert!(keys.len() > 20, "the key scan found only {keys:?}");
        for key in keys {
            assert!(block.contains(&format!("{key} =")), "README lacks `{key}`");
        }
    }

    #[test]
    fn an_empty_file_serves_arena_on_loopback() {
        let c = FileConfig::from_toml_str("").unwrap();
        assert_eq!(c.game.service, Game::Arena);
        assert!(c.listeners.iter().all(|l| l.address.ip().is_loopback()));
        let kinds: Vec<_> = c
            .listeners
            .iter()
            .map(|l| (l.transport.scheme(), l.address.port()))
            .collect();
        assert_eq!(kinds, [("tcp", 7000), ("ws", 7080)]);
        assert_eq!(c.runtime(), gatehouse::Config::default());
    }

    #[test]
    fn a_cluster_section_is_checked_by_the_runtime_and_refuses_sqlite_for_arena() {
        let postgres = "[store]\nbackend = \"postgres\"\npostgres_url = \"postgres://x@db/game\"\n";
        let on = |keys: &str| format!("{postgres}[cluster]\nenabled = true\n{keys}\n");
        let config = FileConfig::from_toml_str(&on(
            "node = \"a\"\nheartbeat = \"500ms\"\ndead_after = \"1500ms\"",
        ))
        .unwrap();
        assert!(config.cluster.enabled);
        assert_eq!(config.cluster.config.heartbeat, Duration::from_millis(500));
        assert!(error_of(&on("node = \"a.b\"")).contains("cluster.node"));
        assert!(error_of(&on("node = \"a\"\ndead_after = \"1s\"")).contains("cluster.dead_after"));
        assert!(error_of(&on("node = \"a\"\nnats = \"x\"")).contains("nats"));
        let sqlite = "[cluster]\nenabled = true\nnode = \"a\"\n";
        assert!(error_of(sqlite).contains("store.backend = \"postgres\""));
        // The bench service saves nothing: no database needed.
        assert!(
            FileConfig::from_toml_str(&format!("[game]\nservice = \"bench\"\n{sqlite}")).is_ok()
        );
        // Off, its keys are not checked.
        assert!(FileConfig::from_toml_str("[cluster]\nnode = \"\"\n").is_ok());
    }

    #[test]
    fn bad_values_name_their_key_whichever_section_owns_it() {
        let listener = |fields: &str| format!("[[listeners]]\ntransport = \"tcp\"\n{fields}\n");
        assert!(error_of(&listener("address = \"127.0.0.1:70000\"")).contains("address"));
        assert!(error_of(&listener("address = \"nowhere\"")).contains("address"));
        assert!(
            error_of("[[listeners]]\ntransport = \"wss\"\naddress = \"127.0.0.1:0\"\n")
                .contains("listeners.cert")
        );
        let twice = format!(
            "{}{}",
            listener("address = \"127.0.0.1:7000\""),
            listener("address = \"127.0.0.1:7000\"")
        );
        assert!(error_of(&twice).contains("used by two listeners"));
        assert!(error_of("listeners = []\n").contains("at least one listener"));
        assert!(error_of("[game]\nservice = \"chess\"\n").contains("unknown variant `chess`"));
        assert!(error_of("[game]\nmax_room_players_per_ip = 0\n")
            .contains("game.max_room_players_per_ip"));
        assert!(error_of("[game]\nnew_accounts_per_ip_per_hour = 0\n")
            .contains("game.new_accounts_per_ip_per_hour"));
        assert!(error_of("[server]\nmax_connections = 0\n").contains("server.max_connections"));
        assert!(error_of("[limits]\nidle_timeout = \"0s\"\n").contains("limits.idle_timeout"));
        assert!(error_of("[admin.limits]\nbody_timeout = \"0s\"\n")
            .contains("admin.limits.body_timeout"));
        assert!(error_of("[admin.limits]\nmax_connections = 0\n")
            .contains("admin.limits.max_connections"));
        assert!(error_of("[admin.limits]\nheader_timeout = \"soon\"\n").contains("header_timeout"));
        assert!(error_of("[store]\nbackend = \"postgres\"\n").contains("store.postgres_url"));
        assert!(error_of("[store]\nbackend = \"mysql\"\n").contains("unknown variant `mysql`"));
        assert!(error_of("[servre]\n").contains("unknown field `servre`"));
    }

    #[test]
    fn servers_csv_gives_the_port_of_the_server_id() {
        // Unique to this test and run: other tests and binaries use the temp dir too.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "gatehouse-config-servers-csv-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("servers.csv");
        std::fs::write(
            &path,
            "server_id,host,port,name\n1, 10.0.0.1, 7001, alpha\n2,10.0.0.2,7002,beta\n",
        )
        .unwrap();
        assert_eq!(port_from_servers_csv(&path, "2").unwrap(), 7002);
        let missing = port_from_servers_csv(&path, "3").unwrap_err().to_string();
        assert!(missing.contains("no row with server_id 3"), "{missing}");
        std::fs::write(&path, "server_id,host,port\n1,h,notaport\n").unwrap();
        let bad = format!("{:#}", port_from_servers_csv(&path, "1").unwrap_err());
        assert!(bad.contains("row 2"), "{bad}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
