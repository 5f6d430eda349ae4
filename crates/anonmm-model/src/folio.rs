//! Folios (`struct folio`): order, `index`, `mapping`, mapcounts, references, pins, and the
//! contents of each page as a tag, so that lost or mixed-up data is detectable.

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
    /// The CPU's `lru_lazyfree` batch (the oracle keeps a run on one CPU): the small folios
    /// MADV_FREE queued (`folio_mark_lazyfree`), each holding a reference and still
    /// `PG_lru`, until an `lru_add_drain` or a full batch moves them. A folio the model
    /// frees meanwhile leaves [`ZERO_FOLIO`] in its slot (the kernel's batch keeps it alive
    /// and its slot taken).
    pub lazyfree_batch: Vec<FolioId>,
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

/// `struct folio`, in 64 bytes: a fault writes a whole new folio and a copy-on-write fault
/// reads the old one, so a small folio's fields are all here, and what only a large folio
/// has (its pages beyond the first, the per-mm mapcounts) lies behind [`Pages`]. Not
/// aligned to 64: the folio arena then grows by copying (Rust's `realloc` of an over-aligned
/// block), where glibc moves its pages (`mremap`); faults take folios in address order, so
/// they touch a line a folio either way.
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
    /// The state of each of the folio's `1 << order` pages (and a large folio's per-mm
    /// mapcounts, [`Folio::mm_ids`]).
    pub pages: Pages,
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

const _: () = assert!(std::mem::size_of::<Folio>() == 64);
const _: () = assert!(std::mem::size_of::<crate::arena::Slot<Folio>>() == 64);

/// A large folio's per-mm mapcounts (CONFIG_MM_ID; small folios keep none).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MmIds {
    /// `folio->_mm_id[2]`: the two mms whose mappings are counted apart, `None` for
    /// `MM_ID_DUMMY`.
    pub mm_id: [Option<MmId>; 2],
    /// `folio->_mm_id_mapcount[2]`: mappings by each of those mms, minus one (-1 when free).
    pub mm_id_mapcount: [i64; 2],
    /// `FOLIO_MM_IDS_SHARED_BIT` of `folio->_mm_ids`: the folio may be mapped by more than one
    /// mm (`folio_test_large_maybe_mapped_shared`). Set as a second mm maps it; cleared only
    /// when one tracked mm is found to hold every mapping, so with three or more mms it can
    /// stay set after all but one have gone.
    pub shared: bool,
}

impl MmIds {
    /// No mm tracked: a small folio's, and a large folio's before it is mapped.
    pub const NONE: MmIds = MmIds { mm_id: [None, None], mm_id_mapcount: [-1, -1], shared: false };
}

/// The pages of a folio, as a slice: a small folio's one page inline (16 bytes, so that a
/// folio is one cache line), a large folio's pages with its [`MmIds`] on the heap.
#[derive(Clone)]
pub struct Pages(PagesRepr);

#[derive(Clone)]
enum PagesRepr {
    Small(PageState),
    Large(Box<LargePages>),
}

#[derive(Clone)]
struct LargePages {
    pages: Box<[PageState]>,
    mm_ids: MmIds,
}

impl Pages {
    /// A small folio's page.
    #[inline]
    pub fn small(page: PageState) -> Pages {
        Pages(PagesRepr::Small(page))
    }
    /// `n` zero-filled pages (more than one: a large folio), no mm tracked.
    fn large(n: usize) -> Pages {
        Pages(PagesRepr::Large(Box::new(LargePages {
            pages: vec![PageState::default(); n].into_boxed_slice(),
            mm_ids: MmIds::NONE,
        })))
    }
    /// Keep the first page only, without per-mm mapcounts: what is left of a large folio
    /// split to order 0.
    pub fn make_small(&mut self) {
        self.0 = PagesRepr::Small(self[0]);
    }
}

impl std::ops::Deref for Pages {
    type Target = [PageState];
    #[inline]
    fn deref(&self) -> &[PageState] {
        match &self.0 {
            PagesRepr::Small(p) => std::slice::from_ref(p),
            PagesRepr::Large(l) => &l.pages,
        }
    }
}

impl std::ops::DerefMut for Pages {
    #[inline]
    fn deref_mut(&mut self) -> &mut [PageState] {
        match &mut self.0 {
            PagesRepr::Small(p) => std::slice::from_mut(p),
            PagesRepr::Large(l) => &mut l.pages,
        }
    }
}

