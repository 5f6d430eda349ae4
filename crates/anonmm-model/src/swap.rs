//! The swap device and the swap cache (mm/swapfile.c, mm/swap_state.c), reclaim by
//! MADV_PAGEOUT and the splits of MADV_COLD (mm/madvise.c `madvise_cold_or_pageout_pte_range`,
//! mm/vmscan.c `reclaim_pages` → `shrink_folio_list`, mm/rmap.c `try_to_unmap_one`) and
//! swap-in (mm/memory.c `do_swap_page`).
//!
//! The device is a swap file, as the oracle's is: `cluster_alloc_swap_entry` gives order > 0
//! slots only to block devices, so no large folio ever enters the swap cache. Reclaim of a
//! large folio splits it (`split_folio_to_list`) and swaps out its pages, and swap-in always
//! reads small folios (large swap-in needs `SWP_SYNCHRONOUS_IO`).
//!
//! One swap device with `swap_pages` slots. Each used slot has a count (`swap_map`: the swap
//! PTEs that reference it; the kernel's `SWAP_HAS_CACHE` bit is `cache` here) and the
//! contents written to it (a tag), so no data is ever lost. The swap cache maps a slot to the
//! folio caching it (`folio->swap`, `PG_swapcache`), which holds one reference for it.
//!
//! Reclaim writes the folio out, and the swap file's write is still running when
//! `shrink_folio_list` looks, so the folio stays in the swap cache, unmapped: a later swap-in
//! maps that folio again, with its old `mapping` and `index`. From 6.12 a zero-filled folio is
//! never written (the swap zeromap) and is freed at once, so its swap-in reads a new one
//! ([`Profile::swap_zeromap`](crate::kernel::Profile)).

use std::collections::BTreeMap;

use crate::errno::{Errno, KResult};
use crate::folio::{FolioId, HUGE_ZERO_FOLIO, Mapping, ZERO_FOLIO};
use crate::kernel::Profile;
use crate::madvise::AtLargeFolio;
use crate::mm::{MmId, System};
use crate::pagetable::{Pmd, Pte, PteFlags, SwapEntry};
use crate::types::{PAGE_SIZE, PMD_SIZE, VirtAddr};
use crate::vma::{VmFlags, VmaId};

/// Slots of the default swap device: a 2 GiB swap file less its header page, the size the
/// oracle's swap file has.
pub const DEFAULT_SWAP_PAGES: u32 = ((2u64 << 30) / 4096 - 1) as u32;

/// One used slot (`si->swap_map[offset]`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SwapSlot {
    /// Swap PTEs referencing the slot (the swap count).
    pub count: u32,
    /// The folio caching the slot (`SWAP_HAS_CACHE`).
    pub cache: Option<FolioId>,
    /// What was written to the slot (the page's tag at swap-out).
    pub tag: u64,
}

/// `struct swap_info_struct`, reduced to what user space can tell.
#[derive(Clone, Debug, Default)]
pub struct SwapDevice {
    /// Usable slots (`si->pages`); 0 when no swap is enabled.
    pub pages: u32,
    /// Used slots by offset.
    pub slots: BTreeMap<u32, SwapSlot>,
    /// Where the next allocation starts looking (`cluster_alloc_swap_entry` in spirit: slot
    /// numbers are invisible to user space, so any free slot will do).
    next: u32,
}

impl SwapDevice {
    /// An empty device of `pages` slots (0: no swap).
    pub fn new(pages: u32) -> SwapDevice {
        SwapDevice { pages, slots: BTreeMap::new(), next: 0 }
    }

    /// `folio_alloc_swap` for an order-0 folio: a free slot, or None when the device is full
    /// (or absent).
    fn alloc(&mut self) -> Option<SwapEntry> {
        if self.slots.len() as u64 >= self.pages as u64 {
            return None;
        }
        let mut off = self.next % self.pages;
        while self.slots.contains_key(&off) {
            off = (off + 1) % self.pages;
        }
        self.next = off + 1;
        self.slots.insert(off, SwapSlot::default());
        Some(SwapEntry(off))
    }

    /// `vm_swap_full`: more than half of the swap space is in use.
    pub fn full(&self) -> bool {
        self.slots.len() as u64 * 2 > self.pages as u64
    }

