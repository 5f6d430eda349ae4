//! Synthetic workloads (`anonmm gen KIND`): scripts that do, at a chosen scale and with a
//! seed, what real programs do with anonymous memory, so that the model (and the kernel
//! oracle) can be measured on patterns the recorded traces show only in passing.
//!
//! Every workload lives in `[BASE, BASE + 64 GiB)` inside the oracle's window and names every
//! address itself (`MAP_FIXED_NOREPLACE` for new mappings, `MREMAP_FIXED` for moves), so
//! placement never depends on the kernel's `get_unmapped_area` and the same script runs
//! unchanged on the model and natively. Every line carries its expected result, so
//! `anonmm run` checks it too. A given seed always gives the same script.

use std::fmt::Write;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::script::Script;

mod gc;
mod layout;
mod map_count;
mod restore;

pub use gc::{GcMode, GcParams};
pub use layout::{Layout, LayoutVma, snapshot_pid};
pub use map_count::MapCountParams;
pub use restore::RestoreParams;

/// Where workloads place their memory: the oracle runs scripts in
/// `[0x1000_0000_0000, 0x5000_0000_0000)`.
pub const BASE: u64 = 0x2000_0000_0000;

const PAGE: u64 = 4096;

/// Parameters shared by every kind.
#[derive(clap::Args, Clone, Debug)]
pub struct Common {
    /// Seed of the random choices (the same seed gives the same script).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where to write the script (stdout when absent).
    #[arg(short, long, value_name = "OUT")]
    pub out: Option<std::path::PathBuf>,
    /// The kernel whose model decides which steps stay in the oracle's window (`random`).
    #[arg(long, value_name = "6.1|6.12|6.18", default_value = "6.18")]
    pub kernel: crate::kernel::Kernel,
}

/// `stitch`: pieces of faulted memory moved next to each other.
#[derive(clap::Args, Clone, Debug)]
pub struct StitchParams {
    /// Number of pieces.
    #[arg(long, default_value_t = 16)]
    pub pieces: usize,
    /// Smallest piece, in pages.
    #[arg(long, default_value_t = 1)]
    pub min_pages: u64,
    /// Largest piece, in pages.
    #[arg(long, default_value_t = 16)]
    pub max_pages: u64,
    /// Fraction of pieces written before they are moved (0..=1); the others stay unfaulted.
    #[arg(long, default_value_t = 1.0)]
    pub faulted: f64,
}

/// `realloc`: a glibc-like allocator growing blocks with mremap among other mappings.
#[derive(clap::Args, Clone, Debug)]
pub struct ReallocParams {
    /// Number of allocator operations (allocate, grow, free, write, other mapping).
    #[arg(long, default_value_t = 200)]
    pub ops: usize,
    /// Largest block size reached by growth, in pages.
    #[arg(long, default_value_t = 64)]
    pub max_pages: u64,
}

/// `forkserver`: a parent forking workers that move memory and write, then exit.
#[derive(clap::Args, Clone, Debug)]
pub struct ForkserverParams {
    /// Number of workers forked in all.
    #[arg(long, default_value_t = 8)]
    pub workers: usize,
    /// Most workers alive at once.
    #[arg(long, default_value_t = 3)]
    pub concurrent: usize,
    /// Pages of the parent's pool (inherited by every worker).
    #[arg(long, default_value_t = 32)]
    pub pool_pages: u64,
}

/// `compact`: an arena allocator compacting live blocks toward the arena start.
#[derive(clap::Args, Clone, Debug)]
pub struct CompactParams {
    /// Allocate/free/compact rounds.
    #[arg(long, default_value_t = 4)]
    pub rounds: usize,
    /// Blocks allocated per round.
    #[arg(long, default_value_t = 12)]
    pub blocks: usize,
    /// Largest block, in pages.
    #[arg(long, default_value_t = 8)]
    pub max_pages: u64,
    /// Fraction of blocks freed before each compaction (0..=1).
    #[arg(long, default_value_t = 0.4)]
    pub free: f64,
}

