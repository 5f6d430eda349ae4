//! The swap device and the swap cache (mm/swapfile.c, mm/swap_state.c), reclaim by
//! MADV_PAGEOUT (mm/madvise.c `madvise_pageout`, mm/vmscan.c `reclaim_pages` →
//! `shrink_folio_list`, mm/rmap.c `try_to_unmap_one`) and swap-in (mm/memory.c
//! `do_swap_page`).
//!
//! One swap device with `swap_pages` slots. Each used slot has a count (`swap_map`: the swap
//! PTEs that reference it; the kernel's `SWAP_HAS_CACHE` bit is `cache` here) and the
//! contents written to it (a tag), so no data is ever lost. The swap cache maps a slot to the
//! folio caching it (`folio->swap`, `PG_swapcache`), which holds one reference for it.
//!
//! Reclaim writes the folio out and frees it at once. On the kernel a dirty folio stays in
//! the swap cache, unmapped, until writeback ends and reclaim comes back for it; nothing
//! user-visible tells the two apart (a later swap-in maps a folio cached under the slot either
//! way), so the model takes the short path.

use std::collections::BTreeMap;

use crate::errno::{Errno, KResult};
use crate::folio::{FolioId, HUGE_ZERO_FOLIO, Mapping, ZERO_FOLIO};
use crate::mm::{MmId, System};
use crate::pagetable::{Pte, PteFlags, SwapEntry, Walk};
use crate::types::VirtAddr;
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

    pub fn slot(&self, e: SwapEntry) -> Option<&SwapSlot> {
        self.slots.get(&e.0)
    }
}

impl System {
    fn slot_mut(&mut self, e: SwapEntry) -> &mut SwapSlot {
        self.swap.slots.get_mut(&e.0).expect("swap entry of a free slot")
    }

    /// What a swapped-out page holds: its swap-cache folio's contents if cached, else the
    /// slot's.
    pub fn swap_read_tag(&self, e: SwapEntry) -> u64 {
        match self.swap.slot(e) {
            Some(SwapSlot { cache: Some(f), .. }) => self.folios[*f].pages[0].tag,
            Some(s) => s.tag,
            None => 0,
        }
    }

    /// `swap_duplicate`: another swap PTE references the slot (fork).
    pub fn swap_duplicate(&mut self, e: SwapEntry) {
        self.slot_mut(e).count += 1;
    }

    /// `free_swap_and_cache`: a zapped swap PTE drops its reference; a slot nobody references
    /// any more is freed, with its swap-cache folio if no one maps that
    /// (`__try_to_reclaim_swap` with `TTRS_UNMAPPED`).
    pub fn swap_free(&mut self, e: SwapEntry) {
        let slot = self.slot_mut(e);
        slot.count -= 1;
        if slot.count > 0 {
            return;
        }
        let cache = slot.cache;
        match cache {
            None => {
                self.swap.slots.remove(&e.0);
            }
            Some(f) if !self.folios[f].is_mapped() => {
                self.delete_from_swap_cache(f);
                self.folio_put_if_unused(f);
            }
            Some(_) => {}
        }
    }

    /// `add_to_swap_cache`: `folio` caches slot `e`.
    fn add_to_swap_cache(&mut self, folio: FolioId, e: SwapEntry) {
        self.slot_mut(e).cache = Some(folio);
        let f = &mut self.folios[folio];
        f.swap = Some(e);
        f.extra_refs += 1;
    }

    /// `delete_from_swap_cache` (`__remove_mapping` of a swap-cache folio): the slot keeps the
    /// folio's contents and is freed if nothing references it. The caller puts the folio.
    fn delete_from_swap_cache(&mut self, folio: FolioId) {
        let Some(e) = self.folios[folio].swap.take() else { return };
        self.folios[folio].extra_refs -= 1;
        let tag = self.folios[folio].pages[0].tag;
        let slot = self.slot_mut(e);
        slot.cache = None;
        slot.tag = tag;
        if slot.count == 0 {
            self.swap.slots.remove(&e.0);
        }
    }

