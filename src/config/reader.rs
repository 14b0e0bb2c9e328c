//! Reading the keys clawfort implements out of a JSON tree.
//!
//! A `Section` is one object of the config with its key path (`channels.telegram`). Readers
//! never stop at the first problem: a wrong type or value is recorded in the shared
//! `Context` and the reader goes on with the default, so one run names every error. Keys a
//! section holds but nobody read are OpenClaw keys clawfort does not implement yet (the key
//! tree in `keys` has already refused everything else); `finish` records them for the one
//! start-up warning.

use std::cell::RefCell;

use serde_json::{Map, Value};

use super::env::{self, EnvSource};
use super::ConfigError;

/// Shared by every section of one parse.
pub struct Context<'e> {
    pub env: &'e EnvSource,
    /// Key paths whose secrets were written literally (the audit reports them).
    pub literal_secrets: RefCell<Vec<String>>,
    /// Every problem found so far; the parse fails if this is not empty at the end.
    pub errors: RefCell<Vec<ConfigError>>,
    /// OpenClaw keys present in the file that clawfort does not act on.
    pub unimplemented: RefCell<Vec<String>>,
}

impl<'e> Context<'e> {
    pub fn new(env: &'e EnvSource) -> Self {
        Self {
            env,
            literal_secrets: RefCell::default(),
            errors: RefCell::default(),
            unimplemented: RefCell::default(),
        }
    }

    pub fn error(&self, error: ConfigError) {
        self.errors.borrow_mut().push(error);
    }
}

/// One JSON object of the config, with the key path that leads to it.
pub struct Section<'a, 'e> {
    path: String,
    map: &'a Map<String, Value>,
    read: Vec<&'static str>,
    ctx: &'a Context<'e>,
}

impl<'a, 'e> Section<'a, 'e> {
    /// The top-level object; anything else at the top is an error.
    pub fn root(value: &'a Value, ctx: &'a Context<'e>) -> Option<Self> {
        Self::new(String::new(), value, ctx)
    }

    fn new(path: String, value: &'a Value, ctx: &'a Context<'e>) -> Option<Self> {
        match value {
            Value::Object(map) => Some(Self {
                path,
                map,
                read: Vec::new(),
                ctx,
            }),
            other => {
                let at = if path.is_empty() {
                    "(top level)"
                } else {
                    &path
                };
                ctx.error(ConfigError::key(
                    at,
                    format!("expected an object {{ ... }}, found {}", kind(other)),
                ));
                None
            }
        }
    }

    pub fn ctx(&self) -> &'a Context<'e> {
        self.ctx
    }

    /// The full key path of `key` inside this section.
    pub fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// Records a problem with `key` of this section.
    pub fn error(&self, key: &str, message: impl Into<String>) {
        self.ctx
            .error(ConfigError::key(&self.key_path(key), message));
    }

    /// The raw value of `key`, marking it read (`null` counts as absent).
    pub fn get(&mut self, key: &'static str) -> Option<&'a Value> {
        self.read.push(key);
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// Marks `key` read but reports it as not implemented yet: for typed settings that the
    /// next modules will act on.
    pub fn not_wired(&mut self, key: &'static str) {
        if self.map.contains_key(key) {
            self.ctx.unimplemented.borrow_mut().push(self.key_path(key));
        }
    }

    /// Reports this whole section as not implemented yet.
    pub fn not_wired_here(self) {
        self.ctx.unimplemented.borrow_mut().push(self.path);
    }

    fn wrong_type<T>(&self, key: &str, expected: &str, found: &Value) -> Option<T> {
        self.error(key, format!("expected {expected}, found {}", kind(found)));
        None
    }

    /// A string as written, `${VAR}` not substituted (for values resolved when used).
    pub fn raw_string(&mut self, key: &'static str) -> Option<&'a str> {
        match self.get(key)? {
            Value::String(raw) => Some(raw),
            other => self.wrong_type(key, "a string", other),
        }
    }

    /// A string, with `${VAR}` substituted.
    pub fn string(&mut self, key: &'static str) -> Option<String> {
        let raw = self.raw_string(key)?;
        env::substitute(raw, &self.key_path(key), self.ctx.env)
            .map_err(|e| self.ctx.error(e))
            .ok()
    }

    /// Remembers that `key` holds a literal (non-`${VAR}`) secret, for the audit.
    pub fn note_literal_secret(&self, key: &str) {
        if let Some(Value::String(raw)) = self.map.get(key) {
            if !env::is_reference_only(raw) {
                self.ctx
                    .literal_secrets
                    .borrow_mut()
                    .push(self.key_path(key));
            }
        }
    }

    /// A string holding a secret: like `string`, and remembers a literal value.
    pub fn secret(&mut self, key: &'static str) -> Option<String> {
        self.note_literal_secret(key);
        self.string(key)
    }

    /// True when `key` holds an object: OpenClaw's SecretRef form (`{source, provider, id}`)
    /// of a secret, which clawfort does not resolve.
    pub fn is_object(&self, key: &str) -> bool {
        matches!(self.map.get(key), Some(Value::Object(_)))
    }

    pub fn bool(&mut self, key: &'static str) -> Option<bool> {
        match self.get(key)? {
            Value::Bool(b) => Some(*b),
            other => self.wrong_type(key, "true or false", other),
        }
    }

    /// A whole number within `min..=max`.
    pub fn integer(&mut self, key: &'static str, min: u64, max: u64) -> Option<u64> {
        let value = self.get(key)?;
        let Value::Number(n) = value else {
            return self.wrong_type(key, "a number", value);
        };
        let number = n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                .map(|f| f as u64)
        });
        match number {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.error(
                    key,
                    format!("must be a whole number from {min} to {max}, found {value}"),
                );
                None
            }
        }
    }

