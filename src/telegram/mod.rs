//! The Telegram channel: long polling of the Bot API, the pairing policy, the agent.
//!
//! Outbound HTTPS only (`getUpdates` long polling; no webhook, no open port). The flow for
//! one update:
//! 1. `inbound` decides from config alone: groups must be listed in `groups`, group
//!    senders pass `groupPolicy`, and `requireMention` (default on) wants the bot
//!    addressed. An owner's `/stop`, `/new`, `/status` run at once (they are idempotent,
//!    so a redelivery after a crash repeats them harmlessly).
//! 2. Everything else becomes a job in the journal (`state`), which also holds the update
//!    offset; see there for the at-most-once / never-silently-lost guarantee.
//! 3. A job runs through `messages::handle` (channel `telegram`): `pairing_required` sends
//!    one reply with the code and the approve command (only when the code is new for that
//!    sender, so repeats do not spam); `accepted` runs the turn through the [`Agent`] with
//!    a typing indicator and sends the reply split at 4096 UTF-16 units; `denied` and
//!    `ignored` get no reply, so a stranger learns nothing about the bot.
//!
//! Other updates: a message without text in a private chat gets [`NOT_TEXT_REPLY`]; in a
//! group, and every other update kind (edits, channel posts, callbacks), nothing. Text
//! beyond [`DEFAULT_MAX_INBOUND_BYTES`] is cut and the (accepted) sender told. Replies are
//! plain text (no `parse_mode`): model output is never parsed as Markdown or HTML.
//!
//! Jobs of different chats run in parallel, each its own task, at most
//! [`MAX_CONCURRENT_JOBS`] at once; within one chat one job runs at a time, in arrival
//! order (the next message of a busy chat waits in the journal). Polling continues while
//! they run, so `/stop` (which stops every running turn) arrives promptly.
//!
//! Notices for the owner (a budget warning, a rejected API key; see
//! [`TelegramSettings::owner_notices`]) go, each as its own message, to the private chat of
//! every owner id (a user's private chat with the bot has the user's id).

pub mod api;
mod health;
mod inbound;
mod split;
mod state;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::approvals::Approvals;
use crate::channel::{
    Agent, ApprovalCommand, CancellationToken, CommandContext, OwnerCommand, OwnerNotices,
    Recorded, Turn,
};
use crate::config::{Config, DmPolicy};
use crate::events::{Event, Events};
use crate::messages::{self, InboundMessage, Status};
use crate::pairing::{unix_now, PeerKind, Store};
use crate::secret::Secret;
use crate::sessions::{self, Transcripts, DEFAULT_ACCOUNT};

pub use api::{ApiError, Client};
pub use health::{Health, Snapshot as HealthSnapshot, State as HealthState};
pub use split::{split_message, MESSAGE_LIMIT};
pub use state::StateError;

use inbound::Inbound;
use state::{Job, JobKind, Journal};

/// The channel name in the policy, the pairing store and session keys.
pub const CHANNEL: &str = "telegram";
/// Telegram's public Bot API.
pub const DEFAULT_API_ROOT: &str = "https://api.telegram.org";
/// Inbound text beyond this many bytes is cut before it reaches the policy or the model.
/// Telegram itself caps a message at 4096 characters; this only bounds forged or
/// self-hosted-server input.
pub const DEFAULT_MAX_INBOUND_BYTES: usize = 16 * 1024;
/// The answer to a photo, sticker, voice note... in a private chat.
pub const NOT_TEXT_REPLY: &str = "I can only read text messages.";
/// The note to the sender of a message whose handling a crash or restart interrupted.
pub const INTERRUPTED_REPLY: &str =
    "The gateway restarted while handling your message, so it was not answered. \
     Please send it again.";
/// The answer when the agent failed on a turn; the details go to the log only.
pub const FAILED_REPLY: &str =
    "Sorry, something went wrong with this message. The owner can find the details in the \
     gateway log.";
