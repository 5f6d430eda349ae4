//! The policy examples show each design's headline, and `auto` is at least as good as every
//! other policy at the VMA count on them and on the synthetic workloads, with the same
//! contents as `kernel` everywhere.

use std::collections::BTreeMap;

use anonmm::mm::Config;
use anonmm::policy::{PolicyRow, compare_all};
use anonmm::script::parse_file;

fn rows(path: &str) -> BTreeMap<String, PolicyRow> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    let script = parse_file(&p).expect("parses");
    let rows = compare_all(&script, &Config::default());
    for r in &rows {
        assert!(r.contents.is_ok(), "{path}: {}: {:?}", r.policy, r.contents);
    }
    rows.into_iter().map(|r| (r.policy.clone(), r)).collect()
}

fn vmas(r: &PolicyRow, pid: u32) -> usize {
    r.vmas_end.iter().find(|(p, _)| *p == pid).map(|(_, n)| *n).expect("pid")
}

fn total(r: &PolicyRow) -> usize {
    r.vmas_end.iter().map(|(_, n)| n).sum()
}

#[test]
fn faulted_pieces_merge_under_every_design_but_kernel() {
    let r = rows("examples/policy_pieces.strace");
    assert_eq!(vmas(&r["kernel"], 1), 3);
    for p in ["relocate", "relocate-all", "matena", "copy-shared", "auto"] {
        assert_eq!(vmas(&r[p], 1), 1, "{p}");
    }
    // auto leaves the first piece alone: nothing to merge with yet.
    assert!(r["auto"].work.folios_rewritten < r["relocate"].work.folios_rewritten);
}

#[test]
fn after_fork_only_copying_designs_merge_and_pay_in_copies() {
    let r = rows("examples/policy_fork.strace");
    for p in ["kernel", "relocate", "matena"] {
        assert_eq!(vmas(&r[p], 1), 3, "{p}");
    }
    assert_eq!(r["relocate"].work.relocations_refused.values().sum::<u64>(), 3);
    for p in ["copy-shared", "auto"] {
        assert_eq!(vmas(&r[p], 1), 1, "{p}");
        assert!(r[p].work.pages_copied > 0, "{p}");
    }
    assert!(r["auto"].work.pages_copied < r["copy-shared"].work.pages_copied);
    // The child is untouched.
    for row in r.values() {
        assert_eq!(vmas(row, 2), 3, "{}", row.policy);
    }
}

#[test]
fn a_pinned_page_undoes_the_series_relocation() {
    let r = rows("examples/policy_pinned.strace");
    assert_eq!(vmas(&r["relocate"], 1), 3);
    assert_eq!(r["relocate"].work.relocations_undone, 2);
    // Matěna's RFC and auto relocate a pinned folio (the pin holds the page, not its index).
    assert_eq!(vmas(&r["matena"], 1), 2);
    assert_eq!(vmas(&r["auto"], 1), 2);
}

#[test]
fn a_swapped_page_is_left_and_the_rest_relocates() {
    let r = rows("examples/policy_swapped.strace");
    assert_eq!(vmas(&r["kernel"], 1), 2);
    assert_eq!(vmas(&r["relocate"], 1), 1);
    assert_eq!(r["relocate"].work.entries_skipped.values().sum::<u64>(), 1);
    assert_eq!(r["copy-shared"].work.swapins, 1);
}

#[test]
fn a_partly_covered_huge_page_is_split_by_the_series_and_refused_by_matena() {
    let r = rows("examples/policy_thp_partial.strace");
    assert_eq!(vmas(&r["kernel"], 1), 3);
    assert_eq!(vmas(&r["relocate"], 1), 2);
    assert!(r["relocate"].work.folios_split > 0 || r["relocate"].work.pmds_split > 0);
    assert_eq!(vmas(&r["matena"], 1), 3);
    assert_eq!(r["matena"].work.relocations_refused.len(), 1);
}

#[test]
fn a_migrating_page_fails_the_series_and_matena_waits() {
    let r = rows("examples/policy_migrating.strace");
    assert_eq!(vmas(&r["relocate"], 1), 2);
    assert_eq!(r["relocate"].work.relocations_undone, 1);
    assert_eq!(vmas(&r["matena"], 1), 1);
    assert_eq!(r["matena"].work.migrations_waited, 1);
    assert_eq!(vmas(&r["auto"], 1), 1);
}

#[test]
fn auto_is_never_worse_at_the_vma_count() {
    for path in [
        "examples/policy_pieces.strace",
        "examples/policy_fork.strace",
        "examples/policy_pinned.strace",
        "examples/policy_swapped.strace",
        "examples/policy_thp_partial.strace",
        "examples/policy_migrating.strace",
        "docs/workloads/compact.strace",
        "docs/workloads/stitch.strace",
        "docs/workloads/stitch-half.strace",
        "docs/workloads/realloc.strace",
        "docs/workloads/forkserver.strace",
    ] {
        let r = rows(path);
        let best = r.values().map(total).min().expect("rows");
        assert_eq!(
            total(&r["auto"]),
            best,
            "{path}: {:?}",
            r.values().map(|x| (&x.policy, total(x))).collect::<Vec<_>>()
        );
    }
}
