//! The kernel scenario scripts on the real kernel (the oracle; needs root on Linux x86_64, else
//! the test says why and skips). For every script in `tests/scenarios` and `tests/regressions`:
//! - the kernel reproduces every recorded result and every `# expect:` comment;
//! - its final maps equal `X.expected`;
//! - every step's view (maps, pages, exclusivity, tags) equals the model's.
//!
//! `BLESS=1` rewrites the `.expected` files from the kernel instead of comparing with them (the
//! other checks still run).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anonmm::run::{RunOptions, Runner};
use anonmm::script::{format_result_for, parse_file};
use anonmm::snapshot::{PageView, ProcView, StepView, format_maps_text};
use common::{check_expect, expect_lines};

fn blessing() -> bool {
    std::env::var_os("BLESS").is_some_and(|v| !v.is_empty() && v != "0")
}

/// What differs between the model's and the kernel's view of one step (empty if nothing).
fn step_diff(model: &StepView, kernel: &StepView) -> String {
    let mut out = String::new();
    if model.result != kernel.result {
        out.push_str(&format!("  result: model {} | kernel {}\n", model.result, kernel.result));
    }
    let pids: BTreeSet<_> = model.procs.keys().chain(kernel.procs.keys()).collect();
    let empty = ProcView::default();
    for pid in pids {
        let (m, k) = (model.procs.get(pid), kernel.procs.get(pid));
        if m.is_none() || k.is_none() {
            out.push_str(&format!(
                "  pid {}: alive in the model {} | kernel {}\n",
                pid.0,
                m.is_some(),
                k.is_some()
            ));
        }
        let (m, k) = (m.unwrap_or(&empty), k.unwrap_or(&empty));
        if m.maps != k.maps {
            let (w, g) = (k.maps.join("\n"), m.maps.join("\n"));
            out.push_str(&format!(
                "  pid {} maps (- kernel, + model):\n{}",
                pid.0,
                common::line_diff(&w, &g)
            ));
        }
        if m.pages != k.pages {
            let pg = |p: Option<&PageView>| {
                p.map_or("-".to_string(), |p| {
                    format!("{:#x} page={:?} excl={} tag={:#x}", p.addr, p.page, p.exclusive as u8, p.tag)
                })
            };
            let i = (0..).find(|&i| m.pages.get(i) != k.pages.get(i)).unwrap();
            out.push_str(&format!(
                "  pid {} pages ({} in the model, {} in the kernel), first difference:\n    model  {}\n    kernel {}\n",
                pid.0,
                m.pages.len(),
                k.pages.len(),
                pg(m.pages.get(i)),
                pg(k.pages.get(i))
            ));
        }
    }
    out
}