/// `random`: the fuzzer's random script generator (`anonmm_script::r#gen::generate`).
#[derive(clap::Args, Clone, Debug)]
pub struct RandomParams {
    /// Steps (lines) in the script.
    #[arg(long, default_value_t = 300)]
    pub steps: usize,
    /// Most processes alive at once (1 disables fork).
    #[arg(long, default_value_t = 4)]
    pub max_procs: usize,
    /// Leave out file mappings.
    #[arg(long)]
    pub no_files: bool,
    /// Leave out shared mappings.
    #[arg(long)]
    pub no_shared: bool,
}

/// A workload kind with its parameters.
#[derive(Clone, Debug)]
pub enum Workload {
    /// Pieces of faulted memory moved next to each other.
    Stitch(StitchParams),
    /// A glibc-like allocator growing blocks with mremap.
    Realloc(ReallocParams),
    /// A parent forking workers that move memory and write, then exit.
    Forkserver(ForkserverParams),
    /// An arena allocator compacting live blocks toward the arena start.
    Compact(CompactParams),
    /// The fuzzer's random script generator.
    Random(RandomParams),
    /// A checkpoint/restore tool rebuilding a process (premap, fill, mremap into place).
    Restore(RestoreParams),
    /// A moving garbage collector compacting regions (mremap or UFFDIO_MOVE).
    Gc(GcParams),
    /// A cache reordering blocks by moving them until `vm.max_map_count` stops it.
    MapCount(MapCountParams),
}

/// Why a workload cannot be made with these parameters.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct WorkloadError(pub String);

fn bad(what: impl Into<String>) -> WorkloadError {
    WorkloadError(what.into())
}

impl Workload {
    /// The kind's name, as the `anonmm gen` subcommand spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Workload::Stitch(_) => "stitch",
            Workload::Realloc(_) => "realloc",
            Workload::Forkserver(_) => "forkserver",
            Workload::Compact(_) => "compact",
            Workload::Random(_) => "random",
            Workload::Restore(_) => "restore",
            Workload::Gc(_) => "gc",
            Workload::MapCount(_) => "map-count",
        }
    }

    /// The workload as script text (comments first, then one line per call).
    pub fn script_text(&self, seed: u64) -> Result<String, WorkloadError> {
        self.script_text_for(seed, crate::kernel::Kernel::V6_18)
    }

    /// [`Workload::script_text`] with the model as `kernel` (only `random` runs the model).
    pub fn script_text_for(&self, seed: u64, kernel: crate::kernel::Kernel) -> Result<String, WorkloadError> {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut w = Writer::default();
        match self {
            Workload::Stitch(p) => stitch(&mut w, &mut rng, p)?,
            Workload::Realloc(p) => realloc(&mut w, &mut rng, p)?,
            Workload::Forkserver(p) => forkserver(&mut w, &mut rng, p)?,
            Workload::Compact(p) => compact(&mut w, &mut rng, p)?,
            Workload::Restore(p) => restore::restore(&mut w, &mut rng, p)?,
            Workload::Gc(p) => gc::gc(&mut w, &mut rng, p)?,
            Workload::MapCount(p) => map_count::map_count(&mut w, &mut rng, p)?,
            Workload::Random(p) => {
                if p.steps == 0 || p.max_procs == 0 {
                    return Err(bad("random: --steps and --max-procs must be at least 1"));
                }
                let cfg = crate::r#gen::GenConfig {
                    steps: p.steps,
                    max_procs: p.max_procs,
                    files: !p.no_files,
                    shared: !p.no_shared,
                    ..Default::default()
                };
                let (s, dropped) = random_in_window(seed, &cfg, kernel);
                let mut text = format!("# {}\n# generator: {}\n", self.command_line(seed), cfg.describe());
                if dropped > 0 {
                    let _ = writeln!(
                        text,
                        "# {dropped} generated step(s) left out: they placed memory outside the oracle's window"
                    );
                }
                for l in s.path.lines() {
                    let _ = writeln!(text, "# {l}");
                }
                for step in &s.steps {
                    text.push_str(&crate::script::format_step(step));
                    text.push('\n');
                }
                return Ok(text);
            }
        }
        Ok(format!("# {}\n{}", self.command_line(seed), w.text))
    }

    /// The command line that writes this script: `anonmm gen KIND --seed S` and every
    /// parameter (defaults included, so that it stays true when a default changes).
    pub fn command_line(&self, seed: u64) -> String {
        let params = match self {
            Workload::Stitch(p) => format!(
                "--pieces {} --min-pages {} --max-pages {} --faulted {}",
                p.pieces, p.min_pages, p.max_pages, p.faulted
            ),
            Workload::Realloc(p) => format!("--ops {} --max-pages {}", p.ops, p.max_pages),
            Workload::Forkserver(p) => {
                format!("--workers {} --concurrent {} --pool-pages {}", p.workers, p.concurrent, p.pool_pages)
            }
            Workload::Compact(p) => format!(
                "--rounds {} --blocks {} --max-pages {} --free {}",
                p.rounds, p.blocks, p.max_pages, p.free
            ),
            Workload::Random(p) => format!(
                "--steps {} --max-procs {}{}{}",
                p.steps,
                p.max_procs,
                if p.no_files { " --no-files" } else { "" },
                if p.no_shared { " --no-shared" } else { "" }
            ),
            Workload::Restore(p) => p.command_params(),
            Workload::Gc(p) => format!(
                "--mode {} --regions {} --region-pages {} --cycles {} --live {}",
                p.mode.name(),
                p.regions,
                p.region_pages,
                p.cycles,
                p.live
            ),
            Workload::MapCount(p) => format!("--blocks {} --block-pages {}", p.blocks, p.block_pages),
        };
        format!("anonmm gen {} --seed {seed} {params}", self.name())
    }

    /// The workload parsed as a script named `name`.
    pub fn script(&self, seed: u64, name: &str) -> Result<Script, WorkloadError> {
        let text = self.script_text(seed)?;
        crate::script::parse_str(name, &text)
            .map_err(|e| bad(format!("generated script does not parse: {e}")))
    }
}

