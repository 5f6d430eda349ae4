//! The internal-state scenarios (`tests/internal/`, docs/internal.md): the model's anon_vma
//! tree, pgoffs and folios after each, as the kernel module showed them on Debian's 6.1 and
//! 6.12 (`anonmm oracle diff --kernel K --internal tests/internal/*.strace`: no difference),
//! and, where qemu and the cached headers are there, that diff itself.

use anonmm::internal::{InternalView, MappingName};
use anonmm::kernel::Kernel;
use anonmm::mm::Config;
use anonmm::run::{RunOptions, run_script};
use anonmm::script::parse_file;
use anonmm::types::Pid;

/// Every process's internal state after the last step, by pid.
fn last(name: &str, kernel: Kernel) -> Vec<(u32, InternalView)> {
    let script = parse_file(std::path::Path::new(&format!("tests/internal/{name}.strace"))).expect("parses");
    let opts = RunOptions {
        check: true,
        internal: true,
        config: Config { kernel, ..Config::default() },
        ..Default::default()
    };
    let steps = run_script(&script, &opts).expect("runs").steps;
    steps
        .last()
        .expect("steps")
        .procs
        .iter()
        .map(|(Pid(p), v)| (*p, v.internal.clone().expect("internal state")))
        .collect()
}

/// Three numbers: (anon_vma, root, parent) or (refcount, num_children, num_active_vmas).
type Triple = Option<(u64, u64, u64)>;

/// (anon_vma, root, parent) and (refcount, num_children, num_active_vmas), chains of each VMA.
fn tree(v: &InternalView) -> Vec<(Triple, Triple, u64)> {
    v.vmas.iter().map(|m| (m.anon_vma, m.counts, m.chains)).collect()
}

#[test]
fn fork_tree_three_generations() {
    for k in [Kernel::V6_1, Kernel::V6_12, Kernel::V6_18] {
        let p = last("fork_tree", k);
        // The root (1): its own reference plus one per descendant; two children counted
        // with its self-parent link; two VMAs of process 1 on it.
        assert_eq!(tree(&p[0].1), vec![(Some((1, 1, 1)), Some((3, 2, 2)), 1); 2], "{k}");
        assert_eq!(tree(&p[1].1), vec![(Some((2, 1, 1)), Some((1, 1, 1)), 2)], "{k}");
        // The grandchild's three pieces all on anon_vma 3 (parent 2), three chains each.
        assert_eq!(tree(&p[2].1), vec![(Some((3, 1, 2)), Some((1, 0, 3)), 3); 3], "{k}");
        // Process 2 wrote its first page after the fork: its own anon_vma; the rest shared.
        let f: Vec<(MappingName, u64)> = p[1].1.folios.iter().map(|f| (f.mapping, f.mapcount)).collect();
        assert_eq!(
            f,
            vec![
                (MappingName::Anon(2), 2),
                (MappingName::Anon(1), 3),
                (MappingName::Anon(1), 2),
                (MappingName::Anon(1), 3)
            ],
            "{k}"
        );
    }
}

#[test]
fn anon_vma_reused_after_the_middle_process_exits() {
    for k in [Kernel::V6_1, Kernel::V6_12, Kernel::V6_18] {
        let p = last("anon_vma_reuse", k);
        let pids: Vec<u32> = p.iter().map(|(pid, _)| *pid).collect();
        assert_eq!(pids, [1, 3, 4], "{k}");
        let av = |i: usize| p[i].1.vmas[0].anon_vma.expect("anon_vma");
        // Process 4 got process 2's anon_vma (its parent is the root), not a child of 3's.
        assert_eq!(av(1).2, av(2).0, "{k}: 4's anon_vma is 3's parent");
        assert_eq!(av(2).2, av(0).0, "{k}: whose parent is the root");
        assert_eq!(p[2].1.vmas[0].counts, Some((1, 1, 1)), "{k}");
    }
}

