//! `auto`: ours. A move relocates only when that makes the moved VMA merge with (or join the
//! anon_vma of) a neighbour at its new place, choosing the pgoff that fits the neighbour
//! rather than `addr >> PAGE_SHIFT`; shared folios are copied only when their bytes fit a
//! budget (`auto:BYTES`, 64 KiB per move by default); otherwise nothing is done at all. After
//! a move, an exclusive neighbour is relocated in place when that lets the two merge, and a
//! new private anonymous mapping takes the pgoff of the neighbour it merges with. It takes
//! from the 2025 series (../shared/design/relocate-anon-history.md §2) the walk and its undo,
//! from Matěna's RFC (§1) deciding on a page walk first, from Torvalds's 2004 copy (§3) the
//! copying of shared pages, bounded; and answers the series' review (§2, "Review
//! objections": no new flag, no work without a gain) by relocating only where a merge
//! follows. docs/policies.md compares them.

use super::{Design, MoveTarget, SharedVma};
use crate::merge::MergeCaller;
use crate::mm::{MmId, System};
use crate::mremap::Vrm;
use crate::policy::RelocReason;
use crate::relocate::RelocMode;
use crate::types::{PAGE_SHIFT, PAGE_SIZE, PgOff, VirtAddr};
use crate::vma::{VmFlags, VmaId};

/// Ours, with its copy budget.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Auto {
    /// Bytes of shared folios one move may copy.
    pub copy_budget: u64,
}

impl Design for Auto {
    fn should_relocate_anon(self, _flags: u64) -> Option<SharedVma> {
        Some(SharedVma::Walk)
    }

    /// A page walk first (refusing migrating pages, and shared ones beyond the budget), then
    /// the neighbour's frame as the target pgoff: a merge attempt there as if unfaulted (the
    /// folios follow), else a new VMA without anon_vma. No neighbour to fit, or a pgoff that
    /// fits already: nothing is relocated.
    fn copy_vma_relocating(
        self,
        sys: &mut System,
        vmap: &mut VmaId,
        vrm: &Vrm,
        pgoff: PgOff,
    ) -> Result<MoveTarget, RelocReason> {
        let mm = vrm.mm;
        let (addr, len) = (VirtAddr(vrm.new_addr), vrm.new_len);
        let old_addr = VirtAddr(vrm.addr);
        // A long-term pin holds the page, not its index.
        let mut mode = RelocMode { allow_pinned: true, ..RelocMode::STOAKES };
        let p = sys.reloc_prewalk(mm, old_addr, vrm.old_len);
        let refuse = if p.migration {
            Some(RelocReason::Migration)
        } else if p.shared_pages * PAGE_SIZE > self.copy_budget {
            Some(RelocReason::Budget)
        } else {
            None
        };
        if let Some(reason) = refuse {
            sys.trace.stats.policy.refuse(reason);
            return Err(reason);
        }
        if p.shared_pages > 0 {
            mode.copy_shared = true;
        }
        let Some(cand) = auto_candidate(sys, *vmap, addr, len) else {
            sys.trace.stats.policy.refuse(RelocReason::NoGain);
            return Err(RelocReason::NoGain);
        };
        if cand == pgoff {
            // The pgoff already fits: an ordinary move merges.
            sys.trace.stats.policy.relocations_unneeded += 1;
            return Err(RelocReason::NoGain);
        }
        let vma = sys.copy_vma_at(vmap, addr, len, cand, false).ok_or(RelocReason::NoGain)?;
        Ok(MoveTarget::Relocate { vma, mode })
    }

    /// A neighbour of the moved VMA that would merge with it but for its pgoff frame (or
    /// anon_vma) is relocated in place into the moved VMA's frame, when it is exclusive to
    /// this process, and merged: so a VMA that arrived between two others joins both,
    /// whatever frames they came with. Nothing is done where no merge follows.
    fn move_vma_done(self, sys: &mut System, mm: MmId, addr: VirtAddr) {
        for next_side in [true, false] {
            let (v, n, target) = match stitch_target(sys, mm, addr, next_side) {
                Err(()) => return,
                Ok(None) => continue,
                Ok(Some(t)) => t,
            };
            let (ns, ne) = (sys.vm.vmas[n].start, sys.vm.vmas[n].end);
            let p = sys.reloc_prewalk(mm, ns, ne.0 - ns.0);
            if p.shared_pages > 0 || p.migration || p.partial_large {
                continue;
            }
            sys.trace.stats.policy.relocations_attempted += 1;
            sys.relocate_in_place(mm, n, target, sys.vm.vmas[v].anon_vma);
            sys.trace.stats.policy.relocations_done += 1;
            let mut vmg = sys.vm.vmg_from_vma(n, ns, ne, MergeCaller::AutoStitch);
            vmg.prev = sys.vm.mms[mm].vma_before(ns);
            sys.vma_merge_existing_range(&mut vmg);
        }
    }

    /// A neighbour passes [`stitch_target`]'s checks (the page walk that follows counts).
    fn move_vma_done_acts(self, sys: &System, mm: MmId, addr: VirtAddr) -> bool {
        for next_side in [true, false] {
            match stitch_target(sys, mm, addr, next_side) {
                Err(()) => return false,
                Ok(None) => {}
                Ok(Some(_)) => return true,
            }
        }
        false
    }

