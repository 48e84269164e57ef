//! Admission at accept: the global `max_connections` and the per-IP cap, which
//! counts an IPv6 client by its network (`server.ipv6_prefix_len`, a /64 by default):
//! one subscriber is given a whole /64, and could otherwise walk around the cap.
//!
//! It lives outside the hub, so counts stay right across hub restarts; a [`Permit`]
//! gives its slot back when the connection task ends, however it ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// Why a new connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections` reached.
    ServerFull,
    /// `max_connections_per_ip` reached for this address (IPv6: this network).
    TooManyFromIp,
}

/// Admission control at accept: global and per-IP connection counts.
#[derive(Clone)]
pub(crate) struct Admission {
    inner: Arc<AdmissionInner>,
}

struct AdmissionInner {
    max_total: usize,
    max_per_ip: usize,
    ipv6_prefix_len: u8,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// One admitted connection's slot; dropping it frees the slot.
pub(crate) struct Permit {
    admission: Arc<AdmissionInner>,
    /// The address counted, once known (see [`Admission::try_admit_unplaced`]).
    ip: Option<IpAddr>,
}

impl Admission {
    pub(crate) fn new(max_total: usize, max_per_ip: usize, ipv6_prefix_len: u8) -> Self {
        Admission {
            inner: Arc::new(AdmissionInner {
                max_total,
                max_per_ip,
                ipv6_prefix_len,
                counts: Mutex::new(Counts::default()),
            }),
        }
    }

    /// Takes a slot for a connection from `ip`, or says why not.
    pub(crate) fn try_admit(&self, ip: IpAddr) -> Result<Permit, Refusal> {
        let ip = counted_as(ip, self.inner.ipv6_prefix_len);
        let mut counts = self.inner.lock();
        if counts.total >= self.inner.max_total {
            return Err(Refusal::ServerFull);
        }
        let from_ip = counts.per_ip.entry(ip).or_insert(0);
        if *from_ip >= self.inner.max_per_ip {
            return Err(Refusal::TooManyFromIp);
        }
        *from_ip += 1;
        counts.total += 1;
        Ok(Permit {
            admission: self.inner.clone(),
            ip: Some(ip),
        })
    }

    /// Takes a slot under `max_connections` only, for a connection whose client is not
    /// known yet (a trusted proxy's, until its `X-Forwarded-For` is read); the per-IP
    /// cap applies at [`Permit::place`].
    pub(crate) fn try_admit_unplaced(&self) -> Result<Permit, Refusal> {
        let mut counts = self.inner.lock();
        if counts.total >= self.inner.max_total {
            return Err(Refusal::ServerFull);
        }
        counts.total += 1;
        Ok(Permit {
            admission: self.inner.clone(),
            ip: None,
        })
    }

    /// Connections currently admitted.
    #[cfg(test)]
    pub(crate) fn current(&self) -> usize {
        self.inner.lock().total
    }
}

impl AdmissionInner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Permit {
    /// Counts the connection against `ip`'s cap (once; a placed permit keeps its
    /// address). On refusal the slot stays taken until the permit is dropped.
    pub(crate) fn place(&mut self, ip: IpAddr) -> Result<(), Refusal> {
        if self.ip.is_some() {
            return Ok(());
        }
        let ip = counted_as(ip, self.admission.ipv6_prefix_len);
        let mut counts = self.admission.lock();
        let from_ip = counts.per_ip.entry(ip).or_insert(0);
        if *from_ip >= self.admission.max_per_ip {
            if *from_ip == 0 {
                counts.per_ip.remove(&ip);
            }
            return Err(Refusal::TooManyFromIp);
        }
        *from_ip += 1;
        self.ip = Some(ip);
        Ok(())
    }
}

/// The address a connection from `ip` counts against: IPv4 (also when mapped into
/// IPv6) as it is, IPv6 with only its first `prefix_len` bits (one subscriber usually
/// has a whole /64). The per-IP cap counts by it, and so do rooms' seat shares; a game
/// keying its own per-address limits by it treats clients the same way.
pub fn counted_as(ip: IpAddr, prefix_len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6);
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(prefix_len.clamp(1, 128)))
                    .unwrap_or(0);
                IpAddr::V6((bits & mask).into())
            }
        },
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = self.admission.lock();
        counts.total = counts.total.saturating_sub(1);
        let Some(ip) = self.ip else {
            return;
        };
        if let Some(n) = counts.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                counts.per_ip.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_caps_total_and_per_ip_and_frees_on_drop() {
        let admission = Admission::new(3, 2, 64);
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        let p1 = admission.try_admit(a).unwrap();
        let _p2 = admission.try_admit(a).unwrap();
        assert_eq!(admission.try_admit(a).err(), Some(Refusal::TooManyFromIp));
        let _p3 = admission.try_admit(b).unwrap();
        assert_eq!(admission.try_admit(b).err(), Some(Refusal::ServerFull));
        drop(p1);
        assert_eq!(admission.current(), 2);
        assert!(admission.try_admit(a).is_ok());
    }

    #[test]
    fn a_client_behind_a_proxy_is_placed_once_its_address_is_known() {
        let admission = Admission::new(10, 1, 64);
        let client: IpAddr = [203, 0, 113, 7].into();
        let mut first = admission.try_admit_unplaced().unwrap();
        let mut second = admission.try_admit_unplaced().unwrap();
        assert!(first.place(client).is_ok());
        assert_eq!(second.place(client), Err(Refusal::TooManyFromIp));
        drop(second);
        assert_eq!(admission.current(), 1);
        drop(first);
        assert!(admission.try_admit(client).is_ok());
    }

    #[test]
    fn ipv6_clients_count_by_their_network_and_ipv4_by_address() {
        let admission = Admission::new(100, 2, 64);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let _a = admission.try_admit(ip("2001:db8:1:2::1")).unwrap();
        let _b = admission.try_admit(ip("2001:db8:1:2:ffff::9")).unwrap();
        // A third address of the same /64 is the same client.
        assert_eq!(
            admission.try_admit(ip("2001:db8:1:2:abcd::1")).err(),
            Some(Refusal::TooManyFromIp)
        );
        assert!(
            admission.try_admit(ip("2001:db8:1:3::1")).is_ok(),
            "next /64"
        );
        // IPv4, bare or mapped into IPv6, counts by address.
        let _c = admission.try_admit(ip("192.0.2.1")).unwrap();
        let _d = admission.try_admit(ip("::ffff:192.0.2.1")).unwrap();
        assert!(admission.try_admit(ip("192.0.2.1")).is_err());
        assert!(admission.try_admit(ip("192.0.2.2")).is_ok());

        let per_address = Admission::new(100, 1, 128);
        let _e = per_address.try_admit(ip("2001:db8::1")).unwrap();
        assert!(per_address.try_admit(ip("2001:db8::2")).is_ok());
    }
}
