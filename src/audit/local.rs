//! Checks of the installation itself: file permissions and the configuration.

use std::net::IpAddr;

use super::{Finding, Severity};
use crate::config::{
    Config, DmPolicy, ExecAsk, ExecSecurity, ProviderApi, SandboxMode, MIN_TOKEN_LEN, TOKEN_ENV,
};
use crate::paths::{expand_tilde, Paths};

pub fn check(paths: &Paths, config: &Config) -> Vec<Finding> {
    let mut findings = Vec::new();
    super::files::check(paths, config, &mut findings);
    gateway(config, &mut findings);
    policies(config, &mut findings);
    denied_paths(config, &mut findings);
    config_findings(config, &mut findings);
    agent(config, &mut findings);
    host_exec(config, &mut findings);
    exec_approvals(config, &mut findings);
    exec_approvals_file(paths, config, &mut findings);
    findings
}

/// `--fix`: tightens the private files (see `files`).
pub fn fix(paths: &Paths) -> super::files::FixOutcome {
    super::files::fix(paths)
}

fn gateway(config: &Config, findings: &mut Vec<Finding>) {
    let gw = &config.gateway;
    match &gw.token {
        None => findings.push(Finding::new(
            "gateway.token.missing",
            if gw.bind.is_loopback() {
                Severity::Warn
            } else {
                Severity::Critical
            },
            "no gateway token",
            if gw.bind.is_loopback() {
                "the gateway refuses every API request until a token is set"
            } else {
                "the gateway refuses to start on a non-loopback bind without a token"
            },
            format!("put {TOKEN_ENV}=$(clawfort token) into ~/.openclaw/.env (mode 600)"),
        )),
        Some(t) if t.value.chars().count() < MIN_TOKEN_LEN => findings.push(Finding::new(
            "gateway.token.short",
            Severity::Critical,
            "the gateway token is too short",
            format!(
                "{} holds {} characters; the gateway refuses fewer than {MIN_TOKEN_LEN}",
                t.source,
                t.value.chars().count()
            ),
            "replace it with the output of `clawfort token` (64 hex characters)",
        )),
        Some(_) => {}
    }
    if !gw.bind.is_loopback() {
        findings.push(Finding::new(
            "gateway.bind.non_loopback",
            if gw.token.is_some() {
                Severity::Warn
            } else {
                Severity::Critical
            },
            "the gateway listens beyond loopback",
            format!("gateway.bind is {} ({})", gw.bind.name(), gw.bind.ip()),
            "bind to loopback and reach the gateway through an SSH tunnel \
             (ssh -L 18789:127.0.0.1:18789 host)",
        ));
    }
    for key in &config.literal_secrets {
        findings.push(Finding::new(
            "config.literal_secret",
            Severity::Warn,
            "a secret is written into the config file",
            format!("`{key}` holds a literal value instead of a ${{VAR}} reference"),
            format!("move the value into ~/.openclaw/.env and write `\"${{VAR}}\"` at `{key}`"),
        ));
    }
}

fn policies(config: &Config, findings: &mut Vec<Finding>) {
    let open: Vec<&str> = config
        .channels
        .iter()
        .filter(|(_, c)| c.enabled && c.dm_policy == DmPolicy::Open)
        .map(|(name, _)| name.as_str())
        .collect();
    for name in &open {
        findings.push(Finding::new(
            "channels.dm_policy.open",
            Severity::Critical,
            format!("channel {name} accepts messages from anyone"),
            format!("channels.{name}.dmPolicy is \"open\""),
            format!("set channels.{name}.dmPolicy to \"pairing\" or \"allowlist\""),
        ));
    }
    if config.auto_approve {
        findings.push(Finding::new(
            "pairing.auto_approve",
            Severity::Critical,
            "every new sender is approved automatically",
            "pairing.autoApprove is true: anyone who finds the bot can use it",
            "set pairing.autoApprove to false and approve senders with `clawfort pairing approve`",
        ));
    }
    if config.sandbox_mode == SandboxMode::Off {
        let exposed = !open.is_empty() || config.auto_approve;
        let tools = host_tools(config);
        let (severity, detail) = match tools.as_slice() {
            [] => (
                Severity::Info,
                "agents.defaults.sandbox.mode is \"off\", but no tool offered reaches the host \
                 (tools.profile or tools.deny removes them all)"
                    .to_owned(),
            ),
            tools => (
                if exposed {
                    Severity::Critical
                } else {
                    Severity::Warn
                },
                format!(
                    "agents.defaults.sandbox.mode is \"off\" and these tools reach the host: {}",
                    tools.join(", ")
                ),
            ),
        };
        findings.push(Finding::new(
            "sandbox.off",
            severity,
            "agent tools run on the host, not in the sandbox",
            detail,
            "set agents.defaults.sandbox.mode to \"non-main\" or \"all\"",
        ));
    }
}