    /// `folio_free_swap`: drop the folio from the swap cache and free its slot, unless a swap
    /// PTE still references the slot (`folio_swapped`). The folio itself stays (the caller
    /// holds it).
    pub fn folio_free_swap(&mut self, folio: FolioId) -> bool {
        let Some(e) = self.folios[folio].swap else { return false };
        if self.swap.slot(e).is_some_and(|s| s.count > 0) {
            return false;
        }
        self.delete_from_swap_cache(folio);
        true
    }

    /// `free_swap_cache` (from `free_pages_and_swap_cache` after a zap): an unmapped
    /// swap-cache folio whose slot no PTE references any more is freed.
    pub fn free_swap_cache(&mut self, folio: FolioId) {
        if folio == ZERO_FOLIO || folio == HUGE_ZERO_FOLIO || !self.folios.contains(folio) {
            return;
        }
        let f = &self.folios[folio];
        if f.swap.is_none() || f.is_mapped() {
            return;
        }
        if self.folio_free_swap(folio) {
            self.folio_put_if_unused(folio);
        }
    }

    /// `folio_maybe_mapped_shared` for a large folio: mapped by PMD more than once, or mapped
    /// in an mm other than `mm`.
    fn large_folio_maybe_mapped_shared(&self, folio: FolioId, mm: MmId) -> bool {
        let f = &self.folios[folio];
        if f.entire_mapcount > 1 {
            return true;
        }
        let (nr, index) = (f.nr_pages(), f.index);
        self.rmap_walk_anon(folio).into_iter().any(|hit| {
            let v = &self.vmas[hit.vma];
            v.mm != mm
                && (0..nr).any(|i| {
                    v.address_of(index.plus(i), 1).is_some_and(|a| {
                        matches!(self.mms[v.mm].pt.walk(a),
                            Walk::Pte(Pte::Present { folio: g, .. }) | Walk::Huge { folio: g, .. } if g == folio)
                    })
                })
        })
    }

    /// `madvise_pageout` for one VMA piece: `madvise_cold_or_pageout_pte_range` collects the
    /// folios mapped only here (`folio_mapcount == folio_nr_pages`; zero pages and shared
    /// folios are left alone) and `reclaim_pages` swaps them out. Without a swap device
    /// anonymous folios stay.
    pub fn madvise_pageout(&mut self, mm: MmId, vma: VmaId, start: VirtAddr, end: VirtAddr) -> KResult<()> {
        // can_madv_lru_vma
        if self.vmas[vma].flags.intersects(VmFlags::LOCKED | VmFlags::PFNMAP | VmFlags::HUGETLB) {
            return Err(Errno::EINVAL);
        }
        // A private or shared file mapping may be paged out too: we are root, so
        // can_do_file_pageout() holds.
        for (_, folio, _) in self.mms[mm].pt.huge_in(start, end) {
            if folio == HUGE_ZERO_FOLIO || self.large_folio_maybe_mapped_shared(folio, mm) {
                continue;
            }
            self.not_modelled("MADV_PAGEOUT of a THP (split_folio or THP swap-out)");
            return Ok(());
        }
        for (a, pte) in self.mms[mm].pt.ptes_in(start, end) {
            let Pte::Present { folio, sub, .. } = pte else { continue };
            if folio == ZERO_FOLIO {
                continue;
            }
            let f = &self.folios[folio];
            if f.is_large() {
                if self.large_folio_maybe_mapped_shared(folio, mm) {
                    continue;
                }
                self.not_modelled("MADV_PAGEOUT of a large folio (split_folio or large swap-out)");
                return Ok(());
            }
            if f.total_mapcount() != 1 {
                continue;
            }
            if !f.is_anon() {
                self.not_modelled("MADV_PAGEOUT of a page-cache folio (file reclaim)");
                return Ok(());
            }
            self.shrink_anon_folio(mm, a, folio, sub);
        }
        Ok(())
    }