/// Longest wait honoured from a 429's `retry_after`.
const MAX_RETRY_AFTER_SECS: u64 = 600;
/// Longest wait between attempts after network errors.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Jobs (turns) running at once, over all chats: a flood queues in the journal instead of
/// spawning without bound.
const MAX_CONCURRENT_JOBS: usize = 32;
/// Attempts per outgoing message chunk.
const SEND_ATTEMPTS: u32 = 5;

/// `groupPolicy`: which senders the bot listens to in an allowed group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GroupPolicy {
    /// Every member.
    Open,
    /// Senders in `groupAllowFrom` (or, when that is empty, `allowFrom`); the default.
    #[default]
    Allowlist,
    /// Nobody.
    Disabled,
}

/// One entry of `channels.telegram.groups` (keyed by chat id, or `"*"` for every group).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupSettings {
    /// `requireMention`; the channel's default when unset.
    pub require_mention: Option<bool>,
    /// `groupPolicy` for this group; the channel's when unset.
    pub group_policy: Option<GroupPolicy>,
    /// `allowFrom` for this group's senders; the channel's `groupAllowFrom` when unset.
    pub allow_from: Option<Vec<String>>,
}

/// Everything the Telegram channel needs from `channels.telegram.*`.
#[derive(Debug, Clone)]
pub struct TelegramSettings {
    /// `botToken`, or the content of `tokenFile`.
    pub bot_token: Secret,
    /// `apiRoot`: the Bot API root without `/bot<token>`.
    pub api_root: String,
    /// The account id (`default` for the single-account setup); names the offset file.
    pub account_id: String,
    /// Long-poll `timeout` of `getUpdates`, in seconds.
    pub poll_timeout_secs: u64,
    /// `groups`: the allowed group chats. Empty: no group is served.
    pub groups: BTreeMap<String, GroupSettings>,
    /// `requireMention` default for groups (OpenClaw: true).
    pub require_mention: bool,
    /// `groupPolicy` (OpenClaw default: allowlist).
    pub group_policy: GroupPolicy,
    /// `groupAllowFrom`: numeric user ids allowed to talk in groups.
    pub group_allow_from: Vec<String>,
    /// Telegram user ids of the owner (`commands.ownerAllowFrom`, else `allowFrom`; see
    /// `Config::owners`): only they may use `/stop`, `/new`, `/status`, and they get the
    /// owner's notices.
    pub owner_ids: Vec<String>,
    /// Notices the agent posts for the owner; the channel delivers them.
    pub owner_notices: OwnerNotices,
    /// Where a new pairing request is recorded as a security event.
    pub events: Events,
    /// The exec approvals, when the `exec` tool may ask: the channel delivers their prompts
    /// to `approvers` and takes `/approve` and `/deny` from them.
    pub approvals: Option<Approvals>,
    /// Telegram user ids who may answer exec approvals (`execApprovals.approvers`, else the
    /// owners; none with `execApprovals.enabled: false`).
    pub approvers: Vec<String>,
    /// Where the channel reports how it is doing (`clawfort status` reads it).
    pub health: Health,
    /// Inbound text cap in bytes.
    pub max_inbound_bytes: usize,
    /// How often "typing…" is refreshed while a turn runs (Telegram shows it ~5 s).
    pub typing_interval: Duration,
    /// How long a turn runs before "typing…" is first sent: an answer faster than a person
    /// notices needs none, and skipping it spares a Bot API call (and, on the appliance, a
    /// trip through the egress proxy) that would compete with the turn for the CPU.
    pub typing_delay: Duration,
}

