//! `${VAR}` substitution in config strings.
//!
//! Secrets belong in the environment or in `~/.openclaw/.env`, never in the config file
//! itself; the config names them as `${ANTHROPIC_API_KEY}`. A variable is looked up in the
//! process environment first (systemd `EnvironmentFile=`, a shell export), then in the
//! `.env` file. `$${` writes a literal `${`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::ConfigError;

/// Where `${VAR}` values come from: the process environment, then a `.env` file. `Debug`
/// names the variables, never their values.
#[derive(Default, Clone)]
pub struct EnvSource {
    dotenv: HashMap<String, String>,
    dotenv_path: Option<PathBuf>,
    /// Tests and fuzzing pass their own variables instead of the process environment.
    overrides: Option<HashMap<String, String>>,
}

impl std::fmt::Debug for EnvSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.dotenv.keys().collect();
        names.sort();
        f.debug_struct("EnvSource")
            .field("dotenv_path", &self.dotenv_path)
            .field("dotenv_names", &names)
            .field("fixed", &self.overrides.is_some())
            .finish()
    }
}

impl EnvSource {
    /// Reads `path` (a `.env` file) if it exists; a file that cannot be parsed is an error
    /// naming the file and line, because a silently skipped secret would fail later and
    /// less clearly.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut dotenv = HashMap::new();
        match dotenvy::from_path_iter(path) {
            Ok(iter) => {
                for item in iter {
                    let (key, value) = item.map_err(|e| ConfigError::File {
                        file: path.to_path_buf(),
                        message: format!("cannot parse the .env file: {e}"),
                    })?;
                    dotenv.insert(key, value);
                }
            }
            Err(dotenvy::Error::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ConfigError::File {
                    file: path.to_path_buf(),
                    message: format!("cannot read the .env file: {e}"),
                })
            }
        }
        Ok(Self {
            dotenv,
            dotenv_path: Some(path.to_path_buf()),
            overrides: None,
        })
    }

    /// A source with exactly these variables and nothing from the process environment.
    pub fn fixed(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        Self {
            overrides: Some(vars.into_iter().collect()),
            ..Self::default()
        }
    }

    /// The value of `name`: process environment first, then the `.env` file.
    pub fn get(&self, name: &str) -> Option<String> {
        if let Some(vars) = &self.overrides {
            return vars.get(name).cloned();
        }
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .or_else(|| self.dotenv.get(name).cloned())
    }

    fn describe(&self) -> String {
        match &self.dotenv_path {
            Some(path) => format!("neither in the environment nor in {}", path.display()),
            None => "not provided".to_string(),
        }
    }
}

/// True when `raw` is nothing but `${VAR}` references (how a secret should be written).
pub fn is_reference_only(raw: &str) -> bool {
    let mut rest = raw.trim();
    if rest.is_empty() {
        return false;
    }
    while let Some(after) = rest.strip_prefix("${") {
        match after.find('}') {
            Some(end) if is_var_name(&after[..end]) => rest = &after[end + 1..],
            _ => return false,
        }
    }
    rest.is_empty()
}

/// Replaces every `${VAR}` in `raw`; `key_path` names the config key in errors.
pub fn substitute(raw: &str, key_path: &str, env: &EnvSource) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let end = tail.find('}').ok_or_else(|| {
                ConfigError::key(
                    key_path,
                    "`${` without a closing `}`; write `$${` for a literal `${`",
                )
            })?;
            let name = &tail[..end];
            if !is_var_name(name) {
                return Err(ConfigError::key(
                    key_path,
                    format!(
                        "`${{{name}}}` is not a valid variable reference: names are letters, \
                         digits and `_`, not starting with a digit"
                    ),
                ));
            }
            let value = env.get(name).ok_or_else(|| {
                ConfigError::key(
                    key_path,
                    format!(
                        "environment variable {name} is not set ({}); set it or change the \
                         reference",
                        env.describe()
                    ),
                )
            })?;
            out.push_str(&value);
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

pub(super) fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> EnvSource {
        EnvSource::fixed([("KEY".to_string(), "sk-123".to_string())])
    }

    #[test]
    fn substitutes_and_escapes() {
        assert_eq!(substitute("a${KEY}b", "p", &env()).unwrap(), "ask-123b");
        assert_eq!(substitute("$${KEY}", "p", &env()).unwrap(), "${KEY}");
        assert_eq!(substitute("cost $5", "p", &env()).unwrap(), "cost $5");
    }

    #[test]
    fn missing_variable_names_the_key() {
        let err = substitute("${NOPE}", "providers.anthropic.apiKey", &env()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("providers.anthropic.apiKey"), "{text}");
        assert!(text.contains("NOPE"), "{text}");
    }

    #[test]
    fn reference_only_detection() {
        assert!(is_reference_only("${A}"));
        assert!(is_reference_only("${A}${B_2}"));
        assert!(!is_reference_only("sk-ant-${A}"));
        assert!(!is_reference_only("literal"));
        assert!(!is_reference_only(""));
    }
}
