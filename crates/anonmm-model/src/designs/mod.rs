//! The designs: how each `--policy` ([`Policy`]) reaches the kernel mirror, through one named
//! set of hooks, [`Design`], called where the kernel's code would call them.
//!
//! | hook | called from | kernel function it sits in |
//! |---|---|---|
//! | [`Design::mremap_relocate_flags`] | `check_mremap_params` (mremap.rs) | `check_mremap_params` |
//! | [`Design::should_relocate_anon`] | `reloc_plan` ← `move_vma` (relocate.rs, mremap.rs) | the series' `should_relocate_anon` in `move_vma` |
//! | [`Design::copy_vma_relocating`] | `copy_vma_relocating` ← `move_vma` | `copy_vma_and_data` → `copy_vma` (the move's target pgoff) |
//! | [`Design::is_mergeable_anon_vma`] | `is_mergeable_anon_vma` (merge.rs) | `is_mergeable_anon_vma`, the different-anon_vma case |
//! | [`Design::commit_merge`] | `vma_merge_existing_range` (merge.rs) | `commit_merge`, before the VMAs change |
//! | [`Design::move_vma_done`] | `move_vma` (mremap.rs), at its end | `move_vma` |
//! | [`Design::anon_mmap_pgoff`] | `do_mmap` (mmap.rs) | `do_mmap`'s `pgoff = addr >> PAGE_SHIFT` |
//!
//! Each design is a file: [`kernel`] (Linux 6.18: every hook at its default, which is what
//! the kernel does), [`stoakes`] (`relocate`, `relocate-all`), [`matena`], [`copy_shared`]
//! and [`auto`]. [`Policy`] dispatches each hook to its design with a `match` (no dynamic
//! call; the designs are unit-like values). The machinery the designs share (the relocation
//! walk and its undo, the page walk before it, the rewrite in place) is in
//! [`crate::relocate`].
//!
//! To add a design: a variant of [`Policy`] (with its name in `POLICY_NAMES`, `parse` and
//! `Display`), a file here implementing the hooks it changes, its arm in `dispatch!`, and
//! its row in docs/policies.md.

pub(crate) mod auto;
pub(crate) mod copy_shared;
pub(crate) mod kernel;
pub(crate) mod matena;
pub(crate) mod stoakes;

use crate::merge::Vmg;
use crate::mm::{MmId, System};
use crate::mremap::Vrm;
use crate::policy::{Policy, RelocReason};
use crate::relocate::RelocMode;
use crate::types::{PgOff, VirtAddr};
use crate::vma::{VmFlags, VmaId};

/// What `should_relocate_anon` does with a VMA that may share folios with another process
/// (`vma_maybe_has_shared_anon_folios`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum SharedVma {
    /// Refuse the relocation up front (the 2025 series; Matěna's unshared-root rule).
    Refuse,
    /// Let the walk decide, folio by folio (a shared folio may be copied).
    Walk,
}

/// Where a relocating move puts the moved range: the outcome of
/// [`Design::copy_vma_relocating`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum MoveTarget {
    /// `copy_vma`'s ordinary merge worked: this VMA, nothing to relocate.
    Merged(VmaId),
    /// A VMA at the design's pgoff whose folios the walk rewrites, walked in `mode`.
    Relocate {
        /// The destination VMA (new, or a neighbour the range merged into).
        vma: VmaId,
        /// How the walk treats shared, pinned, swapped and partly covered folios.
        mode: RelocMode,
    },
}

/// The hooks through which a design changes the kernel's behaviour. Every default is what
/// Linux 6.18 does ([`kernel::Kernel`] overrides nothing).
pub(crate) trait Design: Copy {
    /// `check_mremap_params`: whether `MREMAP_RELOCATE_ANON` and `MREMAP_MUST_RELOCATE_ANON`
    /// exist (else EINVAL, as on every released kernel).
    fn mremap_relocate_flags(self) -> bool {
        false
    }

    /// `should_relocate_anon` (mremap `move_vma`), the design's part: whether a move with
    /// mremap `flags` tries to relocate a faulted anonymous VMA at all (None: a plain move),
    /// and what it does with a VMA that may share folios. The checks every design makes
    /// (VM_SPECIAL, unfaulted, multi-VMA moves) are `System::reloc_plan`'s.
    fn should_relocate_anon(self, flags: u64) -> Option<SharedVma> {
        let _ = flags;
        None
    }

