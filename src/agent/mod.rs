//! The agent loop: turns a channel's [`Turn`] into model calls, tool runs and a [`Reply`].
//!
//! - One turn at a time per session: a second message to a busy session waits for the
//!   first to end (a `tokio::sync::Mutex` per session key); sessions run in parallel.
//! - Each turn rebuilds the system prompt (built-in preamble plus the workspace's
//!   `AGENTS.md`) and the history from the transcript (see [`history`]), trimmed to the
//!   primary model's `contextWindow`.
//! - The model may call tools from the registry ([`Tools`], empty by default) for at most
//!   `max_steps` model calls and within `turn_deadline`; past either the turn ends with a
//!   reply saying so. Tool output and messages from anyone but the owner are wrapped as
//!   untrusted data ([`prompt`]).
//! - Before each model call the spend budget is checked; each call is recorded in the
//!   ledger. The final reply is appended to the transcript. Every tool call, whatever became
//!   of it, is recorded in the execution log ([`crate::tools::log`]) before its result goes
//!   back to the model.
//! - The owner is told of what they must act on, each as a notice of its own
//!   ([`AgentSettings::notices`], delivered by the owner's channel): the 80 % budget warning
//!   (once per period; the ledger records its delivery) and the first rejected API key of a
//!   run (also its one log line).
//! - Secrets: the model sees redacted text only. The system prompt, the history, the turn's
//!   message and every tool output are redacted before they enter a request, and the model's
//!   answer (text and tool inputs) when it arrives, so a key a user pastes reaches neither
//!   the provider nor a tool, and one a model makes up reaches neither a tool, the chat nor
//!   the transcript.

pub mod history;
pub mod prompt;
pub mod service;
pub mod status;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::channel::{
    Agent, CommandContext, Notice, OwnerCommand, OwnerNotices, Reply, Saved, Turn,
};
use crate::provider::{
    Block, ChainError, ChatRequest, Message, ModelChain, ProviderError, Role, StopReason,
};
use crate::redact::Redactor;
use crate::sessions::{SessionKey, Transcripts};
use crate::usage::{BudgetEvent, Ledger, Period};

use crate::tools::log::{self, Approval, Entry, Status};
pub use crate::tools::{Call, Tool, ToolFuture, ToolOutput, Tools};
use crate::tools::{Execution, ToolLog};

use history::AgentEntry;
use prompt::Boundary;

/// The reply when the provider refuses the key (the details are in the log, once).
pub const AUTH_REPLY: &str = "The model provider rejected the API key, so I cannot answer. \
     The owner must fix the key in the gateway's configuration (models.providers.<id>.apiKey \
     or the variable it names) and restart the gateway.";

/// Everything the loop needs; built by [`service`] from the config, or by tests.
#[derive(Debug)]
pub struct AgentSettings {
    pub chain: ModelChain,
    /// Output tokens asked for per call (capped by the model's `maxTokens`).
    pub max_tokens: u32,
    /// `contextWindow` of the primary model, in tokens; history is trimmed to fit.
    pub context_window: u32,
    /// `agents.defaults.workspace`, where `AGENTS.md` is read from.
    pub workspace: Option<PathBuf>,
    pub transcripts: Transcripts,
    /// `None`: calls are neither checked nor recorded (no budget, no ledger).
    pub ledger: Option<Arc<Ledger>>,
    pub redactor: Redactor,
    pub tools: Tools,
    /// Where every tool call is recorded; `None`: only in the gateway's log.
    pub tool_log: Option<Arc<ToolLog>>,
    /// Model calls per turn.
    pub max_steps: usize,
    pub turn_deadline: Duration,
    /// The owner's accounts as `channel:peer` (`telegram:12345`): their messages are the
    /// owner's own words; everyone else's are wrapped as untrusted.
    pub owner_peers: Vec<String>,
    /// Where budget warnings and a rejected key go for the owner (the owner's channel takes
    /// them from there).
    pub notices: OwnerNotices,
    /// Where a budget warning is also recorded as a security event.
    pub events: crate::events::Events,
}

impl AgentSettings {
    /// Defaults: 8 steps, 120 s per turn, 4096 output tokens, a 200k-token window.
    pub fn new(chain: ModelChain, transcripts: Transcripts, redactor: Redactor) -> Self {
        Self {
            chain,
            max_tokens: 4096,
            context_window: 200_000,
            workspace: None,
            transcripts,
            ledger: None,
            redactor,
            tools: Tools::default(),
            tool_log: None,
            max_steps: 8,
            turn_deadline: Duration::from_secs(120),
            owner_peers: Vec::new(),
            notices: OwnerNotices::default(),
            events: crate::events::Events::default(),
        }
    }
}