    /// The slot a swap entry names, or None if it is free.
    pub fn slot(&self, e: SwapEntry) -> Option<&SwapSlot> {
        self.slots.get(&e.0)
    }
}

impl System {
    /// `madvise_cold` / `madvise_pageout` for one VMA piece: `can_madv_lru_vma`, then
    /// `walk_page_range_vma` calling `madvise_cold_or_pageout_pte_range` on each PMD.
    /// MADV_COLD only deactivates folios, which no user can see, but it splits large folios
    /// the range covers in part, as MADV_PAGEOUT does.
    pub fn madvise_cold_or_pageout(
        &mut self,
        mm: MmId,
        vma: VmaId,
        start: VirtAddr,
        end: VirtAddr,
        pageout: bool,
    ) -> KResult<()> {
        // can_madv_lru_vma
        if self.vm.vmas[vma].flags.intersects(VmFlags::LOCKED | VmFlags::PFNMAP | VmFlags::HUGETLB) {
            return Err(Errno::EINVAL);
        }
        // madvise_cold / madvise_pageout: lru_add_drain() before the walk.
        self.mem.lru_add_drain();
        // A private or shared file mapping may be paged out too: we are root, so
        // can_do_file_pageout() holds.
        for (addr, next) in self.vm.mms[mm].pt.pmd_ranges(start, end) {
            if self.unsupported.is_some() {
                break;
            }
            self.cold_or_pageout_pmd_range(mm, addr, next, pageout);
        }
        Ok(())
    }

    /// `madvise_cold_or_pageout_pte_range` for `[addr, end)` inside one PMD:
    /// - a PMD-mapped THP mapped only here is isolated whole when the range covers it, else
    ///   split (`split_folio`; if that fails the PMD is left alone) and walked as PTEs;
    /// - a PTE-mapped large folio the range covers in part (or not from its first page) is
    ///   split unless maybe mapped shared, and its pages are looked at again; if the split
    ///   fails, its PTEs are skipped;
    /// - a folio mapped exactly once per page, all here (`folio_mapcount ==
    ///   folio_nr_pages`), is isolated; zero pages and folios mapped elsewhere are not.
    ///
    /// With MADV_PAGEOUT, the isolated folios are then reclaimed (`reclaim_pages`).
    fn cold_or_pageout_pmd_range(&mut self, mm: MmId, addr: VirtAddr, end: VirtAddr, pageout: bool) {
        let mut isolated: Vec<(FolioId, VirtAddr)> = Vec::new();
        if let Some(&Pmd::Huge { folio, .. }) = self.vm.mms[mm].pt.pmd(addr) {
            if folio == HUGE_ZERO_FOLIO || self.pmd_folio_shared_for_madvise(folio, false) {
                return;
            }
            if end.0 - addr.0 != PMD_SIZE {
                if self.split_folio(folio).is_err() {
                    return;
                }
                // goto regular_folio
            } else {
                if pageout {
                    self.shrink_folio_list(mm, addr.pmd_down(), folio);
                }
                return;
            }
        }
        let mut a = addr;
        while a < end {
            let mut nr = 1;
            let Pte::Present { folio, sub, .. } = self.vm.mms[mm].pt.get_pte(a) else {
                a = a.plus(PAGE_SIZE);
                continue;
            };
            if folio == ZERO_FOLIO {
                a = a.plus(PAGE_SIZE);
                continue;
            }
            if self.mem.folios[folio].is_large() {
                // 6.1 asks the page mapped here (`page_mapcount`).
                match self.madvise_large_folio(mm, a, end, folio, sub, sub) {
                    AtLargeFolio::Stop => break,
                    AtLargeFolio::Again => continue,
                    AtLargeFolio::Skip(n) => {
                        a = a.plus(n * PAGE_SIZE);
                        continue;
                    }
                    AtLargeFolio::Whole(n) => nr = n,
                }
            }
            let f = &self.mem.folios[folio];
            if f.mapcount() == f.nr_pages() && pageout {
                if !f.is_anon() {
                    self.not_modelled("MADV_PAGEOUT of a page-cache folio (file reclaim)");
                    return;
                }
                isolated.push((folio, a));
            }
            a = a.plus(nr * PAGE_SIZE);
        }
        for (folio, a) in isolated {
            self.shrink_folio_list(mm, a, folio);
        }
    }

