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

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

/// Every policy name `--policy` accepts (`auto` also as `auto:BYTES`).
pub const POLICY_NAMES: &[&str] = &["kernel", "relocate", "relocate-all", "matena", "copy-shared", "auto"];

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

    /// Whether mremap accepts `MREMAP_RELOCATE_ANON` and `MREMAP_MUST_RELOCATE_ANON`.
    pub fn has_relocate_flags(self) -> bool {
        matches!(self, Policy::Relocate | Policy::RelocateAll)
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
            Policy::Auto { copy_budget } => write!(f, "auto:{copy_budget}"),
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
        assert!(Policy::parse("linux").is_err());
        assert!(Policy::parse("auto:x").is_err());
        assert!(Policy::parse("auto:99999999999999999999G").is_err());
    }
}

/// How far [`compare_with_kernel`] could compare a script.
#[derive(Clone, Debug, Default)]
pub struct Comparison {
    /// Steps whose page contents were compared.
    pub steps: usize,
    /// The first line where the policy's result differed from `kernel`'s (a merge the
    /// policy made let a later call succeed, say); comparison stops there, because the
    /// processes no longer did the same thing.
    pub results_differ_at: Option<usize>,
    /// A step one side could not run (not modelled): comparison stops there.
    pub stopped_at: Option<usize>,
}

/// Run `script` under `kernel` and under `policy`, both with the invariant checker and the
/// reference model of contents, and check that every process sees the same contents at every
/// address present on both sides, step by step: policies change metadata, never data.
pub fn compare_with_kernel(
    script: &crate::script::Script,
    policy: &str,
    config: &crate::mm::Config,
) -> Result<Comparison, String> {
    use crate::run::{RunError, RunOptions, Runner};
    let opts = |p: &str| RunOptions {
        check: true,
        policy: p.to_string(),
        config: config.clone(),
        ..Default::default()
    };
    let (kopts, popts) = (opts("kernel"), opts(policy));
    // The kernel side runs the script without the 2025 series' flags (EINVAL there).
    let plain = strip_relocate_flags(script);
    let mut k = Runner::new(&plain, &kopts).map_err(|e| e.to_string())?;
    let mut p = Runner::new(script, &popts).map_err(|e| e.to_string())?;
    let mut cmp = Comparison::default();
    for (step, kstep) in script.steps.iter().zip(&plain.steps) {
        let ko = k.step(kstep, true);
        let po = p.step(step, true);
        match (&ko, &po) {
            (Err(e @ RunError::Invariant { .. }), _) => return Err(format!("kernel: {e}")),
            (_, Err(e @ RunError::Invariant { .. })) => return Err(format!("{policy}: {e}")),
            (Err(_), _) | (_, Err(_)) => {
                cmp.stopped_at = Some(step.line);
                return Ok(cmp);
            }
            (Ok(a), Ok(b)) if a != b => {
                cmp.results_differ_at = Some(step.line);
                return Ok(cmp);
            }
            _ => {}
        }
        let (kv, pv) = (k.result.steps.last().expect("view"), p.result.steps.last().expect("view"));
        for (pid, kp) in &kv.procs {
            let Some(pp) = pv.procs.get(pid) else {
                return Err(format!(
                    "{}:{}: process {} missing under {policy}",
                    script.path, step.line, pid.0
                ));
            };
            // A swapped-out or migrating page shows no contents (the reference model checks
            // those).
            let present = |pg: &&crate::snapshot::PageView| {
                !matches!(
                    pg.page,
                    crate::snapshot::PageName::Swap
                        | crate::snapshot::PageName::Migration
                        | crate::snapshot::PageName::Guard
                )
            };
            let theirs: BTreeMap<u64, u64> =
                pp.pages.iter().filter(present).map(|pg| (pg.addr, pg.tag)).collect();
            for pg in kp.pages.iter().filter(present) {
                if let Some(&t) = theirs.get(&pg.addr)
                    && t != pg.tag
                {
                    return Err(format!(
                        "{}:{}: pid {} page {:#x} holds {:#x} under kernel but {:#x} under {policy}",
                        script.path, step.line, pid.0, pg.addr, pg.tag, t
                    ));
                }
            }
        }
        cmp.steps += 1;
        // Keep memory flat on long scripts.
        k.result.steps.clear();
        p.result.steps.clear();
    }
    Ok(cmp)
}

/// The script with `MREMAP_RELOCATE_ANON` and `MREMAP_MUST_RELOCATE_ANON` taken out of every
/// mremap: what the same program does on a kernel without the series.
pub fn strip_relocate_flags(script: &crate::script::Script) -> crate::script::Script {
    use crate::abi::{MREMAP_MUST_RELOCATE_ANON, MREMAP_RELOCATE_ANON};
    use crate::script::Call;
    let mut out = script.clone();
    for s in &mut out.steps {
        if let Call::Mremap { flags, .. } = &mut s.call {
            *flags &= !(MREMAP_RELOCATE_ANON | MREMAP_MUST_RELOCATE_ANON);
        }
    }
    out
}

