//! madvise(2) and prctl(PR_SET_VMA_ANON_NAME) (mm/madvise.c): `madvise_walk_vmas`,
//! `madvise_vma_behavior`, `madvise_update_vma`, `madvise_dontneed_free`,
//! `madvise_set_anon_name`.

use std::sync::Arc;

use crate::abi::*;
use crate::errno::{Errno, KResult};
use crate::folio::FolioId;
use crate::folio::{HUGE_ZERO_FOLIO, ZERO_FOLIO};
use crate::merge::MergeCaller;
use crate::mm::{MmId, System};
use crate::pagetable::{Pmd, Pte, PteFlags};
use crate::types::{PAGE_SIZE, PMD_SIZE, Pid, VirtAddr, page_align};
use crate::vma::{AnonName, VmFlags, VmaId};

/// What a madvise PTE walk does at a PTE mapping part of a large folio
/// ([`System::madvise_large_folio`]).
pub(crate) enum AtLargeFolio {
    /// Leave the rest of this PMD (6.1: mapped more than once, or the split failed).
    Stop,
    /// The folio was split: look at the same PTE again.
    Again,
    /// Leave these many PTEs, the folio's batch (maybe mapped shared, or the split failed).
    Skip(u64),
    /// These many PTEs from here map the whole folio.
    Whole(u64),
}

/// `ANON_VMA_NAME_MAX_LEN`.
const ANON_VMA_NAME_MAX_LEN: usize = 80;

#[derive(Clone, Copy)]
enum Visit {
    Behavior(u64),
    Name,
}

/// The range checks `do_madvise` and `madvise_set_anon_name` share (`do_mbind`'s are the
/// same): the end of `[start, start + PAGE_ALIGN(len_in))`, or None for an empty range.
pub(crate) fn madvise_range(start: u64, len_in: u64) -> KResult<Option<u64>> {
    if !start.is_multiple_of(PAGE_SIZE) {
        return Err(Errno::EINVAL);
    }
    let len = page_align(len_in).unwrap_or(0);
    if len_in != 0 && len == 0 {
        return Err(Errno::EINVAL);
    }
    let end = start.checked_add(len).ok_or(Errno::EINVAL)?;
    Ok((end != start).then_some(end))
}

impl System {
    /// `madvise_walk_vmas`: apply to each VMA piece of `[start, end)`; a hole gives ENOMEM
    /// after the mapped parts are done.
    fn madvise_walk(
        &mut self,
        mm: MmId,
        start: VirtAddr,
        end: VirtAddr,
        visit: Visit,
        name: &AnonName,
    ) -> KResult<()> {
        let mut start = start;
        let mut unmapped_error = Ok(());
        let mut vma = self.vm.mms[mm].find_vma(start);
        loop {
            let Some(v) = vma else { return Err(Errno::ENOMEM) };
            if start < self.vm.vmas[v].start {
                unmapped_error = Err(Errno::ENOMEM);
                start = self.vm.vmas[v].start;
                if start >= end {
                    break;
                }
            }
            let tmp = self.vm.vmas[v].end.min(end);
            let prev_end = match visit {
                Visit::Behavior(b) => self.madvise_vma_behavior(mm, v, start, tmp, b)?,
                Visit::Name => self.madvise_vma_anon_name(v, start, tmp, name.clone())?,
            };
            start = tmp.max(prev_end);
            if start >= end {
                break;
            }
            vma = self.vm.mms[mm].find_vma(start);
        }
        unmapped_error
    }

    /// madvise(2).
    pub fn sys_madvise(&mut self, pid: Pid, start: u64, len_in: u64, behavior: u64) -> KResult<u64> {
        let mm = self.vm.mm_of(pid)?;
        let valid = MADV_ADVICE.iter().any(|&(_, v)| v == behavior)
            && (self.cfg.kernel.profile().madv_guard
                || !matches!(behavior, MADV_GUARD_INSTALL | MADV_GUARD_REMOVE));
        if !valid {
            return Err(Errno::EINVAL);
        }
        let Some(end) = madvise_range(start, len_in)? else { return Ok(0) };
        if matches!(behavior, MADV_POPULATE_READ | MADV_POPULATE_WRITE)
            && self.cfg.kernel.profile().populate_without_vma_walk
        {
            // madvise_do_behavior: populate walks the range itself, not madvise_walk_vmas.
            return self.madvise_populate(
                mm,
                VirtAddr(start),
                VirtAddr(end),
                behavior == MADV_POPULATE_WRITE,
            );
        }
        self.madvise_walk(mm, VirtAddr(start), VirtAddr(end), Visit::Behavior(behavior), &None).map(|_| 0)
    }