/// The oracle's window (`oracle::WINDOW_START..WINDOW_END`; that module exists on Linux only).
const WINDOW: std::ops::Range<u64> = 0x1000_0000_0000..0x5000_0000_0000;

/// The random generator's script, less the steps after which the model holds memory outside
/// the oracle's window (a bare hint not taken, an mremap MAYMOVE that had to move: the
/// kernel then picks an address near mmap_base, which the oracle cannot compare and refuses),
/// and how many were left out. Random scripts record no results but fork's, so leaving out
/// such a step leaves a valid script; later steps touching what it would have mapped fault
/// on both sides alike.
fn random_in_window(
    seed: u64,
    cfg: &crate::r#gen::GenConfig,
    kernel: crate::kernel::Kernel,
) -> (Script, usize) {
    use crate::script::{Call, Expect};
    let mut script = crate::r#gen::generate(seed, cfg);
    let mut dropped = 0;
    let opts = crate::run::RunOptions {
        last_view_only: true,
        config: crate::mm::Config { kernel, ..Default::default() },
        ..Default::default()
    };
    loop {
        let mut offending = None;
        let mut outcomes = Vec::with_capacity(script.steps.len());
        if let Ok(mut runner) = crate::run::Runner::new(&script, &opts) {
            for (i, step) in script.steps.iter().enumerate() {
                let len = match &step.call {
                    Call::Mmap { len, .. } => *len,
                    Call::Mremap { new_len, .. } => *new_len,
                    _ => 0,
                };
                match runner.step(step, false) {
                    Ok(Expect::Value(at))
                        if len > 0 && (!WINDOW.contains(&at) || at.saturating_add(len) > WINDOW.end) =>
                    {
                        offending = Some(i);
                        break;
                    }
                    Ok(e) => outcomes.push(e),
                    // The run itself fails there: what the oracle says about it is what counts.
                    Err(_) => break,
                }
            }
        }
        let Some(i) = offending else {
            // Every step ran: record the results (the generator records fork's only), so
            // that `run` checks them and `replay` does not take a touch that faults for a
            // fault the kernel served. `oracle diff` shows the kernel gives the same.
            if outcomes.len() == script.steps.len() {
                for (step, e) in script.steps.iter_mut().zip(outcomes) {
                    step.expect = Some(e);
                }
            }
            return (script, dropped);
        };
        script.steps.remove(i);
        dropped += 1;
    }
}