/// A budget warning as a security event (the feed's line; the owner's message is the
/// warning's own notice).
fn budget_event(event: &BudgetEvent) -> crate::events::Event {
    let BudgetEvent::Warn {
        period,
        spent_usd,
        limit_usd,
        ..
    } = event;
    crate::events::Event::Budget {
        period: match period {
            Period::Daily => "daily",
            Period::Monthly => "monthly",
        }
        .to_owned(),
        spent_usd: *spent_usd,
        limit_usd: *limit_usd,
    }
}

/// The agent loop; implements [`Agent`] for the channels.
#[derive(Debug)]
pub struct AgentLoop {
    settings: AgentSettings,
    locks: Mutex<HashMap<SessionKey, Arc<tokio::sync::Mutex<()>>>>,
    /// The recent sessions' transcripts, so a turn reads only what was appended since.
    history: Arc<history::Cache>,
    /// The cancel token of each session's running turn.
    running: Mutex<HashMap<SessionKey, CancellationToken>>,
    auth_logged: AtomicBool,
}

impl AgentLoop {
    pub fn new(settings: AgentSettings) -> Self {
        Self {
            settings,
            locks: Mutex::default(),
            history: Arc::default(),
            running: Mutex::default(),
            auth_logged: AtomicBool::new(false),
        }
    }

    /// Cancels every running turn (the owner's `/stop`, `clawfort stop-all`); returns how
    /// many.
    pub fn stop_all(&self) -> usize {
        let running = self.running.lock().expect("not poisoned");
        running.values().for_each(CancellationToken::cancel);
        running.len()
    }

    /// Records one tool call: in the execution log when there is one (an append of one
    /// short line, done inline: a few microseconds, cheaper than a hop to a blocking thread),
    /// else as the same event in the gateway's log.
    fn log_call(&self, entry: Entry) {
        match &self.settings.tool_log {
            Some(log) => log.record(entry),
            None => {
                tracing::info!(session = %entry.session, tool = %entry.tool, status = %entry.status, "tool call")
            }
        }
    }

