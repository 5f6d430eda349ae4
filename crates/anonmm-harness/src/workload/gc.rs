//! `gc`: a region-based moving garbage collector (as G1 or Android's concurrent compacting
//! collector lay out their heaps), over many cycles. The heap is one reservation of equal
//! regions. Each cycle the mutator fills free regions (writes them whole); then the
//! collector finds which pages are still live (runs of pages: objects of a page or more),
//! evacuates every region less than `--evacuate` live into free regions, packing the live
//! runs one behind the other, and frees the evacuated regions.
//!
//! `--mode mremap` moves each live run with `mremap(MREMAP_MAYMOVE|MREMAP_FIXED)` and frees a
//! region by mapping fresh memory over it (`MAP_FIXED`). `--mode uffd` moves pages as Android's
//! runtime does with `UFFDIO_MOVE` (mm/userfaultfd.c `move_pages`): the destination regions are
//! registered (`UFFDIO_REGISTER_MODE_MISSING`) for the collection, the live runs moved into
//! them, the evacuated regions freed with `MADV_DONTNEED`, and the registration dropped.

use rand::Rng;
use rand::rngs::SmallRng;

use super::{BASE, PAGE, RW, WorkloadError, Writer, bad, fraction};

/// How the collector moves pages.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum GcMode {
    /// `mremap(MREMAP_MAYMOVE|MREMAP_FIXED)` per live run.
    Mremap,
    /// `ioctl(UFFDIO_MOVE)` per live run into registered regions.
    Uffd,
}

impl GcMode {
    /// The name `--mode` takes.
    pub fn name(self) -> &'static str {
        match self {
            GcMode::Mremap => "mremap",
            GcMode::Uffd => "uffd",
        }
    }
}

/// `gc`: parameters.
#[derive(clap::Args, Clone, Debug)]
pub struct GcParams {
    /// How pages are moved.
    #[arg(long, value_enum, default_value_t = GcMode::Mremap)]
    pub mode: GcMode,
    /// Regions in the heap.
    #[arg(long, default_value_t = 32)]
    pub regions: usize,
    /// Pages per region.
    #[arg(long, default_value_t = 64)]
    pub region_pages: u64,
    /// Collection cycles.
    #[arg(long, default_value_t = 20)]
    pub cycles: usize,
    /// Fraction of pages still live at each collection (0..=1).
    #[arg(long, default_value_t = 0.5)]
    pub live: f64,
}

/// Regions less live than this are evacuated.
const EVACUATE_BELOW: f64 = 0.6;

/// A region's state: free, or in use with its live pages (sorted page indices).
#[derive(Clone, Debug)]
enum Region {
    Free,
    Used(Vec<u64>),
}

/// Runs of consecutive pages in sorted `pages`: (first, count).
fn runs(pages: &[u64]) -> Vec<(u64, u64)> {
    let mut r: Vec<(u64, u64)> = Vec::new();
    for &p in pages {
        match r.last_mut() {
            Some(last) if last.0 + last.1 == p => last.1 += 1,
            _ => r.push((p, 1)),
        }
    }
    r
}

