//! The machine and its address spaces: `struct mm_struct` with its VMA tree (the maple tree,
//! here an ordered map keyed by start), processes, and the VMA tree primitives of mm/vma.c
//! (`find_vma`, `vma_link`, `__split_vma`, `vma_set_range`, `remove_vma`).

use std::collections::BTreeMap;

use crate::arena::{Arena, arena_id};
use crate::errno::{Errno, KResult};
use crate::folio::{Folio, HUGE_ZERO_FOLIO, Mapping, ZERO_FOLIO};
use crate::fs::{FileId, Fs};
use crate::pagetable::PageTable;
use crate::types::{DEFAULT_MAX_MAP_COUNT, HPAGE_PMD_ORDER, PMD_SIZE, PgOff, Pid, TASK_SIZE, VirtAddr};
use crate::vma::{VmFlags, Vma, VmaChain, VmaId};
use crate::vma_tree::VmaTree;

arena_id!(
    /// An address space.
    MmId
);

/// Transparent huge page mode (`/sys/kernel/mm/transparent_hugepage/enabled`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ThpMode {
    /// `always`: THPs in every anonymous VMA that allows them (not `VM_NOHUGEPAGE`).
    Always,
    /// `madvise`: THPs only in VMAs with `VM_HUGEPAGE` (`MADV_HUGEPAGE`).
    Madvise,
    /// `never`: no THPs.
    Never,
}

pub use crate::types::DEFAULT_START_BRK;

/// Settings of the modelled machine. Defaults are those of our Linux 6.18 machines.
#[derive(Clone, Debug)]
pub struct Config {
    /// `vm.max_map_count`.
    pub max_map_count: usize,
    /// `transparent_hugepage/enabled`.
    pub thp: ThpMode,
    /// `transparent_hugepage/use_zero_page`.
    pub thp_use_zero_page: bool,
    /// Where brk starts in a fresh address space.
    pub initial_brk: VirtAddr,
    /// CONFIG_ANON_VMA_NAME (off on our machines: PR_SET_VMA_ANON_NAME gives EINVAL).
    pub anon_vma_name: bool,
    /// CONFIG_MEM_SOFT_DIRTY (off on our machines: VM_SOFTDIRTY is never set).
    pub soft_dirty: bool,
    /// Read-ahead window of regular files in pages (`read_ahead_kb` 8192 on our disks).
    pub readahead_pages: u64,
    /// Slots of the swap device (`swapon` of a swap file; 0: no swap, so MADV_PAGEOUT leaves
    /// anonymous memory in place). The oracle enables a 2 GiB swap file for scripts that page
    /// out, so the default is the same size.
    pub swap_pages: u32,
    /// `totalram_pages()`: MemTotal of our machines, for heuristic overcommit.
    pub ram_pages: u64,
    /// x86 protection keys in use (`X86_FEATURE_OSPKE`): a `PROT_EXEC`-only mapping gets the
    /// execute-only pkey, and reading it faults (SIGSEGV). Read from /proc/cpuinfo.
    pub pku: bool,
    /// Which kernel the model is (`--kernel`); its [`Profile`](crate::kernel::Profile) says
    /// where it differs from 6.18.
    pub kernel: crate::kernel::Kernel,
}

/// Whether this machine's CPU has protection keys enabled by the OS (`ospke`).
pub fn host_has_pku() -> bool {
    static PKU: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PKU.get_or_init(|| {
        cfg!(target_arch = "x86_64")
            && std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|s| {
                s.lines().any(|l| l.starts_with("flags") && l.split_whitespace().any(|w| w == "ospke"))
            })
    })
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_map_count: DEFAULT_MAX_MAP_COUNT,
            thp: ThpMode::Madvise,
            thp_use_zero_page: true,
            initial_brk: VirtAddr(DEFAULT_START_BRK),
            anon_vma_name: false,
            soft_dirty: false,
            readahead_pages: 2048,
            swap_pages: crate::swap::DEFAULT_SWAP_PAGES,
            ram_pages: 24_684_084 / 4,
            pku: host_has_pku(),
            kernel: crate::kernel::Kernel::V6_18,
        }
    }
}

