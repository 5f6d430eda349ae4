//! Splitting a large anonymous folio into order-0 folios (mm/huge_memory.c): `split_folio` →
//! `split_huge_page_to_list_to_order` → `__folio_split`, with `can_split_folio`,
//! `unmap_folio` (mm/rmap.c `try_to_migrate`), `__split_unmapped_folio` and `remap_page`
//! (mm/migrate.c `remove_migration_ptes`, `try_to_map_unused_to_zeropage`).
//!
//! The kernel replaces every mapping of the folio by a migration entry, splits the folio
//! while nothing maps it, and puts the mappings back, each now naming its own small folio.
//! The model runs one step at a time, so nothing can observe the migration entries: it
//! rewrites each mapping in place, which leaves the same page tables, mapcounts, PTE bits
//! and PageAnonExclusive bits as the round trip through migration entries does.

use crate::errno::{Errno, KResult};
use crate::folio::{Folio, FolioId, HUGE_ZERO_FOLIO, Mapping, ZERO_FOLIO};
use crate::mm::{MmId, System};
use crate::pagetable::{Pte, PteFlags, SwapEntry, Walk};
use crate::types::{PAGE_SIZE, VirtAddr};
use crate::vma::{VmFlags, VmaId};

/// One mapping of a folio, as `page_vma_mapped_walk` finds it in one VMA.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FolioMapping {
    /// The address space of the mapping.
    pub mm: MmId,
    /// The VMA the walk found it in.
    pub vma: VmaId,
    /// The mapped address: the PMD start for a PMD mapping.
    pub addr: VirtAddr,
    /// `Some(page)` for a PTE mapping page `page` of the folio, `None` for a PMD mapping of
    /// the whole folio.
    pub sub: Option<u16>,
}

impl System {
    /// `split_folio(folio)`: split a large anonymous folio into order-0 folios
    /// (`split_huge_page_to_list_to_order(&folio->page, NULL, 0)` → `__folio_split`).
    ///
    /// - An order-0 folio cannot be split further: EINVAL. The huge zero folio: EBUSY
    ///   (`is_huge_zero_folio`), as is an anonymous folio nothing maps (`folio_get_anon_vma`
    ///   finds no anon_vma to lock) and one without mapping (truncated).
    /// - `can_split_folio` fails on any reference that is not a mapping or the swap cache's,
    ///   such as a long-term pin: EAGAIN, and nothing changes.
    /// - `unmap_folio`: every PMD mapping is split (`TTU_SPLIT_HUGE_PMD`: with freeze, the
    ///   head page's PageAnonExclusive spreads to every PTE, as `__split_huge_pmd_locked`
    ///   does), and every PTE becomes a migration entry that remembers write, young, dirty,
    ///   soft-dirty and exclusivity (`try_to_migrate_one`).
    /// - `__split_unmapped_folio`: page `i` becomes a folio of its own with
    ///   `index = old.index + i` and the same `mapping`; in the swap cache, it caches slot
    ///   `folio->swap + i`. The first page keeps the folio's identity (the head page).
    /// - `remap_page` (`remove_migration_ptes` with `RMP_USE_SHARED_ZEROPAGE`): each
    ///   migration entry becomes a PTE with the same bits mapping the new folio, exclusive
    ///   again where it was; except that a page still zero-filled is mapped to the shared
    ///   zero page instead (`try_to_map_unused_to_zeropage`, not in a VM_LOCKED VMA or for an
    ///   mlocked folio), and then freed.
    /// - New folios nothing maps any more (zero-filled, or pages no longer mapped anywhere,
    ///   as after a partial munmap) leave the swap cache and are freed
    ///   (`free_folio_and_swap_cache`).
    pub fn split_folio(&mut self, folio: FolioId) -> KResult<()> {
        if !self.mem.folios.contains(folio) || folio == ZERO_FOLIO {
            return Err(Errno::EINVAL);
        }
        if folio == HUGE_ZERO_FOLIO {
            return Err(Errno::EBUSY);
        }
        let f = &self.mem.folios[folio];
        if !f.is_large() {
            // new_order >= folio_order(folio)
            return Err(Errno::EINVAL);
        }
        match f.mapping {
            Mapping::None => return Err(Errno::EBUSY),
            Mapping::File(_) => {
                // The model's page cache holds order-0 folios only.
                self.not_modelled("split_folio of a large page-cache folio");
                return Err(Errno::EBUSY);
            }
            Mapping::Anon(_) => {}
        }
        // folio_get_anon_vma: only a mapped folio's anon_vma is known to be alive.
        if !f.is_mapped() {
            return Err(Errno::EBUSY);
        }
        if !self.mem.can_split_folio(folio) {
            return Err(Errno::EAGAIN);
        }
        let maps = self.mem.folio_mappings(&self.vm, &self.rmap, folio);
        // unmap_folio: every mapping's rmap removal in a VM_LOCKED VMA munlocks the folio
        // (the freezing PMD split's folio_remove_rmap_pmd, try_to_migrate_one's
        // folio_remove_rmap_pte); the new folios inherit what is left of PG_mlocked.
        for m in &maps {
            self.mem.munlock_vma_folio(&self.vm, folio, m.vma);
        }
        // unmap_folio: PMD mappings are split first (TTU_SPLIT_HUGE_PMD).
        for m in maps.iter().filter(|m| m.sub.is_none()) {
            self.vm.split_huge_pmd(&mut self.mem, &mut self.trace, m.mm, m.addr);
        }
        let maps = self.mem.folio_mappings(&self.vm, &self.rmap, folio);
        // try_to_migrate_one: a dirty PTE marks the folio dirty, and the new folios inherit
        // PG_dirty (and PG_swapbacked) from it.
        let dirty = maps.iter().any(|m| {
            matches!(self.vm.mms[m.mm].pt.get_pte(m.addr), Pte::Present { flags, .. } if flags.contains(PteFlags::DIRTY))
        });
        self.mem.folios[folio].dirty |= dirty;
        let new = self.split_unmapped_folio(folio);
        self.trace.stats.folio_splits += 1;
        // remap_page: each mapping now names the folio of its page.
        for m in &maps {
            let sub = m.sub.expect("PMD mappings were split") as usize;
            let Pte::Present { flags, .. } = self.vm.mms[m.mm].pt.get_pte(m.addr) else { continue };
            let (nf, zero) = (new[sub], self.mem.folios[new[sub]].pages[0].tag == 0);
            if zero
                && self.cfg.kernel.profile().split_maps_unused_to_zeropage
                && !self.mem.folios[nf].mlocked
                && !self.vm.vmas[m.vma].flags.contains(VmFlags::LOCKED)
            {
                // try_to_map_unused_to_zeropage: a special, read-only zero-page PTE that
                // keeps only the soft-dirty bit of the entry.
                let zf = PteFlags::ACCESSED | (flags & PteFlags::SOFT_DIRTY);
                self.vm.mms[m.mm].pt.set_pte(m.addr, Pte::Present { folio: ZERO_FOLIO, sub: 0, flags: zf });
                self.mem.folio_remove_rmap_pte(&mut self.trace, nf, 0, m.mm);
            } else {
                self.vm.mms[m.mm].pt.set_pte(m.addr, Pte::Present { folio: nf, sub: 0, flags });
                // remove_migration_pte → folio_add_anon_rmap_pte → mlock_vma_folio.
                self.mem.mlock_vma_folio(&self.vm, nf, m.vma, 1);
            }
        }
        // free_folio_and_swap_cache for every new folio (the head too: the caller's
        // folio_put would leave an unmapped head in the swap cache only until reclaim, which
        // no user can tell apart).
        for nf in new {
            if self.mem.folios.contains(nf) {
                self.swap.free_swap_cache(&mut self.mem, &mut self.trace, nf);
            }
            if self.mem.folios.contains(nf) {
                self.mem.folio_put_if_unused(&mut self.trace, nf);
            }
        }
        Ok(())
    }

