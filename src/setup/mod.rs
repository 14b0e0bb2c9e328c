//! `clawfort setup`: from nothing (or an existing installation) to a bot that answers.
//!
//! 1. `target`: which installation (as root: the one `clawfort.service` runs) and who owns
//!    its files.
//! 2. `write`: the existing `openclaw.json` and `.env` are read without following links.
//! 3. `flags` (+ `prompts` on a terminal): a [`plan::Plan`], every value checked for shape.
//! 4. `checks`: one cheap call per secret (Telegram `getMe`, the provider's model list).
//!    A failure stops here (exit 1) unless `--skip-checks`.
//! 5. `merge`: the new files' contents; the result is loaded with the gateway's own config
//!    reader and agent preparation, with exactly the new `.env`, before anything is written.
//! 6. `write`: `.env`, `openclaw.json.bak`, `openclaw.json`, each replaced atomically (mode
//!    600, owned by the service user when root writes).
//! 7. `restart`: as root on the appliance, the egress proxy and the gateway are restarted
//!    and `/healthz` awaited.
//!
//! Secrets live in [`Secret`](crate::secret::Secret)s; they are written to `.env` and sent
//! to the two services they belong to, and appear in no output, error or log line.

mod checks;
mod flags;
mod merge;
mod plan;
mod prompts;
mod restart;
mod target;
mod write;

use std::path::Path;

use anyhow::Context;
use serde_json::{json, Value};

pub use flags::SetupArgs;
pub use plan::BadInput;
pub use target::Target;

use checks::{CheckFailed, ProviderCheck};
use merge::BOT_TOKEN_VAR;
use plan::{bad, Existing, Plan};
use target::OwnerRule;
use write::{Dir, Owner};

use crate::config::{Config, EnvSource, TOKEN_ENV};

/// The largest `openclaw.json` or `.env` read.
const MAX_FILE: usize = 4 << 20;