/// The tools offered to the model that act on the host when nothing sandboxes them: the file
/// tools (in the gateway's process) and `exec` when `tools.exec.security` enables it.
fn host_tools(config: &Config) -> Vec<&'static str> {
    let exec = config.exec.security != ExecSecurity::Deny;
    ["exec", "read", "write", "edit"]
        .into_iter()
        .filter(|&t| config.tools.offers(t) && (t != "exec" || exec))
        .collect()
}

/// `tools.exec.security: "full"` without `ask: "always"`: every command runs without anyone
/// approving it (under `full`, `on-miss` has no allowlist to miss).
fn exec_approvals(config: &Config, findings: &mut Vec<Finding>) {
    if config.exec.security != ExecSecurity::Full
        || config.exec.ask == ExecAsk::Always
        || !config.tools.offers("exec")
    {
        return;
    }
    findings.push(Finding::new(
        "exec.approvals.off",
        Severity::Warn,
        "exec runs every command the model asks for, with no approval",
        "tools.exec.security is \"full\" and tools.exec.ask is not \"always\": a prompt \
         injection that reaches the model can run any command the confinement allows",
        "set tools.exec.security to \"allowlist\" with ask \"on-miss\" (an approver answers \
         each command the allowlist does not match), or ask to \"always\"; check what ran with \
         `clawfort logs --tools`",
    ));
}

/// `exec-approvals.json` as the gateway reads it at each command: one that does not load
/// denies every command; `askFallback: "full"` (under security `"full"`) runs what nobody
/// answered, so asking approves nothing while nobody is watching.
fn exec_approvals_file(paths: &Paths, config: &Config, findings: &mut Vec<Finding>) {
    if config.exec.security == ExecSecurity::Deny || !config.tools.offers("exec") {
        return;
    }
    let path = paths.state_dir.join(crate::approvals::FILE_NAME);
    let file = match crate::approvals::file::load(&path) {
        Ok(doc) => doc.effective(),
        Err(e) => {
            return findings.push(Finding::new(
                "exec.approvals.file_invalid",
                Severity::Warn,
                "the exec approvals file cannot be used: every command is denied",
                e.to_string(),
                "fix what the error names, or remove the file",
            ))
        }
    };
    let security = file
        .security
        .map_or(config.exec.security, |s| s.min(config.exec.security));
    if file
        .ask_fallback
        .is_some_and(|f| f.min(security) == ExecSecurity::Full)
    {
        findings.push(Finding::new(
            "exec.approvals.fallback_full",
            Severity::Warn,
            "a command nobody approves in time runs anyway",
            format!(
                "askFallback is \"full\" in {}: a question unanswered for {} s runs its \
                 command (a turn holding untrusted content excepted)",
                path.display(),
                config.exec.approval_timeout_secs
            ),
            "set askFallback to \"deny\" (or remove it), or to \"allowlist\" to run only what \
             the allowlist matches",
        ));
    }
}

/// With `tools.exec.security` `"allowlist"` or `"full"`: whether this kernel can confine host
/// execution (without Landlock every command is refused, so the tool the config promises cannot run).
fn host_exec(config: &Config, findings: &mut Vec<Finding>) {
    if config.exec.security == ExecSecurity::Deny {
        return;
    }
    match crate::confine::support() {
        Ok(support) => findings.push(Finding::new(
            "exec.host",
            Severity::Info,
            "exec runs commands on the host, confined",
            format!(
                "tools.exec.security allows commands; this kernel enforces {}",
                support.describe()
            ),
            "nothing to do",
        )),
        Err(why) => findings.push(Finding::new(
            "exec.host.no_landlock",
            Severity::Warn,
            "host execution is enabled but this kernel cannot confine it",
            format!("tools.exec.security allows commands, and every command is refused: {why}"),
            "boot a kernel with Landlock (Linux 6.2 or later, `landlock` in the `lsm=` list), \
             or set tools.exec.security to \"deny\"",
        )),
    }
}