    /// `madvise_populate` → `faultin_page_range` (`__get_user_pages` with
    /// `FOLL_MADV_POPULATE`): fault the pages in address order; a page outside any VMA is
    /// ENOMEM, a VMA that `check_vma_flags` refuses EINVAL, a fault that fails
    /// (`VM_FAULT_SIGBUS`: beyond EOF, userfaultfd) EFAULT, each after populating the pages
    /// before it.
    fn madvise_populate(&mut self, mm: MmId, start: VirtAddr, end: VirtAddr, write: bool) -> KResult<u64> {
        if end.0 - start.0 > crate::fault::MAX_FAULT_BYTES {
            // Page by page this would not finish (populate does the same).
            self.not_modelled("populating more than 64 GiB");
            return Ok(0);
        }
        let mut a = start;
        while a < end {
            let Some(vma) = self.vm.mms[mm].vma_lookup(a) else { return Err(Errno::ENOMEM) };
            let vend = self.vm.vmas[vma].end.min(end);
            self.faultin_vma_range(mm, vma, a, vend, write)?;
            a = vend;
        }
        Ok(0)
    }

    /// Before 6.9 (`Profile::populate_without_vma_walk` off): `madvise_populate` is a
    /// `madvise_walk_vmas` visitor, one VMA piece at a time (`faultin_vma_page_range`), so a
    /// hole's ENOMEM comes only after the later VMAs, and their EINVAL or EFAULT wins.
    fn madvise_populate_vma(
        &mut self,
        mm: MmId,
        vma: VmaId,
        start: VirtAddr,
        end: VirtAddr,
        write: bool,
    ) -> KResult<()> {
        if end.0 - start.0 > crate::fault::MAX_FAULT_BYTES {
            self.not_modelled("populating more than 64 GiB");
            return Ok(());
        }
        self.faultin_vma_range(mm, vma, start, end, write)
    }

    /// Fault in `[start, end)` inside one VMA as `__get_user_pages` with
    /// `FOLL_MADV_POPULATE` does (6.1's `faultin_vma_page_range`): a VMA that
    /// `check_vma_flags` refuses is EINVAL, a fault that fails (`VM_FAULT_SIGBUS`: beyond
    /// EOF, userfaultfd) EFAULT after the pages before it.
    fn faultin_vma_range(
        &mut self,
        mm: MmId,
        vma: VmaId,
        start: VirtAddr,
        end: VirtAddr,
        write: bool,
    ) -> KResult<()> {
        let f = self.vm.vmas[vma].flags;
        // check_vma_flags without FOLL_FORCE: data access, so the pkey matters too.
        let denied = if write { !f.contains(VmFlags::WRITE) } else { !f.contains(VmFlags::READ) };
        let pkey = f.pkey();
        if f.intersects(VmFlags::IO | VmFlags::PFNMAP)
            || denied
            || (pkey != 0 && Some(pkey) == self.vm.mms[mm].execute_only_pkey)
        {
            return Err(Errno::EINVAL);
        }
        let mut a = start;
        while a < end {
            // faultin_page: VM_FAULT_SIGBUS is EFAULT (vm_fault_to_errno).
            if !self.handle_mm_fault(mm, vma, a, write) {
                return Err(Errno::EFAULT);
            }
            a = a.plus(PAGE_SIZE);
        }
        Ok(())
    }

