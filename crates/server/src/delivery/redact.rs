//! Target URLs may carry credentials (`…/build?token=…`, Jenkins' build tokens, signed URLs),
//! and the texts of failed requests quote them (reqwest's "error sending request for url (…)",
//! our own refusals). Errors are kept and shown to people who may not see the target — the
//! keyless caller of a token URL, read-only dashboard sessions — so every URL in an error is
//! reduced to its origin before it is stored, and again before it is shown (rows written by older
//! versions).

/// A URL reduced to its origin (scheme, host, port): `https://ci.example.com/…` when it had a
/// path, query or fragment; no user name or password.
pub fn origin_only(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => {
            let origin = u.origin().ascii_serialization();
            let more = u.path() != "/" || u.query().is_some() || u.fragment().is_some();
            if more {
                format!("{origin}/…")
            } else {
                origin
            }
        }
        Err(_) => "(not a URL)".into(),
    }
}

/// A text with every http(s) URL in it reduced to its origin.
///
/// Hand-written rather than a regex: the rule is small (a URL runs from its scheme to the next
/// whitespace or quote; closing punctuation that wraps it is kept out), and what cannot be parsed
/// is dropped whole, never shown.
pub fn strip_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = find_scheme(rest) {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let len = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`'))
            .unwrap_or(tail.len());
        let mut url = &tail[..len];
        // "(url)", "url.", "url:" — the punctuation belongs to the sentence.
        while let Some(c) = url.chars().last() {
            if matches!(c, ')' | ']' | ',' | '.' | ';' | ':') && url.len() > 8 {
                url = &url[..url.len() - 1];
            } else {
                break;
            }
        }
        out.push_str(&origin_only(url));
        rest = &tail[url.len()..];
    }
    out.push_str(rest);
    out
}

/// Where the next `http://` or `https://` starts (any case).
fn find_scheme(text: &str) -> Option<usize> {
    let lower = text.to_ascii_lowercase();
    match (lower.find("http://"), lower.find("https://")) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_in_errors_keep_their_origin_only() {
        for (text, want) in [
            (
                "error sending request for url (http://127.0.0.1:9/build?token=SECRET): connection refused",
                "error sending request for url (http://127.0.0.1:9/…): connection refused",
            ),
            (
                r#""https://u:SECRET@ci.example.com:8443/x": only http and https"#,
                r#""https://ci.example.com:8443/…": only http and https"#,
            ),
            (
                "redirect refused: HTTPS://Ci.Example.com/a?SECRET=1, then http://h/",
                "redirect refused: https://ci.example.com/…, then http://h",
            ),
            ("http://[::1]:8080/?SECRET", "http://[::1]:8080/…"),
            ("no url here: token=x", "no url here: token=x"),
            ("", ""),
        ] {
            assert_eq!(strip_urls(text), want, "{text}");
        }
        // A URL that is not one is dropped whole.
        assert!(!strip_urls("see http://%zz/SECRET now").contains("SECRET"));
    }
}
