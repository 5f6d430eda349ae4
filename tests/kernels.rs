//! One scenario per kernel-profile switch (`crates/anonmm-model/src/kernel.rs`), under `tests/kernels/`: the
//! outcome the model gives as Linux 6.1, 6.12 and 6.18. Each expectation is what the VM
//! oracle (`anonmm oracle diff --kernel 6.1|6.12 tests/kernels/*.strace`) saw on Debian's
//! kernels, and the host's kernel for 6.18.

use anonmm::kernel::Kernel;
use anonmm::mm::Config;
use anonmm::run::{RunOptions, run_script};
use anonmm::script::parse_file;
use anonmm::snapshot::StepView;

fn run(name: &str, kernel: Kernel) -> Vec<StepView> {
    let script = parse_file(std::path::Path::new(&format!("tests/kernels/{name}.strace"))).expect("parses");
    let opts =
        RunOptions { check: true, config: Config { kernel, ..Config::default() }, ..Default::default() };
    run_script(&script, &opts).expect("runs").steps
}

/// The result of the step on `line` and every VMA (start-end) after the last step.
fn outcome(name: &str, kernel: Kernel, line: usize) -> (String, Vec<String>) {
    let steps = run(name, kernel);
    let result = steps.iter().find(|s| s.line == line).expect("step").result.clone();
    let vmas = steps
        .last()
        .expect("steps")
        .procs
        .values()
        .flat_map(|p| p.maps.iter().map(|m| m.split_whitespace().next().unwrap_or_default().to_string()))
        .collect();
    (result, vmas)
}