#[test]
fn mremap_keeps_a_faulted_pgoff_and_relinearises_an_unfaulted_one() {
    let p = last("mremap_pgoff", Kernel::V6_12);
    let v: Vec<(u64, u64)> = p[0].1.vmas.iter().map(|m| (m.start, m.pgoff)).collect();
    assert_eq!(
        v,
        [
            (0x2000_0001_2000, 0x2_0000_0012),
            (0x2000_0010_0000, 0x2_0000_0010),
            (0x2000_0030_0000, 0x2_0000_0300)
        ]
    );
    // The moved pages keep the index they were faulted at.
    assert_eq!(
        p[0].1.folios.iter().find(|f| f.addr == 0x2000_0010_1000).map(|f| f.index),
        Some(0x2_0000_0011)
    );
    // Both pieces of the split source share one anon_vma.
    assert_eq!(p[0].1.vmas[0].anon_vma, p[0].1.vmas[1].anon_vma);
}

#[test]
fn thp_shared_by_fork_then_split_in_the_parent() {
    for k in [Kernel::V6_1, Kernel::V6_12] {
        let script = parse_file(std::path::Path::new("tests/internal/thp_fork.strace")).expect("parses");
        let opts = RunOptions {
            check: true,
            internal: true,
            config: Config { kernel: k, ..Config::default() },
            ..Default::default()
        };
        let steps = run_script(&script, &opts).expect("runs").steps;
        // After the fork: both PMD mappings count in every page.
        let forked = steps[3].procs[&Pid(1)].internal.as_ref().expect("internal");
        assert_eq!(forked.folios.len(), 512, "{k}");
        assert!(forked.folios.iter().all(|f| f.order == 9 && f.mapcount == 2), "{k}");
        // After the child's munmap and the parent's split: PTEs, one mapping each.
        let p = last("thp_fork", k);
        assert!(p[1].1.folios.is_empty(), "{k}");
        let parent = &p[0].1.folios;
        assert_eq!(parent.len(), 512, "{k}");
        assert!(
            parent.iter().all(|f| f.order == 9 && f.mapcount == 1 && f.mapping == MappingName::Anon(1)),
            "{k}"
        );
        assert_eq!(p[0].1.vmas.len(), 3, "{k}: the mprotect split the VMA");
    }
}

#[test]
fn dontunmap_source_pgoff_per_kernel() {
    for (k, pgoff) in
        [(Kernel::V6_1, 0x2_0000_2000), (Kernel::V6_12, 0x2_0000_2000), (Kernel::V6_18, 0x2_0000_0c00)]
    {
        let script = parse_file(std::path::Path::new("tests/kernels/dontunmap_keeps_source_pgoff.strace"))
            .expect("parses");
        let opts = RunOptions {
            check: true,
            internal: true,
            config: Config { kernel: k, ..Config::default() },
            ..Default::default()
        };
        let steps = run_script(&script, &opts).expect("runs").steps;
        let v = &steps.last().expect("steps").procs[&Pid(1)].internal.as_ref().expect("internal").vmas;
        // The source, without anon_vma, then the copy, which keeps the faulted pgoff.
        assert_eq!(
            (v[0].start, v[0].pgoff, v[0].anon_vma, v[0].chains),
            (0x2000_0200_0000, pgoff, None, 0),
            "{k}"
        );
        assert_eq!((v[1].start, v[1].pgoff, v[1].chains), (0x2000_0400_0000, 0x2_0000_0c00, 1), "{k}");
    }
}

#[test]
fn dontunmap_of_a_locked_tail_unlinks_the_split_piece_before_6_18() {
    // (start, end, has an anon_vma, chains) of each VMA after the move.
    let vmas = |k| {
        let script = parse_file(std::path::Path::new("tests/kernels/dontunmap_locked_tail_unlinks.strace"))
            .expect("parses");
        let opts = RunOptions {
            check: true,
            internal: true,
            config: Config { kernel: k, ..Config::default() },
            ..Default::default()
        };
        let steps = run_script(&script, &opts).expect("runs").steps;
        steps.last().expect("steps").procs[&Pid(1)]
            .internal
            .as_ref()
            .expect("internal")
            .vmas
            .iter()
            .map(|m| (m.start, m.end, m.anon_vma.is_some(), m.chains))
            .collect::<Vec<_>>()
    };
    for k in [Kernel::V6_1, Kernel::V6_12] {
        assert_eq!(
            vmas(k),
            vec![
                (0x2000_007b_8000, 0x2000_007b_9000, true, 1),
                (0x2000_007b_f000, 0x2000_007c_1000, true, 1),
                (0x2000_007c_1000, 0x2000_007c_2000, false, 0),
            ],
            "{k}"
        );
    }
    assert_eq!(
        vmas(Kernel::V6_18),
        vec![(0x2000_007b_8000, 0x2000_007b_9000, true, 1), (0x2000_007b_f000, 0x2000_007c_2000, true, 1)]
    );
}

