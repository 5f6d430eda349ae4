//! `anonmm oracle fuzz`: random scripts on the model and on the kernel, compared step by step;
//! a divergence is shrunk to a minimal script and written out.

use std::path::Path;
use std::time::Instant;

use crate::r#gen::{GenConfig, ShrinkOptions, generate, shrink_with, write_script};
use crate::run::{RunOptions, run_script};
use crate::script::Script;

use super::cli::diff_step;
use super::vm::Target;
use super::{OracleError, available};

/// What one script showed.
#[derive(Debug)]
pub enum Verdict {
    /// Model and kernel agreed on every step.
    Same,
    /// The first step that differs, and how.
    Diverges {
        /// The step's 1-based script line; 0 when the model failed (error or panic) or the
        /// step counts differ.
        line: usize,
        /// The call as written (empty with line 0).
        call: String,
        /// What differs, as indented text (the step's differences, or the model's failure).
        diff: String,
    },
    /// The kernel could not run it comparably (e.g. it placed a mapping outside the window).
    Skipped(String),
    /// The first N steps agreed; the next one the kernel ran incomparably.
    Prefix(usize),
    /// The kernel disagreed with itself on a second run (timing: read-ahead I/O still in
    /// flight when fault-around looked, per-CPU batches), at this line.
    KernelNondeterministic(usize),
}

/// How many more times the kernel runs a script whose first run differs from the model,
/// looking for a run that differs from the first (kernel nondeterminism) before the model is
/// blamed. Only differing scripts pay for it; a deterministic difference is still reported.
pub const KERNEL_RERUNS: usize = 3;

/// Run one script on both sides (the model with the invariant checker on).
pub fn compare(script: &Script) -> Verdict {
    compare_with(script, false)
}

/// [`compare`], with `/proc/PID/smaps` compared too when `smaps`.
pub fn compare_with(script: &Script, smaps: bool) -> Verdict {
    compare_on(&mut Target::Native, &crate::mm::Config::default(), script, smaps)
}

/// [`compare_with`] on `target` (the host's kernel or a VM), the model set as `config`
/// (its `kernel` chooses the model's profile).
pub fn compare_on(target: &mut Target, config: &crate::mm::Config, script: &Script, smaps: bool) -> Verdict {
    compare_alongside(target, config, script, smaps, || {})
}

/// [`compare_on`], running `alongside` too while a VM runs the script (the model's side and
/// `alongside` overlap with the guest's work; see [`Target::run_prefix_alongside`]).
fn compare_alongside(
    target: &mut Target,
    config: &crate::mm::Config,
    script: &Script,
    smaps: bool,
    alongside: impl FnOnce(),
) -> Verdict {
    let opts = RunOptions {
        check: true,
        smaps,
        internal: target.internal(),
        config: config.clone(),
        ..Default::default()
    };
    let (kernel, model) = target.run_prefix_alongside(script, smaps, || {
        alongside();
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let model = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_script(script, &opts)));
        std::panic::set_hook(hook);
        model
    });
    let model = match model {
        Ok(Ok(r)) => r.steps,
        Ok(Err(e @ crate::run::RunError::NotModelled { .. })) => return Verdict::Skipped(e.to_string()),
        Ok(Err(e)) => {
            return Verdict::Diverges { line: 0, call: String::new(), diff: format!("  model: {e}\n") };
        }
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
            return Verdict::Diverges {
                line: 0,
                call: String::new(),
                diff: format!("  model panicked: {}\n", msg.unwrap_or_default()),
            };
        }
    };
    let (kernel, stopped) = match kernel {
        Ok(k) => k,
        Err(e @ (OracleError::Refused { .. } | OracleError::BadInput { .. })) => {
            return Verdict::Skipped(e.to_string());
        }
        Err(e) => return Verdict::Skipped(format!("oracle: {e}")),
    };
    for (i, (m, k)) in model.iter().zip(&kernel).enumerate() {
        let d = diff_step(m, &k.view);
        if !d.is_empty() {
            // Before blaming the model, ask the kernel again: if another run differs up to
            // this step, the difference is the kernel's timing, not the model. A race may
            // come out the same way twice in a row (MADV_PAGEOUT after swap-in read faults,
            // tests/nondeterministic/), so the kernel gets several tries.
            for _ in 0..KERNEL_RERUNS {
                if let Ok((again, _)) = target.run_prefix(script, smaps)
                    && (again.len() <= i
                        || again[..=i].iter().zip(&kernel[..=i]).any(|(a, b)| a.view != b.view))
                {
                    return Verdict::KernelNondeterministic(k.view.line);
                }
            }
            return Verdict::Diverges { line: k.view.line, call: k.view.call.clone(), diff: d };
        }
    }
    if let Some(e) = stopped {
        // Everything before the step the kernel ran incomparably agreed.
        return if kernel.is_empty() {
            Verdict::Skipped(e.to_string())
        } else {
            Verdict::Prefix(kernel.len())
        };
    }
    if model.len() != kernel.len() {
        return Verdict::Diverges {
            line: 0,
            call: String::new(),
            diff: format!("  the model ran {} steps, the kernel {}\n", model.len(), kernel.len()),
        };
    }
    Verdict::Same
}

