//! The mlock state of folios (mm/mlock.c, and its callers in mm/rmap.c, mm/swap.c and
//! mm/vmscan.c): `PG_mlocked` and `mlock_count`.
//!
//! A folio is mlocked while a `VM_LOCKED` VMA maps it:
//! - a new folio faulted into a `VM_LOCKED` VMA is mlocked as it goes to the LRU
//!   (`folio_add_lru_vma` → `mlock_new_folio`);
//! - an existing folio that a `VM_LOCKED` VMA maps whole is mlocked by the rmap
//!   (`__folio_add_anon_rmap` / `__folio_add_file_rmap` → `mlock_vma_folio` →
//!   `mlock_folio`: in 6.18 only when the call maps all the folio's pages);
//! - every rmap removal in a `VM_LOCKED` VMA munlocks (`__folio_remove_rmap` →
//!   `munlock_vma_folio` → `munlock_folio`), which clears `PG_mlocked` when the count
//!   runs out.
//!
//! Clearing `VM_LOCKED` without unmapping does not munlock: `dontunmap_complete`
//! (MREMAP_DONTUNMAP) clears it on the whole source VMA, whose other pages stay mlocked,
//! and reclaim (`shrink_folio_list`: `!folio_evictable` → `activate_locked`) keeps them.
//! A fork child's VMA loses `VM_LOCKED`, and `copy_present_pte` adds no mlock.
//!
//! The system calls (`mlock`, `mlock2`, `munlock`, `mlockall`, `munlockall`) set and
//! clear `VM_LOCKED`/`VM_LOCKONFAULT` on VMAs as mm/mlock.c does: `apply_vma_lock_flags`
//! and `apply_mlockall_flags` → `mlock_fixup` (`vma_modify_flags`: merges and splits as
//! mprotect) → `mlock_vma_pages_range` (the page walk that mlocks or munlocks what is
//! mapped), then `__mm_populate`. The caller is taken to have `CAP_IPC_LOCK` (the oracle
//! runs as root), so `RLIMIT_MEMLOCK` never refuses and `mm->locked_vm` is not kept.
//!
//! The kernel batches these per CPU (`mlock_fbatch`) and drains the batch before anything
//! this model observes (`lru_add_drain` in MADV_PAGEOUT, `mlock_drain_local` after
//! migration and unmapping); the model applies each at once, so an mlocked folio is always
//! on the unevictable LRU. What `__mlock_folio` does for a folio off the LRU (isolated by
//! reclaim or migration: only `PG_mlocked` is set, the count is fixed at putback) is not
//! modelled: the model never leaves a folio isolated across an rmap change.

use crate::abi::{MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT, MLOCK_ONFAULT};
use crate::errno::{Errno, KResult};
use crate::folio::{Folio, FolioId, HUGE_ZERO_FOLIO, ZERO_FOLIO};
use crate::merge::MergeCaller;
use crate::mm::{MmId, System};
use crate::pagetable::Pte;
use crate::types::{PAGE_SHIFT, PAGE_SIZE, PMD_SHIFT, Pid, TASK_SIZE, VirtAddr};
use crate::vma::{VmFlags, VmaId};

impl Folio {
    /// `mlock_folio` with the batch drained (`__mlock_folio`): set `PG_mlocked`; a folio
    /// already on the unevictable LRU counts one more mlock, one that moves there starts at
    /// one.
    pub fn mlock(&mut self) {
        self.mlock_deferred = false;
        if self.mlocked {
            self.mlock_count += 1;
        } else {
            self.mlocked = true;
            self.mlock_count = 1;
        }
    }

    /// `mlock_new_folio` with the batch drained (`__mlock_new_folio`): a folio not yet on
    /// any LRU goes to the unevictable one, mlocked once.
    pub fn mlock_new(&mut self) {
        self.mlock_deferred = false;
        self.mlocked = true;
        self.mlock_count = 1;
    }

    /// `munlock_folio` with the batch drained (`__munlock_folio`): an unevictable folio
    /// counts one mlock less and stays mlocked while the count is above zero; at zero (or
    /// already zero: "assume that was the last mlock") `PG_mlocked` is cleared and the folio
    /// goes back to the evictable LRU.
    pub fn munlock(&mut self) {
        if !self.mlocked {
            return;
        }
        if self.mlock_count > 0 {
            self.mlock_count -= 1;
            if self.mlock_count > 0 {
                return;
            }
        }
        self.mlocked = false;
        // A VM_LOCKED VMA may still map it: munlock_vma_folio munlocks on every removal
        // there, counted or not, and "page reclaim will correct it".
        self.mlock_deferred = true;
    }

