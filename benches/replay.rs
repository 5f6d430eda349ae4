//! Trace import and replay, in trace lines a second: `import::read_trace` (decompress and
//! parse), `replay::replay_script` under the kernel policy and under `auto` (on the script
//! imported once, beforehand), and `bench::trace_floor` (decompress and split into lines), the
//! floor they cannot beat.
//!
//! The trace is `ANONMM_BENCH_TRACE` if set, else the bundled one (`bench::BUNDLED_TRACE`),
//! else `../shared/traces/python.perf.txt.zst`; with none of them readable the benchmarks are
//! skipped (with a message), not failed.
//!
//!     cargo bench --bench replay
//!     ANONMM_BENCH_TRACE=path/to/trace.perf.txt.zst cargo bench --bench replay

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anonmm::bench::{BUNDLED_TRACE, trace_floor};
use anonmm::policy::Policy;
use anonmm::run::RunOptions;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// The shared trace used until the bundled one is in the repository.
const FALLBACK_TRACE: &str = "../shared/traces/python.perf.txt.zst";

/// The trace to measure, if one is readable.
fn trace() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let candidates: Vec<PathBuf> = std::env::var_os("ANONMM_BENCH_TRACE")
        .map(PathBuf::from)
        .into_iter()
        .chain([root.join(BUNDLED_TRACE), root.join(FALLBACK_TRACE)])
        .collect();
    let found = candidates.iter().find(|p| p.is_file()).cloned();
    if found.is_none() {
        let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
        eprintln!("replay benchmarks skipped: no trace among {}", tried.join(", "));
    }
    found
}

fn replay(c: &mut Criterion) {
    let Some(path) = trace() else { return };
    let (_, lines) = match trace_floor(&path) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("replay benchmarks skipped: {}: {e}", path.display());
            return;
        }
    };
    let name = path.file_name().map_or_else(|| "trace".to_string(), |n| n.to_string_lossy().into_owned());
    let (script, _) = match anonmm::import::read_trace(&path) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("replay benchmarks skipped: {e}");
            return;
        }
    };
    eprintln!("{}: {lines} lines, {} steps", path.display(), script.steps.len());

    let mut g = c.benchmark_group("replay");
    g.throughput(Throughput::Elements(lines as u64));
    g.bench_function(BenchmarkId::new("floor", &name), |b| {
        b.iter(|| trace_floor(black_box(&path)).expect("read before"))
    });
    g.bench_function(BenchmarkId::new("import", &name), |b| {
        b.iter(|| anonmm::import::read_trace(black_box(&path)).expect("imported before"))
    });
    for policy in [Policy::Kernel, Policy::Auto { copy_budget: anonmm::policy::AUTO_DEFAULT_BUDGET }] {
        let opts = RunOptions { policy, ..RunOptions::default() };
        g.bench_function(BenchmarkId::new(format!("replay-{policy}"), &name), |b| {
            b.iter(|| {
                anonmm::replay::replay_script(black_box(&script), &opts, 0, &mut |_| {}).expect("replay")
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = replay
}
criterion_main!(benches);
