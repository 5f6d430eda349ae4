//! `anonmm bench`: the end-to-end throughput and scale figures of BENCHMARKS.md, measured on
//! the machine it runs on. The same workloads back the criterion benchmarks in `benches/`.
//!
//! Every workload drives the public API (`System::sys_*`, `touch`, the script runner, the
//! trace importer), so a figure is what an embedding program or `anonmm replay` would see.
//! Times are wall-clock, except the fault and VMA-call rates, which are the measuring
//! thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`; the wall time is in their detail): on a
//! shared machine the wall time of a single-threaded loop measures the neighbours as much as
//! the model. Each short figure is the best of a few repetitions, for the same reason.

use std::path::Path;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng, rngs::SmallRng};

use crate::abi::{
    MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, MREMAP_FIXED, MREMAP_MAYMOVE, PROT_READ, PROT_WRITE,
};
use crate::kernel::Kernel;
use crate::mm::{Config, System};
use crate::run::RunOptions;
use crate::types::{PAGE_SIZE, Pid};

/// What a figure must reach.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub enum Target {
    /// At least this value.
    AtLeast(f64),
    /// At most this value.
    AtMost(f64),
}

impl Target {
    /// Whether `v` meets the target.
    pub fn met(self, v: f64) -> bool {
        match self {
            Target::AtLeast(t) => v >= t,
            Target::AtMost(t) => v <= t,
        }
    }
}

/// One measured figure.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Figure {
    /// What was measured.
    pub name: String,
    /// The measurement.
    pub value: f64,
    /// Its unit (`Mpages/s`, `calls/s`, `x`, `bytes`, ...).
    pub unit: &'static str,
    /// The target for it, if it has one.
    pub target: Option<Target>,
    /// How it was measured: sizes, counts, times.
    pub detail: String,
}

impl Figure {
    fn new(name: impl Into<String>, value: f64, unit: &'static str, target: Option<Target>) -> Figure {
        Figure { name: name.into(), value, unit, target, detail: String::new() }
    }
    fn detail(mut self, d: impl Into<String>) -> Figure {
        self.detail = d.into();
        self
    }
    /// "met", "MISSED" or "" (no target).
    pub fn verdict(&self) -> &'static str {
        match self.target {
            Some(_) if self.missed() => "MISSED",
            Some(_) => "met",
            None => "",
        }
    }
    /// Whether the figure has a target and misses it.
    pub fn missed(&self) -> bool {
        self.target.is_some_and(|t| !t.met(self.value))
    }
}

/// The best (shortest) of `reps` runs of `f`, which sets up its own state and returns the
/// time of the part being measured.
pub fn best_of<T: Ord + Default>(reps: usize, mut f: impl FnMut() -> T) -> T {
    (0..reps.max(1)).map(|_| f()).min().unwrap_or_default()
}

/// The calling thread's CPU time so far (user and system).
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec for the call to write; the clock always exists on Linux.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if r != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The time a piece of work took: the thread's CPU time (first, so that the best of several
/// is the least CPU time) and the wall time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Took {
    /// CPU time of the measuring thread.
    pub cpu: Duration,
    /// Wall-clock time.
    pub wall: Duration,
}

impl Took {
    /// The longest possible time (the start of a minimum).
    pub const MAX: Took = Took { cpu: Duration::MAX, wall: Duration::MAX };
}

/// A running measure of CPU and wall time.
pub struct Stopwatch {
    cpu: Duration,
    wall: Instant,
}

impl Stopwatch {
    /// Start measuring.
    pub fn start() -> Stopwatch {
        Stopwatch { cpu: thread_cpu(), wall: Instant::now() }
    }

    /// The times since the start.
    pub fn took(&self) -> Took {
        Took { cpu: thread_cpu().saturating_sub(self.cpu), wall: self.wall.elapsed() }
    }
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

/// The machine: CPU model, cores, memory and kernel, from /proc.
pub fn machine_description() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim()))
        .unwrap_or("unknown CPU");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mem_kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find_map(|l| l.strip_prefix("MemTotal:").map(|r| r.trim().to_string())))
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
    format!("{model}, {cores} cores, {mem_kb} RAM, Linux {}, load average {load}", kernel.trim())
}

/// This process's resident set and its peak (`VmRSS`, `VmHWM`), in bytes.
pub fn rss_bytes() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

