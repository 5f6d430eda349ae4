//! `anonmm compare` and the policy fuzzer's contents check: a script run under every policy,
//! side by side with `kernel`. This drives the runner, so it lives in the harness, not next to
//! the designs in the model's `policy.rs`.

use std::collections::BTreeMap;

use serde::Serialize;

use anonmm_model::policy::{POLICY_NAMES, Policy, PolicyStats};

/// How far [`compare_with_kernel`] could compare a script.
#[derive(Clone, Debug, Default)]
pub struct Comparison {
    /// Steps whose page contents were compared.
    pub steps: usize,
    /// The first line where the policy's result differed from `kernel`'s (a merge the
    /// policy made let a later call succeed, say); comparison stops there, because the
    /// processes no longer did the same thing.
    pub results_differ_at: Option<usize>,
    /// A step one side could not run (not modelled): comparison stops there.
    pub stopped_at: Option<usize>,
}

/// Run `script` under `kernel` and under `policy`, both with the invariant checker and the
/// reference model of contents, and check that every process sees the same contents at every
/// address present on both sides, step by step: policies change metadata, never data.
pub fn compare_with_kernel(
    script: &crate::script::Script,
    policy: &str,
    config: &crate::mm::Config,
) -> Result<Comparison, String> {
    compare_contents(script, policy, config, false)
}

/// [`compare_with_kernel`], or with `replay` for a trace run as `replay` runs it: a step
/// either side cannot run is a divergence, not the end, and (a trace being long) the
/// results are compared at every step and the contents after the last.
fn compare_contents(
    script: &crate::script::Script,
    policy: &str,
    config: &crate::mm::Config,
    replay: bool,
) -> Result<Comparison, String> {
    use crate::run::{RunError, RunOptions, Runner};
    let opts = |p: Policy| RunOptions {
        check: true,
        check_sampled: replay,
        replay,
        last_view_only: replay,
        policy: p,
        config: config.clone(),
        ..Default::default()
    };
    let (kopts, popts) = (opts(Policy::Kernel), opts(Policy::parse(policy)?));
    // The kernel side runs the script without the 2025 series' flags (EINVAL there).
    let plain = strip_relocate_flags(script);
    let mut k = Runner::new(&plain, &kopts).map_err(|e| e.to_string())?;
    let mut p = Runner::new(script, &popts).map_err(|e| e.to_string())?;
    let mut cmp = Comparison::default();
    let n = script.steps.len();
    for (i, (step, kstep)) in script.steps.iter().zip(&plain.steps).enumerate() {
        let view = !replay || i + 1 == n;
        let (ko, po) = if replay {
            (k.step_or_diverge(kstep, view), p.step_or_diverge(step, view))
        } else {
            (k.step(kstep, view).map(Some), p.step(step, view).map(Some))
        };
        match (&ko, &po) {
            (Err(e @ RunError::Invariant { .. }), _) => return Err(format!("kernel: {e}")),
            (_, Err(e @ RunError::Invariant { .. })) => return Err(format!("{policy}: {e}")),
            (Err(_), _) | (_, Err(_)) => {
                cmp.stopped_at = Some(step.line);
                return Ok(cmp);
            }
            (Ok(a), Ok(b)) if a != b => {
                cmp.results_differ_at = Some(step.line);
                return Ok(cmp);
            }
            _ => {}
        }
        if !view {
            cmp.steps += 1;
            continue;
        }
        if replay {
            k.check_now().map_err(|e| format!("kernel: {e}"))?;
            p.check_now().map_err(|e| format!("{policy}: {e}"))?;
        }
        let (Some(kv), Some(pv)) = (k.result.steps.last(), p.result.steps.last()) else {
            // A trace's last step that neither side ran: nothing to view.
            cmp.steps += 1;
            continue;
        };
        for (pid, kp) in &kv.procs {
            let Some(pp) = pv.procs.get(pid) else {
                return Err(format!(
                    "{}:{}: process {} missing under {policy}",
                    script.path, step.line, pid.0
                ));
            };
            // A swapped-out or migrating page shows no contents (the reference model checks
            // those).
            let present = |pg: &&crate::snapshot::PageView| {
                !matches!(
                    pg.page,
                    crate::snapshot::PageName::Swap
                        | crate::snapshot::PageName::Migration
                        | crate::snapshot::PageName::Guard
                )
            };
            let theirs: BTreeMap<u64, u64> =
                pp.pages.iter().filter(present).map(|pg| (pg.addr, pg.tag)).collect();
            for pg in kp.pages.iter().filter(present) {
                if let Some(&t) = theirs.get(&pg.addr)
                    && t != pg.tag
                {
                    return Err(format!(
                        "{}:{}: pid {} page {:#x} holds {:#x} under kernel but {:#x} under {policy}",
                        script.path, step.line, pid.0, pg.addr, pg.tag, t
                    ));
                }
            }
        }
        cmp.steps += 1;
        // Keep memory flat on long scripts.
        k.result.steps.clear();
        p.result.steps.clear();
    }
    Ok(cmp)
}

