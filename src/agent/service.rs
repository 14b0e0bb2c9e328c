//! Wiring the agent into `clawfort gateway` from the config.
//!
//! [`prepare`] runs before the gateway binds: it checks the agent's config and resolves
//! its secrets, so a bad setting stops the start with exit 2 and the key named. With no
//! `agents.defaults.model` (or no `models.providers`) nothing is prepared and the gateway behaves as without an agent.
//! [`Prepared::run`] then runs on the gateway's runtime beside the HTTP server: it opens
//! the ledger, builds the providers and the loop, and polls Telegram if a bot token is set.
//!
//! The owner's Telegram ids come from `commands.ownerAllowFrom` (`"telegram:<id>"` or a
//! bare id), else from `channels.telegram.allowFrom` ([`Config::owners`]); only numeric user
//! ids can name a Telegram sender, so others are skipped with a warning.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::status::AgentStatus;
use super::{AgentHandle, AgentLoop, AgentSettings, Tools};
use crate::channel::OwnerNotices;
use crate::config::{
    Config, ConfigError, GroupPolicy as ConfigGroupPolicy, MaxTokensField as ConfigMaxTokensField,
    ProviderApi,
};
use crate::events::Events;
use crate::paths::Paths;
use crate::provider::{
    Api, ClientOptions, Cost, MaxTokensField, ModelChain, ModelRef, ModelSpec, ProviderSpec,
    Providers,
};
use crate::redact::Redactor;
use crate::secret::Secret;
use crate::sessions::Transcripts;
use crate::telegram::{self, GroupPolicy, GroupSettings, TelegramSettings};
use crate::tools::ToolLog;
use crate::usage::{self, Budget, Ledger};

/// Per-request limit of a provider call.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(120);

/// The checked agent config, secrets resolved.
#[derive(Debug)]
pub struct Prepared {
    specs: Vec<ProviderSpec>,
    primary: ModelRef,
    fallbacks: Vec<ModelRef>,
    workspace: PathBuf,
    budget: Budget,
    ledger_path: PathBuf,
    transcripts: Transcripts,
    redactor: Redactor,
    owner_ids: Vec<String>,
    telegram: Option<TelegramSettings>,
    config: Arc<Config>,
    paths: Paths,
    handle: AgentHandle,
    status: Arc<AgentStatus>,
    /// The `exec` tool, with `tools.exec.security` `"allowlist"` or `"full"`.
    exec: Option<Arc<crate::tools::ExecTool>>,
    /// Where the agent, the channel and `exec` record security events.
    events: Events,
    /// The owner's notices: the agent's, and the batched security events.
    notices: OwnerNotices,
}

fn key_error(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Key {
        path: path.into(),
        message: message.into(),
    }
}

/// Every secret value the config names that can be resolved: the gateway token, each
/// provider's `apiKey` and the Telegram bot token (`botToken` or `tokenFile`), for the one
/// [`Redactor`] of the gateway. A value that cannot be resolved is left out here; [`prepare`]
/// reports it when the agent needs it.
pub fn configured_secrets(config: &Config) -> Vec<Secret> {
    let mut secrets: Vec<Secret> = config
        .gateway
        .token
        .iter()
        .map(|t| Secret::new(t.value.clone()))
        .collect();
    let keys = config.providers.values().filter_map(|p| p.api_key.as_ref());
    secrets.extend(keys.filter_map(|k| k.resolve(&config.env).ok().map(Secret::new)));
    if let Some(t) = &config.telegram {
        let token = match (&t.bot_token, &t.token_file) {
            (Some(lazy), _) => lazy.resolve(&config.env).ok(),
            (None, Some(file)) => read_token_file(file).ok(),
            (None, None) => None,
        };
        secrets.extend(token.map(Secret::new));
    }
    secrets
}

