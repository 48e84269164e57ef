//! Admission at accept: the global `max_connections` and the per-IP cap.
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
    /// `max_connections_per_ip` reached for this address.
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
    ip: IpAddr,
}

impl Admission {
    pub(crate) fn new(max_total: usize, max_per_ip: usize) -> Self {
        Admission {
            inner: Arc::new(AdmissionInner {
                max_total,
                max_per_ip,
                counts: Mutex::new(Counts::default()),
            }),
        }
    }

    /// Takes a slot for a connection from `ip`, or says why not.
    pub(crate) fn try_admit(&self, ip: IpAddr) -> Result<Permit, Refusal> {
        let mut counts = self
            .inner
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
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
            ip,
        })
    }

    /// Connections currently admitted.
    #[cfg(test)]
    pub(crate) fn current(&self) -> usize {
        self.inner
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = self
            .admission
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_caps_total_and_per_ip_and_frees_on_drop() {
        let admission = Admission::new(3, 2);
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
}
