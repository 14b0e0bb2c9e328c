//! Reading the store files: the current format, and the older ones OpenClaw wrote.
//!
//! Current (written by clawfort):
//! - `<ch>-allowFrom.json`: `{"version":1,"allowFrom":["id"...],"groups":["id"...]}`
//! - `<ch>-pairing.json`: `{"version":1,"requests":[{"id","kind","code","accountId"?,
//!   "createdAt","lastSeenAt"}]}` with Unix seconds.
//!
//! Older OpenClaw gateways wrote:
//! - an allow-list that is a bare JSON array, or an object with only `allowFrom`; entries
//!   may be numbers (Telegram user ids) and `"*"` (which the pairing store never honoured as
//!   "everyone": it is dropped here too, so a legacy file cannot open a channel);
//! - requests without `kind` (all were direct messages), with ISO-8601 `createdAt` /
//!   `lastSeenAt` strings (`lastSeenAt` may be missing) and the account in `meta.accountId`.
//!
//! Both are read; [`Format::Legacy`] tells the store to rewrite the file in the current
//! format on its next change. Anything else is an error that says what is wrong where.

use jiff::Timestamp;
use serde_json::{Map, Value};

use super::{AllowList, PairingRequest, PeerKind};

/// Which format a file was in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Current,
    /// An older OpenClaw format: rewrite it on the next change.
    Legacy,
}

/// Larger numeric timestamps are Unix milliseconds (seconds would be past the year 5000).
const MILLIS_THRESHOLD: u64 = 100_000_000_000;

/// Parses an allow-list file.
pub fn parse_allow_list(bytes: &[u8]) -> Result<(AllowList, Format), String> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("is not valid JSON ({e})"))?;
    match value {
        Value::Array(items) => Ok((
            AllowList {
                version: 1,
                allow_from: ids("the list", &items)?,
                groups: Vec::new(),
            },
            Format::Legacy,
        )),
        Value::Object(map) => {
            let list = |key: &str| -> Result<(Vec<String>, bool), String> {
                match map.get(key) {
                    None | Some(Value::Null) => Ok((Vec::new(), false)),
                    Some(Value::Array(items)) => {
                        let legacy = items.iter().any(|v| !v.is_string() || v == "*");
                        Ok((ids(&format!("`{key}`"), items)?, legacy))
                    }
                    Some(_) => Err(format!("`{key}` is not a list")),
                }
            };
            let (allow_from, legacy_entries) = list("allowFrom")?;
            let (groups, legacy_groups) = list("groups")?;
            let version = version(&map)?;
            let format = if version == 1 && !legacy_entries && !legacy_groups {
                Format::Current
            } else {
                Format::Legacy
            };
            Ok((
                AllowList {
                    version: 1,
                    allow_from,
                    groups,
                },
                format,
            ))
        }
        _ => Err("is neither a list of senders nor an object with `allowFrom`".into()),
    }
}

/// Parses a pairing-requests file.
pub fn parse_requests(bytes: &[u8]) -> Result<(Vec<PairingRequest>, Format), String> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("is not valid JSON ({e})"))?;
    let Value::Object(map) = value else {
        return Err("is not an object with `requests`".into());
    };
    let mut format = if version(&map)? == 1 {
        Format::Current
    } else {
        Format::Legacy
    };
    let items = match map.get("requests") {
        None | Some(Value::Null) => return Ok((Vec::new(), format)),
        Some(Value::Array(items)) => items,
        Some(_) => return Err("`requests` is not a list".into()),
    };
    let mut requests = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let (request, item_format) =
            request(item).map_err(|e| format!("request {} (counting from 1): {e}", i + 1))?;
        if item_format == Format::Legacy {
            format = Format::Legacy;
        }
        requests.push(request);
    }
    Ok((requests, format))
}

/// The file's `version` (0 when absent, as in OpenClaw's older files). A newer version is
/// refused rather than rewritten as version 1, which could drop what it added.
fn version(map: &Map<String, Value>) -> Result<u64, String> {
    match map.get("version") {
        None => Ok(0),
        Some(v) => match v.as_u64() {
            Some(n) if n <= 1 => Ok(n),
            Some(n) => Err(format!(
                "has version {n}, newer than the version 1 this clawfort reads; upgrade clawfort"
            )),
            None => Err("`version` is not a whole number".into()),
        },
    }
}

/// Sender ids: strings or whole numbers; blanks and `"*"` are dropped, duplicates kept once.
fn ids(what: &str, items: &[Value]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let id = match item {
            Value::String(s) => s.trim().to_string(),
            Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
            _ => {
                return Err(format!(
                    "entry {} of {what} is not a sender id (a string or a whole number)",
                    i + 1
                ))
            }
        };
        if !id.is_empty() && id != "*" && !out.contains(&id) {
            out.push(id);
        }
    }
    Ok(out)
}

