//! Every policy, on random scripts, passes the invariant checker after every step and shows
//! every process the same page contents as `kernel` (policies change metadata, never data).
//! `ANONMM_POLICY_SEEDS=N` runs more seeds.

use anonmm::r#gen::{GenConfig, Weights, generate, shrink, write_script};
use anonmm::mm::Config;
use anonmm::policy::{POLICY_NAMES, compare_with_kernel};

#[test]
fn policies_never_change_contents() {
    let seeds: u64 = std::env::var("ANONMM_POLICY_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(150);
    let cfg = GenConfig { steps: 80, relocate_flags: true, ..GenConfig::default() };
    let mut compared = 0usize;
    let mut total = 0usize;
    let mut relocated = 0u64;
    // Scripts where auto ended with more VMAs than the best other policy (reported, not
    // asserted: random scripts differ in results once merges differ).
    let (mut auto_worse, mut auto_runs) = (0usize, 0usize);
    let first: u64 = std::env::var("ANONMM_POLICY_FIRST").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    for seed in first..first + seeds {
        let script = generate(0x9011c1 + seed, &cfg);
        let mut ends: Vec<(String, usize)> = Vec::new();
        // Only scripts where every policy gave kernel's result at every step are compared.
        let mut same_results = true;
        total += script.steps.len() * (POLICY_NAMES.len() - 1);
        for p in POLICY_NAMES.iter().filter(|&&p| p != "kernel").chain(&["auto:0"]) {
            match compare_with_kernel(&script, p, &Config::default()) {
                Ok(c) => {
                    compared += c.steps;
                    same_results &= c.results_differ_at.is_none() && c.stopped_at.is_none();
                }
                Err(e) => {
                    // Shrink it and keep it where a developer can run it.
                    let small =
                        shrink(&script, &mut |s| compare_with_kernel(s, p, &Config::default()).is_err());
                    let out =
                        std::env::temp_dir().join(format!("anonmm-policy-{p}-{}.strace", 0x9011c1 + seed));
                    let _ = std::fs::write(&out, write_script(&small));
                    panic!("seed {}: {e}\nshrunk script: {}", 0x9011c1 + seed, out.display());
                }
            }
            let res = anonmm::run::run_script(
                &script,
                &anonmm::run::RunOptions {
                    policy: anonmm::policy::Policy::parse(p).expect("a policy name"),
                    ..Default::default()
                },
            );
            if let Ok(r) = res {
                relocated += r.stats.policy.relocations_done;
                ends.push((p.to_string(), r.vmas_per_pid.values().map(|v| v.0).sum()));
            }
        }
        if same_results
            && ends.len() == POLICY_NAMES.len()
            && let Some(a) = ends.iter().find(|(p, _)| p == "auto").map(|e| e.1)
        {
            auto_runs += 1;
            if ends.iter().any(|(_, n)| *n < a) {
                auto_worse += 1;
                if std::env::var_os("ANONMM_DUMP_AUTO_WORSE").is_some() && auto_worse == 1 {
                    let worse = |s: &anonmm::script::Script| {
                        let end = |p: &str| {
                            let o = anonmm::run::RunOptions {
                                policy: anonmm::policy::Policy::parse(p).expect("a policy name"),
                                ..Default::default()
                            };
                            anonmm::run::run_script(s, &o)
                                .ok()
                                .map(|r| r.vmas_per_pid.values().map(|v| v.0).sum::<usize>())
                        };
                        let Some(a) = end("auto") else { return false };
                        POLICY_NAMES.iter().any(|p| end(p).is_some_and(|n| n < a))
                    };
                    let small = shrink(&script, &mut |s| worse(s));
                    let out = std::env::temp_dir().join("anonmm-auto-worse.strace");
                    let _ = std::fs::write(&out, write_script(&small));
                    eprintln!("auto worse: {}", out.display());
                }
            }
        }
    }
    eprintln!("{compared} of {total} policy steps compared; {relocated} relocations done");
    eprintln!(
        "auto ended with more VMAs than some other policy on {auto_worse} of {auto_runs} scripts \
         where every policy gave kernel's results"
    );
    // The comparison must not stop early on most steps, and the policies must act.
    assert!(compared * 2 > total, "only {compared} of {total} steps compared");
    assert!(relocated > 0, "no policy relocated anything");
}

/// The same with migrations held in flight (`migrate`/`migrate_done`): a relocation or an
/// adoption that met a migration entry and went on would strand it, and the checker says so.
#[test]
fn policies_with_migrations_in_flight() {
    let seeds: u64 = std::env::var("ANONMM_POLICY_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let cfg = GenConfig {
        steps: 80,
        relocate_flags: true,
        weights: Weights { migrate: 8, ..Weights::default() },
        ..GenConfig::default()
    };
    let mut refused = 0u64;
    for seed in 0..seeds {
        let script = generate(0x316c0 + seed, &cfg);
        for p in POLICY_NAMES.iter().filter(|&&p| p != "kernel") {
            if let Err(e) = compare_with_kernel(&script, p, &Config::default()) {
                let small = shrink(&script, &mut |s| compare_with_kernel(s, p, &Config::default()).is_err());
                let out =
                    std::env::temp_dir().join(format!("anonmm-policy-mig-{p}-{}.strace", 0x316c0 + seed));
                let _ = std::fs::write(&out, write_script(&small));
                panic!("seed {}: {e}\nshrunk script: {}", 0x316c0 + seed, out.display());
            }
            let opts = anonmm::run::RunOptions {
                policy: anonmm::policy::Policy::parse(p).expect("a policy name"),
                ..Default::default()
            };
            if let Ok(r) = anonmm::run::run_script(&script, &opts) {
                refused += r
                    .stats
                    .policy
                    .relocations_refused
                    .get(&anonmm::policy::RelocReason::Migration)
                    .copied()
                    .unwrap_or(0);
                refused += r.stats.policy.migrations_waited;
            }
        }
    }
    eprintln!("{refused} relocations refused for, or adoptions waiting on, a migration");
}

/// Scripts on which a policy once changed contents or broke an invariant (found by
/// `oracle fuzz`, shrunk): every policy must now agree with `kernel` on them.
#[test]
fn policy_regressions() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/policy_regressions");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).expect("dir") {
        let p = e.expect("entry").path();
        if p.extension().is_none_or(|x| x != "strace") {
            continue;
        }
        let script = anonmm::script::parse_file(&p).expect("parses");
        for pol in POLICY_NAMES.iter().filter(|&&x| x != "kernel") {
            if let Err(e) = compare_with_kernel(&script, pol, &Config::default()) {
                panic!("{}: {pol}: {e}", p.display());
            }
        }
        n += 1;
    }
    assert!(n > 0);
}
