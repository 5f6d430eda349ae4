//! `perf.data` read directly: the same recording gives the same import and the same replay,
//! row for row, through its `perf.data` and through its `perf script` text. On a bundled
//! recording (a shell, `shuf` and a two-thread `sort`), and on recordings made here with perf
//! (skipped, with a message, where perf cannot record).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anonmm::import::{ImportReport, read_trace};
use anonmm::script::Script;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

fn tmp(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("perf_data");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn anonmm(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_anonmm")).args(args).output().unwrap()
}

/// Every step as `LINE PID CALL EXPECT TEXT`.
fn steps(s: &Script) -> Vec<String> {
    s.steps
        .iter()
        .map(|st| format!("{} {} {:?} {:?} {}", st.line, st.pid.0, st.call, st.expect, st.text))
        .collect()
}

/// The import of both files is the same, step for step, and so is the report.
fn same_import(data_file: &Path, text_file: &Path) -> (Script, ImportReport) {
    let (a, ra) = read_trace(data_file).unwrap_or_else(|e| panic!("{e}"));
    let (b, rb) = read_trace(text_file).unwrap_or_else(|e| panic!("{e}"));
    assert!(!a.steps.is_empty());
    assert_eq!(steps(&a), steps(&b));
    assert_eq!(a.skipped, b.skipped);
    assert_eq!(ra, rb);
    (a, ra)
}

/// `anonmm replay --format json` of `trace`, without what names the file or takes time.
fn replay_rows(trace: &Path, policy: &str) -> serde_json::Value {
    let o = anonmm(&["replay", trace.to_str().unwrap(), "--policy", policy, "--format", "json"]);
    assert!(o.status.success(), "replay failed: {}", String::from_utf8_lossy(&o.stderr));
    let mut rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for r in rows.as_array_mut().unwrap() {
        let r = r.as_object_mut().unwrap();
        r.remove("trace");
        r.remove("seconds");
    }
    rows
}

#[test]
fn bundled_recording_imports_as_its_perf_script_text() {
    let (s, r) = same_import(&data("sort-threads.perf.data.zst"), &data("sort-threads.perf.txt.zst"));
    // A shell, its pipeline and a two-thread sort: forks, a thread, execs.
    assert!(r.processes >= 3 && r.threads >= 1, "{r:?}");
    assert!(s.steps.len() > 4000, "{}", s.steps.len());
    assert_eq!(r.lost, 0);
    assert!(r.problems.is_empty(), "{:?}", r.problems);
}

#[test]
fn bundled_recording_replays_row_for_row_as_its_text() {
    let a = replay_rows(&data("sort-threads.perf.data.zst"), "all");
    let b = replay_rows(&data("sort-threads.perf.txt.zst"), "all");
    assert_eq!(a, b);
    assert!(a.as_array().unwrap().len() > 1);
}

/// The text anonmm reads a perf.data as.
fn text_of(path: &Path) -> String {
    let mut r = anonmm::import::perf_data::open_path(path).unwrap_or_else(|e| panic!("{e}"));
    let mut s = String::new();
    r.read_to_string(&mut s).unwrap();
    s
}

#[test]
fn bundled_recording_reads_as_perf_script_prints_it() {
    let text = text_of(&data("sort-threads.perf.data.zst"));
    let mut want = String::new();
    zstd::stream::read::Decoder::new(std::fs::File::open(data("sort-threads.perf.txt.zst")).unwrap())
        .unwrap()
        .read_to_string(&mut want)
        .unwrap();
    assert_eq!(text, want);
}

#[test]
fn a_damaged_perf_data_is_an_error_or_a_reported_problem_never_a_panic() {
    let mut whole = Vec::new();
    zstd::stream::read::Decoder::new(std::fs::File::open(data("sort-threads.perf.data.zst")).unwrap())
        .unwrap()
        .read_to_end(&mut whole)
        .unwrap();
    for cut in [9, 200, 4000, whole.len() / 2, whole.len() - 100] {
        let p = tmp(&format!("cut{cut}.data"));
        std::fs::write(&p, &whole[..cut]).unwrap();
        match read_trace(&p) {
            Err(e) => assert!(e.to_string().contains(p.to_str().unwrap()), "{e}"),
            Ok((_, r)) => assert!(!r.problems.is_empty(), "cut at {cut}: {r:?}"),
        }
    }
    // Garbled records: flip bytes in the data section.
    let mut bad = whole.clone();
    for i in (whole.len() / 3..whole.len() / 3 + 4096).step_by(7) {
        bad[i] ^= 0x5a;
    }
    let p = tmp("garbled.data");
    std::fs::write(&p, &bad).unwrap();
    let _ = read_trace(&p);
    let o = anonmm(&["replay", p.to_str().unwrap()]);
    assert!(matches!(o.status.code(), Some(0..=2)), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Record `command` with `anonmm record` (perf.data) and make its `perf script` text as
/// shared/record.sh does; None (and a message) where perf cannot record.
fn record(name: &str, command: &[&str]) -> Option<(PathBuf, PathBuf)> {
    let out = tmp(&format!("{name}.data"));
    let mut args = vec!["record", "-o", out.to_str().unwrap(), "--"];
    args.extend_from_slice(command);
    let o = anonmm(&args);
    if o.status.code() == Some(2) {
        eprintln!("skipped: perf cannot record here: {}", String::from_utf8_lossy(&o.stderr).trim());
        return None;
    }
    assert!(o.status.success(), "record failed: {}", String::from_utf8_lossy(&o.stderr));
    let text = tmp(&format!("{name}.perf.txt"));
    let script = Command::new("perf")
        .args([
            "script",
            "-i",
            out.to_str().unwrap(),
            "--show-mmap-events",
            "-F",
            "comm,pid,tid,time,event,trace",
        ])
        .stderr(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(script.status.success());
    std::fs::write(&text, &script.stdout).unwrap();
    Some((out, text))
}

#[test]
fn recordings_made_here_read_as_perf_script_prints_them() {
    let input = tmp("numbers");
    let numbers: String =
        (0..150_000u32).map(|i| format!("{}\n", i.wrapping_mul(2_654_435_761) % 1_000_003)).collect();
    std::fs::write(&input, numbers).unwrap();
    let sort = format!(
        "sort --parallel=2 -S 64M -n {} -o /dev/null; ls / >/dev/null; (true &); wait",
        input.display()
    );
    let Some((data_file, text_file)) = record("sort", &["sh", "-c", &sort]) else { return };
    assert_eq!(text_of(&data_file), std::fs::read_to_string(&text_file).unwrap());
    let (_, r) = same_import(&data_file, &text_file);
    assert!(r.processes >= 3, "{r:?}");
    assert_eq!(replay_rows(&data_file, "all"), replay_rows(&text_file, "all"));
    // Compressed as a whole, it is read the same.
    let zst = tmp("sort.data.zst");
    let o = anonmm(&["record", "-o", zst.to_str().unwrap(), "--", "true"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read(&zst).unwrap().starts_with(&[0x28, 0xb5, 0x2f, 0xfd]));
    let o = anonmm(&["replay", zst.to_str().unwrap(), "--format", "json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn policy_all_gives_each_policy_s_own_row() {
    // `--policy all` streams one import into one replay per policy at the same time; each
    // row is the one that policy gives alone.
    let trace = data("sort-threads.perf.data.zst");
    let all = replay_rows(&trace, "all");
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), anonmm::report::POLICIES.len());
    for (row, p) in all.iter().zip(anonmm::report::POLICIES) {
        let one = replay_rows(&trace, p);
        assert_eq!(row, &one[0], "{p}");
    }
}

/// Every step a streamed import hands on, as `LINE PID CALL EXPECT TEXT` (the text formatted,
/// as a streamed step leaves it to be), and how it ended.
fn streamed_steps(path: &Path) -> (Vec<String>, anonmm::import::StreamEnd) {
    let mut s = anonmm::import::stream_trace(path).unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    while let Some(b) = s.next_batch() {
        for st in &b {
            let st = st.step();
            out.push(format!("{} {} {:?} {:?} {}", st.line, st.pid.0, st.call, st.expect, st.call_text()));
        }
        s.recycle(b);
    }
    (out, s.finish())
}

#[test]
fn streamed_steps_of_a_perf_data_are_those_of_its_text() {
    // The records are converted straight into steps (no text on the way): the sequence the
    // replay is given is the one the `perf script` text gives, step for step.
    let (a, ea) = streamed_steps(&data("sort-threads.perf.data.zst"));
    let (b, eb) = streamed_steps(&data("sort-threads.perf.txt.zst"));
    assert!(a.len() > 4000, "{}", a.len());
    assert_eq!(a, b);
    assert_eq!(ea, eb);
    assert!(ea.exact);
}

#[test]
fn policy_all_gives_the_same_outcomes_whatever_number_runs_at_once() {
    // With fewer threads than policies, the policies after the first ones replay the steps
    // the import kept: the outcomes are those of all at once.
    let trace = data("sort-threads.perf.data.zst");
    let opts: Vec<anonmm::run::RunOptions> = anonmm::policy::ALL_POLICIES
        .iter()
        .map(|&policy| anonmm::run::RunOptions { policy, ..Default::default() })
        .collect();
    let outcomes = |at_once: usize| -> Vec<String> {
        let (runs, report) =
            anonmm::replay::replay_trace_all_on(&trace, &opts, 5, at_once, &mut |_| {}).unwrap();
        assert!(report.steps > 4000);
        runs.into_iter().map(|r| format!("{:?}", r.map(|(out, _)| out).unwrap())).collect()
    };
    let all = outcomes(opts.len());
    assert_eq!(all.len(), opts.len());
    assert_eq!(outcomes(1), all);
    assert_eq!(outcomes(2), all);
}
