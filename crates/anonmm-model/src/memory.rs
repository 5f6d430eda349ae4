//! Page-level plumbing of mm/memory.c, mm/rmap.c and mm/huge_memory.c: allocating and
//! freeing folios, adding and removing rmap mappings, zapping ranges
//! (`zap_page_range_single`, `unmap_vmas`), splitting PMD mappings (`__split_huge_pmd`) and
//! freeing empty page tables (`free_pgtables`).

use crate::folio::{Folio, FolioId, HUGE_ZERO_FOLIO, Mapping, ZERO_FOLIO};
use crate::fs::InodeId;
use crate::mm::{MmId, System};
use crate::pagetable::{Pmd, Pte, PteFlags, PteTable, pmd_index};
use crate::types::{PAGE_SIZE, PMD_SHIFT, PMD_SIZE, PUD_SHIFT, PUD_SIZE, PgOff, VirtAddr};
use crate::vma::VmaId;

impl System {
    /// Unmap every page in `[start, end)` of an mm (`zap_page_range_single` over the range):
    /// PTEs and PMD leaves are cleared, rmap and references dropped, page tables kept.
    /// Guard markers stay (`zap_nonpresent_ptes` drops them only with
    /// `ZAP_FLAG_DROP_MARKER`).
    pub fn zap_range(&mut self, mm: MmId, start: VirtAddr, end: VirtAddr) {
        self.zap_range_details(mm, start, end, false);
    }

    /// [`System::zap_range`] with `ZAP_FLAG_DROP_MARKER` (`unmap_vmas`: munmap, exit): guard
    /// markers go too.
    pub fn zap_range_drop_markers(&mut self, mm: MmId, start: VirtAddr, end: VirtAddr) {
        self.zap_range_details(mm, start, end, true);
    }

    fn zap_range_details(&mut self, mm: MmId, start: VirtAddr, end: VirtAddr, drop_markers: bool) {
        if !self.mem.lazyfree_batch.is_empty()
            && !self.cfg.kernel.profile().zap_skips_lru_drain
            && self.vm.mms[mm].pt.any_present_in(start, end)
        {
            // Before 6.14 the mmu_gather's release (`free_pages_and_swap_cache`) drains the
            // CPU's LRU batches when the zap unmapped a page; the drain comes after the zap,
            // which no queued folio's reference changes.
            self.mem.lru_add_drain();
        }
        // __folio_remove_rmap munlocks what a VM_LOCKED VMA unmaps (munlock_vma_folio). Asked
        // only when a mapped folio is unmapped: a zap of none or swap entries (a move's old
        // range, an unfaulted page) needs no VMA lookup.
        let mut locked_in = None;
        let locked = |vm: &crate::mm::Vm, known: &mut Option<bool>| {
            *known.get_or_insert_with(|| vm.any_locked_in(mm, start, end))
        };
        if self.vm.mms[mm].pt.any_leaf_in(start, end) {
            self.vm.split_huge_pmds_partial(&mut self.mem, &mut self.trace, mm, start, end);
            for (a, folio, _) in self.vm.mms[mm].pt.huge_in(start, end) {
                // zap_huge_pmd: the PMD becomes none and the deposited table is freed.
                self.vm.mms[mm].pt.pmds.remove(&pmd_index(a));
                if locked(&self.vm, &mut locked_in) {
                    self.mem.munlock_mapped_at(&self.vm, mm, a, folio);
                }
                self.mem.folio_remove_rmap_pmd(&mut self.trace, folio, mm);
            }
            for (a, _, _, _) in self.vm.mms[mm].pt.migration_pmds_in(start, end) {
                // zap_huge_pmd of a PMD migration entry: nothing to unmap.
                self.vm.mms[mm].pt.pmds.remove(&pmd_index(a));
            }
        }
        // zap_pte_range: each entry's page is released as the entry is cleared, in address
        // order; releasing reads no page table. In a VM_LOCKED range the munlock reads the
        // VMAs, which hold the page table: there the entries left are all taken first. Whether
        // the range is locked is asked at its first mapped page.
        let mut from = start;
        if locked_in != Some(true) {
            let known = locked_in.is_some();
            let (mem, swap, trace) = (&mut self.mem, &mut self.swap, &mut self.trace);
            let pt = &mut self.vm.mms[mm].pt;
            let stop = pt.zap_ptes_in(start, end, drop_markers, |_, pte| {
                if !known && matches!(pte, Pte::Present { .. }) {
                    return false;
                }
                mem.drop_pte(swap, trace, mm, *pte);
                true
            });
            let Some(a) = stop else { return };
            from = a;
            if !locked(&self.vm, &mut locked_in) {
                let pt = &mut self.vm.mms[mm].pt;
                pt.zap_ptes_in(a, end, drop_markers, |_, pte| {
                    mem.drop_pte(swap, trace, mm, *pte);
                    true
                });
                return;
            }
        }
        for (a, pte) in self.vm.mms[mm].pt.take_ptes_in(from, end, drop_markers) {
            if let Pte::Present { folio, .. } = pte {
                self.mem.munlock_mapped_at(&self.vm, mm, a, folio);
            }
            self.mem.drop_pte(&mut self.swap, &mut self.trace, mm, pte);
        }
    }