    /// The pgoff that continues an adjacent anonymous neighbour's frame (an unfaulted VMA has
    /// no folios, so its pgoff is free to choose; the kernel's `addr >> PAGE_SHIFT` only fits
    /// neighbours that never moved).
    fn anon_mmap_pgoff(
        self,
        sys: &System,
        mm: MmId,
        addr: VirtAddr,
        len: u64,
        flags: VmFlags,
    ) -> Option<PgOff> {
        let m = &sys.vm.mms[mm];
        let pages = len >> PAGE_SHIFT;
        // VM_ACCOUNT is added to the new VMA later (mmap_region); it is no obstacle here.
        let fits = |id: VmaId| {
            let n = &sys.vm.vmas[id];
            n.is_anonymous()
                && n.special.is_none()
                && n.anon_name.is_none()
                && ((n.flags ^ flags) & !(VmFlags::IGNORE_MERGE | VmFlags::ACCOUNT)).is_empty()
                && !sys.vm.vma_is_fork_child(Some(id))
        };
        if let Some(p) = m.vma_before(addr).filter(|&p| sys.vm.vmas[p].end == addr && fits(p)) {
            return Some(sys.vm.vmas[p].pgoff.plus(sys.vm.vmas[p].pages()));
        }
        let n = m.vma_at_start(addr.plus(len)).filter(|&n| fits(n))?;
        sys.vm.vmas[n].pgoff.0.checked_sub(pages).map(PgOff)
    }
}

/// The pgoff that would make the moved VMA fit a neighbour at `[addr, addr+len)` (merge now,
/// or share its anon_vma so that a later mprotect merges): prev's frame first, next's
/// otherwise; None when no neighbour could ever take it.
fn auto_candidate(sys: &System, vma: VmaId, addr: VirtAddr, len: u64) -> Option<PgOff> {
    let v = &sys.vm.vmas[vma];
    let mm = &sys.vm.mms[v.mm];
    let pages = len >> PAGE_SHIFT;
    let fits = |n: VmaId| {
        let n = &sys.vm.vmas[n];
        n.is_anonymous()
            && n.special.is_none()
            // An mprotect can make these equal (VM_ACCOUNT comes with write access).
            && ((n.flags ^ v.flags) & !(VmFlags::ACCESS | VmFlags::ACCOUNT | VmFlags::IGNORE_MERGE)).is_empty()
            && !n.flags.intersects(VmFlags::SPECIAL)
            && n.anon_name.as_deref() == v.anon_name.as_deref()
    };
    let merges_now = |n: VmaId| ((sys.vm.vmas[n].flags ^ v.flags) & !VmFlags::IGNORE_MERGE).is_empty();
    let prev = mm.vma_before(addr).filter(|&p| sys.vm.vmas[p].end == addr && fits(p));
    let next = mm.vma_at_start(addr.plus(len)).filter(|&n| fits(n) && sys.vm.vmas[n].pgoff.0 >= pages);
    // A fork child's anon_vma cannot take more folios (is_mergeable_anon_vma).
    let usable = |n: VmaId| !sys.vm.vma_is_fork_child(Some(n));
    let from_prev = prev.filter(|&p| usable(p)).map(|p| sys.vm.vmas[p].pgoff.plus(sys.vm.vmas[p].pages()));
    let from_next = next.filter(|&n| usable(n)).map(|n| PgOff(sys.vm.vmas[n].pgoff.0 - pages));
    match (from_prev, from_next) {
        (Some(a), Some(b)) if a == b => Some(a),
        (Some(a), Some(b)) => {
            // Prefer the side that merges now.
            if prev.is_some_and(merges_now) || !next.is_some_and(merges_now) { Some(a) } else { Some(b) }
        }
        (a, b) => a.or(b),
    }
}

/// `move_vma_done`'s checks of one side of the moved VMA at `addr` (next, or prev): the
/// moved VMA, the neighbour to relocate in place and the pgoff it would take; `Ok(None)`
/// when that side has nothing to do, `Err` when the moved range is no longer mapped.
fn stitch_target(
    sys: &System,
    mm: MmId,
    addr: VirtAddr,
    next_side: bool,
) -> Result<Option<(VmaId, VmaId, PgOff)>, ()> {
    let Some(v) = sys.vm.mms[mm].vma_lookup(addr) else { return Err(()) };
    let (vs, ve) = (sys.vm.vmas[v].start, sys.vm.vmas[v].end);
    let n = if next_side {
        sys.vm.mms[mm].vma_at_start(ve)
    } else {
        sys.vm.mms[mm].vma_before(vs).filter(|&p| sys.vm.vmas[p].end == vs)
    };
    let Some(n) = n else { return Ok(None) };
    let (a, b) = (&sys.vm.vmas[v], &sys.vm.vmas[n]);
    if !a.is_anonymous()
        || !b.is_anonymous()
        || b.special.is_some()
        || a.flags != b.flags
        || a.flags.intersects(VmFlags::SPECIAL)
        || a.anon_name.as_deref() != b.anon_name.as_deref()
        || sys.vm.vma_maybe_has_shared_anon_folios(&sys.rmap, n)
        || sys.vm.vma_is_fork_child(Some(v))
    {
        return Ok(None);
    }
    let target = if next_side {
        a.pgoff.plus(a.pages())
    } else {
        match a.pgoff.0.checked_sub(b.pages()) {
            Some(p) => PgOff(p),
            None => return Ok(None),
        }
    };
    let same_av = a.anon_vma.is_none() || b.anon_vma.is_none() || a.anon_vma == b.anon_vma;
    if b.pgoff == target && same_av {
        return Ok(None); // it would have merged already, or cannot for another reason
    }
    Ok(Some((v, n, target)))
}
