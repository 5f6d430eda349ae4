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
//! The kernel batches these per CPU (`mlock_fbatch`) and drains the batch before anything
//! this model observes (`lru_add_drain` in MADV_PAGEOUT, `mlock_drain_local` after
//! migration and unmapping); the model applies each at once, so an mlocked folio is always
//! on the unevictable LRU. What `__mlock_folio` does for a folio off the LRU (isolated by
//! reclaim or migration: only `PG_mlocked` is set, the count is fixed at putback) is not
//! modelled: the model never leaves a folio isolated across an rmap change.

use crate::folio::{Folio, FolioId, HUGE_ZERO_FOLIO, ZERO_FOLIO};
use crate::mm::{MmId, System};
use crate::types::VirtAddr;
use crate::vma::{VmFlags, VmaId};

impl Folio {
    /// `mlock_folio` with the batch drained (`__mlock_folio`): set `PG_mlocked`; a folio
    /// already on the unevictable LRU counts one more mlock, one that moves there starts at
    /// one.
    pub fn mlock(&mut self) {
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
    /// The test of `mlock_vma_folio` and `folio_add_lru_vma`: `VM_LOCKED` without any of
    /// `VM_SPECIAL`.
    pub fn vma_mlocks(&self, vma: VmaId) -> bool {
        self.vm.vmas[vma].flags & (VmFlags::LOCKED | VmFlags::SPECIAL) == VmFlags::LOCKED
    }

    /// `folio_add_lru_vma`: a new folio mapped in `vma` goes to the LRU, mlocked if `vma`
    /// is (`mlock_new_folio`).
    pub fn folio_add_lru_vma(&mut self, folio: FolioId, vma: VmaId) {
        if self.vma_mlocks(vma) {
            self.mem.folios[folio].mlock_new();
        }
    }

    /// `mlock_vma_folio`, as `__folio_add_anon_rmap` and `__folio_add_file_rmap` call it
    /// after mapping `nr_pages` pages of `folio` in `vma`: only a call that maps the whole
    /// folio mlocks it ("partially mapped folios can be split on reclaim").
    pub fn mlock_vma_folio(&mut self, folio: FolioId, vma: VmaId, nr_pages: u64) {
        if folio == ZERO_FOLIO || folio == HUGE_ZERO_FOLIO {
            return;
        }
        if self.vma_mlocks(vma) && self.mem.folios[folio].nr_pages() == nr_pages {
            self.mem.folios[folio].mlock();
        }
    }

    /// `munlock_vma_folio`, as `__folio_remove_rmap` calls it for every removal (before
    /// the model may free the folio): munlock when `vma` is `VM_LOCKED`; reclaim corrects an
    /// munlock too many.
    pub fn munlock_vma_folio(&mut self, folio: FolioId, vma: VmaId) {
        if folio == ZERO_FOLIO || folio == HUGE_ZERO_FOLIO {
            return;
        }
        if self.vm.vmas[vma].flags.contains(VmFlags::LOCKED) {
            self.mem.folios[folio].munlock();
        }
    }

    /// [`System::munlock_vma_folio`] for a mapping at `a` of `mm` whose VMA the caller
    /// does not hold (the zap and unmap paths, which work by address).
    pub fn munlock_mapped_at(&mut self, mm: MmId, a: VirtAddr, folio: FolioId) {
        if let Some(v) = self.vm.mms[mm].vma_lookup(a) {
            self.munlock_vma_folio(folio, v);
        }
    }

    /// Whether any VMA of `mm` in `[start, end)` is `VM_LOCKED`: the zap paths look a
    /// mapping's VMA up only then.
    pub fn any_locked_in(&self, mm: MmId, start: VirtAddr, end: VirtAddr) -> bool {
        let m = &self.vm.mms[mm];
        // Most zaps stay inside one VMA: one lookup answers.
        if let Some(v) = m.vma_lookup(start)
            && self.vm.vmas[v].end >= end
        {
            return self.vm.vmas[v].flags.contains(VmFlags::LOCKED);
        }
        m.vmas_in(start, end).into_iter().any(|v| self.vm.vmas[v].flags.contains(VmFlags::LOCKED))
    }
}
