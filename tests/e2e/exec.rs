//! Running host commands with a hard time limit, optionally inside the test namespace.
//!
//! Every command goes through coreutils' `timeout`, so no probe can hang the suite, whatever
//! the guest does. A thread can also move itself into the namespace (`setns`) for the native
//! port scanner and TCP checks, which must choose their own source address.

use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// What a finished command printed.
pub struct Output {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// The command's output, or an error quoting its stderr.
    pub fn ok(self, what: &str) -> Result<String> {
        if self.success {
            Ok(self.stdout)
        } else {
            bail!(
                "{what} failed (exit {}): {}",
                self.code.map_or("by signal".to_owned(), |c| c.to_string()),
                last_lines(&self.stderr, 3)
            )
        }
    }
}

/// Runs `argv` with a time limit, inside `netns` when given, feeding `stdin`.
pub fn run(
    netns: Option<&str>,
    argv: &[&str],
    stdin: Option<&[u8]>,
    limit: Duration,
) -> Result<Output> {
    let mut command = Command::new("timeout");
    command.args(["--kill-after=5", &format!("{}", limit.as_secs().max(1))]);
    if let Some(netns) = netns {
        command.args(["ip", "netns", "exec", netns]);
    }
    command
        .args(argv)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot run `{}`", argv.join(" ")))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A command that exits without reading its input is not an error here.
        let _ = pipe.write_all(input);
    }
    let output = child.wait_with_output()?;
    if output.status.code() == Some(124) {
        bail!(
            "`{}` did not finish within {} s",
            argv.join(" "),
            limit.as_secs()
        );
    }
    Ok(Output {
        success: output.status.success(),
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// Runs `f` on a thread that has joined network namespace `netns`.
pub fn in_netns<T: Send + 'static>(
    netns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let path = format!("/run/netns/{netns}");
    let file =
        std::fs::File::open(&path).with_context(|| format!("cannot open namespace {path}"))?;
    std::thread::spawn(move || -> Result<T> {
        rustix::thread::move_into_link_name_space(
            file.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .context("setns into the test namespace failed (needs root)")?;
        Ok(f())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the thread inside namespace {netns} panicked"))?
}

/// How a TCP port answered a connection attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortState {
    Open,
    /// Refused: a reset came back (or an ICMP port-unreachable, which the kernel reports the
    /// same way).
    Closed,
    /// No answer within the time limit: a firewall dropped the attempt.
    Filtered,
}

/// One connection attempt from `source` (an address inside the current thread's namespace).
///
/// Only a connection, a refusal and silence say something about the port. Any other error
/// (no route or no neighbour on our side, an unreachable host, no free descriptor or source
/// port) means the attempt never tested the port, so it is returned for the caller to report
/// rather than counted as filtered.
pub async fn connect(
    source: SocketAddr,
    target: SocketAddr,
    limit: Duration,
) -> std::io::Result<PortState> {
    let socket = if target.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.bind(source)?;
    match tokio::time::timeout(limit, socket.connect(target)).await {
        Ok(Ok(_stream)) => Ok(PortState::Open),
        Ok(Err(err)) if err.kind() == std::io::ErrorKind::ConnectionRefused => {
            Ok(PortState::Closed)
        }
        Ok(Err(err)) => Err(err),
        Err(_elapsed) => Ok(PortState::Filtered),
    }
}

/// A single-threaded async runtime for the calling (namespaced) thread: every socket it makes
/// is created on this thread, hence in its namespace.
pub fn local_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread tokio runtime always builds")
}

pub fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.trim().lines().collect();
    lines[lines.len().saturating_sub(count)..].join(" | ")
}

/// The value of the first `key=value` line of a probe script's output (`echo key=$(...)`), trimmed.
pub fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|line| line.trim_start().strip_prefix(key)?.strip_prefix('='))
        .map(str::trim)
}

/// Quotes `text` as one word for a POSIX shell.
pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}