/// Builds script lines with their expected results.
#[derive(Default)]
struct Writer {
    text: String,
}

const RW: &str = "PROT_READ|PROT_WRITE";

impl Writer {
    fn comment(&mut self, c: &str) {
        let _ = writeln!(self.text, "# {c}");
    }
    fn mmap(&mut self, pid: u32, addr: u64, len: u64, prot: &str) {
        let _ = writeln!(
            self.text,
            "{pid} mmap({addr:#x}, {len}, {prot}, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED_NOREPLACE, -1, 0) = {addr:#x}"
        );
    }
    fn munmap(&mut self, pid: u32, addr: u64, len: u64) {
        let _ = writeln!(self.text, "{pid} munmap({addr:#x}, {len}) = 0");
    }
    fn touch(&mut self, pid: u32, addr: u64, len: u64, write: bool) {
        let _ =
            writeln!(self.text, "{pid} touch({addr:#x}, {len}, \"{}\") = 0", if write { "w" } else { "r" });
    }
    /// A move to a chosen place (`MREMAP_MAYMOVE|MREMAP_FIXED`).
    fn move_to(&mut self, pid: u32, old: u64, old_len: u64, new_len: u64, to: u64) {
        let _ = writeln!(
            self.text,
            "{pid} mremap({old:#x}, {old_len}, {new_len}, MREMAP_MAYMOVE|MREMAP_FIXED, {to:#x}) = {to:#x}"
        );
    }
    /// Growth in place (flags 0): only where the space after is known free.
    fn grow(&mut self, pid: u32, addr: u64, old_len: u64, new_len: u64) {
        let _ = writeln!(self.text, "{pid} mremap({addr:#x}, {old_len}, {new_len}, 0) = {addr:#x}");
    }
    fn fork(&mut self, pid: u32, child: u32) {
        let _ = writeln!(self.text, "{pid} fork() = {child}");
    }
    fn exit(&mut self, pid: u32) {
        let _ = writeln!(self.text, "{pid} exit_group(0) = ?");
    }
}

fn pages_between(rng: &mut SmallRng, min: u64, max: u64) -> Result<u64, WorkloadError> {
    if min == 0 || min > max || max > 1 << 18 {
        return Err(bad(format!("page counts must satisfy 1 <= min <= max <= 262144 (got {min}..{max})")));
    }
    Ok(rng.random_range(min..=max))
}

fn fraction(f: f64, what: &str) -> Result<f64, WorkloadError> {
    if !(0.0..=1.0).contains(&f) {
        return Err(bad(format!("{what} must be between 0 and 1 (got {f})")));
    }
    Ok(f)
}

/// Pieces mapped far apart (each its own VMA), some written (each then gets its own
/// anon_vma and page offsets of where it was faulted), then moved one after the other right
/// behind the first piece, as a program gathering buffers into one contiguous range does
/// (examples/mremap_stitch.strace at scale). Linux 6.18 keeps faulted pieces apart
/// (`NOMERGE_ANON_VMA`/pgoff); the contents are read back at the end.
fn stitch(w: &mut Writer, rng: &mut SmallRng, p: &StitchParams) -> Result<(), WorkloadError> {
    if p.pieces == 0 || p.pieces > 4096 {
        return Err(bad("stitch: --pieces must be in 1..=4096"));
    }
    let frac = fraction(p.faulted, "stitch: --faulted")?;
    if (p.pieces as u64).saturating_mul(p.max_pages) > (1 << 30) / PAGE {
        return Err(bad("stitch: pieces x max pages must fit in 1 GiB (the gather range)"));
    }
    w.comment(&format!(
        "{} pieces of {}..={} pages, {:.0}% written, moved together",
        p.pieces,
        p.min_pages,
        p.max_pages,
        frac * 100.0
    ));
    // Source slots 1 GiB apart leave room for any piece size allowed, the gather range
    // starts below them.
    let gather = BASE;
    let mut pieces = Vec::new();
    for i in 0..p.pieces {
        let len = pages_between(rng, p.min_pages, p.max_pages)? * PAGE;
        let at = BASE + (1 + i as u64) * (1 << 30);
        w.mmap(1, at, len, RW);
        pieces.push((at, len, rng.random_bool(frac)));
    }
    // The first piece is always written, so that there is faulted memory to stitch onto.
    pieces[0].2 = true;
    for &(at, len, written) in &pieces {
        if written {
            w.touch(1, at, len, true);
        }
    }
    let mut cursor = gather;
    for &(at, len, _) in &pieces {
        w.move_to(1, at, len, len, cursor);
        cursor += len;
    }
    w.touch(1, gather, cursor - gather, false);
    Ok(())
}

