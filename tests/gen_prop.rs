//! Property test: random scripts through the model with the invariant checker on.
//!
//! At least 10,000 steps (set `ANONMM_GEN_SEEDS` for more seeds per config). On a failure the
//! script is shrunk and printed in the script language, ready to be saved and re-run.

use std::panic::{self, AssertUnwindSafe};

use anonmm::r#gen::{GenConfig, Weights, generate, shrink, write_script};
use anonmm::run::{RunOptions, run_script};
use anonmm::script::Script;

/// Why the model rejects the script (a broken invariant, bad input or a panic), if it does.
fn failure(s: &Script) -> Option<String> {
    let opts = RunOptions { check: true, ..Default::default() };
    match panic::catch_unwind(AssertUnwindSafe(|| run_script(s, &opts))) {
        Ok(Ok(_)) => None,
        // Behaviour the model says it lacks is not a failure of the model.
        Ok(Err(anonmm::run::RunError::NotModelled { .. })) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(p) => Some(format!(
            "panic: {}",
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        )),
    }
}

#[test]
fn random_scripts_keep_invariants() {
    let seeds: u64 = std::env::var("ANONMM_GEN_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(12);
    let cfgs = [
        GenConfig::default(),
        GenConfig { max_procs: 1, files: false, shared: false, ..GenConfig::default() },
        GenConfig { max_procs: 6, thp: false, ..GenConfig::default() },
        // Model-only: migrations held in flight across every other call.
        GenConfig { weights: Weights { migrate: 8, ..Weights::default() }, ..GenConfig::default() },
    ];
    let mut total = 0;
    for cfg in &cfgs {
        for seed in 0..seeds {
            let s = generate(seed, cfg);
            total += s.steps.len();
            if let Some(why) = failure(&s) {
                let hook = panic::take_hook();
                panic::set_hook(Box::new(|_| {}));
                let small = shrink(&s, &mut |x| failure(x).is_some());
                panic::set_hook(hook);
                let why_small = failure(&small).unwrap_or(why);
                panic!("seed {seed}: {why_small}\n{}", write_script(&small));
            }
        }
    }
    assert!(total >= 10_000, "only {total} steps");
}