    /// `shrink_folio_list` for one folio MADV_PAGEOUT isolated, mapped only at `a` (its
    /// first page) in `mm`. A large folio that may be pinned is kept (`keep_locked`), one
    /// with other extra references too (`can_split_folio` fails: `activate_locked`). Else it
    /// needs swap space for all its pages at once, which `folio_alloc_swap` cannot give on a
    /// swap file (`cluster_alloc_swap_entry` allocates order > 0 only on a block device,
    /// CONFIG_THP_SWAP or not): so it is split (`split_folio_to_list`, the fallback that
    /// counts `THP_SWPOUT_FALLBACK`) and its pages, each a small folio now, go through the
    /// list one by one. Pages split maps to the zero page are freed on the way. A lazily
    /// freed folio takes another path (`discard_lazyfree_folio`). An mlocked folio (see
    /// [`crate::mlock`]) is not evictable and stays as it is, whole.
    fn shrink_folio_list(&mut self, mm: MmId, a: VirtAddr, folio: FolioId) {
        if !self.mem.folios.contains(folio) {
            return;
        }
        if self.mem.folios[folio].mlocked {
            // !folio_evictable → activate_locked: an mlocked folio leaves the swap cache
            // (folio_free_swap), and goes back to the unevictable LRU with no mlock count.
            self.swap.folio_free_swap(&mut self.mem, folio);
            self.mem.folios[folio].putback_unevictable();
            return;
        }
        if self.mem.folios[folio].lazyfree {
            self.vm.discard_lazyfree_folio(&mut self.mem, &mut self.trace, mm, a, folio);
            return;
        }
        let f = &self.mem.folios[folio];
        if !f.is_large() {
            self.shrink_anon_folio(mm, a, folio, 0);
            return;
        }
        if f.pincount > 0 || !self.mem.can_split_folio(folio) {
            return;
        }
        let nr = f.nr_pages();
        if self.split_folio(folio).is_err() {
            return;
        }
        for i in 0..nr {
            let pa = a.plus(i * PAGE_SIZE);
            if let Pte::Present { folio: g, sub, .. } = self.vm.mms[mm].pt.get_pte(pa)
                && g != ZERO_FOLIO
            {
                self.shrink_anon_folio(mm, pa, g, sub);
            }
        }
    }

    /// `shrink_folio_list` for a small anonymous folio mapped once, at `a` in `mm`: give it a
    /// slot and put it in the swap cache (`folio_alloc_swap`, refused for a maybe-pinned
    /// folio), unmap it (`try_to_unmap`: its only mapping is the one the walk found, so the
    /// rmap walk ends there), write it out and free it.
    fn shrink_anon_folio(&mut self, mm: MmId, a: VirtAddr, folio: FolioId, sub: u16) {
        if self.mem.folios[folio].swap.is_none() {
            if self.mem.folios[folio].pincount > 0 {
                return;
            }
            let Some(e) = self.swap.alloc() else { return };
            self.swap.add_to_swap_cache(&mut self.mem, folio, e);
            // folio_mark_dirty: the swap copy is yet to be written.
            self.mem.folios[folio].dirty = true;
        }
        let e = self.mem.folios[folio].swap.expect("in the swap cache");
        if !self.try_to_unmap_one(mm, a, folio, sub, e) {
            // Still mapped: activate_locked keeps it in the swap cache (swap is not full).
            return;
        }
        // A zero-filled folio is not written at all on a zeromap kernel; any other is still
        // under writeback when shrink_folio_list looks (`goto keep`), so it stays in the swap
        // cache, clean once written, mapped nowhere.
        if !(self.cfg.kernel.profile().swap_zeromap
            && self.mem.folios[folio].pages.iter().all(|p| p.tag == 0))
        {
            self.mem.folios[folio].dirty = false;
            return;
        }
        // pageout() with nothing to write (swap_zeromap_folio_set) + __remove_mapping.
        self.swap.delete_from_swap_cache(&mut self.mem, folio);
        self.mem.folio_put_if_unused(&mut self.trace, folio);
    }

