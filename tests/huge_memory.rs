//! `split_folio` (mm/huge_memory.c `__folio_split`): a large anonymous folio becomes order-0
//! folios that keep every mapping in every process, their contents, exclusivity, index and
//! mapping; zero-filled pages go to the shared zero page; extra references refuse the split.

use anonmm::errno::Errno;
use anonmm::folio::{FolioId, HUGE_ZERO_FOLIO, Mapping, ZERO_FOLIO};
use anonmm::mm::System;
use anonmm::pagetable::{Pte, PteFlags, Walk};
use anonmm::run::{RunOptions, Runner};
use anonmm::script::parse_str;
use anonmm::types::{PAGE_SIZE, Pid, VirtAddr};

const A: u64 = 0x2000_0000_0000;
const MMAP_THP: &str = "1 mmap(0x200000000000, 2097152, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED_NOREPLACE, -1, 0) = 0x200000000000
1 madvise(0x200000000000, 2097152, MADV_HUGEPAGE) = 0
";

/// Run a script on the model with the invariant checker on.
fn run(text: &str) -> System {
    let script = parse_str("huge_memory.strace", text).unwrap();
    let opts = RunOptions { check: true, ..Default::default() };
    let mut runner = Runner::new(&script, &opts).unwrap();
    for step in &script.steps {
        runner.step(step, false).unwrap();
    }
    assert!(runner.result.mismatches.is_empty(), "{:?}", runner.result.mismatches);
    assert_eq!(runner.sys.check(), Ok(()));
    runner.sys
}

fn walk(sys: &System, pid: u32, a: u64) -> Walk {
    let mm = sys.vm.procs[&Pid(pid)].mm;
    sys.vm.mms[mm].pt.walk(VirtAddr(a))
}

/// The folio mapped at `a` (by PTE or PMD) and the page of it.
fn folio_at(sys: &System, pid: u32, a: u64) -> (FolioId, u16) {
    match walk(sys, pid, a) {
        Walk::Pte(Pte::Present { folio, sub, .. }) | Walk::Huge { folio, sub, .. } => (folio, sub),
        w => panic!("nothing mapped at {a:#x}: {w:?}"),
    }
}

fn pte_at(sys: &System, pid: u32, a: u64) -> (FolioId, u16, PteFlags) {
    match walk(sys, pid, a) {
        Walk::Pte(Pte::Present { folio, sub, flags }) => (folio, sub, flags),
        w => panic!("no present PTE at {a:#x}: {w:?}"),
    }
}

fn page(i: u64) -> u64 {
    A + i * PAGE_SIZE
}

#[test]
fn pmd_mapped_thp_splits_into_small_folios() {
    // Write pages 0, 1 and 300 of a THP; the other 509 stay zero-filled.
    let sys0 = run(&format!(
        "{MMAP_THP}1 touch(0x200000000000, 8192, \"w\") = 0\n1 touch(0x20000012c000, 4096, \"w\") = 0\n"
    ));
    let (thp, _) = folio_at(&sys0, 1, A);
    assert!(matches!(walk(&sys0, 1, A), Walk::Huge { .. }));
    let (mapping, index) = (sys0.mem.folios[thp].mapping, sys0.mem.folios[thp].index);
    let tags: Vec<u64> = [0, 1, 300].iter().map(|&i| sys0.mem.folios[thp].pages[i].tag).collect();
    assert!(tags.iter().all(|&t| t != 0));

    let mut sys = sys0.clone();
    assert_eq!(sys.split_folio(thp), Ok(()));
    assert_eq!(sys.check(), Ok(()));
    assert_eq!(sys.trace.stats.folio_splits, 1);
    for (n, &i) in [0u64, 1, 300].iter().enumerate() {
        let (f, sub, flags) = pte_at(&sys, 1, page(i));
        let fo = &sys.mem.folios[f];
        assert_eq!((fo.order, sub), (0, 0), "page {i} is a small folio of its own");
        assert_eq!(fo.mapping, mapping);
        assert_eq!(fo.index, index.plus(i));
        assert_eq!(fo.pages[0].tag, tags[n], "page {i} keeps its contents");
        assert!(fo.pages[0].anon_exclusive, "page {i} stays exclusive");
        assert_eq!(fo.pages[0].mapcount, 1);
        assert!(flags.contains(PteFlags::WRITE | PteFlags::DIRTY), "page {i} keeps its PTE bits");
    }
    // The head page keeps the folio's identity.
    assert_eq!(pte_at(&sys, 1, A).0, thp);
    // Zero-filled pages are mapped to the shared zero page, read-only, and freed.
    for i in [2u64, 299, 301, 511] {
        let (f, _, flags) = pte_at(&sys, 1, page(i));
        assert_eq!(f, ZERO_FOLIO, "page {i}");
        assert!(!flags.contains(PteFlags::WRITE));
    }
    assert_eq!(sys.mem.folios.len(), sys0.mem.folios.len() + 2, "three small folios replace the THP");
}