    /// `madvise_vma_behavior` for one VMA piece; returns the end of the VMA now covering it.
    fn madvise_vma_behavior(
        &mut self,
        mm: MmId,
        vma: VmaId,
        start: VirtAddr,
        end: VirtAddr,
        behavior: u64,
    ) -> KResult<VirtAddr> {
        let v = &self.vm.vmas[vma];
        let mut new = v.flags;
        match behavior {
            MADV_DONTNEED | MADV_DONTNEED_LOCKED | MADV_FREE => {
                let bad = if behavior == MADV_DONTNEED_LOCKED {
                    VmFlags::PFNMAP | VmFlags::HUGETLB
                } else {
                    VmFlags::LOCKED | VmFlags::PFNMAP | VmFlags::HUGETLB
                };
                if v.flags.intersects(bad) {
                    return Err(Errno::EINVAL);
                }
                if behavior == MADV_FREE && !v.is_anonymous() {
                    return Err(Errno::EINVAL);
                }
                // MADV_FREE leaves pages mapped until reclaim (only MADV_PAGEOUT in the model:
                // there is no memory pressure), which discards those still clean.
                if behavior != MADV_FREE && self.cfg.kernel.profile().madv_dontneed_reclaims_pt {
                    self.zap_range_reclaim_pt(mm, start, end);
                } else if behavior != MADV_FREE {
                    // Before 6.14 the emptied PTE tables stay.
                    self.zap_range(mm, start, end);
                } else {
                    self.madvise_free_single_vma(mm, start, end);
                }
                return Ok(end);
            }
            MADV_WILLNEED | MADV_COLD | MADV_PAGEOUT | MADV_POPULATE_READ | MADV_POPULATE_WRITE
            | MADV_COLLAPSE | MADV_REMOVE | MADV_GUARD_INSTALL | MADV_GUARD_REMOVE => {
                return self.madvise_other(mm, vma, start, end, behavior);
            }
            MADV_NORMAL => new -= VmFlags::RAND_READ | VmFlags::SEQ_READ,
            MADV_SEQUENTIAL => new = (new - VmFlags::RAND_READ) | VmFlags::SEQ_READ,
            MADV_RANDOM => new = (new - VmFlags::SEQ_READ) | VmFlags::RAND_READ,
            MADV_DONTFORK => new |= VmFlags::DONTCOPY,
            MADV_DOFORK => {
                if v.flags.contains(VmFlags::IO) {
                    return Err(Errno::EINVAL);
                }
                new -= VmFlags::DONTCOPY;
            }
            MADV_WIPEONFORK => {
                if v.file.is_some() || v.flags.contains(VmFlags::SHARED) {
                    return Err(Errno::EINVAL);
                }
                new |= VmFlags::WIPEONFORK;
            }
            MADV_KEEPONFORK => new -= VmFlags::WIPEONFORK,
            MADV_DONTDUMP => new |= VmFlags::DONTDUMP,
            MADV_DODUMP => {
                if v.flags.intersects(VmFlags::SPECIAL) {
                    return Err(Errno::EINVAL);
                }
                new -= VmFlags::DONTDUMP;
            }
            MADV_HUGEPAGE => new = (new - VmFlags::NOHUGEPAGE) | VmFlags::HUGEPAGE,
            MADV_NOHUGEPAGE => new = (new - VmFlags::HUGEPAGE) | VmFlags::NOHUGEPAGE,
            MADV_MERGEABLE => {
                // ksm_madvise: only private, non-special mappings become mergeable.
                if !v
                    .flags
                    .intersects(VmFlags::SHARED | VmFlags::SPECIAL | VmFlags::HUGETLB | VmFlags::MIXEDMAP)
                {
                    new |= VmFlags::MERGEABLE;
                }
            }
            MADV_UNMERGEABLE => new -= VmFlags::MERGEABLE,
            _ => return Err(Errno::EINVAL),
        }
        let name = v.anon_name.clone();
        self.madvise_update_vma(vma, start, end, new, name)
    }

    /// Whether MADV_FREE, MADV_COLD and MADV_PAGEOUT leave a folio alone as shared:
    /// `folio_maybe_mapped_shared` (the mms that map it), or before 6.15
    /// `folio_likely_mapped_shared` (a guess from its first page;
    /// [`Profile::folio_shared_by_mm_ids`](crate::kernel::Profile::folio_shared_by_mm_ids)).
    pub(crate) fn folio_shared_for_madvise(&self, folio: FolioId) -> bool {
        if self.cfg.kernel.profile().folio_shared_by_mm_ids {
            self.mem.folio_maybe_mapped_shared(folio)
        } else {
            self.mem.folio_likely_mapped_shared(folio)
        }
    }