impl TelegramSettings {
    /// The settings with OpenClaw's defaults.
    pub fn new(bot_token: Secret) -> Self {
        Self {
            bot_token,
            api_root: DEFAULT_API_ROOT.to_string(),
            account_id: DEFAULT_ACCOUNT.to_string(),
            poll_timeout_secs: 30,
            groups: BTreeMap::new(),
            require_mention: true,
            group_policy: GroupPolicy::Allowlist,
            group_allow_from: Vec::new(),
            owner_ids: Vec::new(),
            owner_notices: OwnerNotices::default(),
            events: Events::default(),
            approvals: None,
            approvers: Vec::new(),
            health: Health::default(),
            max_inbound_bytes: DEFAULT_MAX_INBOUND_BYTES,
            typing_interval: Duration::from_secs(4),
            typing_delay: Duration::from_millis(200),
        }
    }
}

/// The gateway state the policy step reads and writes.
#[derive(Debug, Clone)]
pub struct Policy {
    pub config: Arc<Config>,
    pub store: Store,
    pub transcripts: Transcripts,
}

/// Why the channel stopped.
#[derive(Debug, thiserror::Error)]
pub enum TelegramError {
    /// 401 or 409: retrying cannot help until the owner acts.
    #[error("{0}; Telegram polling stopped")]
    Api(ApiError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{0}")]
    Setup(String),
}

/// Runs the channel until `shutdown` fires (then `Ok`) or a fatal error: a rejected token
/// (401), a competing poller or webhook (409), or an unwritable state directory. Network
/// errors and 5xx are retried with backoff (1 s doubling to 60 s); 429 waits `retry_after`.
///
/// Dropping the future is a crash as far as the state is concerned: the journal in
/// `state_dir` makes the next run continue without losing or repeating an update.
pub async fn run<A: Agent>(
    settings: TelegramSettings,
    policy: Policy,
    state_dir: &Path,
    agent: Arc<A>,
    shutdown: CancellationToken,
) -> Result<(), TelegramError> {
    let health = settings.health.clone();
    let result = serve(settings, policy, state_dir, agent, shutdown).await;
    match &result {
        // A rejected token or a competing poller is recorded where it happens.
        Err(TelegramError::Api(_)) | Ok(()) => health.stopped(),
        Err(e) => health.failed(e, true),
    }
    result
}

async fn serve<A: Agent>(
    settings: TelegramSettings,
    policy: Policy,
    state_dir: &Path,
    agent: Arc<A>,
    shutdown: CancellationToken,
) -> Result<(), TelegramError> {
    let client =
        Client::new(&settings.api_root, &settings.bot_token).map_err(TelegramError::Setup)?;
    let me = tokio::select! {
        () = shutdown.cancelled() => return Ok(()),
        me = get_me(&client, &settings.health) => me?,
    };
    settings.health.started(me.username.as_deref());
    let bot_id = me.id.to_string();
    let mut journal = Journal::open(state_dir, &settings.account_id, &bot_id)?;
    tracing::info!(
        "Telegram: polling as @{} (bot {bot_id})",
        me.username.as_deref().unwrap_or("?")
    );
    let ctx = Arc::new(Ctx {
        settings,
        client,
        policy,
        agent,
        me,
    });
    for job in journal.interrupted() {
        tracing::warn!(
            "Telegram: update {} was interrupted by a restart; not run again",
            job.update_id
        );
        if matches!(job.kind, JobKind::Text { .. }) {
            ctx.send_text(job.chat_id, INTERRUPTED_REPLY, ctx.reply_to(&job))
                .await;
        }
        journal.finish(job.update_id);
    }
    // A snapshot of where this run starts; from here on, commits append to its log.
    journal.compact()?;

    let mut backoff = Backoff::default();
    let mut poll = Box::pin(poll_after(&ctx, journal.offset(), Duration::ZERO));
    let notices = ctx.clone().deliver_notices();
    tokio::pin!(notices);
    let prompts = ctx.clone().deliver_prompts();
    tokio::pin!(prompts);
    let mut running = Running::default();
    // Journal writes counted by this loop, and how many of them are durable: a job waits
    // for its write before a tool call or a message (see `channel::Recorded`).
    let (synced_tx, synced) = tokio::sync::watch::channel(0u64);
    let mut writes = 0u64;
    loop {
        // Written first, in one line (a new batch, the finished jobs, the jobs that start
        // now), then the jobs' tasks start while the line is synced, and the next
        // `getUpdates`, which confirms the batch to Telegram, waits for the sync.
        let ready = journal.start_ready(
            MAX_CONCURRENT_JOBS.saturating_sub(running.jobs.len()),
            &mut running.chats,
        );
        let unsynced = journal.write()?;
        writes += 1;
        for job in ready {
            let recorded = Recorded::after(synced.clone(), writes);
            running.spawn(&ctx, job, recorded, shutdown.child_token());
        }
        if let Some(line) = unsynced {
            tokio::task::spawn_blocking(move || line.sync())
                .await
                .map_err(|e| TelegramError::Setup(format!("the journal sync panicked: {e}")))??;
        }
        synced_tx.send_replace(writes);
        tokio::select! {
            () = shutdown.cancelled() => {
                running.cancel_all();
                // A clean stop leaves the snapshot current (OpenClaw reads only it).
                journal.compact()?;
                return Ok(());
            }
            never = &mut notices => match never {},
            never = &mut prompts => match never {},
            Some(done) = running.tasks.join_next_with_id() => {
                running.finished(done, &mut journal);
                // Finishes that came together share one write.
                while let Some(done) = running.tasks.try_join_next_with_id() {
                    running.finished(done, &mut journal);
                }
            }
            result = &mut poll => {
                let delay = match result {
                    Ok(updates) => {
                        backoff.reset();
                        ctx.settings.health.polled();
                        ctx.take_batch(updates, &mut journal, &running).await;
                        Duration::ZERO
                    }
                    Err(e @ (ApiError::Unauthorized { .. } | ApiError::Conflict { .. })) => {
                        tracing::error!("{e}; Telegram polling stopped");
                        ctx.settings.health.failed(&e, true);
                        running.cancel_all();
                        return Err(TelegramError::Api(e));
                    }
                    Err(e @ ApiError::RetryAfter { retry_after, .. }) => {
                        ctx.settings.health.failed(&e, false);
                        let secs = retry_after.min(MAX_RETRY_AFTER_SECS);
                        tracing::warn!("Telegram: getUpdates rate limited, waiting {secs} s");
                        Duration::from_secs(secs)
                    }
                    Err(e) => {
                        ctx.settings.health.failed(&e, false);
                        let delay = backoff.next_delay();
                        tracing::warn!("Telegram: {e}; retrying in {} s", delay.as_secs());
                        delay
                    }
                };
                // Only created here: the request goes out when the loop polls it again,
                // after the commit at the top of the loop.
                poll.set(poll_after(&ctx, journal.offset(), delay));
            }
        }
    }
}

/// `getMe` with retries for transient trouble; fatal errors are logged once and returned.
async fn get_me(client: &Client, health: &Health) -> Result<api::User, TelegramError> {
    let mut backoff = Backoff::default();
    loop {
        let delay = match client.get_me().await {
            Ok(me) => return Ok(me),
            Err(e @ ApiError::RetryAfter { retry_after, .. }) => {
                health.failed(&e, false);
                Duration::from_secs(retry_after.min(MAX_RETRY_AFTER_SECS))
            }
            Err(e) if e.is_transient() => {
                health.failed(&e, false);
                let delay = backoff.next_delay();
                tracing::warn!("Telegram: {e}; retrying in {} s", delay.as_secs());
                delay
            }
            Err(e) => {
                tracing::error!("{e}; Telegram polling stopped");
                health.failed(&e, true);
                return Err(TelegramError::Api(e));
            }
        };
        tokio::time::sleep(delay).await;
    }
}

/// One `getUpdates` after `delay`; owns what it needs so it can outlive a loop iteration.
fn poll_after<A: Agent>(
    ctx: &Arc<Ctx<A>>,
    offset: Option<i64>,
    delay: Duration,
) -> impl Future<Output = Result<Vec<api::Update>, ApiError>> + Send + 'static {
    let client = ctx.client.clone();
    let timeout = ctx.settings.poll_timeout_secs;
    async move {
        tokio::time::sleep(delay).await;
        client.get_updates(offset, timeout).await
    }
}

