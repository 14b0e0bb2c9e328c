//! Printing `clawfort logs --audit`: a table, or JSON for machines, with secrets redacted.

use std::path::Path;

use jiff::Timestamp;

use super::{read_commands, Command};
use crate::config::Config;
use crate::redact::Redactor;
use crate::target::Target;
use crate::tools::log::cli::Filter;

/// Damaged lines are counted, never shown: they could hold anything.
pub fn show(target: &Target, log: &Path, filter: &Filter) -> anyhow::Result<()> {
    let (mut commands, damaged) = read_commands(log)?;
    if damaged > 0 {
        eprintln!(
            "note: skipped {damaged} lines of {} that are no audit records",
            log.display()
        );
    }
    commands.retain(|c| {
        filter
            .since
            .is_none_or(|since| c.time.parse::<Timestamp>().is_ok_and(|t| t >= since))
    });
    let skip = commands.len().saturating_sub(filter.limit);
    commands.drain(..skip);
    let redactor = redactor(target);
    for command in &mut commands {
        redact(&redactor, command);
    }
    if filter.json {
        println!("{}", serde_json::to_string_pretty(&commands)?);
    } else if commands.is_empty() {
        println!(
            "no commands of the service user match (in {})",
            log.display()
        );
    } else {
        print!("{}", table(&commands));
    }
    Ok(())
}

/// A command line can carry a token the agent was told to use: the installation's configured
/// secrets and the well-known key shapes are redacted, as in the gateway's own logs. Without
/// a readable config only the shapes are.
fn redactor(target: &Target) -> Redactor {
    match Config::load(&target.paths) {
        Ok(config) => Redactor::new(&crate::agent::service::configured_secrets(&config)),
        Err(e) => {
            eprintln!(
                "note: the config did not load ({e}); only well-known key shapes are \
                 redacted, not the configured secrets"
            );
            Redactor::new([])
        }
    }
}

fn redact(redactor: &Redactor, command: &mut Command) {
    let clean = |text: &mut String| {
        if let std::borrow::Cow::Owned(new) = redactor.redact(text) {
            *text = new;
        }
    };
    command.argv.iter_mut().for_each(clean);
    command.cwd.iter_mut().for_each(clean);
    command.exe.iter_mut().for_each(clean);
}

/// One row per command, oldest first; the command line last, as it is the longest.
fn table(commands: &[Command]) -> String {
    let rows: Vec<[String; 6]> = commands
        .iter()
        .map(|c| {
            [
                c.time.clone(),
                c.pid.to_string(),
                c.unit.clone().unwrap_or_else(|| "-".to_owned()),
                match c.success {
                    true => "ok".to_owned(),
                    false => format!("failed ({})", c.exit),
                },
                c.cwd.clone().unwrap_or_else(|| "-".to_owned()),
                shlex::try_join(c.argv.iter().map(String::as_str))
                    .unwrap_or_else(|_| c.argv.join(" "))
                    .replace('\n', "\\n"),
            ]
        })
        .collect();
    crate::columns::render(["TIME", "PID", "UNIT", "EXEC", "CWD", "COMMAND"], &rows)
}
