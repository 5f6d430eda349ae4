//! Policies: which design decides what an mremap move does to a faulted anonymous VMA's
//! `vm_pgoff` and to its folios' `index` and `mapping` (see ../shared/design and the
//! threads in ../shared/seeds).
//!
//! - `kernel`: Linux 6.18. Folios keep `index`/`mapping`, the moved VMA keeps its pgoff
//!   (`copy_vma`), so a moved faulted VMA merges only where that pgoff happens to fit.
//!   mremap flags 8 and 16 are EINVAL (`check_mremap_params`).
//! - `relocate`: Lorenzo Stoakes's 2025 series (`MREMAP_RELOCATE_ANON` = 8,
//!   `MREMAP_MUST_RELOCATE_ANON` = 16): `should_relocate_anon`, `copy_vma` with
//!   `relocate_anon`, `relocate_anon_folios` with undo, the retried
//!   `vma_merge_existing_range`, and the large-folio patch.
//! - `relocate-all`: the same as if every move passed `MREMAP_RELOCATE_ANON`.
//! - `matena`: Jakub Matěna's 2022 RFC v3: on every move of an unshared faulted VMA the new
//!   VMA gets `addr >> PAGE_SHIFT` as pgoff and its folios the matching `index`, checked by a
//!   page walk first (`update_faulted_pgoff`); and a VMA whose anon_vma is an unshared root may
//!   merge into a neighbour with another anon_vma, its folios' `mapping` moving over.
//! - `copy-shared`: Linus Torvalds's 2004 proposal: every move relocates, and a folio shared
//!   with another process is copied first (copy-on-write broken early), so that the move can
//!   always relocate.
//! - `auto`: ours. A move relocates only when that makes the VMA merge with (or join the
//!   anon_vma of) a neighbour at its new place, choosing the pgoff that fits the neighbour
//!   rather than `addr >> PAGE_SHIFT`; shared folios are copied only when their bytes fit a
//!   budget (`auto:BYTES`, default 64 KiB per move); otherwise nothing is done at all.
//!
//! What each design does lives in a file of its own under `designs/`, reached from the
//! kernel mirror through the named hooks of `designs::Design` (docs/policies.md lists them);
//! a [`Policy`] value picks the design.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

/// Every policy name `--policy` accepts (`auto` also as `auto:BYTES`).
pub const POLICY_NAMES: &[&str] = &["kernel", "relocate", "relocate-all", "matena", "copy-shared", "auto"];

/// Every policy, in the order of [`POLICY_NAMES`] (`auto` with its default budget): what
/// `--policy all` runs.
pub const ALL_POLICIES: [Policy; 6] = [
    Policy::Kernel,
    Policy::Relocate,
    Policy::RelocateAll,
    Policy::Matena,
    Policy::CopyShared,
    Policy::Auto { copy_budget: AUTO_DEFAULT_BUDGET },
];

/// The policy probe ([`System::probe_policies`](crate::mm::System::probe_policies)): the
/// policies compared with the model's own at every design hook call, and whether one of
/// them would have answered or acted differently at one of them yet. Until it has, the
/// model's state is what each of them would have made of the same steps (`replay --policy
/// all` replays that shared part once).
#[derive(Clone, Debug, Default)]
pub struct PolicyProbe {
    /// The policies compared.
    pub policies: Vec<Policy>,
    /// Set at the first hook call where one of them differs from the model's own policy.
    pub diverged: std::cell::Cell<bool>,
    /// That hook's name.
    pub hook: std::cell::Cell<Option<&'static str>>,
    /// Per policy of `policies`: whether it has differed yet (the others' states are still
    /// the model's).
    pub differs: Vec<std::cell::Cell<bool>>,
    /// How many have.
    pub differing: std::cell::Cell<usize>,
}

/// The default copy budget of `auto`, per move.
pub const AUTO_DEFAULT_BUDGET: u64 = 64 << 10;