    /// Whether MADV_FREE (`free`), MADV_COLD or MADV_PAGEOUT leave a PMD-mapped THP alone
    /// as shared. 6.1 asks the head page: `page_mapcount(page) != 1` (the PMD mappings
    /// plus the head's PTE mappings) in `madvise_cold_or_pageout_pte_range`,
    /// `total_mapcount(page) != 1` in `madvise_free_huge_pmd`; later kernels ask of the
    /// folio ([`Self::folio_shared_for_madvise`];
    /// [`Profile::madvise_thp_shared_by_folio`](crate::kernel::Profile::madvise_thp_shared_by_folio)).
    pub(crate) fn pmd_folio_shared_for_madvise(&self, folio: FolioId, free: bool) -> bool {
        if self.cfg.kernel.profile().madvise_thp_shared_by_folio {
            return self.folio_shared_for_madvise(folio);
        }
        let f = &self.mem.folios[folio];
        if free { f.mapcount() != 1 } else { f.page_mapcount(0) != 1 }
    }

    /// The step `madvise_free_pte_range` and `madvise_cold_or_pageout_pte_range` share at a
    /// PTE mapping page `sub` of a large folio, at `a` of a walk up to `end`:
    /// - 6.1 splits the folio if page `page61` of it is mapped once (MADV_FREE asks the
    ///   first page, `folio_estimated_sharers`; COLD/PAGEOUT the page here, `page_mapcount`)
    ///   and looks at the PTE again; else, or if the split fails, it leaves the PMD;
    /// - later kernels batch the folio's PTEs (`folio_pte_batch`): a folio the batch does
    ///   not map whole is split unless maybe mapped shared (and the PTE looked at again),
    ///   or its batch is skipped
    ///   ([`Profile::madvise_batches_large_folios`](crate::kernel::Profile::madvise_batches_large_folios)).
    pub(crate) fn madvise_large_folio(
        &mut self,
        mm: MmId,
        a: VirtAddr,
        end: VirtAddr,
        folio: FolioId,
        sub: u16,
        page61: u16,
    ) -> AtLargeFolio {
        if !self.cfg.kernel.profile().madvise_batches_large_folios {
            if self.mem.folios[folio].page_mapcount(page61 as usize) != 1 || self.split_folio(folio).is_err()
            {
                return AtLargeFolio::Stop;
            }
            return AtLargeFolio::Again;
        }
        let nr = self.mem.folio_pte_batch(&self.vm, mm, a, end, folio, sub);
        if nr == self.mem.folios[folio].nr_pages() {
            AtLargeFolio::Whole(nr)
        } else if !self.folio_shared_for_madvise(folio) && self.split_folio(folio).is_ok() {
            AtLargeFolio::Again
        } else {
            AtLargeFolio::Skip(nr)
        }
    }

    /// `madvise_free_single_vma`: `lru_add_drain`, then `madvise_free_pte_range` on each PMD
    /// of `[start, end)`.
    fn madvise_free_single_vma(&mut self, mm: MmId, start: VirtAddr, end: VirtAddr) {
        self.mem.lru_add_drain();
        for (addr, next) in self.vm.mms[mm].pt.pmd_ranges(start, end) {
            self.madvise_free_pte_range(mm, addr, next);
        }
    }

    /// `madvise_free_pte_range` for `[addr, end)` inside one PMD. A PMD-mapped THP mapped
    /// only here that the range covers in part is split (`madvise_free_huge_pmd`), and the
    /// walk goes on over its PTEs if that worked. Swap entries are dropped at once
    /// (`free_swap_and_cache_nr`). A PTE-mapped large folio the range covers in part is split
    /// unless maybe mapped shared, and its pages looked at again; if the split fails, its
    /// PTEs are skipped. The folios left whole under the range are lazily freed
    /// (`madvise_free_folio`, or the whole THP in `madvise_free_huge_pmd`).
    fn madvise_free_pte_range(&mut self, mm: MmId, addr: VirtAddr, end: VirtAddr) {
        if let Some(&Pmd::Huge { folio, .. }) = self.vm.mms[mm].pt.pmd(addr) {
            if folio == HUGE_ZERO_FOLIO || self.pmd_folio_shared_for_madvise(folio, true) {
                return;
            }
            if end.0 - addr.0 == PMD_SIZE {
                // The whole THP is lazily freed: clean and old, without PG_swapbacked.
                self.mem.folios[folio].dirty = false;
                if let Some(fl) = self.vm.mms[mm].pt.pte_flags_mut(addr) {
                    *fl -= PteFlags::DIRTY | PteFlags::ACCESSED;
                }
                self.mem.folio_mark_lazyfree(folio, self.cfg.kernel.profile());
                return;
            }
            // Whether or not the split worked, the walk goes on only over a PTE table
            // (pte_offset_map_lock fails on a huge PMD).
            let _ = self.split_folio(folio);
            if matches!(self.vm.mms[mm].pt.pmd(addr), Some(Pmd::Huge { .. })) {
                return;
            }
        }
        let mut a = addr;
        while a < end {
            let mut nr = 1;
            match self.vm.mms[mm].pt.get_pte(a) {
                Pte::Swap { entry, .. } => {
                    self.vm.mms[mm].pt.set_pte(a, Pte::None);
                    self.swap.swap_free(&mut self.mem, &mut self.trace, entry);
                }
                Pte::Present { folio, sub, .. } if folio != ZERO_FOLIO => {
                    if self.mem.folios[folio].is_large() {
                        // 6.1 asks the first page (`folio_estimated_sharers`).
                        match self.madvise_large_folio(mm, a, end, folio, sub, 0) {
                            AtLargeFolio::Stop => break,
                            AtLargeFolio::Again => continue,
                            AtLargeFolio::Skip(n) => {
                                a = a.plus(n * PAGE_SIZE);
                                continue;
                            }
                            AtLargeFolio::Whole(n) => nr = n,
                        }
                    }
                    self.madvise_free_folio(mm, a, folio, nr);
                }
                _ => {}
            }
            a = a.plus(nr * PAGE_SIZE);
        }
    }

