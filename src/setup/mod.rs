//! `clawfort setup`: from nothing (or an existing installation) to a bot that answers.
//!
//! 1. [`Target`]: which installation (as root: the one `clawfort.service` runs), resolved
//!    by the CLI; `owner`: who gets the files.
//! 2. `write`: the existing `openclaw.json` and `.env` are read without following links.
//! 3. `flags` (+ `prompts` on a terminal): a [`plan::Plan`], every value checked for shape.
//! 4. `checks`: one cheap call per secret (Telegram `getMe`, the provider's model list).
//!    A failure stops here (exit 1) unless `--skip-checks`.
//! 5. `merge`: the new files' contents; the result is loaded with the gateway's own config
//!    reader and agent preparation, with exactly the new `.env`, before anything is written.
//! 6. `write`: `.env`, `openclaw.json.bak`, `openclaw.json`, each replaced atomically (mode
//!    600, owned by the service user when root writes); then, as root on the appliance, the
//!    egress proxy's allow list (root's, 644; [`crate::egress::sync`]).
//! 7. `restart`: as root on the appliance, the egress proxy and the gateway are restarted
//!    and `/healthz` awaited.
//!
//! A Ctrl-C, SIGTERM or SIGHUP (`interrupt`) ends setup with the terminal as it was, and
//! never in the middle of the writes.
//!
//! Secrets live in [`Secret`](crate::secret::Secret)s; they are written to `.env` and sent
//! to the two services they belong to, and appear in no output, error or log line.

mod checks;
mod flags;
mod interrupt;
mod merge;
mod owner;
mod plan;
mod prompts;
mod restart;
pub(crate) mod write;

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::{json, Value};

pub(crate) use flags::read_secret;
pub use flags::SetupArgs;
pub use plan::BadInput;

use checks::{CheckFailed, ProviderCheck, Refused};
use merge::BOT_TOKEN_VAR;
use owner::OwnerRule;
use plan::{bad, Existing, Plan};
use write::Dir;

use crate::config::{Config, EnvSource, TOKEN_ENV};
use crate::target::Target;

/// The largest `openclaw.json` or `.env` read.
const MAX_FILE: usize = 4 << 20;

