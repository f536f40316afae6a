//! `satellite.yml`: where the hub is and which on-premise tools to poll.
//!
//! ```yaml
//! satellite:                 # `levelops:` is accepted too (files of the satellite this replaces)
//!   url: https://cistern.example.com
//!   api_key: cst_…           # a key with the ingest scope
//!   tenant: acme
//!   scheduling_interval: 60  # seconds between polls and heartbeats
//!   proxy: {host: proxy.local, port: 3128, username: u, password: p, all_traffic: false}
//!   relay_key: …             # optional: senders must present it to the relay
//! integrations:
//!   - id: '1'
//!     application: jenkins
//!     url: https://jenkins.local
//!     username: bot
//!     api_key: …
//!     metadata: {}
//! ```
//!
//! Every error names the key and the line it is on; unknown keys are warnings (a typo shows).
//!
//! Values may be encrypted one by one, Jasypt's way: `api_key: ENC(<base64>)`, with the same
//! algorithm and password (`ENCRYPTION_PASSWORD`) as a whole encrypted file
//! (`cistern satellite encrypt --value` makes one). Every `ENC(…)` value is decrypted on load;
//! one that cannot be stops the satellite, naming its key.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use marked_yaml::{LoadError, Node};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::crypto;

/// Default seconds between polls and heartbeats.
pub const DEFAULT_INTERVAL_SECONDS: u64 = 60;
/// Longest interval accepted (a day).
pub const MAX_INTERVAL_SECONDS: u64 = 86_400;

/// One problem in the configuration, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// The key's path (`satellite.url`, `integrations[0].application`).
    pub key: String,
    /// What is wrong and what is accepted.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.key.is_empty()) {
            (Some(l), false) => write!(f, "line {l}: {}: {}", self.key, self.message),
            (Some(l), true) => write!(f, "line {l}: {}", self.message),
            (None, false) => write!(f, "{}: {}", self.key, self.message),
            (None, true) => write!(f, "{}", self.message),
        }
    }
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is encrypted and no password was given.
    #[error("{path} is encrypted; set ENCRYPTION_PASSWORD to its password")]
    NeedPassword {
        /// The file.
        path: String,
    },
    /// Decryption failed.
    #[error("cannot decrypt {path}: {source}")]
    Decrypt {
        /// The file.
        path: String,
        /// The cause.
        source: crypto::CryptoError,
    },
    /// The YAML is malformed or breaks the rules.
    #[error("{path} is not a valid satellite configuration:\n  {}", .problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n  "))]
    Invalid {
        /// The file.
        path: String,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

/// An HTTP proxy for outbound traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// User, when the proxy asks for one.
    pub username: Option<String>,
    /// Password.
    pub password: Option<String>,
    /// True: the pollers' traffic to on-premise tools goes through it too; false: only the
    /// traffic to the hub.
    pub all_traffic: bool,
}

impl Proxy {
    /// `http://host:port`.
    pub fn url(&self) -> String {
        if self.host.contains("://") {
            format!("{}:{}", self.host.trim_end_matches('/'), self.port)
        } else {
            format!("http://{}:{}", self.host, self.port)
        }
    }
}

/// The `satellite:` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubSettings {
    /// The hub's base URL.
    pub url: String,
    /// The API key (ingest scope) the satellite posts with.
    pub api_key: String,
    /// The tenant (slug), when given: the satellite's default id.
    pub tenant: Option<String>,
    /// The satellite's id at the hub.
    pub id: String,
    /// Between polls and heartbeats.
    pub scheduling_interval: Duration,
    /// Outbound proxy.
    pub proxy: Option<Proxy>,
    /// When set, senders must present this key to the relay (`Authorization: ApiKey|Bearer …`
    /// or `X-Api-Key`); unset, the relay takes any request (it listens on loopback by default).
    pub relay_key: Option<String>,
}

/// What an integration is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Application {
    /// Polled through the Jenkins JSON API.
    Jenkins,
    /// Polled through the GitLab REST API v4.
    Gitlab,
    /// Anything else: not polled (its tools push to the relay).
    Other(String),
}

/// One `integrations:` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Integration {
    /// Id (the integration id at the hub; also names the poller's state file).
    pub id: String,
    /// Kind.
    pub application: Application,
    /// Base URL of the tool.
    pub url: Option<String>,
    /// User.
    pub username: Option<String>,
    /// API key or token.
    pub api_key: Option<String>,
    /// Tool-specific settings, as given.
    pub metadata: Value,
}

