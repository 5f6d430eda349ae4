//! Importing perf traces: the shared recordings, excerpts of them with exact results, and
//! bad input.

use std::path::{Path, PathBuf};

use anonmm::import::{ImportReport, parse_perf, read_trace};
use anonmm::script::{Call, Expect, Script, Step, format_step, parse_str};
use proptest::prelude::*;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

fn tmp(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("import");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn read(name: &str) -> String {
    std::fs::read_to_string(data(name)).unwrap()
}

/// `LINE: PID CALL = RESULT` per step.
fn listing(s: &Script) -> String {
    s.steps.iter().map(|st| format!("{}: {}\n", st.line, format_step(st))).collect()
}

/// Written out and parsed back, a script has the same steps.
fn assert_round_trips(s: &Script) {
    let text: String = s.steps.iter().map(|st| format_step(st) + "\n").collect();
    let back = parse_str("out.strace", &text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back.steps.len(), s.steps.len());
    for (a, b) in s.steps.iter().zip(&back.steps) {
        assert_eq!(a.call, b.call, "{}", a.call_text());
        assert_eq!(a.expect, b.expect, "{}", a.call_text());
        assert_eq!(a.pid, b.pid, "{}", a.call_text());
        assert_eq!(a.call_text(), b.call_text());
    }
}

#[test]
fn sort_excerpt_gives_exactly_these_steps() {
    let (s, r) = read_trace(&data("sort.excerpt.perf.txt")).unwrap();
    let got = listing(&s);
    let golden = data("sort.excerpt.steps");
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(&golden, &got).unwrap();
    }
    let want = std::fs::read_to_string(&golden).unwrap();
    assert_eq!(got, want, "BLESS=1 cargo test --test import rewrites {golden:?}");
    assert_eq!(r.format, "perf");
    assert_eq!((r.events, r.steps, r.processes, r.threads, r.lost), (204, 155, 1, 1, 0));
    // 18 of the steps are the kernel's VMAs after a call (`vma_record`).
    assert_eq!(r.vma_records, 18);
    assert!(r.incomplete.is_empty() && r.problems.is_empty(), "{r:?}");
    assert_eq!(r.skipped.values().sum::<u64>(), 1, "{:?}", r.skipped);
    assert_round_trips(&s);
}

#[test]
fn sort_excerpt_highlights() {
    let (s, _) = read_trace(&data("sort.excerpt.perf.txt")).unwrap();
    let at = |line: usize| -> Vec<String> {
        s.steps.iter().filter(|st| st.line == line).map(format_step).collect()
    };
    // The first exec: its records come before the exec event, its step first.
    assert_eq!(s.steps[0].line, 14);
    assert_eq!(at(14), ["8742 execve(\"sort\", [\"sort\"], NULL) = 0"]);
    assert_eq!(
        at(2),
        [
            "8742 map_record(0x7ffe5f441000, 135168, 34359738334, PROT_READ|PROT_WRITE, \"p\", 0x0, 0, NULL, \"[stack]\")"
        ]
    );
    assert_eq!(
        at(4),
        [
            "8742 map_record(0x5606738c5000, 73728, 3, PROT_READ|PROT_EXEC, \"p\", 0xfe00, 247778, \"sort\", NULL)"
        ]
    );
    assert_eq!(
        s.steps.iter().take_while(|st| matches!(st.call, Call::MapRecord(..) | Call::Execve { .. })).count(),
        13
    );
    // A file mapping names the openat before it.
    assert_eq!(at(43), ["8742 openat(AT_FDCWD, \"libc.so.6\", O_RDONLY|O_CLOEXEC) = 3"]);
    assert_eq!(
        at(46),
        ["8742 mmap(NULL, 1974096, PROT_READ, MAP_PRIVATE|MAP_DENYWRITE, 3, 0) = 0x7f41b6b66000"]
    );
    // Faults: page-aligned, written on error_code bit 1.
    assert_eq!(at(16), ["8742 touch(0x7f41b6d75000, 4096, \"r\")"]);
    assert_eq!(at(17), ["8742 touch(0x7f41b6d8e000, 4096, \"w\")"]);
    // Errors, the thread, its madvise and exit.
    assert_eq!(
        at(119),
        [
            "8742 openat(AT_FDCWD, \"open@line119\", O_RDONLY|O_CLOEXEC) = -1 ENOENT (No such file or directory)"
        ]
    );
    let clone = s.steps.iter().find(|st| matches!(st.call, Call::CloneVm { .. })).unwrap();
    // A thread whose clone flags the trace lacks gets pthread's (less the tid pointers).
    assert_eq!(
        format_step(clone),
        "8742 clone(child_stack=NULL, flags=CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_SIGHAND|CLONE_THREAD|CLONE_SYSVSEM) = 8744"
    );
    let thread: Vec<String> = s
        .steps
        .iter()
        .filter(|st| st.pid.0 == 8744 && !matches!(st.call, Call::Touch { .. }))
        .map(format_step)
        .collect();
    assert_eq!(
        thread,
        ["8744 madvise(0x7f41b2301000, 8368128, MADV_DONTNEED) = 0", "8744 exit_group(0) = ?"]
    );
    assert_eq!(format_step(s.steps.last().unwrap()), "8742 exit_group(0) = ?");
}

