//! Runs a script on the model, step by step: each call line goes to the system call it
//! names, its result is compared with the recorded one, and the state of every process is
//! captured for output and for the oracle.

use std::borrow::Cow;
use std::collections::BTreeMap;

use anonmm_model::fault::{PageRun, Touch};

use crate::errno::Errno;
use crate::mm::{Config, System};
use crate::replay::{Plan, ReplayState, count_vmas};
use crate::script::{Call, Expect, RecordedVma, Script, Step, format_result_for};
use crate::snapshot::{StepView, rename, touch_tag};
use crate::types::{Pid, VirtAddr};

/// How to run a script: mostly the command-line switches of `anonmm run` (replay, plot and
/// the fuzzer fill it in too).
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Run the invariant checker (and the reference model of contents) after every step.
    pub check: bool,
    /// With `check`: check after as many steps as keep the checker's time within 3/4 of the
    /// steps' own (and always after the last one, through [`run_script`] and replay), instead
    /// of after every step. A broken invariant is still blamed on the exact step: the run is
    /// redone from the start with a check after every step until it breaks. Only a break
    /// that heals itself before the next check can go unseen. `anonmm run|replay --check`
    /// use this; `--check-every-step` and the library default do not.
    pub check_sampled: bool,
    /// With `check`: after every step, check what the step touched
    /// ([`crate::mm::System::check_touched`]: the call's ranges, the VMAs, folios and
    /// anon_vmas there, and the reference model's contents there), in time proportional to
    /// it, on top of the full checks `check_sampled` schedules; a call whose reach the
    /// runner cannot bound (fork, exit, exec, ...) gets a full check. `--check-every-step`.
    pub check_incremental: bool,
    /// Record a line per merge attempt.
    pub trace: bool,
    /// Which behaviour to model (`--policy`); `Kernel` is Linux 6.18.
    pub policy: crate::policy::Policy,
    /// Capture the processes' state after the last step only (faster; text output).
    pub last_view_only: bool,
    /// The machine's settings.
    pub config: Config,
    /// Replay a real trace (`crate::replay`): take the trace's world as given (files,
    /// descriptors, addresses the kernel chose) and classify disagreements instead of
    /// stopping at a step the model cannot run.
    pub replay: bool,
    /// Capture `/proc/pid/smaps` of every process in the views (`--smaps`).
    pub smaps: bool,
    /// Capture the internal state (VMAs' anon_vmas, folios; `crate::internal`) of every
    /// process in the views (`--internal`).
    pub internal: bool,
    /// Keep every step as it was run, after replay's rewrites, in [`RunResult::resolved`]
    /// (`anonmm import --resolved`).
    pub resolved: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            check: false,
            check_sampled: false,
            check_incremental: false,
            trace: false,
            policy: crate::policy::Policy::Kernel,
            last_view_only: false,
            config: Config::default(),
            replay: false,
            smaps: false,
            internal: false,
            resolved: false,
        }
    }
}

/// A recorded result that the model did not reproduce.
#[derive(Clone, Debug)]
pub struct Mismatch {
    /// The step's 1-based script line.
    pub line: usize,
    /// The recorded result, strace-formatted (`= -1 ENOMEM (Cannot allocate memory)`).
    pub expected: String,
    /// The model's result, formatted the same way.
    pub got: String,
}

/// Everything a run produced.
#[derive(Clone, Debug, Default)]
pub struct RunResult {
    /// One view per call line, in order.
    pub steps: Vec<StepView>,
    /// Steps whose recorded result differs from the model's, in order.
    pub mismatches: Vec<Mismatch>,
    /// (script line, trace line) for every merge attempt, when `trace` was asked for.
    pub trace: Vec<(usize, String)>,
    /// The most VMAs the live address spaces held after any step: (all, anonymous).
    pub vmas_peak: (usize, usize),
    /// The VMAs the live address spaces hold after the last step run: (all, anonymous).
    /// Kept so that observers of a run (`anonmm plot`'s per-step series) need not count again.
    pub vmas_now: (usize, usize),
    /// Per process: (VMAs after the last step it was alive for, the most it held).
    pub vmas_per_pid: std::collections::BTreeMap<Pid, (usize, usize)>,
    /// The processes alive after the last step run (the others of `vmas_per_pid` exited).
    pub alive: std::collections::BTreeSet<Pid>,
    /// How many times the invariant checker ran (`--check`), and after how many steps.
    pub checks: usize,
    /// How many incremental checks ran (`RunOptions::check_incremental`).
    pub incremental_checks: usize,
    /// Steps run, for `checks`' "after K of N steps".
    pub steps_run: usize,
    /// The work counters at the end of the run (merges, relocations, copies…).
    pub stats: crate::stats::Stats,
    /// With [`RunOptions::resolved`]: every step as it was run (replay places a call at the
    /// recorded address with MAP_FIXED, creates files with O_CREAT, …), as script lines; a
    /// step not run is a comment.
    pub resolved: Vec<String>,
}

/// Why a run stopped before the end of the script.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The script asks for something impossible (e.g. a process that does not exist).
    #[error("{}: {reason}", crate::out::location(.path, *.line))]
    BadInput {
        /// The script's path.
        path: String,
        /// The step's 1-based script line (0 for a bad option).
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The step needs behaviour the model does not have yet.
    #[error("{}: not modelled: {what}", crate::out::location(.path, *.line))]
    NotModelled {
        /// The script's path.
        path: String,
        /// The step's 1-based script line.
        line: usize,
        /// The missing behaviour.
        what: String,
    },
    /// The invariant checker found a broken invariant after a step.
    #[error("{path}:{line}: invariant broken after `{call}`: {reason}")]
    Invariant {
        /// The script's path.
        path: String,
        /// The step's 1-based script line.
        line: usize,
        /// The call as written.
        call: String,
        /// The broken invariant.
        reason: String,
    },
}

/// Run a script on the model.
pub fn run_script(script: &Script, opts: &RunOptions) -> Result<RunResult, RunError> {
    let mut steps = Vec::new();
    let mut res = run_script_each(script, opts, &mut |v| steps.push(v))?;
    res.steps = steps;
    Ok(res)
}