/// The script with `MREMAP_RELOCATE_ANON` and `MREMAP_MUST_RELOCATE_ANON` taken out of every
/// mremap: what the same program does on a kernel without the series.
pub fn strip_relocate_flags(script: &crate::script::Script) -> crate::script::Script {
    use crate::abi::{MREMAP_MUST_RELOCATE_ANON, MREMAP_RELOCATE_ANON};
    use crate::script::Call;
    let mut out = script.clone();
    for s in &mut out.steps {
        if let Call::Mremap { flags, .. } = &mut s.call {
            *flags &= !(MREMAP_RELOCATE_ANON | MREMAP_MUST_RELOCATE_ANON);
        }
    }
    out
}

/// One row of `anonmm compare`: a script run under one policy.
#[derive(Clone, Debug, Serialize)]
pub struct PolicyRow {
    /// The `--policy` name.
    pub policy: String,
    /// VMAs per process alive after the last step (pid, count).
    pub vmas_end: Vec<(u32, usize)>,
    /// Processes that exited during the script.
    pub exited: usize,
    /// The most VMAs all live processes held together after any step.
    pub vmas_peak: usize,
    /// Merge attempts (`Stats::merges_attempted`).
    pub merges_attempted: u64,
    /// Merges done (`Stats::merges_done`).
    pub merges_done: u64,
    /// What the policy did and what it cost; all zero if the run failed.
    pub work: PolicyStats,
    /// Steps whose contents matched `kernel`'s (`compare_with_kernel`), or the error.
    pub contents: Result<usize, String>,
}

/// Run `script` under every policy (`auto` with its default budget). The series' flags
/// exist only under `relocate` and `relocate-all`; the other policies run the script
/// without them, as the same program would on their kernels.
pub fn compare_all(script: &crate::script::Script, config: &crate::mm::Config) -> Vec<PolicyRow> {
    compare_all_as(script, config, false)
}

/// [`compare_all`], with `replay` for a trace: each policy runs it as `anonmm replay` does
/// (one code path, `RunOptions::replay`), so each row's VMA counts and merges are those
/// `replay --policy P` reports; with a check (sampled) and the results compared with
/// kernel's at every step, the contents after the last.
pub fn compare_all_as(
    script: &crate::script::Script,
    config: &crate::mm::Config,
    replay: bool,
) -> Vec<PolicyRow> {
    use crate::run::{RunOptions, run_script};
    let plain = strip_relocate_flags(script);
    let mut rows = Vec::new();
    for &name in POLICY_NAMES {
        let p = Policy::parse(name).expect("known policy");
        let s = if p.has_relocate_flags() { script } else { &plain };
        let opts = RunOptions {
            check: true,
            check_sampled: replay,
            replay,
            last_view_only: replay,
            policy: p,
            config: config.clone(),
            ..Default::default()
        };
        let contents = if p == Policy::Kernel {
            Ok(s.steps.len())
        } else {
            compare_contents(s, name, config, replay).map(|c| c.steps)
        };
        match run_script(s, &opts) {
            Ok(r) => rows.push(PolicyRow {
                policy: name.to_string(),
                vmas_end: r
                    .vmas_per_pid
                    .iter()
                    .filter(|(p, _)| r.alive.contains(p))
                    .map(|(p, (e, _))| (p.0, *e))
                    .collect(),
                exited: r.vmas_per_pid.keys().filter(|p| !r.alive.contains(p)).count(),
                vmas_peak: r.vmas_peak.0,
                merges_attempted: r.stats.merges_attempted,
                merges_done: r.stats.merges_done,
                work: r.stats.policy,
                contents,
            }),
            Err(e) => rows.push(PolicyRow {
                policy: name.to_string(),
                vmas_end: Vec::new(),
                exited: 0,
                vmas_peak: 0,
                merges_attempted: 0,
                merges_done: 0,
                work: PolicyStats::default(),
                contents: Err(e.to_string()),
            }),
        }
    }
    rows
}
