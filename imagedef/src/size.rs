//! Disk sizes as the definition and `--size` write them: a size such as `4G`, or `auto`.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

use crate::parse_size;

/// A disk size: `auto` (the root content plus a margin, worked out by the assemble stage) or a
/// byte count written with a binary unit (`4G`, `3584M`). Parsed once, where it is read, so no
/// stage compares against the `"auto"` text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Size {
    Auto,
    Bytes(u64),
}

impl Size {
    /// The requested byte count, `None` for `auto`.
    pub fn bytes(self) -> Option<u64> {
        match self {
            Size::Auto => None,
            Size::Bytes(bytes) => Some(bytes),
        }
    }
}

impl FromStr for Size {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Self> {
        if text.trim() == "auto" {
            return Ok(Size::Auto);
        }
        Ok(Size::Bytes(parse_size(text).map_err(|err| {
            anyhow::anyhow!("{err:#}, or `auto` for the root content plus a margin")
        })?))
    }
}

impl TryFrom<String> for Size {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
            .map_err(|err: anyhow::Error| format!("{err:#}"))
    }
}

/// `auto`, or the byte count: what a stage key records (so `4G` and `4096M` are one size).
impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Size::Auto => f.write_str("auto"),
            Size::Bytes(bytes) => write!(f, "{bytes}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_and_sizes_parse_and_junk_names_both_forms() {
        assert_eq!("auto".parse::<Size>().unwrap(), Size::Auto);
        assert_eq!("4G".parse::<Size>().unwrap(), Size::Bytes(4 << 30));
        let err = format!("{:#}", "4X".parse::<Size>().unwrap_err());
        assert!(
            err.contains("unknown unit") && err.contains("`auto`"),
            "{err}"
        );
    }
}
