//! What the listing commands (`clawfort logs --tools`, `--audit`, `clawfort events`) share:
//! plain-text tables (left-aligned columns two spaces apart, the last column unpadded, as it
//! holds free text such as a command line; widths in characters) and the `--since` parser.

use jiff::{SignedDuration, Timestamp};

/// `header` and then each row, one line each.
pub fn render<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; N]| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == N {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(header);
    for row in rows {
        out.push_str(&line(row.each_ref().map(String::as_str)));
    }
    out
}

/// `--since`: a time, or a duration back from now.
pub fn parse_since(text: &str) -> Result<Timestamp, String> {
    if let Ok(time) = text.parse::<Timestamp>() {
        return Ok(time);
    }
    text.parse::<SignedDuration>()
        .ok()
        .filter(|d| !d.is_negative())
        .and_then(|d| Timestamp::now().checked_sub(d).ok())
        .ok_or_else(|| {
            format!(
                "`{text}` is neither a duration (90s, 15m, 2h) nor an RFC 3339 time \
                 (2026-01-31T08:00:00Z)"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_on_the_widest_cell_and_the_last_is_not_padded() {
        let rows = [
            ["1".to_owned(), "ok".to_owned(), "echo hi".to_owned()],
            ["1234".to_owned(), "failed (1)".to_owned(), "x".to_owned()],
        ];
        assert_eq!(
            render(["PID", "EXEC", "COMMAND"], &rows),
            "PID   EXEC        COMMAND\n1     ok          echo hi\n1234  failed (1)  x\n"
        );
    }

    #[test]
    fn since_takes_a_duration_or_a_time_and_says_what_it_wanted() {
        let an_hour_ago = parse_since("1h").unwrap();
        let age = Timestamp::now().duration_since(an_hour_ago);
        assert!((3599..=3601).contains(&age.as_secs()), "{age:?}");
        assert_eq!(
            parse_since("2026-01-31T08:00:00Z").unwrap().to_string(),
            "2026-01-31T08:00:00Z"
        );
        let err = parse_since("yesterday").unwrap_err();
        assert!(err.contains("`yesterday` is neither a duration"), "{err}");
    }
}
