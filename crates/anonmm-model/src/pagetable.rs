//! Page tables: PGD → PUD → PMD → PTE, with PTE leaves and PMD (THP) leaves.
//!
//! The populated part of the tree is held sparsely: PMD entries in an ordered map keyed by
//! PMD index (whose high bits are the PUD and PGD indices), each either a PTE table of 512
//! entries or a huge leaf. This is exactly the information the upper levels would carry, and
//! keeps walks ordered and cheap.

use std::cell::Cell;

use bitflags::bitflags;

use crate::folio::FolioId;
use crate::types::{PAGE_SHIFT, PMD_SHIFT, PMD_SIZE, PTRS_PER_PTE, PUD_SHIFT, VirtAddr};

bitflags! {
    /// PTE bits the model tracks.
    #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
    pub struct PteFlags: u8 {
        /// `_PAGE_RW` (`pte_write`).
        const WRITE = 0x1;
        /// `_PAGE_DIRTY` (`pte_dirty`).
        const DIRTY = 0x2;
        /// `_PAGE_ACCESSED` (`pte_young`).
        const ACCESSED = 0x4;
        /// `_PAGE_SOFT_DIRTY` (`pte_soft_dirty`).
        const SOFT_DIRTY = 0x8;
    }
}

/// The migration entry types of an anonymous page (include/linux/swapops.h:
/// `SWP_MIGRATION_READ`, `SWP_MIGRATION_READ_EXCLUSIVE`, `SWP_MIGRATION_WRITE`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum MigrationKind {
    /// `make_readable_migration_entry`: the page may be shared.
    Read,
    /// `make_readable_exclusive_migration_entry`: read-only, but PageAnonExclusive.
    ReadExclusive,
    /// `make_writable_migration_entry`: the PTE was writable (so the page exclusive).
    Write,
}

impl MigrationKind {
    /// The kind `try_to_migrate_one` picks for a mapping: writable first, then exclusive.
    pub fn of(writable: bool, exclusive: bool) -> MigrationKind {
        if writable {
            MigrationKind::Write
        } else if exclusive {
            MigrationKind::ReadExclusive
        } else {
            MigrationKind::Read
        }
    }
    /// `is_writable_migration_entry`.
    pub fn is_writable(self) -> bool {
        self == MigrationKind::Write
    }
    /// `!is_readable_migration_entry`: `remove_migration_pte` maps the page with
    /// RMAP_EXCLUSIVE.
    pub fn is_exclusive(self) -> bool {
        self != MigrationKind::Read
    }
}

/// PTE bits a migration entry keeps: young and dirty (`make_migration_entry_young`,
/// `make_migration_entry_dirty`) and soft-dirty (`pte_swp_mksoft_dirty`).
pub const MIGRATION_KEPT_FLAGS: PteFlags =
    PteFlags::ACCESSED.union(PteFlags::DIRTY).union(PteFlags::SOFT_DIRTY);

/// A swap entry (`swp_entry_t`): the slot of the (single) swap device holding the page.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct SwapEntry(pub u32);

/// One page-table entry.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Pte {
    /// An empty entry (`pte_none`).
    #[default]
    None,
    /// Maps page `sub` of `folio`.
    Present {
        /// The mapped folio.
        folio: FolioId,
        /// The page within the folio (`folio_page(folio, sub)`).
        sub: u16,
        /// The PTE's bits.
        flags: PteFlags,
    },
    /// A swapped-out page; `exclusive` is `pte_swp_exclusive`: the page was PageAnonExclusive
    /// when `try_to_unmap_one` replaced the present PTE.
    Swap {
        /// The swap slot holding the page.
        entry: SwapEntry,
        /// `pte_swp_exclusive`.
        exclusive: bool,
    },
    /// Page `sub` of `folio`, under migration (`is_migration_entry`): it holds no mapcount
    /// and no reference (`try_to_migrate_one` dropped both). `flags` are the ones of
    /// [`MIGRATION_KEPT_FLAGS`] the PTE had.
    Migration {
        /// The folio being migrated (the source).
        folio: FolioId,
        /// The page within the folio.
        sub: u16,
        /// The migration entry type.
        kind: MigrationKind,
        /// The kept bits of the replaced PTE.
        flags: PteFlags,
    },
    /// A guard-region marker (`make_pte_marker(PTE_MARKER_GUARD)`, MADV_GUARD_INSTALL):
    /// maps nothing and holds nothing; a fault on it is SIGSEGV (`handle_pte_marker`). Only
    /// a zap that drops markers (`ZAP_FLAG_DROP_MARKER`: munmap, exit) or
    /// MADV_GUARD_REMOVE clears it.
    Guard,
}