/// A block of the realloc workload: [start, start + len).
#[derive(Clone, Copy, Debug)]
struct Block {
    start: u64,
    len: u64,
}

/// First free place of `len` bytes in `[lo, hi)` given sorted, disjoint `used` ranges.
fn first_fit(used: &[Block], lo: u64, hi: u64, len: u64) -> Option<u64> {
    let mut at = lo;
    for b in used {
        if b.start >= at + len {
            break;
        }
        at = at.max(b.start + b.len);
    }
    (at + len <= hi).then_some(at)
}

/// A glibc-like allocator: blocks above the mmap threshold are their own anonymous
/// mappings, packed together (they merge into one VMA, as top-down mmaps do); `realloc`
/// grows a block in place when the space after it is free (`mremap` without MAYMOVE) and
/// otherwise moves it to the first free place that fits (`MREMAP_MAYMOVE|MREMAP_FIXED`);
/// `free` unmaps. Among them: read-only and PROT_NONE mappings (guard pages, as for thread
/// stacks and arenas), and writes to blocks.
fn realloc(w: &mut Writer, rng: &mut SmallRng, p: &ReallocParams) -> Result<(), WorkloadError> {
    if p.ops == 0 || p.ops > 1_000_000 {
        return Err(bad("realloc: --ops must be in 1..=1000000"));
    }
    if p.max_pages < 2 || p.max_pages > 1 << 16 {
        return Err(bad("realloc: --max-pages must be in 2..=65536"));
    }
    w.comment(&format!("{} allocator operations, blocks up to {} pages", p.ops, p.max_pages));
    // 16 TiB: more than any number of blocks at their largest needs, within the oracle's window.
    let lo = BASE;
    let hi = BASE + 0x1000_0000_0000;
    // Sorted by start: blocks (writable) and other mappings (never grown).
    let mut used: Vec<(Block, bool)> = Vec::new();
    let insert = |used: &mut Vec<(Block, bool)>, b: Block, block: bool| {
        let i = used.partition_point(|(x, _)| x.start < b.start);
        used.insert(i, (b, block));
    };
    for _ in 0..p.ops {
        let blocks: Vec<usize> = (0..used.len()).filter(|&i| used[i].1).collect();
        let r = rng.random_range(0..100);
        let plain: Vec<Block> = used.iter().map(|(b, _)| *b).collect();
        if blocks.is_empty() || r < 25 {
            // malloc above the threshold.
            let len = rng.random_range(1..=p.max_pages / 2) * PAGE;
            let Some(at) = first_fit(&plain, lo, hi, len) else { continue };
            w.mmap(1, at, len, RW);
            w.touch(1, at, len.min(2 * PAGE), true);
            insert(&mut used, Block { start: at, len }, true);
        } else if r < 60 {
            // realloc to a larger size.
            let i = blocks[rng.random_range(0..blocks.len())];
            let b = used[i].0;
            if b.len >= p.max_pages * PAGE {
                continue;
            }
            let new_len = (b.len + rng.random_range(1..=p.max_pages / 4 + 1) * PAGE).min(p.max_pages * PAGE);
            let next_start = used.get(i + 1).map_or(hi, |(n, _)| n.start);
            if b.start + new_len <= next_start {
                w.grow(1, b.start, b.len, new_len);
                used[i].0.len = new_len;
                w.touch(1, b.start + b.len, new_len - b.len, true);
            } else {
                // Where it can go once its own range is free again (glibc's mremap may
                // reuse the block's own place for nothing: the kernel refuses overlap).
                let others: Vec<Block> =
                    used.iter().enumerate().filter(|&(j, _)| j != i).map(|(_, (x, _))| *x).collect();
                let mut to = first_fit(&others, lo, hi, new_len);
                if let Some(t) = to
                    && t < b.start + b.len
                    && b.start < t + new_len
                {
                    // Overlaps its old self: take the first place after both.
                    let mut with_self = others.clone();
                    with_self.push(b);
                    with_self.sort_by_key(|x| x.start);
                    to = first_fit(&with_self, lo, hi, new_len);
                }
                let Some(to) = to else { continue };
                w.move_to(1, b.start, b.len, new_len, to);
                used.remove(i);
                insert(&mut used, Block { start: to, len: new_len }, true);
                w.touch(1, to + b.len, new_len - b.len, true);
            }
        } else if r < 75 {
            // free.
            let i = blocks[rng.random_range(0..blocks.len())];
            let b = used.remove(i).0;
            w.munmap(1, b.start, b.len);
        } else if r < 90 {
            // The program writes (and reads) its data.
            let i = blocks[rng.random_range(0..blocks.len())];
            let b = used[i].0;
            let pages = b.len / PAGE;
            let first = rng.random_range(0..pages);
            let n = rng.random_range(1..=pages - first);
            w.touch(1, b.start + first * PAGE, n * PAGE, rng.random_bool(0.7));
        } else {
            // Another mapping among the blocks: a guard or a read-only table.
            let len = rng.random_range(1..=4) * PAGE;
            let Some(at) = first_fit(&plain, lo, hi, len) else { continue };
            let readable = !rng.random_bool(0.5);
            w.mmap(1, at, len, if readable { "PROT_READ" } else { "PROT_NONE" });
            if readable {
                w.touch(1, at, len, false);
            }
            insert(&mut used, Block { start: at, len }, false);
        }
    }
    Ok(())
}

