//! Counters of the work the model did, and the merge log (`--trace`), in the spirit of the
//! kernel's vma tracepoints.

use std::collections::BTreeMap;
use std::fmt;

/// What the machine records about its own work: counters and, when tracing is on, the
/// merge attempts.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    /// Counts of the work done.
    pub stats: Stats,
    /// Merge attempts, when tracing is on.
    pub merge_log: Option<MergeLog>,
}

/// Why a merge with one neighbour was or was not possible.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum MergeReason {
    /// The merge on this side is possible.
    MergeOk,
    /// No neighbour on that side, or not adjacent.
    NoNeighbour,
    /// `vm_flags` differ outside `VM_IGNORE_MERGE` (`is_mergeable_vma`).
    NomergeFlags,
    /// Different `vm_file`.
    NomergeFile,
    /// The page offsets are not contiguous (`can_vma_merge_before` / `_after`).
    NomergePgoff,
    /// Both sides have an anon_vma and they differ (`is_mergeable_anon_vma`).
    NomergeAnonVma,
    /// The anon_vma would have to be shared with a VMA that `vma_is_fork_child`.
    NomergeForkChild,
    /// Different `anon_vma_name`.
    NomergeAnonName,
    /// Different userfaultfd context (`is_mergeable_vm_userfaultfd_ctx`).
    NomergeUffdCtx,
    /// Different mempolicy (`mpol_equal`); the model has no mempolicies and never gives it.
    NomergePolicy,
    /// The range has `VM_SPECIAL` flags, which never merge.
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
    /// The upper-case name the merge log and reports print.
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
    /// The caller: mmap, brk, mprotect, madvise, mremap_expand, mremap_move, ...
    pub caller: crate::merge::MergeCaller,
    /// Start of the range being mapped or changed (`vmg->start`).
    pub start: u64,
    /// Its end (`vmg->end`, exclusive).
    pub end: u64,
    /// Whether merging with the previous VMA was possible, or why not.
    pub prev: MergeReason,
    /// Whether merging with the next VMA was possible, or why not.
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

/// The merge attempts in order, kept when `Trace::merge_log` is on (`--trace`).
pub type MergeLog = Vec<MergeEvent>;

/// Work counters.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Calls of `vma_merge_new_range` / `vma_merge_existing_range`.
    pub merges_attempted: u64,
    /// Those that merged.
    pub merges_done: u64,
    /// Refusals by reason, counted per side.
    pub merge_refused: BTreeMap<MergeReason, u64>,
    /// VMA splits (`__split_vma`).
    pub splits: u64,
    /// PMD mappings split into PTE tables (`__split_huge_pmd`), migration entries included.
    pub thp_splits: u64,
    /// Large folios split into small ones (`split_folio`; the kernel's `thp_split_page`).
    pub folio_splits: u64,
    /// PMD-sized folios allocated, by the huge fault path or by khugepaged/MADV_COLLAPSE.
    pub thp_allocated: u64,
    /// Page faults handled: `handle_mm_fault` calls, one per page.
    pub faults: u64,
    /// Write faults that copied the page (`wp_page_copy`).
    pub cow_copies: u64,
    /// Write faults that reused an exclusive anonymous page in place (`wp_can_reuse_anon_folio`).
    pub cow_reuses: u64,
    /// PTEs moved by mremap (`move_ptes`, and the entries of whole tables `move_normal_pmd` moves).
    pub ptes_moved: u64,
    /// Pages UFFDIO_MOVE moved (PTEs, swap entries and zero pages; a PMD counts 512).
    pub uffd_pages_moved: u64,
    /// PMD leaves UFFDIO_MOVE moved whole (`move_pages_huge_pmd`).
    pub uffd_pmds_moved: u64,
    /// PMD entries moved whole by mremap (`move_normal_pmd`, `move_huge_pmd`).
    pub pmds_moved: u64,
    /// `anon_vma_alloc` calls.
    pub anon_vmas_allocated: u64,
    /// anon_vmas freed when their last reference went (`put_anon_vma`).
    pub anon_vmas_freed: u64,
    /// Folios allocated, including the small ones a large-folio split makes.
    pub folios_allocated: u64,
    /// Folios freed when their last reference went.
    pub folios_freed: u64,
    /// Folios whose mappings became migration entries (`migrate`).
    pub migrations_started: u64,
    /// Migrations finished (`migrate_folio_move`): by `migrate_done`, by a fault or walk that
    /// waited on the entry, or by the exit of the process that started them.
    pub migrations_done: u64,
    /// What the policy's relocations did and cost.
    pub policy: crate::policy::PolicyStats,
}
