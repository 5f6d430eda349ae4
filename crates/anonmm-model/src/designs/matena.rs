//! `matena`: Jakub Matěna's RFC v3 "Removing limitations of merging anonymous VMAs" (16 May
//! 2022, `20220516125405.1675-1-matenajakub@gmail.com`; v1 18 Feb 2022,
//! `20220218122019.130274-1-matenajakub@gmail.com`, ../shared/seeds/001_*;
//! ../shared/design/relocate-anon-history.md §1). Patch "adjust page offset in mremap": every
//! move of an unshared faulted VMA gives the new VMA `addr >> PAGE_SHIFT` as pgoff and its
//! folios the matching `index`, after a page walk checked that nothing is shared
//! (`update_faulted_pgoff`), waiting for migrations first ("migration waiting and rmap
//! locking to pagewalk"). Patch "merge VMAs with different anon_vmas": a VMA whose anon_vma
//! is a root that was never forked may merge into a neighbour with another anon_vma, its
//! folios' `mapping` moving over.

use super::{Design, MoveTarget, SharedVma};
use crate::folio::{HUGE_ZERO_FOLIO, Mapping, ZERO_FOLIO};
use crate::merge::{MergeCaller, Vmg};
use crate::mm::{MmId, System};
use crate::mremap::Vrm;
use crate::pagetable::Pte;
use crate::policy::RelocReason;
use crate::relocate::RelocMode;
use crate::types::{PAGE_SHIFT, PMD_SIZE, PgOff, VirtAddr};
use crate::vma::VmaId;

/// Matěna 2022.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Matena;

impl Design for Matena {
    fn should_relocate_anon(self, _flags: u64) -> Option<SharedVma> {
        Some(SharedVma::Refuse)
    }

    /// `update_faulted_pgoff`: wait for migrations, walk the pages (refusing shared, partly
    /// covered large and migrating ones), then the new VMA at `addr >> PAGE_SHIFT`, keeping
    /// the anon_vma so that `is_mergeable_anon_vma` may let a neighbour adopt it.
    fn copy_vma_relocating(
        self,
        sys: &mut System,
        vmap: &mut VmaId,
        vrm: &Vrm,
        _pgoff: PgOff,
    ) -> Result<MoveTarget, RelocReason> {
        let mm = vrm.mm;
        let (addr, len) = (VirtAddr(vrm.new_addr), vrm.new_len);
        let old_addr = VirtAddr(vrm.addr);
        sys.wait_migrations(mm, old_addr, old_addr.plus(vrm.old_len));
        let p = sys.reloc_prewalk(mm, old_addr, vrm.old_len);
        let refuse = if p.shared_pages > 0 {
            Some(RelocReason::Shared)
        } else if p.partial_large {
            Some(RelocReason::PartialLarge)
        } else if p.migration {
            Some(RelocReason::Migration)
        } else {
            None
        };
        if let Some(reason) = refuse {
            sys.trace.stats.policy.refuse(reason);
            return Err(reason);
        }
        let linear = PgOff(addr.0 >> PAGE_SHIFT);
        let vma = sys.copy_vma_at(vmap, addr, len, linear, true).ok_or(RelocReason::NoGain)?;
        Ok(MoveTarget::Relocate { vma, mode: RelocMode::MATENA })
    }

    /// The VMA whose anon_vma a merge would drop (the mremap source, or the middle of an
    /// existing-range merge) may merge into a neighbour with another anon_vma when its
    /// anon_vma is a root that was never forked and it has no other anon_vma links.
    fn is_mergeable_anon_vma(self, sys: &System, vmg: &Vmg) -> bool {
        // Only where a walk follows: the relocating move, or an existing-range merge
        // (`commit_merge` below).
        let src = match (vmg.caller, vmg.middle) {
            (MergeCaller::MremapRelocate, _) => vmg.copied_from,
            (_, Some(m)) => Some(m),
            _ => None,
        };
        let Some(src) = src else { return false };
        let Some(av) = sys.vm.vmas[src].anon_vma else { return false };
        let a = &sys.rmap.anon_vmas[av];
        if !(a.root == av && a.num_children == 1 && sys.vm.vmas[src].chain.len() == 1) {
            return false;
        }
        // An existing-range merge moves the folios of `[start, end)` only (`commit_merge`);
        // a large folio also mapped outside it would be left where the rest of its VMAs' rmap
        // cannot reach it, so the walk refuses it, as `update_faulted_pgoff` refuses a partly
        // covered one on a move (the mremap case checked its range in
        // `copy_vma_relocating`).
        vmg.caller == MergeCaller::MremapRelocate || only_whole_folios(sys, vmg.mm, vmg.start, vmg.end)
    }

    /// Both VMAs have an anon_vma, and they differ.
    fn commit_merge_acts(self, sys: &System, from: VmaId, to: VmaId) -> bool {
        let (f, t) = (sys.vm.vmas[from].anon_vma, sys.vm.vmas[to].anon_vma);
        f.is_some() && t.is_some() && f != t
    }

    /// Before an existing-range merge removes or shrinks a VMA with another anon_vma than
    /// the target's, move the folios of the absorbed range over (their `index` already
    /// fits: merges need contiguous pgoffs).
    fn commit_merge(
        self,
        sys: &mut System,
        mm: MmId,
        start: VirtAddr,
        end: VirtAddr,
        from: VmaId,
        to: VmaId,
    ) {
        if !self.commit_merge_acts(sys, from, to) {
            return;
        }
        let (Some(fav), Some(tav)) = (sys.vm.vmas[from].anon_vma, sys.vm.vmas[to].anon_vma) else { return };
        sys.trace.stats.policy.anon_vma_adoptions += 1;
        sys.trace.stats.policy.rmap_lock_holds += 2;
        // A migration entry's folio cannot be adopted while its migration is in flight (its
        // rmap walk would look in the old anon_vma and strand the entry): wait for it, which
        // maps the new folio, then adopt that.
        sys.wait_migrations(mm, start, end);
        for m in sys.mapped_anon_folios(mm, start, end).0 {
            if sys.mem.folios[m.folio].mapping == Mapping::Anon(fav) {
                sys.mem.folios[m.folio].mapping = Mapping::Anon(tav);
                sys.trace.stats.policy.folios_rewritten += 1;
            }
        }
    }
}

/// Whether every large anonymous folio mapped in `[start, end)` of `mm` lies wholly inside
/// it and is mapped nowhere else (a PMD-mapped THP inside the range; a PTE-mapped one with
/// each page mapped once, there).
fn only_whole_folios(sys: &System, mm: MmId, start: VirtAddr, end: VirtAddr) -> bool {
    let pt = &sys.vm.mms[mm].pt;
    let pmds_inside = pt
        .huge_in(start, end)
        .into_iter()
        .all(|(h, folio, _)| folio == HUGE_ZERO_FOLIO || (h >= start && h.plus(PMD_SIZE) <= end));
    pmds_inside
        && pt.ptes_in(start, end).into_iter().all(|(a, pte)| match pte {
            Pte::Present { folio, sub, .. }
                if folio != ZERO_FOLIO
                    && sys.mem.folios[folio].is_anon()
                    && sys.mem.folios[folio].is_large() =>
            {
                sys.mem.large_fully_in(pt, start, end, a, folio, sub).is_some()
            }
            _ => true,
        })
}