/// One VMA in an mm's tree.
#[derive(Clone, Copy, Debug)]
pub struct VmaEntry {
    /// `vm_end` of the VMA (the tree's key is its `vm_start`).
    pub end: u64,
    /// The VMA.
    pub id: VmaId,
}

/// `struct mm_struct`.
#[derive(Clone, Debug)]
pub struct Mm {
    /// The VMA tree, keyed by `vm_start`.
    pub vmas: VmaTree,
    /// The page tables (`mm->pgd`).
    pub pt: PageTable,
    /// `mm->mmap_base` for top-down placement.
    pub mmap_base: VirtAddr,
    /// `mm->start_brk`: where the heap starts.
    pub start_brk: VirtAddr,
    /// `mm->brk`: the current program break.
    pub brk: VirtAddr,
    /// Processes (or threads) using this mm.
    pub users: u32,
    /// `mm->total_vm`: mapped pages.
    pub total_vm: u64,
    /// `mm->locked_vm` in pages (mlock accounting is not modelled: it stays 0).
    pub locked_vm: u64,
    /// Open files of the exec-time mappings, by (device, inode).
    pub exec_files: BTreeMap<(u64, u64), FileId>,
    /// `mm->context.execute_only_pkey`, allocated by the first `PROT_EXEC`-only mapping.
    pub execute_only_pkey: Option<u8>,
    /// `mm->def_flags`: flags every new mapping and brk extension gets (`VM_LOCKED`, and
    /// `VM_LOCKONFAULT`, from `mlockall(MCL_FUTURE)`). A fork child's and an exec's new mm
    /// start without them (`mm_init` keeps only `VM_INIT_DEF_MASK`, `VM_NOHUGEPAGE`).
    pub def_flags: VmFlags,
}

impl Mm {
    /// An empty address space (`mm_alloc`): no VMAs or page tables, the brk at
    /// `cfg.initial_brk`, one user.
    pub fn new(cfg: &Config) -> Mm {
        Mm {
            vmas: VmaTree::new(),
            pt: PageTable::default(),
            mmap_base: mmap_base(),
            start_brk: cfg.initial_brk,
            brk: cfg.initial_brk,
            users: 1,
            total_vm: 0,
            locked_vm: 0,
            exec_files: BTreeMap::new(),
            execute_only_pkey: None,
            def_flags: VmFlags::empty(),
        }
    }
    /// `mm->map_count`.
    pub fn map_count(&self) -> usize {
        self.vmas.len()
    }
    /// `find_vma`: the first VMA ending above `addr`.
    pub fn find_vma(&self, addr: VirtAddr) -> Option<VmaId> {
        match self.vmas.around(addr.0) {
            (Some((_, e)), _) if e.end > addr.0 => Some(e.id),
            (_, next) => next.map(|(_, e)| e.id),
        }
    }
    /// `vma_lookup`: the VMA containing `addr`.
    #[inline]
    pub fn vma_lookup(&self, addr: VirtAddr) -> Option<VmaId> {
        self.vmas.containing(addr.0).map(|(_, e)| e.id)
    }
    /// The VMA starting exactly at `addr`.
    pub fn vma_at_start(&self, addr: VirtAddr) -> Option<VmaId> {
        self.vmas.get(&addr.0).map(|e| e.id)
    }
    /// The last VMA starting below `addr` (`vma_prev` from a position at `addr`).
    pub fn vma_before(&self, addr: VirtAddr) -> Option<VmaId> {
        self.vmas.last_lt(addr.0).map(|(_, e)| e.id)
    }
    /// The first VMA starting at or above `addr`.
    pub fn vma_from(&self, addr: VirtAddr) -> Option<VmaId> {
        self.vmas.first_ge(addr.0).map(|(_, e)| e.id)
    }
    /// VMAs intersecting `[start, end)`, in order.
    pub fn vmas_in(&self, start: VirtAddr, end: VirtAddr) -> Vec<VmaId> {
        let mut out = Vec::new();
        if start >= end {
            return out;
        }
        if let Some((_, e)) = self.vmas.last_lt(start.0)
            && e.end > start.0
        {
            out.push(e.id);
        }
        out.extend(self.vmas.range(start.0..end.0).map(|(_, e)| e.id));
        out
    }
    /// `find_vma_intersection`: whether any VMA intersects `[start, end)` (one tree search,
    /// however many VMAs the range holds).
    pub fn intersects(&self, start: VirtAddr, end: VirtAddr) -> bool {
        if start >= end {
            return false;
        }
        let (le, gt) = self.vmas.around(start.0);
        le.is_some_and(|(_, e)| e.end > start.0) || gt.is_some_and(|(s, _)| s < end.0)
    }
    /// `vma_prev` of the VMA `[start, end)` and the VMA starting at `end`, from one search
    /// (the two lookups of an existing-range merge).
    pub fn vma_neighbours(&self, start: VirtAddr, end: VirtAddr) -> (Option<VmaId>, Option<VmaId>) {
        match self.vmas.with_neighbours(start.0) {
            Some([prev, Some((_, this)), next]) if this.end == end.0 => {
                (prev.map(|(_, e)| e.id), next.filter(|(s, _)| *s == end.0).map(|(_, e)| e.id))
            }
            _ => (self.vma_before(start), self.vma_at_start(end)),
        }
    }
    /// `vma_prev` and `vma_next` from a position at `addr`: the last VMA starting below `addr`
    /// and the first starting at or above it, from one search.
    pub fn vmas_around(&self, addr: VirtAddr) -> (Option<VmaId>, Option<VmaId>) {
        let (prev, next) = self.vmas.around_lt(addr.0);
        (prev.map(|(_, e)| e.id), next.map(|(_, e)| e.id))
    }
}