    /// `copy_vma_and_data` → `copy_vma` of a move `should_relocate_anon` accepted: the
    /// destination VMA and the pgoff it gets (the design's target pgoff; `pgoff` is the one
    /// the kernel would keep), or why nothing is relocated (a plain move follows). May
    /// replace `*vmap` as `copy_vma` does.
    fn copy_vma_relocating(
        self,
        sys: &mut System,
        vmap: &mut VmaId,
        vrm: &Vrm,
        pgoff: PgOff,
    ) -> Result<MoveTarget, RelocReason> {
        let _ = (sys, vmap, vrm, pgoff);
        // Not reached: the kernel never relocates (should_relocate_anon says None).
        Err(RelocReason::NotAnon)
    }

    /// `is_mergeable_anon_vma`, the case of two different anon_vmas (the kernel refuses):
    /// whether `vmg` may merge into its neighbour all the same.
    fn is_mergeable_anon_vma(self, sys: &System, vmg: &Vmg) -> bool {
        let _ = (sys, vmg);
        false
    }

    /// `commit_merge` of `vma_merge_existing_range`, once `to` has the anon_vma it keeps
    /// (`dup_anon_vma`) and before the VMAs change: `[start, end)` of `from` is about to
    /// become part of `to`.
    fn commit_merge(
        self,
        sys: &mut System,
        mm: MmId,
        start: VirtAddr,
        end: VirtAddr,
        from: VmaId,
        to: VmaId,
    ) {
        let _ = (sys, mm, start, end, from, to);
    }

    /// The end of `move_vma`, once the source is unmapped (or emptied by DONTUNMAP): the
    /// moved range starts at `new_addr`.
    fn move_vma_done(self, sys: &mut System, mm: MmId, new_addr: VirtAddr) {
        let _ = (sys, mm, new_addr);
    }

    /// `do_mmap` of a private anonymous mapping: the pgoff instead of the kernel's
    /// `addr >> PAGE_SHIFT`, if the design chooses one.
    fn anon_mmap_pgoff(
        self,
        sys: &System,
        mm: MmId,
        addr: VirtAddr,
        len: u64,
        flags: VmFlags,
    ) -> Option<PgOff> {
        let _ = (sys, mm, addr, len, flags);
        None
    }
}

/// Run `$call` with `$d` bound to the design of `$policy`.
macro_rules! dispatch {
    ($policy:expr, $d:ident => $call:expr) => {
        match $policy {
            Policy::Kernel => {
                let $d = kernel::Kernel;
                $call
            }
            Policy::Relocate => {
                let $d = stoakes::Stoakes { every_move: false };
                $call
            }
            Policy::RelocateAll => {
                let $d = stoakes::Stoakes { every_move: true };
                $call
            }
            Policy::Matena => {
                let $d = matena::Matena;
                $call
            }
            Policy::CopyShared => {
                let $d = copy_shared::CopyShared;
                $call
            }
            Policy::Auto { copy_budget } => {
                let $d = auto::Auto { copy_budget };
                $call
            }
        }
    };
}

impl Design for Policy {
    #[inline]
    fn mremap_relocate_flags(self) -> bool {
        dispatch!(self, d => d.mremap_relocate_flags())
    }

    #[inline]
    fn should_relocate_anon(self, flags: u64) -> Option<SharedVma> {
        dispatch!(self, d => d.should_relocate_anon(flags))
    }

    #[inline]
    fn copy_vma_relocating(
        self,
        sys: &mut System,
        vmap: &mut VmaId,
        vrm: &Vrm,
        pgoff: PgOff,
    ) -> Result<MoveTarget, RelocReason> {
        dispatch!(self, d => d.copy_vma_relocating(sys, vmap, vrm, pgoff))
    }

    #[inline]
    fn is_mergeable_anon_vma(self, sys: &System, vmg: &Vmg) -> bool {
        dispatch!(self, d => d.is_mergeable_anon_vma(sys, vmg))
    }

    #[inline]
    fn commit_merge(
        self,
        sys: &mut System,
        mm: MmId,
        start: VirtAddr,
        end: VirtAddr,
        from: VmaId,
        to: VmaId,
    ) {
        dispatch!(self, d => d.commit_merge(sys, mm, start, end, from, to))
    }

    #[inline]
    fn move_vma_done(self, sys: &mut System, mm: MmId, new_addr: VirtAddr) {
        dispatch!(self, d => d.move_vma_done(sys, mm, new_addr))
    }

    #[inline]
    fn anon_mmap_pgoff(
        self,
        sys: &System,
        mm: MmId,
        addr: VirtAddr,
        len: u64,
        flags: VmFlags,
    ) -> Option<PgOff> {
        dispatch!(self, d => d.anon_mmap_pgoff(sys, mm, addr, len, flags))
    }
}
