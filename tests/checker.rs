//! The invariant checker can fail: a healthy system passes `System::check`, and each single
//! corruption of its bookkeeping (mapcounts, pgoffs, anon_vma counters, chain keys, PTEs) is
//! caught and named.

use anonmm::mm::System;
use anonmm::pagetable::{Pmd, Pte, pmd_index, pte_index};
use anonmm::run::{RunOptions, Runner};
use anonmm::script::parse_str;
use anonmm::types::{PgOff, Pid, VirtAddr};
use anonmm::vma::VmaId;

const A: u64 = 0x2000_0000_0000;
const B: u64 = A + 0x1000;

/// Two private anonymous VMAs: [A, A+16K) with its first two pages written (two small folios),
/// shared with a forked child (COW: each page mapped twice); and [A+1M, A+1M+8K) written by
/// the parent only after the fork (mapped once, exclusive).
fn system() -> System {
    let text = "\
1 mmap(0x200000000000, 16384, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED_NOREPLACE, -1, 0) = 0x200000000000
1 touch(0x200000000000, 8192, \"w\") = 0
1 fork() = 2
1 mmap(0x200000100000, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED_NOREPLACE, -1, 0) = 0x200000100000
1 touch(0x200000100000, 8192, \"w\") = 0
";
    let script = parse_str("checker.strace", text).unwrap();
    let opts = RunOptions { check: true, ..Default::default() };
    let mut runner = Runner::new(&script, &opts).unwrap();
    for step in &script.steps {
        runner.step(step, false).unwrap();
    }
    assert!(runner.result.mismatches.is_empty(), "{:?}", runner.result.mismatches);
    let sys = runner.sys.clone();
    assert_eq!(sys.check(), Ok(()), "the healthy system must pass");
    sys
}

fn vma_at(sys: &System, pid: u32, a: u64) -> VmaId {
    let mm = &sys.vm.mms[sys.vm.procs[&Pid(pid)].mm];
    mm.vma_lookup(VirtAddr(a)).expect("a VMA")
}

/// The PTE of `pid` at `a`, to read or change.
fn pte_mut(sys: &mut System, pid: u32, a: u64) -> &mut Pte {
    let mm = sys.vm.procs[&Pid(pid)].mm;
    match sys.vm.mms[mm].pt.pmds.get_mut(&pmd_index(VirtAddr(a))) {
        Some(Pmd::Table(t)) => &mut t.ptes[pte_index(VirtAddr(a))],
        other => panic!("no PTE table at {a:#x}: {other:?}"),
    }
}

/// Apply `corrupt` to a fresh healthy system; the checker must fail with a message containing
/// `want`.
fn caught(what: &str, want: &str, corrupt: impl FnOnce(&mut System)) {
    let mut sys = system();
    corrupt(&mut sys);
    match sys.check() {
        Ok(()) => panic!("{what}: the checker did not notice"),
        Err(e) => assert!(e.contains(want), "{what}: expected an error about `{want}`, got `{e}`"),
    }
}

#[test]
fn healthy_system_passes() {
    let sys = system();
    // The fixture is what the corruptions below assume.
    let mut s = sys.clone();
    let (fa, _, _) = pte_mut(&mut s, 1, A).present().unwrap();
    let (fb, _, _) = pte_mut(&mut s, 1, B).present().unwrap();
    let (fc, _, _) = pte_mut(&mut s, 2, A).present().unwrap();
    assert_ne!(fa, fb);
    assert_eq!(fa, fc, "the child shares the parent's page");
    assert_eq!(sys.mem.folios[fa].pages[0].mapcount, 2);
    let v = vma_at(&sys, 1, A);
    assert!(sys.vm.vmas[v].anon_vma.is_some());
    assert_ne!(vma_at(&sys, 1, A + 0x100000), v);
}

#[test]
fn wrong_mapcount() {
    caught("mapcount + 1", "mapcount 3 but 2 PTEs", |sys| {
        let (f, sub, _) = pte_mut(sys, 1, A).present().unwrap();
        sys.mem.folios[f].pages[sub as usize].mapcount += 1;
    });
    caught("mapcount - 1", "mapcount 1 but 2 PTEs", |sys| {
        let (f, sub, _) = pte_mut(sys, 2, B).present().unwrap();
        sys.mem.folios[f].pages[sub as usize].mapcount -= 1;
    });
}

#[test]
fn shared_page_marked_exclusive() {
    caught("PageAnonExclusive on a COW-shared page", "exclusive but mapped 2 times", |sys| {
        let (f, sub, _) = pte_mut(sys, 1, A).present().unwrap();
        sys.mem.folios[f].pages[sub as usize].anon_exclusive = true;
    });
}

#[test]
fn vma_pgoff_moved_under_anon_pages() {
    // The chains are still filed under the old pgoff.
    caught("pgoff + 1", "missing from its anon_vma's tree under its pgoff", |sys| {
        let v = vma_at(sys, 1, A);
        sys.vm.vmas[v].pgoff = PgOff(sys.vm.vmas[v].pgoff.0 + 1);
    });
    // Chains re-filed consistently: now the pages sit at the wrong index for the VMA.
    caught("pgoff + 1 with chains re-keyed", "has index", |sys| {
        let v = vma_at(sys, 1, A);
        let old = sys.vm.vmas[v].pgoff.0;
        let pgoff = old + 1;
        sys.vm.vmas[v].pgoff = PgOff(pgoff);
        for c in sys.vm.vmas[v].chain.clone() {
            let av = sys.rmap.avcs[c].anon_vma;
            let tree = &mut sys.rmap.anon_vmas[av].tree;
            assert!(tree.remove(&(old, c)));
            tree.insert((pgoff, c));
        }
    });
}

#[test]
fn anon_vma_counters() {
    caught("num_active_vmas + 1", "num_active_vmas", |sys| {
        let av = sys.vm.vmas[vma_at(sys, 1, A)].anon_vma.unwrap();
        sys.rmap.anon_vmas[av].num_active_vmas += 1;
    });
    caught("num_children + 1", "num_children", |sys| {
        let av = sys.vm.vmas[vma_at(sys, 2, A)].anon_vma.unwrap();
        sys.rmap.anon_vmas[av].num_children += 1;
    });
    caught("refcount + 1", "refcount", |sys| {
        let av = sys.vm.vmas[vma_at(sys, 1, A)].anon_vma.unwrap();
        sys.rmap.anon_vmas[av].refcount += 1;
    });
}

#[test]
fn avc_keys() {
    // A second entry for the chain, under a key that is not its VMA's pgoff.
    caught("stray tree entry", "misfiled chain", |sys| {
        let v = vma_at(sys, 1, A);
        let (c, key) = (sys.vm.vmas[v].chain[0], sys.vm.vmas[v].pgoff.0);
        let av = sys.rmap.avcs[c].anon_vma;
        sys.rmap.anon_vmas[av].tree.insert((key + 1, c));
    });
    // The key it is filed under in the anon_vma's interval tree.
    caught("tree key + 1", "missing from its anon_vma's tree", |sys| {
        let v = vma_at(sys, 2, A);
        let (c, key) = (sys.vm.vmas[v].chain[0], sys.vm.vmas[v].pgoff.0);
        let av = sys.rmap.avcs[c].anon_vma;
        let tree = &mut sys.rmap.anon_vmas[av].tree;
        assert!(tree.remove(&(key, c)));
        tree.insert((key + 1, c));
    });
}

#[test]
fn ptes_pointing_at_the_wrong_page() {
    // One PTE redirected to another folio's page: rmap would look for it elsewhere.
    caught("PTE at A -> page at B", "has index", |sys| {
        let b = *pte_mut(sys, 1, B);
        *pte_mut(sys, 1, A) = b;
    });
    // Two PTEs exchanged: mapcounts still add up, but each page is at the wrong index.
    caught("PTEs at A and B exchanged", "has index", |sys| {
        let a = *pte_mut(sys, 1, A);
        let b = *pte_mut(sys, 1, B);
        *pte_mut(sys, 1, A) = b;
        *pte_mut(sys, 1, B) = a;
    });
    // A PTE cleared without dropping its mapcount.
    caught("child's PTE at A cleared", "mapcount 2 but 1 PTEs", |sys| {
        *pte_mut(sys, 2, A) = Pte::None;
        let mm = sys.vm.procs[&Pid(2)].mm;
        if let Some(Pmd::Table(t)) = sys.vm.mms[mm].pt.pmds.get_mut(&pmd_index(VirtAddr(A))) {
            t.used -= 1;
        }
    });
    // The same, with the table's count of used entries left stale.
    caught("PTE cleared, table count stale", "miscounts its entries", |sys| {
        *pte_mut(sys, 2, A) = Pte::None;
    });
    // A PTE left behind where no VMA is.
    caught("PTE past the VMA end", "outside any VMA", |sys| {
        let a = *pte_mut(sys, 1, A);
        let t = pte_mut(sys, 1, A + 0x4000);
        assert!(t.is_none());
        *t = a;
        let mm = sys.vm.procs[&Pid(1)].mm;
        if let Some(Pmd::Table(t)) = sys.vm.mms[mm].pt.pmds.get_mut(&pmd_index(VirtAddr(A))) {
            t.used += 1;
        }
    });
    // A writable PTE on a COW-shared page (a missed unshare).
    caught("writable shared page", "writable PTE", |sys| {
        if let Pte::Present { flags, .. } = pte_mut(sys, 2, A) {
            flags.insert(anonmm::pagetable::PteFlags::WRITE);
        }
    });
}