    /// MADV_DONTNEED's zap with `reclaim_pt` (CONFIG_PT_RECLAIM): a PTE table whose whole
    /// 2 MiB was zapped and is now empty is freed (`try_to_free_pte`), so the next fault there
    /// may map a huge page.
    pub fn zap_range_reclaim_pt(&mut self, mm: MmId, start: VirtAddr, end: VirtAddr) {
        self.zap_range(mm, start, end);
        for key in self.vm.mms[mm].pt.pmd_keys_in(start, end) {
            let base = key << PMD_SHIFT;
            if base >= start.0
                && base + PMD_SIZE <= end.0
                && let Some(Pmd::Table(t)) = self.vm.mms[mm].pt.pmds.get(&key)
                && t.used == 0
            {
                self.vm.mms[mm].pt.pmds.remove(&key);
            }
        }
    }
}

impl crate::fs::Fs {
    /// The file rmap (`i_mmap` walk): every VMA of any mm mapping page `index` of `inode`,
    /// with the address it maps it at.
    pub fn file_rmap(&self, vm: &crate::mm::Vm, inode: InodeId, index: PgOff) -> Vec<(VmaId, VirtAddr)> {
        let mut out = Vec::new();
        for (id, v) in vm.vmas.iter() {
            let Some(f) = v.file else { continue };
            if self.files[f].inode != inode {
                continue;
            }
            if index >= v.pgoff && index.0 < v.pgoff.0 + v.pages() {
                out.push((id, v.start.plus((index.0 - v.pgoff.0) * PAGE_SIZE)));
            }
        }
        out
    }
}

impl crate::mm::Vm {
    /// `free_pgtables`: drop PTE tables whose 2 MiB span no VMA touches any more, and PMD
    /// tables whose 1 GiB span no VMA touches. `[hole_start, hole_end)` is the range just
    /// unmapped, which no VMA covers: its neighbours answer most of the "does a VMA touch
    /// this span" questions (the kernel passes them as floor and ceiling), where a tree
    /// search at the span's base would land far from the finger.
    pub fn free_pgtables(
        &mut self,
        mm: MmId,
        hole_start: VirtAddr,
        hole_end: VirtAddr,
        start: VirtAddr,
        end: VirtAddr,
    ) {
        // The hole's neighbours, looked up at the first empty table: most calls free none
        // (the tables still map other VMAs' pages), and then need no search.
        type Nb = (Option<(u64, u64)>, Option<(u64, u64)>);
        let mut nb: Option<Nb> = None;
        // Whether a VMA intersects [b, e): decided from prev and next when they settle it
        // (every VMA lies at or below prev, or at or above next), else by the tree.
        let mut touched = |m: &crate::mm::Mm, b: u64, e: u64| -> bool {
            let (prev, next) = *nb.get_or_insert_with(|| {
                let (prev, next) = m.vmas.around_lt(hole_start.0);
                (prev.map(|(s, e)| (s, e.end)), next.map(|(s, e)| (s, e.end)))
            });
            let hole_empty = next.is_none_or(|(s, _)| s >= hole_end.0);
            if hole_empty {
                let before = match prev {
                    Some((_, pe)) if pe <= b => Some(false),
                    Some((ps, _)) if ps < e => Some(true),
                    Some(_) => None,
                    None => Some(false),
                };
                let after = match next {
                    Some((ns, _)) if ns >= e => Some(false),
                    Some((_, ne)) if ne > b => Some(true),
                    Some(_) => None,
                    None => Some(false),
                };
                match (before, after) {
                    (Some(true), _) | (_, Some(true)) => return true,
                    (Some(false), Some(false)) => return false,
                    _ => {}
                }
            }
            m.intersects(VirtAddr(b), VirtAddr(e))
        };
        if start < end {
            let (lo, hi) = (pmd_index(start), pmd_index(VirtAddr(end.0 - 1)));
            let mut key = lo;
            while let Some(k) = self.mms[mm].pt.pmds.next_key(key, hi) {
                let base = k << PMD_SHIFT;
                // Anything mapped lies in a VMA (the checker's invariant), so only an empty
                // PTE table can be free to go.
                let empty = matches!(self.mms[mm].pt.pmds.get(&k), Some(Pmd::Table(t)) if t.used == 0);
                if empty && !touched(&self.mms[mm], base, base + PMD_SIZE) {
                    let old = self.mms[mm].pt.pmds.free_pte_table(k);
                    debug_assert!(old, "free_pgtables: a PMD entry that still maps");
                }
                key = k + 1;
            }
        }
        let (lo, hi) = (start.0 >> PUD_SHIFT, end.0.saturating_sub(1) >> PUD_SHIFT);
        let mut pud = lo;
        while let Some(p) = self.mms[mm].pt.pmds.next_pud(pud, hi) {
            let base = p << PUD_SHIFT;
            if self.mms[mm].pt.pmds.pud_used(p) == 0 && !touched(&self.mms[mm], base, base + PUD_SIZE) {
                self.mms[mm].pt.pmds.pud_free(p);
            }
            pud = p + 1;
        }
    }

