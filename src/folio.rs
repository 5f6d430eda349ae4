//! Folios (`struct folio`): order, `index`, `mapping`, mapcounts, references, pins, and the
//! contents of each page as a tag, so that lost or mixed-up data is detectable.

use smallvec::SmallVec;

use crate::arena::arena_id;
use crate::fs::InodeId;
use crate::rmap::AnonVmaId;
use crate::types::PgOff;

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

#[derive(Clone, Debug)]
pub struct Folio {
    pub order: u8,
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
    pub pages: SmallVec<[PageState; 1]>,
    /// `PG_readahead`: the page-cache folio where the next asynchronous read-ahead starts;
    /// fault-around does not map it.
    pub readahead: bool,
    /// The source of a migration in flight (`migrate_folio_unmap` isolated and locked it, and
    /// `try_to_migrate` replaced its mappings with migration entries): it holds one of
    /// `extra_refs`, the migration's own.
    pub migrating: bool,
}

impl Folio {
    pub fn new(order: u8, mapping: Mapping, index: PgOff) -> Folio {
        Folio {
            order,
            mapping,
            index,
            entire_mapcount: 0,
            extra_refs: 0,
            pincount: 0,
            swap: None,
            pages: smallvec::smallvec![PageState::default(); 1usize << order],
            readahead: false,
            migrating: false,
        }
    }
    pub fn nr_pages(&self) -> u64 {
        1 << self.order
    }
    pub fn is_large(&self) -> bool {
        self.order > 0
    }
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
    /// `folio_mapped`.
    pub fn is_mapped(&self) -> bool {
        self.entire_mapcount > 0 || self.pages.iter().any(|p| p.mapcount > 0)
    }
    /// `folio_ref_count` as the model counts it: one per PTE mapping, one per PMD mapping,
    /// plus the extra references.
    pub fn refcount(&self) -> u64 {
        self.pages.iter().map(|p| p.mapcount as u64).sum::<u64>()
            + self.entire_mapcount as u64
            + self.extra_refs as u64
    }
}
