//! userfaultfd (fs/userfaultfd.c, mm/userfaultfd.c): one context per process, registration
//! of ranges for missing faults (`userfaultfd_register`, `userfaultfd_register_range`,
//! `userfaultfd_unregister`, `userfaultfd_clear_vma`), and `UFFDIO_MOVE` (`move_pages`,
//! `move_pages_ptes`, `move_present_ptes`, `move_zeropage_pte`, `move_swap_pte`, and
//! `move_pages_huge_pmd` of mm/huge_memory.c), with the `split_folio` it needs.
//!
//! The context is the one the oracle's executor makes: `userfaultfd(O_CLOEXEC |
//! UFFD_USER_MODE_ONLY)` with `UFFD_FEATURE_MOVE | UFFD_FEATURE_SIGBUS`. So a missing fault in
//! a registered VMA raises SIGBUS (see `fault.rs`), fork drops the registration of the
//! child's VMAs (no `EVENT_FORK`) and a moving mremap drops it on the new VMA (no
//! `EVENT_REMAP`).

use crate::abi::{
    UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES, UFFDIO_MOVE_MODE_DONTWAKE, UFFDIO_REGISTER_MODE_MINOR,
    UFFDIO_REGISTER_MODE_MISSING, UFFDIO_REGISTER_MODE_WP,
};
use crate::errno::{Errno, KResult};
use crate::folio::{FolioId, HUGE_ZERO_FOLIO, ZERO_FOLIO};
use crate::fs::InodeKind;
use crate::merge::MergeCaller;
use crate::mm::{MmId, System};
use crate::pagetable::{Pmd, Pte, PteFlags, pmd_index};
use crate::types::{PAGE_SIZE, PMD_SIZE, PUD_SHIFT, Pid, TASK_SIZE, VirtAddr};
use crate::vma::{VmFlags, VmaId};

/// The userfaultfd table (fs/userfaultfd.c): each process's context.
#[derive(Clone, Debug)]
pub struct Uffds {
    /// Each process's userfaultfd (made on its first uffd call).
    pub ctxs: std::collections::BTreeMap<Pid, UffdCtx>,
    /// The next userfaultfd context number.
    pub next: u32,
}

impl Default for Uffds {
    fn default() -> Self {
        Uffds { ctxs: std::collections::BTreeMap::new(), next: 1 }
    }
}

/// A userfaultfd context (`struct userfaultfd_ctx`), by number.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct UffdCtx(pub u32);

/// `mmap_min_addr` of our machines (`vm.mmap_min_addr`).
const MMAP_MIN_ADDR: u64 = 4096;