const RW: u64 = PROT_READ | PROT_WRITE;
const ANON: u64 = MAP_PRIVATE | MAP_ANONYMOUS;

fn tag(a: u64) -> u64 {
    a | 1
}

/// The run options of the figures: the default ones, modelling `kernel`.
fn on(kernel: Kernel) -> RunOptions {
    RunOptions { config: Config { kernel, ..Config::default() }, ..RunOptions::default() }
}

/// A system modelling `kernel` with one process (pid 1) and `max_map_count` raised to
/// `map_count`.
pub fn one_process(map_count: usize, kernel: Kernel) -> System {
    let mut sys = System::new(Config { max_map_count: map_count, kernel, ..Config::default() });
    sys.spawn(Pid(1)).expect("a fresh system has no pid 1");
    sys
}

/// Touch `[addr, addr + len)` in `chunk`-byte calls.
pub fn touch_range(sys: &mut System, pid: Pid, addr: u64, len: u64, chunk: u64, write: bool) {
    let mut a = addr;
    while a < addr + len {
        let l = chunk.min(addr + len - a);
        let r = sys.touch(pid, a, l, write, &tag);
        debug_assert!(matches!(r, Ok(Ok(()))), "touch {a:#x}: {r:?}");
        a += l;
    }
}

/// The fault figures: pages a second for each kind of fault, `pages` at a time, with
/// `touch` calls of `chunk` bytes.
pub fn bench_faults(pages: u64, chunk: u64, reps: usize, kernel: Kernel) -> Vec<Figure> {
    let len = pages * PAGE_SIZE;
    let p = Pid(1);
    // One-page touches (as replay makes them) have the higher target of issue 20.
    let target = Some(Target::AtLeast(if chunk == PAGE_SIZE { 25.0 } else { 20.0 }));
    let mut kinds: Vec<(&str, Took)> = Vec::new();
    let map = |sys: &mut System| sys.sys_mmap(p, 0, len, RW, ANON, -1, 0).expect("mmap");
    // New anonymous pages, in steady state: the region was mapped, written and unmapped
    // once before, as a long-running program reuses memory.
    kinds.push((
        "new anonymous page (write)",
        best_of(reps, || {
            let mut sys = one_process(65530, kernel);
            let a = map(&mut sys);
            touch_range(&mut sys, p, a, len, chunk, true);
            sys.sys_munmap(p, a, len).expect("munmap");
            let a = map(&mut sys);
            let t = Stopwatch::start();
            touch_range(&mut sys, p, a, len, chunk, true);
            t.took()
        }),
    ));
    kinds.push((
        "zero page (read of a new page)",
        best_of(reps, || {
            let mut sys = one_process(65530, kernel);
            let a = map(&mut sys);
            let t = Stopwatch::start();
            touch_range(&mut sys, p, a, len, chunk, false);
            t.took()
        }),
    ));
    let mut sys = one_process(65530, kernel);
    let a = map(&mut sys);
    touch_range(&mut sys, p, a, len, chunk, true);
    kinds.push((
        "resident page (write)",
        best_of(reps, || {
            let t = Stopwatch::start();
            touch_range(&mut sys, p, a, len, chunk, true);
            t.took()
        }),
    ));
    kinds.push((
        "resident page (read)",
        best_of(reps, || {
            let t = Stopwatch::start();
            touch_range(&mut sys, p, a, len, chunk, false);
            t.took()
        }),
    ));
    // Copy-on-write after fork: the child's writes copy, then the parent's reuse.
    let (mut copy, mut reuse) = (Took::MAX, Took::MAX);
    for i in 0..reps.max(1) {
        let child = Pid(2 + i as u32);
        sys.sys_fork(p, child).expect("fork");
        let t = Stopwatch::start();
        touch_range(&mut sys, child, a, len, chunk, true);
        copy = copy.min(t.took());
        let t = Stopwatch::start();
        touch_range(&mut sys, p, a, len, chunk, true);
        reuse = reuse.min(t.took());
        sys.sys_exit(child).expect("exit");
    }
    kinds.push(("copy-on-write copy (child writes after fork)", copy));
    kinds.push(("copy-on-write reuse (parent writes after the child's copy)", reuse));
    let mut out: Vec<Figure> = kinds
        .iter()
        .map(|(name, d)| {
            Figure::new(format!("faults: {name}"), rate(pages, d.cpu) / 1e6, "Mpages/s", target).detail(
                format!(
                    "{pages} pages, touch of {} KiB per call, {:.4} s CPU ({:.4} s wall)",
                    chunk / 1024,
                    d.cpu.as_secs_f64(),
                    d.wall.as_secs_f64()
                ),
            )
        })
        .collect();
    let total: Duration = kinds.iter().map(|k| k.1.cpu).sum();
    out.push(
        Figure::new(
            "faults: all kinds above, together",
            rate(pages * kinds.len() as u64, total) / 1e6,
            "Mpages/s",
            target,
        )
        .detail(format!("{} pages in {:.3} s CPU", pages * kinds.len() as u64, total.as_secs_f64())),
    );
    out
}

