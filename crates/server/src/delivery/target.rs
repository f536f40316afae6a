//! Where the hub may send requests. Subscription (and trigger) URLs come from users; without a
//! guard they would let anyone with an admin key make the hub call its own network (metadata
//! services, databases, admin ports). Loopback, private, link-local and other non-public
//! addresses are refused unless the operator allows them (`allow_private_targets`). The check is
//! made on the addresses a name resolves to, by the HTTP client's own resolver, so the address
//! checked is the address connected to (no window for DNS rebinding), and on every redirect.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use cistern_core::glob::Glob;

use crate::config::Config;

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
            } else if seg[0] & 0xffc0 == 0xfec0 {
                // Deprecated (RFC 3879) but still routed inside some networks.
                Some("site-local")
            } else if seg[0] & 0xfe00 == 0xfc00 {
                Some("private (unique local)")
            } else if seg[..6] == [0; 6] {
                // `::a.b.c.d` (RFC 4291 §2.5.5.1, deprecated): some stacks still connect to the
                // embedded IPv4 address, so `[::127.0.0.1]` would reach loopback.
                Some("IPv4-compatible (deprecated, ::/96)")
            } else if seg[0] == 0x0064 && seg[1] == 0xff9b {
                // NAT64 embeds an IPv4 address in its last 32 bits.
                forbidden_v4(v4_of(seg[6], seg[7]))
            } else if seg[0] == 0x2002 {
                // 6to4 embeds the IPv4 address of its relay in bits 16-47: `2002:7f00:1::` is
                // 127.0.0.1's.
                forbidden_v4(v4_of(seg[1], seg[2]))
            } else if seg[0] == 0x2001 && seg[1] == 0 {
                // Teredo hides (XORs) the client's IPv4 address: not checkable, and no
                // webhook receiver lives behind it.
                Some("Teredo tunnel")
            } else if seg[0] == 0x0100 && seg[1..4] == [0; 3] {
                Some("discard-only")
            } else if seg[0] == 0x2001 && seg[1] == 0x0db8 {
                Some("documentation")
            } else {
                None
            }
        }
    }
}

