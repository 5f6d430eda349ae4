//! Replaying a trace (`anonmm replay`, `plot`, `bench`): run it on the model in replay mode
//! (`RunOptions::replay`, the rewrites of [`crate::replay`]) and gather the outcome, per
//! policy. Kept apart from `replay.rs`, which the runner uses, so that the runner and this
//! driver of the runner do not import each other.

use crate::replay::{DivClass, ReplayState, count_vmas};
use crate::script::{Step, format_result_for};

mod all;
pub use all::{PolicyRun, replay_trace_all, replay_trace_all_on};

/// What replaying one trace with one policy gave.
#[derive(Clone, Debug)]
pub struct ReplayOutcome {
    /// Steps in the trace.
    pub steps: usize,
    /// Divergences found and adjustments made.
    pub replay: ReplayState,
    /// The model's work counters at the end of the replay.
    pub stats: crate::stats::Stats,
    /// (all, anonymous) VMAs after the last step; when every process has exited, those
    /// just before the last `exit_group`.
    pub vmas_end: (usize, usize),
    /// The most (all, anonymous) VMAs held after any step.
    pub vmas_peak: (usize, usize),
    /// Invariant broken (with `check`): where, and the replay stopped there.
    pub invariant: Option<String>,
}

impl ReplayOutcome {
    /// A damaged trace (garbled lines, lost events: [`ImportReport::damaged_from`]) can make
    /// the model disagree with no fault of its own: `model` divergences from the first
    /// damaged line on are counted as `trace` ones.
    ///
    /// [`ImportReport::damaged_from`]: crate::import::ImportReport::damaged_from
    pub fn blame_damage(&mut self, report: &crate::import::ImportReport) {
        let Some(from) = report.damaged_from else { return };
        let r = &mut self.replay;
        let moved = r.model_lines.iter().filter(|&&l| l >= from).count() as u64;
        if moved == 0 {
            return;
        }
        *r.counts.entry(DivClass::Model).or_default() -= moved;
        *r.counts.entry(DivClass::Trace).or_default() += moved;
        r.model_lines.retain(|&l| l < from);
        for d in &mut r.examples {
            if d.class == DivClass::Model && d.line >= from {
                d.class = DivClass::Trace;
                d.got = format!("{} (after damage in the trace at line {from})", d.got);
            }
        }
    }
}

/// Replay a trace on the model (`opts.replay` is forced on; `last_view_only` too, so no
/// per-step views are built), keeping `max_examples` divergences of each class. `progress` is told how many steps are done, now and then.
pub fn replay_script(
    script: &crate::script::Script,
    opts: &crate::run::RunOptions,
    max_examples: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<ReplayOutcome, crate::run::RunError> {
    replay_script_observed(script, opts, max_examples, progress, &mut |_| {})
}

/// The VMAs held after one replayed step, for a series over the trace (`anonmm plot`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmaSample {
    /// Index of the step in the script (0-based).
    pub index: usize,
    /// The step's line in the trace (perf lines carry a timestamp that `plot` looks up).
    pub line: usize,
    /// VMAs of all live processes, and those without a file.
    pub all: usize,
    /// VMAs without a file (`vma_is_anonymous`), of all live processes.
    pub anon: usize,
}

/// `replay_script`, telling `observe` the VMA counts after every step (also after a step
/// skipped because its process does not exist, so that the series has one sample per step).
/// A step that stopped the replay with a broken invariant is not observed.
pub fn replay_script_observed(
    script: &crate::script::Script,
    opts: &crate::run::RunOptions,
    max_examples: usize,
    progress: &mut dyn FnMut(usize),
    observe: &mut dyn FnMut(VmaSample),
) -> Result<ReplayOutcome, crate::run::RunError> {
    let opts = replaying(opts);
    let mut r = Replayer::new(crate::run::Runner::new(script, &opts)?, max_examples);
    for (i, step) in script.steps.iter().enumerate() {
        if i % 1024 == 0 {
            progress(i);
        }
        if !r.step(i, step, observe) {
            break;
        }
    }
    progress(script.steps.len());
    Ok(r.finish(script.steps.len()))
}