/// The design the model follows for mremap moves of faulted anonymous VMAs (`--policy`);
/// see the module documentation for each.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Policy {
    #[default]
    /// Linux 6.18: folios keep `index`/`mapping`, the moved VMA keeps its pgoff.
    Kernel,
    /// Lorenzo Stoakes's 2025 series: relocate on `MREMAP_RELOCATE_ANON` /
    /// `MREMAP_MUST_RELOCATE_ANON`.
    Relocate,
    /// As `Relocate`, as if every move passed `MREMAP_RELOCATE_ANON`.
    RelocateAll,
    /// Jakub Matěna's 2022 RFC v3: every move of an unshared faulted VMA relocates to
    /// `addr >> PAGE_SHIFT`, and unshared root anon_vmas may be adopted by a merge.
    Matena,
    /// Linus Torvalds's 2004 proposal: every move relocates, copying shared folios first.
    CopyShared,
    /// Ours: relocate only when that brings a merge, copying shared folios within a budget.
    Auto {
        /// Bytes of shared folios one move may copy.
        copy_budget: u64,
    },
}

impl Policy {
    /// Parse a `--policy` value: a name, or `auto:BYTES` (suffixes K, M, G).
    pub fn parse(s: &str) -> Result<Policy, String> {
        let bad = || format!("unknown policy `{s}` (known: {}, auto:BYTES)", POLICY_NAMES.join(", "));
        Ok(match s {
            "kernel" => Policy::Kernel,
            "relocate" => Policy::Relocate,
            "relocate-all" => Policy::RelocateAll,
            "matena" => Policy::Matena,
            "copy-shared" => Policy::CopyShared,
            "auto" => Policy::Auto { copy_budget: AUTO_DEFAULT_BUDGET },
            _ => {
                let Some(b) = s.strip_prefix("auto:") else { return Err(bad()) };
                Policy::Auto { copy_budget: parse_bytes(b).ok_or_else(bad)? }
            }
        })
    }

    /// Whether mremap accepts `MREMAP_RELOCATE_ANON` and `MREMAP_MUST_RELOCATE_ANON` (the
    /// design's `check_mremap_params` hook).
    pub fn has_relocate_flags(self) -> bool {
        crate::designs::Design::mremap_relocate_flags(self)
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Policy::Kernel => f.write_str("kernel"),
            Policy::Relocate => f.write_str("relocate"),
            Policy::RelocateAll => f.write_str("relocate-all"),
            Policy::Matena => f.write_str("matena"),
            Policy::CopyShared => f.write_str("copy-shared"),
            Policy::Auto { copy_budget } if *copy_budget == AUTO_DEFAULT_BUDGET => f.write_str("auto"),
            // With the largest suffix `parse` reads back exactly (`auto:1M`, as users write it).
            Policy::Auto { copy_budget: b } => {
                let (n, suffix) = match b.trailing_zeros() {
                    64 | 0..10 => (*b, ""),
                    10..20 => (b >> 10, "K"),
                    20..30 => (b >> 20, "M"),
                    _ => (b >> 30, "G"),
                };
                write!(f, "auto:{n}{suffix}")
            }
        }
    }
}

fn parse_bytes(s: &str) -> Option<u64> {
    let (num, mult) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 1u64 << 10),
        b'm' | b'M' => (&s[..s.len() - 1], 1 << 20),
        b'g' | b'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

/// Why a relocation was not done, was undone, or why an entry was left as it was.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize)]
pub enum RelocReason {
    /// A folio (or the VMA, by its anon_vma links) is shared with another process.
    Shared,
    /// A long-term pinned folio (`folio_maybe_dma_pinned`).
    Pinned,
    /// A KSM folio (never produced by the model: no ksmd).
    Ksm,
    /// A swap entry.
    Swap,
    /// A migration entry.
    Migration,
    /// A large folio only partly covered by the move that could not be split.
    PartialLarge,
    /// VM_SPECIAL / hugetlb, or not `vma_is_anonymous`.
    NotAnon,
    /// `auto`: relocating would not bring a merge.
    NoGain,
    /// `auto`: the shared folios would cost more than the copy budget.
    Budget,
}

