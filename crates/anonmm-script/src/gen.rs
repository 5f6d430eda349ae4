//! Random script generation and delta-debugging shrinking.
//!
//! [`generate`] produces a well-formed script (every pid is used only while it is alive, every
//! `fork` carries the child pid the script assigns) whose addresses all sit in a small arena,
//! biased so that mappings are adjacent and merges, splits and moves are in play. It keeps a
//! coarse picture of what each process has mapped and which fds it holds, but it does not try
//! to predict results: no expectation is written except the child pid of a `fork`.
//!
//! [`shrink`] minimises a script that makes a predicate hold (e.g. "model and kernel diverge"):
//! it removes chunks of steps, keeping the script well-formed, then simplifies arguments.
//!
//! [`write_script`] renders a script in the language so that it can be saved and re-run.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::abi::*;
use crate::types::{PAGE_SIZE, PMD_SIZE, Pid};
use crate::{Call, Expect, Script, Step};

/// First byte of the arena every generated address lies in.
pub const ARENA_BASE: u64 = 0x2000_0000_0000;
/// Size of the arena.
pub const ARENA_SIZE: u64 = 64 << 20;
/// One past the last byte of the arena.
pub const ARENA_END: u64 = ARENA_BASE + ARENA_SIZE;

/// Names given with `PR_SET_VMA_ANON_NAME` (besides NULL).
const ANON_NAMES: &[&str] = &["name1", "name2", "name3"];
/// Number of distinct files (`f1` … `fN`) a script uses.
const NR_FILES: usize = 3;
/// Highest fd a process may hold before the generator closes instead of opening.
const MAX_FDS: usize = 6;

/// Relative weights of the operations. A weight of 0 disables an operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Weights {
    /// `mmap` (anonymous or file, private or shared, sometimes THP-sized); weighted up
    /// while the process has nothing mapped.
    pub mmap: u32,
    /// `munmap`.
    pub munmap: u32,
    /// `mprotect`.
    pub mprotect: u32,
    /// `madvise`.
    pub madvise: u32,
    /// `mremap`: shrink, grow or move.
    pub mremap: u32,
    /// `prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, ...)`, setting or clearing a name.
    pub anon_name: u32,
    /// `fork`; only while fewer than `GenConfig::max_procs` processes live.
    pub fork: u32,
    /// `exit_group` of a process other than the first; only while more than one lives.
    pub exit: u32,
    /// `touch` (read or write) of a range.
    pub touch: u32,
    /// `openat` (+ `ftruncate`), `ftruncate` or `close`; only when `GenConfig::files`.
    pub file: u32,
    /// `pin` (long-term pins, as io_uring buffers) or `unpin` of an earlier pin.
    pub pin: u32,
    /// `migrate` or `migrate_done`: model-only pseudo-calls the oracle refuses, so 0 by
    /// default (the fuzzer's scripts must run on the kernel); the model's property test
    /// turns them on.
    pub migrate: u32,
    /// `uffd_register`, `uffd_unregister` or `uffdio_move`.
    pub uffd: u32,
    /// `brk`: query, grow, shrink (page aligned or not), or below the heap's start.
    pub brk: u32,
    /// `clone` with CLONE_VM: a thread (pthread's flags), a process sharing the mm (and
    /// perhaps the descriptor table), or flags the kernel refuses; only while fewer than
    /// `GenConfig::max_procs` tasks live.
    pub clone: u32,
    /// `dup` or `dup2` of an open descriptor; only when `GenConfig::files`.
    pub dup: u32,
    /// `vfork` (or `clone` with CLONE_VM|CLONE_VFORK), then a few steps of the child on the
    /// borrowed mm, then its `exit_group` or `execve` (the parent sleeps meanwhile); only
    /// while fewer than `GenConfig::max_procs` tasks live.
    pub vfork: u32,
    /// `execve` of a process that may exit (see `exit`): a fresh, empty mm.
    pub execve: u32,
    /// `mlock`, `mlock2` (with or without MLOCK_ONFAULT), `munlock`, `mlockall` (every
    /// MCL_* combination) or `munlockall`.
    pub mlock: u32,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            mmap: 18,
            munmap: 7,
            mprotect: 10,
            madvise: 10,
            mremap: 16,
            anon_name: 5,
            fork: 4,
            exit: 2,
            touch: 22,
            file: 4,
            pin: 3,
            migrate: 0,
            uffd: 5,
            brk: 4,
            clone: 3,
            dup: 2,
            vfork: 2,
            execve: 1,
            mlock: 3,
        }
    }
}

/// What to generate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenConfig {
    /// Number of steps (lines) in the script.
    pub steps: usize,
    /// Most processes alive at once (1 disables fork).
    pub max_procs: usize,
    /// Map files (`openat`/`ftruncate`/`close` steps, `MAP_PRIVATE` and `MAP_SHARED` file maps).
    pub files: bool,
    /// Multi-MiB, 2 MiB-aligned ranges and `MADV_COLLAPSE`.
    pub thp: bool,
    /// Shared mappings (anonymous and, with `files`, file-backed).
    pub shared: bool,
    /// Invalid calls (unaligned, overlapping, zero lengths, bad flag combinations).
    pub invalid: bool,
    /// Add `MREMAP_RELOCATE_ANON` / `MREMAP_MUST_RELOCATE_ANON` to some moves (for the
    /// policies; the kernel answers EINVAL).
    pub relocate_flags: bool,
    /// How often each operation is chosen.
    pub weights: Weights,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            steps: 300,
            max_procs: 4,
            files: true,
            thp: true,
            shared: true,
            invalid: true,
            relocate_flags: false,
            weights: Weights::default(),
        }
    }
}

impl GenConfig {
    /// A one-line description of the configuration (weights only when not the default).
    pub fn describe(&self) -> String {
        let mut s = format!(
            "steps={} max_procs={} files={} thp={} shared={} invalid={}",
            self.steps, self.max_procs, self.files, self.thp, self.shared, self.invalid
        );
        if self.weights != Weights::default() {
            let _ = write!(s, " weights={:?}", self.weights);
        }
        s
    }
}

/// The coarse kind of a mapping, enough to pick plausible arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    AnonPrivate,
    AnonShared,
    File,
}

/// A mapped range `[start, end)` as the generator believes it to be.
#[derive(Clone, Copy, Debug)]
struct Region {
    start: u64,
    end: u64,
    kind: Kind,
}

#[derive(Clone, Debug)]
struct Proc {
    pid: u32,
    /// Sorted, non-overlapping. Not coalesced: boundaries are where VMAs probably split.
    regions: Vec<Region>,
    /// fd -> file index (0-based; the file is `f{index+1}`).
    fds: BTreeMap<i64, usize>,
    /// The program break as the generator believes it to be.
    brk: u64,
    /// Thread group (`CLONE_THREAD` joins the creator's).
    tgid: u32,
    /// Which address space: tasks made with CLONE_VM share their creator's.
    mm: u32,
    /// Which descriptor table: CLONE_FILES shares the creator's.
    fdt: u32,
    /// The creator of a CLONE_VM task (it must outlive the task: see [`Gen::op_exit`]).
    vm_parent: Option<u32>,
}

impl Proc {
    fn unmap(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let mut out = Vec::with_capacity(self.regions.len() + 1);
        for r in self.regions.drain(..) {
            if r.end <= start || r.start >= end {
                out.push(r);
                continue;
            }
            if r.start < start {
                out.push(Region { end: start, ..r });
            }
            if r.end > end {
                out.push(Region { start: end, ..r });
            }
        }
        self.regions = out;
    }

    fn map(&mut self, start: u64, end: u64, kind: Kind) {
        if start >= end {
            return;
        }
        self.unmap(start, end);
        let at = self.regions.partition_point(|r| r.start < start);
        self.regions.insert(at, Region { start, end, kind });
    }

    fn is_free(&self, start: u64, end: u64) -> bool {
        self.regions.iter().all(|r| r.end <= start || r.start >= end)
    }

    /// The regions overlapping `[start, end)`, clipped to it.
    fn clipped(&self, start: u64, end: u64) -> Vec<Region> {
        self.regions
            .iter()
            .filter(|r| r.end > start && r.start < end)
            .map(|r| Region { start: r.start.max(start), end: r.end.min(end), kind: r.kind })
            .collect()
    }

    fn lowest_free_fd(&self) -> i64 {
        let mut fd = 3;
        while self.fds.contains_key(&fd) {
            fd += 1;
        }
        fd
    }
}

struct Gen<'a> {
    rng: SmallRng,
    cfg: &'a GenConfig,
    /// Live processes, pid 1 first.
    procs: Vec<Proc>,
    next_pid: u32,
    /// The last number given to an exec's fresh mm and table (above every pid).
    next_space: u32,
    /// Size of each file the script has created (None until created).
    files: Vec<Option<u64>>,
    steps: Vec<Step>,
    /// Pins taken and not released: (pid, addr, len).
    pins: Vec<(u32, u64, u64)>,
    /// Ranges registered with a process's userfaultfd, as far as the generator knows:
    /// (pid, start, end). Moves go there mostly.
    uffd_ranges: Vec<(u32, u64, u64)>,
    /// Starts of MAP_GROWSDOWN mappings, as far as the generator knows: (pid, start).
    /// Touches just below them grow them.
    growsdown: Vec<(u32, u64)>,
}

#[derive(Clone, Copy)]
enum Op {
    Brk,
    Mmap,
    Munmap,
    Mprotect,
    Madvise,
    Mremap,
    AnonName,
    Fork,
    Exit,
    Touch,
    File,
    Pin,
    Migrate,
    Uffd,
    Clone,
    Dup,
    Vfork,
    Execve,
    Mlock,
}

/// Generate a random script. The same seed and config always give the same script.
pub fn generate(seed: u64, cfg: &GenConfig) -> Script {
    let mut g = Gen {
        rng: SmallRng::seed_from_u64(seed),
        cfg,
        procs: vec![Proc {
            pid: 1,
            regions: Vec::new(),
            fds: BTreeMap::new(),
            brk: crate::types::DEFAULT_START_BRK,
            tgid: 1,
            mm: 1,
            fdt: 1,
            vm_parent: None,
        }],
        next_pid: 2,
        next_space: 1 << 24,
        files: vec![None; NR_FILES],
        pins: Vec::new(),
        uffd_ranges: Vec::new(),
        growsdown: Vec::new(),
        steps: Vec::with_capacity(cfg.steps + 4),
    };
    while g.steps.len() < cfg.steps {
        g.one();
    }
    g.steps.truncate(cfg.steps);
    Script { skipped: Vec::new(), path: format!("gen:seed={seed} {}", cfg.describe()), steps: g.steps }
}