/// An address space of `live` separate anonymous VMAs of four pages (one page apart, each
/// with a written page), for the VMA-call figures. VMA `i` starts at [`vma_addr`]`(i)`.
pub fn many_vmas(live: usize, kernel: Kernel) -> System {
    let mut sys = one_process(live * 2 + 1024, kernel);
    let p = Pid(1);
    for i in 0..live {
        let a = vma_addr(i);
        sys.sys_mmap(p, a, 4 * PAGE_SIZE, RW, ANON | MAP_FIXED, -1, 0).expect("mmap");
        sys.touch(p, a, 1, true, &tag).expect("pid").expect("touch");
    }
    sys
}

/// Where [`many_vmas`] puts VMA `i`: five pages apart from 16 GiB up.
pub fn vma_addr(i: usize) -> u64 {
    (1 << 34) + i as u64 * 5 * PAGE_SIZE
}

/// One round of eight VMA calls on VMA `i` of [`many_vmas`], each splitting or merging,
/// leaving the layout as it was: mprotect of a middle page and back (split in three, merge
/// back), munmap of a page and mmap over it (split, three-way merge), mremap shrink and grow
/// in place, and mremap moving the VMA (and its page tables) away and back.
pub fn vma_round(sys: &mut System, i: usize, spare: u64) {
    let p = Pid(1);
    let a = vma_addr(i);
    let pg = PAGE_SIZE;
    let ok = |r: crate::errno::KResult<u64>| debug_assert!(r.is_ok(), "{r:?}");
    ok(sys.sys_mprotect(p, a + pg, pg, PROT_READ));
    ok(sys.sys_mprotect(p, a + pg, pg, RW));
    ok(sys.sys_munmap(p, a + 2 * pg, pg));
    ok(sys.sys_mmap(p, a + 2 * pg, pg, RW, ANON | MAP_FIXED, -1, 0));
    ok(sys.sys_mremap(p, a, 4 * pg, 3 * pg, 0, 0));
    ok(sys.sys_mremap(p, a, 3 * pg, 4 * pg, 0, 0));
    ok(sys.sys_mremap(p, a, 4 * pg, 4 * pg, MREMAP_MAYMOVE | MREMAP_FIXED, spare));
    ok(sys.sys_mremap(p, spare, 4 * pg, 4 * pg, MREMAP_MAYMOVE | MREMAP_FIXED, a));
}

/// VMA calls a second with `live` VMAs in the process: `rounds` rounds of [`vma_round`] on
/// VMAs picked at random (the figure), or taken in address order (`in_order`: the
/// same work with the cache misses of random picks mostly gone). The target applies to
/// random picks among 100,000 VMAs.
pub fn bench_vma_calls(live: usize, rounds: usize, reps: usize, in_order: bool, kernel: Kernel) -> Figure {
    let mut sys = many_vmas(live, kernel);
    let spare = 1 << 40;
    let mut rng = SmallRng::seed_from_u64(1);
    let mut next = 0;
    let d = best_of(reps, || {
        let t = Stopwatch::start();
        for _ in 0..rounds {
            let i = if in_order {
                next = (next + 1) % live;
                next
            } else {
                rng.random_range(0..live)
            };
            vma_round(&mut sys, i, spare);
        }
        t.took()
    });
    let map_count = sys.vm.mms[sys.vm.mm_of(Pid(1)).expect("pid 1")].map_count();
    let calls = rounds as u64 * 8;
    let (name, target) = match (in_order, live >= 100_000) {
        (false, true) => (format!("VMA calls with {live} live VMAs"), Some(Target::AtLeast(2e6))),
        (false, false) => (format!("VMA calls with {live} live VMAs (all in the cache)"), None),
        (true, _) => (format!("VMA calls with {live} live VMAs, taken in address order"), None),
    };
    Figure::new(name, rate(calls, d.cpu), "calls/s", target)
        .detail(format!(
            "{calls} calls (mprotect split/merge, munmap + mmap merge, mremap shrink/grow/move) in {:.3} s CPU ({:.3} s wall); {map_count} VMAs at the end; {} splits and {} merges per round",
            d.cpu.as_secs_f64(),
            d.wall.as_secs_f64(),
            3,
            3,
        ))
}

