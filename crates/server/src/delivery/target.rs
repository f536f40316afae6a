//! Where the hub may send requests. Subscription (and trigger) URLs come from users; without a
//! guard they would let anyone with an admin key make the hub call its own network (metadata
//! services, databases, admin ports). Loopback, private, link-local and other non-public
//! addresses are refused unless the operator allows them (`allow_private_targets`). The check is
//! made on the addresses a name resolves to, by the HTTP client's own resolver, so the address
//! checked is the address connected to (no window for DNS rebinding), and on every redirect.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

/// Most redirects followed.
const MAX_REDIRECTS: usize = 3;

/// Why an address is not a public one, or `None` when it is.
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden_v4(v4);
            }
            let seg = v6.segments();
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if seg[0] & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if seg[0] & 0xfe00 == 0xfc00 {
                Some("private (unique local)")
            } else if seg[0] == 0x0064 && seg[1] == 0xff9b {
                // NAT64 embeds an IPv4 address in its last 32 bits.
                let v4 = Ipv4Addr::new(
                    (seg[6] >> 8) as u8,
                    seg[6] as u8,
                    (seg[7] >> 8) as u8,
                    seg[7] as u8,
                );
                forbidden_v4(v4)
            } else if seg[0] == 0x2001 && seg[1] == 0x0db8 {
                Some("documentation")
            } else {
                None
            }
        }
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if ip.is_unspecified() || o[0] == 0 {
        Some("unspecified")
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        Some("shared (carrier-grade NAT)")
    } else if ip.is_broadcast() || ip.is_multicast() || o[0] >= 240 {
        Some("broadcast, multicast or reserved")
    } else if ip.is_documentation() || (o[0] == 198 && (o[1] & 0xfe) == 18) {
        Some("documentation or benchmarking")
    } else if o[0] == 192 && o[1] == 0 && o[2] == 0 {
        Some("IETF protocol assignments")
    } else {
        None
    }
}

/// The message for a refused address.
fn refusal(host: &str, ip: IpAddr, why: &str) -> String {
    format!(
        "refusing to deliver to {host}: {ip} is a {why} address; set allow_private_targets = true (CISTERN_ALLOW_PRIVATE_TARGETS=true) to allow it"
    )
}

/// Longest accepted subscription URL (receivers and proxies seldom take more).
pub const MAX_URL_BYTES: usize = 4096;

/// Checks a target URL without resolving names: http or https, a host, and, when the host is an
/// address, a public one (names are checked as they resolve).
pub fn check_url(url: &str, allow_private: bool) -> Result<reqwest::Url, String> {
    if url.len() > MAX_URL_BYTES {
        return Err(format!(
            "is {} bytes long; a subscription URL is at most {MAX_URL_BYTES} bytes",
            url.len()
        ));
    }
    let parsed = reqwest::Url::parse(url.trim())
        .map_err(|e| format!("{url:?} is not a URL ({e}); use http(s)://host[:port]/path"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "{url:?}: only http and https URLs are accepted, not {}",
            parsed.scheme()
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!(
            "{url:?}: credentials in the URL would be stored in the clear; the subscription's secret signs each request instead"
        ));
    }
    check_host(&parsed, allow_private)?;
    Ok(parsed)
}

fn check_host(url: &reqwest::Url, allow_private: bool) -> Result<(), String> {
    let ip = match url.host() {
        None => return Err(format!("{url} names no host")),
        Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
        Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
        Some(url::Host::Domain(_)) => return Ok(()),
    };
    match forbidden(ip) {
        Some(why) if !allow_private => Err(refusal(&ip.to_string(), ip, why)),
        _ => Ok(()),
    }
}

