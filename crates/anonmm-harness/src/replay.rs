//! Replay of real traces (`anonmm replay`): the world a trace shows is taken as given, and
//! every step where the model disagrees with the recorded result is counted and classified.
//!
//! A script states its world; a trace only shows part of it. Replay mode (`RunOptions::replay`)
//! fills the gaps the way the recording says the kernel saw them:
//!
//! - **Files.** A path the model does not know exists when the trace's `openat` succeeded (it
//!   is created, as `do_sys_openat2` → `path_openat` found it on disk); a failed `openat`
//!   stays failed without being run. The descriptor is the recorded one (`alloc_fd` in the
//!   real process saw descriptors — pipes, sockets — that the trace does not show). A file
//!   is as long as its mappings need (`filemap_fault` would SIGBUS past EOF, and the trace
//!   shows no SIGBUS); a mapped descriptor the model never saw opened becomes a file.
//! - **Placement.** Where the kernel chose an address (`get_unmapped_area` for mmap without
//!   MAP_FIXED, `vrm_set_new_addr` for a moving mremap), the model's own choice is computed,
//!   then the step runs at the recorded address (MAP_FIXED / MREMAP_FIXED), so later steps
//!   name the same memory. The first `brk(NULL)` of an exec gives `mm->start_brk`
//!   (randomised by `arch_randomize_brk` in the kernel).
//! - **Classification.** `placement`: an address choice differs; `file`: the result depends
//!   on files or descriptors the trace cannot show (sizes, contents, untraced fds); `trace`:
//!   the trace lacks the call behind the step (a fault the kernel served, or an mremap,
//!   mprotect or madvise it accepted, at an address that no recorded call of that address
//!   space ever mapped: lost or cut events); `model`:
//!   anything else (an errno or success differs, a fault the kernel served raised a signal
//!   in the model where a recorded call had mapped memory, a step the model cannot run).

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Serialize;

use crate::abi::*;
use crate::errno::{Errno, Signal};
use crate::mm::{MmId, System};
use crate::script::{Call, Expect, RecordedVma, Step, format_result_for};
use crate::types::{PAGE_SHIFT, PAGE_SIZE, VirtAddr, page_align};
use crate::vma::VmFlags;

/// How many examples of each class a replay keeps.
pub const MAX_EXAMPLES: usize = 8;

/// What kind of disagreement a step shows.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DivClass {
    /// The kernel chose another address than the model would have.
    Placement,
    /// The result depends on files or descriptors the trace does not show.
    File,
    /// The trace lacks the call behind the step (lost or cut events): a page fault the
    /// kernel served at an address no recorded call of that address space ever mapped.
    Trace,
    /// A real divergence of the model.
    Model,
}

impl DivClass {
    /// Every class, in report order.
    pub const ALL: [DivClass; 4] = [DivClass::Placement, DivClass::File, DivClass::Trace, DivClass::Model];
    /// The lower-case name reports and JSON use.
    pub fn name(self) -> &'static str {
        match self {
            DivClass::Placement => "placement",
            DivClass::File => "file",
            DivClass::Trace => "trace",
            DivClass::Model => "model",
        }
    }
}

/// One disagreement between the model and the trace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Divergence {
    /// What kind of disagreement it is.
    pub class: DivClass,
    /// The step's line in the trace.
    pub line: usize,
    /// The process that made the call.
    pub pid: u32,
    /// The call as recorded.
    pub call: String,
    /// The recorded result.
    pub expected: String,
    /// What the model did (or would have done, for `placement`).
    pub got: String,
}