    /// `try_to_unmap_one` for one PTE: it becomes a swap entry remembering PageAnonExclusive
    /// (`pte_swp_mkexclusive`); an exclusive page that may be pinned cannot be shared
    /// (`folio_try_share_anon_rmap_pte` fails) and stays mapped.
    fn try_to_unmap_one(&mut self, mm: MmId, a: VirtAddr, folio: FolioId, sub: u16, e: SwapEntry) -> bool {
        let exclusive = self.mem.folios[folio].pages[sub as usize].anon_exclusive;
        if exclusive && self.mem.folios[folio].pincount > 0 {
            return false;
        }
        self.vm.mms[mm].pt.set_pte(a, Pte::Swap { entry: e, exclusive });
        self.swap.swap_duplicate(e);
        let f = &mut self.mem.folios[folio];
        f.pages[sub as usize].mapcount -= 1;
        f.pages[sub as usize].anon_exclusive = false;
        f.sub_large_mapcount(1, mm);
        true
    }

    pub(crate) fn do_swap_page(&mut self, mm: MmId, vma: VmaId, a: VirtAddr, write: bool) {
        let Pte::Swap { entry, exclusive } = self.vm.mms[mm].pt.get_pte(a) else { return };
        let mut cached = self.swap.slot(entry).and_then(|s| s.cache);
        if let Some(f) = cached
            && self.mem.folios[f].migrating
        {
            // The cached folio is being migrated: folio_lock_or_retry sleeps until that ends,
            // and the new folio has taken its place in the swap cache.
            self.finish_migration(f);
            cached = self.swap.slot(entry).and_then(|s| s.cache);
        }
        let av = self.rmap.anon_vma_prepare(&mut self.vm, &mut self.trace, vma);
        let folio = match cached {
            Some(f) => f,
            None => {
                let f = self.mem.folio_alloc(&mut self.trace, 0);
                self.mem.folios[f].pages[0].tag = self.swap.slot(entry).map_or(0, |s| s.tag);
                self.swap.add_to_swap_cache(&mut self.mem, f, entry);
                f
            }
        };
        if self.rmap.ksm_might_need_to_copy(&self.vm, &self.mem, folio, vma, a) {
            // A copy is mapped instead; the slot loses this PTE's reference (swap_free_nr).
            let tag = self.mem.folios[folio].pages[0].tag;
            let copy = self.mem.folio_alloc(&mut self.trace, 0);
            self.mem.folios[copy].pages[0].tag = tag;
            self.mem.folio_add_new_anon_rmap(&self.vm, copy, vma, a, false);
            self.mem.folio_add_lru_vma(&self.vm, copy, vma);
            let flags = self.vm.new_pte_flags(vma, write);
            self.vm.mms[mm].pt.set_pte(a, Pte::Present { folio: copy, sub: 0, flags });
            self.swap.swap_free(&mut self.mem, &mut self.trace, entry);
            return;
        }
        self.swap.slot_mut(entry).count -= 1;
        // should_try_to_free_swap: in a VM_LOCKED VMA or for an mlocked folio, or our own
        // reference plus the swap cache's, nothing else.
        if self.swap.full()
            || self.vm.vmas[vma].flags.contains(VmFlags::LOCKED)
            || self.mem.folios[folio].mlocked
            || (write && self.mem.folios[folio].refcount() == 1)
        {
            self.swap.folio_free_swap(&mut self.mem, folio);
        }
        let excl = exclusive || self.mem.folios[folio].refcount() == 0;
        let mut flags = PteFlags::ACCESSED;
        if excl && self.vm.vmas[vma].flags.contains(VmFlags::WRITE) {
            flags |= PteFlags::WRITE;
            if write {
                flags |= PteFlags::DIRTY;
            }
        }
        let index = self.vm.vmas[vma].linear_page_index(a);
        let f = &mut self.mem.folios[folio];
        if f.mapping == Mapping::None {
            // folio_add_new_anon_rmap: a shared folio goes to the root anon_vma, which every
            // process sharing the slot reaches. It went to the LRU when it was read
            // (folio_add_lru), so nothing mlocks it here.
            f.mapping = Mapping::Anon(if excl { av } else { self.rmap.anon_vmas[av].root });
            f.index = index;
            f.mlock_deferred = !f.mlocked
                && self.vm.vmas[vma].flags & (VmFlags::LOCKED | VmFlags::SPECIAL) == VmFlags::LOCKED;
        } else {
            // folio_add_anon_rmap_ptes → mlock_vma_folio.
            self.mem.mlock_vma_folio(&self.vm, folio, vma, 1);
        }
        let f = &mut self.mem.folios[folio];
        let p = &mut f.pages[0];
        p.mapcount += 1;
        if excl {
            p.anon_exclusive = true;
        }
        self.vm.mms[mm].pt.set_pte(a, Pte::Present { folio, sub: 0, flags });
        // A slot left with neither references nor cache (freed above) is gone already.
        if self.mem.folios[folio].swap.is_none() {
            self.mem.folio_put_if_unused(&mut self.trace, folio);
        }
    }
}

