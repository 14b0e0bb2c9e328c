//! The flags of `clawfort setup`, and how flags, the existing config, the presets and (on a
//! terminal) the person's answers make a [`Plan`].

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use super::plan::{self, bad, BadInput, Existing, Plan, DEFAULT_API_ROOT, PRESETS};
use super::prompts::{self, Ask};
use crate::provider::Api;

/// The flags of `clawfort setup` (its help text is in `cli`).
#[derive(Args, Debug, Default)]
pub struct SetupArgs {
    /// Never ask: take every value from the flags.
    #[arg(long)]
    pub non_interactive: bool,
    /// The provider's wire protocol.
    #[arg(long, value_enum, value_name = "API")]
    pub api: Option<ApiArg>,
    /// The provider's key under models.providers (default: anthropic or openai, or the
    /// preset the base URL is for).
    #[arg(long, value_name = "ID")]
    pub provider_id: Option<String>,
    /// The provider's base URL (default https://api.anthropic.com or
    /// https://api.openai.com/v1; OpenAI-compatible URLs end in /v1).
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,
    /// The model id, as the provider names it (e.g. claude-sonnet-4-5, gpt-4.1-mini).
    #[arg(long, value_name = "ID")]
    pub model: Option<String>,
    /// A file holding the API key (first line), or - for stdin. Never the key itself as a
    /// flag. May be left out for a server on plain http:// that needs no key.
    #[arg(long, value_name = "PATH|-")]
    pub api_key_file: Option<PathBuf>,
    /// A file holding the Telegram bot token from @BotFather (first line), or - for stdin.
    #[arg(long, value_name = "PATH|-")]
    pub bot_token_file: Option<PathBuf>,
    /// The Telegram Bot API root (default https://api.telegram.org).
    #[arg(long, value_name = "URL")]
    pub telegram_api_root: Option<String>,
    /// The owner's numeric Telegram user id (approved at once; may use /stop, /new,
    /// /status). Repeatable.
    #[arg(long = "owner", value_name = "TELEGRAM_USER_ID")]
    pub owners: Vec<String>,
    /// Daily spend cap in US dollars (budget.dailyUsd).
    #[arg(long, value_name = "USD", allow_negative_numbers = true)]
    pub daily_usd: Option<f64>,
    /// Monthly spend cap in US dollars (budget.monthlyUsd).
    #[arg(long, value_name = "USD", allow_negative_numbers = true)]
    pub monthly_usd: Option<f64>,
    /// Do not restart the services (the new settings apply at the gateway's next start).
    #[arg(long)]
    pub no_restart: bool,
    /// Write even when a check fails or cannot run. Risky: a wrong key or bot token is
    /// then only found when the gateway runs (a rejected key makes every answer an error
    /// message; a rejected bot token stops the Telegram channel).
    #[arg(long)]
    pub skip_checks: bool,
    /// Print a JSON summary on stdout (questions and progress go to stderr).
    #[arg(long)]
    pub json: bool,
}

/// `--api`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ApiArg {
    AnthropicMessages,
    OpenaiCompletions,
}

impl From<ApiArg> for Api {
    fn from(api: ApiArg) -> Self {
        match api {
            ApiArg::AnthropicMessages => Api::AnthropicMessages,
            ApiArg::OpenaiCompletions => Api::OpenAiCompletions,
        }
    }
}

/// Where answers come from: the flags alone, or the flags then a person.
pub enum Source<'a> {
    Flags,
    Person(&'a mut dyn Ask),
}

impl SetupArgs {
    /// Whether setup may ask: not `--non-interactive`, and stdin is a terminal.
    pub fn interactive(&self) -> bool {
        !self.non_interactive && std::io::stdin().is_terminal()
    }

