//! The folios' mlock state (crates/anonmm-model/src/mlock.rs): `PG_mlocked` and `mlock_count`
//! as Linux 6.18 keeps them, read from the model after short scripts. The kernel's side of
//! the same scripts is checked by the oracle (tests/regressions/pageout_mlocked_*).

use anonmm::folio::FolioId;
use anonmm::mm::System;
use anonmm::pagetable::{Pte, Walk};
use anonmm::run::{RunOptions, Runner};
use anonmm::script::parse_str;
use anonmm::types::{Pid, VirtAddr};

/// Run `text` with the invariant checker after every step; the system at the end.
fn run(text: &str) -> System {
    let script = parse_str("mlock.strace", text).unwrap();
    let opts = RunOptions { check: true, ..Default::default() };
    let mut runner = Runner::new(&script, &opts).unwrap();
    for step in &script.steps {
        runner.step(step, false).unwrap();
        assert_eq!(runner.sys.check(), Ok(()), "after {step:?}");
    }
    assert!(runner.result.mismatches.is_empty(), "{:?}", runner.result.mismatches);
    runner.sys.clone()
}

/// What `pid` maps at `a`: the folio of a present PTE, or the PTE itself.
fn pte(sys: &System, pid: u32, a: u64) -> Pte {
    let mm = sys.vm.procs[&Pid(pid)].mm;
    match sys.vm.mms[mm].pt.walk(VirtAddr(a)) {
        Walk::Pte(p) => p,
        other => panic!("no PTE at {a:#x}: {other:?}"),
    }
}

fn folio(sys: &System, pid: u32, a: u64) -> FolioId {
    match pte(sys, pid, a) {
        Pte::Present { folio, .. } => folio,
        other => panic!("nothing present at {a:#x}: {other:?}"),
    }
}

/// (PG_mlocked, mlock_count) of the folio `pid` maps at `a`.
fn mlock_state(sys: &System, pid: u32, a: u64) -> (bool, u32) {
    let f = &sys.mem.folios[folio(sys, pid, a)];
    (f.mlocked, f.mlock_count)
}

const LOCKED: &str = "\
1 mmap(0x200000400000, 16384, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED|MAP_LOCKED, -1, 0) = 0x200000400000
";

#[test]
fn map_locked_populates_mlocked_folios() {
    // MAP_LOCKED populates with write faults (the mapping is writable): every new folio goes
    // to the LRU through folio_add_lru_vma, mlock_new_folio, counted once.
    let sys = run(LOCKED);
    for i in 0..4 {
        assert_eq!(mlock_state(&sys, 1, 0x2000_0040_0000 + i * 4096), (true, 1), "page {i}");
    }
}

#[test]
fn dontunmap_leaves_mlocked_folios_that_pageout_keeps() {
    // The source VMA loses VM_LOCKED, its folios stay mlocked; MADV_PAGEOUT finds them
    // unevictable and puts them back with no mlock count.
    let sys = run(&format!(
        "{LOCKED}\
1 mremap(0x200000400000, 8192, 8192, MREMAP_MAYMOVE|MREMAP_DONTUNMAP, 0x200000600000) = 0x200000600000
1 madvise(0x200000400000, 16384, MADV_PAGEOUT) = 0
"
    ));
    // The moved pages are in the (locked) destination, still mlocked once.
    assert_eq!(mlock_state(&sys, 1, 0x2000_0060_0000), (true, 1));
    // The source's own pages stayed, mlocked, with mlock_count 0 after the failed reclaim.
    assert_eq!(pte(&sys, 1, 0x2000_0040_0000), Pte::None);
    assert_eq!(mlock_state(&sys, 1, 0x2000_0040_2000), (true, 0));
    assert_eq!(mlock_state(&sys, 1, 0x2000_0040_3000), (true, 0));
}

#[test]
fn munmap_of_a_locked_vma_munlocks() {
    // A forked child maps the parent's mlocked folio in a VMA without VM_LOCKED (fork clears
    // it and copy_present_pte adds no mlock); the parent's munmap munlocks the folio
    // (__folio_remove_rmap → munlock_vma_folio), and the child's MADV_PAGEOUT then swaps it.
    let sys = run(&format!(
        "{LOCKED}\
1 fork() = 2
2 madvise(0x200000400000, 4096, MADV_PAGEOUT) = 0
"
    ));
    // Mapped by two mms: MADV_PAGEOUT skips a folio maybe mapped shared.
    assert_eq!(mlock_state(&sys, 2, 0x2000_0040_0000), (true, 1));
    let sys = run(&format!(
        "{LOCKED}\
1 fork() = 2
1 munmap(0x200000400000, 16384) = 0
2 madvise(0x200000400000, 4096, MADV_PAGEOUT) = 0
"
    ));
    assert!(matches!(pte(&sys, 2, 0x2000_0040_0000), Pte::Swap { .. }), "paged out");
    assert_eq!(mlock_state(&sys, 2, 0x2000_0040_1000), (false, 0));
}

#[test]
fn cow_in_a_locked_vma_mlocks_the_copy_and_munlocks_the_original() {
    // A write by the parent to a page shared with its child copies it (wp_page_copy): the
    // copy is mlocked (mlock_new_folio) and the original munlocked (munlock_vma_folio), left
    // to the child. A write by the child copies into its VMA, which is not VM_LOCKED: its
    // copy is not mlocked, and the original stays mlocked for the parent.
    let sys = run(&format!(
        "{LOCKED}\
1 fork() = 2
1 touch(0x200000400000, 4096, \"w\") = 0
2 touch(0x200000401000, 4096, \"w\") = 0
"
    ));
    assert_eq!(mlock_state(&sys, 1, 0x2000_0040_0000), (true, 1));
    assert_eq!(mlock_state(&sys, 2, 0x2000_0040_0000), (false, 0));
    assert_eq!(mlock_state(&sys, 2, 0x2000_0040_1000), (false, 0));
    assert_eq!(mlock_state(&sys, 1, 0x2000_0040_1000), (true, 1));
    assert_ne!(folio(&sys, 1, 0x2000_0040_1000), folio(&sys, 2, 0x2000_0040_1000));
}

#[test]
fn checker_catches_a_lost_mlock() {
    let mut sys = run(LOCKED);
    let f = folio(&sys, 1, 0x2000_0040_0000);
    sys.mem.folios[f].mlocked = false;
    let e = sys.check().expect_err("an unmlocked folio in a VM_LOCKED VMA");
    assert!(e.contains("not PG_mlocked"), "{e}");
    sys.mem.folios[f].mlock_count = 0;
    let g = folio(&sys, 1, 0x2000_0040_1000);
    sys.mem.folios[f].mlocked = true;
    sys.mem.folios[g].mlocked = false;
    sys.mem.folios[g].mlock_count = 1;
    let e = sys.check().expect_err("a count without the flag");
    assert!(e.contains("without PG_mlocked") || e.contains("not PG_mlocked"), "{e}");
}