/// The scale run: `procs` processes made by fork, `vmas` VMAs of `pages_per_vma` written
/// pages each in every one of them; each child then writes one page in 16 (copy-on-write).
/// Reports the peak memory and what a VMA and a page cost.
pub fn bench_scale(procs: usize, vmas: usize, pages_per_vma: u64, kernel: Kernel) -> Vec<Figure> {
    let p = Pid(1);
    let (rss0, _) = rss_bytes();
    let t0 = Instant::now();
    let mut sys = one_process(vmas + 1024, kernel);
    let stride = (pages_per_vma + 1) * PAGE_SIZE;
    let base = 1u64 << 36;
    for i in 0..vmas as u64 {
        sys.sys_mmap(p, base + i * stride, pages_per_vma * PAGE_SIZE, RW, ANON | MAP_FIXED, -1, 0)
            .expect("mmap");
    }
    let (rss1, _) = rss_bytes();
    for i in 0..vmas as u64 {
        sys.touch(p, base + i * stride, pages_per_vma * PAGE_SIZE, true, &tag).expect("pid").expect("touch");
    }
    let (rss2, _) = rss_bytes();
    for c in 1..procs {
        sys.sys_fork(p, Pid(1 + c as u32)).expect("fork");
    }
    let (rss3, _) = rss_bytes();
    let mut copies = 0u64;
    for c in 1..procs {
        let child = Pid(1 + c as u32);
        for i in 0..vmas as u64 {
            for pg in (0..pages_per_vma).step_by(16) {
                sys.touch(child, base + i * stride + pg * PAGE_SIZE, 1, true, &tag)
                    .expect("pid")
                    .expect("touch");
                copies += 1;
            }
        }
    }
    let elapsed = t0.elapsed();
    let (rss4, hwm) = rss_bytes();
    let total_vmas: usize = sys.vm.mms.iter().map(|(_, m)| m.map_count()).sum();
    let resident: u64 = sys.vm.procs.keys().map(|&pid| sys.vm.rss_pages(pid).unwrap_or(0)).sum();
    let folios = sys.mem.folios.len();
    let full = procs * vmas >= 1 << 20 && pages_per_vma >= 16;
    let per = |d: u64, n: u64| d.saturating_sub(0) as f64 / n.max(1) as f64;
    let forked_vmas = (vmas * (procs - 1)) as u64;
    let forked_pages = (procs as u64 - 1) * vmas as u64 * pages_per_vma;
    vec![
        Figure::new("scale: peak memory", hwm as f64 / (1u64 << 30) as f64, "GiB", Some(Target::AtMost(2.0))).detail(
            format!(
                "{procs} processes, {total_vmas} VMAs, {resident} resident pages ({folios} folios) built in {:.1} s; RSS {} MiB at the end",
                elapsed.as_secs_f64(),
                rss4 >> 20
            ),
        ),
        // The size targets apply to the size (64 processes, 16384 VMAs of 16 pages).
        Figure::new("scale: VMAs", total_vmas as f64, "VMAs", full.then_some(Target::AtLeast(1e6))),
        Figure::new(
            "scale: resident pages (the sum of every process's RSS)",
            resident as f64,
            "pages",
            full.then_some(Target::AtLeast(16e6)),
        ),
        Figure::new("scale: bytes per new VMA (mmap, not yet faulted)", per(rss1 - rss0.min(rss1), vmas as u64), "bytes", None),
        Figure::new("scale: bytes per written page (folio and PTE; with its VMA's anon_vma)", per(rss2 - rss1.min(rss2), vmas as u64 * pages_per_vma), "bytes", None),
        Figure::new("scale: bytes per forked VMA with its PTEs (shared pages)", per(rss3 - rss2.min(rss3), forked_vmas), "bytes", None)
            .detail(format!("{:.1} bytes per shared PTE if VMAs cost as above", per((rss3 - rss2.min(rss3)).saturating_sub(forked_vmas * per(rss1 - rss0.min(rss1), vmas as u64) as u64), forked_pages))),
        Figure::new("scale: bytes per copy-on-write copy", per(rss4 - rss3.min(rss4), copies), "bytes", None)
            .detail(format!("{copies} copies")),
    ]
}