    /// `folio_putback_lru` → `lru_add` of a folio reclaim could not evict: an mlocked one
    /// goes to the unevictable LRU with `mlock_count = 0`, so the next munlock clears it.
    pub fn putback_unevictable(&mut self) {
        if self.mlocked {
            self.mlock_count = 0;
        }
    }
}

impl System {
    /// mlock(2) (`flags` None) and mlock2(2): `do_mlock` with `VM_LOCKED`, and
    /// `VM_LOCKONFAULT` for `MLOCK_ONFAULT`. The range is widened to whole pages
    /// (`PAGE_ALIGN(len + offset_in_page(start))`, which may wrap to nothing: success),
    /// locked by `apply_vma_lock_flags`, then populated unless on-fault; a populate that
    /// fails reports as POSIX asks (`__mlock_posix_error_return`: EFAULT is ENOMEM).
    pub fn sys_mlock(&mut self, pid: Pid, start: u64, len: u64, flags: Option<u64>) -> KResult<u64> {
        let mm = self.vm.mm_of(pid)?;
        let mut vm_flags = VmFlags::LOCKED;
        if let Some(f) = flags {
            if f & !MLOCK_ONFAULT != 0 {
                return Err(Errno::EINVAL);
            }
            if f & MLOCK_ONFAULT != 0 {
                vm_flags |= VmFlags::LOCKONFAULT;
            }
        }
        let (start, len) = mlock_range(start, len);
        self.apply_vma_lock_flags(mm, start, len, vm_flags)?;
        match self.mm_populate(mm, VirtAddr(start), VirtAddr(start.wrapping_add(len)), false) {
            Err(Errno::EFAULT) => Err(Errno::ENOMEM),
            Err(Errno::ENOMEM) => Err(Errno::EAGAIN),
            Err(e) => Err(e),
            Ok(()) => Ok(0),
        }
    }

    /// munlock(2): `apply_vma_lock_flags` with no lock flags.
    pub fn sys_munlock(&mut self, pid: Pid, start: u64, len: u64) -> KResult<u64> {
        let mm = self.vm.mm_of(pid)?;
        let (start, len) = mlock_range(start, len);
        self.apply_vma_lock_flags(mm, start, len, VmFlags::empty())?;
        Ok(0)
    }

    /// mlockall(2): EINVAL without flags, with unknown ones or with `MCL_ONFAULT` alone;
    /// `apply_mlockall_flags`, then, with `MCL_CURRENT`, `mm_populate(0, TASK_SIZE)`.
    pub fn sys_mlockall(&mut self, pid: Pid, flags: u64) -> KResult<u64> {
        let mm = self.vm.mm_of(pid)?;
        if flags == 0 || flags & !(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) != 0 || flags == MCL_ONFAULT {
            return Err(Errno::EINVAL);
        }
        self.apply_mlockall_flags(mm, flags);
        if flags & MCL_CURRENT != 0 {
            self.populate(mm, VirtAddr(0), VirtAddr(TASK_SIZE));
        }
        Ok(0)
    }

    /// munlockall(2): `apply_mlockall_flags(0)`.
    pub fn sys_munlockall(&mut self, pid: Pid) -> KResult<u64> {
        let mm = self.vm.mm_of(pid)?;
        self.apply_mlockall_flags(mm, 0);
        Ok(0)
    }

    /// `apply_vma_lock_flags`: the VMA holding `start` must exist (else ENOMEM); each VMA of
    /// the range in turn gets `flags` in place of its lock flags (`mlock_fixup`); a gap
    /// before a later VMA or at the end is ENOMEM, the VMAs before it staying changed.
    fn apply_vma_lock_flags(&mut self, mm: MmId, start: u64, len: u64, flags: VmFlags) -> KResult<()> {
        let end = start.wrapping_add(len);
        if end < start {
            return Err(Errno::EINVAL);
        }
        if end == start {
            return Ok(());
        }
        let (start, end) = (VirtAddr(start), VirtAddr(end));
        let Some(mut vma) = self.vm.mms[mm].vma_lookup(start) else { return Err(Errno::ENOMEM) };
        let mut nstart = start;
        let mut tmp = self.vm.vmas[vma].start;
        loop {
            if self.vm.vmas[vma].start != tmp {
                return Err(Errno::ENOMEM);
            }
            let newflags = (self.vm.vmas[vma].flags - VmFlags::LOCKED_MASK) | flags;
            tmp = self.vm.vmas[vma].end.min(end);
            let v = self.mlock_fixup(vma, nstart, tmp, newflags)?;
            tmp = self.vm.vmas[v].end.min(end).max(tmp);
            nstart = tmp;
            if nstart >= end {
                break;
            }
            match self.vm.mms[mm].vma_from(nstart) {
                Some(n) if self.vm.vmas[n].start < end => vma = n,
                _ => break,
            }
        }
        if tmp < end {
            return Err(Errno::ENOMEM);
        }
        Ok(())
    }