/// A pre-forking server: the parent maps a pool and a table and writes them, then forks
/// workers (up to `concurrent` alive at once). A worker moves part of the inherited pool to
/// a place of its own (`MREMAP_FIXED` of COW-shared memory), writes it (COW copies) and
/// some of what stayed, maps a scratch buffer, and exits. Meanwhile the parent keeps
/// writing its pool (COW copies while children share it, reuse once they are gone).
fn forkserver(w: &mut Writer, rng: &mut SmallRng, p: &ForkserverParams) -> Result<(), WorkloadError> {
    if p.workers == 0 || p.workers > 10_000 {
        return Err(bad("forkserver: --workers must be in 1..=10000"));
    }
    if p.concurrent == 0 {
        return Err(bad("forkserver: --concurrent must be at least 1"));
    }
    if p.pool_pages < 2 || p.pool_pages > 1 << 16 {
        return Err(bad("forkserver: --pool-pages must be in 2..=65536"));
    }
    w.comment(&format!("{} workers, {} at once, a pool of {} pages", p.workers, p.concurrent, p.pool_pages));
    let pool = BASE;
    let pool_len = p.pool_pages * PAGE;
    let table = BASE + (1 << 30);
    w.mmap(1, pool, pool_len, RW);
    w.mmap(1, table, 4 * PAGE, "PROT_READ|PROT_WRITE");
    w.touch(1, pool, pool_len, true);
    w.touch(1, table, 4 * PAGE, true);
    // Each worker's state: (pid, phase).
    let mut alive: Vec<(u32, u32)> = Vec::new();
    let mut forked = 0usize;
    let mut next_pid = 2u32;
    while forked < p.workers || !alive.is_empty() {
        let can_fork = forked < p.workers && alive.len() < p.concurrent;
        if can_fork && (alive.is_empty() || rng.random_bool(0.4)) {
            w.fork(1, next_pid);
            alive.push((next_pid, 0));
            next_pid += 1;
            forked += 1;
            continue;
        }
        if rng.random_bool(0.2) {
            // The parent writes part of its pool.
            let first = rng.random_range(0..p.pool_pages);
            w.touch(1, pool + first * PAGE, PAGE, true);
            continue;
        }
        if alive.is_empty() {
            continue;
        }
        let k = rng.random_range(0..alive.len());
        let (pid, phase) = alive[k];
        // Worker pid's own places, 1 GiB apart per worker.
        let own = BASE + (2 + u64::from(pid)) * (1 << 30);
        let moved = (p.pool_pages / 4).max(1) * PAGE;
        let moved_from = pool + pool_len - moved;
        match phase {
            0 => w.move_to(pid, moved_from, moved, moved, own),
            1 => w.touch(pid, own, moved, true),
            2 => {
                let first = rng.random_range(0..p.pool_pages - moved / PAGE);
                w.touch(pid, pool + first * PAGE, PAGE, true);
            }
            3 => {
                w.mmap(pid, own + moved + PAGE, 8 * PAGE, RW);
                w.touch(pid, own + moved + PAGE, 8 * PAGE, true);
            }
            4 => w.touch(pid, table, 4 * PAGE, false),
            _ => {
                w.exit(pid);
                alive.remove(k);
                continue;
            }
        }
        alive[k].1 += 1;
    }
    w.touch(1, pool, pool_len, true);
    Ok(())
}