/// Checks the agent config; `Ok(None)` when no model is configured. `redactor` is the
/// gateway's (built from [`configured_secrets`]).
pub fn prepare(
    config: &Config,
    paths: &Paths,
    redactor: &Redactor,
) -> Result<Option<Prepared>, ConfigError> {
    let Some(model) = &config.agent_model else {
        return Ok(None);
    };
    if config.providers.is_empty() {
        // OpenClaw's built-in provider catalogue and auth profiles are not implemented.
        tracing::warn!(
            "agents.defaults.model is set but models.providers is empty: the agent is not \
             started (define the provider under models.providers)"
        );
        return Ok(None);
    }
    let mut specs = Vec::new();
    for (id, p) in &config.providers {
        let at = |key: &str| format!("models.providers.{id}.{key}");
        let api = match &p.api {
            Some(ProviderApi::AnthropicMessages) => Api::AnthropicMessages,
            Some(ProviderApi::OpenAiCompletions) | None => Api::OpenAiCompletions,
            Some(ProviderApi::Other(other)) => {
                tracing::warn!(
                    "{}: `{other}` is not implemented (anthropic-messages and \
                     openai-completions are); provider `{id}` is not used",
                    at("api")
                );
                continue;
            }
        };
        let base_url = p
            .base_url
            .clone()
            .ok_or_else(|| key_error(at("baseUrl"), "is required"))?;
        let api_key = match &p.api_key {
            Some(lazy) => Some(Secret::new(lazy.resolve(&config.env)?)),
            None => None,
        };
        let models = p
            .models
            .iter()
            .map(|m| ModelSpec {
                id: m.id.clone(),
                context_window: m.context_window.map(|w| w.min(u64::from(u32::MAX)) as u32),
                max_tokens: m.max_tokens.map(|w| w.min(u64::from(u32::MAX)) as u32),
                max_tokens_field: m.max_tokens_field.map(|f| match f {
                    ConfigMaxTokensField::MaxTokens => MaxTokensField::MaxTokens,
                    ConfigMaxTokensField::MaxCompletionTokens => {
                        MaxTokensField::MaxCompletionTokens
                    }
                }),
                cost: m.cost.map(|c| Cost {
                    input: c.input,
                    output: c.output,
                    cache_read: c.cache_read,
                    cache_write: c.cache_write,
                }),
            })
            .collect();
        specs.push(ProviderSpec {
            id: id.clone(),
            api,
            base_url,
            api_key_source: p
                .api_key
                .as_ref()
                .and_then(|k| k.variable())
                .map(str::to_owned),
            api_key,
            timeout: PROVIDER_TIMEOUT,
            models,
        });
    }
    let to_ref = |m: &crate::config::ModelRef| ModelRef {
        provider: m.provider.clone(),
        model: m.model.clone(),
    };
    // A model of a provider missing from models.providers would use OpenClaw's built-in
    // catalogue and auth profiles, which clawfort does not implement: it is skipped.
    let mut chain: Vec<ModelRef> = Vec::new();
    for m in std::iter::once(&model.primary).chain(&model.fallbacks) {
        if specs.iter().any(|p| p.id == m.provider) {
            chain.push(to_ref(m));
        } else {
            tracing::warn!(
                "agents.defaults.model: `{}/{}` is skipped: provider `{}` is not defined in \
                 models.providers with a supported api (built-in providers are not implemented)",
                m.provider,
                m.model,
                m.provider
            );
        }
    }
    if chain.is_empty() {
        tracing::warn!("no model of agents.defaults.model has its provider in models.providers: the agent is not started");
        return Ok(None);
    }
    let primary = chain.remove(0);
    let owner_ids = telegram_owners(config);
    let telegram = match &config.telegram {
        Some(t) => telegram_settings(t, config, &owner_ids)?,
        None => None,
    };
    let budget = Budget {
        daily_usd: config.budget.daily_usd,
        monthly_usd: config.budget.monthly_usd,
    };
    let status = AgentStatus::new(
        &specs,
        &primary,
        &chain,
        owner_ids
            .iter()
            .map(|id| format!("telegram:{id}"))
            .collect(),
        budget,
        telegram.as_ref().map(|t| t.health.clone()),
    );
    let workspace = config
        .agent_workspace
        .clone()
        .unwrap_or_else(|| paths.state_dir.join("workspace"));
    let events = Events::default();
    let exec = exec_tool(config, paths, &workspace, redactor, &events)?;
    Ok(Some(Prepared {
        specs,
        primary,
        fallbacks: chain,
        workspace,
        budget,
        ledger_path: usage::ledger_path(paths),
        transcripts: Transcripts::new(paths.sessions_dir()).with_redactor(redactor.clone()),
        redactor: redactor.clone(),
        owner_ids,
        telegram,
        config: Arc::new(config.clone()),
        paths: paths.clone(),
        handle: AgentHandle::default(),
        status: Arc::new(status),
        exec,
        events,
        notices: OwnerNotices::default(),
    }))
}

