//! The command line (clap derive) and exit codes.
//!
//! Exit codes: 0 success; 1 a failure (or, for `security audit`, a critical finding);
//! 2 a configuration error or an audit that could not run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::audit::installation;
use crate::config::{Config, ConfigError};
use crate::logging::{self, LogSource};
use crate::pairing::{unix_now, PeerKind, Store};
use crate::paths::{Paths, CONFIG_ENV};
use crate::target::{Source, Target};

#[derive(Parser)]
#[command(
    name = "clawfort",
    version,
    about = "A fail-closed, OpenClaw-compatible AI-agent gateway"
)]
pub struct Cli {
    /// The config file (default ~/.openclaw/openclaw.json); its directory is the state dir.
    #[arg(long, global = true, value_name = "PATH", env = CONFIG_ENV)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway in the foreground (the systemd service runs this).
    Gateway {
        /// Listen on this port instead of gateway.port (0 picks a free one).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Run the egress proxy: HTTP CONNECT tunnels to the allowed hosts only, on a Unix socket
    /// from systemd (clawfort-egress.socket) or --listen.
    ///
    /// With --allow-file (the appliance's unit) it allows what that root-owned file lists
    /// (missing: nothing); without it, the hosts the config names. `egress sync` writes the
    /// file from the config.
    #[command(args_conflicts_with_subcommands = true)]
    Egress {
        /// Listen on this Unix socket path instead of taking the socket from systemd.
        #[arg(long, value_name = "PATH")]
        listen: Option<PathBuf>,
        /// Allow the host:port pairs of this allow file (JSON, written by `egress sync`)
        /// instead of deriving them from the config.
        #[arg(long, value_name = "PATH")]
        allow_file: Option<PathBuf>,
        #[command(subcommand)]
        command: Option<EgressCommand>,
    },
    /// Run one host command for the gateway on the connection systemd hands over as
    /// standard input and output (clawfort-exec@.service, started per connection by
    /// clawfort-exec.socket). Not for use by hand.
    #[command(hide = true)]
    ExecRunner,
    /// Manage who may talk to the agent.
    Pairing {
        #[command(subcommand)]
        command: PairingCommand,
    },
    /// Print a new random gateway token (64 hex characters).
    Token,
    /// Security checks.
    Security {
        #[command(subcommand)]
        command: SecurityCommand,
    },
    /// Show the gateway's log (the journal under systemd, else ~/.openclaw/logs), or with
    /// --tools the execution log: one entry per tool call of the agent, or with --audit the
    /// kernel's record of every program the service user started.
    Logs {
        /// How many of the latest lines to show.
        #[arg(long, default_value_t = 100, conflicts_with = "structured")]
        tail: usize,
        /// Keep printing new lines.
        #[arg(long, short, conflicts_with = "structured")]
        follow: bool,
        #[arg(long, value_enum, default_value_t = LogSource::Auto, conflicts_with = "structured")]
        source: LogSource,
        /// Show the execution log (~/.openclaw/logs/tools.jsonl) instead.
        #[arg(long, group = "structured")]
        tools: bool,
        /// Show the agent's commands from the kernel audit log (/var/log/audit, root's: run
        /// with sudo) instead: time, command line, working directory, unit, whether the
        /// exec worked. Secrets the config names are redacted.
        #[arg(long, group = "structured")]
        audit: bool,
        #[command(flatten)]
        filter: crate::tools::log::cli::Filter,
    },
    /// Security events, oldest first: fail2ban bans and integrity changes (root's host
    /// feed), pairing requests, exec denials and approvals asked, budget warnings and
    /// restarts after a crash (the gateway's feed). Run with sudo on the appliance, or as
    /// the gateway's user. The owner gets the same in the chat, batched.
    #[command(args_conflicts_with_subcommands = true)]
    Events {
        #[command(flatten)]
        show: crate::events::cli::Show,
        #[command(subcommand)]
        command: Option<EventsCommand>,
    },
    /// Model spend today and this month (UTC), by model and by session, from the ledger.
    Usage {
        #[arg(long)]
        json: bool,
    },
    /// Ask the running gateway for its status.
    Status {
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// Connect this installation to a model provider and a Telegram bot (run with sudo on
    /// the appliance).
    ///
    /// On a terminal it asks for what the flags do not give (the API key and the bot token
    /// with hidden input). With --non-interactive, or without a terminal, a missing required
    /// value is an error naming its flag. Each secret is checked with one cheap call
    /// (Telegram getMe; the provider's model list, or a one-token request) before anything
    /// is written. Then .env and openclaw.json are written (mode 600; the previous config
    /// is kept as openclaw.json.bak) and, as root on the appliance, the egress proxy and the
    /// gateway are restarted. Run as root without --config, it sets up the installation the
    /// clawfort.service unit runs, owned by its user.
    ///
    /// Exit status: 0 done, 1 a check (or the restart) failed, 2 a bad flag or value.
    Setup(crate::setup::SetupArgs),
    /// Answer the exec approvals the running gateway waits for (the commands the agent
    /// wants to run that need a human): list them, approve one (once, or --always to also
    /// allow that exact command in that workdir from now on) or deny it.
    #[command(subcommand)]
    Approvals(crate::approvals::cli::ApprovalsCommand),
    /// Back up the state directory to an encrypted file, or restore one (after a reflash).
    #[command(subcommand)]
    Backup(crate::backup::BackupCommand),
    /// Stop every running agent turn of the running gateway, in every chat.
    StopAll {
        /// Print the gateway's JSON answer.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum EventsCommand {
    /// Append a host event to root's feed (/var/lib/clawfort/events.jsonl), which the
    /// gateway forwards to the owner. Root only.
    #[command(subcommand)]
    Emit(crate::events::cli::Emit),
}

#[derive(Subcommand)]
enum PairingCommand {
    /// List pending pairing requests.
    List {
        #[arg(long)]
        channel: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Approve the request with this code: `approve [CHANNEL] CODE` (OpenClaw's form, the
    /// one the pairing reply shows) or `approve CODE --channel CHANNEL`.
    Approve {
        /// The channel, or the code when it is the only argument.
        #[arg(value_name = "CHANNEL|CODE")]
        first: String,
        code: Option<String>,
        /// The channel of the request (searched in all channels when omitted).
        #[arg(long)]
        channel: Option<String>,
    },
    /// Reject the request with this code.
    Reject {
        code: String,
        #[arg(long)]
        channel: Option<String>,
    },
    /// List approved senders and groups.
    Approved {
        #[arg(long)]
        channel: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke an approved sender (or group, with --group).
    Revoke {
        peer: String,
        #[arg(long)]
        channel: String,
        /// PEER is a group id.
        #[arg(long)]
        group: bool,
    },
}

#[derive(Subcommand)]
enum EgressCommand {
    /// Write the egress proxy's allow list from the gateway's openclaw.json and restart the
    /// proxy (as root: `sudo clawfort egress sync`).
    ///
    /// Reads the openclaw.json of the installation clawfort.service runs, prints the
    /// destinations added (+) and removed (-), replaces the file clawfort-egress.service
    /// reads (its --allow-file; root's, mode 644) and restarts that unit. Run it after
    /// changing models.providers.*.baseUrl or channels.telegram by hand.
    ///
    /// Exit status: 0 done (or nothing to do), 1 a failure, 2 a configuration error.
    Sync(crate::egress::SyncArgs),
}

#[derive(Subcommand)]
enum SecurityCommand {
    /// Check the installation (and with --deep the host) for insecure settings.
    Audit {
        /// Also check the host: sockets, firewall, sshd, fail2ban, updates, Docker socket.
        #[arg(long)]
        deep: bool,
        /// Tighten file permissions first, reporting each change.
        #[arg(long)]
        fix: bool,
        #[arg(long)]
        json: bool,
    },
}

/// Parses the command line, runs the command and maps the result to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(
        cli.command,
        Command::Gateway { .. } | Command::Egress { command: None, .. }
    ) {
        logging::init_cli();
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<ConfigError>().is_some()
                || e.downcast_ref::<crate::setup::BadInput>().is_some()
            {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Egress {
        listen,
        allow_file: Some(allow_file),
        command: None,
    } = &cli.command
    {
        // The appliance's proxy: a `DynamicUser=` service with no HOME and no state
        // directory, which needs neither.
        crate::egress::run(
            crate::egress::Source::AllowFile(allow_file),
            listen.as_deref(),
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::Events {
        command: Some(EventsCommand::Emit(kind)),
        ..
    } = cli.command
    {
        // Run as root by fail2ban's action and the integrity check, services with no HOME:
        // it appends to the host feed only and needs no installation's paths.
        crate::events::cli::emit(kind)?;
        return Ok(ExitCode::SUCCESS);
    }
    let paths = Paths::resolve(cli.config.as_deref())?;
    match cli.command {
        Command::Token => {
            println!("{}", crate::token::generate()?);
        }
        Command::Gateway { port } => {
            logging::init_gateway(&paths);
            for tmp in Store::new(paths.credentials_dir()).remove_orphaned_temp_files() {
                tracing::info!("removed {} (left by an interrupted write)", tmp.display());
            }
            let config = Config::load(&paths)?;
            if !config.unimplemented.is_empty() {
                tracing::warn!(
                    "config keys clawfort does not implement yet (accepted, not acted on): {}",
                    config.unimplemented.join(", ")
                );
            }
            config.check_startable()?;
            let secrets = crate::agent::service::configured_secrets(&config);
            let redactor = crate::redact::Redactor::new(&secrets);
            logging::redact_with(redactor.clone());
            let agent = crate::agent::service::prepare(&config, &paths, &redactor)?;
            crate::http::run(config, &paths, port, agent, redactor)?;
        }
        Command::Egress {
            command: Some(EgressCommand::Sync(args)),
            ..
        } => crate::egress::sync::run(args, Target::resolve(cli.config.as_deref())?)?,
        Command::Egress {
            listen,
            command: None,
            ..
        } => crate::egress::run(
            crate::egress::Source::Config(&paths.config),
            listen.as_deref(),
        )?,
        Command::Pairing { command } => pairing(&paths, command)?,
        Command::Security {
            command: SecurityCommand::Audit { deep, fix, json },
        } => {
            let target = Target::resolve(cli.config.as_deref())?;
            let config = match Config::load(&target.paths) {
                Ok(config) => config,
                Err(e) => {
                    eprintln!("error: the audit cannot run: {e}");
                    return Ok(ExitCode::from(2));
                }
            };
            // The egress proxy belongs to the service's installation only.
            let egress = match target.source {
                Source::Service { .. } => {
                    installation::egress_allow(&installation::Sources::system())
                }
                _ => installation::EgressAllow::NotInstalled,
            };
            let mut report = crate::audit::run(&target.paths, &config, &egress, deep, fix);
            report.installation = Some(target.report());
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", crate::audit::render_text(&report));
            }
            if report.has_critical() {
                return Ok(ExitCode::from(1));
            }
        }
        Command::Logs {
            audit: true,
            filter,
            ..
        } => {
            let target = Target::resolve(cli.config.as_deref())?;
            target.print_note();
            let log = std::path::Path::new(crate::auditlog::AUDIT_LOG);
            crate::auditlog::cli::show(&target, log, &filter)?
        }
        Command::Logs {
            tools: true,
            filter,
            ..
        } => {
            let target = Target::resolve(cli.config.as_deref())?;
            target.print_note();
            crate::tools::log::cli::show(&target.paths, &filter)?
        }
        Command::Logs {
            tail,
            follow,
            source,
            ..
        } => logging::show(&paths, source, tail, follow)?,
        Command::Events { show, .. } => {
            let target = Target::resolve(cli.config.as_deref())?;
            target.print_note();
            crate::events::cli::show(&target.paths, &show)?
        }
        Command::Usage { json } => {
            let target = Target::resolve(cli.config.as_deref())?;
            target.print_note();
            usage(&target.paths, json)?
        }
        Command::Status { json } => {
            let target = Target::resolve(cli.config.as_deref())?;
            target.print_note();
            let config = Config::load(&target.paths)?;
            crate::status::show(&config, json)?;
        }
        Command::Setup(args) => crate::setup::run(args, Target::resolve(cli.config.as_deref())?)?,
        Command::StopAll { json } => stop_all(Target::resolve(cli.config.as_deref())?, json)?,
        Command::Approvals(command) => {
            crate::approvals::cli::run(Target::resolve(cli.config.as_deref())?, command)?
        }
        Command::Backup(command) => {
            crate::backup::run(Target::resolve(cli.config.as_deref())?, command)?
        }
        // Standard output is the gateway's connection: nothing else may print there.
        Command::ExecRunner => crate::confine::runner::serve()?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `clawfort stop-all`: `POST /api/agent/stop-all` on the gateway the installation's config
/// describes (as root: the service's), with its token.
fn stop_all(target: Target, json: bool) -> anyhow::Result<()> {
    use crate::gateway_client::{error_text, GatewayClient};
    target.print_note();
    let config = Config::load(&target.paths)?;
    let client = GatewayClient::new(&config);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (status, body) =
        runtime.block_on(client.request(hyper::Method::POST, "/api/agent/stop-all", true))?;
    let addr = client.addr();
    match status.as_u16() {
        200 => {
            let answer: serde_json::Value = serde_json::from_slice(&body)?;
            let stopped = answer["stopped"].as_u64().ok_or_else(|| {
                anyhow::anyhow!("the gateway on {addr} answered without a count: {answer}")
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                let s = if stopped == 1 { "" } else { "s" };
                println!("stopped {stopped} running turn{s}");
            }
            Ok(())
        }
        401 => anyhow::bail!(
            "the gateway on {addr} refused the token (401: {}): {} in {} must be the running \
             gateway's (run as the user the gateway runs as, or with sudo on the appliance)",
            error_text(&body),
            crate::config::TOKEN_ENV,
            target.paths.env_file().display()
        ),
        code => anyhow::bail!(
            "the gateway on {addr} answered {code}: {}",
            error_text(&body)
        ),
    }
}

fn pairing(paths: &Paths, command: PairingCommand) -> anyhow::Result<()> {
    let store = Store::new(paths.credentials_dir());
    let now = unix_now();
    let channels = |channel: Option<String>| -> anyhow::Result<Vec<String>> {
        match channel {
            Some(c) => Ok(vec![checked_channel(c)?]),
            None => Ok(store.channels()?),
        }
    };
    // Over all channels, one whose file is broken is reported (naming the file) and skipped,
    // so the others still show; the command then exits 1.
    let mut broken = Vec::new();
    match command {
        PairingCommand::List { channel, json } => {
            let mut rows = Vec::new();
            for c in channels(channel)? {
                match store.pending(&c, now) {
                    Ok(pending) => rows.extend(pending.into_iter().map(|r| (c.clone(), r))),
                    Err(e) => broken.push(e),
                }
            }
            if json {
                let list: Vec<_> = rows
                    .iter()
                    .map(|(c, r)| serde_json::json!({ "channel": c, "request": r }))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if rows.is_empty() {
                println!("no pending pairing requests");
            } else {
                println!(
                    "{:<16} {:<10} {:<8} {:<10} sender",
                    "channel", "code", "kind", "age"
                );
                for (c, r) in rows {
                    let age = now.saturating_sub(r.created_at);
                    println!(
                        "{c:<16} {:<10} {:<8} {:<10} {}",
                        r.code,
                        r.kind,
                        format!("{}m{}s", age / 60, age % 60),
                        r.id
                    );
                }
            }
        }
        PairingCommand::Approve {
            first,
            code,
            channel,
        } => match code {
            Some(code) => {
                if channel.as_ref().is_some_and(|c| *c != first) {
                    anyhow::bail!("the channel is given twice: `{first}` and --channel");
                }
                decide(&store, Some(first), &code, true)?
            }
            None => decide(&store, channel, &first, true)?,
        },
        PairingCommand::Reject { code, channel } => decide(&store, channel, &code, false)?,
        PairingCommand::Approved { channel, json } => {
            let mut lists = Vec::new();
            for c in channels(channel)? {
                match store.allow_list(&c) {
                    Ok(list) => lists.push((c.clone(), list)),
                    Err(e) => broken.push(e),
                }
            }
            if json {
                let list: Vec<_> = lists
                    .iter()
                    .map(|(c, a)| {
                        serde_json::json!({ "channel": c, "allowFrom": a.allow_from, "groups": a.groups })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for (c, a) in lists {
                    for id in &a.allow_from {
                        println!("{c:<16} direct  {id}");
                    }
                    for id in &a.groups {
                        println!("{c:<16} group   {id}");
                    }
                }
            }
        }
        PairingCommand::Revoke {
            peer,
            channel,
            group,
        } => {
            let channel = checked_channel(channel)?;
            let kind = if group {
                PeerKind::Group
            } else {
                PeerKind::Direct
            };
            if store.revoke(&channel, kind, &peer)? {
                println!("revoked {} {peer} on {channel}", kind);
            } else {
                anyhow::bail!("{} {peer} is not approved on channel {channel}", kind);
            }
        }
    }
    report_broken(&broken)
}

/// Prints each unreadable channel's error; an error result when there was one.
fn report_broken(broken: &[crate::pairing::StoreError]) -> anyhow::Result<()> {
    for e in broken {
        eprintln!("error: {e}");
    }
    anyhow::ensure!(
        broken.is_empty(),
        "{} pairing file(s) could not be read (named above)",
        broken.len()
    );
    Ok(())
}

/// `pairing approve|reject`: finds the code's channel when none is given, then acts.
fn decide(store: &Store, channel: Option<String>, code: &str, approve: bool) -> anyhow::Result<()> {
    let now = unix_now();
    let wanted = code.trim().to_ascii_uppercase();
    let channel = match channel {
        Some(c) => checked_channel(c)?,
        None => {
            let mut found = Vec::new();
            let mut broken = Vec::new();
            for c in store.channels()? {
                match store.pending(&c, now) {
                    Ok(pending) if pending.iter().any(|r| r.code == wanted) => found.push(c),
                    Ok(_) => {}
                    Err(e) => broken.push(e),
                }
            }
            match found.len() {
                0 => {
                    report_broken(&broken)?;
                    anyhow::bail!(
                        "no pending request has code {wanted} (expired or unknown); see \
                         `clawfort pairing list`"
                    )
                }
                1 => found.remove(0),
                _ => anyhow::bail!(
                    "code {wanted} is pending on channels {}; pass --channel",
                    found.join(", ")
                ),
            }
        }
    };
    let result = if approve {
        store.approve(&channel, &wanted, now)?
    } else {
        store.reject(&channel, &wanted, now)?
    };
    let Some(request) = result else {
        anyhow::bail!(
            "no pending request has code {wanted} on channel {channel} (expired or unknown); \
             see `clawfort pairing list`"
        )
    };
    println!(
        "{} {} {} on {channel}",
        if approve { "approved" } else { "rejected" },
        request.kind,
        request.id
    );
    Ok(())
}

fn checked_channel(channel: String) -> anyhow::Result<String> {
    anyhow::ensure!(
        crate::pairing::is_valid_channel_name(&channel),
        "--channel {channel:?}: channel names are 1 to 64 letters, digits, `-` or `_`"
    );
    Ok(channel)
}

/// `clawfort usage`: the ledger's totals. A damaged ledger is an error naming file and line
/// (exit 1), never an empty report.
fn usage(paths: &Paths, json: bool) -> anyhow::Result<()> {
    use crate::usage::{PeriodTotals, Spend};
    let path = crate::usage::ledger_path(paths);
    let totals = crate::usage::read_totals(&path, jiff::Timestamp::now())?;
    let spend = |s: &Spend| {
        serde_json::json!({
            "calls": s.calls, "unpricedCalls": s.unpriced_calls, "usd": s.usd,
            "inputTokens": s.tokens.input_tokens, "outputTokens": s.tokens.output_tokens,
            "cacheReadTokens": s.tokens.cache_read_tokens,
            "cacheWriteTokens": s.tokens.cache_write_tokens,
        })
    };
    let period = |p: &PeriodTotals| {
        let mut v = spend(&p.total);
        v["period"] = p.key.clone().into();
        v["byModel"] = p
            .by_model
            .iter()
            .map(|(k, s)| (k.clone(), spend(s)))
            .collect();
        v["bySession"] = p
            .by_session
            .iter()
            .map(|(k, s)| (k.clone(), spend(s)))
            .collect();
        v
    };
    if json {
        let report = serde_json::json!({
            "ledger": path.display().to_string(),
            "today": period(&totals.day),
            "month": period(&totals.month),
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let line = |label: &str, s: &Spend| {
        let unpriced = if s.unpriced_calls > 0 {
            format!(" ({} unpriced)", s.unpriced_calls)
        } else {
            String::new()
        };
        format!(
            "  {label}: ${:.4}, {} calls{unpriced}, {} in / {} out tokens",
            s.usd, s.calls, s.tokens.input_tokens, s.tokens.output_tokens
        )
    };
    for (name, p) in [("Today", &totals.day), ("This month", &totals.month)] {
        println!("{name} ({} UTC):", p.key);
        println!("{}", line("total", &p.total));
        for (model, s) in &p.by_model {
            println!("{}", line(&format!("model {model}"), s));
        }
        for (session, s) in &p.by_session {
            println!("{}", line(&format!("session {session}"), s));
        }
    }
    Ok(())
}
