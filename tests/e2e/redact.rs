//! The last line of defence for the report: whatever a probe says, passing or failing, goes
//! through [`Redactions::apply`] before it is printed or written, so no secret of the run can
//! reach the console or the JSON report (a failing probe quotes what it saw, and what it saw
//! may be the secret it was guarding: a rogue command that did read `.env`, say).
//!
//! The probes keep the secrets off command lines themselves (stdin, files); this only
//! covers what they print.

use crate::fakes::Script;
use crate::probes::gateway::gateway_token;
use crate::Ctx;

/// Secrets shorter than this are not replaced (they would mangle ordinary text); none of the
/// run's secrets is anywhere near that short.
const SHORTEST_SECRET: usize = 16;

/// The run's secrets, each with the placeholder that replaces it.
pub struct Redactions {
    secrets: Vec<(String, &'static str)>,
}

impl Redactions {
    /// The gateway token of the guest under test (from its first-boot `.env`), and the API key
    /// and bot token the fakes expect. A secret that cannot be read now is named on stderr
    /// and left out: the probes that need it fail on their own.
    pub fn gather(ctx: &Ctx) -> Redactions {
        let mut secrets = Vec::new();
        match gateway_token(&ctx.testbed, &ctx.admin) {
            Ok(token) => secrets.push((token, "[gateway token]")),
            Err(err) => eprintln!("e2e: the gateway token is not redacted: {err:#}"),
        }
        match Script::read(&ctx.testbed.fakes) {
            Ok(script) => {
                secrets.push((script.model.api_key, "[api key]"));
                secrets.push((script.telegram.token, "[bot token]"));
            }
            Err(err) => eprintln!("e2e: the fakes' secrets are not redacted: {err:#}"),
        }
        Redactions::new(secrets)
    }

    fn new(mut secrets: Vec<(String, &'static str)>) -> Redactions {
        secrets.retain(|(secret, _)| secret.len() >= SHORTEST_SECRET);
        // A secret that contains another is replaced first, whole.
        secrets.sort_by_key(|(secret, _)| std::cmp::Reverse(secret.len()));
        Redactions { secrets }
    }

    pub fn apply(&self, text: &str) -> String {
        self.secrets
            .iter()
            .fold(text.to_owned(), |text, (secret, placeholder)| {
                text.replace(secret.as_str(), placeholder)
            })
    }
}
