//! Oracle tests on the running kernel, with scripts built by hand. When the oracle is not
//! available (not root, …) each test prints one "skipped" line and passes.

use crate::abi::*;
use crate::errno::{Errno, Signal};
use crate::script::{Call, Expect, Script, Step};
use crate::snapshot::{PageName, StepView, touch_tag};
use crate::types::Pid;

use super::{OracleError, run_native};

const A: u64 = 0x2000_0000_0000;
const RW: u64 = PROT_READ | PROT_WRITE;
const ANON: u64 = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED;

macro_rules! skip_unless_available {
    () => {
        if let Err(e) = super::available() {
            // Past the harness's capture: a skipped test must not pass silently.
            let _ = std::io::Write::write_fmt(
                &mut std::io::stderr(),
                format_args!("oracle test: SKIPPED (kernel oracle unavailable): {e}\n"),
            );
            return;
        }
    };
}

fn st(line: usize, pid: u32, call: Call, expect: Option<Expect>) -> Step {
    Step { line, pid: Pid(pid), text: format!("{call:?}"), call, expect }
}

fn script(steps: Vec<Step>) -> Script {
    Script { path: "test".into(), steps, ..Script::default() }
}

fn mmap(addr: u64, len: u64, prot: u64, flags: u64) -> Call {
    Call::Mmap { addr, len, prot, flags, fd: -1, off: 0 }
}

fn touch(addr: u64, len: u64, write: bool) -> Call {
    Call::Touch { addr, len, write }
}

fn pages(v: &StepView, pid: u32) -> Vec<(u64, PageName, bool, u64)> {
    v.procs[&Pid(pid)].pages.iter().map(|p| (p.addr, p.page, p.exclusive, p.tag)).collect()
}

#[test]
fn fork_then_child_write_cows_one_page() {
    skip_unless_available!();
    let s = script(vec![
        st(1, 1, mmap(A, 0x4000, RW, ANON), None),
        st(2, 1, touch(A, 0x4000, true), None),
        st(3, 1, Call::Fork { vfork: false }, Some(Expect::Value(2))),
        st(4, 2, touch(A + 0x1000, 0x1000, true), None),
    ]);
    let v = run_native(&s).expect("oracle run");
    assert_eq!(v.len(), 4);
    assert_eq!(v[0].result, "= 0x200000000000");
    assert_eq!(v[0].procs[&Pid(1)].maps, vec!["200000000000-200000004000 rw-p 00000000 00:00 0 "]);
    assert_eq!(v[2].result, "= 2");
    // After the fork: both share all four pages, none exclusive.
    let (p1, p2) = (pages(&v[2], 1), pages(&v[2], 2));
    assert_eq!(p1.len(), 4);
    for (a, b) in p1.iter().zip(&p2) {
        assert_eq!(a, b);
        assert!(!a.2, "shared after fork: {a:?}");
    }
    let last = &v[3];
    let (p1, p2) = (pages(last, 1), pages(last, 2));
    assert_eq!(p1.len(), 4);
    assert_eq!(p2.len(), 4);
    for i in 0..4 {
        let addr = A + (i << 12);
        if i == 1 {
            // The child has its own copy with the new tag; the parent's page is mapped once
            // again, so pagemap reports it exclusive.
            assert_ne!(p1[1].1, p2[1].1);
            assert_eq!(p2[1], (addr, p2[1].1, true, touch_tag(4, addr)));
            assert_eq!(p1[1], (addr, p1[1].1, true, touch_tag(2, addr)));
        } else {
            assert_eq!(p1[i as usize], p2[i as usize]);
            assert_eq!(p1[i as usize], (addr, p1[i as usize].1, false, touch_tag(2, addr)));
        }
    }
    // Names: pid 1's pages first, 1..=4 in address order, then the child's copy is 5.
    assert_eq!(p1.iter().map(|p| p.1).collect::<Vec<_>>(), (1..=4).map(PageName::Page).collect::<Vec<_>>());
    assert_eq!(p2[1].1, PageName::Page(5));
}

#[test]
fn exit_group_ends_the_child_and_pages_become_exclusive() {
    skip_unless_available!();
    let s = script(vec![
        st(1, 1, mmap(A, 0x2000, RW, ANON), None),
        st(2, 1, touch(A, 0x2000, true), None),
        st(3, 1, Call::Fork { vfork: false }, None),
        st(4, 2, Call::ExitGroup { code: 0 }, None),
    ]);
    let v = run_native(&s).expect("oracle run");
    assert_eq!(v[2].result, "= 2");
    assert_eq!(v[2].procs.len(), 2);
    assert_eq!(v[3].result, "= ?");
    assert_eq!(v[3].procs.len(), 1);
    assert!(pages(&v[3], 1).iter().all(|p| p.2));
}

