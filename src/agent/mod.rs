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
//!   ledger. The final reply is redacted and appended to the transcript.

pub mod history;
pub mod prompt;
pub mod service;
pub mod tools;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::channel::{Agent, CommandContext, OwnerCommand, Reply, Turn};
use crate::provider::{
    Block, ChainError, ChatRequest, Message, ModelChain, ProviderError, Role, StopReason,
};
use crate::redact::Redactor;
use crate::sessions::{SessionKey, Transcripts};
use crate::usage::{BudgetEvent, Ledger, Period};

pub use tools::{Tool, ToolFuture, ToolOutput, Tools};

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
    /// Model calls per turn.
    pub max_steps: usize,
    pub turn_deadline: Duration,
    /// The owner's accounts as `channel:peer` (`telegram:12345`): their messages are the
    /// owner's own words; everyone else's are wrapped as untrusted.
    pub owner_peers: Vec<String>,
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
            max_steps: 8,
            turn_deadline: Duration::from_secs(120),
            owner_peers: Vec::new(),
        }
    }
}

/// The agent loop; implements [`Agent`] for the channels.
#[derive(Debug)]
pub struct AgentLoop {
    settings: AgentSettings,
    locks: Mutex<HashMap<SessionKey, Arc<tokio::sync::Mutex<()>>>>,
    /// The cancel token of each session's running turn.
    running: Mutex<HashMap<SessionKey, CancellationToken>>,
    auth_logged: AtomicBool,
}

impl AgentLoop {
    pub fn new(settings: AgentSettings) -> Self {
        Self {
            settings,
            locks: Mutex::default(),
            running: Mutex::default(),
            auth_logged: AtomicBool::new(false),
        }
    }

    /// Cancels every running turn (`clawfort stop-all`); returns how many. A turn waiting
    /// for its session is not running yet and is not counted.
    pub fn stop_all(&self) -> usize {
        let running = self.running.lock().expect("not poisoned");
        running.values().for_each(CancellationToken::cancel);
        running.len()
    }

    fn session_lock(&self, key: &SessionKey) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().expect("not poisoned");
        Arc::clone(locks.entry(key.clone()).or_default())
    }

    async fn run_turn(&self, turn: &Turn, cancel: &CancellationToken) -> anyhow::Result<String> {
        let s = &self.settings;
        let deadline = Instant::now() + s.turn_deadline;
        let boundary = Boundary::random();
        let system = boundary.system_prompt(s.workspace.as_deref());
        let entries = {
            let (t, k) = (s.transcripts.clone(), turn.session_key.clone());
            tokio::task::spawn_blocking(move || t.read(&k)).await??
        };
        let window_bytes = (s.context_window as usize)
            .saturating_sub(s.max_tokens as usize)
            .saturating_mul(4)
            .saturating_sub(system.len());
        let mut messages = history::build(
            &entries,
            (&turn.peer, &turn.text),
            |channel, peer| {
                s.owner_peers
                    .iter()
                    .any(|o| o.split_once(':') == Some((channel, peer)))
            },
            &boundary,
            window_bytes,
        );
        if messages.last().is_none_or(|m| m.role != Role::User) {
            // The message is not in the transcript (e.g. it was removed meanwhile): it is
            // still the turn's last message.
            let text = if turn.from_owner {
                turn.text.clone()
            } else {
                boundary.wrap(
                    &format!("message from {} user {}", turn.channel, turn.peer),
                    &turn.text,
                )
            };
            messages.push(Message::user_text(text));
        }
        let mut notes = Vec::new();
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
            let request = ChatRequest {
                system: system.clone(),
                messages: messages.clone(),
                tools: s.tools.specs(),
                max_tokens: s.max_tokens,
            };
            let answer = tokio::select! {
                () = tokio::time::sleep_until(deadline) => return Ok(self.deadline_reply()),
                answer = s.chain.chat(&request, cancel) => answer,
            };
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
                        }
                        return Ok(AUTH_REPLY.to_owned());
                    }
                    anyhow::bail!(ChainError::AllFailed(failures));
                }
            };
            if let Some(ledger) = &s.ledger {
                let (ledger, session) = (Arc::clone(ledger), turn.session_key.to_string());
                let (model, usage) = (answer.model.clone(), answer.response.usage);
                let cost = answer.spec.as_ref().and_then(|m| m.cost);
                let recorded = tokio::task::spawn_blocking(move || {
                    ledger.record(&session, &model, cost.as_ref(), &usage)
                })
                .await??;
                for BudgetEvent::Warn {
                    period,
                    spent_usd,
                    limit_usd,
                } in recorded.events
                {
                    let name = if period == Period::Daily {
                        "daily"
                    } else {
                        "monthly"
                    };
                    tracing::warn!(
                        "{name} spend budget 80% used: ${spent_usd:.2} of ${limit_usd:.2}"
                    );
                    notes.push(format!(
                        "(Note: ${spent_usd:.2} of the ${limit_usd:.2} {name} budget is spent.)"
                    ));
                }
            }
            let response = answer.response;
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
                if turn.from_owner {
                    for note in notes {
                        text.push_str("\n\n");
                        text.push_str(&note);
                    }
                }
                return Ok(text);
            }
            messages.push(Message {
                role: Role::Assistant,
                content: response.content,
            });
            let mut results = Vec::with_capacity(calls.len());
            for (id, name, input) in calls {
                let output = match s.tools.get(&name) {
                    None => ToolOutput::error(format!("there is no tool named `{name}`")),
                    Some(tool) => tokio::select! {
                        () = cancel.cancelled() => anyhow::bail!("cancelled"),
                        () = tokio::time::sleep_until(deadline) => return Ok(self.deadline_reply()),
                        out = tool.run(input, deadline, cancel.clone()) => out,
                    },
                };
                results.push(Block::ToolResult {
                    tool_use_id: id,
                    content: boundary.wrap(&format!("output of tool {name}"), &output.content),
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
        self.append(
            &turn.session_key,
            AgentEntry {
                session_key: turn.session_key.as_str(),
                ts: history::now_ms(),
                role: "assistant",
                text: Some(&text),
            },
        )
        .await?;
        Ok(Reply::text(text))
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
            OwnerCommand::Stop => {
                let token = self
                    .running
                    .lock()
                    .expect("not poisoned")
                    .get(&context.session_key)
                    .cloned();
                Ok(Reply::text(match token {
                    Some(t) => {
                        t.cancel();
                        "Stopped."
                    }
                    None => "Nothing is running.",
                }))
            }
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