/// `mmap_base()` for x86_64 without randomisation: the stack rlimit (8 MiB) plus the guard
/// gap is below the 128 MiB minimum gap.
pub fn mmap_base() -> VirtAddr {
    VirtAddr(TASK_SIZE - 128 * 1024 * 1024)
}

/// A process: its address space and file descriptors.
#[derive(Clone, Debug)]
pub struct Process {
    /// `task->mm`.
    pub mm: MmId,
    /// `task->files`: the descriptor table, in [`crate::fs::Fs::tables`] (shared by
    /// threads made with `CLONE_FILES`).
    pub files: crate::fs::FilesId,
    /// `task->tgid`: the thread group, the creator's for a `CLONE_THREAD` child, else the
    /// task's own pid.
    pub tgid: Pid,
}

/// The live processes by pid: a map, read through `Deref`, changed only through its own
/// methods, which forget the pid whose mm [`Procs::mm_of`] last found. A fault runs in
/// `current->mm`; replay faults in one process for long stretches, and looking the pid up
/// in the map was ~25 instructions of a one-page fault's ~300.
#[derive(Clone, Default)]
pub struct Procs {
    map: BTreeMap<Pid, Process>,
    last: std::cell::Cell<Option<(Pid, MmId)>>,
}

impl Procs {
    /// The mm of `pid`, if it lives.
    #[inline]
    pub fn mm_of(&self, pid: Pid) -> Option<MmId> {
        if let Some((p, mm)) = self.last.get()
            && p == pid
        {
            return Some(mm);
        }
        let mm = self.map.get(&pid)?.mm;
        self.last.set(Some((pid, mm)));
        Some(mm)
    }
    /// Add or replace process `pid`.
    pub fn insert(&mut self, pid: Pid, p: Process) -> Option<Process> {
        self.last.set(None);
        self.map.insert(pid, p)
    }
    /// Remove process `pid`.
    pub fn remove(&mut self, pid: &Pid) -> Option<Process> {
        self.last.set(None);
        self.map.remove(pid)
    }
    /// Process `pid`, to change (its mm, on exec).
    pub fn get_mut(&mut self, pid: &Pid) -> Option<&mut Process> {
        self.last.set(None);
        self.map.get_mut(pid)
    }
}

