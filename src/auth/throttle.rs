//! The budget of failed password logins, per client address and per user name: token buckets
//! in two bounded tables, checked before argon2 runs so a throttled attempt costs no hash.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

/// Most addresses and most user names tracked each; bounds memory under a flood of new ones.
pub(crate) const THROTTLE_CAPACITY: usize = 10_000;

/// How many failed logins a client address or user name may cause.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Budget {
    /// Failures allowed at once, after a quiet spell.
    pub burst: u32,
    /// Failures allowed per second once the burst is spent.
    pub per_second: f64,
}

/// Password checks one address may have queued or running at once: a flood from one address
/// then holds at most this many of the hash pool's places, whatever its budget.
pub(crate) const MAX_IN_FLIGHT_PER_ADDRESS: u32 = 2;

/// Which budget ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottledBy {
    /// The address's failed-login budget.
    Address,
    /// The user name's failed-login budget.
    User,
    /// The address already has [`MAX_IN_FLIGHT_PER_ADDRESS`] checks in progress.
    InFlight,
}

impl ThrottledBy {
    /// The `by` label of `herald_auth_throttled_total`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ThrottledBy::Address | ThrottledBy::InFlight => "address",
            ThrottledBy::User => "user",
        }
    }

    /// How an error message names the budget.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            ThrottledBy::Address => "failed from this address",
            ThrottledBy::User => "failed for this user name",
            ThrottledBy::InFlight => "are being checked at once from this address",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

/// Token buckets keyed by `K`, at most [`THROTTLE_CAPACITY`] of them.
struct Table<K> {
    buckets: HashMap<K, Bucket>,
    capacity: usize,
}

impl<K: Hash + Eq + Clone> Table<K> {
    fn new(capacity: usize) -> Table<K> {
        Table {
            buckets: HashMap::new(),
            capacity,
        }
    }

    /// The key's tokens now; a key not tracked has a full bucket.
    fn tokens(&self, key: &K, budget: Budget, now: Instant) -> f64 {
        self.buckets.get(key).map_or(f64::from(budget.burst), |b| {
            let earned =
                now.saturating_duration_since(b.refilled).as_secs_f64() * budget.per_second;
            (b.tokens + earned).min(f64::from(budget.burst))
        })
    }

    /// Adds `delta` tokens (negative to take) to the key's bucket.
    fn add(&mut self, key: &K, delta: f64, budget: Budget, now: Instant) {
        let tokens = (self.tokens(key, budget, now) + delta).min(f64::from(budget.burst));
        if tokens >= f64::from(budget.burst) {
            // A full bucket is the same as none.
            self.buckets.remove(key);
            return;
        }
        if !self.buckets.contains_key(key) && self.buckets.len() >= self.capacity {
            self.evict(budget, now);
        }
        self.buckets.insert(
            key.clone(),
            Bucket {
                tokens,
                refilled: now,
            },
        );
    }

    /// Drops refilled buckets, then the oldest eighth if that freed nothing, so eviction stays
    /// rare under a flood of new keys.
    fn evict(&mut self, budget: Budget, now: Instant) {
        let full = f64::from(budget.burst);
        self.buckets.retain(|_, b| {
            let earned =
                now.saturating_duration_since(b.refilled).as_secs_f64() * budget.per_second;
            b.tokens + earned < full
        });
        if self.buckets.len() < self.capacity {
            return;
        }
        let mut ages: Vec<Instant> = self.buckets.values().map(|b| b.refilled).collect();
        let cut = (self.capacity / 8).max(1).min(ages.len() - 1);
        let (_, &mut oldest_kept, _) = ages.select_nth_unstable(cut);
        self.buckets.retain(|_, b| b.refilled >= oldest_kept);
        // Equal ages could keep them all; any victim will do then.
        if self.buckets.len() >= self.capacity
            && let Some(victim) = self.buckets.keys().next().cloned()
        {
            self.buckets.remove(&victim);
        }
    }
}

struct Tables {
    by_address: Table<IpAddr>,
    by_user: Table<String>,
    /// Checks in progress per address; an address leaves when its last check ends, so this
    /// holds no more entries than there are connections.
    in_flight: HashMap<IpAddr, u32>,
}

/// Failed-login budgets per client address and per user name, shared by every core.
pub(crate) struct LoginThrottle {
    budget: Budget,
    tables: Mutex<Tables>,
}

impl LoginThrottle {
    pub(crate) fn new(budget: Budget) -> LoginThrottle {
        LoginThrottle::with_capacity(budget, THROTTLE_CAPACITY)
    }

    fn with_capacity(budget: Budget, capacity: usize) -> LoginThrottle {
        LoginThrottle {
            budget,
            tables: Mutex::new(Tables {
                by_address: Table::new(capacity),
                by_user: Table::new(capacity),
                in_flight: HashMap::new(),
            }),
        }
    }

