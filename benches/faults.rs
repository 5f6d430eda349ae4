//! Fault throughput, in pages a second: every kind of fault `touch` takes, on a 1 MiB
//! region, with touches of 64 KiB and of one page. The workloads are those of `anonmm bench`
//! (`anonmm::bench`); mmap, munmap, fork and exit are done outside the timed part.
//!
//!     cargo bench --bench faults
//!     cargo bench --bench faults -- 'cow'      # one group or kind only

use std::hint::black_box;
use std::time::{Duration, Instant};

use anonmm::abi::{MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE};
use anonmm::bench::{one_process, touch_range};
use anonmm::kernel::Kernel;
use anonmm::mm::System;
use anonmm::types::{PAGE_SIZE, Pid};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// Pages touched per iteration.
const PAGES: u64 = 256;
const LEN: u64 = PAGES * PAGE_SIZE;
const P: Pid = Pid(1);
const CHILD: Pid = Pid(2);
/// The touch sizes: 64 KiB and one page.
const CHUNKS: [(&str, u64); 2] = [("64KiB", 64 * 1024), ("4KiB", PAGE_SIZE)];

fn map(sys: &mut System) -> u64 {
    sys.sys_mmap(P, 0, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0).expect("mmap")
}

/// A process with the region mapped and written: every page resident and exclusive.
fn resident() -> (System, u64) {
    let mut sys = one_process(65530, Kernel::default());
    let a = map(&mut sys);
    touch_range(&mut sys, P, a, LEN, 64 * 1024, true);
    (sys, a)
}

/// Touches of a freshly mapped region (write: new anonymous pages; read: the zero page),
/// in steady state: the region is unmapped and mapped again between iterations, untimed.
fn fresh_region(iters: u64, chunk: u64, write: bool) -> Duration {
    let mut sys = one_process(65530, Kernel::default());
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let a = map(&mut sys);
        let t = Instant::now();
        touch_range(&mut sys, P, a, LEN, chunk, write);
        total += t.elapsed();
        sys.sys_munmap(P, a, LEN).expect("munmap");
    }
    total
}

/// Copy-on-write after fork: a child is forked (untimed); `reuse` false times the child's
/// writes (each page copied), `reuse` true times the parent's writes after the child's
/// copies (each page reused in place). The child exits untimed.
fn cow(iters: u64, chunk: u64, reuse: bool) -> Duration {
    let (mut sys, a) = resident();
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        sys.sys_fork(P, CHILD).expect("fork");
        if reuse {
            touch_range(&mut sys, CHILD, a, LEN, chunk, true);
        }
        let who = if reuse { P } else { CHILD };
        let t = Instant::now();
        touch_range(&mut sys, who, a, LEN, chunk, true);
        total += t.elapsed();
        sys.sys_exit(CHILD).expect("exit");
    }
    total
}

fn faults(c: &mut Criterion) {
    let mut g = c.benchmark_group("faults");
    g.throughput(Throughput::Elements(PAGES));
    for (name, chunk) in CHUNKS {
        g.bench_with_input(BenchmarkId::new("new-anon-write", name), &chunk, |b, &chunk| {
            b.iter_custom(|iters| fresh_region(iters, chunk, true))
        });
        g.bench_with_input(BenchmarkId::new("zero-page-read", name), &chunk, |b, &chunk| {
            b.iter_custom(|iters| fresh_region(iters, chunk, false))
        });
        let (mut sys, a) = resident();
        g.bench_with_input(BenchmarkId::new("resident-read", name), &chunk, |b, &chunk| {
            b.iter(|| touch_range(black_box(&mut sys), P, a, LEN, chunk, false))
        });
        g.bench_with_input(BenchmarkId::new("resident-write", name), &chunk, |b, &chunk| {
            b.iter(|| touch_range(black_box(&mut sys), P, a, LEN, chunk, true))
        });
        g.bench_with_input(BenchmarkId::new("cow-copy", name), &chunk, |b, &chunk| {
            b.iter_custom(|iters| cow(iters, chunk, false))
        });
        g.bench_with_input(BenchmarkId::new("cow-reuse", name), &chunk, |b, &chunk| {
            b.iter_custom(|iters| cow(iters, chunk, true))
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
    targets = faults
}
criterion_main!(benches);