fn request(item: &Value) -> Result<(PairingRequest, Format), String> {
    let Value::Object(map) = item else {
        return Err("is not an object".into());
    };
    let mut format = Format::Current;
    let text = |key: &str| -> Result<String, String> {
        match map.get(key) {
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_string()),
            Some(Value::Number(n)) if key == "id" && (n.is_u64() || n.is_i64()) => {
                Ok(n.to_string())
            }
            _ => Err(format!("`{key}` is missing or not a string")),
        }
    };
    let id = text("id")?;
    let code = text("code")?.to_ascii_uppercase();
    let kind = match map.get("kind") {
        None => {
            format = Format::Legacy;
            PeerKind::Direct
        }
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|_| "`kind` is neither \"direct\" nor \"group\"".to_string())?,
    };
    let account_id = match (
        map.get("accountId"),
        map.get("meta").and_then(|m| m.get("accountId")),
    ) {
        (Some(Value::String(a)), _) => Some(a.clone()),
        (None | Some(Value::Null), Some(Value::String(a))) => {
            format = Format::Legacy;
            Some(a.clone())
        }
        (None | Some(Value::Null), _) => None,
        _ => return Err("`accountId` is not a string".into()),
    };
    let (created_at, created_format) =
        timestamp(map.get("createdAt")).map_err(|e| format!("`createdAt` {e}"))?;
    let (last_seen_at, seen_format) = match map.get("lastSeenAt") {
        None | Some(Value::Null) => (created_at, Format::Legacy),
        v => timestamp(v).map_err(|e| format!("`lastSeenAt` {e}"))?,
    };
    if created_format == Format::Legacy || seen_format == Format::Legacy {
        format = Format::Legacy;
    }
    Ok((
        PairingRequest {
            id,
            kind,
            code,
            account_id,
            created_at,
            last_seen_at,
        },
        format,
    ))
}

/// A converted time, which is written back as seconds: it must not read as milliseconds then.
fn seconds(secs: u64) -> Result<u64, String> {
    if secs < MILLIS_THRESHOLD {
        Ok(secs)
    } else {
        Err("is too far in the future".into())
    }
}

