//! The oracle's CLI commands: `oracle run` and `oracle diff` (`oracle fuzz` is in fuzz.rs),
//! and the field-by-field difference of two views that `diff` and the fuzzer print.

use std::collections::BTreeMap;
use std::path::Path;

use crate::run::{RunOptions, run_script};
use crate::script::{Script, parse_file};
use crate::snapshot::{
    PageName, PageView, ProcView, StepView, format_maps_text, format_smaps_text, step_to_json,
};
use crate::types::Pid;

use crate::kernel::Kernel;

use super::vm::Target;
use super::{NativeStep, OracleError, available, format_outcome};

/// Run `f`, turning a panic of the model into an error that carries its message and where
/// it happened (a bug report needs both; the hook prints the backtrace when asked for).
fn catching<T>(f: impl FnOnce() -> T + std::panic::UnwindSafe) -> Result<T, String> {
    std::panic::catch_unwind(f).map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic without a message".to_string())
    })
}

fn parse(path: &Path) -> Result<Script, i32> {
    parse_file(path).map_err(|e| {
        eprintln!("anonmm: {e}");
        2
    })
}

/// `FILE:LINE: reason` for an oracle error (`FILE: reason` when no line is concerned).
fn oracle_error(path: &Path, e: &super::OracleError) -> String {
    use super::OracleError as E;
    let file = path.display().to_string();
    match e {
        E::Refused { line, reason } => {
            format!("{}: refused by the kernel oracle: {reason}", crate::out::location(&file, *line))
        }
        E::BadInput { line, reason } => format!("{}: {reason}", crate::out::location(&file, *line)),
        E::WorkerDied { line, reason } => {
            format!("{}: worker process failed: {reason}", crate::out::location(&file, *line))
        }
        #[allow(unreachable_patterns)]
        e => format!("{file}: {e}"),
    }
}

fn check_available() -> Result<(), i32> {
    available().map_err(|e| {
        eprintln!("anonmm: kernel oracle unavailable: {e}");
        2
    })
}

/// The host's kernel when it is `kernel`, else a VM booted with it (with the inspection
/// module loaded when `internal`).
fn target(kernel: Kernel, internal: bool) -> Result<Target, i32> {
    let t = super::kmod::target(kernel, internal).map_err(|e| {
        eprintln!("anonmm: {e}");
        2
    })?;
    if matches!(t, Target::Native) {
        check_available()?;
    }
    Ok(t)
}

/// Every step on `target`; a step it ran incomparably is an error.
fn run_steps(target: &mut Target, script: &Script, smaps: bool) -> Result<Vec<NativeStep>, OracleError> {
    match target.run_prefix(script, smaps)? {
        (steps, None) => Ok(steps),
        (_, Some(e)) => Err(e),
    }
}

/// `anonmm run --native`: run the script on the kernel, print the final maps (text) or every
/// step (json), and report recorded results the kernel did not reproduce (exit 1).
/// With `smaps`, the text output adds the kernel's smaps of the window's VMAs; with
/// `internal` (a VM kernel), the JSON adds each process's `vmas` and `folios`.
pub fn cmd_run(path: &Path, json: bool, smaps: bool, kernel: Kernel, internal: bool) -> i32 {
    let script = match parse(path) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let mut target = match target(kernel, internal) {
        Ok(t) => t,
        Err(c) => return c,
    };
    if !json {
        crate::out!("{}", target.describe());
    }
    let steps = match run_steps(&mut target, &script, smaps) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("anonmm: {}", oracle_error(path, &e));
            return 2;
        }
    };
    if json {
        for (i, s) in steps.iter().enumerate() {
            crate::out!("{}{}", if i == 0 { "{\"steps\":[" } else { "," }, step_to_json(&s.view));
        }
        crate::outln!("{}", if steps.is_empty() { "{\"steps\":[]}" } else { "]}" });
    } else if let Some(last) = steps.last() {
        if smaps {
            crate::out!("{}", format_smaps_text(&last.view.procs));
        } else {
            crate::out!("{}", format_maps_text(&last.view.procs));
        }
    }
    let bad = recorded_mismatches(&script, &steps, "got");
    i32::from(bad > 0)
}

