//! `replay --policy all`: one import replayed under several policies, the steps before any
//! policy could decide differently replayed once (the trunk), then a fork per policy.

use super::{ReplayOutcome, Replayer, TraceError, blame_exact_step, replay_script};

/// One policy's result in [`replay_trace_all`]: its outcome and the seconds its replay took
/// (or why it could not run).
pub type PolicyRun = Result<(ReplayOutcome, f64), crate::run::RunError>;

/// Import the trace at `path` once and replay it under each of `opts` (options that differ
/// in the policy only; else each policy is replayed from the first step). Policies differ
/// only where a design hook decides differently ([`anonmm_model::policy::PolicyProbe`]), so
/// the steps before the first such step are replayed once, for all of them: the first
/// policy of `opts` (the trunk) replays the import as it streams, probing every hook call,
/// while a second copy of it follows on the other core, step by step as the first found
/// them neutral; at the first step that was not, the second copy is the template each
/// policy that differs is forked from, to replay the rest (the trunk goes on probing for the
/// others; one that never differs gets the trunk's outcome). So memory holds at most three
/// models (the template and two of: the trunk, a fork per thread) and the steps from the
/// first differing one on (a page fault in 32 bytes), never the whole import as scripts. Checked runs too: a sampled check's broken
/// invariant is blamed exactly as [`replay_trace`](super::replay_trace) blames it. Each outcome is that of
/// [`replay_trace`](super::replay_trace) under the same options (when the stream was not exact, the trace is
/// imported whole and replayed policy after policy). A policy's seconds are those of the
/// shared part (the trunk's, up to the first step that differed) plus its own.
pub fn replay_trace_all(
    path: &std::path::Path,
    opts: &[crate::run::RunOptions],
    max_examples: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<(Vec<PolicyRun>, crate::import::ImportReport), TraceError> {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    replay_trace_all_on(path, opts, max_examples, cores, progress)
}

/// [`replay_trace_all`] with `at_once` threads (below 2: one policy after the other, each
/// from the first step).
pub fn replay_trace_all_on(
    path: &std::path::Path,
    opts: &[crate::run::RunOptions],
    max_examples: usize,
    at_once: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<(Vec<PolicyRun>, crate::import::ImportReport), TraceError> {
    use std::sync::mpsc::sync_channel;
    use std::sync::{Arc, Condvar, Mutex};

    use crate::run::{RunOptions, Runner};
    /// Batches in flight to the trunk's thread.
    const IN_FLIGHT: usize = 4;
    /// Batches the trunk's copy may be behind the import.
    const KEEP_AHEAD: usize = 4 * IN_FLIGHT;
    let opts: Vec<RunOptions> = opts.iter().map(super::replaying).collect();
    // The trunk is shared only by options that differ in the policy alone.
    let but_policy = |o: &RunOptions| format!("{:?}", RunOptions { policy: Default::default(), ..o.clone() });
    let shared =
        opts.len() >= 2 && at_once >= 2 && opts.iter().all(|o| but_policy(o) == but_policy(&opts[0]));
    if !shared {
        return replay_trace_each_on(path, &opts, max_examples, at_once, progress);
    }
    let n = opts.len();
    let named = crate::script::Script { path: path.display().to_string(), ..Default::default() };
    let policies: Vec<crate::policy::Policy> = opts.iter().map(|o| o.policy).collect();
    // The policies that can differ from the trunk's (a repeated one cannot).
    let others = policies.iter().filter(|&&p| p != policies[0]).count();
    let mut stream = crate::import::stream_trace(path)?;
    // A: the trunk, live from the import, probing; B: its copy, following A.
    let mut a = Replayer::new(Runner::empty(&named, &opts[0])?, max_examples);
    a.runner.sys.probe_policies(&policies);
    let b = Replayer::new(Runner::empty(&named, &opts[0])?, max_examples);
    let trunk = Mutex::new(Trunk::default());
    let trunk_cv = Condvar::new();
    let slot: Mutex<Slot<'_>> = Mutex::new(Slot {
        template: None,
        ready: false,
        taken: (0..n).map(|j| j == 0).collect(),
        differs: vec![false; n],
        trunk: None,
        a_gone: false,
        b_gone: false,
    });
    let slot_cv = Condvar::new();
    let results: Mutex<Vec<Option<PolicyRun>>> = Mutex::new((0..n).map(|_| None).collect());
    let lock_trunk = || trunk.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let store = |k: usize, run: PolicyRun| {
        if let Ok(mut r) = results.lock() {
            r[k] = Some(run);
        }
    };
    // The kept batch `b`, waiting for the import; None once the import ended before it.
    let kept = |b: usize| -> Option<(usize, Batch)> {
        let mut t = lock_trunk();
        loop {
            if let Some(batch) = t.batches.get(b) {
                return batch.clone();
            }
            if t.total.is_some() {
                return None;
            }
            t = trunk_cv.wait(t).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    };
    // Take the other policies in turn, as each is known to differ from the trunk, each forked
    // from the template (the last one the template itself), and replay them from the first
    // step that differed. Once the trunk ended, those that never differed get its outcome.
    let take_policies = || {
        loop {
            let (mut r, j, t0, from, prefix) = {
                let mut s = slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let j = loop {
                    if s.ready {
                        if let Some(j) = (1..n).find(|&j| !s.taken[j] && s.differs[j]) {
                            break j;
                        }
                        if let Some(trunk) = s.trunk.clone() {
                            for j in 1..n {
                                if !std::mem::replace(&mut s.taken[j], true) {
                                    store(j, Ok(trunk.clone()));
                                }
                            }
                            return;
                        }
                    }
                    // A thread that panicked: its panic ends the scope.
                    if (s.a_gone && s.trunk.is_none()) || (s.b_gone && !s.ready) {
                        return;
                    }
                    s = slot_cv.wait(s).unwrap_or_else(std::sync::PoisonError::into_inner);
                };
                s.taken[j] = true;
                let t0 = std::time::Instant::now();
                let last = s.trunk.is_some() && !(1..n).any(|k| !s.taken[k] && s.differs[k]);
                let Some((template, from, prefix)) = &s.template else { return };
                let (from, prefix) = (*from, *prefix);
                let r = if last {
                    let (template, _, _) = s.template.take().expect("template");
                    template.into_fork(&opts[j])
                } else {
                    template.fork(&opts[j])
                };
                (r, j, t0, from, prefix)
            };
            let (mut b, d) = from;
            while let Some((start, batch)) = kept(b) {
                let mut k = d.saturating_sub(start).min(batch.len());
                while k < batch.len() && r.invariant.is_none() {
                    k += r.replay_head(start + k, &batch[k..], usize::MAX).0;
                }
                b += 1;
            }
            let total = lock_trunk().total.unwrap_or(0);
            let out = r.finish(total);
            store(j, Ok((out, prefix + t0.elapsed().as_secs_f64())));
        }
    };
    let (tx, rx) = sync_channel::<Batch>(IN_FLIGHT);
    let end = std::thread::scope(|s| {
        let (lock_trunk, trunk_cv, slot, slot_cv, store, take_policies) =
            (&lock_trunk, &trunk_cv, &slot, &slot_cv, &store, &take_policies);
        // A: the trunk, live, with the probe until a step is not neutral.
        s.spawn(move || {
            let _gone = OnDrop(|| {
                lock_trunk().a_gone = true;
                trunk_cv.notify_all();
                slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner).a_gone = true;
                slot_cv.notify_all();
            });
            let t0 = std::time::Instant::now();
            let (mut i, mut stopped, mut probing, mut seen) = (0, false, true, 0);
            for batch in rx {
                for item in batch.iter() {
                    if stopped {
                        break;
                    }
                    if i == 0 {
                        a.runner.spawn_first(item.step().pid);
                    }
                    stopped = !a.streamed(i, item, &mut |_| {});
                    // A step that stopped the run (a broken invariant) is not shared either.
                    let differing = if stopped { others } else { a.runner.sys.probe_differing() };
                    if probing && differing > seen {
                        if seen == 0 {
                            lock_trunk().diverged = Some((i, t0.elapsed().as_secs_f64()));
                            trunk_cv.notify_all();
                        }
                        seen = differing;
                        let differs = a.runner.sys.probe_differs();
                        let mut s = slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        for (k, d) in s.differs.iter_mut().enumerate() {
                            *d |= stopped || differs.get(k).copied().unwrap_or(true);
                        }
                        drop(s);
                        slot_cv.notify_all();
                        if seen >= others {
                            // Every other policy has its own run now.
                            probing = false;
                            a.runner.sys.probe_off();
                        }
                    }
                    i += 1;
                }
                if seen == 0 {
                    lock_trunk().neutral = i;
                    trunk_cv.notify_all();
                }
            }
            let total = lock_trunk().total.unwrap_or(i);
            // `finish` drops the model.
            let out = a.finish(total);
            let secs = t0.elapsed().as_secs_f64();
            if seen == 0 {
                // No step differed: every policy's outcome is the trunk's.
                lock_trunk().a_done = true;
                trunk_cv.notify_all();
                for k in 1..n {
                    store(k, Ok((out.clone(), secs)));
                }
                store(0, Ok((out, secs)));
                return;
            }
            let mut s = slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            s.trunk = Some((out.clone(), secs));
            drop(s);
            slot_cv.notify_all();
            store(0, Ok((out, secs)));
            take_policies();
        });
        // B: the trunk again, each step once A found it neutral, up to the first that was not.
        s.spawn(move || {
            let _gone = OnDrop(|| {
                lock_trunk().b_gone = true;
                trunk_cv.notify_all();
                slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner).b_gone = true;
                slot_cv.notify_all();
            });
            let mut b = b;
            let (mut batch_no, mut i) = (0, 0);
            loop {
                let (start, batch, limit) = {
                    let mut t = lock_trunk();
                    loop {
                        if let Some((d, prefix)) = t.diverged
                            && i >= d
                        {
                            drop(t);
                            let mut s = slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                            s.template = Some((b, (batch_no, d), prefix));
                            s.ready = true;
                            drop(s);
                            slot_cv.notify_all();
                            take_policies();
                            return;
                        }
                        if t.a_done || (t.a_gone && t.diverged.is_none()) {
                            return;
                        }
                        let limit = t.diverged.map_or(t.neutral, |(d, _)| d);
                        if let Some(Some((start, batch))) = t.batches.get(batch_no)
                            && (i < limit || batch.is_empty())
                        {
                            break (*start, Arc::clone(batch), limit);
                        }
                        t = trunk_cv.wait(t).unwrap_or_else(std::sync::PoisonError::into_inner);
                    }
                };
                let upto = (start + batch.len()).min(limit);
                while i < upto {
                    if b.invariant.is_some() {
                        i = upto;
                        break;
                    }
                    i += b.replay_head(i, &batch[i - start..upto - start], usize::MAX).0;
                }
                if i == start + batch.len() {
                    // Passed: no policy needs it again.
                    let mut t = lock_trunk();
                    t.batches[batch_no] = None;
                    batch_no += 1;
                    t.passed = batch_no;
                    drop(t);
                    trunk_cv.notify_all();
                }
            }
        });
        let mut n = 0;
        while let Some(batch) = stream.next_batch() {
            let len = batch.len();
            // A copy is shared and kept, and the batch goes back to the import thread at
            // once: it makes only a few batches and waits for them back.
            let shared = Arc::new(batch.clone());
            stream.recycle(batch);
            let mut t = lock_trunk();
            // Before the first differing step, the copy is kept at most KEEP_AHEAD batches
            // behind the import (the trunk is at most IN_FLIGHT + 1 ahead of it).
            while t.diverged.is_none() && !t.b_gone && t.batches.len() - t.passed >= KEEP_AHEAD {
                t = trunk_cv.wait(t).unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            t.batches.push(Some((n, Arc::clone(&shared))));
            drop(t);
            trunk_cv.notify_all();
            n += len;
            let _ = tx.send(shared);
            progress(n);
        }
        let end = stream.finish();
        lock_trunk().total = Some(end.report.steps as usize);
        trunk_cv.notify_all();
        drop(tx);
        end
    });
    finish_runs(path, &opts, max_examples, progress, end, results)
}

