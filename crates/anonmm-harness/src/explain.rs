//! `anonmm explain`: why adjacent VMAs of a process stay apart, in the kernel's terms.
//!
//! The script or trace runs (a trace as `replay` runs it) up to a line; then every pair of
//! adjacent VMAs is put to the model's own merge test, [`System::why_apart`] (the VM_SPECIAL
//! test and `can_vma_merge_left` → `is_mergeable_vma`, `is_mergeable_anon_vma` and the pgoff
//! test of `can_vma_merge_after`), under each policy. Each pair that stays apart gets a line
//! with the refusal's symbolic name (as `run --trace` prints it) and what makes it: the
//! differing flags, the two files, the calls that gave each side its anon_vma, the mremap
//! that moved a side, the userfaultfd registration. A process that exits is explained as it
//! was just before its `exit_group`.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use crate::mm::System;
use crate::rmap::AnonVmaId;
use crate::run::{RunError, RunOptions, Runner};
use crate::script::{Call, Expect, Script, Step};
use crate::stats::MergeReason;
use crate::types::{Pid, VirtAddr, page_align};
use crate::vma::{VmFlags, VmaId};

/// What `anonmm explain` was asked.
#[derive(Clone, Debug)]
pub struct ExplainOptions {
    /// Explain the state after the step on this line (default: after the last).
    pub at: Option<usize>,
    /// Only this process.
    pub pid: Option<Pid>,
    /// The policy the script runs under.
    pub policy: crate::policy::Policy,
    /// Run as `replay` runs a trace (its world taken as given).
    pub replay: bool,
    /// The kernel modelled (`--kernel`): its merge rules decide what stays apart.
    pub kernel: crate::kernel::Kernel,
}

/// Where the state came from: the step that gave each anon_vma (its first fault, or the
/// fork that copied it), and the moving mremaps.
#[derive(Default)]
struct Provenance {
    anon_vmas: HashMap<AnonVmaId, (usize, String)>,
    /// (line, call, destination start, destination end) of every mremap that moved.
    moves: Vec<(usize, String, u64, u64)>,
}

impl Provenance {
    fn note(&mut self, sys: &System, step: &Step, outcome: &Expect) {
        let here = || (step.line, step.call_text().into_owned());
        match (&step.call, outcome) {
            (Call::Touch { addr, .. }, _) => {
                let Ok(mm) = sys.vm.mm_of(step.pid) else { return };
                if let Some(av) =
                    sys.vm.mms[mm].vma_lookup(VirtAddr(*addr)).and_then(|v| sys.vm.vmas[v].anon_vma)
                {
                    self.anon_vmas.entry(av).or_insert_with(here);
                }
            }
            (call, _) => {
                if let (Call::Mremap { old_addr, new_len, .. }, Expect::Value(to)) = (call, outcome)
                    && to != old_addr
                {
                    let end = to.saturating_add(page_align(*new_len).unwrap_or(0));
                    self.moves.push((step.line, step.call_text().into_owned(), *to, end));
                }
                // Other calls may make, copy (fork) or free anon_vmas: look at all of them.
                let mut live = HashMap::new();
                for (_, v) in sys.vm.vmas.iter() {
                    if let Some(av) = v.anon_vma {
                        let from = self.anon_vmas.remove(&av).unwrap_or_else(here);
                        live.insert(av, from);
                    }
                }
                self.anon_vmas = live;
            }
        }
    }

    fn anon_vma_of(&self, sys: &System, v: VmaId) -> String {
        match sys.vm.vmas[v].anon_vma {
            None => "none (never faulted)".to_string(),
            Some(av) => match self.anon_vmas.get(&av) {
                Some((line, call)) => format!("from line {line} `{call}`"),
                None => "from before the trace".to_string(),
            },
        }
    }

    fn moved(&self, sys: &System, v: VmaId) -> Option<String> {
        let (s, e) = (sys.vm.vmas[v].start.0, sys.vm.vmas[v].end.0);
        self.moves
            .iter()
            .rev()
            .find(|(_, _, ms, me)| *ms < e && s < *me)
            .map(|(line, call, _, _)| format!("moved by line {line} `{call}`"))
    }
}

/// The steps of `script` up to and including the last one on a line at or before `at`
/// (an import may put a step's records before its own line).
pub fn prefix_until(script: &Script, at: Option<usize>) -> usize {
    match at {
        None => script.steps.len(),
        Some(at) => script.steps.iter().rposition(|s| s.line <= at).map_or(0, |i| i + 1),
    }
}

/// Run `script` up to `opts.at` and explain every adjacent pair of VMAs that stays apart.
pub fn explain(script: &Script, opts: &ExplainOptions) -> Result<String, RunError> {
    let ropts = RunOptions {
        policy: opts.policy,
        last_view_only: true,
        replay: opts.replay,
        config: crate::mm::Config { kernel: opts.kernel, ..Default::default() },
        ..Default::default()
    };
    let mut runner = Runner::new(script, &ropts)?;
    let mut prov = Provenance::default();
    // A process that exits is explained as it was just before (the last task of its mm);
    // the exit itself runs, since what follows may depend on it (a vfork parent wakes, a
    // fork child's pages are freed).
    let mut exited: BTreeMap<Pid, String> = BTreeMap::new();
    for step in &script.steps[..prefix_until(script, opts.at)] {
        if matches!(step.call, Call::ExitGroup { .. })
            && opts.pid.is_none_or(|q| q == step.pid)
            && let Ok(mm) = runner.sys.vm.mm_of(step.pid)
            && runner.sys.vm.mms[mm].users == 1
        {
            let note = format!(", as before its exit at line {}", step.line);
            exited.insert(step.pid, render_pid(&mut runner.sys, &prov, step.pid, &note));
        }
        // A trace's step the model cannot run is a divergence, as in replay.
        if let Some(outcome) = runner.step_or_diverge(step, false)? {
            prov.note(&runner.sys, step, &outcome);
        }
    }
    let live: Vec<Pid> =
        runner.sys.vm.procs.keys().copied().filter(|p| opts.pid.is_none_or(|q| q == *p)).collect();
    for pid in live {
        let text = render_pid(&mut runner.sys, &prov, pid, "");
        exited.insert(pid, text);
    }
    Ok(exited.into_values().collect())
}