impl Pte {
    /// `pte_none`.
    pub fn is_none(&self) -> bool {
        matches!(self, Pte::None)
    }
    /// `pte_present`: the folio, page and bits of a present PTE, `None` otherwise.
    pub fn present(&self) -> Option<(FolioId, u16, PteFlags)> {
        match *self {
            Pte::Present { folio, sub, flags } => Some((folio, sub, flags)),
            _ => None,
        }
    }
}

/// A PTE table (one PMD entry's worth).
#[derive(Clone, Debug)]
pub struct PteTable {
    /// The entries, indexed by [`pte_index`].
    pub ptes: [Pte; PTRS_PER_PTE],
    /// Non-none entries.
    pub used: u16,
}

impl Default for PteTable {
    fn default() -> Self {
        PteTable { ptes: [Pte::None; PTRS_PER_PTE], used: 0 }
    }
}

/// A PMD entry.
#[derive(Clone, Debug)]
pub enum Pmd {
    /// Points to a PTE table (`pmd_present && !pmd_leaf`).
    Table(Box<PteTable>),
    /// A PMD-mapped (THP) folio.
    Huge {
        /// The mapped folio, of order `HPAGE_PMD_ORDER`.
        folio: FolioId,
        /// The PMD's bits (`pmd_write`, `pmd_dirty`, `pmd_young`, `pmd_soft_dirty`).
        flags: PteFlags,
    },
    /// A PMD migration entry (`is_pmd_migration_entry`, `set_pmd_migration_entry`) for a
    /// THP under migration; like [`Pte::Migration`] it holds no mapcount.
    Migration {
        /// The THP being migrated (the source).
        folio: FolioId,
        /// The migration entry type.
        kind: MigrationKind,
        /// The kept bits of the replaced PMD.
        flags: PteFlags,
    },
}

/// What maps one address.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Walk {
    /// No PTE table or huge leaf.
    NoTable,
    /// The PTE for the address in its PTE table (possibly none).
    Pte(Pte),
    /// A huge leaf; `sub` is the page of the folio at the address.
    Huge {
        /// The PMD-mapped folio.
        folio: FolioId,
        /// The page within the folio.
        sub: u16,
        /// The PMD's bits.
        flags: PteFlags,
    },
    /// A PMD migration entry; `sub` is the page of the folio at the address.
    PmdMigration {
        /// The THP being migrated.
        folio: FolioId,
        /// The page within the folio.
        sub: u16,
        /// The migration entry type.
        kind: MigrationKind,
        /// The kept bits of the replaced PMD.
        flags: PteFlags,
    },
}

/// PMD entries per PMD table (`PTRS_PER_PMD`).
const PTRS_PER_PMD: usize = 512;
/// `PUD_SHIFT - PMD_SHIFT`: how a PMD index splits into its PUD index and slot.
const PMD_INDEX_BITS: u32 = PUD_SHIFT - PMD_SHIFT;

/// One PMD table: the 512 PMD entries under a present PUD entry.
#[derive(Clone, Debug)]
struct PmdTable {
    slots: Box<[Option<Pmd>; PTRS_PER_PMD]>,
    /// Non-none entries.
    used: u16,
}

impl Default for PmdTable {
    fn default() -> Self {
        PmdTable { slots: Box::new([const { None }; PTRS_PER_PMD]), used: 0 }
    }
}