    /// `apply_mlockall_flags`: `mm->def_flags` takes `VM_LOCKED` (and `VM_LOCKONFAULT`)
    /// with `MCL_FUTURE`, loses them otherwise; with `MCL_CURRENT` every VMA is locked,
    /// else (munlockall, or `MCL_FUTURE` without it, which returns before) unlocked. Errors
    /// of `mlock_fixup` are ignored.
    fn apply_mlockall_flags(&mut self, mm: MmId, flags: u64) {
        let onfault = if flags & MCL_ONFAULT != 0 { VmFlags::LOCKONFAULT } else { VmFlags::empty() };
        let m = &mut self.vm.mms[mm];
        m.def_flags -= VmFlags::LOCKED_MASK;
        if flags & MCL_FUTURE != 0 {
            m.def_flags |= VmFlags::LOCKED | onfault;
            if flags & MCL_CURRENT == 0 {
                return;
            }
        }
        let to_add = if flags & MCL_CURRENT != 0 { VmFlags::LOCKED | onfault } else { VmFlags::empty() };
        let mut a = VirtAddr(0);
        while let Some(v) = self.vm.mms[mm].vma_from(a) {
            let (s, e) = (self.vm.vmas[v].start, self.vm.vmas[v].end);
            let newflags = (self.vm.vmas[v].flags - VmFlags::LOCKED_MASK) | to_add;
            let _ = self.mlock_fixup(v, s, e, newflags);
            a = e;
        }
    }

    /// `mlock_fixup`: nothing for a VMA whose flags stay, or that may not be locked
    /// (`VM_SPECIAL`, hugetlb; the gate VMA, DAX, secretmem and `VM_DROPPABLE` are not in
    /// the model); else merge or split (`vma_modify_flags`) and either only set the flags
    /// (locked before and after: "mlocking twice would be wrong") or walk the pages
    /// (`mlock_vma_pages_range`). Returns the VMA now covering `[start, end)` (the one given
    /// when nothing changed).
    fn mlock_fixup(
        &mut self,
        vma: VmaId,
        start: VirtAddr,
        end: VirtAddr,
        newflags: VmFlags,
    ) -> KResult<VmaId> {
        let old = self.vm.vmas[vma].flags;
        if newflags == old || old.intersects(VmFlags::SPECIAL | VmFlags::HUGETLB) {
            return Ok(vma);
        }
        let v = self.vma_modify_flags(vma, start, end, newflags, MergeCaller::Mlock)?;
        if !(newflags.contains(VmFlags::LOCKED) && old.contains(VmFlags::LOCKED)) {
            self.mem.mlock_vma_pages_range(&self.vm, v, start, end);
        }
        Ok(v)
    }
}

/// mlock's and munlock's range: `start` rounded down to its page, the length grown by the
/// offset and rounded up to whole pages, wrapping as the kernel's `PAGE_ALIGN` does.
fn mlock_range(start: u64, len: u64) -> (u64, u64) {
    let mask = !(PAGE_SIZE - 1);
    let len = len.wrapping_add(start & !mask).wrapping_add(PAGE_SIZE - 1) & mask;
    (start & mask, len)
}

impl crate::mm::Vm {
    /// The test of `mlock_vma_folio` and `folio_add_lru_vma`: `VM_LOCKED` without any of
    /// `VM_SPECIAL`.
    pub fn vma_mlocks(&self, vma: VmaId) -> bool {
        self.vmas[vma].flags & (VmFlags::LOCKED | VmFlags::SPECIAL) == VmFlags::LOCKED
    }

    /// Whether any VMA of `mm` in `[start, end)` is `VM_LOCKED`: the zap paths look a
    /// mapping's VMA up only then.
    pub fn any_locked_in(&self, mm: MmId, start: VirtAddr, end: VirtAddr) -> bool {
        let m = &self.mms[mm];
        // Most zaps stay inside one VMA: one lookup answers.
        if let Some(v) = m.vma_lookup(start)
            && self.vmas[v].end >= end
        {
            return self.vmas[v].flags.contains(VmFlags::LOCKED);
        }
        m.vmas_in(start, end).into_iter().any(|v| self.vmas[v].flags.contains(VmFlags::LOCKED))
    }
}