    fn session_lock(&self, key: &SessionKey) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().expect("not poisoned");
        Arc::clone(locks.entry(key.clone()).or_default())
    }

    async fn run_turn(&self, turn: &Turn, cancel: &CancellationToken) -> anyhow::Result<String> {
        let s = &self.settings;
        let deadline = Instant::now() + s.turn_deadline;
        let boundary = Boundary::random();
        let mut system = s
            .redactor
            .redact(&boundary.system_prompt(s.workspace.as_deref()))
            .into_owned();
        let (peer, text) = (s.redactor.redact(&turn.peer), s.redactor.redact(&turn.text));
        let window_bytes = (s.context_window as usize)
            .saturating_sub(s.max_tokens as usize)
            .saturating_mul(4)
            .saturating_sub(system.len());
        let mut messages = {
            let (cache, t, k) = (
                self.history.clone(),
                s.transcripts.clone(),
                turn.session_key.clone(),
            );
            let (redactor, owners) = (s.redactor.clone(), s.owner_peers.clone());
            let (peer, text, boundary) = (peer.to_string(), text.to_string(), boundary.clone());
            let warm = cache.is_warm(&k);
            let build = move || {
                // The transcript is written redacted; lines of older versions may not be.
                cache.with_entries(
                    &t,
                    &k,
                    |e| redactor.redact_json(e),
                    |entries| {
                        history::build(
                            entries,
                            (&peer, &text),
                            |channel, peer| {
                                owners
                                    .iter()
                                    .any(|o| o.split_once(':') == Some((channel, peer)))
                            },
                            &boundary,
                            window_bytes,
                        )
                    },
                )
            };
            if warm {
                // A read of the last turn's few lines: cheaper here than a thread hop,
                // which costs a large share of a turn's overhead on a small machine.
                build()?
            } else {
                // The whole transcript, possibly long and not in the page cache.
                tokio::task::spawn_blocking(build).await??
            }
        };
        if messages.last().is_none_or(|m| m.role != Role::User) {
            // The message is not in the transcript (e.g. it was removed meanwhile): it is
            // still the turn's last message.
            let text = if turn.from_owner {
                text.into_owned()
            } else {
                boundary.wrap(&format!("message from {} user {peer}", turn.channel), &text)
            };
            messages.push(Message::user_text(text));
        }
        // Untrusted content in the context (see `Call::tainted`): a message of anyone but
        // the owner, a group chat's history, and later the output of a tainting tool.
        let mut tainted = !turn.from_owner || turn.group.is_some();
        for _ in 0..s.max_steps {
            if let Some(ledger) = &s.ledger {
                if let Err(exceeded) = ledger.check() {
                    tracing::warn!("turn of {} refused: {exceeded}", turn.session_key);
                    let resets = match exceeded.period {
                        Period::Daily => "at 00:00 UTC",
                        Period::Monthly => "on the 1st of next month at 00:00 UTC",
                    };
                    return Ok(format!(
                        "I cannot answer now: {exceeded}. The budget resets {resets}."
                    ));
                }
            }
            // The history moves into the request and back, rather than being copied per
            // model call.
            let request = ChatRequest {
                system: std::mem::take(&mut system),
                messages: std::mem::take(&mut messages),
                tools: Arc::clone(s.tools.specs()),
                max_tokens: s.max_tokens,
            };
            let answer = tokio::select! {
                () = tokio::time::sleep_until(deadline) => return Ok(self.deadline_reply()),
                answer = s.chain.chat(&request, cancel) => answer,
            };
            (system, messages) = (request.system, request.messages);
            let answer = match answer {
                Ok(a) => a,
                Err(ChainError::Cancelled) => anyhow::bail!("cancelled"),
                Err(ChainError::AllFailed(failures)) => {
                    if failures
                        .iter()
                        .any(|f| matches!(f.error, ProviderError::Auth { .. }))
                    {
                        if !self.auth_logged.swap(true, Ordering::Relaxed) {
                            tracing::error!("{}", ChainError::AllFailed(failures));
                            // The owner asking in their own chat reads the reply itself.
                            if !(turn.from_owner && turn.group.is_none()) {
                                s.notices.post(Notice::new(AUTH_REPLY));
                            }
                        }
                        return Ok(AUTH_REPLY.to_owned());
                    }
                    anyhow::bail!(ChainError::AllFailed(failures));
                }
            };
            if let Some(ledger) = &s.ledger {
                // One small write; on disk with the reply line (see `turn_in_session`).
                let cost = answer.spec.as_ref().and_then(|m| m.cost);
                let recorded = ledger.record(
                    turn.session_key.as_str(),
                    &answer.model,
                    cost.as_ref(),
                    &answer.response.usage,
                )?;
                for event in recorded.events {
                    tracing::warn!("{event}");
                    s.events.record(budget_event(&event));
                    self.notify_owner(event);
                }
            }
            let mut response = answer.response;
            redact_blocks(&s.redactor, &mut response.content);
            let calls: Vec<(String, String, serde_json::Value)> = response
                .content
                .iter()
                .filter_map(|b| match b {
                    Block::ToolUse { id, name, input } => {
                        Some((id.clone(), name.clone(), input.clone()))
                    }
                    _ => None,
                })
                .collect();
            if calls.is_empty() {
                let mut text = response.text();
                if response.stop == StopReason::MaxTokens {
                    text.push_str("\n\n(The answer was cut off at the output limit.)");
                }
                return Ok(text);
            }
            messages.push(Message {
                role: Role::Assistant,
                content: response.content,
            });
            // A tool's effects must not happen twice: not before the channel recorded the
            // message (the model call may have started earlier, see `channel::Recorded`).
            if !turn.recorded.wait().await {
                anyhow::bail!("the channel stopped before it recorded the message");
            }
            let mut results = Vec::with_capacity(calls.len());
            for (id, name, input) in calls {
                // Every call is logged before its result (or the turn's end) reaches the model.
                let target = log::target(&input);
                let started = Instant::now();
                let entry = |place, status, approval| {
                    let session = turn.session_key.as_str();
                    Entry::new(session, &name, target.clone(), place, status, approval)
                };
                let (output, place, status, approval) = match s.tools.get(&name) {
                    None => (
                        ToolOutput::error(format!("there is no tool named `{name}`")),
                        None,
                        Status::UnknownTool,
                        Approval::None,
                    ),
                    Some(tool) => {
                        let taints = tool.taints(&input);
                        let output = tokio::select! {
                            () = cancel.cancelled() => {
                                let stopped = entry(None, Status::Cancelled, Approval::None);
                                self.log_call(stopped.took(started.elapsed(), 0));
                                anyhow::bail!("cancelled")
                            }
                            () = tokio::time::sleep_until(deadline) => {
                                let stopped = entry(None, Status::TimedOut, Approval::None);
                                self.log_call(stopped.took(started.elapsed(), 0));
                                return Ok(self.deadline_reply());
                            }
                            out = tool.run(input, Call {
                                session_key: turn.session_key.clone(),
                                deadline,
                                cancel: cancel.clone(),
                                tainted,
                            }) => out,
                        };
                        tainted |= taints;
                        let ran = output
                            .execution
                            .unwrap_or_else(|| Execution::in_gateway(output.is_error));
                        (output, Some(ran.place), ran.status, ran.approval)
                    }
                };
                let content = s.redactor.redact(&output.content);
                let done = entry(place, status, approval);
                self.log_call(done.took(started.elapsed(), content.len()));
                results.push(Block::ToolResult {
                    tool_use_id: id,
                    content: boundary.wrap(&format!("output of tool {name}"), &content),
                    is_error: output.is_error,
                });
            }
            messages.push(Message {
                role: Role::User,
                content: results,
            });
        }
        Ok(format!(
            "I stopped after {} model calls without finishing (the per-message limit). \
             Ask me to continue if you want me to go on.",
            s.max_steps
        ))
    }

    /// The turn, once this session's earlier turns are done; the reply is in the transcript
    /// before the next turn of the session starts.
    async fn turn_in_session(
        &self,
        turn: &Turn,
        cancel: &CancellationToken,
        lock: &Arc<tokio::sync::Mutex<()>>,
    ) -> anyhow::Result<Reply> {
        let _guard = tokio::select! {
            () = cancel.cancelled() => anyhow::bail!("cancelled while waiting for the session"),
            guard = lock.lock() => guard,
        };
        let running = Running::enter(&self.running, &turn.session_key, cancel);
        let result = self.run_turn(turn, cancel).await;
        drop(running);
        let text = result?;
        let text = self.settings.redactor.redact(&text).into_owned();
        // The reply line is written now (the session's next turn reads it), then synced
        // with the turn's ledger lines once the channel has sent the reply (`Saved`). The
        // sync also covers the message's line, written unsynced by a channel with a journal.
        // One blocking task, one `fdatasync` after the other: two at once make ext4's
        // journal wait to batch them, ten times slower than two in a row.
        let entry = AgentEntry {
            session_key: turn.session_key.as_str(),
            ts: history::now_ms(),
            role: "assistant",
            text: Some(&text),
        };
        let transcript = self.settings.transcripts.append_with(
            &turn.session_key,
            &entry,
            crate::sessions::Durability::Deferred,
        )?;
        let ledger = self.settings.ledger.clone();
        let saved = Saved::new(move || {
            transcript.sync_data()?;
            if let Some(ledger) = ledger {
                ledger.sync()?;
            }
            Ok(())
        });
        Ok(Reply { text, saved })
    }

    /// Posts a budget warning for the owner; once a channel delivered it, the ledger
    /// records that, so a restart does not send it again.
    fn notify_owner(&self, event: BudgetEvent) {
        let text = format!("Budget warning: {event}.");
        let delivered = self.settings.ledger.as_ref().map(|ledger| {
            let ledger = Arc::clone(ledger);
            let BudgetEvent::Warn { period, key, .. } = event;
            Box::new(move || {
                if let Err(e) = ledger.mark_notified(period, &key) {
                    tracing::error!("cannot record that the budget warning was sent: {e}");
                }
            }) as Box<dyn FnOnce() + Send>
        });
        self.settings.notices.post(Notice { text, delivered });
    }

    /// Posts again the budget warnings of the current periods the owner never got (the
    /// gateway stopped before a channel delivered them); called once at start.
    pub fn resend_undelivered_warnings(&self) {
        let Some(ledger) = &self.settings.ledger else {
            return;
        };
        for event in ledger.undelivered_warnings() {
            tracing::info!("the owner has not been sent this budget warning yet: {event}");
            self.notify_owner(event);
        }
    }

    fn deadline_reply(&self) -> String {
        format!(
            "I stopped: this message took longer than the {:?} limit per message.",
            self.settings.turn_deadline
        )
    }

    async fn append(&self, key: &SessionKey, entry: AgentEntry<'_>) -> anyhow::Result<()> {
        let line = serde_json::to_value(&entry)?;
        let (t, k) = (self.settings.transcripts.clone(), key.clone());
        tokio::task::spawn_blocking(move || t.append(&k, &line)).await??;
        Ok(())
    }

    fn status(&self, context: &CommandContext) -> String {
        let s = &self.settings;
        let models: Vec<String> = s.chain.models().map(ToString::to_string).collect();
        let busy = self
            .running
            .lock()
            .expect("not poisoned")
            .contains_key(&context.session_key);
        let mut text = format!(
            "Model: {}\nThis chat: {}",
            models.join(" → "),
            if busy { "running" } else { "idle" }
        );
        if let Some(ledger) = &s.ledger {
            let t = ledger.totals();
            let budget = ledger.budget();
            let line = |label: &str, spent: f64, limit: Option<f64>| match limit {
                Some(l) => format!("\n{label}: ${spent:.2} of ${l:.2}"),
                None => format!("\n{label}: ${spent:.2} (no limit)"),
            };
            text.push_str(&line("Today (UTC)", t.day.total.usd, budget.daily_usd));
            text.push_str(&line("This month", t.month.total.usd, budget.monthly_usd));
        }
        text
    }
}