    /// `__split_huge_pmd`: turn a PMD leaf covering `addr` into a PTE table mapping the same
    /// pages. The huge zero folio becomes 512 zero-page PTEs, a PMD migration entry 512 PTE
    /// migration entries.
    ///
    /// The test for an mm without huge leaves (most of them) is inlined: VMA calls ask at
    /// every new boundary.
    #[inline]
    pub fn split_huge_pmd(
        &mut self,
        mem: &mut crate::folio::FolioStore,
        trace: &mut crate::stats::Trace,
        mm: MmId,
        addr: VirtAddr,
    ) {
        if self.mms[mm].pt.pmds.has_leaves() {
            self.split_huge_pmd_leaf(mem, trace, mm, addr);
        }
    }

    /// [`Vm::split_huge_pmd`] in an mm that has huge leaves somewhere.
    #[inline(never)]
    fn split_huge_pmd_leaf(
        &mut self,
        mem: &mut crate::folio::FolioStore,
        trace: &mut crate::stats::Trace,
        mm: MmId,
        addr: VirtAddr,
    ) {
        let key = pmd_index(addr);
        let (folio, flags) = match self.mms[mm].pt.pmds.get(&key) {
            Some(&Pmd::Huge { folio, flags }) => (folio, flags),
            Some(&Pmd::Migration { folio, kind, flags }) => {
                // A PMD migration entry becomes 512 PTE migration entries of the same kind,
                // young, dirty and soft-dirty; no mapcount moves (there is none).
                let mut t = Box::new(PteTable::default());
                for (i, pte) in t.ptes.iter_mut().enumerate() {
                    *pte = Pte::Migration { folio, sub: i as u16, kind, flags };
                }
                t.used = t.ptes.len() as u16;
                self.mms[mm].pt.set_pmd(key, Pmd::Table(t));
                trace.stats.thp_splits += 1;
                return;
            }
            _ => return,
        };
        let mut t = Box::new(PteTable::default());
        for (i, pte) in t.ptes.iter_mut().enumerate() {
            *pte = if folio == HUGE_ZERO_FOLIO {
                Pte::Present { folio: ZERO_FOLIO, sub: 0, flags: flags - PteFlags::WRITE }
            } else {
                Pte::Present { folio, sub: i as u16, flags }
            };
        }
        t.used = t.ptes.len() as u16;
        if folio != HUGE_ZERO_FOLIO {
            // __split_huge_pmd_locked: every PTE inherits the head page's exclusivity
            // (folio_add_anon_rmap_ptes of all pages, then folio_remove_rmap_pmd).
            let f = &mut mem.folios[folio];
            // A dirty PMD dirties the folio before its bit spreads to the PTEs.
            f.dirty |= flags.contains(PteFlags::DIRTY);
            let excl = f.is_anon() && f.pages[0].anon_exclusive;
            for p in f.pages.iter_mut() {
                p.mapcount += 1;
                p.anon_exclusive = excl;
            }
            let nr = f.nr_pages();
            f.add_large_mapcount(nr, mm);
            f.entire_mapcount -= 1;
            f.sub_large_mapcount(1, mm);
            // folio_add_anon_rmap_ptes of every page mlocks the folio (mlock_vma_folio), and
            // folio_remove_rmap_pmd munlocks it (munlock_vma_folio): a count of one more,
            // then one less.
            if let Some(v) = self.mms[mm].vma_lookup(addr) {
                mem.mlock_vma_folio(self, folio, v, nr);
                mem.munlock_vma_folio(self, folio, v);
            }
        }
        self.mms[mm].pt.set_pmd(key, Pmd::Table(t));
        trace.stats.thp_splits += 1;
    }