/// One row of `anonmm compare`: a script run under one policy.
#[derive(Clone, Debug, Serialize)]
pub struct PolicyRow {
    /// The `--policy` name.
    pub policy: String,
    /// VMAs per process alive after the last step (pid, count).
    pub vmas_end: Vec<(u32, usize)>,
    /// Processes that exited during the script.
    pub exited: usize,
    /// The most VMAs all live processes held together after any step.
    pub vmas_peak: usize,
    /// Merge attempts (`Stats::merges_attempted`).
    pub merges_attempted: u64,
    /// Merges done (`Stats::merges_done`).
    pub merges_done: u64,
    /// What the policy did and what it cost; all zero if the run failed.
    pub work: PolicyStats,
    /// Steps whose contents matched `kernel`'s (`compare_with_kernel`), or the error.
    pub contents: Result<usize, String>,
}

/// Run `script` under every policy (`auto` with its default budget). The series' flags
/// exist only under `relocate` and `relocate-all`; the other policies run the script
/// without them, as the same program would on their kernels.
pub fn compare_all(script: &crate::script::Script, config: &crate::mm::Config) -> Vec<PolicyRow> {
    use crate::run::{RunOptions, run_script};
    let plain = strip_relocate_flags(script);
    let mut rows = Vec::new();
    for &name in POLICY_NAMES {
        let p = Policy::parse(name).expect("known policy");
        let s = if p.has_relocate_flags() { script } else { &plain };
        let opts = RunOptions {
            check: true,
            policy: name.to_string(),
            config: config.clone(),
            ..Default::default()
        };
        let contents = if p == Policy::Kernel {
            Ok(s.steps.len())
        } else {
            compare_with_kernel(s, name, config).map(|c| c.steps)
        };
        match run_script(s, &opts) {
            Ok(r) => rows.push(PolicyRow {
                policy: name.to_string(),
                vmas_end: r
                    .vmas_per_pid
                    .iter()
                    .filter(|(p, _)| r.alive.contains(p))
                    .map(|(p, (e, _))| (p.0, *e))
                    .collect(),
                exited: r.vmas_per_pid.keys().filter(|p| !r.alive.contains(p)).count(),
                vmas_peak: r.vmas_peak.0,
                merges_attempted: r.stats.merges_attempted,
                merges_done: r.stats.merges_done,
                work: r.stats.policy,
                contents,
            }),
            Err(e) => rows.push(PolicyRow {
                policy: name.to_string(),
                vmas_end: Vec::new(),
                exited: 0,
                vmas_peak: 0,
                merges_attempted: 0,
                merges_done: 0,
                work: PolicyStats::default(),
                contents: Err(e.to_string()),
            }),
        }
    }
    rows
}

/// `pid:VMAs` of the first live processes, then how many more and how many exited.
fn vmas_end_cell(r: &PolicyRow) -> String {
    const LISTED: usize = 8;
    let mut parts: Vec<String> = r.vmas_end.iter().take(LISTED).map(|(p, n)| format!("{p}:{n}")).collect();
    if r.vmas_end.len() > LISTED {
        parts.push(format!("+{} live", r.vmas_end.len() - LISTED));
    }
    if r.exited > 0 {
        parts.push(format!("({} exited)", r.exited));
    }
    parts.join(" ")
}

/// `anonmm compare`'s table (markdown when `md`).
pub fn render_rows(rows: &[PolicyRow], md: bool) -> String {
    let head = [
        "policy",
        "VMAs at end (per live pid)",
        "merges done/attempted",
        "relocations done/attempted",
        "undone",
        "refused",
        "entries left",
        "folios rewritten",
        "pages copied",
        "entries walked",
        "contents = kernel",
    ];
    let named = |m| crate::report::named_counts(m, "=", " ");
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.policy.clone(),
                vmas_end_cell(r),
                format!("{}/{}", r.merges_done, r.merges_attempted),
                format!("{}/{}", r.work.relocations_done, r.work.relocations_attempted),
                r.work.relocations_undone.to_string(),
                named(&r.work.relocations_refused),
                named(&r.work.entries_skipped),
                r.work.folios_rewritten.to_string(),
                r.work.pages_copied.to_string(),
                r.work.entries_walked.to_string(),
                match &r.contents {
                    Ok(n) => format!("yes ({n} steps)"),
                    Err(e) => format!("NO: {e}"),
                },
            ]
        })
        .collect();
    let mut out = String::new();
    if md {
        out += &format!("| {} |\n|{}\n", head.join(" | "), "---|".repeat(head.len()));
        for c in &cells {
            out += &format!("| {} |\n", c.join(" | "));
        }
        return out;
    }
    let mut w: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for c in &cells {
        for (w, x) in w.iter_mut().zip(c) {
            *w = (*w).max(x.chars().count());
        }
    }
    let line = |xs: Vec<&str>| {
        let v: Vec<String> = xs.iter().zip(&w).map(|(x, w)| format!("{x:<w$}")).collect();
        v.join("  ").trim_end().to_string() + "\n"
    };
    out += &line(head.to_vec());
    for c in &cells {
        out += &line(c.iter().map(String::as_str).collect());
    }
    out
}
