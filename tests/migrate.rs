//! Migrations held in flight (`migrate` / `migrate_done`, crates/anonmm-model/src/migrate.rs): the page tables,
//! folios and anon_vmas of the `tests/scenarios/migrate_*` scripts at chosen lines (the
//! scenario test already runs them whole with the checker and the reference model), and what
//! the invariant checker says of a migration entry the rmap walk cannot reach.

use std::path::Path;

use anonmm::folio::FolioId;
use anonmm::mm::System;
use anonmm::pagetable::{MigrationKind, Pmd, Pte, PteFlags, Walk, pmd_index};
use anonmm::run::{RunOptions, Runner};
use anonmm::script::{Script, parse_file, parse_str};
use anonmm::types::{Pid, VirtAddr};

const A: u64 = 0x2000_0000_0000;
const PAGE: u64 = 0x1000;

fn script(name: &str) -> Script {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios").join(name);
    parse_file(&p).unwrap_or_else(|e| panic!("{e}"))
}

/// The system after every step up to script line `line`, checked after each.
fn at_line(s: &Script, line: usize) -> System {
    let opts = RunOptions { check: true, ..Default::default() };
    let mut r = Runner::new(s, &opts).unwrap();
    for st in s.steps.iter().take_while(|st| st.line <= line) {
        r.step(st, false).unwrap_or_else(|e| panic!("{e}"));
    }
    assert!(r.result.mismatches.is_empty(), "{:?}", r.result.mismatches);
    r.sys
}

fn walk(sys: &System, pid: u32, a: u64) -> Walk {
    let mm = sys.vm.procs[&Pid(pid)].mm;
    sys.vm.mms[mm].pt.walk(VirtAddr(a))
}

/// The migration entry of `pid` at `a`: (folio, kind, flags).
fn migration(sys: &System, pid: u32, a: u64) -> (FolioId, MigrationKind, PteFlags) {
    match walk(sys, pid, a) {
        Walk::Pte(Pte::Migration { folio, kind, flags, .. }) => (folio, kind, flags),
        w => panic!("pid {pid} at {a:#x}: no migration entry but {w:?}"),
    }
}

/// The present PTE of `pid` at `a`: (folio, flags).
fn present(sys: &System, pid: u32, a: u64) -> (FolioId, PteFlags) {
    match walk(sys, pid, a) {
        Walk::Pte(Pte::Present { folio, flags, .. }) => (folio, flags),
        w => panic!("pid {pid} at {a:#x}: not present but {w:?}"),
    }
}

fn in_flight(sys: &System) -> usize {
    sys.gup.migrations.values().map(Vec::len).sum()
}

#[test]
fn touch_waits_and_finishes() {
    let s = script("migrate_touch.strace");
    let sys = at_line(&s, 7);
    let before: Vec<u64> =
        (0..3).map(|i| sys.read_tag(sys.vm.procs[&Pid(1)].mm, VirtAddr(A + i * PAGE)).unwrap()).collect();
    assert!(before.iter().all(|&t| t != 0));

    let sys = at_line(&s, 10);
    for i in 0..3 {
        let (f, kind, flags) = migration(&sys, 1, A + i * PAGE);
        assert_eq!(kind, MigrationKind::Write);
        assert!(flags.contains(PteFlags::DIRTY | PteFlags::ACCESSED) && !flags.contains(PteFlags::WRITE));
        let fo = &sys.mem.folios[f];
        assert!(fo.migrating && !fo.is_mapped() && !fo.pages[0].anon_exclusive);
        assert_eq!(fo.pages[0].tag, before[i as usize], "the old folio keeps the contents");
    }
    assert!(walk(&sys, 1, A + 3 * PAGE) == Walk::Pte(Pte::None));
    assert_eq!(in_flight(&sys), 3);
    let av =
        sys.vm.vmas[sys.vm.mms[sys.vm.procs[&Pid(1)].mm].vma_lookup(VirtAddr(A)).unwrap()].anon_vma.unwrap();
    assert_eq!(sys.rmap.anon_vmas[av].refcount, 1 + 3, "folio_get_anon_vma per migration");

    // The read fault finished one migration: a new folio, writable and exclusive again.
    let old = migration(&sys, 1, A + PAGE).0;
    let sys = at_line(&s, 13);
    let (f, flags) = present(&sys, 1, A + PAGE);
    assert_ne!(f, old);
    assert!(flags.contains(PteFlags::WRITE));
    assert!(sys.mem.folios[f].pages[0].anon_exclusive && !sys.mem.folios[f].migrating);
    assert_eq!(sys.mem.folios[f].pages[0].tag, before[1]);
    assert_eq!(in_flight(&sys), 2);
    migration(&sys, 1, A);

    let sys = at_line(&s, 17);
    for i in 0..3 {
        assert!(present(&sys, 1, A + i * PAGE).1.contains(PteFlags::WRITE));
    }
    assert_eq!(in_flight(&sys), 0);
    assert_eq!(sys.rmap.anon_vmas[av].refcount, 1);
    assert_eq!(sys.mem.folios.len(), 2 + 3, "the zero pages and the three new folios");
    assert_eq!(sys.trace.stats.migrations_started, 3);
    assert_eq!(sys.trace.stats.migrations_done, 3);

    // ENOMEM for the hole, after migrating the mapped part.
    let sys = at_line(&s, 23);
    assert_eq!(in_flight(&sys), 3);
}