impl std::fmt::Debug for Pages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            PagesRepr::Small(p) => f.debug_list().entry(p).finish(),
            PagesRepr::Large(l) => f.debug_list().entries(l.pages.iter()).entry(&l.mm_ids).finish(),
        }
    }
}

impl Folio {
    /// A folio of `order` with `mapping` and `index`, not yet mapped or referenced: every
    /// count zero, every page zero-filled, no mm tracked.
    pub fn new(order: u8, mapping: Mapping, index: PgOff) -> Folio {
        let pages = if order == 0 { Pages::small(PageState::default()) } else { Pages::large(1 << order) };
        Folio::with_pages(order, mapping, index, pages)
    }
    /// [`Folio::new`] with `pages` given (`1 << order` of them).
    #[inline]
    fn with_pages(order: u8, mapping: Mapping, index: PgOff, pages: Pages) -> Folio {
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
        Folio::with_pages(0, Mapping::Anon(anon_vma), index, Pages::small(page))
    }
    /// A small folio's one page, `None` for a large folio: one test for both (a folio of
    /// order 0 keeps its page inline, [`Pages::make_small`]), as a zap asks a page.
    #[inline(always)]
    pub fn small_page_mut(&mut self) -> Option<&mut PageState> {
        match &mut self.pages.0 {
            PagesRepr::Small(p) => Some(p),
            PagesRepr::Large(_) => None,
        }
    }
    /// A large folio's per-mm mapcounts; [`MmIds::NONE`] for a small one.
    #[inline]
    pub fn mm_ids(&self) -> &MmIds {
        match &self.pages.0 {
            PagesRepr::Small(_) => &MmIds::NONE,
            PagesRepr::Large(l) => &l.mm_ids,
        }
    }
    /// A large folio's per-mm mapcounts, to change; `None` for a small folio.
    fn mm_ids_mut(&mut self) -> Option<&mut MmIds> {
        match &mut self.pages.0 {
            PagesRepr::Small(_) => None,
            PagesRepr::Large(l) => Some(&mut l.mm_ids),
        }
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
        let mapcount = self.mapcount() as i64;
        if let Some(ids) = self.mm_ids_mut() {
            *ids = MmIds { mm_id: [Some(mm), None], mm_id_mapcount: [mapcount - 1, -1], shared: false };
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
        let Some(ids) = self.mm_ids_mut() else { return };
        let diff = diff as i64;
        if ids.mm_id[0] == Some(mm) {
            ids.mm_id_mapcount[0] += diff;
        } else if ids.mm_id[1] == Some(mm) {
            ids.mm_id_mapcount[1] += diff;
        } else if ids.mm_id[0].is_none() {
            ids.mm_id[0] = Some(mm);
            ids.mm_id_mapcount[0] = diff - 1;
            // We might have other mappings already.
            if new != diff - 1 {
                ids.shared = true;
            }
        } else if ids.mm_id[1].is_none() {
            ids.mm_id[1] = Some(mm);
            ids.mm_id_mapcount[1] = diff - 1;
            // Slot 0 certainly has mappings as well.
            ids.shared = true;
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
        let Some(ids) = self.mm_ids_mut() else { return };
        if let Some(i) = (0..2).find(|&i| ids.mm_id[i] == Some(mm)) {
            ids.mm_id_mapcount[i] -= diff as i64;
            if ids.mm_id_mapcount[i] >= 0 {
                return;
            }
            // Underflow is a valid corner case: the slot is freed either way.
            ids.mm_id_mapcount[i] = -1;
            ids.mm_id[i] = None;
        }
        if ids.mm_id_mapcount[0] == new || ids.mm_id_mapcount[1] == new {
            ids.shared = false;
        }
    }

    /// `folio_mapped`.
    pub fn is_mapped(&self) -> bool {
        self.entire_mapcount > 0 || self.pages.iter().any(|p| p.mapcount > 0)
    }
    /// `folio_ref_count` as the model counts it: one per PTE mapping, one per PMD mapping,
    /// plus the extra references.
    #[inline(always)]
    pub fn refcount(&self) -> u64 {
        // A small folio (copy-on-write asks about one on every fault) without the loop.
        let ptes = match &self.pages.0 {
            PagesRepr::Small(p) => p.mapcount as u64,
            PagesRepr::Large(l) => l.pages.iter().map(|p| p.mapcount as u64).sum::<u64>(),
        };
        ptes + self.entire_mapcount as u64 + self.extra_refs as u64
    }
}