/// Runs its closure when dropped, also when the thread panics.
struct OnDrop<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

/// A batch of streamed steps, shared between the replays of [`replay_trace_all`].
type Batch = std::sync::Arc<Vec<crate::import::Streamed>>;

/// What the import and the trunk's two replays share ([`replay_trace_all_on`]).
#[derive(Default)]
struct Trunk {
    /// The batches kept, in order, with the index of their first step: None once the
    /// trunk's copy passed it before the first step that differed.
    batches: Vec<Option<(usize, Batch)>>,
    /// The steps of the whole import, once it ended.
    total: Option<usize>,
    /// Steps the trunk found neutral (the first `neutral`).
    neutral: usize,
    /// The first step that was not, and the trunk's seconds up to it.
    diverged: Option<(usize, f64)>,
    /// The trunk ended with every step neutral.
    a_done: bool,
    /// Batches the trunk's copy passed (the first `passed` are None).
    passed: usize,
    /// The trunk's thread, or its copy's, ended (normally or not): nobody waits for it.
    a_gone: bool,
    b_gone: bool,
}

/// The template of [`replay_trace_all_on`]'s forks: the replayer before the first step that
/// differed, with (its batch, its index) and the shared part's seconds; and which policies
/// were taken, which differed from the trunk so far, and the trunk's outcome once it ended.
struct Slot<'a> {
    template: Option<(Replayer<'a>, (usize, usize), f64)>,
    ready: bool,
    taken: Vec<bool>,
    differs: Vec<bool>,
    trunk: Option<(ReplayOutcome, f64)>,
    /// As [`Trunk::a_gone`] and `b_gone`.
    a_gone: bool,
    b_gone: bool,
}

