//! Exec approvals: which commands the `exec` tool may run without a human, and the human's
//! answer for the others.
//!
//! - The policy is OpenClaw's: `tools.exec.security` (`deny` / `allowlist` / `full`) and
//!   `tools.exec.ask` (`off` / `on-miss` / `always`), each tightened (never loosened) by the
//!   `defaults` and `agents.main` of `exec-approvals.json` ([`file`]). A command is asked
//!   about when `ask` is `always`, or `on-miss` with `allowlist` security and no allowlist
//!   entry matching ([`command`] says which commands an entry can match). Without a question,
//!   `allowlist` runs only matches and `full` runs everything.
//! - A question pauses the turn: [`Approvals::ask`] registers it under a short random id,
//!   posts the prompt for the approvers' channel and waits. `/approve <id>` (once),
//!   `/approve <id> always` (once, and an allowlist entry binding that exact command text and
//!   workdir) and `/deny <id>` answer it ([`Approvals::answer`]), in the chat or through
//!   `clawfort approvals`. A question whose turn ended (stopped, timed out) is gone: a late
//!   answer does nothing and says so.
//! - No answer within `tools.exec.approvalTimeoutSeconds` is settled by the file's
//!   `askFallback` ([`Approvals::unanswered`], [`Fallback`]), read again at that moment:
//!   `deny` (the default) refuses, `allowlist` runs the command only if an entry matches it,
//!   `full` runs it; never beyond the security policy (the stricter of the two counts).
//!   clawfort always has an approver (`clawfort approvals` answers through the local API, even
//!   when no chat can carry the prompt), so "nobody reachable" and "nobody answered" are the
//!   same case: the timeout. Two clawfort rules bound it: in a turn holding untrusted content
//!   no answer is always a denial (the taint rule needs a human, and a prompt-injected
//!   command must not run because nobody was looking), and `/deny` is always a denial.
//! - An allowlist entry that lets a command run gets `lastUsedAt` (and `lastUsedCommand`,
//!   `lastResolvedPath`) stamped in the file ([`file::record_use`]), beside the run rather
//!   than before it; a failed write is logged and does not stop the command.

pub mod cli;
pub mod command;
pub mod file;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;

use crate::channel::{Notice, OwnerNotices};
use crate::config::{ExecAsk, ExecSecurity};
use crate::redact::Redactor;

/// The file's name in the state directory (OpenClaw's legacy location).
pub const FILE_NAME: &str = "exec-approvals.json";

/// Characters of an approval id: lowercase letters and digits without the easily confused
/// `0 o 1 l i`; 8 of them carry 40 random bits, short enough to type on a phone.
const ID_ALPHABET: &[u8] = b"23456789abcdefghjkmnpqrstuvwxyz";
const ID_LEN: usize = 8;

/// An approver's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Once,
    Always,
    Deny,
}

/// How a question ended, for the exec tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Run it; `always`: also remember it.
    Approved {
        always: bool,
        by: String,
    },
    Denied {
        by: String,
    },
    TimedOut,
}

/// What the policy says of one command before anyone is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Run,
    /// Ask an approver; a question nobody answers comes to the [`Fallback`].
    Ask(Fallback),
    Deny(String),
}

/// What a question nobody answered comes to: `askFallback`, bounded by the security policy
/// and by the turn's taint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// A denial (`askFallback` `deny`, or omitted).
    Deny,
    /// A denial whatever `askFallback` says: the turn holds untrusted content.
    Untrusted,
    /// Run if an allowlist entry matches.
    Allowlist,
    /// Run.
    Full,
}

impl Fallback {
    /// `askFallback` (`None`: omitted, which is `deny`), no looser than `security`, and a
    /// denial in a tainted turn.
    fn new(security: ExecSecurity, ask_fallback: Option<ExecSecurity>, tainted: bool) -> Self {
        if tainted {
            return Self::Untrusted;
        }
        match ask_fallback.unwrap_or(ExecSecurity::Deny).min(security) {
            ExecSecurity::Deny => Self::Deny,
            ExecSecurity::Allowlist => Self::Allowlist,
            ExecSecurity::Full => Self::Full,
        }
    }