/// What `oracle fuzz` compares besides maps, pages and contents.
#[derive(Clone, Copy, Debug, Default)]
pub struct Compared {
    /// The smaps fields the model knows (`--smaps`).
    pub smaps: bool,
    /// The kernel's internal state, read by a module in the VM (`--internal`).
    pub internal: bool,
}

/// `anonmm oracle fuzz --cases N [--seed S] [--steps M] [--out DIR]`.
pub fn cmd_fuzz(
    cases: u64,
    seed: Option<u64>,
    steps: usize,
    out: &Path,
    keep_going: bool,
    compared: Compared,
    kernel: crate::kernel::Kernel,
) -> i32 {
    let Compared { smaps, internal } = compared;
    let target = match super::kmod::target(kernel, internal) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("anonmm: {e}");
            return 2;
        }
    };
    if matches!(target, Target::Native)
        && let Err(e) = available()
    {
        eprintln!("anonmm: kernel oracle unavailable: {e}");
        return 2;
    }
    let config = target.config(kernel);
    crate::out!("{}", target.describe());
    let target = std::cell::RefCell::new(target);
    let compare = |s: &Script| compare_on(&mut target.borrow_mut(), &config, s, smaps);
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            % 1_000_000_007
    });
    let cfg = GenConfig { steps, ..GenConfig::default() };
    crate::outln!("fuzz: seed {seed}, {cases} cases of {steps} steps ({})", cfg.describe());
    let t0 = Instant::now();
    // On stderr, when it is a terminal; logs get a line every 1,000 cases instead.
    let bar = indicatif::ProgressBar::new(cases);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "[{bar:40}] {human_pos}/{human_len} cases ({rate}, {eta} left) {msg}",
        )
        .map(|s| {
            s.progress_chars("=> ").with_key(
                "rate",
                |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.1} cases/s", s.per_sec());
                },
            )
        })
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(500));
    let (mut same, mut skipped, mut prefix, mut prefix_steps, mut diverged, mut nondet) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let mut reasons: std::collections::BTreeMap<String, u64> = Default::default();
    let mut policy_diverged = 0u64;
    let internal = target.borrow().internal();
    let mut visible = 0u64;
    for i in 0..cases {
        let s = generate(seed.wrapping_add(i), &cfg);
        // Every policy runs the same script on the model: it must pass the checker and show
        // the same contents as `kernel` at every step. In a VM this runs while the guest runs
        // the script.
        let mut policies = Ok(());
        let verdict = compare_alongside(&mut target.borrow_mut(), &config, &s, smaps, || {
            policies = check_policies(&s, seed.wrapping_add(i), out, &config);
        });
        if let Err(file) = policies {
            policy_diverged += 1;
            bar.suspend(|| {
                crate::outln!(
                    "case {i} (seed {}): a policy changed contents or broke an invariant: {file}",
                    seed.wrapping_add(i)
                )
            });
            if !keep_going {
                bar.finish_and_clear();
                return 1;
            }
        }
        match verdict {
            Verdict::Same => same += 1,
            Verdict::KernelNondeterministic(line) => {
                nondet += 1;
                bar.suspend(|| {
                    crate::outln!(
                        "case {i} (seed {}): the kernel disagreed with itself at line {line}; not counted against the model",
                        seed.wrapping_add(i)
                    )
                });
            }
            Verdict::Prefix(n) => {
                prefix += 1;
                prefix_steps += n as u64;
            }
            Verdict::Skipped(why) => {
                skipped += 1;
                *reasons.entry(skip_kind(&why)).or_default() += 1;
            }
            Verdict::Diverges { line, call, diff } => {
                bar.suspend(|| {
                    crate::outln!(
                        "case {i} (seed {}) diverges at line {line}: {call}\n{diff}",
                        seed.wrapping_add(i)
                    )
                });
                // With --internal, a divergence user space sees too is the plain fuzz's to
                // shrink (it finds it without the module); it is counted, not shrunk here.
                let internal_only = internal_only(&diff);
                if internal && !internal_only {
                    visible += 1;
                    bar.inc(1);
                    continue;
                }
                let small = shrink_with(
                    &s,
                    &mut |x| match compare(x) {
                        Verdict::Diverges { diff, .. } => !internal_only || self::internal_only(&diff),
                        _ => false,
                    },
                    &ShrinkOptions::default(),
                );
                let why = match compare(&small) {
                    Verdict::Diverges { line, call, diff } => format!("line {line}: {call}\n{diff}"),
                    v => format!("{v:?}"),
                };
                let _ = std::fs::create_dir_all(out);
                let file = out.join(format!("diverge-seed-{}.strace", seed.wrapping_add(i)));
                let mut text = write_script(&small);
                for l in why.lines() {
                    text.push_str(&format!("# {l}\n"));
                }
                if let Err(e) = std::fs::write(&file, text) {
                    bar.suspend(|| eprintln!("anonmm: {}: cannot write: {e}", file.display()));
                }
                bar.suspend(|| {
                    crate::outln!("shrunk to {} steps: {}\n{why}", small.steps.len(), file.display())
                });
                diverged += 1;
                if !keep_going {
                    bar.finish_and_clear();
                    crate::outln!("fuzz: seed {seed}: divergence after {} cases", i + 1);
                    return 1;
                }
            }
        }
        bar.inc(1);
        bar.set_message(format!("{diverged} divergences, {skipped} skipped"));
        if (i + 1) % 1000 == 0 && bar.is_hidden() {
            crate::outln!(
                "fuzz: {} cases, {} whole, {} prefix, {} skipped, {:.0}s",
                i + 1,
                same,
                prefix,
                skipped,
                t0.elapsed().as_secs_f64()
            );
        }
    }
    bar.finish_and_clear();
    crate::outln!(
        "fuzz: seed {seed}: {cases} cases ({same} compared whole, {prefix} compared up to a step the kernel placed outside the window ({prefix_steps} steps), {skipped} skipped, {nondet} where the kernel disagreed with itself), {diverged} divergences{}, {policy_diverged} policy divergences, {:.1}s",
        if internal {
            format!(" in the internal state only, {visible} that user space sees too (not shrunk here)")
        } else {
            String::new()
        },
        t0.elapsed().as_secs_f64()
    );
    for (why, n) in &reasons {
        crate::outln!("  skipped {n}: {why}");
    }
    i32::from(diverged + policy_diverged + visible > 0)
}