/// `VM_X|VM_Y` for the flags in `f`.
fn flag_names(f: VmFlags) -> String {
    let names: Vec<String> = f.iter_names().map(|(n, _)| format!("VM_{n}")).collect();
    if names.is_empty() { "none".to_string() } else { names.join("|") }
}

fn file_name(sys: &System, v: VmaId) -> String {
    match sys.vm.vmas[v].file.map(|f| &sys.fs.inodes[sys.fs.files[f].inode].kind) {
        None => "no file".to_string(),
        Some(crate::fs::InodeKind::Regular { path }) => format!("file {path}"),
        Some(crate::fs::InodeKind::Shmem) => "a shmem file (shared anonymous memory)".to_string(),
    }
}

/// What makes `reason` between `a` (left) and `b` (right).
fn detail(sys: &System, prov: &Provenance, reason: MergeReason, a: VmaId, b: VmaId) -> String {
    let (va, vb) = (&sys.vm.vmas[a], &sys.vm.vmas[b]);
    match reason {
        MergeReason::NomergeFlags => {
            let diff = (va.flags ^ vb.flags) & !VmFlags::IGNORE_MERGE;
            format!(
                "flags differ in {}: left has {}, right has {}",
                flag_names(diff),
                flag_names(va.flags & diff),
                flag_names(vb.flags & diff)
            )
        }
        MergeReason::NomergeSpecial => {
            format!("VM_SPECIAL flags: {}", flag_names((va.flags | vb.flags) & VmFlags::SPECIAL))
        }
        MergeReason::NomergeFile => format!("left maps {}, right {}", file_name(sys, a), file_name(sys, b)),
        MergeReason::NomergeAnonVma | MergeReason::NomergeForkChild | MergeReason::NomergeIncompatible => {
            format!("left's anon_vma {}; right's {}", prov.anon_vma_of(sys, a), prov.anon_vma_of(sys, b))
        }
        MergeReason::NomergePgoff => {
            let moved: Vec<String> = [("left", a), ("right", b)]
                .iter()
                .filter_map(|(side, v)| prov.moved(sys, *v).map(|m| format!("{side} {m}")))
                .collect();
            format!(
                "left's pages end at pgoff {:#x}, right's start at {:#x}{}{}",
                va.pgoff.0 + va.pages(),
                vb.pgoff.0,
                if moved.is_empty() { "" } else { "; " },
                moved.join("; ")
            )
        }
        MergeReason::NomergeUffdCtx => format!(
            "userfaultfd registration differs: left {}, right {}",
            if va.uffd.is_some() { "registered" } else { "not registered" },
            if vb.uffd.is_some() { "registered" } else { "not registered" }
        ),
        MergeReason::NomergeAnonName => {
            format!("anon names differ: left {:?}, right {:?}", va.anon_name, vb.anon_name)
        }
        MergeReason::MergeOk => {
            "no call has asked: the kernel merges only when a call changes one of them".into()
        }
        _ => String::new(),
    }
}

/// The explanation of one process's adjacent VMAs; `note` ends its header line.
fn render_pid(sys: &mut System, prov: &Provenance, pid: Pid, note: &str) -> String {
    let mut out = String::new();
    let policy = sys.policy;
    let Ok(mm) = sys.vm.mm_of(pid) else { return out };
    let vmas: Vec<VmaId> = sys.vm.mms[mm].vmas.values().map(|e| e.id).collect();
    let _ = writeln!(out, "== pid {} ({} VMAs{note}) ==", pid.0, vmas.len());
    let mut apart = 0;
    for w in vmas.windows(2) {
        let (a, b) = (w[0], w[1]);
        if sys.vm.vmas[a].end != sys.vm.vmas[b].start {
            continue;
        }
        apart += 1;
        let reason = sys.why_apart(a, b);
        let mut would = Vec::new();
        for p in crate::policy::ALL_POLICIES {
            sys.policy = p;
            if sys.why_apart(a, b) == MergeReason::MergeOk {
                would.push(p.to_string());
            }
        }
        sys.policy = policy;
        let range = |v: VmaId| format!("{:x}-{:x}", sys.vm.vmas[v].start.0, sys.vm.vmas[v].end.0);
        let name = if reason == MergeReason::MergeOk { "MERGEABLE" } else { reason.name() };
        let _ = writeln!(
            out,
            "{} and {}: {name}: {}; would merge under: {}",
            range(a),
            range(b),
            detail(sys, prov, reason, a, b),
            if would.is_empty() { "no policy".to_string() } else { would.join(", ") }
        );
    }
    if apart == 0 {
        let _ = writeln!(out, "no adjacent VMAs");
    }
    out
}
