//! Where log lines go, and `clawfort logs`.
//!
//! Every log line, wherever it goes, is formatted whole, passed through the gateway's
//! [`Redactor`] and written as exactly one line (a line break inside a message is written as
//! `\n`): no code path can log a configured secret or a pasted key, and no text a client
//! controls can forge a second line for a log reader. The redactor knows the key shapes from the
//! start and the configured secrets once `clawfort gateway` has read them ([`redact_with`]).
//!
//! Under systemd (stderr is the journal stream `JOURNAL_STREAM` names) the gateway writes
//! plain messages to stderr with a `<N>` priority prefix (sd-daemon(3)), so journald files
//! each line as one entry of the right priority, which `journalctl -u clawfort` reads. Otherwise it logs to stderr *and* appends to
//! `~/.openclaw/logs/gateway.log`, which `clawfort logs` reads when there is no
//! `clawfort.service`. The file never grows past `ROTATE_AT`: a line that would take it past
//! is written to a fresh file after renaming the full one to `gateway.log.1` (replacing the
//! previous one), at start and while running, so the two take at most twice `ROTATE_AT`.
//! tracing-appender's rolling writer rotates by time only, which bounds nothing under a
//! flood, hence the small writer here.
//!
//! Every authentication failure is exactly one line containing `auth failure from <ip>`, up to
//! the rate `http::loglimit` allows; beyond it one summary line per client counts the rest.

use std::borrow::Cow;
use std::fs::OpenOptions;
use std::io::{BufRead, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{LazyLock, RwLock};
use std::time::Duration;

use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields};
use tracing_subscriber::fmt::writer::{MakeWriter, MakeWriterExt};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::registry::LookupSpan;

use crate::paths::Paths;
use crate::redact::Redactor;

/// The systemd unit the appliance runs the gateway as.
pub const UNIT: &str = "clawfort.service";
/// Size at which `gateway.log` is rotated. Tests lower it with `CLAWFORT_TEST_LOG_MAX_BYTES`
/// (a value can only lower it).
const ROTATE_AT: u64 = 10 * 1024 * 1024;

/// Logging for CLI commands: warnings and errors to stderr.
pub fn init_cli() {
    let _ = tracing_subscriber::fmt()
        .with_max_level(Level::WARN)
        .with_writer(Redacting(std::io::stderr))
        .without_time()
        .with_target(false)
        .try_init();
}

/// Logging for the gateway (see the module docs).
pub fn init_gateway(paths: &Paths) {
    if stderr_is_journal() {
        init_journal();
        return;
    }
    let stderr = std::io::stderr.with_max_level(Level::INFO);
    let fmt = tracing_subscriber::fmt()
        .with_max_level(Level::INFO)
        .with_target(false)
        .with_ansi(false);
    let max = std::env::var("CLAWFORT_TEST_LOG_MAX_BYTES")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(ROTATE_AT, |v| v.min(ROTATE_AT));
    match CappedFile::open(paths.log_file(), max) {
        Ok(file) => {
            let file = std::sync::Mutex::new(file);
            let _ = fmt.with_writer(Redacting(stderr.and(file))).try_init();
        }
        Err(e) => {
            let _ = fmt.with_writer(Redacting(stderr)).try_init();
            tracing::warn!(
                "cannot open the log file {}: {e}; logging to stderr only",
                paths.log_file().display()
            );
        }
    }
}