/// Resolves a target's name now and refuses it when it has no public address (a check at
/// creation time, for a helpful error; deliveries are checked again as they connect).
pub async fn check_resolves(url: &reqwest::Url, allow_private: bool) -> Result<(), String> {
    let Some(url::Host::Domain(host)) = url.host() else {
        return Ok(());
    };
    let port = url.port_or_known_default().unwrap_or(80);
    let name = host.to_owned();
    let resolved = tokio::task::spawn_blocking(move || (name.as_str(), port).to_socket_addrs())
        .await
        .map_err(|e| e.to_string())?;
    // A name that does not resolve today may tomorrow; only a name that resolves to refused
    // addresses is refused here.
    let Ok(addrs) = resolved else { return Ok(()) };
    filter_addrs(host, addrs.collect(), allow_private).map(|_| ())
}

fn filter_addrs(
    host: &str,
    addrs: Vec<SocketAddr>,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, String> {
    if allow_private {
        return Ok(addrs);
    }
    let mut first_refusal = None;
    let public: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|a| match forbidden(a.ip()) {
            Some(why) => {
                first_refusal.get_or_insert_with(|| refusal(host, a.ip(), why));
                false
            }
            None => true,
        })
        .collect();
    match (public.is_empty(), first_refusal) {
        (true, Some(why)) => Err(why),
        (true, None) => Err(format!("{host} resolves to no address")),
        (false, _) => Ok(public),
    }
}

/// The HTTP client's resolver: resolves with the system resolver, then keeps only the addresses
/// allowed.
struct GuardedResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let lookup = host.clone();
            let addrs: Vec<SocketAddr> =
                tokio::task::spawn_blocking(move || (lookup.as_str(), 0).to_socket_addrs())
                    .await
                    .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) })?
                    .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) })?
                    .collect();
            let kept = filter_addrs(&host, addrs, allow)
                .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { e.into() })?;
            let addrs: reqwest::dns::Addrs = Box::new(kept.into_iter());
            Ok(addrs)
        })
    }
}

/// The HTTP client of outbound deliveries: rustls, a timeout per attempt, the guarded resolver,
/// at most three redirects and none to a refused address.
pub fn client(timeout: Duration, allow_private: bool) -> Result<reqwest::Client, String> {
    let policy = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
        }
        match check_url(attempt.url().as_str(), allow_private) {
            Ok(_) => attempt.follow(),
            Err(e) => attempt.error(format!("redirect refused: {e}")),
        }
    });
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(policy)
        .dns_resolver(Arc::new(GuardedResolver { allow_private }))
        .user_agent(concat!("Cistern-Webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_public_addresses() {
        for (ip, why) in [
            ("127.0.0.1", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("100.64.0.1", "shared (carrier-grade NAT)"),
            ("::1", "loopback"),
            ("fe80::1", "link-local"),
            ("fd00::1", "private (unique local)"),
            ("::ffff:127.0.0.1", "loopback"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
        ] {
            assert_eq!(forbidden(ip.parse().unwrap()), Some(why), "{ip}");
        }
        for ip in ["1.1.1.1", "93.184.216.34", "2606:4700:4700::1111"] {
            assert_eq!(forbidden(ip.parse().unwrap()), None, "{ip}");
        }
    }

    #[test]
    fn urls() {
        assert!(check_url("https://example.com/hook", false).is_ok());
        assert!(check_url("ftp://example.com/", false).is_err());
        assert!(check_url("https://user:pw@example.com/", false).is_err());
        let e = check_url("http://127.0.0.1:9/x", false).unwrap_err();
        assert!(
            e.contains("loopback") && e.contains("allow_private_targets"),
            "{e}"
        );
        assert!(check_url("http://[::1]/x", false).is_err());
        assert!(check_url("http://127.0.0.1:9/x", true).is_ok());
        assert!(check_url("not a url", true).is_err());
    }

    #[tokio::test]
    async fn names_are_checked_on_what_they_resolve_to() {
        let url = reqwest::Url::parse("http://localhost:9/").unwrap();
        let e = check_resolves(&url, false).await.unwrap_err();
        assert!(e.contains("loopback"), "{e}");
        assert!(check_resolves(&url, true).await.is_ok());
    }
}
