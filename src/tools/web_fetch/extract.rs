//! What the model gets of a page: HTML rendered as text (`html2text`, which parses with
//! html5ever like a browser and renders iteratively, so hostile markup neither confuses nor
//! overflows it), text and JSON as they are, anything else refused with its content type.
//!
//! html5ever's tree builder takes time quadratic in the nesting depth (it walks the stack
//! of open elements per tag): 8,000 nested `<div>`s cost seconds, the 150,000 that fit in
//! `maxResponseBytes` would cost minutes of a blocking thread that no timeout can stop. So
//! a linear pre-scan estimates the depth first, and a page nested deeper than browsers
//! build ([`MAX_DEPTH`]) is refused.

/// How HTML is rendered: OpenClaw's `extractMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtractMode {
    /// Headings, emphasis, lists and links kept as markdown marks (the default).
    Markdown,
    /// Plain text without marks.
    Text,
}

/// Deepest nesting rendered (WebKit's tree builder stops nesting at this depth too).
const MAX_DEPTH: usize = 512;

/// Rendered line width: wide enough that prose is rarely wrapped, and tables keep shape.
const WIDTH: usize = 120;

/// The readable text of a body with content type `content_type` (the header's value, or
/// `None` when the server sent none), or why there is none.
pub fn extract(
    body: &[u8],
    content_type: Option<&str>,
    mode: ExtractMode,
) -> Result<String, String> {
    let essence = content_type
        .map(|t| {
            t.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|t| !t.is_empty());
    let kind = match essence.as_deref() {
        Some("text/html" | "application/xhtml+xml") => Kind::Html,
        Some(t) if is_textual(t) => Kind::Text,
        Some(other) => {
            return Err(format!(
                "the answer is {other}, not text: web_fetch returns text, HTML, JSON or XML only"
            ))
        }
        None => sniff(body)?,
    };
    match kind {
        Kind::Html => html_to_text(body, mode),
        Kind::Text => Ok(String::from_utf8_lossy(body).into_owned()),
    }
}

enum Kind {
    Html,
    Text,
}

fn is_textual(essence: &str) -> bool {
    essence.starts_with("text/")
        || essence.ends_with("+json")
        || essence.ends_with("+xml")
        || [
            "application/json",
            "application/xml",
            "application/javascript",
            "application/ecmascript",
            "application/x-ndjson",
            "application/yaml",
            "application/x-yaml",
            "application/toml",
        ]
        .contains(&essence)
}

/// A body without a content type: HTML if it opens like HTML, text if it is UTF-8 without
/// control bytes, refused otherwise.
fn sniff(body: &[u8]) -> Result<Kind, String> {
    let head = String::from_utf8_lossy(&body[..body.len().min(512)]).to_ascii_lowercase();
    let head = head.trim_start_matches(['\u{feff}', ' ', '\t', '\r', '\n']);
    if head.starts_with("<!doctype html") || head.starts_with("<html") {
        return Ok(Kind::Html);
    }
    let text = std::str::from_utf8(body).is_ok()
        && !body
            .iter()
            .any(|b| b.is_ascii_control() && !b.is_ascii_whitespace());
    if text {
        Ok(Kind::Text)
    } else {
        Err(
            "the answer has no content type and is not UTF-8 text: web_fetch returns text, \
             HTML, JSON or XML only"
                .to_owned(),
        )
    }
}

fn html_to_text(body: &[u8], mode: ExtractMode) -> Result<String, String> {
    let depth = nesting_depth(body);
    if depth > MAX_DEPTH {
        return Err(format!(
            "the HTML nests about {depth} elements deep (more than {MAX_DEPTH}), which no \
             real page does: not rendered"
        ));
    }
    let rendered = match mode {
        ExtractMode::Markdown => html2text::config::plain()
            .link_footnotes(true)
            .allow_width_overflow()
            .string_from_read(body, WIDTH),
        ExtractMode::Text => {
            html2text::config::with_decorator(html2text::render::TrivialDecorator::new())
                .allow_width_overflow()
                .string_from_read(body, WIDTH)
        }
    };
    rendered.map_err(|e| format!("the HTML could not be rendered as text: {e}"))
}

/// Elements that never hold content, so never nest.
const VOID: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track",
    "wbr", "!doctype",
];

/// Elements a start tag of the same name closes (`<p>a<p>b`, `<li>a<li>b`).
const SELF_CLOSING_SIBLINGS: &[&str] = &["p", "li", "dt", "dd", "option", "tr", "td", "th"];