    /// The rest of `madvise_free_pte_range` for a folio mapped whole by the `nr` PTEs from
    /// `a`: a dirty or swap-cache folio is skipped if mapped elsewhere too, or if its swap
    /// slot is still referenced (`folio_free_swap` fails); it is cleaned (`folio_clear_dirty`).
    /// Its PTEs become clean and old (`clear_young_dirty_ptes`), and it is lazily freed
    /// (`folio_mark_lazyfree`): reclaim will discard it unless it is written to first.
    fn madvise_free_folio(&mut self, mm: MmId, a: VirtAddr, folio: FolioId, nr: u64) {
        let f = &self.mem.folios[folio];
        if f.swap.is_some() || f.dirty {
            if f.mapcount() != f.nr_pages() {
                return;
            }
            if f.swap.is_some() && !self.swap.folio_free_swap(&mut self.mem, folio) {
                return;
            }
            self.mem.folios[folio].dirty = false;
        }
        for i in 0..nr {
            if let Some(fl) = self.vm.mms[mm].pt.pte_flags_mut(a.plus(i * PAGE_SIZE)) {
                *fl -= PteFlags::DIRTY | PteFlags::ACCESSED;
            }
        }
        self.mem.folio_mark_lazyfree(folio, self.cfg.kernel.profile());
    }

    /// madvise behaviours that do not change VMAs.
    fn madvise_other(
        &mut self,
        mm: MmId,
        vma: VmaId,
        start: VirtAddr,
        end: VirtAddr,
        behavior: u64,
    ) -> KResult<VirtAddr> {
        match behavior {
            MADV_COLLAPSE => self.madvise_collapse(mm, vma, start, end)?,
            MADV_POPULATE_READ | MADV_POPULATE_WRITE => {
                self.madvise_populate_vma(mm, vma, start, end, behavior == MADV_POPULATE_WRITE)?
            }
            MADV_COLD | MADV_PAGEOUT => {
                self.madvise_cold_or_pageout(mm, vma, start, end, behavior == MADV_PAGEOUT)?
            }
            MADV_REMOVE => self.madvise_remove(vma, start, end)?,
            MADV_WILLNEED if self.vm.vmas[vma].file.is_some() && !self.vm.is_anon_shmem(&self.fs, vma) => {
                self.madvise_willneed_file(vma, start, end)
            }
            MADV_WILLNEED if self.vm.vmas[vma].file.is_none() => self.madvise_willneed_anon(mm, start, end),
            // Shared anonymous memory: shmem_swapin_range reads the object's swapped pages
            // back into the swap cache; the model never swaps shmem out (its MADV_PAGEOUT of
            // page-cache folios is not modelled), so there are none.
            MADV_WILLNEED => {}
            MADV_GUARD_INSTALL => self.madvise_guard_install(mm, vma, start, end)?,
            MADV_GUARD_REMOVE => self.vm.madvise_guard_remove(mm, vma, start, end)?,
            _ => {}
        }
        Ok(end)
    }

