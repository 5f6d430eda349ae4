//! `relocate` and `relocate-all`: Lorenzo Stoakes's 2025 series "mm/mremap: introduce more
//! mergeable mremap via MREMAP_RELOCATE_ANON" (RFC 21 Mar 2025,
//! `cover.1742478846.git.lorenzo.stoakes@oracle.com`; PATCH 9 Jun 2025,
//! `cover.1749473726.git.lorenzo.stoakes@oracle.com`; ../shared/design/
//! relocate-anon-history.md §2, ../shared/seeds/002_*). mremap gains `MREMAP_RELOCATE_ANON`
//! (8) and `MREMAP_MUST_RELOCATE_ANON` (16); `should_relocate_anon` takes a faulted, purely
//! anonymous VMA that `!vma_maybe_has_shared_anon_folios`; `copy_vma` with `relocate_anon`
//! relocates nothing where an ordinary merge works, else makes a new VMA at pgoff
//! `addr >> PAGE_SHIFT` whose folios `relocate_anon_folios` rewrites (with undo; the
//! large-folio patch splits partly covered ones). `relocate-all` is the same as if every move
//! passed `MREMAP_RELOCATE_ANON`.

use super::{Design, MoveTarget, SharedVma};
use crate::abi::{MREMAP_MUST_RELOCATE_ANON, MREMAP_RELOCATE_ANON};
use crate::mm::System;
use crate::mremap::Vrm;
use crate::policy::RelocReason;
use crate::relocate::RelocMode;
use crate::types::{PAGE_SHIFT, PgOff, VirtAddr};
use crate::vma::VmaId;

/// The 2025 series.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stoakes {
    /// `relocate-all`: as if every move passed `MREMAP_RELOCATE_ANON`.
    pub every_move: bool,
}

impl Design for Stoakes {
    fn mremap_relocate_flags(self) -> bool {
        true
    }

    fn should_relocate_anon(self, flags: u64) -> Option<SharedVma> {
        let asked = flags & (MREMAP_RELOCATE_ANON | MREMAP_MUST_RELOCATE_ANON) != 0;
        (self.every_move || asked).then_some(SharedVma::Refuse)
    }

    fn copy_vma_relocating(
        self,
        sys: &mut System,
        vmap: &mut VmaId,
        vrm: &Vrm,
        pgoff: PgOff,
    ) -> Result<MoveTarget, RelocReason> {
        copy_vma_relocate_anon(sys, vmap, vrm, pgoff, RelocMode::STOAKES)
    }
}

/// The series' `copy_vma` with `relocate_anon`: no relocation where `copy_vma`'s ordinary
/// merge works; else a new VMA at `addr >> PAGE_SHIFT`, without anon_vma links, walked in
/// `mode` (also Torvalds's copy, [`super::copy_shared`]).
pub(crate) fn copy_vma_relocate_anon(
    sys: &mut System,
    vmap: &mut VmaId,
    vrm: &Vrm,
    pgoff: PgOff,
    mode: RelocMode,
) -> Result<MoveTarget, RelocReason> {
    let (addr, len) = (VirtAddr(vrm.new_addr), vrm.new_len);
    if let Some(nv) = sys.copy_vma_merge_only(vmap, addr, len, pgoff) {
        sys.trace.stats.policy.relocations_unneeded += 1;
        return Ok(MoveTarget::Merged(nv));
    }
    if sys.vm.mms[vrm.mm].intersects(addr, addr.plus(len)) {
        return Err(RelocReason::NoGain);
    }
    let linear = PgOff(addr.0 >> PAGE_SHIFT);
    Ok(MoveTarget::Relocate { vma: sys.copy_vma_new(*vmap, addr, len, linear, true), mode })
}
