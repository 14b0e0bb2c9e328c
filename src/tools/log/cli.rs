//! `clawfort logs --tools`: the execution log as a table, or as JSON for machines.

use std::path::Path;

use jiff::Timestamp;

use super::{path, read, Entry};
use crate::paths::Paths;

/// Damaged lines named one by one; more are counted.
const SHOWN_DAMAGED: usize = 10;

/// Which entries `logs --tools` shows.
#[derive(Debug, Clone, clap::Args)]
pub struct Filter {
    /// Print the entries as a JSON array (with --tools or --audit).
    #[arg(long, requires = "structured")]
    pub json: bool,
    /// Only the calls of this session key, e.g. agent:main:main (with --tools).
    #[arg(long, value_name = "KEY", requires = "tools")]
    pub session: Option<String>,
    /// Show at most the latest N entries (with --tools or --audit).
    #[arg(long, value_name = "N", default_value_t = 50, requires = "structured")]
    pub limit: usize,
    /// Only calls since this time: a duration back from now (`90s`, `15m`, `2h`) or an RFC
    /// 3339 time (`2026-01-31T08:00:00Z`) (with --tools or --audit).
    #[arg(long, value_name = "WHEN", value_parser = crate::columns::parse_since, requires = "structured")]
    pub since: Option<Timestamp>,
}

/// Prints the entries `filter` selects from the installation's execution log. No log yet
/// is an error saying so.
pub fn show(paths: &Paths, filter: &Filter) -> anyhow::Result<()> {
    let file = path(paths);
    let entries = select(&file, filter)?;
    if filter.json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
    } else if entries.is_empty() {
        println!("no tool calls match (in {})", file.display());
    } else {
        print!("{}", table(&entries));
    }
    Ok(())
}

fn select(file: &Path, filter: &Filter) -> anyhow::Result<Vec<Entry>> {
    let Some((mut entries, damaged)) = read(file)
        .map_err(|e| anyhow::anyhow!("cannot read the execution log {}: {e}", file.display()))?
    else {
        anyhow::bail!(
            "there is no execution log yet: {} does not exist. The gateway writes it at the \
             agent's first tool call; check that this is the gateway's installation \
             (--config, or sudo for the service's).",
            file.display()
        );
    };
    for d in damaged.iter().take(SHOWN_DAMAGED) {
        eprintln!("note: skipped {d}; a write cut short by a crash or a full disk");
    }
    if damaged.len() > SHOWN_DAMAGED {
        eprintln!(
            "note: skipped {} more damaged lines",
            damaged.len() - SHOWN_DAMAGED
        );
    }
    entries.retain(|e| {
        filter.session.as_ref().is_none_or(|s| &e.session == s)
            && filter.since.is_none_or(|since| {
                // An entry whose time does not parse is shown rather than hidden.
                e.time.parse::<Timestamp>().map_or(true, |t| t >= since)
            })
    });
    let skip = entries.len().saturating_sub(filter.limit);
    entries.drain(..skip);
    Ok(entries)
}

/// One row per entry, oldest first; the target last, as it is the longest.
fn table(entries: &[Entry]) -> String {
    let rows: Vec<[String; 9]> = entries
        .iter()
        .map(|e| {
            [
                e.time.clone(),
                e.session.clone(),
                e.tool.clone(),
                e.place.map_or("-".to_owned(), |p| p.to_string()),
                e.approval.to_string(),
                e.status.to_string(),
                format!("{} ms", e.duration_ms),
                e.bytes_out.to_string(),
                e.target.clone().unwrap_or_default().replace('\n', "\\n"),
            ]
        })
        .collect();
    crate::columns::render(
        [
            "TIME", "SESSION", "TOOL", "WHERE", "APPROVAL", "STATUS", "DURATION", "BYTES", "TARGET",
        ],
        &rows,
    )
}
