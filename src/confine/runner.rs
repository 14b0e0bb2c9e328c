//! Host commands run by a process of their own unit: the gateway hands each command to
//! `clawfort exec-runner` over a Unix socket instead of forking it itself.
//!
//! Why: on the appliance the gateway's unit denies the system calls confinement needs
//! (`setrlimit`, Landlock's, `seccomp`) and shares one cgroup, one `TasksMax=` and one
//! `MemoryMax=` with everything it forks, so a fork bomb or a memory hog run on the host
//! would starve the gateway itself. `clawfort-exec.socket` (`Accept=yes`) starts one
//! `clawfort-exec@.service` instance per connection: a fresh cgroup with its own limits,
//! a file system view holding the workspace and not the state directory, no IP network and
//! none of the gateway's environment, ended as a whole (every process of it) when the
//! command is done or the gateway hangs up. Inside it the command is confined exactly as a
//! direct run is ([`super::run`]: Landlock, rlimits, the socket filter), so the unit is a
//! second wall, not the only one.
//!
//! The wire format, one connection per command:
//! - the gateway writes one JSON line, a [`Request`] (the confinement [`Policy`], the
//!   command, its workdir and how long it may run), and keeps the connection open; closing
//!   it (a `/stop`, a dropped turn) cancels the command;
//! - the runner answers one JSON line, a [`Reply`], followed for `done` by exactly
//!   `output_len` bytes of output.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Ending, Outcome, Policy, OUTPUT_CAP};

/// The environment variable naming the runner's socket (`unix:<path>` or a path); set in the
/// appliance's gateway unit. Without it the gateway runs host commands itself.
pub const ENV: &str = "CLAWFORT_EXEC_RUNNER";

/// The longest JSON line either side reads (a request: a command and its policy; a reply:
/// a few numbers or a refusal), never near this.
const LINE_CAP: u64 = 1 << 20;

/// How long after the command's own deadline the gateway still waits for the runner's reply
/// (its process group is killed at the deadline; the output pipe drains for half a second).
const GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub policy: Policy,
    pub command: String,
    pub workdir: PathBuf,
    /// Milliseconds the command may run from when the runner reads this.
    pub timeout_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Done {
        ending: Ending,
        total_bytes: u64,
        elapsed_ms: u64,
        output_len: usize,
    },
    /// The command did not start: a refusal (no Landlock, a bad request) in words.
    Refused { error: String },
}

/// The runner's socket from [`ENV`], when it is set.
pub fn socket_from_env() -> Option<PathBuf> {
    let value = std::env::var_os(ENV)?;
    let value = value.to_string_lossy();
    let path = value.strip_prefix("unix:").unwrap_or(&value);
    (!path.is_empty()).then(|| PathBuf::from(path))
}

/// The gateway's side: runs `command` through the runner listening on `socket`, with the
/// meaning of [`super::run`]. Cancelling (or dropping the future) closes the connection,
/// which ends the command and its unit.
pub async fn run_via(
    socket: &Path,
    policy: &Policy,
    command: &str,
    workdir: &Path,
    deadline: Instant,
    cancel: &CancellationToken,
) -> Result<Outcome, String> {
    let started = Instant::now();
    let request = Request {
        policy: policy.clone(),
        command: command.to_owned(),
        workdir: workdir.to_owned(),
        timeout_ms: deadline
            .saturating_duration_since(started)
            .as_millis()
            .try_into()
            .unwrap_or(u64::MAX),
    };
    let exchange = async {
        let mut stream = UnixStream::connect(socket).await.map_err(|e| {
            format!(
                "cannot reach the command runner at {} ({e}); on the appliance it is \
                 clawfort-exec.socket, which also refuses while its MaxConnections= (8) \
                 commands run: `systemctl status clawfort-exec.socket`",
                socket.display()
            )
        })?;
        let mut line = serde_json::to_vec(&request).map_err(|e| e.to_string())?;
        line.push(b'\n');
        stream
            .write_all(&line)
            .await
            .map_err(|e| format!("cannot send the command to the runner: {e}"))?;
        let mut reader = BufReader::new(stream);
        let reply: Reply = read_line(&mut reader, LINE_CAP)
            .await
            .map_err(|e| format!("the command runner broke off: {e}"))?;
        match reply {
            Reply::Refused { error } => Err(error),
            Reply::Done {
                ending,
                total_bytes,
                elapsed_ms,
                output_len,
            } => {
                if output_len > OUTPUT_CAP {
                    return Err(format!(
                        "the command runner sent {output_len} bytes of output, more than the \
                         {OUTPUT_CAP} it may"
                    ));
                }
                let mut output = vec![0; output_len];
                reader
                    .read_exact(&mut output)
                    .await
                    .map_err(|e| format!("the command runner broke off in the output: {e}"))?;
                Ok(Outcome {
                    ending,
                    output,
                    total_bytes,
                    elapsed: Duration::from_millis(elapsed_ms),
                })
            }
        }
    };
    let ended = |ending| Outcome {
        ending,
        output: Vec::new(),
        total_bytes: 0,
        elapsed: started.elapsed(),
    };
    tokio::select! {
        result = exchange => result,
        () = cancel.cancelled() => Ok(ended(Ending::Cancelled)),
        () = tokio::time::sleep_until(deadline + GRACE) => Ok(ended(Ending::TimedOut)),
    }
}