impl Gen<'_> {
    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.rng.random_range(0..xs.len())]
    }

    fn emit(&mut self, pid: u32, call: Call, expect: Option<Expect>) {
        let mut call = call;
        if self.cfg.relocate_flags
            && let Call::Mremap { flags, .. } = &mut call
            && *flags & MREMAP_MAYMOVE != 0
            && self.rng.random_bool(0.4)
        {
            *flags |=
                if self.rng.random_bool(0.7) { MREMAP_RELOCATE_ANON } else { MREMAP_MUST_RELOCATE_ANON };
        }
        let text = render(&call);
        let line = self.steps.len() + 1;
        self.steps.push(Step { line, pid: Pid(pid), call, text, expect });
    }

    fn choose_op(&mut self, pi: usize) -> Op {
        let w = &self.cfg.weights;
        let empty = self.procs[pi].regions.is_empty();
        let mut table: Vec<(Op, u32)> = vec![
            (Op::Mmap, if empty { w.mmap * 4 + 1 } else { w.mmap }),
            (Op::Munmap, w.munmap),
            (Op::Mprotect, w.mprotect),
            (Op::Madvise, w.madvise),
            (Op::Mremap, w.mremap),
            (Op::AnonName, w.anon_name),
            (Op::Touch, w.touch),
            (Op::Pin, w.pin),
            (Op::Migrate, w.migrate),
            (Op::Uffd, w.uffd),
            (Op::Brk, w.brk),
            (Op::Mlock, w.mlock),
        ];
        if self.procs.len() < self.cfg.max_procs {
            table.push((Op::Fork, w.fork));
            table.push((Op::Clone, w.clone));
            table.push((Op::Vfork, w.vfork));
        }
        if self.procs.len() > 1 {
            table.push((Op::Exit, w.exit));
        }
        table.push((Op::Execve, w.execve));
        if self.cfg.files {
            table.push((Op::File, w.file));
            table.push((Op::Dup, w.dup));
        }
        let total: u32 = table.iter().map(|&(_, w)| w).sum();
        if total == 0 {
            return Op::Mmap;
        }
        let mut x = self.rng.random_range(0..total);
        for &(op, w) in &table {
            if x < w {
                return op;
            }
            x -= w;
        }
        Op::Mmap
    }

    /// Generate one operation (one or a few steps).
    fn one(&mut self) {
        let pi = self.rng.random_range(0..self.procs.len());
        let pid = self.procs[pi].pid;
        self.one_op(pi);
        self.share_view(pid);
    }

    fn one_op(&mut self, pi: usize) {
        let op = self.choose_op(pi);
        self.run_op(pi, op);
    }

    fn run_op(&mut self, pi: usize, op: Op) {
        match op {
            Op::Mmap => self.op_mmap(pi),
            Op::Munmap => self.op_munmap(pi),
            Op::Mprotect => self.op_mprotect(pi),
            Op::Madvise => self.op_madvise(pi),
            Op::Mremap => self.op_mremap(pi),
            Op::AnonName => self.op_anon_name(pi),
            Op::Fork => self.op_fork(pi),
            Op::Exit => self.op_exit(),
            Op::Touch => self.op_touch(pi),
            Op::File => self.op_file(pi),
            Op::Pin => self.op_pin(pi),
            Op::Migrate => self.op_migrate(pi),
            Op::Uffd => self.op_uffd(pi),
            Op::Brk => self.op_brk(pi),
            Op::Clone => self.op_clone(pi),
            Op::Dup => self.op_dup(pi),
            Op::Vfork => self.op_vfork(pi),
            Op::Mlock => self.op_mlock(pi),
            Op::Execve => {
                if self.may_exit(pi) {
                    self.execve(pi);
                }
            }
        }
    }

    // ---- addresses and lengths -------------------------------------------------------------

    fn clamp_addr(a: u64) -> u64 {
        a.clamp(ARENA_BASE, ARENA_END - PAGE_SIZE) & !(PAGE_SIZE - 1)
    }

    /// Clamp a length so that `[addr, addr + len)` stays in the arena (at least one page).
    fn fit(addr: u64, len: u64) -> u64 {
        len.min(ARENA_END - addr).max(PAGE_SIZE)
    }

    /// A small page delta, mostly 0.
    fn delta_pages(&mut self) -> i64 {
        if self.chance(0.45) { 0 } else { self.rng.random_range(-4i64..=4) }
    }

    fn random_region(&mut self, pi: usize) -> Option<Region> {
        let n = self.procs[pi].regions.len();
        if n == 0 {
            // Another process's layout is a good guess too (forked layouts are alike).
            let others: Vec<usize> =
                (0..self.procs.len()).filter(|&i| !self.procs[i].regions.is_empty()).collect();
            if others.is_empty() {
                return None;
            }
            let oi = self.pick(&others);
            let m = self.procs[oi].regions.len();
            return Some(self.procs[oi].regions[self.rng.random_range(0..m)]);
        }
        Some(self.procs[pi].regions[self.rng.random_range(0..n)])
    }

    /// An address at a random mapping's start or end, give or take a few pages.
    fn near_boundary(&mut self, pi: usize) -> u64 {
        let Some(r) = self.random_region(pi) else {
            return self.random_addr();
        };
        let b = if self.chance(0.5) { r.start } else { r.end };
        let d = self.delta_pages();
        Self::clamp_addr(b.wrapping_add_signed(d * PAGE_SIZE as i64))
    }

    fn random_addr(&mut self) -> u64 {
        if self.cfg.thp && self.chance(0.3) {
            ARENA_BASE + self.rng.random_range(0..ARENA_SIZE / PMD_SIZE) * PMD_SIZE
        } else {
            // Mostly the lower part of the arena, so that random picks still meet mappings.
            let span = if self.chance(0.7) { ARENA_SIZE / 8 } else { ARENA_SIZE };
            ARENA_BASE + self.rng.random_range(0..span / PAGE_SIZE) * PAGE_SIZE
        }
    }

    fn pick_addr(&mut self, pi: usize) -> u64 {
        if self.chance(0.75) { self.near_boundary(pi) } else { self.random_addr() }
    }

    fn pick_len(&mut self) -> u64 {
        let x = self.rng.random_range(0..100);
        let pages = if x < 78 {
            self.rng.random_range(1..=16)
        } else if x < 92 {
            self.rng.random_range(17..=128)
        } else if self.cfg.thp {
            return self.rng.random_range(1..=4) * PMD_SIZE;
        } else {
            self.rng.random_range(129..=1024)
        };
        pages * PAGE_SIZE
    }

    /// A 2 MiB-aligned address and a multi-MiB length (only with `thp`).
    fn thp_range(&mut self) -> (u64, u64) {
        let slots = ARENA_SIZE / PMD_SIZE;
        let n = self.rng.random_range(1..=4);
        let a = ARENA_BASE + self.rng.random_range(0..slots - n) * PMD_SIZE;
        (a, n * PMD_SIZE)
    }

    /// A free range of `len` bytes next to an existing mapping, if one is found quickly.
    fn free_near(&mut self, pi: usize, len: u64) -> Option<u64> {
        for _ in 0..8 {
            let r = self.random_region(pi)?;
            let gap = if self.chance(0.6) { 0 } else { self.rng.random_range(1..=3) * PAGE_SIZE };
            let a = if self.chance(0.5) {
                r.end + gap
            } else {
                match r.start.checked_sub(len + gap) {
                    Some(a) => a,
                    None => continue,
                }
            };
            if a >= ARENA_BASE && a + len <= ARENA_END && self.procs[pi].is_free(a, a + len) {
                return Some(a);
            }
        }
        None
    }

    /// A range for an operation on existing mappings: a whole mapping, a part of one at either
    /// end or in the middle, a run of several adjacent ones, or something near a boundary.
    fn pick_range(&mut self, pi: usize) -> (u64, u64) {
        if self.cfg.thp && self.chance(0.05) {
            return self.thp_range();
        }
        let Some(r) = self.random_region(pi) else {
            let a = self.random_addr();
            let l = self.pick_len();
            return (a, Self::fit(a, l));
        };
        let pages = (r.end - r.start) / PAGE_SIZE;
        let (a, l) = match self.rng.random_range(0..10) {
            0..=2 => (r.start, r.end - r.start),
            3 | 4 => {
                let k = self.rng.random_range(1..=pages);
                (r.start, k * PAGE_SIZE)
            }
            5 | 6 => {
                let k = self.rng.random_range(1..=pages);
                (r.end - k * PAGE_SIZE, k * PAGE_SIZE)
            }
            7 => {
                let s = self.rng.random_range(0..pages);
                let k = self.rng.random_range(1..=pages - s);
                (r.start + s * PAGE_SIZE, k * PAGE_SIZE)
            }
            8 => {
                // Across the boundary into whatever is next.
                let a = self.near_boundary(pi);
                let l = self.rng.random_range(1..=16) * PAGE_SIZE;
                (a, l)
            }
            _ => {
                let (s, e) = self.adjacent_run(pi, r);
                (s, e - s)
            }
        };
        let a = Self::clamp_addr(a);
        (a, Self::fit(a, l))
    }

    /// The span of `r` and up to three mappings that follow it without a gap.
    fn adjacent_run(&mut self, pi: usize, r: Region) -> (u64, u64) {
        let regs = &self.procs[pi].regions;
        let Some(i) = regs.iter().position(|x| x.start == r.start) else {
            return (r.start, r.end);
        };
        let want = self.rng.random_range(1..=3);
        let mut end = regs[i].end;
        let mut j = i + 1;
        while j < regs.len() && j - i <= want && regs[j].start == end {
            end = regs[j].end;
            j += 1;
        }
        (regs[i].start, end)
    }

    fn pick_prot(&mut self) -> u64 {
        let x = self.rng.random_range(0..20);
        match x {
            0..=1 => PROT_NONE,
            2..=4 => PROT_READ,
            5..=15 => PROT_READ | PROT_WRITE,
            16..=17 => PROT_READ | PROT_EXEC,
            _ => PROT_READ | PROT_WRITE | PROT_EXEC,
        }
    }

    // ---- operations ------------------------------------------------------------------------

    fn op_mmap(&mut self, pi: usize) {
        if self.cfg.thp && self.chance(0.1) && self.op_thp(pi) {
            return;
        }
        let pid = self.procs[pi].pid;
        let (mut addr, mut len) = if self.cfg.thp && self.chance(0.08) {
            self.thp_range()
        } else {
            let l = self.pick_len();
            let a = self.pick_addr(pi);
            (a, Self::fit(a, l))
        };
        // Placement: FIXED may replace; NOREPLACE and a bare hint mostly go to a free spot.
        let placement = self.rng.random_range(0..10);
        let place_flag = match placement {
            0..=3 => MAP_FIXED,
            4..=7 => MAP_FIXED_NOREPLACE,
            _ => 0,
        };
        if place_flag != MAP_FIXED
            && self.chance(0.8)
            && let Some(a) = self.free_near(pi, len)
        {
            addr = a;
        }
        len = Self::fit(addr, len);
        let mut flags = place_flag;
        if self.chance(0.2) {
            flags |= MAP_NORESERVE;
        }
        if self.chance(0.06) {
            flags |= MAP_POPULATE;
            if self.chance(0.3) {
                flags |= MAP_NONBLOCK;
            }
        }
        // Rarer flags: MAP_LOCKED populates, MAP_STACK sets VM_NOHUGEPAGE, and the legacy
        // ones the kernel ignores (MAP_DENYWRITE, MAP_EXECUTABLE, MAP_UNINITIALIZED).
        for (p, f) in [
            (0.02, MAP_LOCKED),
            (0.03, MAP_STACK),
            (0.01, MAP_NONBLOCK),
            (0.01, MAP_DENYWRITE),
            (0.01, MAP_EXECUTABLE),
            (0.01, MAP_UNINITIALIZED),
        ] {
            if self.chance(p) {
                flags |= f;
            }
        }
        let growsdown = self.chance(0.06);
        if growsdown {
            flags |= MAP_GROWSDOWN;
        }
        let mut prot = self.pick_prot();
        if self.chance(0.02) {
            prot |= PROT_SEM;
        }
        // Backing: private anon, shared anon, private file, shared file.
        let x = self.rng.random_range(0..100);
        let (kind, fd, off) = if self.cfg.files && x >= 70 {
            let shared = self.cfg.shared && x >= 85;
            let (fd, size) = self.some_fd(pi);
            let fpages = size / PAGE_SIZE;
            let off = if self.chance(0.5) {
                0
            } else if self.chance(0.85) {
                self.rng.random_range(0..fpages.max(1)) * PAGE_SIZE
            } else {
                (fpages + self.rng.random_range(0..4)) * PAGE_SIZE
            };
            flags |= if !shared {
                MAP_PRIVATE
            } else if self.chance(0.2) {
                MAP_SHARED_VALIDATE
            } else {
                MAP_SHARED
            };
            (Kind::File, fd, off)
        } else if self.cfg.shared && x >= 58 {
            // MAP_SHARED_VALIDATE is EINVAL without a file.
            flags |= if self.chance(0.04) { MAP_SHARED_VALIDATE } else { MAP_SHARED } | MAP_ANONYMOUS;
            (Kind::AnonShared, -1, 0)
        } else {
            flags |= MAP_PRIVATE | MAP_ANONYMOUS;
            (Kind::AnonPrivate, -1, 0)
        };
        // MAP_SYNC (VM_SYNC; EOPNOTSUPP on an ext4 file without DAX), MAP_32BIT (ignored
        // with MAP_FIXED; placement in the low 2 GiB is not modelled, so only with it), and on
        // a file MAP_HUGETLB and MAP_DROPPABLE (EINVAL off hugetlbfs; anonymous ones are not
        // modelled).
        if self.chance(0.01) {
            flags |= MAP_SYNC;
        }
        if place_flag != 0 && self.chance(0.01) {
            flags |= MAP_32BIT;
        }
        if kind == Kind::File {
            if self.chance(0.01) {
                flags |= MAP_HUGETLB;
            }
            if self.chance(0.01) {
                flags = flags & !MAP_TYPE | MAP_DROPPABLE;
            }
        }
        let p = &mut self.procs[pi];
        let lands = match place_flag {
            MAP_FIXED => true,
            _ => p.is_free(addr, addr + len),
        };
        if lands {
            p.map(addr, addr + len, kind);
            if growsdown {
                self.growsdown.push((pid, addr));
            }
        }
        self.emit(pid, Call::Mmap { addr, len, prot, flags, fd, off }, None);
    }

    /// A THP or more: a private anonymous mapping of 2 MiB-aligned PMDs at a free spot,
    /// MADV_HUGEPAGE, and a write to one page, part or all of a PMD (a THP fault), sometimes
    /// to all of it. False if no free spot was found quickly.
    fn op_thp(&mut self, pi: usize) -> bool {
        let pid = self.procs[pi].pid;
        let mut found = None;
        for _ in 0..8 {
            let (a, l) = self.thp_range();
            if self.procs[pi].is_free(a, a + l) {
                found = Some((a, l));
                break;
            }
        }
        let Some((addr, len)) = found else { return false };
        self.procs[pi].map(addr, addr + len, Kind::AnonPrivate);
        let flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE;
        let prot = PROT_READ | PROT_WRITE;
        self.emit(pid, Call::Mmap { addr, len, prot, flags, fd: -1, off: 0 }, None);
        self.emit(pid, Call::Madvise { addr, len, advice: MADV_HUGEPAGE }, None);
        let (a, l) = if self.chance(0.2) {
            (addr, len)
        } else {
            let pmd = addr + self.rng.random_range(0..len / PMD_SIZE) * PMD_SIZE;
            let pages = match self.rng.random_range(0..3) {
                0 => 1,
                1 => self.rng.random_range(1..=512),
                _ => 512,
            };
            (pmd, pages * PAGE_SIZE)
        };
        self.emit(pid, Call::Touch { addr: a, len: l, write: true }, None);
        true
    }

    /// An open fd of the process (opening a file first when it has none), and the file size.
    fn some_fd(&mut self, pi: usize) -> (i64, u64) {
        if self.procs[pi].fds.is_empty() {
            self.open_file(pi);
        }
        let fds: Vec<(i64, usize)> = self.procs[pi].fds.iter().map(|(&a, &b)| (a, b)).collect();
        let (fd, file) = self.pick(&fds);
        (fd, self.files[file].unwrap_or(PAGE_SIZE))
    }

    fn open_file(&mut self, pi: usize) {
        let pid = self.procs[pi].pid;
        let file = self.rng.random_range(0..NR_FILES);
        let fd = self.procs[pi].lowest_free_fd();
        self.procs[pi].fds.insert(fd, file);
        let call = Call::Openat {
            dirfd: AT_FDCWD,
            path: format!("f{}", file + 1),
            flags: O_RDWR | O_CREAT,
            mode: 0o600,
        };
        self.emit(pid, call, None);
        if self.files[file].is_none() || self.chance(0.2) {
            self.truncate(pi, fd, file);
        }
    }

    fn truncate(&mut self, pi: usize, fd: i64, file: usize) {
        let pid = self.procs[pi].pid;
        let pages = match self.rng.random_range(0..12) {
            0..=2 => self.rng.random_range(1..=8),
            3..=7 => self.rng.random_range(1..=64),
            8..=10 => self.rng.random_range(65..=1024),
            _ => 2048,
        };
        // Often a size inside a page: EOF inside a page (ext4 zeroes the rest of its block,
        // and the page after it is SIGBUS).
        let len = if self.chance(0.4) {
            pages * PAGE_SIZE - self.rng.random_range(1..PAGE_SIZE)
        } else {
            pages * PAGE_SIZE
        };
        self.files[file] = Some(len);
        self.emit(pid, Call::Ftruncate { fd, len }, None);
    }

    fn op_file(&mut self, pi: usize) {
        let nfds = self.procs[pi].fds.len();
        let x = self.rng.random_range(0..10);
        if nfds == 0 || (x < 5 && nfds < MAX_FDS) {
            self.open_file(pi);
        } else if x < 7 {
            let fds: Vec<(i64, usize)> = self.procs[pi].fds.iter().map(|(&a, &b)| (a, b)).collect();
            let (fd, file) = self.pick(&fds);
            self.truncate(pi, fd, file);
        } else {
            let pid = self.procs[pi].pid;
            let fds: Vec<i64> = self.procs[pi].fds.keys().copied().collect();
            let fd = self.pick(&fds);
            self.procs[pi].fds.remove(&fd);
            self.emit(pid, Call::Close { fd }, None);
        }
    }

    fn op_munmap(&mut self, pi: usize) {
        let pid = self.procs[pi].pid;
        let (addr, len) = self.pick_range(pi);
        if self.cfg.invalid && self.chance(0.03) {
            // Unaligned start or zero length: EINVAL.
            let (addr, len) = if self.chance(0.5) { (addr + 0x10, len) } else { (addr, 0) };
            self.emit(pid, Call::Munmap { addr, len }, None);
            return;
        }
        self.procs[pi].unmap(addr, addr + len);
        self.emit(pid, Call::Munmap { addr, len }, None);
    }

    fn op_mprotect(&mut self, pi: usize) {
        let pid = self.procs[pi].pid;
        let (addr, len) = self.pick_range(pi);
        let mut prot = self.pick_prot();
        // PROT_GROWSDOWN extends the change to the start of a VM_GROWSDOWN VMA (EINVAL on
        // any other); x86 has no VM_GROWSUP, so PROT_GROWSUP is EINVAL; PROT_SEM is allowed.
        match self.rng.random_range(0..100) {
            0..6 => prot |= PROT_GROWSDOWN,
            6..8 => prot |= PROT_SEM,
            8 => prot |= PROT_GROWSUP,
            _ => {}
        }
        let grows = self.growsdown.iter().rfind(|g| g.0 == pid).map(|g| g.1);
        let addr = match grows {
            Some(a) if prot & PROT_GROWSDOWN != 0 && self.chance(0.7) => a,
            _ => addr,
        };
        self.emit(pid, Call::Mprotect { addr, len, prot }, None);
    }

    /// The mlock family: a range (sometimes not page aligned: the kernel widens it) locked,
    /// locked on fault or unlocked, or the whole process with mlockall/munlockall (whose
    /// MCL_FUTURE locks, and populates, later mappings and brk).
    fn op_mlock(&mut self, pi: usize) {
        let pid = self.procs[pi].pid;
        let (mut addr, len) = self.pick_range(pi);
        if self.chance(0.15) {
            addr += self.rng.random_range(1..PAGE_SIZE);
        }
        let call = match self.rng.random_range(0..100) {
            0..30 => Call::Mlock { addr, len, flags: None },
            30..50 => {
                let flags = if self.cfg.invalid && self.chance(0.1) {
                    self.pick(&[2, MLOCK_ONFAULT | 4])
                } else {
                    self.pick(&[0, MLOCK_ONFAULT, MLOCK_ONFAULT])
                };
                Call::Mlock { addr, len, flags: Some(flags) }
            }
            50..75 => Call::Munlock { addr, len },
            75..90 => {
                let flags = if self.cfg.invalid && self.chance(0.15) {
                    self.pick(&[0, MCL_ONFAULT, 8, MCL_CURRENT | 8])
                } else {
                    self.pick(&[
                        MCL_CURRENT,
                        MCL_FUTURE,
                        MCL_CURRENT | MCL_FUTURE,
                        MCL_CURRENT | MCL_ONFAULT,
                        MCL_FUTURE | MCL_ONFAULT,
                        MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT,
                    ])
                };
                Call::Mlockall { flags }
            }
            _ => Call::Munlockall,
        };
        self.emit(pid, call, None);
    }

    fn op_madvise(&mut self, pi: usize) {
        let pid = self.procs[pi].pid;
        let (mut addr, mut len) = self.pick_range(pi);
        let mut advices = vec![
            (MADV_DONTNEED, 8),
            (MADV_FREE, 4),
            (MADV_COLD, 3),
            (MADV_DONTFORK, 4),
            (MADV_DOFORK, 3),
            (MADV_WIPEONFORK, 4),
            (MADV_KEEPONFORK, 3),
            (MADV_HUGEPAGE, 3),
            (MADV_NOHUGEPAGE, 2),
            (MADV_NORMAL, 2),
            (MADV_RANDOM, 2),
            (MADV_SEQUENTIAL, 2),
            (MADV_PAGEOUT, 6),
            (MADV_POPULATE_READ, 3),
            (MADV_POPULATE_WRITE, 3),
            (MADV_REMOVE, 3),
            (MADV_WILLNEED, 3),
            (MADV_GUARD_INSTALL, 4),
            (MADV_GUARD_REMOVE, 3),
            (MADV_DONTNEED_LOCKED, 2),
            (MADV_MERGEABLE, 1),
            (MADV_UNMERGEABLE, 1),
            (MADV_DONTDUMP, 1),
            (MADV_DODUMP, 1),
        ];
        if self.cfg.thp {
            advices.push((MADV_HUGEPAGE, 3));
            advices.push((MADV_COLLAPSE, 3));
        }
        let total: u32 = advices.iter().map(|&(_, w)| w).sum();
        let mut x = self.rng.random_range(0..total);
        let mut advice = MADV_DONTNEED;
        for &(a, w) in &advices {
            if x < w {
                advice = a;
                break;
            }
            x -= w;
        }
        // The advices that split large folios they cover in part: often aim them at a THP,
        // whole, half of it, from its middle, or at a single page.
        if self.cfg.thp
            && [MADV_PAGEOUT, MADV_COLD, MADV_FREE, MADV_GUARD_INSTALL].contains(&advice)
            && self.chance(0.5)
        {
            (addr, len) = self.thp_subrange(pi);
        }
        // The file advices: mostly at a file or shared mapping, part or all of it.
        if [MADV_WILLNEED, MADV_REMOVE].contains(&advice)
            && self.chance(0.8)
            && let Some(r) = self.file_region(pi)
        {
            (addr, len) = self.sub_range(r);
        }
        self.emit(pid, Call::Madvise { addr, len, advice }, None);
    }

    /// A range over part or all of a 2 MiB-aligned PMD inside a mapping (where a THP may be).
    fn thp_subrange(&mut self, pi: usize) -> (u64, u64) {
        let pmd = match self.random_region(pi) {
            Some(r)
                if r.end - r.start >= PMD_SIZE && r.start.next_multiple_of(PMD_SIZE) + PMD_SIZE <= r.end =>
            {
                let first = r.start.next_multiple_of(PMD_SIZE);
                let n = (r.end - first) / PMD_SIZE;
                first + self.rng.random_range(0..n) * PMD_SIZE
            }
            _ => self.thp_range().0,
        };
        let half = PMD_SIZE / 2;
        let (a, l) = match self.rng.random_range(0..6) {
            0 => (pmd, PMD_SIZE),
            1 => (pmd, half),
            2 => (pmd + half, half),
            3 => (pmd + self.rng.random_range(0..512) * PAGE_SIZE, PAGE_SIZE),
            4 => (pmd + self.rng.random_range(1..512) * PAGE_SIZE, PMD_SIZE),
            _ => {
                let s = self.rng.random_range(0..512);
                let k = self.rng.random_range(1..=512 - s);
                (pmd + s * PAGE_SIZE, k * PAGE_SIZE)
            }
        };
        let a = Self::clamp_addr(a);
        (a, Self::fit(a, l))
    }

    /// `pin` a range (mostly inside one mapping) or `unpin` an earlier pin of this process.
    fn op_pin(&mut self, pi: usize) {
        let pid = self.procs[pi].pid;
        let mine: Vec<usize> = (0..self.pins.len()).filter(|&i| self.pins[i].0 == pid).collect();
        if !mine.is_empty() && self.chance(0.4) {
            let i = self.pick(&mine);
            let (_, addr, len) = self.pins.remove(i);
            self.emit(pid, Call::Unpin { addr, len }, None);
            return;
        }
        let (addr, len) = match self.random_region(pi) {
            Some(r) => {
                let pages = (r.end - r.start) / PAGE_SIZE;
                let s = self.rng.random_range(0..pages);
                let k = self.rng.random_range(1..=(pages - s).min(16));
                (r.start + s * PAGE_SIZE, k * PAGE_SIZE)
            }
            None => (self.random_addr(), PAGE_SIZE),
        };
        let len = Self::fit(addr, len);
        self.pins.push((pid, addr, len));
        self.emit(pid, Call::Pin { addr, len }, None);
    }

    /// `migrate` a range, or `migrate_done` one (often the same kind of range, so that some
    /// migrations stay in flight across other calls and some end by a fault or an exit).
    fn op_migrate(&mut self, pi: usize) {
        let pid = self.procs[pi].pid;
        let (addr, len) = self.pick_range(pi);
        let call =
            if self.chance(0.55) { Call::Migrate { addr, len } } else { Call::MigrateDone { addr, len } };
        self.emit(pid, call, None);
    }

    /// userfaultfd: register a range for missing faults (whole mappings or parts), unregister
    /// one, or `UFFDIO_MOVE` pages into a registered range from a mapping nearby: page runs,
    /// whole PMDs with `thp`, with or without ALLOW_SRC_HOLES; with `invalid`, bad modes and
    /// unaligned or unregistered destinations.
    fn op_uffd(&mut self, pi: usize) {
        let pid = self.procs[pi].pid;
        let mine: Vec<(u64, u64)> =
            self.uffd_ranges.iter().filter(|r| r.0 == pid).map(|&(_, s, e)| (s, e)).collect();
        let x = self.rng.random_range(0..100);
        if mine.is_empty() || x < 20 {
            let (addr, len) = self.pick_range(pi);
            let mode = if self.cfg.invalid && self.chance(0.05) {
                self.pick(&[0, 8])
            } else {
                UFFDIO_REGISTER_MODE_MISSING
            };
            self.uffd_ranges.push((pid, addr, addr.saturating_add(len)));
            self.emit(pid, Call::UffdRegister { addr, len, mode }, None);
            return;
        }
        if x < 27 {
            let (s, e) = self.pick(&mine);
            let (addr, len) = if self.chance(0.6) { (s, e - s) } else { self.pick_range(pi) };
            self.uffd_ranges
                .retain(|&(p, rs, re)| !(p == pid && rs >= addr && re <= addr.saturating_add(len)));
            self.emit(pid, Call::UffdUnregister { addr, len }, None);
            return;
        }
        // The destination: a mapping the generator believes is inside a registered range.
        let (mut ds, mut de) = self.pick(&mine);
        let inside: Vec<Region> = self.procs[pi].clipped(ds, de);
        if !inside.is_empty() && self.chance(0.9) {
            let r = self.pick(&inside);
            (ds, de) = (r.start, r.end);
        }
        let thp = self.cfg.thp && self.chance(0.15);
        let len = if thp {
            PMD_SIZE * self.rng.random_range(1..=2)
        } else {
            PAGE_SIZE * self.rng.random_range(1..=8).min(((de - ds) / PAGE_SIZE).max(1))
        };
        // Mostly a start from which `len` fits in the range (moves stay within one VMA).
        let span = |s: u64, e: u64, g: &mut Self| {
            let pages = (e.saturating_sub(s) / PAGE_SIZE).max(1);
            let fits = pages.saturating_sub(len / PAGE_SIZE) + 1;
            let upto = if g.chance(0.8) { fits.min(pages) } else { pages };
            let off = g.rng.random_range(0..upto);
            if thp { (s + off * PAGE_SIZE + PMD_SIZE - 1) & !(PMD_SIZE - 1) } else { s + off * PAGE_SIZE }
        };
        let dst = Self::clamp_addr(span(ds, de, self));
        // A private anonymous source mostly: the only kind that moves.
        let mut region = self.random_region(pi);
        for _ in 0..4 {
            if region.is_none_or(|r| matches!(r.kind, Kind::AnonPrivate)) {
                break;
            }
            region = self.random_region(pi);
        }
        let src = match region {
            Some(r) => Self::clamp_addr(span(r.start, r.end, self)),
            None => self.random_addr(),
        };
        let (dst, src) = if self.chance(0.1) {
            // The other way round: the source registered, the destination maybe not.
            (src, dst)
        } else {
            (dst, src)
        };
        if self.chance(0.5) {
            // Fault the source in first (written pages move; read ones are zero pages), as a
            // program fills the page it is about to hand over.
            let n = Self::fit(src, len);
            let write = self.chance(0.8);
            self.emit(pid, Call::Touch { addr: src, len: n, write }, None);
        }
        let mut mode = self.pick(&[
            0,
            0,
            UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES,
            UFFDIO_MOVE_MODE_DONTWAKE,
            UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES | UFFDIO_MOVE_MODE_DONTWAKE,
        ]);
        let (mut dst, mut src, mut len) = (dst, src, Self::fit(dst.max(src), len));
        if self.cfg.invalid && self.chance(0.08) {
            match self.rng.random_range(0..4) {
                0 => mode |= 4,
                1 => dst += 1,
                2 => len = 0,
                _ => src = dst,
            }
        }
        len = len.min(ARENA_END.saturating_sub(dst.max(src)));
        self.emit(pid, Call::UffdioMove { dst, src, len, mode }, None);
    }

    fn op_anon_name(&mut self, pi: usize) {
        let pid = self.procs[pi].pid;
        let (addr, len) = self.pick_range(pi);
        let name = if self.chance(0.2) { None } else { Some(self.pick(ANON_NAMES).to_string()) };
        self.emit(pid, Call::SetVmaAnonName { addr, len, name }, None);
    }

    fn op_touch(&mut self, pi: usize) {
        let pid = self.procs[pi].pid;
        let x = self.rng.random_range(0..100);
        let file = if (60..72).contains(&x) { self.file_region(pi) } else { None };
        let mine: Vec<u64> = self.growsdown.iter().filter(|g| g.0 == pid).map(|g| g.1).collect();
        let (addr, len) = if !mine.is_empty() && (4..12).contains(&x) {
            // Just below a growable VMA: stack growth (within the guard gap and
            // RLIMIT_STACK, else SIGSEGV), sometimes far below.
            let start = self.pick(&mine);
            let below = match self.rng.random_range(0..10) {
                0..6 => self.rng.random_range(1..=4),
                6..9 => self.rng.random_range(5..=300),
                _ => self.rng.random_range(300..=2200),
            };
            let a = Self::clamp_addr(start.saturating_sub(below * PAGE_SIZE));
            let i = self.growsdown.iter().position(|&g| g == (pid, start)).expect("picked from it");
            if a < start {
                self.growsdown[i].1 = a;
            }
            (a, self.rng.random_range(1..=3) * PAGE_SIZE)
        } else if self.cfg.thp && x < 4 {
            let (a, _) = self.thp_range();
            (a, PMD_SIZE)
        } else if let Some(r) = file {
            // A file or shared mapping, maybe running past EOF (SIGBUS at the first page
            // there, after the pages before it, and fault-around on the way).
            self.sub_range(r)
        } else if x < 70 {
            // Inside one mapping (the generator's belief).
            match self.random_region(pi) {
                Some(r) => {
                    let pages = (r.end - r.start) / PAGE_SIZE;
                    let s = if self.chance(0.4) { 0 } else { self.rng.random_range(0..pages) };
                    let k = self.rng.random_range(1..=(pages - s).min(64));
                    (r.start + s * PAGE_SIZE, k * PAGE_SIZE)
                }
                None => (self.random_addr(), PAGE_SIZE),
            }
        } else {
            // Straddling a boundary, maybe into a hole: SIGSEGV sometimes.
            let a = self.near_boundary(pi);
            let back = self.rng.random_range(0..=3) * PAGE_SIZE;
            let a = Self::clamp_addr(a.saturating_sub(back));
            (a, self.rng.random_range(1..=8) * PAGE_SIZE)
        };
        let len = Self::fit(addr, len);
        let write = self.chance(0.6);
        self.emit(pid, Call::Touch { addr, len, write }, None);
    }

    fn op_brk(&mut self, pi: usize) {
        let pid = self.procs[pi].pid;
        let start = crate::types::DEFAULT_START_BRK;
        let addr = match self.rng.random_range(0..100) {
            0..15 => 0,
            15..22 => start - PAGE_SIZE,
            x => {
                let pages = if x < 60 {
                    // Near the current break: grow or shrink a little.
                    let cur = (self.procs[pi].brk - start) / PAGE_SIZE;
                    cur.saturating_add_signed(self.rng.random_range(-3..=4))
                } else {
                    self.rng.random_range(0..=48)
                };
                let off = if self.chance(0.3) { self.rng.random_range(1..PAGE_SIZE) } else { 0 };
                start + pages * PAGE_SIZE + off
            }
        };
        if addr >= start {
            let p = &mut self.procs[pi];
            let (old, new) = (p.brk.next_multiple_of(PAGE_SIZE), addr.next_multiple_of(PAGE_SIZE));
            if new > old {
                if p.is_free(old, new) {
                    p.map(old, new, Kind::AnonPrivate);
                    p.brk = addr;
                }
            } else {
                p.unmap(new, old);
                p.brk = addr;
            }
        }
        self.emit(pid, Call::Brk { addr }, None);
    }

    /// A file or shared anonymous mapping of the process (the generator's belief), if any.
    fn file_region(&mut self, pi: usize) -> Option<Region> {
        let rs: Vec<Region> =
            self.procs[pi].regions.iter().copied().filter(|r| !matches!(r.kind, Kind::AnonPrivate)).collect();
        if rs.is_empty() {
            return None;
        }
        Some(rs[self.rng.random_range(0..rs.len())])
    }

    /// Up to 64 pages of a region, from its start or a random page.
    fn sub_range(&mut self, r: Region) -> (u64, u64) {
        let pages = (r.end - r.start) / PAGE_SIZE;
        let s = if self.chance(0.4) { 0 } else { self.rng.random_range(0..pages) };
        let k = self.rng.random_range(1..=(pages - s).min(64));
        (r.start + s * PAGE_SIZE, k * PAGE_SIZE)
    }

    fn op_fork(&mut self, pi: usize) {
        let parent = self.procs[pi].clone();
        let child = self.next_pid;
        self.next_pid += 1;
        self.procs.push(Proc {
            pid: child,
            tgid: child,
            mm: child,
            fdt: child,
            vm_parent: None,
            ..parent.clone()
        });
        let grows: Vec<(u32, u64)> =
            self.growsdown.iter().filter(|g| g.0 == parent.pid).map(|&(_, a)| (child, a)).collect();
        self.growsdown.extend(grows);
        self.emit(parent.pid, Call::Fork { vfork: false }, Some(Expect::Value(u64::from(child))));
    }

    fn op_exit(&mut self) {
        let candidates: Vec<usize> = (1..self.procs.len()).filter(|&i| self.may_exit(i)).collect();
        if candidates.is_empty() {
            return;
        }
        let ci = self.pick(&candidates);
        let p = self.procs.remove(ci);
        self.pins.retain(|&(pid, _, _)| pid != p.pid);
        self.uffd_ranges.retain(|&(pid, _, _)| pid != p.pid);
        self.emit(p.pid, Call::ExitGroup { code: 0 }, None);
    }

    // ---- threads and descriptors (issue 14) ---------------------------------------------------

    /// After a task's operation, every task sharing its mm sees its picture of the mappings
    /// and the break, and every task sharing its descriptor table its descriptors.
    fn share_view(&mut self, pid: u32) {
        let Some(p) = self.procs.iter().find(|p| p.pid == pid).cloned() else { return };
        for q in self.procs.iter_mut().filter(|q| q.pid != pid) {
            if q.mm == p.mm {
                q.regions.clone_from(&p.regions);
                q.brk = p.brk;
            }
            if q.fdt == p.fdt {
                q.fds.clone_from(&p.fds);
            }
        }
    }

    /// Whether task `i` may exit_group: not while other tasks of its thread group live (the
    /// kernel would end them all, the model refuses), nor while it shares its descriptor
    /// table (its pin rings and userfaultfd would outlive it there), nor while a task it made
    /// with CLONE_VM lives.
    fn may_exit(&self, i: usize) -> bool {
        let p = &self.procs[i];
        self.procs
            .iter()
            .filter(|q| q.pid != p.pid)
            .all(|q| q.tgid != p.tgid && q.fdt != p.fdt && q.vm_parent != Some(p.pid))
    }

    /// `clone` with CLONE_VM: mostly a thread as pthread_create makes it (less the tid
    /// pointers, which the script cannot give), else a process sharing the mm, sometimes the
    /// descriptor table too; with `invalid`, flag combinations `copy_process` refuses.
    fn op_clone(&mut self, pi: usize) {
        let parent = self.procs[pi].clone();
        let x = self.rng.random_range(0..10);
        let mut flags = match x {
            0..=5 => {
                let mut f = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM;
                for extra in [CLONE_SETTLS, CLONE_DETACHED, CLONE_UNTRACED, CLONE_PTRACE, CLONE_PARENT] {
                    if self.chance(0.15) {
                        f |= extra;
                    }
                }
                f
            }
            _ => {
                let mut f = CLONE_VM | SIGCHLD;
                for extra in [CLONE_FILES, CLONE_FS, CLONE_SIGHAND, CLONE_SYSVSEM, CLONE_PARENT, CLONE_SETTLS]
                {
                    if self.chance(0.3) {
                        f |= extra;
                    }
                }
                f
            }
        };
        if self.cfg.invalid && self.chance(0.15) {
            // Each refused by copy_process (or kernel_clone) before anything is written.
            flags = match self.rng.random_range(0..4) {
                0 => (flags | CLONE_THREAD | CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID) & !CLONE_SIGHAND,
                1 => flags | CLONE_NEWNS | CLONE_FS,
                2 => flags | CLONE_PIDFD | CLONE_DETACHED,
                _ => flags | CLONE_PIDFD | CLONE_PARENT_SETTID,
            };
            self.emit(parent.pid, Call::CloneVm { flags }, None);
            return;
        }
        let child = self.next_pid;
        self.next_pid += 1;
        let thread = flags & CLONE_THREAD != 0;
        self.procs.push(Proc {
            pid: child,
            tgid: if thread { parent.tgid } else { child },
            mm: parent.mm,
            fdt: if flags & CLONE_FILES != 0 { parent.fdt } else { child },
            vm_parent: Some(parent.pid),
            ..parent.clone()
        });
        self.emit(parent.pid, Call::CloneVm { flags }, Some(Expect::Value(u64::from(child))));
    }

    /// `vfork()` (or its `clone` spelling) by task `pi`: the child borrows the mm and gets a
    /// copy of the descriptor table; it runs a few operations that neither make nor end
    /// tasks (its parent sleeps, so nothing else runs), then exits or execs.
    fn op_vfork(&mut self, pi: usize) {
        let parent = self.procs[pi].clone();
        let child = self.next_pid;
        self.next_pid += 1;
        self.procs.push(Proc {
            pid: child,
            tgid: child,
            fdt: child,
            vm_parent: Some(parent.pid),
            ..parent.clone()
        });
        let grows: Vec<(u32, u64)> =
            self.growsdown.iter().filter(|g| g.0 == parent.pid).map(|&(_, a)| (child, a)).collect();
        self.growsdown.extend(grows);
        // `clone(CLONE_VM|CLONE_VFORK|SIGCHLD)` (posix_spawn's) parses to the same call.
        self.emit(parent.pid, Call::Fork { vfork: true }, Some(Expect::Value(u64::from(child))));
        let ci = self.procs.len() - 1;
        for _ in 0..self.rng.random_range(0..=6) {
            match self.choose_op(ci) {
                Op::Fork | Op::Clone | Op::Vfork | Op::Exit | Op::Execve => self.op_touch(ci),
                op => self.run_op(ci, op),
            }
            self.share_view(child);
        }
        if self.chance(0.5) {
            self.execve(ci);
        } else {
            let p = self.procs.remove(ci);
            self.forget(p.pid);
            self.emit(p.pid, Call::ExitGroup { code: 0 }, None);
        }
    }

    /// Task `i` execs: a fresh, empty mm and break, a descriptor table of its own (the same
    /// descriptors: the generator opens none with O_CLOEXEC); its pins, userfaultfd and
    /// growable mappings go with the old mm.
    fn execve(&mut self, i: usize) {
        let pid = self.procs[i].pid;
        self.forget(pid);
        // Fresh mm and table numbers: no other task's.
        self.next_space += 1;
        let fresh = self.next_space;
        let p = &mut self.procs[i];
        p.regions.clear();
        p.brk = crate::types::DEFAULT_START_BRK;
        p.mm = fresh;
        p.fdt = fresh;
        p.vm_parent = None;
        self.emit(pid, Call::Execve { path: "/bin/true".into() }, None);
    }

    /// Drop what the generator tracks for `pid`'s pins, userfaultfd and growable mappings.
    fn forget(&mut self, pid: u32) {
        self.pins.retain(|&(p, _, _)| p != pid);
        self.uffd_ranges.retain(|&(p, _, _)| p != pid);
        self.growsdown.retain(|&(p, _)| p != pid);
    }

    /// `dup` or `dup2` of an open descriptor (sometimes of a closed one, or onto one in use).
    fn op_dup(&mut self, pi: usize) {
        let pid = self.procs[pi].pid;
        let (fd, _) = self.some_fd(pi);
        let file = self.procs[pi].fds[&fd];
        let bad = self.cfg.invalid && self.chance(0.1);
        let old = if bad { 40 } else { fd };
        if self.chance(0.5) {
            let nfd = self.procs[pi].lowest_free_fd();
            if !bad {
                self.procs[pi].fds.insert(nfd, file);
            }
            self.emit(pid, Call::Dup { fd: old }, None);
        } else {
            let new = self.rng.random_range(3..3 + MAX_FDS as i64);
            if !bad {
                self.procs[pi].fds.insert(new, file);
            }
            self.emit(pid, Call::Dup2 { oldfd: old, newfd: new }, None);
        }
    }

    fn op_mremap(&mut self, pi: usize) {
        let pid = self.procs[pi].pid;
        let (old_addr, old_len) = self.pick_range(pi);
        let x = self.rng.random_range(0..100);
        let call = if self.cfg.invalid && x < 6 {
            self.mremap_invalid(pi, old_addr, old_len)
        } else if x < 22 {
            // Shrink in place.
            let new_len = if old_len > PAGE_SIZE {
                self.rng.random_range(1..old_len / PAGE_SIZE) * PAGE_SIZE
            } else {
                old_len
            };
            let flags = if self.chance(0.5) { 0 } else { MREMAP_MAYMOVE };
            self.procs[pi].unmap(old_addr + new_len, old_addr + old_len);
            Call::Mremap { old_addr, old_len, new_len, flags, new_addr: 0 }
        } else if x < 40 {
            // Grow (in place if there is room; with MAYMOVE it may move elsewhere).
            let grow = self.pick_len().min(16 * PAGE_SIZE * 8);
            let new_len = Self::fit(old_addr, old_len + grow);
            let flags = if self.chance(0.5) { 0 } else { MREMAP_MAYMOVE };
            let p = &mut self.procs[pi];
            let kind = p.clipped(old_addr, old_addr + old_len).last().map(|r| r.kind);
            if p.is_free(old_addr + old_len, old_addr + new_len) {
                if let Some(kind) = kind {
                    p.map(old_addr + old_len, old_addr + new_len, kind);
                }
            } else if flags & MREMAP_MAYMOVE != 0 {
                p.unmap(old_addr, old_addr + old_len);
            }
            Call::Mremap { old_addr, old_len, new_len, flags, new_addr: 0 }
        } else if x < 62 {
            // MAYMOVE|FIXED next to other mappings, same size mostly.
            let new_len = if self.chance(0.7) {
                old_len
            } else {
                self.rng.random_range(1..=(old_len / PAGE_SIZE + 8)) * PAGE_SIZE
            };
            let new_addr = self.move_target(pi, old_addr, old_len, new_len);
            let new_len = Self::fit(new_addr, new_len);
            self.apply_move(pi, old_addr, old_len, new_addr, new_len, false);
            Call::Mremap { old_addr, old_len, new_len, flags: MREMAP_MAYMOVE | MREMAP_FIXED, new_addr }
        } else if x < 72 {
            // Multi-VMA move: several adjacent mappings, same length, FIXED.
            let (s, e) = match self.random_region(pi) {
                Some(r) => self.adjacent_run(pi, r),
                None => (old_addr, old_addr + old_len),
            };
            let len = e - s;
            let new_addr = self.move_target(pi, s, len, len);
            let len = Self::fit(new_addr, len);
            self.apply_move(pi, s, len, new_addr, len, false);
            let flags = MREMAP_MAYMOVE | MREMAP_FIXED;
            Call::Mremap { old_addr: s, old_len: len, new_len: len, flags, new_addr }
        } else if x < 86 {
            // MAYMOVE|FIXED|DONTUNMAP, same size.
            let new_addr = self.move_target(pi, old_addr, old_len, old_len);
            let len = Self::fit(new_addr, old_len);
            self.apply_move(pi, old_addr, len, new_addr, len, true);
            let flags = MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP;
            Call::Mremap { old_addr, old_len: len, new_len: len, flags, new_addr }
        } else {
            // MAYMOVE|DONTUNMAP with a hint, same size.
            let new_addr = match self.free_near(pi, old_len) {
                Some(a) => a,
                None => self.move_target(pi, old_addr, old_len, old_len),
            };
            let len = Self::fit(new_addr, old_len);
            if self.procs[pi].is_free(new_addr, new_addr + len) {
                self.apply_move(pi, old_addr, len, new_addr, len, true);
            }
            let flags = MREMAP_MAYMOVE | MREMAP_DONTUNMAP;
            Call::Mremap { old_addr, old_len: len, new_len: len, flags, new_addr }
        };
        self.emit(pid, call, None);
    }

    /// A destination for a move: near other mappings, not overlapping the source (mostly).
    fn move_target(&mut self, pi: usize, old_addr: u64, old_len: u64, new_len: u64) -> u64 {
        for _ in 0..8 {
            let a = if self.chance(0.5) {
                match self.free_near(pi, new_len) {
                    Some(a) => a,
                    None => self.pick_addr(pi),
                }
            } else {
                self.pick_addr(pi)
            };
            let a = if self.cfg.thp && old_addr.is_multiple_of(PMD_SIZE) && self.chance(0.3) {
                Self::clamp_addr(a & !(PMD_SIZE - 1))
            } else {
                a
            };
            let overlaps = a < old_addr + old_len && old_addr < a + new_len;
            if !overlaps && a + new_len <= ARENA_END {
                return a;
            }
        }
        // Fall back to a spot past the source.
        Self::clamp_addr(old_addr + old_len + PAGE_SIZE)
    }

    /// Record a successful-looking move in the coarse map.
    fn apply_move(&mut self, pi: usize, old: u64, old_len: u64, new: u64, new_len: u64, dontunmap: bool) {
        let p = &mut self.procs[pi];
        let src = p.clipped(old, old + old_len.min(new_len));
        if src.is_empty() {
            return;
        }
        let kind = src[src.len() - 1].kind;
        if !dontunmap {
            p.unmap(old, old + old_len);
        }
        p.unmap(new, new + new_len);
        for r in src {
            p.map(r.start - old + new, r.end - old + new, r.kind);
        }
        if new_len > old_len {
            p.map(new + old_len, new + new_len, kind);
        }
    }

    fn mremap_invalid(&mut self, pi: usize, old_addr: u64, old_len: u64) -> Call {
        match self.rng.random_range(0..7) {
            0 => {
                // Unaligned old address.
                let flags = self.pick(&[0, MREMAP_MAYMOVE]);
                let new_len = old_len + PAGE_SIZE;
                Call::Mremap { old_addr: old_addr + 0x80, old_len, new_len, flags, new_addr: 0 }
            }
            1 => {
                // Overlapping source and destination.
                let half = (old_len / 2) & !(PAGE_SIZE - 1);
                let new_addr = if old_addr + half + old_len <= ARENA_END {
                    old_addr + half
                } else {
                    Self::clamp_addr(old_addr.saturating_sub(half))
                };
                let flags = MREMAP_MAYMOVE | MREMAP_FIXED;
                Call::Mremap { old_addr, old_len, new_len: old_len, flags, new_addr }
            }
            2 => {
                // New length 0.
                let flags = self.pick(&[0, MREMAP_MAYMOVE]);
                Call::Mremap { old_addr, old_len, new_len: 0, flags, new_addr: 0 }
            }
            3 => {
                // Old length 0: duplicates a shared mapping, EINVAL for a private one.
                let new_len = self.rng.random_range(1..=8) * PAGE_SIZE;
                let new_addr = self.move_target(pi, old_addr, PAGE_SIZE, new_len);
                let flags = MREMAP_MAYMOVE | MREMAP_FIXED;
                Call::Mremap { old_addr, old_len: 0, new_len, flags, new_addr }
            }
            4 => {
                // FIXED without MAYMOVE.
                let new_addr = self.move_target(pi, old_addr, old_len, old_len);
                Call::Mremap { old_addr, old_len, new_len: old_len, flags: MREMAP_FIXED, new_addr }
            }
            5 => {
                // DONTUNMAP with a size change.
                let new_addr = self.move_target(pi, old_addr, old_len, old_len + PAGE_SIZE);
                let flags = MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP;
                Call::Mremap { old_addr, old_len, new_len: old_len + PAGE_SIZE, flags, new_addr }
            }
            _ => {
                // Unaligned new address.
                let new_addr = self.move_target(pi, old_addr, old_len, old_len) + 0x200;
                let flags = MREMAP_MAYMOVE | MREMAP_FIXED;
                Call::Mremap { old_addr, old_len, new_len: old_len, flags, new_addr }
            }
        }
    }
}