#[test]
fn pte_mapped_thp_keeps_both_halves() {
    // mprotect of the upper half splits the PMD: the THP is PTE-mapped in two VMAs.
    let sys0 = run(&format!(
        "{MMAP_THP}1 touch(0x200000000000, 2097152, \"w\") = 0
1 mprotect(0x200000100000, 1048576, PROT_READ) = 0
"
    ));
    let (thp, _, _) = pte_at(&sys0, 1, A);
    assert_eq!(sys0.mem.folios[thp].order, 9);
    let mut sys = sys0.clone();
    assert_eq!(sys.split_folio(thp), Ok(()));
    assert_eq!(sys.check(), Ok(()));
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..512 {
        let (f, _, flags) = pte_at(&sys, 1, page(i));
        assert!(seen.insert(f), "page {i} has a folio of its own");
        let (old, sub, oflags) = pte_at(&sys0, 1, page(i));
        assert_eq!(sys.mem.folios[f].pages[0].tag, sys0.mem.folios[old].pages[sub as usize].tag);
        assert_eq!(flags, oflags, "page {i} keeps its PTE bits");
        assert_eq!(sys.mem.folios[f].index, sys0.mem.folios[thp].index.plus(i));
    }
}

#[test]
fn split_after_fork_keeps_sharing() {
    // The THP is PMD-mapped in parent and child, write-protected and not exclusive.
    let sys0 = run(&format!("{MMAP_THP}1 touch(0x200000000000, 4096, \"w\") = 0\n1 fork() = 2\n"));
    let (thp, _) = folio_at(&sys0, 1, A);
    assert_eq!(sys0.mem.folios[thp].entire_mapcount, 2);
    let mut sys = sys0.clone();
    assert_eq!(sys.split_folio(thp), Ok(()));
    assert_eq!(sys.check(), Ok(()));
    let (p, _, pf) = pte_at(&sys, 1, A);
    let (c, _, cf) = pte_at(&sys, 2, A);
    assert_eq!(p, c, "parent and child still share the written page");
    assert_eq!(sys.mem.folios[p].pages[0].mapcount, 2);
    assert!(!sys.mem.folios[p].pages[0].anon_exclusive);
    assert!(!pf.contains(PteFlags::WRITE) && !cf.contains(PteFlags::WRITE));
    // Zero-filled pages go to the zero page in both.
    assert_eq!(pte_at(&sys, 1, page(7)).0, ZERO_FOLIO);
    assert_eq!(pte_at(&sys, 2, page(7)).0, ZERO_FOLIO);
}

#[test]
fn pinned_folio_cannot_be_split() {
    let sys0 = run(&format!(
        "{MMAP_THP}1 touch(0x200000000000, 4096, \"w\") = 0\n1 pin(0x200000000000, 4096) = 0\n"
    ));
    let (thp, _) = folio_at(&sys0, 1, A);
    let mut sys = sys0.clone();
    assert_eq!(sys.split_folio(thp), Err(Errno::EAGAIN));
    assert_eq!(sys.check(), Ok(()));
    assert!(matches!(walk(&sys, 1, A), Walk::Huge { .. }), "a refused split changes nothing");
    assert_eq!(sys.mem.folios[thp].order, 9);
}