/// Logging for a service without a state directory (`clawfort egress`): the journal stream
/// under systemd, else plain lines on stderr; redacted like the gateway's.
pub fn init_service() {
    if stderr_is_journal() {
        init_journal();
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_max_level(Level::INFO)
        .with_writer(Redacting(std::io::stderr))
        .with_target(false)
        .with_ansi(false)
        .try_init();
}

/// Info and above to the journal stream, each line with its sd-daemon priority prefix.
fn init_journal() {
    let format = format::format()
        .without_time()
        .with_level(false)
        .with_target(false)
        .with_ansi(false);
    let _ = tracing_subscriber::fmt()
        .with_max_level(Level::INFO)
        .event_format(Priority(format))
        .with_writer(Redacting(std::io::stderr))
        .try_init();
}

/// Makes every later log line redact the gateway's configured secrets too.
pub fn redact_with(redactor: Redactor) {
    *REDACTOR.write().unwrap_or_else(|p| p.into_inner()) = redactor;
}

/// The redactor of every log line: the key shapes until [`redact_with`] installs more.
static REDACTOR: LazyLock<RwLock<Redactor>> = LazyLock::new(RwLock::default);

/// Whether stderr is the journal stream systemd connected (`JOURNAL_STREAM` is
/// `<device>:<inode>` of it; a process started from a shell inside a unit inherits the
/// variable with another stderr, and then writes plain lines).
fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let Ok(stat) = rustix::fs::fstat(std::io::stderr()) else {
        return false;
    };
    dev.parse() == Ok(stat.st_dev) && ino.parse() == Ok(stat.st_ino)
}

/// Prefixes each journal line with its sd-daemon(3) priority (`<3>` error ... `<7>` debug).
struct Priority<F>(F);

impl<S, N, F> FormatEvent<S, N> for Priority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: format::Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let priority = match *event.metadata().level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            _ => 7,
        };
        write!(writer, "<{priority}>")?;
        self.0.format_event(ctx, writer, event)
    }
}

/// A `MakeWriter` whose writers collect one formatted event and write it, redacted and on
/// one line, when the formatter drops them.
struct Redacting<M>(M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Redacting<M> {
    type Writer = LineWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter::new(self.0.make_writer())
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        LineWriter::new(self.0.make_writer_for(meta))
    }
}

/// See [`Redacting`]. The event is held whole, so a secret split across two `write` calls
/// is still found.
struct LineWriter<W: Write> {
    inner: W,
    event: Vec<u8>,
}

impl<W: Write> LineWriter<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            event: Vec::new(),
        }
    }
}

impl<W: Write> Write for LineWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.event.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for LineWriter<W> {
    fn drop(&mut self) {
        if self.event.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.event);
        let redacted = {
            let redactor = REDACTOR.read().unwrap_or_else(|p| p.into_inner());
            redactor.redact(&text).into_owned()
        };
        // Nowhere to report a failed log write.
        let _ = self.inner.write_all(one_line(&redacted).as_bytes());
        let _ = self.inner.flush();
    }
}

/// One formatted event as a single line ending in `\n`: inner line breaks become `\n`
/// and `\r` as text.
fn one_line(event: &str) -> Cow<'_, str> {
    let body = event.strip_suffix('\n').unwrap_or(event);
    if !body.contains(['\n', '\r']) && body.len() < event.len() {
        return Cow::Borrowed(event);
    }
    let mut line = body.replace('\r', "\\r").replace('\n', "\\n");
    line.push('\n');
    Cow::Owned(line)
}

/// The log file, rotated whenever a write would take it past `max` bytes.
struct CappedFile {
    path: PathBuf,
    file: std::fs::File,
    len: u64,
    max: u64,
}

impl CappedFile {
    fn open(path: PathBuf, max: u64) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            crate::pairing::ensure_private_dir(dir)?;
        }
        let file = Self::append(&path)?;
        let len = file.metadata()?.len();
        let mut capped = Self {
            path,
            file,
            len,
            max,
        };
        if capped.len > max {
            capped.rotate()?;
        }
        Ok(capped)
    }

    fn append(path: &Path) -> std::io::Result<std::fs::File> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
    }

    /// Moves the full file to `.log.1` and starts a new one. If the rename fails (say the
    /// directory became read-only), the file is emptied instead: the cap holds either way.
    fn rotate(&mut self) -> std::io::Result<()> {
        let renamed = std::fs::rename(&self.path, self.path.with_extension("log.1"))
            .and_then(|()| Self::append(&self.path));
        match renamed {
            Ok(file) => self.file = file,
            Err(_) => self.file.set_len(0)?,
        }
        self.len = 0;
        Ok(())
    }
}

impl Write for CappedFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.len > 0 && self.len + buf.len() as u64 > self.max {
            self.rotate()?;
        }
        let written = self.file.write(buf)?;
        self.len += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Where `clawfort logs` reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogSource {
    /// The journal if systemd knows `clawfort.service`, else the log file.
    Auto,
    Journal,
    File,
}

