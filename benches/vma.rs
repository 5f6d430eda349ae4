//! VMA calls a second: `vma_round` (eight calls that split and merge: mprotect, munmap +
//! mmap, mremap shrink, grow and move) on a random VMA among 1,000 and 100,000 live ones, as
//! `anonmm bench` measures; plus mmap + munmap of a fresh VMA, and an mprotect pair that
//! splits a VMA in three and merges it back.
//!
//!     cargo bench --bench vma

use std::hint::black_box;
use std::time::Duration;

use anonmm::abi::{MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE};
use anonmm::bench::{many_vmas, vma_addr, vma_round};
use anonmm::kernel::Kernel;
use anonmm::types::{PAGE_SIZE, Pid};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rand::{Rng, SeedableRng, rngs::SmallRng};

const P: Pid = Pid(1);
/// Where `vma_round` moves a VMA to and back from: far above every VMA of `many_vmas`.
const SPARE: u64 = 1 << 40;

fn rounds(c: &mut Criterion) {
    let mut g = c.benchmark_group("vma_round");
    g.throughput(Throughput::Elements(8));
    for live in [1_000, 100_000] {
        let mut sys = many_vmas(live, Kernel::default());
        let mut rng = SmallRng::seed_from_u64(1);
        g.bench_function(BenchmarkId::from_parameter(format!("{live}-vmas")), |b| {
            b.iter(|| vma_round(black_box(&mut sys), rng.random_range(0..live), SPARE))
        });
    }
    g.finish();
}

fn calls(c: &mut Criterion) {
    let live = 1_000;
    let mut g = c.benchmark_group("vma_calls");
    g.throughput(Throughput::Elements(2));
    let mut sys = many_vmas(live, Kernel::default());
    // A VMA of its own: top-down, far above the 1,000, so it merges with nothing.
    g.bench_function("mmap+munmap-fresh/1000-vmas", |b| {
        b.iter(|| {
            let a = sys
                .sys_mmap(P, 0, 4 * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
                .expect("mmap");
            sys.sys_munmap(P, black_box(a), 4 * PAGE_SIZE).expect("munmap");
        })
    });
    let mut rng = SmallRng::seed_from_u64(2);
    g.bench_function("mprotect-split+merge/1000-vmas", |b| {
        b.iter(|| {
            let a = vma_addr(rng.random_range(0..live)) + PAGE_SIZE;
            sys.sys_mprotect(P, a, PAGE_SIZE, PROT_READ).expect("mprotect split");
            sys.sys_mprotect(P, a, PAGE_SIZE, PROT_READ | PROT_WRITE).expect("mprotect merge");
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = rounds, calls
}
criterion_main!(benches);
