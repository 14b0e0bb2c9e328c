//! Checks of the installation itself: file permissions and the configuration.

use super::{Finding, Severity};
use crate::config::{Config, DmPolicy, SandboxMode, MIN_TOKEN_LEN, TOKEN_ENV};
use crate::paths::{expand_tilde, Paths};

pub fn check(paths: &Paths, config: &Config) -> Vec<Finding> {
    let mut findings = Vec::new();
    super::files::check(paths, config, &mut findings);
    gateway(config, &mut findings);
    policies(config, &mut findings);
    denied_paths(config, &mut findings);
    config_findings(config, &mut findings);
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
        findings.push(Finding::new(
            "sandbox.off",
            if exposed {
                Severity::Critical
            } else {
                Severity::Warn
            },
            "agent tools run on the host, not in the sandbox",
            "agents.defaults.sandbox.mode is \"off\"",
            "set agents.defaults.sandbox.mode to \"non-main\" or \"all\"",
        ));
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
