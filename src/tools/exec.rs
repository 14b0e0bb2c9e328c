//! The `exec` tool (OpenClaw's name and parameters `command`, `workdir`, `timeoutSeconds`):
//! one shell command, once the exec approvals policy ([`crate::approvals`]) allows it, in
//! the Docker sandbox for the sessions `agents.defaults.sandbox.mode` covers
//! ([`crate::sandbox`]), else confined on the host by [`crate::confine::run`].

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use super::log::{Approval, Execution, Place, Status};
use super::{Call, Tool, ToolFuture, ToolOutput};
use crate::approvals::{Approvals, Decision, Fallback, Unanswered, Verdict};
use crate::config::SandboxMode;
use crate::confine::{Ending, Host, Outcome, Policy, OUTPUT_CAP};
use crate::events::{command_summary, Event, Events};
use crate::sandbox::{is_sandboxed, Sandbox};

/// The `exec` tool; registered with `tools.exec.security` `"allowlist"` or `"full"`.
#[derive(Debug)]
pub struct ExecTool {
    policy: Policy,
    /// Where commands outside the sandbox run.
    host: Host,
    /// `tools.exec.timeoutSeconds`; `None`: only the turn's deadline.
    timeout: Option<Duration>,
    approvals: Approvals,
    /// The sandbox and the mode choosing which sessions use it; `None`: mode `off`.
    sandbox: Option<(Sandbox, SandboxMode)>,
    /// Where a denial and a question to the approvers are recorded as security events.
    events: Events,
}

impl ExecTool {
    pub fn new(
        policy: Policy,
        host: Host,
        timeout: Option<Duration>,
        approvals: Approvals,
    ) -> Self {
        Self {
            policy,
            host,
            timeout,
            approvals,
            sandbox: None,
            events: Events::default(),
        }
    }

    /// Records denials and approval questions in `events`.
    pub fn with_events(mut self, events: Events) -> Self {
        self.events = events;
        self
    }

    /// Runs the commands of the sessions `mode` covers in `sandbox`.
    pub fn with_sandbox(mut self, sandbox: Sandbox, mode: SandboxMode) -> Self {
        self.sandbox = Some((sandbox, mode));
        self
    }

    /// Where commands outside the sandbox run.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The approvals this tool asks (the channels answer them).
    pub fn approvals(&self) -> &Approvals {
        &self.approvals
    }

    async fn exec(&self, input: Value, call: Call) -> ToolOutput {
        let Call {
            session_key,
            deadline,
            cancel,
            tainted,
        } = call;
        let Some(command) = input["command"].as_str().filter(|c| !c.trim().is_empty()) else {
            return ToolOutput::error("`command` is required: the shell command to run");
        };
        let timeout = match &input["timeoutSeconds"] {
            Value::Null => self.timeout,
            v => match v.as_f64() {
                Some(0.0) => None,
                Some(s) if s > 0.0 && s.is_finite() => {
                    Some(Duration::from_secs_f64(s.min(86_400.0)))
                }
                _ => {
                    return ToolOutput::error(
                        "`timeoutSeconds` must be a number of seconds, 0 for none",
                    )
                }
            },
        };
        let sandbox = self
            .sandbox
            .as_ref()
            .filter(|(_, mode)| is_sandboxed(*mode, &session_key))
            .map(|(sandbox, _)| sandbox);
        let place = if sandbox.is_some() {
            Place::Sandbox
        } else {
            Place::Host
        };
        // The workdir, checked to lie inside the workspace, is what an approval binds (for a
        // sandboxed command too: the container sees the workspace at the same relative path).
        if let Err(e) = self.policy.ensure_workspace() {
            return ToolOutput::error(e);
        }
        let workdir = match self.policy.workdir(input["workdir"].as_str()) {
            Ok(w) => w,
            Err(e) => return ToolOutput::error(e),
        };
        let (approval, note) = match self
            .approve(command, &workdir, session_key.as_str(), tainted)
            .await
        {
            Ok(approved) => approved,
            Err((why, approval)) => return refused(why, place, approval),
        };
        let own_deadline = timeout.map(|t| Instant::now() + t);
        let until = own_deadline.map_or(deadline, |d| d.min(deadline));
        let own_timeout = timeout.filter(|_| own_deadline.is_some_and(|d| d <= deadline));
        let outcome = match sandbox {
            // Fail closed: a sandbox error is the call's answer, never a host run.
            Some(sandbox) => sandbox
                .run(
                    &session_key,
                    command,
                    input["workdir"].as_str(),
                    until,
                    &cancel,
                )
                .await
                .map_err(|e| format!("the sandbox cannot run the command: {e}")),
            None => {
                self.host
                    .run(&self.policy, command, &workdir, until, &cancel)
                    .await
            }
        };
        let mut output = match outcome {
            Ok(outcome) => report(&outcome, own_timeout, place),
            Err(e) => refused(e, place, approval),
        };
        if let Some(execution) = &mut output.execution {
            execution.approval = approval;
        }
        output.content.push_str(&note);
        output
    }