/// [`run_script`] handing each step's view to `each` as soon as it is made, instead of
/// keeping them all in the result (`anonmm run --json` streams them: a long script's views
/// do not fit in memory together).
pub fn run_script_each(
    script: &Script,
    opts: &RunOptions,
    each: &mut dyn FnMut(StepView),
) -> Result<RunResult, RunError> {
    let mut runner = Runner::new(script, opts)?;
    let n = script.steps.len();
    for (i, step) in script.steps.iter().enumerate() {
        let view = !opts.last_view_only || i + 1 == n;
        runner.step_or_diverge(step, view)?;
        if opts.replay && view && runner.result.steps.last().is_none_or(|v| v.line != step.line) {
            // The step made no view: the state as it stands.
            let procs = rename(runner.sys.raw_view());
            let call = step.call_text().into_owned();
            runner.result.steps.push(StepView {
                line: step.line,
                pid: step.pid,
                call,
                result: String::new(),
                procs,
            });
        }
        for v in runner.result.steps.drain(..) {
            each(v);
        }
    }
    runner.check_now()?;
    runner.result.stats = runner.sys.trace.stats.clone();
    Ok(runner.result)
}

/// Executes steps one at a time (also used by replay and the fuzzer).
pub struct Runner<'a> {
    /// The modelled system the steps run on.
    pub sys: System,
    /// The plain reference model of memory contents, kept when checking.
    pub reference: Option<crate::refmodel::RefModel>,
    /// What the run has produced so far.
    pub result: RunResult,
    path: &'a str,
    opts: &'a RunOptions,
    /// Replay mode's state, when `RunOptions::replay`.
    pub replay: Option<ReplayState>,
    script: &'a Script,
    sampling: Sampling,
    /// Tasks asleep in vfork, by the child they wait for (`wait_for_vfork_done` until the
    /// child execs or exits): the child's pid to its parent's.
    vfork_waits: BTreeMap<Pid, Pid>,
    /// The page where the last touch that raised a signal stopped (for the reference model).
    touch_signal_at: Option<VirtAddr>,
    /// With `check_incremental`: what the step running now touches (None: anything).
    touched: Option<Option<anonmm_model::check::Touched>>,
    /// Tests: break the state after the step on this line (in redone runs too).
    #[cfg(test)]
    inject: Option<(usize, Corrupt)>,
}

/// Tests: how to break a state.
#[cfg(test)]
type Corrupt = fn(&mut System);

/// The bookkeeping of [`RunOptions::check_sampled`].
#[derive(Clone, Default)]
struct Sampling {
    /// Time spent running steps, and checking them.
    steps: std::time::Duration,
    checks: std::time::Duration,
    /// Indices into the script of every step run so far, to redo the run when a sampled
    /// check finds a broken invariant (None once a step came from elsewhere).
    fed: Option<Vec<u32>>,
    /// The last step run (its line, and its index in the script or else its text), and
    /// whether the state after it has been checked.
    last: Option<(usize, Result<u32, String>)>,
    unchecked: bool,
}

/// The faults [`Runner::replay_faults`] hands the model: page faults of the trace that
/// `fault_fast` would run, each cleared with the replay state as there (`fault_fits_at`).
struct ReplayFeed<'i, 'r> {
    /// The items not yet taken.
    rest: std::slice::Iter<'i, crate::import::Streamed>,
    /// Whether a fault was taken: the first cleared what was pending.
    started: bool,
    line: usize,
    replay: &'r mut ReplayState,
    /// `replay.fault_range()`, which the faults do not change.
    range: Option<(Pid, u64, u64)>,
}

impl anonmm_model::fault::TouchFeed for ReplayFeed<'_, '_> {
    #[inline(always)]
    fn next(&mut self) -> Option<(Pid, u64, u64, bool)> {
        let &crate::import::Streamed::Fault { line, pid, addr, len, write } = self.rest.as_slice().first()?
        else {
            return None;
        };
        // fault_fits_at: the first fault that fits clears what was pending; after it, only
        // the range is left to ask.
        let fits = if !self.started {
            self.replay.fault_fits_at(pid, addr, len)
        } else {
            matches!(self.range, Some((p, start, end))
                if p == pid && start <= addr && addr.checked_add(len).is_some_and(|e| e <= end))
        };
        if !fits {
            return None;
        }
        self.rest.next();
        self.started = true;
        self.line = line;
        Some((pid, addr, len, write))
    }
    #[inline(always)]
    fn tag(&self, addr: u64) -> u64 {
        touch_tag(self.line, addr)
    }
    /// `run` within the range `next` checks (once a fault has cleared what was pending).
    #[inline(always)]
    fn narrow(&self, run: PageRun) -> PageRun {
        match self.range {
            Some((p, start, end)) if self.started && run.pid() == p => run.within(start, end),
            _ => run.within(0, 0),
        }
    }
    /// `next` of a fault `run` holds, with the one test.
    #[inline(always)]
    fn next_in(&mut self, run: &PageRun) -> Result<Touch, Option<Touch>> {
        if let Some(&crate::import::Streamed::Fault { line, pid, addr, len, write }) =
            self.rest.as_slice().first()
            && run.holds(pid, addr, len)
        {
            self.rest.next();
            self.line = line;
            return Ok((pid, addr, len, write));
        }
        Err(self.next())
    }
}