/// Is every difference of a divergence (`diff_step`'s text) in the internal state? Each
/// section is a line indented by two spaces (`  pid 1 internal:`, `  result: ...`).
fn internal_only(diff: &str) -> bool {
    let mut sections = diff.lines().filter(|l| l.starts_with("  ") && !l.starts_with("   ")).peekable();
    sections.peek().is_some() && sections.all(|l| l.starts_with("  pid ") && l.ends_with(" internal:"))
}

/// Run every non-kernel policy against `kernel` on the model (`compare_with_kernel`); on a
/// failure, shrink the script and write it to `out`, returning its path.
fn check_policies(s: &Script, seed: u64, out: &Path, cfg: &crate::mm::Config) -> Result<(), String> {
    for &p in crate::policy::POLICY_NAMES.iter().filter(|&&p| p != "kernel") {
        let Err(e) = crate::compare::compare_with_kernel(s, p, cfg) else { continue };
        let small = crate::r#gen::shrink(s, &mut |x| crate::compare::compare_with_kernel(x, p, cfg).is_err());
        let _ = std::fs::create_dir_all(out);
        let file = out.join(format!("policy-{p}-seed-{seed}.strace"));
        let mut text = write_script(&small);
        text.push_str(&format!("# policy {p}: {e}\n"));
        if let Err(err) = std::fs::write(&file, text) {
            eprintln!("anonmm: {}: cannot write: {err}", file.display());
        }
        return Err(format!("{} ({e})", file.display()));
    }
    Ok(())
}

/// The kind of a skip, without the addresses and line numbers that make each one unique.
fn skip_kind(why: &str) -> String {
    let s = why.split_once(": ").map_or(why, |(_, r)| r);
    let s: String = s.chars().map(|c| if c.is_ascii_digit() { '#' } else { c }).collect();
    let mut out = s.replace("0x", "");
    while out.contains("##") {
        out = out.replace("##", "#");
    }
    out.chars().take(110).collect()
}