impl SwapDevice {
    fn slot_mut(&mut self, e: SwapEntry) -> &mut SwapSlot {
        self.slots.get_mut(&e.0).expect("swap entry of a free slot")
    }
}

impl crate::folio::FolioStore {
    /// `folio_mark_lazyfree` (mm/swap.c `lru_lazyfree`): an anonymous swap-backed folio not in
    /// the swap cache loses `PG_swapbacked`. The model clears it at once; the kernel does it
    /// when the per-CPU batch moves, which MADV_FREE drains before its walk and reclaim
    /// before its own, so only the batch's reference is seen pending (a write fault on a
    /// COW-shared page copies it, `wp_can_reuse_anon_folio`): the folio joins
    /// [`Self::lazyfree_batch`]. A large folio, or the batch's last slot
    /// ([`Profile::folio_batch_31`]), moves the whole batch at once
    /// (`folio_batch_add_and_move`). A folio already queued is queued again: it is still
    /// `PG_lru` and `PG_swapbacked`.
    pub fn folio_mark_lazyfree(&mut self, folio: FolioId, p: &Profile) {
        let f = &mut self.folios[folio];
        if !f.is_anon() || f.swap.is_some() {
            return;
        }
        let large = f.is_large();
        if f.lazyfree && !self.lazyfree_queued(folio) {
            return;
        }
        self.folios[folio].lazyfree = true;
        self.lazyfree_batch.push(folio);
        let size = if p.folio_batch_31 { 31 } else { 15 };
        if large || self.lazyfree_batch.len() >= size {
            self.lru_add_drain();
        }
    }

    /// Whether the `lru_lazyfree` batch holds a reference to `folio`
    /// ([`Self::lazyfree_batch`]).
    pub fn lazyfree_queued(&self, folio: FolioId) -> bool {
        folio != ZERO_FOLIO && self.lazyfree_batch.contains(&folio)
    }

    /// `lru_add_drain` for the batch the model keeps ([`Self::lazyfree_batch`]): its folios
    /// lose the batch's reference.
    pub fn lru_add_drain(&mut self) {
        self.lazyfree_batch.clear();
    }

    /// A folio the model frees while queued keeps its slot ([`Self::lazyfree_batch`]).
    pub(crate) fn lazyfree_forget(&mut self, folio: FolioId) {
        for e in &mut self.lazyfree_batch {
            if *e == folio {
                *e = ZERO_FOLIO;
            }
        }
    }
}

impl crate::swap::SwapDevice {
    /// `swap_duplicate`: another swap PTE references the slot (fork).
    pub fn swap_duplicate(&mut self, e: SwapEntry) {
        self.slot_mut(e).count += 1;
    }

    /// What a swapped-out page holds: its swap-cache folio's contents if cached, else the
    /// slot's.
    pub fn swap_read_tag(&self, mem: &crate::folio::FolioStore, e: SwapEntry) -> u64 {
        match self.slot(e) {
            Some(SwapSlot { cache: Some(f), .. }) => mem.folios[*f].pages[0].tag,
            Some(s) => s.tag,
            None => 0,
        }
    }

    /// `add_to_swap_cache`: `folio` caches slot `e`.
    fn add_to_swap_cache(&mut self, mem: &mut crate::folio::FolioStore, folio: FolioId, e: SwapEntry) {
        self.slot_mut(e).cache = Some(folio);
        let f = &mut mem.folios[folio];
        f.swap = Some(e);
        f.extra_refs += 1;
    }

