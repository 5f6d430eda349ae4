//! `restore`: how CRIU rebuilds a process's private memory when it premaps it (criu/mem.c
//! `prepare_mappings`, `premap_private_vma`; criu/pie/restorer.c `vma_remap`). It reserves
//! one PROT_NONE area as large as all private VMAs together, maps each private VMA over it
//! in address order (`MAP_FIXED`, protection plus `PROT_WRITE`), writes the pages that held
//! data, then moves each VMA to its address (`MREMAP_MAYMOVE|MREMAP_FIXED`: those whose
//! address lies below their premapped place in ascending order, the others in descending
//! order) and gives back `PROT_WRITE` where the VMA had none (`mprotect`). CRIU premaps
//! every private VMA when the pages cannot be read by the restorer itself (image
//! streaming) and for VMAs a child shares with its parent; otherwise it maps them in place.
//!
//! The layout comes from a file (`--layout`, from `anonmm snapshot PID` or a maps file) or is
//! generated (`--vmas N`). Its addresses are moved into the oracle's window with the same
//! order and adjacency, gaps larger than 1 MiB shrunk to 1 MiB. What is not private
//! anonymous memory (files, `[vdso]`, shared memory) is mapped in place as shared anonymous
//! memory with its protection, which never merges with anything, as a file VMA would not.

use std::fmt::Write;

use rand::Rng;
use rand::rngs::SmallRng;

use super::layout::{Layout, LayoutVma};
use super::{BASE, PAGE, WorkloadError, Writer, bad};

/// `restore`: parameters.
#[derive(clap::Args, Clone, Debug)]
pub struct RestoreParams {
    /// The layout to restore: `anonmm snapshot PID` output or a `/proc/PID/maps` file.
    #[arg(long, value_name = "FILE", conflicts_with = "vmas")]
    pub layout: Option<std::path::PathBuf>,
    /// Generate a layout of about this many VMAs instead (heap, malloc arenas with their
    /// PROT_NONE tails, thread stacks with guard pages, libraries, moved buffers).
    #[arg(long, default_value_t = 64)]
    pub vmas: usize,
}

impl RestoreParams {
    /// The parameters as `gen restore` options.
    pub fn command_params(&self) -> String {
        match &self.layout {
            Some(p) => format!("--layout {}", p.display()),
            None => format!("--vmas {}", self.vmas),
        }
    }
}

/// Largest gap kept between VMAs when moving a layout into the window.
const MAX_GAP: u64 = 1 << 20;
/// Most bytes a layout may span once moved (the window holds 64 TiB; leave room for the premap).
const MAX_SPAN: u64 = 8 << 40;

/// A generated layout of about `n` VMAs, as a typical multi-threaded program shows.
pub fn generated_layout(rng: &mut SmallRng, n: usize) -> Layout {
    let mut vmas = Vec::new();
    let mut at = 0x5555_0000_0000u64;
    let vma = |start: u64, pages: u64, rw: (bool, bool), not_anon: bool, path: &str| LayoutVma {
        start,
        end: start + pages * PAGE,
        read: rw.0,
        write: rw.1,
        exec: false,
        shared: false,
        not_anon,
        path: path.to_string(),
        present: None,
    };
    let present = |rng: &mut SmallRng, v: &mut LayoutVma| {
        if !v.write {
            v.present = Some(Vec::new());
            return;
        }
        let mut r = Vec::new();
        let mut p = 0;
        while p < v.pages() {
            let run = rng.random_range(1..=8).min(v.pages() - p);
            if rng.random_bool(0.6) {
                r.push((p, p + run - 1));
            }
            p += run;
        }
        // Adjacent runs are one range.
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (a, b) in r {
            match merged.last_mut() {
                Some(m) if m.1 + 1 == a => m.1 = b,
                _ => merged.push((a, b)),
            }
        }
        v.present = Some(merged);
    };
    while vmas.len() < n {
        match rng.random_range(0..5) {
            0 => {
                // A library: text, read-only data, data (file-backed), then its bss (anonymous).
                for (pages, rw) in
                    [(rng.random_range(4..64), (true, false)), (2, (true, false)), (2, (true, true))]
                {
                    vmas.push(vma(at, pages, rw, true, "/usr/lib/x86_64-linux-gnu/libexample.so"));
                    at += pages * PAGE;
                }
                let mut v = vma(at, rng.random_range(1..8), (true, true), false, "");
                present(rng, &mut v);
                at = v.end;
                vmas.push(v);
            }
            1 => {
                // A malloc arena: the used head, the PROT_NONE rest of its 64 MiB reservation.
                let used = rng.random_range(33..512);
                let mut v = vma(at, used, (true, true), false, "");
                present(rng, &mut v);
                vmas.push(v);
                vmas.push(vma(at + used * PAGE, 16384 - used, (false, false), false, ""));
                at += 16384 * PAGE;
            }
            2 => {
                // A thread stack: a guard page below it.
                vmas.push(vma(at, 1, (false, false), false, ""));
                let mut v = vma(at + PAGE, 2048, (true, true), false, "");
                present(rng, &mut v);
                at = v.end;
                vmas.push(v);
            }
            _ => {
                // Buffers the program moved together (mremap): same protection, adjacent,
                // kept apart by their anon_vma or page offset.
                for _ in 0..rng.random_range(2..5) {
                    let mut v = vma(at, rng.random_range(1..32), (true, true), false, "");
                    present(rng, &mut v);
                    at = v.end;
                    vmas.push(v);
                }
            }
        }
        // Most neighbours are apart.
        if rng.random_bool(0.7) {
            at += rng.random_range(1..64) * PAGE;
        }
    }
    Layout { vmas }
}