/// The jobs being handled (each its own task, so different chats run in parallel) and
/// the means to stop them.
#[derive(Default)]
struct Running {
    tasks: JoinSet<()>,
    /// Per task: its update and chat, and its cancellation.
    jobs: HashMap<tokio::task::Id, (i64, i64, CancellationToken)>,
    /// The chats with a running job: their next message waits for it.
    chats: HashSet<i64>,
}

impl Running {
    fn spawn<A: Agent>(
        &mut self,
        ctx: &Arc<Ctx<A>>,
        job: Job,
        recorded: Recorded,
        cancel: CancellationToken,
    ) {
        let (update_id, chat_id) = (job.update_id, job.chat_id);
        let handle = self
            .tasks
            .spawn(ctx.clone().run_job(job, recorded, cancel.clone()));
        self.jobs.insert(handle.id(), (update_id, chat_id, cancel));
    }

    /// Forgets a finished task and removes its job from the journal (in memory).
    fn finished(
        &mut self,
        done: Result<(tokio::task::Id, ()), tokio::task::JoinError>,
        journal: &mut Journal,
    ) {
        let id = match done {
            Ok((id, ())) => id,
            Err(e) => {
                // Not run again, like an interrupted job: it may have had side effects.
                tracing::error!("Telegram: a job ended abnormally: {e}");
                e.id()
            }
        };
        if let Some((update_id, chat_id, _)) = self.jobs.remove(&id) {
            self.chats.remove(&chat_id);
            journal.finish(update_id);
        }
    }