/// What replay mode adds to a run: adjustments made to fit the trace's world, and the
/// divergences found.
#[derive(Clone, Debug, Default)]
pub struct ReplayState {
    /// How many examples of each class to keep (`MAX_EXAMPLES` unless set).
    pub max_examples: usize,
    /// Divergences by class.
    pub counts: BTreeMap<DivClass, u64>,
    /// The first `MAX_EXAMPLES` divergences of each class, in order.
    pub examples: Vec<Divergence>,
    /// Files created because the trace opened (or mapped) them.
    pub files_created: u64,
    /// Times a file was made longer so that a mapping or a fault stays within EOF.
    pub files_grown: u64,
    /// Processes (thread groups) seen: the first one and every successful fork.
    pub processes: u64,
    /// CLONE_VM children (threads).
    pub threads: u64,
    /// (all, anonymous) VMAs of the live processes just before the last `exit_group`.
    pub vmas_before_exit: (usize, usize),
    /// The kernel's VMAs the trace recorded (`vma_record` steps) compared with the model's.
    pub vma_records_checked: u64,
    /// Those the model's VMA differed from.
    pub vma_records_differ: u64,
    /// The first differing ones (`max_examples` of them): the kernel's VMA as `expected`,
    /// the model's as `got`.
    pub vma_examples: Vec<Divergence>,
    /// Lines of every `model` divergence, so that those after damage in the trace can be
    /// blamed on it once the import has seen all of it ([`ReplayOutcome::blame_damage`]).
    pub(crate) model_lines: Vec<usize>,
    /// A divergence found before the step ran (placement), kept for `after`.
    pending: Option<Divergence>,
    /// Address spaces just made by an exec, whose `mmap_base` is being learnt from the
    /// exec's mapping records: the highest end seen so far.
    learning_base: BTreeMap<MmId, u64>,
    /// Per address space, every range a recorded call mapped since its exec (or its
    /// parent's, for a fork child): tells a mapping lost from the trace from one the model
    /// lost.
    /// By start (each start once: a range growing from it keeps its entry), to its end.
    recorded_ranges: BTreeMap<MmId, BTreeMap<u64, u64>>,
    /// The anonymous VMA (pid, start, end) the last fault's file check found, while no
    /// other call ran: a fault inside it has no file to fit. Only a call changes VMAs (a
    /// fault at most grows a stack VMA, `expand_stack`, which stays anonymous).
    anon_vma: Option<(crate::types::Pid, u64, u64)>,
}

/// What to do with a step in replay mode.
pub enum Plan<'s> {
    /// Run it (as recorded, or rewritten to fit the trace).
    Run(Cow<'s, Step>),
    /// Do not run it: the trace's result stands (a failed `openat`).
    Skip(Expect),
}

/// (all, anonymous) VMAs of the live address spaces; anonymous means no file (`vma_is_anonymous`).
pub fn count_vmas(sys: &System) -> (usize, usize) {
    let all = sys.vm.mms.iter().map(|(_, m)| m.map_count()).sum();
    (all, sys.vm.vmas_without_file)
}

fn rewrite(step: &Step, call: Call) -> Cow<'_, Step> {
    Cow::Owned(Step { call, ..step.clone() })
}

fn hex(v: u64) -> String {
    format!("= {v:#x}")
}

impl ReplayState {
    /// The state at the start of a replay: one process, [`MAX_EXAMPLES`] examples per class.
    pub fn new() -> ReplayState {
        ReplayState { processes: 1, max_examples: MAX_EXAMPLES, ..Default::default() }
    }

    /// Total divergences of one class.
    pub fn count(&self, class: DivClass) -> u64 {
        self.counts.get(&class).copied().unwrap_or(0)
    }

    /// Compare a `vma_record` step (the kernel's VMA after the call before it) with the
    /// model's VMA there, and count it.
    pub fn vma_record(&mut self, sys: &System, step: &Step) {
        self.vma_records_checked += 1;
        if let Some((kernel, model)) = vma_record_diff(sys, step.pid, &step.call) {
            self.vma_records_differ += 1;
            if self.vma_examples.len() < self.max_examples {
                self.vma_examples.push(Self::divergence(DivClass::Model, step, kernel, model));
            }
        }
    }

    /// Count a divergence, keeping the first few of each class.
    pub fn record(&mut self, d: Divergence) {
        if d.class == DivClass::Model {
            self.model_lines.push(d.line);
        }
        let n = self.counts.entry(d.class).or_default();
        *n += 1;
        if *n as usize <= self.max_examples {
            self.examples.push(d);
        }
    }

    pub(crate) fn divergence(class: DivClass, step: &Step, expected: String, got: String) -> Divergence {
        Divergence {
            class,
            line: step.line,
            pid: step.pid.0,
            call: step.call_text().into_owned(),
            expected,
            got,
        }
    }