/// Runs `clawfort setup` on `target`. A [`BadInput`] error means exit 2, any other 1.
pub fn run(args: SetupArgs, target: Target) -> anyhow::Result<()> {
    args.check()?;
    let interactive = args.interactive();
    let paths = &target.paths;
    // As root, a link in place of the state directory could send root's writes anywhere.
    let nofollow = target.root;
    let config_name = paths
        .config
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| {
            bad(format!(
                "--config {}: not a file name",
                paths.config.display()
            ))
        })?
        .to_owned();
    let config_dir_path = match paths.config.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => Path::new(".").to_path_buf(),
    };
    let state_dir = Dir::open(&paths.state_dir, nofollow)?;
    let config_dir = Dir::open(&config_dir_path, nofollow)?;
    let old_config = match &config_dir {
        Some(dir) => dir.read(&config_name, MAX_FILE)?,
        None => None,
    };
    let old_env = match &state_dir {
        Some(dir) => dir.read(".env", MAX_FILE)?,
        None => None,
    };
    let old_env = String::from_utf8(old_env.unwrap_or_default()).map_err(|_| {
        bad(format!(
            "{}/.env is not UTF-8 text",
            paths.state_dir.display()
        ))
    })?;
    let old_tree = match &old_config {
        Some(bytes) => {
            let text = std::str::from_utf8(bytes)
                .map_err(|_| bad(format!("{} is not UTF-8 text", paths.config.display())))?;
            Some(crate::config::parse_tree(text).map_err(|e| {
                bad(format!(
                    "{}: {}; fix it (or move it away), then run setup again",
                    paths.config.display(),
                    e.to_string().trim_start_matches("config: ")
                ))
            })?)
        }
        None => None,
    };

    let mut out = Output::new(args.json);
    if let Some(note) = &target.note {
        out.progress(&format!("note: {note}"));
    }
    let empty = json!({});
    let existing = Existing(old_tree.as_ref().unwrap_or(&empty));
    let plan = if interactive {
        let mut terminal = prompts::Terminal;
        let owner = target
            .service_user
            .as_deref()
            .map(|u| format!(" (the gateway service's, user {u})"))
            .unwrap_or_default();
        out.progress(&format!(
            "Setting up the clawfort installation in {}{owner}.",
            paths.state_dir.display()
        ));
        args.plan(&existing, flags::Source::Person(&mut terminal))?
    } else {
        args.plan(&existing, flags::Source::Flags)?
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut warnings = Vec::new();
    let (bot, provider_check) =
        runtime.block_on(run_checks(&plan, &args, &mut out, &mut warnings))?;

    let (tree, notes) = merge::config(old_tree, &plan)?;
    warnings.extend(notes);
    let key_var = plan.key_var();
    let mut env_set: Vec<(&str, String)> = Vec::new();
    if let Some(key) = &plan.api_key {
        env_set.push((&key_var, key.expose().to_owned()));
    }
    env_set.push((BOT_TOKEN_VAR, plan.bot_token.expose().to_owned()));
    let text = format!("{}\n", serde_json::to_string_pretty(&tree)?);
    let (config, new_env, token_generated) = validate(&text, &old_env, &mut env_set, &target)?;
    if let Some(w) = budget_without_cost(&plan, &tree) {
        warnings.push(w);
    }

    // Everything checked: write. `.env` first, so a config naming a new variable never
    // exists without it.
    let owner_rule = target.owner;
    let owner = |dir: Option<&Dir>| -> anyhow::Result<Option<Owner>> {
        Ok(match owner_rule {
            OwnerRule::Invoker => None,
            OwnerRule::Service(owner) => Some(owner),
            OwnerRule::StateDirOwner => dir.map(Dir::owner).transpose()?,
        })
    };
    let file_owner = owner(state_dir.as_ref())?;
    let state_dir = match state_dir {
        Some(dir) => dir,
        None => Dir::open_or_create(&paths.state_dir, nofollow, file_owner)?,
    };
    let config_dir = match config_dir {
        Some(dir) => dir,
        None => Dir::open_or_create(&config_dir_path, nofollow, file_owner)?,
    };
    state_dir.replace(".env", new_env.as_bytes(), file_owner)?;
    let backup = match &old_config {
        Some(old) => {
            let name = format!("{config_name}.bak");
            config_dir.replace(&name, old, file_owner)?;
            Some(config_dir.path().join(name))
        }
        None => None,
    };
    config_dir.replace(&config_name, text.as_bytes(), file_owner)?;

    let restart_wanted = target.root && target.service_user.is_some();
    let restarted = if restart_wanted && !args.no_restart {
        out.progress("Restarting the services...");
        let restarted = runtime.block_on(restart::restart(&config)).context(
            "the new settings are written, but applying them failed (nothing else to undo: \
             the previous config is openclaw.json.bak)",
        )?;
        Some(restarted)
    } else {
        None
    };

    let summary = Summary {
        target: &target,
        plan: &plan,
        bot: bot.as_deref(),
        provider_check: provider_check.as_ref(),
        key_var: plan.api_key.as_ref().map(|_| key_var.as_str()),
        backup: backup.as_deref(),
        token_generated,
        restarted: restarted.as_ref().map(|r| r.units.as_slice()),
        restart_wanted,
        warnings: &warnings,
        gateway: crate::gateway_client::GatewayClient::new(&config).addr(),
    };
    out.finish(&summary)
}