impl crate::folio::FolioStore {
    /// `mlock_vma_pages_range` → `mlock_pte_range`, PMD by PMD over `[start, end)` of `vma`
    /// (whose flags are set): every folio mapped there (not the zero pages) is mlocked when
    /// the VMA is `VM_LOCKED`, else munlocked, once per run of its pages (`folio_mlock_step`).
    /// A large folio is mlocked only when that run maps all of it inside this PMD's part of
    /// the range (`allow_mlock_munlock`); munlock takes any part.
    fn mlock_vma_pages_range(&mut self, vm: &crate::mm::Vm, vma: VmaId, start: VirtAddr, end: VirtAddr) {
        let mm = vm.vmas[vma].mm;
        let lock = vm.vmas[vma].flags.contains(VmFlags::LOCKED);
        for (_, folio, _) in vm.mms[mm].pt.huge_in(start, end) {
            if folio != HUGE_ZERO_FOLIO {
                let f = &mut self.folios[folio];
                if lock { f.mlock() } else { f.munlock() }
            }
        }
        let ptes = vm.mms[mm].pt.ptes_in(start, end);
        let mut i = 0;
        while i < ptes.len() {
            let (a, pte) = ptes[i];
            i += 1;
            let Pte::Present { folio, sub, .. } = pte else { continue };
            if folio == ZERO_FOLIO {
                continue;
            }
            let nr = self.folios[folio].nr_pages();
            // folio_mlock_step: the run of PTEs mapping this folio's next pages, to the end
            // of the folio, of this PMD's part of the range.
            let pmd_end = VirtAddr(((a.0 >> PMD_SHIFT) + 1) << PMD_SHIFT).min(end);
            let mut step = 1u64;
            while i < ptes.len()
                && u64::from(sub) + step < nr
                && ptes[i].0 == a.plus(step << PAGE_SHIFT)
                && ptes[i].0 < pmd_end
                && matches!(ptes[i].1, Pte::Present { folio: g, sub: s, .. } if g == folio && u64::from(s) == u64::from(sub) + step)
            {
                step += 1;
                i += 1;
            }
            if lock && nr > 1 {
                // allow_mlock_munlock: folio_within_range of this PMD's part, and fully mapped.
                let pmd_start = VirtAddr((a.0 >> PMD_SHIFT) << PMD_SHIFT).max(start);
                let first = VirtAddr(a.0.wrapping_sub(u64::from(sub) << PAGE_SHIFT));
                if sub != 0 || step != nr || first < pmd_start || first.plus(nr << PAGE_SHIFT) > pmd_end {
                    continue;
                }
            }
            let f = &mut self.folios[folio];
            if lock { f.mlock() } else { f.munlock() }
        }
    }

    /// `folio_add_lru_vma`: a new folio mapped in `vma` goes to the LRU, mlocked if `vma`
    /// is (`mlock_new_folio`).
    pub fn folio_add_lru_vma(&mut self, vm: &crate::mm::Vm, folio: FolioId, vma: VmaId) {
        if vm.vma_mlocks(vma) {
            self.folios[folio].mlock_new();
        }
    }

    /// `mlock_vma_folio`, as `__folio_add_anon_rmap` and `__folio_add_file_rmap` call it
    /// after mapping `nr_pages` pages of `folio` in `vma`: only a call that maps the whole
    /// folio mlocks it ("partially mapped folios can be split on reclaim").
    pub fn mlock_vma_folio(&mut self, vm: &crate::mm::Vm, folio: FolioId, vma: VmaId, nr_pages: u64) {
        if folio == ZERO_FOLIO || folio == HUGE_ZERO_FOLIO {
            return;
        }
        if vm.vma_mlocks(vma) && self.folios[folio].nr_pages() == nr_pages {
            self.folios[folio].mlock();
        }
    }

    /// `munlock_vma_folio`, as `__folio_remove_rmap` calls it for every removal (before
    /// the model may free the folio): munlock when `vma` is `VM_LOCKED`; reclaim corrects an
    /// munlock too many.
    pub fn munlock_vma_folio(&mut self, vm: &crate::mm::Vm, folio: FolioId, vma: VmaId) {
        if folio == ZERO_FOLIO || folio == HUGE_ZERO_FOLIO {
            return;
        }
        if vm.vmas[vma].flags.contains(VmFlags::LOCKED) {
            self.folios[folio].munlock();
        }
    }

    /// [`FolioStore::munlock_vma_folio`](crate::folio::FolioStore::munlock_vma_folio) for a mapping at `a` of `mm` whose VMA the caller
    /// does not hold (the zap and unmap paths, which work by address).
    pub fn munlock_mapped_at(&mut self, vm: &crate::mm::Vm, mm: MmId, a: VirtAddr, folio: FolioId) {
        if let Some(v) = vm.mms[mm].vma_lookup(a) {
            self.munlock_vma_folio(vm, folio, v);
        }
    }
}
