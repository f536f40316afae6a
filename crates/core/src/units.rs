//! Durations and sizes as people write them (`30s`, `5m`, `5MB`): the one parser of each, used by
//! the hub's settings (file and environment), the satellite's settings and every command-line
//! flag, so `30s` and `5MB` mean the same wherever they are written.

use std::time::Duration;

/// A duration: a number with a unit (`500ms`, `15s`, `5m`, `2h`, `5d`, also `1h 30m` and the
/// other units of the `humantime` crate), or a bare number of seconds (`30`, `0.5`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    // A bare number is seconds (humantime wants a unit); fractions are allowed.
    if let Ok(secs) = s.parse::<f64>() {
        return if secs.is_finite() && secs >= 0.0 {
            Ok(Duration::from_secs_f64(secs))
        } else {
            Err(format!(
                "{text:?} is not a duration: it must be a number of seconds of 0 or more"
            ))
        };
    }
    humantime::parse_duration(s).map_err(|e| {
        format!("{text:?} is not a duration ({e}); write e.g. 500ms, 15s, 5m, 2h or 5d")
    })
}

/// A size in bytes: a bare number of bytes (`1048576`), or a number with a unit: `KB`, `MB`,
/// `GB` are powers of 1000 and `KiB`, `MiB`, `GiB` powers of 1024 (the `bytesize` crate's
/// reading; `K`, `M` and `G` alone are the decimal ones). Case and a space before the unit do
/// not matter.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("an empty size; write e.g. 1048576, 512KiB, 5MB or 1GiB".into());
    }
    s.parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| {
            format!("{text:?} is not a size ({e}); write e.g. 1048576, 512KiB, 5MB or 1GiB")
        })
}

/// [`parse_size`] for a setting held in a `usize`.
pub fn parse_size_usize(text: &str) -> Result<usize, String> {
    let n = parse_size(text)?;
    usize::try_from(n).map_err(|_| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration(" 15s "), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("5d"), Ok(Duration::from_secs(5 * 86_400)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        for bad in ["", "5x", "-1", "NaN", "inf", "s", "1.5.2s"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("is not a duration"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("5MB"), Ok(5_000_000));
        assert_eq!(parse_size("5 mb"), Ok(5_000_000));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        for bad in ["", "lots", "5XB", "-1", "MB"] {
            let e = parse_size(bad).unwrap_err();
            assert!(e.contains("size"), "{bad:?}: {e}");
        }
    }
}