#[test]
fn python_excerpt_forks_execs_and_mremaps() {
    let (s, r) = read_trace(&data("python.excerpt.perf.txt")).unwrap();
    let calls: Vec<String> = s
        .steps
        .iter()
        .filter(|st| !matches!(st.call, Call::Touch { .. } | Call::MapRecord(..)))
        .map(|st| format!("{}: {}", st.line, format_step(st)))
        .collect();
    let want_in_order = [
        "14: 8694 execve(\"python3\", [\"python3\"], NULL) = 0",
        // The failed PATH lookups are skipped; the exec that worked keeps its enter's line.
        "44: 8694 execve(\"bash\", [\"bash\"], NULL) = 0",
        "69: 8694 fork() = 8696",
        "112: 8696 dup2(5, 1) = 1",
        "151: 8696 exit_group(0) = ?",
        // The excerpt lost this close's exit: no result, and counted.
        "156: 8694 close(3)",
        "162: 8694 mremap(0x7f03db1f4000, 278528, 315392, MREMAP_MAYMOVE) = 0x7f03db1a7000",
    ];
    let mut pos = 0;
    for w in want_in_order {
        match calls[pos..].iter().position(|c| c == w) {
            Some(p) => pos += p + 1,
            None => panic!("`{w}` not found in order in {calls:#?}"),
        }
    }
    // bash's exec: its records (between enter and exec event) follow it.
    let exec = s.steps.iter().position(|st| st.line == 44).unwrap();
    let recs: Vec<&Step> =
        s.steps[exec + 1..].iter().take_while(|st| matches!(st.call, Call::MapRecord(..))).collect();
    assert_eq!(recs.len(), 13);
    assert!(recs.iter().any(|st| st.text.contains("NULL, NULL)")), "the bss //anon record");
    assert_eq!(r.skipped.get("execve failed (ENOENT)"), Some(&9));
    assert_eq!(r.incomplete.get("missing sys_exit_close"), Some(&1));
    assert_eq!((r.processes, r.threads), (2, 0));
    assert_round_trips(&s);
}

/// The recordings in shared/ (beside the repository), when they are there.
fn shared_traces() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/traces");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| p.to_string_lossy().ends_with(".perf.txt.zst"));
    v.sort();
    v
}

#[test]
fn shared_traces_import_cleanly() {
    let traces = shared_traces();
    if traces.is_empty() {
        skipped(
            "shared_traces_import_cleanly",
            "no ../shared/traces beside the repository (the developers' recordings)",
        );
        return;
    }
    for t in traces {
        let (s, r): (Script, ImportReport) = read_trace(&t).unwrap_or_else(|e| panic!("{e}"));
        eprintln!("{}: {}", t.display(), serde_json::to_string(&r).unwrap());
        assert_eq!(r.format, "perf");
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert!(r.incomplete.is_empty(), "{:?}", r.incomplete);
        assert_eq!(r.lost, 0);
        assert!(r.steps > 1000 && r.processes >= 1);
        assert_eq!(r.steps as usize, s.steps.len());
        // Every process starts with an exec or is forked, and ends with an exit.
        let execs = s.steps.iter().filter(|st| matches!(st.call, Call::Execve { .. })).count();
        let exits = s.steps.iter().filter(|st| matches!(st.call, Call::ExitGroup { .. })).count();
        assert!(execs >= 1);
        assert_eq!(exits as u64, r.processes + r.threads, "{}", t.display());
        // Results are as the kernel gave them: no fork without its child pid.
        assert!(
            s.steps.iter().all(
                |st| !matches!(st.call, Call::Fork { .. }) || matches!(st.expect, Some(Expect::Value(_)))
            )
        );
        assert_round_trips(&s);
    }
}

