//! The policy scripts (`tests/policies`): translations of the self-tests that proposed kernel
//! series came with, with the outcomes those series expected. Every script names its policy in a
//! `# policy: NAME` header and is run twice:
//!
//! - under that policy, with the invariant checker after every step: every recorded result must
//!   be reproduced and every `# expect:` comment must hold at its point of the script;
//! - under `kernel` (Linux 6.18), where the only assertion is that every `mremap` carrying
//!   `MREMAP_RELOCATE_ANON` (8) or `MREMAP_MUST_RELOCATE_ANON` (16) fails with EINVAL, as the
//!   real kernel does (the checker still runs after every step).
//!
//! A script whose policy run disagrees with the series for a reason already reported carries a
//! `# known-divergence: <reason>` line: its policy-run problems are printed but do not fail the
//! test. Once the script passes, the line must go (the test fails until it is removed).

mod common;

use std::path::Path;

use anonmm::abi::{MREMAP_MUST_RELOCATE_ANON, MREMAP_RELOCATE_ANON};
use anonmm::errno::Errno;
use anonmm::run::{RunOptions, Runner};
use anonmm::script::{Call, Expect, Script, parse_file};
use common::{ExpectLine, check_expect, expect_lines, header_values};

/// The mremap flags that do not exist on Linux 6.18.
const RELOCATE_FLAGS: u64 = MREMAP_RELOCATE_ANON | MREMAP_MUST_RELOCATE_ANON;

/// A policy script, read and checked for its headers.
struct Loaded {
    script: Script,
    policy: String,
    /// The `# known-divergence:` reasons (normally none, at most one).
    divergence: Vec<String>,
    expects: Vec<ExpectLine>,
}

fn load(path: &Path) -> Result<Loaded, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let script = parse_file(path).map_err(|e| e.to_string())?;
    let policy = match header_values(&text, "policy")[..] {
        [p] if !p.is_empty() => p.to_string(),
        [] => return Err("no `# policy:` header".into()),
        _ => return Err("exactly one non-empty `# policy:` header is needed".into()),
    };
    let first_call = script.steps.first().map_or(usize::MAX, |s| s.line);
    let head: Vec<&str> = text.lines().take(first_call.saturating_sub(1)).collect();
    if !head.iter().any(|l| l.starts_with("# Series test:"))
        || !head.iter().any(|l| l.contains("Message-ID <"))
    {
        return Err(
            "the opening comment must name the test (`# Series test:`) and its patch's `Message-ID <...>`"
                .into(),
        );
    }
    if !script.steps.iter().any(|s| relocate_flags(&s.call) != 0) {
        return Err("no mremap with MREMAP_RELOCATE_ANON or MREMAP_MUST_RELOCATE_ANON".into());
    }
    let divergence = header_values(&text, "known-divergence").into_iter().map(str::to_string).collect();
    let expects = expect_lines(&script, &text)?;
    Ok(Loaded { script, policy, divergence, expects })
}

fn relocate_flags(call: &Call) -> u64 {
    match call {
        Call::Mremap { flags, .. } => flags & RELOCATE_FLAGS,
        _ => 0,
    }
}

/// The run under the script's policy: the problems, in script order.
fn run_policy(l: &Loaded) -> Result<Vec<String>, String> {
    let opts =
        RunOptions { check: true, policy: anonmm::policy::Policy::parse(&l.policy)?, ..Default::default() };
    let mut runner = Runner::new(&l.script, &opts).map_err(|e| e.to_string())?;
    let mut problems: Vec<(usize, String)> = Vec::new();
    for (i, step) in l.script.steps.iter().enumerate() {
        let here: Vec<&ExpectLine> = l.expects.iter().filter(|e| e.step == i).collect();
        if let Err(e) = runner.step(step, !here.is_empty()) {
            problems.push((step.line, format!("{e} (the run stops here)")));
            break;
        }
        if !here.is_empty() {
            let procs = std::mem::take(&mut runner.result.steps.last_mut().unwrap().procs);
            problems.extend(here.iter().filter_map(|e| check_expect(e, &procs).err().map(|m| (e.line, m))));
        }
    }
    for m in &runner.result.mismatches {
        problems.push((m.line, format!("line {}: recorded {}, model {}", m.line, m.expected, m.got)));
    }
    problems.sort_by_key(|p| p.0);
    Ok(problems.into_iter().map(|p| p.1).collect())
}