/// Writes the restore of `p`'s layout.
pub(super) fn restore(w: &mut Writer, rng: &mut SmallRng, p: &RestoreParams) -> Result<(), WorkloadError> {
    let layout = match &p.layout {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| bad(format!("restore: {}: {e}", path.display())))?;
            Layout::parse(&path.display().to_string(), &text)?
        }
        None => {
            if p.vmas == 0 || p.vmas > 100_000 {
                return Err(bad("restore: --vmas must be in 1..=100000"));
            }
            generated_layout(rng, p.vmas)
        }
    };
    // The layout's VMAs at their places in the window: same order, same adjacency.
    let mut placed = Vec::with_capacity(layout.vmas.len());
    let mut at = BASE;
    let mut prev_end: Option<u64> = None;
    for v in &layout.vmas {
        // [vsyscall] lies above TASK_SIZE: nothing a process maps.
        if v.start >= crate::types::TASK_SIZE {
            continue;
        }
        if let Some(e) = prev_end {
            at += (v.start - e).min(MAX_GAP);
        }
        placed.push((at, v));
        at += v.end - v.start;
        prev_end = Some(v.end);
        if at - BASE > MAX_SPAN {
            return Err(bad("restore: the layout spans more than 8 TiB once gaps are shrunk"));
        }
    }
    let priv_size: u64 = placed.iter().filter(|(_, v)| v.private_anon()).map(|(_, v)| v.end - v.start).sum();
    let premap = (at + (1 << 30)).next_multiple_of(1 << 30);
    w.comment(&format!(
        "CRIU-like restore of {} VMAs ({} private anonymous, {} KiB) premapped at {premap:#x}",
        placed.len(),
        placed.iter().filter(|(_, v)| v.private_anon()).count(),
        priv_size / 1024
    ));
    w.comment(&format!("original VMA count: {}", placed.len()));
    // What is not private anonymous memory stays where it is: mapped first, in place.
    for &(a, v) in &placed {
        if !v.private_anon() {
            let _ = writeln!(
                w.text,
                "1 mmap({a:#x}, {}, {}, MAP_SHARED|MAP_ANONYMOUS|MAP_FIXED_NOREPLACE, -1, 0) = {a:#x}",
                v.end - v.start,
                v.prot_text(false)
            );
        }
    }
    if priv_size == 0 {
        return Ok(());
    }
    // prepare_mappings: the reservation, then each private VMA over it, in address order.
    w.mmap(1, premap, priv_size, "PROT_NONE");
    let mut cursor = premap;
    let mut moves = Vec::new();
    for &(a, v) in &placed {
        if !v.private_anon() {
            continue;
        }
        let len = v.end - v.start;
        let _ = writeln!(
            w.text,
            "1 mmap({cursor:#x}, {len}, {}, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED, -1, 0) = {cursor:#x}",
            v.prot_text(true)
        );
        moves.push((cursor, a, len, v));
        cursor += len;
    }
    // restore_priv_vma_content: the pages that held data are written.
    for &(from, _, _, v) in &moves {
        for (a, b) in v.data_ranges() {
            w.touch(1, from + a * PAGE, (b - a + 1) * PAGE, true);
        }
    }
    // The restorer: below-premap targets ascending, the others descending (all lie below
    // here, since the premap area is placed above the layout).
    let (down, up): (Vec<_>, Vec<_>) = moves.iter().partition(|m| m.1 <= m.0);
    for &(from, to, len, _) in down.iter().chain(up.iter().rev()) {
        w.move_to(1, from, len, len, to);
    }
    for &(_, to, len, v) in &moves {
        if !v.write {
            let _ = writeln!(w.text, "1 mprotect({to:#x}, {len}, {}) = 0", v.prot_text(false));
        }
    }
    Ok(())
}