/// The PUD level and the PMD tables below it, keyed by PMD index (`addr >> PMD_SHIFT`, whose
/// high bits are the PUD and PGD indices). A PUD entry points to a PMD table from the first
/// PMD entry set under it until `free_pgtables` finds the whole 1 GiB unused, so a present
/// PUD may hold an empty table, as in the kernel.
///
/// Point lookups index an array under a small ordered map of PUDs (a process touches a
/// handful of GiB), which is what makes a fault cost a few nanoseconds rather than a search
/// of every PMD entry of the address space.
#[derive(Clone, Debug, Default)]
pub struct PmdMap {
    tables: PudDir,
    /// Empty PMD tables and PTE tables `free_pgtables` freed, kept for the next allocation:
    /// a call that maps and unmaps around the same place (a move away and back) would
    /// otherwise allocate and zero 14 KiB of tables each time. An empty table is all none,
    /// so reusing one is the same as making a new one.
    spare_pmd_tables: Vec<Box<[Option<Pmd>; PTRS_PER_PMD]>>,
    spare_pte_tables: Vec<Box<PteTable>>,
    /// Huge leaves and PMD migration entries: with none (most processes), splitting the
    /// huge PMDs at a VMA's new edges has nothing to look up.
    leaves: usize,
}

/// The present PUD entries and their PMD tables, by PUD index: a sorted vector (a process
/// spans a few GiB, so a few entries) that remembers the entry of the last lookup, which a
/// fault or a VMA call asks for again and again.
#[derive(Clone, Debug, Default)]
struct PudDir {
    entries: Vec<(u64, PmdTable)>,
    last: Cell<usize>,
}

impl PudDir {
    #[inline]
    fn find(&self, pud: u64) -> Result<usize, usize> {
        let h = self.last.get();
        if self.entries.get(h).is_some_and(|e| e.0 == pud) {
            return Ok(h);
        }
        let r = self.entries.binary_search_by_key(&pud, |e| e.0);
        if let Ok(i) = r {
            self.last.set(i);
        }
        r
    }
    #[inline]
    fn get(&self, pud: &u64) -> Option<&PmdTable> {
        self.find(*pud).ok().map(|i| &self.entries[i].1)
    }
    #[inline]
    fn get_mut(&mut self, pud: &u64) -> Option<&mut PmdTable> {
        self.find(*pud).ok().map(|i| &mut self.entries[i].1)
    }
    fn contains_key(&self, pud: &u64) -> bool {
        self.find(*pud).is_ok()
    }
    /// The table under `pud`, made by `f` if there is none.
    #[inline]
    fn get_or_insert_with(&mut self, pud: u64, f: impl FnOnce() -> PmdTable) -> &mut PmdTable {
        let i = match self.find(pud) {
            Ok(i) => i,
            Err(i) => {
                self.entries.insert(i, (pud, f()));
                self.last.set(i);
                i
            }
        };
        &mut self.entries[i].1
    }
    fn remove(&mut self, pud: &u64) -> Option<PmdTable> {
        let i = self.find(*pud).ok()?;
        Some(self.entries.remove(i).1)
    }
    /// Entries with PUD index in `puds`, in order.
    fn range(
        &self,
        puds: std::ops::RangeInclusive<u64>,
    ) -> impl DoubleEndedIterator<Item = (&u64, &PmdTable)> {
        let lo = self.entries.partition_point(|e| e.0 < *puds.start());
        let hi = self.entries.partition_point(|e| e.0 <= *puds.end()).max(lo);
        self.entries[lo..hi].iter().map(|(k, t)| (k, t))
    }
    fn values(&self) -> impl Iterator<Item = &PmdTable> {
        self.entries.iter().map(|e| &e.1)
    }
}

/// Freed tables of each kind a [`PmdMap`] keeps for reuse.
const SPARE_TABLES: usize = 4;

/// Whether a PMD entry is a leaf (a huge page or a PMD migration entry), not a PTE table.
fn is_leaf(p: &Pmd) -> bool {
    !matches!(p, Pmd::Table(_))
}

fn split_key(key: u64) -> (u64, usize) {
    (key >> PMD_INDEX_BITS, (key as usize) & (PTRS_PER_PMD - 1))
}

