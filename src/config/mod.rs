//! The gateway configuration: `~/.openclaw/openclaw.json`, JSON5 (plain JSON is JSON5).
//!
//! Keys follow OpenClaw where it has one, including the spellings the hardening guides use
//! (`gateway.authToken`, a top-level `bind`). Every default is the secure choice, so a missing
//! config file is a valid, locked-down configuration. Errors name the key path and exit with
//! code 2 (see `cli`).

mod env;
mod reader;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

pub use env::EnvSource;
pub use reader::did_you_mean;
use reader::{Context, Section};

use crate::paths::{expand_tilde, Paths};

/// The environment variable that carries the gateway token (written by first boot into
/// `~/.openclaw/.env`).
pub const TOKEN_ENV: &str = "OPENCLAW_GATEWAY_TOKEN";
/// Shortest token accepted: 24 characters (the appliance writes 64 hex characters).
pub const MIN_TOKEN_LEN: usize = 24;
/// OpenClaw's gateway port.
pub const DEFAULT_PORT: u16 = 18789;

/// A configuration problem; the `Display` form names the key path or file to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {message}", file.display())]
    File { file: PathBuf, message: String },
    #[error("config key `{path}`: {message}")]
    Key { path: String, message: String },
}

impl ConfigError {
    pub fn key(path: &str, message: impl Into<String>) -> Self {
        Self::Key {
            path: path.to_string(),
            message: message.into(),
        }
    }
}

/// Where the gateway listens (`gateway.bind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bind {
    /// 127.0.0.1 only: reach it through an SSH tunnel. The default.
    Loopback,
    /// 0.0.0.0: every interface. Needs a token.
    Lan,
    /// `gateway.customBindHost`. Needs a token unless it is a loopback address.
    Custom(IpAddr),
}

impl Bind {
    pub fn ip(self) -> IpAddr {
        match self {
            Bind::Loopback => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Bind::Lan => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Bind::Custom(ip) => ip,
        }
    }

    pub fn is_loopback(self) -> bool {
        self.ip().is_loopback()
    }

    pub fn name(self) -> &'static str {
        match self {
            Bind::Loopback => "loopback",
            Bind::Lan => "lan",
            Bind::Custom(_) => "custom",
        }
    }
}

/// Who may start a conversation on a channel (`channels.<ch>.dmPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DmPolicy {
    /// Unknown senders get a pairing code; the owner approves it. The default.
    Pairing,
    /// Only senders already approved (store or `allowFrom`) are heard.
    Allowlist,
    /// Anyone.
    Open,
    /// Nobody; every message is ignored.
    Disabled,
}

impl DmPolicy {
    const CHOICES: [(&'static str, DmPolicy); 4] = [
        ("pairing", DmPolicy::Pairing),
        ("allowlist", DmPolicy::Allowlist),
        ("open", DmPolicy::Open),
        ("disabled", DmPolicy::Disabled),
    ];
}

/// How sessions are split (`session.dmScope`); see `sessions::session_key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DmScope {
    Main,
    PerPeer,
    PerChannelPeer,
    PerAccountChannelPeer,
}

/// Which sessions run tools in the Docker sandbox (`agents.defaults.sandbox.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SandboxMode {
    Off,
    NonMain,
    All,
}

/// The gateway token and where it came from (for error messages and the audit).
#[derive(Debug, Clone)]
pub struct TokenSetting {
    pub value: String,
    /// `gateway.auth.token`, `gateway.authToken` or `OPENCLAW_GATEWAY_TOKEN`.
    pub source: String,
}

