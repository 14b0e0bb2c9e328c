//! A key-path-aware reader over the parsed JSON5 tree.
//!
//! Serde's derive would give "invalid type" errors without saying *where*; this reader knows
//! the full key path of every value it reads (`channels.telegram.dmPolicy`), so each error
//! names the key to fix, and `finish` reports keys nobody asked for with a did-you-mean.

use std::cell::RefCell;

use serde_json::{Map, Value};

use super::env::{self, EnvSource};
use super::ConfigError;

/// Shared by every section of one parse: the variables for `${VAR}` and the key paths whose
/// secrets were written literally (the audit reports them).
pub struct Context<'e> {
    pub env: &'e EnvSource,
    pub literal_secrets: RefCell<Vec<String>>,
}

/// One JSON object of the config, with the key path that leads to it.
pub struct Section<'a, 'e> {
    path: String,
    map: &'a Map<String, Value>,
    known: Vec<&'static str>,
    ctx: &'a Context<'e>,
}

type Result<T> = std::result::Result<T, ConfigError>;

impl<'a, 'e> Section<'a, 'e> {
    /// The top-level object; anything else at the top is an error.
    pub fn root(value: &'a Value, ctx: &'a Context<'e>) -> Result<Self> {
        Self::new(String::new(), value, ctx)
    }

    fn new(path: String, value: &'a Value, ctx: &'a Context<'e>) -> Result<Self> {
        match value {
            Value::Object(map) => Ok(Self {
                path,
                map,
                known: Vec::new(),
                ctx,
            }),
            other => Err(ConfigError::key(
                if path.is_empty() {
                    "(top level)"
                } else {
                    &path
                },
                format!("expected an object {{ ... }}, found {}", kind(other)),
            )),
        }
    }

    /// The full key path of `key` inside this section.
    pub fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn get(&mut self, key: &'static str) -> Option<&'a Value> {
        self.known.push(key);
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn wrong_type(&self, key: &str, expected: &str, found: &Value) -> ConfigError {
        ConfigError::key(
            &self.key_path(key),
            format!("expected {expected}, found {}", kind(found)),
        )
    }

    /// A string, with `${VAR}` substituted.
    pub fn string(&mut self, key: &'static str) -> Result<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(raw)) => {
                env::substitute(raw, &self.key_path(key), self.ctx.env).map(Some)
            }
            Some(other) => Err(self.wrong_type(key, "a string", other)),
        }
    }

    /// A string holding a secret: like `string`, and remembers a literal (non-`${VAR}`)
    /// value so the audit can ask for it to move to the environment.
    pub fn secret(&mut self, key: &'static str) -> Result<Option<String>> {
        if let Some(Value::String(raw)) = self.map.get(key) {
            if !env::is_reference_only(raw) {
                self.ctx
                    .literal_secrets
                    .borrow_mut()
                    .push(self.key_path(key));
            }
        }
        self.string(key)
    }

    pub fn bool(&mut self, key: &'static str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.wrong_type(key, "true or false", other)),
        }
    }

    /// A whole number within `min..=max`.
    pub fn integer(&mut self, key: &'static str, min: u64, max: u64) -> Result<Option<u64>> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        let number = match value {
            Value::Number(n) => n.as_u64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                    .map(|f| f as u64)
            }),
            _ => None,
        };
        match (value, number) {
            (Value::Number(_), Some(n)) if (min..=max).contains(&n) => Ok(Some(n)),
            (Value::Number(_), _) => Err(ConfigError::key(
                &self.key_path(key),
                format!("must be a whole number from {min} to {max}, found {value}"),
            )),
            _ => Err(self.wrong_type(key, "a number", value)),
        }
    }

    /// A list of strings, each with `${VAR}` substituted.
    pub fn strings(&mut self, key: &'static str) -> Result<Option<Vec<String>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => {
                let path = self.key_path(key);
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| match item {
                        Value::String(raw) => {
                            env::substitute(raw, &format!("{path}[{i}]"), self.ctx.env)
                        }
                        other => Err(ConfigError::key(
                            &format!("{path}[{i}]"),
                            format!("expected a string, found {}", kind(other)),
                        )),
                    })
                    .collect::<Result<Vec<_>>>()
                    .map(Some)
            }
            Some(other) => Err(self.wrong_type(key, "a list [ ... ] of strings", other)),
        }
    }

    /// One of a fixed set of string values.
    pub fn choice<T: Copy>(
        &mut self,
        key: &'static str,
        options: &[(&'static str, T)],
    ) -> Result<Option<T>> {
        let Some(value) = self.string(key)? else {
            return Ok(None);
        };
        if let Some((_, v)) = options.iter().find(|(name, _)| *name == value) {
            return Ok(Some(*v));
        }
        let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
        let hint = did_you_mean(&value, &names)
            .map(|s| format!(" (did you mean \"{s}\"?)"))
            .unwrap_or_default();
        Err(ConfigError::key(
            &self.key_path(key),
            format!(
                "\"{value}\" is not allowed{hint}; use one of: {}",
                names.join(", ")
            ),
        ))
    }

    /// A nested object.
    pub fn section(&mut self, key: &'static str) -> Result<Option<Section<'a, 'e>>> {
        match self.get(key) {
            None => Ok(None),
            Some(value) => Section::new(self.key_path(key), value, self.ctx).map(Some),
        }
    }

    /// An object whose keys are user-chosen names (`channels.<name>`), each an object.
    pub fn named_sections(&mut self, key: &'static str) -> Result<Vec<(String, Section<'a, 'e>)>> {
        let Some(value) = self.get(key) else {
            return Ok(Vec::new());
        };
        let path = self.key_path(key);
        let Value::Object(map) = value else {
            return Err(ConfigError::key(
                &path,
                format!(
                    "expected an object {{ name: {{ ... }} }}, found {}",
                    kind(value)
                ),
            ));
        };
        map.iter()
            .map(|(name, v)| {
                Section::new(format!("{path}.{name}"), v, self.ctx).map(|s| (name.clone(), s))
            })
            .collect()
    }

    /// Fails on the first key that no reader asked for, suggesting the closest known key.
    pub fn finish(self) -> Result<()> {
        for key in self.map.keys() {
            if self.known.contains(&key.as_str()) {
                continue;
            }
            let hint = match did_you_mean(key, &self.known) {
                Some(s) => format!("did you mean `{}`?", self.key_path(s)),
                None => format!("known keys here: {}", self.known.join(", ")),
            };
            return Err(ConfigError::key(
                &self.key_path(key),
                format!("unknown key; {hint}"),
            ));
        }
        Ok(())
    }
}

/// The closest candidate to `input`, if any is close enough to be a plausible typo.
pub fn did_you_mean<'c>(input: &str, candidates: &[&'c str]) -> Option<&'c str> {
    let lower = input.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(&lower, &c.to_ascii_lowercase()), *c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
