//! Settings: `config/default.toml` (or `TETHER_CONFIG`), then `TETHER_*` environment variables, then
//! the legacy names. Loaded once in `main` and passed down; nothing reads the environment later.

use std::time::Duration;

use serde::Deserialize;
use tether_domain::Policy;

/// The default settings file, compiled in so that the binary runs from any directory.
const DEFAULT_TOML: &str = include_str!("../../../config/default.toml");

/// Every setting.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `[server]`.
    pub server: ServerSettings,
    /// `[database]`.
    pub database: DatabaseSettings,
    /// `[auth]`.
    pub auth: AuthSettings,
    /// `[sessions]`.
    pub sessions: SessionSettings,
    /// `[ws]`.
    pub ws: WsSettings,
    /// `[events]`.
    pub events: EventSettings,
    /// `[mcp]`.
    pub mcp: McpSettings,
    /// `[limits]`.
    pub limits: LimitSettings,
    /// `[metrics]`.
    pub metrics: MetricsSettings,
    /// `[log]`.
    pub log: LogSettings,
}

/// `[metrics]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// `/metrics` needs no API key.
    pub open: bool,
}

/// `[ws]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WsSettings {
    /// Comma-separated origins ("" = the service's own).
    pub allowed_origins: String,
    /// Health update period, ms.
    pub health_interval_ms: u64,
    /// Per-dashboard queue, in messages.
    pub queue_capacity: usize,
    /// Per-dashboard bytes in flight.
    pub max_buffered_bytes: usize,
    /// Ping period, s.
    pub ping_interval_secs: u64,
    /// Ticket lifetime, s.
    pub ticket_ttl_secs: u64,
}

/// `[mcp]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpSettings {
    /// Loopback peers may use `/mcp` without the API key.
    pub open_on_loopback: bool,
    /// Comma-separated `Host` values accepted ("" = loopback names and the bind address).
    pub allowed_hosts: String,
    /// Comma-separated `Origin` values accepted ("" = as `ws.allowed_origins`).
    pub allowed_origins: String,
}

/// `[limits]`: requests per minute (bursts of the same size); 0 turns a limit off.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    /// Reconnect attempts per session.
    pub reconnect_per_session: u32,
    /// Reconnect attempts per client address.
    pub reconnect_per_address: u32,
    /// Failed API-key or ticket attempts per client address.
    pub failed_auth_per_address: u32,
    /// Token mints per API key.
    pub tokens_per_key: u32,
    /// WebSocket tickets per API key.
    pub tickets_per_key: u32,
    /// Dashboard connection attempts per client address.
    pub ws_connects_per_address: u32,
    /// Session creations per API key.
    pub sessions_per_key: u32,
    /// Comma-separated proxy addresses whose `X-Forwarded-For` is believed.
    pub trusted_proxies: String,
    /// Milliseconds a refusal of an address over its budget is held back (0: answered at once).
    pub penalty_ms: u64,
}

/// `[events]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSettings {
    /// Longest retention, s.
    pub retention_secs: u64,
    /// Most events kept.
    pub retention_count: u64,
}

/// `[server]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Listen address.
    pub bind: String,
    /// Worker threads (0 = per core).
    pub workers: usize,
    /// Drain time on shutdown.
    pub shutdown_timeout_secs: u64,
    /// Longest wait for a request's head, ms.
    pub header_timeout_ms: u64,
    /// Longest wait for a request's whole body, ms.
    pub body_timeout_ms: u64,
    /// Idle keep-alive, s.
    pub keep_alive_secs: u64,
    /// Open connections in total.
    pub max_connections: usize,
    /// Open connections per client address (0 = no cap).
    pub max_connections_per_ip: usize,
}

/// `[database]`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://...` or `postgres://...`.
    pub url: String,
    /// Pool size.
    pub max_connections: usize,
    /// Per-call timeout.
    pub timeout_ms: u64,
}

impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password.
        f.debug_struct("DatabaseSettings")
            .field("max_connections", &self.max_connections)
            .field("timeout_ms", &self.timeout_ms)
            .finish_non_exhaustive()
    }
}