/// Failed-authentication limits per client address (`gateway.auth.rateLimit`).
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    /// Failures allowed inside `window_secs` before the lockout; 0 turns the limiter off.
    pub max_attempts: u32,
    pub window_secs: u64,
    pub lockout_secs: u64,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            window_secs: 60,
            lockout_secs: 300,
        }
    }
}

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub port: u16,
    pub bind: Bind,
    pub token: Option<TokenSetting>,
    pub rate_limit: RateLimit,
    /// Extra `Host` header names accepted besides the loopback names (DNS rebinding guard).
    pub allowed_hosts: Vec<String>,
    /// Browser origins allowed to call the API; empty means no browser may.
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ChannelConfig {
    pub enabled: bool,
    pub dm_policy: DmPolicy,
    /// Senders approved in the config file, in addition to the pairing store.
    pub allow_from: Vec<String>,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            dm_policy: DmPolicy::Pairing,
            allow_from: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SecurityConfig {
    pub workspace: Option<PathBuf>,
    pub allowed_paths: Vec<PathBuf>,
    pub denied_paths: Vec<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub kind: Option<String>,
    pub api_key: Option<String>,
    pub base_url: Option<String>,
    pub model: Option<String>,
}

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub gateway: GatewayConfig,
    pub channels: BTreeMap<String, ChannelConfig>,
    pub auto_approve: bool,
    pub dm_scope: DmScope,
    pub security: SecurityConfig,
    pub sandbox_mode: SandboxMode,
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Key paths whose secret is written literally instead of as `${VAR}`.
    pub literal_secrets: Vec<String>,
    /// False when no config file existed and the defaults apply.
    pub from_file: bool,
}

impl Config {
    /// Loads the config of an installation. A missing file gives the secure defaults (the
    /// appliance's first boot may only have written `.env`); the gateway logs that it
    /// found none, so a mistyped `--config` is visible.
    pub fn load(paths: &Paths) -> Result<Self, ConfigError> {
        let env = EnvSource::load(&paths.env_file())?;
        let text = match std::fs::read_to_string(&paths.config) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(ConfigError::File {
                    file: paths.config.clone(),
                    message: format!("cannot read the config file: {e}"),
                })
            }
        };
        let mut config = match &text {
            Some(text) => Self::parse(text, &env).map_err(|e| match e {
                ConfigError::File { message, .. } => ConfigError::File {
                    file: paths.config.clone(),
                    message,
                },
                key => key,
            })?,
            None => Self::parse("{}", &env)?,
        };
        config.from_file = text.is_some();
        Ok(config)
    }

    /// Parses config text; `env` supplies `${VAR}` values and `OPENCLAW_GATEWAY_TOKEN`.
    pub fn parse(text: &str, env: &EnvSource) -> Result<Self, ConfigError> {
        let tree: serde_json::Value = json5::from_str(text).map_err(|e| ConfigError::File {
            file: PathBuf::from("config"),
            message: format!("not valid JSON5: {e}"),
        })?;
        let ctx = Context {
            env,
            literal_secrets: Default::default(),
        };
        let mut root = Section::root(&tree, &ctx)?;
        let top_bind = read_bind_mode(&mut root, "bind")?;
        let mut config = Self::read(&mut root, top_bind, env)?;
        root.finish()?;
        config.literal_secrets = ctx.literal_secrets.into_inner();
        Ok(config)
    }

    fn read(
        root: &mut Section,
        top_bind: Option<BindMode>,
        env: &EnvSource,
    ) -> Result<Self, ConfigError> {
        let gateway = read_gateway(root, top_bind, env)?;

        let mut channels = BTreeMap::new();
        for (name, mut section) in root.named_sections("channels")? {
            if !crate::pairing::is_valid_channel_name(&name) {
                return Err(ConfigError::key(
                    &format!("channels.{name}"),
                    "channel names are 1 to 64 letters, digits, `-` or `_`",
                ));
            }
            let defaults = ChannelConfig::default();
            let channel = ChannelConfig {
                enabled: section.bool("enabled")?.unwrap_or(defaults.enabled),
                dm_policy: section
                    .choice("dmPolicy", &DmPolicy::CHOICES)?
                    .unwrap_or(defaults.dm_policy),
                allow_from: section.strings("allowFrom")?.unwrap_or_default(),
            };
            // Channel adapters' credentials: read here so literal secrets get audited.
            section.secret("botToken")?;
            section.secret("token")?;
            section.finish()?;
            channels.insert(name, channel);
        }

        let mut auto_approve = false;
        if let Some(mut pairing) = root.section("pairing")? {
            auto_approve = pairing.bool("autoApprove")?.unwrap_or(false);
            pairing.finish()?;
        }

        let mut dm_scope = DmScope::PerChannelPeer;
        if let Some(mut session) = root.section("session")? {
            dm_scope = session
                .choice(
                    "dmScope",
                    &[
                        ("main", DmScope::Main),
                        ("per-peer", DmScope::PerPeer),
                        ("per-channel-peer", DmScope::PerChannelPeer),
                        ("per-account-channel-peer", DmScope::PerAccountChannelPeer),
                    ],
                )?
                .unwrap_or(dm_scope);
            session.finish()?;
        }

        let security = read_security(root)?;

        let mut sandbox_mode = SandboxMode::NonMain;
        if let Some(mut agents) = root.section("agents")? {
            if let Some(mut defaults) = agents.section("defaults")? {
                if let Some(mut sandbox) = defaults.section("sandbox")? {
                    sandbox_mode = sandbox
                        .choice(
                            "mode",
                            &[
                                ("off", SandboxMode::Off),
                                ("non-main", SandboxMode::NonMain),
                                ("all", SandboxMode::All),
                            ],
                        )?
                        .unwrap_or(sandbox_mode);
                    sandbox.finish()?;
                }
                defaults.finish()?;
            }
            agents.finish()?;
        }

        let mut providers = BTreeMap::new();
        for (name, mut section) in root.named_sections("providers")? {
            let provider = ProviderConfig {
                kind: section.string("type")?,
                api_key: section.secret("apiKey")?,
                base_url: section.string("baseUrl")?,
                model: section.string("model")?,
            };
            section.finish()?;
            providers.insert(name, provider);
        }

        Ok(Self {
            gateway,
            channels,
            auto_approve,
            dm_scope,
            security,
            sandbox_mode,
            providers,
            literal_secrets: Vec::new(),
            from_file: false,
        })
    }

    /// The settings of `channel`; channels absent from the config get the secure defaults.
    pub fn channel(&self, channel: &str) -> ChannelConfig {
        self.channels.get(channel).cloned().unwrap_or_default()
    }

    /// The fail-closed rules the gateway enforces before it listens: a token of at least
    /// 24 characters, and no non-loopback bind without one.
    pub fn check_startable(&self) -> Result<(), ConfigError> {
        let gw = &self.gateway;
        match &gw.token {
            Some(token) if token.value.chars().count() < MIN_TOKEN_LEN => Err(ConfigError::key(
                &token.source,
                format!(
                    "the gateway token is {} characters; at least {MIN_TOKEN_LEN} are required \
                     (make one with `clawfort token`)",
                    token.value.chars().count()
                ),
            )),
            None if !gw.bind.is_loopback() => Err(ConfigError::key(
                "gateway.bind",
                format!(
                    "refusing to listen on {} ({}) without a token: set {TOKEN_ENV} in {} or \
                     gateway.auth.token, or bind to loopback",
                    gw.bind.ip(),
                    gw.bind.name(),
                    "~/.openclaw/.env"
                ),
            )),
            _ => Ok(()),
        }
    }
}