#[test]
fn read_touch_maps_the_zero_page() {
    skip_unless_available!();
    let s = script(vec![
        st(1, 1, mmap(A, 0x3000, RW, ANON), None),
        st(2, 1, touch(A, 0x2000, false), None),
        st(3, 1, touch(A + 0x1000, 8, true), None),
    ]);
    let v = run_native(&s).expect("oracle run");
    assert_eq!(
        pages(&v[1], 1),
        vec![(A, PageName::Page(0), false, 0), (A + 0x1000, PageName::Page(0), false, 0)]
    );
    assert_eq!(
        pages(&v[2], 1),
        vec![
            (A, PageName::Page(0), false, 0),
            (A + 0x1000, PageName::Page(1), true, touch_tag(3, A + 0x1000))
        ]
    );
}

#[test]
fn faulting_touches_stop_at_the_first_fault() {
    skip_unless_available!();
    let s = script(vec![
        st(1, 1, mmap(A, 0x3000, RW, ANON), None),
        st(2, 1, Call::Mprotect { addr: A + 0x2000, len: 0x1000, prot: PROT_READ }, None),
        // The last page is read-only: the first two are written, then SIGSEGV.
        st(3, 1, touch(A, 0x3000, true), None),
        // Unmapped.
        st(4, 1, touch(A + 0x10000, 1, false), None),
        // Write-only can be read on x86_64.
        st(5, 1, Call::Mprotect { addr: A, len: 0x1000, prot: PROT_WRITE }, None),
        st(6, 1, touch(A, 0x1000, false), None),
        // Guard marker.
        st(7, 1, Call::Madvise { addr: A + 0x1000, len: 0x1000, advice: MADV_GUARD_INSTALL }, None),
        st(8, 1, touch(A + 0x1000, 0x1000, false), None),
    ]);
    let v = run_native(&s).expect("oracle run");
    assert_eq!(v[2].result, "= SIGSEGV");
    assert_eq!(
        pages(&v[2], 1),
        vec![
            (A, PageName::Page(1), true, touch_tag(3, A)),
            (A + 0x1000, PageName::Page(2), true, touch_tag(3, A + 0x1000))
        ]
    );
    assert_eq!(v[3].result, "= SIGSEGV");
    assert_eq!(v[5].result, "= 0");
    assert_eq!(v[6].result, "= 0");
    assert_eq!(v[7].result, "= SIGSEGV");
    // The touched page stays written; the guard marker shows as one (PM_GUARD_REGION).
    assert_eq!(
        pages(&v[7], 1),
        vec![(A, PageName::Page(1), true, touch_tag(3, A)), (A + 0x1000, PageName::Guard, false, 0)]
    );
}

#[test]
fn protnone_pages_keep_their_tags() {
    skip_unless_available!();
    let s = script(vec![
        st(1, 1, mmap(A, 0x1000, RW, ANON), None),
        st(2, 1, touch(A, 0x1000, true), None),
        st(3, 1, Call::Mprotect { addr: A, len: 0x1000, prot: PROT_NONE }, None),
    ]);
    let v = run_native(&s).expect("oracle run");
    assert_eq!(v[2].procs[&Pid(1)].maps, vec!["200000000000-200000001000 ---p 00000000 00:00 0 "]);
    assert_eq!(pages(&v[2], 1), vec![(A, PageName::Page(1), true, touch_tag(2, A))]);
}