// ---- rendering ------------------------------------------------------------------------------

/// A call in strace syntax, without pid and result (the parser's formatter).
pub fn render(call: &Call) -> String {
    crate::format_call(call)
}

/// The script as text in the language: a header comment (the script's `path`, which for a
/// generated script holds the seed and config), then one `PID call` line per step, with
/// `= N` after a `fork` and no result elsewhere.
pub fn write_script(script: &Script) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# anonmm generated script");
    for l in script.path.lines() {
        let _ = writeln!(out, "# {l}");
    }
    let _ = writeln!(out, "# {} steps", script.steps.len());
    for s in &script.steps {
        let _ = write!(out, "{} {}", s.pid, render(&s.call));
        if let (true, Some(Expect::Value(v))) = (s.call.makes_task(), s.expect) {
            let _ = write!(out, " = {v}");
        }
        out.push('\n');
    }
    out
}

// ---- well-formedness ------------------------------------------------------------------------

/// Check that pids are used only while alive: pid 1 exists from the start, every other pid
/// only after the `fork` that creates it (whose expectation names it) and not after its
/// `exit_group`; a fork's child pid is fresh.
pub fn check_well_formed(script: &Script) -> Result<(), String> {
    let mut alive: BTreeSet<u32> = BTreeSet::from([1]);
    let mut seen: BTreeSet<u32> = BTreeSet::from([1]);
    for (i, s) in script.steps.iter().enumerate() {
        let pid = s.pid.0;
        if !alive.contains(&pid) {
            return Err(format!("line {}: pid {pid} is not alive: {}", s.line, s.text));
        }
        if let Some(c) = asleep_in_vfork(&script.steps[..i], pid) {
            return Err(format!("line {}: pid {pid} is asleep in vfork until {c} execs or exits", s.line));
        }
        match (&s.call, s.expect) {
            (c, Some(Expect::Value(v))) if c.makes_task() => {
                let c = u32::try_from(v).map_err(|_| format!("line {}: bad child pid", s.line))?;
                if !seen.insert(c) {
                    return Err(format!("line {}: child pid {c} is not fresh", s.line));
                }
                alive.insert(c);
            }
            // A clone may be one the kernel refuses (no child); a fork always makes one.
            (Call::Fork { .. }, _) => {
                return Err(format!("line {}: fork without a child pid", s.line));
            }
            (Call::ExitGroup { .. }, _) => {
                alive.remove(&pid);
            }
            _ => {}
        }
    }
    Ok(())
}