/// Decompress a trace and split it into lines: the floor a replay cannot beat. Returns the
/// time and the line count.
pub fn trace_floor(path: &Path) -> std::io::Result<(Duration, usize)> {
    let t = Instant::now();
    let raw = std::fs::read(path)?;
    let bytes = if raw.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) { zstd::decode_all(&raw[..])? } else { raw };
    let lines = bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count();
    Ok((t.elapsed(), lines))
}

/// Replay a trace under each policy and compare with the floor: (import + replay) time over
/// the time to decompress and split it.
pub fn bench_replay(
    path: &Path,
    policies: &[crate::policy::Policy],
    reps: usize,
    kernel: Kernel,
) -> Result<Vec<Figure>, String> {
    let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into());
    // `anonmm replay --policy P` streams the import into the replay: that is the figure.
    // The floor and the replays are measured in turn, round after round, so that both see
    // the same moments of a shared machine (its speed drifts by a third within a minute).
    let mut floor = Duration::MAX;
    let mut lines = 0;
    let mut best = vec![Duration::MAX; policies.len()];
    let mut faults = 0;
    let opts: Vec<RunOptions> = policies.iter().map(|&policy| RunOptions { policy, ..on(kernel) }).collect();
    for _ in 0..reps.max(1) {
        let (d, n) = trace_floor(path).map_err(|e| format!("{}: {e}", path.display()))?;
        floor = floor.min(d);
        lines = n;
        for (i, o) in opts.iter().enumerate() {
            let t = Instant::now();
            let (res, _) = crate::replay::replay_trace(path, o, 0, &mut |_| {}).map_err(|e| e.to_string())?;
            best[i] = best[i].min(t.elapsed());
            faults = res.stats.faults;
        }
    }
    let mut out = vec![
        Figure::new(
            format!("replay {name}: floor (decompress and split into lines)"),
            floor.as_secs_f64(),
            "s",
            None,
        )
        .detail(format!("{lines} lines")),
    ];
    for (&policy, d) in policies.iter().zip(best) {
        out.push(
            Figure::new(
                format!("replay {name} under {policy}: time over the floor"),
                d.as_secs_f64() / floor.as_secs_f64(),
                "x",
                Some(Target::AtMost(2.0)),
            )
            .detail(format!(
                "{:.3} s, import streamed into the replay (two threads); {faults} faults",
                d.as_secs_f64()
            )),
        );
    }
    // The same in two phases, as `--policy all` (and `--check`) run: import, then replay.
    let mut import = Duration::MAX;
    let mut script = None;
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        let (s, _) = crate::import::read_trace(path).map_err(|e| e.to_string())?;
        import = import.min(t.elapsed());
        script = Some(s);
    }
    let script = script.expect("read at least once");
    let mut shared = Vec::new();
    for &policy in policies {
        let opts = RunOptions { policy, ..on(kernel) };
        let d = best_of(reps, || {
            let t = Instant::now();
            crate::replay::replay_script(&script, &opts, 0, &mut |_| {}).expect("replay");
            t.elapsed()
        });
        shared.push(d.as_secs_f64());
    }
    // `anonmm replay --policy all` imports a trace once and replays it under every policy:
    // each policy's share is then its replay and a part of the import.
    let n = shared.len().max(1) as f64;
    let import_share = import.as_secs_f64() / n;
    for (&policy, &replay) in policies.iter().zip(&shared) {
        out.push(
            Figure::new(
                format!("replay {name} under {policy}, imported once for all policies: time over the floor"),
                (import_share + replay) / floor.as_secs_f64(),
                "x",
                Some(Target::AtMost(2.0)),
            )
            .detail(format!(
                "replay {replay:.3} s and 1/{} of the import {:.3} s",
                shared.len(),
                import_share * n
            )),
        );
    }
    Ok(out)
}

