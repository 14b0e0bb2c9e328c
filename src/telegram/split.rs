//! Splitting a reply into messages Telegram accepts.
//!
//! Telegram limits a message text to 4096 characters as it counts them: UTF-16 code units
//! (an emoji outside the BMP counts two). A chunk ends at the last newline, else the last
//! space, before the limit, and only at a `char` boundary, so a surrogate pair is never cut.

/// Telegram's `sendMessage` text limit in UTF-16 code units.
pub const MESSAGE_LIMIT: usize = 4096;

/// Splits `text` into chunks of at most `limit` UTF-16 units (`limit` ≥ 2), dropping chunks
/// that would be only whitespace (Telegram rejects empty messages).
pub fn split_message(text: &str, limit: usize) -> Vec<String> {
    let limit = limit.max(2);
    let mut chunks = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let cut = cut_point(rest, limit);
        let (chunk, tail) = rest.split_at(cut);
        if !chunk.trim().is_empty() {
            chunks.push(chunk.trim_end().to_string());
        }
        // The newline or space we split at starts no new chunk.
        rest = tail
            .strip_prefix('\n')
            .or_else(|| tail.strip_prefix(' '))
            .unwrap_or(tail);
    }
    chunks
}

/// The byte index where the first chunk of `text` ends.
fn cut_point(text: &str, limit: usize) -> usize {
    let mut units = 0;
    let mut last_newline = None;
    let mut last_space = None;
    for (index, ch) in text.char_indices() {
        units += ch.len_utf16();
        if units > limit {
            // Prefer a break in the second half of the chunk; a break near the start would
            // produce many tiny messages.
            return last_newline
                .or(last_space)
                .filter(|&at| at > 0)
                .unwrap_or(index);
        }
        match ch {
            '\n' => last_newline = Some(index),
            ' ' => last_space = Some(index),
            _ => {}
        }
    }
    text.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(s: &str) -> usize {
        s.encode_utf16().count()
    }

    #[test]
    fn short_text_is_one_chunk() {
        assert_eq!(split_message("hello", MESSAGE_LIMIT), vec!["hello"]);
        assert!(split_message("", MESSAGE_LIMIT).is_empty());
    }

    #[test]
    fn prefers_newline_then_space() {
        assert_eq!(split_message("aaa bb\ncc dd", 8), vec!["aaa bb", "cc dd"]);
        assert_eq!(split_message("aaa bbb ccc", 8), vec!["aaa bbb", "ccc"]);
        assert_eq!(split_message("abcdefghij", 4), vec!["abcd", "efgh", "ij"]);
    }

    #[test]
    fn counts_utf16_and_never_cuts_a_surrogate_pair() {
        // 3000 emoji = 6000 UTF-16 units, no spaces: a hard split is needed.
        let text = "😀".repeat(3000);
        let chunks = split_message(&text, MESSAGE_LIMIT);
        assert_eq!(chunks.len(), 2);
        assert_eq!(units(&chunks[0]), 4096);
        assert_eq!(chunks.concat(), text);
        // An odd limit must not split a pair: the chunk stops one unit short.
        let chunks = split_message("😀😀😀", 5);
        assert_eq!(chunks, vec!["😀😀", "😀"]);
    }
}
