//! A real `clawfort egress --listen <socket>` process (with `--allow-file`, or deriving its
//! list from an `openclaw.json`), its log, and raw exchanges with it.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `clawfort egress`, in a temporary directory that holds its socket and files.
pub struct Proxy {
    child: Child,
    dir: tempfile::TempDir,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The proxy command, isolated from the caller's environment.
/// The gateway tests' isolation, plus systemd's socket-passing variables.
pub fn command(dir: &Path) -> Command {
    let mut cmd = crate::gateway_support::command(dir);
    cmd.env_remove("LISTEN_FDS").env_remove("LISTEN_PID");
    cmd
}

/// Runs `clawfort egress` with `config` and `args` to completion (for start failures).
pub fn run(config: &str, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("openclaw.json"), config).unwrap();
    command(dir.path())
        .arg("egress")
        .args(args)
        .output()
        .unwrap()
}

/// The allow file's name in a proxy's directory.
pub const ALLOW_FILE: &str = "egress-allow.json";

/// An allow file (version 1) listing `targets`, as `clawfort egress sync` writes it.
pub fn allow_file(targets: &[&str]) -> String {
    serde_json::json!({ "version": 1, "allow": targets, "source": "a test" }).to_string()
}

impl Proxy {
    /// `clawfort egress` without `--allow-file`: the destinations `config` (its
    /// `openclaw.json`) names; there is no `.env`, so it must start without the secrets the
    /// config refers to.
    pub fn start(config: &str) -> Self {
        Self::start_with_env(config, &[])
    }

    /// `start` with extra environment variables (the test-only limits).
    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Self {
        Self::spawn(&[("openclaw.json", config)], &[], env)
    }

    /// `clawfort egress --allow-file <dir>/egress-allow.json` as the appliance's unit runs
    /// it: no `--config`, and an environment without `HOME` (a `DynamicUser=` service has
    /// none), with `files` (name, content) written into its directory first (mode 644): the
    /// allow file, an `openclaw.json` it must ignore, or neither.
    pub fn start_with_allow_file(files: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let allow = dir.path().join(ALLOW_FILE).display().to_string();
        let mut unit = Command::new(crate::gateway_support::BIN);
        unit.env_clear().env("NO_COLOR", "1");
        Self::spawn_in(dir, files, unit, &["--allow-file", &allow], &[])
    }

    fn spawn(files: &[(&str, &str)], args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cmd = command(dir.path());
        Self::spawn_in(dir, files, cmd, args, env)
    }

    /// Starts the proxy and waits (bounded) until its socket accepts connections.
    fn spawn_in(
        dir: tempfile::TempDir,
        files: &[(&str, &str)],
        mut cmd: Command,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        for (name, content) in files {
            let path = dir.path().join(name);
            std::fs::write(&path, content).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let socket = dir.path().join("egress.sock");
        let mut child = cmd
            .envs(env.iter().copied())
            .arg("egress")
            .args(args)
            .arg("--listen")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        // Ready once it says so (a test connection would take a connection slot).
        let deadline = Instant::now() + Duration::from_secs(10);
        let listening = format!("listening on {}", socket.display());
        while !log.lock().unwrap().iter().any(|l| l.contains(&listening)) {
            if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
                let _ = child.kill();
                panic!("the proxy did not start: {:?}", log.lock().unwrap());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, dir, log }
    }

    /// The proxy's directory (its socket, allow file and config).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("egress.sock")
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

    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits (bounded) until the log has at least `n` lines containing `needle`.
    pub fn wait_log(&self, needle: &str, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines = self.log_lines(needle);
            if lines.len() >= n || Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A connection to the proxy with a read timeout, so no test can hang on it.
    pub fn connect(&self) -> UnixStream {
        let stream = UnixStream::connect(self.socket()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
    }

    /// Sends `request` and reads the answer until the proxy closes the connection.
    pub fn exchange(&self, request: &[u8]) -> String {
        let mut stream = self.connect();
        // The proxy may answer and close before reading everything (an oversized head).
        let _ = stream.write_all(request);
        read_to_close(&mut stream)
    }
}

/// Everything until the peer closes (or the read timeout).
pub fn read_to_close(stream: &mut UnixStream) -> String {
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// Reads an answer head (up to the blank line) byte by byte, leaving the tunnel's bytes.
pub fn read_head(stream: &mut UnixStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// The status code of an answer.
pub fn status(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"))
}

/// A config naming one provider at `base_url`, with its key and the gateway token as
/// unresolvable references.
pub fn provider_config(base_url: &str) -> String {
    format!(
        r#"{{
          gateway: {{ auth: {{ token: "${{OPENCLAW_GATEWAY_TOKEN}}" }} }},
          models: {{ providers: {{ fake: {{
            api: "openai-completions", baseUrl: "{base_url}", apiKey: "${{EGRESS_TEST_NO_SUCH_KEY}}",
          }} }} }},
        }}"#
    )
}
