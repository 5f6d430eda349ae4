//! `replay --policy all` replays the steps before any policy could decide differently once,
//! for every policy (the trunk), then forks the model for each: every policy's outcome must
//! be exactly that of replaying it alone, whether the first differing step comes early, late
//! or never, and on random scripts (a hook the probe missed would show here).
//! `ANONMM_TRUNK_SEEDS=N` runs more random scripts.

use std::path::{Path, PathBuf};

use anonmm::import::read_trace;
use anonmm::policy::ALL_POLICIES;
use anonmm::replay::{replay_trace, replay_trace_all_on};
use anonmm::run::{RunOptions, Runner};

fn root(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn tmp(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("policy_trunk");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn every_policy() -> Vec<RunOptions> {
    ALL_POLICIES.iter().map(|&policy| RunOptions { policy, ..Default::default() }).collect()
}

/// The index of the first step at which some policy would decide differently from `kernel`.
fn first_differing_step(path: &Path) -> Option<usize> {
    let (script, _) = read_trace(path).unwrap_or_else(|e| panic!("{e}"));
    let opts = RunOptions { replay: true, last_view_only: true, ..Default::default() };
    let mut r = Runner::new(&script, &opts).unwrap();
    r.sys.probe_policies(&ALL_POLICIES);
    for (i, step) in script.steps.iter().enumerate() {
        let _ = r.step_or_diverge(step, false);
        if r.sys.probe_diverged() {
            return Some(i);
        }
    }
    None
}

/// Each policy's outcome of `replay_trace_all` (two threads: the shared trunk) is that of
/// `replay_trace` alone; the trunk's first differing step is returned with the step count.
fn all_is_each_alone(path: &Path) -> (Option<usize>, usize) {
    set_is_each_alone(path, &every_policy())
}

/// [`all_is_each_alone`] for the policies of `opts`.
fn set_is_each_alone(path: &Path, opts: &[RunOptions]) -> (Option<usize>, usize) {
    let (runs, report) = replay_trace_all_on(path, opts, 5, 2, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(runs.len(), opts.len());
    for (o, run) in opts.iter().zip(runs) {
        let (shared, _) = run.unwrap_or_else(|e| panic!("{}: {e}", o.policy));
        let (alone, _) = replay_trace(path, o, 5, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            format!("{shared:?}"),
            format!("{alone:?}"),
            "{}: {} from the shared trunk differs from its replay alone",
            path.display(),
            o.policy
        );
    }
    (first_differing_step(path), report.steps as usize)
}

#[test]
fn an_early_mremap() {
    let (d, steps) = all_is_each_alone(&root("traces/realloc.perf.txt.zst"));
    let d = d.expect("realloc moves its blocks");
    assert!(d < steps / 10, "{d} of {steps}");
}

#[test]
fn a_late_mremap() {
    // The dict's first resize by mremap comes after 84% of the trace.
    let (d, steps) = all_is_each_alone(&root("benches/data/python-dict-1m.perf.txt.zst"));
    let d = d.expect("the dict is moved");
    assert!(d > steps / 2, "{d} of {steps}");
}

#[test]
fn no_step_differs() {
    // git maps and faults, but never moves a faulted VMA.
    let (d, steps) = all_is_each_alone(&root("traces/git.perf.txt.zst"));
    assert_eq!(d, None);
    assert!(steps > 1000, "{steps}");
}

#[test]
fn matena_merges_two_anon_vmas_without_mremap() {
    // Two faulted neighbours with their own anon_vmas (MADV_DONTFORK kept the second from
    // reusing the first's), made compatible by MADV_DOFORK: only Matěna's design merges them.
    let path = tmp("dofork.strace");
    std::fs::write(
        &path,
        "1 mmap(0x200000000000, 16384, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED, -1, 0) = 0x200000000000
1 madvise(0x200000000000, 16384, MADV_DONTFORK) = 0
1 mmap(0x200000004000, 16384, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED, -1, 0) = 0x200000004000
1 touch(0x200000000000, 16384, \"w\") = 0
1 touch(0x200000004000, 16384, \"w\") = 0
1 madvise(0x200000000000, 16384, MADV_DOFORK) = 0
1 mmap(0x200000010000, 16384, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED, -1, 0) = 0x200000010000
",
    )
    .unwrap();
    let (d, _) = all_is_each_alone(&path);
    assert_eq!(d, Some(5));
    let (runs, _) = replay_trace_all_on(&path, &every_policy(), 5, 2, &mut |_| {}).unwrap();
    let ends: Vec<(usize, usize)> = runs.into_iter().map(|r| r.unwrap().0.vmas_end).collect();
    assert_eq!(ends, [(3, 3), (3, 3), (3, 3), (2, 2), (3, 3), (3, 3)]);
}

#[test]
fn random_scripts_from_the_shared_trunk_are_each_alone() {
    use anonmm::r#gen::{GenConfig, generate, write_script};
    let seeds: u64 = std::env::var("ANONMM_TRUNK_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let (mut differed, mut never) = (0, 0);
    for seed in 0..seeds {
        // Short scripts too, where often no step differs.
        let cfg = GenConfig {
            steps: if seed % 3 == 0 { 25 } else { 200 },
            relocate_flags: true,
            ..GenConfig::default()
        };
        let script = generate(0x7275_6e6b + seed, &cfg);
        let path = tmp(&format!("random-{seed}.strace"));
        std::fs::write(&path, write_script(&script)).unwrap();
        match all_is_each_alone(&path).0 {
            Some(_) => differed += 1,
            None => never += 1,
        }
        // Each policy with the kernel alone: the shared part goes on until that one
        // differs, past steps where another would have.
        for o in &every_policy()[1..] {
            set_is_each_alone(&path, &[RunOptions::default(), o.clone()]);
        }
    }
    assert!(differed > 0 && (seeds < 20 || never > 0), "{differed} differed, {never} never");
}
