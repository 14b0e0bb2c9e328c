//! Typed settings for the agent side: model providers (`models.providers`), the default
//! model and workspace (`agents.defaults`), the Telegram channel and the spend caps
//! (`budget`, a clawfort extension). They are parsed and checked here; until the provider and
//! Telegram modules act on them they stay in the "not implemented yet" warning.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use super::env::{self, EnvSource};
use super::reader::Section;
use super::ConfigError;
use crate::paths::expand_tilde;

/// A config string that may hold `${VAR}` references, resolved only when it is used, so an
/// unset variable of a feature nobody uses does not stop the gateway. `Debug` shows the key
/// path, never the value.
#[derive(Clone, PartialEq, Eq)]
pub struct LazySecret {
    key_path: String,
    raw: String,
}

impl LazySecret {
    /// The value with every `${VAR}` substituted; an unset variable is an error naming the
    /// key and the variable.
    pub fn resolve(&self, env: &EnvSource) -> Result<String, ConfigError> {
        env::substitute(&self.raw, &self.key_path, env)
    }

    pub fn key_path(&self) -> &str {
        &self.key_path
    }

    /// The variable the value is read from when it is written as exactly `"${VAR}"`.
    pub fn variable(&self) -> Option<&str> {
        let name = self.raw.trim().strip_prefix("${")?.strip_suffix('}')?;
        env::is_var_name(name).then_some(name)
    }
}

impl fmt::Debug for LazySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LazySecret({})", self.key_path)
    }
}

/// A secret read as written, for `LazySecret::resolve`. OpenClaw's SecretRef object form is
/// accepted and gives `None` (not implemented: the key is in the not-wired list anyway).
fn lazy_secret(section: &mut Section, key: &'static str) -> Option<LazySecret> {
    section.note_literal_secret(key);
    if section.is_object(key) {
        section.get(key);
        return None;
    }
    let key_path = section.key_path(key);
    section.raw_string(key).map(|raw| LazySecret {
        key_path,
        raw: raw.to_string(),
    })
}

/// The wire protocol of a provider (`models.providers.<id>.api`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderApi {
    /// Anthropic's Messages API (`POST /v1/messages`).
    AnthropicMessages,
    /// OpenAI's chat completions (`POST /v1/chat/completions`) and compatible servers.
    OpenAiCompletions,
    /// Another value of OpenClaw's enum (`openai-responses`, `google-generative-ai`, ...):
    /// accepted, reported as not implemented.
    Other(String),
}

/// OpenClaw's `api` values; the first two are the ones clawfort speaks.
const PROVIDER_APIS: &[&str] = &[
    "anthropic-messages",
    "openai-completions",
    "openai-responses",
    "openai-chatgpt-responses",
    "google-generative-ai",
    "google-vertex",
    "github-copilot",
    "bedrock-converse-stream",
    "ollama",
    "pi-messages",
    "azure-openai-responses",
];

/// The name of the output-limit field of a chat-completions request (`compat.maxTokensField`):
/// OpenAI's current models take only `max_completion_tokens`, many compatible servers only the
/// older `max_tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxTokensField {
    MaxTokens,
    MaxCompletionTokens,
}

/// Prices in US dollars per million tokens (`cost`); a missing price is 0.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ModelCost {
    pub input: f64,
    pub output: f64,
    pub cache_read: f64,
    pub cache_write: f64,
}

/// One entry of `models.providers.<id>.models[]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub id: String,
    pub name: Option<String>,
    pub context_window: Option<u64>,
    pub max_tokens: Option<u64>,
    pub cost: Option<ModelCost>,
    /// `compat.maxTokensField`: the chat-completions field that carries the output limit.
    pub max_tokens_field: Option<MaxTokensField>,
}

/// `models.providers.<id>`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderConfig {
    pub api: Option<ProviderApi>,
    pub base_url: Option<String>,
    pub api_key: Option<LazySecret>,
    pub models: Vec<ModelConfig>,
}

/// `"<provider>/<model>"`; the model id may itself contain `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRef {
    pub provider: String,
    pub model: String,
}

/// `agents.defaults.model`: a string, or `{ primary, fallbacks }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentModel {
    pub primary: ModelRef,
    pub fallbacks: Vec<ModelRef>,
}

/// `groupPolicy`: which groups the bot listens in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupPolicy {
    /// Only groups in `groups` (or approved in the pairing store). OpenClaw's default.
    Allowlist,
    Open,
    Disabled,
}

/// `channels.telegram.groups.<chatId>` (`"*"` is every group).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TelegramGroup {
    pub enabled: Option<bool>,
    pub require_mention: Option<bool>,
    pub allow_from: Vec<String>,
}