    /// A step the model cannot run (`System::not_modelled`): a `model` divergence.
    pub fn not_modelled(&mut self, step: &Step, what: &str) {
        let expected = step.expect.map_or_else(|| "?".to_string(), |e| format_result_for(&step.call, &e));
        self.record(Self::divergence(DivClass::Model, step, expected, format!("not modelled: {what}")));
    }

    /// A step of a process the model does not have (its fork was not recorded).
    pub fn no_process(&mut self, step: &Step) {
        let expected = step.expect.map_or_else(|| "?".to_string(), |e| format_result_for(&step.call, &e));
        self.record(Self::divergence(DivClass::Model, step, expected, "no such process".to_string()));
    }

    /// Fit the model's world to the trace before a step runs; see the module comment.
    #[inline]
    pub fn before<'s>(&mut self, sys: &mut System, step: &'s Step) -> Plan<'s> {
        if self.fault_fits(step) {
            return Plan::Run(Cow::Borrowed(step));
        }
        if !matches!(step.call, Call::Touch { .. }) {
            self.anon_vma = None;
        }
        self.before_any(sys, step)
    }

    /// Whether `step` is a page fault inside the anonymous VMA the last fault's file check
    /// found: then [`ReplayState::before`] has nothing to fit and runs it as it is (and so
    /// does this, clearing what a step before left pending).
    #[inline]
    pub fn fault_fits(&mut self, step: &Step) -> bool {
        self.pending = None;
        matches!(step.call, Call::Touch { addr, len, .. }
            if step.expect.is_none() && self.fits_anon_vma(step.pid, addr, len))
    }

    /// [`ReplayState::fault_fits`] of a fault without a recorded result, by its fields: when
    /// it fits, what a step before left pending is cleared as there; else nothing changes.
    #[inline(always)]
    pub fn fault_fits_at(&mut self, pid: crate::types::Pid, addr: u64, len: u64) -> bool {
        let fits = self.fits_anon_vma(pid, addr, len);
        if fits && self.pending.is_some() {
            self.pending = None;
        }
        fits
    }

    /// Where [`ReplayState::fault_fits_at`] answers true: the process and range of the
    /// anonymous VMA the last fault's file check found (`None` while an exec's base is being
    /// learnt). Only a step changes it, so a run of faults asks once.
    #[inline]
    pub fn fault_range(&self) -> Option<(crate::types::Pid, u64, u64)> {
        self.anon_vma.filter(|_| self.learning_base.is_empty())
    }

    /// Whether `[addr, addr + len)` of `pid` lies in the anonymous VMA the last fault's file
    /// check found (and no exec's base is being learnt).
    #[inline(always)]
    fn fits_anon_vma(&self, pid: crate::types::Pid, addr: u64, len: u64) -> bool {
        matches!(self.anon_vma, Some((p, start, end))
            if p == pid
                && self.learning_base.is_empty()
                && start <= addr
                && addr.checked_add(len).is_some_and(|e| e <= end))
    }

    /// [`ReplayState::before`] past its fast path.
    #[inline(never)]
    fn before_any<'s>(&mut self, sys: &mut System, step: &'s Step) -> Plan<'s> {
        let Ok(mm) = sys.vm.mm_of(step.pid) else { return Plan::Run(Cow::Borrowed(step)) };
        if !matches!(step.call, Call::MapRecord(..)) && !self.learning_base.is_empty() {
            self.learning_base.remove(&mm);
        }
        match (&step.call, step.expect) {
            (Call::Openat { .. }, Some(e @ Expect::Err(_))) => Plan::Skip(e),
            (Call::Openat { dirfd, path, flags, mode }, Some(Expect::Value(_))) => {
                if sys.fs.names.contains_key(path.as_str()) {
                    if flags & O_EXCL != 0 {
                        // Removed since, by a call the trace does not show (unlink).
                        return Plan::Run(rewrite(
                            step,
                            Call::Openat {
                                dirfd: *dirfd,
                                path: path.clone(),
                                flags: flags & !O_EXCL,
                                mode: *mode,
                            },
                        ));
                    }
                    return Plan::Run(Cow::Borrowed(step));
                }
                self.files_created += 1;
                Plan::Run(rewrite(
                    step,
                    Call::Openat { dirfd: *dirfd, path: path.clone(), flags: flags | O_CREAT, mode: *mode },
                ))
            }
            (Call::Mmap { addr, len, prot, flags, fd, off }, Some(Expect::Value(rec))) => {
                if flags & MAP_ANONYMOUS == 0 {
                    self.fit_mapped_file(sys, step, *fd, *off, *len);
                }
                if flags & (MAP_FIXED | MAP_FIXED_NOREPLACE) != 0 {
                    return Plan::Run(Cow::Borrowed(step));
                }
                let predicted = self.predict_mmap(sys, mm, step, *addr, *len, *flags, *fd, *off);
                if predicted == Some(rec) {
                    return Plan::Run(Cow::Borrowed(step));
                }
                self.placement(sys, mm, step, rec, *len, predicted);
                Plan::Run(rewrite(
                    step,
                    Call::Mmap {
                        addr: rec,
                        len: *len,
                        prot: *prot,
                        flags: flags | MAP_FIXED,
                        fd: *fd,
                        off: *off,
                    },
                ))
            }
            (Call::Mremap { old_addr, old_len, new_len, flags, .. }, Some(Expect::Value(rec)))
                if flags & MREMAP_FIXED == 0 && flags & MREMAP_MAYMOVE != 0 =>
            {
                // MREMAP_DONTUNMAP always moves, to where the kernel chose (`vrm_set_new_addr`).
                let always_moves = flags & MREMAP_DONTUNMAP != 0;
                let Some(predicted) = predict_mremap(sys, mm, *old_addr, *old_len, *new_len, always_moves)
                else {
                    return Plan::Run(Cow::Borrowed(step));
                };
                if predicted == rec || (rec == *old_addr && !always_moves) {
                    // Grown in place by the kernel: nothing to force (MREMAP_FIXED cannot
                    // overlap the source); a model that moves shows as a `model` divergence.
                    return Plan::Run(Cow::Borrowed(step));
                }
                self.placement(sys, mm, step, rec, *new_len, Some(predicted));
                Plan::Run(rewrite(
                    step,
                    Call::Mremap {
                        old_addr: *old_addr,
                        old_len: *old_len,
                        new_len: *new_len,
                        flags: flags | MREMAP_FIXED,
                        new_addr: rec,
                    },
                ))
            }
            (Call::Brk { addr }, Some(Expect::Value(rec))) => {
                let m = &sys.vm.mms[mm];
                if m.brk == m.start_brk && *addr < m.start_brk.0 && rec != m.brk.0 {
                    // The exec's heap base (arch_randomize_brk): the first brk(NULL) shows it.
                    let got = hex(m.brk.0);
                    let m = &mut sys.vm.mms[mm];
                    m.start_brk = VirtAddr(rec);
                    m.brk = VirtAddr(rec);
                    self.pending = Some(Self::divergence(DivClass::Placement, step, hex(rec), got));
                }
                Plan::Run(Cow::Borrowed(step))
            }
            (Call::Touch { addr, len, .. }, None) => {
                self.fit_touched_file(sys, mm, step.pid, *addr, *len);
                Plan::Run(Cow::Borrowed(step))
            }
            (Call::ExitGroup { .. }, _) => {
                self.vmas_before_exit = count_vmas(sys);
                Plan::Run(Cow::Borrowed(step))
            }
            _ => Plan::Run(Cow::Borrowed(step)),
        }
    }

    /// Remember that a recorded call mapped `[addr, addr + len)` in the step's address space.
    fn note_range(&mut self, sys: &System, step: &Step, addr: u64, len: u64) {
        let Ok(mm) = sys.vm.mm_of(step.pid) else { return };
        let end = page_align(len).and_then(|l| addr.checked_add(l)).unwrap_or(u64::MAX);
        let ranges = self.recorded_ranges.entry(mm).or_default();
        // A growing brk or mremap extends the range it started from.
        let e = ranges.entry(addr).or_insert(end);
        *e = (*e).max(end);
    }

    /// Whether a recorded call ever mapped `addr` in `mm`.
    fn was_recorded(&self, mm: MmId, addr: u64) -> bool {
        self.recorded_ranges.get(&mm).is_some_and(|r| r.range(..=addr).any(|(_, &e)| addr < e))
    }

    /// `mm->mmap_base` is randomised (`arch_pick_mmap_layout` → `mmap_base` with
    /// `arch_mmap_rnd`); the exec's own top-down mappings show it: the ELF interpreter
    /// (`load_elf_interp`) and the vDSO (`map_vdso`) are placed by `get_unmapped_area` right
    /// below it, so their highest end is the base (the `[stack]`, mapped by `setup_arg_pages`
    /// above it, does not count).
    fn learn_mmap_base(&mut self, sys: &mut System, step: &Step, addr: u64, len: u64, name: &Option<String>) {
        let Ok(mm) = sys.vm.mm_of(step.pid) else { return };
        let Some(best) = self.learning_base.get_mut(&mm) else { return };
        if name.as_deref() == Some("[stack]") {
            return;
        }
        let Some(end) = page_align(len).and_then(|l| addr.checked_add(l)) else { return };
        if end <= crate::types::TASK_SIZE && end > *best {
            *best = end;
            sys.vm.mms[mm].mmap_base = VirtAddr(end);
        }
    }

    /// Record a placement divergence (or a `model` one when the recorded range is not free
    /// in the model: the address spaces differ there).
    fn placement(&mut self, sys: &System, mm: MmId, step: &Step, rec: u64, len: u64, predicted: Option<u64>) {
        let got = predicted.map_or_else(|| "= ? (no prediction)".to_string(), hex);
        let end = page_align(len).and_then(|l| rec.checked_add(l)).unwrap_or(u64::MAX);
        let busy = sys.vm.mms[mm].intersects(VirtAddr(rec), VirtAddr(end));
        let (class, got) = if busy && !matches!(step.call, Call::Mremap { .. }) {
            (DivClass::Model, format!("{got}; the recorded range is mapped in the model"))
        } else {
            (DivClass::Placement, got)
        };
        self.pending = Some(Self::divergence(class, step, hex(rec), got));
    }

    /// The model's choice for an mmap without MAP_FIXED, as `do_mmap` computes it before
    /// `mmap_region`: `__get_unmapped_area` with the hint, the file and the shared flag.
    #[allow(clippy::too_many_arguments)]
    fn predict_mmap(
        &self,
        sys: &System,
        mm: MmId,
        step: &Step,
        addr: u64,
        len: u64,
        flags: u64,
        fd: i64,
        off: u64,
    ) -> Option<u64> {
        let file = if flags & MAP_ANONYMOUS == 0 { Some(sys.file_of_fd(step.pid, fd).ok()?) } else { None };
        let len = page_align(len).filter(|&l| l != 0)?;
        let addr =
            if addr != 0 && addr < crate::mmap::MMAP_MIN_ADDR { crate::mmap::MMAP_MIN_ADDR } else { addr };
        let shared = flags & MAP_TYPE != MAP_PRIVATE;
        let flags = if shared { flags | MAP_SHARED } else { flags };
        sys.get_unmapped_area(mm, file, addr, len, off >> PAGE_SHIFT, flags).ok()
    }

    /// A mapping of `fd`: make the descriptor exist if the model never saw it opened, and
    /// the file long enough for the mapping (a regular file's size is not in the trace).
    fn fit_mapped_file(&mut self, sys: &mut System, step: &Step, fd: i64, off: u64, len: u64) {
        if sys.file_of_fd(step.pid, fd).is_err() {
            if !(0..1024).contains(&fd) {
                return;
            }
            let path = format!("fd{fd}@{}", step.line);
            let Ok(got) = sys.sys_openat(step.pid, &path, O_RDWR | O_CREAT) else { return };
            self.files_created += 1;
            if got != fd {
                let _ = sys.sys_dup2(step.pid, got, fd);
                let _ = sys.sys_close(step.pid, got);
            }
            self.record(Self::divergence(
                DivClass::File,
                step,
                "an open descriptor".to_string(),
                format!("fd {fd} unknown to the model (opened by an untraced call); made a file"),
            ));
        }
        let Ok(f) = sys.file_of_fd(step.pid, fd) else { return };
        let need = page_align(len).and_then(|l| l.checked_add(off));
        self.grow(sys, f, need);
    }

    /// The kernel gave descriptor `fd` (`alloc_fd` takes the lowest free one), so every lower
    /// one was in use in the real process: those free in the model hold descriptors the
    /// trace does not show (a pipe, an inherited socket). They get a placeholder file, so
    /// that the model's next descriptor is the trace's again and one unseen descriptor
    /// costs one divergence, not one per later open.
    fn fill_below(&mut self, sys: &mut System, step: &Step, fd: i64) {
        const PLACEHOLDER: &str = "(descriptor the trace does not show)";
        let free: Vec<i64> = (0..fd).filter(|&f| sys.file_of_fd(step.pid, f).is_err()).collect();
        if free.is_empty() {
            return;
        }
        if !sys.fs.names.contains_key(PLACEHOLDER) {
            self.files_created += 1;
        }
        let Ok(tmp) = sys.sys_openat(step.pid, PLACEHOLDER, O_RDWR | O_CREAT) else { return };
        for f in free {
            let _ = sys.sys_dup2(step.pid, tmp, f);
        }
        if !(0..fd).contains(&tmp) {
            let _ = sys.sys_close(step.pid, tmp);
        }
    }

    fn grow(&mut self, sys: &mut System, f: crate::fs::FileId, need: Option<u64>) {
        let inode = sys.fs.files[f].inode;
        let ino = &mut sys.fs.inodes[inode];
        if let (crate::fs::InodeKind::Regular { .. }, Some(need)) = (&ino.kind, need)
            && ino.size < need
        {
            ino.size = need;
            self.files_grown += 1;
        }
    }

    /// A fault on a file mapping beyond EOF: the kernel served it (no SIGBUS recorded), so
    /// the file reaches there.
    fn fit_touched_file(&mut self, sys: &mut System, mm: MmId, pid: crate::types::Pid, addr: u64, len: u64) {
        let start = addr & !(PAGE_SIZE - 1);
        let Some(end) = addr.checked_add(len).and_then(page_align) else { return };
        let mut a = start;
        while a < end {
            let Some(v) = sys.vm.mms[mm].vma_lookup(VirtAddr(a)) else { return };
            let vma = &sys.vm.vmas[v];
            let upto = end.min(vma.end.0);
            if let Some(f) = vma.file {
                let last = vma.linear_page_index(VirtAddr(upto - PAGE_SIZE)).0;
                let need = last.checked_add(1).and_then(|p| p.checked_mul(PAGE_SIZE));
                self.grow(sys, f, need);
            } else if a == start && upto == end {
                self.anon_vma = Some((pid, vma.start.0, vma.end.0));
            }
            a = upto;
        }
    }

    /// After a step: put the recorded descriptor in place, classify any disagreement.
    /// Returns the outcome the step is taken to have had.
    #[inline]
    pub fn after(&mut self, sys: &mut System, step: &Step, outcome: Expect) -> Expect {
        // A fault served as the trace says (most steps): nothing to note or record.
        if matches!(step.call, Call::Touch { .. })
            && outcome == Expect::Value(0)
            && step.expect.is_none()
            && self.pending.is_none()
        {
            return outcome;
        }
        self.after_any(sys, step, outcome)
    }

    /// [`ReplayState::after`] past its fast path.
    #[inline(never)]
    fn after_any(&mut self, sys: &mut System, step: &Step, outcome: Expect) -> Expect {
        if let Some(d) = self.pending.take() {
            self.record(d);
        }
        let mut outcome = outcome;
        match &step.call {
            Call::Execve { .. } => {
                if let Ok(mm) = sys.vm.mm_of(step.pid) {
                    self.learning_base.insert(mm, 0);
                    self.recorded_ranges.insert(mm, BTreeMap::new());
                }
            }
            Call::MapRecord(RecordedVma { addr, len, name, .. }) => {
                self.learn_mmap_base(sys, step, *addr, *len, name);
                self.note_range(sys, step, *addr, *len);
            }
            Call::Mmap { len, .. } | Call::Mremap { new_len: len, .. } => {
                if let Expect::Value(a) = outcome {
                    self.note_range(sys, step, a, *len);
                }
            }
            Call::Brk { .. } => {
                if let Ok(mm) = sys.vm.mm_of(step.pid) {
                    let (s, e) = (sys.vm.mms[mm].start_brk.0, sys.vm.mms[mm].brk.0);
                    self.note_range(sys, step, s, e.saturating_sub(s));
                }
            }
            Call::Fork { .. } if matches!(outcome, Expect::Value(_)) => {
                self.processes += 1;
                if let (Expect::Value(c), Ok(pmm)) = (outcome, sys.vm.mm_of(step.pid))
                    && let Ok(cmm) = sys.vm.mm_of(crate::types::Pid(c as u32))
                {
                    let ranges = self.recorded_ranges.get(&pmm).cloned().unwrap_or_default();
                    self.recorded_ranges.insert(cmm, ranges);
                }
            }
            Call::CloneVm { .. } if matches!(outcome, Expect::Value(_)) => self.threads += 1,
            Call::Openat { .. } | Call::Dup { .. } => {
                if let (Some(Expect::Value(want)), Expect::Value(got)) = (step.expect, outcome)
                    && want != got
                    && let Ok(want_fd) = i64::try_from(want)
                {
                    let got_fd = got as i64;
                    if sys.sys_dup2(step.pid, got_fd, want_fd).is_ok() {
                        let _ = sys.sys_close(step.pid, got_fd);
                        self.fill_below(sys, step, want_fd);
                        self.record(Self::divergence(
                            DivClass::File,
                            step,
                            format!("= {want}"),
                            format!("= {got} (descriptors the trace does not show)"),
                        ));
                        outcome = Expect::Value(want);
                    }
                }
            }
            _ => {}
        }
        let expected = match (step.expect, &step.call) {
            (Some(e), _) => e,
            // A page fault the kernel served: no signal.
            (None, Call::Touch { .. }) => Expect::Value(0),
            (None, _) => return outcome,
        };
        if expected == outcome || expected == Expect::Unknown {
            return outcome;
        }
        let mut class = classify(&step.call, &outcome);
        // A recorded SIGBUS is a fault past EOF: replay makes files as long as their
        // mappings need (the trace does not show their sizes), so the model serves it.
        if expected == Expect::Signal(Signal::SIGBUS) {
            class = DivClass::File;
        }
        // No VMA where the kernel had one: if no recorded call ever mapped the address, the
        // call that did is missing from the trace.
        let unmapped_at = match (&step.call, outcome) {
            (Call::Touch { addr, .. }, Expect::Signal(Signal::SIGSEGV)) => Some(*addr),
            (
                Call::Mremap { old_addr: addr, .. }
                | Call::Mprotect { addr, .. }
                | Call::Madvise { addr, .. },
                Expect::Err(Errno::EFAULT | Errno::ENOMEM),
            ) => Some(*addr),
            _ => None,
        };
        if let Some(addr) = unmapped_at
            && sys.vm.mm_of(step.pid).is_ok_and(|mm| !self.was_recorded(mm, addr))
        {
            class = DivClass::Trace;
        }
        let fmt = |e: &Expect| match (e, &step.call) {
            (Expect::Value(0), Call::Touch { .. }) => "served".to_string(),
            _ => format_result_for(&step.call, e),
        };
        self.record(Self::divergence(class, step, fmt(&expected), fmt(&outcome)));
        outcome
    }
}

