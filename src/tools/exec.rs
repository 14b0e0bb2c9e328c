//! The `exec` tool (OpenClaw's name and parameters `command`, `workdir`, `timeoutSeconds`):
//! one shell command, confined on the host by [`crate::confine::run`], once the exec
//! approvals policy ([`crate::approvals`]) allows it.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use super::{Call, Tool, ToolFuture, ToolOutput};
use crate::approvals::{Approvals, Decision, Verdict};
use crate::confine::{run, Ending, Outcome, Policy, OUTPUT_CAP};

/// The `exec` tool; registered with `tools.exec.security` `"allowlist"` or `"full"`.
#[derive(Debug)]
pub struct ExecTool {
    policy: Policy,
    /// `tools.exec.timeoutSeconds`; `None`: only the turn's deadline.
    timeout: Option<Duration>,
    approvals: Approvals,
}

impl ExecTool {
    pub fn new(policy: Policy, timeout: Option<Duration>, approvals: Approvals) -> Self {
        Self {
            policy,
            timeout,
            approvals,
        }
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
        if let Err(e) = self.policy.ensure_workspace() {
            return ToolOutput::error(e);
        }
        let workdir = match self.policy.workdir(input["workdir"].as_str()) {
            Ok(w) => w,
            Err(e) => return ToolOutput::error(e),
        };
        let mut note = String::new();
        // Reads the approvals file and resolves the executable: file system work.
        let decision = {
            let (approvals, text, dir) =
                (self.approvals.clone(), command.to_owned(), workdir.clone());
            tokio::task::spawn_blocking(move || approvals.decide(&text, &dir, tainted))
                .await
                .unwrap_or_else(|e| Decision::Deny(format!("the approvals check failed: {e}")))
        };
        match decision {
            Decision::Run => {}
            Decision::Deny(why) => return ToolOutput::error(format!("not run: {why}")),
            Decision::Ask => {
                match self
                    .approvals
                    .ask(command, &workdir, session_key.as_str())
                    .await
                {
                    Verdict::Approved { always, by } => {
                        if always {
                            note = self.remember(command, &workdir).await;
                        }
                        tracing::info!("exec: running a command {by} approved");
                    }
                    Verdict::Denied { by } => {
                        return ToolOutput::error(format!(
                            "not run: the approver ({by}) denied this command"
                        ))
                    }
                    Verdict::TimedOut => {
                        return ToolOutput::error(format!(
                            "not run: no approver answered within {} s, which counts as a \
                             denial",
                            self.approvals.timeout().as_secs()
                        ))
                    }
                }
            }
        }
        let own_deadline = timeout.map(|t| Instant::now() + t);
        let until = own_deadline.map_or(deadline, |d| d.min(deadline));
        let mut output = match run(&self.policy, command, &workdir, until, &cancel).await {
            Ok(outcome) => report(
                &outcome,
                timeout.filter(|_| own_deadline.is_some_and(|d| d <= deadline)),
            ),
            Err(e) => ToolOutput::error(e),
        };
        output.content.push_str(&note);
        output
    }

    /// Adds an approved-always command to the allowlist; a note for the model when that
    /// failed (the command still runs: it was approved).
    async fn remember(&self, command: &str, workdir: &std::path::Path) -> String {
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

/// The output, a truncation note when the cap was reached, and how the command ended.
fn report(outcome: &Outcome, own_timeout: Option<Duration>) -> ToolOutput {
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
    ToolOutput {
        content: text,
        is_error: outcome.ending != Ending::Exited(0),
    }
}

impl Tool for ExecTool {
    fn name(&self) -> &str {
        "exec"
    }

    fn description(&self) -> &str {
        "Run a shell command (/bin/sh -c) in the workspace. Only the workspace is writable; \
         system directories are read-only; network connections and everything else on the \
         machine are out of reach. Output (stdout and stderr together) is capped at 64 KiB. Background \
         processes end with the command."
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

    use super::{report, Ending, Outcome, OUTPUT_CAP};

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
        let ok = report(&outcome(Ending::Exited(0), b"hi", 2), None);
        assert_eq!(
            (ok.content.as_str(), ok.is_error),
            ("hi\n[exit code 0]", false)
        );
        let failed = report(&outcome(Ending::Exited(2), b"", 0), None);
        assert_eq!(
            (failed.content.as_str(), failed.is_error),
            ("[exit code 2]", true)
        );
        let cut = report(
            &outcome(Ending::Exited(0), &[b'a'; OUTPUT_CAP], 100_000),
            None,
        );
        assert!(cut
            .content
            .contains("[output truncated: the first 65536 of 100000 bytes"));
        let slow = report(
            &outcome(Ending::TimedOut, b"", 0),
            Some(Duration::from_secs(5)),
        );
        assert!(slow.content.contains("timed out after 5 s") && slow.is_error);
        let stopped = report(&outcome(Ending::Cancelled, b"", 0), None);
        assert!(stopped.content.contains("cancelled") && stopped.is_error);
    }
}
