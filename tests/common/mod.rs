//! Shared by `tests/scenarios.rs` (model), `tests/oracle_scenarios.rs` (kernel) and
//! `tests/policy_scenarios.rs` (policies): the list of scenario scripts, their pinned `.expected`
//! outputs, header comments, and the machine-checkable `# expect:` comments (syntax in
//! `tests/scenarios/README.md`).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anonmm::script::{Call, Expect, Script};
use anonmm::snapshot::ProcView;
use anonmm::types::Pid;

/// Every `*.strace` in `tests/scenarios` and `tests/regressions`, sorted.
pub fn scripts() -> Vec<PathBuf> {
    scripts_in(&["scenarios", "regressions"])
}

/// Every `*.strace` in the given directories under `tests/`, sorted.
pub fn scripts_in(dirs: &[&str]) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut out = Vec::new();
    for dir in dirs {
        let d = root.join(dir);
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "strace") {
                out.push(p);
            }
        }
    }
    out.sort();
    assert!(!out.is_empty(), "no scenario scripts found");
    out
}

/// `tests/scenarios/X.strace` -> `tests/scenarios/X.expected`.
pub fn expected_path(script: &Path) -> PathBuf {
    script.with_extension("expected")
}

/// A short name for messages: `scenarios/X.strace`.
pub fn short(script: &Path) -> String {
    let dir = script.parent().and_then(|d| d.file_name()).map(|d| d.to_string_lossy().into_owned());
    format!("{}/{}", dir.unwrap_or_default(), script.file_name().unwrap().to_string_lossy())
}

/// The values of every `# KEY: value` comment line of a script's text (`# policy: relocate`,
/// `# known-divergence: ...`), in order.
pub fn header_values<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    let prefix = format!("# {key}:");
    text.lines().filter_map(|l| l.strip_prefix(prefix.as_str())).map(str::trim).collect()
}

/// One item of an `# expect:` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpectItem {
    /// A VMA spans exactly `[start, end)`.
    Vma(u64, u64),
    /// Nothing is mapped anywhere in `[start, end)`.
    Unmapped(u64, u64),
}

/// One `# expect:` line, tied to the step it follows.
#[derive(Clone, Debug)]
pub struct ExpectLine {
    /// 1-based line of the comment.
    pub line: usize,
    /// Index into `script.steps` of the preceding call line.
    pub step: usize,
    /// Whose address space: the preceding call's pid, or the child after `fork() = N`.
    pub pid: Pid,
    pub items: Vec<ExpectItem>,
}

fn parse_range(s: &str) -> Option<(u64, u64, &str)> {
    let s = s.strip_prefix('[')?;
    let (a, rest) = s.split_once(',')?;
    let (b, rest) = rest.split_once(')')?;
    let hex = |x: &str| u64::from_str_radix(x.trim().strip_prefix("0x")?, 16).ok();
    Some((hex(a)?, hex(b)?, rest))
}

/// Parse one item (`VMA [a, b)` or `unmapped [a, b)`, optionally followed by a `(note)`).
pub fn parse_item(item: &str) -> Result<ExpectItem, String> {
    let item = item.trim();
    let (kind, rest) = if let Some(r) = item.strip_prefix("VMA ") {
        (true, r)
    } else if let Some(r) = item.strip_prefix("unmapped ") {
        (false, r)
    } else {
        return Err(format!("unknown item `{item}`"));
    };
    let (a, b, note) = parse_range(rest.trim_start()).ok_or_else(|| format!("bad range in `{item}`"))?;
    let note = note.trim();
    if !(note.is_empty() || note.starts_with('(') && note.ends_with(')')) {
        return Err(format!("trailing text in `{item}`"));
    }
    if a >= b {
        return Err(format!("empty range in `{item}`"));
    }
    Ok(if kind { ExpectItem::Vma(a, b) } else { ExpectItem::Unmapped(a, b) })
}