    /// Split every PMD leaf (or PMD migration entry) that `[start, end)` covers only in part.
    pub fn split_huge_pmds_partial(
        &mut self,
        mem: &mut crate::folio::FolioStore,
        trace: &mut crate::stats::Trace,
        mm: MmId,
        start: VirtAddr,
        end: VirtAddr,
    ) {
        let pt = &self.mms[mm].pt;
        if !pt.any_leaf_in(start, end) {
            return;
        }
        let mut leaves: Vec<VirtAddr> = pt.huge_in(start, end).into_iter().map(|(a, _, _)| a).collect();
        leaves.extend(pt.migration_pmds_in(start, end).into_iter().map(|(a, _, _, _)| a));
        for a in leaves {
            if a < start || a.0 + PMD_SIZE > end.0 {
                self.split_huge_pmd(mem, trace, mm, a);
            }
        }
    }
}

impl crate::folio::FolioStore {
    /// Allocate a folio (`folio_alloc`), zero-filled.
    pub fn folio_alloc(&mut self, trace: &mut crate::stats::Trace, order: u8) -> FolioId {
        trace.stats.folios_allocated += 1;
        self.folios.alloc(Folio::new(order, Mapping::None, PgOff(0)))
    }

    /// Free a folio once nothing references it.
    #[inline]
    pub fn folio_put_if_unused(&mut self, trace: &mut crate::stats::Trace, folio: FolioId) {
        if folio == ZERO_FOLIO || folio == HUGE_ZERO_FOLIO {
            return;
        }
        if self.folios[folio].refcount() == 0 {
            self.folios.release(folio);
            self.freed(trace, folio);
        }
    }

    /// What freeing `folio` (its slot released) leaves to note: the count, and its slot in
    /// MADV_FREE's batch ([`FolioStore::lazyfree_forget`]).
    #[inline(always)]
    fn freed(&mut self, trace: &mut crate::stats::Trace, folio: FolioId) {
        trace.stats.folios_freed += 1;
        if !self.lazyfree_batch.is_empty() {
            self.lazyfree_forget(folio);
        }
    }

    /// `folio_remove_rmap_pte` for a mapping in `mm`, and free when unused.
    #[inline]
    pub fn folio_remove_rmap_pte(
        &mut self,
        trace: &mut crate::stats::Trace,
        folio: FolioId,
        sub: u16,
        mm: MmId,
    ) {
        self.folio_remove_rmap_pte_freed(trace, folio, sub, mm);
    }

    /// [`FolioStore::folio_remove_rmap_pte`], saying whether the folio was freed.
    #[inline(always)]
    fn folio_remove_rmap_pte_freed(
        &mut self,
        trace: &mut crate::stats::Trace,
        folio: FolioId,
        sub: u16,
        mm: MmId,
    ) -> bool {
        if folio == ZERO_FOLIO || folio == HUGE_ZERO_FOLIO {
            return false;
        }
        // A small folio, most unmaps: no per-mm mapcounts, and an anon page unmapped is freed
        // (or left to the swap cache), with one lookup of the folio for both.
        let small = self.folios.update_or_release(folio, |f| {
            let (anon, entire, extra) = (f.is_anon(), f.entire_mapcount, f.extra_refs);
            let Some(p) = f.small_page_mut() else { return (None, false) };
            debug_assert_eq!(sub, 0, "page {sub} of a small folio");
            // Folio::refcount of a small folio after the removal, without asking which it is
            // again. An unused folio is freed whole: its counts need no update.
            let unused = p.mapcount == 1 && entire == 0 && extra == 0;
            if !unused {
                p.mapcount -= 1;
                if anon && p.mapcount + entire == 0 {
                    p.anon_exclusive = false;
                }
            }
            (Some(unused), unused)
        });
        match small {
            Some(freed) => {
                if freed {
                    self.freed(trace, folio);
                }
                freed
            }
            None => self.folio_remove_rmap_pte_large(trace, folio, sub, mm),
        }
    }

