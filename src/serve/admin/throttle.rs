//! Failed logins per client address: after [`MAX_FAILURES`] within [`FAILURE_WINDOW`] the address
//! is refused for [`BLOCK_FOR`]. Other addresses are unaffected; a successful login forgets its
//! address. The table holds at most [`MAX_TRACKED_ADDRESSES`]: when full, expired entries go
//! first, then the one that would expire soonest.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use super::limits::{BLOCK_FOR, FAILURE_WINDOW, MAX_FAILURES, MAX_TRACKED_ADDRESSES};

#[derive(Clone, Copy, Debug)]
struct Entry {
    window_start: Instant,
    failures: u32,
    blocked_until: Option<Instant>,
}

impl Entry {
    /// When the entry stops mattering.
    fn expires(&self) -> Instant {
        let window_end = self.window_start + FAILURE_WINDOW;
        self.blocked_until.map_or(window_end, |b| b.max(window_end))
    }
}

#[derive(Default)]
pub struct Throttle {
    table: Mutex<HashMap<IpAddr, Entry>>,
}

impl Throttle {
    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Entry>> {
        // a panic while holding it leaves a consistent map: keep using it
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `ip` is refused now.
    pub fn blocked(&self, ip: IpAddr, now: Instant) -> bool {
        self.table()
            .get(&ip)
            .and_then(|e| e.blocked_until)
            .is_some_and(|until| until > now)
    }

    /// Records a failed login; answers whether `ip` is now blocked.
    pub fn failed(&self, ip: IpAddr, now: Instant) -> bool {
        let mut table = self.table();
        if !table.contains_key(&ip) && table.len() >= MAX_TRACKED_ADDRESSES {
            table.retain(|_, e| e.expires() > now);
            if table.len() >= MAX_TRACKED_ADDRESSES {
                let soonest = table.iter().min_by_key(|(_, e)| e.expires()).map(|(ip, _)| *ip);
                if let Some(soonest) = soonest {
                    table.remove(&soonest);
                }
            }
        }
        let e = table.entry(ip).or_insert(Entry {
            window_start: now,
            failures: 0,
            blocked_until: None,
        });
        if now.duration_since(e.window_start) > FAILURE_WINDOW {
            e.window_start = now;
            e.failures = 0;
        }
        e.failures = e.failures.saturating_add(1);
        if e.failures >= MAX_FAILURES {
            e.blocked_until = Some(now + BLOCK_FOR);
        }
        e.blocked_until.is_some_and(|until| until > now)
    }

    /// A successful login: the address starts afresh.
    pub fn succeeded(&self, ip: IpAddr) {
        self.table().remove(&ip);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.table().len()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(n))
    }

    #[test]
    fn five_failures_in_a_minute_block_that_address_only_and_for_a_while() {
        let t = Throttle::default();
        let now = Instant::now();
        for i in 1..MAX_FAILURES {
            assert!(!t.failed(ip(1), now + Duration::from_secs(u64::from(i))));
        }
        assert!(!t.blocked(ip(1), now + Duration::from_secs(5)));
        assert!(t.failed(ip(1), now + Duration::from_secs(5)));
        assert!(t.blocked(ip(1), now + Duration::from_secs(6)));
        assert!(!t.blocked(ip(2), now + Duration::from_secs(6)), "another address");
        assert!(
            !t.blocked(ip(1), now + Duration::from_secs(6) + BLOCK_FOR),
            "for a while"
        );
    }

    #[test]
    fn failures_spread_over_more_than_the_window_do_not_block() {
        let t = Throttle::default();
        let now = Instant::now();
        for i in 0..20u64 {
            assert!(!t.failed(ip(1), now + FAILURE_WINDOW * (i as u32) / 3));
        }
    }

    #[test]
    fn a_successful_login_forgets_the_failures() {
        let t = Throttle::default();
        let now = Instant::now();
        for _ in 1..MAX_FAILURES {
            t.failed(ip(1), now);
        }
        t.succeeded(ip(1));
        assert!(!t.failed(ip(1), now));
    }

    #[test]
    fn the_table_stays_bounded_under_a_flood_of_addresses() {
        let t = Throttle::default();
        let now = Instant::now();
        for n in 0..(MAX_TRACKED_ADDRESSES as u32 * 3) {
            t.failed(ip(n), now);
        }
        assert!(t.len() <= MAX_TRACKED_ADDRESSES);
    }
}
