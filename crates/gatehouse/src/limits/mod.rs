//! The seed's DoS checker (`cutil_dos_checker`) and the caps on connections.
//!
//! - [`rate`]: per-connection inbound bytes/s and frames/s, token buckets that are
//!   told the time instead of reading a clock, for the I/O-free connection core.
//! - `admission`: `max_connections` and the per-IP cap, decided at accept.
//! - [`memory`]: the server-wide budget of bytes clients make the server buffer.

mod admission;
pub mod memory;
pub mod rate;

pub use admission::{counted_as, Refusal};
pub(crate) use admission::{Admission, Permit};
pub use memory::{MemoryBudget, FREE_PER_CONNECTION};
pub use rate::{nanos_since, InboundRates, RateLimits, RateViolation};