    /// What the approver's prompt says of silence.
    fn describe(self, timeout: Duration) -> String {
        let secs = timeout.as_secs();
        match self {
            Self::Deny | Self::Untrusted => format!("No answer within {secs} s denies it."),
            Self::Allowlist => format!(
                "No answer within {secs} s runs it only if the allowlist then matches it \
                 (askFallback \"allowlist\")."
            ),
            Self::Full => {
                format!("No answer within {secs} s runs it anyway (askFallback \"full\").")
            }
        }
    }
}

/// How a question nobody answered was settled ([`Approvals::unanswered`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unanswered {
    /// Run it: `askFallback` says so (`allowlist` with a match, or `full`).
    Run(Fallback),
    /// Why not.
    Deny(String),
}

/// A question waiting for an answer, as `clawfort approvals list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingView {
    pub id: String,
    pub command: String,
    pub workdir: PathBuf,
    pub session_key: String,
    /// Unix milliseconds.
    pub created_at: u64,
    pub expires_at: u64,
    /// Whether "always" can add it to the allowlist (only a simple command can).
    pub can_always: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AnswerError {
    #[error(
        "no pending approval `{0}`: it was answered, timed out, or its turn ended (a \
         restart of the gateway ends every turn)"
    )]
    NotPending(String),
    #[error(
        "`{0}` cannot be added to the allowlist (only a command of plain words whose \
         program is found in PATH can); approve it once or deny it"
    )]
    NotSimple(String),
}

/// The exec approvals of a gateway. Cheap to clone; clones share the questions.
#[derive(Debug, Clone)]
pub struct Approvals(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    security: ExecSecurity,
    ask: ExecAsk,
    timeout: Duration,
    home: Option<PathBuf>,
    redactor: Redactor,
    prompts: OwnerNotices,
    pending: Mutex<BTreeMap<String, Pending>>,
}

#[derive(Debug)]
struct Pending {
    view: PendingView,
    answer: oneshot::Sender<(Answer, String)>,
}

impl Approvals {
    /// `state_dir` holds `exec-approvals.json`; `security` and `ask` are `tools.exec`'s.
    pub fn new(
        state_dir: &Path,
        security: ExecSecurity,
        ask: ExecAsk,
        timeout: Duration,
        redactor: Redactor,
    ) -> Self {
        Self(Arc::new(Inner {
            path: state_dir.join(FILE_NAME),
            security,
            ask,
            timeout,
            home: std::env::var_os("HOME").map(PathBuf::from),
            redactor,
            prompts: OwnerNotices::default(),
            pending: Mutex::default(),
        }))
    }

    /// Where the prompts go: the channel that reaches the approvers takes them from here.
    pub fn prompts(&self) -> OwnerNotices {
        self.0.prompts.clone()
    }

    pub fn timeout(&self) -> Duration {
        self.0.timeout
    }

    /// The policy's decision for `command` in `workdir`. `tainted`: the turn's context holds
    /// untrusted content, and `on-miss` counts as `always` (a clawfort extension).
    /// When an allowlist entry is what lets the command run, its use is recorded in the file.
    pub fn decide(&self, command: &str, workdir: &Path, tainted: bool) -> Decision {
        let policy = match self.policy(command, workdir, tainted) {
            Ok(policy) => policy,
            Err(why) => return Decision::Deny(why),
        };
        let decision = decide(policy.security, policy.ask, policy.matched.is_some());
        if decision == Decision::Run && policy.security == ExecSecurity::Allowlist {
            self.record_use(command, policy.matched);
        }
        match decision {
            Decision::Ask(_) => Decision::Ask(policy.fallback),
            other => other,
        }
    }