/// `clawfort logs`.
pub fn show(paths: &Paths, source: LogSource, tail: usize, follow: bool) -> anyhow::Result<()> {
    let use_journal = match source {
        LogSource::Journal => true,
        LogSource::File => false,
        LogSource::Auto => unit_is_known(),
    };
    if use_journal {
        let mut cmd = Command::new("journalctl");
        cmd.args(["--unit", UNIT, "--no-pager", "--lines", &tail.to_string()]);
        if follow {
            cmd.arg("--follow");
        }
        let status = cmd.status().map_err(|e| {
            anyhow::anyhow!("cannot run `journalctl --unit {UNIT}`: {e}; try --source file")
        })?;
        anyhow::ensure!(
            status.success(),
            "`journalctl --unit {UNIT}` failed ({status}); reading the journal may need the \
             systemd-journal or adm group"
        );
        return Ok(());
    }
    show_file(&paths.log_file(), tail, follow)
}

/// Whether systemd has a `clawfort.service` unit (installed, whatever its state).
fn unit_is_known() -> bool {
    Command::new("systemctl")
        .args(["show", "--property=LoadState", "--value", UNIT])
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "loaded")
}

fn show_file(path: &Path, tail: usize, follow: bool) -> anyhow::Result<()> {
    let mut file = std::fs::File::open(path).map_err(|e| {
        anyhow::anyhow!(
            "cannot open the log file {}: {e} (has the gateway run with this state dir?)",
            path.display()
        )
    })?;
    let mut text = Vec::new();
    file.read_to_end(&mut text)?;
    let lines: Vec<&[u8]> = text.split_inclusive(|b| *b == b'\n').collect();
    let mut out = std::io::stdout().lock();
    for line in &lines[lines.len().saturating_sub(tail)..] {
        out.write_all(line)?;
    }
    out.flush()?;
    if !follow {
        return Ok(());
    }
    let mut pos = text.len() as u64;
    let mut reader = std::io::BufReader::new(file);
    loop {
        let len = std::fs::metadata(path)?.len();
        if len < pos {
            // Rotated or truncated: start over from the new file.
            reader = std::io::BufReader::new(std::fs::File::open(path)?);
            pos = 0;
        }
        reader.seek(SeekFrom::Start(pos))?;
        let mut line = String::new();
        while reader.read_line(&mut line)? > 0 {
            pos += line.len() as u64;
            out.write_all(line.as_bytes())?;
            line.clear();
        }
        out.flush()?;
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_written_redacted_on_one_line() {
        let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        let sink = out.clone();
        let make = Redacting(move || SharedBuf(sink.clone()));
        {
            let mut w = make.make_writer();
            // The key arrives in two writes, as a formatter may split it.
            w.write_all(b"WARN provider said: sk-ant-api03-abcdefghij")
                .unwrap();
            w.write_all(b"klmnopqrstuv\nauth failure from 10.0.0.1: forged\n")
                .unwrap();
        }
        let written = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        assert_eq!(
            written,
            "WARN provider said: [redacted]\\nauth failure from 10.0.0.1: forged\n"
        );
        assert_eq!(one_line("plain\n"), "plain\n");
        assert_eq!(one_line("no newline"), "no newline\n");
    }

    /// A writer into a shared buffer, for the test above.
    struct SharedBuf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for SharedBuf {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_log_file_never_passes_its_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/gateway.log");
        let mut file = CappedFile::open(path.clone(), 100).unwrap();
        for n in 0..50 {
            writeln!(file, "line {n:03} of the log, about thirty").unwrap();
        }
        let len = |p: &Path| std::fs::metadata(p).unwrap().len();
        assert!(len(&path) <= 100, "{}", len(&path));
        assert!(len(&path.with_extension("log.1")) <= 100);
        let newest = std::fs::read_to_string(&path).unwrap();
        assert!(
            newest.ends_with("line 049 of the log, about thirty\n"),
            "{newest}"
        );
    }
}