/// The end of [`replay_trace_all_on`] and [`replay_trace_each_on`], once every thread is
/// done: each policy's run, its sampled check's broken invariant blamed on its exact step;
/// or, when the stream was not exact, every policy replayed again from the whole import.
fn finish_runs(
    path: &std::path::Path,
    opts: &[crate::run::RunOptions],
    max_examples: usize,
    progress: &mut dyn FnMut(usize),
    end: crate::import::StreamEnd,
    results: std::sync::Mutex<Vec<Option<PolicyRun>>>,
) -> Result<(Vec<PolicyRun>, crate::import::ImportReport), TraceError> {
    if !end.exact {
        // A step already replayed was edited after all (see `StreamEnd::exact`).
        let (script, report) = crate::import::read_trace(path)?;
        let runs = opts
            .iter()
            .map(|o| {
                let t0 = std::time::Instant::now();
                replay_script(&script, o, max_examples, progress).map(|out| (out, t0.elapsed().as_secs_f64()))
            })
            .collect();
        return Ok((runs, report));
    }
    let mut runs: Vec<PolicyRun> = results
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .into_iter()
        .map(|r| {
            // Every policy is taken by a thread that runs to the end (a panic ends the scope).
            r.unwrap_or_else(|| {
                Err(crate::run::RunError::BadInput {
                    path: path.display().to_string(),
                    line: 0,
                    reason: "the policy was not replayed".to_string(),
                })
            })
        })
        .collect();
    for (o, run) in opts.iter().zip(&mut runs) {
        if let Ok((out, _)) = run {
            blame_exact_step(path, o, max_examples, out)?;
        }
    }
    Ok((runs, end.report))
}

