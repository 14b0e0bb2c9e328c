//! The gateway configuration: `~/.openclaw/openclaw.json`, JSON5 (plain JSON is JSON5).
//!
//! OpenClaw's schema is the contract: every OpenClaw key is accepted (`keys`), the ones
//! clawfort implements are read into typed values (here and in `agent`), the rest are named
//! in `Config::unimplemented`, and anything else is a typo. clawfort's few extensions (the
//! hardening guides' `gateway.authToken` and top-level `bind`, `budget`, ...) are listed in
//! `keys`. Every default is the secure choice, so a missing config file is a valid,
//! locked-down configuration. Errors name the key path, all of them in one run, and exit with
//! code 2 (see `cli`).

mod agent;
pub(crate) mod env;
mod exec;
mod keys;
pub(crate) mod nesting;
mod reader;
mod sandbox;
mod tools;
mod web_fetch;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

pub use agent::{
    AgentModel, Budget, ExecApprovalsConfig, GroupPolicy, LazySecret, MaxTokensField, ModelConfig,
    ModelCost, ModelRef, ProviderApi, ProviderConfig, TelegramConfig, TelegramGroup,
};
pub use env::EnvSource;
pub use exec::{ExecAsk, ExecConfig, ExecSecurity};
pub use reader::did_you_mean;
use reader::{Context, Section};
pub use sandbox::{check_bind_source, BindMount, SandboxConfig, SandboxScope, WorkspaceAccess};
pub use tools::{ToolPolicy, ToolProfile};
pub use web_fetch::WebFetchConfig;

use crate::paths::{expand_tilde, Paths};

/// The environment variable that carries the gateway token (written by first boot into
/// `~/.openclaw/.env`).
pub const TOKEN_ENV: &str = "OPENCLAW_GATEWAY_TOKEN";
/// Shortest token accepted: 24 characters (the appliance writes 64 hex characters).
pub const MIN_TOKEN_LEN: usize = 24;
/// OpenClaw's gateway port.
pub const DEFAULT_PORT: u16 = 18789;

/// A configuration problem; the `Display` form names the key path or file to fix.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {message}", file.display())]
    File { file: PathBuf, message: String },
    #[error("config key `{path}`: {message}")]
    Key { path: String, message: String },
    /// Several problems found in one run, one per line.
    #[error("{} configuration problems:\n{}", .0.len(), list(.0))]
    Many(Vec<ConfigError>),
}

/// Most problems listed one per line; a file of thousands of typos is not printed whole.
const MAX_LISTED: usize = 50;

fn list(errors: &[ConfigError]) -> String {
    let mut lines: Vec<String> = errors
        .iter()
        .take(MAX_LISTED)
        .map(|e| format!("  {e}"))
        .collect();
    if errors.len() > MAX_LISTED {
        lines.push(format!("  ... and {} more", errors.len() - MAX_LISTED));
    }
    lines.join("\n")
}