fn denied_paths(config: &Config, findings: &mut Vec<Finding>) {
    for required in ["/etc", "/root", "~/.ssh"] {
        let path = expand_tilde(required);
        if !config.security.denied_paths.contains(&path) {
            findings.push(Finding::new(
                "security.denied_paths",
                Severity::Warn,
                format!("{required} is not in security.deniedPaths"),
                format!("the agent's file tools may reach {}", path.display()),
                format!("add \"{required}\" to security.deniedPaths"),
            ));
        }
    }
}

/// What the config loader found: everything the gateway refuses to start with (critical, in
/// exactly the words `clawfort gateway` prints), `"*"` allow-lists, and OpenClaw keys clawfort ignores.
fn config_findings(config: &Config, findings: &mut Vec<Finding>) {
    for refusal in config.start_problems() {
        findings.push(Finding::new(
            "config.refused",
            Severity::Critical,
            "the gateway refuses to start with this setting",
            refusal.to_string(),
            "change the setting as the detail says; `clawfort gateway` exits 2 until then",
        ));
    }
    for (name, channel) in &config.channels {
        let wildcard = channel.allow_from.iter().any(|p| p == "*");
        if !wildcard || !channel.enabled {
            continue;
        }
        let severity = match channel.dm_policy {
            DmPolicy::Pairing | DmPolicy::Allowlist => Severity::Critical,
            // `open` is already critical (above); OpenClaw asks for "*" with it.
            DmPolicy::Open | DmPolicy::Disabled => continue,
        };
        findings.push(Finding::new(
            "channels.allow_from.wildcard",
            severity,
            format!("channel {name} accepts messages from anyone"),
            format!(
                "channels.{name}.allowFrom contains \"*\", which approves every sender \
                 despite dmPolicy \"{}\"",
                channel.dm_policy.name()
            ),
            format!("remove \"*\" from channels.{name}.allowFrom and list the sender ids"),
        ));
    }
    if config.gateway.rate_limit.exempt_loopback {
        findings.push(Finding::new(
            "gateway.rate_limit.exempt_loopback",
            Severity::Warn,
            "loopback clients are exempt from the failed-auth lockout",
            "gateway.auth.rateLimit.exemptLoopback is true; through the SSH tunnel every \
             client is loopback, so token guessing is not limited",
            "set gateway.auth.rateLimit.exemptLoopback to false (clawfort's default)",
        ));
    }
    if !config.unimplemented.is_empty() {
        findings.push(Finding::new(
            "config.unimplemented_keys",
            Severity::Info,
            "config keys clawfort does not implement yet",
            config.unimplemented.join(", "),
            "nothing to do: they are valid OpenClaw keys, accepted and not acted on",
        ));
    }
}