impl std::ops::Deref for Procs {
    type Target = BTreeMap<Pid, Process>;
    fn deref(&self) -> &BTreeMap<Pid, Process> {
        &self.map
    }
}

impl<'a> IntoIterator for &'a Procs {
    type Item = (&'a Pid, &'a Process);
    type IntoIter = std::collections::btree_map::Iter<'a, Pid, Process>;
    fn into_iter(self) -> Self::IntoIter {
        self.map.iter()
    }
}

impl std::fmt::Debug for Procs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.map.fmt(f)
    }
}

/// The address spaces: every `struct mm_struct`, every `struct vm_area_struct` and the
/// processes that own them (kernel/fork.c, mm/mmap.c, mm/vma.c).
#[derive(Clone, Debug, Default)]
pub struct Vm {
    /// Every VMA (`struct vm_area_struct`) of every mm.
    pub vmas: Arena<VmaId, Vma>,
    /// Every address space.
    pub mms: Arena<MmId, Mm>,
    /// The live processes by pid.
    pub procs: Procs,
    /// VMAs without a file (`vma_is_anonymous`) in the VMA arena, kept as VMAs are linked
    /// and freed so that replay can count them after every step without a walk.
    pub vmas_without_file: usize,
}

/// The modelled machine: every process, address space and kernel object, as the state each
/// subsystem owns. A method on a part ([`Vm`], [`crate::rmap::Rmap`],
/// [`crate::folio::FolioStore`], [`crate::swap::SwapDevice`], [`Fs`], [`crate::gup::Gup`],
/// [`crate::uffd::Uffds`], [`crate::stats::Trace`]) touches only that part; a method on
/// `System` may touch all of them.
#[derive(Clone, Debug)]
pub struct System {
    /// The machine's settings.
    pub cfg: Config,
    /// The address spaces: mms, VMAs and processes.
    pub vm: Vm,
    /// The anonymous reverse map: every `struct anon_vma` and `struct anon_vma_chain`.
    pub rmap: crate::rmap::Rmap,
    /// Physical memory: every folio, starting with [`ZERO_FOLIO`] and [`HUGE_ZERO_FOLIO`].
    pub mem: crate::folio::FolioStore,
    /// The file system: inodes, open files and the namespace.
    pub fs: Fs,
    /// The swap device: slot counts, contents and the swap cache.
    pub swap: crate::swap::SwapDevice,
    /// Long-term pins and migrations in flight.
    pub gup: crate::gup::Gup,
    /// Each process's userfaultfd.
    pub uffd: crate::uffd::Uffds,
    /// Counts of the work done and the merge log.
    pub trace: crate::stats::Trace,
    /// Set when a call needed behaviour the model does not have; the runner reports it
    /// instead of a made-up result.
    pub unsupported: Option<String>,
    /// Which design decides what a move does to folios (`--policy`; crate::policy).
    pub policy: crate::policy::Policy,
    /// The policy probe, when on ([`System::probe_policies`]); None costs one branch per
    /// design hook call.
    pub probe: Option<Box<crate::policy::PolicyProbe>>,
}

impl Default for System {
    fn default() -> Self {
        System::new(Config::default())
    }
}

impl System {
    /// A machine with settings `cfg` and no processes.
    pub fn new(cfg: Config) -> System {
        let mut folios = Arena::default();
        let z = folios.alloc(Folio::new(0, Mapping::None, PgOff(0)));
        let hz = folios.alloc(Folio::new(HPAGE_PMD_ORDER, Mapping::None, PgOff(0)));
        debug_assert!(z == ZERO_FOLIO && hz == HUGE_ZERO_FOLIO);
        let swap = crate::swap::SwapDevice::new(cfg.swap_pages);
        System {
            cfg,
            vm: Vm::default(),
            rmap: crate::rmap::Rmap::default(),
            mem: crate::folio::FolioStore { folios, lazyfree_batch: Vec::new() },
            fs: Fs::default(),
            swap,
            gup: crate::gup::Gup::default(),
            uffd: crate::uffd::Uffds::default(),
            trace: crate::stats::Trace::default(),
            unsupported: None,
            policy: crate::policy::Policy::Kernel,
            probe: None,
        }
    }