/// The run under `kernel`: (number of relocating mremaps, problems).
fn run_kernel(l: &Loaded) -> (usize, Vec<String>) {
    let opts = RunOptions { check: true, ..Default::default() };
    let mut runner = match Runner::new(&l.script, &opts) {
        Ok(r) => r,
        Err(e) => return (0, vec![e.to_string()]),
    };
    let (mut n, mut problems) = (0, Vec::new());
    for step in &l.script.steps {
        let outcome = match runner.step(step, false) {
            Ok(o) => o,
            Err(e) => {
                problems.push(format!("{e} (the run stops here)"));
                break;
            }
        };
        if relocate_flags(&step.call) != 0 {
            n += 1;
            if outcome != Expect::Err(Errno::EINVAL) {
                let got = anonmm::script::format_result_for(&step.call, &outcome);
                problems.push(format!("line {}: kernel policy gives {got}, not EINVAL", step.line));
            }
        }
    }
    (n, problems)
}

/// What one script gave.
struct Report {
    expects: usize,
    relocating: usize,
    divergence: Vec<String>,
    policy_problems: Vec<String>,
    kernel_problems: Vec<String>,
}

fn run_one(path: &Path) -> Result<Report, String> {
    let l = load(path)?;
    let policy_problems = common::no_panic(|| run_policy(&l)).unwrap_or_else(|e| vec![e]);
    let (relocating, kernel_problems) =
        common::no_panic(|| Ok(run_kernel(&l))).unwrap_or_else(|e| (0, vec![e]));
    Ok(Report {
        expects: l.expects.len(),
        relocating,
        divergence: l.divergence,
        policy_problems,
        kernel_problems,
    })
}

#[test]
fn policy_scripts_match_their_series() {
    let paths = common::scripts_in(&["policies"]);
    let t = std::time::Instant::now();
    let results = common::par_map(&paths, |p| common::no_panic(|| run_one(p)));
    let (mut failures, mut known) = (Vec::new(), Vec::new());
    let (mut expects, mut relocating) = (0, 0);
    for (p, r) in paths.iter().zip(results) {
        let name = common::short(p);
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                failures.push((name, e));
                continue;
            }
        };
        expects += r.expects;
        relocating += r.relocating;
        let mut why = Vec::new();
        if !r.kernel_problems.is_empty() {
            why.push(format!("under `kernel`:\n{}", r.kernel_problems.join("\n")));
        }
        match (r.policy_problems.is_empty(), r.divergence.is_empty()) {
            (true, true) => {}
            (false, true) => why.push(r.policy_problems.join("\n")),
            (false, false) => known.push((
                name.clone(),
                format!("known divergence: {}\n{}", r.divergence.join("; "), r.policy_problems.join("\n")),
            )),
            (true, false) => why.push(format!(
                "passes under its policy now: remove its `# known-divergence: {}` line",
                r.divergence.join("; ")
            )),
        }
        if !why.is_empty() {
            failures.push((name, why.join("\n")));
        }
    }
    failures.sort();
    for (name, what) in &known {
        eprintln!("--- {name} (not failing)\n{}", what.trim_end());
    }
    eprintln!(
        "{} policy scripts, {expects} `# expect:` lines, {relocating} relocating mremaps (EINVAL under kernel), \
         {} known divergences, in {:.1?}",
        paths.len(),
        known.len(),
        t.elapsed()
    );
    assert!(failures.is_empty(), "{}", common::report(&failures, paths.len(), "policies"));
    // Guard against the parsers silently finding nothing.
    assert!(
        paths.len() >= 20 && relocating >= paths.len(),
        "{} scripts, {relocating} relocating mremaps",
        paths.len()
    );
    assert!(expects >= 30, "only {expects} `# expect:` lines found");
}

#[test]
fn headers_are_read() {
    let text = "# Series test: x\n# Message-ID <a@b>\n# policy: relocate\n# known-divergence: why\n\
                1 mremap(0x200000000000, 4096, 4096, MREMAP_MAYMOVE|MREMAP_FIXED|MREMAP_MUST_RELOCATE_ANON, 0x200000003000) = -1 EFAULT (Bad address)\n";
    assert_eq!(header_values(text, "policy"), ["relocate"]);
    assert_eq!(header_values(text, "known-divergence"), ["why"]);
    assert!(header_values(text, "expect").is_empty());
    let script = anonmm::script::parse_str("t.strace", text).unwrap();
    assert_eq!(relocate_flags(&script.steps[0].call), MREMAP_MUST_RELOCATE_ANON);
    // Under `kernel` the flag is refused, which is what the kernel run asserts.
    let l = Loaded { script, policy: "relocate".into(), divergence: vec![], expects: vec![] };
    assert_eq!(run_kernel(&l), (1, vec![]));
}