/// The `exec` tool when `tools.exec.security` is `"allowlist"` or `"full"`: its confinement
/// policy is checked here (a bad `security.*` path stops the start); a host that cannot
/// confine it (no Landlock, a gateway running as root) is logged at start and refused at
/// each call. Its approvals read `exec-approvals.json` of the state directory. The sessions
/// `agents.defaults.sandbox.mode` covers run their commands in the Docker sandbox.
fn exec_tool(
    config: &Config,
    paths: &Paths,
    workspace: &std::path::Path,
    redactor: &Redactor,
    events: &Events,
) -> Result<Option<Arc<crate::tools::ExecTool>>, ConfigError> {
    if config.exec.security == crate::config::ExecSecurity::Deny {
        return Ok(None);
    }
    let policy = crate::confine::Policy::new(
        workspace,
        &config.security.allowed_paths,
        &config.security.denied_paths,
    )
    .map_err(|e| key_error("security", e))?;
    let timeout = config.exec.timeout_secs.map(Duration::from_secs);
    let approvals_file = paths.state_dir.join(crate::approvals::FILE_NAME);
    for orphan in crate::approvals::file::remove_orphaned_temp_files(&approvals_file) {
        tracing::info!("removed {}, left by a crash mid-write", orphan.display());
    }
    let approvals = crate::approvals::Approvals::new(
        &paths.state_dir,
        config.exec.security,
        config.exec.ask,
        Duration::from_secs(config.exec.approval_timeout_secs),
        redactor.clone(),
    );
    let tool =
        crate::tools::ExecTool::new(policy, crate::confine::Host::from_env(), timeout, approvals)
            .with_events(events.clone());
    if config.sandbox_mode == crate::config::SandboxMode::Off {
        return Ok(Some(Arc::new(tool)));
    }
    let sandbox = crate::sandbox::Sandbox::from_config(config, paths, workspace)?;
    Ok(Some(Arc::new(
        tool.with_sandbox(sandbox, config.sandbox_mode),
    )))
}

fn telegram_settings(
    t: &crate::config::TelegramConfig,
    config: &Config,
    owner_ids: &[String],
) -> Result<Option<TelegramSettings>, ConfigError> {
    let token = match (&t.bot_token, &t.token_file) {
        (Some(lazy), _) => lazy.resolve(&config.env)?,
        (None, Some(file)) => read_token_file(file)?,
        (None, None) => return Ok(None),
    };
    let mut s = TelegramSettings::new(Secret::new(token));
    if let Some(root) = &t.api_root {
        s.api_root = root.trim_end_matches('/').to_owned();
    }
    s.group_policy = policy(t.group_policy);
    s.group_allow_from = t.group_allow_from.clone();
    s.owner_ids = owner_ids.to_vec();
    s.approvers = approvers(&t.exec_approvals, owner_ids);
    s.groups = t
        .groups
        .iter()
        .filter(|(_, g)| g.enabled != Some(false))
        .map(|(id, g)| {
            let settings = GroupSettings {
                require_mention: g.require_mention,
                group_policy: None,
                allow_from: (!g.allow_from.is_empty()).then(|| g.allow_from.clone()),
            };
            (id.clone(), settings)
        })
        .collect();
    Ok(Some(s))
}

/// The owner's numeric Telegram user ids ([`Config::owners`]).
fn telegram_owners(config: &Config) -> Vec<String> {
    let (ids, source) = config.owners(telegram::CHANNEL);
    let (numeric, other): (Vec<String>, Vec<String>) = ids
        .into_iter()
        .partition(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()));
    if !other.is_empty() {
        tracing::warn!(
            "{source}: {} name no Telegram owner (a Telegram owner is a numeric user id)",
            other.join(", ")
        );
    }
    if numeric.is_empty() && config.telegram.is_some() {
        tracing::warn!(
            "no owner configured: budget alerts and a rejected API key are only logged, and \
             nobody may use /stop, /new, /status; set commands.ownerAllowFrom to \
             [\"telegram:<your numeric user id>\"]"
        );
    }
    numeric
}