/// One JSON line of at most `cap` bytes.
async fn read_line<T: serde::de::DeserializeOwned>(
    reader: &mut (impl tokio::io::AsyncBufRead + Unpin),
    cap: u64,
) -> Result<T, String> {
    let mut line = Vec::new();
    let mut limited = reader.take(cap);
    limited
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| e.to_string())?;
    if line.last() != Some(&b'\n') {
        return Err(if line.is_empty() {
            "the connection closed before a message".into()
        } else {
            format!("an unterminated message of {} bytes", line.len())
        });
    }
    serde_json::from_slice(&line).map_err(|e| format!("a malformed message: {e}"))
}

/// The runner's side (`clawfort exec-runner`): the connection is standard input and output,
/// as systemd's `Accept=yes` hands it over. Reads one request, runs it confined, answers,
/// and returns; a closed connection before the end cancels the command.
pub fn serve() -> anyhow::Result<()> {
    use std::os::fd::FromRawFd;
    // SAFETY: fd 0 is the accepted connection (StandardInput=socket), owned by nobody else
    // in this process; fd 1 is the same socket and stays open for the log's sake.
    let std_stream = unsafe { std::os::unix::net::UnixStream::from_raw_fd(0) };
    std_stream.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let stream = UnixStream::from_std(std_stream)?;
        let (read, mut write) = stream.into_split();
        let mut reader = BufReader::new(read);
        let (reply, output) = match read_line::<Request>(&mut reader, LINE_CAP).await {
            Err(e) => (
                Reply::Refused {
                    error: format!("a bad request: {e}"),
                },
                Vec::new(),
            ),
            Ok(request) => answer(request, reader).await,
        };
        let mut bytes = serde_json::to_vec(&reply)?;
        bytes.push(b'\n');
        bytes.extend_from_slice(&output);
        // The gateway may have hung up (a cancel): nothing is left to tell it.
        let _ = write.write_all(&bytes).await;
        let _ = write.shutdown().await;
        Ok(())
    })
}

/// Runs `request`, cancelled when the other side closes the connection.
async fn answer(
    request: Request,
    mut rest: BufReader<tokio::net::unix::OwnedReadHalf>,
) -> (Reply, Vec<u8>) {
    if let Err(why) = request.policy.check() {
        let error = format!("a bad request: {why}");
        return (Reply::Refused { error }, Vec::new());
    }
    if !request.policy.workspace().is_dir() {
        let error = format!(
            "the workspace {} is not visible to the command runner; its unit \
             (clawfort-exec@.service) maps only the appliance's workspace: add a BindPaths= \
             drop-in for this one",
            request.policy.workspace().display()
        );
        return (Reply::Refused { error }, Vec::new());
    }
    let cancel = CancellationToken::new();
    // Nothing more is sent after the request: any byte, the end or an error means the
    // gateway is gone.
    let watch = tokio::spawn({
        let cancel = cancel.clone();
        async move {
            let mut byte = [0u8; 1];
            let _ = rest.read(&mut byte).await;
            cancel.cancel();
        }
    });
    let deadline = Instant::now() + Duration::from_millis(request.timeout_ms);
    let outcome = super::run(
        &request.policy,
        &request.command,
        &request.workdir,
        deadline,
        &cancel,
    )
    .await;
    watch.abort();
    match outcome {
        Ok(o) => (
            Reply::Done {
                ending: o.ending,
                total_bytes: o.total_bytes,
                elapsed_ms: o.elapsed.as_millis().try_into().unwrap_or(u64::MAX),
                output_len: o.output.len(),
            },
            o.output,
        ),
        Err(error) => (Reply::Refused { error }, Vec::new()),
    }
}