#[test]
fn small_and_zero_folios_are_refused() {
    let mut sys = run("1 mmap(0x200000000000, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED_NOREPLACE, -1, 0) = 0x200000000000
1 touch(0x200000000000, 4096, \"w\") = 0
");
    let (small, _) = folio_at(&sys, 1, A);
    assert_eq!(sys.split_folio(small), Err(Errno::EINVAL));
    assert_eq!(sys.split_folio(ZERO_FOLIO), Err(Errno::EINVAL));
    assert_eq!(sys.split_folio(HUGE_ZERO_FOLIO), Err(Errno::EBUSY));
    assert_eq!(sys.split_folio(FolioId(123_456)), Err(Errno::EINVAL), "a stale id is bad input");
    assert_eq!(sys.check(), Ok(()));
    assert!(matches!(sys.mem.folios[small].mapping, Mapping::Anon(_)));
}

#[test]
fn mremapped_thp_is_found_through_rmap() {
    // The THP moves by PMD to another address; rmap finds it there and the split keeps the
    // index (the new VMA keeps the old pgoff).
    let sys0 = run(&format!(
        "{MMAP_THP}1 touch(0x200000000000, 4096, \"w\") = 0
1 mremap(0x200000000000, 2097152, 2097152, MREMAP_MAYMOVE|MREMAP_FIXED, 0x200000400000) = 0x200000400000
"
    ));
    let b = A + 0x40_0000;
    let (thp, _) = folio_at(&sys0, 1, b);
    let mut sys = sys0.clone();
    assert_eq!(sys.split_folio(thp), Ok(()));
    assert_eq!(sys.check(), Ok(()));
    let (f, _, _) = pte_at(&sys, 1, b);
    assert_eq!(sys.mem.folios[f].index, sys0.mem.folios[thp].index);
    assert_eq!(pte_at(&sys, 1, b + PAGE_SIZE).0, ZERO_FOLIO);
}

#[test]
fn pages_no_longer_mapped_are_freed() {
    // munmap of the upper half leaves the lower half of the THP PTE-mapped; the split frees
    // the 256 unmapped pages with the rest of what it does not need.
    let sys0 = run(&format!(
        "{MMAP_THP}1 touch(0x200000000000, 2097152, \"w\") = 0\n1 munmap(0x200000100000, 1048576) = 0\n"
    ));
    let (thp, _, _) = pte_at(&sys0, 1, A);
    let mut sys = sys0.clone();
    assert_eq!(sys.split_folio(thp), Ok(()));
    assert_eq!(sys.check(), Ok(()));
    assert_eq!(sys.mem.folios.len(), sys0.mem.folios.len() + 255, "256 small folios replace the THP");
}

#[test]
fn mm_ids_track_two_mms() {
    // The THP is PTE-mapped (mprotect of half) and shared by fork: maybe mapped shared.
    let text = format!(
        "{MMAP_THP}1 touch(0x200000000000, 2097152, \"w\") = 0
1 mprotect(0x200000100000, 1048576, PROT_READ) = 0
1 fork() = 2
"
    );
    let sys = run(&text);
    let (thp, _, _) = pte_at(&sys, 1, A);
    assert!(sys.mem.folios[thp].mm_ids().shared && sys.mem.folio_maybe_mapped_shared(thp));
    // The parent unmaps it: the child's slot owns every mapping, the bit clears.
    let sys = run(&format!("{text}1 munmap(0x200000000000, 2097152) = 0\n"));
    assert!(!sys.mem.folios[thp].mm_ids().shared && !sys.mem.folio_maybe_mapped_shared(thp));
    // A grandchild is not tracked: with its parent gone and the first process unmapping, it
    // alone maps the folio, yet the bit stays set (no slot owns its mappings).
    let sys =
        run(&format!("{text}2 fork() = 3\n2 exit_group(0) = ?\n1 munmap(0x200000000000, 2097152) = 0\n"));
    let (f3, _, _) = pte_at(&sys, 3, A);
    assert_eq!(f3, thp);
    assert_eq!(sys.mem.folios[thp].mm_ids().mm_id, [None, None]);
    assert!(sys.mem.folio_maybe_mapped_shared(thp), "the bit outlives the mms it was set for");
}

#[test]
fn pageout_of_a_lazyfree_pmd_thp_leaves_its_pte_table() {
    // MADV_FREE of the whole PMD, then MADV_PAGEOUT: the kernel splits the PMD and frees the
    // pages PTE by PTE, so a later read maps 4 KiB zero pages (tests/regressions/
    // lazyfree_thp_pageout_leaves_pte_table, seen on 6.1 and 6.18).
    let sys = run(&format!(
        "{MMAP_THP}1 touch(0x200000000000, 4096, \"w\") = 0
1 madvise(0x200000000000, 2097152, MADV_FREE) = 0
1 madvise(0x200000000000, 2097152, MADV_PAGEOUT) = 0
"
    ));
    assert_eq!(walk(&sys, 1, page(0)), Walk::Pte(Pte::None), "freed, the PTE table kept");
    let sys = run(&format!(
        "{MMAP_THP}1 touch(0x200000000000, 4096, \"w\") = 0
1 madvise(0x200000000000, 2097152, MADV_FREE) = 0
1 madvise(0x200000000000, 2097152, MADV_PAGEOUT) = 0
1 touch(0x200000100000, 4096, \"r\") = 0
"
    ));
    assert_eq!(pte_at(&sys, 1, page(256)).0, ZERO_FOLIO, "a 4 KiB zero page, not the huge one");
    assert_eq!(walk(&sys, 1, page(0)), Walk::Pte(Pte::None));
}