/// [`replay_trace_all`] without a shared trunk, with at most `at_once` models alive at a
/// time: each policy replayed from the first step (one core, or options that differ in more
/// than the policy).
fn replay_trace_each_on(
    path: &std::path::Path,
    opts: &[crate::run::RunOptions],
    max_examples: usize,
    at_once: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<(Vec<PolicyRun>, crate::import::ImportReport), TraceError> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc::{channel, sync_channel};
    use std::sync::{Arc, Mutex};

    use crate::import::Streamed;
    use crate::run::{RunOptions, Runner};
    /// Batches in flight to each live policy's thread: enough to keep it busy while the
    /// import makes the next one.
    const IN_FLIGHT: usize = 4;
    type Batch = Arc<Vec<Streamed>>;
    let mut stream = crate::import::stream_trace(path)?;
    let opts: Vec<RunOptions> = opts.iter().map(super::replaying).collect();
    let named = crate::script::Script { path: path.display().to_string(), ..Default::default() };
    let workers_n = at_once.clamp(1, opts.len().max(1));
    // The policies after the first `workers_n`, taken in turn by whichever thread is free.
    let next = AtomicUsize::new(workers_n);
    let results: Mutex<Vec<Option<PolicyRun>>> = Mutex::new((0..opts.len()).map(|_| None).collect());
    let replay_one =
        |o: &RunOptions, batches: &mut dyn Iterator<Item = Batch>, total: Option<usize>| -> PolicyRun {
            let t0 = std::time::Instant::now();
            let mut r = Replayer::new(Runner::empty(&named, o)?, max_examples);
            let (mut i, mut stopped) = (0, false);
            for batch in batches {
                let mut k = 0;
                while k < batch.len() && !stopped {
                    let (n, go) = r.replay_head(i, &batch[k..], usize::MAX);
                    (i, k, stopped) = (i + n, k + n, !go);
                }
            }
            Ok((r.finish(total.unwrap_or(i)), t0.elapsed().as_secs_f64()))
        };
    let end = std::thread::scope(|s| {
        let mut txs = Vec::new();
        let mut kept_txs = Vec::new();
        for (k, o) in opts.iter().enumerate().take(workers_n) {
            let (tx, rx) = sync_channel::<Batch>(IN_FLIGHT);
            // The whole trace's steps and their count, once the import ended.
            let (kept_tx, kept_rx) = channel::<(Arc<Vec<Batch>>, usize)>();
            txs.push(tx);
            kept_txs.push(kept_tx);
            let (opts, next, results, replay_one) = (&opts, &next, &results, &replay_one);
            s.spawn(move || {
                // A run that cannot start returns at once; its channel closes and the others
                // go on.
                let mut live = rx.into_iter();
                let run = replay_one(o, &mut live, None);
                // Drain what it did not take, so the import never waits on it.
                live.for_each(drop);
                let Ok((kept, total)) = kept_rx.recv() else { return };
                let run = run.map(|(mut out, t)| {
                    out.steps = total;
                    (out, t)
                });
                if let Ok(mut r) = results.lock() {
                    r[k] = Some(run);
                }
                loop {
                    let j = next.fetch_add(1, Ordering::Relaxed);
                    let Some(o) = opts.get(j) else { break };
                    let run = replay_one(o, &mut kept.iter().cloned(), Some(total));
                    if let Ok(mut r) = results.lock() {
                        r[j] = Some(run);
                    }
                }
            });
        }
        let mut kept: Vec<Batch> = Vec::new();
        let mut n = 0;
        while let Some(batch) = stream.next_batch() {
            n += batch.len();
            // A copy is shared and kept, and the batch goes back to the import thread at
            // once: it makes only a few batches and waits for them back.
            let shared = Arc::new(batch.clone());
            stream.recycle(batch);
            for tx in &txs {
                // A policy that could not start has dropped its end.
                let _ = tx.send(Arc::clone(&shared));
            }
            if opts.len() > workers_n {
                kept.push(shared);
            }
            progress(n);
        }
        let end = stream.finish();
        drop(txs);
        let kept = Arc::new(kept);
        for tx in kept_txs {
            let _ = tx.send((Arc::clone(&kept), end.report.steps as usize));
        }
        end
    });
    finish_runs(path, &opts, max_examples, progress, end, results)
}