#[test]
fn fork_shares_and_downgrades_entries() {
    let s = script("migrate_fork.strace");
    // The child's migrate reached the parent's mappings through the rmap.
    let sys = at_line(&s, 11);
    for a in [A, A + PAGE] {
        let (fp, kp, _) = migration(&sys, 1, a);
        let (fc, kc, _) = migration(&sys, 2, a);
        assert_eq!(fp, fc);
        assert_eq!((kp, kc), (MigrationKind::Read, MigrationKind::Read), "shared pages: plain readable");
    }
    assert_eq!(sys.gup.migrations[&Pid(2)].len(), 2);
    let sys = at_line(&s, 12);
    assert_eq!(present(&sys, 1, A).0, present(&sys, 2, A).0);
    assert!(!present(&sys, 1, A).1.contains(PteFlags::WRITE));

    // Writable entries in flight across a fork become readable in both.
    let sys = at_line(&s, 19);
    assert_eq!(migration(&sys, 1, A + 2 * PAGE).1, MigrationKind::Write);
    let sys = at_line(&s, 20);
    for a in [A + 2 * PAGE, A + 3 * PAGE] {
        assert_eq!(migration(&sys, 1, a).1, MigrationKind::Read);
        assert_eq!(migration(&sys, 3, a), migration(&sys, 1, a));
    }
    let sys = at_line(&s, 22);
    let (f, fl) = present(&sys, 3, A + 2 * PAGE);
    assert_eq!(present(&sys, 1, A + 2 * PAGE), (f, fl));
    assert!(!fl.contains(PteFlags::WRITE) && !sys.mem.folios[f].pages[0].anon_exclusive);
    assert_eq!(sys.mem.folios[f].pages[0].mapcount, 2);
    // COW: the grandchild's write copies, the parent keeps the old contents.
    let sys = at_line(&s, 24);
    assert_ne!(present(&sys, 3, A + 2 * PAGE).0, present(&sys, 1, A + 2 * PAGE).0);

    // The grandchild's exit finishes what it started, in the parent too.
    let sys = at_line(&s, 27);
    assert_eq!(sys.gup.migrations[&Pid(3)].len(), 4);
    migration(&sys, 1, A);
    let sys = at_line(&s, 28);
    assert_eq!(in_flight(&sys), 0);
    present(&sys, 1, A);
    present(&sys, 1, A + PAGE);
}

#[test]
fn munmap_drops_entries_not_mapcounts() {
    let s = script("migrate_munmap.strace");
    let sys = at_line(&s, 8);
    let f = migration(&sys, 1, A).0;
    let vma = sys.vm.mms[sys.vm.procs[&Pid(1)].mm].vma_lookup(VirtAddr(A)).unwrap();
    let av = sys.vm.vmas[vma].anon_vma.unwrap();
    let sys = at_line(&s, 10);
    // The VMA is gone, the anon_vma stays for the migration's walk, and so do the folios.
    assert!(sys.mem.folios.contains(f) && sys.mem.folios[f].migrating);
    assert!(sys.rmap.anon_vmas.contains(av) && sys.rmap.anon_vmas[av].tree.is_empty());
    assert_eq!(sys.rmap.anon_vmas[av].refcount, 4);
    assert_eq!(in_flight(&sys), 4);
    let sys = at_line(&s, 12);
    assert_eq!(in_flight(&sys), 0);
    assert!(!sys.rmap.anon_vmas.contains(av));
    assert_eq!(sys.mem.folios.len(), 2, "only the zero pages are left");

    // The fork half: the parent's entry is restored, its munmapped page's migration ends.
    let sys = at_line(&s, 20);
    assert_eq!(in_flight(&sys), 2);
    let sys = at_line(&s, 21);
    assert_eq!(in_flight(&sys), 0);
    assert_eq!(sys.mem.folios.len(), 3);
    let (f, fl) = present(&sys, 1, A);
    assert!(!fl.contains(PteFlags::WRITE), "it was shared with the child when migrated");
    assert_eq!(sys.mem.folios[f].pages[0].mapcount, 1);
}

