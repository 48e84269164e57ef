//! The seed's DoS checker (`cutil_dos_checker`) and the caps on connections.
//!
//! Internal but for [`counted_as`] (how an address counts against per-address
//! caps, for a game's own) and [`Refusal`] (why a connection was refused at accept).
//!
//! - `rate`: per-connection inbound bytes/s and frames/s, token buckets that are
//!   told the time instead of reading a clock, for the I/O-free connection core.
//! - `admission`: `max_connections` and the per-IP cap, decided at accept.
//! - `memory`: the server-wide budget of bytes clients make the server buffer.

mod admission;
pub(crate) mod memory;
pub(crate) mod rate;

pub use admission::{counted_as, Refusal};
pub(crate) use admission::{Admission, Permit};
pub(crate) use memory::{MemoryBudget, FREE_PER_CONNECTION};
pub(crate) use rate::{nanos_since, InboundRates, RateLimits};