/// Unix seconds, Unix milliseconds, or an ISO-8601 string.
fn timestamp(value: Option<&Value>) -> Result<(u64, Format), String> {
    match value {
        Some(Value::Number(n)) => {
            let n = n
                .as_u64()
                .ok_or("is not a whole, non-negative number of seconds")?;
            if n < MILLIS_THRESHOLD {
                Ok((n, Format::Current))
            } else {
                Ok((seconds(n / 1000)?, Format::Legacy))
            }
        }
        Some(Value::String(s)) => {
            // RFC 3339 / ISO-8601 with an offset, as JavaScript's `toISOString` writes it.
            let t: Timestamp = s
                .trim()
                .parse()
                .map_err(|e| format!("{s:?} is not an ISO-8601 time ({e})"))?;
            let secs = u64::try_from(t.as_second()).map_err(|_| format!("{s:?} is before 1970"))?;
            Ok((seconds(secs)?, Format::Legacy))
        }
        None | Some(Value::Null) => Err("is missing".into()),
        Some(_) => Err("is neither Unix seconds nor an ISO-8601 string".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_allow_list_round_trips() {
        let text = br#"{"version":1,"allowFrom":["a","b"],"groups":["g"]}"#;
        let (list, format) = parse_allow_list(text).unwrap();
        assert_eq!(format, Format::Current);
        assert_eq!(list.allow_from, ["a", "b"]);
        assert_eq!(list.groups, ["g"]);
        let again = serde_json::to_vec(&list).unwrap();
        assert_eq!(parse_allow_list(&again).unwrap(), (list, Format::Current));
    }

    #[test]
    fn legacy_allow_lists() {
        let (list, format) =
            parse_allow_list(br#"[123456789, " alice ", "*", "", "alice"]"#).unwrap();
        assert_eq!(format, Format::Legacy);
        assert_eq!(list.allow_from, ["123456789", "alice"]);
        let (list, format) = parse_allow_list(br#"{"version":1,"allowFrom":[42]}"#).unwrap();
        assert_eq!(
            (list.allow_from, format),
            (vec!["42".to_string()], Format::Legacy)
        );
        let (_, format) = parse_allow_list(br#"{"allowFrom":["a"]}"#).unwrap();
        assert_eq!(format, Format::Legacy);
    }

    #[test]
    fn legacy_requests() {
        let text = br#"{"version":1,"requests":[
            {"id":"42","code":"abcd2345","createdAt":"2026-01-02T03:04:05.678Z",
             "meta":{"accountId":"bot2"}},
            {"id":"43","code":"WXYZ2345","createdAt":"2026-01-02T03:04:05+01:00",
             "lastSeenAt":"2026-01-02T03:14:05+01:00"},
            {"id":"44","code":"QRST2345","createdAt":1767323045000,"lastSeenAt":1767323045}
        ]}"#;
        let (requests, format) = parse_requests(text).unwrap();
        assert_eq!(format, Format::Legacy);
        assert_eq!(requests[0].created_at, 1_767_323_045);
        assert_eq!(requests[0].last_seen_at, 1_767_323_045);
        assert_eq!(requests[0].code, "ABCD2345");
        assert_eq!(requests[0].kind, PeerKind::Direct);
        assert_eq!(requests[0].account_id.as_deref(), Some("bot2"));
        assert_eq!(requests[1].created_at, 1_767_323_045 - 3600);
        assert_eq!(requests[1].last_seen_at, 1_767_323_045 - 3000);
        assert_eq!(requests[2].created_at, 1_767_323_045);
    }

    /// The fuzz target's property on hand-picked edge cases: what is accepted reads back
    /// unchanged, in the current format, after being written.
    #[test]
    fn accepted_input_round_trips() {
        let lists: [&[u8]; 5] = [
            br#"[" a ", "a", "*", " ", 0, -5, 18446744073709551615]"#,
            br#"{"allowFrom":null,"groups":["*","g"],"extra":1}"#,
            br#"{"version":0}"#,
            br#"[]"#,
            "[\"\u{e9}t\u{e9}\", \"\u{1F600}\"]".as_bytes(),
        ];
        for input in lists {
            let (list, _) = parse_allow_list(input).unwrap();
            let again = parse_allow_list(&serde_json::to_vec(&list).unwrap()).unwrap();
            assert_eq!(again, (list, Format::Current));
        }
        let requests: [&[u8]; 3] = [
            br#"{"requests":[{"id":7,"code":" ab ","createdAt":99999999999999,
                "accountId":null,"meta":{"accountId":""}}]}"#,
            br#"{"version":1,"requests":[{"id":"x","kind":"group","code":"C",
                "createdAt":"1970-01-01T00:00:00Z","lastSeenAt":null}]}"#,
            br#"{"requests":null}"#,
        ];
        for input in requests {
            let (list, _) = parse_requests(input).unwrap();
            let written = serde_json::json!({ "version": 1, "requests": list });
            let again = parse_requests(&serde_json::to_vec(&written).unwrap()).unwrap();
            assert_eq!(again, (list, Format::Current));
        }
        let far = br#"{"requests":[{"id":"x","code":"C","createdAt":"9999-01-01T00:00:00Z"}]}"#;
        assert!(parse_requests(far)
            .unwrap_err()
            .contains("too far in the future"));
    }

    #[test]
    fn errors_say_what_and_where() {
        let e = parse_allow_list(b"{ not json").unwrap_err();
        assert!(e.contains("not valid JSON"), "{e}");
        let e = parse_allow_list(br#"["a", {"x":1}]"#).unwrap_err();
        assert!(e.contains("entry 2"), "{e}");
        let e = parse_requests(br#"{"requests":[{"id":"a","code":"X","createdAt":"yesterday"}]}"#)
            .unwrap_err();
        assert!(e.contains("request 1") && e.contains("createdAt"), "{e}");
        assert!(parse_requests(b"[]").is_err());
        // A time without an offset (or without a time) is ambiguous: refused, not guessed.
        for when in ["2026-01-02", "2026-01-02T03:04:05", "1969-12-31T23:59:59Z"] {
            let text = format!(r#"{{"requests":[{{"id":"a","code":"X","createdAt":"{when}"}}]}}"#);
            let e = parse_requests(text.as_bytes()).unwrap_err();
            assert!(e.contains("createdAt"), "{when}: {e}");
        }
        for when in [
            "20260102T030405Z",
            "2026-01-02T04:04:05+0100",
            "2026-01-02T03:04:05,5Z",
        ] {
            let text = format!(r#"{{"requests":[{{"id":"a","code":"X","createdAt":"{when}"}}]}}"#);
            let (requests, _) = parse_requests(text.as_bytes()).unwrap();
            assert_eq!(requests[0].created_at, 1_767_323_045, "{when}");
        }
        let e = parse_allow_list(br#"{"version":2,"allowFrom":[]}"#).unwrap_err();
        assert!(e.contains("version 2"), "{e}");
    }
}
