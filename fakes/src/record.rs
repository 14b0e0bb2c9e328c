//! An append-only JSON-lines record of every request the fakes receive, for a controller
//! that reads it after the run (or while the fakes still run: each line is flushed).

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// Shared by all servers of one process; cloning shares the file.
#[derive(Clone)]
pub struct Recorder {
    file: Arc<Mutex<File>>,
}

impl Recorder {
    /// Creates (or truncates) `path`.
    pub fn create(path: &Path) -> io::Result<Self> {
        Ok(Self {
            file: Arc::new(Mutex::new(File::create(path)?)),
        })
    }

    /// Appends `entry` with `"server": server` and `"unixMs"` (the wall clock now) added.
    /// A write error is reported on stderr, never to the client under test.
    pub fn write(&self, server: &str, mut entry: Value) {
        entry["server"] = Value::from(server);
        entry["unixMs"] = Value::from(unix_ms());
        let mut line = entry.to_string();
        line.push('\n');
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = file.write_all(line.as_bytes()).and_then(|()| file.flush()) {
            eprintln!("clawfort-fakes: cannot write the record: {e}");
        }
    }
}

/// Milliseconds since the Unix epoch, with microsecond precision.
pub fn unix_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}