/// The child `pid` waits for, if `pid` is asleep in a vfork after `steps`: its last vfork's
/// child has not exec'd or exited yet.
fn asleep_in_vfork(steps: &[Step], pid: u32) -> Option<u32> {
    let (i, st) = steps.iter().enumerate().rev().find(|(_, st)| st.pid.0 == pid)?;
    let (Call::Fork { vfork: true }, Some(Expect::Value(c))) = (&st.call, st.expect) else { return None };
    let child = u32::try_from(c).ok()?;
    let woken = steps[i + 1..]
        .iter()
        .any(|st| st.pid.0 == child && matches!(st.call, Call::ExitGroup { .. } | Call::Execve { .. }));
    (!woken).then_some(child)
}

// ---- shrinking ------------------------------------------------------------------------------

/// Options for [`shrink_with`].
#[derive(Clone, Debug)]
pub struct ShrinkOptions {
    /// Most calls of the predicate.
    pub max_calls: usize,
    /// A step (by its `line`) never to remove, e.g. the one that diverged.
    pub keep_line: Option<usize>,
}

impl Default for ShrinkOptions {
    fn default() -> Self {
        ShrinkOptions { max_calls: 2000, keep_line: None }
    }
}

/// Minimise `script` while `still_fails` holds, with at most 2000 predicate calls.
pub fn shrink(script: &Script, still_fails: &mut dyn FnMut(&Script) -> bool) -> Script {
    shrink_with(script, still_fails, &ShrinkOptions::default())
}