/// An estimate of `html`'s deepest element nesting, in one linear pass: start tags push,
/// end tags pop to their element, the content of comments, `script` and `style` is skipped.
/// It may overestimate a sloppy page a little; it never underestimates nested markup.
fn nesting_depth(html: &[u8]) -> usize {
    let mut stack: Vec<Vec<u8>> = Vec::new();
    let mut deepest = 0;
    let mut at = 0;
    while let Some(open) = find(html, at, b"<") {
        at = open + 1;
        if html[at..].starts_with(b"!--") {
            at = find(html, at, b"-->").map_or(html.len(), |end| end + 3);
            continue;
        }
        let closing = html.get(at) == Some(&b'/');
        let name_start = at + usize::from(closing);
        let name_end = html[name_start..]
            .iter()
            .position(|b| !(b.is_ascii_alphanumeric() || *b == b'-' || *b == b'!'))
            .map_or(html.len(), |n| name_start + n);
        let name = html[name_start..name_end].to_ascii_lowercase();
        let Some(end) = find(html, name_end, b">") else {
            break;
        };
        at = end + 1;
        if name.is_empty() {
            continue;
        }
        if closing {
            if let Some(i) = stack.iter().rposition(|n| *n == name) {
                stack.truncate(i);
            }
            continue;
        }
        let named = |list: &[&str]| list.iter().any(|v| v.as_bytes() == name.as_slice());
        if named(VOID) || html[end - 1] == b'/' {
            continue;
        }
        if name == b"script" || name == b"style" {
            let close = [b"</".as_slice(), &name].concat();
            at = find_ignoring_case(html, at, &close).unwrap_or(html.len());
            continue;
        }
        if named(SELF_CLOSING_SIBLINGS) && stack.last() == Some(&name) {
            stack.pop();
        }
        stack.push(name);
        deepest = deepest.max(stack.len());
    }
    deepest
}

fn find(haystack: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| from + i)
}

fn find_ignoring_case(haystack: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
        .map(|i| from + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &[u8] = b"<!DOCTYPE html><html><head><title>T</title><style>p{color:red}</style>\
        <script>alert('x')</script></head><body><h1>Hello</h1><p>A <b>bold</b> &amp; \
        <a href=\"https://example.com/next\">linked</a> word.</p></body></html>";

    #[test]
    fn html_becomes_text_without_script_or_style() {
        let text = extract(PAGE, Some("text/html; charset=utf-8"), ExtractMode::Text).unwrap();
        assert!(
            text.contains("Hello") && text.contains("A bold & linked word."),
            "{text}"
        );
        assert!(!text.contains('#') && !text.contains('['), "{text}");
        assert!(!text.contains("alert") && !text.contains("color"), "{text}");
        assert!(!text.contains('<'), "{text}");
        let markdown = extract(PAGE, Some("text/html"), ExtractMode::Markdown).unwrap();
        assert!(markdown.contains("# Hello"), "{markdown}");
        assert!(markdown.contains("**bold**"), "{markdown}");
        assert!(
            markdown.contains("[1]: https://example.com/next"),
            "{markdown}"
        );
    }

    #[test]
    fn text_and_json_pass_as_they_are() {
        let json = br#"{"a": [1, 2]}"#;
        for t in ["application/json", "application/problem+json", "text/plain"] {
            assert_eq!(
                extract(json, Some(t), ExtractMode::Markdown).unwrap(),
                r#"{"a": [1, 2]}"#
            );
        }
    }

    #[test]
    fn binary_types_are_refused_by_name() {
        let err = extract(b"\x89PNG", Some("image/png"), ExtractMode::Text).unwrap_err();
        assert!(err.contains("image/png"), "{err}");
        let err = extract(b"\x00\x01\x02", None, ExtractMode::Text).unwrap_err();
        assert!(err.contains("no content type"), "{err}");
        assert!(extract(b"<html><p>x</p>", None, ExtractMode::Text)
            .unwrap()
            .contains('x'));
    }

    #[test]
    fn deeply_nested_markup_is_refused_before_the_parser_sees_it() {
        let depth = 150_000;
        let page = format!("{}deep{}", "<div>".repeat(depth), "</div>".repeat(depth));
        let started = std::time::Instant::now();
        let err = extract(page.as_bytes(), Some("text/html"), ExtractMode::Text).unwrap_err();
        assert!(err.contains("nests about 150000 elements deep"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        let page = format!(
            "{}deep{}",
            "<div>".repeat(MAX_DEPTH),
            "</div>".repeat(MAX_DEPTH)
        );
        assert!(
            extract(page.as_bytes(), Some("text/html"), ExtractMode::Text)
                .unwrap()
                .contains("deep")
        );
    }

    #[test]
    fn the_depth_estimate_follows_real_markup() {
        let sloppy = "<html><body><div><ul><li>a<li>b</ul><p>x<p>y<br><img src=x>\
                      <script>if (a<b) { '<div><div>' }</script><!-- <div><div> -->\
                      <span/></div></body></html>";
        assert_eq!(nesting_depth(sloppy.as_bytes()), 5, "html body div ul li");
        assert_eq!(nesting_depth(PAGE), 4, "html body p b");
        let many_paragraphs = format!("<div><p>x</p>{}", "<p>unclosed".repeat(5_000));
        assert_eq!(nesting_depth(many_paragraphs.as_bytes()), 2);
    }
}