    /// A new process with an empty address space.
    pub fn spawn(&mut self, pid: Pid) -> KResult<()> {
        if self.vm.procs.contains_key(&pid) {
            return Err(Errno::EEXIST);
        }
        let mm = self.vm.mms.alloc(Mm::new(&self.cfg));
        let files = self.fs.tables.alloc(crate::fs::FdTable {
            fds: BTreeMap::new(),
            stdio: crate::fs::STDIO_ALL,
            users: 1,
        });
        self.vm.procs.insert(pid, Process { mm, files, tgid: pid });
        Ok(())
    }

    /// `vma_set_range` with the rmap tree updates around it and the THP splits that
    /// `vma_adjust_trans_huge` does at new boundaries.
    pub fn vma_set_range(&mut self, vma: VmaId, start: VirtAddr, end: VirtAddr, pgoff: PgOff) {
        let (mm, old_start) = (self.vm.vmas[vma].mm, self.vm.vmas[vma].start);
        self.vma_adjust_trans_huge(mm, start, end);
        self.vm.mms[mm].vmas.rekey(old_start.0, start.0, VmaEntry { end: end.0, id: vma });
        self.vma_set_fields(vma, start, end, pgoff);
    }

    /// [`System::vma_set_range`] of a VMA whose tree entry already says `[start, end)`.
    pub(crate) fn vma_set_range_untreed(&mut self, vma: VmaId, start: VirtAddr, end: VirtAddr, pgoff: PgOff) {
        self.vma_adjust_trans_huge(self.vm.vmas[vma].mm, start, end);
        self.vma_set_fields(vma, start, end, pgoff);
    }

    /// `vma_adjust_trans_huge`: split the PMD-mapped THPs across the new boundaries. Inline:
    /// in an mm without huge leaves it is two tests.
    #[inline]
    fn vma_adjust_trans_huge(&mut self, mm: MmId, start: VirtAddr, end: VirtAddr) {
        for a in [start, end] {
            if a.0 % PMD_SIZE != 0 {
                self.vm.split_huge_pmd(&mut self.mem, &mut self.trace, mm, a);
            }
        }
    }

    /// `vma_set_range`'s part after the tree: the VMA's fields and its chains' place in the
    /// rmap trees.
    fn vma_set_fields(&mut self, vma: VmaId, start: VirtAddr, end: VirtAddr, pgoff: PgOff) {
        let v = &mut self.vm.vmas[vma];
        let old_pgoff = std::mem::replace(&mut v.pgoff, pgoff);
        v.start = start;
        v.end = end;
        // The chains are filed by pgoff alone (the walk checks the end), so only a new pgoff
        // re-files them.
        if old_pgoff != pgoff {
            self.rmap.rmap_refile(&self.vm, vma, old_pgoff.0);
        }
    }

    /// Free a detached VMA: drop its anon_vma links and its file reference (`remove_vma`).
    pub fn vma_free(&mut self, vma: VmaId) {
        self.rmap.unlink_anon_vmas(&mut self.vm, &mut self.trace, vma);
        let file = self.vm.vmas[vma].file;
        self.vm.vmas.release(vma);
        self.vm.vmas_without_file -= usize::from(file.is_none());
        if let Some(f) = file {
            self.fput(f);
        }
    }

