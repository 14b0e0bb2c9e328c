//! One line of the kernel audit log, as auditd writes it:
//! `type=SYSCALL msg=audit(1764468000.123:4567): key=value key="value" ...`, and with
//! `log_format = ENRICHED` (Debian's default) a group separator (0x1d) and the same ids
//! spelled out (`UID="openclaw"`), which is dropped here: the numeric fields say it all.
//!
//! No crate fits: the maintained parser (linux-audit-parser) is LGPL-3.0, which a statically
//! linked Apache-2.0 binary cannot take without relinking duties, and the format is small.
//! It is documented in the audit userspace's "Understanding Audit Log Files" and in the
//! kernel's `audit_log_n_untrustedstring`: a value an unprivileged user could choose (a
//! command's arguments, its working directory, `comm`, `exe`) is written either in double
//! quotes, when it has no space, quote, control or non-ASCII byte, or else as uppercase hex
//! of its bytes with no quotes.

use std::collections::HashMap;

/// The byte auditd puts between the kernel's fields and its ENRICHED translations.
const ENRICHED_SEPARATOR: char = '\x1d';

/// An event's identity: the kernel stamps every record of one event with the same time and
/// serial number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Stamp {
    pub secs: i64,
    pub millis: u32,
    pub serial: u64,
}

/// One parsed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub kind: String,
    pub stamp: Stamp,
    /// The fields as written, hex left alone: only the reader knows which fields are
    /// encoded, since `uid=1000` also looks like hex.
    pub fields: HashMap<String, Value>,
}

/// A field's value and whether it was in quotes (then it is text, whatever it looks like).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    pub text: String,
    pub quoted: bool,
}

/// Why a line is not an audit record.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("no `type=` at its start")]
    NoType,
    #[error("no `msg=audit(SECONDS.MILLIS:SERIAL):` stamp after the type")]
    NoStamp,
}

impl Record {
    /// Parses one line of audit.log.
    pub fn parse(line: &str) -> Result<Self, LineError> {
        let line = line.split(ENRICHED_SEPARATOR).next().unwrap_or_default();
        let rest = line.strip_prefix("type=").ok_or(LineError::NoType)?;
        let (kind, rest) = rest.split_once(' ').ok_or(LineError::NoStamp)?;
        let rest = rest.strip_prefix("msg=audit(").ok_or(LineError::NoStamp)?;
        let (stamp, rest) = rest.split_once("):").ok_or(LineError::NoStamp)?;
        let stamp = parse_stamp(stamp).ok_or(LineError::NoStamp)?;
        Ok(Self {
            kind: kind.to_owned(),
            stamp,
            fields: fields(rest).collect(),
        })
    }

    /// A field a process could choose, decoded: the text between the quotes, or the bytes
    /// the hex spells (lossily as UTF-8). `None` when absent or `(null)`.
    pub fn untrusted(&self, name: &str) -> Option<String> {
        self.fields.get(name).and_then(decode_untrusted)
    }

    /// A numeric field.
    pub fn number<T: std::str::FromStr>(&self, name: &str) -> Option<T> {
        self.fields.get(name).and_then(|v| v.text.parse().ok())
    }
}

/// `1764468000.123:4567`.
fn parse_stamp(text: &str) -> Option<Stamp> {
    let (time, serial) = text.split_once(':')?;
    let (secs, millis) = time.split_once('.')?;
    Some(Stamp {
        secs: secs.parse().ok()?,
        millis: millis.parse().ok()?,
        serial: serial.parse().ok()?,
    })
}

/// The `key=value` pairs of a record's body. Values are bare, in double quotes, or (in the
/// `msg='...'` of records from user space) in single quotes holding spaces; the single-quoted
/// text is itself a list of pairs, which are returned in its place.
fn fields(body: &str) -> impl Iterator<Item = (String, Value)> + '_ {
    let mut rest = body.trim_start();
    let mut pending: Vec<(String, Value)> = Vec::new();
    std::iter::from_fn(move || loop {
        if let Some(pair) = pending.pop() {
            return Some(pair);
        }
        rest = rest.trim_start();
        if rest.is_empty() {
            return None;
        }
        let Some((name, after)) = rest.split_once('=') else {
            rest = "";
            return None;
        };
        let (value, quoted, after) = match after.chars().next() {
            Some(quote @ ('"' | '\'')) => {
                let inner = &after[1..];
                let end = inner.find(quote).unwrap_or(inner.len());
                (&inner[..end], true, inner.get(end + 1..).unwrap_or(""))
            }
            _ => {
                let (value, after) = after.split_at(after.find(' ').unwrap_or(after.len()));
                (value, false, after)
            }
        };
        rest = after;
        if is_nested_list(name, value) {
            let mut inner: Vec<_> = fields(value).collect();
            inner.reverse();
            pending = inner;
            continue;
        }
        let value = Value {
            text: value.to_owned(),
            quoted,
        };
        return Some((name.to_owned(), value));
    })
}