    /// `madvise_remove`: punch a hole in the file behind a shared writable mapping
    /// (`vfs_fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)`), so the pages go from
    /// every mapping and from the page cache. EINVAL on a locked VMA or one without a file,
    /// EACCES unless the mapping is shared and may be written (`vma_is_shared_maywrite`).
    fn madvise_remove(&mut self, vma: VmaId, start: VirtAddr, end: VirtAddr) -> KResult<()> {
        let v = &self.vm.vmas[vma];
        if v.flags.contains(VmFlags::LOCKED) {
            return Err(Errno::EINVAL);
        }
        let Some(file) = v.file else { return Err(Errno::EINVAL) };
        if !v.flags.contains(VmFlags::SHARED | VmFlags::MAYWRITE) {
            return Err(Errno::EACCES);
        }
        let first = v.linear_page_index(start).0;
        let last = first + (end.0 - start.0) / PAGE_SIZE;
        let inode = self.fs.files[file].inode;
        self.punch_hole(inode, first, last);
        Ok(())
    }

    /// `madvise_willneed` on anonymous memory: `walk_page_range` with `swapin_walk_ops`, whose
    /// `swapin_walk_pmd_entry` reads every swapped page of the range into the swap cache
    /// (`read_swap_cache_async`), leaving it unmapped: the swap PTEs stay, so pagemap and
    /// smaps (`Swap`, `SwapPss`) show what they showed, and a later fault maps the cached
    /// folio (`do_swap_page`). PMD leaves are skipped (`pmd_none_or_trans_huge_or_clear_bad`),
    /// as are non-swap entries (migration, guard markers).
    fn madvise_willneed_anon(&mut self, mm: MmId, start: VirtAddr, end: VirtAddr) {
        for (s, e) in self.vm.mms[mm].pt.pmd_ranges(start, end) {
            if !matches!(self.vm.mms[mm].pt.pmd(s), Some(crate::pagetable::Pmd::Table(_))) {
                continue;
            }
            for a in Self::pages_of(s, e) {
                let crate::pagetable::Pte::Swap { entry, .. } = self.vm.mms[mm].pt.get_pte(a) else {
                    continue;
                };
                self.swap.read_swap_cache_async(&mut self.mem, &mut self.trace, entry);
            }
        }
    }

    /// `madvise_willneed` on a regular file: `vfs_fadvise(POSIX_FADV_WILLNEED)` →
    /// `force_page_cache_readahead` of the range's pages, which `force_page_cache_ra` cuts to
    /// `max(bdi->io_pages, ra_pages)` (`ra_pages` here: `io_pages` is 1024 on our disks,
    /// below the 2048 read-ahead pages) and reads in 2 MiB chunks (`do_page_cache_ra`, no
    /// lookahead mark), up to EOF, skipping pages already cached.
    fn madvise_willneed_file(&mut self, vma: VmaId, start: VirtAddr, end: VirtAddr) {
        let inode = self.fs.files[self.vm.vmas[vma].file.expect("file vma")].inode;
        let mut index = self.vm.vmas[vma].linear_page_index(start).0;
        let mut nr = ((end.0 - start.0) / PAGE_SIZE).min(self.cfg.readahead_pages);
        while nr > 0 {
            let chunk = nr.min(PMD_SIZE / PAGE_SIZE);
            self.do_page_cache_ra(inode, index, chunk, 0);
            index += chunk;
            nr -= chunk;
        }
    }

    /// `madvise_guard_install`: the VMA (all of it, without a split) gets `VM_MAYBE_GUARD`
    /// and, if anonymous, its anon_vma; whatever is mapped in `[start, end)` is zapped
    /// (`zap_page_range_single`: a THP the range covers in part is split, existing markers
    /// stay) and every PTE of the range becomes a guard marker, page tables allocated as
    /// needed (`guard_install_set_pte`). Refused (EINVAL) on `VM_SPECIAL`, hugetlb and
    /// mlocked VMAs (`is_valid_guard_vma`).
    fn madvise_guard_install(&mut self, mm: MmId, vma: VmaId, start: VirtAddr, end: VirtAddr) -> KResult<()> {
        let v = &self.vm.vmas[vma];
        if v.flags.intersects(VmFlags::SPECIAL | VmFlags::HUGETLB | VmFlags::LOCKED) {
            return Err(Errno::EINVAL);
        }
        if end.0 - start.0 > crate::fault::MAX_FAULT_BYTES {
            // A marker per page: this would not finish (the kernel allocates the tables).
            self.not_modelled("installing guard markers over more than 64 GiB");
            return Ok(());
        }
        let anon = v.is_anonymous();
        self.vm.vmas[vma].flags |= VmFlags::MAYBE_GUARD;
        if anon {
            self.rmap.anon_vma_prepare(&mut self.vm, &mut self.trace, vma);
        }
        // The install walk gives up at the first PMD leaf or PTE that is neither none nor a
        // marker; the range is then zapped and the walk retried.
        let pt = &self.vm.mms[mm].pt;
        if pt.any_leaf_in(start, end) || pt.ptes_in(start, end).iter().any(|(_, p)| *p != Pte::Guard) {
            self.zap_range(mm, start, end);
        }
        let mut a = start;
        while a < end {
            self.vm.mms[mm].pt.set_pte(a, Pte::Guard);
            a = a.plus(PAGE_SIZE);
        }
        Ok(())
    }