#[test]
fn files_and_shmem_are_normalised() {
    skip_unless_available!();
    let s = script(vec![
        st(
            1,
            1,
            Call::Openat { dirfd: AT_FDCWD, path: "unused".into(), flags: O_RDWR | O_CREAT, mode: 0o644 },
            Some(Expect::Value(3)),
        ),
        st(
            2,
            1,
            Call::Openat { dirfd: AT_FDCWD, path: "data".into(), flags: O_RDWR | O_CREAT, mode: 0o644 },
            Some(Expect::Value(4)),
        ),
        st(3, 1, Call::Ftruncate { fd: 4, len: 0x1800 }, None),
        st(
            4,
            1,
            Call::Mmap { addr: A, len: 0x3000, prot: RW, flags: MAP_SHARED | MAP_FIXED, fd: 4, off: 0 },
            None,
        ),
        st(5, 1, touch(A, 0x2000, true), None),
        st(6, 1, touch(A + 0x2000, 0x1000, false), None),
        st(7, 1, mmap(A + 0x10000, 0x2000, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED), None),
        st(8, 1, touch(A + 0x12000, 0x1000, false), None),
        st(9, 1, Call::SetVmaAnonName { addr: A + 0x10000, len: 0x1000, name: Some("x".into()) }, None),
        st(10, 1, Call::Close { fd: 3 }, None),
        st(11, 1, Call::Dup { fd: 4 }, None),
        st(12, 1, Call::Close { fd: 99 }, None),
    ]);
    let v = run_native(&s).expect("oracle run");
    assert_eq!(v[0].result, "= 3");
    assert_eq!(v[1].result, "= 4");
    assert_eq!(
        v[4].procs[&Pid(1)].maps,
        vec!["200000000000-200000003000 rw-s 00000000 00:00 2                          data"]
    );
    assert_eq!(v[5].result, "= SIGBUS");
    assert_eq!(
        v[6].procs[&Pid(1)].maps[1],
        "200000010000-200000012000 rw-s 00000000 00:01 1                          /dev/zero (deleted)"
    );
    assert_eq!(v[7].result, "= SIGSEGV");
    // This kernel is built without CONFIG_ANON_VMA_NAME: naming fails with EINVAL.
    assert_eq!(v[8].result, "= -1 EINVAL (Invalid argument)");
    assert_eq!(v[8].procs, v[7].procs);
    assert_eq!(v[10].result, "= 3");
    assert_eq!(v[11].result, format!("= -1 EBADF ({})", Errno::EBADF.message()));
}

#[test]
fn refuses_what_cannot_be_compared() {
    skip_unless_available!();
    let refused = |c: Call| {
        let r = run_native(&script(vec![st(1, 1, c, None)]));
        assert!(matches!(r, Err(OracleError::Refused { line: 1, .. })), "{r:?}");
    };
    refused(mmap(0, 0x1000, RW, MAP_PRIVATE | MAP_ANONYMOUS));
    refused(mmap(0x7000_0000_0000, 0x1000, RW, ANON));
    refused(Call::Munmap { addr: WINDOW_END_MINUS_PAGE, len: 0x2000 });
    refused(Call::Migrate { addr: A, len: 0x1000 });
    refused(Call::MigrateDone { addr: A, len: 0x1000 });
    // A call by a process that does not exist.
    let r = run_native(&script(vec![
        st(1, 1, mmap(A, 0x1000, RW, ANON), None),
        st(2, 7, Call::Close { fd: 0 }, None),
    ]));
    assert!(matches!(r, Err(OracleError::BadInput { line: 2, .. })), "{r:?}");
}

/// vfork: the child writes the parent's page (no copy-on-write: the parent sees the tag), and
/// a parent's step while it sleeps is bad input. execve: the window empties, the process keeps
/// its pid and its exec'd worker serves the next call.
#[test]
fn vfork_borrows_the_mm_and_execve_replaces_it() {
    skip_unless_available!();
    let touch = |w| Call::Touch { addr: A, len: 0x1000, write: w };
    let s = script(vec![
        st(1, 1, mmap(A, 0x2000, RW, ANON), None),
        st(2, 1, touch(true), None),
        st(3, 1, Call::Fork { vfork: true }, Some(Expect::Value(2))),
        st(4, 2, touch(true), None),
        st(5, 2, Call::Execve { path: "/bin/true".into() }, None),
        st(6, 2, mmap(A, 0x1000, RW, ANON), None),
        st(7, 1, touch(false), None),
    ]);
    let v = run_native(&s).expect("runs");
    assert_eq!(v[2].result, "= 2");
    // Step 4's write landed in the page both see, still exclusive (never shared by fork).
    let p1 = &v[3].procs[&Pid(1)].pages[0];
    assert_eq!(v[3].procs[&Pid(2)].pages[0], *p1);
    assert!(p1.exclusive);
    assert_eq!(p1.tag, touch_tag(4, A));
    assert_eq!(v[4].result, "= 0");
    assert!(v[4].procs[&Pid(2)].maps.is_empty(), "{:?}", v[4].procs[&Pid(2)]);
    assert_eq!(v[4].procs[&Pid(1)].maps.len(), 1);
    assert_eq!(v[5].procs[&Pid(2)].maps.len(), 1);
    assert_eq!(v[6].result, "= 0");
    let asleep = run_native(&script(vec![
        st(1, 1, Call::Fork { vfork: true }, Some(Expect::Value(2))),
        st(2, 1, mmap(A, 0x1000, RW, ANON), None),
    ]));
    assert!(matches!(asleep, Err(OracleError::BadInput { line: 2, .. })), "{asleep:?}");
}

const WINDOW_END_MINUS_PAGE: u64 = super::WINDOW_END - 0x1000;