/// Runs `clawfort setup` on `target`. A [`BadInput`] error means exit 2, any other 1.
pub fn run(args: SetupArgs, target: Target) -> anyhow::Result<()> {
    args.check()?;
    interrupt::install()?;
    let interactive = args.interactive();
    let current = Current::read(&target)?;
    let mut out = Output::new(args.json);
    if let Some(note) = &target.note {
        out.progress(&format!("note: {note}"));
    }
    let empty = json!({});
    let existing = Existing(current.tree.as_ref().unwrap_or(&empty));
    let mut plan = if interactive {
        let owner = target
            .service
            .as_ref()
            .map(|u| format!(" (the gateway service's, user {})", u.name))
            .unwrap_or_default();
        out.progress(&format!(
            "Setting up the clawfort installation in {}{owner}.",
            target.paths.state_dir.display()
        ));
        args.plan(&existing, flags::Source::Person(&mut prompts::Terminal))?
    } else {
        args.plan(&existing, flags::Source::Flags)?
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut warnings = Vec::new();
    let (bot, provider_check) = runtime.block_on(check_secrets(
        &mut plan,
        &args,
        interactive,
        &mut out,
        &mut warnings,
    ))?;

    let (tree, notes) = merge::config(current.tree.clone(), &plan)?;
    warnings.extend(notes);
    let key_var = plan.key_var();
    let mut env_set: Vec<(&str, String)> = Vec::new();
    if let Some(key) = &plan.api_key {
        env_set.push((&key_var, key.expose().to_owned()));
    }
    env_set.push((BOT_TOKEN_VAR, plan.bot_token.expose().to_owned()));
    let text = format!("{}\n", serde_json::to_string_pretty(&tree)?);
    let (config, new_env, token_generated) = validate(&text, &current.env, &mut env_set, &target)?;
    warnings.extend(budget_without_cost(&plan, &tree));
    if target.service.is_none() {
        // A gateway started from this shell reads its environment before `.env`.
        for (name, value) in &env_set {
            if std::env::var(name).is_ok_and(|v| !v.is_empty() && v != *value) {
                warnings.push(format!(
                    "{name} is also set in your environment, which a gateway started from \
                     this shell reads before .env: unset it there"
                ));
            }
        }
    }

    let restart_wanted = target.root && target.service.is_some();
    let egress_allow = if restart_wanted {
        crate::egress::sync::for_setup(&text, &target.paths.config, &mut warnings)?
    } else {
        None
    };

    let backup = interrupt::while_writing(|| -> anyhow::Result<_> {
        let backup = current.write(&target, &new_env, &text)?;
        if let Some(pending) = &egress_allow {
            pending.write()?;
        }
        Ok(backup)
    })?;

    let restarted = if restart_wanted && !args.no_restart {
        out.progress("Restarting the services...");
        let restarted = runtime
            .block_on(restart::restart(&config))
            .with_context(|| {
                let previous = match &backup {
                    Some(path) => format!("the previous config is {}", path.display()),
                    None => "there was no previous config".to_owned(),
                };
                format!("the new settings are written, but applying them failed ({previous})")
            })?;
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
        egress_allow: egress_allow.as_ref(),
        warnings: &warnings,
        gateway: crate::gateway_client::GatewayClient::new(&config).addr(),
    };
    out.finish(&summary)
}

/// The installation as setup found it: its directories (when they exist), opened once and
/// used for the writes too, and the files it replaces.
struct Current {
    state_dir: Option<Dir>,
    config_dir: Option<Dir>,
    config_dir_path: PathBuf,
    config_name: String,
    /// `openclaw.json` as it was, byte for byte (it becomes the backup).
    config: Option<Vec<u8>>,
    tree: Option<Value>,
    env: String,
    /// As root, a link in place of a directory could send root's writes anywhere.
    nofollow: bool,
}

impl Current {
    fn read(target: &Target) -> anyhow::Result<Self> {
        let paths = &target.paths;
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
            _ => PathBuf::from("."),
        };
        let state_dir = Dir::open(&paths.state_dir, nofollow)?;
        let config_dir = Dir::open(&config_dir_path, nofollow)?;
        let config = match &config_dir {
            Some(dir) => dir.read(&config_name, MAX_FILE)?,
            None => None,
        };
        let env = match &state_dir {
            Some(dir) => dir.read(".env", MAX_FILE)?,
            None => None,
        };
        let env = String::from_utf8(env.unwrap_or_default())
            .map_err(|_| bad(format!("{} is not UTF-8 text", paths.env_file().display())))?;
        let tree = match &config {
            Some(bytes) => Some(Self::parse(bytes, &paths.config)?),
            None => None,
        };
        Ok(Self {
            state_dir,
            config_dir,
            config_dir_path,
            config_name,
            config,
            tree,
            env,
            nofollow,
        })
    }

    fn parse(bytes: &[u8], path: &Path) -> Result<Value, BadInput> {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| bad(format!("{} is not UTF-8 text", path.display())))?;
        crate::config::parse_tree(text).map_err(|e| {
            let why = match e {
                crate::config::ConfigError::File { message, .. } => message,
                other => other.to_string(),
            };
            bad(format!(
                "{}: {why}; fix it (or move it away), then run setup again",
                path.display()
            ))
        })
    }

    /// Writes `.env` first (so a config naming a new variable never exists without it),
    /// then the backup of the old config, then the new one. Returns the backup's path.
    fn write(self, target: &Target, env: &str, config: &str) -> anyhow::Result<Option<PathBuf>> {
        let owner = match OwnerRule::of(target) {
            OwnerRule::Invoker => None,
            OwnerRule::Service(owner) => Some(owner),
            OwnerRule::StateDirOwner => self.state_dir.as_ref().map(Dir::owner).transpose()?,
        };
        let state_dir = match self.state_dir {
            Some(dir) => dir,
            None => Dir::open_or_create(&target.paths.state_dir, self.nofollow, owner)?,
        };
        let config_dir = match self.config_dir {
            Some(dir) => dir,
            None => Dir::open_or_create(&self.config_dir_path, self.nofollow, owner)?,
        };
        state_dir.replace(".env", env.as_bytes(), owner)?;
        let backup = match &self.config {
            Some(old) => {
                let name = format!("{}.bak", self.config_name);
                config_dir.replace(&name, old, owner)?;
                Some(config_dir.path().join(name))
            }
            None => None,
        };
        config_dir.replace(&self.config_name, config.as_bytes(), owner)?;
        Ok(backup)
    }
}