impl<'a> Runner<'a> {
    /// Set up a run: spawn the script's first process (with the reference model when
    /// checking). It does not fail today (the policy is parsed at the command line's edge);
    /// the `Result` is kept for the callers.
    pub fn new(script: &'a Script, opts: &'a RunOptions) -> Result<Runner<'a>, RunError> {
        let mut r = Runner::empty(script, opts)?;
        if let Some(first) = script.steps.first() {
            r.spawn_first(first.pid);
        }
        Ok(r)
    }

    /// [`Runner::new`] without a process, for steps that come from elsewhere than `script`
    /// (a streamed import; `script` gives the path): [`Runner::spawn_first`] makes the
    /// process of the first of them once it is known.
    pub fn empty(script: &'a Script, opts: &'a RunOptions) -> Result<Runner<'a>, RunError> {
        let mut sys = System::new(opts.config.clone());
        sys.policy = opts.policy;
        if opts.trace {
            sys.trace.merge_log = Some(Vec::new());
        }
        let replay = opts.replay.then(ReplayState::new);
        let sampling = Sampling { fed: Some(Vec::new()), ..Default::default() };
        Ok(Runner {
            sys,
            reference: None,
            result: RunResult::default(),
            path: &script.path,
            opts,
            replay,
            script,
            sampling,
            vfork_waits: BTreeMap::new(),
            touch_signal_at: None,
            touched: None,
            #[cfg(test)]
            inject: None,
        })
    }

    /// A copy of this run that goes on under `opts` (its policy becomes the model's,
    /// [`System::policy`]): `replay --policy all` runs the steps before any policy could
    /// decide differently once, then forks. `opts` should differ from the run's own options
    /// in the policy only.
    pub fn fork<'b>(&self, opts: &'b RunOptions) -> Runner<'b>
    where
        'a: 'b,
    {
        let mut sys = self.sys.clone();
        sys.policy = opts.policy;
        Runner {
            sys,
            reference: self.reference.clone(),
            result: self.result.clone(),
            path: self.path,
            opts,
            replay: self.replay.clone(),
            script: self.script,
            sampling: self.sampling.clone(),
            vfork_waits: self.vfork_waits.clone(),
            touch_signal_at: self.touch_signal_at,
            touched: self.touched.clone(),
            #[cfg(test)]
            inject: self.inject,
        }
    }

    /// [`Runner::fork`] without the copy: this run goes on under `opts`.
    pub fn into_fork<'b>(self, opts: &'b RunOptions) -> Runner<'b>
    where
        'a: 'b,
    {
        let mut sys = self.sys;
        sys.policy = opts.policy;
        Runner {
            sys,
            reference: self.reference,
            result: self.result,
            path: self.path,
            opts,
            replay: self.replay,
            script: self.script,
            sampling: self.sampling,
            vfork_waits: self.vfork_waits,
            touch_signal_at: self.touch_signal_at,
            touched: self.touched,
            #[cfg(test)]
            inject: self.inject,
        }
    }

    /// Spawn the first process, `pid` (with the reference model when checking); nothing if
    /// a process exists already.
    pub fn spawn_first(&mut self, pid: Pid) {
        if self.sys.vm.procs.is_empty() && self.sys.spawn(pid).is_ok() && self.opts.check {
            let mut r = crate::refmodel::RefModel::new(pid, self.opts.config.initial_brk.0);
            r.unmaps_before_checks = !self.opts.config.kernel.profile().mremap_checks_before_unmap;
            r.truncate_up_zeroes_eof = self.opts.config.kernel.profile().ext4_truncate_up_zeroes_eof;
            self.reference = Some(r);
        }
    }

    /// Where `step` sits in the script, if it is one of the script's own steps.
    fn index_of(&self, step: &Step) -> Option<u32> {
        let base = self.script.steps.as_ptr() as usize;
        let at = step as *const Step as usize;
        let size = std::mem::size_of::<Step>();
        let off = at.checked_sub(base)?;
        (off % size == 0 && off / size < self.script.steps.len()).then(|| (off / size) as u32)
    }

    /// Run the checker now if a sampled check skipped the last step (drivers call this after
    /// their last step; [`run_script`] and replay do).
    pub fn check_now(&mut self) -> Result<(), RunError> {
        if !(self.opts.check && self.sampling.unchecked) {
            return Ok(());
        }
        let Some((line, at)) = self.sampling.last.clone() else { return Ok(()) };
        let call = match at {
            Ok(i) => self.script.steps[i as usize].call_text().into_owned(),
            Err(text) => text,
        };
        self.checked(line, &call)
    }

    fn run_checker(&self) -> Result<(), String> {
        self.sys.check().and_then(|_| self.reference.as_ref().map_or(Ok(()), |r| r.check(&self.sys)))
    }

    /// Check the state after the step at `line`; a failure after unchecked steps is blamed on
    /// the step that broke it by redoing the run with a check after every step.
    fn checked(&mut self, line: usize, call: &str) -> Result<(), RunError> {
        let t = std::time::Instant::now();
        let res = self.run_checker();
        self.result.checks += 1;
        self.sampling.checks += t.elapsed();
        let was_unchecked = std::mem::replace(&mut self.sampling.unchecked, false);
        let Err(reason) = res else { return Ok(()) };
        let found = RunError::Invariant { path: self.path.to_string(), line, call: call.to_string(), reason };
        if !(self.opts.check_sampled && was_unchecked) {
            return Err(found);
        }
        let Some(fed) = self.sampling.fed.clone() else { return Err(found) };
        let opts = RunOptions { check_sampled: false, last_view_only: true, ..self.opts.clone() };
        let Ok(mut again) = Runner::new(self.script, &opts) else { return Err(found) };
        #[cfg(test)]
        {
            again.inject = self.inject;
        }
        for i in fed {
            let step = &self.script.steps[i as usize];
            if !again.sys.vm.procs.contains_key(&step.pid) {
                continue;
            }
            match again.step(step, false) {
                Err(e @ RunError::Invariant { .. }) => return Err(e),
                Err(_) => break,
                Ok(_) => {}
            }
        }
        // Healed between checks, or not reproduced: report what the sampled check saw.
        Err(found)
    }

    /// Run a step as `run` runs a script's and `replay` a trace's. In replay mode a step of
    /// a process the trace never showed being made, or one the model cannot run, is a
    /// divergence (counted in [`Runner::replay`]), not the end of the run: `Ok(None)`. Used
    /// by every command that takes a trace (`run`, `explain`, `graph`, `compare`), so that
    /// each runs it as `replay` does.
    pub fn step_or_diverge(&mut self, step: &Step, view: bool) -> Result<Option<Expect>, RunError> {
        if self.replay.is_none() {
            return self.step(step, view).map(Some);
        }
        if !self.sys.vm.procs.contains_key(&step.pid) {
            if let Some(r) = &mut self.replay {
                r.no_process(step);
            }
            return Ok(None);
        }
        match self.step(step, view) {
            Err(e @ RunError::Invariant { .. }) => Err(e),
            Err(e) => {
                if let Some(r) = &mut self.replay {
                    r.not_modelled(step, &e.to_string());
                }
                Ok(None)
            }
            Ok(o) => Ok(Some(o)),
        }
    }

    fn bad(&self, step: &Step, reason: String) -> RunError {
        RunError::BadInput { path: self.path.to_string(), line: step.line, reason }
    }

    /// Execute one step and record its outcome (and the view when `view`).
    pub fn step(&mut self, step: &Step, view: bool) -> Result<Expect, RunError> {
        self.result.steps_run += 1;
        // Timed only for the sampled checker's budget.
        let started = self.opts.check.then(std::time::Instant::now);
        // Once a step came from elsewhere there is nothing to redo: no index to find.
        if self.opts.check_sampled && self.sampling.fed.is_some() {
            match (self.index_of(step), &mut self.sampling.fed) {
                (Some(i), Some(fed)) => fed.push(i),
                _ => self.sampling.fed = None,
            }
        }
        if !self.sys.vm.procs.contains_key(&step.pid) {
            return Err(self.bad(
                step,
                format!("process {} does not exist (no fork made it, or it exited)", step.pid.0),
            ));
        }
        if let Some(outcome) = self.plain_fault(step, view) {
            return Ok(outcome);
        }
        if let Call::VmaRecord(..) = step.call {
            // The kernel's VMA after the call before: compared, nothing run.
            match &mut self.replay {
                Some(r) => r.vma_record(&self.sys, step),
                None => {
                    if let Some((kernel, model)) =
                        crate::replay::vma_record_diff(&self.sys, step.pid, &step.call)
                    {
                        self.result.mismatches.push(Mismatch {
                            line: step.line,
                            expected: kernel,
                            got: model,
                        });
                    }
                }
            }
        }
        let plan = match &mut self.replay {
            Some(r) => r.before(&mut self.sys, step),
            None => Plan::Run(Cow::Borrowed(step)),
        };
        if self.opts.resolved {
            let line = match &plan {
                Plan::Run(run) => crate::script::format_step(run),
                Plan::Skip(e) => format!(
                    "# line {}: not run, the trace's result stands: {} {}",
                    step.line,
                    step.call_text(),
                    format_result_for(&step.call, e)
                ),
            };
            self.result.resolved.push(line);
        }
        let incremental = self.opts.check && self.opts.check_incremental;
        // Matched by reference: moving the plan out copies a whole step.
        let mut outcome = match &plan {
            Plan::Run(run) => {
                if incremental {
                    let before = touched_ranges(&self.sys, run, None);
                    self.touched = Some(before.map(|r| self.sys.touched_before(r)));
                }
                let outcome = self.execute(run)?;
                if let Some(Some(t)) = &mut self.touched {
                    match touched_ranges(&self.sys, run, Some(&outcome)) {
                        Some(r) => t.ranges.extend(r),
                        None => self.touched = Some(None),
                    }
                }
                outcome
            }
            Plan::Skip(e) => {
                self.touched = incremental.then(|| Some(Default::default()));
                *e
            }
        };
        #[cfg(test)]
        if let Some((line, corrupt)) = self.inject
            && line == step.line
        {
            corrupt(&mut self.sys);
        }
        if let Some(what) = self.sys.unsupported.take() {
            match &mut self.replay {
                Some(r) => r.not_modelled(step, &what),
                None => {
                    return Err(RunError::NotModelled { path: self.path.to_string(), line: step.line, what });
                }
            }
        }
        if let Some(r) = &mut self.replay {
            outcome = r.after(&mut self.sys, step, outcome);
        }
        // A fault never adds or removes a VMA, nor does a VMA record (compared, nothing run):
        // the counts are redone after other calls only.
        if !matches!(step.call, Call::Touch { .. } | Call::VmaRecord(..))
            || self.result.vmas_per_pid.is_empty()
        {
            self.count_vmas_now();
        }
        if let Some(exp) = step.expect
            && exp != outcome
        {
            self.result.mismatches.push(Mismatch {
                line: step.line,
                expected: format_result_for(&step.call, &exp),
                got: format_result_for(&step.call, &outcome),
            });
        }
        self.take_merge_log(step.line);
        if let Some(r) = &mut self.reference {
            let line = step.line;
            let signal_at = self.touch_signal_at.map(|a| a.0);
            r.apply(step, &outcome, signal_at, &|a| touch_tag(line, a));
        }
        if self.opts.check {
            self.sampling.steps += started.map(|t| t.elapsed()).unwrap_or_default();
            self.sampling.unchecked = true;
            // Incremental: what the step touched, now (so a break there is blamed on it);
            // a step of unbounded reach gets the full check.
            let full_now = match self.touched.take() {
                Some(Some(t)) => {
                    let res = self.sys.check_touched(&t).and_then(|_| match &self.reference {
                        Some(r) => {
                            t.ranges.iter().try_for_each(|&(mm, s, e)| r.check_range(&self.sys, mm, s, e))
                        }
                        None => Ok(()),
                    });
                    self.result.incremental_checks += 1;
                    if let Err(reason) = res {
                        return Err(RunError::Invariant {
                            path: self.path.to_string(),
                            line: step.line,
                            call: step.call_text().into_owned(),
                            reason,
                        });
                    }
                    false
                }
                Some(None) => true,
                None => false,
            };
            // Sampled: check while the checks so far took at most 3/4 of the steps' time.
            // With the reference model's bookkeeping and the check after the last step, a
            // checked run of the fuzz scripts then takes 2 to 3 times an unchecked one.
            if full_now || !self.opts.check_sampled || self.sampling.checks * 4 <= self.sampling.steps * 3 {
                self.checked(step.line, &step.call_text())?;
            } else {
                let at = self.index_of(step).ok_or_else(|| step.call_text().into_owned());
                self.sampling.last = Some((step.line, at));
            }
        }
        // Without a view, a run that keeps only the last one needs nothing of this step.
        if !view && self.opts.last_view_only {
            return Ok(outcome);
        }
        let result = format_result_for(&step.call, &outcome);
        let procs = if view {
            let mut raw = self.sys.raw_view();
            if self.opts.smaps {
                for (pid, p) in raw.iter_mut() {
                    p.smaps = self.sys.smaps(*pid);
                }
            }
            if self.opts.internal {
                for (pid, p) in raw.iter_mut() {
                    p.internal = Some(crate::internal::model_view(&self.sys, *pid, 0, u64::MAX));
                }
            }
            rename(raw)
        } else {
            Default::default()
        };
        self.result.steps.push(StepView {
            line: step.line,
            pid: step.pid,
            call: step.call_text().into_owned(),
            result,
            procs,
        });
        Ok(outcome)
    }

    /// Most steps of a replay: a page fault that needs no plan (inside the anonymous VMA the
    /// last fault's file check found, `ReplayState::fault_fits`), in a run with no view,
    /// check or resolved steps to make. The general path would do exactly this: run the
    /// fault, note a call the model cannot make, classify a signal, count the VMAs if nothing
    /// counted them yet, and log merges. None (nothing done) for any other step.
    #[inline]
    fn plain_fault(&mut self, step: &Step, view: bool) -> Option<Expect> {
        let Call::Touch { addr, len, write } = step.call else { return None };
        if view || step.expect.is_some() {
            return None;
        }
        self.fault_fast(step.line, step.pid, addr, len, write, Some(step))
    }

    /// [`Runner::step`] of a replay's page fault given by its fields, as the import streams
    /// it (`Streamed::Fault`: no text, no recorded result), when the fast path of
    /// `Runner::plain_fault` takes it: then its [`Step`] is made only if a divergence
    /// needs it, and `steps_run` is counted. False (nothing done) when it does not: the
    /// caller runs the step through [`Runner::step`].
    #[inline]
    pub fn replay_fault(&mut self, line: usize, pid: Pid, addr: u64, len: u64, write: bool) -> bool {
        if self.fault_fast(line, pid, addr, len, write, None).is_none() {
            return false;
        }
        self.result.steps_run += 1;
        true
    }

    /// [`Runner::replay_fault`] of the page faults at the head of `items`, at most `max` of
    /// them, run by the model one after another ([`System::touch_each`]): how many ran.
    /// Stops before an item that is not such a fault or that `replay_fault` would not take,
    /// and after a fault that signalled or met what the model does not do, which is noted
    /// as `replay_fault` notes it.
    pub fn replay_faults(&mut self, items: &[crate::import::Streamed], max: usize) -> usize {
        #[cfg(test)]
        if self.inject.is_some() {
            return 0;
        }
        let o = self.opts;
        // What fault_fast does after each fault, which a run of them leaves as it is.
        if !o.last_view_only
            || o.check
            || o.resolved
            || self.result.vmas_per_pid.is_empty()
            || self.sys.trace.merge_log.is_some()
        {
            return 0;
        }
        let Some(replay) = self.replay.as_mut() else { return 0 };
        let range = replay.fault_range();
        let items = &items[..max.min(items.len())];
        let mut feed = ReplayFeed { rest: items.iter(), started: false, line: 0, replay, range };
        let stop = self.sys.touch_each(&mut feed);
        let n = items.len() - feed.rest.len();
        if let Some(res) = stop {
            // The last fault taken stopped the run: the rest of fault_fast for it.
            let &crate::import::Streamed::Fault { line, pid, addr, len, write } = &items[n - 1] else {
                unreachable!("the feed takes only faults")
            };
            let step =
                Step { line, pid, call: Call::Touch { addr, len, write }, text: String::new(), expect: None };
            self.fault_fast_rest(res, &step);
            if self.result.vmas_per_pid.is_empty() {
                self.count_vmas_now();
            }
            if self.sys.trace.merge_log.is_some() {
                self.take_merge_log(line);
            }
        }
        self.result.steps_run += n;
        n
    }

    /// The fast path of [`Runner::plain_fault`] and [`Runner::replay_fault`] for a fault
    /// without a recorded result; `step` is the fault's step, if the caller has one (else
    /// one is made from the fields for a divergence).
    #[inline(always)]
    fn fault_fast(
        &mut self,
        line: usize,
        pid: Pid,
        addr: u64,
        len: u64,
        write: bool,
        step: Option<&Step>,
    ) -> Option<Expect> {
        #[cfg(test)]
        if self.inject.is_some() {
            return None;
        }
        let o = self.opts;
        if !o.last_view_only || o.check || o.resolved {
            return None;
        }
        let r = self.replay.as_mut()?;
        if !r.fault_fits_at(pid, addr, len) {
            return None;
        }
        // Inside a VMA no call changed since a fault of this process found it: the process
        // is alive (only a call ends one).
        debug_assert!(self.sys.vm.procs.contains_key(&pid));
        let res = self.sys.touch(pid, addr, len, write, &|a| touch_tag(line, a));
        // A fault served (ReplayState::after's fast path: fault_fits_at cleared what was
        // pending) with nothing the model could not do: nothing to note.
        let outcome = if matches!(res, Ok(Ok(()))) && self.sys.unsupported.is_none() {
            Expect::Value(0)
        } else {
            let step = match step {
                Some(s) => Cow::Borrowed(s),
                None => Cow::Owned(Step {
                    line,
                    pid,
                    call: Call::Touch { addr, len, write },
                    text: String::new(),
                    expect: None,
                }),
            };
            self.fault_fast_rest(res, &step)
        };
        if self.result.vmas_per_pid.is_empty() {
            self.count_vmas_now();
        }
        if self.sys.trace.merge_log.is_some() {
            self.take_merge_log(line);
        }
        Some(outcome)
    }

    /// The rest of [`Runner::fault_fast`] for a fault that signalled or met something the
    /// model cannot do, as the general path has it: the outcome, a `model` divergence for
    /// what was not modelled, and the classified disagreement.
    #[inline(never)]
    fn fault_fast_rest(
        &mut self,
        res: Result<Result<(), anonmm_model::fault::TouchSignal>, Errno>,
        step: &Step,
    ) -> Expect {
        let outcome = self.touch_outcome(res);
        let Some(r) = self.replay.as_mut() else { return outcome };
        if let Some(what) = self.sys.unsupported.take() {
            r.not_modelled(step, &what);
        }
        r.after(&mut self.sys, step, outcome)
    }

    /// A `touch` step run on the model: its outcome as the trace states results.
    #[inline]
    fn touch_now(&mut self, line: usize, pid: Pid, addr: u64, len: u64, write: bool) -> Expect {
        let res = self.sys.touch(pid, addr, len, write, &|a| touch_tag(line, a));
        self.touch_outcome(res)
    }

    /// What [`System::touch`] answered, as the trace states results.
    #[inline]
    fn touch_outcome(&mut self, res: Result<Result<(), anonmm_model::fault::TouchSignal>, Errno>) -> Expect {
        match res {
            Ok(Ok(())) => Expect::Value(0),
            Ok(Err(sig)) => {
                self.touch_signal_at = Some(sig.at);
                Expect::Signal(sig.signal)
            }
            Err(e) => Expect::Err(e),
        }
    }

    /// The merge attempts the model logged during the step at `line`, into the result.
    fn take_merge_log(&mut self, line: usize) {
        if let Some(log) = &mut self.sys.trace.merge_log {
            for ev in log.drain(..) {
                self.result.trace.push((line, ev.to_string()));
            }
        }
    }

    /// The VMA counts after a step (peak, now, per process, the live processes).
    fn count_vmas_now(&mut self) {
        let (all, anon) = count_vmas(&self.sys);
        self.result.vmas_peak = (self.result.vmas_peak.0.max(all), self.result.vmas_peak.1.max(anon));
        self.result.vmas_now = (all, anon);
        // The live set is rebuilt only when it changed (a fork or an exit): clearing and
        // refilling it freed and allocated a node at every call.
        if !self.result.alive.iter().eq((&self.sys.vm.procs).into_iter().map(|(p, _)| p)) {
            self.result.alive = (&self.sys.vm.procs).into_iter().map(|(&p, _)| p).collect();
        }
        for (&pid, p) in &self.sys.vm.procs {
            let n = self.sys.vm.mms[p.mm].map_count();
            let e = self.result.vmas_per_pid.entry(pid).or_default();
            *e = (n, e.1.max(n));
        }
    }

    fn execute(&mut self, step: &Step) -> Result<Expect, RunError> {
        let pid = step.pid;
        // A task asleep in vfork makes no calls until its child execs or exits (a replay's
        // trace orders the tasks itself).
        if self.replay.is_none()
            && let Some((child, _)) = self.vfork_waits.iter().find(|&(_, &p)| p == pid)
        {
            let reason = format!(
                "process {pid} is asleep in vfork until its child {child} execs or exits (exit_group \
                 or execve)"
            );
            return Err(self.bad(step, reason));
        }
        // A replay takes each task's exit from the trace; a script's exit_group or execve by a
        // thread would end its siblings too (do_group_exit, de_thread), and the language does
        // not tell `exit` from `exit_group`.
        if self.replay.is_none()
            && matches!(step.call, Call::ExitGroup { .. } | Call::Execve { .. })
            && !self.sys.vm.thread_siblings(pid).is_empty()
        {
            self.sys.not_modelled(&format!(
                "{} by a task whose thread group has other live tasks (the kernel ends them all; \
                 the script language does not tell exit from exit_group)",
                step.call.name()
            ));
            return Ok(Expect::Unknown);
        }
        let out = self.execute_call(step)?;
        match step.call {
            Call::Fork { vfork: true } => {
                if let Expect::Value(c) = out {
                    self.vfork_waits.insert(Pid(c as u32), pid);
                }
            }
            Call::ExitGroup { .. } | Call::Execve { .. } if !matches!(out, Expect::Err(_)) => {
                self.vfork_waits.remove(&pid);
            }
            _ => {}
        }
        Ok(out)
    }

    fn execute_call(&mut self, step: &Step) -> Result<Expect, RunError> {
        let pid = step.pid;
        let sys = &mut self.sys;
        let val = |r: Result<u64, Errno>| match r {
            Ok(v) => Expect::Value(v),
            Err(e) => Expect::Err(e),
        };
        let ival = |r: Result<i64, Errno>| match r {
            Ok(v) => Expect::Value(v as u64),
            Err(e) => Expect::Err(e),
        };
        Ok(match &step.call {
            Call::Mmap { addr, len, prot, flags, fd, off } => {
                val(sys.sys_mmap(pid, *addr, *len, *prot, *flags, *fd, *off))
            }
            Call::Munmap { addr, len } => val(sys.sys_munmap(pid, *addr, *len)),
            Call::Mprotect { addr, len, prot } => val(sys.sys_mprotect(pid, *addr, *len, *prot)),
            Call::Mlock { addr, len, flags } => val(sys.sys_mlock(pid, *addr, *len, *flags)),
            Call::Munlock { addr, len } => val(sys.sys_munlock(pid, *addr, *len)),
            Call::Mlockall { flags } => val(sys.sys_mlockall(pid, *flags)),
            Call::Munlockall => val(sys.sys_munlockall(pid)),
            Call::Madvise { addr, len, advice } => val(sys.sys_madvise(pid, *addr, *len, *advice)),
            Call::Mremap { old_addr, old_len, new_len, flags, new_addr } => {
                val(sys.sys_mremap(pid, *old_addr, *old_len, *new_len, *flags, *new_addr))
            }
            Call::Brk { addr } => val(sys.sys_brk(pid, *addr)),
            Call::Fork { .. } | Call::CloneVm { .. } => {
                let child = match step.expect {
                    Some(Expect::Value(c)) if c > 0 && c <= u32::MAX as u64 => Pid(c as u32),
                    Some(Expect::Err(e)) => return Ok(Expect::Err(e)),
                    _ => Pid(sys.vm.procs.keys().next_back().map_or(1, |p| p.0 + 1)),
                };
                if sys.vm.procs.contains_key(&child) {
                    return Err(self.bad(step, format!("fork child {} already exists", child.0)));
                }
                if let Call::CloneVm { flags } = step.call {
                    val(sys.sys_clone_vm(pid, child, flags))
                } else if let Call::Fork { vfork: true } = step.call {
                    val(sys.sys_vfork(pid, child))
                } else {
                    val(sys.sys_fork(pid, child))
                }
            }
            Call::ExitGroup { .. } => {
                sys.sys_exit(pid).map_err(|e| self.bad(step, e.to_string()))?;
                Expect::Unknown
            }
            Call::Execve { .. } => val(sys.sys_execve(pid)),
            Call::SetVmaAnonName { addr, len, name } => {
                val(sys.sys_set_vma_anon_name(pid, *addr, *len, name.as_deref()))
            }
            Call::Openat { path, flags, .. } => ival(sys.sys_openat(pid, path, *flags)),
            Call::Close { fd } => val(sys.sys_close(pid, *fd)),
            Call::Dup { fd } => ival(sys.sys_dup(pid, *fd)),
            Call::Dup2 { oldfd, newfd } => ival(sys.sys_dup2(pid, *oldfd, *newfd)),
            Call::Ftruncate { fd, len } => val(sys.sys_ftruncate(pid, *fd, *len)),
            Call::Touch { addr, len, write } => self.touch_now(step.line, step.pid, *addr, *len, *write),
            Call::Pin { addr, len } => val(sys.sys_pin(pid, *addr, *len)),
            Call::Unpin { addr, len } => val(sys.sys_unpin(pid, *addr, *len)),
            Call::Migrate { addr, len } => val(sys.sys_migrate(pid, *addr, *len)),
            Call::MigrateDone { addr, len } => val(sys.sys_migrate_done(pid, *addr, *len)),
            Call::UffdRegister { addr, len, mode } => val(sys.sys_uffd_register(pid, *addr, *len, *mode)),
            Call::UffdUnregister { addr, len } => val(sys.sys_uffd_unregister(pid, *addr, *len)),
            Call::UffdioMove { dst, src, len, mode } => {
                val(sys.sys_uffdio_move(pid, *dst, *src, *len, *mode))
            }
            Call::VmaRecord(..) => Expect::Unknown,
            Call::MapRecord(RecordedVma { addr, len, pgoff, prot, shared, dev, ino, path, name }) => val(sys
                .map_record(
                    pid,
                    *addr,
                    *len,
                    *pgoff,
                    *prot,
                    *shared,
                    (*dev, *ino),
                    path.as_deref(),
                    name.as_deref().map(crate::vma::SpecialMapping::from_name),
                )),
        })
    }
}