/// `[auth]`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// Management API key ("" = generate).
    pub api_key: String,
    /// Signing secret ("" = generate and store).
    pub secret: String,
    /// Former secrets, comma-separated.
    pub retired_secrets: String,
    /// Token lifetime, minutes.
    pub token_expiry_minutes: u64,
    /// JWT `iss`.
    pub issuer: String,
    /// JWT `aud`.
    pub audience: String,
    /// Grace window, seconds.
    pub reconnect_grace_seconds: u64,
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("token_expiry_minutes", &self.token_expiry_minutes)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("reconnect_grace_seconds", &self.reconnect_grace_seconds)
            .finish_non_exhaustive()
    }
}

/// `[sessions]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSettings {
    /// Idle threshold, seconds.
    pub idle_after_secs: u64,
    /// Reap threshold, seconds.
    pub reap_after_secs: u64,
    /// Sweep period, seconds.
    pub sweep_interval_secs: u64,
    /// At most one activity write per session per this many ms (MCP requests, heartbeats).
    pub activity_write_interval_ms: u64,
}

/// `[log]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// tracing filter.
    pub level: String,
}

/// The non-empty items of a comma-separated setting.
fn split_list(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// A setting that stops the start, with the setting's name in the message.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

/// The legacy flat names and the settings they set.
const LEGACY: [(&str, &str); 4] = [
    ("DATABASE_URL", "database.url"),
    ("MCP_API_KEY", "auth.api_key"),
    ("MCP_SESSION_SECRET", "auth.secret"),
    ("MCP_RECONNECT_TOKEN_EXPIRY", "auth.token_expiry_minutes"),
];

impl Settings {
    /// Loads the settings from the process environment.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first bad setting.
    pub fn load() -> Result<Self, ConfigError> {
        Self::load_from(|name| std::env::var(name).ok(), std::env::vars())
    }

    /// Loads the settings from a given environment (for tests).
    ///
    /// # Errors
    /// [`ConfigError`] naming the first bad setting.
    pub fn load_from(
        var: impl Fn(&str) -> Option<String>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let text = match var("TETHER_CONFIG").filter(|p| !p.is_empty()) {
            Some(path) => std::fs::read_to_string(&path)
                .map_err(|e| ConfigError(format!("TETHER_CONFIG: cannot read {path}: {e}")))?,
            None => DEFAULT_TOML.to_owned(),
        };
        let file = config::File::from_str(&text, config::FileFormat::Toml);
        let tether_vars: config::Map<String, String> = vars
            .into_iter()
            .filter(|(k, _)| {
                k.starts_with("TETHER_") && k != "TETHER_CONFIG" && !k.starts_with("TETHER_TEST_")
            })
            .collect();
        let mut builder = config::Config::builder().add_source(file).add_source(
            config::Environment::with_prefix("TETHER")
                .prefix_separator("_")
                .separator("__")
                .source(Some(tether_vars)),
        );
        // Flat legacy names cannot reach nested keys through `Environment`.
        for (env, key) in LEGACY {
            builder = builder
                .set_override_option(key, var(env))
                .map_err(|e| ConfigError(format!("{env}: {e}")))?;
        }
        let settings: Settings = builder
            .build()
            .and_then(config::Config::try_deserialize)
            .map_err(|e| ConfigError(e.to_string()))?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError(m.to_owned()));
        if self.server.bind.parse::<std::net::SocketAddr>().is_err() {
            return bad(
                "server.bind (TETHER_SERVER__BIND) must be an IP:port such as 127.0.0.1:8181",
            );
        }
        if self.server.header_timeout_ms == 0 || self.server.body_timeout_ms == 0 {
            return bad("server.header_timeout_ms and server.body_timeout_ms must be at least 1");
        }
        if self.server.max_connections == 0 {
            return bad("server.max_connections must be at least 1");
        }
        if self.database.max_connections == 0 {
            return bad("database.max_connections must be at least 1");
        }
        if self.database.timeout_ms == 0 {
            return bad("database.timeout_ms must be at least 1");
        }
        if self.auth.token_expiry_minutes == 0 {
            return bad(
                "auth.token_expiry_minutes (MCP_RECONNECT_TOKEN_EXPIRY) must be at least 1",
            );
        }
        if !self.auth.secret.is_empty() && self.auth.secret.len() < 32 {
            return bad("auth.secret (MCP_SESSION_SECRET) must be at least 32 bytes");
        }
        if self.retired_secrets().any(|s| s.len() < 32) {
            return bad("auth.retired_secrets: every secret must be at least 32 bytes");
        }
        if !self.auth.api_key.is_empty() && self.auth.api_key.len() < 16 {
            return bad("auth.api_key (MCP_API_KEY) must be at least 16 characters");
        }
        if self.ws.health_interval_ms == 0
            || self.ws.queue_capacity == 0
            || self.ws.max_buffered_bytes == 0
            || self.ws.ping_interval_secs == 0
            || self.ws.ticket_ttl_secs == 0
        {
            return bad(
                "ws.health_interval_ms, ws.queue_capacity, ws.max_buffered_bytes, ws.ping_interval_secs and ws.ticket_ttl_secs must be at least 1",
            );
        }
        if let Some(bad_origin) = self
            .origins()
            .find(|o| !(o.starts_with("http://") || o.starts_with("https://")) || o.ends_with('/'))
        {
            return Err(ConfigError(format!(
                "ws.allowed_origins: {bad_origin:?} is not an origin like https://host[:port]"
            )));
        }
        if let Some(bad_origin) = self
            .mcp_origins()
            .find(|o| !(o.starts_with("http://") || o.starts_with("https://")) || o.ends_with('/'))
        {
            return Err(ConfigError(format!(
                "mcp.allowed_origins: {bad_origin:?} is not an origin like https://host[:port]"
            )));
        }
        if let Some(bad_host) = self.mcp_hosts().find(|h| h.contains('/')) {
            return Err(ConfigError(format!(
                "mcp.allowed_hosts: {bad_host:?} is not a host or host:port"
            )));
        }
        if let Some(bad) = split_list(&self.limits.trusted_proxies)
            .find(|p| p.parse::<std::net::IpAddr>().is_err())
        {
            return Err(ConfigError(format!(
                "limits.trusted_proxies: {bad:?} is not an IP address"
            )));
        }
        if self.limits.penalty_ms > 10_000 {
            return bad("limits.penalty_ms must be at most 10000");
        }
        if self.sessions.sweep_interval_secs == 0 {
            return bad("sessions.sweep_interval_secs must be at least 1");
        }
        if self.auth.issuer.is_empty() || self.auth.audience.is_empty() {
            return bad("auth.issuer and auth.audience must not be empty");
        }
        self.policy().map(|_| ())
    }

    /// The session timing rules, checked together.
    ///
    /// # Errors
    /// [`ConfigError`] naming the settings that disagree.
    pub fn policy(&self) -> Result<Policy, ConfigError> {
        Policy::new(
            Duration::from_secs(self.sessions.idle_after_secs),
            Duration::from_secs(self.sessions.reap_after_secs),
            self.token_lifetime(),
            Duration::from_secs(self.auth.reconnect_grace_seconds),
        )
        .and_then(|p| {
            // Never more than half the idle window, whatever is configured: a very short
            // idle_after (tests, demos) must not make the start fail over this tuning knob.
            let wanted = Duration::from_millis(self.sessions.activity_write_interval_ms);
            p.with_activity_interval(wanted.min(p.idle_after() / 2))
        })
        .map_err(|e| {
            ConfigError(format!(
                "sessions.idle_after_secs / sessions.reap_after_secs / auth.token_expiry_minutes / \
                 auth.reconnect_grace_seconds: {e}"
            ))
        })
    }

    /// The retired secrets, split.
    pub fn retired_secrets(&self) -> impl Iterator<Item = &str> {
        split_list(&self.auth.retired_secrets)
    }

    /// The configured WebSocket origins, split.
    pub fn origins(&self) -> impl Iterator<Item = &str> {
        split_list(&self.ws.allowed_origins)
    }

    /// The configured `Host` values for `/mcp`, split.
    pub fn mcp_hosts(&self) -> impl Iterator<Item = &str> {
        split_list(&self.mcp.allowed_hosts)
    }

    /// The configured `Origin` values for `/mcp`, split.
    pub fn mcp_origins(&self) -> impl Iterator<Item = &str> {
        split_list(&self.mcp.allowed_origins)
    }

    /// The token lifetime.
    pub fn token_lifetime(&self) -> Duration {
        Duration::from_secs(self.auth.token_expiry_minutes.saturating_mul(60))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let vars: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let lookup = vars.clone();
        Settings::load_from(
            move |name| {
                lookup
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            },
            vars,
        )
    }

    #[test]
    fn defaults_load() {
        let s = load(&[]).unwrap();
        assert_eq!(s.server.bind, "127.0.0.1:8181");
        assert_eq!(s.database.url, "sqlite://tether.db");
        assert_eq!(s.auth.token_expiry_minutes, 15);
        assert_eq!(s.sessions.idle_after_secs, 300);
        assert_eq!(s.sessions.reap_after_secs, 1800);
    }

    #[test]
    fn environment_and_legacy_names_override() {
        let s = load(&[
            ("TETHER_SERVER__BIND", "127.0.0.1:0"),
            ("TETHER_DATABASE__TIMEOUT_MS", "900"),
            ("DATABASE_URL", "postgres://x@h/db"),
            ("MCP_RECONNECT_TOKEN_EXPIRY", "20"),
            ("MCP_API_KEY", "0123456789abcdef"),
        ])
        .unwrap();
        assert_eq!(s.server.bind, "127.0.0.1:0");
        assert_eq!(s.database.timeout_ms, 900);
        assert_eq!(s.database.url, "postgres://x@h/db");
        assert_eq!(s.auth.token_expiry_minutes, 20);
        assert_eq!(s.auth.api_key, "0123456789abcdef");
    }

    #[test]
    fn bad_values_name_the_setting() {
        let e = load(&[("MCP_SESSION_SECRET", "short")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("MCP_SESSION_SECRET"), "{e}");
        let e = load(&[("TETHER_DATABASE__TIMEOUT_MS", "soon")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("timeout_ms"), "{e}");
        let e = load(&[("TETHER_SERVER__BIND", "nowhere")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("server.bind"), "{e}");
        let e = load(&[("TETHER_SERVER__BINDD", "x")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("bindd"), "{e}");
        let e = load(&[("MCP_RECONNECT_TOKEN_EXPIRY", "0")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("MCP_RECONNECT_TOKEN_EXPIRY"), "{e}");
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let s = load(&[
            ("MCP_SESSION_SECRET", "s3cret-s3cret-s3cret-s3cret-s3cret"),
            ("DATABASE_URL", "postgres://u:hunter2@h/db"),
        ])
        .unwrap();
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}

/// Property tests of loading the settings (issue 7 item 12, FUZZING.md): any values for every
/// `TETHER_*` setting (read from `config/default.toml`, so new settings are covered as they come),
/// the legacy names and misspelt names. `PROPTEST_CASES` sets the number of cases (256 when unset);
/// the long run is `PROPTEST_CASES=1000000 cargo test --release -p tether-api --bin tether
/// config::props`.
#[cfg(test)]
mod props {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn config() -> ProptestConfig {
        ProptestConfig {
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    /// Every setting of the default file as `section.key`.
    fn settings() -> Vec<String> {
        let mut section = "";
        let mut out = Vec::new();
        for line in DEFAULT_TOML.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name;
            } else if let Some((key, _)) = line.split_once('=').filter(|_| !line.starts_with('#')) {
                out.push(format!("{section}.{}", key.trim()));
            }
        }
        out
    }

    fn env_name(setting: &str) -> String {
        format!("TETHER_{}", setting.replace('.', "__").to_uppercase())
    }

    fn load(env: &BTreeMap<String, String>) -> Result<Settings, ConfigError> {
        let lookup = env.clone();
        Settings::load_from(
            move |name| lookup.get(name).cloned(),
            env.iter().map(|(k, v)| (k.clone(), v.clone())),
        )
    }

    /// Variable names: every setting, the legacy names, and misspelt or malformed `TETHER_` names.
    fn name() -> impl Strategy<Value = String> {
        let known: Vec<String> = settings().iter().map(|s| env_name(s)).collect();
        prop_oneof![
            6 => prop::sample::select(known),
            2 => prop::sample::select(LEGACY.iter().map(|(env, _)| (*env).to_owned()).collect::<Vec<_>>()),
            1 => "TETHER_[A-Z0-9_.\\[\\]-]{0,16}",
            1 => "TETHER_(SERVER|AUTH|WS|LIMITS)__[A-Z_]{0,12}",
        ]
        .prop_filter("TETHER_CONFIG reads a file", |n| {
            n != "TETHER_CONFIG" && !n.starts_with("TETHER_TEST_")
        })
    }

    /// Values: numbers in and out of every integer range, booleans, addresses, origin and host
    /// lists, secrets around 32 bytes, arbitrary text.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => any::<u64>().prop_map(|n| n.to_string()),
            3 => (0u64..100_000).prop_map(|n| n.to_string()),
            1 => prop::sample::select(vec![
                "0", "1", "-1", "+5", " 5", "5 ", "5.0", "1e3", "0x10", "4294967296",
                "18446744073709551616", "", "true", "false", "TRUE", "yes", "on",
            ])
            .prop_map(str::to_owned),
            2 => prop::sample::select(vec![
                "127.0.0.1:0", "0.0.0.0:8181", "[::1]:80", "127.0.0.1", "localhost:80",
                "http://a.example", "https://a.example:8443,http://b", "https://a.example/",
                "a.example,b:80", "a/b", "10.0.0.1, ::1", "10.0.0.300", "sqlite://x.db",
                "postgres://u:p@h/db", "info", "tether=debug,actix_web=warn",
            ])
            .prop_map(str::to_owned),
            1 => (28usize..36).prop_map(|n| "s".repeat(n)),
            1 => (28usize..36).prop_map(|n| format!("{},{}", "r".repeat(n), "q".repeat(40))),
            2 => any::<String>(),
        ]
    }

    /// Whether an error message names a setting: one of the settings (dotted or as its key), a
    /// section, a legacy name, or the misspelt name that was given.
    fn names_a_setting(message: &str, env: &BTreeMap<String, String>) -> bool {
        let message = message.to_lowercase();
        let mut names: Vec<String> = settings()
            .iter()
            .flat_map(|s| {
                let (section, key) = s.split_once('.').unwrap();
                [s.clone(), section.to_owned(), key.to_owned()]
            })
            .collect();
        names.extend(LEGACY.iter().map(|(env, _)| env.to_lowercase()));
        names.extend(env.keys().filter_map(|k| {
            let rest = k.strip_prefix("TETHER_")?.to_lowercase();
            (!rest.is_empty()).then_some(rest)
        }));
        // As a word: `ws` inside `allows` does not count.
        let word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        names.iter().any(|n| {
            message.match_indices(n.as_str()).any(|(at, _)| {
                !word(message[..at].chars().next_back())
                    && !word(message[at + n.len()..].chars().next())
            })
        })
    }

    proptest! {
        #![proptest_config(config())]

        /// Any environment loads or is refused with a message naming a setting, never a panic.
        /// What loads is valid, and a legacy name wins over its `TETHER_` spelling.
        #[test]
        fn any_environment_loads_or_names_the_setting(
            env in proptest::collection::btree_map(name(), value(), 0..6),
        ) {
            match load(&env) {
                Ok(s) => {
                    prop_assert!(s.policy().is_ok());
                    prop_assert!(s.server.bind.parse::<std::net::SocketAddr>().is_ok());
                    for (legacy, setting) in LEGACY {
                        let Some(want) = env.get(legacy).or_else(|| env.get(&env_name(setting)))
                        else {
                            continue;
                        };
                        match setting {
                            "database.url" => prop_assert_eq!(&s.database.url, want),
                            "auth.api_key" => prop_assert_eq!(&s.auth.api_key, want),
                            "auth.secret" => prop_assert_eq!(&s.auth.secret, want),
                            _ => prop_assert_eq!(
                                Some(s.auth.token_expiry_minutes),
                                want.parse::<u64>().ok().or(Some(s.auth.token_expiry_minutes))
                            ),
                        }
                    }
                }
                Err(e) => {
                    let e = e.to_string();
                    prop_assert!(names_a_setting(&e, &env), "{e} (env {env:?})");
                }
            }
        }
    }
}
