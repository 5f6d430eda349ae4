//! Folios (`struct folio`): order, `index`, `mapping`, mapcounts, references, pins, and the
//! contents of each page as a tag, so that lost or mixed-up data is detectable.

use smallvec::SmallVec;

use crate::arena::arena_id;
use crate::fs::InodeId;
use crate::mm::MmId;
use crate::rmap::AnonVmaId;
use crate::types::PgOff;

/// Physical memory (mm/page_alloc.c, the memmap): every folio, starting with
/// [`ZERO_FOLIO`] and [`HUGE_ZERO_FOLIO`]; made by [`crate::mm::System::new`].
#[derive(Clone, Debug)]
pub struct FolioStore {
    /// Every folio by number.
    pub folios: crate::arena::Arena<FolioId, Folio>,
}

arena_id!(
    /// A folio in the global folio arena.
    FolioId
);

/// The shared zero page (`ZERO_PAGE(0)`): never freed, never counted.
pub const ZERO_FOLIO: FolioId = FolioId(0);
/// The huge zero folio (`huge_zero_folio`), mapped by PMD read faults on THP-enabled VMAs.
pub const HUGE_ZERO_FOLIO: FolioId = FolioId(1);

/// `folio->mapping`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mapping {
    /// Not yet added to any rmap (or the zero pages).
    None,
    /// `anon_vma | PAGE_MAPPING_ANON`.
    Anon(AnonVmaId),
    /// A page-cache folio of a file or shmem object.
    File(InodeId),
}

/// Per-page state of a folio.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct PageState {
    /// PTE mappings of this page (the kernel's `_mapcount + 1`).
    pub mapcount: u32,
    /// `PageAnonExclusive`.
    pub anon_exclusive: bool,
    /// What the page holds: 0 for zero-filled, else the tag of the last write.
    pub tag: u64,
}

/// `struct folio`.
#[derive(Clone, Debug)]
pub struct Folio {
    /// `folio_order`: the folio holds `1 << order` pages.
    pub order: u8,
    /// `folio->mapping`.
    pub mapping: Mapping,
    /// `folio->index`: the page offset of the first page.
    pub index: PgOff,
    /// PMD mappings of the whole folio (`_entire_mapcount + 1`).
    pub entire_mapcount: u32,
    /// References other than mappings: the page cache, the swap cache, GUP pins.
    pub extra_refs: u32,
    /// Long-term pins (`folio_maybe_dma_pinned`).
    pub pincount: u32,
    /// `folio->swap` with `PG_swapcache`: the swap slot this folio caches (it holds one of
    /// `extra_refs`, the swap cache's reference).
    pub swap: Option<crate::pagetable::SwapEntry>,
    /// The state of each of the folio's `1 << order` pages.
    pub pages: SmallVec<[PageState; 1]>,
    /// `PG_readahead`: the page-cache folio where the next asynchronous read-ahead starts;
    /// fault-around does not map it.
    pub readahead: bool,
    /// Not `PG_uptodate`: a page-cache folio whose contents were never read (ext4 makes one
    /// when it zeroes the block beyond a file's old EOF, see `System::truncate_inode`, and the
    /// block is a hole). Fault-around and read-ahead pass it by; a fault reads it.
    pub not_uptodate: bool,
    /// The source of a migration in flight (`migrate_folio_unmap` isolated and locked it, and
    /// `try_to_migrate` replaced its mappings with migration entries): it holds one of
    /// `extra_refs`, the migration's own.
    pub migrating: bool,
    /// `PG_dirty`. An anonymous folio's PTEs usually carry its dirtiness; the folio flag is
    /// set when a dirty PTE or PMD is taken apart (`try_to_migrate_one`, `__split_huge_pmd`),
    /// when the folio leaves the swap cache mapped (`folio_free_swap`) or enters it in
    /// reclaim; MADV_FREE clears it.
    pub dirty: bool,
    /// An anonymous folio without `PG_swapbacked` (`folio_test_lazyfree`): MADV_FREE marked it
    /// (`folio_mark_lazyfree`), so reclaim discards it if it is still clean.
    pub lazyfree: bool,
    /// `folio->_mm_id[2]` (CONFIG_MM_ID, large folios only): the two mms whose mappings are
    /// counted apart, `None` for `MM_ID_DUMMY`.
    pub mm_id: [Option<MmId>; 2],
    /// `folio->_mm_id_mapcount[2]`: mappings by each of those mms, minus one (-1 when free).
    pub mm_id_mapcount: [i64; 2],
    /// `FOLIO_MM_IDS_SHARED_BIT` of `folio->_mm_ids`: the folio may be mapped by more than one
    /// mm (`folio_test_large_maybe_mapped_shared`). Set as a second mm maps it; cleared only
    /// when one tracked mm is found to hold every mapping, so with three or more mms it can
    /// stay set after all but one have gone.
    pub mm_ids_shared: bool,
    /// `PG_mlocked`: `mlock_folio` or `mlock_new_folio` marked it as mapped by a
    /// `VM_LOCKED` VMA, so reclaim leaves it alone (`folio_evictable`). The model drains
    /// the per-CPU mlock batch at once, so an mlocked folio is always on the unevictable LRU
    /// (`PG_unevictable`) too. See [`crate::mlock`].
    pub mlocked: bool,
    /// `folio->mlock_count`: how many `VM_LOCKED` mappings `mlock_folio` counted (it may
    /// undercount; reclaim puts an mlocked folio back with 0).
    pub mlock_count: u32,
    /// Not `PG_mlocked` though a `VM_LOCKED` VMA may map it whole, until an rmap walk
    /// (reclaim's `folio_referenced_one`/`try_to_unmap_one`) or a later mlock walk mlocks it:
    /// swapped in there (`do_swap_page` maps a folio read into the swap cache with
    /// `folio_add_new_anon_rmap`, which does not mlock, and the read put it on an evictable
    /// LRU), or munlocked by a removal its mlock count did not include (`munlock_vma_folio`
    /// munlocks on every rmap removal in a `VM_LOCKED` VMA: "page reclaim will correct
    /// it"). The invariant checker allows such a folio in a `VM_LOCKED` VMA.
    pub mlock_deferred: bool,
}

