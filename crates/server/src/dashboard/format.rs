//! How the dashboard writes numbers, times, durations, results and logs for people.

use cistern_core::RunResult;
use time::OffsetDateTime;

/// `850 ms`, `42 s`, `3 min 05 s`, `1 h 12 min`, `2 d 4 h`.
pub fn duration_ms(ms: i64) -> String {
    if ms < 0 {
        return "–".into();
    }
    if ms < 1_000 {
        return format!("{ms} ms");
    }
    let s = ms / 1_000;
    if s < 60 {
        return format!("{s} s");
    }
    let (m, s) = (s / 60, s % 60);
    if m < 60 {
        return format!("{m} min {s:02} s");
    }
    let (h, m) = (m / 60, m % 60);
    if h < 24 {
        return format!("{h} h {m:02} min");
    }
    let (d, h) = (h / 24, h % 24);
    format!("{d} d {h} h")
}

/// A duration given in seconds (as metrics give them).
pub fn duration_s(seconds: f64) -> String {
    duration_ms((seconds * 1_000.0).round() as i64)
}

/// Optional milliseconds, `–` when absent.
pub fn opt_duration_ms(ms: Option<f64>) -> String {
    ms.map(|m| duration_ms(m.round() as i64))
        .unwrap_or_else(|| "–".into())
}

/// A ratio as a percentage with one decimal (`87.5 %`), `–` when absent.
pub fn percent(ratio: Option<f64>) -> String {
    match ratio {
        Some(r) => format!("{:.1} %", r * 100.0),
        None => "–".into(),
    }
}

/// `2024-03-28 05:25 UTC`.
pub fn datetime(t: OffsetDateTime) -> String {
    let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    t.to_offset(time::UtcOffset::UTC)
        .format(&f)
        .unwrap_or_default()
}

/// `2024-03-28 05:25:45 UTC`, for run headers.
pub fn datetime_s(t: OffsetDateTime) -> String {
    let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    t.to_offset(time::UtcOffset::UTC)
        .format(&f)
        .unwrap_or_default()
}

/// `Mar 28`, for chart axes.
pub fn short_date(t: OffsetDateTime) -> String {
    let f = time::macros::format_description!("[month repr:short] [day padding:none]");
    t.format(&f).unwrap_or_default()
}

/// `just now`, `5 min ago`, `3 h ago`, `2 d ago`, `in the future`.
pub fn ago(t: OffsetDateTime, now: OffsetDateTime) -> String {
    let s = (now - t).whole_seconds();
    if s < -60 {
        "in the future".into()
    } else if s < 60 {
        "just now".into()
    } else if s < 3_600 {
        format!("{} min ago", s / 60)
    } else if s < 86_400 {
        format!("{} h ago", s / 3_600)
    } else {
        format!("{} d ago", s / 86_400)
    }
}

/// `due now`, `in 40 s`, `in 5 min`, `in 3 h`, `in 2 d` (a time to come; a past one is due).
pub fn until(t: OffsetDateTime, now: OffsetDateTime) -> String {
    let s = (t - now).whole_seconds();
    if s <= 0 {
        "due now".into()
    } else if s < 60 {
        format!("in {s} s")
    } else if s < 3_600 {
        format!("in {} min", s / 60)
    } else if s < 86_400 {
        format!("in {} h", s / 3_600)
    } else {
        format!("in {} d", s / 86_400)
    }
}

/// A seconds count as `45 s`, `3 min`, `2 h`, `1 d` (whole units, for intervals).
pub fn seconds(s: i64) -> String {
    if s < 60 || s % 60 != 0 {
        format!("{s} s")
    } else if s < 3_600 || s % 3_600 != 0 {
        format!("{} min", s / 60)
    } else if s < 86_400 || s % 86_400 != 0 {
        format!("{} h", s / 3_600)
    } else {
        format!("{} d", s / 86_400)
    }
}

/// The CSS class of a result (`r-success`); the text is always shown beside the colour.
pub fn result_class(r: RunResult) -> &'static str {
    match r {
        RunResult::Success => "r-success",
        RunResult::Failure => "r-failure",
        RunResult::Error => "r-error",
        RunResult::Unstable => "r-unstable",
        RunResult::Aborted | RunResult::Skipped => "r-neutral",
        RunResult::Running | RunResult::Queued | RunResult::OnHold => "r-running",
    }
}

/// The word shown for a result.
pub fn result_label(r: RunResult) -> &'static str {
    match r {
        RunResult::Success => "Success",
        RunResult::Failure => "Failure",
        RunResult::Error => "Error",
        RunResult::Unstable => "Unstable",
        RunResult::Aborted => "Aborted",
        RunResult::Skipped => "Skipped",
        RunResult::Running => "Running",
        RunResult::Queued => "Queued",
        RunResult::OnHold => "On hold",
    }
}

/// True for a log line worth highlighting: it mentions an error, a failure or an exception.
pub fn is_error_line(line: &str) -> bool {
    let l = line.to_ascii_lowercase();
    l.contains("error") || l.contains("fail") || l.contains("exception") || l.contains("panicked")
}

