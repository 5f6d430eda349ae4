//! `anonmm graph`: run a script up to one step and draw the reverse map there, with the
//! model's [`to_dot`] (`anonmm_model::graph`).

use anonmm_model::graph::to_dot;

use crate::run::{RunError, RunOptions, Runner};
use crate::script::Script;
use crate::types::Pid;

/// What to draw.
#[derive(Clone, Debug)]
pub struct GraphOptions {
    /// Stop after the step on this script line (default: the last step).
    pub at: Option<usize>,
    /// Only this process (default: every live process).
    pub pid: Option<Pid>,
    /// Folios drawn one by one per VMA; more are summarised.
    pub max_folios: usize,
    /// Which policy runs the script.
    pub policy: crate::policy::Policy,
    /// Which kernel the model is.
    pub kernel: crate::kernel::Kernel,
}

impl Default for GraphOptions {
    fn default() -> Self {
        GraphOptions {
            at: None,
            pid: None,
            max_folios: 8,
            policy: crate::policy::Policy::Kernel,
            kernel: crate::kernel::Kernel::V6_18,
        }
    }
}

/// Run `script` up to `opts.at` and draw the state there.
pub fn graph_script(script: &Script, opts: &GraphOptions) -> Result<String, RunError> {
    let bad = |line: usize, reason: String| RunError::BadInput { path: script.path.clone(), line, reason };
    if let Some(at) = opts.at
        && !script.steps.iter().any(|s| s.line == at)
    {
        return Err(bad(at, format!("--at {at}: no call on that line")));
    }
    let ropts = RunOptions {
        policy: opts.policy,
        config: crate::mm::Config { kernel: opts.kernel, ..Default::default() },
        ..Default::default()
    };
    let mut runner = Runner::new(script, &ropts)?;
    for step in &script.steps {
        runner.step(step, false)?;
        if Some(step.line) == opts.at {
            break;
        }
    }
    if let Some(p) = opts.pid
        && !runner.sys.procs.contains_key(&p)
    {
        return Err(bad(0, format!("--pid {}: no such live process at that step", p.0)));
    }
    Ok(to_dot(&runner.sys, opts.pid, opts.max_folios))
}
