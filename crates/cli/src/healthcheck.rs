//! `cistern healthcheck`: a container's health probe without a shell or curl in the image.
//! It GETs the hub's `/healthz` (or another URL) and exits 0 on a 2xx, 1 otherwise.

use std::time::Duration;

use anyhow::{bail, Context, Result};

/// The URL probed when none is given: `/healthz` on the listen address, with an unspecified
/// address (`0.0.0.0`, `[::]`) replaced by loopback — the probe runs beside the hub.
pub fn default_url(listen: &str) -> String {
    let addr = match listen.parse::<std::net::SocketAddr>() {
        Ok(a) if a.ip().is_unspecified() => {
            let ip: std::net::IpAddr = if a.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            };
            std::net::SocketAddr::new(ip, a.port()).to_string()
        }
        Ok(a) => a.to_string(),
        Err(_) => listen.to_owned(),
    };
    format!("http://{addr}/healthz")
}

/// Probes `url` once within `timeout`.
pub async fn probe(url: &str, timeout: Duration) -> Result<()> {
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .no_proxy()
        .build()
        .context("building the HTTP client")?;
    let resp = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    if !resp.status().is_success() {
        bail!("GET {url} answered {}", resp.status());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_addresses_become_loopback() {
        assert_eq!(default_url("0.0.0.0:8080"), "http://127.0.0.1:8080/healthz");
        assert_eq!(default_url("[::]:9000"), "http://[::1]:9000/healthz");
        assert_eq!(
            default_url("127.0.0.1:8081"),
            "http://127.0.0.1:8081/healthz"
        );
        assert_eq!(
            default_url("localhost:8080"),
            "http://localhost:8080/healthz"
        );
    }
}