    /// `__split_unmapped_folio` to order 0 (uniform split): page `i` of `folio` becomes a
    /// folio of its own, with its per-page state, `index + i`, the same mapping and, in the
    /// swap cache, slot `swap + i`. Mappings are left naming the old folio and page: the
    /// caller rewrites them. Returns the new folios by page (the first is `folio` itself).
    fn split_unmapped_folio(&mut self, folio: FolioId) -> Vec<FolioId> {
        let old = self.mem.folios[folio].clone();
        let swap_refs = u32::from(old.swap.is_some());
        let mut out = Vec::with_capacity(old.pages.len());
        out.push(folio);
        for (i, page) in old.pages.iter().enumerate().skip(1) {
            let mut nf = Folio::new(0, old.mapping, old.index.plus(i as u64));
            nf.pages[0] = *page;
            nf.dirty = old.dirty;
            nf.lazyfree = old.lazyfree;
            // PG_mlocked (and PG_unevictable) go to every new folio; lru_add_split_folio
            // starts a tail's mlock_count at zero, the head keeps its own.
            nf.mlocked = old.mlocked;
            nf.extra_refs = swap_refs;
            nf.swap = old.swap.map(|e| SwapEntry(e.0 + i as u32));
            let id = self.mem.folios.alloc(nf);
            self.trace.stats.folios_allocated += 1;
            if let Some(e) = self.mem.folios[id].swap {
                // __swap_cache_replace_folio: the slot now names the new folio.
                if let Some(s) = self.swap.slots.get_mut(&e.0) {
                    s.cache = Some(id);
                }
            }
            out.push(id);
        }
        let head = &mut self.mem.folios[folio];
        head.order = 0;
        // Small folios keep no per-mm mapcounts.
        head.pages.make_small();
        debug_assert_eq!(head.entire_mapcount, 0, "PMD mappings are split before the folio");
        out
    }
}