    /// Checks the flags that need no answer and no file (`-` used at most once, and only
    /// from a pipe).
    pub fn check(&self) -> Result<(), BadInput> {
        let dash = |p: &Option<PathBuf>| p.as_deref() == Some(Path::new("-"));
        if dash(&self.api_key_file) && dash(&self.bot_token_file) {
            return Err(bad(
                "only one of --api-key-file and --bot-token-file can be - (stdin); put the \
                 other secret in a file (mode 600)",
            ));
        }
        if (dash(&self.api_key_file) || dash(&self.bot_token_file))
            && std::io::stdin().is_terminal()
        {
            return Err(bad(
                "- reads a secret from a pipe, and stdin is a terminal (it would echo): leave \
                 the flag out and setup asks with hidden input, or give a file",
            ));
        }
        Ok(())
    }

    /// The plan from the flags, the existing config and the presets, asking the person
    /// for what is missing when there is one.
    pub fn plan(&self, existing: &Existing, mut source: Source) -> anyhow::Result<Plan> {
        let (api, preset) = match (self.api, &mut source) {
            (Some(api), _) => {
                let api = Api::from(api);
                // The preset the base URL or the provider id names, else the api's first.
                let from_url = match &self.base_url {
                    Some(url) => plan::preset_for_url(api, &plan::url("--base-url", url)?),
                    None => None,
                };
                let from_id = self
                    .provider_id
                    .as_deref()
                    .and_then(|id| PRESETS.iter().find(|p| p.api == api && p.provider_id == id));
                let preset = from_url
                    .or(from_id)
                    .unwrap_or_else(|| plan::default_preset(api));
                (api, Some(preset))
            }
            (None, Source::Person(ask)) => {
                let mut choices: Vec<String> = PRESETS
                    .iter()
                    .map(|p| format!("{} ({})", p.name, p.api.as_str()))
                    .collect();
                choices.push(
                    "Another OpenAI-compatible server (vLLM, llama.cpp, LM Studio...)".into(),
                );
                choices.push("Another Anthropic-compatible server or proxy".into());
                let pick = prompts::choose(*ask, "Which model provider?", &choices, 0)?;
                match pick.checked_sub(PRESETS.len()) {
                    None => (PRESETS[pick].api, Some(&PRESETS[pick])),
                    Some(0) => (Api::OpenAiCompletions, None),
                    Some(_) => (Api::AnthropicMessages, None),
                }
            }
            (None, Source::Flags) => {
                return Err(bad(
                    "--api is required with --non-interactive: anthropic-messages or \
                     openai-completions",
                )
                .into())
            }
        };

        let provider_id = match (&self.provider_id, preset, &mut source) {
            (Some(id), _, _) => plan::provider_id(id)?,
            (None, Some(p), _) => p.provider_id.to_owned(),
            (None, None, Source::Person(ask)) => prompts::ask(
                *ask,
                "A short name for this provider",
                Some("custom"),
                plan::provider_id,
            )?,
            (None, None, Source::Flags) => unreachable!("without --api there are no flags alone"),
        };

        let known_url = existing
            .base_url(&provider_id, api)
            .or_else(|| preset.map(|p| p.base_url.to_owned()));
        let base_url = match (&self.base_url, &mut source) {
            (Some(url), _) => plan::url("--base-url", url)?,
            (None, Source::Person(ask)) => {
                prompts::ask(*ask, "Base URL", known_url.as_deref(), |answer| {
                    plan::url("the base URL", answer)
                })?
            }
            (None, Source::Flags) => match known_url {
                Some(url) => plan::url("--base-url", &url)?,
                None => return Err(bad("--base-url is required").into()),
            },
        };

        let model = match (&self.model, &mut source) {
            (Some(model), _) => plan::model(model)?,
            (None, Source::Person(ask)) => {
                prompts::ask(*ask, "Model", preset.map(|p| p.model), plan::model)?
            }
            (None, Source::Flags) => {
                return Err(bad(
                    "--model is required with --non-interactive: the provider's model id \
                     (e.g. claude-sonnet-4-5, gpt-4.1-mini)",
                )
                .into())
            }
        };

        // A server on plain http:// (Ollama, llama.cpp on this machine) usually has no key.
        let key_optional = base_url.starts_with("http://");
        let api_key =
            match (&self.api_key_file, &mut source) {
                (Some(path), _) => Some(plan::api_key(&read_secret(path, "--api-key-file")?)?),
                (None, Source::Person(ask)) => {
                    let question = if key_optional {
                        "API key (input hidden; Enter if the server needs none)"
                    } else {
                        "API key (input hidden)"
                    };
                    prompts::ask_hidden(*ask, question, |answer| {
                        if answer.is_empty() && key_optional {
                            Ok(None)
                        } else {
                            plan::api_key(answer).map(Some)
                        }
                    })?
                }
                (None, Source::Flags) if key_optional => None,
                (None, Source::Flags) => return Err(bad(
                    "--api-key-file is required with --non-interactive: a file holding the API \
                     key, or - to read it from stdin",
                )
                .into()),
            };

        let bot_token = match (&self.bot_token_file, &mut source) {
            (Some(path), _) => plan::bot_token(&read_secret(path, "--bot-token-file")?)?,
            (None, Source::Person(ask)) => prompts::ask_hidden(
                *ask,
                "Telegram bot token from @BotFather (input hidden)",
                plan::bot_token,
            )?,
            (None, Source::Flags) => {
                return Err(bad(
                    "--bot-token-file is required with --non-interactive: a file holding the \
                     bot token from @BotFather, or - to read it from stdin",
                )
                .into())
            }
        };

        let api_root = match (&self.telegram_api_root, existing.api_root()) {
            (Some(root), _) => plan::url("--telegram-api-root", root)?,
            (None, Some(root)) => plan::url("channels.telegram.apiRoot in openclaw.json", &root)?,
            (None, None) => DEFAULT_API_ROOT.to_owned(),
        };

        let mut owners = self
            .owners
            .iter()
            .map(|o| plan::owner(o))
            .collect::<Result<Vec<_>, _>>()?;
        if let (true, Source::Person(ask)) = (owners.is_empty(), &mut source) {
            let owner = prompts::ask(
                *ask,
                "Your numeric Telegram user id, to be the owner (optional; @userinfobot tells it)",
                None,
                |answer| match answer {
                    "" => Ok(None),
                    id => plan::owner(id).map(Some),
                },
            )?;
            owners.extend(owner);
        }

        let daily_usd = self.budget("--daily-usd", self.daily_usd, "Daily", &mut source)?;
        let monthly_usd = self.budget("--monthly-usd", self.monthly_usd, "Monthly", &mut source)?;

        Ok(Plan {
            api,
            provider_id,
            base_url,
            model,
            api_key,
            bot_token,
            api_root,
            owners,
            daily_usd,
            monthly_usd,
        })
    }