    /// The swap-cache part of `__folio_migrate_mapping`: the new folio takes the old one's
    /// slot (`PG_swapcache`, `folio->swap`, and the swap cache's reference).
    pub(crate) fn migrate_swap_cache(
        &mut self,
        mem: &mut crate::folio::FolioStore,
        src: FolioId,
        dst: FolioId,
    ) {
        let Some(e) = mem.folios[src].swap.take() else { return };
        mem.folios[src].extra_refs -= 1;
        self.slot_mut(e).cache = Some(dst);
        let d = &mut mem.folios[dst];
        d.swap = Some(e);
        d.extra_refs += 1;
    }

    /// `delete_from_swap_cache` (`__remove_mapping` of a swap-cache folio): the slot keeps the
    /// folio's contents and is freed if nothing references it. The caller puts the folio.
    fn delete_from_swap_cache(&mut self, mem: &mut crate::folio::FolioStore, folio: FolioId) {
        let Some(e) = mem.folios[folio].swap.take() else { return };
        mem.folios[folio].extra_refs -= 1;
        let tag = mem.folios[folio].pages[0].tag;
        let slot = self.slot_mut(e);
        slot.cache = None;
        slot.tag = tag;
        if slot.count == 0 {
            self.slots.remove(&e.0);
        }
    }

    /// `folio_free_swap`: drop the folio from the swap cache and free its slot, unless a swap
    /// PTE still references the slot (`folio_swapped`). The folio itself stays (the caller
    /// holds it).
    pub fn folio_free_swap(&mut self, mem: &mut crate::folio::FolioStore, folio: FolioId) -> bool {
        let Some(e) = mem.folios[folio].swap else { return false };
        if self.slot(e).is_some_and(|s| s.count > 0) {
            return false;
        }
        self.delete_from_swap_cache(mem, folio);
        // The folio now holds the only copy of its contents.
        mem.folios[folio].dirty = true;
        true
    }

    /// `free_swap_and_cache`: a zapped swap PTE drops its reference; a slot nobody references
    /// any more is freed, with its swap-cache folio if no one maps that
    /// (`__try_to_reclaim_swap` with `TTRS_UNMAPPED`).
    pub fn swap_free(
        &mut self,
        mem: &mut crate::folio::FolioStore,
        trace: &mut crate::stats::Trace,
        e: SwapEntry,
    ) {
        let slot = self.slot_mut(e);
        slot.count -= 1;
        if slot.count > 0 {
            return;
        }
        let cache = slot.cache;
        match cache {
            None => {
                self.slots.remove(&e.0);
            }
            Some(f) if !mem.folios[f].is_mapped() => {
                self.delete_from_swap_cache(mem, f);
                mem.folio_put_if_unused(trace, f);
            }
            Some(_) => {}
        }
    }

    /// `read_swap_cache_async`: the folio caching slot `e`, read from it (with the slot's
    /// contents) into the swap cache if none does yet; unmapped, held by the cache alone.
    pub(crate) fn read_swap_cache_async(
        &mut self,
        mem: &mut crate::folio::FolioStore,
        trace: &mut crate::stats::Trace,
        e: SwapEntry,
    ) -> Option<FolioId> {
        let slot = self.slot(e)?;
        if let Some(f) = slot.cache {
            return Some(f);
        }
        let tag = slot.tag;
        let f = mem.folio_alloc(trace, 0);
        mem.folios[f].pages[0].tag = tag;
        self.add_to_swap_cache(mem, f, e);
        Some(f)
    }

    /// `free_swap_cache` (from `free_pages_and_swap_cache` after a zap): an unmapped
    /// swap-cache folio whose slot no PTE references any more is freed.
    pub fn free_swap_cache(
        &mut self,
        mem: &mut crate::folio::FolioStore,
        trace: &mut crate::stats::Trace,
        folio: FolioId,
    ) {
        if folio == ZERO_FOLIO || folio == HUGE_ZERO_FOLIO || !mem.folios.contains(folio) {
            return;
        }
        let f = &mem.folios[folio];
        if f.swap.is_none() || f.is_mapped() {
            return;
        }
        if self.folio_free_swap(mem, folio) {
            mem.folio_put_if_unused(trace, folio);
        }
    }
}

