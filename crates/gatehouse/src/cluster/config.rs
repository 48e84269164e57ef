//! `[cluster]`: which node this is, where the cluster's messages go, and its timers.

use std::time::Duration;

use serde::Deserialize;

use crate::config::ConfigError;

/// `[cluster]`: present, the server is one node of a cluster (see
/// `docs/OPERATIONS.md`, "Running a cluster").
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Where the link connects (`nats://host:port` for `gatehouse-cluster`).
    pub nats_url: String,
    /// This node's name, unique in the cluster: 1 to 64 of `A-Z a-z 0-9 _ -`.
    pub node: String,
    /// How often this node tells the others it is alive, with its counts.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// A node not heard from for this long is dead (while this node is connected:
    /// one cut off from the cluster declares nobody dead). At least two heartbeats.
    #[serde(with = "humantime_serde")]
    pub dead_after: Duration,
    /// The longest a call to another node or to the cluster's store may take.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Messages to other nodes waiting for the link; more are dropped and counted.
    pub outbox: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            nats_url: "nats://127.0.0.1:4222".into(),
            node: String::new(),
            heartbeat: Duration::from_secs(2),
            dead_after: Duration::from_secs(6),
            request_timeout: Duration::from_secs(1),
            outbox: 4096,
        }
    }
}

impl ClusterConfig {
    /// A node named `node` with every other key at its default.
    pub fn for_node(node: impl Into<String>) -> Self {
        ClusterConfig {
            node: node.into(),
            ..ClusterConfig::default()
        }
    }

    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.into(),
            })
        };
        if self.nats_url.trim().is_empty() {
            return invalid("cluster.nats_url", "must name the NATS server");
        }
        if !valid_name(&self.node) {
            return invalid(
                "cluster.node",
                "must be 1 to 64 of A-Z a-z 0-9 _ - (unique in the cluster)",
            );
        }
        if self.heartbeat < Duration::from_millis(50) || self.heartbeat > Duration::from_secs(60) {
            return invalid("cluster.heartbeat", "must be between 50ms and 60s");
        }
        if self.dead_after < self.heartbeat * 2 || self.dead_after > Duration::from_secs(600) {
            return invalid(
                "cluster.dead_after",
                "must be at least two heartbeats and at most 10m",
            );
        }
        if self.request_timeout < Duration::from_millis(10)
            || self.request_timeout > Duration::from_secs(60)
        {
            return invalid("cluster.request_timeout", "must be between 10ms and 60s");
        }
        if !(16..=1 << 20).contains(&self.outbox) {
            return invalid("cluster.outbox", "must be between 16 and 1048576");
        }
        Ok(())
    }
}

/// A node's name: what a subject token and a key may hold as they are.
pub(crate) fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(config: &ClusterConfig) -> Option<&'static str> {
        match config.validate() {
            Ok(()) => None,
            Err(ConfigError::Invalid { key, .. }) => Some(key),
            Err(other) => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn a_bad_cluster_value_is_refused_with_its_key_named() {
        let good = ClusterConfig::for_node("a-1");
        assert_eq!(key_of(&good), None);
        let bad = [
            (ClusterConfig::for_node(""), "cluster.node"),
            (ClusterConfig::for_node("a.b"), "cluster.node"),
            (ClusterConfig::for_node("x".repeat(65)), "cluster.node"),
            (
                ClusterConfig {
                    nats_url: " ".into(),
                    ..good.clone()
                },
                "cluster.nats_url",
            ),
            (
                ClusterConfig {
                    heartbeat: Duration::from_millis(10),
                    ..good.clone()
                },
                "cluster.heartbeat",
            ),
            (
                ClusterConfig {
                    dead_after: Duration::from_secs(3),
                    ..good.clone()
                },
                "cluster.dead_after",
            ),
            (
                ClusterConfig {
                    request_timeout: Duration::ZERO,
                    ..good.clone()
                },
                "cluster.request_timeout",
            ),
            (
                ClusterConfig {
                    outbox: 0,
                    ..good.clone()
                },
                "cluster.outbox",
            ),
        ];
        for (config, key) in bad {
            assert_eq!(key_of(&config), Some(key), "{config:?}");
        }
    }

    #[test]
    fn the_cluster_section_parses_durations_and_refuses_unknown_keys() {
        let config: ClusterConfig = toml::from_str(
            "nats_url = \"nats://127.0.0.1:4333\"\nnode = \"b\"\nheartbeat = \"500ms\"\ndead_after = \"1500ms\"",
        )
        .expect("parses");
        assert_eq!(config.heartbeat, Duration::from_millis(500));
        assert_eq!(config.validate().map_err(|e| e.to_string()), Ok(()));
        let unknown = toml::from_str::<ClusterConfig>("node = \"b\"\nnats = \"x\"");
        assert!(unknown
            .expect_err("unknown key")
            .to_string()
            .contains("nats"));
    }
}
