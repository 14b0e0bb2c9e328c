//! The counts of an AIDE report, for `clawfort events emit integrity --aide-report`: the
//! integrity check (clawfort-integrity-check.service) has AIDE write its report to a file
//! besides the journal, and this reads the summary's `Added entries:`, `Removed entries:`
//! and `Changed entries:` lines (the section headings of the same names carry no number).

/// Files added, removed and changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Changes {
    pub added: u64,
    pub removed: u64,
    pub changed: u64,
}

/// The changes a report lists; `None` when AIDE found none. A report that has neither a
/// summary nor AIDE's "no differences" line is an error.
pub fn changes(report: &str) -> Result<Option<Changes>, String> {
    if report.contains("AIDE found NO differences") {
        return Ok(None);
    }
    let count = |label: &str| {
        report.lines().find_map(|line| {
            let value = line.trim().strip_prefix(label)?.trim();
            value.parse::<u64>().ok()
        })
    };
    match (
        count("Added entries:"),
        count("Removed entries:"),
        count("Changed entries:"),
    ) {
        (Some(added), Some(removed), Some(changed)) => Ok(Some(Changes {
            added,
            removed,
            changed,
        })
        .filter(|c| c.added + c.removed + c.changed > 0)),
        _ => Err(
            "it has no summary (`Added entries:`, `Removed entries:`, `Changed entries:` with \
             their counts) and does not say AIDE found no differences; is it an AIDE report?"
                .to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/aide");

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap()
    }

    #[test]
    fn the_summary_counts_are_read_from_aides_report() {
        assert_eq!(
            changes(&fixture("changes.txt")),
            Ok(Some(Changes {
                added: 3,
                removed: 1,
                changed: 2
            }))
        );
        assert_eq!(changes(&fixture("no-changes.txt")), Ok(None));
        let err = changes("Start timestamp: ...\n").unwrap_err();
        assert!(err.contains("is it an AIDE report?"), "{err}");
    }
}
