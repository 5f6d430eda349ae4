//! MADV_COLLAPSE (mm/khugepaged.c): `madvise_collapse`, `hpage_collapse_scan_pmd` (with its
//! `userfaultfd_armed` rule), `collapse_huge_page` and `madvise_collapse_errno`.

use crate::errno::{Errno, KResult};
use crate::folio::{FolioId, ZERO_FOLIO};
use crate::mm::{MmId, System};
use crate::pagetable::{Pmd, Pte, PteFlags, pmd_index};
use crate::types::{HPAGE_PMD_ORDER, PAGE_SIZE, PMD_SIZE, VirtAddr};
use crate::vma::{VmFlags, VmaId};

/// Why one PMD range could not be collapsed (`enum scan_result`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ScanFail {
    /// No PMD table (PUD none): later PMDs are still tried.
    PmdNull,
    /// A PMD table with this entry none: the whole collapse stops.
    PmdNone,
    PageAnon,
    PageCount,
    /// A none or zero-page PTE in a VMA registered with a userfaultfd (the collapse would
    /// fill a page its missing faults should report).
    ExceedNonePte,
    /// A guard marker (`SCAN_PTE_NON_PRESENT`): later PMDs are still tried.
    PteNonPresent,
    /// No writable PTE (`SCAN_PAGE_RO`, before 6.18: `collapse_read_only_ptes` off): later
    /// PMDs are still tried.
    PageRo,
}

impl ScanFail {
    /// `madvise_collapse_errno`; `none_pte_ebusy`: the profile's `collapse_none_pte_ebusy`.
    fn errno(self, none_pte_ebusy: bool) -> Errno {
        match self {
            ScanFail::PageCount => Errno::EAGAIN,
            ScanFail::ExceedNonePte if none_pte_ebusy => Errno::EBUSY,
            ScanFail::ExceedNonePte
            | ScanFail::PmdNull
            | ScanFail::PmdNone
            | ScanFail::PageAnon
            | ScanFail::PteNonPresent
            | ScanFail::PageRo => Errno::EINVAL,
        }
    }
}

impl System {
    /// `madvise_collapse` for one VMA piece `[start, end)`.
    pub fn madvise_collapse(&mut self, mm: MmId, vma: VmaId, start: VirtAddr, end: VirtAddr) -> KResult<()> {
        // thp_vma_allowable_order(TVA_FORCED_COLLAPSE): ignores the sysfs mode but not
        // VM_NOHUGEPAGE; an aligned PMD must fit; anonymous VMAs need an anon_vma.
        let v = &self.vm.vmas[vma];
        if v.flags.contains(VmFlags::NOHUGEPAGE) || v.flags.intersects(VmFlags::SPECIAL | VmFlags::HUGETLB) {
            return Err(Errno::EINVAL);
        }
        // thp_vma_suitable_order: a file VMA must map PMD-aligned offsets at PMD-aligned
        // addresses.
        if !v.is_anonymous() && !(v.start.0 / PAGE_SIZE).wrapping_sub(v.pgoff.0).is_multiple_of(512) {
            return Err(Errno::EINVAL);
        }
        let h = VirtAddr(v.end.0.saturating_sub(PMD_SIZE)).pmd_down();
        if h < v.start || h.0 + PMD_SIZE > v.end.0 || v.end.0 < PMD_SIZE {
            return Err(Errno::EINVAL);
        }
        let shmem = self.vm.is_anon_shmem(&self.fs, vma);
        if !shmem && (!v.is_anonymous() || v.anon_vma.is_none()) {
            // Regular files need CONFIG_READ_ONLY_THP_FOR_FS, which our kernel lacks.
            return Err(Errno::EINVAL);
        }
        // lru_add_drain_all() before the scan.
        self.mem.lru_add_drain();
        let hstart = (start.0 + PMD_SIZE - 1) & !(PMD_SIZE - 1);
        let hend = end.0 & !(PMD_SIZE - 1);
        // A range inside one PMD that does not start on a boundary has hstart > hend: the
        // kernel's `thps == (hend - hstart) >> HPAGE_PMD_SHIFT` then compares against an
        // underflowed count and fails (SCAN_FAIL, EINVAL); hstart == hend succeeds.
        if hstart > hend {
            return Err(Errno::EINVAL);
        }
        if shmem && hstart < hend {
            // collapse_file builds a PMD-sized page-cache folio: not modelled yet.
            self.not_modelled("MADV_COLLAPSE of a whole PMD of shared memory (collapse_file)");
            return Ok(());
        }
        let none_pte_ebusy = self.cfg.kernel.profile().collapse_none_pte_ebusy;
        let mut last_fail = None;
        let mut h = hstart;
        while h < hend {
            match self.collapse_pmd(mm, vma, VirtAddr(h)) {
                Ok(()) => {}
                // Only some results let madvise_collapse go on to the next PMD.
                Err(
                    f
                    @ (ScanFail::PmdNull | ScanFail::PageCount | ScanFail::PteNonPresent | ScanFail::PageRo),
                ) => last_fail = Some(f),
                Err(f) => return Err(f.errno(none_pte_ebusy)),
            }
            h += PMD_SIZE;
        }
        match last_fail {
            None => Ok(()),
            Some(f) => Err(f.errno(none_pte_ebusy)),
        }
    }