/// Print (on stderr) every step whose result recorded in the script differs from the
/// kernel's; how many. `got` names the other side (`got`, `model and kernel gave`).
fn recorded_mismatches(script: &Script, steps: &[super::NativeStep], got: &str) -> usize {
    let mut bad = 0;
    for (step, k) in script.steps.iter().zip(steps) {
        if let Some(e) = &step.expect
            && *e != k.got
        {
            eprintln!(
                "anonmm: {}:{}: expected {}, {got} {}",
                script.path,
                step.line,
                format_outcome(&step.call, e),
                format_outcome(&step.call, &k.got)
            );
            bad += 1;
        }
    }
    bad
}

/// Differences listed per process and kind before the rest are counted.
const MAX_LISTED: usize = 20;

fn page_name(p: PageName) -> String {
    match p {
        PageName::Page(n) => n.to_string(),
        PageName::Swap => "swap".to_string(),
        PageName::Migration => "migration".to_string(),
        PageName::Guard => "guard".to_string(),
    }
}

/// Two columns of maps lines; rows that differ start with `!`.
fn side_by_side(out: &mut String, title: &str, left: &[String], right: &[String]) {
    if left == right {
        return;
    }
    let w = left.iter().map(String::len).max().unwrap_or(0).max(5);
    out.push_str(&format!("  {title}:\n    {:<w$} | kernel\n", "model"));
    for i in 0..left.len().max(right.len()) {
        let l = left.get(i).map_or("", String::as_str);
        let r = right.get(i).map_or("", String::as_str);
        let mark = if left.get(i) == right.get(i) { ' ' } else { '!' };
        out.push_str(&format!("  {mark} {l:<w$} | {r}\n"));
    }
}

/// `lines` under `title`, the first [`MAX_LISTED`] of them, then how many more.
fn listed(out: &mut String, title: &str, lines: &[String]) {
    if lines.is_empty() {
        return;
    }
    out.push_str(&format!("  {title}:\n"));
    for l in lines.iter().take(MAX_LISTED) {
        out.push_str(&format!("    {l}\n"));
    }
    if lines.len() > MAX_LISTED {
        out.push_str(&format!("    ... and {} more\n", lines.len() - MAX_LISTED));
    }
}

/// The pages that differ, by address, each with only its fields that differ:
/// `0x200000001000: excl model 1, kernel 0`.
fn page_differences(model: &[PageView], kernel: &[PageView]) -> Vec<String> {
    let m: BTreeMap<u64, &PageView> = model.iter().map(|p| (p.addr, p)).collect();
    let k: BTreeMap<u64, &PageView> = kernel.iter().map(|p| (p.addr, p)).collect();
    let addrs: std::collections::BTreeSet<u64> = m.keys().chain(k.keys()).copied().collect();
    let whole =
        |p: &PageView| format!("page {} excl {} tag {:#x}", page_name(p.page), u8::from(p.exclusive), p.tag);
    let mut out = Vec::new();
    for a in addrs {
        match (m.get(&a), k.get(&a)) {
            (Some(x), Some(y)) if x == y => {}
            (Some(x), Some(y)) => {
                let mut d = Vec::new();
                if x.page != y.page {
                    d.push(format!("page model {}, kernel {}", page_name(x.page), page_name(y.page)));
                }
                if x.exclusive != y.exclusive {
                    d.push(format!("excl model {}, kernel {}", u8::from(x.exclusive), u8::from(y.exclusive)));
                }
                if x.tag != y.tag {
                    d.push(format!("tag model {:#x}, kernel {:#x}", x.tag, y.tag));
                }
                out.push(format!("{a:#x}: {}", d.join("; ")));
            }
            (Some(x), None) => out.push(format!("{a:#x}: model {}, kernel not present", whole(x))),
            (None, Some(y)) => out.push(format!("{a:#x}: model not present, kernel {}", whole(y))),
            (None, None) => {}
        }
    }
    out
}

/// The smaps entries that differ, by VMA, each with only its compared fields that differ:
/// `200000000000-200000200000 AnonHugePages: model 2048 kB, kernel 0 kB`.
fn smaps_differences(model: &[crate::smaps::Smaps], kernel: &[crate::smaps::Smaps]) -> Vec<String> {
    let key = |e: &crate::smaps::Smaps| (e.start, e.end);
    let m: BTreeMap<(u64, u64), &crate::smaps::Smaps> = model.iter().map(|e| (key(e), e)).collect();
    let k: BTreeMap<(u64, u64), &crate::smaps::Smaps> = kernel.iter().map(|e| (key(e), e)).collect();
    let vmas: std::collections::BTreeSet<(u64, u64)> = m.keys().chain(k.keys()).copied().collect();
    let mut out = Vec::new();
    for v in vmas {
        let name = format!("{:x}-{:x}", v.0, v.1);
        match (m.get(&v), k.get(&v)) {
            (Some(x), Some(y)) => {
                out.extend(x.differences(y).into_iter().map(|d| format!("{name} {d}")));
            }
            (Some(_), None) => out.push(format!("{name}: only in the model's smaps")),
            (None, Some(_)) => out.push(format!("{name}: only in the kernel's smaps")),
            (None, None) => {}
        }
    }
    out
}