/// A loaded configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct SatelliteConfig {
    /// The hub.
    pub hub: HubSettings,
    /// Tools.
    pub integrations: Vec<Integration>,
    /// SHA-256 (hex) of the configuration text: tells at the hub which configuration runs.
    pub hash: String,
    /// Unknown keys and other things worth a look.
    pub warnings: Vec<Problem>,
}

/// The environment variables the satellite's configuration reads besides its command-line
/// flags (which `cistern satellite run --help` lists): deployment files may set only these.
pub const ENV_VARS: &[&str] = &[
    "ENCRYPTION_PASSWORD",
    "CISTERN_URL",
    "CISTERN_API_KEY",
    "CISTERN_SATELLITE_RELAY_KEY",
    "CISTERN_SATELLITE_RELAY_KEY_FILE",
];

/// Reads `path`, decrypting it when it is encrypted (`password` from `ENCRYPTION_PASSWORD`).
/// `env` gives `CISTERN_URL` and `CISTERN_API_KEY`, used when the file leaves them out (so the
/// key can come from a Kubernetes secret rather than a ConfigMap).
pub fn load(
    path: &Path,
    password: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<SatelliteConfig, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: shown.clone(),
        source,
    })?;
    let mut warnings = Vec::new();
    let whole_file = crypto::looks_encrypted(&text);
    let text = if whole_file {
        let password =
            password
                .filter(|p| !p.is_empty())
                .ok_or_else(|| ConfigError::NeedPassword {
                    path: shown.clone(),
                })?;
        crypto::decrypt_text(&text, password).map_err(|source| ConfigError::Decrypt {
            path: shown.clone(),
            source,
        })?
    } else {
        if password.is_some_and(|p| !p.is_empty()) && !text.contains("ENC(") {
            warnings.push(Problem {
                line: None,
                key: String::new(),
                message: format!(
                    "ENCRYPTION_PASSWORD is set but {shown} is not encrypted; read as plain YAML (encrypt it with `cistern satellite encrypt`)"
                ),
            });
        }
        text
    };
    let mut cfg = parse_with(&text, env, password).map_err(|problems| ConfigError::Invalid {
        path: shown,
        problems,
    })?;
    warnings.append(&mut cfg.warnings);
    cfg.warnings = warnings;
    Ok(cfg)
}

