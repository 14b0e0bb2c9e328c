//! Spawning, watching and killing one confined command.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use rustix::process::{Pid, Resource, Rlimit, Signal};
use tokio::io::AsyncReadExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{environment, landlock, Policy, OUTPUT_CAP};

/// How long the output pipe is still read once the command's process group is killed: only
/// a process that left the group (`setsid`) can hold it open longer.
const DRAIN: Duration = Duration::from_millis(500);

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Ending {
    Exited(i32),
    /// Killed by a signal it did not get from us (SIGXCPU, SIGSEGV...).
    Signaled(i32),
    /// Its deadline passed; its process group was killed.
    TimedOut,
    /// The turn was cancelled (`/stop`); its process group was killed.
    Cancelled,
}

/// What a command produced.
#[derive(Debug)]
pub struct Outcome {
    pub ending: Ending,
    /// stdout and stderr interleaved as written, at most [`OUTPUT_CAP`] bytes.
    pub output: Vec<u8>,
    /// Every byte written, kept or not.
    pub total_bytes: u64,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn truncated(&self) -> bool {
        self.total_bytes > self.output.len() as u64
    }
}

/// Runs `/bin/sh -c command` in `workdir` under `policy` until it exits, `deadline` passes
/// or `cancel` fires. `Err` is a refusal or a failure to start, in words for the model and
/// the owner. Dropping the future kills the command's process group.
pub async fn run(
    policy: &Policy,
    command: &str,
    workdir: &Path,
    deadline: Instant,
    cancel: &CancellationToken,
) -> Result<Outcome, String> {
    let support = super::available().map_err(|why| format!("host execution is refused: {why}"))?;
    let started = Instant::now();
    let tmp = tempfile::Builder::new()
        .prefix("clawfort-exec-")
        .tempdir()
        .map_err(|e| format!("cannot create the command's temporary directory: {e}"))?;
    let ruleset = landlock::build(support, &policy.rules(tmp.path()), &policy.connect_ports)?;
    let sockets = super::sockets::filter()?;
    let (reader, writer) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| format!("cannot create a pipe: {e}"))?;
    let nproc = user_tasks().saturating_add(policy.limits.extra_processes);
    // Never above the gateway's own hard limits, which an unprivileged child cannot raise.
    let limits = [
        (Resource::Cpu, policy.limits.cpu_secs),
        (Resource::Data, policy.limits.data_bytes),
        (Resource::Nproc, nproc),
        (Resource::Fsize, policy.limits.file_bytes),
        (Resource::Nofile, policy.limits.open_files),
        (Resource::Core, 0),
    ]
    .map(|(resource, limit)| {
        let hard = rustix::process::getrlimit(resource).maximum;
        (resource, hard.map_or(limit, |hard| hard.min(limit)))
    });

    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .env_clear()
        .envs(environment(policy.workspace(), tmp.path()))
        .current_dir(workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(
            writer
                .try_clone()
                .map_err(|e| format!("cannot duplicate a pipe: {e}"))?,
        ))
        .stderr(Stdio::from(writer))
        .kill_on_drop(true);
    let mut ruleset = Some(ruleset);
    // SAFETY: the closure runs in the forked child before exec and makes system calls
    // only: no allocation, no lock (the Landlock and seccompiler crates' success paths
    // allocate nothing, and the errors built here are raw OS errors).
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::setsid()?;
            for (resource, limit) in limits {
                let limit = Rlimit {
                    current: Some(limit),
                    maximum: Some(limit),
                };
                rustix::process::setrlimit(resource, limit)?;
            }
            let status = ruleset
                .take()
                .ok_or_else(|| io::Error::from_raw_os_error(libc::EPERM))?
                .restrict_self()
                .map_err(|_| io::Error::from_raw_os_error(libc::EPERM))?;
            if status.ruleset != ::landlock::RulesetStatus::FullyEnforced || !status.no_new_privs {
                return Err(io::Error::from_raw_os_error(libc::EPERM));
            }
            seccompiler::apply_filter(sockets)
                .map_err(|_| io::Error::from_raw_os_error(libc::EPERM))?;
            Ok(())
        });
    }
    let spawned = cmd.spawn();
    // The parent's copies of the pipe's write end and of the ruleset go with the command,
    // so the pipe ends when the command's last process closes it.
    drop(cmd);
    let mut child = spawned.map_err(|e| format!("cannot start the confined command: {e}"))?;
    let mut group = Group(child.id().and_then(|id| Pid::from_raw(id as i32)));

    let captured = Mutex::new(Capture::default());
    let mut reading = std::pin::pin!(capture(reader, &captured));
    let mut read_all = false;
    let ending = loop {
        tokio::select! {
            () = &mut reading, if !read_all => read_all = true,
            status = child.wait() => {
                let status = status.map_err(|e| format!("cannot wait for the command: {e}"))?;
                break match (status.code(), status.signal()) {
                    (Some(code), _) => Ending::Exited(code),
                    (None, Some(signal)) => Ending::Signaled(signal),
                    (None, None) => Ending::Signaled(0),
                };
            }
            () = tokio::time::sleep_until(deadline) => break Ending::TimedOut,
            () = cancel.cancelled() => break Ending::Cancelled,
        }
    };
    // The whole group, whatever the ending: background processes of a finished command too.
    group.kill();
    if matches!(ending, Ending::TimedOut | Ending::Cancelled) {
        let _ = child.wait().await;
    }
    if !read_all {
        let _ = tokio::time::timeout(DRAIN, reading).await;
    }
    drop(tmp);
    let Capture { output, total } =
        std::mem::take(&mut *captured.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(Outcome {
        ending,
        output,
        total_bytes: total,
        elapsed: started.elapsed(),
    })
}