    /// Whether the approvals policy lets `command` run in `workdir`, asking an approver when
    /// it says so: the approval to log and a note for the model, or why not. A denial is a
    /// security event ([`Event::ExecDenied`]).
    async fn approve(
        &self,
        command: &str,
        workdir: &Path,
        session: &str,
        tainted: bool,
    ) -> Result<(Approval, String), (String, Approval)> {
        let approved = self.decide(command, workdir, session, tainted).await;
        if approved.is_err() {
            self.events.record(Event::ExecDenied {
                command: command_summary(command),
                session: session.to_owned(),
            });
        }
        approved
    }

    async fn decide(
        &self,
        command: &str,
        workdir: &Path,
        session: &str,
        tainted: bool,
    ) -> Result<(Approval, String), (String, Approval)> {
        // Reads the approvals file and resolves the executable: file system work.
        let decision = {
            let (approvals, text, dir) = (
                self.approvals.clone(),
                command.to_owned(),
                workdir.to_owned(),
            );
            tokio::task::spawn_blocking(move || approvals.decide(&text, &dir, tainted))
                .await
                .unwrap_or_else(|e| Decision::Deny(format!("the approvals check failed: {e}")))
        };
        match decision {
            Decision::Run => Ok((Approval::None, String::new())),
            Decision::Deny(why) => Err((format!("not run: {why}"), Approval::None)),
            Decision::Ask(fallback) => {
                self.events.record(Event::ExecWaiting {
                    command: command_summary(command),
                    session: session.to_owned(),
                });
                match self
                    .approvals
                    .ask(command, workdir, session, fallback)
                    .await
                {
                    Verdict::Approved { always, by } => {
                        tracing::info!("exec: running a command {by} approved");
                        let note = if always {
                            self.remember(command, workdir).await
                        } else {
                            String::new()
                        };
                        Ok((Approval::Approved, note))
                    }
                    Verdict::Denied { by } => Err((
                        format!("not run: the approver ({by}) denied this command"),
                        Approval::Denied,
                    )),
                    Verdict::TimedOut => self.unanswered(command, workdir, tainted).await,
                }
            }
        }
    }

    /// A question nobody answered in time: `askFallback` settles it.
    async fn unanswered(
        &self,
        command: &str,
        workdir: &Path,
        tainted: bool,
    ) -> Result<(Approval, String), (String, Approval)> {
        let secs = self.approvals.timeout().as_secs();
        let (approvals, text, dir) = (
            self.approvals.clone(),
            command.to_owned(),
            workdir.to_owned(),
        );
        let settled =
            tokio::task::spawn_blocking(move || approvals.unanswered(&text, &dir, tainted))
                .await
                .unwrap_or_else(|e| Unanswered::Deny(format!("the approvals check failed: {e}")));
        match settled {
            Unanswered::Run(fallback) => {
                let how = match fallback {
                    Fallback::Allowlist => "askFallback \"allowlist\" and an allowlist entry match",
                    _ => "askFallback \"full\"",
                };
                tracing::info!(
                    "exec approval timed out: no approver answered within {secs} s; running \
                     it: {how}"
                );
                Ok((
                    Approval::Fallback,
                    format!("\n[no approver answered within {secs} s; it ran by {how}]"),
                ))
            }
            Unanswered::Deny(why) => {
                tracing::info!(
                    "exec approval timed out: denied: no approver answered within {secs} s \
                     ({why})"
                );
                Err((
                    format!(
                        "not run: no approver answered within {secs} s, which counts as a \
                         denial ({why})"
                    ),
                    Approval::TimedOut,
                ))
            }
        }
    }

    /// Adds an approved-always command to the allowlist; a note for the model when that
    /// failed (the command still runs: it was approved).
    async fn remember(&self, command: &str, workdir: &Path) -> String {
        let (approvals, command, workdir) = (
            self.approvals.clone(),
            command.to_owned(),
            workdir.to_owned(),
        );
        let saved = tokio::task::spawn_blocking(move || approvals.remember(&command, &workdir))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        match saved {
            Ok(()) => String::new(),
            Err(e) => {
                tracing::error!("exec: an approved command was not added to the allowlist: {e}");
                "\n[approved once: adding it to the allowlist failed]".to_owned()
            }
        }
    }
}