    fn cancel_all(&self) {
        self.jobs
            .values()
            .for_each(|(_, _, cancel)| cancel.cancel());
    }
}

/// Exponential backoff: 1 s, 2 s, 4 s ... capped at [`MAX_BACKOFF`].
#[derive(Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    fn next_delay(&mut self) -> Duration {
        let delay = Duration::from_secs(1u64 << self.failures.min(6)).min(MAX_BACKOFF);
        self.failures = self.failures.saturating_add(1);
        delay
    }

    fn reset(&mut self) {
        self.failures = 0;
    }
}

struct Ctx<A> {
    settings: TelegramSettings,
    client: Client,
    policy: Policy,
    agent: Arc<A>,
    me: api::User,
}

impl<A: Agent> Ctx<A> {
    /// Classifies a batch, runs owner commands, and journals the rest together with the
    /// new offset (in memory: the caller commits it before the next `getUpdates` confirms
    /// the batch to Telegram).
    async fn take_batch(
        &self,
        updates: Vec<api::Update>,
        journal: &mut Journal,
        running: &Running,
    ) {
        let Some(last) = updates.iter().map(|u| u.update_id).max() else {
            return;
        };
        let allow_from = self.policy.config.channel(CHANNEL).allow_from;
        let mut jobs = Vec::new();
        for update in &updates {
            match inbound::classify(
                update,
                &self.settings,
                &allow_from,
                &self.me,
                self.policy.transcripts.redactor(),
            ) {
                Inbound::Ignore(reason) => {
                    tracing::debug!("Telegram: update {} ignored: {reason}", update.update_id);
                }
                Inbound::Job(job) => jobs.push(job),
                Inbound::Command {
                    command,
                    chat_id,
                    peer,
                    group,
                } => {
                    if command == OwnerCommand::Stop {
                        running.cancel_all();
                    }
                    self.run_command(command, chat_id, peer, group).await;
                }
                Inbound::Approval {
                    command,
                    chat_id,
                    peer,
                } => self.run_approval(command, chat_id, &peer).await,
            }
        }
        journal.record_batch(last, jobs);
    }

