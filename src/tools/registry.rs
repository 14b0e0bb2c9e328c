//! The tool interface: a [`Tool`] the model may call, and the [`Tools`] registry the agent
//! offers. A registry starts empty; `agent::service` fills it from the config.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::log::Execution;
use crate::provider::ToolSpec;
use crate::sessions::SessionKey;

/// What a tool run produced. `content` goes back to the model wrapped as untrusted data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolOutput {
    pub content: String,
    pub is_error: bool,
    /// Where and how the run happened, for the execution log; `None`: in the gateway's
    /// process, `ok` or `error` by `is_error` (the file tools).
    pub execution: Option<Execution>,
}

impl ToolOutput {
    pub fn ok(content: impl Into<String>) -> Self {
        Self {
            content: content.into(),
            is_error: false,
            execution: None,
        }
    }

    pub fn error(content: impl Into<String>) -> Self {
        Self {
            content: content.into(),
            is_error: true,
            execution: None,
        }
    }
}

/// A boxed tool future (object-safe form of `async fn`).
pub type ToolFuture<'a> = Pin<Box<dyn Future<Output = ToolOutput> + Send + 'a>>;

/// What a tool run knows of the turn that made the call. Cheap to clone: one per call.
#[derive(Debug, Clone)]
pub struct Call {
    /// The session whose turn made the call.
    pub session_key: SessionKey,
    /// The turn's deadline: the run must return by then.
    pub deadline: Instant,
    /// Fires when the turn is stopped (`/stop`, shutdown): the run must return promptly.
    pub cancel: CancellationToken,
    /// The turn's context holds untrusted content: a message from someone other than the
    /// owner, a group chat, or the output of a call whose tool [`Tool::taints`]. Exec
    /// approvals then ask about every command under `ask: "on-miss"` (a clawfort extension).
    pub tainted: bool,
}

/// One tool. `run` must return by `call.deadline` and promptly once `call.cancel` fires;
/// the loop also drops the future at either point, so a tool holding a child process must
/// kill it on drop.
pub trait Tool: Send + Sync {
    fn name(&self) -> &str;
    fn description(&self) -> &str;
    /// A JSON Schema object for the input.
    fn input_schema(&self) -> Value;
    fn run(&self, input: Value, call: Call) -> ToolFuture<'_>;
    /// Whether the output of this call is content from outside the owner's control (a
    /// fetched page, a file from outside the workspace), which taints the rest of the turn
    /// (see [`Call::tainted`]). Most tools' output is not.
    fn taints(&self, _input: &Value) -> bool {
        false
    }
}

/// The tools offered to the model, by name.
#[derive(Clone, Default)]
pub struct Tools {
    by_name: BTreeMap<String, Arc<dyn Tool>>,
    /// What the model is told about them, built once: every model call sends it.
    specs: Arc<Vec<ToolSpec>>,
}

impl std::fmt::Debug for Tools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.by_name.keys()).finish()
    }
}

impl Tools {
    /// Adds `tool`; a later tool of the same name replaces the earlier one.
    pub fn register(&mut self, tool: Arc<dyn Tool>) {
        self.by_name.insert(tool.name().to_owned(), tool);
        self.specs = Arc::new(
            self.by_name
                .values()
                .map(|t| ToolSpec {
                    name: t.name().to_owned(),
                    description: t.description().to_owned(),
                    input_schema: t.input_schema(),
                })
                .collect(),
        );
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Tool>> {
        self.by_name.get(name)
    }

    pub fn specs(&self) -> &Arc<Vec<ToolSpec>> {
        &self.specs
    }
}