/// Runs both checks; with `--skip-checks` a failure is a warning instead of the end.
async fn run_checks(
    plan: &Plan,
    args: &SetupArgs,
    out: &mut Output,
    warnings: &mut Vec<String>,
) -> anyhow::Result<(Option<String>, Option<ProviderCheck>)> {
    fn outcome<T>(
        result: Result<T, CheckFailed>,
        skip: bool,
        warnings: &mut Vec<String>,
    ) -> anyhow::Result<Option<T>> {
        match result {
            Ok(value) => Ok(Some(value)),
            Err(e) if skip => {
                warnings.push(format!("--skip-checks: written although {e}"));
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }
    let skip = args.skip_checks;
    out.progress(&format!(
        "Checking the bot token with Telegram ({})...",
        plan::host_port(&plan.api_root).unwrap_or_default()
    ));
    let bot = outcome(
        checks::telegram(&plan.api_root, &plan.bot_token).await,
        skip,
        warnings,
    )?;
    if let Some(name) = &bot {
        out.progress(&format!("  the bot is {name}"));
    }
    out.progress(&format!(
        "Checking the API key with {}...",
        plan.provider_label()
    ));
    let provider = outcome(checks::provider(plan).await, skip, warnings)?;
    match &provider {
        Some(ProviderCheck::ModelList {
            listed: Some(false),
        }) => warnings.push(format!(
            "{} accepted the key, but its model list does not name `{}`: check the model id",
            plan.provider_label(),
            plan.model
        )),
        Some(_) => out.progress("  the key works"),
        None => {}
    }
    Ok((bot, provider))
}

/// Loads the new config with the gateway's reader, the new `.env` as its only source of
/// `${VAR}`, and prepares the agent as `clawfort gateway` would. Adds a fresh gateway
/// token to `.env` when the installation has none (the CLI's `status` and `stop-all` need
/// one). Returns the config, the `.env` text, and whether a token was made.
fn validate(
    text: &str,
    old_env: &str,
    env_set: &mut Vec<(&str, String)>,
    target: &Target,
) -> anyhow::Result<(Config, String, bool)> {
    let load = |env_set: &[(&str, String)]| -> anyhow::Result<(Config, String)> {
        let pairs: Vec<(&str, &str)> = env_set.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let new_env = merge::env(old_env, &pairs)?;
        let vars = merge::parse_env(&new_env).map_err(|e| bad(format!(".env: {e}")))?;
        let config = Config::parse(text, &EnvSource::fixed(vars)).map_err(|e| {
            bad(format!(
                "the new openclaw.json would not load, so nothing was written: {e}"
            ))
        })?;
        Ok((config, new_env))
    };
    let (mut config, mut new_env) = load(env_set)?;
    let mut generated = false;
    if config.gateway.token.is_none() {
        env_set.push((TOKEN_ENV, crate::token::generate()?));
        (config, new_env) = load(env_set)?;
        generated = true;
    }
    let refuse = |e: crate::config::ConfigError| {
        bad(format!(
            "with the new settings the gateway would not start, so nothing was written: {e}"
        ))
    };
    config.check_startable().map_err(refuse)?;
    match crate::agent::service::prepare(&config, &target.paths).map_err(refuse)? {
        Some(_) => Ok((config, new_env, generated)),
        None => Err(bad(
            "with the new settings the agent would not start (see the warnings above), so \
             nothing was written",
        )
        .into()),
    }
}

/// A budget is only as good as the model's prices: without `cost` its calls count $0.
fn budget_without_cost(plan: &Plan, tree: &Value) -> Option<String> {
    let budget = tree.get("budget")?;
    if budget.get("dailyUsd").is_none() && budget.get("monthlyUsd").is_none() {
        return None;
    }
    let priced = tree
        .pointer(&format!("/models/providers/{}/models", plan.provider_id))
        .and_then(Value::as_array)
        .and_then(|models| {
            models
                .iter()
                .find(|m| m.get("id").and_then(Value::as_str) == Some(plan.model.as_str()))
        })
        .is_some_and(|m| m.get("cost").is_some());
    (!priced).then(|| {
        format!(
            "the budget is set, but model `{}` has no `cost` in openclaw.json, so its calls \
             count as $0: add cost {{ input, output }} (US dollars per million tokens) to its \
             entry under models.providers.{}.models",
            plan.model, plan.provider_id
        )
    })
}

/// Everything the summary reports.
struct Summary<'a> {
    target: &'a Target,
    plan: &'a Plan,
    bot: Option<&'a str>,
    provider_check: Option<&'a ProviderCheck>,
    key_var: Option<&'a str>,
    backup: Option<&'a Path>,
    token_generated: bool,
    restarted: Option<&'a [String]>,
    restart_wanted: bool,
    warnings: &'a [String],
    gateway: std::net::SocketAddr,
}

impl Summary<'_> {
    fn pairing_command(&self) -> String {
        format!("{} pairing approve telegram <CODE>", self.target.command())
    }

    fn json(&self) -> Value {
        let p = self.plan;
        json!({
            "stateDir": self.target.paths.state_dir,
            "config": self.target.paths.config,
            "env": self.target.paths.env_file(),
            "backup": self.backup,
            "serviceUser": self.target.service_user,
            "provider": {
                "id": p.provider_id, "api": p.api.as_str(), "baseUrl": p.base_url,
                "model": p.model_ref(), "apiKeyVar": self.key_var,
                "check": match self.provider_check {
                    Some(ProviderCheck::ModelList { .. }) => "model list",
                    Some(ProviderCheck::OneToken) => "one-token request",
                    None => "skipped",
                },
            },
            "telegram": {
                "bot": self.bot, "apiRoot": p.api_root, "botTokenVar": BOT_TOKEN_VAR,
                "owners": p.owners,
            },
            "budget": { "dailyUsd": p.daily_usd, "monthlyUsd": p.monthly_usd },
            "gatewayTokenGenerated": self.token_generated,
            "restarted": self.restarted,
            "gateway": self.gateway.to_string(),
            "pairingCommand": self.pairing_command(),
            "warnings": self.warnings,
        })
    }

    fn text(&self) -> String {
        let p = self.plan;
        let paths = &self.target.paths;
        let mut lines = Vec::new();
        let mut secrets = vec![format!("the bot token as {BOT_TOKEN_VAR}")];
        if let Some(var) = self.key_var {
            secrets.insert(0, format!("the API key as {var}"));
        }
        if self.token_generated {
            secrets.push(format!("a new gateway token as {TOKEN_ENV}"));
        }
        lines.push(format!(
            "Wrote {} ({}).",
            paths.env_file().display(),
            secrets.join(", ")
        ));
        match self.backup {
            Some(backup) => lines.push(format!(
                "Wrote {}; the previous file is {} (comments and key order are not kept).",
                paths.config.display(),
                backup.display()
            )),
            None => lines.push(format!("Wrote {}.", paths.config.display())),
        }
        lines.push(format!(
            "Model: {}, served by {}.",
            p.model_ref(),
            p.base_url
        ));
        if !p.owners.is_empty() {
            lines.push(format!(
                "Owner: Telegram user {} (approved; may use /stop, /new and /status).",
                p.owners.join(", ")
            ));
        }
        let usd = |v: Option<f64>, per: &str| v.map(|v| format!("${v} a {per}"));
        let budget: Vec<String> = [usd(p.daily_usd, "day"), usd(p.monthly_usd, "month")]
            .into_iter()
            .flatten()
            .collect();
        if !budget.is_empty() {
            lines.push(format!("Budget: {}.", budget.join(", ")));
        }
        for w in self.warnings {
            lines.push(format!("warning: {w}"));
        }
        match (self.restarted, self.restart_wanted) {
            (Some(units), _) => lines.push(format!(
                "Restarted {}; the gateway answers on {}.",
                units.join(" and "),
                self.gateway
            )),
            (None, true) => lines.push(format!(
                "Not restarted (--no-restart): apply with `sudo systemctl restart {} {}`.",
                restart::EGRESS_UNIT,
                crate::audit::installation::UNIT
            )),
            (None, false) => lines.push(
                "Restart the gateway to apply the new settings (it reads them when it starts)."
                    .to_owned(),
            ),
        }
        lines.push(String::new());
        let bot = self.bot.unwrap_or("your bot");
        if p.owners.is_empty() {
            lines.push(format!(
                "{bot} is ready: send it a message now. It answers with a pairing code; \
                 approve yourself with:"
            ));
        } else {
            lines.push(format!(
                "{bot} is ready: send it a message now. Anyone else who writes to it gets a \
                 pairing code, which you approve with:"
            ));
        }
        lines.push(format!("  {}", self.pairing_command()));
        lines.join("\n")
    }
}

/// Progress on stderr (not with `--json`), the summary on stdout.
struct Output {
    json: bool,
}

impl Output {
    fn new(json: bool) -> Self {
        Self { json }
    }

    fn progress(&mut self, text: &str) {
        if !self.json {
            eprintln!("{text}");
        }
    }

    fn finish(&self, summary: &Summary) -> anyhow::Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(&summary.json())?);
        } else {
            println!("{}", summary.text());
        }
        Ok(())
    }
}