    fn budget(
        &self,
        flag: &str,
        given: Option<f64>,
        period: &str,
        source: &mut Source,
    ) -> anyhow::Result<Option<f64>> {
        match (given, source) {
            (Some(usd), _) => Ok(Some(plan::usd(flag, usd)?)),
            (None, Source::Person(ask)) => prompts::ask(
                *ask,
                &format!("{period} spend cap in US dollars (optional)"),
                None,
                |answer| match answer {
                    "" => Ok(None),
                    text => text
                        .trim_start_matches('$')
                        .parse::<f64>()
                        .map_err(|_| bad(format!("{text:?} is not a number of dollars")))
                        .and_then(|usd| plan::usd(flag, usd))
                        .map(Some),
                },
            ),
            (None, Source::Flags) => Ok(None),
        }
    }
}

/// The first line of a secret file, or of stdin for `-`.
pub(crate) fn read_secret(path: &Path, flag: &str) -> Result<String, BadInput> {
    const MAX: u64 = 64 * 1024;
    let mut text = String::new();
    let read = if path == Path::new("-") {
        std::io::stdin().lock().take(MAX).read_to_string(&mut text)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(MAX).read_to_string(&mut text))
    };
    let shown = if path == Path::new("-") {
        "stdin".to_owned()
    } else {
        path.display().to_string()
    };
    read.map_err(|e| bad(format!("{flag}: cannot read {shown}: {e}")))?;
    let first = text.lines().next().unwrap_or_default().trim().to_owned();
    if first.is_empty() {
        return Err(bad(format!(
            "{flag}: {shown} is empty (the secret goes on its first line)"
        )));
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::setup::prompts::Script;

    const TOKEN: &str = "123456789:AAHtestTOKENtestTOKENtestTOKENtest12";

    #[test]
    fn flags_alone_name_what_is_missing() {
        let existing = serde_json::json!({});
        let existing = Existing(&existing);
        let e = SetupArgs::default()
            .plan(&existing, Source::Flags)
            .unwrap_err();
        assert!(e.to_string().contains("--api is required"), "{e}");
        let args = SetupArgs {
            api: Some(ApiArg::AnthropicMessages),
            ..SetupArgs::default()
        };
        let e = args.plan(&existing, Source::Flags).unwrap_err();
        assert!(e.to_string().contains("--model is required"), "{e}");
        let args = SetupArgs {
            api: Some(ApiArg::AnthropicMessages),
            model: Some("m".into()),
            ..SetupArgs::default()
        };
        let e = args.plan(&existing, Source::Flags).unwrap_err();
        assert!(e.to_string().contains("--api-key-file is required"), "{e}");
    }

    #[test]
    fn a_person_picks_a_preset_and_answers_the_rest() {
        let existing = serde_json::json!({});
        let mut script = Script::new(&[
            "3", // OpenRouter
            "",  // its base URL
            "",  // its suggested model
            "sk-or-v1-0123456789abcdef",
            TOKEN,
            "42",
            "",
            "30",
        ]);
        let plan = SetupArgs::default()
            .plan(&Existing(&existing), Source::Person(&mut script))
            .unwrap();
        assert_eq!(plan.api, Api::OpenAiCompletions);
        assert_eq!(plan.provider_id, "openrouter");
        assert_eq!(plan.base_url, "https://openrouter.ai/api/v1");
        assert_eq!(plan.model, "anthropic/claude-sonnet-4.5");
        assert_eq!(plan.key_var(), "OPENROUTER_API_KEY");
        assert_eq!(plan.owners, ["42"]);
        assert_eq!((plan.daily_usd, plan.monthly_usd), (None, Some(30.0)));
        assert!(script.answers.is_empty());
    }

    #[test]
    fn a_local_server_needs_no_key_and_flags_skip_their_questions() {
        let existing = serde_json::json!({});
        let mut script = Script::new(&["", TOKEN]);
        let args = SetupArgs {
            api: Some(ApiArg::OpenaiCompletions),
            base_url: Some("http://127.0.0.1:11434/v1/".into()),
            model: Some("llama3.2".into()),
            owners: vec!["7".into()],
            daily_usd: Some(1.0),
            monthly_usd: Some(10.0),
            ..SetupArgs::default()
        };
        let plan = args
            .plan(&Existing(&existing), Source::Person(&mut script))
            .unwrap();
        assert_eq!(plan.provider_id, "ollama");
        assert!(plan.api_key.is_none());
        assert_eq!(plan.base_url, "http://127.0.0.1:11434/v1");
    }

    #[test]
    fn a_preset_provider_id_brings_its_base_url() {
        let existing = serde_json::json!({});
        let args = SetupArgs {
            api: Some(ApiArg::OpenaiCompletions),
            provider_id: Some("openrouter".into()),
            ..SetupArgs::default()
        };
        let mut script = Script::new(&["", "", "sk-or-v1-0123456789abcdef", TOKEN, "", "", ""]);
        let plan = args
            .plan(&Existing(&existing), Source::Person(&mut script))
            .unwrap();
        assert_eq!(plan.base_url, "https://openrouter.ai/api/v1");
        assert_eq!(plan.model, "anthropic/claude-sonnet-4.5");
    }
}
