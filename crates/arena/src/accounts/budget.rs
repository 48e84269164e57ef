//! Budgets of password attempts and account creations, per key (a player name, an
//! address), that count what is still being hashed.
//!
//! Each key has a GCRA budget (`limit` at once, then one more every `window / limit`)
//! of *charges*: wrong passwords, or accounts made. A hash is only started once it
//! holds a *reservation*, and a key never has more reservations than it has charges
//! left, so even if every hash in flight turns out to be chargeable, the budget is
//! never overdrawn: N guesses sent at once check at most the limit. A reservation is
//! settled when its hash is done: charged (a wrong password, an account made) or
//! given back (the right password, a hash that never ran). A charge that empties a
//! key's budget locks the key out for `block_for`, where the budget says so.
//!
//! Pure: the time is passed in, so the rules are tested with made-up instants.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// The rule of one kind of key.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rule {
    /// Charges a key may take at once.
    limit: u32,
    /// One charge comes back every `interval` (the window over the limit).
    interval: Duration,
    /// How long a key whose budget a charge emptied is refused everything; `None`:
    /// it is only refused until a charge comes back.
    block_for: Option<Duration>,
}

impl Rule {
    /// `limit` charges per `window`, locking out for `block_for` once used up.
    pub(super) fn new(limit: u32, window: Duration, block_for: Option<Duration>) -> Self {
        let limit = limit.max(1);
        Rule {
            limit,
            interval: window / limit,
            block_for,
        }
    }
}

/// One key's state.
#[derive(Debug, Default)]
struct KeyState {
    /// GCRA's theoretical arrival time: the budget is whole again at `tat`.
    tat: Option<Instant>,
    /// Reservations not settled yet: hashes waiting or running.
    in_flight: u32,
    locked_until: Option<Instant>,
}

impl KeyState {
    /// Charges the key could still take at `now`, reservations not counted.
    fn left(&self, rule: Rule, now: Instant) -> u32 {
        let Some(tat) = self.tat.filter(|tat| *tat > now) else {
            return rule.limit;
        };
        let owed = (tat - now).as_nanos();
        let interval = rule.interval.as_nanos().max(1);
        let used = u32::try_from(owed.div_ceil(interval)).unwrap_or(u32::MAX);
        rule.limit.saturating_sub(used)
    }
}

/// Whether a reservation can be had now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Taken.
    Reserved,
    /// Not now, but a reservation in flight may give its place back: wait for a
    /// settlement and ask again.
    Wait,
    /// Locked out, or the budget is spent with nothing in flight.
    Refused,
}

/// The keys of one kind under one [`Rule`]. Keys whose state has run out are pruned
/// once the map grows past [`PRUNE_AT`] (or twice what the last pruning kept, so
/// that a map of live keys is not walked at every reservation), so a flood of new
/// keys costs bounded memory: a key lives at most its window and lockout.
#[derive(Debug)]
pub(super) struct Budgets<K> {
    rule: Rule,
    keys: HashMap<K, KeyState>,
    prune_at: usize,
}

/// Keys kept before the map is pruned of forgotten ones.
const PRUNE_AT: usize = 10_000;

impl<K: Hash + Eq + Clone> Budgets<K> {
    pub(super) fn new(rule: Rule) -> Self {
        Budgets {
            rule,
            keys: HashMap::new(),
            prune_at: PRUNE_AT,
        }
    }

