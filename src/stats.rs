//! Counters of the work the model did, and the merge log (`--trace`), in the spirit of the
//! kernel's vma tracepoints.

use std::collections::BTreeMap;
use std::fmt;

/// Why a merge with one neighbour was or was not possible.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum MergeReason {
    MergeOk,
    /// No neighbour on that side, or not adjacent.
    NoNeighbour,
    NomergeFlags,
    NomergeFile,
    NomergePgoff,
    NomergeAnonVma,
    NomergeForkChild,
    NomergeAnonName,
    NomergeUffdCtx,
    NomergePolicy,
    NomergeSpecial,
    /// The VMA that would be removed has a close hook.
    NomergeClose,
    /// prev and next each fit but not with each other.
    NomergeIncompatible,
    /// Only the left side is ever tried (brk, `just_expand`).
    NomergeJustExpand,
}

impl MergeReason {
    /// Every reason, in order.
    pub const ALL: [MergeReason; 14] = [
        MergeReason::MergeOk,
        MergeReason::NoNeighbour,
        MergeReason::NomergeFlags,
        MergeReason::NomergeFile,
        MergeReason::NomergePgoff,
        MergeReason::NomergeAnonVma,
        MergeReason::NomergeForkChild,
        MergeReason::NomergeAnonName,
        MergeReason::NomergeUffdCtx,
        MergeReason::NomergePolicy,
        MergeReason::NomergeSpecial,
        MergeReason::NomergeClose,
        MergeReason::NomergeIncompatible,
        MergeReason::NomergeJustExpand,
    ];
    pub fn name(self) -> &'static str {
        match self {
            MergeReason::MergeOk => "MERGE_OK",
            MergeReason::NoNeighbour => "NO_NEIGHBOUR",
            MergeReason::NomergeFlags => "NOMERGE_FLAGS",
            MergeReason::NomergeFile => "NOMERGE_FILE",
            MergeReason::NomergePgoff => "NOMERGE_PGOFF",
            MergeReason::NomergeAnonVma => "NOMERGE_ANON_VMA",
            MergeReason::NomergeForkChild => "NOMERGE_FORK_CHILD",
            MergeReason::NomergeAnonName => "NOMERGE_ANON_NAME",
            MergeReason::NomergeUffdCtx => "NOMERGE_UFFD_CTX",
            MergeReason::NomergePolicy => "NOMERGE_POLICY",
            MergeReason::NomergeSpecial => "NOMERGE_SPECIAL",
            MergeReason::NomergeClose => "NOMERGE_CLOSE",
            MergeReason::NomergeIncompatible => "NOMERGE_INCOMPATIBLE",
            MergeReason::NomergeJustExpand => "NOMERGE_JUST_EXPAND",
        }
    }
}

impl fmt::Display for MergeReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One merge attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MergeEvent {
    /// `new_range` or `existing_range`.
    pub kind: &'static str,
    /// The caller: mmap, brk, mprotect, madvise, prctl, mremap_expand, mremap_move.
    pub caller: &'static str,
    pub start: u64,
    pub end: u64,
    pub prev: MergeReason,
    pub next: MergeReason,
    /// Whether a merge happened.
    pub merged: bool,
}

impl fmt::Display for MergeEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "vma_merge: {} ({}) [{:#x}, {:#x}) prev={} next={} -> {}",
            self.kind,
            self.caller,
            self.start,
            self.end,
            self.prev,
            self.next,
            if self.merged { "merged" } else { "nomerge" }
        )
    }
}

pub type MergeLog = Vec<MergeEvent>;

/// Work counters.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub merges_attempted: u64,
    pub merges_done: u64,
    /// Refusals by reason, counted per side.
    pub merge_refused: BTreeMap<MergeReason, u64>,
    pub splits: u64,
    pub thp_splits: u64,
    /// Large folios split into small ones (`split_folio`; the kernel's `thp_split_page`).
    pub folio_splits: u64,
    pub thp_allocated: u64,
    pub faults: u64,
    pub cow_copies: u64,
    pub cow_reuses: u64,
    pub ptes_moved: u64,
    /// Pages UFFDIO_MOVE moved (PTEs, swap entries and zero pages; a PMD counts 512).
    pub uffd_pages_moved: u64,
    /// PMD leaves UFFDIO_MOVE moved whole (`move_pages_huge_pmd`).
    pub uffd_pmds_moved: u64,
    pub pmds_moved: u64,
    pub anon_vmas_allocated: u64,
    pub anon_vmas_freed: u64,
    pub folios_allocated: u64,
    pub folios_freed: u64,
    /// Folios whose mappings became migration entries (`migrate`), and migrations finished.
    pub migrations_started: u64,
    pub migrations_done: u64,
    /// What the policy's relocations did and cost.
    pub policy: crate::policy::PolicyStats,
}