#[test]
fn compressed_plain_and_strace_inputs() {
    let text = read("sort.excerpt.perf.txt");
    let plain = parse_perf("x", &text).unwrap().0;
    // .zst by magic, whatever the name; and by name.
    let z = zstd::encode_all(text.as_bytes(), 3).unwrap();
    for name in ["sort.perf.txt.zst", "sort.compressed"] {
        let p = tmp(name);
        std::fs::write(&p, &z).unwrap();
        let (s, _) = read_trace(&p).unwrap();
        assert_eq!(listing(&s), listing(&plain));
    }
    // A truncated recording: what decompressed is kept, and the report says so.
    let p = tmp("cut.perf.txt.zst");
    std::fs::write(&p, &z[..z.len() * 2 / 3]).unwrap();
    match read_trace(&p) {
        Ok((s, r)) => {
            assert!(s.steps.len() < plain.steps.len());
            assert_eq!(r.skipped.get("rest of a truncated or corrupt zstd stream"), Some(&1), "{r:?}");
        }
        Err(e) => assert!(e.to_string().contains("cut.perf.txt.zst: cannot decompress"), "{e}"),
    }
    // Named .zst but plain: an error naming the file.
    let p = tmp("plain.zst");
    std::fs::write(&p, &text).unwrap();
    let e = read_trace(&p).unwrap_err();
    assert!(e.to_string().ends_with("plain.zst: named .zst but not zstd-compressed"), "{e}");
    // A strace script goes to the script parser, unknown calls skipped.
    let p = tmp("s.strace");
    std::fs::write(&p, "1 read(3, \"\", 1) = 0\n1 munmap(0x1000, 4096) = 0\n").unwrap();
    let (s, r) = read_trace(&p).unwrap();
    assert_eq!(r.format, "strace");
    assert_eq!((s.steps.len(), r.events, r.skipped.get("read")), (1, 2, Some(&1)));
    // Neither: an error naming file and line.
    let p = tmp("junk.txt");
    std::fs::write(&p, "hello\nworld\n").unwrap();
    let e = read_trace(&p).unwrap_err().to_string();
    assert!(e.contains("junk.txt:1: neither `perf script` text nor a strace script"), "{e}");
    // Missing and empty files.
    let e = read_trace(&tmp("does-not-exist")).unwrap_err().to_string();
    assert!(e.contains("does-not-exist: cannot read"), "{e}");
    let p = tmp("empty.txt");
    std::fs::write(&p, "").unwrap();
    assert!(read_trace(&p).unwrap_err().to_string().ends_with("empty.txt: empty trace"));
}

#[test]
fn truncated_last_line_is_counted() {
    let text = read("sort.excerpt.perf.txt");
    let (full, _) = parse_perf("x", &text).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let n = lines.len();
    // The last line (sched_process_exit) cut inside its header: a garbled line.
    let t = format!("{}\n{}", lines[..n - 1].join("\n"), &lines[n - 1][..25]);
    let (s, r) = parse_perf("x", &t).unwrap();
    assert_eq!(s.steps.len(), full.steps.len());
    assert_eq!(r.skipped.get("garbled line"), Some(&1));
    assert_eq!(r.problems, [format!("x:{n}: garbled line: sort  8742/87")]);
    // `sys_enter_exit_group: error_co` as the last line: a garbled event, its step lost.
    let last = lines[n - 2];
    let t = format!("{}\n{}", lines[..n - 2].join("\n"), &last[..last.find("error_code").unwrap() + 8]);
    let (s, r) = parse_perf("x", &t).unwrap();
    assert_eq!(s.steps.len(), full.steps.len() - 1);
    assert_eq!(r.skipped.get("garbled sys_enter_exit_group"), Some(&1));
    // `sys_enter_munmap` without its exit at the end: kept without a result, and counted.
    let i = lines.iter().rposition(|l| l.contains("sys_exit_munmap")).unwrap();
    let (s, r) = parse_perf("x", &lines[..i].join("\n")).unwrap();
    assert_eq!(format_step(s.steps.last().unwrap()), "8742 munmap(0x7f41b2b02000, 67112960)");
    assert_eq!(r.incomplete.get("missing sys_exit_munmap"), Some(&1));
}

