//! Where a server listens: one [`ListenerConfig`] per listening socket, each with its
//! transport (`tcp`, `tls`, `ws`, `wss`), its address and what that transport needs
//! (certificate files, allowed origins, trusted proxies). A list of them is the
//! `[[listeners]]` array of the `gatehouse` binary's file.

use std::net::SocketAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::Deserialize;

use crate::config::ConfigError;
pub use crate::config::TransportKind;

/// One listening socket.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// `tcp`, `tls`, `ws` or `wss`.
    pub transport: TransportKind,
    /// Where to listen (port 0 picks a free one).
    pub address: SocketAddr,
    /// TLS: the certificate chain, PEM, leaf first. Reloaded on `SIGHUP` by the binary.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// TLS: the certificate's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// WebSocket: pages of other origins allowed to connect, as `scheme://host[:port]`
    /// (`"*"`: any). The server's own pages are always allowed, and clients that send
    /// no `Origin` (anything but a browser) are not concerned.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// WebSocket: proxies (addresses or networks, `10.0.0.0/8`) whose
    /// `X-Forwarded-For` header is believed: a connection from one of them counts
    /// against the per-IP cap as the client it names. From anyone else the header is
    /// ignored.
    #[serde(default, deserialize_with = "networks")]
    pub trusted_proxies: Vec<IpNet>,
}

/// Networks as `10.0.0.0/8`, or single addresses without a prefix length.
fn networks<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<IpNet>, D::Error> {
    Vec::<String>::deserialize(deserializer)?
        .iter()
        .map(|text| {
            text.parse::<IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "`{text}` is neither an address nor a network (10.0.0.0/8)"
                    ))
                })
        })
        .collect()
}

impl ListenerConfig {
    /// A listener of `transport` on `address` with nothing else set.
    pub fn new(transport: TransportKind, address: SocketAddr) -> Self {
        ListenerConfig {
            transport,
            address,
            cert: None,
            key: None,
            allowed_origins: Vec::new(),
            trusted_proxies: Vec::new(),
        }
    }

    /// The embedded default: TCP on 127.0.0.1:7000 and WebSocket on 127.0.0.1:7080
    /// (loopback: serving a network is a decision).
    pub fn defaults() -> Vec<ListenerConfig> {
        vec![
            ListenerConfig::new(TransportKind::Tcp, SocketAddr::from(([127, 0, 0, 1], 7000))),
            ListenerConfig::new(TransportKind::Ws, SocketAddr::from(([127, 0, 0, 1], 7080))),
        ]
    }

    /// Checks that the listener has what its transport needs and nothing it would
    /// ignore.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: String| Err(ConfigError::Invalid { key, message });
        let name = format!("the {} listener on {}", self.transport, self.address);
        if let Some(feature) = self.transport.missing_feature() {
            return invalid(
                "listeners.transport",
                format!(
                    "{name}: this build of gatehouse cannot serve {}; build it with the cargo feature {feature}",
                    self.transport
                ),
            );
        }
        if self.transport.is_tls() {
            if self.cert.is_none() {
                return invalid(
                    "listeners.cert",
                    format!("{name} needs a certificate chain (PEM)"),
                );
            }
            if self.key.is_none() {
                return invalid("listeners.key", format!("{name} needs a private key (PEM)"));
            }
        } else if self.cert.is_some() || self.key.is_some() {
            return invalid(
                "listeners.cert",
                format!("{name} is not TLS: cert and key are only for tls and wss"),
            );
        }
        if !self.transport.is_websocket() {
            if !self.allowed_origins.is_empty() {
                return invalid(
                    "listeners.allowed_origins",
                    format!("{name} is not WebSocket: origins are only for ws and wss"),
                );
            }
            if !self.trusted_proxies.is_empty() {
                return invalid(
                    "listeners.trusted_proxies",
                    format!("{name} is not WebSocket: X-Forwarded-For is only read by ws and wss"),
                );
            }
        }
        for origin in &self.allowed_origins {
            let well_formed = origin == "*"
                || ((origin.starts_with("http://") || origin.starts_with("https://"))
                    && !origin.trim_end_matches('/').ends_with(':')
                    && origin.matches('/').count() == 2);
            if !well_formed {
                return invalid(
                    "listeners.allowed_origins",
                    format!("`{origin}` is not an origin: write scheme://host[:port] (no path), or \"*\""),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ListenerConfig, String> {
        let config: ListenerConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }

    #[test]
    fn a_transport_left_out_of_the_build_is_refused_naming_its_feature() {
        let cert = "cert = \"c.pem\"\nkey = \"k.pem\"\n";
        for (transport, feature) in [("tls", "tls"), ("ws", "websocket"), ("wss", "tls")] {
            let text = format!("transport = \"{transport}\"\naddress = \"127.0.0.1:0\"\n");
            let text = if transport == "ws" { text } else { text + cert };
            let parsed = parse(&text);
            let built_in = parsed.is_ok();
            let compiled = match feature {
                "tls" => {
                    cfg!(feature = "tls") && (transport != "wss" || cfg!(feature = "websocket"))
                }
                _ => cfg!(feature = "websocket"),
            };
            assert_eq!(built_in, compiled, "{transport}: {parsed:?}");
            if let Err(e) = parsed {
                assert!(e.starts_with("listeners.transport"), "{e}");
                assert!(e.contains("cargo feature"), "{e}");
            }
        }
    }

    #[test]
    #[cfg(all(feature = "tls", feature = "websocket"))]
    fn a_tls_listener_needs_its_certificate_and_key() {
        let e = parse("transport = \"wss\"\naddress = \"127.0.0.1:0\"\n").unwrap_err();
        assert!(e.starts_with("listeners.cert"), "{e}");
        let ok = parse(
            "transport = \"tls\"\naddress = \"127.0.0.1:0\"\ncert = \"c.pem\"\nkey = \"k.pem\"\n",
        );
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn web_settings_on_a_stream_listener_are_refused() {
        let e =
            parse("transport = \"tcp\"\naddress = \"127.0.0.1:0\"\nallowed_origins = [\"*\"]\n")
                .unwrap_err();
        assert!(e.starts_with("listeners.allowed_origins"), "{e}");
    }

    #[test]
    #[cfg(feature = "websocket")]
    fn origins_and_proxies_are_checked_when_read() {
        let e = parse("transport = \"ws\"\naddress = \"127.0.0.1:0\"\nallowed_origins = [\"https://x.example/page\"]\n")
            .unwrap_err();
        assert!(e.contains("not an origin"), "{e}");
        let e = parse(
            "transport = \"ws\"\naddress = \"127.0.0.1:0\"\ntrusted_proxies = [\"10.0.0.0/33\"]\n",
        )
        .unwrap_err();
        assert!(e.contains("trusted_proxies"), "{e}");
        let ok = parse("transport = \"ws\"\naddress = \"127.0.0.1:0\"\nallowed_origins = [\"https://game.example:8443\"]\ntrusted_proxies = [\"10.0.0.0/8\", \"127.0.0.1\"]\n");
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn an_unknown_transport_is_named() {
        let e = parse("transport = \"quic\"\naddress = \"127.0.0.1:0\"\n").unwrap_err();
        assert!(e.contains("quic"), "{e}");
    }
}
