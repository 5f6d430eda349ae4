//! The model against the kernel scenario scripts (`tests/scenarios`, `tests/regressions`):
//! every script runs with the invariant checker after every step, must reproduce every recorded
//! result, must satisfy every `# expect:` comment at its point of the script, and must end with
//! the kernel's final maps pinned in `X.expected` (made by `BLESS=1 cargo test --release --test
//! oracle_scenarios`).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anonmm::run::{RunOptions, Runner};
use anonmm::script::parse_file;
use anonmm::snapshot::{ProcView, format_maps_text};
use anonmm::types::Pid;
use common::{ExpectItem, ExpectLine, check_expect, expect_lines, parse_item};

/// What one script's model run found.
struct Outcome {
    /// Number of `# expect:` lines checked.
    expects: usize,
    problems: Vec<String>,
}

fn run_one(path: &Path) -> Result<Outcome, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let script = parse_file(path).map_err(|e| e.to_string())?;
    let expects = expect_lines(&script, &text)?;
    let opts = RunOptions { check: true, ..Default::default() };
    let mut runner = Runner::new(&script, &opts).map_err(|e| e.to_string())?;
    let mut problems = Vec::new();
    let n = script.steps.len();
    let mut final_procs = BTreeMap::new();
    for (i, step) in script.steps.iter().enumerate() {
        // A view only where something looks at it: the 2 GiB scripts have 2052 steps.
        let here: Vec<&ExpectLine> = expects.iter().filter(|e| e.step == i).collect();
        let view = !here.is_empty() || i + 1 == n;
        runner.step(step, view).map_err(|e| e.to_string())?;
        if view {
            let procs = std::mem::take(&mut runner.result.steps.last_mut().unwrap().procs);
            problems.extend(here.iter().filter_map(|e| check_expect(e, &procs).err()));
            if i + 1 == n {
                final_procs = procs;
            }
        }
    }
    for m in &runner.result.mismatches {
        problems.push(format!("line {}: recorded {}, model {}", m.line, m.expected, m.got));
    }
    problems.extend(check_final(path, &final_procs).err());
    Ok(Outcome { expects: expects.len(), problems })
}

/// The final maps against `X.expected`.
fn check_final(path: &Path, procs: &BTreeMap<Pid, ProcView>) -> Result<(), String> {
    let exp = common::expected_path(path);
    let want = std::fs::read_to_string(&exp).map_err(|e| {
        format!("{}: {e} (make it with BLESS=1 cargo test --release --test oracle_scenarios)", exp.display())
    })?;
    let got = format_maps_text(procs);
    if got == want {
        return Ok(());
    }
    Err(format!("final maps differ from {}:\n{}", exp.display(), common::line_diff(&want, &got)))
}

#[test]
fn model_matches_kernel_scenarios() {
    let mut paths: Vec<PathBuf> = common::scripts();
    // Slowest first (the 2 GiB mremap scripts), so the threads finish together.
    paths.sort_by_key(|p| std::cmp::Reverse(std::fs::metadata(p).map_or(0, |m| m.len())));
    let t = std::time::Instant::now();
    let results = common::par_map(&paths, |p| common::no_panic(|| run_one(p)));
    let mut failures = Vec::new();
    let mut expects = 0;
    for (p, r) in paths.iter().zip(results) {
        match r {
            Ok(o) => {
                expects += o.expects;
                if !o.problems.is_empty() {
                    failures.push((common::short(p), o.problems.join("\n")));
                }
            }
            Err(e) => failures.push((common::short(p), e)),
        }
    }
    failures.sort();
    eprintln!("{} scripts, {expects} `# expect:` lines checked in {:.1?}", paths.len(), t.elapsed());
    assert!(failures.is_empty(), "{}", common::report(&failures, paths.len(), "model"));
    // Guard against the parser silently finding nothing.
    assert!(expects >= 100, "only {expects} `# expect:` lines found");
}

#[test]
fn expect_syntax() {
    assert_eq!(parse_item(" VMA [0x1000, 0x3000)"), Ok(ExpectItem::Vma(0x1000, 0x3000)));
    assert_eq!(
        parse_item("unmapped [0x200000000000, 0x200000001000)  (note (nested))"),
        Ok(ExpectItem::Unmapped(0x200000000000, 0x200000001000))
    );
    assert!(parse_item("VMA [0x3000, 0x1000)").is_err());
    assert!(parse_item("VMA [0x1000, 0x3000) stray").is_err());
    assert!(parse_item("vma [0x1000, 0x3000)").is_err());
    assert!(parse_item("VMA [1000, 3000)").is_err());
}

#[test]
fn expect_lines_follow_the_preceding_call() {
    let text = "1 mmap(0x200000000000, 16384, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED_NOREPLACE, -1, 0) = 0x200000000000\n\
                # expect: VMA [0x200000000000, 0x200000004000)\n\
                1 fork() = 2\n\
                2 munmap(0x200000001000, 4096) = 0\n\
                # expect: VMA [0x200000000000, 0x200000001000); unmapped [0x200000001000, 0x200000002000)\n\
                1 touch(0x200000000000, 4096, \"w\") = 0\n\
                # expect: VMA [0x200000000000, 0x200000004000)\n\
                # expect: VMA [0x200000000000, 0x200000001000)\n";
    let script = anonmm::script::parse_str("t.strace", text).unwrap();
    let ex = expect_lines(&script, text).unwrap();
    assert_eq!(
        ex.iter().map(|e| (e.line, e.step, e.pid.0)).collect::<Vec<_>>(),
        [(2, 0, 1), (5, 2, 2), (7, 3, 1), (8, 3, 1)]
    );
    let run = anonmm::run::run_script(&script, &RunOptions { check: true, ..Default::default() }).unwrap();
    let at = |e: &ExpectLine| check_expect(e, &run.steps[e.step].procs);
    assert_eq!(at(&ex[0]), Ok(()));
    assert_eq!(at(&ex[1]), Ok(()));
    assert_eq!(at(&ex[2]), Ok(()));
    // Pid 1 was not split by the child's munmap: this one must fail and say why.
    let err = at(&ex[3]).unwrap_err();
    assert!(err.starts_with("line 8: pid 1 fails `VMA [0x200000000000, 0x200000001000)`"), "{err}");
    assert!(err.contains("200000000000-200000004000 rw-p"), "{err}");
    // An expect before any call, and a malformed item, are errors, not silently skipped.
    assert!(expect_lines(&script, "# expect: VMA [0x1000, 0x2000)\n").is_err());
    let bad = text.replace("unmapped [", "unmaped [");
    assert!(expect_lines(&script, &bad).unwrap_err().starts_with("line 5: unknown item"));
}