/// What differs between the model's and the kernel's view of one step (empty if nothing):
/// the result, the processes, the maps side by side, and the pages and smaps fields that
/// differ, each on a line of its own.
pub(crate) fn diff_step(model: &StepView, kernel: &StepView) -> String {
    let mut out = String::new();
    if model.result != kernel.result {
        out.push_str(&format!("  result: model {} | kernel {}\n", model.result, kernel.result));
    }
    let empty = ProcView::default();
    let pids: std::collections::BTreeSet<Pid> =
        model.procs.keys().chain(kernel.procs.keys()).copied().collect();
    let procs = |m: &BTreeMap<Pid, ProcView>| m.keys().map(|p| p.0.to_string()).collect::<Vec<_>>();
    if model.procs.len() != kernel.procs.len() || model.procs.keys().ne(kernel.procs.keys()) {
        out.push_str(&format!(
            "  processes: model = [{}] | kernel = [{}]\n",
            procs(&model.procs).join(", "),
            procs(&kernel.procs).join(", ")
        ));
    }
    for pid in pids {
        let m = model.procs.get(&pid).unwrap_or(&empty);
        let k = kernel.procs.get(&pid).unwrap_or(&empty);
        side_by_side(&mut out, &format!("pid {} maps", pid.0), &m.maps, &k.maps);
        listed(&mut out, &format!("pid {} pages", pid.0), &page_differences(&m.pages, &k.pages));
        // Empty on both sides unless smaps were asked for.
        listed(&mut out, &format!("pid {} smaps", pid.0), &smaps_differences(&m.smaps, &k.smaps));
        // Compared when both sides have it (`--internal` on a VM kernel).
        if let (Some(mi), Some(ki)) = (&m.internal, &k.internal) {
            listed(&mut out, &format!("pid {} internal", pid.0), &crate::internal::differences(mi, ki));
        }
    }
    out
}

/// `anonmm oracle diff`: run the model and the kernel on each script (one boot of the VM
/// for all of them) and print the first step where they differ. With `smaps`, the smaps
/// fields the model knows are compared too. The exit status is the worst of the scripts'.
/// With `internal`, the kernel's own VMAs, anon_vmas and folios are compared too.
pub fn cmd_diff(paths: &[std::path::PathBuf], smaps: bool, kernel: Kernel, internal: bool) -> i32 {
    let mut target = match target(kernel, internal) {
        Ok(t) => t,
        Err(c) => return c,
    };
    crate::out!("{}", target.describe());
    paths.iter().map(|p| diff_one(&mut target, p, smaps, kernel)).max().unwrap_or(0)
}

fn diff_one(target: &mut Target, path: &Path, smaps: bool, kernel: Kernel) -> i32 {
    let script = match parse(path) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let opts = RunOptions {
        smaps,
        internal: target.internal(),
        config: target.config(kernel),
        ..Default::default()
    };
    let model = match catching(|| run_script(&script, &opts)) {
        Ok(Ok(r)) => r.steps,
        Ok(Err(e)) => {
            eprintln!("anonmm: model: {e}");
            return 2;
        }
        Err(msg) => {
            eprintln!("anonmm: {}: the model panicked (a bug; please report it): {msg}", path.display());
            return 2;
        }
    };
    let kernel = match run_steps(target, &script, smaps) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("anonmm: {}", oracle_error(path, &e));
            return 2;
        }
    };
    for (i, (m, k)) in model.iter().zip(&kernel).enumerate() {
        let d = diff_step(m, &k.view);
        if !d.is_empty() {
            crate::outln!("{}:{}: [{}] {}", path.display(), k.view.line, k.view.pid.0, k.view.call);
            crate::out!("{d}");
            // As `oracle fuzz` does: a kernel run that differs from this one up to here
            // means the kernel's timing decides this step.
            for _ in 0..crate::fuzz::KERNEL_RERUNS {
                if let Ok(again) = run_steps(target, &script, smaps)
                    && (again.len() <= i
                        || again[..=i].iter().zip(&kernel[..=i]).any(|(a, b)| a.view != b.view))
                {
                    crate::outln!(
                        "  (the kernel disagreed with itself: another run differs up to this step, so this may be its timing, not the model)"
                    );
                    break;
                }
            }
            return 1;
        }
    }
    if model.len() != kernel.len() {
        crate::outln!(
            "{}: the model reported {} steps, the kernel {}",
            path.display(),
            model.len(),
            kernel.len()
        );
        return 1;
    }
    // Model and kernel agree; the script's recorded results may still say otherwise.
    let bad = recorded_mismatches(&script, &kernel, "model and kernel gave");
    if bad > 0 {
        crate::outln!(
            "{}: model and kernel agree in {} steps, but {bad} recorded result{} differ{}",
            path.display(),
            kernel.len(),
            if bad == 1 { "" } else { "s" },
            if bad == 1 { "s" } else { "" }
        );
        return 1;
    }
    let recorded = script.steps.iter().filter(|s| s.expect.is_some()).count();
    crate::outln!(
        "{}: no difference in {} steps ({recorded} recorded results matched)",
        path.display(),
        kernel.len()
    );
    0
}