/// `channels.telegram` beyond the policy keys every channel has.
#[derive(Debug, Clone, PartialEq)]
pub struct TelegramConfig {
    pub bot_token: Option<LazySecret>,
    pub token_file: Option<PathBuf>,
    pub api_root: Option<String>,
    pub groups: BTreeMap<String, TelegramGroup>,
    pub group_policy: GroupPolicy,
    pub group_allow_from: Vec<String>,
    pub exec_approvals: ExecApprovalsConfig,
}

/// `channels.telegram.execApprovals`: who may answer an exec approval in the chat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecApprovalsConfig {
    /// `enabled`: `false` turns chat approvals off (the CLI still answers); `true` and
    /// `"auto"` (the default) send them when approvers resolve.
    pub enabled: bool,
    /// `approvers`: Telegram user ids; empty means the owners (`commands.ownerAllowFrom`).
    pub approvers: Vec<String>,
}

/// Spend caps in US dollars (`budget`, a clawfort extension).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Budget {
    pub daily_usd: Option<f64>,
    pub monthly_usd: Option<f64>,
}

/// `models`.
pub fn read_models(root: &mut Section) -> BTreeMap<String, ProviderConfig> {
    let mut providers = BTreeMap::new();
    let Some(mut models) = root.section("models") else {
        return providers;
    };
    for (id, mut p) in models.named_sections("providers") {
        let api = p.string("api").and_then(|api| match api.as_str() {
            "anthropic-messages" => Some(ProviderApi::AnthropicMessages),
            // "openai" is the legacy spelling OpenClaw's doctor rewrites.
            "openai-completions" | "openai" => Some(ProviderApi::OpenAiCompletions),
            other if PROVIDER_APIS.contains(&other) => Some(ProviderApi::Other(api)),
            other => {
                let hint = super::did_you_mean(other, PROVIDER_APIS)
                    .map(|s| format!(" (did you mean \"{s}\"?)"))
                    .unwrap_or_default();
                p.error(
                    "api",
                    format!(
                        "\"{other}\" is not an OpenClaw provider api{hint}; clawfort speaks \
                         \"anthropic-messages\" and \"openai-completions\""
                    ),
                );
                None
            }
        });
        let base_url = p.string("baseUrl");
        let api_key = lazy_secret(&mut p, "apiKey");
        let models = p
            .section_list("models")
            .into_iter()
            .filter_map(read_model)
            .collect();
        p.finish();
        providers.insert(
            id,
            ProviderConfig {
                api,
                base_url,
                api_key,
                models,
            },
        );
    }
    models.finish();
    providers
}

fn read_model(mut m: Section) -> Option<ModelConfig> {
    if m.get("id").is_none() {
        m.error(
            "id",
            "every model needs an `id` (the provider's model name)",
        );
    }
    let id = m.string("id");
    let name = m.string("name");
    let context_window = m.integer("contextWindow", 1, u64::from(u32::MAX));
    let max_tokens = m.integer("maxTokens", 1, u64::from(u32::MAX));
    let cost = m.section("cost").map(|mut c| {
        let cost = ModelCost {
            input: c.non_negative("input").unwrap_or(0.0),
            output: c.non_negative("output").unwrap_or(0.0),
            cache_read: c.non_negative("cacheRead").unwrap_or(0.0),
            cache_write: c.non_negative("cacheWrite").unwrap_or(0.0),
        };
        c.finish();
        cost
    });
    let max_tokens_field = m.section("compat").and_then(read_compat);
    m.finish();
    Some(ModelConfig {
        id: id?,
        name,
        context_window,
        max_tokens,
        cost,
        max_tokens_field,
    })
}

/// `models.providers.*.models[].compat`: of OpenClaw's capability flags only `maxTokensField`
/// changes what clawfort sends; the others are reported as not implemented.
fn read_compat(mut c: Section) -> Option<MaxTokensField> {
    let field = c.string("maxTokensField").and_then(|f| match f.as_str() {
        "max_tokens" => Some(MaxTokensField::MaxTokens),
        "max_completion_tokens" => Some(MaxTokensField::MaxCompletionTokens),
        other => {
            c.error(
                "maxTokensField",
                format!("\"{other}\" is neither \"max_tokens\" nor \"max_completion_tokens\""),
            );
            None
        }
    });
    c.finish();
    field
}