/// The same scenarios against the kernels themselves, when this machine can: qemu installed
/// and the headers for the module already in the cache (`oracle diff --internal` fetches
/// them; this test does not reach the network).
#[test]
fn the_vm_kernels_agree() {
    let qemu = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("qemu-system-x86_64").is_file()));
    let cache = anonmm::oracle::vm::cache_dir().join("headers");
    let cached = std::fs::read_dir(&cache).map(|d| d.count()).unwrap_or(0);
    if !qemu || cached < 2 || !nix_is_root() {
        eprintln!(
            "skipped: the VM oracle needs qemu-system-x86_64, root and the 6.1 and 6.12 headers in {}",
            cache.display()
        );
        return;
    }
    let scripts: Vec<std::path::PathBuf> = std::fs::read_dir("tests/internal")
        .expect("tests/internal")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "strace"))
        .collect();
    for k in ["6.1", "6.12"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_anonmm"))
            .args(["oracle", "diff", "--internal", "--kernel", k])
            .args(&scripts)
            .output()
            .expect("runs");
        let text = String::from_utf8_lossy(&out.stdout);
        match out.status.code() {
            Some(0) => {}
            Some(2) => eprintln!("skipped on {k}: {}", String::from_utf8_lossy(&out.stderr).trim()),
            _ => panic!("{k}: {text}\n{}", String::from_utf8_lossy(&out.stderr)),
        }
    }
}