/// Parses configuration text; every problem at once. `ENC(…)` values need [`parse_with`].
pub fn parse(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<SatelliteConfig, Vec<Problem>> {
    parse_with(text, env, None)
}

/// Parses configuration text, decrypting `ENC(…)` values with `password`; every problem at once.
pub fn parse_with(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    password: Option<&str>,
) -> Result<SatelliteConfig, Vec<Problem>> {
    let hash = hex::encode(Sha256::digest(text.as_bytes()));
    let root = match marked_yaml::parse_yaml(0, text) {
        Ok(n) => n,
        Err(e) => return Err(vec![load_problem(&e)]),
    };
    let mut r = Reader {
        password: password.filter(|p| !p.is_empty()).map(str::to_owned),
        ..Reader::default()
    };
    let Some(top) = root.as_mapping() else {
        return Err(vec![Problem {
            line: line_of(&root),
            key: String::new(),
            message: "the file must be a mapping with `satellite:` and `integrations:`".into(),
        }]);
    };
    r.unknown(top, "", &["satellite", "levelops", "integrations"]);
    let section = match (top.get_node("satellite"), top.get_node("levelops")) {
        (Some(s), Some(l)) => {
            r.problem(
                l,
                "levelops",
                "give either `satellite:` or its older name `levelops:`, not both",
            );
            Some(("satellite", s))
        }
        (Some(s), None) => Some(("satellite", s)),
        (None, Some(l)) => Some(("levelops", l)),
        (None, None) => None,
    };
    let hub = match section {
        None => {
            r.problems.push(Problem {
                line: Some(1),
                key: "satellite".into(),
                message: "is required: the hub's url and api_key (`levelops:` is accepted too)"
                    .into(),
            });
            None
        }
        Some((name, node)) => r.hub(name, node, env),
    };
    let mut integrations = Vec::new();
    match top.get_node("integrations") {
        None => {}
        Some(Node::Sequence(seq)) => {
            for (i, item) in seq.iter().enumerate() {
                if let Some(it) = r.integration(&format!("integrations[{i}]"), item) {
                    integrations.push(it);
                }
            }
            let mut seen = std::collections::HashSet::new();
            for (i, it) in integrations.iter().enumerate() {
                if !seen.insert(it.id.clone()) {
                    r.problem(
                        &seq[i],
                        &format!("integrations[{i}].id"),
                        &format!("{:?} is the id of an earlier integration; ids must be unique (they name each poller's saved position)", it.id),
                    );
                }
            }
        }
        Some(other) => r.problem(
            other,
            "integrations",
            "must be a list of integrations (`- id: …`)",
        ),
    }
    if !r.problems.is_empty() {
        return Err(r.problems);
    }
    let hub = hub.ok_or_else(Vec::new)?;
    Ok(SatelliteConfig {
        hub,
        integrations,
        hash,
        warnings: r.warnings,
    })
}

fn load_problem(e: &LoadError) -> Problem {
    let (line, message) = match e {
        LoadError::TopLevelMustBeMapping(m) => (
            m.line(),
            "the file must be a mapping with `satellite:` and `integrations:`".to_owned(),
        ),
        LoadError::TopLevelMustBeSequence(m) => (m.line(), "unexpected top level".to_owned()),
        LoadError::UnexpectedAnchor(m) => {
            (m.line(), "anchors (&name) are not supported".to_owned())
        }
        LoadError::MappingKeyMustBeScalar(m) => (m.line(), "a key must be plain text".to_owned()),
        LoadError::UnexpectedTag(m) => (m.line(), "tags (!name) are not supported".to_owned()),
        LoadError::ScanError(m, se) => (m.line(), format!("not valid YAML: {}", scan_message(se))),
        LoadError::DuplicateKey(inner) => (
            inner.key.span().start().map(|m| m.line()).unwrap_or(0),
            format!("the key {:?} appears twice", inner.key.as_str()),
        ),
    };
    Problem {
        line: Some(line).filter(|l| *l > 0),
        key: String::new(),
        message,
    }
}

/// The scanner's message without its own " at line … column …" (we put the line first).
fn scan_message(e: &impl fmt::Display) -> String {
    let s = e.to_string();
    match s.find(" at byte ").or_else(|| s.find(" at line ")) {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

fn line_of(n: &Node) -> Option<usize> {
    n.span().start().map(|m| m.line())
}

#[derive(Default)]
struct Reader {
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
    /// `ENCRYPTION_PASSWORD`, for `ENC(…)` values.
    password: Option<String>,
}

/// The inside of a Jasypt-style encrypted value, `ENC(<base64>)`.
pub fn enc_inner(v: &str) -> Option<&str> {
    v.trim()
        .strip_prefix("ENC(")
        .and_then(|s| s.strip_suffix(')'))
}

/// A value encrypted the Jasypt way: `ENC(<base64>)`, with the whole file's algorithm.
pub fn enc_value(plain: &str, password: &str) -> String {
    format!("ENC({})", crypto::encrypt(plain.as_bytes(), password))
}

impl Reader {
    /// Decrypts an `ENC(…)` value; a problem naming `key` when it cannot be.
    fn decrypt(&mut self, at: &Node, key: &str, value: &str) -> Option<String> {
        let inner = enc_inner(value)?;
        let Some(password) = self.password.clone() else {
            self.problem(
                at,
                key,
                "is encrypted (ENC(…)); set ENCRYPTION_PASSWORD to the password it was encrypted with",
            );
            return None;
        };
        match crypto::decrypt_text(inner, &password) {
            Ok(v) => Some(v),
            Err(e) => {
                self.problem(
                    at,
                    key,
                    &format!("the ENC(…) value cannot be decrypted with ENCRYPTION_PASSWORD: {e}"),
                );
                None
            }
        }
    }

    /// Decrypts the `ENC(…)` strings of a JSON value (an integration's metadata).
    fn decrypt_json(&mut self, at: &Node, key: &str, v: Value) -> Value {
        match v {
            Value::String(s) if enc_inner(&s).is_some() => self
                .decrypt(at, key, &s)
                .map(Value::String)
                .unwrap_or(Value::Null),
            Value::Array(items) => Value::Array(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, x)| self.decrypt_json(at, &format!("{key}[{i}]"), x))
                    .collect(),
            ),
            Value::Object(m) => Value::Object(
                m.into_iter()
                    .map(|(k, x)| {
                        let x = self.decrypt_json(at, &format!("{key}.{k}"), x);
                        (k, x)
                    })
                    .collect(),
            ),
            other => other,
        }
    }

    /// True when a problem already names `key` (one message per key).
    fn named(&self, key: &str) -> bool {
        self.problems.iter().any(|p| p.key == key)
    }

    fn warn(&mut self, at: &Node, key: &str, message: &str) {
        self.warnings.push(Problem {
            line: line_of(at),
            key: key.to_owned(),
            message: message.to_owned(),
        });
    }

    fn problem(&mut self, at: &Node, key: &str, message: &str) {
        self.problems.push(Problem {
            line: line_of(at),
            key: key.to_owned(),
            message: message.to_owned(),
        });
    }

    fn unknown(
        &mut self,
        map: &marked_yaml::types::MarkedMappingNode,
        prefix: &str,
        known: &[&str],
    ) {
        for (k, _) in map.iter() {
            if !known.contains(&k.as_str()) {
                let key = if prefix.is_empty() {
                    k.as_str().to_owned()
                } else {
                    format!("{prefix}.{}", k.as_str())
                };
                self.warnings.push(Problem {
                    line: k.span().start().map(|m| m.line()),
                    key,
                    message: format!("unknown key, ignored (known here: {})", known.join(", ")),
                });
            }
        }
    }

    /// An optional string: a scalar that is not empty or `null`.
    fn opt_str(
        &mut self,
        map: &marked_yaml::types::MarkedMappingNode,
        prefix: &str,
        key: &str,
    ) -> Option<String> {
        let node = map.get_node(key)?;
        match node {
            Node::Scalar(s) if s.as_str().trim().is_empty() || s.as_str() == "~" => None,
            Node::Scalar(s) if s.may_coerce() && s.as_str() == "null" => None,
            Node::Scalar(s) => {
                let v = s.as_str().trim();
                if enc_inner(v).is_some() {
                    self.decrypt(node, &format!("{prefix}.{key}"), v)
                } else {
                    Some(v.to_owned())
                }
            }
            other => {
                self.problem(
                    other,
                    &format!("{prefix}.{key}"),
                    "must be a single value, not a list or a mapping",
                );
                None
            }
        }
    }

    fn req_str(
        &mut self,
        map: &marked_yaml::types::MarkedMappingNode,
        at: &Node,
        prefix: &str,
        key: &str,
        what: &str,
    ) -> Option<String> {
        let v = self.opt_str(map, prefix, key);
        if v.is_none()
            && !self.named(&format!("{prefix}.{key}"))
            && !matches!(
                map.get_node(key),
                Some(Node::Sequence(_) | Node::Mapping(_))
            )
        {
            let at = map.get_node(key).unwrap_or(at);
            self.problem(
                at,
                &format!("{prefix}.{key}"),
                &format!("is required ({what})"),
            );
        }
        v
    }

    fn url(&mut self, node: Option<&Node>, key: &str, url: Option<String>) -> Option<String> {
        let u = url?;
        if u.starts_with("http://") || u.starts_with("https://") {
            Some(u.trim_end_matches('/').to_owned())
        } else {
            if let Some(n) = node {
                self.problem(
                    n,
                    key,
                    &format!("{u:?} must start with http:// or https://"),
                );
            }
            None
        }
    }

    fn hub(
        &mut self,
        name: &str,
        node: &Node,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Option<HubSettings> {
        let Some(map) = node.as_mapping() else {
            self.problem(node, name, "must be a mapping with url, api_key, tenant, …");
            return None;
        };
        self.unknown(
            map,
            name,
            &[
                "url",
                "api_key",
                "tenant",
                "id",
                "scheduling_interval",
                "proxy",
                "relay_key",
            ],
        );
        let url = self
            .opt_str(map, name, "url")
            .or_else(|| env("CISTERN_URL").filter(|v| !v.trim().is_empty()));
        let url = match url {
            Some(u) => self.url(
                map.get_node("url").or(Some(node)),
                &format!("{name}.url"),
                Some(u),
            ),
            None => {
                self.problem(
                    node,
                    &format!("{name}.url"),
                    "is required: the hub's base URL, e.g. https://cistern.example.com; a file without one (as Harness generates) takes it from the CISTERN_URL environment variable or the --hub URL flag of `cistern satellite run`",
                );
                None
            }
        };
        let api_key = self
            .opt_str(map, name, "api_key")
            .or_else(|| env("CISTERN_API_KEY").filter(|v| !v.trim().is_empty()));
        if api_key.is_none() && !self.named(&format!("{name}.api_key")) {
            self.problem(
                map.get_node("api_key").unwrap_or(node),
                &format!("{name}.api_key"),
                "is required: an API key with the ingest scope (`cistern keys create --scopes ingest`), or set CISTERN_API_KEY",
            );
        }
        let tenant = self.opt_str(map, name, "tenant");
        let id = self
            .opt_str(map, name, "id")
            .or_else(|| tenant.clone())
            .unwrap_or_else(|| "satellite".to_owned());
        let interval = match map.get_node("scheduling_interval") {
            None => Some(DEFAULT_INTERVAL_SECONDS),
            Some(n) => {
                // Seconds, as the seed's files write it, or a duration (`30s`, `5m`).
                let v = n.as_scalar().and_then(|s| {
                    s.as_u64().or_else(|| {
                        cistern_core::units::parse_duration(s.as_str())
                            .ok()
                            .filter(|d| d.subsec_nanos() == 0)
                            .map(|d| d.as_secs())
                    })
                });
                match v {
                    Some(s) if (1..=MAX_INTERVAL_SECONDS).contains(&s) => Some(s),
                    _ => {
                        self.problem(
                            n,
                            &format!("{name}.scheduling_interval"),
                            &format!("must be a whole number of seconds from 1 to {MAX_INTERVAL_SECONDS}, or a duration such as 30s or 5m (default {DEFAULT_INTERVAL_SECONDS})"),
                        );
                        None
                    }
                }
            }
        };
        let proxy = match map.get_node("proxy") {
            None => None,
            Some(Node::Scalar(s)) if s.as_str().trim().is_empty() || s.as_str() == "null" => None,
            Some(n) => self.proxy(&format!("{name}.proxy"), n),
        };
        let relay_key = self
            .opt_str(map, name, "relay_key")
            .or_else(|| env("CISTERN_SATELLITE_RELAY_KEY").filter(|v| !v.trim().is_empty()))
            .or_else(|| self.relay_key_file(node, name, env));
        Some(HubSettings {
            relay_key,
            url: url?,
            api_key: api_key?,
            tenant,
            id,
            scheduling_interval: Duration::from_secs(interval?),
            proxy,
        })
    }

    /// The relay key from the file `CISTERN_SATELLITE_RELAY_KEY_FILE` names (a Docker or
    /// Kubernetes secret mounted as a file); its first line, trimmed. A missing or empty file is
    /// a warning: a relay on loopback needs no key, and one beyond it refuses to start anyway.
    fn relay_key_file(
        &mut self,
        node: &Node,
        name: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Option<String> {
        let path = env("CISTERN_SATELLITE_RELAY_KEY_FILE").filter(|v| !v.trim().is_empty())?;
        match std::fs::read_to_string(path.trim()) {
            Ok(text) => {
                let key = text.lines().next().unwrap_or("").trim().to_owned();
                if key.is_empty() {
                    self.warn(
                        node,
                        &format!("{name}.relay_key"),
                        &format!("CISTERN_SATELLITE_RELAY_KEY_FILE names {path}, which is empty; put the relay key in it"),
                    );
                    None
                } else {
                    Some(key)
                }
            }
            Err(e) => {
                self.warn(
                    node,
                    &format!("{name}.relay_key"),
                    &format!("CISTERN_SATELLITE_RELAY_KEY_FILE names {path}, which cannot be read ({e}); mount the secret there (docker run --mount type=bind,source=relay_key.txt,target={path},readonly or a Docker/Kubernetes secret), or set relay_key in satellite.yml"),
                );
                None
            }
        }
    }

    fn proxy(&mut self, prefix: &str, node: &Node) -> Option<Proxy> {
        let Some(map) = node.as_mapping() else {
            self.problem(node, prefix, "must be a mapping with host and port");
            return None;
        };
        self.unknown(
            map,
            prefix,
            &["host", "port", "username", "password", "all_traffic"],
        );
        let host = self.req_str(map, node, prefix, "host", "the proxy's host name");
        let port = match map.get_node("port") {
            None => {
                self.problem(node, &format!("{prefix}.port"), "is required (1-65535)");
                None
            }
            Some(n) => match n.as_scalar().and_then(|s| s.as_u16()).filter(|p| *p > 0) {
                Some(p) => Some(p),
                None => {
                    self.problem(
                        n,
                        &format!("{prefix}.port"),
                        "must be a port number (1-65535)",
                    );
                    None
                }
            },
        };
        let all_traffic = match map.get_node("all_traffic") {
            None => false,
            Some(n) => match n.as_scalar().and_then(|s| s.as_bool()) {
                Some(b) => b,
                None => {
                    self.problem(n, &format!("{prefix}.all_traffic"), "must be true or false");
                    false
                }
            },
        };
        Some(Proxy {
            host: host?,
            port: port?,
            username: self.opt_str(map, prefix, "username"),
            password: self.opt_str(map, prefix, "password"),
            all_traffic,
        })
    }

    fn integration(&mut self, prefix: &str, node: &Node) -> Option<Integration> {
        let Some(map) = node.as_mapping() else {
            self.problem(
                node,
                prefix,
                "must be a mapping with id, application, url, … (check the indentation under `- id:`)",
            );
            return None;
        };
        self.unknown(
            map,
            prefix,
            &[
                "id",
                "application",
                "url",
                "username",
                "api_key",
                "metadata",
                "satellite",
            ],
        );
        let id = self.req_str(map, node, prefix, "id", "the integration's id");
        let application = self
            .req_str(
                map,
                node,
                prefix,
                "application",
                "jenkins, gitlab, or another tool's name",
            )
            .map(|a| match a.to_ascii_lowercase().as_str() {
                "jenkins" => Application::Jenkins,
                "gitlab" => Application::Gitlab,
                other => Application::Other(other.to_owned()),
            });
        let url_node = map.get_node("url");
        let url = self.opt_str(map, prefix, "url");
        let url = self.url(url_node, &format!("{prefix}.url"), url);
        let username = self.opt_str(map, prefix, "username");
        let api_key = self.opt_str(map, prefix, "api_key");
        match &application {
            Some(Application::Jenkins | Application::Gitlab)
                if url.is_none() && url_node.is_none() =>
            {
                self.problem(
                    node,
                    &format!("{prefix}.url"),
                    "is required for a polled tool (its base URL, e.g. https://jenkins.example.com)",
                );
            }
            Some(Application::Gitlab)
                if api_key.is_none() && !self.named(&format!("{prefix}.api_key")) =>
            {
                self.problem(
                    map.get_node("api_key").unwrap_or(node),
                    &format!("{prefix}.api_key"),
                    "is required for GitLab: a personal access token with read_api",
                );
            }
            _ => {}
        }
        let metadata = match map.get_node("metadata") {
            None => Value::Object(Default::default()),
            Some(n @ Node::Mapping(_)) => {
                let v = to_json(n);
                self.decrypt_json(n, &format!("{prefix}.metadata"), v)
            }
            Some(Node::Scalar(s)) if s.as_str().trim().is_empty() || s.as_str() == "null" => {
                Value::Object(Default::default())
            }
            Some(n) => {
                self.problem(n, &format!("{prefix}.metadata"), "must be a mapping");
                Value::Null
            }
        };
        Some(Integration {
            id: id?,
            application: application?,
            url,
            username,
            api_key,
            metadata,
        })
    }
}

/// A YAML node as JSON: scalars stay strings unless YAML would read them as a number, a
/// boolean or null.
pub fn to_json(n: &Node) -> Value {
    match n {
        Node::Scalar(s) => {
            if !s.may_coerce() {
                return Value::String(s.as_str().to_owned());
            }
            if s.as_str() == "null" || s.as_str() == "~" {
                Value::Null
            } else if let Some(b) = s.as_bool() {
                Value::Bool(b)
            } else if let Some(i) = s.as_i64() {
                Value::from(i)
            } else {
                Value::String(s.as_str().to_owned())
            }
        }
        Node::Sequence(seq) => Value::Array(seq.iter().map(to_json).collect()),
        Node::Mapping(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.as_str().to_owned(), to_json(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    const FULL: &str = "\
satellite:
  url: https://hub.example/
  api_key: cst_abc
  tenant: acme
  scheduling_interval: 30
  proxy:
    host: proxy.local
    port: 3128
    all_traffic: true
integrations:
  - id: '7'
    application: jenkins
    url: https://jenkins.local
    username: bot
    api_key: t0k
  - id: '8'
    application: GitLab
    url: https://gitlab.local
    api_key: glpat-x
    metadata:
      projects: [12, group/app]
  - id: '9'
    application: custom
";

    #[test]
    fn a_full_file() {
        let c = parse(FULL, &no_env).unwrap();
        assert_eq!(c.hub.url, "https://hub.example");
        assert_eq!(c.hub.api_key, "cst_abc");
        assert_eq!(c.hub.id, "acme", "the tenant is the default id");
        assert_eq!(c.hub.scheduling_interval, Duration::from_secs(30));
        let p = c.hub.proxy.as_ref().unwrap();
        assert_eq!(p.url(), "http://proxy.local:3128");
        assert!(p.all_traffic);
        assert_eq!(c.integrations.len(), 3);
        assert_eq!(c.integrations[0].application, Application::Jenkins);
        assert_eq!(c.integrations[0].username.as_deref(), Some("bot"));
        assert_eq!(c.integrations[1].application, Application::Gitlab);
        assert_eq!(
            c.integrations[1].metadata,
            serde_json::json!({"projects": [12, "group/app"]})
        );
        assert_eq!(
            c.integrations[2].application,
            Application::Other("custom".into())
        );
        assert_eq!(c.hash.len(), 64);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn the_interval_may_be_a_duration() {
        for (written, secs) in [("300", 300), ("5m", 300), ("90s", 90), ("1h", 3600)] {
            let text = format!("satellite:\n  url: http://127.0.0.1:8080\n  api_key: k\n  scheduling_interval: {written}\n");
            let c = parse(&text, &no_env).unwrap();
            assert_eq!(
                c.hub.scheduling_interval,
                Duration::from_secs(secs),
                "{written}"
            );
        }
        for bad in ["0s", "1500ms", "2d", "soon"] {
            let text = format!("satellite:\n  url: http://127.0.0.1:8080\n  api_key: k\n  scheduling_interval: {bad}\n");
            assert!(parse(&text, &no_env).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_legacy_key_is_accepted() {
        let text = "levelops:\n  tenant: acme\n  api_key: k\n  url: http://127.0.0.1:8080\n";
        let c = parse(text, &no_env).unwrap();
        assert_eq!(c.hub.tenant.as_deref(), Some("acme"));
        assert_eq!(c.hub.scheduling_interval, Duration::from_secs(60));
        assert!(c.integrations.is_empty());
    }

    #[test]
    fn env_vars_lists_what_parsing_asks_for() {
        let asked = std::cell::RefCell::new(std::collections::BTreeSet::new());
        let env = |n: &str| {
            asked.borrow_mut().insert(n.to_owned());
            None
        };
        let _ = parse("levelops:\n  tenant: acme\n", &env);
        for name in asked.borrow().iter() {
            assert!(
                ENV_VARS.contains(&name.as_str()),
                "{name} is read but not listed"
            );
        }
        assert!(asked.borrow().contains("CISTERN_URL"));
    }

    #[test]
    fn url_and_key_may_come_from_the_environment() {
        let env = |n: &str| match n {
            "CISTERN_URL" => Some("https://hub.env".to_owned()),
            "CISTERN_API_KEY" => Some("cst_env".to_owned()),
            _ => None,
        };
        let c = parse("levelops:\n  tenant: acme\n", &env).unwrap();
        assert_eq!(c.hub.url, "https://hub.env");
        assert_eq!(c.hub.api_key, "cst_env");
    }

    #[test]
    fn errors_name_the_key_and_the_line() {
        let text = "\
satellite:
  url: ftp://hub
  scheduling_interval: often
  proxy:
    host: p
    port: 99999
integrations:
  - id: '1'
    application: jenkins
  - application: gitlab
    url: https://gitlab.local
";
        let problems = parse(text, &no_env).unwrap_err();
        let shown: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            shown,
            vec![
                "line 2: satellite.url: \"ftp://hub\" must start with http:// or https://",
                "line 2: satellite.api_key: is required: an API key with the ingest scope (`cistern keys create --scopes ingest`), or set CISTERN_API_KEY",
                "line 3: satellite.scheduling_interval: must be a whole number of seconds from 1 to 86400, or a duration such as 30s or 5m (default 60)",
                "line 6: satellite.proxy.port: must be a port number (1-65535)",
                "line 8: integrations[0].url: is required for a polled tool (its base URL, e.g. https://jenkins.example.com)",
                "line 10: integrations[1].id: is required (the integration's id)",
                "line 10: integrations[1].api_key: is required for GitLab: a personal access token with read_api",
            ],
            "{shown:#?}"
        );
    }

    #[test]
    fn malformed_yaml_and_unknown_keys() {
        let problems = parse("satellite:\n  url: [unclosed\n", &no_env).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert!(problems[0].line.is_some(), "{problems:?}");
        assert!(
            problems[0].message.starts_with("not valid YAML"),
            "{problems:?}"
        );

        let c = parse(
            "satellite:\n  url: http://h\n  api_key: k\n  ur: typo\n",
            &no_env,
        )
        .unwrap();
        assert_eq!(c.warnings.len(), 1);
        assert_eq!(c.warnings[0].line, Some(4));
        assert_eq!(c.warnings[0].key, "satellite.ur");
    }

    #[test]
    fn enc_values_are_decrypted_one_by_one() {
        let pw = "correct horse";
        let text = format!(
            "levelops:\n  tenant: acme\n  api_key: {}\n  proxy:\n    host: p\n    port: 3128\n    password: {}\nintegrations:\n  - id: '1'\n    application: gitlab\n    url: https://gitlab.local\n    api_key: {}\n    metadata:\n      token: {}\n      projects: [{}]\n",
            enc_value("cst_secret", pw),
            enc_value("proxy-pw", pw),
            enc_value("glpat-x", pw),
            enc_value("meta-token", pw),
            enc_value("group/app", pw),
        );
        let env = |n: &str| (n == "CISTERN_URL").then(|| "https://hub.env".to_owned());
        let c = parse_with(&text, &env, Some(pw)).unwrap();
        assert_eq!(c.hub.api_key, "cst_secret");
        assert_eq!(c.hub.url, "https://hub.env", "a Harness file has no url");
        assert_eq!(
            c.hub.proxy.as_ref().unwrap().password.as_deref(),
            Some("proxy-pw")
        );
        assert_eq!(c.integrations[0].api_key.as_deref(), Some("glpat-x"));
        assert_eq!(
            c.integrations[0].metadata,
            serde_json::json!({"token": "meta-token", "projects": ["group/app"]})
        );

        // No password, or a wrong one: refused, naming each key and its line, once each.
        for (password, says) in [
            (None, "set ENCRYPTION_PASSWORD"),
            (
                Some("wrong"),
                "cannot be decrypted with ENCRYPTION_PASSWORD",
            ),
        ] {
            let problems = parse_with(&text, &env, password).unwrap_err();
            let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
            assert_eq!(
                keys,
                [
                    "levelops.api_key",
                    "levelops.proxy.password",
                    "integrations[0].api_key",
                    "integrations[0].metadata.projects[0]",
                    "integrations[0].metadata.token",
                ],
                "{problems:#?}"
            );
            assert_eq!(problems[0].line, Some(3));
            assert!(
                problems.iter().all(|p| p.message.contains(says)),
                "{problems:#?}"
            );
        }
    }

    #[test]
    fn a_harness_file_without_url_names_both_ways_to_give_it() {
        let problems = parse("levelops:\n  tenant: acme\n  api_key: k\n", &no_env).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "levelops.url");
        assert!(problems[0].message.contains("CISTERN_URL"), "{problems:?}");
        assert!(problems[0].message.contains("--hub"), "{problems:?}");
    }

    #[test]
    fn encrypted_files_need_the_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("satellite.yml");
        let text = "satellite:\n  url: http://h\n  api_key: k\n";
        std::fs::write(&path, crypto::encrypt(text.as_bytes(), "pw")).unwrap();
        assert!(matches!(
            load(&path, None, &no_env),
            Err(ConfigError::NeedPassword { .. })
        ));
        let err = load(&path, Some("nope"), &no_env).unwrap_err();
        assert!(err.to_string().contains("wrong password"), "{err}");
        let c = load(&path, Some("pw"), &no_env).unwrap();
        assert_eq!(c.hub.url, "http://h");
        assert_eq!(
            c.hash,
            hex::encode(Sha256::digest(text.as_bytes())),
            "the hash is of the plain text"
        );
    }
}