impl PmdMap {
    /// The PMD entry at PMD index `key`.
    #[inline]
    pub fn get(&self, key: &u64) -> Option<&Pmd> {
        let (pud, slot) = split_key(*key);
        self.tables.get(&pud).and_then(|t| t.slots[slot].as_ref())
    }
    /// The PMD entry at PMD index `key`, to change in place.
    #[inline]
    pub fn get_mut(&mut self, key: &u64) -> Option<&mut Pmd> {
        let (pud, slot) = split_key(*key);
        self.tables.get_mut(&pud).and_then(|t| t.slots[slot].as_mut())
    }
    /// Whether PMD index `key` holds an entry.
    pub fn contains_key(&self, key: &u64) -> bool {
        self.get(key).is_some()
    }
    /// A PMD table, reused if one was freed.
    fn new_pmd_table(spare: &mut Vec<Box<[Option<Pmd>; PTRS_PER_PMD]>>) -> PmdTable {
        match spare.pop() {
            Some(slots) => PmdTable { slots, used: 0 },
            None => PmdTable::default(),
        }
    }
    /// The PMD table under PUD `pud`, allocated if needed.
    fn table_mut(&mut self, pud: u64) -> &mut PmdTable {
        let spare = &mut self.spare_pmd_tables;
        self.tables.get_or_insert_with(pud, || Self::new_pmd_table(spare))
    }
    /// Set the PMD entry at `key`, allocating the PMD table (the PUD entry) if needed.
    pub fn insert(&mut self, key: u64, pmd: Pmd) -> Option<Pmd> {
        let (pud, slot) = split_key(key);
        let leaf = is_leaf(&pmd);
        let t = self.table_mut(pud);
        let old = t.slots[slot].replace(pmd);
        if old.is_none() {
            t.used += 1;
        }
        self.leaves = self.leaves + usize::from(leaf) - usize::from(old.as_ref().is_some_and(is_leaf));
        old
    }
    /// The entry at `key`, made with `f` (and its PMD table allocated) if it is none.
    #[inline]
    pub fn get_or_insert_with(&mut self, key: u64, f: impl FnOnce() -> Pmd) -> &mut Pmd {
        let (pud, slot) = split_key(key);
        let t = self.tables.get_or_insert_with(pud, || Self::new_pmd_table(&mut self.spare_pmd_tables));
        if t.slots[slot].is_none() {
            t.used += 1;
            let pmd = f();
            self.leaves += usize::from(is_leaf(&pmd));
            t.slots[slot] = Some(pmd);
        }
        t.slots[slot].as_mut().expect("just set")
    }
    /// The entry at `key`, a new PTE table (a freed one reused) if it is none (`pte_alloc`).
    #[inline]
    pub fn get_or_alloc_table(&mut self, key: u64) -> &mut Pmd {
        let (pud, slot) = split_key(key);
        let spare = &mut self.spare_pte_tables;
        let t = self.tables.get_or_insert_with(pud, || Self::new_pmd_table(&mut self.spare_pmd_tables));
        if t.slots[slot].is_none() {
            t.used += 1;
        }
        t.slots[slot].get_or_insert_with(|| Pmd::Table(spare.pop().unwrap_or_default()))
    }
    /// Clear the PMD entry at `key` for `free_pgtables`, keeping the PTE table for reuse
    /// when it is empty. Returns whether the entry was an empty PTE table.
    pub fn free_pte_table(&mut self, key: u64) -> bool {
        match self.remove(&key) {
            Some(Pmd::Table(t)) if t.used == 0 => {
                if self.spare_pte_tables.len() < SPARE_TABLES {
                    self.spare_pte_tables.push(t);
                }
                true
            }
            _ => false,
        }
    }
    /// The first PMD index in `[from, hi]` that holds an entry.
    pub fn next_key(&self, from: u64, hi: u64) -> Option<u64> {
        // A few keys (the span of a VMA call) are cheaper to look up one by one.
        if hi.saturating_sub(from) < 4 {
            return (from..=hi).find(|k| self.contains_key(k));
        }
        self.range(from..=hi).next().map(|(k, _)| k)
    }
    /// Non-none entries of the PMD table under PUD `pud` (0 if there is none).
    pub fn pud_used(&self, pud: u64) -> u16 {
        self.tables.get(&pud).map_or(0, |t| t.used)
    }
    /// The first present PUD entry with index in `[from, hi]`.
    pub fn next_pud(&self, from: u64, hi: u64) -> Option<u64> {
        if from > hi {
            return None;
        }
        self.tables.range(from..=hi).next().map(|(&k, _)| k)
    }
    /// Clear the PMD entry at `key` (`pmd_clear`); the PMD table stays.
    pub fn remove(&mut self, key: &u64) -> Option<Pmd> {
        let (pud, slot) = split_key(*key);
        let t = self.tables.get_mut(&pud)?;
        let old = t.slots[slot].take();
        if old.is_some() {
            t.used -= 1;
        }
        self.leaves -= usize::from(old.as_ref().is_some_and(is_leaf));
        old
    }
    /// Whether any PMD entry is a huge leaf or a PMD migration entry.
    #[inline]
    pub fn has_leaves(&self) -> bool {
        self.leaves > 0
    }
    /// Huge leaves and PMD migration entries, as counted on every change (for the
    /// invariant checker, which counts them itself).
    pub fn leaf_count(&self) -> usize {
        self.leaves
    }
    /// Non-none PMD entries with index in `keys`, in order.
    pub fn range(&self, keys: std::ops::RangeInclusive<u64>) -> impl Iterator<Item = (u64, &Pmd)> {
        let (lo, hi) = (*keys.start(), *keys.end());
        let empty = lo > hi;
        // An empty `keys` (1..=0 included) takes a valid range and filters every table out.
        let (plo, phi) = (lo >> PMD_INDEX_BITS, hi >> PMD_INDEX_BITS);
        let puds = plo..=phi.max(plo);
        self.tables.range(puds).filter(move |(_, t)| !empty && t.used > 0).flat_map(move |(&pud, t)| {
            let base = pud << PMD_INDEX_BITS;
            let first = lo.saturating_sub(base).min(PTRS_PER_PMD as u64) as usize;
            let last = (hi - base.min(hi)).min(PTRS_PER_PMD as u64 - 1) as usize;
            t.slots[first..=last]
                .iter()
                .enumerate()
                .filter_map(move |(i, s)| s.as_ref().map(|p| (base + (first + i) as u64, p)))
        })
    }
    /// Every non-none PMD entry, in order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Pmd)> {
        self.range(0..=u64::MAX >> PMD_SHIFT)
    }
    /// Whether the PUD entry `pud` (`addr >> PUD_SHIFT`) points to a PMD table.
    pub fn pud_present(&self, pud: u64) -> bool {
        self.tables.contains_key(&pud)
    }
    /// `pud_alloc`/`pmd_alloc`: make the PUD entry `pud` point to a PMD table.
    pub fn pud_alloc(&mut self, pud: u64) {
        self.table_mut(pud);
    }
    /// Present PUD entries with index in `puds`.
    pub fn puds_in(&self, puds: std::ops::RangeInclusive<u64>) -> Vec<u64> {
        self.tables.range(puds).map(|(&k, _)| k).collect()
    }
    /// `free_pmd_range` for one PUD: clear the PUD entry and free its PMD table, which
    /// must be empty (callers free every PMD entry under it first).
    pub fn pud_free(&mut self, pud: u64) {
        let t = self.tables.remove(&pud);
        debug_assert!(t.as_ref().is_none_or(|t| t.used == 0), "freeing a PMD table that still maps");
        if let Some(t) = t
            && t.used == 0
            && self.spare_pmd_tables.len() < SPARE_TABLES
        {
            self.spare_pmd_tables.push(t.slots);
        }
    }
    /// Non-none PMD entries.
    pub fn len(&self) -> usize {
        self.tables.values().map(|t| t.used as usize).sum()
    }
    /// Whether no PMD entry is set.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The PTEs [`PageTable::ptes_in`] finds, with their addresses.