/// Runs the checks; on a terminal a refused secret is asked for again, twice at most (a
/// typo should not cost every answer; an unreachable server is not the person's typing).
async fn check_secrets(
    plan: &mut Plan,
    args: &SetupArgs,
    interactive: bool,
    out: &mut Output,
    warnings: &mut Vec<String>,
) -> anyhow::Result<(Option<String>, Option<ProviderCheck>)> {
    let mut asked_again = 0;
    // When only the key is asked again, the bot token that passed is not checked again.
    let mut bot_passed = None;
    loop {
        warnings.clear();
        let result = run_checks(plan, args, out, warnings, &mut bot_passed).await;
        let refused = match &result {
            Err(e) if interactive && asked_again < 2 => {
                e.downcast_ref::<CheckFailed>().and_then(|c| c.refused)
            }
            _ => None,
        };
        match (refused, result) {
            (Some(secret), Err(e)) => {
                asked_again += 1;
                eprintln!("  {e}");
                if matches!(secret, Refused::BotToken) {
                    bot_passed = None;
                }
                ask_again(&mut prompts::Terminal, plan, secret)?;
            }
            (_, result) => return result,
        }
    }
}

/// Asks again for the secret a service refused.
fn ask_again(ask: &mut dyn prompts::Ask, plan: &mut Plan, secret: Refused) -> anyhow::Result<()> {
    match secret {
        Refused::BotToken => {
            plan.bot_token =
                prompts::ask_hidden(ask, "The bot token again (input hidden)", plan::bot_token)?;
        }
        Refused::ApiKey => {
            plan.api_key = Some(prompts::ask_hidden(
                ask,
                "The API key again (input hidden)",
                plan::api_key,
            )?);
        }
    }
    Ok(())
}

/// Runs both checks, the bot token's only when `bot_passed` does not hold its bot's name
/// from an earlier run (it is set when it passes); with `--skip-checks` a failure is a
/// warning instead of the end.
async fn run_checks(
    plan: &Plan,
    args: &SetupArgs,
    out: &mut Output,
    warnings: &mut Vec<String>,
    bot_passed: &mut Option<String>,
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
    let bot = match bot_passed {
        Some(name) => Some(name.clone()),
        None => {
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
                *bot_passed = Some(name.clone());
            }
            bot
        }
    };
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

/// Loads the new config with the gateway's reader and prepares the agent as `clawfort
/// gateway` would. `${VAR}` comes from the new `.env` alone for the service's installation
/// (its unit reads that file), and from this process's environment first otherwise (as
/// for a gateway started from the same shell). Adds a fresh gateway token to `.env` when
/// the installation has none (the CLI's `status` and `stop-all` need one). Returns the
/// config, the `.env` text, and whether a token was made.
fn validate(
    text: &str,
    old_env: &str,
    env_set: &mut Vec<(&str, String)>,
    target: &Target,
) -> anyhow::Result<(Config, String, bool)> {
    let load = |env_set: &[(&str, String)]| -> anyhow::Result<(Config, String)> {
        let pairs: Vec<(&str, &str)> = env_set.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let new_env = merge::env(old_env, &pairs)?;
        let mut vars = merge::parse_env(&new_env).map_err(|e| bad(format!(".env: {e}")))?;
        if target.service.is_none() {
            vars.extend(std::env::vars().filter(|(_, v)| !v.is_empty()));
        }
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
    match crate::agent::service::prepare(
        &config,
        &target.paths,
        &crate::redact::Redactor::new(&crate::agent::service::configured_secrets(&config)),
    )
    .map_err(refuse)?
    {
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
    egress_allow: Option<&'a crate::egress::sync::Pending>,
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
            "serviceUser": self.target.service.as_ref().map(|u| &u.name),
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
            "egressAllow": self.egress_allow.map(|p| json!({
                "file": p.path,
                "allow": p.list.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "added": p.diff.added.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "removed": p.diff.removed.iter().map(ToString::to_string).collect::<Vec<_>>(),
            })),
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
        if let Some(egress) = self.egress_allow {
            lines.push(format!(
                "Wrote {}: the egress proxy allows {}{}.",
                egress.path.display(),
                egress.list.describe(),
                egress.diff.describe()
            ));
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
