//! The invariant checker's cost: `System::check()` on the states that generated (fuzz)
//! scripts of 60 steps leave, and whole runs of 20 such scripts with the checker after every
//! step (`RunOptions::check`, which also checks the reference model of page contents) and
//! without it, in steps a second.
//!
//!     cargo bench --bench check

use std::hint::black_box;
use std::time::Duration;

use anonmm::bench::generated_state;
use anonmm::r#gen::{GenConfig, generate};
use anonmm::kernel::Kernel;
use anonmm::run::{RunOptions, run_script};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const SEEDS: u64 = 20;
const STEPS: usize = 60;

fn check_state(c: &mut Criterion) {
    let states: Vec<_> = (0..SEEDS).map(|s| generated_state(s, STEPS, Kernel::default())).collect();
    let mut g = c.benchmark_group("check");
    g.throughput(Throughput::Elements(SEEDS));
    g.bench_function(BenchmarkId::new("System::check", format!("{SEEDS}-states-of-{STEPS}-steps")), |b| {
        b.iter(|| {
            for sys in &states {
                black_box(sys).check().expect("a generated state keeps the invariants");
            }
        })
    });
    g.finish();
}

fn checked_run(c: &mut Criterion) {
    let cfg = GenConfig { steps: STEPS, ..Default::default() };
    let scripts: Vec<_> = (0..SEEDS).map(|s| generate(s, &cfg)).collect();
    let steps: usize = scripts.iter().map(|s| s.steps.len()).sum();
    let mut g = c.benchmark_group("run");
    g.throughput(Throughput::Elements(steps as u64));
    for check in [false, true] {
        let opts = RunOptions { check, last_view_only: true, ..RunOptions::default() };
        let name = if check { "checked" } else { "unchecked" };
        g.bench_function(BenchmarkId::new(name, format!("{SEEDS}-scripts-of-{STEPS}-steps")), |b| {
            b.iter(|| {
                for s in &scripts {
                    // As `anonmm bench`: a script the model stops early still counts its steps.
                    let _ = black_box(run_script(black_box(s), &opts));
                }
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = check_state, checked_run
}
criterion_main!(benches);
