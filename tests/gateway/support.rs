//! Test support: a real `clawfort gateway` process on an ephemeral loopback port, a raw
//! HTTP/1.1 client (so tests control every header and byte), and CLI runs.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "test-token-0123456789abcdef0123456789";
pub const BIN: &str = env!("CARGO_BIN_EXE_clawfort");

/// A state dir with `.env` holding `TOKEN` and `openclaw.json` holding `config`.
pub fn state_dir(config: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        format!("OPENCLAW_GATEWAY_TOKEN={TOKEN}\n"),
    )
    .unwrap();
    if let Some(config) = config {
        std::fs::write(dir.path().join("openclaw.json"), config).unwrap();
    }
    dir
}

/// Appends `lines` (`NAME=value` lines, each ending in a newline) to `dir`'s `.env`, where
/// the gateway reads the secrets a config names as `${NAME}`.
#[allow(dead_code)] // used by the agent, egress, setup and confine tests, which share this file
pub fn append_env(dir: &Path, lines: &str) {
    let env = dir.join(".env");
    let mut text = std::fs::read_to_string(&env).unwrap();
    text.push_str(lines);
    std::fs::write(&env, text).unwrap();
}

/// Runs the CLI against `dir`, isolated from the caller's environment.
pub fn cli(dir: &Path, args: &[&str]) -> Output {
    command(dir).args(args).output().unwrap()
}

pub fn command(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("--config")
        .arg(dir.join("openclaw.json"))
        .env_remove("OPENCLAW_GATEWAY_TOKEN")
        .env_remove("OPENCLAW_STATE_DIR")
        .env_remove("OPENCLAW_CONFIG_PATH")
        .env_remove("JOURNAL_STREAM")
        // The host's security events feed: the test's own, never the machine's.
        .env(
            clawfort::events::HOST_FEED_ENV,
            dir.join("host-events.jsonl"),
        )
        .env("HOME", dir);
    cmd
}

pub struct Gateway {
    child: Child,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    log: Arc<Mutex<Vec<String>>>,
}

impl Gateway {
    /// Starts a gateway with `config` (None: no config file) and waits until it listens.
    pub fn start(config: Option<&str>) -> Self {
        Self::start_in(state_dir(config))
    }

    pub fn start_in(dir: tempfile::TempDir) -> Self {
        Self::start_with_env(dir, &[])
    }

    /// Starts a gateway in `dir` with extra environment variables (the test-only deadlines).
    pub fn start_with_env(dir: tempfile::TempDir, env: &[(&str, &str)]) -> Self {
        let mut child = command(dir.path())
            .envs(env.iter().copied())
            .args(["gateway", "--port", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let addr: SocketAddr = rest.split_whitespace().next().unwrap().parse().unwrap();
                    let _ = tx.send(addr);
                }
                lines.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!("gateway did not start: {:?}", log.lock().unwrap());
            }
        };
        Self {
            child,
            addr,
            dir,
            log,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Kills the gateway (SIGKILL, like a crash) and starts a new one on the same state
    /// directory.
    #[allow(dead_code)] // used by the agent tests, which share this file
    pub fn restart(self) -> Self {
        Self::start_in(self.crash())
    }

    /// Kills the gateway (SIGKILL, like a crash) and hands back its state directory, for a
    /// test to look at (or damage) before it starts a gateway on it again.
    #[allow(dead_code)] // used by the agent tests, which share this file
    pub fn crash(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        drop(self);
        dir
    }

    /// Log lines so far containing `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    /// Waits (bounded) until the log has at least `n` lines containing `needle`.
    pub fn wait_log(&self, needle: &str, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let lines = self.log_lines(needle);
            if lines.len() >= n || Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn get(&self, path: &str, token: Option<&str>) -> Response {
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        self.raw(&format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n"
        ))
    }

    pub fn post(&self, path: &str, body: &str) -> Response {
        self.raw(&format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ))
    }

    /// Sends `text` as one message on the webhook channel; returns the JSON answer.
    pub fn message(&self, body: serde_json::Value) -> serde_json::Value {
        let r = self.post("/api/messages", &body.to_string());
        assert_eq!(r.status, 200, "{body}: {}", r.body);
        r.json()
    }

    pub fn raw(&self, request: &str) -> Response {
        raw(self.addr, request.as_bytes())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

pub fn raw(addr: SocketAddr, request: &[u8]) -> Response {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    parse(&bytes)
}

pub fn parse(bytes: &[u8]) -> Response {
    let text = String::from_utf8_lossy(bytes).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    Response {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// The path of the crash-test writer's store.
pub fn credentials(dir: &Path) -> PathBuf {
    dir.join("credentials")
}
