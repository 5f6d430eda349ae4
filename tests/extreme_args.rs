//! Calls with extreme and malformed arguments never panic the model: each gets an errno (or
//! a signal for touch) and the invariant checker still holds afterwards.

use std::panic::{AssertUnwindSafe, catch_unwind};

use anonmm::abi::*;
use anonmm::run::{RunError, RunOptions, run_script};
use anonmm::script::{Call, Expect, Script, Step, format_call};
use anonmm::types::Pid;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const BASE: u64 = 0x2000_0000_0000;

fn edge(rng: &mut SmallRng) -> u64 {
    let choices = [
        0,
        1,
        4095,
        4096,
        4097,
        8192,
        0x20_0000,
        0x20_1000,
        BASE,
        BASE + 0x1000,
        BASE + 0x20_0000,
        BASE - 0x1000,
        0x7fff_ffff_f000,
        0x7fff_ffff_ffff,
        0x8000_0000_0000,
        u64::MAX,
        u64::MAX - 4095,
        u64::MAX / 2,
        1 << 63,
        0xffff_8000_0000_0000,
    ];
    if rng.random_bool(0.7) {
        choices[rng.random_range(0..choices.len())]
    } else {
        BASE + rng.random_range(0..64u64) * 0x1000
    }
}

fn flags(rng: &mut SmallRng) -> u64 {
    if rng.random_bool(0.2) { rng.random::<u64>() } else { rng.random::<u64>() & 0x1f_ffff }
}

/// Random mmap flags without those the model stops at as `not modelled` whatever else is
/// set (anonymous MAP_HUGETLB, MAP_32BIT placement, MAP_DROPPABLE), so that most scripts run
/// on; tests/regressions/mmap_flag_validation has those flags.
fn mmap_flags(rng: &mut SmallRng) -> u64 {
    let f = flags(rng) & !(MAP_HUGETLB | MAP_32BIT);
    if f & MAP_TYPE == MAP_DROPPABLE { f & !MAP_TYPE | MAP_PRIVATE } else { f }
}

fn random_call(rng: &mut SmallRng) -> Call {
    match rng.random_range(0..9) {
        0 => Call::Mmap {
            addr: edge(rng),
            len: edge(rng),
            prot: flags(rng) & 0xf,
            flags: if rng.random_bool(0.5) {
                MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED
            } else {
                mmap_flags(rng)
            },
            fd: not_stdio(rng.random_range(-2..6)),
            off: edge(rng),
        },
        1 => Call::Munmap { addr: edge(rng), len: edge(rng) },
        2 => Call::Mprotect { addr: edge(rng), len: edge(rng), prot: flags(rng) },
        3 => Call::Madvise { addr: edge(rng), len: edge(rng), advice: rng.random_range(0..30) },
        4 => Call::Mremap {
            old_addr: edge(rng),
            old_len: edge(rng),
            new_len: edge(rng),
            flags: rng.random_range(0..32),
            new_addr: edge(rng),
        },
        5 => Call::Touch { addr: edge(rng), len: edge(rng) % (1 << 24), write: rng.random_bool(0.5) },
        6 => Call::Brk { addr: edge(rng) },
        7 => Call::Ftruncate { fd: not_stdio(rng.random_range(-1..6)), len: edge(rng) },
        _ => Call::Openat { dirfd: AT_FDCWD, path: "f".into(), flags: O_RDWR | O_CREAT, mode: 0o600 },
    }
}

#[test]
fn extreme_arguments_never_panic() {
    let mut rng = SmallRng::seed_from_u64(7);
    let opts = RunOptions { check: true, last_view_only: true, ..Default::default() };
    let (mut whole, mut stopped) = (0, 0);
    for case in 0..300 {
        let steps: Vec<Step> = (0..40)
            .map(|i| {
                let call = random_call(&mut rng);
                Step { line: i + 1, pid: Pid(1), text: format_call(&call), call, expect: None }
            })
            .collect();
        let script = Script { path: format!("extreme-{case}"), steps, ..Default::default() };
        let r = catch_unwind(AssertUnwindSafe(|| run_script(&script, &opts)));
        match r {
            Ok(Ok(_)) => whole += 1,
            Ok(Err(RunError::NotModelled { .. })) => stopped += 1,
            Ok(Err(e)) => panic!("case {case}: {e}\n{}", anonmm::r#gen::write_script(&script)),
            Err(_) => panic!("case {case} panicked:\n{}", anonmm::r#gen::write_script(&script)),
        }
    }
    eprintln!("{whole} scripts ran whole, {stopped} stopped at behaviour not modelled");
    // Most scripts must run to the end, or the test would prove little.
    assert!(whole >= 200, "only {whole} of 300 scripts ran whole");
    let _ = Expect::Unknown;
}

/// Descriptors 0–2 are the process's stdio, which the model does not know: a call on one
/// stops as not modelled. Use the script's own descriptors (3 up) and bad ones instead.
fn not_stdio(fd: i64) -> i64 {
    if (0..3).contains(&fd) { fd + 3 } else { fd }
}