/// `graph --from-oracle` on the VM kernel: the kernel's picture of the three-generation fork
/// tree beside the model's, the same names on both sides and nothing red. Skipped (with the
/// reason) where the VM oracle cannot run.
#[test]
fn graph_from_oracle_on_the_vm_kernel() {
    let qemu = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("qemu-system-x86_64").is_file()));
    let cache = anonmm::oracle::vm::cache_dir().join("headers");
    let cached = std::fs::read_dir(&cache).map(|d| d.count()).unwrap_or(0);
    if !qemu || cached == 0 || !nix_is_root() {
        eprintln!(
            "skipped: graph --from-oracle needs qemu-system-x86_64, root and the 6.12 headers in {}",
            cache.display()
        );
        return;
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_anonmm"))
        .args(["graph", "--kernel", "6.12", "--from-oracle", "tests/internal/fork_tree.strace"])
        .output()
        .expect("runs");
    let d = String::from_utf8_lossy(&out.stdout);
    match out.status.code() {
        Some(0) => {}
        Some(2) => {
            eprintln!("skipped: {}", String::from_utf8_lossy(&out.stderr).trim());
            return;
        }
        _ => panic!("{d}\n{}", String::from_utf8_lossy(&out.stderr)),
    }
    assert!(d.contains("label=\"kernel 6.12 (VM)\"") && d.contains("label=\"model 6.12\""), "{d}");
    assert!(d.contains("label=\"kernel and model agree\"") && !d.contains("color=red"), "{d}");
    for s in ["k", "m"] {
        // The root, the child's (parent: the root) and the grandchild's (parent: the child's).
        assert!(d.contains(&format!("{s}av2 -> {s}av1 [style=dashed, label=\"parent\"]")), "{d}");
        assert!(d.contains(&format!("{s}av3 -> {s}av2 [style=dashed, label=\"parent\"]")), "{d}");
        assert!(d.contains(&format!("{s}av3 -> {s}av1 [style=dotted, label=\"root\"]")), "{d}");
    }
    // The grandchild's three pieces, each on three chains; five folios a side.
    assert_eq!(d.matches("\\nchains 3\"").count(), 6, "{d}");
    assert_eq!(d.matches("[shape=ellipse").count(), 10, "{d}");
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// A userfaultfd-registered VMA moves its PTEs one by one (move_normal_pmd refuses it), so the
/// DONTUNMAP source keeps its empty PTE table; the read fault there takes the PTE path to the
/// userfaultfd's SIGBUS and prepares no anon_vma (6.12 `--internal` seed 330556). The moved
/// copy keeps the anon_vma and the THP's pages.
#[test]
fn uffd_move_keeps_the_source_pte_table() {
    for k in [Kernel::V6_1, Kernel::V6_12, Kernel::V6_18] {
        let p = last("uffd_move_keeps_source_pte_table", k);
        let v = &p[0].1.vmas;
        let source = v.iter().find(|m| m.start == 0x2000_0060_0000).expect("the source VMA");
        assert_eq!((source.anon_vma, source.chains), (None, 0), "{k}");
        let copy = v.iter().find(|m| m.start == 0x2000_0040_0000).expect("the moved copy");
        assert!(copy.anon_vma.is_some(), "{k}");
    }
}

/// The child's swap-in of a page paged out after its parent (where it was first mapped) went:
/// which folio it maps, and that folio's mapping against the child's own anon_vma and the root.
fn swapped_in_mapping(name: &str, k: Kernel) -> (MappingName, MappingName, MappingName) {
    let p = last(name, k);
    let v = &p.iter().find(|(pid, _)| *pid == 2).expect("the child").1;
    let own = v.vmas[0].anon_vma.expect("the child's anon_vma");
    let f = v.folios.iter().find(|f| f.addr == 0x2000_0220_5000).expect("the page");
    (f.mapping, MappingName::Anon(own.0), MappingName::Anon(own.1))
}

/// A zero-filled page paged out: 6.12 and 6.18 free it at once (the swap zeromap), so the
/// child's swap-in reads a new, exclusive folio onto its own anon_vma; 6.1 keeps the folio in
/// the swap cache and maps it again, on the root anon_vma (the parent's; 6.1 `--internal`
/// seed 320609).
#[test]
fn a_zero_filled_page_swapped_in_is_a_new_folio_from_6_12() {
    let (m, own, root) = swapped_in_mapping("pageout_of_zero_folio", Kernel::V6_1);
    assert_ne!(own, root);
    assert_eq!(m, root, "6.1: the old folio, on the root anon_vma");
    for k in [Kernel::V6_12, Kernel::V6_18] {
        let (m, own, _) = swapped_in_mapping("pageout_of_zero_folio", k);
        assert_eq!(m, own, "{k}: a new folio on the child's anon_vma");
    }
}

/// A written page paged out stays in the swap cache on every kernel (the write is still
/// running when reclaim looks), so the swap-in maps the old folio, on the root anon_vma.
#[test]
fn a_written_page_swapped_in_keeps_its_old_mapping() {
    for k in [Kernel::V6_1, Kernel::V6_12, Kernel::V6_18] {
        let (m, own, root) = swapped_in_mapping("pageout_keeps_written_folio", k);
        assert_ne!(own, root);
        assert_eq!(m, root, "{k}: the old folio, on the root anon_vma");
    }
}

/// A populate write-faults a fork-shared, PTE-mapped THP page by page: 6.1 copies every page
/// but the last, which it reuses in the THP (refcount 1); 6.12 copies all 512; 6.18 reuses
/// the THP at the first write (6.1 `--internal` seed 325140).
#[test]
fn the_last_page_of_a_cow_shared_thp_is_reused_only_on_6_1() {
    let orders = |k| {
        let p = last("wp_reuses_last_page_of_large_folio", k);
        let f = &p[0].1.folios;
        assert_eq!(f.len(), 512, "{k}");
        let large: Vec<u64> = f.iter().filter(|f| f.order == 9).map(|f| f.addr).collect();
        large
    };
    assert_eq!(orders(Kernel::V6_1), vec![0x2000_00bf_f000], "6.1: the last page only");
    assert!(orders(Kernel::V6_12).is_empty(), "6.12: all copied");
    assert_eq!(orders(Kernel::V6_18).len(), 512, "6.18: the THP reused whole");
}
