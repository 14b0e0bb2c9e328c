//! One command through the exec API: output capped like a host command's, the deadline and
//! cancellation enforced by the caller removing the container (see the module above).

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::Docker;
use futures_util::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{reason, status};
use crate::confine::{Ending, Outcome, OUTPUT_CAP};

/// Why a command did not run.
#[derive(Debug)]
pub enum ExecError {
    /// The container is gone or stopped (removed by hand, the daemon restarted): a new
    /// container may run the command.
    Stale,
    Failed(String),
}

/// Runs `command` in container `id` as `user` in `workdir`. Returns `TimedOut` at
/// `deadline` and `Cancelled` on `cancel` with the command still running: the caller
/// removes the container, which kills it.
pub async fn exec(
    docker: &Docker,
    id: &str,
    user: &str,
    command: &str,
    workdir: &str,
    deadline: Instant,
    cancel: &CancellationToken,
) -> Result<Outcome, ExecError> {
    let started = Instant::now();
    let options = CreateExecOptions {
        cmd: Some(vec!["/bin/sh", "-c", command]),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        attach_stdin: Some(false),
        tty: Some(false),
        user: Some(user),
        working_dir: Some(workdir),
        env: Some(super::container::ENV.to_vec()),
        privileged: Some(false),
        ..Default::default()
    };
    let created = match docker.create_exec(id, options).await {
        Ok(created) => created,
        Err(e) if matches!(status(&e), Some(404 | 409)) => return Err(ExecError::Stale),
        Err(e) => {
            return Err(ExecError::Failed(format!(
                "cannot start the command in the sandbox: {}",
                reason(&e)
            )))
        }
    };
    let start = StartExecOptions {
        detach: false,
        tty: false,
        output_capacity: Some(OUTPUT_CAP),
    };
    let mut output = match docker.start_exec(&created.id, Some(start)).await {
        Ok(StartExecResults::Attached { output, .. }) => output,
        Ok(StartExecResults::Detached) => {
            return Err(ExecError::Failed(
                "the Docker daemon detached the command's output".to_owned(),
            ))
        }
        Err(e) if matches!(status(&e), Some(404 | 409)) => return Err(ExecError::Stale),
        Err(e) => {
            return Err(ExecError::Failed(format!(
                "cannot start the command in the sandbox: {}",
                reason(&e)
            )))
        }
    };
    let mut kept = Vec::new();
    let mut total: u64 = 0;
    let ending = loop {
        tokio::select! {
            chunk = output.next() => match chunk {
                None => break None,
                Some(Ok(LogOutput::StdOut { message } | LogOutput::StdErr { message }
                    | LogOutput::Console { message })) => {
                    total += message.len() as u64;
                    let room = OUTPUT_CAP.saturating_sub(kept.len());
                    kept.extend_from_slice(&message[..message.len().min(room)]);
                }
                Some(Ok(LogOutput::StdIn { .. })) => {}
                Some(Err(e)) => {
                    return Err(ExecError::Failed(format!(
                        "lost the command's output from the Docker daemon: {}",
                        reason(&e)
                    )))
                }
            },
            () = tokio::time::sleep_until(deadline) => break Some(Ending::TimedOut),
            () = cancel.cancelled() => break Some(Ending::Cancelled),
        }
    };
    let ending = match ending {
        Some(ending) => ending,
        None => Ending::Exited(exit_code(docker, &created.id).await?),
    };
    Ok(Outcome {
        ending,
        output: kept,
        total_bytes: total,
        elapsed: started.elapsed(),
    })
}

/// The exit code of a finished exec. The daemon may close the output a moment before it
/// records the code, so a still-running exec is asked again, for at most a second.
async fn exit_code(docker: &Docker, exec: &str) -> Result<i32, ExecError> {
    for _ in 0..100 {
        let inspect = docker.inspect_exec(exec).await.map_err(|e| {
            ExecError::Failed(format!(
                "cannot read the command's exit code: {}",
                reason(&e)
            ))
        })?;
        match (inspect.running, inspect.exit_code) {
            (Some(true), _) | (_, None) => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            (_, Some(code)) => return Ok(i32::try_from(code).unwrap_or(i32::MAX)),
        }
    }
    Err(ExecError::Failed(
        "the command's output ended but the Docker daemon reports no exit code".to_owned(),
    ))
}

/// Why the processes of a container could not be counted.
#[derive(Debug)]
pub enum ProbeError {
    /// The probe itself could not start or run: the container has no room for a process
    /// (a full pids cgroup refuses the exec), or its shell is broken.
    NoRoom(String),
    /// The daemon did not answer; nothing is known of the container.
    Daemon(String),
}

/// How many processes container `id` holds, the probe included, as its own `/proc` lists
/// them. The probe needs no fork (the shell expands the glob and `echo` is a builtin), so
/// where `pidsLimit` is `RLIMIT_NPROC` (no cgroups) it runs even in a full container; a
/// full pids cgroup refuses to start it ([`ProbeError::NoRoom`]).
pub async fn processes(docker: &Docker, id: &str, user: &str) -> Result<usize, ProbeError> {
    let deadline = Instant::now() + PROBE_TIME;
    let probe = "echo /proc/[0-9]*";
    let outcome = exec(
        docker,
        id,
        user,
        probe,
        super::WORKDIR,
        deadline,
        &CancellationToken::new(),
    )
    .await
    .map_err(|e| match e {
        ExecError::Stale => ProbeError::Daemon("the container is gone".to_owned()),
        ExecError::Failed(e) => ProbeError::Daemon(e),
    })?;
    let text = String::from_utf8_lossy(&outcome.output);
    if outcome.ending != Ending::Exited(0) {
        return Err(ProbeError::NoRoom(format!(
            "`{probe}` ended with {:?}: {}",
            outcome.ending,
            text.trim()
        )));
    }
    let count = text
        .split_ascii_whitespace()
        .filter(|w| w.starts_with("/proc/"))
        .count();
    if count == 0 {
        return Err(ProbeError::NoRoom(format!(
            "`{probe}` listed no process: {}",
            text.trim()
        )));
    }
    Ok(count)
}

/// How long counting a container's processes may take (a warm exec takes tens of ms).
const PROBE_TIME: std::time::Duration = std::time::Duration::from_secs(10);
