//! Real traces that once replayed wrongly (issue 18): small recordings and hand-written
//! traces in tests/data/traces, each replaying with no `model` disagreement.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anonmm::import::read_trace;
use anonmm::replay::{DivClass, ReplayOutcome, replay_script};
use anonmm::run::RunOptions;
use anonmm::script::{Call, RecordedVma, parse_str};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/traces").join(name)
}

fn replay(script: &anonmm::script::Script) -> ReplayOutcome {
    replay_script(script, &RunOptions { check: true, ..Default::default() }, 1000, &mut |_| {})
        .unwrap_or_else(|e| panic!("{e}"))
}

fn replay_text(text: &str) -> ReplayOutcome {
    replay(&parse_str("t.strace", text).unwrap_or_else(|e| panic!("{e}")))
}

/// (placement, file, trace, model)
fn classes(o: &ReplayOutcome) -> (u64, u64, u64, u64) {
    let c = |k| o.replay.count(k);
    (c(DivClass::Placement), c(DivClass::File), c(DivClass::Trace), c(DivClass::Model))
}

fn anonmm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_anonmm")).args(args).output().unwrap()
}

/// quirks.c recorded with `anonmm record`: an fd nobody traced (a pipe), an mmap whose fd
/// has junk in its upper 32 bits, an MREMAP_DONTUNMAP move without MREMAP_FIXED, and a child
/// exec with 6000 bytes of arguments (whose temporary exec stack perf shows).
#[test]
fn quirks_recording_replays_without_model_divergences() {
    let (script, report) = read_trace(&data("quirks.perf.txt.zst")).unwrap_or_else(|e| panic!("{e}"));
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.skipped.get("PERF_RECORD_MMAP2 of the temporary exec stack"), Some(&1));
    // The int fd: the junk above bit 31 is gone, so the mmap names /etc/passwd.
    assert!(script.steps.iter().any(|s| matches!(&s.call, Call::Mmap { fd: 7, .. })));
    assert!(
        script.steps.iter().any(|s| matches!(&s.call, Call::Openat { path, .. } if path == "/etc/passwd"))
    );
    // No map_record of the temporary stack at STACK_TOP_MAX.
    assert!(
        !script
            .steps
            .iter()
            .any(|s| matches!(&s.call, Call::MapRecord(RecordedVma { addr: 0x7fff_ffff_d000, .. })))
    );
    let o = replay(&script);
    assert!(o.invariant.is_none(), "{:?}", o.invariant);
    // The two brk bases are placement; the pipe's two descriptors cost one `file` row.
    assert_eq!(classes(&o), (2, 1, 0, 0), "{:#?}", o.replay.examples);
}

/// MREMAP_DONTUNMAP without MREMAP_FIXED moves to where the kernel chose: replay takes the
/// recorded address (a `placement` row), and the pages are found there.
#[test]
fn dontunmap_without_fixed_takes_the_recorded_address() {
    let o = replay_text(
        "1 mmap(0x200000000000, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED, -1, 0) = 0x200000000000\n\
         1 touch(0x200000000000, 8192, \"w\")\n\
         1 mremap(0x200000000000, 8192, 8192, MREMAP_MAYMOVE|MREMAP_DONTUNMAP) = 0x300000000000\n\
         1 touch(0x300000000000, 8192, \"r\")\n\
         1 munmap(0x300000000000, 8192) = 0\n\
         1 munmap(0x200000000000, 8192) = 0\n",
    );
    assert_eq!(classes(&o), (1, 0, 0, 0), "{:#?}", o.replay.examples);
    let d = &o.replay.examples[0];
    assert_eq!((d.line, d.expected.as_str()), (3, "= 0x300000000000"));
}