/// A call that did not run (or could not start), for the model and the execution log.
fn refused(why: String, place: Place, approval: Approval) -> ToolOutput {
    ToolOutput {
        content: why,
        is_error: true,
        execution: Some(Execution {
            place,
            status: Status::Error,
            approval,
        }),
    }
}

/// The output, a truncation note when the cap was reached, and how the command ended
/// (`place`: where it ran, for the execution log).
fn report(outcome: &Outcome, own_timeout: Option<Duration>, place: Place) -> ToolOutput {
    let mut text = String::from_utf8_lossy(&outcome.output).into_owned();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    if outcome.truncated() {
        text.push_str(&format!(
            "[output truncated: the first {OUTPUT_CAP} of {} bytes are shown]\n",
            outcome.total_bytes
        ));
    }
    let ending = match outcome.ending {
        Ending::Exited(code) => format!("[exit code {code}]"),
        Ending::Signaled(signal) => format!("[killed by signal {signal}]"),
        Ending::TimedOut => match own_timeout {
            Some(t) => format!(
                "[timed out after {} s: the command and every process it started were killed]",
                t.as_secs_f64()
            ),
            None => "[stopped at the turn's time limit: the command and every process it \
                     started were killed]"
                .to_owned(),
        },
        Ending::Cancelled => {
            "[cancelled: the command and every process it started were killed]".to_owned()
        }
    };
    text.push_str(&ending);
    let status = match outcome.ending {
        Ending::Exited(code) => Status::Exited { code },
        Ending::Signaled(signal) => Status::Signaled { signal },
        Ending::TimedOut => Status::TimedOut,
        Ending::Cancelled => Status::Cancelled,
    };
    ToolOutput {
        content: text,
        is_error: outcome.ending != Ending::Exited(0),
        execution: Some(Execution {
            place,
            status,
            approval: Approval::None,
        }),
    }
}

impl Tool for ExecTool {
    fn name(&self) -> &str {
        "exec"
    }

    fn description(&self) -> &str {
        "Run a shell command (/bin/sh -c) in the workspace. Only the workspace is writable; \
         system directories are read-only; network connections and everything else on the \
         machine are out of reach. Output (stdout and stderr together) is capped at 64 KiB. \
         Do not rely on background processes: they may end with the command or outlive it."
    }

    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "command": {"type": "string", "description": "Shell command to run."},
                "workdir": {
                    "type": "string",
                    "description": "Working directory, relative to the workspace (default: the workspace)."
                },
                "timeoutSeconds": {
                    "type": "number",
                    "description": "Kill the command after this many seconds (0: no timeout of its own)."
                }
            },
            "required": ["command"]
        })
    }

    fn run(&self, input: Value, call: Call) -> ToolFuture<'_> {
        Box::pin(self.exec(input, call))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{report, Ending, Outcome, Place, Status, OUTPUT_CAP};

    fn outcome(ending: Ending, output: &[u8], total: u64) -> Outcome {
        Outcome {
            ending,
            output: output.to_vec(),
            total_bytes: total,
            elapsed: Duration::ZERO,
        }
    }

    #[test]
    fn the_report_says_how_the_command_ended() {
        let ok = report(&outcome(Ending::Exited(0), b"hi", 2), None, Place::Host);
        assert_eq!(
            (ok.content.as_str(), ok.is_error),
            ("hi\n[exit code 0]", false)
        );
        let failed = report(&outcome(Ending::Exited(2), b"", 0), None, Place::Host);
        assert_eq!(
            (failed.content.as_str(), failed.is_error),
            ("[exit code 2]", true)
        );
        let ran = failed.execution.unwrap();
        assert_eq!(
            (ran.place, ran.status),
            (Place::Host, Status::Exited { code: 2 })
        );
        let cut = report(
            &outcome(Ending::Exited(0), &[b'a'; OUTPUT_CAP], 100_000),
            None,
            Place::Host,
        );
        assert!(cut
            .content
            .contains("[output truncated: the first 65536 of 100000 bytes"));
        let slow = report(
            &outcome(Ending::TimedOut, b"", 0),
            Some(Duration::from_secs(5)),
            Place::Sandbox,
        );
        assert!(slow.content.contains("timed out after 5 s") && slow.is_error);
        assert_eq!(slow.execution.unwrap().place, Place::Sandbox);
        let stopped = report(&outcome(Ending::Cancelled, b"", 0), None, Place::Host);
        assert!(stopped.content.contains("cancelled") && stopped.is_error);
    }
}