fn vmas(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn madv_guard_is_einval_before_6_13() {
    for k in [Kernel::V6_1, Kernel::V6_12] {
        assert_eq!(outcome("madv_guard", k, 3).0, "= -1 EINVAL (Invalid argument)", "{k}");
        assert_eq!(outcome("madv_guard", k, 4).0, "= 0", "{k}");
    }
    assert_eq!(outcome("madv_guard", Kernel::V6_18, 3).0, "= 0");
}

#[test]
fn uffdio_move_is_einval_before_6_8() {
    assert_eq!(outcome("uffdio_move", Kernel::V6_1, 5).0, "= -1 EINVAL (Invalid argument)");
    for k in [Kernel::V6_12, Kernel::V6_18] {
        assert_eq!(outcome("uffdio_move", k, 5).0, "= 4096", "{k}");
    }
}

#[test]
fn mremap_moves_several_vmas_from_6_17() {
    for k in [Kernel::V6_1, Kernel::V6_12] {
        let (r, v) = outcome("mremap_multi_vma", k, 3);
        assert_eq!(r, "= -1 EFAULT (Bad address)", "{k}");
        assert_eq!(v, vmas(&["1000005a3000-1000005a4000"]), "{k}");
    }
    let (r, v) = outcome("mremap_multi_vma", Kernel::V6_18, 3);
    assert_eq!(r, "= 0x100002200000");
    assert_eq!(v, vmas(&["100002200000-100002201000"]));
}

#[test]
fn mremap_unmaps_the_destination_before_checking_the_source_before_6_17() {
    for k in [Kernel::V6_1, Kernel::V6_12] {
        let (r, v) = outcome("mremap_checks_before_unmap", k, 6);
        assert_eq!(r, "= -1 EFAULT (Bad address)", "{k}");
        assert_eq!(v, vmas(&["100000000000-100000002000"]), "{k}: the destination is gone");
        assert_eq!(outcome("mremap_checks_before_unmap", k, 7).0, "= -1 EFAULT (Bad address)", "{k}");
    }
    let (r, v) = outcome("mremap_checks_before_unmap", Kernel::V6_18, 6);
    assert_eq!(r, "= -1 EFAULT (Bad address)");
    assert_eq!(v, vmas(&["100000000000-100000002000", "100000100000-100000102000"]));
    assert_eq!(outcome("mremap_checks_before_unmap", Kernel::V6_18, 7).0, "= -1 EINVAL (Invalid argument)");
}

#[test]
fn an_unfaulted_vma_takes_a_faulted_neighbour_from_6_16() {
    for k in [Kernel::V6_1, Kernel::V6_12] {
        let v = outcome("anon_vma_merge_unfaulted_target", k, 5).1;
        assert_eq!(v, vmas(&["100000000000-100000001000", "100000001000-100000002000"]), "{k}");
    }
    let v = outcome("anon_vma_merge_unfaulted_target", Kernel::V6_18, 5).1;
    assert_eq!(v, vmas(&["100000000000-100000002000"]));
}

#[test]
fn io_uring_refuses_private_file_pages_before_6_5() {
    assert_eq!(
        outcome("gup_longterm_file_check", Kernel::V6_1, 6).0,
        "= -1 EOPNOTSUPP (Operation not supported)"
    );
    for k in [Kernel::V6_12, Kernel::V6_18] {
        assert_eq!(outcome("gup_longterm_file_check", k, 6).0, "= 0", "{k}");
    }
}

#[test]
fn dontunmap_merges_with_its_source_only_on_6_18() {
    for k in [Kernel::V6_1, Kernel::V6_12] {
        let v = outcome("dontunmap_merges_source", k, 4).1;
        assert_eq!(v, vmas(&["100000000000-100000002000", "100000002000-100000003000"]), "{k}");
    }
    assert_eq!(outcome("dontunmap_merges_source", Kernel::V6_18, 4).1, vmas(&["100000000000-100000003000"]));
}

#[test]
fn a_dontunmap_copy_beside_its_source_merges_with_nothing_on_6_1() {
    assert_eq!(
        outcome("dontunmap_beside_source_merges_nothing", Kernel::V6_1, 8).1,
        vmas(&["2000001b6000-2000001b7000", "2000001b7000-2000001b8000", "2000001b8000-2000001ba000"]),
    );
    // 6.12: not into its source, but with the VMA on its other side.
    assert_eq!(
        outcome("dontunmap_beside_source_merges_nothing", Kernel::V6_12, 8).1,
        vmas(&["2000001b6000-2000001b7000", "2000001b7000-2000001ba000"]),
    );
    assert_eq!(
        outcome("dontunmap_beside_source_merges_nothing", Kernel::V6_18, 8).1,
        vmas(&["2000001b6000-2000001ba000"])
    );
}

#[test]
fn a_copy_of_a_userfaultfd_registered_vma_merges_with_nothing_on_6_12() {
    let before = ["200003000000-20000300c000", "20000300d000-20000301b000"];
    let (r, v) = outcome("uffd_copy_merges", Kernel::V6_12, 11);
    assert_eq!(r, "= 0x200003102000");
    assert_eq!(v, vmas(&[before[0], before[1], "200003100000-200003102000", "200003102000-200003103000"]));
    for k in [Kernel::V6_1, Kernel::V6_18] {
        let v = outcome("uffd_copy_merges", k, 11).1;
        assert_eq!(v, vmas(&[before[0], before[1], "200003100000-200003103000"]), "{k}");
    }
    // smaps' `um` (VM_UFFD_MISSING) of each VMA: on 6.12 the neighbour stays registered and
    // the copy is not; on 6.18 the merged VMA lost the registration.
    let uffd = |k| {
        let script =
            parse_file(std::path::Path::new("tests/kernels/uffd_copy_merges.strace")).expect("parses");
        let opts = RunOptions {
            check: true,
            smaps: true,
            config: Config { kernel: k, ..Config::default() },
            ..Default::default()
        };
        let steps = run_script(&script, &opts).expect("runs").steps;
        let p = &steps.last().expect("steps").procs[&anonmm::types::Pid(1)];
        p.smaps.iter().map(|s| s.vm_flags.iter().any(|f| f == "um")).collect::<Vec<_>>()
    };
    assert_eq!(uffd(Kernel::V6_12), vec![true, true, true, false]);
    assert_eq!(uffd(Kernel::V6_18), vec![true, true, false]);
}

#[test]
fn a_dontunmap_file_copy_its_source_cannot_take_merges_with_the_next_vma_on_every_kernel() {
    for k in Kernel::ALL {
        let (r, v) = outcome("dontunmap_file_copy_merges_next", k, 11);
        assert_eq!(r, "= 0x200003a00000", "{k}");
        assert_eq!(v, vmas(&["2000039fc000-200003a00000", "200003a00000-200003a04000"]), "{k}");
    }
}

#[test]
fn mprotect_keeps_vm_account_of_unfaulted_vmas_before_6_7() {
    let v = outcome("mprotect_unaccounts_unfaulted", Kernel::V6_1, 5).1;
    assert_eq!(
        v,
        vmas(&["100002c00000-100003000000", "100003000000-100003021000", "100003021000-100003200000"])
    );
    for k in [Kernel::V6_12, Kernel::V6_18] {
        let v = outcome("mprotect_unaccounts_unfaulted", k, 5).1;
        assert_eq!(v, vmas(&["100002c00000-100003000000", "100003000000-100003200000"]), "{k}");
    }
}

#[test]
fn userfaultfd_register_merges_with_the_vma_pgoff_on_6_1() {
    let v = outcome("uffd_merge_pgoff", Kernel::V6_1, 6).1;
    assert_eq!(
        v,
        vmas(&[
            "1000020ec000-1000020f0000",
            "1000020f0000-1000020f1000",
            "1000020f1000-1000020f2000",
            "1000020f2000-1000020f4000"
        ])
    );
    for k in [Kernel::V6_12, Kernel::V6_18] {
        let v = outcome("uffd_merge_pgoff", k, 6).1;
        assert_eq!(
            v,
            vmas(&["1000020ec000-1000020f0000", "1000020f0000-1000020f2000", "1000020f2000-1000020f4000"]),
            "{k}"
        );
    }
}

/// Every line of the last step's maps.
fn maps(name: &str, kernel: Kernel) -> Vec<String> {
    run(name, kernel).last().expect("steps").procs.values().flat_map(|p| p.maps.clone()).collect()
}

/// The addresses of the pages present in `pid` after the last step, with their
/// PM_MMAP_EXCLUSIVE bit.
fn pages(name: &str, kernel: Kernel, pid: u32) -> Vec<(u64, bool)> {
    let steps = run(name, kernel);
    let p = &steps.last().expect("steps").procs[&anonmm::types::Pid(pid)];
    p.pages.iter().map(|pg| (pg.addr, pg.exclusive)).collect()
}

#[test]
fn a_vma_touching_the_heap_is_named_heap_before_6_7() {
    let heap = |k| maps("heap_name_overlap_only", k).iter().filter(|l| l.ends_with("[heap]")).count();
    assert_eq!(heap(Kernel::V6_1), 2);
    for k in [Kernel::V6_12, Kernel::V6_18] {
        assert_eq!(heap(k), 1, "{k}");
    }
}

#[test]
fn exec_mappings_read_around_the_fault_before_6_17() {
    let present = |k| pages("exec_readahead_forward", k, 1).iter().map(|p| p.0).collect::<Vec<_>>();
    for k in [Kernel::V6_1, Kernel::V6_12] {
        assert_eq!(present(k), vec![0x2000_0040_0000, 0x2000_0040_1000, 0x2000_0040_2000], "{k}");
    }
    assert_eq!(present(Kernel::V6_18), vec![0x2000_0040_2000]);
}

#[test]
fn without_ext4_large_folios_the_readahead_mark_is_inside_a_small_file() {
    let present = |k| pages("ext4_large_folios", k, 1).iter().map(|p| p.0).collect::<Vec<_>>();
    let window: Vec<u64> = (0..16).map(|i| 0x2000_0060_0000 + i * 4096).collect();
    for k in [Kernel::V6_1, Kernel::V6_12] {
        assert_eq!(present(k), window[1..].to_vec(), "{k}: the PG_readahead page is not mapped");
    }
    assert_eq!(present(Kernel::V6_18), window);
}

/// Per subpage from 6.11 (2c1f057e5be6) to 6.14; from the head page before (6.1, as the VM
/// shows) and again from 6.15.
#[test]
fn pagemap_exclusive_of_a_pmd_mapped_thp_is_per_subpage_on_6_12() {
    let excl = |k| {
        pages("pagemap_thp_exclusive_from_head", k, 1).iter().filter(|p| p.1).map(|p| p.0).collect::<Vec<_>>()
    };
    assert_eq!(excl(Kernel::V6_12), vec![0x2000_0246_8000]);
    for k in [Kernel::V6_1, Kernel::V6_18] {
        assert!(excl(k).is_empty(), "{k}");
    }
}

#[test]
fn madv_dontneed_frees_the_emptied_pte_table_from_6_14() {
    let present = |k| pages("madv_dontneed_reclaims_pt", k, 1).len();
    for k in [Kernel::V6_1, Kernel::V6_12] {
        assert_eq!(present(k), 1, "{k}: a PTE fault in the table that stayed");
    }
    assert_eq!(present(Kernel::V6_18), 512, "a THP");
}

#[test]
fn the_6_18_profile_is_the_default_and_has_every_version_switch() {
    assert_eq!(Config::default().kernel, Kernel::V6_18);
    let p = Kernel::V6_18.profile();
    assert!(p.madv_guard && p.uffdio_move && p.mremap_multi_vma && p.mremap_checks_before_unmap);
    assert!(p.anon_vma_merge_unfaulted_target && p.gup_longterm_file_check && p.dontunmap_merges_source);
    assert!(p.mprotect_unaccounts_unfaulted && p.uffd_merge_pgoff && p.huge_zero_wp_thp);
    assert!(p.heap_name_overlap_only && p.exec_readahead_forward && p.ext4_large_folios);
    assert!(p.pagemap_thp_exclusive_from_head && p.madv_dontneed_reclaims_pt);
    assert!(
        p.populate_without_vma_walk && p.split_maps_unused_to_zeropage && p.dontunmap_copy_merges_other_side
    );
    assert!(p.map_stack_nohugepage && p.dontunmap_unlocks_whole_vma && p.ext4_truncate_up_zeroes_eof);
    assert!(p.smaps_lockonfault_mnemonic);
    assert!(p.map_stack_nohugepage && p.dontunmap_unlocks_whole_vma && p.uffd_copy_merges);
    assert!(p.folio_shared_by_mm_ids && p.collapse_read_only_ptes && p.fault_around_checks_i_size);
    assert!(p.uffd_unregister_same_ctx && p.mmap_merge_new_range);
    assert!(p.madvise_batches_large_folios && p.seq_readahead_half_async && p.collapse_none_pte_ebusy);
    assert!(p.swap_zeromap && p.zap_skips_lru_drain && p.folio_batch_31);
}

#[test]
fn madv_collapse_of_read_only_ptes_from_6_18() {
    // Line 8: the fork child's MADV_COLLAPSE of the PMD whose only page is COW-shared.
    for k in [Kernel::V6_1, Kernel::V6_12] {
        assert_eq!(outcome("collapse_read_only_ptes", k, 8).0, "= -1 EINVAL (Invalid argument)", "{k}");
        assert_eq!(
            pages("collapse_read_only_ptes", k, 4),
            vec![(0x2000_0260_0000, false)],
            "{k}: nothing collapsed"
        );
    }
    assert_eq!(outcome("collapse_read_only_ptes", Kernel::V6_18, 8).0, "= 0");
    let child = pages("collapse_read_only_ptes", Kernel::V6_18, 4);
    assert_eq!(child.len(), 512, "the child maps a whole THP");
    assert!(child.iter().all(|p| p.1), "its own copy");
}

#[test]
fn map_stack_sets_nohugepage_from_6_7() {
    let (_, v) = outcome("map_stack_nohugepage", Kernel::V6_1, 5);
    assert_eq!(v, vmas(&["200001e2d000-200001e6b000"]), "merged");
    for k in [Kernel::V6_12, Kernel::V6_18] {
        let (_, v) = outcome("map_stack_nohugepage", k, 5);
        assert_eq!(v, vmas(&["200001e2d000-200001e6a000", "200001e6a000-200001e6b000"]), "{k}");
    }
}

#[test]
fn madv_populate_walks_vma_by_vma_before_6_9() {
    let present = |k| pages("populate_without_vma_walk", k, 1).iter().map(|p| p.0).collect::<Vec<_>>();
    // The hole first, then the PROT_NONE VMA.
    assert_eq!(outcome("populate_without_vma_walk", Kernel::V6_1, 7).0, "= -1 EINVAL (Invalid argument)");
    // A hole, then a writable VMA: ENOMEM everywhere, but 6.1 populated the VMA first.
    assert_eq!(
        outcome("populate_without_vma_walk", Kernel::V6_1, 9).0,
        "= -1 ENOMEM (Cannot allocate memory)"
    );
    assert_eq!(present(Kernel::V6_1), vec![0x2000_01e9_0000]);
    for k in [Kernel::V6_12, Kernel::V6_18] {
        assert_eq!(
            outcome("populate_without_vma_walk", k, 7).0,
            "= -1 ENOMEM (Cannot allocate memory)",
            "{k}"
        );
        assert_eq!(
            outcome("populate_without_vma_walk", k, 9).0,
            "= -1 ENOMEM (Cannot allocate memory)",
            "{k}"
        );
        assert!(present(k).is_empty(), "{k}");
    }
}

#[test]
fn a_thp_split_maps_unused_subpages_to_the_zero_page_from_6_12() {
    use anonmm::snapshot::PageName;
    let zero_pages = |k: Kernel| {
        let steps = run("split_maps_unused_to_zeropage", k);
        let last = steps.last().expect("steps");
        let pages: Vec<_> = last.procs.values().flat_map(|p| p.pages.iter()).collect();
        (pages.len(), pages.iter().filter(|p| p.page == PageName::Page(0)).count())
    };
    assert_eq!(zero_pages(Kernel::V6_1), (512, 0), "every subpage stays");
    for k in [Kernel::V6_12, Kernel::V6_18] {
        assert_eq!(zero_pages(k), (512, 511), "{k}: only the written page is not the zero page");
    }
}

#[test]
fn madv_free_splits_a_thp_whose_first_page_is_unmapped_on_6_12() {
    use anonmm::snapshot::PageName;
    // Pages present after the child's MADV_FREE, in all three processes, and how many of them
    // are the zero page.
    let zero_pages = |k: Kernel| {
        let steps = run("folio_shared_by_mm_ids", k);
        let last = steps.last().expect("steps");
        let pages: Vec<_> = last.procs.values().flat_map(|p| p.pages.iter()).collect();
        (pages.len(), pages.iter().filter(|p| p.page == PageName::Page(0)).count())
    };
    assert_eq!(
        zero_pages(Kernel::V6_12),
        (510, 510),
        "the split maps every unwritten subpage to the zero page"
    );
    for k in [Kernel::V6_1, Kernel::V6_18] {
        assert_eq!(zero_pages(k), (510, 0), "{k}: the THP is left alone");
    }
}

#[test]
fn a_write_to_the_huge_zero_page_maps_a_thp_from_6_13() {
    use anonmm::snapshot::PageName;
    let zero_pages = |k: Kernel| {
        let steps = run("huge_zero_wp_thp", k);
        let last = steps.last().expect("steps");
        let pages: Vec<_> = last.procs.values().flat_map(|p| p.pages.iter()).collect();
        (pages.len(), pages.iter().filter(|p| p.page == PageName::Page(0)).count())
    };
    // 11 pinned pages copied, the other 501 still the zero page.
    for k in [Kernel::V6_1, Kernel::V6_12] {
        assert_eq!(zero_pages(k), (512, 501), "{k}");
    }
    assert_eq!(zero_pages(Kernel::V6_18), (512, 0));
}

/// `explain --kernel` (and `ExplainOptions::kernel`): the merge rules of the kernel asked.
/// On 6.1 a faulted range stays apart from its unfaulted neighbour, named as the anon_vma
/// refusal; on 6.18 the two merged.
#[test]
fn explain_uses_the_kernel_asked() {
    let script = parse_file(std::path::Path::new("tests/kernels/anon_vma_merge_unfaulted_target.strace"))
        .expect("parses");
    let explain = |kernel| {
        let opts = anonmm::explain::ExplainOptions {
            at: None,
            pid: None,
            policy: anonmm::policy::Policy::Kernel,
            replay: false,
            kernel,
        };
        anonmm::explain::explain(&script, &opts).expect("explains")
    };
    let old = explain(Kernel::V6_1);
    assert!(
        old.contains("100000000000-100000001000 and 100000001000-100000002000: NOMERGE_ANON_VMA"),
        "{old}"
    );
    assert_eq!(explain(Kernel::V6_18), "== pid 1 (1 VMAs) ==\nno adjacent VMAs\n");
}

/// `bench --kernel`: the figures model the kernel asked, and say so; the oracle figure,
/// which runs the host's 6.18, is refused for another kernel rather than measured as 6.18.
#[test]
fn bench_takes_the_kernel() {
    let bin = env!("CARGO_BIN_EXE_anonmm");
    let o = std::process::Command::new(bin)
        .args(["bench", "--only", "oracle", "--kernel", "6.1", "--format", "json"])
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not measured with --kernel 6.1"), "{err}");
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(json["kernel"], "6.1");
    let sys = anonmm::bench::one_process(100, Kernel::V6_1);
    assert_eq!(sys.cfg.kernel, Kernel::V6_1);
}

#[test]
fn dontunmap_unlocks_only_the_moved_range_before_6_18() {
    // Each VMA after the move, and whether smaps shows it locked (`lo`).
    let locked = |k| {
        let script = parse_file(std::path::Path::new("tests/kernels/dontunmap_unlocks_whole_vma.strace"))
            .expect("parses");
        let opts = RunOptions {
            check: true,
            smaps: true,
            config: Config { kernel: k, ..Config::default() },
            ..Default::default()
        };
        let steps = run_script(&script, &opts).expect("runs").steps;
        let p = &steps.last().expect("steps").procs[&anonmm::types::Pid(1)];
        p.smaps
            .iter()
            .map(|s| (format!("{:x}-{:x}", s.start, s.end), s.vm_flags.iter().any(|f| f == "lo")))
            .collect::<Vec<_>>()
    };
    let v = |s: &str, lo| (s.to_string(), lo);
    for k in [Kernel::V6_1, Kernel::V6_12] {
        assert_eq!(
            locked(k),
            vec![
                v("200002201000-200002202000", true),
                v("200003600000-200003601000", true),
                v("200003601000-200003602000", false),
                v("200003602000-200003603000", true),
            ],
            "{k}"
        );
    }
    assert_eq!(
        locked(Kernel::V6_18),
        vec![v("200002201000-200002202000", true), v("200003600000-200003603000", false)]
    );
}

#[test]
fn a_locked_mapping_grown_by_a_move_is_populated_on_every_kernel() {
    for k in [Kernel::V6_1, Kernel::V6_12, Kernel::V6_18] {
        let present = pages("locked_grow_move_populates", k, 1).iter().map(|p| p.0).collect::<Vec<_>>();
        assert_eq!(present, vec![0x2000_0077_4000, 0x2000_0077_5000], "{k}");
    }
}

/// From 6.13 (c7fc0366c656, backported to 6.12.y) an extending ftruncate zeroes the old EOF
/// page from the old size on: f2's tag written through the mapping keeps its first 4 bytes,
/// and f1's old EOF page (a hole) gets a folio not up to date, which fault-around skips.
#[test]
fn an_extending_truncate_zeroes_the_old_eof_page_from_6_13() {
    let last = |k| {
        let steps = run("ext4_truncate_up_zeroes_eof", k);
        let p = steps.last().expect("steps").procs[&anonmm::types::Pid(1)].clone();
        let tag = p.pages.iter().find(|pg| pg.addr == 0x2000_002b_d000).expect("f2's page").tag;
        let old_eof_mapped = p.pages.iter().any(|pg| pg.addr == 0x2000_01c1_c000);
        (tag, old_eof_mapped, p.pages.len())
    };
    assert_eq!(last(Kernel::V6_1), (0xf2_0000_02bd, true, 13));
    for k in [Kernel::V6_12, Kernel::V6_18] {
        assert_eq!(last(k), (0x2bd, false, 12), "{k}");
    }
}

/// smaps names VM_LOCKONFAULT `lf` from 6.2 (8614d6c5eda0); 6.1 prints `??`.
#[test]
fn smaps_names_lockonfault_from_6_2() {
    let flags = |k| {
        let script = parse_file(std::path::Path::new("tests/kernels/smaps_lockonfault_mnemonic.strace"))
            .expect("parses");
        let opts = RunOptions {
            check: true,
            smaps: true,
            config: Config { kernel: k, ..Config::default() },
            ..Default::default()
        };
        let steps = run_script(&script, &opts).expect("runs").steps;
        steps.last().expect("steps").procs[&anonmm::types::Pid(1)].smaps[0].vm_flags.join(" ")
    };
    assert!(flags(Kernel::V6_1).contains("lo ??"), "{}", flags(Kernel::V6_1));
    for k in [Kernel::V6_12, Kernel::V6_18] {
        assert!(flags(k).contains("lo lf"), "{k}: {}", flags(k));
    }
}

/// From 6.12 (74207de2ba10, backported) fault-around whose first cached folio is the file's
/// last page maps nothing without a PTE table; 6.1 installs the table and maps it, even for a
/// fault beyond EOF that then raises SIGBUS.
#[test]
fn fault_around_maps_the_last_page_before_sigbus_only_on_6_1() {
    let last = |name, k, pid| {
        let steps = run(name, k);
        let s = steps.last().expect("steps");
        let p = &s.procs[&anonmm::types::Pid(pid)];
        (s.result.clone(), p.pages.iter().map(|pg| pg.addr).collect::<Vec<_>>())
    };
    let cases: [(&str, u32, &[u64]); 4] = [
        ("fault_around_checks_i_size", 2, &[0x2000_02bc_9000]),
        ("fault_around_checks_i_size_after_mremap", 4, &[0x2000_006d_2000]),
        ("fault_around_checks_i_size_after_pin", 1, &[0x2000_01b1_6000, 0x2000_029a_0000]),
        ("fault_around_checks_i_size_readahead_eof", 1, &[0x2000_0261_0000]),
    ];
    for (name, pid, on_6_1) in cases {
        let (r61, p61) = last(name, Kernel::V6_1, pid);
        assert_eq!(r61, "= SIGBUS", "{name}");
        for a in on_6_1 {
            assert!(p61.contains(a), "{name}: {a:#x} mapped on 6.1");
        }
        for k in [Kernel::V6_12, Kernel::V6_18] {
            let (r, p) = last(name, k, pid);
            assert_eq!(r, "= SIGBUS", "{name} {k}");
            assert_eq!(p.len() + 1, p61.len(), "{name} {k}: one page fewer than on 6.1");
            assert!(!p.contains(on_6_1.last().unwrap()), "{name} {k}");
        }
    }
}

/// Before 6.17 a thread's userfaultfd registration can be undone through another userfaultfd
/// of the same mm: the page merges back into its VMA. 6.18 answers EINVAL.
#[test]
fn unregistering_through_another_userfaultfd_before_6_17() {
    for k in [Kernel::V6_1, Kernel::V6_12] {
        let (r, v) = outcome("uffd_unregister_same_ctx", k, 10);
        assert_eq!(r, "= 0", "{k}");
        assert_eq!(v, vmas(&["200000543000-200000548000"; 2]), "{k}: one VMA, seen by both threads");
    }
    let (r, v) = outcome("uffd_unregister_same_ctx", Kernel::V6_18, 10);
    assert_eq!(r, "= -1 EINVAL (Invalid argument)");
    let apart = ["200000543000-200000547000", "200000547000-200000548000"];
    assert_eq!(v, vmas(&[apart, apart].concat()));
}

/// Before 6.12 mmap_region checks next first and then prev with next's anon_vma: an
/// unfaulted prev refuses a range that joins a faulted next. From 6.12 all three merge.
#[test]
fn mmap_joins_only_a_faulted_next_beside_an_unfaulted_prev_before_6_12() {
    let (r, v) = outcome("mmap_merge_new_range", Kernel::V6_1, 11);
    assert_eq!(r, "= 0x20000019e000");
    assert_eq!(v, vmas(&["200000125000-20000019e000", "20000019e000-2000001a5000"]));
    for k in [Kernel::V6_12, Kernel::V6_18] {
        let (r, v) = outcome("mmap_merge_new_range", k, 11);
        assert_eq!(r, "= 0x20000019e000", "{k}");
        assert_eq!(v, vmas(&["200000125000-2000001a5000"]), "{k}");
    }
}

/// Before 6.9 MADV_PAGEOUT splits any large folio whose page at hand is mapped once and leaves
/// the PMD at a shared one: the DONTFORK page of a fork-shared THP is paged out on 6.1 only.
#[test]
fn pageout_splits_a_shared_thp_at_its_unshared_page_before_6_9() {
    let state = |k| {
        let steps = run("madvise_batches_large_folios", k);
        let p = &steps.last().expect("steps").procs[&anonmm::types::Pid(1)];
        let kind = |a: u64| p.pages.iter().find(|pg| pg.addr == a).map(|pg| pg.page);
        (kind(0x2000_0171_5000), kind(0x2000_0171_6000))
    };
    let (dontfork, next) = state(Kernel::V6_1);
    assert_eq!(dontfork, Some(anonmm::snapshot::PageName::Swap));
    assert!(matches!(next, Some(anonmm::snapshot::PageName::Page(_))), "the shared pages stay");
    for k in [Kernel::V6_12, Kernel::V6_18] {
        let (dontfork, next) = state(k);
        assert!(matches!(dontfork, Some(anonmm::snapshot::PageName::Page(_))), "{k}: left alone");
        assert!(matches!(next, Some(anonmm::snapshot::PageName::Page(_))), "{k}");
    }
}

/// MADV_COLLAPSE of a PMD of none PTEs in a userfaultfd-armed VMA (SCAN_EXCEED_NONE_PTE):
/// EINVAL on 6.1, EBUSY from 6.12 (`madvise_collapse_errno`).
#[test]
fn collapse_of_none_ptes_under_uffd_is_ebusy_after_6_1() {
    let (r, _) = outcome("collapse_none_pte_ebusy", Kernel::V6_1, 10);
    assert_eq!(r, "= -1 EINVAL (Invalid argument)");
    for k in [Kernel::V6_12, Kernel::V6_18] {
        let (r, _) = outcome("collapse_none_pte_ebusy", k, 10);
        assert_eq!(r, "= -1 EBUSY (Device or resource busy)", "{k}");
    }
}

/// MADV_PAGEOUT of a PMD-mapped THP's first page, which only this PMD maps while a fork child
/// maps the rest by PTEs: 6.1 asks the head page's mapcount (1), splits the THP and pages the
/// page out; 6.12 and 6.18 see a folio mapped shared and leave it.
#[test]
fn pageout_of_a_thp_asks_the_head_page_on_6_1() {
    let first = |k| {
        let steps = run("madvise_thp_shared_by_folio", k);
        let p = &steps.last().expect("steps").procs[&anonmm::types::Pid(2)];
        p.pages.iter().find(|pg| pg.addr == 0x2000_01c0_0000).map(|pg| pg.page)
    };
    assert_eq!(first(Kernel::V6_1), Some(anonmm::snapshot::PageName::Swap));
    for k in [Kernel::V6_12, Kernel::V6_18] {
        assert!(matches!(first(k), Some(anonmm::snapshot::PageName::Page(_))), "{k}: left alone");
    }
}

/// MADV_PAGEOUT of a zero-filled page (populated, never written): from 6.12 the swap zeromap
/// frees it at once, so mlock's swap-in maps a new folio, not mlocked, and the last
/// MADV_PAGEOUT (after MREMAP_DONTUNMAP unlocked the VMA on 6.18) pages it out while the
/// mlocked pages stay. 6.1 keeps the folio in the swap cache and the swap-in mlocks it; on
/// 6.12 the VMA stays locked around the moved page, so MADV_PAGEOUT refuses (EINVAL).
#[test]
fn zero_filled_folio_is_freed_at_pageout_from_6_12() {
    use anonmm::snapshot::PageName;
    let at = |k, addr: u64| {
        let steps = run("swap_zeromap_frees_zero_folio", k);
        let p = &steps.last().expect("steps").procs[&anonmm::types::Pid(1)];
        p.pages.iter().find(|pg| pg.addr == addr).map(|pg| pg.page)
    };
    assert_eq!(at(Kernel::V6_18, 0x2000_02e0_0000), Some(PageName::Swap), "the new folio is paged out");
    assert!(matches!(at(Kernel::V6_18, 0x2000_02e0_2000), Some(PageName::Page(_))), "PG_mlocked: kept");
    assert!(
        matches!(at(Kernel::V6_1, 0x2000_02e0_0000), Some(PageName::Page(_))),
        "6.1: the old folio, mlocked"
    );
    assert_eq!(
        outcome("swap_zeromap_frees_zero_folio", Kernel::V6_12, 14).0,
        "= -1 EINVAL (Invalid argument)"
    );
    assert!(matches!(at(Kernel::V6_12, 0x2000_02e0_0000), Some(PageName::Page(_))), "6.12: locked VMA");
}

/// Whether the page at `addr` of pid 1 is swapped out after the last step.
fn swapped(name: &str, kernel: Kernel, addr: u64) -> bool {
    use anonmm::snapshot::PageName;
    let steps = run(name, kernel);
    let p = &steps.last().expect("steps").procs[&anonmm::types::Pid(1)];
    let page = p.pages.iter().find(|pg| pg.addr == addr).map(|pg| pg.page);
    assert!(page.is_some(), "{name} {kernel}: nothing at {addr:#x}");
    page == Some(PageName::Swap)
}

#[test]
fn exit_leaves_the_lazyfree_batch_undrained_from_6_14() {
    // The parent's write copies the page the child queued: the copy is swapped out.
    assert!(swapped("zap_skips_lru_drain", Kernel::V6_18, 0x2000_0120_0000));
    for k in [Kernel::V6_1, Kernel::V6_12] {
        assert!(
            !swapped("zap_skips_lru_drain", k, 0x2000_0120_0000),
            "{k}: the exit drained, the folio reused"
        );
    }
}

#[test]
fn lazyfree_batch_holds_15_folios_before_6_6() {
    let pages = [0x2000_0120_0000, 0x2000_0120_e000, 0x2000_0120_f000, 0x2000_0121_3000];
    for k in [Kernel::V6_12, Kernel::V6_18] {
        for a in pages {
            assert!(swapped("folio_batch_31", k, a), "{k} {a:#x}: still queued, copied");
        }
    }
    let on_61: Vec<bool> = pages.iter().map(|&a| swapped("folio_batch_31", Kernel::V6_1, a)).collect();
    assert_eq!(on_61, [false, false, true, true], "6.1: the first 15 moved at the 15th");
}
