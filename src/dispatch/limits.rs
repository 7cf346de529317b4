//! Pacing: retry backoff, the token bucket of an integration account and the circuit breaker of
//! an endpoint. Pure state machines over `Instant`s, so they are tested without sleeping.

use std::time::{Duration, Instant};

use rand::Rng;

/// Exponential backoff with full jitter: a uniform delay in `[0, min(cap, base · 2^(attempt-1))]`.
/// A target's own signal (`Retry-After`) wins when it asks for longer.
pub fn backoff(attempt: u32, base: Duration, cap: Duration, after: Option<Duration>) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let ceiling = exp.min(cap);
    let jittered = ceiling.mul_f64(rand::thread_rng().gen::<f64>());
    match after {
        Some(after) => after.max(jittered).min(cap.max(after)),
        None => jittered,
    }
}

/// A token bucket: `rate` tokens per second, at most `burst` saved up.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: u32, now: Instant) -> TokenBucket {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            at: now,
        }
    }

    /// Takes a token, or says how long until one is available.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    /// No attempt until `until`; then one probe.
    Open {
        until: Instant,
    },
    /// One probe is in flight; its result closes or reopens the breaker.
    HalfOpen,
}

impl BreakerState {
    /// Every label [`BreakerState::as_str`] gives, for metrics that list each state.
    pub const LABELS: [&'static str; 3] = ["closed", "open", "half-open"];

    /// The label of logs, metrics, `/deliveries` and the admin views.
    pub fn as_str(&self) -> &'static str {
        match self {
            BreakerState::Closed => Self::LABELS[0],
            BreakerState::Open { .. } => Self::LABELS[1],
            BreakerState::HalfOpen => Self::LABELS[2],
        }
    }
}

/// Circuit breaker of one endpoint: opens after `threshold` consecutive endpoint failures, stays
/// open for a cooldown that doubles (up to 16×) while probes keep failing.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    failures: u32,
    reopened: u32,
    state: BreakerState,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker {
            threshold,
            cooldown,
            failures: 0,
            reopened: 0,
            state: BreakerState::Closed,
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// May an attempt start now? An open breaker whose cooldown has passed lets one probe through.
    pub fn allow(&mut self, now: Instant) -> Result<(), Option<Instant>> {
        match self.state {
            BreakerState::Closed => Ok(()),
            BreakerState::Open { until } if now >= until => {
                self.state = BreakerState::HalfOpen;
                Ok(())
            }
            BreakerState::Open { until } => Err(Some(until)),
            BreakerState::HalfOpen => Err(None),
        }
    }

    /// The endpoint answered (whatever the answer). Returns true when this closed the breaker.
    pub fn on_answer(&mut self) -> bool {
        self.failures = 0;
        self.reopened = 0;
        let was_open = self.state != BreakerState::Closed;
        self.state = BreakerState::Closed;
        was_open
    }

    /// The endpoint failed (5xx, timeout, refused).
    pub fn on_failure(&mut self, now: Instant) {
        self.failures += 1;
        let reopen = self.state == BreakerState::HalfOpen;
        if reopen || self.failures >= self.threshold {
            if reopen {
                self.reopened = (self.reopened + 1).min(4);
            }
            self.state = BreakerState::Open {
                until: now + self.cooldown * (1 << self.reopened),
            };
        }
    }

    /// An attempt that neither answered nor failed against the endpoint (it was not sent): a
    /// half-open breaker may probe again.
    pub fn on_not_sent(&mut self) {
        if self.state == BreakerState::HalfOpen {
            self.state = BreakerState::Open {
                until: Instant::now(),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_jittered_below_the_exponential_ceiling_and_capped() {
        let base = Duration::from_secs(1);
        let cap = Duration::from_secs(600);
        for attempt in 1..40 {
            let d = backoff(attempt, base, cap, None);
            let ceiling = (base * 2u32.saturating_pow((attempt - 1).min(20))).min(cap);
            assert!(d <= ceiling, "attempt {attempt}: {d:?} > {ceiling:?}");
        }
        let spread: std::collections::HashSet<u128> =
            (0..50).map(|_| backoff(5, base, cap, None).as_millis()).collect();
        assert!(spread.len() > 10, "full jitter spreads retries");
    }

    #[test]
    fn retry_after_wins_when_longer() {
        let d = backoff(
            1,
            Duration::from_secs(1),
            Duration::from_secs(600),
            Some(Duration::from_secs(30)),
        );
        assert_eq!(d, Duration::from_secs(30));
        // a target asking for longer than the cap is still obeyed
        let d = backoff(
            1,
            Duration::from_millis(10),
            Duration::from_secs(1),
            Some(Duration::from_secs(5)),
        );
        assert_eq!(d, Duration::from_secs(5));
    }

    #[test]
    fn token_bucket_allows_a_burst_then_paces() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 3, t0);
        for _ in 0..3 {
            assert!(b.take(t0).is_ok());
        }
        let wait = b.take(t0).unwrap_err();
        assert!(
            wait > Duration::from_millis(90) && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        assert!(b.take(t0 + Duration::from_millis(100)).is_ok());
        assert!(b.take(t0 + Duration::from_millis(100)).is_err());
    }

    #[test]
    fn breaker_opens_after_consecutive_failures_probes_once_and_closes_on_an_answer() {
        let t0 = Instant::now();
        let cool = Duration::from_secs(10);
        let mut b = Breaker::new(3, cool);
        b.on_failure(t0);
        b.on_failure(t0);
        b.on_answer(); // an answer resets the count
        b.on_failure(t0);
        b.on_failure(t0);
        assert_eq!(b.allow(t0), Ok(()));
        b.on_failure(t0);
        assert_eq!(b.allow(t0 + Duration::from_secs(1)), Err(Some(t0 + cool)));
        // the cooldown passed: one probe, no second
        assert_eq!(b.allow(t0 + cool), Ok(()));
        assert_eq!(b.allow(t0 + cool), Err(None));
        // the probe failed: open again for twice as long
        b.on_failure(t0 + cool);
        assert_eq!(
            b.state(),
            BreakerState::Open {
                until: t0 + cool + cool * 2
            }
        );
        assert_eq!(b.allow(t0 + cool * 3), Ok(()));
        assert!(b.on_answer(), "a successful probe closes it");
        assert_eq!(b.allow(t0 + cool * 3), Ok(()));
    }
}