impl crate::folio::FolioStore {
    /// `folio_maybe_mapped_shared` (include/linux/mm.h): a small folio mapped more than once;
    /// a large one mapped more than once with a PMD mapping among them, or mapped more times
    /// than it has pages, or with its `FOLIO_MM_IDS_SHARED` bit set (maybe mapped by more
    /// than one mm).
    pub fn folio_maybe_mapped_shared(&self, folio: FolioId) -> bool {
        self.mapped_shared_unless_large(folio).unwrap_or(self.folios[folio].mm_ids().shared)
    }

    /// The tests `folio_maybe_mapped_shared` and `folio_likely_mapped_shared` share: the
    /// answer, or None for a large folio that only their last test decides.
    fn mapped_shared_unless_large(&self, folio: FolioId) -> Option<bool> {
        let f = &self.folios[folio];
        let mapcount = f.mapcount();
        if !f.is_large() {
            return Some(mapcount > 1);
        }
        if mapcount <= 1 {
            return Some(false);
        }
        if f.entire_mapcount > 0 || mapcount > f.nr_pages() {
            return Some(true);
        }
        None
    }

    /// `folio_likely_mapped_shared` (include/linux/mm.h, before 6.15): as
    /// [`folio_maybe_mapped_shared`](Self::folio_maybe_mapped_shared) up to the last test,
    /// which guesses from the folio's first page instead of the mms that map it: shared when
    /// that page is mapped more than once. So a large folio whose first page is unmapped (a
    /// partial MADV_DONTNEED after a PTE split) counts as not shared, however many mms map
    /// the rest.
    pub fn folio_likely_mapped_shared(&self, folio: FolioId) -> bool {
        self.mapped_shared_unless_large(folio).unwrap_or_else(|| self.folios[folio].page_mapcount(0) > 1)
    }

    /// `can_split_folio(folio, 1, &extra_pins)`: every reference is a mapping, or one the
    /// split knows how to hand over (the swap cache's: `extra_pins` is the folio's pages when
    /// it is in the swap cache). A long-term pin, or any other reference, makes the split
    /// impossible.
    pub fn can_split_folio(&self, folio: FolioId) -> bool {
        let f = &self.folios[folio];
        let expected = match f.mapping {
            Mapping::Anon(_) => u32::from(f.swap.is_some()),
            // The page cache's reference.
            Mapping::File(_) => 1,
            Mapping::None => 0,
        };
        f.extra_refs == expected
    }
}

impl crate::folio::FolioStore {
    /// `folio_pte_batch(folio, pte, ptent, max_nr)` as `madvise_folio_pte_batch` calls it: how
    /// many PTEs from `a` (mapping page `sub` of the large `folio`) map the following pages of
    /// the folio in order, up to `end` (inside the same PTE table) and the folio's end. The
    /// write, dirty, young and soft-dirty bits may differ.
    pub fn folio_pte_batch(
        &self,
        vm: &crate::mm::Vm,
        mm: MmId,
        a: VirtAddr,
        end: VirtAddr,
        folio: FolioId,
        sub: u16,
    ) -> u64 {
        let max = a.pages_to(end).min(self.folios[folio].nr_pages() - sub as u64);
        let mut n = 1;
        while n < max {
            match vm.mms[mm].pt.get_pte(a.plus(n * PAGE_SIZE)) {
                Pte::Present { folio: g, sub: s, .. } if g == folio && s as u64 == sub as u64 + n => n += 1,
                _ => break,
            }
        }
        n.min(max.max(1))
    }

    /// `rmap_walk_anon` with `page_vma_mapped_walk`: every PTE and PMD that maps a page of an
    /// anonymous folio, in rmap order (by VMA, then address).
    pub fn folio_mappings(
        &self,
        vm: &crate::mm::Vm,
        rmap: &crate::rmap::Rmap,
        folio: FolioId,
    ) -> Vec<FolioMapping> {
        let f = &self.folios[folio];
        let (nr, index) = (f.nr_pages(), f.index);
        let mut out = Vec::new();
        for hit in rmap.rmap_walk_anon(vm, self, folio) {
            let v = &vm.vmas[hit.vma];
            let mm = v.mm;
            for i in 0..nr {
                let Some(a) = v.address_of(index.plus(i), 1) else { continue };
                match vm.mms[mm].pt.walk(a) {
                    Walk::Pte(Pte::Present { folio: g, sub, .. }) if g == folio => {
                        out.push(FolioMapping { mm, vma: hit.vma, addr: a, sub: Some(sub) });
                    }
                    // One PMD maps the whole folio: record it once, at its first page.
                    Walk::Huge { folio: g, sub: 0, .. } if g == folio => {
                        out.push(FolioMapping { mm, vma: hit.vma, addr: a, sub: None });
                    }
                    _ => {}
                }
            }
        }
        out
    }
}
