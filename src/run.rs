//! Runs a script on the model, step by step. (Interface stub; the model fills it in.)

use crate::script::Script;
use crate::snapshot::StepView;

#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Run the invariant checker after every step.
    pub check: bool,
    /// Record a line per merge attempt.
    pub trace: bool,
    /// Which behaviour to model (`--policy`); "kernel" is Linux 6.18. The runner validates it.
    pub policy: String,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            check: false,
            trace: false,
            policy: "kernel".to_string(),
        }
    }
}

/// A recorded result that the model did not reproduce.
#[derive(Clone, Debug)]
pub struct Mismatch {
    pub line: usize,
    pub expected: String,
    pub got: String,
}

#[derive(Clone, Debug, Default)]
pub struct RunResult {
    /// One view per call line, in order.
    pub steps: Vec<StepView>,
    pub mismatches: Vec<Mismatch>,
    /// (script line, trace line) for every merge attempt, when `trace` was asked for.
    pub trace: Vec<(usize, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The script asks for something impossible (e.g. a process that does not exist).
    #[error("{path}:{line}: {reason}")]
    BadInput { path: String, line: usize, reason: String },
    /// The invariant checker found a broken invariant after a step.
    #[error("{path}:{line}: invariant broken after `{call}`: {reason}")]
    Invariant { path: String, line: usize, call: String, reason: String },
}

pub fn run_script(_script: &Script, _opts: &RunOptions) -> Result<RunResult, RunError> {
    unimplemented!("model runner")
}