/// Who may answer exec approvals on Telegram: `execApprovals.approvers` (numeric user ids),
/// else the owners; nobody when `execApprovals.enabled` is `false`.
fn approvers(config: &crate::config::ExecApprovalsConfig, owner_ids: &[String]) -> Vec<String> {
    if !config.enabled {
        return Vec::new();
    }
    if config.approvers.is_empty() {
        return owner_ids.to_vec();
    }
    let (numeric, other): (Vec<String>, Vec<String>) = config
        .approvers
        .iter()
        .map(|a| a.strip_prefix("telegram:").unwrap_or(a).to_owned())
        .partition(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()));
    if !other.is_empty() {
        tracing::warn!(
            "channels.telegram.execApprovals.approvers: {} name no Telegram user (an \
             approver is a numeric user id)",
            other.join(", ")
        );
    }
    numeric
}

fn policy(p: ConfigGroupPolicy) -> GroupPolicy {
    match p {
        ConfigGroupPolicy::Allowlist => GroupPolicy::Allowlist,
        ConfigGroupPolicy::Open => GroupPolicy::Open,
        ConfigGroupPolicy::Disabled => GroupPolicy::Disabled,
    }
}

/// `channels.telegram.tokenFile`: its first line; refused when group or others may read it.
fn read_token_file(file: &std::path::Path) -> Result<String, ConfigError> {
    let at = "channels.telegram.tokenFile";
    let meta = std::fs::metadata(file)
        .map_err(|e| key_error(at, format!("cannot read {}: {e}", file.display())))?;
    if meta.mode() & 0o077 != 0 {
        return Err(key_error(
            at,
            format!(
                "{} may be read by other users (mode {:o}): run `chmod 600 {}`",
                file.display(),
                meta.mode() & 0o777,
                file.display()
            ),
        ));
    }
    let text = std::fs::read_to_string(file)
        .map_err(|e| key_error(at, format!("cannot read {}: {e}", file.display())))?;
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    if token.is_empty() {
        return Err(key_error(at, format!("{} is empty", file.display())));
    }
    Ok(token)
}

/// The file tools the config's tool policy offers, confined to the workspace and the
/// allowed paths ([`crate::tools`]). Built when the agent starts, as the gateway's user (it
/// may create the workspace), not in [`prepare`], which `clawfort setup` also runs as root.
/// A workspace that cannot be opened leaves the agent without file tools, and says so.
fn file_tools(config: &Config, paths: &Paths, workspace: &std::path::Path) -> Tools {
    let mut tools = Tools::default();
    let unknown = config.tools.unknown_names();
    if !unknown.is_empty() {
        tracing::info!(
            "tool policy names tools clawfort does not have (ignored): {}",
            unknown.join(", ")
        );
    }
    if !["read", "write", "edit"]
        .iter()
        .any(|t| config.tools.offers(t))
    {
        tracing::info!("file tools: none (tools.profile / tools.allow / tools.deny)");
        return tools;
    }
    match crate::tools::confinement(config, paths, workspace) {
        Ok(confinement) => {
            let roots = confinement.describe_roots();
            let names = crate::tools::register_file_tools(
                &mut tools,
                &config.tools,
                &Arc::new(confinement),
            );
            tracing::info!("file tools {} confined to {roots}", names.join(", "));
        }
        Err(e) => tracing::error!("file tools are off: {e}"),
    }
    tools
}

/// `web_fetch` when `tools.web.fetch.enabled` (the default) and the tool policy offers it.
/// A system without CA certificates, or a bad egress proxy setting, leaves the agent
/// without it, and says so.
fn web_fetch_tool(config: &Config) -> Option<Arc<dyn crate::tools::Tool>> {
    if !config.web_fetch.enabled || !config.tools.offers("web_fetch") {
        tracing::info!("web_fetch: off (tools.web.fetch.enabled, or the tool policy)");
        return None;
    }
    match crate::tools::WebFetchTool::new(config.web_fetch) {
        Ok(tool) => {
            tracing::info!("web_fetch: public addresses only");
            Some(Arc::new(tool))
        }
        Err(e) => {
            tracing::error!("web_fetch is off: {e}");
            None
        }
    }
}

impl Prepared {
    /// The handle the HTTP API stops turns through; it reaches the loop once [`run`]
    /// has built it.
    ///
    /// [`run`]: Prepared::run
    pub fn handle(&self) -> AgentHandle {
        self.handle.clone()
    }

    /// The exec approvals, when the `exec` tool is on (`/api/approvals` answers them).
    pub fn approvals(&self) -> Option<crate::approvals::Approvals> {
        self.exec
            .as_ref()
            .filter(|_| self.config.tools.offers("exec"))
            .map(|e| e.approvals().clone())
    }