struct Shrinker<'a> {
    still_fails: &'a mut dyn FnMut(&Script) -> bool,
    calls: usize,
    max_calls: usize,
    keep_line: Option<usize>,
}

impl Shrinker<'_> {
    fn budget_left(&self) -> bool {
        self.calls < self.max_calls
    }

    fn test(&mut self, s: &Script) -> bool {
        if !self.budget_left() {
            return false;
        }
        self.calls += 1;
        (self.still_fails)(s)
    }

    /// The script without the steps in `[from, to)` and without the steps of every process
    /// those steps fork (and their descendants). None if that would remove the kept step or
    /// nothing.
    fn without(&self, s: &Script, from: usize, to: usize) -> Option<Script> {
        let mut dead: BTreeSet<u32> = BTreeSet::new();
        let mut steps = Vec::with_capacity(s.steps.len());
        for (i, st) in s.steps.iter().enumerate() {
            let remove = (from..to).contains(&i) || dead.contains(&st.pid.0);
            if remove {
                if Some(st.line) == self.keep_line {
                    return None;
                }
                if let (true, Some(Expect::Value(c))) = (st.call.makes_task(), st.expect) {
                    dead.insert(u32::try_from(c).unwrap_or(u32::MAX));
                }
            } else {
                steps.push(st.clone());
            }
        }
        if steps.len() == s.steps.len() {
            return None;
        }
        // A parent asleep in vfork makes no calls: its child's exit or exec stays.
        if steps.iter().enumerate().any(|(i, st)| asleep_in_vfork(&steps[..i], st.pid.0).is_some()) {
            return None;
        }
        Some(Script { skipped: Vec::new(), path: s.path.clone(), steps })
    }

    /// Delta debugging over chunks of steps: halves, quarters, … single steps.
    fn remove_chunks(&mut self, mut cur: Script, start_chunk: usize) -> (Script, bool) {
        let mut progress = false;
        let mut chunk = start_chunk.max(1);
        loop {
            let mut changed = false;
            let mut i = 0;
            while i < cur.steps.len() && self.budget_left() {
                let to = (i + chunk).min(cur.steps.len());
                if let Some(cand) = self.without(&cur, i, to)
                    && self.test(&cand)
                {
                    cur = cand;
                    changed = true;
                    progress = true;
                    continue; // same i: the next chunk slid into place
                }
                i += chunk;
            }
            if !self.budget_left() {
                break;
            }
            if chunk == 1 {
                if !changed {
                    break;
                }
            } else if !changed || chunk > cur.steps.len() {
                chunk = (chunk / 2).max(1);
            }
            if cur.steps.is_empty() {
                break;
            }
        }
        (cur, progress)
    }

    /// Simplify arguments step by step, keeping each change that still fails.
    fn simplify(&mut self, mut cur: Script) -> (Script, bool) {
        let mut progress = false;
        for i in (0..cur.steps.len()).rev() {
            let mut again = true;
            while again && self.budget_left() {
                again = false;
                for c in simpler_calls(&cur.steps[i].call) {
                    let mut cand = cur.clone();
                    cand.steps[i].text = render(&c);
                    cand.steps[i].call = c;
                    if self.test(&cand) {
                        cur = cand;
                        progress = true;
                        again = true;
                        break;
                    }
                }
            }
        }
        (cur, progress)
    }
}