/// `clone(...) = ? ERESTARTNOINTR` was interrupted and restarted: only the restarted clone
/// makes a child.
#[test]
fn an_interrupted_clone_is_not_a_fork() {
    let text = std::fs::read_to_string(data("restart.strace")).unwrap();
    let s = anonmm::script::parse_str_with(
        "restart.strace",
        &text,
        &anonmm::script::ParseOptions { skip_unknown: true },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(s.skipped.iter().any(|(_, why)| why == "clone interrupted (ERESTARTNOINTR), restarted"));
    let o = replay(&s);
    assert_eq!(classes(&o), (0, 0, 0, 0), "{:#?}", o.replay.examples);
    assert_eq!(o.replay.processes, 2);
}

/// Descriptors the trace does not show (3 and 4, say a pipe) cost one `file` row: the model
/// then numbers descriptors as the trace does.
#[test]
fn unseen_descriptors_cost_one_row() {
    let o = replay_text(
        "1 openat(AT_FDCWD, \"a\", O_RDONLY) = 5\n\
         1 openat(AT_FDCWD, \"b\", O_RDONLY) = 6\n\
         1 close(5) = 0\n\
         1 openat(AT_FDCWD, \"c\", O_RDONLY) = 5\n\
         1 close(3) = 0\n\
         1 openat(AT_FDCWD, \"d\", O_RDONLY) = 3\n\
         1 dup(3) = 7\n\
         1 close(4) = 0\n\
         1 dup(3) = 4\n",
    );
    assert_eq!(classes(&o), (0, 1, 0, 0), "{:#?}", o.replay.examples);
}

/// `perf script` with its default fields has no TID: the error says which fields to ask for.
#[test]
fn perf_script_default_fields_are_refused_with_the_fields_needed() {
    let dir = std::env::temp_dir().join(format!("anonmm-traces-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("default.perf.txt");
    std::fs::write(
        &p,
        "          quirks 15533 [001]   681.255016: syscalls:sys_enter_mmap: addr: 0x00000000, len: 0x00001000\n",
    )
    .unwrap();
    for cmd in ["replay", "import"] {
        let out = anonmm(&[cmd, p.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {err}");
        assert!(err.contains("-F comm,pid,tid,time,event,trace"), "{cmd}: {err}");
        assert!(err.contains("default.perf.txt:1:"), "{cmd}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// quirks.perf.txt with damage: a garbled line, an mremap entry cut in half, a
/// PERF_RECORD_LOST line, and its zstd stream cut (its second frame half gone).
#[test]
fn a_damaged_trace_is_reported_and_exits_2() {
    let p = data("damaged.perf.txt.zst");
    let p = p.to_str().unwrap();
    let out = anonmm(&["replay", p]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("damaged trace (4 problems, 7 events lost"), "{err}");
    assert!(err.contains("--accept-damaged"), "{err}");
    let out = anonmm(&["replay", p, "--format", "json", "--accept-damaged", "--policy", "all"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    // Told once per trace, not per policy.
    assert_eq!(String::from_utf8_lossy(&out.stderr).matches("damaged trace").count(), 1);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for row in rows.as_array().unwrap() {
        let problems: Vec<&str> =
            row["import_problems"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].contains(":61: garbled line: \\0\\u{17}garbage"), "{problems:?}");
        assert!(problems[1].contains(":122: garbled sys_enter_mremap"), "{problems:?}");
        assert!(problems[2].contains(":201: PERF_RECORD_LOST: 7 events lost"), "{problems:?}");
        assert!(problems[3].contains("zstd"), "{problems:?}");
        assert_eq!(row["model"], 0, "{row}");
    }
    for format in ["text", "markdown", "csv"] {
        let out = anonmm(&["replay", p, "--format", format, "--accept-damaged"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("import problems") || text.contains("import_problems"), "{format}: {text}");
        if format != "csv" {
            assert!(text.contains("PERF_RECORD_LOST: 7 events lost"), "{format}: {text}");
        }
    }
}

/// Model divergences from the first damaged line on are the damage's: counted as `trace`.
#[test]
fn divergences_after_damage_are_blamed_on_it() {
    use anonmm::replay::{Divergence, ReplayState};
    let mut replay = ReplayState::new();
    for line in [5, 10, 20] {
        replay.record(Divergence {
            class: DivClass::Model,
            line,
            pid: 1,
            call: "munmap(0x1000, 4096)".into(),
            expected: "= 0".into(),
            got: "= -1 EINVAL".into(),
        });
    }
    let mut o = ReplayOutcome {
        steps: 30,
        replay,
        stats: Default::default(),
        vmas_end: (0, 0),
        vmas_peak: (0, 0),
        invariant: None,
    };
    let report = anonmm::import::ImportReport { damaged_from: Some(10), ..Default::default() };
    o.blame_damage(&report);
    assert_eq!(classes(&o), (0, 0, 2, 1));
    assert_eq!(o.replay.examples.iter().filter(|d| d.class == DivClass::Trace).count(), 2);
    // A whole trace changes nothing.
    o.blame_damage(&anonmm::import::ImportReport::default());
    assert_eq!(classes(&o), (0, 0, 2, 1));
}

/// Every `vma_record` of the recordings (the kernel's VMA after an mmap, mprotect or brk)
/// is checked against the model's, and a differing one is reported with both VMAs.
#[test]
fn kernel_vma_records_are_checked() {
    let (script, report) = read_trace(&data("quirks.perf.txt.zst")).unwrap();
    let o = replay(&script);
    assert_eq!(report.vma_records, 38);
    assert_eq!((o.replay.vma_records_checked, o.replay.vma_records_differ), (38, 0));
    let o = replay_text(
        "1 mmap(0x200000000000, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED, -1, 0) = 0x200000000000\n\
         1 vma_record(0x200000000000, 8192, 0x200000000, PROT_READ|PROT_WRITE, \"p\", 0, 0, NULL, NULL)\n\
         1 mprotect(0x200000000000, 4096, PROT_READ) = 0\n\
         1 vma_record(0x200000000000, 8192, 0x200000000, PROT_READ, \"p\", 0, 0, NULL, NULL)\n",
    );
    assert_eq!((o.replay.vma_records_checked, o.replay.vma_records_differ), (2, 1));
    let d = &o.replay.vma_examples[0];
    assert_eq!(d.line, 4);
    assert_eq!(d.expected, "200000000000-200000002000 r--p pgoff 0x200000000");
    assert_eq!(d.got, "200000000000-200000001000 r--p pgoff 0x200000000");
    // A plain run reports it as a mismatch.
    let s = parse_str("v.strace", "1 mmap(0x200000000000, 8192, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED, -1, 0) = 0x200000000000\n1 vma_record(0x200000000000, 4096, 0x200000000, PROT_READ, \"p\", 0, 0, NULL, NULL)\n").unwrap();
    let r = anonmm::run::run_script(&s, &RunOptions::default()).unwrap();
    assert_eq!(r.mismatches.len(), 1);
}

fn workload(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/workloads").join(name).display().to_string()
}

/// `explain` names each refusal as `--trace` does, with what makes it: the mremap that
/// moved a side (NOMERGE_PGOFF), the faults that gave each side its anon_vma
/// (NOMERGE_ANON_VMA), the differing flags.
#[test]
fn explain_says_why_adjacent_vmas_stay_apart() {
    let out = anonmm(&["explain", &workload("stitch-half.strace")]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("== pid 1 (10 VMAs) ==\n"), "{text}");
    assert!(
        text.contains(
            "200000000000-20000000d000 and 20000000d000-200000022000: NOMERGE_PGOFF: left's pages end at \
             pgoff 0x20004000d, right's start at 0x20000000d; left moved by line 26 `mremap(0x200040000000, \
             53248, 53248, MREMAP_MAYMOVE|MREMAP_FIXED, 0x200000000000)`"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "200000022000-200000024000 and 200000024000-200000033000: NOMERGE_ANON_VMA: left's anon_vma from \
             line 20 `touch(0x200140000000, 8192, \"w\")`; right's from line 21 `touch(0x200180000000, 61440, \"w\")`"
        ),
        "{text}"
    );
    // Before the moves (line 25) nothing is adjacent.
    let out = anonmm(&["explain", &workload("stitch-half.strace"), "--at", "25"]);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(" and "),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // A recorded trace, as replay runs it; one process.
    let q = data("quirks.perf.txt.zst");
    let out = anonmm(&["explain", q.to_str().unwrap(), "--pid", "15535"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    assert!(text.starts_with("== pid 15535 ("), "{text}");
    assert!(!text.contains("== pid 15533"), "{text}");
    assert!(
        text.contains("NOMERGE_FLAGS: flags differ in VM_EXEC: left has none, right has VM_EXEC"),
        "{text}"
    );
    assert!(text.contains("NOMERGE_SPECIAL: VM_SPECIAL flags: VM_DONTEXPAND"), "{text}");
}

/// `run` takes a trace (perf, or strace with calls outside the memory subset) as replay
/// takes it, and `--at` shows the state after a line of it.
#[test]
fn run_steps_through_a_trace() {
    let q = data("quirks.perf.txt.zst");
    // After the MREMAP_DONTUNMAP move (line 122): both the new and the old range.
    let out = anonmm(&["run", q.to_str().unwrap(), "--at", "123"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("7f5a1ca90000-7f5a1ca92000 rw-p"), "{text}");
    assert!(text.contains("7f5a1ca92000-7f5a1ca94000 rw-p"), "{text}");
    // Before it, only the old one.
    let out = anonmm(&["run", q.to_str().unwrap(), "--at", "120"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("7f5a1ca90000-"), "{text}");
    let r = data("restart.strace");
    let out = anonmm(&["run", r.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("3 events skipped"), "{err}");
}

/// `import --resolved` writes the steps as replay runs them: a kernel-chosen address is
/// the recorded one with MAP_FIXED; the script then runs as a script.
#[test]
fn import_resolved_writes_what_replay_runs() {
    let dir = std::env::temp_dir().join(format!("anonmm-resolved-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("quirks.strace");
    let q = data("quirks.perf.txt.zst");
    let o = anonmm(&["import", "--resolved", q.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&out).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(text.starts_with("# resolved"), "{text}");
    assert!(
        text.contains(
            "15533 mremap(0x7f5a1ca92000, 8192, 8192, MREMAP_MAYMOVE|MREMAP_DONTUNMAP, NULL) = 0x7f5a1ca90000"
        ) || text.contains("MREMAP_DONTUNMAP|MREMAP_FIXED"),
        "{text}"
    );
    // Placed where the kernel put it, as the model predicted too.
    assert!(
        text.contains("15535 mmap(NULL, 45443, PROT_READ, MAP_PRIVATE, 3, 0) = 0x7fdc4b3fe000"),
        "{text}"
    );
    // A script again: it parses back, one line per step run; the 13 failed openats replay
    // does not run are comments.
    let s = parse_str("resolved.strace", &text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.steps.len(), 310);
    assert_eq!(text.matches("not run, the trace's result stands").count(), 13);
}

/// The VMA ranges a DOT graph draws (`VMA [0x.., 0x..)` labels), and those of `maps` lines
/// but the special mappings.
fn dot_ranges(dot: &str) -> Vec<(u64, u64)> {
    let mut r: Vec<(u64, u64)> = dot
        .split("VMA [0x")
        .skip(1)
        .map(|rest| {
            let (a, rest) = rest.split_once(", 0x").unwrap();
            let b = rest.split(')').next().unwrap();
            (u64::from_str_radix(a, 16).unwrap(), u64::from_str_radix(b, 16).unwrap())
        })
        .collect();
    r.sort();
    r
}

fn maps_ranges(text: &str) -> Vec<(u64, u64)> {
    let mut r: Vec<(u64, u64)> = text
        .lines()
        // The graph leaves out the special mappings ([stack], [vdso], ...).
        .filter(|l| !l.split_whitespace().last().is_some_and(|n| n.starts_with('[')))
        .filter_map(|l| {
            let range = l.split_whitespace().next()?;
            let (a, b) = range.split_once('-')?;
            Some((u64::from_str_radix(a, 16).ok()?, u64::from_str_radix(b, 16).ok()?))
        })
        .collect();
    r.sort();
    r
}

/// `graph` takes a trace as replay takes it: at a line, it draws exactly the VMAs `run --at`
/// shows there (the MREMAP_DONTUNMAP move of line 122 made both ranges), for a pid too; a
/// perf.data and `--from-oracle` on a trace are handled.
#[test]
fn graph_draws_a_trace_at_a_line() {
    let q = data("quirks.perf.txt.zst");
    let q = q.to_str().unwrap();
    for at in ["120", "123", "200"] {
        let g = anonmm(&["graph", q, "--at", at, "--pid", "15533"]);
        assert_eq!(g.status.code(), Some(0), "{}", String::from_utf8_lossy(&g.stderr));
        let r = anonmm(&["run", q, "--at", at]);
        let maps = String::from_utf8_lossy(&r.stdout);
        // run prints every live process; pid 15533's maps come first (its header names it).
        let own: String = maps.split("pid ").find(|p| p.starts_with("15533")).unwrap_or_default().to_string();
        let drawn = dot_ranges(&String::from_utf8_lossy(&g.stdout));
        assert!(!drawn.is_empty());
        assert_eq!(drawn, maps_ranges(&own), "at line {at}");
    }
    let g = anonmm(&["graph", q, "--at", "123"]);
    let dot = String::from_utf8_lossy(&g.stdout);
    assert!(dot.contains("VMA [0x7f5a1ca90000, 0x7f5a1ca92000)"), "{dot}");
    assert!(dot.contains("VMA [0x7f5a1ca92000, 0x7f5a1ca94000)"), "{dot}");
    let g = anonmm(&["graph", q, "--at", "120"]);
    assert!(!String::from_utf8_lossy(&g.stdout).contains("VMA [0x7f5a1ca90000,"));
    let o = anonmm(&["graph", q, "--from-oracle"]);
    assert_eq!(o.status.code(), Some(2));
    // A perf.data, plain: the same graph as its perf script text gives (at a line where
    // its processes live).
    let dir = std::env::temp_dir().join(format!("anonmm-graph-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let plain = dir.join("sort-threads.perf.data");
    let zst = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sort-threads.perf.data.zst");
    let bytes = zstd::decode_all(std::fs::File::open(&zst).unwrap()).unwrap();
    std::fs::write(&plain, bytes).unwrap();
    let a = anonmm(&["graph", plain.to_str().unwrap(), "--at", "2000"]);
    let txt = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sort-threads.perf.txt.zst");
    let b = anonmm(&["graph", txt.to_str().unwrap(), "--at", "2000"]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(a.status.code(), Some(0), "{}", String::from_utf8_lossy(&a.stderr));
    assert!(!dot_ranges(&String::from_utf8_lossy(&a.stdout)).is_empty());
    assert_eq!(a.stdout, b.stdout);
}

/// `compare` on a trace runs each policy as replay does: its row's peak VMAs and merges are
/// those `replay --policy P` reports, and the contents match kernel's.
#[test]
fn compare_on_a_trace_gives_replays_rows() {
    use anonmm::mm::Config;
    use anonmm::policy::{Policy, compare_all_as};
    let (script, _) = read_trace(&data("quirks.perf.txt.zst")).unwrap_or_else(|e| panic!("{e}"));
    let rows = compare_all_as(&script, &Config::default(), true);
    assert_eq!(rows.len(), anonmm::policy::ALL_POLICIES.len());
    let mut merged_more = false;
    for row in &rows {
        let p = Policy::parse(&row.policy).unwrap();
        let opts = RunOptions { policy: p, ..Default::default() };
        let out = replay_script(&script, &opts, 8, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(row.vmas_peak, out.vmas_peak.0, "{}", row.policy);
        assert_eq!(row.merges_done, out.stats.merges_done, "{}", row.policy);
        assert_eq!(row.merges_attempted, out.stats.merges_attempted, "{}", row.policy);
        assert_eq!(row.contents, Ok(script.steps.len()), "{}", row.policy);
        merged_more |= row.merges_done > rows[0].merges_done;
    }
    // The DONTUNMAP move is where the policies part: some merge more than kernel.
    assert!(merged_more);
    let q = data("quirks.perf.txt.zst");
    let o = anonmm(&["compare", q.to_str().unwrap(), "--format", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["merges_done"], rows[0].merges_done);
    assert_eq!(anonmm(&["compare", q.to_str().unwrap(), "--kernel", "all"]).status.code(), Some(2));
}
