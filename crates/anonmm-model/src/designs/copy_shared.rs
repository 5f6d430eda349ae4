//! `copy-shared`: Linus Torvalds's 2004 proposal in the anon_vma/anonmm debate, "copy shared
//! pages on mremap after fork" (../shared/design/relocate-anon-history.md §3; the thread
//! around Andrea Arcangeli's "anon_vma RFC2", `20040311065254.GT30940@dualathlon.random`,
//! ../shared/seeds/003_*): every move relocates, and a page another process maps is copied
//! for this one first (copy-on-write broken early, `copy_one_pte` with `copy_page`), so that
//! the move can always relocate. Swap entries are read in first, so that shared ones can be
//! copied too.

use super::{Design, MoveTarget, SharedVma};
use crate::mm::System;
use crate::mremap::Vrm;
use crate::policy::RelocReason;
use crate::relocate::RelocMode;
use crate::types::PgOff;
use crate::vma::VmaId;

/// Torvalds 2004.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CopyShared;

impl Design for CopyShared {
    fn should_relocate_anon(self, _flags: u64) -> Option<SharedVma> {
        Some(SharedVma::Walk)
    }

    /// The series' `copy_vma` with `relocate_anon`, walking in the copying mode.
    fn copy_vma_relocating(
        self,
        sys: &mut System,
        vmap: &mut VmaId,
        vrm: &Vrm,
        pgoff: PgOff,
    ) -> Result<MoveTarget, RelocReason> {
        super::stoakes::copy_vma_relocate_anon(sys, vmap, vrm, pgoff, RelocMode::COPY_SHARED)
    }
}