/// An arena allocator: one arena mapping, blocks carved from its start by a bump pointer
/// and written; some blocks are freed (unmapped, leaving holes); then the live blocks are
/// compacted toward the arena start, each moved with `MREMAP_FIXED` to the bump cursor
/// (through a scratch place when old and new ranges overlap, which mremap refuses), and
/// read back. Moved pieces keep their old page offsets, so they stay separate VMAs even
/// though they came from one mapping.
fn compact(w: &mut Writer, rng: &mut SmallRng, p: &CompactParams) -> Result<(), WorkloadError> {
    if p.rounds == 0 || p.rounds > 1000 || p.blocks == 0 || p.blocks > 4096 {
        return Err(bad("compact: --rounds must be in 1..=1000 and --blocks in 1..=4096"));
    }
    if p.max_pages == 0 || p.max_pages > 4096 {
        return Err(bad("compact: --max-pages must be in 1..=4096"));
    }
    let free = fraction(p.free, "compact: --free")?;
    w.comment(&format!(
        "{} rounds of {} blocks up to {} pages, {:.0}% freed before each compaction",
        p.rounds,
        p.blocks,
        p.max_pages,
        free * 100.0
    ));
    let arena = BASE;
    let arena_len = p.rounds as u64 * p.blocks as u64 * p.max_pages * PAGE;
    let scratch = BASE + arena_len.next_multiple_of(1 << 30) + (1 << 30);
    w.mmap(1, arena, arena_len, RW);
    let mut live: Vec<Block> = Vec::new();
    let mut cursor = arena;
    for _ in 0..p.rounds {
        for _ in 0..p.blocks {
            let len = rng.random_range(1..=p.max_pages) * PAGE;
            if cursor + len > arena + arena_len {
                break;
            }
            // Past the last compaction the arena may have been given back: map again.
            w.touch(1, cursor, len, true);
            live.push(Block { start: cursor, len });
            cursor += len;
        }
        let mut kept = Vec::new();
        for b in live.drain(..) {
            if rng.random_bool(free) {
                w.munmap(1, b.start, b.len);
            } else {
                kept.push(b);
            }
        }
        cursor = arena;
        for b in &mut kept {
            if b.start != cursor {
                if cursor + b.len > b.start {
                    w.move_to(1, b.start, b.len, b.len, scratch);
                    w.move_to(1, scratch, b.len, b.len, cursor);
                } else {
                    w.move_to(1, b.start, b.len, b.len, cursor);
                }
                b.start = cursor;
            }
            w.touch(1, b.start, b.len, false);
            cursor += b.len;
        }
        live = kept;
        // The free tail of the arena is mapped again for the next round's bump allocation.
        let tail = arena + arena_len - cursor;
        if tail > 0 {
            w.munmap(1, cursor, tail);
            w.mmap(1, cursor, tail, RW);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_fit_finds_holes() {
        let used = [Block { start: 0, len: 10 }, Block { start: 20, len: 5 }];
        assert_eq!(first_fit(&used, 0, 100, 10), Some(10));
        assert_eq!(first_fit(&used, 0, 100, 11), Some(25));
        assert_eq!(first_fit(&used, 0, 30, 11), None);
    }
}