/// The IPv4 address held by two 16-bit groups of an IPv6 address.
fn v4_of(hi: u16, lo: u16) -> Ipv4Addr {
    let [a, b] = hi.to_be_bytes();
    let [c, d] = lo.to_be_bytes();
    Ipv4Addr::new(a, b, c, d)
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

/// Where outbound requests (deliveries, trigger targets) may go and how they leave the hub.
#[derive(Debug, Clone, Default)]
pub struct TargetPolicy {
    /// Allow loopback, private, link-local and other non-public addresses
    /// (`allow_private_targets`).
    pub allow_private: bool,
    /// The proxy requests go through (`outbound_proxy`); `None`: straight to the target, and
    /// the proxy environment variables (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`) are ignored.
    pub proxy: Option<OutboundProxy>,
}

/// An explicit outbound proxy and the hosts that may be reached through it.
#[derive(Debug, Clone)]
pub struct OutboundProxy {
    /// The proxy's URL.
    pub url: reqwest::Url,
    /// Hosts allowed through it (`outbound_proxy_allow`), lowercase globs.
    pub allow: Vec<Glob>,
}

impl TargetPolicy {
    /// The policy of a configuration; the error names the setting.
    pub fn from_config(c: &Config) -> Result<Self, String> {
        let proxy = match c.outbound_proxy.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => {
                let url = reqwest::Url::parse(text).map_err(|e| {
                    format!("outbound_proxy: {text:?} is not a URL ({e}); use http://host:port")
                })?;
                if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
                    return Err(format!(
                        "outbound_proxy: {text:?} must be an http:// or https:// URL with a host"
                    ));
                }
                let allow = c
                    .outbound_proxy_allow
                    .iter()
                    .map(|g| g.trim().to_ascii_lowercase())
                    .filter(|g| !g.is_empty())
                    .map(|g| {
                        Glob::parse(&g).map_err(|e| format!("outbound_proxy_allow: {g:?}: {e}"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if allow.is_empty() {
                    return Err("outbound_proxy is set but outbound_proxy_allow is empty: through a proxy the hub cannot check where a name leads, so list the hosts it may reach (e.g. outbound_proxy_allow = [\"hooks.example.com\", \"*.ci.example.com\"])".into());
                }
                Some(OutboundProxy { url, allow })
            }
        };
        Ok(Self {
            allow_private: c.allow_private_targets,
            proxy,
        })
    }

    /// Checks a target URL without resolving names: http or https, a host, no credentials,
    /// and, when the host is an address, a public one (names are checked as they resolve); through
    /// a proxy, a host of `outbound_proxy_allow`.
    pub fn check_url(&self, url: &str) -> Result<reqwest::Url, String> {
        if url.len() > MAX_URL_BYTES {
            return Err(format!(
                "is {} bytes long; a target URL is at most {MAX_URL_BYTES} bytes",
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
        self.check_host(&parsed)?;
        Ok(parsed)
    }

    fn check_host(&self, url: &reqwest::Url) -> Result<(), String> {
        let ip = match url.host() {
            None => return Err(format!("{url} names no host")),
            Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
            Some(url::Host::Domain(_)) => None,
        };
        if let Some(ip) = ip {
            if let (Some(why), false) = (forbidden(ip), self.allow_private) {
                return Err(refusal(&ip.to_string(), ip, why));
            }
        }
        if let Some(proxy) = &self.proxy {
            let host = url
                .host_str()
                .unwrap_or_default()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_ascii_lowercase();
            if !proxy.allow.iter().any(|g| g.matches(&host)) {
                return Err(format!(
                    "refusing to deliver to {host}: requests go through outbound_proxy, which resolves names itself, so only the hosts of outbound_proxy_allow are reached ({})",
                    proxy.allow.iter().map(Glob::as_str).collect::<Vec<_>>().join(", ")
                ));
            }
        }
        Ok(())
    }

    /// Resolves a target's name now and refuses it when it has no public address (a check at
    /// creation time, for a helpful error; deliveries are checked again as they connect). Through
    /// a proxy the proxy resolves names, and the allow list has decided.
    pub async fn check_resolves(&self, url: &reqwest::Url) -> Result<(), String> {
        if self.proxy.is_some() {
            return Ok(());
        }
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
        filter_addrs(host, addrs.collect(), self.allow_private).map(|_| ())
    }

    /// The HTTP client of outbound requests: rustls, a timeout per attempt, at most three
    /// redirects and none to a refused target. Straight to the target (proxy environment
    /// variables ignored: a proxy resolves names itself and would bypass the address check)
    /// through the guarded resolver; or through `outbound_proxy`, to allowed hosts only.
    pub fn client(&self, timeout: Duration) -> Result<reqwest::Client, String> {
        let me = self.clone();
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > MAX_REDIRECTS {
                return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
            }
            match me.check_url(attempt.url().as_str()) {
                Ok(_) => attempt.follow(),
                Err(e) => attempt.error(format!("redirect refused: {e}")),
            }
        });
        let builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(policy)
            .user_agent(concat!("Cistern-Webhooks/", env!("CARGO_PKG_VERSION")));
        let builder = match &self.proxy {
            None => builder.no_proxy().dns_resolver(Arc::new(GuardedResolver {
                allow_private: self.allow_private,
            })),
            Some(p) => builder.proxy(
                reqwest::Proxy::all(p.url.clone()).map_err(|e| format!("outbound_proxy: {e}"))?,
            ),
        };
        builder
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn open(allow_private: bool) -> TargetPolicy {
        TargetPolicy {
            allow_private,
            proxy: None,
        }
    }

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
            ("fec0::1", "site-local"),
            ("feff::1", "site-local"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::127.0.0.1", "IPv4-compatible (deprecated, ::/96)"),
            ("::8.8.8.8", "IPv4-compatible (deprecated, ::/96)"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("2002:7f00:1::", "loopback"),
            ("2002:a9fe:a9fe::1", "link-local"),
            ("2002:c0a8:101::", "private"),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo tunnel"),
            ("100::1", "discard-only"),
        ] {
            assert_eq!(forbidden(ip.parse().unwrap()), Some(why), "{ip}");
        }
        for ip in [
            "1.1.1.1",
            "93.184.216.34",
            "2606:4700:4700::1111",
            "2002:808:808::1",
        ] {
            assert_eq!(forbidden(ip.parse().unwrap()), None, "{ip}");
        }
    }

    #[test]
    fn urls() {
        let strict = open(false);
        assert!(strict.check_url("https://example.com/hook").is_ok());
        assert!(strict.check_url("ftp://example.com/").is_err());
        assert!(strict.check_url("https://user:pw@example.com/").is_err());
        let e = strict.check_url("http://127.0.0.1:9/x").unwrap_err();
        assert!(
            e.contains("loopback") && e.contains("allow_private_targets"),
            "{e}"
        );
        assert!(strict.check_url("http://[::1]/x").is_err());
        for url in [
            "http://[::127.0.0.1]/x",
            "http://[2002:7f00:1::]/x",
            "http://[fec0::1]/x",
            "http://2130706433/x",
            "http://0x7f.1/x",
        ] {
            assert!(strict.check_url(url).is_err(), "{url}");
        }
        assert!(open(true).check_url("http://127.0.0.1:9/x").is_ok());
        assert!(open(true).check_url("not a url").is_err());
    }

    #[test]
    fn through_a_proxy_only_listed_hosts() {
        let config = Config {
            outbound_proxy: Some("http://127.0.0.1:3128".into()),
            outbound_proxy_allow: vec!["hooks.example.com".into(), "*.CI.example.com".into()],
            ..Config::default()
        };
        let p = TargetPolicy::from_config(&config).unwrap();
        assert!(p.check_url("https://hooks.example.com/x").is_ok());
        assert!(p.check_url("https://jenkins.ci.example.com/x").is_ok());
        let e = p.check_url("https://internal.corp/x").unwrap_err();
        assert!(e.contains("outbound_proxy_allow"), "{e}");
        // Allowed or not, a literal address is still checked.
        assert!(p.check_url("http://127.0.0.1/x").is_err());
        let bare = Config {
            outbound_proxy: Some("http://127.0.0.1:3128".into()),
            ..Config::default()
        };
        let e = TargetPolicy::from_config(&bare).unwrap_err();
        assert!(e.contains("outbound_proxy_allow"), "{e}");
        let bad = Config {
            outbound_proxy: Some("socks5://127.0.0.1:1080".into()),
            outbound_proxy_allow: vec!["x".into()],
            ..Config::default()
        };
        assert!(TargetPolicy::from_config(&bad)
            .unwrap_err()
            .contains("outbound_proxy"));
    }

    #[tokio::test]
    async fn names_are_checked_on_what_they_resolve_to() {
        let url = reqwest::Url::parse("http://localhost:9/").unwrap();
        let e = open(false).check_resolves(&url).await.unwrap_err();
        assert!(e.contains("loopback"), "{e}");
        assert!(open(true).check_resolves(&url).await.is_ok());
    }
}