    /// Settles a question nobody answered in time, by `askFallback` as the file says now
    /// (an edit during the wait counts, a file broken since denies). Runs by the allowlist
    /// are recorded like [`Approvals::decide`]'s.
    pub fn unanswered(&self, command: &str, workdir: &Path, tainted: bool) -> Unanswered {
        let policy = match self.policy(command, workdir, tainted) {
            Ok(policy) => policy,
            Err(why) => return Unanswered::Deny(why),
        };
        match policy.fallback {
            Fallback::Deny if policy.security == ExecSecurity::Deny => Unanswered::Deny(
                "exec is denied by the approvals policy (security \"deny\")".to_owned(),
            ),
            Fallback::Deny => Unanswered::Deny("askFallback \"deny\"".to_owned()),
            Fallback::Untrusted => Unanswered::Deny(
                "the turn holds untrusted content, where no answer is always a denial \
                 whatever askFallback says"
                    .to_owned(),
            ),
            Fallback::Allowlist if policy.matched.is_none() => Unanswered::Deny(
                "askFallback \"allowlist\" and the command matches no allowlist entry".to_owned(),
            ),
            Fallback::Allowlist => {
                self.record_use(command, policy.matched);
                Unanswered::Run(Fallback::Allowlist)
            }
            Fallback::Full => Unanswered::Run(Fallback::Full),
        }
    }

    /// The file, read now, applied to `tools.exec` and the turn's taint, for `command`.
    fn policy(&self, command: &str, workdir: &Path, tainted: bool) -> Result<Applied, String> {
        let file = file::load(&self.0.path)
            .map_err(|e| e.to_string())?
            .effective();
        let security = file
            .security
            .map_or(self.0.security, |s| s.min(self.0.security));
        let mut ask = file.ask.map_or(self.0.ask, |a| a.max(self.0.ask));
        if tainted && ask == ExecAsk::OnMiss {
            ask = ExecAsk::Always;
        }
        Ok(Applied {
            security,
            ask,
            fallback: Fallback::new(security, file.ask_fallback, tainted),
            matched: self.allowed_by(file.allowlist, command, workdir),
        })
    }

    /// The first entry of `allowlist` that matches the command, and where its executable is.
    fn allowed_by(
        &self,
        allowlist: Vec<file::Entry>,
        text: &str,
        workdir: &Path,
    ) -> Option<(file::Entry, Option<command::Resolved>)> {
        let simple = command::simple(text)?;
        let resolved = command::resolve(simple.program, workdir);
        let entry = allowlist.into_iter().find(|entry| {
            command::pattern_matches(
                &entry.pattern,
                &simple,
                resolved.as_ref(),
                self.0.home.as_deref(),
            ) && entry
                .arg_pattern
                .as_deref()
                .is_none_or(|p| command::arg_pattern_matches(p, &simple, text, workdir))
        })?;
        Some((entry, resolved))
    }

