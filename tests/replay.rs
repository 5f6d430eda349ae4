//! Replay of real traces: the replay semantics on small hand-made traces, the excerpts in
//! tests/data with exact numbers, the shared recordings when present, and the report formats.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anonmm::import::read_trace;
use anonmm::replay::{DivClass, ReplayOutcome, replay_script};
use anonmm::run::{RunOptions, run_script};
use anonmm::script::{parse_file, parse_str};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

fn replay_path(path: &Path) -> ReplayOutcome {
    let (script, _) = read_trace(path).unwrap_or_else(|e| panic!("{e}"));
    replay_script(&script, &RunOptions { check: true, ..Default::default() }, 1000, &mut |_| {})
        .unwrap_or_else(|e| panic!("{e}"))
}

fn replay_text(text: &str) -> ReplayOutcome {
    let script = parse_str("t.strace", text).unwrap_or_else(|e| panic!("{e}"));
    replay_script(&script, &RunOptions { check: true, ..Default::default() }, 1000, &mut |_| {})
        .unwrap_or_else(|e| panic!("{e}"))
}

/// (placement, file, trace, model)
fn classes(o: &ReplayOutcome) -> (u64, u64, u64, u64) {
    let c = |k| o.replay.count(k);
    (c(DivClass::Placement), c(DivClass::File), c(DivClass::Trace), c(DivClass::Model))
}

fn anonmm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_anonmm")).args(args).output().unwrap()
}

#[test]
fn files_named_by_the_trace_exist_with_the_recorded_descriptor() {
    let o = replay_text(
        "1 openat(AT_FDCWD, \"/usr/lib/libc.so.6\", O_RDONLY|O_CLOEXEC) = 7\n\
         1 openat(AT_FDCWD, \"/nonexistent\", O_RDONLY) = -1 ENOENT (No such file or directory)\n\
         1 mmap(0x200000000000, 65536, PROT_READ, MAP_PRIVATE|MAP_FIXED, 7, 0) = 0x200000000000\n\
         1 touch(0x20000000f000, 4096, \"r\")\n\
         1 close(7) = 0\n\
         1 mmap(0x200000100000, 8192, PROT_READ, MAP_SHARED|MAP_FIXED, 9, 0) = 0x200000100000\n",
    );
    // fd 7, not the model's 3, is what close(7) and mmap(7) find: one `file` divergence for
    // the descriptor number, one for the untraced fd 9; the failed open is not run.
    assert_eq!(classes(&o), (0, 2, 0, 0), "{:?}", o.replay.examples);
    // The file, the placeholder behind the unseen descriptors 3 to 6, the untraced fd 9.
    assert_eq!(o.replay.files_created, 3);
    assert_eq!(o.vmas_end, (2, 0));
    let d = &o.replay.examples[0];
    assert_eq!((d.line, d.expected.as_str()), (1, "= 7"));
}

#[test]
fn a_fault_beyond_eof_is_served_when_the_trace_shows_no_sigbus() {
    let o = replay_text(
        "1 openat(AT_FDCWD, \"data\", O_RDWR|O_CREAT, 0600) = 3\n\
         1 ftruncate(3, 4096) = 0\n\
         1 mmap(0x200000000000, 4096, PROT_READ, MAP_PRIVATE|MAP_FIXED, 3, 0) = 0x200000000000\n\
         1 mmap(0x200000001000, 4096, PROT_READ, MAP_PRIVATE|MAP_FIXED, 3, 0x10000) = 0x200000001000\n\
         1 touch(0x200000001000, 4096, \"r\")\n",
    );
    assert_eq!(classes(&o), (0, 0, 0, 0), "{:?}", o.replay.examples);
    assert!(o.replay.files_grown >= 1);
    // Outside replay the same fault is a SIGBUS (the recorded result is absent, so it is no
    // mismatch, but the file stays short).
    let s = parse_str(
        "t.strace",
        "1 openat(AT_FDCWD, \"data\", O_RDWR|O_CREAT, 0600) = 3\n\
         1 mmap(0x200000000000, 4096, PROT_READ, MAP_PRIVATE|MAP_FIXED, 3, 0x10000) = 0x200000000000\n\
         1 touch(0x200000000000, 4096, \"r\") = SIGBUS\n",
    )
    .unwrap();
    assert!(run_script(&s, &RunOptions::default()).unwrap().mismatches.is_empty());
}

