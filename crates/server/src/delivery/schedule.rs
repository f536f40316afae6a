//! When to try again: the retry schedule (a delay before each attempt, ±20 % jitter so that a
//! receiver coming back is not hit by every queued delivery at once) and `Retry-After`.

use std::time::Duration;

use time::OffsetDateTime;

/// Longest wait a `Retry-After` answer can impose.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The delays before each attempt. The first attempt happens when the event is queued (its
/// entry is conventionally `0s`); after the last, the delivery has failed.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrySchedule {
    delays: Vec<Duration>,
}

impl RetrySchedule {
    /// Parses `0s,5s,5m,30m,2h,5h,10h,10h`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let delays = text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(crate::config::parse_duration)
            .collect::<Result<Vec<_>, _>>()?;
        if delays.is_empty() {
            return Err("the schedule names no attempt; e.g. 0s,5s,5m,30m,2h,5h,10h,10h".into());
        }
        Ok(Self { delays })
    }

    /// Attempts in all.
    pub fn attempts(&self) -> usize {
        self.delays.len()
    }

    /// The delay before the next attempt once `made` attempts have failed, without jitter;
    /// `None` when the schedule is spent.
    pub fn delay_after(&self, made: usize) -> Option<Duration> {
        self.delays.get(made).copied()
    }

    /// [`RetrySchedule::delay_after`] with ±20 % jitter.
    pub fn next_delay(&self, made: usize) -> Option<Duration> {
        self.delay_after(made)
            .map(|d| jitter(d, rand::random::<f64>()))
    }
}

/// `d` scaled by a factor in [0.8, 1.2), chosen by `unit` in [0, 1).
pub fn jitter(d: Duration, unit: f64) -> Duration {
    d.mul_f64(0.8 + 0.4 * unit.clamp(0.0, 1.0))
}

/// The wait a `Retry-After` header asks for: seconds, or an HTTP date. Capped at a day; `None`
/// when unreadable.
pub fn retry_after(value: &str, now: OffsetDateTime) -> Option<Duration> {
    let v = value.trim();
    let wait = if let Ok(secs) = v.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let fmt = time::macros::format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        );
        let at = time::PrimitiveDateTime::parse(v, &fmt).ok()?.assume_utc();
        let secs = (at - now).as_seconds_f64().max(0.0);
        Duration::from_secs_f64(secs)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_schedule() {
        let s = RetrySchedule::parse("0s,5s,5m,30m,2h,5h,10h,10h").unwrap();
        assert_eq!(s.attempts(), 8);
        assert_eq!(s.delay_after(1), Some(Duration::from_secs(5)));
        assert_eq!(s.delay_after(7), Some(Duration::from_secs(36_000)));
        assert_eq!(s.delay_after(8), None, "given up after the eighth attempt");
        assert!(RetrySchedule::parse("").is_err());
        assert!(RetrySchedule::parse("5 parsecs").is_err());
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let d = Duration::from_secs(100);
        assert_eq!(jitter(d, 0.0), Duration::from_secs(80));
        assert_eq!(jitter(d, 0.5), Duration::from_secs(100));
        assert!(jitter(d, 0.999_999) < Duration::from_secs(120));
        let s = RetrySchedule::parse("0s,10s").unwrap();
        for _ in 0..1000 {
            let n = s.next_delay(1).unwrap();
            assert!(
                n >= Duration::from_secs(8) && n < Duration::from_secs(12),
                "{n:?}"
            );
        }
    }

    #[test]
    fn retry_after_seconds_or_date() {
        let now = time::macros::datetime!(2015-10-21 07:28:00 UTC);
        assert_eq!(retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:30:00 GMT", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("999999999", now), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after("soon", now), None);
    }
}