    /// Stamps the use on the entry that let `command` run. The text is kept (redacted)
    /// unless the entry binds a hash of it (as OpenClaw leaves it out of such entries). A
    /// failed write is logged: the bookkeeping never stops an allowed command.
    fn record_use(&self, command: &str, matched: Option<(file::Entry, Option<command::Resolved>)>) {
        let Some((entry, resolved)) = matched else {
            return;
        };
        let hashed = entry
            .arg_pattern
            .as_deref()
            .is_some_and(|p| p.starts_with("sha256:"));
        let used = file::Use {
            at: unix_ms(),
            command: (!hashed).then(|| self.0.redactor.redact(command).into_owned()),
            resolved_path: resolved.map(|r| r.real.to_string_lossy().into_owned()),
        };
        let path = self.0.path.clone();
        let write = move || {
            if let Err(e) = file::record_use(&path, &entry, used) {
                tracing::warn!(
                    "exec approvals: the allowlist entry `{}` let a command run, but its \
                     lastUsedAt was not recorded: {e}",
                    entry.pattern
                );
            }
        };
        // In the gateway the command does not wait for the write (its two fsyncs cost
        // several milliseconds, as much as a confined run); without a runtime it is inline.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(write)),
            Err(_) => write(),
        }
    }

    /// Asks the approvers about `command` and waits for the answer or the timeout. Dropping
    /// the future (the turn stopped) withdraws the question.
    pub async fn ask(
        &self,
        command: &str,
        workdir: &Path,
        session_key: &str,
        fallback: Fallback,
    ) -> Verdict {
        let (tx, rx) = oneshot::channel();
        let now = unix_ms();
        let view = PendingView {
            id: new_id(),
            command: self.0.redactor.redact(command).into_owned(),
            workdir: workdir.to_owned(),
            session_key: session_key.to_owned(),
            created_at: now,
            expires_at: now + self.0.timeout.as_millis() as u64,
            can_always: rememberable(command),
        };
        let id = view.id.clone();
        tracing::info!(
            "exec approval {id} asked for session {session_key} in {}: {}",
            workdir.display(),
            view.command
        );
        let text = prompt(&view, &fallback.describe(self.0.timeout));
        // Registered before anyone can read the prompt and answer it.
        self.0
            .pending
            .lock()
            .expect("not poisoned")
            .insert(id.clone(), Pending { view, answer: tx });
        self.0.prompts.post(Notice::new(text));
        let _withdraw = Withdraw {
            approvals: self,
            id: &id,
        };
        match tokio::time::timeout(self.0.timeout, rx).await {
            Ok(Ok((Answer::Deny, by))) => Verdict::Denied { by },
            Ok(Ok((answer, by))) => Verdict::Approved {
                always: answer == Answer::Always,
                by,
            },
            Ok(Err(_)) | Err(_) => {
                tracing::info!("exec approval {id} timed out");
                Verdict::TimedOut
            }
        }
    }

    /// Answers question `id` for `by` (who answered, for the log and the model). Returns
    /// what to tell them.
    pub fn answer(&self, id: &str, answer: Answer, by: &str) -> Result<String, AnswerError> {
        let id = id.trim().to_ascii_lowercase();
        let mut pending = self.0.pending.lock().expect("not poisoned");
        let Some(question) = pending.get(&id) else {
            return Err(AnswerError::NotPending(id));
        };
        if answer == Answer::Always && !question.view.can_always {
            return Err(AnswerError::NotSimple(id));
        }
        let question = pending.remove(&id).expect("checked above");
        drop(pending);
        let command = question.view.command.clone();
        if question.answer.send((answer, by.to_owned())).is_err() {
            return Err(AnswerError::NotPending(id));
        }
        tracing::info!("exec approval {id} answered {answer:?} by {by}");
        Ok(match answer {
            Answer::Once => format!("Approved once: {command}"),
            Answer::Always => {
                format!("Approved, and added to the allowlist for this workdir: {command}")
            }
            Answer::Deny => format!("Denied: {command}"),
        })
    }

    /// The questions waiting, oldest first.
    pub fn pending(&self) -> Vec<PendingView> {
        let pending = self.0.pending.lock().expect("not poisoned");
        let mut views: Vec<PendingView> = pending.values().map(|p| p.view.clone()).collect();
        views.sort_by_key(|v| v.created_at);
        views
    }

    /// Adds an "always" entry for `command` in `workdir`: its resolved executable (or bare
    /// name) as `pattern`, the exact text and workdir as `argPattern`.
    pub fn remember(&self, text: &str, workdir: &Path) -> Result<(), String> {
        let simple = command::simple(text)
            .filter(|_| rememberable(text))
            .ok_or_else(|| format!("`{text}` cannot be remembered"))?;
        let pattern = match command::resolve(simple.program, workdir) {
            Some(r) => r.real.to_string_lossy().into_owned(),
            None => simple.program.to_owned(),
        };
        let entry = file::Entry {
            id: Some(new_id()),
            pattern,
            arg_pattern: Some(command::exact_arg_pattern(text, workdir)),
            source: Some("allow-always".to_owned()),
            ..file::Entry::default()
        };
        file::add_entry(&self.0.path, entry).map_err(|e| e.to_string())
    }
}