/// `msg='op=... acct="x" exe="/usr/bin/sudo"'`: user-space records nest their fields.
fn is_nested_list(name: &str, value: &str) -> bool {
    name == "msg" && value.contains('=')
}

/// Decodes one untrusted value as the kernel wrote it (see the module doc): quoted text
/// stays, bare uppercase hex becomes its bytes.
pub fn decode_untrusted(value: &Value) -> Option<String> {
    if value.quoted {
        return Some(value.text.clone());
    }
    if value.text == "(null)" || value.text == "(none)" {
        return None;
    }
    Some(match decode_hex(&value.text) {
        Some(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        None => value.text.clone(),
    })
}

/// The bytes of an encoded value, `None` when it is not audit's hex (odd length, or a digit
/// outside 0-9A-F: audit writes uppercase, so lowercase text like `cafe` stays text).
pub fn decode_hex(value: &str) -> Option<Vec<u8>> {
    let upper = value
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b));
    if value.is_empty() || !upper {
        return None;
    }
    hex::decode(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_syscall_line_with_its_enriched_part() {
        let line = "type=SYSCALL msg=audit(1764468000.123:4567): arch=c000003e syscall=59 \
                    success=yes exit=0 a0=55d0 ppid=812 pid=990 auid=4294967295 uid=1001 \
                    comm=\"true\" exe=\"/usr/bin/true\" key=\"clawfort-exec\"\x1dARCH=x86_64 \
                    SYSCALL=execve UID=\"openclaw\"";
        let r = Record::parse(line).unwrap();
        assert_eq!(r.kind, "SYSCALL");
        assert_eq!(
            r.stamp,
            Stamp {
                secs: 1764468000,
                millis: 123,
                serial: 4567
            }
        );
        assert_eq!(r.number::<u32>("pid"), Some(990));
        assert_eq!(r.untrusted("exe").as_deref(), Some("/usr/bin/true"));
        assert_eq!(r.untrusted("key").as_deref(), Some("clawfort-exec"));
        assert!(
            !r.fields.contains_key("UID"),
            "the enriched part is dropped"
        );
    }

    #[test]
    fn hex_values_decode_and_quoted_ones_stay() {
        let r = Record::parse(
            "type=EXECVE msg=audit(1.002:3): argc=3 a0=\"bash\" a1=\"-c\" a2=6563686F206869",
        )
        .unwrap();
        assert_eq!(r.untrusted("a0").as_deref(), Some("bash"));
        assert_eq!(r.untrusted("a2").as_deref(), Some("echo hi"));
        assert_eq!(r.stamp.millis, 2);
    }

    #[test]
    fn user_space_records_nest_their_fields_in_single_quotes() {
        let r = Record::parse(
            "type=USER_CMD msg=audit(1764468001.5:77): pid=5 uid=1000 auid=1000 ses=3 \
             msg='cwd=\"/home/admin\" cmd=6C73202F726F6F74 exe=\"/usr/bin/sudo\" res=success'",
        )
        .unwrap();
        assert_eq!(r.untrusted("cmd").as_deref(), Some("ls /root"));
        assert_eq!(r.untrusted("res").as_deref(), Some("success"));
        assert_eq!(r.number::<u32>("uid"), Some(1000));
    }

    #[test]
    fn what_is_not_a_record_says_why() {
        assert_eq!(Record::parse("hello"), Err(LineError::NoType));
        assert_eq!(
            Record::parse("type=EOE msg=audit(x): "),
            Err(LineError::NoStamp)
        );
    }

    #[test]
    fn quoted_digits_lowercase_or_odd_hex_and_null_are_not_decoded() {
        let bare = |text: &str| Value {
            text: text.to_owned(),
            quoted: false,
        };
        let quoted = Value {
            text: "12".to_owned(),
            quoted: true,
        };
        assert_eq!(decode_untrusted(&quoted).as_deref(), Some("12"));
        assert_eq!(decode_untrusted(&bare("cafe")).as_deref(), Some("cafe"));
        assert_eq!(decode_untrusted(&bare("ABC")).as_deref(), Some("ABC"));
        assert_eq!(decode_untrusted(&bare("(null)")), None);
    }
}