#[test]
fn placement_is_replayed_at_the_recorded_address_and_counted() {
    let o = replay_text(
        "1 brk(NULL) = 0x560000001000\n\
         1 brk(0x560000022000) = 0x560000022000\n\
         1 mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000000000\n\
         1 touch(0x7f0000000000, 8192, \"w\")\n\
         1 mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7efffffe0000\n\
         1 mremap(0x7f0000000000, 8192, 65536, MREMAP_MAYMOVE) = 0x7f1000000000\n\
         1 touch(0x7f1000000000, 4096, \"r\")\n",
    );
    // brk base, two mmaps and the moving mremap: four placements, nothing else.
    assert_eq!(classes(&o), (4, 0, 0, 0), "{:?}", o.replay.examples);
    let got: Vec<(usize, &str, &str)> =
        o.replay.examples.iter().map(|d| (d.line, d.expected.as_str(), d.got.as_str())).collect();
    assert_eq!(got[0], (1, "= 0x560000001000", "= 0x200003000000"));
    assert_eq!(got[1], (3, "= 0x7f0000000000", "= 0x7ffff7ffd000"));
    // The mremap moved the written pages: their PTEs went along.
    assert_eq!(o.stats.ptes_moved, 2);
    // brk VMA, the second mmap, the moved VMA.
    assert_eq!(o.vmas_end, (3, 3));
}

#[test]
fn the_thp_file_alignment_regression_passes() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/regressions/file_mmap_thp_aligned.strace");
    let s = parse_file(&path).unwrap();
    let r = run_script(&s, &RunOptions { check: true, ..Default::default() }).unwrap();
    assert!(r.mismatches.is_empty(), "{:?}", r.mismatches);
}

#[test]
fn sort_excerpt_replays_with_exact_numbers() {
    let o = replay_path(&data("sort.excerpt.perf.txt"));
    // 137 calls and faults, and 18 records of the kernel's VMA after a call, all matching.
    assert_eq!(o.steps, 155);
    assert_eq!((o.replay.vma_records_checked, o.replay.vma_records_differ), (18, 0));
    assert_eq!((o.replay.processes, o.replay.threads), (1, 1));
    assert_eq!(o.vmas_end, (28, 10));
    assert_eq!(o.vmas_peak, (29, 11));
    // The brk base, and a 64 MiB mmap placed lower by the kernel because the excerpt cut the
    // locale archive's mmap that sat above it. Its close(2) closes stderr, as the kernel did.
    assert_eq!(classes(&o), (2, 0, 0, 0), "{:?}", o.replay.examples);
    let lines: Vec<(DivClass, usize)> = o.replay.examples.iter().map(|d| (d.class, d.line)).collect();
    assert_eq!(lines, [(DivClass::Placement, 24), (DivClass::Placement, 164)]);
    assert_eq!((o.stats.merges_attempted, o.stats.merges_done), (25, 3));
    assert_eq!(o.stats.faults, 76);
}

#[test]
fn python_excerpt_replays_with_exact_numbers() {
    let o = replay_path(&data("python.excerpt.perf.txt"));
    assert_eq!(o.steps, 178);
    assert_eq!((o.replay.processes, o.replay.threads), (2, 0));
    assert_eq!(o.vmas_end, (13, 5));
    assert_eq!(o.vmas_peak, (26, 10));
    // The excerpt cuts the exec whose memory the later faults touch: those are `trace`, not
    // the model's.
    assert_eq!(classes(&o), (0, 8, 131, 0), "{:?}", o.replay.examples);
}

#[test]
fn shared_traces_replay_without_model_divergences() {
    // The developers' recordings, beside the repository; a user's clone has none.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/traces");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        skipped("shared_traces_replay_without_model_divergences", &format!("no {}", dir.display()));
        return;
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".zst"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        skipped("shared_traces_replay_without_model_divergences", &format!("no traces in {}", dir.display()));
        return;
    }
    for p in &paths {
        let (script, _) = read_trace(p).unwrap_or_else(|e| panic!("{e}"));
        let o = replay_script(&script, &RunOptions::default(), 8, &mut |_| {})
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_eq!(o.steps, script.steps.len());
        assert!(o.invariant.is_none());
        // Every model divergence is listed (up to 8).
        let listed = o.replay.examples.iter().filter(|d| d.class == DivClass::Model).count() as u64;
        assert_eq!(listed, o.replay.count(DivClass::Model).min(8), "{}", p.display());
        assert_eq!(
            o.replay.count(DivClass::Model),
            0,
            "{}: model divergences (see `anonmm replay --examples 50`): {:#?}",
            p.display(),
            o.replay.examples
        );
        assert_eq!(o.replay.count(DivClass::Trace), 0, "{}", p.display());
        assert!(o.vmas_peak.0 >= o.vmas_end.0 && o.vmas_peak.0 > 0);
        // Streamed into the replay (as `anonmm replay --policy P` runs), the same outcome.
        let (streamed, _) = anonmm::replay::replay_trace(p, &RunOptions::default(), 8, &mut |_| {})
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_eq!(format!("{streamed:?}"), format!("{o:?}"), "{}", p.display());
    }
}