/// `validate_range` (fs/userfaultfd.c): page-aligned start, a non-empty whole number of
/// pages, at or above `mmap_min_addr`, inside the task size.
fn validate_range(start: u64, len: u64) -> KResult<()> {
    if !start.is_multiple_of(PAGE_SIZE) || !len.is_multiple_of(PAGE_SIZE) || len == 0 {
        return Err(Errno::EINVAL);
    }
    if !(MMAP_MIN_ADDR..TASK_SIZE).contains(&start) || len > TASK_SIZE - start {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

/// What `move_pages_ptes` did with one source page.
enum PteMove {
    /// Bytes done (a page moved, or a hole skipped with ALLOW_SRC_HOLES).
    Done(u64),
    /// The large folio there was split: look again (`goto retry`).
    Retry,
}

impl System {
    /// `userfaultfd_release` → `userfaultfd_release_all`: the last close of a context
    /// unregisters every VMA of `mm` it holds (`userfaultfd_clear_vma`, merging where it can).
    pub(crate) fn userfaultfd_release(&mut self, mm: crate::mm::MmId, ctx: UffdCtx) {
        let mut a = VirtAddr(0);
        while let Some(vma) = self.vm.mms[mm].find_vma(a) {
            let v = &self.vm.vmas[vma];
            if v.uffd != Some(ctx) {
                a = v.end;
                continue;
            }
            let (s, e, flags) = (v.start, v.end, v.flags - VmFlags::UFFD_FLAGS);
            a = match self.vma_modify_flags_uffd(vma, s, e, flags, None, MergeCaller::UffdRelease) {
                Ok(v) => self.vm.vmas[v].end,
                // give_up_on_oom: the VMA is left as it is.
                Err(_) => e,
            };
        }
    }

    /// `vma_modify_flags_uffd`: merge or split so that `[start, end)` is one VMA, then give
    /// it `flags` and `ctx` (`userfaultfd_set_ctx` / `userfaultfd_reset_ctx`).
    fn vma_modify_flags_uffd(
        &mut self,
        vma: VmaId,
        start: VirtAddr,
        end: VirtAddr,
        flags: VmFlags,
        ctx: Option<UffdCtx>,
        caller: MergeCaller,
    ) -> KResult<VmaId> {
        let mut vmg = self.vm.vmg_from_vma(vma, start, end, caller);
        if !self.cfg.kernel.profile().uffd_merge_pgoff {
            // 6.1 passes the VMA's own vm_pgoff to vma_merge, not that of `start`.
            vmg.pgoff = self.vm.vmas[vma].pgoff;
        }
        vmg.flags = flags;
        vmg.uffd = ctx;
        let v = self.vma_modify(&mut vmg)?;
        // userfaultfd_set_ctx: only the uffd flags are reset; the VMA keeps the rest of its
        // own, such as the VM_MAYBE_GUARD of a neighbour it merged into.
        self.vm.vmas[v].flags = (self.vm.vmas[v].flags - VmFlags::UFFD_FLAGS) | (flags & VmFlags::UFFD_FLAGS);
        self.vm.vmas[v].uffd = ctx;
        Ok(v)
    }

    /// `uffd_register(addr, len, mode)`: `userfaultfd_register`. Every VMA meeting the range
    /// (holes are allowed, but not an empty range) must be able to take missing faults
    /// (EINVAL), be writable in principle (`VM_MAYWRITE`, else EPERM) and not belong to another
    /// userfaultfd (EBUSY); then `userfaultfd_register_range` registers each part.
    pub fn sys_uffd_register(&mut self, pid: Pid, addr: u64, len: u64, mode: u64) -> KResult<u64> {
        let mm = self.vm.mm_of(pid)?;
        let ctx = self.uffd.uffd_ctx(pid);
        let all = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP | UFFDIO_REGISTER_MODE_MINOR;
        if mode == 0 || mode & !all != 0 {
            return Err(Errno::EINVAL);
        }
        validate_range(addr, len)?;
        let (start, end) = (VirtAddr(addr), VirtAddr(addr + len));
        let vmas = self.vm.mms[mm].vmas_in(start, end);
        if vmas.is_empty() {
            return Err(Errno::EINVAL);
        }
        for &v in &vmas {
            // vma_can_userfault: minor faults only exist for shmem (and hugetlbfs).
            let minor_ok = mode & UFFDIO_REGISTER_MODE_MINOR == 0 || self.vm.vmas[v].file.is_some();
            if !self.vm.vma_can_userfault(&self.fs, v) || !minor_ok {
                return Err(Errno::EINVAL);
            }
            if !self.vm.vmas[v].flags.contains(VmFlags::MAYWRITE) {
                return Err(Errno::EPERM);
            }
            if self.vm.vmas[v].uffd.is_some_and(|c| c != ctx) {
                return Err(Errno::EBUSY);
            }
        }
        if mode != UFFDIO_REGISTER_MODE_MISSING {
            self.not_modelled("userfaultfd registration for WP or MINOR faults");
            return Err(Errno::EINVAL);
        }
        // userfaultfd_register_range
        let mut a = start;
        while let Some(vma) = self.vm.mms[mm].find_vma(a).filter(|&v| self.vm.vmas[v].start < end) {
            let v = &self.vm.vmas[vma];
            if v.uffd == Some(ctx) && v.flags.contains(VmFlags::UFFD_MISSING) {
                a = v.end;
                continue;
            }
            let s = a.max(v.start);
            let e = end.min(v.end);
            let flags = (v.flags - VmFlags::UFFD_FLAGS) | VmFlags::UFFD_MISSING;
            let vma = self.vma_modify_flags_uffd(vma, s, e, flags, Some(ctx), MergeCaller::UffdRegister)?;
            a = self.vm.vmas[vma].end;
        }
        Ok(0)
    }

    /// `uffd_unregister(addr, len)`: `userfaultfd_unregister`. Every VMA meeting the range must
    /// be unregistered or registered with this userfaultfd (before 6.17 any userfaultfd of the
    /// mm will do, [`Profile::uffd_unregister_same_ctx`](crate::kernel::Profile)), and able to
    /// take userfaults at all (EINVAL otherwise); each registered part is cleared (`userfaultfd_clear_vma`), merging
    /// where it can.
    pub fn sys_uffd_unregister(&mut self, pid: Pid, addr: u64, len: u64) -> KResult<u64> {
        let mm = self.vm.mm_of(pid)?;
        let ctx = self.uffd.uffd_ctx(pid);
        validate_range(addr, len)?;
        let (start, end) = (VirtAddr(addr), VirtAddr(addr + len));
        let vmas = self.vm.mms[mm].vmas_in(start, end);
        if vmas.is_empty() {
            return Err(Errno::EINVAL);
        }
        for &v in &vmas {
            // A VMA registered with another context (a thread's, here): EINVAL only from 6.17.
            let other_ctx = self.vm.vmas[v].uffd.is_some_and(|c| c != ctx);
            if (other_ctx && self.cfg.kernel.profile().uffd_unregister_same_ctx)
                || !self.vm.vma_can_userfault(&self.fs, v)
            {
                return Err(Errno::EINVAL);
            }
        }
        let mut a = start;
        while let Some(vma) = self.vm.mms[mm].find_vma(a).filter(|&v| self.vm.vmas[v].start < end) {
            let v = &self.vm.vmas[vma];
            if v.uffd.is_none() {
                a = v.end;
                continue;
            }
            let s = a.max(v.start);
            let e = end.min(v.end);
            let flags = v.flags - VmFlags::UFFD_FLAGS;
            let vma = self.vma_modify_flags_uffd(vma, s, e, flags, None, MergeCaller::UffdUnregister)?;
            a = self.vm.vmas[vma].end;
        }
        Ok(0)
    }

    /// `uffdio_move(dst, src, len, mode)`: `userfaultfd_move` then `move_pages`. Returns the
    /// bytes moved when any were (the ioctl then fails with EAGAIN if that is short of `len`,
    /// but `uffdio_move.move` holds the progress, and that is what the script shows), else
    /// the error.
    pub fn sys_uffdio_move(&mut self, pid: Pid, dst: u64, src: u64, len: u64, mode: u64) -> KResult<u64> {
        let mm = self.vm.mm_of(pid)?;
        if !self.cfg.kernel.profile().uffdio_move {
            // An unknown ioctl command.
            return Err(Errno::EINVAL);
        }
        let ctx = self.uffd.uffd_ctx(pid);
        validate_range(dst, len)?;
        validate_range(src, len)?;
        if mode & !(UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES | UFFDIO_MOVE_MODE_DONTWAKE) != 0 {
            return Err(Errno::EINVAL);
        }
        self.move_pages(mm, ctx, VirtAddr(dst), VirtAddr(src), len, mode)
    }

    /// `move_pages`: find both VMAs (`uffd_move_lock`, which prepares the destination's
    /// anon_vma first), check them, then move PMD by PMD or page by page. Stops at the first
    /// error; returns the bytes moved if any, else the error.
    fn move_pages(
        &mut self,
        mm: MmId,
        ctx: UffdCtx,
        dst: VirtAddr,
        src: VirtAddr,
        len: u64,
        mode: u64,
    ) -> KResult<u64> {
        // uffd_move_lock → uffd_lock_vma / find_vma_and_prepare_anon
        let dst_vma = self.vm.mms[mm].vma_lookup(dst).ok_or(Errno::ENOENT)?;
        if !self.vm.vmas[dst_vma].flags.contains(VmFlags::SHARED) {
            self.rmap.anon_vma_prepare(&mut self.vm, &mut self.trace, dst_vma);
        }
        let src_vma = if self.vm.vmas[dst_vma].contains(src) {
            dst_vma
        } else {
            self.vm.mms[mm].vma_lookup(src).ok_or(Errno::ENOENT)?
        };
        let (s, d) = (&self.vm.vmas[src_vma], &self.vm.vmas[dst_vma]);
        if s.flags.contains(VmFlags::SHARED) || src.0 + len > s.end.0 {
            return Err(Errno::EINVAL);
        }
        if d.flags.contains(VmFlags::SHARED) || dst.0 + len > d.end.0 {
            return Err(Errno::EINVAL);
        }
        self.vm.validate_move_areas(ctx, src_vma, dst_vma)?;

        let holes = mode & UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES != 0;
        let src_end = src.plus(len);
        let (mut s, mut d) = (src, dst);
        let mut moved = 0;
        let mut err = None;
        while s < src_end {
            // mm_find_pmd: no PMD table under the source's PUD is a hole.
            if !self.vm.mms[mm].pt.pud_present(s) {
                if !holes {
                    err = Some(Errno::ENOENT);
                    break;
                }
                self.vm.mms[mm].pt.pmds.pud_alloc(s.0 >> PUD_SHIFT); // mm_alloc_pmd
            }
            self.vm.mms[mm].pt.pmds.pud_alloc(d.0 >> PUD_SHIFT); // mm_alloc_pmd
            let dst_pmd_none = self.vm.mms[mm].pt.pmd(d).is_none();
            if matches!(self.vm.mms[mm].pt.pmd(d), Some(Pmd::Huge { .. })) {
                err = Some(Errno::EEXIST);
                break;
            }
            let step = if let Some(Pmd::Huge { folio, .. }) = self.vm.mms[mm].pt.pmd(s) {
                let folio = *folio;
                let splits = s.0 % PMD_SIZE != 0 || d.0 % PMD_SIZE != 0 || src_end.0 - s.0 < PMD_SIZE;
                if splits || !dst_pmd_none {
                    if folio != HUGE_ZERO_FOLIO && !self.mem.folios[folio].pages[0].anon_exclusive {
                        err = Some(Errno::EBUSY);
                        break;
                    }
                    // The folio itself is split by move_pages_ptes.
                    self.vm.split_huge_pmd(&mut self.mem, &mut self.trace, mm, s);
                    continue;
                }
                match self.move_pages_huge_pmd(mm, dst_vma, d, s, folio) {
                    Ok(()) => PMD_SIZE,
                    Err(e) => {
                        err = Some(e);
                        break;
                    }
                }
            } else {
                if self.vm.mms[mm].pt.pmd(s).is_none() {
                    if !holes {
                        err = Some(Errno::ENOENT);
                        break;
                    }
                    self.vm.mms[mm].pt.alloc_table(s); // __pte_alloc
                }
                self.vm.mms[mm].pt.alloc_table(d); // pte_alloc
                match self.move_pages_pte(mm, dst_vma, d, s, holes) {
                    Ok(PteMove::Done(n)) => n,
                    Ok(PteMove::Retry) => continue,
                    Err(e) => {
                        err = Some(e);
                        break;
                    }
                }
            };
            s = s.plus(step);
            d = d.plus(step);
            moved += step;
        }
        match err {
            Some(e) if moved == 0 => Err(e),
            _ => Ok(moved),
        }
    }

    /// `move_pages_ptes` for one source page (6.18 batches consecutive present pages under
    /// one lock, which moves the same pages in the same order).
    fn move_pages_pte(
        &mut self,
        mm: MmId,
        dst_vma: VmaId,
        d: VirtAddr,
        s: VirtAddr,
        holes: bool,
    ) -> KResult<PteMove> {
        let pt = &self.vm.mms[mm].pt;
        if !pt.get_pte(d).is_none() {
            return Err(Errno::EEXIST);
        }
        match pt.get_pte(s) {
            Pte::None => {
                if holes {
                    Ok(PteMove::Done(PAGE_SIZE))
                } else {
                    Err(Errno::ENOENT)
                }
            }
            Pte::Present { folio, sub, flags } => {
                if folio == ZERO_FOLIO {
                    // move_zeropage_pte
                    let pt = &mut self.vm.mms[mm].pt;
                    pt.take_pte(s);
                    pt.set_pte(d, Pte::Present { folio: ZERO_FOLIO, sub: 0, flags: PteFlags::ACCESSED });
                    self.trace.stats.uffd_pages_moved += 1;
                    return Ok(PteMove::Done(PAGE_SIZE));
                }
                // PageAnonExclusive(&folio->page): the folio's first page decides.
                if !self.mem.folios[folio].is_anon() || !self.mem.folios[folio].pages[0].anon_exclusive {
                    return Err(Errno::EBUSY);
                }
                if self.mem.folios[folio].is_large() {
                    // A pinned large folio cannot be split; the kernel answers EBUSY (seen on
                    // 6.18 by the oracle) rather than retrying the split.
                    if self.mem.folios[folio].pincount > 0 {
                        return Err(Errno::EBUSY);
                    }
                    self.split_folio(folio)?;
                    return Ok(PteMove::Retry);
                }
                // move_present_ptes
                if self.mem.folios[folio].pincount > 0 {
                    return Err(Errno::EBUSY);
                }
                self.vm.mms[mm].pt.take_pte(s);
                self.mem.folio_move_anon_rmap(&self.vm, folio, dst_vma);
                self.mem.folios[folio].index = self.vm.vmas[dst_vma].linear_page_index(d);
                let mut nf = PteFlags::ACCESSED | PteFlags::WRITE;
                if flags.contains(PteFlags::DIRTY) {
                    nf |= PteFlags::DIRTY;
                }
                self.vm.mms[mm].pt.set_pte(d, Pte::Present { folio, sub, flags: nf });
                self.trace.stats.uffd_pages_moved += 1;
                Ok(PteMove::Done(PAGE_SIZE))
            }
            Pte::Swap { entry, exclusive } => {
                if !exclusive {
                    return Err(Errno::EBUSY);
                }
                // move_swap_pte: a folio still in the swap cache follows the entry.
                if let Some(folio) = self.swap.slot(entry).and_then(|sl| sl.cache) {
                    if self.mem.folios[folio].is_large() {
                        return Err(Errno::EBUSY);
                    }
                    self.mem.folio_move_anon_rmap(&self.vm, folio, dst_vma);
                    self.mem.folios[folio].index = self.vm.vmas[dst_vma].linear_page_index(d);
                }
                let pt = &mut self.vm.mms[mm].pt;
                let pte = pt.take_pte(s);
                pt.set_pte(d, pte);
                self.trace.stats.uffd_pages_moved += 1;
                Ok(PteMove::Done(PAGE_SIZE))
            }
            // move_pages_pte: any other non-swap entry (a guard marker) is EFAULT.
            Pte::Guard => Err(Errno::EFAULT),
            Pte::Migration { .. } => {
                // The kernel waits for the migration to end and retries.
                self.not_modelled("UFFDIO_MOVE of a page under migration");
                Err(Errno::EAGAIN)
            }
        }
    }

    /// `move_pages_huge_pmd` (mm/huge_memory.c): a whole PMD leaf moves to an empty,
    /// PMD-aligned destination; an anonymous THP must be exclusive and unpinned (EBUSY) and
    /// becomes the destination's (dirty and writable, as mremap leaves it); the huge zero
    /// folio just moves.
    fn move_pages_huge_pmd(
        &mut self,
        mm: MmId,
        dst_vma: VmaId,
        d: VirtAddr,
        s: VirtAddr,
        folio: FolioId,
    ) -> KResult<()> {
        let pt = &self.vm.mms[mm].pt;
        let Some(Pmd::Huge { flags, .. }) = pt.pmd(s) else { return Err(Errno::ENOENT) };
        let flags = *flags;
        if folio != HUGE_ZERO_FOLIO {
            let f = &self.mem.folios[folio];
            if !f.pages[0].anon_exclusive || f.pincount > 0 {
                return Err(Errno::EBUSY);
            }
        }
        let Some(pmd) = self.vm.mms[mm].pt.pmds.remove(&pmd_index(s)) else { return Err(Errno::ENOENT) };
        let pmd = if folio == HUGE_ZERO_FOLIO {
            pmd
        } else {
            self.mem.folio_move_anon_rmap(&self.vm, folio, dst_vma);
            self.mem.folios[folio].index = self.vm.vmas[dst_vma].linear_page_index(d);
            Pmd::Huge { folio, flags: flags | PteFlags::DIRTY | PteFlags::WRITE }
        };
        self.vm.mms[mm].pt.set_pmd(pmd_index(d), pmd);
        self.trace.stats.uffd_pmds_moved += 1;
        self.trace.stats.uffd_pages_moved += PMD_SIZE / PAGE_SIZE;
        Ok(())
    }
}

impl Uffds {
    /// The process's userfaultfd, made on first use (`new_userfaultfd` + `UFFDIO_API`).
    fn uffd_ctx(&mut self, pid: Pid) -> UffdCtx {
        if let Some(&c) = self.ctxs.get(&pid) {
            return c;
        }
        let c = UffdCtx(self.next);
        self.next += 1;
        self.ctxs.insert(pid, c);
        c
    }
}

impl crate::mm::Vm {
    /// `vma_can_userfault` for missing faults: anonymous or shmem memory (no hugetlbfs here).
    fn vma_can_userfault(&self, fs: &crate::fs::Fs, vma: VmaId) -> bool {
        let v = &self.vmas[vma];
        match v.file {
            None => true,
            Some(f) => matches!(fs.inodes[fs.files[f].inode].kind, InodeKind::Shmem),
        }
    }

    /// `userfaultfd_reset_ctx`: the VMA is no longer registered.
    pub fn userfaultfd_reset_ctx(&mut self, vma: VmaId) {
        let v = &mut self.vmas[vma];
        v.uffd = None;
        v.flags -= VmFlags::UFFD_FLAGS;
    }

    /// `validate_move_areas`: same access flags (and so page protection), same mlock state,
    /// writable, no special mappings, dst registered with this context, both anonymous.
    fn validate_move_areas(&self, ctx: UffdCtx, src: VmaId, dst: VmaId) -> KResult<()> {
        let (s, d) = (&self.vmas[src], &self.vmas[dst]);
        if s.flags & VmFlags::ACCESS != d.flags & VmFlags::ACCESS {
            return Err(Errno::EINVAL);
        }
        if s.flags.contains(VmFlags::LOCKED) != d.flags.contains(VmFlags::LOCKED) {
            return Err(Errno::EINVAL);
        }
        if !s.flags.contains(VmFlags::WRITE) {
            return Err(Errno::EINVAL);
        }
        // vma_move_compatible
        let bad = VmFlags::PFNMAP | VmFlags::IO | VmFlags::HUGETLB | VmFlags::MIXEDMAP;
        if s.flags.intersects(bad) || d.flags.intersects(bad) {
            return Err(Errno::EINVAL);
        }
        if d.uffd != Some(ctx) {
            return Err(Errno::EINVAL);
        }
        if !s.is_anonymous() || !d.is_anonymous() {
            return Err(Errno::EINVAL);
        }
        Ok(())
    }
}