    /// `madvise_update_vma`: no-op when nothing changes, else modify (merge or split).
    fn madvise_update_vma(
        &mut self,
        vma: VmaId,
        start: VirtAddr,
        end: VirtAddr,
        flags: VmFlags,
        name: AnonName,
    ) -> KResult<VirtAddr> {
        let v = &self.vm.vmas[vma];
        if v.flags == flags && v.anon_name.as_deref() == name.as_deref() {
            return Ok(v.end);
        }
        let nv = self.vma_modify_flags_name(vma, start, end, flags, name, MergeCaller::Madvise)?;
        Ok(self.vm.vmas[nv].end)
    }

    fn madvise_vma_anon_name(
        &mut self,
        vma: VmaId,
        start: VirtAddr,
        end: VirtAddr,
        name: AnonName,
    ) -> KResult<VirtAddr> {
        let v = &self.vm.vmas[vma];
        if v.file.is_some() && !self.vm.is_anon_shmem(&self.fs, vma) {
            return Err(Errno::EBADF);
        }
        let flags = v.flags;
        self.madvise_update_vma(vma, start, end, flags, name)
    }

    /// prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, addr, len, name): EINVAL without
    /// CONFIG_ANON_VMA_NAME, as on our machines.
    pub fn sys_set_vma_anon_name(
        &mut self,
        pid: Pid,
        start: u64,
        len_in: u64,
        name: Option<&str>,
    ) -> KResult<u64> {
        let mm = self.vm.mm_of(pid)?;
        if !self.cfg.anon_vma_name {
            return Err(Errno::EINVAL);
        }
        let name: AnonName = match name {
            None => None,
            Some(n) => {
                if n.len() > ANON_VMA_NAME_MAX_LEN - 1 {
                    return Err(Errno::EINVAL);
                }
                if n.bytes().any(|c| !(0x20..0x7f).contains(&c) || b"\\`$[]".contains(&c)) {
                    return Err(Errno::EINVAL);
                }
                Some(Arc::from(n))
            }
        };
        let Some(end) = madvise_range(start, len_in)? else { return Ok(0) };
        self.madvise_walk(mm, VirtAddr(start), VirtAddr(end), Visit::Name, &name).map(|_| 0)
    }
}

impl crate::mm::Vm {
    /// Whether a VMA is shared anonymous memory (`vma_is_anon_shmem`).
    pub fn is_anon_shmem(&self, fs: &crate::fs::Fs, vma: VmaId) -> bool {
        self.vmas[vma].file.is_some_and(|f| fs.inodes[fs.files[f].inode].kind == crate::fs::InodeKind::Shmem)
    }

    /// `madvise_guard_remove`: clear the guard markers of `[start, end)` (nothing else, and
    /// no page table is allocated). Mlocked VMAs are allowed; `VM_SPECIAL` and hugetlb ones
    /// are EINVAL.
    fn madvise_guard_remove(&mut self, mm: MmId, vma: VmaId, start: VirtAddr, end: VirtAddr) -> KResult<()> {
        if self.vmas[vma].flags.intersects(VmFlags::SPECIAL | VmFlags::HUGETLB) {
            return Err(Errno::EINVAL);
        }
        for (a, pte) in self.mms[mm].pt.ptes_in(start, end) {
            if pte == Pte::Guard {
                self.mms[mm].pt.set_pte(a, Pte::None);
            }
        }
        Ok(())
    }
}
