//! How the build talks to the person (or CI log) watching it: one line or spinner per stage,
//! the command being run, and a log file per stage with every command's full output.
//!
//! On a terminal each stage is an indicatif spinner whose message is the current step; when
//! stderr is not a terminal (CI) the same information is printed as plain lines, so logs stay
//! readable and free of control characters.

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use xshell::Cmd;

/// One stage's progress display and its command log.
pub struct StageProgress {
    name: &'static str,
    bar: Option<ProgressBar>,
    log_path: PathBuf,
    log: File,
    started: Instant,
}

impl StageProgress {
    pub fn start(name: &'static str, log_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(log_dir)
            .with_context(|| format!("cannot create log directory {}", log_dir.display()))?;
        let log_path = log_dir.join(format!("{name}.log"));
        let log = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let bar = if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template(
                    "{spinner:.cyan} {prefix:<10.bold} {elapsed:>4} {wide_msg}",
                )
                .expect("static template is valid"),
            );
            bar.set_prefix(name);
            bar.enable_steady_tick(Duration::from_millis(120));
            Some(bar)
        } else {
            eprintln!("==> {name}");
            None
        };
        Ok(Self {
            name,
            bar,
            log_path,
            log,
            started: Instant::now(),
        })
    }

    /// Shows what the stage is doing now.
    pub fn step(&mut self, message: impl AsRef<str>) {
        let message = message.as_ref();
        let at = self.started.elapsed().as_secs_f64();
        let _ = writeln!(self.log, "## [{at:7.1} s] {message}");
        match &self.bar {
            Some(bar) => bar.set_message(message.to_owned()),
            None => eprintln!("    {message}"),
        }
    }

    /// Runs an external command with its output captured into the stage log. On failure the
    /// error names the stage, the exact command and the last lines it printed.
    pub fn run(&mut self, cmd: Cmd<'_>) -> Result<String> {
        let shown = cmd.to_string();
        self.step(format!("$ {}", shorten(&shown, 160)));
        let output = cmd
            .quiet()
            .ignore_status()
            .output()
            .with_context(|| format!("stage `{}`: cannot start `{shown}`", self.name))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        self.check(&shown, output.status, &stdout, &output.stderr)?;
        Ok(stdout)
    }

    /// Like [`run`](Self::run), but the command's standard output goes to the file `to`
    /// (created or truncated) instead of the log: for streams as large as a disk image, which
    /// must not pass through memory. Standard error goes to the stage log as usual.
    pub fn run_to_file(&mut self, cmd: Cmd<'_>, to: &Path) -> Result<()> {
        let shown = format!("{cmd} > {}", to.display());
        self.step(format!("$ {}", shorten(&shown, 160)));
        let file = File::create(to).with_context(|| format!("cannot create {}", to.display()))?;
        // tidy: runner (xshell cannot send a command's stdout to a file; this is its own command, its stdin null as xshell's)
        let mut command = std::process::Command::from(cmd);
        let output = command
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(Stdio::piped())
            .output()
            .with_context(|| format!("stage `{}`: cannot start `{shown}`", self.name))?;
        self.check(&shown, output.status, "", &output.stderr)
    }

    /// Appends a finished command's output to the log; an error naming the stage, the command
    /// and its last lines of output when it failed.
    fn check(
        &mut self,
        shown: &str,
        status: ExitStatus,
        stdout: &str,
        stderr: &[u8],
    ) -> Result<()> {
        let stderr = String::from_utf8_lossy(stderr);
        let _ = self.log.write_all(stdout.as_bytes());
        let _ = self.log.write_all(stderr.as_bytes());
        if !status.success() {
            let tail: Vec<&str> = stderr
                .lines()
                .chain(stdout.lines())
                .filter(|line| !line.trim().is_empty())
                .collect();
            let tail = tail[tail.len().saturating_sub(15)..].join("\n    ");
            bail!(
                "stage `{}`: command failed ({status}):\n  {shown}\n  last output:\n    {tail}\n  full log: {}",
                self.name,
                self.log_path.display()
            );
        }
        Ok(())
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub fn finish(self, note: &str) -> Duration {
        let took = self.started.elapsed();
        let line = format!("{:<10} {:>6.1} s  {note}", self.name, took.as_secs_f64());
        match self.bar {
            Some(bar) => bar.finish_with_message(note.to_owned()),
            None => eprintln!("    done: {line}"),
        }
        took
    }

    pub fn fail(self) {
        if let Some(bar) = self.bar {
            bar.abandon_with_message(format!("FAILED (log: {})", self.log_path.display()));
        }
    }
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let cut: String = text.chars().take(max).collect();
        format!("{cut}…")
    }
}

/// `1.2 GiB`-style sizes for the summary.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_command_is_named_with_its_output() {
        let dir = tempfile::tempdir().unwrap();
        let sh = xshell::Shell::new().unwrap();
        let mut stage = StageProgress::start("demo", dir.path()).unwrap();
        let err = stage
            .run(xshell::cmd!(sh, "sh -c 'echo broken-thing >&2; exit 3'"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("stage `demo`"), "{err}");
        assert!(err.contains("sh -c"), "{err}");
        assert!(err.contains("broken-thing"), "{err}");
        let log = std::fs::read_to_string(dir.path().join("demo.log")).unwrap();
        assert!(log.contains("broken-thing"));
    }

    /// The xz artifact's path: stdout lands in the file, stderr and the command in the log, and
    /// a failure is named like any other command's.
    #[test]
    fn a_command_streams_its_output_into_a_file_and_is_logged() {
        let dir = tempfile::tempdir().unwrap();
        let sh = xshell::Shell::new().unwrap();
        let mut stage = StageProgress::start("demo", dir.path()).unwrap();
        let to = dir.path().join("out.bin");
        stage
            .run_to_file(
                xshell::cmd!(sh, "sh -c 'echo pay\"\"load; echo note-on-stderr >&2'"),
                &to,
            )
            .unwrap();
        assert_eq!(std::fs::read_to_string(&to).unwrap(), "payload\n");
        let log = std::fs::read_to_string(dir.path().join("demo.log")).unwrap();
        assert!(log.contains("$ sh -c"), "{log}");
        assert!(log.contains("note-on-stderr"), "{log}");
        assert!(!log.contains("payload"), "{log}");
        let err = stage
            .run_to_file(xshell::cmd!(sh, "sh -c 'echo broken-xz >&2; exit 1'"), &to)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("stage `demo`") && err.contains("broken-xz"),
            "{err}"
        );
        assert!(err.contains(&format!("> {}", to.display())), "{err}");
    }

    #[test]
    fn sizes_read_like_a_person_writes_them() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(3 << 29), "1.5 GiB");
    }
}