#[derive(Clone, Copy)]
enum BindMode {
    Loopback,
    Lan,
    Custom,
}

fn read_bind_mode(
    section: &mut Section,
    key: &'static str,
) -> Result<Option<BindMode>, ConfigError> {
    section.choice(
        key,
        &[
            ("loopback", BindMode::Loopback),
            ("lan", BindMode::Lan),
            ("custom", BindMode::Custom),
        ],
    )
}

fn read_gateway(
    root: &mut Section,
    top_bind: Option<BindMode>,
    env: &EnvSource,
) -> Result<GatewayConfig, ConfigError> {
    let mut port = DEFAULT_PORT;
    let mut bind_mode = top_bind;
    let mut custom_host = None;
    let mut token = None;
    let mut rate_limit = RateLimit::default();
    let mut allowed_hosts = Vec::new();
    let mut allowed_origins = Vec::new();

    if let Some(mut gw) = root.section("gateway")? {
        port = gw.integer("port", 1, 65535)?.map_or(port, |p| p as u16);
        if let Some(mode) = read_bind_mode(&mut gw, "bind")? {
            if top_bind.is_some() {
                return Err(ConfigError::key(
                    "gateway.bind",
                    "set both here and as the top-level `bind`; keep one",
                ));
            }
            bind_mode = Some(mode);
        }
        if let Some(host) = gw.string("customBindHost")? {
            let ip = host.parse::<IpAddr>().map_err(|_| {
                ConfigError::key(
                    &gw.key_path("customBindHost"),
                    format!("\"{host}\" is not an IP address"),
                )
            })?;
            custom_host = Some(ip);
        }
        if let Some(value) = gw.secret("authToken")? {
            token = Some(TokenSetting {
                value,
                source: "gateway.authToken".into(),
            });
        }
        if let Some(mut auth) = gw.section("auth")? {
            if let Some(mode) = auth.string("mode")? {
                if mode != "token" {
                    return Err(ConfigError::key(
                        "gateway.auth.mode",
                        format!("\"{mode}\" is not supported; clawfort only uses \"token\""),
                    ));
                }
            }
            if let Some(value) = auth.secret("token")? {
                if token.as_ref().is_some_and(|t| t.value != value) {
                    return Err(ConfigError::key(
                        "gateway.auth.token",
                        "differs from gateway.authToken; keep one of them",
                    ));
                }
                token = Some(TokenSetting {
                    value,
                    source: "gateway.auth.token".into(),
                });
            }
            if let Some(mut rl) = auth.section("rateLimit")? {
                let d = RateLimit::default();
                rate_limit = RateLimit {
                    max_attempts: rl
                        .integer("maxAttempts", 0, 1_000_000)?
                        .map_or(d.max_attempts, |v| v as u32),
                    window_secs: rl
                        .integer("windowSeconds", 1, 86_400)?
                        .unwrap_or(d.window_secs),
                    lockout_secs: rl
                        .integer("lockoutSeconds", 1, 86_400)?
                        .unwrap_or(d.lockout_secs),
                };
                rl.finish()?;
            }
            auth.finish()?;
        }
        allowed_hosts = gw.strings("allowedHosts")?.unwrap_or_default();
        allowed_origins = gw.strings("allowedOrigins")?.unwrap_or_default();
        gw.finish()?;
    }

    let bind = match (bind_mode.unwrap_or(BindMode::Loopback), custom_host) {
        (BindMode::Custom, Some(ip)) => Bind::Custom(ip),
        (BindMode::Custom, None) => {
            return Err(ConfigError::key(
                "gateway.customBindHost",
                "required when gateway.bind is \"custom\" (the IP address to listen on)",
            ))
        }
        (_, Some(_)) => {
            return Err(ConfigError::key(
                "gateway.customBindHost",
                "only used with gateway.bind: \"custom\"; remove it or set the bind",
            ))
        }
        (BindMode::Loopback, None) => Bind::Loopback,
        (BindMode::Lan, None) => Bind::Lan,
    };

    let token = token.or_else(|| {
        env.get(TOKEN_ENV).map(|value| TokenSetting {
            value,
            source: TOKEN_ENV.into(),
        })
    });
    if let Some(t) = &token {
        if let Some(bad) = t.value.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(ConfigError::key(
                &t.source,
                format!(
                    "the token contains {bad:?}; use printable ASCII without spaces \
                     (`clawfort token` makes one)"
                ),
            ));
        }
    }

    Ok(GatewayConfig {
        port,
        bind,
        token,
        rate_limit,
        allowed_hosts,
        allowed_origins,
    })
}