/// `anonmm graph --kernel K --from-oracle`: run the script in the VM with the inspection
/// module and in the model (same kernel profile, the VM's settings), and draw the kernel's
/// rmap picture beside the model's at the step on `opts.at` (default: the last), with
/// [`anonmm_harness::graph::compare_dot`]. The DOT text, or the exit status (2) after the
/// error is printed.
pub fn graph_from_oracle(script: &Script, opts: &anonmm_harness::graph::GraphOptions) -> Result<String, i32> {
    let fail = |line: usize, reason: String| {
        eprintln!("anonmm: {}: {reason}", crate::out::location(&script.path, line));
        2
    };
    if let Some(at) = opts.at
        && !script.steps.iter().any(|s| s.line == at)
    {
        return Err(fail(at, format!("--at {at}: no call on that line")));
    }
    if opts.kernel == Kernel::V6_18 {
        eprintln!(
            "anonmm: graph --from-oracle reads the kernel's structures with the anonmm_inspect module \
             built against Debian's headers of the VM's kernel: it runs with --kernel 6.1 or 6.12 \
             (the host's 6.18 has no headers package); without --from-oracle, `graph --kernel 6.18` \
             draws the model alone"
        );
        return Err(2);
    }
    let mut target = target(opts.kernel, true)?;
    let ropts = RunOptions {
        internal: true,
        policy: opts.policy,
        config: target.config(opts.kernel),
        ..Default::default()
    };
    let model = match catching(|| run_script(script, &ropts)) {
        Ok(Ok(r)) => r.steps,
        Ok(Err(e)) => return Err(fail(0, format!("model: {e}"))),
        Err(msg) => return Err(fail(0, format!("the model panicked (a bug; please report it): {msg}"))),
    };
    let kernel = run_steps(&mut target, script, false)
        .map_err(|e| fail(0, oracle_error(Path::new(&script.path), &e)))?;
    let i = match opts.at {
        Some(at) => kernel.iter().position(|k| k.view.line == at),
        None => kernel.len().checked_sub(1),
    }
    .ok_or_else(|| fail(opts.at.unwrap_or(0), "the kernel ran no step to draw".to_string()))?;
    let Some(m) = model.get(i).filter(|m| m.line == kernel[i].view.line) else {
        return Err(fail(kernel[i].view.line, "the model did not reach this step".to_string()));
    };
    let views = |v: &StepView| -> BTreeMap<Pid, crate::internal::InternalView> {
        v.procs.iter().filter_map(|(p, pv)| Some((*p, pv.internal.clone()?))).collect()
    };
    let (kv, mv) = (views(&kernel[i].view), views(m));
    if let Some(p) = opts.pid
        && !kv.contains_key(&p)
        && !mv.contains_key(&p)
    {
        return Err(fail(kernel[i].view.line, format!("--pid {}: no such live process at that step", p.0)));
    }
    let kt = format!("kernel {} (VM)", opts.kernel);
    let mt = match opts.policy {
        crate::policy::Policy::Kernel => format!("model {}", opts.kernel),
        p => format!("model {} ({p})", opts.kernel),
    };
    let k = anonmm_harness::graph::Side { title: &kt, procs: &kv };
    let m = anonmm_harness::graph::Side { title: &mt, procs: &mv };
    Ok(anonmm_harness::graph::compare_dot(&k, &m, opts.pid, opts.max_folios))
}