    async fn run_command(
        &self,
        command: OwnerCommand,
        chat_id: i64,
        peer: String,
        group: Option<String>,
    ) {
        let session_key = match &group {
            Some(group) => sessions::group_key(CHANNEL, group),
            None => sessions::direct_key(
                self.policy.config.dm_scope,
                CHANNEL,
                &self.settings.account_id,
                &peer,
            ),
        };
        let context = CommandContext {
            session_key,
            channel: CHANNEL.to_string(),
            peer,
            group,
        };
        let text = match self.agent.handle_command(command, context).await {
            Ok(reply) => reply.text,
            Err(e) => {
                tracing::error!("Telegram: owner command {command:?} failed: {e:#}");
                FAILED_REPLY.to_owned()
            }
        };
        self.send_text(chat_id, &text, None).await;
    }

    /// `/approve` or `/deny`: answered here (the agent's turn is waiting, paused); only an
    /// approver may, anyone else is refused and logged.
    async fn run_approval(&self, command: ApprovalCommand, chat_id: i64, peer: &str) {
        let Some(approvals) = &self.settings.approvals else {
            return;
        };
        let text = if !self.settings.approvers.iter().any(|a| a == peer) {
            tracing::warn!(
                "Telegram: {peer}, who is not an exec approver, tried to answer an exec \
                 approval: refused"
            );
            "Only an exec approver can answer approvals (channels.telegram.execApprovals.\
             approvers, else the owners)."
                .to_owned()
        } else {
            match command {
                ApprovalCommand::Usage => {
                    "Usage: /approve <id> [always] or /deny <id>, with the id of the request."
                        .to_owned()
                }
                ApprovalCommand::Answer { id, answer } => {
                    match approvals.answer(&id, answer, &format!("telegram:{peer}")) {
                        Ok(text) => text,
                        Err(e) => format!("Nothing done: {e}."),
                    }
                }
            }
        };
        self.send_text(chat_id, &text, None).await;
    }

    async fn run_job(self: Arc<Self>, job: Job, recorded: Recorded, cancel: CancellationToken) {
        match &job.kind {
            JobKind::NotText => {
                if !recorded.wait().await {
                    return;
                }
                // No policy call (it would record a transcript entry): a stranger learns
                // only that the bot reads text, unless the channel is off.
                let channel = self.policy.config.channel(CHANNEL);
                if channel.enabled && channel.dm_policy != DmPolicy::Disabled {
                    self.send_text(job.chat_id, NOT_TEXT_REPLY, None).await;
                }
            }
            JobKind::Text { text, truncated } => {
                self.run_text(&job, text, *truncated, recorded, cancel)
                    .await;
            }
        }
    }