impl Folio {
    /// A folio of `order` with `mapping` and `index`, not yet mapped or referenced: every
    /// count zero, every page zero-filled, no mm tracked.
    pub fn new(order: u8, mapping: Mapping, index: PgOff) -> Folio {
        let pages = if order == 0 {
            SmallVec::from_buf([PageState::default()])
        } else {
            smallvec::smallvec![PageState::default(); 1usize << order]
        };
        Folio::with_pages(order, mapping, index, pages)
    }
    /// [`Folio::new`] with `pages` given (`1 << order` of them). A small folio's one page
    /// is built in place: `smallvec!` of one element goes through the generic
    /// `from_elem` loop.
    #[inline]
    fn with_pages(order: u8, mapping: Mapping, index: PgOff, pages: SmallVec<[PageState; 1]>) -> Folio {
        debug_assert_eq!(pages.len(), 1 << order);
        Folio {
            order,
            mapping,
            index,
            entire_mapcount: 0,
            extra_refs: 0,
            pincount: 0,
            swap: None,
            pages,
            readahead: false,
            not_uptodate: false,
            migrating: false,
            dirty: false,
            lazyfree: false,
            mm_id: [None, None],
            mm_id_mapcount: [-1, -1],
            mm_ids_shared: false,
            mlocked: false,
            mlock_count: 0,
            mlock_deferred: false,
        }
    }
    /// A new small anonymous folio as `do_anonymous_page` and `wp_page_copy` map it:
    /// `folio_add_new_anon_rmap` gave it `anon_vma` and `index`, one mapping, and
    /// PageAnonExclusive; it holds `tag`.
    #[inline]
    pub fn new_anon_page(anon_vma: AnonVmaId, index: PgOff, tag: u64) -> Folio {
        let page = PageState { mapcount: 1, anon_exclusive: true, tag };
        Folio::with_pages(0, Mapping::Anon(anon_vma), index, SmallVec::from_buf([page]))
    }
    /// `folio_nr_pages`.
    pub fn nr_pages(&self) -> u64 {
        1 << self.order
    }
    /// `folio_test_large`.
    pub fn is_large(&self) -> bool {
        self.order > 0
    }
    /// `folio_test_anon`.
    pub fn is_anon(&self) -> bool {
        matches!(self.mapping, Mapping::Anon(_))
    }
    /// `folio_precise_page_mapcount`: PTE mappings of the page plus PMD mappings of the folio.
    pub fn page_mapcount(&self, sub: usize) -> u32 {
        self.pages[sub].mapcount + self.entire_mapcount
    }
    /// `folio_mapcount`: the total of all mappings, a PMD mapping counting once per page.
    pub fn total_mapcount(&self) -> u64 {
        self.pages.iter().map(|p| p.mapcount as u64).sum::<u64>()
            + self.entire_mapcount as u64 * self.nr_pages()
    }
    /// `folio_mapcount`: PTE mappings plus PMD mappings, a PMD mapping counting once (the
    /// kernel's `_large_mapcount + 1`).
    pub fn mapcount(&self) -> u64 {
        self.pages.iter().map(|p| p.mapcount as u64).sum::<u64>() + self.entire_mapcount as u64
    }
    /// `folio_set_large_mapcount`: a new large folio is mapped (its counts already set) by
    /// `mm` only.
    pub fn set_large_mapcount(&mut self, mm: MmId) {
        if self.is_large() {
            self.mm_id = [Some(mm), None];
            self.mm_id_mapcount = [self.mapcount() as i64 - 1, -1];
            self.mm_ids_shared = false;
        }
    }

