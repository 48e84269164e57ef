//! Keeping failures local, for every supervisor in the crate (the hub's, the
//! connections', the rooms'): a panic caught as a message, and OTP's restart
//! intensity.

use std::any::Any;
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use tokio::time::Instant;

/// Runs `f`, turning a panic into its message.
pub(crate) fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).map_err(|panic| panic_message(&*panic))
}

/// A panic payload's message.
pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// OTP's restart intensity: at most `max` restarts within any `window`.
pub(crate) struct RestartIntensity {
    max: u32,
    window: Duration,
    recent: VecDeque<Instant>,
}

impl RestartIntensity {
    pub(crate) fn new(max: u32, window: Duration) -> Self {
        RestartIntensity {
            max,
            window,
            recent: VecDeque::new(),
        }
    }

    /// Records a restart at `now`; false if it is one too many.
    pub(crate) fn allow(&mut self, now: Instant) -> bool {
        while self
            .recent
            .front()
            .is_some_and(|&at| now.duration_since(at) > self.window)
        {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        self.recent.len() <= self.max as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_intensity_allows_max_within_window_and_forgets_old_ones() {
        let start = Instant::now();
        let mut intensity = RestartIntensity::new(2, Duration::from_secs(5));
        assert!(intensity.allow(start));
        assert!(intensity.allow(start + Duration::from_secs(1)));
        assert!(!intensity.allow(start + Duration::from_secs(2)));
        let mut intensity = RestartIntensity::new(2, Duration::from_secs(5));
        assert!(intensity.allow(start));
        assert!(intensity.allow(start + Duration::from_secs(3)));
        assert!(intensity.allow(start + Duration::from_secs(6)));
        assert!(!intensity.allow(start + Duration::from_secs(7)));
    }

    #[test]
    fn zero_max_restarts_gives_up_on_the_first_crash() {
        let mut intensity = RestartIntensity::new(0, Duration::from_secs(5));
        assert!(!intensity.allow(Instant::now()));
    }

    #[test]
    fn a_caught_panic_keeps_its_message() {
        assert_eq!(catch(|| 7), Ok(7));
        assert_eq!(
            catch(|| -> () { panic!("boom {}", 1) }),
            Err("boom 1".into())
        );
    }
}