#[test]
fn mremap_moves_entries_rmap_finds_them() {
    let s = script("migrate_mremap.strace");
    let sys = at_line(&s, 8);
    let (f1, _, _) = migration(&sys, 1, A + PAGE);
    let sys = at_line(&s, 10);
    let (g1, kind, flags) = migration(&sys, 1, A + 0x100000);
    assert_eq!((g1, kind), (f1, MigrationKind::Write));
    assert!(flags.contains(PteFlags::SOFT_DIRTY), "move_soft_dirty_pte");
    let mm = sys.vm.procs[&Pid(1)].mm;
    let moved = sys.vm.mms[mm].vma_lookup(VirtAddr(A + 0x100000)).unwrap();
    assert_eq!(sys.vm.vmas[moved].pgoff.0, (A >> 12) + 1, "the moved VMA keeps its pgoff");
    let tag = sys.mem.folios[f1].pages[0].tag;
    let sys = at_line(&s, 12);
    let (n1, fl) = present(&sys, 1, A + 0x100000);
    assert!(fl.contains(PteFlags::WRITE | PteFlags::SOFT_DIRTY));
    assert_eq!(sys.mem.folios[n1].pages[0].tag, tag);
    assert_eq!(in_flight(&sys), 2);

    // A PMD migration entry: made, moved whole, mapped back as a PMD of a new THP.
    let h = A + 0x400000;
    let sys = at_line(&s, 20);
    let thp = match walk(&sys, 1, h) {
        Walk::Huge { folio, .. } => folio,
        w => panic!("{w:?}"),
    };
    let sys = at_line(&s, 21);
    match walk(&sys, 1, h + 0x1000) {
        Walk::PmdMigration { folio, sub: 1, kind: MigrationKind::Write, .. } => assert_eq!(folio, thp),
        w => panic!("{w:?}"),
    }
    assert_eq!(sys.mem.folios[thp].entire_mapcount, 0);
    let sys = at_line(&s, 22);
    let mm = sys.vm.procs[&Pid(1)].mm;
    assert!(matches!(sys.vm.mms[mm].pt.pmd(VirtAddr(A + 0x800000)), Some(Pmd::Migration { .. })));
    let sys = at_line(&s, 23);
    let mm = sys.vm.procs[&Pid(1)].mm;
    let Some(&Pmd::Huge { folio: new, flags }) =
        sys.vm.mms[mm].pt.pmds.get(&pmd_index(VirtAddr(A + 0x800000)))
    else {
        panic!("no PMD mapping");
    };
    assert_ne!(new, thp);
    let nf = &sys.mem.folios[new];
    assert_eq!((nf.order, nf.entire_mapcount), (9, 1));
    assert!(nf.pages[0].anon_exclusive && flags.contains(PteFlags::WRITE));

    // A partial munmap split the PMD migration entry; the new THP is mapped by PTEs.
    let sys = at_line(&s, 27);
    assert!(walk(&sys, 1, A + 0x800000) == Walk::Pte(Pte::None));
    let (f, kind, _) = migration(&sys, 1, A + 0x801000);
    assert_eq!(kind, MigrationKind::Write);
    assert_eq!(sys.mem.folios[f].order, 9);
    let sys = at_line(&s, 28);
    let (n, fl) = present(&sys, 1, A + 0x9ff000);
    assert!(fl.contains(PteFlags::WRITE));
    let nf = &sys.mem.folios[n];
    assert_eq!((nf.order, nf.entire_mapcount, nf.total_mapcount()), (9, 0, 511));
    assert_eq!(present(&sys, 1, A + 0x801000).0, n);
}