#[test]
fn errors_are_errnos_and_signals_are_reported() {
    skip_unless_available!();
    let s = script(vec![
        st(1, 1, Call::Munmap { addr: A + 1, len: 0x1000 }, None),
        st(2, 1, mmap(A, 0x1000, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE), None),
        st(3, 1, mmap(A, 0x1000, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE), None),
    ]);
    let v = run_native(&s).expect("oracle run");
    assert_eq!(v[0].result, "= -1 EINVAL (Invalid argument)");
    assert_eq!(v[1].result, "= 0x200000000000");
    assert_eq!(v[2].result, "= -1 EEXIST (File exists)");
    let _ = Signal::SIGBUS;
}

#[test]
fn a_large_mapping_is_read_in_bulk() {
    skip_unless_available!();
    let len = 256 << 20;
    let s = script(vec![
        st(1, 1, mmap(A, len, RW, ANON | MAP_NORESERVE), None),
        st(2, 1, touch(A, len, true), None),
        st(3, 1, Call::Fork { vfork: false }, None),
    ]);
    let t = std::time::Instant::now();
    let v = run_native(&s).expect("oracle run");
    eprintln!("256 MiB, 3 steps: {:?}", t.elapsed());
    assert_eq!(pages(&v[2], 2).len(), (len >> 12) as usize);
}

const COW: &str = "\
1 mmap(0x200000000000, 16384, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED, -1, 0) = 0x200000000000
1 touch(0x200000000000, 16384, \"w\") = 0
1 fork() = 7
7 touch(0x200000001000, 4096, \"w\") = 0
7 mprotect(0x200000002000, 4096, PROT_READ) = 0
7 touch(0x200000002000, 4096, \"w\") = SIGSEGV
7 exit_group(0) = ?
";

#[test]
fn parsed_script_runs_and_matches_its_recorded_results() {
    skip_unless_available!();
    let s = crate::script::parse_str("cow.strace", COW).expect("parse");
    let v = super::run_native_steps(&s, false).expect("oracle run");
    for (step, got) in s.steps.iter().zip(&v) {
        assert_eq!(step.expect, Some(got.got), "line {}", step.line);
    }
    assert_eq!(v[2].view.procs.keys().map(|p| p.0).collect::<Vec<_>>(), vec![1, 7]);
    assert_eq!(
        v[4].view.procs[&Pid(7)].maps,
        vec![
            "200000000000-200000002000 rw-p 00000000 00:00 0 ",
            "200000002000-200000003000 r--p 00000000 00:00 0 ",
            "200000003000-200000004000 rw-p 00000000 00:00 0 ",
        ]
    );
    assert_eq!(v[6].view.procs.keys().map(|p| p.0).collect::<Vec<_>>(), vec![1]);
    assert!(pages(&v[6].view, 1).iter().all(|p| p.2));
}

#[test]
fn cmd_run_reports_mismatches() {
    skip_unless_available!();
    let dir = std::env::temp_dir().join(format!("anonmm-oracle-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let good = dir.join("good.strace");
    std::fs::write(&good, COW).expect("write");
    assert_eq!(super::cmd_run(&good, false, false, crate::kernel::Kernel::V6_18, false), 0);
    let bad = dir.join("bad.strace");
    std::fs::write(&bad, COW.replace("= SIGSEGV", "= 0")).expect("write");
    assert_eq!(super::cmd_run(&bad, true, false, crate::kernel::Kernel::V6_18, false), 1);
    let refused = dir.join("refused.strace");
    std::fs::write(&refused, "1 mmap(NULL, 4096, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x5555\n")
        .expect("write");
    assert_eq!(super::cmd_run(&refused, false, false, crate::kernel::Kernel::V6_18, false), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn diff_step_shows_only_what_differs() {
    use crate::snapshot::{PageView, ProcView};
    use std::collections::BTreeMap;
    let view = |excl: bool, result: &str| StepView {
        line: 4,
        pid: Pid(1),
        call: "touch(0x200000000000, 4096, \"w\")".into(),
        result: result.into(),
        procs: BTreeMap::from([(
            Pid(1),
            ProcView {
                maps: vec!["200000000000-200000001000 rw-p 00000000 00:00 0 ".into()],
                pages: vec![PageView { addr: A, page: PageName::Page(1), exclusive: excl, tag: 5 }],
                smaps: Vec::new(),
                internal: None,
            },
        )]),
    };
    assert_eq!(super::cli::diff_step(&view(true, "= 0"), &view(true, "= 0")), "");
    let d = super::cli::diff_step(&view(true, "= 0"), &view(false, "= SIGSEGV"));
    assert!(d.contains("result: model = 0 | kernel = SIGSEGV"), "{d}");
    assert!(d.contains("pid 1 pages:\n    0x200000000000: excl model 1, kernel 0\n"), "{d}");
    assert!(!d.contains("maps"), "{d}");
}