/// [`shrink`] with options: a bound on predicate calls and a step that must stay.
pub fn shrink_with(
    script: &Script,
    still_fails: &mut dyn FnMut(&Script) -> bool,
    opts: &ShrinkOptions,
) -> Script {
    let mut sh = Shrinker { still_fails, calls: 0, max_calls: opts.max_calls, keep_line: opts.keep_line };
    let mut cur = script.clone();
    let (c, _) = sh.remove_chunks(cur, script.steps.len().div_ceil(2));
    cur = c;
    while sh.budget_left() {
        let (c, simplified) = sh.simplify(cur);
        cur = c;
        if !simplified {
            break;
        }
        let (c, removed) = sh.remove_chunks(cur, 1);
        cur = c;
        if !removed {
            break;
        }
    }
    if !cur.path.ends_with(" shrunk") {
        cur.path.push_str(" shrunk");
    }
    cur
}

/// Lengths to try instead of `len`: one page, then half.
fn shorter(len: u64) -> Vec<u64> {
    let mut v = Vec::new();
    if len > PAGE_SIZE {
        v.push(PAGE_SIZE);
        let half = (len / 2) & !(PAGE_SIZE - 1);
        if half > PAGE_SIZE {
            v.push(half);
        }
    }
    v
}

/// The set bits of `x`, one by one.
fn bits(x: u64) -> impl Iterator<Item = u64> {
    (0..64).map(|b| 1u64 << b).filter(move |b| x & b != 0)
}

