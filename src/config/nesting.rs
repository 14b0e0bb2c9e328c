//! A nesting limit checked before the JSON5 parser runs: the parser recurses once per `{` or
//! `[`, so a file nested a hundred thousand levels deep would overflow the stack and abort the
//! process instead of giving a configuration error.

/// Deepest nesting accepted; OpenClaw's own schema is about a dozen levels deep.
pub const MAX_DEPTH: usize = 64;

/// The line of the first `{` or `[` that goes deeper than `MAX_DEPTH`, if any. Strings and
/// comments are skipped, so brackets inside them do not count. Malformed text (an unclosed
/// string) ends the scan; the JSON5 parser then reports it.
pub fn too_deep(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut line = 1;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => line += 1,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Some(line);
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            quote @ (b'"' | b'\'') => {
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    if bytes.get(i) == Some(&b'\n') {
                        line += 1;
                    }
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < bytes.len() && !(bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/')) {
                    if bytes[i] == b'\n' {
                        line += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_real_brackets() {
        let deep = "[".repeat(MAX_DEPTH + 1);
        assert_eq!(too_deep(&deep), Some(1));
        assert_eq!(too_deep(&"[".repeat(MAX_DEPTH)), None);
        let quoted = format!("{{ a: \"{deep}\", b: '{deep}', // {deep}\n /* {deep} */ }}");
        assert_eq!(too_deep(&quoted), None);
        assert_eq!(too_deep(&format!("{{\n a: {deep} }}")), Some(2));
    }
}