/// Run one script on the kernel and the model; the problems found (empty if none) and
/// whether the `.expected` file was rewritten.
fn run_one(path: &Path, bless: bool) -> Result<(Vec<String>, bool), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    if text.lines().any(|l| l.starts_with("# oracle: model-only")) {
        // Placement relative to mmap_base cannot be run in the oracle's window; such a
        // script's truth comes from a replayed trace (its header says which).
        eprintln!("{}: model-only (the oracle cannot run it), skipped here", path.display());
        return Ok((Vec::new(), false));
    }
    let script = parse_file(path).map_err(|e| e.to_string())?;
    let expects = expect_lines(&script, &text)?;
    let kernel = anonmm::oracle::run_native(&script).map_err(|e| format!("kernel: {e}"))?;
    if kernel.len() != script.steps.len() {
        return Err(format!("the kernel ran {} of {} steps", kernel.len(), script.steps.len()));
    }
    let mut problems = Vec::new();

    // The script's own claims, on the kernel.
    for (step, k) in script.steps.iter().zip(&kernel) {
        if let Some(e) = &step.expect {
            let want = format_result_for(&step.call, e);
            if k.result != want {
                problems.push(format!("line {}: recorded {want}, kernel {}", step.line, k.result));
            }
        }
    }
    problems.extend(expects.iter().filter_map(|e| check_expect(e, &kernel[e.step].procs).err()));

    // The pinned final maps.
    let got = kernel.last().map(|s| format_maps_text(&s.procs)).unwrap_or_default();
    let exp = common::expected_path(path);
    let old = std::fs::read_to_string(&exp).ok();
    let mut rewritten = false;
    if bless {
        if old.as_deref() != Some(got.as_str()) {
            std::fs::write(&exp, &got).map_err(|e| format!("{}: {e}", exp.display()))?;
            rewritten = true;
        }
    } else {
        match old {
            None => problems.push(format!("{} missing (make it with BLESS=1)", exp.display())),
            Some(want) if want != got => problems.push(format!(
                "final maps differ from {}:\n{}",
                exp.display(),
                common::line_diff(&want, &got)
            )),
            Some(_) => {}
        }
    }

    // The model, step by step, compared as it goes (each view is dropped once compared).
    let opts = RunOptions::default();
    let mut runner = Runner::new(&script, &opts).map_err(|e| format!("model: {e}"))?;
    for (i, (step, k)) in script.steps.iter().zip(&kernel).enumerate() {
        if let Err(e) = runner.step(step, true) {
            problems.push(format!("model: {e}"));
            break;
        }
        let m = runner.result.steps.pop().expect("a view per step");
        let d = step_diff(&m, k);
        if !d.is_empty() {
            // As `oracle fuzz` does (KERNEL_RERUNS): if another kernel run differs up to this
            // step, the kernel's timing decides it (MADV_PAGEOUT right after swap-in faults,
            // tests/nondeterministic/), not the model.
            let nondet = (0..3).any(|_| {
                anonmm::oracle::run_native(&script)
                    .is_ok_and(|again| again.len() <= i || again[..=i] != kernel[..=i])
            });
            if nondet {
                eprintln!(
                    "{}: the kernel disagreed with itself up to line {}; not counted against the model",
                    path.display(),
                    k.line
                );
                break;
            }
            problems.push(format!(
                "model and kernel differ after line {}: [{}] {}\n{d}",
                k.line, k.pid.0, k.call
            ));
            break;
        }
    }
    Ok((problems, rewritten))
}

#[test]
fn kernel_agrees_or_skipped() {
    let mut paths: Vec<PathBuf> = common::scripts();
    if let Err(why) = anonmm::oracle::available() {
        skipped(
            "kernel_agrees_or_skipped",
            &format!("kernel oracle unavailable: {why}; {} scenarios not run", paths.len()),
        );
        return;
    }
    let bless = blessing();
    // Slowest first (the 2 GiB mremap scripts), so the threads finish together.
    paths.sort_by_key(|p| std::cmp::Reverse(std::fs::metadata(p).map_or(0, |m| m.len())));
    let t = std::time::Instant::now();
    let results = common::par_map(&paths, |p| common::no_panic(|| run_one(p, bless)));
    let mut failures = Vec::new();
    let mut rewritten = Vec::new();
    for (p, r) in paths.iter().zip(results) {
        match r {
            Ok((problems, re)) => {
                if re {
                    rewritten.push(common::short(p));
                }
                if !problems.is_empty() {
                    failures.push((common::short(p), problems.join("\n")));
                }
            }
            Err(e) => failures.push((common::short(p), e)),
        }
    }
    failures.sort();
    rewritten.sort();
    eprintln!("{} scripts on the kernel in {:.1?}", paths.len(), t.elapsed());
    if bless {
        eprintln!("BLESS: rewrote {} .expected files: {}", rewritten.len(), rewritten.join(", "));
    }
    assert!(failures.is_empty(), "{}", common::report(&failures, paths.len(), "kernel"));
}

/// Say that a test skipped its work, on the real stderr: the harness captures `eprintln!`
/// of passing tests, and a skipped test must not pass silently.
fn skipped(test: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "test {test}: SKIPPED: {why}");
}