    /// [`FolioStore::folio_remove_rmap_pte_freed`] of a large folio: its pages keep
    /// PageAnonExclusive when unmapped (__folio_remove_rmap leaves it), and UFFDIO_MOVE reads
    /// the first page's even when only later pages are mapped.
    #[inline(never)]
    fn folio_remove_rmap_pte_large(
        &mut self,
        trace: &mut crate::stats::Trace,
        folio: FolioId,
        sub: u16,
        mm: MmId,
    ) -> bool {
        let f = &mut self.folios[folio];
        f.pages[sub as usize].mapcount -= 1;
        f.sub_large_mapcount(1, mm);
        self.folio_put_if_unused(trace, folio);
        !self.folios.contains(folio)
    }

    /// `folio_remove_rmap_pmd` for a mapping in `mm`, and free when unused.
    pub fn folio_remove_rmap_pmd(&mut self, trace: &mut crate::stats::Trace, folio: FolioId, mm: MmId) {
        if folio == HUGE_ZERO_FOLIO {
            return;
        }
        let f = &mut self.folios[folio];
        f.entire_mapcount -= 1;
        f.sub_large_mapcount(1, mm);
        self.folio_put_if_unused(trace, folio);
    }

    /// Drop the page cache's reference to a folio.
    pub fn page_cache_release(&mut self, trace: &mut crate::stats::Trace, folio: FolioId) {
        self.folios[folio].extra_refs -= 1;
        self.folio_put_if_unused(trace, folio);
    }

    /// `folio_add_new_anon_rmap`: a new folio mapped at `addr` (the folio's first page) of
    /// `vma`; exclusive folios get the VMA's anon_vma and PageAnonExclusive on every page.
    pub fn folio_add_new_anon_rmap(
        &mut self,
        vm: &crate::mm::Vm,
        folio: FolioId,
        vma: VmaId,
        addr: VirtAddr,
        pmd: bool,
    ) {
        let v = &vm.vmas[vma];
        let av = v.anon_vma.expect("anon_vma_prepare before folio_add_new_anon_rmap");
        let index = v.linear_page_index(addr);
        let mm = v.mm;
        let f = &mut self.folios[folio];
        f.mapping = Mapping::Anon(av);
        f.index = index;
        if pmd {
            f.entire_mapcount = 1;
        }
        if pmd {
            // A PMD-mapped THP tracks PageAnonExclusive on its head page only.
            f.pages[0].anon_exclusive = true;
        } else {
            for p in f.pages.iter_mut() {
                p.mapcount = 1;
                p.anon_exclusive = true;
            }
        }
        f.set_large_mapcount(mm);
    }

    /// Release what a cleared PTE of `mm` held (`zap_present_ptes`, `zap_nonpresent_ptes`).
    #[inline(always)]
    pub fn drop_pte(
        &mut self,
        swap: &mut crate::swap::SwapDevice,
        trace: &mut crate::stats::Trace,
        mm: MmId,
        pte: Pte,
    ) {
        if let Pte::Present { folio, sub, .. } = pte {
            // A freed folio was in no swap cache (the cache holds a reference).
            if !self.folio_remove_rmap_pte_freed(trace, folio, sub, mm) {
                swap.free_swap_cache(self, trace, folio);
            }
            return;
        }
        self.drop_nonpresent_pte(swap, trace, pte);
    }

    /// [`FolioStore::drop_pte`] of an entry that maps no page.
    #[inline(never)]
    fn drop_nonpresent_pte(
        &mut self,
        swap: &mut crate::swap::SwapDevice,
        trace: &mut crate::stats::Trace,
        pte: Pte,
    ) {
        match pte {
            Pte::None | Pte::Present { .. } => {}
            Pte::Swap { entry, .. } => swap.swap_free(self, trace, entry),
            // zap_nonpresent_ptes: try_to_migrate already took the mapcount and reference.
            Pte::Migration { .. } => {}
            Pte::Guard => {}
        }
    }
}