    /// Reserves one failure from both budgets, and a place among the address's checks in
    /// progress, before a password is verified; when either is spent, answers which and the
    /// whole seconds until it has room again. Every reservation ends with [`Self::finish`].
    pub(crate) fn reserve(
        &self,
        address: IpAddr,
        user: &str,
    ) -> Result<Reservation<'_>, (ThrottledBy, u64)> {
        self.reserve_at(address, user, Instant::now())?;
        Ok(Reservation {
            throttle: self,
            address,
            user: user.to_owned(),
            failed: false,
        })
    }

    fn reserve_at(
        &self,
        address: IpAddr,
        user: &str,
        now: Instant,
    ) -> Result<(), (ThrottledBy, u64)> {
        let budget = self.budget;
        let mut tables = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
        let user = user.to_owned();
        let by_address = tables.by_address.tokens(&address, budget, now);
        let by_user = tables.by_user.tokens(&user, budget, now);
        let retry_after = |tokens: f64| ((1.0 - tokens) / budget.per_second).ceil().max(1.0) as u64;
        if tables.in_flight.get(&address).copied().unwrap_or(0) >= MAX_IN_FLIGHT_PER_ADDRESS {
            return Err((ThrottledBy::InFlight, 1));
        }
        if by_address < 1.0 {
            return Err((ThrottledBy::Address, retry_after(by_address)));
        }
        if by_user < 1.0 {
            return Err((ThrottledBy::User, retry_after(by_user)));
        }
        tables.by_address.add(&address, -1.0, budget, now);
        tables.by_user.add(&user, -1.0, budget, now);
        *tables.in_flight.entry(address).or_insert(0) += 1;
        Ok(())
    }

    /// Ends a reservation once its check is done; one that did not fail (a good login, or a
    /// check that never ran) is given back, so only wrong guesses spend the budget.
    fn finish(&self, address: IpAddr, user: &str, failed: bool) {
        let budget = self.budget;
        let now = Instant::now();
        let mut tables = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = tables.in_flight.get_mut(&address) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                tables.in_flight.remove(&address);
            }
        }
        if !failed {
            tables.by_address.add(&address, 1.0, budget, now);
            tables.by_user.add(&user.to_owned(), 1.0, budget, now);
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> (usize, usize) {
        let tables = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
        (
            tables.by_address.buckets.len(),
            tables.by_user.buckets.len(),
        )
    }
}

/// A place taken by [`LoginThrottle::reserve`], ended when dropped, so a check that never
/// finishes cannot hold its address's place for good.
pub(crate) struct Reservation<'a> {
    throttle: &'a LoginThrottle,
    address: IpAddr,
    user: String,
    failed: bool,
}

impl Reservation<'_> {
    /// Marks the check a wrong guess, which keeps its failure spent.
    pub(crate) fn failed(mut self) {
        self.failed = true;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.throttle.finish(self.address, &self.user, self.failed);
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use super::*;

    const BUDGET: Budget = Budget {
        burst: 3,
        per_second: 0.5,
    };

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    }

    #[test]
    fn the_burst_is_allowed_then_the_rate_with_a_retry_after() {
        let throttle = LoginThrottle::new(BUDGET);
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(throttle.reserve_at(ip(1), "bob", start), Ok(()));
            throttle.finish(ip(1), "bob", true);
        }
        assert_eq!(
            throttle.reserve_at(ip(1), "bob", start),
            Err((ThrottledBy::Address, 2))
        );
        // Half a token a second: one more after two seconds, and only one.
        let later = start + Duration::from_secs(2);
        assert_eq!(throttle.reserve_at(ip(1), "bob", later), Ok(()));
        throttle.finish(ip(1), "bob", true);
        assert!(throttle.reserve_at(ip(1), "bob", later).is_err());
    }

    #[test]
    fn a_user_name_is_throttled_from_any_address() {
        let throttle = LoginThrottle::new(BUDGET);
        let now = Instant::now();
        for last in 1..=3 {
            assert_eq!(throttle.reserve_at(ip(last), "bob", now), Ok(()));
            throttle.finish(ip(last), "bob", true);
        }
        assert_eq!(
            throttle.reserve_at(ip(9), "bob", now),
            Err((ThrottledBy::User, 2))
        );
        assert_eq!(throttle.reserve_at(ip(9), "alice", now), Ok(()));
    }

    #[test]
    fn a_refunded_reservation_costs_nothing() {
        let throttle = LoginThrottle::new(BUDGET);
        for _ in 0..10 {
            assert!(throttle.reserve(ip(1), "bob").is_ok());
        }
        assert_eq!(throttle.tracked(), (0, 0));
    }

    #[test]
    fn an_address_has_at_most_two_checks_in_progress() {
        let throttle = LoginThrottle::new(Budget {
            burst: 100,
            per_second: 1.0,
        });
        let first = throttle.reserve(ip(1), "a");
        let _second = throttle.reserve(ip(1), "b");
        assert_eq!(
            throttle.reserve(ip(1), "c").err(),
            Some((ThrottledBy::InFlight, 1))
        );
        assert!(throttle.reserve(ip(2), "c").is_ok());
        if let Ok(first) = first {
            first.failed();
        }
        assert!(throttle.reserve(ip(1), "c").is_ok());
    }

    #[test]
    fn the_tables_never_grow_past_their_capacity() {
        let throttle = LoginThrottle::with_capacity(BUDGET, 16);
        let now = Instant::now();
        for i in 0..100u8 {
            let at = now + Duration::from_millis(u64::from(i));
            let _ = throttle.reserve_at(ip(i), &format!("user{i}"), at);
            throttle.finish(ip(i), &format!("user{i}"), true);
            let (addresses, users) = throttle.tracked();
            assert!(addresses <= 16 && users <= 16, "{addresses} {users}");
        }
        // The newest is kept, the oldest went.
        let tables = throttle
            .tables
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        assert!(tables.by_address.buckets.contains_key(&ip(99)));
        assert!(!tables.by_address.buckets.contains_key(&ip(0)));
    }
}