/// The agent: what it talks to (info lines), and the settings that leak a key or let spend
/// go uncounted.
fn agent(config: &Config, findings: &mut Vec<Finding>) {
    for (id, p) in &config.providers {
        let api = match &p.api {
            Some(ProviderApi::AnthropicMessages) => "anthropic-messages",
            Some(ProviderApi::OpenAiCompletions) | None => "openai-completions",
            Some(ProviderApi::Other(other)) => other.as_str(),
        };
        let url = p.base_url.as_deref().unwrap_or("(no baseUrl)");
        let models: Vec<&str> = p.models.iter().map(|m| m.id.as_str()).collect();
        findings.push(Finding::new(
            "agent.provider",
            Severity::Info,
            format!("model provider {id}"),
            format!(
                "api {api}, {}, models: {}",
                crate::agent::status::origin(url),
                if models.is_empty() {
                    "none listed".to_owned()
                } else {
                    models.join(", ")
                }
            ),
            "",
        ));
        if let Some(host) = p.base_url.as_deref().and_then(plain_http_host) {
            let key = p.api_key.is_some();
            findings.push(Finding::new(
                "models.provider.plain_http",
                if key {
                    Severity::Critical
                } else {
                    Severity::Warn
                },
                format!("provider {id} is reached over plain HTTP"),
                format!(
                    "models.providers.{id}.baseUrl is http:// to {host}, beyond this machine: \
                     {} travel unencrypted and can be read or changed on the way",
                    if key {
                        "the API key and every conversation"
                    } else {
                        "every conversation"
                    }
                ),
                format!(
                    "use https:// for models.providers.{id}.baseUrl, or reach the server \
                     through an SSH tunnel or a VPN and point baseUrl at the local end"
                ),
            ));
        }
    }
    if let Some(host) = config
        .telegram
        .as_ref()
        .and_then(|t| t.api_root.as_deref())
        .and_then(plain_http_host)
    {
        findings.push(Finding::new(
            "channels.telegram.plain_http",
            Severity::Critical,
            "the Telegram Bot API is reached over plain HTTP",
            format!(
                "channels.telegram.apiRoot is http:// to {host}, beyond this machine: the bot \
                 token (in every request's URL) and every message travel unencrypted"
            ),
            "use https:// for channels.telegram.apiRoot, or remove it (https://api.telegram.org)",
        ));
    }
    let Some(model) = &config.agent_model else {
        return;
    };
    let chain: Vec<String> = std::iter::once(&model.primary)
        .chain(&model.fallbacks)
        .map(|m| format!("{}/{}", m.provider, m.model))
        .collect();
    findings.push(Finding::new(
        "agent.model",
        Severity::Info,
        "the agent's model",
        format!("agents.defaults.model: {}", chain.join(", then ")),
        "",
    ));
    let budget = config.budget.daily_usd.is_some() || config.budget.monthly_usd.is_some();
    let unpriced: Vec<String> = std::iter::once(&model.primary)
        .chain(&model.fallbacks)
        .filter(|m| {
            let entry = config
                .providers
                .get(&m.provider)
                .and_then(|p| p.models.iter().find(|c| c.id == m.model));
            entry.is_none_or(|c| c.cost.is_none())
        })
        .map(|m| format!("{}/{}", m.provider, m.model))
        .collect();
    if budget && !unpriced.is_empty() {
        findings.push(Finding::new(
            "budget.unpriced_model",
            Severity::Warn,
            "the spend budget cannot count every model",
            format!(
                "a budget is set, but {} {} no `cost` in models.providers.<id>.models[]: its \
                 calls are recorded with their tokens and count as $0 against the budget",
                unpriced.join(", "),
                if unpriced.len() == 1 { "has" } else { "have" }
            ),
            "add `cost: { input, output, cacheRead, cacheWrite }` (USD per million tokens) to \
             each model's entry",
        ));
    }
    for (name, channel) in &config.channels {
        if name != "telegram" || config.telegram.is_none() {
            continue;
        }
        let (owners, source) = config.owners(name);
        let enabled = if channel.enabled {
            "enabled"
        } else {
            "disabled"
        };
        findings.push(Finding::new(
            "agent.channel",
            Severity::Info,
            format!("channel {name}"),
            format!(
                "{enabled}, dmPolicy {}, owner {}",
                channel.dm_policy.name(),
                if owners.is_empty() {
                    "none".to_owned()
                } else {
                    format!("{} (from {source})", owners.join(", "))
                }
            ),
            "",
        ));
        if owners.is_empty() && channel.enabled {
            findings.push(Finding::new(
                "agent.owner.missing",
                Severity::Warn,
                "nobody is the owner",
                format!(
                    "neither commands.ownerAllowFrom nor channels.{name}.allowFrom names a \
                     user: budget warnings and a rejected API key reach only the log, and \
                     nobody can /stop a running turn from the chat"
                ),
                format!("set commands.ownerAllowFrom to [\"{name}:<your numeric user id>\"]"),
            ));
        }
    }
}