fn read_security(root: &mut Section) -> Result<SecurityConfig, ConfigError> {
    let to_paths = |v: Vec<String>| v.iter().map(|p| expand_tilde(p)).collect::<Vec<_>>();
    let mut security = SecurityConfig {
        workspace: None,
        allowed_paths: Vec::new(),
        denied_paths: to_paths(vec!["/etc".into(), "/root".into(), "~/.ssh".into()]),
    };
    if let Some(mut section) = root.section("security")? {
        security.workspace = section.string("workspace")?.map(|p| expand_tilde(&p));
        if let Some(paths) = section.strings("allowedPaths")? {
            security.allowed_paths = to_paths(paths);
        }
        if let Some(paths) = section.strings("deniedPaths")? {
            security.denied_paths = to_paths(paths);
        }
        section.finish()?;
    }
    Ok(security)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(
            text,
            &EnvSource::fixed([("ANTHROPIC_API_KEY".into(), "sk-ant-test".into())]),
        )
    }

    #[test]
    fn defaults_are_secure() {
        let c = parse("{}").unwrap();
        assert_eq!(c.gateway.bind, Bind::Loopback);
        assert_eq!(c.gateway.port, DEFAULT_PORT);
        assert!(c.gateway.token.is_none());
        assert!(!c.auto_approve);
        assert_eq!(c.channel("telegram").dm_policy, DmPolicy::Pairing);
        assert_eq!(c.sandbox_mode, SandboxMode::NonMain);
        assert_eq!(c.dm_scope, DmScope::PerChannelPeer);
    }

    #[test]
    fn reads_the_guides_spellings() {
        let c = parse(
            r#"{
              // JSON5: comments and trailing commas
              bind: "loopback",
              gateway: { port: 3000, authToken: "a3f8b2c4d5e6f7a8b9c0d1e2f3a4b5c6", },
              pairing: { autoApprove: true },
              session: { dmScope: "per-channel-peer" },
              security: { allowedPaths: ["/srv/a"], deniedPaths: ["/etc", "/root"] },
              providers: { anthropic: { type: "anthropic", apiKey: "${ANTHROPIC_API_KEY}" } },
              channels: { telegram: { dmPolicy: "allowlist", allowFrom: ["42"] } },
              agents: { defaults: { sandbox: { mode: "all" } } },
            }"#,
        )
        .unwrap();
        assert_eq!(c.gateway.port, 3000);
        assert_eq!(
            c.gateway.token.as_ref().unwrap().source,
            "gateway.authToken"
        );
        assert!(c.auto_approve);
        assert_eq!(
            c.providers["anthropic"].api_key.as_deref(),
            Some("sk-ant-test")
        );
        assert_eq!(c.channel("telegram").dm_policy, DmPolicy::Allowlist);
        assert_eq!(c.sandbox_mode, SandboxMode::All);
        assert_eq!(c.literal_secrets, vec!["gateway.authToken".to_string()]);
    }

    #[test]
    fn unknown_key_suggests_the_right_one() {
        let err = parse(r#"{ gateway: { prot: 1 } }"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("gateway.prot"), "{err}");
        assert!(err.contains("did you mean `gateway.port`"), "{err}");
        let err = parse(r#"{ channels: { tg: { dmpolicy: "open" } } }"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("channels.tg.dmpolicy"), "{err}");
        assert!(err.contains("channels.tg.dmPolicy"), "{err}");
    }

    #[test]
    fn wrong_types_and_values_name_the_key() {
        for (text, key) in [
            (r#"{ gateway: { port: "x" } }"#, "gateway.port"),
            (r#"{ gateway: { port: 70000 } }"#, "gateway.port"),
            (r#"{ gateway: { bind: "everywhere" } }"#, "gateway.bind"),
            (
                r#"{ pairing: { autoApprove: "yes" } }"#,
                "pairing.autoApprove",
            ),
            (
                r#"{ security: { deniedPaths: [1] } }"#,
                "security.deniedPaths[0]",
            ),
            (
                r#"{ gateway: { auth: { token: "${MISSING_VAR}" } } }"#,
                "gateway.auth.token",
            ),
            (
                r#"{ bind: "lan", gateway: { bind: "lan" } }"#,
                "gateway.bind",
            ),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}`")), "{text}: {err}");
        }
    }

    #[test]
    fn fail_closed_rules() {
        let c = parse(r#"{ gateway: { bind: "lan" } }"#).unwrap();
        let err = c.check_startable().unwrap_err().to_string();
        assert!(err.contains("gateway.bind"), "{err}");
        let c = parse(r#"{ gateway: { auth: { token: "short" } } }"#).unwrap();
        let err = c.check_startable().unwrap_err().to_string();
        assert!(err.contains("gateway.auth.token"), "{err}");
        assert!(parse("{}").unwrap().check_startable().is_ok());
    }
}