    /// Whether `key` is locked out at `now`.
    pub(super) fn locked<Q>(&self, key: &Q, now: Instant) -> bool
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.keys
            .get(key)
            .and_then(|s| s.locked_until)
            .is_some_and(|until| now < until)
    }

    /// What a reservation for `key` would get at `now` (nothing is taken).
    pub(super) fn verdict(&self, key: &K, now: Instant) -> Verdict {
        let Some(state) = self.keys.get(key) else {
            return Verdict::Reserved;
        };
        if state.locked_until.is_some_and(|until| now < until) {
            return Verdict::Refused;
        }
        if state.in_flight < state.left(self.rule, now) {
            Verdict::Reserved
        } else if state.in_flight > 0 {
            Verdict::Wait
        } else {
            Verdict::Refused
        }
    }

    /// Takes a reservation for `key`: only after [`Budgets::verdict`] said
    /// [`Verdict::Reserved`] under the same lock.
    pub(super) fn reserve(&mut self, key: K, now: Instant) {
        if self.keys.len() > self.prune_at {
            self.prune(now);
            self.prune_at = PRUNE_AT.max(2 * self.keys.len());
        }
        self.keys.entry(key).or_default().in_flight += 1;
    }

    /// Settles a reservation of `key`: charged or given back. `true` if the charge
    /// used up the key's budget and locked it out (from `now`).
    pub(super) fn settle(&mut self, key: &K, charge: bool, now: Instant) -> bool {
        let rule = self.rule;
        let Some(state) = self.keys.get_mut(key) else {
            return false;
        };
        state.in_flight = state.in_flight.saturating_sub(1);
        if !charge {
            return false;
        }
        let from = state.tat.map_or(now, |tat| tat.max(now));
        state.tat = Some(from + rule.interval);
        match rule.block_for {
            Some(block_for) if state.left(rule, now) == 0 => {
                state.locked_until = Some(now + block_for);
                true
            }
            _ => false,
        }
    }

    /// Forgets the keys that hold nothing any more.
    fn prune(&mut self, now: Instant) {
        self.keys.retain(|_, state| {
            state.in_flight > 0
                || state.tat.is_some_and(|tat| tat > now)
                || state.locked_until.is_some_and(|until| until > now)
        });
    }

    /// Keys held (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn guesses(limit: u32) -> Budgets<&'static str> {
        Budgets::new(Rule::new(limit, MINUTE, Some(MINUTE)))
    }

    /// Reserves if it can; the verdict.
    fn ask(budgets: &mut Budgets<&'static str>, key: &'static str, now: Instant) -> Verdict {
        let verdict = budgets.verdict(&key, now);
        if verdict == Verdict::Reserved {
            budgets.reserve(key, now);
        }
        verdict
    }

    #[test]
    fn guesses_in_flight_count_so_a_burst_never_overdraws_the_budget() {
        let mut b = guesses(3);
        let t = Instant::now();
        let verdicts: Vec<Verdict> = (0..10).map(|_| ask(&mut b, "ip", t)).collect();
        assert_eq!(verdicts[..3], [Verdict::Reserved; 3]);
        assert_eq!(
            verdicts[3..],
            [Verdict::Wait; 7],
            "all three may turn out right"
        );
        // Two turn out wrong: one place is left, and it is the one in flight.
        assert!(!b.settle(&"ip", true, t));
        assert!(!b.settle(&"ip", true, t));
        assert_eq!(ask(&mut b, "ip", t), Verdict::Wait);
        // The third is right: its place comes back.
        assert!(!b.settle(&"ip", false, t));
        assert_eq!(ask(&mut b, "ip", t), Verdict::Reserved);
        // Wrong too: the budget is used up and the key locked out for a minute.
        assert!(b.settle(&"ip", true, t));
        assert_eq!(b.verdict(&"ip", t), Verdict::Refused);
        assert!(b.locked("ip", t + MINUTE - Duration::from_millis(1)));
        assert!(!b.locked("ip", t + MINUTE));
        // A minute on, the whole budget is back.
        let later = t + MINUTE;
        let verdicts: Vec<Verdict> = (0..4).map(|_| ask(&mut b, "ip", later)).collect();
        assert_eq!(
            verdicts,
            [
                Verdict::Reserved,
                Verdict::Reserved,
                Verdict::Reserved,
                Verdict::Wait
            ]
        );
    }

    #[test]
    fn right_passwords_are_never_charged() {
        let mut b = guesses(2);
        let t = Instant::now();
        for i in 0..100 {
            assert_eq!(
                ask(&mut b, "ada", t + Duration::from_millis(i)),
                Verdict::Reserved
            );
            assert!(!b.settle(&"ada", false, t));
        }
        assert_eq!(ask(&mut b, "ada", t), Verdict::Reserved);
        assert!(!b.settle(&"ada", true, t), "one wrong of two");
        assert_eq!(ask(&mut b, "ada", t), Verdict::Reserved);
        assert!(b.settle(&"ada", true, t), "the second locks");
    }

    #[test]
    fn charges_come_back_one_per_interval() {
        // Without a lockout (account creations): 2 an hour, one back every 30 min.
        let hour = Duration::from_secs(3600);
        let mut b: Budgets<&str> = Budgets::new(Rule::new(2, hour, None));
        let t = Instant::now();
        for _ in 0..2 {
            assert_eq!(ask(&mut b, "ip", t), Verdict::Reserved);
            assert!(!b.settle(&"ip", true, t), "never locked out");
        }
        assert_eq!(
            b.verdict(&"ip", t),
            Verdict::Refused,
            "nothing in flight to wait for"
        );
        assert_eq!(
            b.verdict(&"ip", t + hour / 2 - Duration::from_secs(1)),
            Verdict::Refused
        );
        assert_eq!(ask(&mut b, "ip", t + hour / 2), Verdict::Reserved);
        assert_eq!(b.verdict(&"ip", t + hour / 2), Verdict::Wait);
    }

    #[test]
    fn forgotten_keys_are_pruned_as_the_map_grows() {
        let mut b: Budgets<u32> = Budgets::new(Rule::new(5, MINUTE, Some(MINUTE)));
        let t = Instant::now();
        let size = u32::try_from(PRUNE_AT).unwrap() + 1;
        for key in 0..size {
            b.reserve(key, t);
            b.settle(&key, key == 0, t);
        }
        assert_eq!(b.len(), PRUNE_AT + 1);
        // One more, later: only the key with a charge still running is kept.
        b.reserve(size, t + Duration::from_secs(1));
        assert_eq!(b.len(), 2);
    }
}
