//! The interactive side of `clawfort setup`: questions on the terminal, secrets read with
//! echo off (`rpassword`, from `/dev/tty`), answers checked at once and asked again when
//! they do not fit (a few times, then setup stops).
//!
//! Questions and progress go to stderr, so `--json` keeps stdout for the summary.

use std::io::{BufRead, ErrorKind, Write};

use super::plan::BadInput;

/// How many times a question is asked before setup gives up.
const ATTEMPTS: usize = 3;

/// Ctrl-D (or the end of piped input) at a question.
const INPUT_ENDED: &str = "the input ended before setup was complete; nothing was written";

/// Where answers come from: the terminal, or a script in tests.
pub trait Ask {
    /// A visible answer (without its line end). End of input is an error.
    fn line(&mut self, question: &str) -> anyhow::Result<String>;
    /// An answer typed without echo.
    fn hidden(&mut self, question: &str) -> anyhow::Result<String>;
    /// Text for the person (a heading, a hint, a result).
    fn say(&mut self, text: &str);
}

/// The terminal: stdin for lines, `/dev/tty` for hidden input, stderr for the questions.
pub struct Terminal;

impl Ask for Terminal {
    fn line(&mut self, question: &str) -> anyhow::Result<String> {
        eprint!("{question}");
        std::io::stderr().flush()?;
        let mut answer = String::new();
        if std::io::stdin().lock().read_line(&mut answer)? == 0 {
            // Ctrl-D leaves the cursor after the question.
            eprintln!();
            anyhow::bail!(INPUT_ENDED);
        }
        Ok(answer.trim_end_matches(['\r', '\n']).to_owned())
    }

    fn hidden(&mut self, question: &str) -> anyhow::Result<String> {
        // The prompt reads the terminal raw: Ctrl-C and Ctrl-D arrive as keys.
        match rpassword::prompt_password(question) {
            Ok(answer) => Ok(answer),
            Err(e) if e.kind() == ErrorKind::Interrupted => super::interrupt::interrupted(),
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
                eprintln!();
                anyhow::bail!(INPUT_ENDED)
            }
            Err(e) => anyhow::bail!("cannot read hidden input from the terminal: {e}"),
        }
    }

    fn say(&mut self, text: &str) {
        eprintln!("{text}");
    }
}

/// Asks `question` (showing `default` in brackets; an empty answer takes it) until `check`
/// accepts the answer.
pub fn ask<T>(
    ask: &mut dyn Ask,
    question: &str,
    default: Option<&str>,
    check: impl Fn(&str) -> Result<T, BadInput>,
) -> anyhow::Result<T> {
    let shown = match default {
        Some(d) if !d.is_empty() => format!("{question} [{d}]: "),
        _ => format!("{question}: "),
    };
    retry(ask, |ask| {
        let answer = ask.line(&shown)?;
        let answer = answer.trim();
        let answer = match (answer.is_empty(), default) {
            (true, Some(d)) => d,
            _ => answer,
        };
        Ok(check(answer))
    })
}

/// Asks for a secret with echo off until `check` accepts it.
pub fn ask_hidden<T>(
    ask: &mut dyn Ask,
    question: &str,
    check: impl Fn(&str) -> Result<T, BadInput>,
) -> anyhow::Result<T> {
    let shown = format!("{question}: ");
    retry(ask, |ask| {
        let answer = ask.hidden(&shown)?;
        Ok(check(answer.trim()))
    })
}

/// Offers numbered `choices`; returns the index picked (`default` on an empty answer).
pub fn choose(
    ask: &mut dyn Ask,
    question: &str,
    choices: &[String],
    default: usize,
) -> anyhow::Result<usize> {
    ask.say(question);
    for (i, choice) in choices.iter().enumerate() {
        ask.say(&format!("  {}) {choice}", i + 1));
    }
    let default_text = (default + 1).to_string();
    self::ask(ask, "Choose", Some(&default_text), |answer| {
        answer
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=choices.len()).contains(n))
            .map(|n| n - 1)
            .ok_or_else(|| BadInput(format!("answer with a number from 1 to {}", choices.len())))
    })
}

fn retry<T>(
    ask: &mut dyn Ask,
    mut once: impl FnMut(&mut dyn Ask) -> anyhow::Result<Result<T, BadInput>>,
) -> anyhow::Result<T> {
    for attempt in 1..=ATTEMPTS {
        match once(ask)? {
            Ok(value) => return Ok(value),
            Err(problem) if attempt < ATTEMPTS => ask.say(&format!("  {problem}")),
            Err(problem) => return Err(problem.into()),
        }
    }
    unreachable!("the last attempt returns")
}

/// Scripted answers, for tests.
#[cfg(test)]
pub struct Script {
    pub answers: std::collections::VecDeque<String>,
    pub shown: Vec<String>,
}

#[cfg(test)]
impl Script {
    pub fn new(answers: &[&str]) -> Self {
        Self {
            answers: answers.iter().map(|a| a.to_string()).collect(),
            shown: Vec::new(),
        }
    }

    fn next(&mut self, question: &str) -> anyhow::Result<String> {
        self.shown.push(question.to_owned());
        self.answers
            .pop_front()
            .ok_or_else(|| anyhow::anyhow!("no scripted answer for {question:?}"))
    }
}

#[cfg(test)]
impl Ask for Script {
    fn line(&mut self, question: &str) -> anyhow::Result<String> {
        self.next(question)
    }

    fn hidden(&mut self, question: &str) -> anyhow::Result<String> {
        self.next(question)
    }

    fn say(&mut self, text: &str) {
        self.shown.push(text.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::setup::plan;

    #[test]
    fn defaults_retries_and_giving_up() {
        let mut script = Script::new(&["", "two words", "gpt-4.1"]);
        let model = ask(&mut script, "Model", Some("m1"), plan::model).unwrap();
        assert_eq!(model, "m1");
        let model = ask(&mut script, "Model", None, plan::model).unwrap();
        assert_eq!(model, "gpt-4.1");
        assert!(
            script.shown.iter().any(|s| s.contains("without spaces")),
            "{:?}",
            script.shown
        );

        let mut script = Script::new(&["x", "y", "z"]);
        let e = ask(&mut script, "Owner", None, plan::owner).unwrap_err();
        assert!(e.to_string().contains("numeric Telegram user id"), "{e}");
    }

    #[test]
    fn a_menu_takes_a_number_or_the_default() {
        let choices = vec!["a".to_owned(), "b".to_owned()];
        let mut script = Script::new(&["", "3", "2"]);
        assert_eq!(choose(&mut script, "Which?", &choices, 0).unwrap(), 0);
        assert_eq!(choose(&mut script, "Which?", &choices, 0).unwrap(), 1);
    }

    #[test]
    fn hidden_answers_are_checked_without_being_shown() {
        let mut script = Script::new(&["oops", "123456789:AAHtestTOKENtestTOKENtestTOKENtest12"]);
        let token = ask_hidden(&mut script, "Bot token", plan::bot_token).unwrap();
        assert!(token.expose().starts_with("123456789:"));
        assert!(!script.shown.iter().any(|s| s.contains("oops")));
    }
}
