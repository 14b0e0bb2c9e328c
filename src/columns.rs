//! Plain-text tables for the `clawfort logs` commands: left-aligned columns two spaces apart,
//! the last column unpadded (it holds free text such as a command line), widths in characters.

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
}
