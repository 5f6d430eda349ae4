//! Every policy, on random scripts, passes the invariant checker after every step and shows
//! every process the same page contents as `kernel` (policies change metadata, never data).
//! `ANONMM_POLICY_SEEDS=N` runs more seeds.

use anonmm::r#gen::{GenConfig, generate, shrink, write_script};
use anonmm::mm::Config;
use anonmm::policy::{POLICY_NAMES, compare_with_kernel};

#[test]
fn policies_never_change_contents() {
    let seeds: u64 = std::env::var("ANONMM_POLICY_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(150);
    let cfg = GenConfig { steps: 80, relocate_flags: true, ..GenConfig::default() };
    let mut compared = 0usize;
    let mut total = 0usize;
    let mut relocated = 0u64;
    let first: u64 = std::env::var("ANONMM_POLICY_FIRST").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    for seed in first..first + seeds {
        let script = generate(0x9011c1 + seed, &cfg);
        total += script.steps.len() * (POLICY_NAMES.len() - 1);
        for p in POLICY_NAMES.iter().filter(|&&p| p != "kernel").chain(&["auto:0"]) {
            match compare_with_kernel(&script, p, &Config::default()) {
                Ok(c) => compared += c.steps,
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
                &anonmm::run::RunOptions { policy: p.to_string(), ..Default::default() },
            );
            if let Ok(r) = res {
                relocated += r.stats.policy.relocations_done;
            }
        }
    }
    eprintln!("{compared} of {total} policy steps compared; {relocated} relocations done");
    // The comparison must not stop early on most steps, and the policies must act.
    assert!(compared * 2 > total, "only {compared} of {total} steps compared");
    assert!(relocated > 0, "no policy relocated anything");
}