pub type PteList = smallvec::SmallVec<[(VirtAddr, Pte); 4]>;

/// One address space's page tables: PGD → PUD → PMD → PTE, held as [`PmdMap`].
#[derive(Clone, Debug, Default)]
pub struct PageTable {
    /// The PMD entries, under their PUDs.
    pub pmds: PmdMap,
}

/// The global PMD index of `a` (`addr >> PMD_SHIFT`): the key of [`PmdMap`]. Unlike the
/// kernel's `pmd_index`, it keeps the PUD and PGD bits.
pub fn pmd_index(a: VirtAddr) -> u64 {
    a.0 >> PMD_SHIFT
}
/// `pte_index`: the slot of `a` in its PTE table.
pub fn pte_index(a: VirtAddr) -> usize {
    ((a.0 >> PAGE_SHIFT) as usize) & (PTRS_PER_PTE - 1)
}

impl PageTable {
    /// What maps `a`: a software page-table walk down to the PMD entry and, under a table,
    /// the PTE.
    pub fn walk(&self, a: VirtAddr) -> Walk {
        match self.pmds.get(&pmd_index(a)) {
            None => Walk::NoTable,
            Some(Pmd::Table(t)) => Walk::Pte(t.ptes[pte_index(a)]),
            Some(Pmd::Huge { folio, flags }) => {
                Walk::Huge { folio: *folio, sub: pte_index(a) as u16, flags: *flags }
            }
            Some(Pmd::Migration { folio, kind, flags }) => {
                Walk::PmdMigration { folio: *folio, sub: pte_index(a) as u16, kind: *kind, flags: *flags }
            }
        }
    }
    /// The PTE for `a` (`ptep_get`); none if there is no PTE table or the PMD is a huge leaf
    /// or migration entry.
    pub fn get_pte(&self, a: VirtAddr) -> Pte {
        match self.pmds.get(&pmd_index(a)) {
            Some(Pmd::Table(t)) => t.ptes[pte_index(a)],
            _ => Pte::None,
        }
    }
    /// Install a PMD entry (allocating the PMD table under its PUD).
    pub fn set_pmd(&mut self, key: u64, pmd: Pmd) {
        self.pmds.insert(key, pmd);
    }