#[test]
fn mprotect_makes_entries_readable_exclusive() {
    let s = script("migrate_mprotect.strace");
    let sys = at_line(&s, 10);
    assert_eq!(migration(&sys, 1, A).1, MigrationKind::ReadExclusive);
    assert_eq!(migration(&sys, 1, A + 2 * PAGE).1, MigrationKind::Write);
    // Adding write back does not make them writable again.
    let sys = at_line(&s, 12);
    assert_eq!(migration(&sys, 1, A + PAGE).1, MigrationKind::ReadExclusive);
    let sys = at_line(&s, 13);
    let (f, fl) = present(&sys, 1, A);
    assert!(!fl.contains(PteFlags::WRITE) && sys.mem.folios[f].pages[0].anon_exclusive);
    assert!(present(&sys, 1, A + 2 * PAGE).1.contains(PteFlags::WRITE));
    let sys = at_line(&s, 15);
    let (g, fl) = present(&sys, 1, A);
    assert_eq!(g, f, "the write reused the exclusive page");
    assert!(fl.contains(PteFlags::WRITE));
    assert_eq!(sys.trace.stats.cow_copies, 0);

    let sys = at_line(&s, 23);
    assert!(matches!(
        walk(&sys, 1, A + 0x400000),
        Walk::PmdMigration { kind: MigrationKind::ReadExclusive, .. }
    ));
    let sys = at_line(&s, 24);
    match walk(&sys, 1, A + 0x400000) {
        Walk::Huge { folio, flags, .. } => {
            assert!(!flags.contains(PteFlags::WRITE) && sys.mem.folios[folio].pages[0].anon_exclusive)
        }
        w => panic!("{w:?}"),
    }
}

#[test]
fn pinned_folios_stay() {
    let s = script("migrate_pinned.strace");
    let sys = at_line(&s, 10);
    let (f, fl) = present(&sys, 1, A);
    assert!(sys.mem.folios[f].pincount == 1 && fl.contains(PteFlags::WRITE));
    assert_eq!(in_flight(&sys), 3);
    // The pin waited for the migration and pinned the new folio.
    let sys = at_line(&s, 11);
    let (g, _) = present(&sys, 1, A + PAGE);
    assert!(sys.mem.folios[g].pincount == 1 && !sys.mem.folios[g].migrating);
    assert_eq!(in_flight(&sys), 2);
}