    /// `__split_vma(vma, addr, new_below)`: returns the new VMA. Never merges.
    pub fn split_vma_nocheck(&mut self, vma: VmaId, addr: VirtAddr, new_below: bool) -> VmaId {
        // A copy of every field but the chain, which anon_vma_clone builds below.
        let v = &self.vm.vmas[vma];
        let mut new = Vma {
            mm: v.mm,
            start: v.start,
            end: v.end,
            pgoff: v.pgoff,
            flags: v.flags,
            file: v.file,
            anon_vma: v.anon_vma,
            chain: VmaChain::new(),
            anon_name: v.anon_name.clone(),
            special: v.special.clone(),
            uffd: v.uffd,
        };
        let (vstart, vend, vpgoff) = (new.start, new.end, new.pgoff);
        if new_below {
            new.end = addr;
        } else {
            new.start = addr;
            new.pgoff = vpgoff.plus(vstart.pages_to(addr));
        }
        if let Some(f) = new.file {
            self.fs.files[f].refs += 1;
        }
        let mm = new.mm;
        // The original shrinks (vma_set_range) and the new part is linked next to it
        // (vma_iter_store), from one tree search.
        let (start, end, pgoff) =
            if new_below { (addr, vend, vpgoff.plus(vstart.pages_to(addr))) } else { (vstart, addr, vpgoff) };
        self.vma_adjust_trans_huge(mm, start, end);
        let (nstart, nend) = (new.start, new.end);
        let new_id = self.vm.vma_alloc(new);
        self.vm.mms[mm].vmas.split(
            vstart.0,
            (start.0, VmaEntry { end: end.0, id: vma }),
            (nstart.0, VmaEntry { end: nend.0, id: new_id }),
            new_below,
        );
        self.vma_set_fields(vma, start, end, pgoff);
        self.rmap.anon_vma_clone(&mut self.vm, new_id, vma);
        self.trace.stats.splits += 1;
        new_id
    }

    /// `split_vma`: refuses with ENOMEM at the map_count limit.
    pub fn split_vma(&mut self, vma: VmaId, addr: VirtAddr, new_below: bool) -> KResult<VmaId> {
        let mm = self.vm.vmas[vma].mm;
        if self.vm.mms[mm].map_count() >= self.cfg.max_map_count {
            return Err(Errno::ENOMEM);
        }
        Ok(self.split_vma_nocheck(vma, addr, new_below))
    }

    /// Record that the current call needs behaviour the model lacks.
    pub fn not_modelled(&mut self, what: &str) {
        self.unsupported.get_or_insert_with(|| what.to_string());
    }
}

impl Vm {
    /// The other live tasks of `pid`'s thread group (`CLONE_THREAD` siblings).
    pub fn thread_siblings(&self, pid: Pid) -> Vec<Pid> {
        let Some(g) = self.procs.get(&pid).map(|p| p.tgid) else { return Vec::new() };
        self.procs.iter().filter(|&(&q, p)| q != pid && p.tgid == g).map(|(&q, _)| q).collect()
    }

    /// The address space of process `pid`; ESRCH if there is no such process.
    #[inline]
    pub fn mm_of(&self, pid: Pid) -> KResult<MmId> {
        self.procs.mm_of(pid).ok_or(Errno::ESRCH)
    }

    /// Link a new VMA into its mm (`vma_link`): map_count grows by one.
    pub fn vma_link(&mut self, v: Vma) -> VmaId {
        let (mm, start, end) = (v.mm, v.start, v.end);
        let id = self.vma_alloc(v);
        self.mms[mm].vmas.insert(start.0, VmaEntry { end: end.0, id });
        id
    }

    /// `[vm_start, vm_end)` of VMA `id` of `mm`, from the tree's copy when the last
    /// neighbour search handed it out (a merge's neighbours: not reading them spares two
    /// cold cache lines each when they turn out not to touch the range), else from the VMA.
    #[inline]
    pub fn neighbour_range(&self, mm: MmId, id: VmaId) -> (u64, u64) {
        match self.mms[mm].vmas.seen_range(id) {
            Some(r) => r,
            None => (self.vmas[id].start.0, self.vmas[id].end.0),
        }
    }

    /// A new VMA in the arena, not yet in its mm's tree (`vm_area_alloc`).
    #[inline]
    fn vma_alloc(&mut self, v: Vma) -> VmaId {
        self.vmas_without_file += usize::from(v.file.is_none());
        self.vmas.alloc(v)
    }

    /// Take a VMA out of its mm's tree without freeing it (detach).
    pub fn vma_detach(&mut self, vma: VmaId) {
        let (mm, start) = (self.vmas[vma].mm, self.vmas[vma].start);
        let removed = self.mms[mm].vmas.remove(&start.0);
        debug_assert!(removed.is_some_and(|e| e.id == vma));
    }
}