/// All `# expect:` lines of `script` (read from its file). Malformed lines are errors, so that
/// every expectation written is actually checked.
pub fn expect_lines(script: &Script, text: &str) -> Result<Vec<ExpectLine>, String> {
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let line = i + 1;
        let Some(body) = l.strip_prefix("# expect:") else { continue };
        let Some(step) = script.steps.iter().rposition(|s| s.line < line) else {
            return Err(format!("line {line}: `# expect:` before any call"));
        };
        let s = &script.steps[step];
        let pid = match (&s.call, s.expect) {
            (Call::Fork { .. }, Some(Expect::Value(n))) => Pid(n as u32),
            (Call::Fork { .. }, _) => return Err(format!("line {line}: follows a fork without its pid")),
            _ => s.pid,
        };
        let items = body.split(';').map(parse_item).collect::<Result<Vec<_>, _>>();
        let items = items.map_err(|e| format!("line {line}: {e}"))?;
        out.push(ExpectLine { line, step, pid, items });
    }
    Ok(out)
}

/// The `[start, end)` of a `/proc/pid/maps` line.
fn maps_range(l: &str) -> (u64, u64) {
    let r = l.split_whitespace().next().expect("empty maps line");
    let (a, b) = r.split_once('-').expect("maps range");
    (u64::from_str_radix(a, 16).unwrap(), u64::from_str_radix(b, 16).unwrap())
}

/// Check one `# expect:` line against the processes' state after its step; `Err` says which
/// item failed and shows the maps.
pub fn check_expect(e: &ExpectLine, procs: &BTreeMap<Pid, ProcView>) -> Result<(), String> {
    let Some(p) = procs.get(&e.pid) else {
        return Err(format!("line {}: process {} is not alive", e.line, e.pid.0));
    };
    let ranges: Vec<(u64, u64)> = p.maps.iter().map(|l| maps_range(l)).collect();
    let mut bad = Vec::new();
    for item in &e.items {
        let ok = match *item {
            ExpectItem::Vma(a, b) => ranges.contains(&(a, b)),
            ExpectItem::Unmapped(a, b) => ranges.iter().all(|&(s, t)| t <= a || s >= b),
        };
        if !ok {
            bad.push(match *item {
                ExpectItem::Vma(a, b) => format!("VMA [{a:#x}, {b:#x})"),
                ExpectItem::Unmapped(a, b) => format!("unmapped [{a:#x}, {b:#x})"),
            });
        }
    }
    if bad.is_empty() {
        return Ok(());
    }
    let maps: Vec<String> = p.maps.iter().map(|l| format!("      {l}")).collect();
    Err(format!("line {}: pid {} fails `{}`; maps:\n{}", e.line, e.pid.0, bad.join("; "), maps.join("\n")))
}

/// A failing script's name and what went wrong, for one combined assertion message.
pub fn report(failures: &[(String, String)], total: usize, what: &str) -> String {
    let mut s = format!("{} of {total} scripts failed ({what}):\n", failures.len());
    for (name, why) in failures {
        s.push_str(&format!("--- {name}\n{}\n", why.trim_end()));
    }
    s
}

/// `f` over `items` on all cores (results in input order). Items are taken in order, so put
/// the slow ones first.
pub fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let n = std::thread::available_parallelism().map_or(2, |n| n.get()).min(items.len().max(1));
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..n {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let r = f(item);
                    out.lock().unwrap()[i] = Some(r);
                }
            });
        }
    });
    out.into_inner().unwrap().into_iter().map(|r| r.expect("worker panicked")).collect()
}

/// Run `f`, turning a panic into `Err(message)`.
pub fn no_panic<R>(f: impl FnOnce() -> Result<R, String>) -> Result<R, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(format!("panicked: {msg}"))
        }
    }
}

/// `want` and `got` line by line; differing lines are marked `-` (want) and `+` (got).
pub fn line_diff(want: &str, got: &str) -> String {
    let (w, g): (Vec<&str>, Vec<&str>) = (want.lines().collect(), got.lines().collect());
    let mut out = String::new();
    for i in 0..w.len().max(g.len()) {
        match (w.get(i), g.get(i)) {
            (Some(a), Some(b)) if a == b => out.push_str(&format!("    {a}\n")),
            (a, b) => {
                if let Some(a) = a {
                    out.push_str(&format!("  - {a}\n"));
                }
                if let Some(b) = b {
                    out.push_str(&format!("  + {b}\n"));
                }
            }
        }
    }
    out
}