/// The command's process group (its id is the command's pid: the child calls `setsid`).
/// Killed on drop as well, so a dropped tool future leaves nothing running.
struct Group(Option<Pid>);

impl Group {
    /// Once: SIGKILL to every process of the group. ESRCH when none is left. While any
    /// process of the command is alive the kernel keeps its group id from being reused, so
    /// the signal cannot reach anyone else's group.
    fn kill(&mut self) {
        if let Some(pid) = self.0.take() {
            let _ = rustix::process::kill_process_group(pid, Signal::KILL);
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

#[derive(Default)]
struct Capture {
    output: Vec<u8>,
    total: u64,
}

/// Reads the command's output pipe to its end, keeping the first [`OUTPUT_CAP`] bytes and
/// counting the rest (reading on keeps the command from blocking on a full pipe).
async fn capture(reader: OwnedFd, into: &Mutex<Capture>) {
    let Ok(mut pipe) = tokio::net::unix::pipe::Receiver::from_owned_fd(reader) else {
        return;
    };
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n @ 1..) = pipe.read(&mut buf).await {
        let mut c = into.lock().unwrap_or_else(|e| e.into_inner());
        let room = OUTPUT_CAP.saturating_sub(c.output.len()).min(n);
        c.output.extend_from_slice(&buf[..room]);
        c.total += n as u64;
    }
}

/// Tasks (processes and threads) of this user now, the count `RLIMIT_NPROC` is checked
/// against: one `stat` of `/proc/<pid>/task` per process, whose link count is two plus its
/// threads. Processes whose `/proc` entry another user owns (non-dumpable ones) are missed,
/// which only lowers the limit by as many.
fn user_tasks() -> u64 {
    use std::os::unix::fs::MetadataExt;
    let uid = rustix::process::geteuid().as_raw();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.file_name().as_encoded_bytes()[0].is_ascii_digit())
        .filter_map(|e| std::fs::metadata(e.path().join("task")).ok())
        .filter(|m| m.uid() == uid)
        .map(|m| m.nlink().saturating_sub(2))
        .sum()
}
