//! `map-count`: a cache that reorders its blocks by moving them, until `vm.max_map_count`
//! stops it. All blocks are carved from one arena and written; then, in a random order (the
//! order of last use, say), each block is moved (`mremap(MREMAP_MAYMOVE|MREMAP_FIXED)`) to
//! the next place of a second arena. Each block keeps the page offset it had in the first
//! arena, so on Linux 6.18 a block merges with the one moved before it only when it was
//! its successor in the first arena too; every other move adds a VMA, and the holes it
//! leaves in the first arena add more. `mremap` refuses with ENOMEM once the process holds
//! `sysctl_max_map_count - 5` VMAs (mm/mremap.c `mremap_to`: the worst case of two splits
//! must stay three below the limit; `move_vma` keeps three below it too).
//!
//! Every move is recorded as succeeding, as the cache asks; `anonmm replay` lists each move a
//! design refuses (ENOMEM) as a divergence, the first of them is where it hit the limit.

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;

use super::{BASE, PAGE, RW, WorkloadError, Writer, bad};

/// `map-count`: parameters.
#[derive(clap::Args, Clone, Debug)]
pub struct MapCountParams {
    /// Blocks in the cache.
    #[arg(long, default_value_t = 80_000)]
    pub blocks: u64,
    /// Pages per block.
    #[arg(long, default_value_t = 1)]
    pub block_pages: u64,
}

pub(super) fn map_count(w: &mut Writer, rng: &mut SmallRng, p: &MapCountParams) -> Result<(), WorkloadError> {
    if p.blocks == 0 || p.blocks > 1_000_000 || p.block_pages == 0 || p.block_pages > 1024 {
        return Err(bad("map-count: --blocks must be in 1..=1000000 and --block-pages in 1..=1024"));
    }
    let len = p.blocks * p.block_pages * PAGE;
    if len > 1 << 40 {
        return Err(bad("map-count: blocks x block pages must fit in 1 TiB"));
    }
    let blen = p.block_pages * PAGE;
    let first = BASE;
    let second = BASE + len.next_multiple_of(1 << 30) + (1 << 30);
    w.comment(&format!(
        "{} blocks of {} pages moved in random order from {first:#x} to {second:#x}",
        p.blocks, p.block_pages
    ));
    w.mmap(1, first, len, RW);
    w.touch(1, first, len, true);
    // The second arena is a reservation the blocks are moved over (MREMAP_FIXED unmaps what
    // lies at the destination).
    w.mmap(1, second, len, "PROT_NONE");
    let mut order: Vec<u64> = (0..p.blocks).collect();
    order.shuffle(rng);
    for (i, b) in order.into_iter().enumerate() {
        w.move_to(1, first + b * blen, blen, blen, second + i as u64 * blen);
    }
    Ok(())
}