    /// `shrink_folio_list` for a small anonymous folio mapped once, at `a` in `mm`: give it a
    /// slot and put it in the swap cache (`folio_alloc_swap`, refused for a maybe-pinned
    /// folio), unmap it (`try_to_unmap`: its only mapping is the one the walk found, so the
    /// rmap walk ends there), write it out and free it.
    fn shrink_anon_folio(&mut self, mm: MmId, a: VirtAddr, folio: FolioId, sub: u16) {
        if self.folios[folio].swap.is_none() {
            if self.folios[folio].pincount > 0 {
                return;
            }
            let Some(e) = self.swap.alloc() else { return };
            self.add_to_swap_cache(folio, e);
        }
        let e = self.folios[folio].swap.expect("in the swap cache");
        if !self.try_to_unmap_one(mm, a, folio, sub, e) {
            // Still mapped: activate_locked keeps it in the swap cache (swap is not full).
            return;
        }
        // pageout() + __remove_mapping.
        self.delete_from_swap_cache(folio);
        self.folio_put_if_unused(folio);
    }

    /// `try_to_unmap_one` for one PTE: it becomes a swap entry remembering PageAnonExclusive
    /// (`pte_swp_mkexclusive`); an exclusive page that may be pinned cannot be shared
    /// (`folio_try_share_anon_rmap_pte` fails) and stays mapped.
    fn try_to_unmap_one(&mut self, mm: MmId, a: VirtAddr, folio: FolioId, sub: u16, e: SwapEntry) -> bool {
        let exclusive = self.folios[folio].pages[sub as usize].anon_exclusive;
        if exclusive && self.folios[folio].pincount > 0 {
            return false;
        }
        self.mms[mm].pt.set_pte(a, Pte::Swap { entry: e, exclusive });
        self.swap_duplicate(e);
        let f = &mut self.folios[folio];
        f.pages[sub as usize].mapcount -= 1;
        f.pages[sub as usize].anon_exclusive = false;
        f.sub_large_mapcount(1, mm);
        true
    }

    /// `do_swap_page` for the swap PTE at `a`: the folio cached under the slot, or a new one
    /// read from it (`swapin_readahead` reads into the swap cache); the PTE's reference goes
    /// (`swap_free_nr`) and the slot too when a write fault finds the folio otherwise unused
    /// or swap is full (`should_try_to_free_swap`). The page is mapped exclusive, and writable
    /// where the VMA allows, if the swap PTE was exclusive or nothing else holds the folio;
    /// otherwise read-only and shared, so a write goes on to `do_wp_page`.
    pub(crate) fn do_swap_page(&mut self, mm: MmId, vma: VmaId, a: VirtAddr, write: bool) {
        let Pte::Swap { entry, exclusive } = self.mms[mm].pt.get_pte(a) else {
            self.not_modelled("a fault on a migration entry");
            return;
        };
        let av = self.anon_vma_prepare(vma);
        let cached = self.swap.slot(entry).and_then(|s| s.cache);
        let folio = match cached {
            Some(f) => f,
            None => {
                let f = self.folio_alloc(0);
                self.folios[f].pages[0].tag = self.swap.slot(entry).map_or(0, |s| s.tag);
                self.add_to_swap_cache(f, entry);
                f
            }
        };
        self.slot_mut(entry).count -= 1;
        // should_try_to_free_swap: our own reference plus the swap cache's, nothing else.
        if self.swap.full() || (write && self.folios[folio].refcount() == 1) {
            self.folio_free_swap(folio);
        }
        let excl = exclusive || self.folios[folio].refcount() == 0;
        let mut flags = PteFlags::ACCESSED;
        if excl && self.vmas[vma].flags.contains(VmFlags::WRITE) {
            flags |= PteFlags::WRITE;
            if write {
                flags |= PteFlags::DIRTY;
            }
        }
        let index = self.vmas[vma].linear_page_index(a);
        let f = &mut self.folios[folio];
        if f.mapping == Mapping::None {
            // folio_add_new_anon_rmap: a shared folio goes to the root anon_vma, which every
            // process sharing the slot reaches.
            f.mapping = Mapping::Anon(if excl { av } else { self.anon_vmas[av].root });
            f.index = index;
        }
        let p = &mut f.pages[0];
        p.mapcount += 1;
        if excl {
            p.anon_exclusive = true;
        }
        self.mms[mm].pt.set_pte(a, Pte::Present { folio, sub: 0, flags });
        // A slot left with neither references nor cache (freed above) is gone already.
        if self.folios[folio].swap.is_none() {
            self.folio_put_if_unused(folio);
        }
    }
}