/// The host of an `http://` URL that is not this machine (loopback), if `url` is one.
fn plain_http_host(url: &str) -> Option<String> {
    let uri = url.parse::<hyper::Uri>().ok()?;
    if !uri.scheme_str()?.eq_ignore_ascii_case("http") {
        return None;
    }
    let host = uri.host()?.to_ascii_lowercase();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = bare == "localhost"
        || bare.ends_with(".localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    (!loopback).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::plain_http_host;

    #[test]
    fn plain_http_beyond_loopback_is_found() {
        for url in [
            "http://10.0.0.5:8000/v1",
            "http://ollama.lan/v1",
            "HTTP://203.0.113.9",
            "http://[2001:db8::1]:8080/v1",
        ] {
            assert!(plain_http_host(url).is_some(), "{url}");
        }
        for url in [
            "https://api.anthropic.com",
            "http://127.0.0.1:11434",
            "http://127.8.9.1/v1",
            "http://localhost:8000/v1",
            "http://vllm.localhost/v1",
            "http://[::1]:8000/v1",
            "not a url",
        ] {
            assert!(plain_http_host(url).is_none(), "{url}");
        }
    }

    #[test]
    fn sandbox_off_names_the_tools_that_reach_the_host() {
        use crate::config::{Config, EnvSource};
        let sandbox = |config: &str| {
            let config = Config::parse(config, &EnvSource::default()).unwrap();
            let mut findings = Vec::new();
            super::policies(&config, &mut findings);
            findings.into_iter().find(|f| f.check_id == "sandbox.off")
        };
        let off = r#"agents: { defaults: { sandbox: { mode: "off" } } }"#;
        let exec = sandbox(&format!(
            r#"{{ {off}, tools: {{ exec: {{ security: "full" }} }} }}"#
        ))
        .unwrap();
        assert_eq!(exec.severity, super::Severity::Warn);
        assert!(
            exec.detail
                .ends_with("these tools reach the host: exec, read, write, edit"),
            "{exec:?}"
        );
        let files = sandbox(&format!("{{ {off} }}")).unwrap();
        assert!(
            files.detail.ends_with("reach the host: read, write, edit"),
            "{files:?}"
        );
        let none = sandbox(&format!(
            r#"{{ {off}, tools: {{ profile: "messaging" }} }}"#
        ))
        .unwrap();
        assert_eq!(none.severity, super::Severity::Info, "{none:?}");
        assert!(none.detail.contains("no tool offered reaches the host"));
        assert!(sandbox("{}").is_none());
    }

    #[test]
    fn full_exec_without_approvals_is_a_warning() {
        use crate::config::{Config, EnvSource};
        let approvals = |config: &str| {
            let config = Config::parse(config, &EnvSource::default()).unwrap();
            let mut findings = Vec::new();
            super::exec_approvals(&config, &mut findings);
            findings
        };
        let off = r#"agents: { defaults: { sandbox: { mode: "off" } } }"#;
        for ask in ["", r#", ask: "off""#, r#", ask: "on-miss""#] {
            let findings = approvals(&format!(
                r#"{{ {off}, tools: {{ exec: {{ security: "full"{ask} }} }} }}"#
            ));
            assert_eq!(findings.len(), 1, "{ask}: {findings:?}");
            assert_eq!(
                (findings[0].check_id, findings[0].severity),
                ("exec.approvals.off", super::Severity::Warn)
            );
        }
        // No exec tool: nothing to approve.
        assert!(approvals("{}").is_empty());
        let denied = r#"tools: { exec: { security: "full" }, deny: ["exec"] }"#;
        assert!(approvals(&format!("{{ {off}, {denied} }}")).is_empty());
    }

    #[test]
    fn the_approvals_file_is_judged_as_the_gateway_reads_it() {
        use crate::config::{Config, EnvSource};
        let dir = tempfile::tempdir().unwrap();
        let paths = crate::paths::Paths::in_dir(dir.path());
        let ids = |security: &str, file: &str| {
            std::fs::write(dir.path().join(crate::approvals::FILE_NAME), file).unwrap();
            let text = format!(r#"{{ tools: {{ exec: {{ security: "{security}" }} }} }}"#);
            let config = Config::parse(&text, &EnvSource::default()).unwrap();
            let mut findings = Vec::new();
            super::exec_approvals_file(&paths, &config, &mut findings);
            findings.iter().map(|f| f.check_id).collect::<Vec<_>>()
        };
        let full = r#"{"defaults": {"askFallback": "full"}}"#;
        assert_eq!(ids("full", full), ["exec.approvals.fallback_full"]);
        // Held to "allowlist" by the security policy: only matches run.
        assert!(ids("allowlist", full).is_empty());
        assert!(ids("full", r#"{"defaults": {"askFallback": "allowlist"}}"#).is_empty());
        assert!(ids("deny", full).is_empty());
        assert_eq!(
            ids("full", r#"{"defaults": {"askFallback": "yes"}}"#),
            ["exec.approvals.file_invalid"]
        );
    }

    #[test]
    fn host_exec_reports_what_the_kernel_confines() {
        use crate::config::{Config, EnvSource};
        let text = r#"{ tools: { exec: { security: "full" } },
                        agents: { defaults: { sandbox: { mode: "off" } } } }"#;
        let config = Config::parse(text, &EnvSource::default()).unwrap();
        let mut findings = Vec::new();
        super::host_exec(&config, &mut findings);
        assert_eq!(findings.len(), 1);
        match crate::confine::support() {
            Ok(_) => {
                assert_eq!(findings[0].check_id, "exec.host");
                assert!(findings[0].detail.contains("Landlock ABI"), "{findings:?}");
            }
            Err(why) => {
                assert_eq!(findings[0].check_id, "exec.host.no_landlock");
                assert!(findings[0].detail.contains(&why), "{findings:?}");
            }
        }
        let mut findings = Vec::new();
        let default = Config::parse("{}", &EnvSource::default()).unwrap();
        super::host_exec(&default, &mut findings);
        assert!(findings.is_empty());
    }
}