/// `agents.defaults.model`.
pub fn read_agent_model(defaults: &mut Section) -> Option<AgentModel> {
    let path = defaults.key_path("model");
    match defaults.get("model")? {
        serde_json::Value::String(s) => Some(AgentModel {
            primary: model_ref(defaults, &path, s)?,
            fallbacks: Vec::new(),
        }),
        serde_json::Value::Object(_) => {
            let mut m = defaults.section("model")?;
            let primary = m.string("primary");
            let fallbacks = m.strings("fallbacks").unwrap_or_default();
            let fallbacks = fallbacks
                .iter()
                .enumerate()
                .filter_map(|(i, f)| model_ref(&m, &format!("{path}.fallbacks[{i}]"), f))
                .collect();
            let primary = match primary {
                Some(p) => model_ref(&m, &format!("{path}.primary"), &p),
                None => {
                    m.error("primary", "required: the model as \"<provider>/<model>\"");
                    None
                }
            };
            m.finish();
            Some(AgentModel {
                primary: primary?,
                fallbacks,
            })
        }
        other => {
            defaults.error(
                "model",
                format!(
                    "expected \"<provider>/<model>\" or {{ primary, fallbacks }}, found {}",
                    super::reader::kind(other)
                ),
            );
            None
        }
    }
}

fn model_ref(section: &Section, path: &str, value: &str) -> Option<ModelRef> {
    match value.split_once('/') {
        Some((provider, model)) if !provider.is_empty() && !model.is_empty() => Some(ModelRef {
            provider: provider.to_string(),
            model: model.to_string(),
        }),
        _ => {
            section.ctx().error(ConfigError::key(
                path,
                format!("\"{value}\" is not \"<provider>/<model>\" (e.g. \"anthropic/claude-sonnet-4-5\")"),
            ));
            None
        }
    }
}

/// `agents.defaults.workspace`.
pub fn read_workspace(defaults: &mut Section) -> Option<PathBuf> {
    defaults.string("workspace").map(|p| expand_tilde(&p))
}

/// The Telegram-only keys of `channels.telegram` (the policy keys are read with every
/// channel's).
pub fn read_telegram(t: &mut Section) -> TelegramConfig {
    let bot_token = lazy_secret(t, "botToken");
    let token_file = t.string("tokenFile").map(|p| expand_tilde(&p));
    let api_root = t.string("apiRoot");
    let group_policy = t
        .choice(
            "groupPolicy",
            &[
                ("allowlist", GroupPolicy::Allowlist),
                ("open", GroupPolicy::Open),
                ("disabled", GroupPolicy::Disabled),
            ],
        )
        .unwrap_or(GroupPolicy::Allowlist);
    let group_allow_from = t.strings("groupAllowFrom").unwrap_or_default();
    let exec_approvals = read_exec_approvals(t);
    let groups = t
        .named_sections("groups")
        .into_iter()
        .map(|(id, mut g)| {
            let group = TelegramGroup {
                enabled: g.bool("enabled"),
                require_mention: g.bool("requireMention"),
                allow_from: g.strings("allowFrom").unwrap_or_default(),
            };
            g.finish();
            (id, group)
        })
        .collect();
    TelegramConfig {
        bot_token,
        token_file,
        api_root,
        groups,
        group_policy,
        group_allow_from,
        exec_approvals,
    }
}

/// `channels.telegram.execApprovals`. Prompts go to the approvers' private chats only
/// (OpenClaw's `target: "dm"`): a prompt in a group would show the command to everyone there.
fn read_exec_approvals(t: &mut Section) -> ExecApprovalsConfig {
    let mut config = ExecApprovalsConfig {
        enabled: true,
        approvers: Vec::new(),
    };
    let Some(mut a) = t.section("execApprovals") else {
        return config;
    };
    match a.get("enabled") {
        None | Some(serde_json::Value::Bool(true)) => {}
        Some(serde_json::Value::Bool(false)) => config.enabled = false,
        Some(serde_json::Value::String(s)) if s == "auto" => {}
        Some(other) => a.error(
            "enabled",
            format!(
                "expected true, false or \"auto\", found {}",
                super::reader::kind(other)
            ),
        ),
    }
    config.approvers = a.strings("approvers").unwrap_or_default();
    if let Some(target) = a.string("target").filter(|t| t != "dm") {
        a.error(
            "target",
            format!(
                "\"{target}\" is not implemented: clawfort sends exec approval prompts to the \
                 approvers' private chats only; remove the key or set it to \"dm\""
            ),
        );
    }
    a.finish();
    config
}

/// `commands.ownerAllowFrom`: the owner's accounts, as written (`"telegram:123456789"`, or a
/// bare id meaning every channel). The rest of `commands` is not implemented.
pub fn read_owner_allow_from(root: &mut Section) -> Vec<String> {
    let Some(mut commands) = root.section("commands") else {
        return Vec::new();
    };
    let owners = commands.strings("ownerAllowFrom").unwrap_or_default();
    commands.finish();
    owners
}

/// `budget` (clawfort extension).
pub fn read_budget(root: &mut Section) -> Budget {
    let Some(mut b) = root.section("budget") else {
        return Budget::default();
    };
    let budget = Budget {
        daily_usd: b.non_negative("dailyUsd"),
        monthly_usd: b.non_negative("monthlyUsd"),
    };
    b.finish();
    budget
}