impl ConfigError {
    /// One error as itself, several as `Many`.
    pub fn many(mut errors: Vec<ConfigError>) -> Self {
        if errors.len() == 1 {
            errors.remove(0)
        } else {
            Self::Many(errors)
        }
    }

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
    /// The config spelling (`"allowlist"`).
    pub fn name(self) -> &'static str {
        Self::CHOICES
            .iter()
            .find(|(_, p)| *p == self)
            .map_or("", |(n, _)| n)
    }

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
    /// `exemptLoopback`: loopback clients are not counted. Off by default in clawfort (OpenClaw
    /// defaults it on): on the appliance every client, an attacker with a tunnel included,
    /// arrives from 127.0.0.1 through SSH, so exempting loopback would switch the limiter off.
    pub exempt_loopback: bool,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            window_secs: 60,
            lockout_secs: 300,
            exempt_loopback: false,
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

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub gateway: GatewayConfig,
    pub channels: BTreeMap<String, ChannelConfig>,
    pub auto_approve: bool,
    pub dm_scope: DmScope,
    pub security: SecurityConfig,
    pub sandbox_mode: SandboxMode,
    /// The rest of `agents.defaults.sandbox`.
    pub sandbox: SandboxConfig,
    /// `tools.exec`.
    pub exec: ExecConfig,
    /// `models.providers.<id>`.
    pub providers: BTreeMap<String, ProviderConfig>,
    /// `agents.defaults.model`.
    pub agent_model: Option<AgentModel>,
    /// `agents.defaults.workspace`.
    pub agent_workspace: Option<PathBuf>,
    /// `channels.telegram` (its policy keys are in `channels`).
    pub telegram: Option<TelegramConfig>,
    pub budget: Budget,
    /// `tools.profile` / `allow` / `alsoAllow` / `deny` / `fs.workspaceOnly`.
    pub tools: ToolPolicy,
    /// `tools.web.fetch`.
    pub web_fetch: WebFetchConfig,
    /// `commands.ownerAllowFrom` as written; see [`Config::owners`].
    pub owner_allow_from: Vec<String>,
    /// Key paths whose secret is written literally instead of as `${VAR}`.
    pub literal_secrets: Vec<String>,
    /// OpenClaw keys in the file that clawfort does not act on yet, sorted.
    pub unimplemented: Vec<String>,
    /// Valid OpenClaw settings clawfort cannot honour safely: the gateway refuses to start
    /// with them and the audit reports each as critical, in the same words.
    pub refusals: Vec<ConfigError>,
    /// Where `${VAR}` values come from, for the settings resolved when used (`LazySecret`).
    pub env: EnvSource,
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
                other => other,
            })?,
            None => Self::parse("{}", &env)?,
        };
        config.from_file = text.is_some();
        Ok(config)
    }

    /// Parses config text; `env` supplies `${VAR}` values and `OPENCLAW_GATEWAY_TOKEN`.
    /// Every problem is reported at once (`ConfigError::Many`).
    pub fn parse(text: &str, env: &EnvSource) -> Result<Self, ConfigError> {
        let tree = parse_tree(text)?;
        let ctx = Context::new(env);
        for error in keys::unknown_keys(&tree) {
            ctx.error(error);
        }
        let mut refusals = Vec::new();
        let config = Section::root(&tree, &ctx).map(|mut root| {
            let config = Self::read(&mut root, env, &mut refusals);
            root.finish();
            config
        });
        let errors = ctx.errors.into_inner();
        let (Some(mut config), true) = (config, errors.is_empty()) else {
            return Err(ConfigError::many(errors));
        };
        config.literal_secrets = ctx.literal_secrets.into_inner();
        config.unimplemented = outermost(ctx.unimplemented.into_inner());
        config.refusals = refusals;
        Ok(config)
    }

    fn read(root: &mut Section, env: &EnvSource, refusals: &mut Vec<ConfigError>) -> Self {
        let top_bind = read_bind_mode(root, "bind");
        let gateway = read_gateway(root, top_bind, env, refusals);

        let mut channels = BTreeMap::new();
        let mut telegram = None;
        for (name, mut section) in root.named_sections("channels") {
            if name == "defaults" || name == "modelByChannel" {
                // OpenClaw's shared channel settings, not a channel.
                section.not_wired_here();
                continue;
            }
            if !crate::pairing::is_valid_channel_name(&name) {
                section.ctx().error(ConfigError::key(
                    &format!("channels.{name}"),
                    "channel names are 1 to 64 letters, digits, `-` or `_`",
                ));
                continue;
            }
            let defaults = ChannelConfig::default();
            let channel = ChannelConfig {
                enabled: section.bool("enabled").unwrap_or(defaults.enabled),
                dm_policy: section
                    .choice("dmPolicy", &DmPolicy::CHOICES)
                    .unwrap_or(defaults.dm_policy),
                allow_from: section.strings("allowFrom").unwrap_or_default(),
            };
            if name == "telegram" {
                telegram = Some(agent::read_telegram(&mut section));
            } else {
                // Other adapters' credentials: read so literal secrets get audited.
                section.note_literal_secret("botToken");
                section.note_literal_secret("token");
            }
            section.finish();
            channels.insert(name, channel);
        }

        let mut auto_approve = false;
        if let Some(mut pairing) = root.section("pairing") {
            auto_approve = pairing.bool("autoApprove").unwrap_or(false);
            pairing.finish();
        }

        let mut dm_scope = DmScope::PerChannelPeer;
        if let Some(mut session) = root.section("session") {
            dm_scope = session
                .choice(
                    "dmScope",
                    &[
                        ("main", DmScope::Main),
                        ("per-peer", DmScope::PerPeer),
                        ("per-channel-peer", DmScope::PerChannelPeer),
                        ("per-account-channel-peer", DmScope::PerAccountChannelPeer),
                    ],
                )
                .unwrap_or(dm_scope);
            session.finish();
        }

        let security = read_security(root);

        let mut sandbox_mode = SandboxMode::NonMain;
        let mut sandbox = SandboxConfig::default();
        let mut agent_model = None;
        let mut agent_workspace = None;
        if let Some(mut agents) = root.section("agents") {
            if let Some(mut defaults) = agents.section("defaults") {
                if let Some(mut section) = defaults.section("sandbox") {
                    let (mode, config) = sandbox::read_sandbox(&mut section);
                    sandbox_mode = mode.unwrap_or(sandbox_mode);
                    sandbox = config;
                    section.finish();
                }
                agent_model = agent::read_agent_model(&mut defaults);
                agent_workspace = agent::read_workspace(&mut defaults);
                defaults.finish();
            }
            agents.finish();
        }

        let (tools, exec, web_fetch) = match root.section("tools") {
            None => Default::default(),
            Some(mut section) => {
                let policy = tools::read_tool_policy(&mut section);
                let exec = exec::read_exec(&mut section, refusals);
                let web_fetch = web_fetch::read_web_fetch(&mut section);
                section.finish();
                (policy, exec, web_fetch)
            }
        };
        let providers = agent::read_models(root);
        let budget = agent::read_budget(root);
        let owner_allow_from = agent::read_owner_allow_from(root);

        Self {
            gateway,
            channels,
            auto_approve,
            dm_scope,
            security,
            sandbox_mode,
            sandbox,
            exec,
            providers,
            agent_model,
            agent_workspace,
            telegram,
            budget,
            tools,
            web_fetch,
            owner_allow_from,
            literal_secrets: Vec::new(),
            unimplemented: Vec::new(),
            refusals: Vec::new(),
            env: env.clone(),
            from_file: false,
        }
    }

    /// The owner's ids on `channel` (budget alerts, `/stop`, `/new`, `/status`), and the key
    /// they come from.
    ///
    /// As in OpenClaw: the entries of `commands.ownerAllowFrom` for this channel
    /// (`"telegram:123"`, Telegram also as `"tg:123"`; a bare `"123"` counts for every
    /// channel; `"*"` names nobody); when none applies, the entries of
    /// `channels.<channel>.allowFrom` (with a `<channel>:` prefix removed, `"*"` dropped),
    /// since in a single-owner setup those are the people the owner declared as themselves.
    pub fn owners(&self, channel: &str) -> (Vec<String>, String) {
        let for_channel = |entry: &str| -> Option<String> {
            let entry = entry.trim();
            let id = match entry.split_once(':') {
                Some((prefix, id)) if crate::pairing::is_valid_channel_name(prefix) => {
                    let prefix = prefix.to_ascii_lowercase();
                    let ours = prefix == channel || (channel == "telegram" && prefix == "tg");
                    ours.then_some(id.trim())?
                }
                _ => entry,
            };
            (!id.is_empty() && id != "*").then(|| id.to_owned())
        };
        let explicit: Vec<String> = self
            .owner_allow_from
            .iter()
            .filter_map(|e| for_channel(e))
            .collect();
        if !explicit.is_empty() {
            return (explicit, "commands.ownerAllowFrom".to_owned());
        }
        let fallback = self
            .channel(channel)
            .allow_from
            .iter()
            .filter_map(|e| for_channel(e))
            .collect();
        (fallback, format!("channels.{channel}.allowFrom"))
    }

    /// The settings of `channel`; channels absent from the config get the secure defaults.
    pub fn channel(&self, channel: &str) -> ChannelConfig {
        self.channels.get(channel).cloned().unwrap_or_default()
    }

    /// Everything the gateway refuses to start with: the settings it cannot honour
    /// (`refusals`), a token under 24 characters, a non-loopback bind without a token.
    pub fn start_problems(&self) -> Vec<ConfigError> {
        let mut problems: Vec<ConfigError> = self.refusals.clone();
        let gw = &self.gateway;
        match &gw.token {
            Some(token) if token.value.chars().count() < MIN_TOKEN_LEN => {
                problems.push(ConfigError::key(
                    &token.source,
                    format!(
                        "the gateway token is {} characters; at least {MIN_TOKEN_LEN} are \
                         required (make one with `clawfort token`)",
                        token.value.chars().count()
                    ),
                ))
            }
            None if !gw.bind.is_loopback() => problems.push(ConfigError::key(
                "gateway.bind",
                format!(
                    "refusing to listen on {} ({}) without a token: set {TOKEN_ENV} in {} or \
                     gateway.auth.token, or bind to loopback",
                    gw.bind.ip(),
                    gw.bind.name(),
                    "~/.openclaw/.env"
                ),
            )),
            _ => {}
        }
        problems
    }

    /// The fail-closed rules the gateway enforces before it listens (`start_problems`).
    pub fn check_startable(&self) -> Result<(), ConfigError> {
        let problems = self.start_problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::many(problems))
        }
    }
}