/// Simpler variants of a call, most aggressive first: shorter lengths, fewer flag bits, a
/// zero file offset, a read instead of a write.
fn simpler_calls(call: &Call) -> Vec<Call> {
    let mut out = Vec::new();
    let mut variant = |f: &dyn Fn(&mut Call)| {
        let mut c = call.clone();
        f(&mut c);
        out.push(c);
    };
    match *call {
        Call::Mmap { len, prot, flags, off, .. } => {
            for l in shorter(len) {
                variant(&|c| {
                    if let Call::Mmap { len, .. } = c {
                        *len = l
                    }
                });
            }
            if off != 0 {
                variant(&|c| {
                    if let Call::Mmap { off, .. } = c {
                        *off = 0
                    }
                });
            }
            for b in [MAP_NORESERVE, MAP_POPULATE, MAP_LOCKED] {
                if flags & b != 0 {
                    variant(&|c| {
                        if let Call::Mmap { flags, .. } = c {
                            *flags &= !b
                        }
                    });
                }
            }
            if flags & MAP_FIXED_NOREPLACE != 0 {
                let f = (flags & !MAP_FIXED_NOREPLACE) | MAP_FIXED;
                variant(&|c| {
                    if let Call::Mmap { flags, .. } = c {
                        *flags = f
                    }
                });
            }
            if flags & MAP_TYPE == MAP_SHARED && flags & MAP_ANONYMOUS != 0 {
                let f = (flags & !MAP_TYPE) | MAP_PRIVATE;
                variant(&|c| {
                    if let Call::Mmap { flags, .. } = c {
                        *flags = f
                    }
                });
            }
            for b in bits(prot) {
                variant(&|c| {
                    if let Call::Mmap { prot, .. } = c {
                        *prot &= !b
                    }
                });
            }
        }
        Call::Munmap { len, .. }
        | Call::Madvise { len, .. }
        | Call::SetVmaAnonName { len, .. }
        | Call::Ftruncate { len, .. } => {
            for l in shorter(len) {
                variant(&|c| match c {
                    Call::Munmap { len, .. }
                    | Call::Madvise { len, .. }
                    | Call::SetVmaAnonName { len, .. }
                    | Call::Ftruncate { len, .. } => *len = l,
                    _ => {}
                });
            }
        }
        Call::Mprotect { len, prot, .. } => {
            for l in shorter(len) {
                variant(&|c| {
                    if let Call::Mprotect { len, .. } = c {
                        *len = l
                    }
                });
            }
            for b in bits(prot) {
                variant(&|c| {
                    if let Call::Mprotect { prot, .. } = c {
                        *prot &= !b
                    }
                });
            }
        }
        Call::UffdioMove { len, mode, .. } => {
            for l in shorter(len) {
                variant(&|c| {
                    if let Call::UffdioMove { len, .. } = c {
                        *len = l
                    }
                });
            }
            if mode != 0 {
                variant(&|c| {
                    if let Call::UffdioMove { mode, .. } = c {
                        *mode = 0
                    }
                });
            }
        }
        Call::UffdRegister { len, .. } | Call::UffdUnregister { len, .. } => {
            for l in shorter(len) {
                variant(&|c| {
                    if let Call::UffdRegister { len, .. } | Call::UffdUnregister { len, .. } = c {
                        *len = l
                    }
                });
            }
        }
        Call::Touch { len, write, .. } => {
            for l in shorter(len) {
                variant(&|c| {
                    if let Call::Touch { len, .. } = c {
                        *len = l
                    }
                });
            }
            if write {
                variant(&|c| {
                    if let Call::Touch { write, .. } = c {
                        *write = false
                    }
                });
            }
        }
        Call::Mremap { old_len, new_len, flags, .. } => {
            let set = |ol: u64, nl: u64, f: u64| {
                move |c: &mut Call| {
                    if let Call::Mremap { old_len, new_len, flags, new_addr, .. } = c {
                        *old_len = ol;
                        *new_len = nl;
                        *flags = f;
                        // strace shows new_addr only with FIXED or DONTUNMAP.
                        if f & (MREMAP_FIXED | MREMAP_DONTUNMAP) == 0 {
                            *new_addr = 0;
                        }
                    }
                }
            };
            if old_len == new_len {
                for l in shorter(old_len) {
                    variant(&set(l, l, flags));
                }
            }
            for l in shorter(old_len) {
                variant(&set(l, new_len, flags));
            }
            for l in shorter(new_len) {
                variant(&set(old_len, l, flags));
            }
            if new_len != old_len {
                variant(&set(old_len, old_len, flags));
            }
            for b in [MREMAP_DONTUNMAP, MREMAP_FIXED, MREMAP_MAYMOVE] {
                if flags & b != 0 {
                    variant(&set(old_len, new_len, flags & !b));
                }
            }
        }
        Call::Mlock { len, flags, .. } => {
            for l in shorter(len) {
                variant(&|c| {
                    if let Call::Mlock { len, .. } = c {
                        *len = l
                    }
                });
            }
            if flags.is_some() {
                variant(&|c| {
                    if let Call::Mlock { flags, .. } = c {
                        *flags = None
                    }
                });
            }
        }
        Call::Munlock { len, .. } => {
            for l in shorter(len) {
                variant(&|c| {
                    if let Call::Munlock { len, .. } = c {
                        *len = l
                    }
                });
            }
        }
        Call::Mlockall { flags } => {
            for b in bits(flags) {
                variant(&|c| {
                    if let Call::Mlockall { flags } = c {
                        *flags &= !b
                    }
                });
            }
        }
        _ => {}
    }
    out.retain(|c| c != call);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arg_addrs(c: &Call) -> Vec<(u64, u64)> {
        match c {
            Call::Mmap { addr, len, .. }
            | Call::Munmap { addr, len }
            | Call::Mprotect { addr, len, .. }
            | Call::Madvise { addr, len, .. }
            | Call::SetVmaAnonName { addr, len, .. }
            | Call::Touch { addr, len, .. }
            | Call::Pin { addr, len }
            | Call::Unpin { addr, len }
            | Call::Migrate { addr, len }
            | Call::MigrateDone { addr, len }
            | Call::Mlock { addr, len, .. }
            | Call::Munlock { addr, len } => vec![(*addr, *len)],
            Call::UffdRegister { addr, len, .. } | Call::UffdUnregister { addr, len } => vec![(*addr, *len)],
            Call::UffdioMove { dst, src, len, .. } => vec![(*dst, *len), (*src, *len)],
            Call::Mremap { old_addr, old_len, new_len, flags, new_addr } => {
                let mut v = vec![(*old_addr, *old_len)];
                if flags & (MREMAP_FIXED | MREMAP_DONTUNMAP) != 0 {
                    v.push((*new_addr, *new_len));
                }
                v
            }
            _ => vec![],
        }
    }

    #[test]
    fn deterministic() {
        let cfg = GenConfig::default();
        for seed in [0, 1, 42, u64::MAX] {
            let a = write_script(&generate(seed, &cfg));
            let b = write_script(&generate(seed, &cfg));
            assert_eq!(a, b);
        }
        assert_ne!(write_script(&generate(1, &cfg)), write_script(&generate(2, &cfg)));
    }

    #[test]
    fn well_formed_200_seeds() {
        let cfgs = [
            GenConfig::default(),
            GenConfig { max_procs: 1, files: false, thp: false, shared: false, ..GenConfig::default() },
            GenConfig { max_procs: 8, invalid: false, ..GenConfig::default() },
        ];
        for (ci, cfg) in cfgs.iter().enumerate() {
            for seed in 0..200u64 {
                let s = generate(seed, &GenConfig { steps: 300, ..cfg.clone() });
                assert_eq!(s.steps.len(), 300);
                if let Err(e) = check_well_formed(&s) {
                    panic!("cfg {ci} seed {seed}: {e}\n{}", write_script(&s));
                }
                let mut next_child = 2;
                let mut alive = 1usize;
                for st in &s.steps {
                    assert_eq!(st.text, render(&st.call));
                    match (&st.call, st.expect) {
                        (call, Some(Expect::Value(c))) if call.makes_task() => {
                            assert_eq!(c, next_child, "children numbered in creation order");
                            next_child += 1;
                            alive += 1;
                            assert!(alive <= cfg.max_procs);
                        }
                        (Call::ExitGroup { .. }, e) => {
                            assert_ne!(st.pid.0, 1);
                            assert!(e.is_none());
                            alive -= 1;
                        }
                        (_, e) => assert!(e.is_none()),
                    }
                    for (a, l) in arg_addrs(&st.call) {
                        assert!((ARENA_BASE..ARENA_END).contains(&a), "seed {seed}: {}", st.text);
                        assert!(a + l <= ARENA_END + PAGE_SIZE, "seed {seed}: {}", st.text);
                    }
                    if !cfg.files {
                        assert!(!matches!(st.call, Call::Openat { .. } | Call::Close { .. }));
                    }
                }
            }
        }
    }

    #[test]
    fn migrate_only_when_weighted() {
        let is_mig = |c: &Call| matches!(c, Call::Migrate { .. } | Call::MigrateDone { .. });
        for seed in 0..20 {
            assert!(!generate(seed, &GenConfig::default()).steps.iter().any(|st| is_mig(&st.call)));
        }
        let cfg =
            GenConfig { weights: Weights { migrate: 10, ..Weights::default() }, ..GenConfig::default() };
        let mut names = BTreeSet::new();
        for seed in 0..5 {
            let s = generate(seed, &cfg);
            check_well_formed(&s).unwrap();
            names.extend(s.steps.iter().filter(|st| is_mig(&st.call)).map(|st| st.call.name()));
        }
        assert_eq!(names, BTreeSet::from(["migrate", "migrate_done"]));
    }

    #[test]
    fn operation_mix() {
        let cfg = GenConfig::default();
        let mut names: BTreeMap<String, usize> = BTreeMap::new();
        let mut mremap_flags: BTreeSet<u64> = BTreeSet::new();
        let mut advices: BTreeSet<u64> = BTreeSet::new();
        for seed in 0..50 {
            for st in generate(seed, &cfg).steps {
                *names.entry(st.call.name().to_string()).or_default() += 1;
                match st.call {
                    Call::Mremap { flags, .. } => {
                        mremap_flags.insert(flags);
                    }
                    Call::Madvise { advice, .. } => {
                        advices.insert(advice);
                    }
                    _ => {}
                }
            }
        }
        for n in [
            "mmap",
            "munmap",
            "mprotect",
            "madvise",
            "mremap",
            "prctl",
            "fork",
            "exit_group",
            "touch",
            "openat",
            "ftruncate",
            "close",
            "pin",
            "unpin",
            "uffd_register",
            "uffd_unregister",
            "uffdio_move",
            "clone",
            "dup",
            "dup2",
            "mlock",
            "mlock2",
            "munlock",
            "mlockall",
            "munlockall",
        ] {
            assert!(names.get(n).copied().unwrap_or(0) > 0, "no {n}: {names:?}");
        }
        for f in [
            0,
            MREMAP_MAYMOVE,
            MREMAP_MAYMOVE | MREMAP_FIXED,
            MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP,
            MREMAP_MAYMOVE | MREMAP_DONTUNMAP,
            MREMAP_FIXED,
        ] {
            assert!(mremap_flags.contains(&f), "mremap flags {f:#x} never generated");
        }
        assert_eq!(advices.len(), 25, "{advices:?}");
        for a in [MADV_POPULATE_READ, MADV_POPULATE_WRITE, MADV_REMOVE, MADV_WILLNEED] {
            assert!(advices.contains(&a), "advice {a} never generated: {advices:?}");
        }
    }

    #[test]
    fn render_examples() {
        let c = Call::Mmap {
            addr: 0x2000_0000_0000,
            len: 16384,
            prot: PROT_READ | PROT_WRITE,
            flags: MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
            fd: -1,
            off: 0,
        };
        assert_eq!(
            render(&c),
            "mmap(0x200000000000, 16384, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED_NOREPLACE, -1, 0)"
        );
        let c = Call::Openat { dirfd: AT_FDCWD, path: "f1".into(), flags: O_RDWR | O_CREAT, mode: 0o600 };
        assert_eq!(render(&c), "openat(AT_FDCWD, \"f1\", O_RDWR|O_CREAT, 0600)");
        let c = Call::Mremap {
            old_addr: 0x2000_0000_0000,
            old_len: 8192,
            new_len: 4096,
            flags: MREMAP_MAYMOVE | MREMAP_FIXED,
            new_addr: 0x2000_0010_0000,
        };
        assert_eq!(
            render(&c),
            "mremap(0x200000000000, 8192, 4096, MREMAP_MAYMOVE|MREMAP_FIXED, 0x200000100000)"
        );
        let c =
            Call::Mremap { old_addr: 0x2000_0000_0000, old_len: 8192, new_len: 4096, flags: 0, new_addr: 0 };
        assert_eq!(render(&c), "mremap(0x200000000000, 8192, 4096, 0)");
        let c = Call::SetVmaAnonName { addr: 0x2000_0000_0000, len: 4096, name: None };
        assert_eq!(render(&c), "prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, 0x200000000000, 4096, NULL)");
        let c = Call::Madvise { addr: 0x2000_0000_0000, len: 4096, advice: MADV_NORMAL };
        assert_eq!(render(&c), "madvise(0x200000000000, 4096, MADV_NORMAL)");
        assert_eq!(
            render(&Call::Touch { addr: 0x2000_0000_0000, len: 4096, write: true }),
            "touch(0x200000000000, 4096, \"w\")"
        );
    }

    #[test]
    fn write_script_format() {
        let s = generate(7, &GenConfig { steps: 40, ..GenConfig::default() });
        let text = write_script(&s);
        assert!(text.starts_with("# anonmm generated script\n# gen:seed=7 steps=40 "));
        let body: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(body.len(), 40);
        for (l, st) in body.iter().zip(&s.steps) {
            let expected = match st.expect {
                Some(Expect::Value(v)) => format!("{} {} = {v}", st.pid, st.text),
                _ => format!("{} {}", st.pid, st.text),
            };
            assert_eq!(*l, expected);
        }
    }

    fn dontunmap_after_fork(s: &Script) -> bool {
        let mut forked = false;
        for st in &s.steps {
            match st.call {
                Call::Fork { .. } => forked = true,
                Call::Mremap { flags, .. } if forked && flags & MREMAP_DONTUNMAP != 0 => {
                    return true;
                }
                _ => {}
            }
        }
        false
    }

    #[test]
    fn shrink_synthetic() {
        let cfg = GenConfig::default();
        let mut found = 0;
        for seed in 0..40 {
            let s = generate(seed, &cfg);
            if !dontunmap_after_fork(&s) {
                continue;
            }
            found += 1;
            let mut calls = 0;
            let mut pred = |x: &Script| {
                calls += 1;
                check_well_formed(x).is_ok() && dontunmap_after_fork(x)
            };
            let small = shrink(&s, &mut pred);
            assert!(calls <= 2000);
            assert!(dontunmap_after_fork(&small), "seed {seed}");
            assert!(check_well_formed(&small).is_ok(), "seed {seed}");
            // The mremap and the forks that make its process: a chain of forks stays whole,
            // and so does the exit or exec that wakes a vfork's parent before it runs again.
            let forks = small.steps.iter().filter(|st| st.call.makes_task()).count();
            let wakes = small
                .steps
                .iter()
                .filter(|st| matches!(st.call, Call::ExitGroup { .. } | Call::Execve { .. }))
                .count();
            assert!(
                small.steps.len() <= 4 + wakes && small.steps.len() == forks + wakes + 1,
                "seed {seed}:\n{}",
                write_script(&small)
            );
            // The remaining mremap was simplified to one page.
            for st in &small.steps {
                if let Call::Mremap { old_len, .. } = st.call {
                    assert_eq!(old_len, PAGE_SIZE, "{}", st.text);
                }
                assert_eq!(st.text, render(&st.call));
            }
        }
        assert!(found >= 10, "only {found} seeds had the property");
    }

    #[test]
    fn shrink_keeps_child_steps_consistent() {
        // Predicate: some step of a child process touches memory. Removing the fork must take
        // the child's steps along, so the result is a fork and one child step.
        let cfg = GenConfig { max_procs: 4, ..GenConfig::default() };
        let s = (0..50)
            .map(|seed| generate(seed, &cfg))
            .find(|s| s.steps.iter().any(|st| st.pid.0 != 1 && matches!(st.call, Call::Touch { .. })))
            .expect("a script with a child touch");
        let mut pred = |x: &Script| {
            assert!(check_well_formed(x).is_ok(), "shrink produced an ill-formed script");
            x.steps.iter().any(|st| st.pid.0 != 1 && matches!(st.call, Call::Touch { .. }))
        };
        let small = shrink(&s, &mut pred);
        assert!(small.steps.len() <= 3, "{}", write_script(&small));
    }

    #[test]
    fn shrink_respects_budget_and_keep() {
        let s = generate(3, &GenConfig::default());
        let keep = s.steps[150].line;
        let mut calls = 0;
        let mut pred = |x: &Script| {
            calls += 1;
            x.steps.iter().any(|st| st.line == keep)
        };
        let opts = ShrinkOptions { max_calls: 50, keep_line: Some(keep) };
        let small = shrink_with(&s, &mut pred, &opts);
        assert!(calls <= 50);
        assert!(small.steps.iter().any(|st| st.line == keep));
        let mut pred = |x: &Script| x.steps.iter().any(|st| st.line == keep);
        let opts = ShrinkOptions { max_calls: 2000, keep_line: Some(keep) };
        let small = shrink_with(&s, &mut pred, &opts);
        assert!(check_well_formed(&small).is_ok());
        // The kept step, plus the forks and clones that create its process (and the one whose
        // child a fork in a clone's child needs).
        let forks = small
            .steps
            .iter()
            .filter(|st| matches!(st.call, Call::Fork { .. } | Call::CloneVm { .. }))
            .count();
        assert_eq!(small.steps.len(), forks + 1, "{}", write_script(&small));
    }
}
