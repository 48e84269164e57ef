//! gatehouse's cluster link over NATS: [`NatsLink`] implements
//! [`gatehouse::cluster::ClusterLink`] with core NATS for subjects and requests and
//! JetStream key-value buckets for the nodes' and players' keys.
//!
//! The crate owns only the transport: what crosses between nodes, and when, is the
//! runtime's (`gatehouse::cluster`). A link is made whether or not NATS is up (the
//! node serves alone and joins when NATS comes), and reconnects forever.
//!
//! [`testing`] starts and stops a real `nats-server` for tests (this crate's and
//! other crates').

mod kv;
mod link;
pub mod testing;

pub use link::NatsLink;