/// Redacts the text and tool inputs of a model's answer.
fn redact_blocks(redactor: &Redactor, blocks: &mut [Block]) {
    for block in blocks {
        match block {
            Block::Text { text } => {
                if let std::borrow::Cow::Owned(clean) = redactor.redact(text) {
                    *text = clean;
                }
            }
            Block::ToolUse { input, .. } => redactor.redact_json(input),
            Block::ToolResult { content, .. } => {
                if let std::borrow::Cow::Owned(clean) = redactor.redact(content) {
                    *content = clean;
                }
            }
        }
    }
}

/// A session's entry in [`AgentLoop::running`] for as long as its turn runs. Removed on
/// drop, so also when the channel drops the turn's future on a stop (otherwise the chat
/// would count as running, for `/status` and `stop-all`, until its next message). The
/// session's lock is held meanwhile, so the entry removed is this turn's.
struct Running<'a> {
    map: &'a Mutex<HashMap<SessionKey, CancellationToken>>,
    key: &'a SessionKey,
}

impl<'a> Running<'a> {
    fn enter(
        map: &'a Mutex<HashMap<SessionKey, CancellationToken>>,
        key: &'a SessionKey,
        cancel: &CancellationToken,
    ) -> Self {
        map.lock()
            .expect("not poisoned")
            .insert(key.clone(), cancel.clone());
        Self { map, key }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if let Ok(mut map) = self.map.lock() {
            map.remove(self.key);
        }
    }
}