/// A VMA as `/proc/pid/maps` shows it: `START-END PERMS PGOFF NAME` (PGOFF in pages).
fn show_vma(start: u64, end: u64, prot: u64, shared: bool, pgoff: u64, name: &str) -> String {
    let bit = |b: u64, c: char| if prot & b != 0 { c } else { '-' };
    let (r, w, x) = (bit(PROT_READ, 'r'), bit(PROT_WRITE, 'w'), bit(PROT_EXEC, 'x'));
    let s = if shared { 's' } else { 'p' };
    format!("{start:x}-{end:x} {r}{w}{x}{s} pgoff {pgoff:#x} {name}").trim_end().to_string()
}

/// Compare a [`Call::VmaRecord`] (the kernel's VMA) with the model's VMA at its address in
/// `pid`'s address space: None when they agree on range, protection, sharing, `vm_pgoff` and
/// file; else (the kernel's, the model's) as `/proc/pid/maps` lines.
pub fn vma_record_diff(sys: &System, pid: crate::types::Pid, call: &Call) -> Option<(String, String)> {
    let Call::VmaRecord(RecordedVma { addr, len, pgoff, prot, shared, path, name, .. }) = call else {
        return None;
    };
    let end = page_align(*len).and_then(|l| addr.checked_add(l)).unwrap_or(u64::MAX);
    let rec_name = path.as_deref().or(name.as_deref()).unwrap_or("");
    // Formatted only for a difference (most records agree).
    let kernel = || show_vma(*addr, end, *prot, *shared, *pgoff, rec_name);
    let Ok(mm) = sys.vm.mm_of(pid) else { return Some((kernel(), "no such process".to_string())) };
    let Some(v) = sys.vm.mms[mm].vma_lookup(VirtAddr(*addr)) else {
        return Some((kernel(), "no VMA there".to_string()));
    };
    let vma = &sys.vm.vmas[v];
    let vprot = [(VmFlags::READ, PROT_READ), (VmFlags::WRITE, PROT_WRITE), (VmFlags::EXEC, PROT_EXEC)]
        .iter()
        .filter(|(f, _)| vma.flags.contains(*f))
        .fold(0, |a, (_, p)| a | p);
    let vshared = vma.flags.contains(VmFlags::MAYSHARE);
    let file = vma.file.map(|f| &sys.fs.inodes[sys.fs.files[f].inode].kind);
    let file_agrees = match (file, path) {
        (None, None) => true,
        (Some(crate::fs::InodeKind::Regular { path: have }), Some(want)) => have == want,
        // A shared anonymous mapping's shmem file has a name the model does not give it.
        (Some(crate::fs::InodeKind::Shmem), Some(_)) => true,
        _ => false,
    };
    let vname = match (file, &vma.special) {
        (Some(crate::fs::InodeKind::Regular { path }), _) => path.as_str(),
        (Some(crate::fs::InodeKind::Shmem), _) => "/dev/zero (deleted)",
        (None, Some(n)) => n,
        (None, None) => "",
    };
    let same = vma.start.0 == *addr
        && vma.end.0 == end
        && vprot == *prot & (PROT_READ | PROT_WRITE | PROT_EXEC)
        && vshared == *shared
        && vma.pgoff.0 == *pgoff
        && file_agrees;
    (!same).then(|| (kernel(), show_vma(vma.start.0, vma.end.0, vprot, vshared, vma.pgoff.0, vname)))
}