/// The URL when it is an `http(s)` link (payload URLs are untrusted: no `javascript:` links).
pub fn safe_url(url: &str) -> Option<&str> {
    let u = url.trim();
    let lower = u.get(..8).unwrap_or(u).to_ascii_lowercase();
    (lower.starts_with("https://") || lower.starts_with("http://")).then_some(u)
}

/// A link to a commit on its forge, when the repository URL is a known forge's.
pub fn commit_url(repo_url: Option<&str>, sha: &str) -> Option<String> {
    let repo = safe_url(repo_url?)?
        .trim_end_matches('/')
        .trim_end_matches(".git");
    if !sha.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    if repo.contains("gitlab") {
        Some(format!("{repo}/-/commit/{sha}"))
    } else if repo.contains("github.com") || repo.contains("gitea") || repo.contains("bitbucket") {
        Some(format!("{repo}/commit/{sha}"))
    } else {
        None
    }
}

/// The first 10 characters of a commit id.
pub fn short_sha(sha: &str) -> &str {
    let mut end = sha.len().min(10);
    while !sha.is_char_boundary(end) {
        end -= 1;
    }
    &sha[..end]
}

/// The first `max` characters of a text, with `…` when it goes on.
pub fn cut(text: &str, max: usize) -> String {
    let mut out: String = text.chars().take(max).collect();
    if text.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

/// A JSON value as short text (strings without quotes).
pub fn json_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "–".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration_ms(850), "850 ms");
        assert_eq!(duration_ms(42_400), "42 s");
        assert_eq!(duration_ms(185_000), "3 min 05 s");
        assert_eq!(duration_ms(4_320_000), "1 h 12 min");
        assert_eq!(duration_ms(187_200_000), "2 d 4 h");
        assert_eq!(duration_ms(-5), "–");
        assert_eq!(duration_s(90.0), "1 min 30 s");
        assert_eq!(opt_duration_ms(None), "–");
    }

    #[test]
    fn percentages_and_times() {
        assert_eq!(percent(Some(0.875)), "87.5 %");
        assert_eq!(percent(None), "–");
        let t = datetime!(2024-03-28 05:25:45 UTC);
        assert_eq!(datetime(t), "2024-03-28 05:25 UTC");
        assert_eq!(datetime_s(t), "2024-03-28 05:25:45 UTC");
        assert_eq!(short_date(t), "Mar 28");
        assert_eq!(ago(t, t + time::Duration::seconds(30)), "just now");
        assert_eq!(ago(t, t + time::Duration::minutes(5)), "5 min ago");
        assert_eq!(ago(t, t + time::Duration::hours(3)), "3 h ago");
        assert_eq!(ago(t, t + time::Duration::days(2)), "2 d ago");
        assert_eq!(ago(t + time::Duration::hours(1), t), "in the future");
        assert_eq!(until(t, t + time::Duration::seconds(3)), "due now");
        assert_eq!(until(t + time::Duration::seconds(40), t), "in 40 s");
        assert_eq!(until(t + time::Duration::minutes(5), t), "in 5 min");
        assert_eq!(until(t + time::Duration::hours(3), t), "in 3 h");
        assert_eq!(until(t + time::Duration::days(2), t), "in 2 d");
        assert_eq!(seconds(45), "45 s");
        assert_eq!(seconds(90), "90 s");
        assert_eq!(seconds(180), "3 min");
        assert_eq!(seconds(7_200), "2 h");
        assert_eq!(seconds(86_400), "1 d");
    }

    #[test]
    fn error_lines_are_found() {
        assert!(is_error_line("error[E0308]: mismatched types"));
        assert!(is_error_line("test result: FAILED. 1 failed"));
        assert!(is_error_line("java.lang.IllegalStateException: boom"));
        assert!(is_error_line("thread 'x' panicked at src/a.rs:1:1"));
        assert!(!is_error_line("test orders::checkout ... ok"));
    }

    #[test]
    fn only_http_links_are_made() {
        assert_eq!(
            safe_url(" https://ci.example.com/1 "),
            Some("https://ci.example.com/1")
        );
        assert_eq!(safe_url("HTTP://x"), Some("HTTP://x"));
        assert_eq!(safe_url("javascript:alert(1)"), None);
        assert_eq!(safe_url("data:text/html,x"), None);
        assert_eq!(
            commit_url(Some("https://github.com/example/shop.git"), "abc123").as_deref(),
            Some("https://github.com/example/shop/commit/abc123")
        );
        assert_eq!(
            commit_url(Some("https://gitlab.example.com/pay/ledger/"), "abc123").as_deref(),
            Some("https://gitlab.example.com/pay/ledger/-/commit/abc123")
        );
        assert_eq!(
            commit_url(Some("https://github.com/e/s"), "x\"><script>"),
            None
        );
        assert_eq!(
            commit_url(Some("https://svn.example.com/repo"), "abc"),
            None
        );
        assert_eq!(commit_url(None, "abc"), None);
        assert_eq!(short_sha("0123456789abcdef"), "0123456789");
        assert_eq!(short_sha("abc"), "abc");
    }

    #[test]
    fn every_result_has_a_word_and_a_class() {
        for r in cistern_core::result::ALL_RESULTS {
            assert!(!result_label(r).is_empty());
            assert!(result_class(r).starts_with("r-"));
        }
    }
}