#[test]
fn report_formats() {
    let (sort, py) = (data("sort.excerpt.perf.txt"), data("python.excerpt.perf.txt"));
    let (sort, py) = (sort.to_str().unwrap(), py.to_str().unwrap());

    let out = anonmm(&["replay", sort, py, "--format", "markdown"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let md = String::from_utf8(out.stdout).unwrap();
    let mut lines = md.lines();
    assert_eq!(
        lines.next().unwrap(),
        "| trace | policy | steps | processes | VMAs end/peak | anon VMAs end/peak | merges done/attempted \
         | merges refused | splits | faults | COW copies/reuses | moved PTEs/PMDs | relocations done/attempted/undone | folios rewritten/pages copied | placement | file | trace \
         | model | VMA records checked | VMA records differ | import problems | time (s) |"
    );
    assert!(lines.next().unwrap().starts_with("|---|"));
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("| sort.excerpt.perf.txt | kernel | 155 | 1 | 28/29 | 10/11 | 3/25 |")
    );
    assert!(md.contains("### sort.excerpt.perf.txt (kernel): first divergences"));

    let out = anonmm(&["replay", sort, "--format", "csv", "--policy", "all"]);
    assert_eq!(out.status.code(), Some(0));
    let csv = String::from_utf8(out.stdout).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    assert_eq!(header[..5], ["trace", "policy", "steps", "processes", "threads"]);
    for col in ["NOMERGE_ANON_VMA", "placement", "file", "trace_gaps", "model", "seconds"] {
        assert!(header.contains(&col), "{col}");
    }
    let row: Vec<&str> = csv.lines().nth(1).unwrap().split(',').collect();
    assert_eq!(row.len(), header.len());
    assert_eq!(row[..4], ["sort.excerpt.perf.txt", "kernel", "155", "1"]);

    let out = anonmm(&["replay", sort, py, "--format", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["trace_gaps"], 131);
    assert_eq!(rows[1]["model"], 0);
    assert_eq!(
        (rows[0]["vma_records_checked"].as_u64(), rows[0]["vma_records_differ"].as_u64()),
        (Some(18), Some(0))
    );
    assert_eq!(rows[0]["import_problems"], serde_json::json!([]));
    assert_eq!(rows[0]["examples"][0]["class"], "placement");
    assert!(rows[0]["merges_refused"]["NOMERGE_FLAGS"].as_u64().unwrap() > 0);

    // Text: piped, so no progress bar; a header and a row per trace.
    let out = anonmm(&["replay", sort]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("trace "));
    assert!(text.lines().nth(1).unwrap().starts_with("sort.excerpt.perf.txt  kernel  155"));
}

#[test]
fn bad_replay_input_exits_2_without_panicking() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("replay");
    std::fs::create_dir_all(&dir).unwrap();
    let junk = dir.join("junk.txt");
    std::fs::write(&junk, "this is no trace\n\0\u{1}garbage(((\n").unwrap();
    let zst = dir.join("bad.zst");
    std::fs::write(&zst, [0x28, 0xb5, 0x2f, 0xfd, 1, 2, 3]).unwrap();
    for args in [
        vec!["replay", "/nonexistent/trace.perf.txt"],
        vec!["replay", junk.to_str().unwrap()],
        vec!["replay", zst.to_str().unwrap()],
        vec!["replay", "--policy", "frob", "x"],
        vec!["replay", "--format", "xml", "x"],
        vec!["replay"],
    ] {
        let out = anonmm(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    // A good trace next to a bad one is still reported.
    let good = data("sort.excerpt.perf.txt");
    let out = anonmm(&["replay", "/nonexistent", good.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("sort.excerpt.perf.txt"));
}

#[test]
fn steps_of_unknown_processes_and_garbage_do_not_stop_a_replay() {
    // Pid 2 never forked: its steps are counted, not fatal.
    let o = replay_text(
        "1 mmap(0x200000000000, 4096, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED, -1, 0) = 0x200000000000\n\
         2 munmap(0x200000000000, 4096) = 0\n\
         1 munmap(0x200000000000, 4096) = 0\n\
         1 mprotect(0x300000000000, 4096, PROT_READ) = 0\n",
    );
    assert_eq!(classes(&o), (0, 0, 1, 1), "{:?}", o.replay.examples);
    assert_eq!(o.replay.examples.iter().find(|d| d.class == DivClass::Model).unwrap().got, "no such process");
}

/// A file named by an mmap more than 65,536 steps after its openat: the streamed import
/// has handed the openat on before it was final, says so, and `replay_trace` replays the
/// whole import instead: the same outcome as importing first.
#[test]
fn streamed_replay_of_a_late_naming_matches_the_whole_import() {
    let l = |e: &str| format!("            prog  5/5   100.000001: {e}\n");
    let mut text = l(
        "syscalls:sys_enter_mmap: addr: 0x0, len: 0x100000, prot: 0x3, flags: 0x22, fd: 0xffffffff, off: 0x0",
    );
    text += &l("syscalls:sys_exit_mmap: 0x7f0000000000");
    text += &l("syscalls:sys_enter_openat: dfd: 0xffffff9c, filename: 0x1, flags: 0x0, mode: 0x0");
    text += &l("syscalls:sys_exit_openat: 0x3");
    for i in 0..70_000u64 {
        let a = 0x7f0000000000u64 + (i % 256) * 4096;
        text += &l(&format!("exceptions:page_fault_user: address={a:#x} ip=0x1 error_code=0x6"));
    }
    text += &l("syscalls:sys_enter_mmap: addr: 0x0, len: 0x1000, prot: 0x1, flags: 0x2, fd: 0x3, off: 0x0");
    text += &l("PERF_RECORD_MMAP2 5/5: [0x7f1000000000(0x1000) @ 0 fe:00 7 0]: r--p a.so");
    text += &l("syscalls:sys_exit_mmap: 0x7f1000000000");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let p = dir.join("late-naming.perf.txt");
    std::fs::write(&p, &text).unwrap();
    let mut s = anonmm::import::stream_trace(&p).unwrap();
    while let Some(b) = s.next_batch() {
        s.recycle(b);
    }
    assert!(!s.finish().exact);
    let (script, report) = read_trace(&p).unwrap();
    assert!(matches!(&script.steps[1].call, anonmm::script::Call::Openat { path, .. } if path == "a.so"));
    let whole = replay_script(&script, &RunOptions::default(), 8, &mut |_| {}).unwrap();
    let (streamed, r) = anonmm::replay::replay_trace(&p, &RunOptions::default(), 8, &mut |_| {}).unwrap();
    assert_eq!(r, report);
    assert_eq!(format!("{streamed:?}"), format!("{whole:?}"));
    // With the kernel's VMA record of the second mmap.
    assert_eq!(whole.steps, 70_004);
}

/// Page faults the streamed replay runs from their fields (inside the anonymous VMA the last
/// fault found) that the model does not serve as the trace does: a write to a read-only
/// mapping is SIGSEGV in the model; the divergence and every count are those of the
/// replay of the whole import, which runs each fault as a step.
#[test]
fn streamed_faults_that_diverge_count_as_in_the_whole_import() {
    let l = |e: &str| format!("            prog  5/5   100.000001: {e}\n");
    let fault = |a: u64, code: u64| {
        l(&format!("exceptions:page_fault_user: address={a:#x} ip=0x1 error_code={code:#x}"))
    };
    let base = 0x7f0000000000u64;
    let mut text = l(
        "syscalls:sys_enter_mmap: addr: 0x0, len: 0x4000, prot: 0x1, flags: 0x22, fd: 0xffffffff, off: 0x0",
    );
    text += &l("syscalls:sys_exit_mmap: 0x7f0000000000");
    text += &fault(base, 0x4);
    text += &fault(base + 0x1000, 0x4);
    text += &fault(base + 0x2000, 0x6);
    text += &fault(base + 0x3000, 0x4);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let p = dir.join("streamed-faults-diverge.perf.txt");
    std::fs::write(&p, &text).unwrap();
    let (script, _) = read_trace(&p).unwrap();
    let whole = replay_script(&script, &RunOptions::default(), 8, &mut |_| {}).unwrap();
    let (streamed, _) = anonmm::replay::replay_trace(&p, &RunOptions::default(), 8, &mut |_| {}).unwrap();
    assert_eq!(format!("{streamed:?}"), format!("{whole:?}"));
    assert_eq!(streamed.steps, 5);
    assert_eq!(streamed.stats.faults, 3, "the three reads are served");
    let model: Vec<_> = streamed.replay.examples.iter().filter(|d| d.class == DivClass::Model).collect();
    assert_eq!(model.len(), 1, "{model:?}");
    assert_eq!((model[0].line, model[0].got.as_str()), (5, "= SIGSEGV"), "the write");
}

/// Say that a test skipped its work, on the real stderr: the harness captures `eprintln!`
/// of passing tests, and a skipped test must not pass silently.
fn skipped(test: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "test {test}: SKIPPED: {why}");
}
