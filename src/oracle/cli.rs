//! The oracle's CLI commands: `run --native`, `diff`, `fuzz` (stub).

use std::collections::BTreeMap;
use std::path::Path;

use crate::run::{RunOptions, run_script};
use crate::script::{Script, parse_file};
use crate::snapshot::{
    PageName, PageView, ProcView, StepView, format_maps_text, format_smaps_text, steps_to_json,
};
use crate::types::Pid;

use crate::kernel::Kernel;

use super::vm::Target;
use super::{NativeStep, OracleError, available, format_outcome};

/// Run `f`, turning a panic (an unfinished stub) into `None` without the panic message.
fn quietly<T>(f: impl FnOnce() -> T + std::panic::UnwindSafe) -> Option<T> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(f).ok();
    std::panic::set_hook(hook);
    r
}

fn parse(path: &Path) -> Result<Script, i32> {
    // The parser may still be a stub that panics: report it instead of crashing.
    match quietly(|| parse_file(path)) {
        Some(Ok(s)) => Ok(s),
        Some(Err(e)) => {
            eprintln!("{e}");
            Err(2)
        }
        None => {
            eprintln!("{}: the script parser failed (not built yet?)", path.display());
            Err(2)
        }
    }
}

fn check_available() -> Result<(), i32> {
    available().map_err(|e| {
        eprintln!("anonmm: kernel oracle unavailable: {e}");
        2
    })
}

/// The host's kernel when it is `kernel`, else a VM booted with it.
fn target(kernel: Kernel) -> Result<Target, i32> {
    let t = Target::for_kernel(kernel).map_err(|e| {
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
/// With `smaps`, the text output adds the kernel's smaps of the window's VMAs.
pub fn cmd_run(path: &Path, json: bool, smaps: bool, kernel: Kernel) -> i32 {
    let script = match parse(path) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let mut target = match target(kernel) {
        Ok(t) => t,
        Err(c) => return c,
    };
    if !json {
        print!("{}", target.describe());
    }
    let steps = match run_steps(&mut target, &script, smaps) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return 2;
        }
    };
    if json {
        let views: Vec<StepView> = steps.iter().map(|s| s.view.clone()).collect();
        println!("{}", steps_to_json(&views));
    } else if let Some(last) = steps.last() {
        if smaps {
            print!("{}", format_smaps_text(&last.view.procs));
        } else {
            print!("{}", format_maps_text(&last.view.procs));
        }
    }
    let mut bad = 0;
    for (step, got) in script.steps.iter().zip(&steps) {
        if let Some(e) = &step.expect
            && *e != got.got
        {
            eprintln!(
                "{}:{}: expected {}, got {}",
                script.path,
                step.line,
                format_outcome(&step.call, e),
                format_outcome(&step.call, &got.got)
            );
            bad += 1;
        }
    }
    if bad > 0 { 1 } else { 0 }
}

fn page_text(p: &PageView) -> String {
    let name = match p.page {
        PageName::Page(n) => n.to_string(),
        PageName::Swap => "swap".to_string(),
        PageName::Migration => "migration".to_string(),
    };
    format!("{:#x} page={name} excl={} tag={:#x}", p.addr, p.exclusive as u8, p.tag)
}

/// Two columns; rows that differ start with `!`.
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

/// What differs between the model's and the kernel's view of one step (empty if nothing).
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
        let mp: Vec<String> = m.pages.iter().map(page_text).collect();
        let kp: Vec<String> = k.pages.iter().map(page_text).collect();
        side_by_side(&mut out, &format!("pid {} pages", pid.0), &mp, &kp);
        // Empty on both sides unless smaps were asked for.
        let ms: Vec<String> = m.smaps.iter().map(crate::smaps::Smaps::compared).collect();
        let ks: Vec<String> = k.smaps.iter().map(crate::smaps::Smaps::compared).collect();
        side_by_side(&mut out, &format!("pid {} smaps", pid.0), &ms, &ks);
    }
    out
}

/// `anonmm oracle diff`: run the model and the kernel on each script (one boot of the VM
/// for all of them) and print the first step where they differ. With `smaps`, the smaps
/// fields the model knows are compared too. The exit status is the worst of the scripts'.
pub fn cmd_diff(paths: &[std::path::PathBuf], smaps: bool, kernel: Kernel) -> i32 {
    let mut target = match target(kernel) {
        Ok(t) => t,
        Err(c) => return c,
    };
    print!("{}", target.describe());
    paths.iter().map(|p| diff_one(&mut target, p, smaps, kernel)).max().unwrap_or(0)
}

fn diff_one(target: &mut Target, path: &Path, smaps: bool, kernel: Kernel) -> i32 {
    let script = match parse(path) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let opts = RunOptions { smaps, config: target.config(kernel), ..Default::default() };
    let model = match quietly(|| run_script(&script, &opts)) {
        Some(Ok(r)) => r.steps,
        Some(Err(e)) => {
            eprintln!("model: {e}");
            return 2;
        }
        None => {
            eprintln!("{}: the model failed (panicked; not built yet?)", path.display());
            return 2;
        }
    };
    let kernel = match run_steps(target, &script, smaps) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return 2;
        }
    };
    for (m, k) in model.iter().zip(&kernel) {
        let d = diff_step(m, &k.view);
        if !d.is_empty() {
            println!("{}:{}: [{}] {}", path.display(), k.view.line, k.view.pid.0, k.view.call);
            print!("{d}");
            return 1;
        }
    }
    if model.len() != kernel.len() {
        println!("{}: the model reported {} steps, the kernel {}", path.display(), model.len(), kernel.len());
        return 1;
    }
    println!("{}: no difference in {} steps", path.display(), kernel.len());
    0
}