impl RelocReason {
    /// The snake_case name reports and JSON use.
    pub fn name(self) -> &'static str {
        match self {
            RelocReason::Shared => "shared",
            RelocReason::Pinned => "pinned",
            RelocReason::Ksm => "ksm",
            RelocReason::Swap => "swap",
            RelocReason::Migration => "migration",
            RelocReason::PartialLarge => "partial_large_folio",
            RelocReason::NotAnon => "not_anon",
            RelocReason::NoGain => "no_gain",
            RelocReason::Budget => "budget",
        }
    }
}

impl fmt::Display for RelocReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the policies did, and what it cost.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PolicyStats {
    /// Moves of faulted anonymous VMAs the policy tried to relocate.
    pub relocations_attempted: u64,
    /// Relocations that completed (were not refused or undone).
    pub relocations_done: u64,
    /// Relocations that failed part-way and were rolled back (a plain move followed).
    pub relocations_undone: u64,
    /// Relocations refused before or during the walk, by reason.
    pub relocations_refused: BTreeMap<RelocReason, u64>,
    /// Moves where an ordinary merge already worked, so nothing was relocated.
    pub relocations_unneeded: u64,
    /// Entries a successful relocation left as they were, by kind (swap entries: the swap-in
    /// copies the page if its index no longer fits, `ksm_might_need_to_copy`).
    pub entries_skipped: BTreeMap<RelocReason, u64>,
    /// Page-table entries (PTEs and PMD leaves) looked at by relocation walks, undo included.
    pub entries_walked: u64,
    /// Folios looked at by relocation walks.
    pub folios_walked: u64,
    /// Folios whose `index`/`mapping` were rewritten (undo rewrites count too).
    pub folios_rewritten: u64,
    /// Large folios split so that a part could be relocated.
    pub folios_split: u64,
    /// PMD mappings split (`split_huge_pmd`) by relocation.
    pub pmds_split: u64,
    /// Pages copied to unshare them (`copy-shared`, `auto`).
    pub pages_copied: u64,
    /// The same in bytes (`pages_copied * PAGE_SIZE`).
    pub bytes_copied: u64,
    /// Swap entries read in so that their page could be relocated (`copy-shared`).
    pub swapins: u64,
    /// Migrations waited for (`matena`).
    pub migrations_waited: u64,
    /// anon_vma write-lock acquisitions the policy added (one per relocation walk).
    pub rmap_lock_holds: u64,
    /// `matena`: merges that moved folios of one anon_vma to another.
    pub anon_vma_adoptions: u64,
}

impl PolicyStats {
    /// Count a relocation refused for `r` (`relocations_refused`).
    pub fn refuse(&mut self, r: RelocReason) {
        *self.relocations_refused.entry(r).or_default() += 1;
    }
    /// Count an entry a relocation left as it was, of kind `r` (`entries_skipped`).
    pub fn skip(&mut self, r: RelocReason) {
        *self.entries_skipped.entry(r).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_names_round_trip() {
        for n in POLICY_NAMES {
            assert_eq!(Policy::parse(n).unwrap().to_string(), *n);
        }
        assert_eq!(Policy::parse("auto:1M").unwrap(), Policy::Auto { copy_budget: 1 << 20 });
        assert_eq!(Policy::parse("auto:0").unwrap().to_string(), "auto:0");
        for s in ["auto:1M", "auto:1536K", "auto:3G", "auto:4097", "auto:1"] {
            assert_eq!(Policy::parse(s).unwrap().to_string(), s);
        }
        assert_eq!(Policy::parse("auto:1048576").unwrap().to_string(), "auto:1M");
        let all: Vec<String> = ALL_POLICIES.iter().map(Policy::to_string).collect();
        assert_eq!(all, POLICY_NAMES);
        assert!(Policy::parse("linux").is_err());
        assert!(Policy::parse("auto:x").is_err());
        assert!(Policy::parse("auto:99999999999999999999G").is_err());
    }
}