    /// `hpage_collapse_scan_pmd` + `collapse_huge_page` for the PMD at `h`.
    fn collapse_pmd(&mut self, mm: MmId, vma: VmaId, h: VirtAddr) -> Result<(), ScanFail> {
        match self.vm.mms[mm].pt.pmd(h) {
            None if self.vm.mms[mm].pt.pud_present(h) => return Err(ScanFail::PmdNone),
            None => return Err(ScanFail::PmdNull),
            // SCAN_PMD_MAPPED; check_pmd_state says so of a PMD migration entry too (the
            // migration ends with a PMD mapping a folio again).
            Some(Pmd::Huge { .. } | Pmd::Migration { .. }) => return Ok(()),
            Some(Pmd::Table(_)) => {}
        }
        if self.vm.vmas[vma].flags.intersects(VmFlags::UFFD_FLAGS) {
            // hpage_collapse_scan_pmd, PTE by PTE: with userfaultfd_armed, the first none or
            // zero-page PTE is SCAN_EXCEED_NONE_PTE (swap entries are passed over).
            for i in 0..PMD_SIZE / PAGE_SIZE {
                match self.vm.mms[mm].pt.get_pte(h.plus(i * PAGE_SIZE)) {
                    Pte::None => return Err(ScanFail::ExceedNonePte),
                    Pte::Present { folio, .. } if folio == ZERO_FOLIO => return Err(ScanFail::ExceedNonePte),
                    Pte::Present { folio, .. } => {
                        let f = &self.mem.folios[folio];
                        if !f.is_anon() {
                            return Err(ScanFail::PageAnon);
                        }
                        if f.pincount > 0 || f.extra_refs > u32::from(f.swap.is_some()) {
                            return Err(ScanFail::PageCount);
                        }
                    }
                    Pte::Swap { .. } | Pte::Migration { .. } => {}
                    Pte::Guard => return Err(ScanFail::PteNonPresent),
                }
            }
        }
        let mut ptes = self.vm.mms[mm].pt.ptes_in(h, h.plus(PMD_SIZE));
        // hpage_collapse_scan_pmd stops at a non-swap entry that is no migration entry (a
        // guard marker) with SCAN_PTE_NON_PRESENT, after checking the pages before it.
        if let Some(i) = ptes.iter().position(|(_, p)| *p == Pte::Guard) {
            self.mem.collapse_scan_ptes(&ptes[..i], false)?;
            return Err(ScanFail::PteNonPresent);
        }
        if ptes.iter().any(|(_, p)| matches!(p, Pte::Swap { .. })) {
            // __collapse_huge_page_swapin would read them in first.
            self.not_modelled("MADV_COLLAPSE over swap entries (__collapse_huge_page_swapin)");
            return Ok(());
        }
        // Before 6.18, a PMD without a writable PTE is SCAN_PAGE_RO.
        let needs_writable = !self.cfg.kernel.profile().collapse_read_only_ptes;
        self.mem.collapse_scan_ptes(&ptes, needs_writable)?;
        let mut waits: Vec<FolioId> = Vec::new();
        for (_, pte) in &ptes {
            if let Pte::Migration { folio, .. } = *pte
                && !waits.contains(&folio)
            {
                waits.push(folio);
            }
        }
        if !waits.is_empty() {
            // __collapse_huge_page_swapin runs do_swap_page on migration entries too, which
            // waits for the migrations; __collapse_huge_page_isolate then looks again.
            for folio in waits {
                if !self.migration_entry_wait(folio) {
                    return Ok(());
                }
            }
            ptes = self.vm.mms[mm].pt.ptes_in(h, h.plus(PMD_SIZE));
            self.mem.collapse_scan_ptes(&ptes, needs_writable)?;
        }
        // Copy every page into a new THP; none and zero-page PTEs read as zeroes.
        let new = self.mem.folio_alloc(&mut self.trace, HPAGE_PMD_ORDER);
        self.trace.stats.thp_allocated += 1;
        for (a, pte) in ptes {
            if let Pte::Present { folio, sub, .. } = pte
                && folio != ZERO_FOLIO
            {
                let i = ((a.0 - h.0) / PAGE_SIZE) as usize;
                self.mem.folios[new].pages[i].tag = self.mem.folios[folio].pages[sub as usize].tag;
            }
            self.vm.mms[mm].pt.set_pte(a, Pte::None);
            if let Pte::Present { folio, .. } = pte {
                // __collapse_huge_page_copy_succeeded: folio_remove_rmap_pte munlocks.
                self.mem.munlock_vma_folio(&self.vm, folio, vma);
            }
            self.mem.drop_pte(&mut self.swap, &mut self.trace, mm, pte);
        }
        self.vm.mms[mm].pt.pmds.remove(&pmd_index(h));
        self.mem.folio_add_new_anon_rmap(&self.vm, new, vma, h, true);
        // collapse_huge_page: folio_add_lru_vma mlocks the THP in a VM_LOCKED VMA.
        self.mem.folio_add_lru_vma(&self.vm, new, vma);
        let mut flags = PteFlags::ACCESSED | PteFlags::DIRTY;
        if self.vm.vmas[vma].flags.contains(VmFlags::WRITE) {
            flags |= PteFlags::WRITE;
        }
        self.vm.mms[mm].pt.set_pmd(pmd_index(h), Pmd::Huge { folio: new, flags });
        Ok(())
    }
}

impl crate::folio::FolioStore {
    /// The per-page checks of `hpage_collapse_scan_pmd` (and `__collapse_huge_page_isolate`)
    /// on the present PTEs of one PMD; `needs_writable`: no writable PTE is `SCAN_PAGE_RO`
    /// (before 6.18).
    fn collapse_scan_ptes(&self, ptes: &[(VirtAddr, Pte)], needs_writable: bool) -> Result<(), ScanFail> {
        let mut writable = false;
        for (_, pte) in ptes {
            let Pte::Present { folio, flags, .. } = *pte else { continue };
            if folio == ZERO_FOLIO {
                continue;
            }
            let f = &self.folios[folio];
            if !f.is_anon() {
                return Err(ScanFail::PageAnon);
            }
            // is_refcount_suitable: the swap cache's reference is expected.
            if f.pincount > 0 || f.extra_refs > u32::from(f.swap.is_some()) {
                return Err(ScanFail::PageCount);
            }
            writable |= flags.contains(PteFlags::WRITE);
        }
        // From 6.18 a read-only range collapses too (the oracle collapses a range whose only
        // page is write-protected after fork).
        if needs_writable && !writable {
            return Err(ScanFail::PageRo);
        }
        Ok(())
    }
}