/// The agent as the HTTP API sees it (`POST /api/agent/stop-all`): empty until the loop
/// is built on the gateway's runtime, which happens after the server is listening.
#[derive(Debug, Clone, Default)]
pub struct AgentHandle(Arc<OnceLock<Arc<AgentLoop>>>);

impl AgentHandle {
    /// Cancels every running turn; `None` while the agent is not running (still starting,
    /// or it failed to start).
    pub fn stop_all(&self) -> Option<usize> {
        self.0.get().map(|agent| agent.stop_all())
    }

    pub(crate) fn set(&self, agent: Arc<AgentLoop>) {
        // Set once per gateway process: a second agent is never built.
        let _ = self.0.set(agent);
    }
}

impl Agent for AgentLoop {
    async fn handle_turn(&self, turn: Turn, cancel: CancellationToken) -> anyhow::Result<Reply> {
        let lock = self.session_lock(&turn.session_key);
        let result = self.turn_in_session(&turn, &cancel, &lock).await;
        // The map's reference and ours: nobody else waits for this session, so its lock
        // goes (the map would otherwise grow by one entry per chat ever seen).
        let mut locks = self.locks.lock().expect("not poisoned");
        if Arc::strong_count(&lock) == 2 {
            locks.remove(&turn.session_key);
        }
        result
    }

    async fn handle_command(
        &self,
        command: OwnerCommand,
        context: CommandContext,
    ) -> anyhow::Result<Reply> {
        match command {
            // Only the owner gets here, and the owner may stop any session: whatever runs
            // (a friend's turn, a group's) stops, wherever /stop was typed.
            OwnerCommand::Stop => Ok(Reply::text(match self.stop_all() {
                0 => "Nothing is running.",
                _ => "Stopped.",
            })),
            OwnerCommand::New => {
                self.append(
                    &context.session_key,
                    AgentEntry {
                        session_key: context.session_key.as_str(),
                        ts: history::now_ms(),
                        role: "reset",
                        text: None,
                    },
                )
                .await?;
                Ok(Reply::text(
                    "New session started: earlier messages are forgotten.",
                ))
            }
            OwnerCommand::Status => Ok(Reply::text(self.status(&context))),
        }
    }
}