#[test]
fn cli_writes_a_script_that_parses_back() {
    let out = tmp("sort.strace");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_anonmm"))
        .args(["import", data("sort.excerpt.perf.txt").to_str().unwrap(), "-o", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["steps"], 155);
    assert_eq!(report["threads"], 1);
    let s = anonmm::script::parse_file(&out).unwrap();
    assert_eq!(s.steps.len(), 155);
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_anonmm"))
        .args(["import", "/nonexistent/trace.perf.txt"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/trace.perf.txt: cannot read"));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Junk put into any line, or any line cut short: counted, never a panic.
    #[test]
    fn mutated_lines_never_panic(
        which in 0usize..400,
        at in 0usize..300,
        junk in "[\\[\\]():/@ ,=x0-9a-fA-F\\-]{0,6}|\\PC{0,4}",
        cut in any::<bool>(),
    ) {
        let text = read(if which % 2 == 0 { "sort.excerpt.perf.txt" } else { "python.excerpt.perf.txt" });
        let lines: Vec<&str> = text.lines().collect();
        let i = (which / 2) % lines.len();
        let line = lines[i];
        let at = line.char_indices().map(|(i, _)| i).nth(at).unwrap_or(line.len());
        let mutated = if cut {
            line[..at].to_string()
        } else {
            format!("{}{}{}", &line[..at], junk, &line[at..])
        };
        let mut all = lines.clone();
        all[i] = &mutated;
        let t = all.join("\n");
        if let Ok((s, r)) = parse_perf("m", &t) {
            prop_assert_eq!(r.steps as usize, s.steps.len());
            // Whatever came out still writes and reads back.
            for st in &s.steps {
                let l = format_step(st);
                prop_assert!(parse_str("m", &l).is_ok(), "{}", l);
            }
        }
        // The mutated line alone, and after the others as the last line.
        let _ = parse_perf("m", &mutated);
        let _ = parse_perf("m", &format!("{}\n{}", lines[..i].join("\n"), mutated));
    }

    #[test]
    fn garbage_never_panics(text in "\\PC{0,300}") {
        let _ = parse_perf("g", &text);
        let _ = parse_perf("g", &format!("  x 1/1 1.0: {text}"));
        let _ = parse_perf("g", &format!("  x 1/1 1.0: PERF_RECORD_MMAP2 1/1: {text}"));
        let _ = parse_perf("g", &format!("  x 1/1 1.0: syscalls:sys_enter_mmap: {text}\n  x 1/1 1.0: syscalls:sys_exit_mmap: {text}"));
    }
}

/// Every step of a streamed import of `path`, and its report.
fn streamed(path: &Path) -> (Vec<Step>, ImportReport) {
    let mut s = anonmm::import::stream_trace(path).unwrap_or_else(|e| panic!("{e}"));
    let mut steps = Vec::new();
    while let Some(b) = s.next_batch() {
        steps.extend(b.iter().map(|s| s.step().into_owned()));
        s.recycle(b);
    }
    let end = s.finish();
    assert!(end.exact, "{}: a step handed on was edited later", path.display());
    (steps, end.report)
}

fn assert_same_steps(whole: &[Step], streamed: &[Step], what: &str) {
    assert_eq!(whole.len(), streamed.len(), "{what}");
    for (a, b) in whole.iter().zip(streamed) {
        // A streamed step leaves its text to be formatted when asked (`call_text`).
        let same = (a.line, a.pid, &a.call, &a.expect, a.call_text())
            == (b.line, b.pid, &b.call, &b.expect, b.call_text());
        assert!(same, "{what}: line {}: {} against {}", a.line, format_step(a), format_step(b));
    }
}

/// The streamed import (the one `anonmm replay` uses) gives exactly the steps and the report
/// of the whole import: on the recordings, the bundled million-fault trace, a truncated
/// recording, and the inputs that are not streamed (strace scripts).
#[test]
fn streamed_imports_match_whole_imports() {
    let mut paths = shared_traces();
    paths.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/data/python-dict-1m.perf.txt.zst"));
    let z = std::fs::read(paths.last().unwrap()).unwrap();
    let cut = tmp("stream-cut.perf.txt.zst");
    std::fs::write(&cut, &z[..z.len() * 3 / 4]).unwrap();
    let s = tmp("stream.strace");
    std::fs::write(&s, "1 mmap(NULL, 4096, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x10000\n")
        .unwrap();
    paths.extend([data("python.excerpt.perf.txt"), data("sort.excerpt.perf.txt"), cut, s]);
    for p in paths {
        let (script, report) = read_trace(&p).unwrap_or_else(|e| panic!("{e}"));
        let (steps, r) = streamed(&p);
        assert_same_steps(&script.steps, &steps, &p.display().to_string());
        assert_eq!(r, report, "{}", p.display());
    }
    // What cannot be read is the same error either way.
    for name in ["does-not-exist", "empty.txt"] {
        let p = tmp(name);
        if name == "empty.txt" {
            std::fs::write(&p, "").unwrap();
        }
        let whole = read_trace(&p).unwrap_err();
        let Err(e) = anonmm::import::stream_trace(&p) else { panic!("{name} streamed") };
        assert_eq!(e, whole);
    }
}

/// Say that a test skipped its work, on the real stderr: the harness captures `eprintln!`
/// of passing tests, and a skipped test must not pass silently.
fn skipped(test: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "test {test}: SKIPPED: {why}");
}
