//! Time fields: units checked, plausible range enforced, with hints when the unit looks wrong.

use time::format_description::well_known::{Iso8601, Rfc3339};
use time::{Duration, OffsetDateTime, PrimitiveDateTime, UtcOffset};

/// 1990-01-01T00:00:00Z in milliseconds: nothing CI-related happened before.
pub const EARLIEST_MS: i64 = 631_152_000_000;

/// Checks an epoch-milliseconds instant: sign, unit and range. Returns the error message.
pub fn check_epoch_ms(ms: i64, now: OffsetDateTime) -> Result<OffsetDateTime, String> {
    if ms < 0 {
        return Err(format!(
            "must not be negative (epoch milliseconds), got {ms}"
        ));
    }
    if ms < 100_000_000_000 {
        return Err(format!(
            "{ms} looks like seconds since the epoch; this endpoint takes epoch milliseconds (multiply by 1000)"
        ));
    }
    if ms > 100_000_000_000_000 {
        return Err(format!(
            "{ms} looks like microseconds or nanoseconds; this endpoint takes epoch milliseconds"
        ));
    }
    check_range(cistern_core::from_millis(ms), now)
}

/// Checks an epoch-seconds instant: sign, unit and range.
pub fn check_epoch_seconds(s: i64, now: OffsetDateTime) -> Result<OffsetDateTime, String> {
    if s < 0 {
        return Err(format!(
            "must not be negative (seconds since the epoch), got {s}"
        ));
    }
    if s > 100_000_000_000 {
        return Err(format!(
            "{s} looks like milliseconds; this endpoint takes seconds since the epoch (divide by 1000)"
        ));
    }
    check_range(cistern_core::from_millis(s * 1000), now)
}

/// Refuses instants before 1990 or more than a day in the future.
pub fn check_range(t: OffsetDateTime, now: OffsetDateTime) -> Result<OffsetDateTime, String> {
    if cistern_core::to_millis(t) < EARLIEST_MS {
        return Err(format!(
            "{} is before 1990; check the unit and the clock of the sender",
            fmt(t)
        ));
    }
    if t > now + Duration::days(1) {
        return Err(format!(
            "{} is more than a day in the future; check the unit and the clock of the sender",
            fmt(t)
        ));
    }
    Ok(t)
}

/// RFC 3339 text of a time (for messages).
pub fn fmt(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// Parses the date-time texts CI systems send: RFC 3339, ISO 8601 with `+0000` offsets (Blue
/// Ocean), and GitLab's `2016-08-12 15:23:28 UTC`.
pub fn parse_datetime(s: &str) -> Option<OffsetDateTime> {
    let s = s.trim();
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Some(t);
    }
    if let Ok(t) = OffsetDateTime::parse(s, &Iso8601::DEFAULT) {
        return Some(t);
    }
    // `2019-03-12T10:33:29.392+0000`: an offset without a colon.
    if s.len() > 5 && s.is_char_boundary(s.len() - 5) {
        let (head, off) = s.split_at(s.len() - 5);
        if (off.starts_with('+') || off.starts_with('-'))
            && off[1..].bytes().all(|b| b.is_ascii_digit())
        {
            let fixed = format!("{head}{}:{}", &off[..3], &off[3..]);
            if let Ok(t) = OffsetDateTime::parse(&fixed, &Rfc3339) {
                return Some(t);
            }
        }
    }
    // `2016-08-12 15:23:28 UTC` (GitLab) or `2016-08-12 15:23:28`.
    let bare = s.trim_end_matches(" UTC").trim_end_matches('Z');
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    if let Ok(p) = PrimitiveDateTime::parse(bare, &fmt) {
        return Some(p.assume_offset(UtcOffset::UTC));
    }
    let fmt_t = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    PrimitiveDateTime::parse(bare, &fmt_t)
        .ok()
        .map(|p| p.assume_offset(UtcOffset::UTC))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_checked() {
        let now = OffsetDateTime::now_utc();
        assert!(check_epoch_ms(1_679_467_494_000, now).is_ok());
        assert!(check_epoch_ms(1_679_467_494, now)
            .unwrap_err()
            .contains("seconds"));
        assert!(check_epoch_ms(-5, now).unwrap_err().contains("negative"));
        assert!(check_epoch_ms(1_679_467_494_000_000, now)
            .unwrap_err()
            .contains("microseconds"));
        assert!(check_epoch_ms(400_000_000_000, now)
            .unwrap_err()
            .contains("1990"));
        assert!(check_epoch_ms(4_102_444_800_000, now)
            .unwrap_err()
            .contains("future"));
        assert!(check_epoch_seconds(1_704_018_030, now).is_ok());
        assert!(check_epoch_seconds(1_704_018_030_000, now)
            .unwrap_err()
            .contains("milliseconds"));
    }

    #[test]
    fn datetime_shapes() {
        for s in [
            "2021-07-26T18:10:37+00:00",
            "2019-03-12T10:33:29.392+0000",
            "2016-08-12 15:23:28 UTC",
            "2016-08-12T15:23:28Z",
        ] {
            assert!(parse_datetime(s).is_some(), "{s}");
        }
        assert!(parse_datetime("yesterday").is_none());
        // Multi-byte text must not be cut inside a character.
        assert!(parse_datetime("2021-07-26T18:1é0000").is_none());
        assert!(parse_datetime("éééééééé").is_none());
    }
}
