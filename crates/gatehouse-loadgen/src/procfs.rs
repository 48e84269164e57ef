//! A process's memory and CPU time from `/proc` (Linux): the resident set size from
//! `/proc/PID/status` (`VmRSS`) and user + system time from `/proc/PID/stat`
//! (`utime`, `stime`: all threads, in clock ticks).

use std::io;
use std::time::{Duration, Instant};

/// Resident set size of `pid`, in bytes.
pub fn rss_bytes(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_vm_rss(&status).ok_or_else(|| invalid("no VmRSS line in /proc/PID/status"))
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// User + system CPU time `pid` has used, all threads, in clock ticks.
pub fn cpu_ticks(pid: u32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat).ok_or_else(|| invalid("cannot read utime/stime in /proc/PID/stat"))
}

fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces: count the
    // fields after its closing parenthesis. utime and stime are fields 14 and 15.
    let after_name = stat.rsplit_once(')')?.1;
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), read from the auxiliary vector
/// (`AT_CLKTCK`) without unsafe code; 100 (Linux's USER_HZ) if it cannot be read.
pub fn clock_ticks_per_sec() -> u64 {
    const AT_CLKTCK: u64 = 17;
    let Ok(auxv) = std::fs::read("/proc/self/auxv") else {
        return 100;
    };
    let words: Vec<u64> = auxv
        .chunks_exact(8)
        .map(|w| u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]))
        .collect();
    words
        .chunks_exact(2)
        .find(|pair| pair[0] == AT_CLKTCK)
        .map_or(100, |pair| pair[1].max(1))
}

/// A reading of a process's CPU time.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    ticks: u64,
    at: Instant,
}

impl CpuSample {
    /// Reads `pid`'s CPU time now.
    pub fn take(pid: u32) -> io::Result<CpuSample> {
        Ok(CpuSample {
            ticks: cpu_ticks(pid)?,
            at: Instant::now(),
        })
    }

    /// CPU time used between `self` and `later`, as a percentage of one core.
    pub fn percent_of_core_until(&self, later: &CpuSample) -> f64 {
        let wall = later.at.saturating_duration_since(self.at);
        if wall.is_zero() {
            return 0.0;
        }
        self.cpu_until(later).as_secs_f64() / wall.as_secs_f64() * 100.0
    }

    /// CPU time used between `self` and `later`.
    pub fn cpu_until(&self, later: &CpuSample) -> Duration {
        let ticks = later.ticks.saturating_sub(self.ticks);
        Duration::from_secs_f64(ticks as f64 / clock_ticks_per_sec() as f64)
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let stat = "1234 (a (weird) name) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 3 0";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
        let status = "Name:\tx\nVmPeak:\t 100 kB\nVmRSS:\t    2048 kB\n";
        assert_eq!(parse_vm_rss(status), Some(2048 * 1024));
    }

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        assert!(rss_bytes(pid).expect("own status") > 0);
        let before = CpuSample::take(pid).expect("own stat");
        let mut x = 0u64;
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let after = CpuSample::take(pid).expect("own stat");
        assert!(before.percent_of_core_until(&after) >= 0.0);
        assert_eq!(clock_ticks_per_sec(), 100, "USER_HZ on Linux");
    }
}