/// Whether "always" may remember `command`: a simple command whose program is a bare name,
/// found in `PATH` (system directories the command cannot write). A program given as a
/// path may be a workspace file the model can rewrite after the approval.
fn rememberable(command: &str) -> bool {
    command::simple(command).is_some_and(|s| !s.program.contains('/'))
}

/// The policy applied to one command: [`Approvals::policy`].
struct Applied {
    security: ExecSecurity,
    ask: ExecAsk,
    fallback: Fallback,
    matched: Option<(file::Entry, Option<command::Resolved>)>,
}

/// OpenClaw's rule: `always` asks; `on-miss` asks about a miss under `allowlist`; otherwise
/// `allowlist` runs matches only and `full` everything. (An `Ask` carries [`Fallback::Deny`]
/// here; [`Approvals::decide`] puts in the file's.)
fn decide(security: ExecSecurity, ask: ExecAsk, matched: bool) -> Decision {
    match (security, ask) {
        (ExecSecurity::Deny, _) => {
            Decision::Deny("exec is denied by the approvals policy (security \"deny\")".to_owned())
        }
        (_, ExecAsk::Always) => Decision::Ask(Fallback::Deny),
        (ExecSecurity::Allowlist, _) if matched => Decision::Run,
        (ExecSecurity::Allowlist, ExecAsk::OnMiss) => Decision::Ask(Fallback::Deny),
        (ExecSecurity::Allowlist, ExecAsk::Off) => Decision::Deny(
            "the command matches no allowlist entry (security \"allowlist\", ask \"off\"); \
             only a command of plain words whose executable an entry names can match"
                .to_owned(),
        ),
        (ExecSecurity::Full, _) => Decision::Run,
    }
}

/// Removes a question when its wait ends, however it ends.
struct Withdraw<'a> {
    approvals: &'a Approvals,
    id: &'a str,
}

impl Drop for Withdraw<'_> {
    fn drop(&mut self) {
        if let Ok(mut pending) = self.approvals.0.pending.lock() {
            pending.remove(self.id);
        }
    }
}

/// The message an approver gets: everything needed to judge, how to answer, and what
/// silence does (`silence`).
fn prompt(view: &PendingView, silence: &str) -> String {
    let id = &view.id;
    let always = if view.can_always {
        format!(", /approve {id} always to also allow this exact command here from now on")
    } else {
        String::new()
    };
    format!(
        "Exec approval {id}\nCommand: {}\nWorkdir: {}\nSession: {}\n\nReply /approve {id} to \
         run it once{always}, or /deny {id}. {silence}",
        view.command,
        view.workdir.display(),
        view.session_key,
    )
}