    /// `folio_add_large_mapcount(folio, diff, vma)`, after the counts grew by `diff` mappings
    /// in `mm`: the mm's slot counts them, or a free slot is taken (the folio becomes maybe
    /// shared if anyone else maps it); with both slots taken by others, nothing is tracked.
    pub fn add_large_mapcount(&mut self, diff: u64, mm: MmId) {
        if !self.is_large() {
            return;
        }
        let new = self.mapcount() as i64 - 1;
        let diff = diff as i64;
        if self.mm_id[0] == Some(mm) {
            self.mm_id_mapcount[0] += diff;
        } else if self.mm_id[1] == Some(mm) {
            self.mm_id_mapcount[1] += diff;
        } else if self.mm_id[0].is_none() {
            self.mm_id[0] = Some(mm);
            self.mm_id_mapcount[0] = diff - 1;
            // We might have other mappings already.
            if new != diff - 1 {
                self.mm_ids_shared = true;
            }
        } else if self.mm_id[1].is_none() {
            self.mm_id[1] = Some(mm);
            self.mm_id_mapcount[1] = diff - 1;
            // Slot 0 certainly has mappings as well.
            self.mm_ids_shared = true;
        }
    }

    /// `folio_sub_large_mapcount(folio, diff, vma)`, after the counts dropped by `diff`
    /// mappings in `mm`: a slot that runs out is freed, and if one slot then owns every
    /// mapping the folio is exclusive again.
    pub fn sub_large_mapcount(&mut self, diff: u64, mm: MmId) {
        if !self.is_large() {
            return;
        }
        let new = self.mapcount() as i64 - 1;
        if let Some(i) = (0..2).find(|&i| self.mm_id[i] == Some(mm)) {
            self.mm_id_mapcount[i] -= diff as i64;
            if self.mm_id_mapcount[i] >= 0 {
                return;
            }
            // Underflow is a valid corner case: the slot is freed either way.
            self.mm_id_mapcount[i] = -1;
            self.mm_id[i] = None;
        }
        if self.mm_id_mapcount[0] == new || self.mm_id_mapcount[1] == new {
            self.mm_ids_shared = false;
        }
    }

    /// `folio_mapped`.
    pub fn is_mapped(&self) -> bool {
        self.entire_mapcount > 0 || self.pages.iter().any(|p| p.mapcount > 0)
    }
    /// `folio_ref_count` as the model counts it: one per PTE mapping, one per PMD mapping,
    /// plus the extra references.
    #[inline]
    pub fn refcount(&self) -> u64 {
        // A small folio (copy-on-write asks about one on every fault) without the loop.
        let ptes = match self.pages.as_slice() {
            [p] => p.mapcount as u64,
            pages => pages.iter().map(|p| p.mapcount as u64).sum::<u64>(),
        };
        ptes + self.entire_mapcount as u64 + self.extra_refs as u64
    }
}