/// Run the fuzzer's scripts (`seeds` of them, `steps` steps) with and without the invariant
/// checker after every step: the checker's cost as a ratio.
pub fn bench_check(seeds: u64, steps: usize, reps: usize, kernel: Kernel) -> Figure {
    let cfg = crate::r#gen::GenConfig { steps, ..Default::default() };
    let scripts: Vec<_> = (0..seeds).map(|s| crate::r#gen::generate(s, &cfg)).collect();
    let time = |check: bool| {
        let opts = RunOptions { check, check_sampled: true, last_view_only: true, ..on(kernel) };
        best_of(reps, || {
            let t = Instant::now();
            for s in &scripts {
                let _ = crate::run::run_script(s, &opts);
            }
            t.elapsed()
        })
    };
    let (plain, checked) = (time(false), time(true));
    Figure::new(
        "invariant checker: --check over an unchecked run (fuzz scripts)",
        checked.as_secs_f64() / plain.as_secs_f64(),
        "x",
        Some(Target::AtMost(3.0)),
    )
    .detail(format!(
        "{seeds} generated scripts of {steps} steps: {:.3} s unchecked, {:.3} s checked",
        plain.as_secs_f64(),
        checked.as_secs_f64()
    ))
}

/// The same scripts on the model and on the running kernel (the oracle's native executor),
/// each capturing every step's view: the model's speed-up. `Err` when the oracle cannot run.
#[cfg(target_os = "linux")]
pub fn bench_oracle(seeds: u64, steps: usize) -> Result<Figure, String> {
    crate::oracle::available()?;
    let cfg = crate::r#gen::GenConfig { steps, ..Default::default() };
    let scripts: Vec<_> = (0..seeds).map(|s| crate::r#gen::generate(s, &cfg)).collect();
    // The host's kernel is 6.18: the model as 6.18 is what it is compared with.
    let opts = RunOptions::default();
    let t = Instant::now();
    for s in &scripts {
        let _ = crate::run::run_script(s, &opts);
    }
    let model = t.elapsed();
    let t = Instant::now();
    for s in &scripts {
        let _ = crate::oracle::run_native(s);
    }
    let kernel = t.elapsed();
    Ok(Figure::new(
        "the model over the kernel oracle (same scripts, a view after every step)",
        kernel.as_secs_f64() / model.as_secs_f64(),
        "x faster",
        Some(Target::AtLeast(20.0)),
    )
    .detail(format!(
        "{seeds} generated scripts of {steps} steps: model {:.3} s, kernel {:.3} s",
        model.as_secs_f64(),
        kernel.as_secs_f64()
    )))
}

/// Render figures as a Markdown table.
pub fn render_markdown(figs: &[Figure]) -> String {
    let mut s =
        String::from("| figure | value | unit | target | verdict | how |\n|---|---:|---|---|---|---|\n");
    for f in figs {
        let target = match f.target {
            Some(Target::AtLeast(t)) => format!("≥ {}", fmt_num(t)),
            Some(Target::AtMost(t)) => format!("≤ {}", fmt_num(t)),
            None => String::new(),
        };
        // A `|` in a cell (`zstdcat FILE | wc -l`) would end it, code span or not.
        let cell = |t: &str| t.replace('|', "\\|");
        s += &format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            cell(&f.name),
            fmt_num(f.value),
            f.unit,
            target,
            f.verdict(),
            cell(&f.detail)
        );
    }
    s
}

fn fmt_num(v: f64) -> String {
    if v >= 1e6 && v.fract() == 0.0 || v >= 1e7 {
        format!("{:.2e}", v)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Render figures as aligned text.
pub fn render_text(figs: &[Figure]) -> String {
    let w = figs.iter().map(|f| f.name.chars().count()).max().unwrap_or(0);
    let mut s = String::new();
    for f in figs {
        let target = match f.target {
            Some(Target::AtLeast(t)) => format!("(target ≥ {}: {})", fmt_num(t), f.verdict()),
            Some(Target::AtMost(t)) => format!("(target ≤ {}: {})", fmt_num(t), f.verdict()),
            None => String::new(),
        };
        s += &format!("{:<w$}  {:>10} {:<9} {target}\n", f.name, fmt_num(f.value), f.unit);
        if !f.detail.is_empty() {
            s += &format!("{:<w$}    {}\n", "", f.detail);
        }
    }
    s
}

/// The bundled trace of `anonmm bench`'s replay figures, relative to the repository: a
/// Python program building a 21-million-entry dict, recorded with `anonmm record`.
pub const BUNDLED_TRACE: &str = "benches/data/python-dict-1m.perf.txt.zst";

/// The state a generated script leaves: `crate::r#gen::generate(seed)` with `steps` steps
/// run on the model (unchecked, no views), as the fuzzer's states that the invariant checker
/// walks. A step the model refuses stops the run there, with the state reached so far.
pub fn generated_state(seed: u64, steps: usize, kernel: Kernel) -> System {
    let cfg = crate::r#gen::GenConfig { steps, ..Default::default() };
    let script = crate::r#gen::generate(seed, &cfg);
    let opts = RunOptions { last_view_only: true, ..on(kernel) };
    let mut runner = crate::run::Runner::new(&script, &opts).expect("a runner starts");
    for step in &script.steps {
        if runner.step(step, false).is_err() {
            break;
        }
    }
    runner.sys
}

/// Run `sh -c script` and time it (None when it cannot run or fails).
fn time_shell(script: &str) -> Option<Duration> {
    let t = Instant::now();
    let ok = std::process::Command::new("sh")
        .args(["-c", script])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?
        .success();
    ok.then(|| t.elapsed())
}

/// `anonmm replay [--policy all] FILE > /dev/null` run as a command by this binary, for
/// the figures set against a command's floor (`cat`, `zstdcat | wc -l`): the same process
/// start, fresh memory and exit as the floor's, not a replay in a process whose heap earlier
/// rounds have already faulted in.
fn replay_command(path: &Path, kernel: Kernel, all: bool) -> Result<String, String> {
    let exe = std::env::current_exe().map_err(|e| format!("this program's path: {e}"))?;
    let policy = if all { " --policy all" } else { "" };
    Ok(format!("{} replay --kernel {kernel}{policy} {} > /dev/null", sh_quote(&exe), sh_quote(path)))
}

/// A path quoted for `sh`.
fn sh_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

/// From a `perf.data` to the replay table (the `anonmm replay` command, start to exit),
/// against `perf script` alone on the same file (the text the importer read before) and
/// against reading the file (`cat FILE > /dev/null`), and anonmm's import alone (the records
/// converted into steps, no replay, in this process): measured in turn, round after round,
/// the best of each. A zstd-compressed `perf.data` is decompressed to a temporary file first, which is
/// what perf (which cannot read it) and the figures then use.
pub fn bench_perf_data(path: &Path, reps: usize, kernel: Kernel) -> Result<Vec<Figure>, String> {
    let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into());
    let raw = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let tmp = std::env::temp_dir().join(format!("anonmm-bench-{}.data", std::process::id()));
    let file = if raw.starts_with(&crate::import::perf::ZSTD_MAGIC) {
        let bytes = zstd::decode_all(&raw[..]).map_err(|e| format!("{}: {e}", path.display()))?;
        std::fs::write(&tmp, bytes).map_err(|e| format!("{}: {e}", tmp.display()))?;
        tmp.clone()
    } else {
        path.to_path_buf()
    };
    drop(raw);
    let q = sh_quote(&file);
    let perf_script =
        format!("perf script -i {q} --show-mmap-events -F comm,pid,tid,time,event,trace > /dev/null");
    let opts = on(kernel);
    let command = replay_command(&file, kernel, false)?;
    let (mut cat, mut perf, mut reader, mut replay) =
        (Duration::MAX, None::<Duration>, Duration::MAX, Duration::MAX);
    let mut lines = 0;
    // The rows' steps, from one replay in this process (not timed).
    let (_, report) = crate::replay::replay_trace(&file, &opts, 0, &mut |_| {}).map_err(|e| e.to_string())?;
    let steps = report.steps;
    for _ in 0..reps.max(1) {
        if let Some(d) = time_shell(&format!("cat {q} > /dev/null")) {
            cat = cat.min(d);
        }
        if let Some(d) = time_shell(&perf_script) {
            perf = Some(perf.map_or(d, |p| p.min(d)));
        }
        let t = Instant::now();
        // The import alone: the records read and converted into steps, no replay.
        let mut st = crate::import::stream_trace(&file).map_err(|e| e.to_string())?;
        while let Some(b) = st.next_batch() {
            st.recycle(b);
        }
        let end = st.finish();
        reader = reader.min(t.elapsed());
        lines = end.report.events;
        let d = time_shell(&command).ok_or_else(|| format!("`{command}` failed"))?;
        replay = replay.min(d);
    }
    let _ = std::fs::remove_file(&tmp);
    let s = |d: Duration| d.as_secs_f64();
    let mut out = vec![
        Figure::new(format!("perf.data {name}: anonmm replay (kernel), to the table"), s(replay), "s", None)
            .detail(format!(
                "{lines} records (the lines perf script prints), {steps} steps; the command, start to exit"
            )),
        Figure::new(
            format!("perf.data {name}: anonmm's import alone (records to steps, no replay)"),
            s(reader),
            "s",
            None,
        ),
        Figure::new(format!("perf.data {name}: read the file (cat > /dev/null)"), s(cat), "s", None),
        Figure::new(
            format!("perf.data {name}: replay over reading the file"),
            s(replay) / s(cat),
            "x",
            Some(Target::AtMost(2.0)),
        )
        .detail(format!("{:.3} s over {:.3} s", s(replay), s(cat))),
    ];
    match perf {
        Some(p) => {
            out.push(Figure::new(format!("perf.data {name}: perf script alone"), s(p), "s", None));
            out.push(
                Figure::new(
                    format!("perf.data {name}: perf script alone over anonmm's replay to the table"),
                    s(p) / s(replay),
                    "x",
                    Some(Target::AtLeast(5.0)),
                )
                .detail(format!("{:.3} s over {:.3} s", s(p), s(replay))),
            );
        }
        None => eprintln!("perf.data: perf script does not run here: not compared"),
    }
    Ok(out)
}

/// Replay of a text trace (the `anonmm replay` command, start to exit) against `zstdcat FILE
/// | wc -l` (the real floor of reading it), and `replay --policy all` (one import, the
/// policies in parallel) against one policy: measured in turn, round after round, the best
/// of each.
pub fn bench_text_and_all(path: &Path, reps: usize, kernel: Kernel) -> Result<Vec<Figure>, String> {
    let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into());
    let q = sh_quote(path);
    let floor_cmd = if path.extension().is_some_and(|e| e == "zst") {
        format!("zstdcat {q} | wc -l")
    } else {
        format!("wc -l {q}")
    };
    let (one, all) = (replay_command(path, kernel, false)?, replay_command(path, kernel, true)?);
    let policies = crate::policy::ALL_POLICIES.len();
    let (mut floor, mut single, mut every) = (None::<Duration>, Duration::MAX, Duration::MAX);
    for _ in 0..reps.max(1) {
        if let Some(d) = time_shell(&floor_cmd) {
            floor = Some(floor.map_or(d, |f| f.min(d)));
        }
        single = single.min(time_shell(&one).ok_or_else(|| format!("`{one}` failed"))?);
        every = every.min(time_shell(&all).ok_or_else(|| format!("`{all}` failed"))?);
    }
    let s = |d: Duration| d.as_secs_f64();
    let mut out = vec![Figure::new(format!("text {name}: replay (kernel)"), s(single), "s", None)];
    if let Some(f) = floor {
        out.push(Figure::new(format!("text {name}: `{}`", floor_cmd.replace(&q, "FILE")), s(f), "s", None));
        out.push(
            Figure::new(
                format!("text {name}: replay over that floor"),
                s(single) / s(f),
                "x",
                Some(Target::AtMost(2.0)),
            )
            .detail(format!("{:.3} s over {:.3} s", s(single), s(f))),
        );
    }
    out.push(
        Figure::new(
            format!("text {name}: replay --policy all ({policies} policies, one import) over one policy"),
            s(every) / s(single),
            "x",
            Some(Target::AtMost(3.0)),
        )
        .detail(format!("{:.3} s over {:.3} s", s(every), s(single))),
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A figure whose name holds a shell pipe stays one row of six cells.
    #[test]
    fn a_pipe_in_a_figure_does_not_split_its_markdown_cell() {
        let mut f = Figure::new("text t: `zstdcat FILE | wc -l`", 0.07, "s", Some(Target::AtMost(2.0)));
        f.detail = "a | b".into();
        let md = render_markdown(&[f]);
        let row = md.lines().nth(2).expect("a row");
        assert_eq!(row, "| text t: `zstdcat FILE \\| wc -l` | 0.07 | s | ≤ 2.00 | met | a \\| b |");
        assert_eq!(row.matches(" | ").count(), 5);
    }
}