    /// Where the agent's parts record security events ([`crate::events`]).
    pub fn events(&self) -> Events {
        self.events.clone()
    }

    /// Where the owner's notices go; `Some` when a channel takes them to the owner.
    pub fn owner_notices(&self) -> Option<OwnerNotices> {
        self.telegram.as_ref().map(|_| self.notices.clone())
    }

    /// What `/api/status` shows of the agent, live.
    pub fn status(&self) -> Arc<AgentStatus> {
        Arc::clone(&self.status)
    }

    /// Builds the loop and runs the channels until `shutdown`; errors are logged, the HTTP
    /// server keeps running.
    pub async fn run(self, shutdown: CancellationToken) {
        if let Err(e) = self.run_inner(shutdown).await {
            tracing::error!("the agent stopped: {e:#}");
        }
    }

    async fn run_inner(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let providers = Providers::new(self.specs, &ClientOptions::default())?;
        let context_window = providers
            .model(&self.primary)
            .and_then(|m| m.context_window)
            .unwrap_or(200_000);
        let chain = ModelChain::new(&providers, self.primary, self.fallbacks)
            .map_err(anyhow::Error::msg)?;
        let ledger = {
            let (path, budget) = (self.ledger_path.clone(), self.budget);
            Arc::new(tokio::task::spawn_blocking(move || Ledger::open(&path, budget)).await??)
        };
        self.status.set_ledger(Arc::clone(&ledger));
        let tool_log = ToolLog::new(crate::tools::log::path(&self.paths), self.redactor.clone());
        let mut settings = AgentSettings::new(chain, self.transcripts.clone(), self.redactor);
        settings.tool_log = Some(Arc::new(tool_log));
        settings.context_window = context_window;
        settings.tools = file_tools(&self.config, &self.paths, &self.workspace);
        settings.workspace = Some(self.workspace);
        settings.ledger = Some(ledger);
        settings.notices = self.notices.clone();
        settings.events = self.events.clone();
        // `tools.exec.security` enables it; the tool policy may still remove it.
        let mut approvals = None;
        if let Some(exec) = self.exec.filter(|_| self.config.tools.offers("exec")) {
            approvals = Some(exec.approvals().clone());
            // Through the runner, its unit checks what confines each command.
            match exec.host() {
                crate::confine::Host::Runner(socket) => tracing::info!(
                    "exec runs host commands through the command runner at {} (a unit of \
                     their own)",
                    socket.display()
                ),
                crate::confine::Host::Here => match crate::confine::available() {
                    Ok(support) => tracing::info!(
                        "exec runs commands on the host under {}",
                        support.describe()
                    ),
                    Err(why) => tracing::warn!(
                        "the exec tool is on but every command will be refused: {why}"
                    ),
                },
            }
            settings.tools.register(exec);
        }
        if let Some(web_fetch) = web_fetch_tool(&self.config) {
            settings.tools.register(web_fetch);
        }
        settings.owner_peers = self
            .owner_ids
            .iter()
            .map(|id| format!("telegram:{id}"))
            .collect();
        let notices = settings.notices.clone();
        let agent = Arc::new(AgentLoop::new(settings));
        self.handle.set(Arc::clone(&agent));
        agent.resend_undelivered_warnings();
        let Some(mut telegram) = self.telegram else {
            tracing::info!("agent ready; no channel configured (channels.telegram.botToken)");
            return Ok(());
        };
        let policy = telegram::Policy {
            config: self.config,
            store: crate::pairing::Store::new(self.paths.credentials_dir()),
            transcripts: self.transcripts,
        };
        telegram.owner_notices = notices;
        telegram.events = self.events;
        telegram.approvals = approvals;
        telegram::run(telegram, policy, &self.paths.state_dir, agent, shutdown).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::ExecApprovalsConfig;

    #[test]
    fn approvers_are_the_named_ids_else_the_owners() {
        let owners = vec!["1".to_owned()];
        let named = |approvers: &[&str], enabled| ExecApprovalsConfig {
            enabled,
            approvers: approvers.iter().map(|a| a.to_string()).collect(),
        };
        assert_eq!(super::approvers(&named(&[], true), &owners), ["1"]);
        assert_eq!(
            super::approvers(&named(&["telegram:2", "3", "@someone"], true), &owners),
            ["2", "3"]
        );
        assert!(super::approvers(&named(&["2"], false), &owners).is_empty());
    }
}