/// The address ranges a call may change, for the incremental check: before the call
/// (`outcome` None: what it may unmap or change) or after it (also where it mapped). None
/// when its reach is not bounded by ranges (fork, exit, exec, a process's whole state).
fn touched_ranges(
    sys: &crate::mm::System,
    step: &Step,
    outcome: Option<&Expect>,
) -> Option<Vec<(crate::mm::MmId, u64, u64)>> {
    use crate::abi::{MAP_FIXED, MAP_FIXED_NOREPLACE, MREMAP_FIXED};
    let mm = sys.vm.mm_of(step.pid).ok()?;
    let span = |a: u64, len: u64| {
        let s = a & !(crate::types::PAGE_SIZE - 1);
        let e = a.saturating_add(len).saturating_add(crate::types::PAGE_SIZE - 1)
            & !(crate::types::PAGE_SIZE - 1);
        (mm, s, e.max(s))
    };
    let result = match outcome {
        Some(Expect::Value(v)) => Some(*v),
        _ => None,
    };
    let mut r = Vec::new();
    match step.call {
        Call::Touch { addr, len, .. } => r.push(span(addr, len)),
        Call::Munmap { addr, len }
        | Call::Mprotect { addr, len, .. }
        | Call::Madvise { addr, len, .. }
        | Call::Mlock { addr, len, .. }
        | Call::Munlock { addr, len } => r.push(span(addr, len)),
        Call::Mmap { addr, len, flags, .. } => {
            if flags & (MAP_FIXED | MAP_FIXED_NOREPLACE) != 0 {
                r.push(span(addr, len));
            }
            if let Some(a) = result {
                r.push(span(a, len));
            }
        }
        Call::Mremap { old_addr, old_len, new_len, flags, new_addr } => {
            r.push(span(old_addr, old_len.max(new_len)));
            if flags & MREMAP_FIXED != 0 {
                r.push(span(new_addr, new_len));
            }
            if let Some(a) = result {
                r.push(span(a, new_len));
            }
        }
        Call::Brk { addr } => {
            // From the break as it stands to the one asked for (brk(NULL) asks nothing).
            let now = sys.vm.mms[mm].brk.0;
            let to = if addr >= sys.vm.mms[mm].start_brk.0 { addr } else { now };
            let (lo, hi) = (now.min(to), now.max(to));
            r.push(span(lo, hi - lo));
        }
        // Nothing of the memory changes.
        Call::VmaRecord(..) | Call::Openat { .. } | Call::Close { .. } | Call::Dup { .. } => {}
        _ => return None,
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sampled check that finds a broken invariant several steps after it broke names the
    /// step that broke it, not the one after which it happened to look.
    #[test]
    fn sampled_check_blames_the_step_that_broke_the_invariant() {
        let mut text = String::from(
            "1 mmap(0x200000000000, 65536, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED, -1, 0) = 0x200000000000\n",
        );
        for i in 0..16 {
            text += &format!("1 touch({:#x}, 4096, \"w\") = 0\n", 0x2000_0000_0000u64 + i * 4096);
        }
        let script = crate::script::parse_str("blame.strace", &text).expect("parses");
        let opts = RunOptions { check: true, check_sampled: true, ..Default::default() };
        let mut runner = Runner::new(&script, &opts).expect("runner");
        // After line 6 (the fifth touch), a page's mapcount goes wrong.
        runner.inject = Some((6, |sys| {
            let (id, _) = sys.mem.folios.iter().filter(|(_, f)| f.is_anon()).last().expect("a folio");
            sys.mem.folios[id].pages[0].mapcount += 1;
        }));
        for step in &script.steps {
            // Make every check look too expensive: none runs until the end.
            runner.sampling.checks = std::time::Duration::from_secs(3600);
            runner.step(step, false).expect("no check runs during the steps");
        }
        match runner.check_now() {
            Err(RunError::Invariant { line, call, .. }) => {
                assert_eq!(line, 6, "blamed {call}");
                assert_eq!(call, "touch(0x200000004000, 4096, \"w\")");
            }
            other => panic!("the final check must find the broken mapcount: {other:?}"),
        }
        // Without sampling the same run stops at that step at once.
        let every = RunOptions { check: true, ..Default::default() };
        let mut runner = Runner::new(&script, &every).expect("runner");
        runner.inject = Some((6, |sys| {
            let (id, _) = sys.mem.folios.iter().filter(|(_, f)| f.is_anon()).last().expect("a folio");
            sys.mem.folios[id].pages[0].mapcount += 1;
        }));
        let err = script.steps.iter().find_map(|s| runner.step(s, false).err());
        assert!(matches!(err, Some(RunError::Invariant { line: 6, .. })), "{err:?}");
    }

    /// The newest anon folio (the one line 6's touch made).
    fn newest(sys: &System) -> anonmm_model::folio::FolioId {
        sys.mem.folios.iter().filter(|(_, f)| f.is_anon()).last().expect("a folio").0
    }

    /// The incremental check after every step catches, at the step, each corruption the full
    /// check catches when it lies in what the step touched: a mapcount, exclusivity, an
    /// index, extra references, an anon_vma's count, a PTE table's count; one outside it is
    /// left to the full check, which still blames its step.
    #[test]
    fn incremental_check_catches_corruptions_in_what_a_step_touched() {
        let mut text = String::from(
            "1 mmap(0x200000000000, 65536, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED, -1, 0) = 0x200000000000\n",
        );
        for i in 0..16 {
            text += &format!("1 touch({:#x}, 4096, \"w\") = 0\n", 0x2000_0000_0000u64 + i * 4096);
        }
        let script = crate::script::parse_str("incremental.strace", &text).expect("parses");
        let corruptions: [(&str, Corrupt); 6] = [
            ("mapcount", |sys| {
                let id = newest(sys);
                sys.mem.folios[id].pages[0].mapcount += 1
            }),
            ("exclusive", |sys| {
                let id = newest(sys);
                sys.mem.folios[id].pages[0].anon_exclusive = false
            }),
            ("index", |sys| {
                let id = newest(sys);
                sys.mem.folios[id].index.0 += 1
            }),
            ("extra refs", |sys| {
                let id = newest(sys);
                sys.mem.folios[id].extra_refs += 1
            }),
            ("num_active_vmas", |sys| {
                let (id, _) = sys.rmap.anon_vmas.iter().next().expect("an anon_vma");
                sys.rmap.anon_vmas[id].num_active_vmas += 1
            }),
            ("PTE table count", |sys| {
                let (mm, _) = sys.vm.mms.iter().next().expect("an mm");
                let key = 0x2000_0000_0000u64 >> crate::types::PMD_SHIFT;
                if let Some(anonmm_model::pagetable::Pmd::Table(t)) = sys.vm.mms[mm].pt.pmds.get_mut(&key) {
                    t.used += 1;
                }
            }),
        ];
        let incremental =
            RunOptions { check: true, check_sampled: true, check_incremental: true, ..Default::default() };
        for (what, corrupt) in corruptions {
            // The full check sees it.
            let every = RunOptions { check: true, ..Default::default() };
            let mut full = Runner::new(&script, &every).expect("runner");
            full.inject = Some((6, corrupt));
            let err = script.steps.iter().find_map(|s| full.step(s, false).err());
            assert!(matches!(err, Some(RunError::Invariant { line: 6, .. })), "{what}: full: {err:?}");
            // So does the incremental one, at the step, with no full check run.
            let mut runner = Runner::new(&script, &incremental).expect("runner");
            runner.inject = Some((6, corrupt));
            let err = script.steps.iter().find_map(|s| {
                runner.sampling.checks = std::time::Duration::from_secs(3600);
                runner.step(s, false).err()
            });
            match err {
                Some(RunError::Invariant { line, .. }) => assert_eq!(line, 6, "{what}"),
                other => panic!("{what}: the incremental check must see it: {other:?}"),
            }
            assert_eq!(runner.result.checks, 0, "{what}: no full check ran");
            // After the mmap and the five touches, the last of which found it.
            assert_eq!(runner.result.incremental_checks, 6, "{what}");
        }
        // Outside the step's range (the first page's folio, line 2's): not seen after line 6
        // by the incremental check, but by the full check after the last step, which blames
        // line 6 by redoing the run with a full check after every step.
        let mut runner = Runner::new(&script, &incremental).expect("runner");
        runner.inject = Some((6, |sys| {
            let (id, _) = sys.mem.folios.iter().find(|(_, f)| f.is_anon()).expect("a folio");
            sys.mem.folios[id].pages[0].mapcount += 1;
        }));
        for s in &script.steps {
            runner.sampling.checks = std::time::Duration::from_secs(3600);
            runner.step(s, false).expect("the incremental checks do not see it");
        }
        match runner.check_now() {
            Err(RunError::Invariant { line, .. }) => assert_eq!(line, 6),
            other => panic!("the final full check must find it: {other:?}"),
        }
    }
}
