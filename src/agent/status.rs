//! The agent's part of `GET /api/status` (and so of `clawfort status`): providers, models,
//! owners, the channel's health and the budget. Fixed facts are taken at start; the spend
//! and the channel state are read live. No secret is in it: provider addresses are shown
//! as scheme, host and port only (a `baseUrl` may carry credentials or a key in its path or
//! query), and the channel's errors never hold the token.

use std::sync::{Arc, OnceLock};

use serde::Serialize;
use serde_json::{json, Value};

use crate::provider::{ModelRef, ProviderSpec};
use crate::telegram::Health;
use crate::usage::{Budget, Ledger, Spend};

/// See the module docs. Shared by the agent (which fills in the ledger once it is open) and
/// the HTTP server.
#[derive(Debug)]
pub struct AgentStatus {
    providers: Vec<ProviderLine>,
    primary: String,
    fallbacks: Vec<String>,
    owners: Vec<String>,
    budget: Budget,
    ledger: OnceLock<Arc<Ledger>>,
    telegram: Option<Health>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ProviderLine {
    id: String,
    api: &'static str,
    /// Scheme, host and port of `baseUrl`.
    base_url: String,
}

impl AgentStatus {
    pub(super) fn new(
        specs: &[ProviderSpec],
        primary: &ModelRef,
        fallbacks: &[ModelRef],
        owners: Vec<String>,
        budget: Budget,
        telegram: Option<Health>,
    ) -> Self {
        let providers = specs
            .iter()
            .map(|p| ProviderLine {
                id: p.id.clone(),
                api: p.api.as_str(),
                base_url: origin(&p.base_url),
            })
            .collect();
        Self {
            providers,
            primary: primary.to_string(),
            fallbacks: fallbacks.iter().map(ToString::to_string).collect(),
            owners,
            budget,
            ledger: OnceLock::new(),
            telegram,
        }
    }

    pub(super) fn set_ledger(&self, ledger: Arc<Ledger>) {
        let _ = self.ledger.set(ledger);
    }

    /// The JSON of `/api/status`'s `agent` member.
    pub fn snapshot(&self) -> Value {
        let spend =
            |s: &Spend| json!({"usd": s.usd, "calls": s.calls, "unpricedCalls": s.unpriced_calls});
        let (today, month) = match self.ledger.get() {
            Some(ledger) => {
                let totals = ledger.totals();
                (spend(&totals.day.total), spend(&totals.month.total))
            }
            // The agent has not opened the ledger yet (or could not: see the log).
            None => (Value::Null, Value::Null),
        };
        let mut channels = serde_json::Map::new();
        if let Some(health) = &self.telegram {
            channels.insert("telegram".into(), json!(health.snapshot()));
        }
        json!({
            "providers": self.providers,
            "model": {"primary": self.primary, "fallbacks": self.fallbacks},
            "owners": self.owners,
            "channels": channels,
            "budget": {
                "dailyUsd": self.budget.daily_usd,
                "monthlyUsd": self.budget.monthly_usd,
                "today": today,
                "month": month,
            },
        })
    }
}

/// `scheme://host[:port]` of `url`, for showing a provider address without what a URL may
/// carry in its user info, path or query.
pub(crate) fn origin(url: &str) -> String {
    let Ok(uri) = url.parse::<hyper::Uri>() else {
        return "(unparsable baseUrl)".to_owned();
    };
    match (uri.scheme_str(), uri.host()) {
        (Some(scheme), Some(host)) => match uri.port_u16() {
            Some(port) => format!("{scheme}://{host}:{port}"),
            None => format!("{scheme}://{host}"),
        },
        _ => "(unparsable baseUrl)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::origin;

    #[test]
    fn only_scheme_host_and_port_are_shown() {
        assert_eq!(
            origin("https://user:pw@api.example.com/v1?key=abc"),
            "https://api.example.com"
        );
        assert_eq!(origin("http://127.0.0.1:8000/v1"), "http://127.0.0.1:8000");
        assert_eq!(origin("not a url"), "(unparsable baseUrl)");
    }
}