/// The class of a disagreement found after a step (placement is found before).
pub fn classify(call: &Call, got: &Expect) -> DivClass {
    match (call, got) {
        (Call::Openat { .. } | Call::Close { .. } | Call::Dup { .. } | Call::Dup2 { .. }, _) => {
            DivClass::File
        }
        (Call::Ftruncate { .. }, _) => DivClass::File,
        (Call::Mmap { .. }, Expect::Err(Errno::EBADF | Errno::ENODEV)) => DivClass::File,
        (Call::Touch { .. }, Expect::Signal(Signal::SIGBUS)) => DivClass::File,
        _ => DivClass::Model,
    }
}

/// The model's choice for a moving mremap without MREMAP_FIXED: in place when the VMA ends
/// at the range's end and the space after it is free (`expand_vma` → `vma_expandable`),
/// else `vrm_set_new_addr`'s `get_unmapped_area`; `always_moves` (MREMAP_DONTUNMAP) goes
/// straight to `vrm_set_new_addr`. None when the call fails anyway.
pub fn predict_mremap(
    sys: &System,
    mm: MmId,
    addr: u64,
    old_len: u64,
    new_len: u64,
    always_moves: bool,
) -> Option<u64> {
    let old_len = page_align(old_len)?;
    let new_len = page_align(new_len)?;
    if new_len <= old_len && !always_moves {
        return Some(addr);
    }
    let v = sys.vm.mms[mm].vma_lookup(VirtAddr(addr))?;
    let vma = &sys.vm.vmas[v];
    let delta = new_len.saturating_sub(old_len);
    if !always_moves
        && vma.end.0 == addr.checked_add(old_len)?
        && let Some(end) = vma.end.0.checked_add(delta)
        && !sys.vm.mms[mm].intersects(vma.end, VirtAddr(end))
    {
        return Some(addr);
    }
    let pgoff = vma.linear_page_index(VirtAddr(addr)).0;
    let flags = if vma.flags.contains(VmFlags::MAYSHARE) { MAP_SHARED } else { 0 };
    sys.get_unmapped_area(mm, vma.file, 0, new_len, pgoff, flags).ok()
}
