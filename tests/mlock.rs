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

/// smaps of `pid` after `text`: (start, end, Locked kB, VmFlags) per VMA.
fn smaps(text: &str, pid: u32) -> Vec<(u64, u64, u64, String)> {
    let sys = run(text);
    sys.smaps(Pid(pid)).iter().map(|s| (s.start, s.end, s.get("Locked"), s.vm_flags.join(" "))).collect()
}

const THREE: &str = "\
1 mmap(0x200000000000, 12288, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED_NOREPLACE, -1, 0) = 0x200000000000
1 touch(0x200000000000, 4096, \"w\") = 0
";

#[test]
fn mlock_splits_populates_and_mlocks_the_range() {
    // mlock_fixup → vma_modify_flags splits off the middle page; __mm_populate faults it in
    // (a write fault: private writable), and the new folio is mlocked (folio_add_lru_vma).
    let s = smaps(&format!("{THREE}1 mlock(0x200000001000, 4096) = 0\n"), 1);
    assert_eq!(
        s.iter().map(|e| (e.0, e.1, e.2)).collect::<Vec<_>>(),
        [
            (0x2000_0000_0000, 0x2000_0000_1000, 0),
            (0x2000_0000_1000, 0x2000_0000_2000, 4),
            (0x2000_0000_2000, 0x2000_0000_3000, 0)
        ]
    );
    assert!(s[1].3.contains("lo") && !s[1].3.contains("lf"), "{}", s[1].3);
    let sys = run(&format!("{THREE}1 mlock(0x200000001000, 4096) = 0\n"));
    assert_eq!(mlock_state(&sys, 1, 0x2000_0000_1000), (true, 1));
    // Unlocking merges the three back and munlocks the folio (mlock_vma_pages_range).
    let sys =
        run(&format!("{THREE}1 mlock(0x200000000000, 8192) = 0\n1 munlock(0x200000000000, 12288) = 0\n"));
    assert_eq!(sys.vm.mms[sys.vm.procs[&Pid(1)].mm].map_count(), 1);
    assert_eq!(mlock_state(&sys, 1, 0x2000_0000_0000), (false, 0));
}

#[test]
fn mlock_onfault_locks_what_is_present_and_populates_nothing() {
    let text = format!("{THREE}1 mlock2(0x200000000000, 12288, MLOCK_ONFAULT) = 0\n");
    let s = smaps(&text, 1);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].2, 4, "the page present before is mlocked, Locked: 4 kB");
    assert!(s[0].3.contains("lo") && s[0].3.contains("lf"), "{}", s[0].3);
    let sys = run(&text);
    assert_eq!(mlock_state(&sys, 1, 0x2000_0000_0000), (true, 1));
    assert!(!present(&sys, 1, 0x2000_0000_1000), "not populated");
    // A later fault mlocks its new folio.
    let sys = run(&format!("{text}1 touch(0x200000002000, 4096, \"w\") = 0\n"));
    assert_eq!(mlock_state(&sys, 1, 0x2000_0000_2000), (true, 1));
}

#[test]
fn mlock_errors_follow_the_kernels_order_of_checks() {
    // A gap at the start: ENOMEM, nothing changed. A gap after the first VMA: ENOMEM, the
    // first VMA locked (not populated). PROT_NONE: locked, then the populate fails (EFAULT,
    // reported as ENOMEM).
    let text = "\
1 mmap(0x200000000000, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED_NOREPLACE, -1, 0) = 0x200000000000
1 mlock(0x1fffffffe000, 16384) = -1 ENOMEM (Cannot allocate memory)
1 mlock(0x200000000000, 16384) = -1 ENOMEM (Cannot allocate memory)
1 mmap(0x200000100000, 8192, PROT_NONE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED_NOREPLACE, -1, 0) = 0x200000100000
1 mlock(0x200000100000, 8192) = -1 ENOMEM (Cannot allocate memory)
1 mlock2(0x200000100000, 8192, 0x2) = -1 EINVAL (Invalid argument)
1 mlockall(MCL_ONFAULT) = -1 EINVAL (Invalid argument)
1 mlockall(0) = -1 EINVAL (Invalid argument)
";
    let s = smaps(text, 1);
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].2, 0, "locked by the failed call, but not populated");
    assert!(s[0].3.contains("lo") && s[1].3.contains("lo"), "{s:?}");
    let sys = run(text);
    assert!(!present(&sys, 1, 0x2000_0000_0000));
}

/// Whether `pid` has a present page at `a`.
fn present(sys: &System, pid: u32, a: u64) -> bool {
    let mm = sys.vm.procs[&Pid(pid)].mm;
    matches!(sys.vm.mms[mm].pt.walk(VirtAddr(a)), Walk::Pte(Pte::Present { .. }) | Walk::Huge { .. })
}

#[test]
fn mlockall_future_locks_later_mappings_and_brk_but_not_a_fork_child() {
    let text = "\
1 mlockall(MCL_FUTURE) = 0
1 mmap(0x200000000000, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED_NOREPLACE, -1, 0) = 0x200000000000
1 brk(0x200003002000) = 0x200003002000
1 fork() = 2
2 mmap(0x200000100000, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED_NOREPLACE, -1, 0) = 0x200000100000
";
    let before_fork: String = text.lines().take(3).map(|l| format!("{l}\n")).collect();
    let p1 = smaps(&before_fork, 1);
    assert_eq!(p1.iter().map(|e| e.2).collect::<Vec<_>>(), [8, 8], "mmap and brk populated and locked");
    // After the fork the pages are COW-shared: Locked is the locked Pss, half.
    let p1 = smaps(text, 1);
    assert_eq!(p1.iter().map(|e| e.2).collect::<Vec<_>>(), [4, 4]);
    let p2 = smaps(text, 2);
    assert!(p2.iter().all(|e| e.2 == 0 && !e.3.contains("lo")), "{p2:?}");
    // munlockall clears def_flags: the next mapping is neither locked nor populated.
    let text = format!(
        "{text}1 munlockall() = 0\n1 mmap(0x200000200000, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED_NOREPLACE, -1, 0) = 0x200000200000\n"
    );
    let p1 = smaps(&text, 1);
    assert!(p1.iter().all(|e| e.2 == 0 && !e.3.contains("lo")), "{p1:?}");
    // MCL_ONFAULT: later mappings are locked on fault, not populated.
    let text = "\
1 mlockall(MCL_FUTURE|MCL_ONFAULT) = 0
1 mmap(0x200000000000, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED_NOREPLACE, -1, 0) = 0x200000000000
";
    let p1 = smaps(text, 1);
    assert_eq!(p1[0].2, 0);
    assert!(p1[0].3.contains("lo") && p1[0].3.contains("lf"), "{p1:?}");
}