pub(super) fn gc(w: &mut Writer, rng: &mut SmallRng, p: &GcParams) -> Result<(), WorkloadError> {
    if p.regions < 2 || p.regions > 65_536 || p.region_pages == 0 || p.region_pages > 65_536 {
        return Err(bad("gc: --regions must be in 2..=65536 and --region-pages in 1..=65536"));
    }
    if p.cycles == 0 || p.cycles > 100_000 {
        return Err(bad("gc: --cycles must be in 1..=100000"));
    }
    let live = fraction(p.live, "gc: --live")?;
    let rlen = p.region_pages * PAGE;
    let heap = BASE;
    let heap_len = p.regions as u64 * rlen;
    let at = |r: usize| heap + r as u64 * rlen;
    w.comment(&format!(
        "moving collector ({}): {} regions of {} pages, {} cycles, {:.0}% live at each collection",
        p.mode.name(),
        p.regions,
        p.region_pages,
        p.cycles,
        live * 100.0
    ));
    w.mmap(1, heap, heap_len, RW);
    let mut regions = vec![Region::Free; p.regions];
    for cycle in 0..p.cycles {
        // The mutator fills free regions until a quarter of the heap is left free.
        let keep_free = p.regions / 4;
        let mut free: Vec<usize> = (0..p.regions).filter(|&r| matches!(regions[r], Region::Free)).collect();
        while free.len() > keep_free.max(1) {
            let r = free.remove(rng.random_range(0..free.len()));
            w.touch(1, at(r), rlen, true);
            regions[r] = Region::Used((0..p.region_pages).collect());
        }
        w.comment(&format!("cycle {cycle}: collection"));
        // Marking: runs of 1..=8 pages survive together.
        for reg in &mut regions {
            if let Region::Used(pages) = reg {
                let mut kept = Vec::new();
                let mut i = 0;
                while i < pages.len() {
                    let n = rng.random_range(1..=8).min(pages.len() - i);
                    if rng.random_bool(live) {
                        kept.extend_from_slice(&pages[i..i + n]);
                    }
                    i += n;
                }
                *pages = kept;
            }
        }
        // The evacuation set, in address order, and where its live pages go.
        let from: Vec<usize> = (0..p.regions)
            .filter(|&r| match &regions[r] {
                Region::Used(pages) => (pages.len() as f64) < EVACUATE_BELOW * p.region_pages as f64,
                Region::Free => false,
            })
            .collect();
        let mut to_free: Vec<usize> =
            (0..p.regions).filter(|&r| matches!(regions[r], Region::Free)).collect();
        // Moves: (src, dst, len); destination regions used.
        let mut moves = Vec::new();
        let mut targets: Vec<(usize, Vec<u64>)> = Vec::new();
        let mut evacuated = Vec::new();
        for &r in &from {
            let Region::Used(pages) = &regions[r] else { continue };
            let need = pages.len() as u64;
            let room: u64 = targets.last().map_or(0, |(_, used)| p.region_pages - used.len() as u64)
                + to_free.len() as u64 * p.region_pages;
            if need > room {
                break;
            }
            for (first, mut count) in runs(pages) {
                let mut src = at(r) + first * PAGE;
                while count > 0 {
                    if targets.last().is_none_or(|(_, used)| used.len() as u64 == p.region_pages) {
                        targets.push((to_free.remove(0), Vec::new()));
                    }
                    let (t, used) = targets.last_mut().expect("a target");
                    let off = used.len() as u64;
                    let n = count.min(p.region_pages - off);
                    moves.push((src, at(*t) + off * PAGE, n * PAGE));
                    used.extend(off..off + n);
                    src += n * PAGE;
                    count -= n;
                }
            }
            evacuated.push(r);
        }
        if p.mode == GcMode::Uffd {
            for (t, _) in &targets {
                w.text.push_str(&format!(
                    "1 uffd_register({:#x}, {rlen}, UFFDIO_REGISTER_MODE_MISSING) = 0\n",
                    at(*t)
                ));
            }
        }
        for &(src, dst, len) in &moves {
            match p.mode {
                GcMode::Mremap => w.move_to(1, src, len, len, dst),
                GcMode::Uffd => {
                    w.text.push_str(&format!("1 uffdio_move({dst:#x}, {src:#x}, {len}, 0) = {len}\n"))
                }
            }
        }
        for &r in &evacuated {
            match p.mode {
                GcMode::Mremap => w.text.push_str(&format!(
                    "1 mmap({:#x}, {rlen}, {RW}, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED, -1, 0) = {:#x}\n",
                    at(r),
                    at(r)
                )),
                GcMode::Uffd => {
                    w.text.push_str(&format!("1 madvise({:#x}, {rlen}, MADV_DONTNEED) = 0\n", at(r)))
                }
            }
            regions[r] = Region::Free;
        }
        if p.mode == GcMode::Uffd {
            for (t, _) in &targets {
                w.text.push_str(&format!("1 uffd_unregister({:#x}, {rlen}) = 0\n", at(*t)));
            }
        }
        for (t, used) in targets {
            regions[t] = Region::Used(used);
        }
    }
    // The mutator reads what survived.
    for (r, reg) in regions.iter().enumerate() {
        if let Region::Used(pages) = reg {
            for (first, count) in runs(pages) {
                w.touch(1, at(r) + first * PAGE, count * PAGE, false);
            }
        }
    }
    Ok(())
}
