//! How the build talks to the person (or CI log) watching it: one line or spinner per stage,
//! the command being run, and a log file per stage with every command's full output.
//!
//! On a terminal each stage is an indicatif spinner whose message is the current step; when
//! stderr is not a terminal (CI) the same information is printed as plain lines, so logs stay
//! readable and free of control characters.

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
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
        let stderr = String::from_utf8_lossy(&output.stderr);
        let _ = self.log.write_all(stdout.as_bytes());
        let _ = self.log.write_all(stderr.as_bytes());
        if !output.status.success() {
            let tail: Vec<&str> = stderr
                .lines()
                .chain(stdout.lines())
                .filter(|line| !line.trim().is_empty())
                .collect();
            let tail = tail[tail.len().saturating_sub(15)..].join("\n    ");
            bail!(
                "stage `{}`: command failed ({}):\n  {shown}\n  last output:\n    {tail}\n  full log: {}",
                self.name,
                output.status,
                self.log_path.display()
            );
        }
        Ok(stdout)
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

    #[test]
    fn sizes_read_like_a_person_writes_them() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(3 << 29), "1.5 GiB");
    }
}