impl crate::mm::Vm {
    /// `shrink_folio_list` for a lazily freed folio (MADV_FREE), mapped only at `a` in `mm` by
    /// a PMD or by PTEs for all its pages: no swap space, no folio split; `try_to_unmap_one`
    /// discards it (its `!folio_test_swapbacked` branch, batched over the whole folio; a PMD
    /// is split first) and the PTEs become none. Written to
    /// since (a dirty PTE or PMD, or `PG_dirty`), it is swap-backed again and stays mapped;
    /// with another reference (a pin) it stays as it is.
    fn discard_lazyfree_folio(
        &mut self,
        mem: &mut crate::folio::FolioStore,
        trace: &mut crate::stats::Trace,
        mm: MmId,
        a: VirtAddr,
        folio: FolioId,
    ) {
        let nr = mem.folios[folio].nr_pages();
        let pmd = match self.mms[mm].pt.pmd(a) {
            Some(&Pmd::Huge { folio: g, flags }) if g == folio => Some(flags),
            _ => None,
        };
        let dirty = match pmd {
            Some(flags) => flags.contains(PteFlags::DIRTY),
            None => (0..nr).any(|i| {
                matches!(self.mms[mm].pt.get_pte(a.plus(i * PAGE_SIZE)),
                    Pte::Present { folio: g, flags, .. } if g == folio && flags.contains(PteFlags::DIRTY))
            }),
        };
        let f = &mut mem.folios[folio];
        if dirty || f.dirty {
            f.dirty = true;
            f.lazyfree = false;
            return;
        }
        // ref_count != 1 + map_count: someone else holds it.
        if f.extra_refs > 0 {
            return;
        }
        if pmd.is_some() {
            // TTU_SPLIT_HUGE_PMD: the PMD is split and the pages are discarded PTE by PTE,
            // so the PTE table stays (a later read maps 4 KiB zero pages). Seen on 6.1 and
            // on the host's 6.18 alike (vmstat: thp_split_pmd +1, pglazyfreed +512), although
            // 6.18's unmap_huge_pmd_locked could discard the PMD whole (tests/regressions/
            // lazyfree_thp_pageout_leaves_pte_table).
            self.split_huge_pmd(mem, trace, mm, a);
        }
        for i in 0..nr {
            self.mms[mm].pt.set_pte(a.plus(i * PAGE_SIZE), Pte::None);
        }
        // The last removal frees the folio.
        for i in 0..nr {
            mem.folio_remove_rmap_pte(trace, folio, i as u16, mm);
        }
    }
}

impl crate::rmap::Rmap {
    /// `do_swap_page` for the swap PTE at `a`: the folio cached under the slot, or a new one
    /// read from it (`swapin_readahead` reads into the swap cache); the PTE's reference goes
    /// (`swap_free_nr`) and the slot too when a write fault finds the folio otherwise unused
    /// or swap is full (`should_try_to_free_swap`). The page is mapped exclusive, and writable
    /// where the VMA allows, if the swap PTE was exclusive or nothing else holds the folio;
    /// otherwise read-only and shared, so a write goes on to `do_wp_page`.
    /// `ksm_might_need_to_copy` for a non-KSM folio: a swap-cache folio whose `index` or
    /// anon_vma root no longer fits the faulting VMA (its VMA was relocated while it sat in
    /// the swap cache) cannot be mapped there, so a copy is. Never true under `kernel`.
    fn ksm_might_need_to_copy(
        &self,
        vm: &crate::mm::Vm,
        mem: &crate::folio::FolioStore,
        folio: FolioId,
        vma: VmaId,
        a: VirtAddr,
    ) -> bool {
        let Mapping::Anon(fav) = mem.folios[folio].mapping else { return false };
        let v = &vm.vmas[vma];
        let Some(vav) = v.anon_vma else { return false };
        if !self.anon_vmas.contains(fav) {
            return true;
        }
        mem.folios[folio].index != v.linear_page_index(a)
            || self.anon_vmas[fav].root != self.anon_vmas[vav].root
    }
}