/// A migration entry the rmap walk cannot reach stays behind when the migration ends, naming
/// the freed old folio: the checker reports it, and whatever meets it later stops as not
/// modelled instead of panicking.
#[test]
fn entry_out_of_rmap_reach_is_left_behind() {
    let text = "\
1 mmap(0x200000000000, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED_NOREPLACE, -1, 0) = 0x200000000000
1 touch(0x200000000000, 8192, \"w\") = 0
1 migrate(0x200000000000, 8192) = 0
";
    let s = parse_str("stale.strace", text).unwrap();
    let mut sys = at_line(&s, 3);
    let (f, _, _) = migration(&sys, 1, A);
    // Some code moved the folio's index without its entries: the walk looks elsewhere.
    sys.mem.folios[f].index.0 += 1;
    sys.sys_migrate_done(Pid(1), A, 2 * PAGE).unwrap();
    assert!(!sys.mem.folios.contains(f), "the migration ended and freed the old folio");
    migration(&sys, 1, A);
    let err = sys.check().unwrap_err();
    assert!(err.contains("not under migration") && err.contains("left"), "{err}");
    // The other page's migration was reached as usual.
    present(&sys, 1, A + PAGE);

    // Nothing panics on the stale entry.
    let _ = sys.pagemap(Pid(1));
    assert_eq!(sys.read_tag(sys.vm.procs[&Pid(1)].mm, VirtAddr(A)), None);
    sys.sys_migrate_done(Pid(1), A, PAGE).unwrap();
    let mut faulted = sys.clone();
    let _ = faulted.touch(Pid(1), A, PAGE, true, &|a| a);
    assert!(faulted.unsupported.as_deref().is_some_and(|w| w.contains("left behind")));
    sys.sys_fork(Pid(1), Pid(2)).unwrap();
    sys.sys_mprotect(Pid(2), A, PAGE, 1).unwrap();
    sys.sys_munmap(Pid(1), A, 2 * PAGE).unwrap();
    sys.sys_exit(Pid(2)).unwrap();
    assert_eq!(sys.check(), Ok(()), "zapping the stale entries leaves a healthy system");
}

/// The policies that rewrite folios (crate::policy, crate::relocate) meet migration entries:
/// a relocating move refuses them (rewriting the folio's index would put its entries out of
/// the migration's rmap walk), and `matena`'s adoption waits for the migration first. Either
/// way the checker finds nothing stranded and `migrate_done` restores every entry.
#[test]
fn policies_never_strand_migration_entries() {
    use anonmm::policy::RelocReason;
    let run = |policy: &str, text: &str| {
        let s = parse_str("policy.strace", text).unwrap();
        let policy = anonmm::policy::Policy::parse(policy).expect("a policy name");
        let opts = RunOptions { check: true, policy, ..Default::default() };
        let r = anonmm::run::run_script(&s, &opts).unwrap_or_else(|e| panic!("{policy}: {e}"));
        assert!(r.mismatches.is_empty(), "{policy}: {:?}", r.mismatches);
        r
    };
    let refused = |r: &anonmm::run::RunResult| {
        r.stats.policy.relocations_refused.get(&RelocReason::Migration).copied().unwrap_or(0)
    };
    // PTE migration entries: MUST fails, a plain relocating move is done unrelocated.
    let ptes = "\
1 mmap(0x200000001000, 20480, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_FIXED_NOREPLACE|MAP_ANONYMOUS, -1, 0) = 0x200000001000
1 mmap(0x2000003ef000, 20480, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_FIXED_NOREPLACE|MAP_ANONYMOUS, -1, 0) = 0x2000003ef000
1 touch(0x200000001000, 4096, \"w\") = 0
1 touch(0x2000003ef000, 8192, \"w\") = 0
1 migrate(0x2000003ef000, 20480) = 0
1 mremap(0x2000003ef000, 20480, 20480, MREMAP_MAYMOVE|MREMAP_FIXED|MREMAP_MUST_RELOCATE_ANON, 0x200000006000) = -1 EFAULT (Bad address)
1 mremap(0x2000003ef000, 20480, 20480, MREMAP_MAYMOVE|MREMAP_FIXED|MREMAP_RELOCATE_ANON, 0x200000006000) = 0x200000006000
1 migrate_done(0x200000006000, 20480) = 0
";
    for p in ["relocate", "relocate-all"] {
        let r = run(p, ptes);
        assert_eq!((refused(&r), r.stats.policy.relocations_done), (2, 0), "{p}");
        assert_eq!(r.stats.migrations_done, 2);
    }
    // A PMD migration entry: the same, for every policy that relocates plain moves too.
    let pmd = "\
1 mmap(0x200000400000, 2097152, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_FIXED_NOREPLACE|MAP_ANONYMOUS, -1, 0) = 0x200000400000
1 madvise(0x200000400000, 2097152, MADV_HUGEPAGE) = 0
1 touch(0x200000400000, 4096, \"w\") = 0
1 migrate(0x200000400000, 2097152) = 0
1 mremap(0x200000400000, 2097152, 2097152, MREMAP_MAYMOVE|MREMAP_FIXED, 0x200000800000) = 0x200000800000
1 migrate_done(0x200000800000, 2097152) = 0
";
    for p in ["relocate-all", "copy-shared"] {
        let r = run(p, pmd);
        assert_eq!(refused(&r), 1, "{p}");
        assert_eq!(r.stats.migrations_done, 1);
    }
    // Matěna's RFC v3 waits for the migration, then relocates.
    let r = run("matena", pmd);
    assert_eq!((refused(&r), r.stats.policy.migrations_waited), (0, 1));
    assert_eq!(r.stats.migrations_done, 1);
    // matena: an existing-range merge adopts the middle VMA's folios into the neighbour's
    // anon_vma; it waits for their migrations first.
    let adopt = "\
1 mmap(0x200000000000, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_FIXED_NOREPLACE|MAP_ANONYMOUS, -1, 0) = 0x200000000000
1 madvise(0x200000000000, 8192, MADV_DONTFORK) = 0
1 mmap(0x200000002000, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_FIXED_NOREPLACE|MAP_ANONYMOUS, -1, 0) = 0x200000002000
1 touch(0x200000000000, 16384, \"w\") = 0
1 migrate(0x200000000000, 8192) = 0
1 madvise(0x200000000000, 8192, MADV_DOFORK) = 0
1 migrate_done(0x200000000000, 16384) = 0
";
    let r = run("matena", adopt);
    assert_eq!((r.stats.policy.anon_vma_adoptions, r.stats.policy.migrations_waited), (1, 2));
    assert_eq!(r.steps.last().unwrap().procs[&Pid(1)].maps.len(), 1, "merged");
}