    /// The policy and the model call run while the job's journal line is synced; every
    /// message sent (and, in the agent, every tool call) waits for `recorded`.
    async fn run_text(
        &self,
        job: &Job,
        text: &str,
        truncated: bool,
        recorded: Recorded,
        cancel: CancellationToken,
    ) {
        let Policy {
            config,
            store,
            transcripts,
        } = &self.policy;
        let (kind, id) = match &job.group {
            Some(group) => (PeerKind::Group, group),
            None => (PeerKind::Direct, &job.peer),
        };
        let now = unix_now();
        let msg = InboundMessage {
            channel: CHANNEL.to_string(),
            account_id: (self.settings.account_id != DEFAULT_ACCOUNT)
                .then(|| self.settings.account_id.clone()),
            peer: job.peer.clone(),
            text: text.to_string(),
            group: job.group.clone(),
        };
        // The journal holds the message until its reply is sent: the line reaches the disk
        // with the reply's.
        let outcome = match messages::handle(
            config,
            store,
            transcripts,
            &msg,
            now,
            sessions::Durability::Deferred,
        ) {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::error!("Telegram: update {}: {e}", job.update_id);
                return;
            }
        };
        match outcome.status {
            Status::PairingRequired => match outcome.pairing_code {
                Some(code) if outcome.new_code => {
                    self.settings.events.record(Event::PairingRequest {
                        channel: CHANNEL.to_owned(),
                        sender: id.to_string(),
                    });
                    let text = pairing_reply(kind, id, &code);
                    if recorded.wait().await {
                        self.send_text(job.chat_id, &text, None).await;
                    }
                }
                Some(_) => tracing::debug!("Telegram: {kind} {id} already has its code"),
                None => tracing::info!(
                    "Telegram: no pairing code for {kind} {id}: too many pending requests"
                ),
            },
            Status::Accepted => {
                if truncated && recorded.wait().await {
                    let note = format!(
                        "Your message was longer than {} KiB; only its beginning was read.",
                        self.settings.max_inbound_bytes / 1024
                    );
                    self.send_text(job.chat_id, &note, self.reply_to(job)).await;
                }
                let Some(session_key) = outcome.session_key else {
                    tracing::error!(
                        "Telegram: update {}: accepted without a session",
                        job.update_id
                    );
                    return;
                };
                let turn = Turn {
                    session_key,
                    channel: CHANNEL.to_string(),
                    peer: job.peer.clone(),
                    group: job.group.clone(),
                    text: msg.text,
                    from_owner: self.settings.owner_ids.contains(&job.peer),
                    recorded: recorded.clone(),
                };
                // `biased`: once cancelled, the turn's own (error) result is never sent.
                let result = tokio::select! {
                    biased;
                    () = cancel.cancelled() => None,
                    result = self.agent.handle_turn(turn, cancel.clone()) => Some(result),
                    () = self.keep_typing(job.chat_id, &recorded) => None,
                };
                if !recorded.wait().await {
                    return;
                }
                match result {
                    None => tracing::info!("Telegram: update {} stopped", job.update_id),
                    Some(Ok(reply)) => {
                        self.send_text(job.chat_id, &reply.text, self.reply_to(job))
                            .await;
                        // The job is done (and journaled so) only once the agent's record
                        // of the answer is on disk.
                        if let Err(e) = reply.saved.wait().await {
                            tracing::error!(
                                "Telegram: update {}: the transcript: {e:#}",
                                job.update_id
                            );
                        }
                    }
                    Some(Err(e)) => {
                        tracing::error!(
                            "Telegram: the agent failed on update {}: {e:#}",
                            job.update_id
                        );
                        self.send_text(job.chat_id, FAILED_REPLY, self.reply_to(job))
                            .await;
                    }
                }
            }
            Status::Denied | Status::Ignored => {
                tracing::debug!(
                    "Telegram: update {} {:?} by policy",
                    job.update_id,
                    outcome.status
                );
            }
        }
    }

    /// Sends "typing…" after `typing_delay` and then every `typing_interval`; never
    /// returns. Failures are cosmetic and only logged at debug level.
    async fn keep_typing(&self, chat_id: i64, recorded: &Recorded) {
        tokio::time::sleep(self.settings.typing_delay).await;
        if !recorded.wait().await {
            return std::future::pending().await;
        }
        loop {
            // Its own task: this future is dropped when the turn ends, and dropping a request
            // in flight closes its connection (with TLS and the egress tunnel, the next
            // request would pay for a new one; short turns did so every other message).
            let client = self.client.clone();
            tokio::spawn(async move {
                if let Err(e) = client.send_chat_action(chat_id, "typing").await {
                    tracing::debug!("Telegram: typing indicator: {e}");
                }
            });
            tokio::time::sleep(self.settings.typing_interval).await;
        }
    }

    /// Sends each owner notice to every owner's private chat; once one of them got it, runs
    /// its `delivered` hook. Never returns.
    async fn deliver_notices(self: Arc<Self>) -> std::convert::Infallible {
        loop {
            let notice = self.settings.owner_notices.next().await;
            let mut delivered = false;
            for owner in &self.settings.owner_ids {
                if let Ok(chat_id) = owner.parse::<i64>() {
                    delivered |= self.send_text(chat_id, &notice.text, None).await;
                }
            }
            if !delivered {
                tracing::warn!(
                    "Telegram: a notice for the owner was not delivered (no owner id, or \
                     the owner never wrote to the bot); it stays in the log only"
                );
                continue;
            }
            if let Some(done) = notice.delivered {
                let _ = tokio::task::spawn_blocking(done).await;
            }
        }
    }

    /// Sends each exec approval prompt to every approver's private chat. Never returns.
    async fn deliver_prompts(self: Arc<Self>) -> std::convert::Infallible {
        let Some(approvals) = &self.settings.approvals else {
            return std::future::pending().await;
        };
        let prompts = approvals.prompts();
        loop {
            let prompt = prompts.next().await;
            let mut delivered = false;
            for approver in &self.settings.approvers {
                if let Ok(chat_id) = approver.parse::<i64>() {
                    delivered |= self.send_text(chat_id, &prompt.text, None).await;
                }
            }
            if !delivered {
                tracing::warn!(
                    "Telegram: an exec approval prompt reached no approver (none configured, \
                     or they never wrote to the bot); `clawfort approvals list` shows it"
                );
            }
        }
    }

    /// In groups a reply quotes the message it answers.
    fn reply_to(&self, job: &Job) -> Option<i64> {
        job.group.as_ref().map(|_| job.message_id)
    }

    /// Sends `text` in chunks of at most 4096 UTF-16 units, each retried on 429 (after
    /// `retry_after`) and on network errors; other errors drop the rest with a warning.
    /// Whether every chunk was delivered.
    async fn send_text(&self, chat_id: i64, text: &str, reply_to: Option<i64>) -> bool {
        for (index, chunk) in split_message(text, MESSAGE_LIMIT).iter().enumerate() {
            let reply_to = if index == 0 { reply_to } else { None };
            let mut backoff = Backoff::default();
            let mut attempt = 1;
            loop {
                let error = match self.client.send_message(chat_id, chunk, reply_to).await {
                    Ok(()) => break,
                    Err(e) => e,
                };
                let delay = match &error {
                    ApiError::RetryAfter { retry_after, .. } => {
                        Duration::from_secs((*retry_after).min(MAX_RETRY_AFTER_SECS))
                    }
                    e if e.is_transient() => backoff.next_delay(),
                    _ => Duration::MAX,
                };
                if delay == Duration::MAX || attempt >= SEND_ATTEMPTS {
                    tracing::warn!("Telegram: reply to chat {chat_id} not delivered: {error}");
                    return false;
                }
                attempt += 1;
                tokio::time::sleep(delay).await;
            }
        }
        true
    }
}

/// The one reply an unknown sender (or group) gets: its id, the code, and the exact
/// command the owner runs.
pub fn pairing_reply(kind: PeerKind, id: &str, code: &str) -> String {
    let who = match kind {
        PeerKind::Direct => format!("I don't know you yet. Your Telegram user id: {id}"),
        PeerKind::Group => format!("This group is not approved yet. Group id: {id}"),
    };
    format!(
        "{who}\nPairing code: {code}\nAsk the bot's owner to approve it with:\n\
         clawfort pairing approve {CHANNEL} {code}"
    )
}

#[cfg(test)]
mod tests {
    use super::Backoff;
    use std::time::Duration;

    #[test]
    fn backoff_doubles_up_to_a_minute() {
        let mut b = Backoff::default();
        let delays: Vec<u64> = (0..9).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_secs(1));
    }
}