    /// Whether the PUD entry above `a` points to a PMD table.
    pub fn pud_present(&self, a: VirtAddr) -> bool {
        self.pmds.pud_present(a.0 >> PUD_SHIFT)
    }

    /// Set a PTE, allocating the table (`pte_alloc`). The PMD must not be a huge leaf.
    pub fn set_pte(&mut self, a: VirtAddr, pte: Pte) {
        if pte.is_none() && !self.pmds.contains_key(&pmd_index(a)) {
            return;
        }
        let t = match self.pmds.get_or_alloc_table(pmd_index(a)) {
            Pmd::Table(t) => t,
            Pmd::Huge { .. } | Pmd::Migration { .. } => panic!("set_pte on a huge PMD at {a:?}"),
        };
        let slot = &mut t.ptes[pte_index(a)];
        match (slot.is_none(), pte.is_none()) {
            (true, false) => t.used += 1,
            (false, true) => t.used -= 1,
            _ => {}
        }
        *slot = pte;
    }
    /// `pte_alloc`: make sure a PTE table exists for `a` (no-op over a huge leaf).
    pub fn alloc_table(&mut self, a: VirtAddr) {
        self.pmds.get_or_alloc_table(pmd_index(a));
    }

    /// Clear a PTE and return the old one (`ptep_get_and_clear`).
    pub fn take_pte(&mut self, a: VirtAddr) -> Pte {
        let old = self.get_pte(a);
        if !old.is_none() {
            self.set_pte(a, Pte::None);
        }
        old
    }
    /// The bits of the present PTE or huge PMD leaf mapping `a`, to change in place; `None`
    /// for any other entry.
    pub fn pte_flags_mut(&mut self, a: VirtAddr) -> Option<&mut PteFlags> {
        match self.pmds.get_mut(&pmd_index(a)) {
            Some(Pmd::Table(t)) => match &mut t.ptes[pte_index(a)] {
                Pte::Present { flags, .. } => Some(flags),
                _ => None,
            },
            Some(Pmd::Huge { flags, .. }) => Some(flags),
            Some(Pmd::Migration { .. }) | None => None,
        }
    }
    /// The PMD entry covering `a`, if any.
    pub fn pmd(&self, a: VirtAddr) -> Option<&Pmd> {
        self.pmds.get(&pmd_index(a))
    }
    /// PMD indices in `[start, end)` that hold something.
    pub fn pmd_keys_in(&self, start: VirtAddr, end: VirtAddr) -> Vec<u64> {
        if start >= end {
            return Vec::new();
        }
        self.pmds.range(pmd_index(start)..=pmd_index(VirtAddr(end.0 - 1))).map(|(k, _)| k).collect()
    }
    /// The pieces `[addr, next)` of `[start, end)` under each PMD entry that holds something,
    /// in order: what `walk_page_range` visits with a `pmd_entry` callback (empty PMDs are
    /// skipped), so that walks over huge sparse ranges stay cheap.
    pub fn pmd_ranges(&self, start: VirtAddr, end: VirtAddr) -> Vec<(VirtAddr, VirtAddr)> {
        self.pmd_keys_in(start, end)
            .into_iter()
            .map(|k| {
                let base = k << PMD_SHIFT;
                (VirtAddr(base.max(start.0)), VirtAddr((base + PMD_SIZE).min(end.0)))
            })
            .collect()
    }
    /// Whether a huge leaf or a PMD migration entry covers part of `[start, end)`: when none
    /// does, the callers' THP passes have nothing to do.
    pub fn any_leaf_in(&self, start: VirtAddr, end: VirtAddr) -> bool {
        if start >= end || !self.pmds.has_leaves() {
            return false;
        }
        let (lo, hi) = (pmd_index(start), pmd_index(VirtAddr(end.0 - 1)));
        if lo == hi {
            return self.pmds.get(&lo).is_some_and(is_leaf);
        }
        self.pmds.range(lo..=hi).any(|(_, p)| is_leaf(p))
    }
    /// Whether `[start, end)` maps a page: a huge PMD or a present PTE.
    pub fn any_present_in(&self, start: VirtAddr, end: VirtAddr) -> bool {
        self.pmds
            .range(pmd_index(start)..=pmd_index(VirtAddr(end.0.max(start.0 + 1) - 1)))
            .any(|(_, p)| matches!(p, Pmd::Huge { .. }))
            || self.ptes_in(start, end).iter().any(|(_, p)| matches!(p, Pte::Present { .. }))
    }
    /// Every non-none PTE in `[start, end)` in address order (huge leaves excluded). A few
    /// are kept inline: VMA calls on small ranges then allocate nothing.
    pub fn ptes_in(&self, start: VirtAddr, end: VirtAddr) -> PteList {
        let mut out = PteList::new();
        if start >= end {
            return out;
        }
        let (lo, hi) = (pmd_index(start), pmd_index(VirtAddr(end.0 - 1)));
        // A range within one PMD (most VMA calls) needs no range walk of the PMD map.
        let one = if lo == hi { self.pmds.get(&lo).map(|p| (lo, p)) } else { None };
        let walk = if lo == hi { None } else { Some(self.pmds.range(lo..=hi)) };
        for (k, pmd) in one.into_iter().chain(walk.into_iter().flatten()) {
            if let Pmd::Table(t) = pmd {
                if t.used == 0 {
                    continue;
                }
                let base = k << PMD_SHIFT;
                let lo = start.0.max(base);
                let hi = end.0.min(base + PMD_SIZE);
                let mut a = lo;
                while a < hi {
                    let p = t.ptes[pte_index(VirtAddr(a))];
                    if !p.is_none() {
                        out.push((VirtAddr(a), p));
                    }
                    a += 1 << PAGE_SHIFT;
                }
            }
        }
        out
    }
    /// `ptep_get_and_clear` of every entry of `[start, end)` that is not none, one PTE table
    /// at a time as `zap_pte_range` walks them (one table lookup, not one a page): the old
    /// entries, in address order. Guard markers stay unless `markers`.
    pub fn take_ptes_in(&mut self, start: VirtAddr, end: VirtAddr, markers: bool) -> PteList {
        let mut out = PteList::new();
        self.zap_ptes_in(start, end, markers, |a, pte| {
            out.push((a, *pte));
            true
        });
        out
    }
    /// [`PageTable::take_ptes_in`] handing each entry to `each` as it is taken, as
    /// `zap_pte_range` releases each page in its walk (no list of a million entries for a
    /// large munmap): the entry is cleared when `each` returns true; on false the walk stops
    /// there, leaving that entry, and returns its address. `each` must not need the page
    /// table.
    #[inline]
    pub fn zap_ptes_in(
        &mut self,
        start: VirtAddr,
        end: VirtAddr,
        markers: bool,
        mut each: impl FnMut(VirtAddr, &Pte) -> bool,
    ) -> Option<VirtAddr> {
        if start >= end {
            return None;
        }
        let (lo, hi) = (pmd_index(start), pmd_index(VirtAddr(end.0 - 1)));
        let keys: smallvec::SmallVec<[u64; 4]> = if lo == hi {
            smallvec::smallvec![lo]
        } else {
            self.pmds.range(lo..=hi).filter(|(_, p)| matches!(p, Pmd::Table(_))).map(|(k, _)| k).collect()
        };
        for k in keys {
            let Some(Pmd::Table(t)) = self.pmds.get_mut(&k) else { continue };
            let t: &mut PteTable = t;
            let base = k << PMD_SHIFT;
            let lo = start.0.max(base);
            let hi = end.0.min(base + PMD_SIZE);
            // The table's slots of the range as a slice, and its count of entries in a local
            // until the walk leaves the table: the walk stops once the table is empty.
            let mut used = t.used;
            let mut stop = None;
            for (i, slot) in
                t.ptes[pte_index(VirtAddr(lo))..=pte_index(VirtAddr(hi - 1))].iter_mut().enumerate()
            {
                if used == 0 {
                    break;
                }
                match slot {
                    Pte::None => continue,
                    Pte::Guard if !markers => continue,
                    _ => {}
                }
                let a = VirtAddr(lo + ((i as u64) << PAGE_SHIFT));
                if !each(a, slot) {
                    stop = Some(a);
                    break;
                }
                *slot = Pte::None;
                used -= 1;
            }
            t.used = used;
            if stop.is_some() {
                return stop;
            }
        }
        None
    }
    /// Huge leaves whose 2 MiB range intersects `[start, end)`: (PMD start, folio, flags).
    pub fn huge_in(&self, start: VirtAddr, end: VirtAddr) -> Vec<(VirtAddr, FolioId, PteFlags)> {
        if start >= end {
            return Vec::new();
        }
        self.pmds
            .range(pmd_index(start)..=pmd_index(VirtAddr(end.0 - 1)))
            .filter_map(|(k, p)| match p {
                Pmd::Huge { folio, flags } => Some((VirtAddr(k << PMD_SHIFT), *folio, *flags)),
                _ => None,
            })
            .collect()
    }
    /// PMD migration entries whose 2 MiB range intersects `[start, end)`: (PMD start, folio,
    /// kind, flags).
    pub fn migration_pmds_in(
        &self,
        start: VirtAddr,
        end: VirtAddr,
    ) -> Vec<(VirtAddr, FolioId, MigrationKind, PteFlags)> {
        if start >= end {
            return Vec::new();
        }
        self.pmds
            .range(pmd_index(start)..=pmd_index(VirtAddr(end.0 - 1)))
            .filter_map(|(k, p)| match p {
                Pmd::Migration { folio, kind, flags } => {
                    Some((VirtAddr(k << PMD_SHIFT), *folio, *kind, *flags))
                }
                _ => None,
            })
            .collect()
    }
}