/// Config text as a JSON tree, before any key is looked at: the nesting limit is checked
/// before the JSON5 parser recurses. `clawfort setup` merges into this tree.
pub fn parse_tree(text: &str) -> Result<serde_json::Value, ConfigError> {
    if let Some(line) = nesting::too_deep(text) {
        return Err(ConfigError::File {
            file: PathBuf::from("config"),
            message: format!(
                "nested deeper than {} levels at line {line}; OpenClaw's configuration is \
                 never that deep",
                nesting::MAX_DEPTH
            ),
        });
    }
    json5::from_str(text).map_err(|e| ConfigError::File {
        file: PathBuf::from("config"),
        message: format!("not valid JSON5: {e}"),
    })
}

/// Drops every path that has an ancestor in the list (`models` covers `models.providers.x`).
fn outermost(mut paths: Vec<String>) -> Vec<String> {
    paths.sort();
    paths.dedup();
    let mut out: Vec<String> = Vec::new();
    for path in paths {
        let covered = out.iter().any(|kept| {
            path.strip_prefix(kept.as_str())
                .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
        });
        if !covered {
            out.push(path);
        }
    }
    out
}

#[derive(Clone, Copy)]
enum BindMode {
    Loopback,
    Lan,
    Custom,
    /// OpenClaw's `auto` and `tailnet`: not implemented, the gateway refuses them.
    Unsupported(&'static str),
}

fn read_bind_mode(section: &mut Section, key: &'static str) -> Option<BindMode> {
    section.choice(
        key,
        &[
            ("loopback", BindMode::Loopback),
            ("lan", BindMode::Lan),
            ("custom", BindMode::Custom),
            ("auto", BindMode::Unsupported("auto")),
            ("tailnet", BindMode::Unsupported("tailnet")),
        ],
    )
}

fn read_gateway(
    root: &mut Section,
    top_bind: Option<BindMode>,
    env: &EnvSource,
    refusals: &mut Vec<ConfigError>,
) -> GatewayConfig {
    let mut port = DEFAULT_PORT;
    let mut bind_mode = top_bind;
    let mut custom_host = None;
    let mut token = None;
    let mut rate_limit = RateLimit::default();
    let mut allowed_hosts = Vec::new();
    let mut allowed_origins = Vec::new();

    if let Some(mut gw) = root.section("gateway") {
        if let Some(GatewayMode::Remote) = gw.choice(
            "mode",
            &[
                ("local", GatewayMode::Local),
                ("remote", GatewayMode::Remote),
            ],
        ) {
            refusals.push(ConfigError::key(
                "gateway.mode",
                "\"remote\" means this machine only connects to a gateway elsewhere \
                 (gateway.remote) and runs none itself; clawfort is the gateway: set \
                 gateway.mode to \"local\" on the machine that runs it",
            ));
        }
        port = gw.integer("port", 1, 65535).map_or(port, |p| p as u16);
        if let Some(mode) = read_bind_mode(&mut gw, "bind") {
            if top_bind.is_some() {
                gw.error(
                    "bind",
                    "set both here and as the top-level `bind`; keep one",
                );
            }
            bind_mode = Some(mode);
        }
        if let Some(host) = gw.string("customBindHost") {
            match host.parse::<IpAddr>() {
                Ok(ip) => custom_host = Some(ip),
                Err(_) => gw.error("customBindHost", format!("\"{host}\" is not an IP address")),
            }
        }
        if let Some(value) = gw.secret("authToken") {
            token = Some(TokenSetting {
                value,
                source: "gateway.authToken".into(),
            });
        }
        if let Some(mut auth) = gw.section("auth") {
            read_auth(&mut auth, &mut token, &mut rate_limit, refusals);
            auth.finish();
        }
        allowed_hosts = gw.strings("allowedHosts").unwrap_or_default();
        allowed_origins = gw.strings("allowedOrigins").unwrap_or_default();
        gw.finish();
    }

    let bind = match (bind_mode.unwrap_or(BindMode::Loopback), custom_host) {
        (BindMode::Custom, Some(ip)) => Bind::Custom(ip),
        (BindMode::Custom, None) => {
            root.ctx().error(ConfigError::key(
                "gateway.customBindHost",
                "required when gateway.bind is \"custom\" (the IP address to listen on)",
            ));
            Bind::Loopback
        }
        (_, Some(_)) => {
            root.ctx().error(ConfigError::key(
                "gateway.customBindHost",
                "only used with gateway.bind: \"custom\"; remove it or set the bind",
            ));
            Bind::Loopback
        }
        (BindMode::Unsupported(name), None) => {
            refusals.push(ConfigError::key(
                "gateway.bind",
                format!(
                    "\"{name}\" is not implemented by clawfort; use \"loopback\" (and an SSH \
                     tunnel), \"lan\" or \"custom\""
                ),
            ));
            Bind::Loopback
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
            root.ctx().error(ConfigError::key(
                &t.source,
                format!(
                    "the token contains {bad:?}; use printable ASCII without spaces \
                     (`clawfort token` makes one)"
                ),
            ));
        }
    }

    GatewayConfig {
        port,
        bind,
        token,
        rate_limit,
        allowed_hosts,
        allowed_origins,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum GatewayMode {
    Local,
    Remote,
}

fn read_auth(
    auth: &mut Section,
    token: &mut Option<TokenSetting>,
    rate_limit: &mut RateLimit,
    refusals: &mut Vec<ConfigError>,
) {
    if let Some(mode) = auth.choice(
        "mode",
        &[
            ("token", "token"),
            ("none", "none"),
            ("password", "password"),
            ("trusted-proxy", "trusted-proxy"),
        ],
    ) {
        if mode != "token" {
            refusals.push(ConfigError::key(
                "gateway.auth.mode",
                format!(
                    "\"{mode}\" is not implemented by clawfort, which authenticates only with \
                     a token; set gateway.auth.mode to \"token\""
                ),
            ));
        }
    }
    if auth.is_object("token") {
        auth.get("token");
        refusals.push(ConfigError::key(
            "gateway.auth.token",
            "a SecretRef object is not implemented by clawfort; write \
             \"${OPENCLAW_GATEWAY_TOKEN}\" and put the token into ~/.openclaw/.env",
        ));
    } else if let Some(value) = auth.secret("token") {
        if token.as_ref().is_some_and(|t| t.value != value) {
            auth.error("token", "differs from gateway.authToken; keep one of them");
        }
        *token = Some(TokenSetting {
            value,
            source: "gateway.auth.token".into(),
        });
    }
    if let Some(mut rl) = auth.section("rateLimit") {
        let d = RateLimit::default();
        let window = seconds(&mut rl, "windowMs", "windowSeconds");
        let lockout = seconds(&mut rl, "lockoutMs", "lockoutSeconds");
        *rate_limit = RateLimit {
            max_attempts: rl
                .integer("maxAttempts", 0, 1_000_000)
                .map_or(d.max_attempts, |v| v as u32),
            window_secs: window.unwrap_or(d.window_secs),
            lockout_secs: lockout.unwrap_or(d.lockout_secs),
            exempt_loopback: rl.bool("exemptLoopback").unwrap_or(d.exempt_loopback),
        };
        // Carried in `RateLimit`; listed as not implemented until the limiter reads it.
        rl.not_wired("exemptLoopback");
        rl.finish();
    }
}

/// A duration in OpenClaw's milliseconds key (rounded up to whole seconds) or clawfort's
/// older seconds key; both at once is an error.
fn seconds(rl: &mut Section, ms_key: &'static str, secs_key: &'static str) -> Option<u64> {
    let ms = rl.integer(ms_key, 1, 86_400_000);
    let secs = rl.integer(secs_key, 1, 86_400);
    match (ms, secs) {
        (Some(_), Some(_)) => {
            rl.error(
                secs_key,
                format!("set together with `{ms_key}`; keep `{ms_key}`"),
            );
            None
        }
        (Some(ms), None) => Some(ms.div_ceil(1000)),
        (None, secs) => secs,
    }
}

fn read_security(root: &mut Section) -> SecurityConfig {
    let to_paths = |v: Vec<String>| v.iter().map(|p| expand_tilde(p)).collect::<Vec<_>>();
    let mut security = SecurityConfig {
        workspace: None,
        allowed_paths: Vec::new(),
        denied_paths: to_paths(vec!["/etc".into(), "/root".into(), "~/.ssh".into()]),
    };
    if let Some(mut section) = root.section("security") {
        security.workspace = section.string("workspace").map(|p| expand_tilde(&p));
        if let Some(paths) = section.strings("allowedPaths") {
            security.allowed_paths = to_paths(paths);
        }
        if let Some(paths) = section.strings("deniedPaths") {
            security.denied_paths = to_paths(paths);
        }
        section.finish();
    }
    security
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
              models: { providers: { anthropic: { api: "anthropic-messages", apiKey: "${ANTHROPIC_API_KEY}" } } },
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
            c.providers["anthropic"]
                .api_key
                .as_ref()
                .map(|k| k.resolve(&c.env).unwrap())
                .as_deref(),
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
                r#"{ security: { deniedPaths: [true] } }"#,
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

    #[test]
    fn compat_max_tokens_field() {
        let c = parse(
            r#"{ models: { providers: { o: { api: "openai-completions",
                 models: [{ id: "a", compat: { maxTokensField: "max_completion_tokens" } },
                          { id: "b" }] } } } }"#,
        )
        .unwrap();
        let models = &c.providers["o"].models;
        assert_eq!(
            models[0].max_tokens_field,
            Some(MaxTokensField::MaxCompletionTokens)
        );
        assert_eq!(models[1].max_tokens_field, None);
        let err = parse(
            r#"{ models: { providers: { o: { api: "openai-completions",
                 models: [{ id: "a", compat: { maxTokensField: "max_output" } }] } } } }"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("models.providers.o.models[0].compat.maxTokensField")
                && err.contains("max_completion_tokens"),
            "{err}"
        );
    }

    #[test]
    fn the_owner_comes_from_owner_allow_from_then_allow_from() {
        let c = parse(
            r#"{ commands: { ownerAllowFrom: ["telegram:111", "TG: 222", "discord:9", 333, "*"] },
                 channels: { telegram: { allowFrom: ["444"] } } }"#,
        )
        .unwrap();
        let (ids, source) = c.owners("telegram");
        assert_eq!(ids, ["111", "222", "333"]);
        assert_eq!(source, "commands.ownerAllowFrom");
        assert_eq!(c.owners("discord").0, ["9", "333"]);
        // No entry for this channel: its allowFrom, prefix removed, wildcard dropped.
        let c = parse(
            r#"{ commands: { ownerAllowFrom: ["discord:9"] },
                 channels: { telegram: { allowFrom: ["telegram:444", "*", "555"] } } }"#,
        )
        .unwrap();
        assert_eq!(
            c.owners("telegram"),
            (
                vec!["444".into(), "555".into()],
                "channels.telegram.allowFrom".into()
            )
        );
        assert!(parse("{}").unwrap().owners("telegram").0.is_empty());
        // Other `commands` keys are OpenClaw's, accepted and listed as not implemented.
        let c = parse(r#"{ commands: { ownerAllowFrom: ["1"], bash: false } }"#).unwrap();
        assert_eq!(c.unimplemented, ["commands.bash"]);
    }

    #[test]
    fn typed_agent_settings() {
        let c = parse(
            r#"{
              models: { providers: {
                anthropic: { api: "anthropic-messages", apiKey: "${ANTHROPIC_API_KEY}",
                  models: [{ id: "claude-sonnet-4-5", name: "Sonnet", contextWindow: 200000,
                             maxTokens: 8192, cost: { input: 3, output: 15, cacheRead: 0.3 } }] },
                local: { api: "ollama", baseUrl: "http://127.0.0.1:11434", apiKey: "${UNSET}" },
              } },
              agents: { defaults: {
                workspace: "/srv/ws",
                model: { primary: "anthropic/claude-sonnet-4-5", fallbacks: ["openrouter/x/y"] },
              } },
              channels: { telegram: { botToken: "${TG}", groupPolicy: "open",
                groupAllowFrom: [42], groups: { "*": { requireMention: true } } } },
              budget: { dailyUsd: 5, monthlyUsd: 50.5 },
            }"#,
        )
        .unwrap();
        let anthropic = &c.providers["anthropic"];
        assert_eq!(anthropic.api, Some(ProviderApi::AnthropicMessages));
        let model = &anthropic.models[0];
        assert_eq!(
            (model.id.as_str(), model.context_window, model.max_tokens),
            ("claude-sonnet-4-5", Some(200_000), Some(8192))
        );
        assert_eq!(
            model.cost,
            Some(ModelCost {
                input: 3.0,
                output: 15.0,
                cache_read: 0.3,
                cache_write: 0.0
            })
        );
        let local = &c.providers["local"];
        assert_eq!(local.api, Some(ProviderApi::Other("ollama".into())));
        // Resolved when used: the unset variable is an error only now, naming key and name.
        let err = local.api_key.as_ref().unwrap().resolve(&c.env).unwrap_err();
        let err = err.to_string();
        assert!(
            err.contains("models.providers.local.apiKey") && err.contains("UNSET"),
            "{err}"
        );
        let model = c.agent_model.as_ref().unwrap();
        assert_eq!(model.primary.provider, "anthropic");
        assert_eq!(model.fallbacks[0].model, "x/y");
        assert_eq!(c.agent_workspace, Some(PathBuf::from("/srv/ws")));
        let tg = c.telegram.as_ref().unwrap();
        assert_eq!(tg.group_policy, GroupPolicy::Open);
        assert_eq!(tg.group_allow_from, vec!["42".to_string()]);
        assert_eq!(tg.groups["*"].require_mention, Some(true));
        assert_eq!(
            format!("{:?}", tg.bot_token),
            "Some(LazySecret(channels.telegram.botToken))"
        );
        assert_eq!(c.budget.monthly_usd, Some(50.5));
        // The agent acts on all of them (the workspace confines the file tools).
        assert!(c.unimplemented.is_empty(), "{:?}", c.unimplemented);
    }

    #[test]
    fn bad_agent_settings_are_all_named() {
        let err = parse(
            r#"{
              models: { providers: { a: { api: "anthropic", models: [{ name: "no id" }] } } },
              agents: { defaults: { model: "no-slash" } },
              budget: { dailyUsd: -1 },
            }"#,
        )
        .unwrap_err()
        .to_string();
        for expected in [
            "`models.providers.a.api`: \"anthropic\" is not an OpenClaw provider api (did you mean \"anthropic-messages\"?)",
            "`models.providers.a.models[0].id`",
            "`agents.defaults.model`: \"no-slash\" is not \"<provider>/<model>\"",
            "`budget.dailyUsd`: must be 0 or more",
        ] {
            assert!(err.contains(expected), "{expected} not in {err}");
        }
    }

    #[test]
    fn nesting_up_to_the_limit_parses_and_beyond_is_refused() {
        // Inside a free-form plugin config, where any shape is valid.
        let nest = |depth: usize| {
            format!(
                "{{ plugins: {{ entries: {{ x: {{ config: {}{} }} }} }} }}",
                "[".repeat(depth - 4),
                "]".repeat(depth - 4)
            )
        };
        parse(&nest(nesting::MAX_DEPTH)).unwrap();
        let err = parse(&nest(nesting::MAX_DEPTH + 1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nested deeper than 64 levels"), "{err}");
    }

    #[test]
    fn thousands_of_typos_are_counted_not_all_printed() {
        let keys: Vec<String> = (0..1000).map(|i| format!("typo{i}: 1")).collect();
        let err = parse(&format!("{{ {} }}", keys.join(", ")))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("1000 configuration problems"), "{err}");
        assert!(err.ends_with("... and 950 more"), "{err}");
    }
}