fn new_id() -> String {
    let mut bytes = [0u8; ID_LEN];
    // Rejection sampling keeps every character equally likely.
    let mut id = String::with_capacity(ID_LEN);
    while id.len() < ID_LEN {
        getrandom::fill(&mut bytes).expect("the operating system's random generator works");
        for b in bytes {
            let limit = 256 - 256 % ID_ALPHABET.len();
            if usize::from(b) < limit && id.len() < ID_LEN {
                id.push(ID_ALPHABET[usize::from(b) % ID_ALPHABET.len()] as char);
            }
        }
    }
    id
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approvals(dir: &Path, security: ExecSecurity, ask: ExecAsk) -> Approvals {
        Approvals::new(
            dir,
            security,
            ask,
            Duration::from_secs(5),
            Redactor::default(),
        )
    }

    #[test]
    fn the_policy_follows_openclaw() {
        use ExecAsk::*;
        use ExecSecurity::*;
        assert!(matches!(decide(Deny, Always, true), Decision::Deny(_)));
        assert_eq!(decide(Full, Off, false), Decision::Run);
        assert_eq!(decide(Full, OnMiss, false), Decision::Run);
        assert_eq!(decide(Full, Always, true), Decision::Ask(Fallback::Deny));
        assert_eq!(decide(Allowlist, Off, true), Decision::Run);
        assert!(matches!(decide(Allowlist, Off, false), Decision::Deny(_)));
        assert_eq!(decide(Allowlist, OnMiss, true), Decision::Run);
        assert_eq!(
            decide(Allowlist, OnMiss, false),
            Decision::Ask(Fallback::Deny)
        );
        assert_eq!(
            decide(Allowlist, Always, true),
            Decision::Ask(Fallback::Deny)
        );
    }

    #[test]
    fn the_file_tightens_and_chains_never_match() {
        let dir = tempfile::tempdir().unwrap();
        let a = approvals(dir.path(), ExecSecurity::Full, ExecAsk::Off);
        let ws = dir.path();
        assert_eq!(a.decide("ls; touch pwned", ws, false), Decision::Run);
        std::fs::write(
            dir.path().join(FILE_NAME),
            r#"{"version": 1, "defaults": {"security": "allowlist", "ask": "on-miss"},
                "agents": {"main": {"allowlist": [{"pattern": "ls"}]}}}"#,
        )
        .unwrap();
        assert_eq!(a.decide("ls -la", ws, false), Decision::Run);
        assert_eq!(
            a.decide("ls; touch pwned", ws, false),
            Decision::Ask(Fallback::Deny)
        );
        assert_eq!(
            a.decide("ls && touch pwned", ws, false),
            Decision::Ask(Fallback::Deny)
        );
        assert_eq!(
            a.decide("ls $(touch pwned)", ws, false),
            Decision::Ask(Fallback::Deny)
        );
        assert_eq!(
            a.decide("touch pwned", ws, false),
            Decision::Ask(Fallback::Deny)
        );
        // Untrusted content in the turn: on-miss asks even about a match.
        assert_eq!(
            a.decide("ls -la", ws, true),
            Decision::Ask(Fallback::Untrusted)
        );
        // The file cannot loosen the config.
        let strict = approvals(dir.path(), ExecSecurity::Allowlist, ExecAsk::Always);
        assert_eq!(
            strict.decide("ls", ws, false),
            Decision::Ask(Fallback::Deny)
        );
        std::fs::write(dir.path().join(FILE_NAME), "{ not json").unwrap();
        let Decision::Deny(why) = a.decide("ls", ws, false) else {
            panic!("a broken file must deny");
        };
        assert!(why.contains(FILE_NAME), "{why}");
    }

    #[test]
    fn ask_fallback_never_passes_security_or_the_taint_rule() {
        use ExecSecurity::*;
        assert_eq!(Fallback::new(Full, None, false), Fallback::Deny);
        assert_eq!(Fallback::new(Full, Some(Full), false), Fallback::Full);
        assert_eq!(
            Fallback::new(Full, Some(Allowlist), false),
            Fallback::Allowlist
        );
        assert_eq!(
            Fallback::new(Allowlist, Some(Full), false),
            Fallback::Allowlist
        );
        assert_eq!(Fallback::new(Deny, Some(Full), false), Fallback::Deny);
        assert_eq!(Fallback::new(Full, Some(Full), true), Fallback::Untrusted);
    }

    #[test]
    fn no_answer_is_settled_by_the_file_as_it_is_then() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path();
        let file = dir.path().join(FILE_NAME);
        let write = |fallback: &str| {
            std::fs::write(
                &file,
                format!(
                    r#"{{"defaults": {{"askFallback": "{fallback}"}},
                        "agents": {{"main": {{"allowlist": [{{"pattern": "ls"}}]}}}}}}"#
                ),
            )
            .unwrap()
        };
        let full = approvals(dir.path(), ExecSecurity::Full, ExecAsk::Always);
        let allowlist = approvals(dir.path(), ExecSecurity::Allowlist, ExecAsk::Always);
        let denied = |u: Unanswered, want: &str| match u {
            Unanswered::Deny(why) => assert!(why.contains(want), "{why}"),
            run => panic!("{run:?}, wanted a denial with {want:?}"),
        };
        // No file, no askFallback: a denial.
        denied(full.unanswered("ls", ws, false), "askFallback \"deny\"");
        write("full");
        assert_eq!(
            full.decide("touch x", ws, false),
            Decision::Ask(Fallback::Full)
        );
        assert_eq!(
            full.unanswered("touch x", ws, false),
            Unanswered::Run(Fallback::Full)
        );
        // `full` under `allowlist` security is `allowlist`: only a match runs.
        assert_eq!(
            allowlist.decide("touch x", ws, false),
            Decision::Ask(Fallback::Allowlist)
        );
        denied(
            allowlist.unanswered("touch x", ws, false),
            "matches no allowlist entry",
        );
        denied(
            allowlist.unanswered("ls; touch x", ws, false),
            "matches no allowlist entry",
        );
        assert_eq!(
            allowlist.unanswered("ls -l", ws, false),
            Unanswered::Run(Fallback::Allowlist)
        );
        // A turn holding untrusted content: silence is a denial, whatever the file says.
        assert_eq!(
            full.decide("ls", ws, true),
            Decision::Ask(Fallback::Untrusted)
        );
        denied(full.unanswered("ls", ws, true), "untrusted content");
        // The file is read again when the wait ends: tightened, or broken, it denies.
        write("deny");
        denied(
            full.unanswered("touch x", ws, false),
            "askFallback \"deny\"",
        );
        std::fs::write(
            &file,
            r#"{"defaults": {"askFallback": "full", "security": "deny"}}"#,
        )
        .unwrap();
        denied(full.unanswered("touch x", ws, false), "security \"deny\"");
        std::fs::write(&file, r#"{"defaults": {"askFallback": "yes"}}"#).unwrap();
        denied(
            full.unanswered("touch x", ws, false),
            "defaults.askFallback",
        );
        let Decision::Deny(why) = full.decide("touch x", ws, false) else {
            panic!("a bad askFallback must deny");
        };
        assert!(why.contains("`deny`, `allowlist`, `full`"), "{why}");
    }

    #[test]
    fn a_run_by_the_allowlist_stamps_its_entry() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path();
        let file = dir.path().join(FILE_NAME);
        std::fs::write(
            &file,
            r#"{"agents": {"main": {"allowlist": [{"pattern": "ls"}, {"pattern": "sh"}]}}}"#,
        )
        .unwrap();
        let stamps = || {
            let doc = file::load(&file).unwrap().effective();
            doc.allowlist
                .iter()
                .map(|e| (e.last_used_at, e.last_used_command.clone()))
                .collect::<Vec<_>>()
        };
        let a = approvals(dir.path(), ExecSecurity::Allowlist, ExecAsk::OnMiss);
        let before = unix_ms();
        assert_eq!(a.decide("ls -la", ws, false), Decision::Run);
        let (at, command) = stamps()[0].clone();
        assert!(
            at.is_some_and(|at| at >= before && at <= unix_ms()),
            "{at:?}"
        );
        assert_eq!(command.as_deref(), Some("ls -la"));
        // What the stamp costs each allowlisted command (the file is replaced each time).
        let started = std::time::Instant::now();
        for _ in 0..10 {
            a.decide("ls -la", ws, false);
        }
        let stamped = started.elapsed() / 10;
        let started = std::time::Instant::now();
        for _ in 0..10 {
            a.decide("ls; x", ws, false);
        }
        eprintln!(
            "a decision: {stamped:?} with its lastUsedAt write, {:?} without",
            started.elapsed() / 10
        );
        assert_eq!(stamps()[1], (None, None));
        // Asked about (a miss, or untrusted content): nothing let it run, nothing is stamped.
        assert!(matches!(a.decide("sh -c x", ws, true), Decision::Ask(_)));
        assert_eq!(stamps()[1], (None, None));
        // Under `full` the allowlist is not what lets a command run.
        let full = approvals(dir.path(), ExecSecurity::Full, ExecAsk::Off);
        assert_eq!(full.decide("sh -c x", ws, false), Decision::Run);
        assert_eq!(stamps()[1], (None, None));
        // A file that cannot be written does not stop the command.
        let mut perms = std::fs::metadata(dir.path()).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o500);
        std::fs::set_permissions(dir.path(), perms.clone()).unwrap();
        let writable = std::fs::File::create(dir.path().join("probe")).is_ok();
        assert_eq!(a.decide("sh x", ws, false), Decision::Run);
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o700);
        std::fs::set_permissions(dir.path(), perms).unwrap();
        if !writable {
            assert_eq!(stamps()[1], (None, None));
        }
    }

    #[tokio::test]
    async fn answers_reach_the_waiting_call_once() {
        let dir = tempfile::tempdir().unwrap();
        let a = approvals(dir.path(), ExecSecurity::Allowlist, ExecAsk::OnMiss);
        let waiting = {
            let a = a.clone();
            tokio::spawn(async move { a.ask("ls", Path::new("/ws"), "s", Fallback::Deny).await })
        };
        let prompt = a.prompts().next().await.text;
        let id = a.pending()[0].id.clone();
        assert!(prompt.contains(&format!("/approve {id}")) && prompt.contains("Command: ls"));
        assert_eq!(id.len(), ID_LEN);
        a.answer(&id.to_uppercase(), Answer::Always, "telegram:1")
            .unwrap();
        assert_eq!(
            waiting.await.unwrap(),
            Verdict::Approved {
                always: true,
                by: "telegram:1".into()
            }
        );
        assert_eq!(
            a.answer(&id, Answer::Once, "telegram:1"),
            Err(AnswerError::NotPending(id))
        );
        assert!(a.pending().is_empty());
    }

    #[tokio::test]
    async fn no_answer_is_a_denial_and_a_withdrawn_question_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let a = Approvals::new(
            dir.path(),
            ExecSecurity::Allowlist,
            ExecAsk::Always,
            Duration::from_millis(50),
            Redactor::default(),
        );
        assert_eq!(
            a.ask("ls", Path::new("/ws"), "s", Fallback::Deny).await,
            Verdict::TimedOut
        );
        assert!(a.pending().is_empty());
        let asked = a.ask("ls; rm x", Path::new("/ws"), "s", Fallback::Deny);
        let id = tokio::select! {
            _ = asked => unreachable!(),
            id = async { tokio::task::yield_now().await; a.pending()[0].id.clone() } => id,
        };
        // The question's future was dropped (its turn ended).
        assert!(matches!(
            a.answer(&id, Answer::Once, "x"),
            Err(AnswerError::NotPending(_))
        ));
    }

    #[tokio::test]
    async fn always_is_refused_for_chains_and_programs_given_as_paths() {
        let dir = tempfile::tempdir().unwrap();
        let a = approvals(dir.path(), ExecSecurity::Allowlist, ExecAsk::Always);
        for command in ["./build.sh", "ls; rm x", "/usr/bin/ls"] {
            let waiting = a.ask(command, dir.path(), "s", Fallback::Deny);
            tokio::pin!(waiting);
            tokio::select! {
                _ = &mut waiting => unreachable!(),
                () = tokio::task::yield_now() => {}
            }
            let view = a.pending().pop().unwrap();
            assert!(!view.can_always, "{command}");
            assert!(
                !a.prompts().next().await.text.contains("always"),
                "{command}"
            );
            assert_eq!(
                a.answer(&view.id, Answer::Always, "x"),
                Err(AnswerError::NotSimple(view.id.clone()))
            );
            a.answer(&view.id, Answer::Deny, "x").unwrap();
            assert!(matches!(waiting.await, Verdict::Denied { .. }));
        }
        assert!(a.remember("./build.sh", dir.path()).is_err());
        assert!(!dir.path().join(FILE_NAME).exists());
    }

    #[test]
    fn ids_use_the_alphabet() {
        let ids: Vec<String> = (0..50).map(|_| new_id()).collect();
        assert!(ids
            .iter()
            .all(|id| id.len() == ID_LEN && id.bytes().all(|b| ID_ALPHABET.contains(&b))));
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ids.len());
    }
}