    /// A finite number that is not negative.
    pub fn non_negative(&mut self, key: &'static str) -> Option<f64> {
        let value = self.get(key)?;
        match value.as_f64() {
            Some(f) if f.is_finite() && f >= 0.0 => Some(f),
            Some(_) => {
                self.error(key, format!("must be 0 or more, found {value}"));
                None
            }
            None => self.wrong_type(key, "a number", value),
        }
    }

    /// A list of strings, each with `${VAR}` substituted.
    pub fn strings(&mut self, key: &'static str) -> Option<Vec<String>> {
        let value = self.get(key)?;
        let Value::Array(items) = value else {
            return self.wrong_type(key, "a list [ ... ] of strings", value);
        };
        let path = self.key_path(key);
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let at = format!("{path}[{i}]");
            match item {
                Value::String(raw) => match env::substitute(raw, &at, self.ctx.env) {
                    Ok(s) => out.push(s),
                    Err(e) => self.ctx.error(e),
                },
                // OpenClaw allows numeric ids (Telegram user ids) in allow-lists.
                Value::Number(n) => out.push(n.to_string()),
                other => self.ctx.error(ConfigError::key(
                    &at,
                    format!("expected a string, found {}", kind(other)),
                )),
            }
        }
        Some(out)
    }

    /// One of a fixed set of string values.
    pub fn choice<T: Copy>(
        &mut self,
        key: &'static str,
        options: &[(&'static str, T)],
    ) -> Option<T> {
        let value = self.string(key)?;
        if let Some((_, v)) = options.iter().find(|(name, _)| *name == value) {
            return Some(*v);
        }
        let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
        let hint = did_you_mean(&value, &names)
            .map(|s| format!(" (did you mean \"{s}\"?)"))
            .unwrap_or_default();
        self.error(
            key,
            format!(
                "\"{value}\" is not allowed{hint}; use one of: {}",
                names.join(", ")
            ),
        );
        None
    }

    /// A nested object.
    pub fn section(&mut self, key: &'static str) -> Option<Section<'a, 'e>> {
        let value = self.get(key)?;
        Section::new(self.key_path(key), value, self.ctx)
    }

    /// An object whose keys are user-chosen names (`channels.<name>`), each an object.
    pub fn named_sections(&mut self, key: &'static str) -> Vec<(String, Section<'a, 'e>)> {
        let Some(value) = self.get(key) else {
            return Vec::new();
        };
        let path = self.key_path(key);
        let Value::Object(map) = value else {
            self.error(
                key,
                format!(
                    "expected an object {{ name: {{ ... }} }}, found {}",
                    kind(value)
                ),
            );
            return Vec::new();
        };
        map.iter()
            .filter_map(|(name, v)| {
                Section::new(format!("{path}.{name}"), v, self.ctx).map(|s| (name.clone(), s))
            })
            .collect()
    }

    /// A list of objects (`models.providers.<id>.models[]`).
    pub fn section_list(&mut self, key: &'static str) -> Vec<Section<'a, 'e>> {
        let Some(value) = self.get(key) else {
            return Vec::new();
        };
        let Value::Array(items) = value else {
            self.wrong_type::<()>(key, "a list [ ... ]", value);
            return Vec::new();
        };
        let path = self.key_path(key);
        items
            .iter()
            .enumerate()
            .filter_map(|(i, v)| Section::new(format!("{path}[{i}]"), v, self.ctx))
            .collect()
    }

    /// Records every key of this section that no reader asked for as not implemented.
    pub fn finish(self) {
        let mut unimplemented = self.ctx.unimplemented.borrow_mut();
        for key in self.map.keys() {
            if !self.read.contains(&key.as_str()) {
                unimplemented.push(self.key_path(key));
            }
        }
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

pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