/// Why a trace could not be replayed.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// It could not be read or imported.
    #[error(transparent)]
    Import(#[from] crate::import::ImportError),
    /// The run could not start.
    #[error(transparent)]
    Run(#[from] crate::run::RunError),
    /// The output could not be written (`write_import`).
    #[error("{path}: cannot write: {source}")]
    Write {
        /// Where.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Write the script `anonmm import` makes of the trace at `path` to `out` as the import
/// streams, one line per step ([`crate::script::format_step`]); with `resolved`, each step
/// as replay runs it (`RunOptions::resolved`: a step replay does not run as a comment).
/// Memory is bounded by a few batches of steps (and, with `resolved`, the model's state),
/// not by the trace's length. When the stream was not exact
/// ([`crate::import::StreamEnd::exact`]), `out` is emptied and written again from the
/// whole import. `out_name` names `out` in errors. Returns the import's report.
pub fn write_import(
    path: &std::path::Path,
    resolved: bool,
    out: &mut std::fs::File,
    out_name: &str,
) -> Result<crate::import::ImportReport, TraceError> {
    use std::io::{Seek, Write};

    use crate::run::{RunOptions, Runner};
    let werr = |source: std::io::Error| TraceError::Write { path: out_name.to_string(), source };
    let opts = RunOptions { replay: true, last_view_only: true, resolved: true, ..Default::default() };
    let named = crate::script::Script { path: path.display().to_string(), ..Default::default() };
    // One step: its line(s), through `w`.
    let emit = |runner: &mut Option<Runner<'_>>, step: &Step, w: &mut dyn Write| -> Result<(), TraceError> {
        let Some(r) = runner else {
            return writeln!(w, "{}", crate::script::format_step(step)).map_err(werr);
        };
        r.spawn_first(step.pid);
        r.step_or_diverge(step, false)?;
        for l in r.result.resolved.drain(..) {
            writeln!(w, "{l}").map_err(werr)?;
        }
        Ok(())
    };
    let mut stream = crate::import::stream_trace(path)?;
    let mut runner = if resolved { Some(Runner::empty(&named, &opts)?) } else { None };
    let mut w = std::io::BufWriter::with_capacity(1 << 20, &mut *out);
    while let Some(batch) = stream.next_batch() {
        for item in &batch {
            emit(&mut runner, &item.step(), &mut w)?;
        }
        stream.recycle(batch);
    }
    w.flush().map_err(werr)?;
    drop(w);
    let end = stream.finish();
    if end.exact {
        return Ok(end.report);
    }
    // A step already written was edited after all: write the whole import instead.
    out.set_len(0).map_err(werr)?;
    out.seek(std::io::SeekFrom::Start(0)).map_err(werr)?;
    let (script, report) = crate::import::read_trace(path)?;
    let mut runner = if resolved { Some(Runner::new(&script, &opts)?) } else { None };
    let mut w = std::io::BufWriter::with_capacity(1 << 20, &mut *out);
    for step in &script.steps {
        emit(&mut runner, step, &mut w)?;
    }
    w.flush().map_err(werr)?;
    Ok(report)
}

/// Import the trace at `path` and replay it, as [`replay_script`] does after
/// [`crate::import::read_trace`]. The import streams: a second thread reads and converts
/// the trace while this one replays the steps already converted, so memory is the model's
/// state and a few batches of steps, whatever the trace's length. With `opts.check`
/// sampled, a broken invariant is blamed on the step that broke it as [`replay_script`]
/// blames it: the trace is streamed again with a check after every step, up to that step.
/// The outcome is always that of the whole import: in the rare case the stream was not
/// exact ([`crate::import::StreamEnd::exact`]), the trace is imported whole and replayed
/// again.
pub fn replay_trace(
    path: &std::path::Path,
    opts: &crate::run::RunOptions,
    max_examples: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<(ReplayOutcome, crate::import::ImportReport), TraceError> {
    let (mut out, report) = replay_trace_once(path, opts, max_examples, progress)?;
    blame_exact_step(path, opts, max_examples, &mut out)?;
    Ok((out, report))
}

/// A sampled check (`RunOptions::check_sampled`) of a streamed replay finds a broken
/// invariant some steps after the one that broke it, and has no script to redo: the trace
/// is streamed again with a check after every step, which stops at that step; its message
/// replaces the sampled one (the counts stay those of the replay that found it, as the
/// runner's own redo leaves them).
fn blame_exact_step(
    path: &std::path::Path,
    opts: &crate::run::RunOptions,
    max_examples: usize,
    out: &mut ReplayOutcome,
) -> Result<(), TraceError> {
    if !(opts.check && opts.check_sampled && out.invariant.is_some()) {
        return Ok(());
    }
    let every = crate::run::RunOptions { check_sampled: false, ..opts.clone() };
    let (again, _) = replay_trace_once(path, &every, max_examples, &mut |_| {})?;
    if again.invariant.is_some() {
        out.invariant = again.invariant;
    }
    Ok(())
}

/// The trace at `path` replayed as it streams, as [`replay_script_observed`] replays it:
/// `observe` is told the VMA counts after every step. Only when the stream was exact
/// ([`crate::import::StreamEnd::exact`]) is the outcome that of the whole import: on
/// `Ok(None)` the samples told were not, and the caller imports the trace whole.
pub fn replay_trace_observed(
    path: &std::path::Path,
    opts: &crate::run::RunOptions,
    max_examples: usize,
    observe: &mut dyn FnMut(VmaSample),
) -> Result<Option<(ReplayOutcome, crate::import::ImportReport)>, TraceError> {
    let mut stream = crate::import::stream_trace(path)?;
    let opts = replaying(opts);
    let named = crate::script::Script { path: path.display().to_string(), ..Default::default() };
    let mut r = Replayer::new(crate::run::Runner::empty(&named, &opts)?, max_examples);
    let (mut i, mut stopped) = (0, false);
    while let Some(batch) = stream.next_batch() {
        for item in &batch {
            if stopped {
                break;
            }
            if i == 0 {
                r.runner.spawn_first(item.step().pid);
            }
            stopped = !r.streamed(i, item, observe);
            i += 1;
        }
        stream.recycle(batch);
    }
    let end = stream.finish();
    if !end.exact {
        return Ok(None);
    }
    let mut out = r.finish(end.report.steps as usize);
    out.blame_damage(&end.report);
    Ok(Some((out, end.report)))
}

/// [`replay_trace`] without the exact blame of a sampled check.
fn replay_trace_once(
    path: &std::path::Path,
    opts: &crate::run::RunOptions,
    max_examples: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<(ReplayOutcome, crate::import::ImportReport), TraceError> {
    use crate::run::Runner;
    let mut stream = crate::import::stream_trace(path)?;
    let opts = replaying(opts);
    let named = crate::script::Script { path: path.display().to_string(), ..Default::default() };
    // The first process is the first step's.
    let mut r = Replayer::new(Runner::empty(&named, &opts)?, max_examples);
    let mut i = 0;
    let mut stopped = false;
    while let Some(batch) = stream.next_batch() {
        let mut k = 0;
        while k < batch.len() && !stopped {
            if i % 1024 == 0 {
                progress(i);
            }
            // Runs of page faults end at the next progress report.
            let (n, go) = r.replay_head(i, &batch[k..], 1024 - i % 1024);
            (i, k, stopped) = (i + n, k + n, !go);
        }
        stream.recycle(batch);
    }
    let end = stream.finish();
    if !end.exact {
        // A step already replayed was edited after all (see `StreamEnd::exact`): replay the
        // whole import instead.
        drop(r);
        let (script, report) = crate::import::read_trace(path)?;
        let mut out = replay_script(&script, &opts, max_examples, progress)?;
        out.blame_damage(&report);
        return Ok((out, report));
    }
    progress(i);
    let mut out = r.finish(end.report.steps as usize);
    out.blame_damage(&end.report);
    Ok((out, end.report))
}

/// `opts` as a replay runs with them: the trace's world taken as given, and the processes'
/// state captured after the last step only.
fn replaying(opts: &crate::run::RunOptions) -> crate::run::RunOptions {
    crate::run::RunOptions { replay: true, last_view_only: true, ..opts.clone() }
}

/// A replay in progress: the runner and what the replay has found so far.
struct Replayer<'a> {
    runner: crate::run::Runner<'a>,
    invariant: Option<String>,
}

impl<'a> Replayer<'a> {
    fn new(mut runner: crate::run::Runner<'a>, max_examples: usize) -> Replayer<'a> {
        if let Some(r) = &mut runner.replay {
            r.max_examples = max_examples;
        }
        Replayer { runner, invariant: None }
    }

    /// The items at the head of `items` as steps `i`, `i + 1`, …, the first process spawned
    /// at step 0: a run of page faults at once ([`crate::run::Runner::replay_faults`], at
    /// most `max`), else one item ([`Replayer::streamed`]). How many ran, and false once an
    /// invariant failure stopped the replay.
    #[inline]
    fn replay_head(&mut self, i: usize, items: &[crate::import::Streamed], max: usize) -> (usize, bool) {
        if i == 0 {
            self.runner.spawn_first(items[0].step().pid);
        }
        match self.runner.replay_faults(items, max) {
            0 => (1, self.streamed(i, &items[0], &mut |_| {})),
            n => (n, true),
        }
    }

    /// [`Replayer::step`] of a streamed step: most of a trace's page faults run from their
    /// fields ([`crate::run::Runner::replay_fault`]), without making a step.
    #[inline]
    fn streamed(
        &mut self,
        i: usize,
        item: &crate::import::Streamed,
        observe: &mut (impl FnMut(VmaSample) + ?Sized),
    ) -> bool {
        if let &crate::import::Streamed::Fault { line, pid, addr, len, write } = item
            && self.runner.replay_fault(line, pid, addr, len, write)
        {
            let (all, anon) = self.runner.result.vmas_now;
            observe(VmaSample { index: i, line, all, anon });
            return true;
        }
        self.step(i, &item.step(), &mut |s| observe(s))
    }

    /// A copy that goes on under `opts` ([`crate::run::Runner::fork`]).
    fn fork<'b>(&self, opts: &'b crate::run::RunOptions) -> Replayer<'b>
    where
        'a: 'b,
    {
        Replayer { runner: self.runner.fork(opts), invariant: self.invariant.clone() }
    }

    /// [`Replayer::fork`] without the copy.
    fn into_fork<'b>(self, opts: &'b crate::run::RunOptions) -> Replayer<'b>
    where
        'a: 'b,
    {
        Replayer { runner: self.runner.into_fork(opts), invariant: self.invariant }
    }

    /// Replay step `i`; false when a broken invariant stops the replay.
    fn step(&mut self, i: usize, step: &Step, observe: &mut dyn FnMut(VmaSample)) -> bool {
        use crate::run::RunError;
        let runner = &mut self.runner;
        let (all, anon) = runner.result.vmas_now;
        let sample = VmaSample { index: i, line: step.line, all, anon };
        if !runner.sys.vm.procs.contains_key(&step.pid) {
            if let Some(r) = &mut runner.replay {
                r.no_process(step);
            }
            observe(sample);
            return true;
        }
        let (all, anon) = match runner.step(step, false) {
            Ok(_) => runner.result.vmas_now,
            Err(e @ RunError::Invariant { .. }) => {
                self.invariant = Some(e.to_string());
                return false;
            }
            Err(e) => {
                if let Some(r) = &mut runner.replay {
                    let expected =
                        step.expect.map_or_else(|| "?".into(), |x| format_result_for(&step.call, &x));
                    r.record(ReplayState::divergence(DivClass::Model, step, expected, e.to_string()));
                }
                // The step stopped before the runner counted: count here.
                count_vmas(&runner.sys)
            }
        };
        observe(VmaSample { all, anon, ..sample });
        true
    }

    /// The outcome of a replay of `steps` steps.
    fn finish(mut self, steps: usize) -> ReplayOutcome {
        let runner = &mut self.runner;
        if self.invariant.is_none()
            && let Err(e) = runner.check_now()
        {
            self.invariant = Some(e.to_string());
        }
        let replay = runner.replay.take().unwrap_or_default();
        let mut vmas_end = count_vmas(&runner.sys);
        if runner.sys.vm.procs.is_empty() {
            vmas_end = replay.vmas_before_exit;
        }
        ReplayOutcome {
            steps,
            stats: runner.sys.trace.stats.clone(),
            vmas_end,
            vmas_peak: runner.result.vmas_peak,
            replay,
            invariant: self.invariant,
        }
    }
}
