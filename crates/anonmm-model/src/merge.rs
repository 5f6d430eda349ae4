//! VMA merging (mm/vma.c, Linux 6.18 with the 6.18.y `copied_from` fix):
//! `struct vma_merge_struct`, the mergeability predicates, `vma_merge_new_range`,
//! `vma_merge_existing_range`, `vma_expand`, `dup_anon_vma` and `vma_modify`.

use crate::designs::Design;
use crate::errno::KResult;
use crate::fs::FileId;
use crate::mm::{MmId, System};
use crate::rmap::AnonVmaId;
use crate::stats::{MergeEvent, MergeReason};
use crate::types::{PAGE_SHIFT, PgOff, VirtAddr};
use crate::vma::{AnonName, VmFlags, VmaId};

/// `struct vma_merge_struct`.
#[derive(Clone, Debug)]
pub struct Vmg {
    /// `vmg->mm`: the address space.
    pub mm: MmId,
    /// `vmg->prev`: the VMA before the range, a candidate to extend.
    pub prev: Option<VmaId>,
    /// `vmg->middle`: the existing VMA whose part `[start, end)` is changing (None for a new
    /// range).
    pub middle: Option<VmaId>,
    /// `vmg->next`: the VMA after the range, a candidate to extend.
    pub next: Option<VmaId>,
    /// `vmg->target`: the VMA a merge expands to cover the result, once chosen.
    pub target: Option<VmaId>,
    /// `vmg->start`: start of the range (after a merge, of the merged VMA).
    pub start: VirtAddr,
    /// `vmg->end`: end of the range, exclusive (after a merge, of the merged VMA).
    pub end: VirtAddr,
    /// `vmg->pgoff`: page offset of `start`.
    pub pgoff: PgOff,
    /// `vmg->vm_flags`: the flags the range will have.
    pub flags: VmFlags,
    /// `vmg->file`.
    pub file: Option<FileId>,
    /// `vmg->anon_vma`: the range's anon_vma, if it has been faulted.
    pub anon_vma: Option<AnonVmaId>,
    /// `vmg->anon_name`: the name the range will have.
    pub anon_name: AnonName,
    /// `uffd_ctx`.
    pub uffd: Option<crate::uffd::UffdCtx>,
    /// The mremap source (6.19, backported to 6.18.y).
    pub copied_from: Option<VmaId>,
    /// Only expand prev; never look at next (brk).
    pub just_expand: bool,
    /// Who asked: named in the merge log, and read by the designs' hooks (a relocating move's
    /// merge may adopt folios; see `crate::designs`).
    pub caller: MergeCaller,
}

/// Who builds a [`Vmg`]: the kernel function (or model step) asking for the merge.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum MergeCaller {
    /// Not named (a bare `Vmg::new_range`).
    #[default]
    Unnamed,
    /// `__mmap_region`.
    Mmap,
    /// `do_brk_flags`.
    Brk,
    /// `mprotect_fixup`.
    Mprotect,
    /// `madvise_update_vma` and `PR_SET_VMA_ANON_NAME`.
    Madvise,
    /// `mlock_fixup` (mlock, mlock2, munlock, mlockall, munlockall).
    Mlock,
    /// `mremap`'s in-place expansion (`expand_vma`).
    MremapExpand,
    /// `copy_vma` of an mremap move.
    MremapMove,
    /// A relocating move's `copy_vma` and its retried `vma_merge_existing_range` (the designs).
    MremapRelocate,
    /// `auto`'s stitch of a neighbour after a move.
    AutoStitch,
    /// `anonmm explain`'s question of why two VMAs stay apart.
    Explain,
    /// `userfaultfd_register`.
    UffdRegister,
    /// `userfaultfd_unregister`.
    UffdUnregister,
    /// `userfaultfd_release_all`: the context's last descriptor is closed.
    UffdRelease,
}

impl MergeCaller {
    /// The name the merge log prints.
    pub fn name(self) -> &'static str {
        match self {
            MergeCaller::Unnamed => "",
            MergeCaller::Mmap => "mmap",
            MergeCaller::Brk => "brk",
            MergeCaller::Mprotect => "mprotect",
            MergeCaller::Madvise => "madvise",
            MergeCaller::Mlock => "mlock",
            MergeCaller::MremapExpand => "mremap_expand",
            MergeCaller::MremapMove => "mremap_move",
            MergeCaller::MremapRelocate => "mremap_relocate",
            MergeCaller::AutoStitch => "auto_stitch",
            MergeCaller::Explain => "explain",
            MergeCaller::UffdRegister => "uffd_register",
            MergeCaller::UffdUnregister => "uffd_unregister",
            MergeCaller::UffdRelease => "userfaultfd_release",
        }
    }
}

impl std::fmt::Display for MergeCaller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Vmg {
    /// `VMG_STATE`-like: a new range with explicit attributes.
    pub fn new_range(mm: MmId, start: VirtAddr, end: VirtAddr, pgoff: PgOff, flags: VmFlags) -> Vmg {
        Vmg {
            mm,
            prev: None,
            middle: None,
            next: None,
            target: None,
            start,
            end,
            pgoff,
            flags,
            file: None,
            anon_vma: None,
            anon_name: None,
            uffd: None,
            copied_from: None,
            just_expand: false,
            caller: MergeCaller::Unnamed,
        }
    }
}

/// `can_merge_remove_vma`: a VMA whose `vm_ops->close` exists cannot be removed by a merge.
/// No VMA the model creates has a close hook (anonymous, shmem and regular files have none).
fn can_merge_remove_vma(_sys: &System, _vma: VmaId) -> bool {
    true
}

impl System {
    /// Why `prev` and `next`, adjacent VMAs of one mm, stay apart: what
    /// `vma_merge_existing_range` finds when a call over all of `next` asks to merge it with
    /// `prev` (the VM_SPECIAL test, then `can_vma_merge_left` → `can_vma_merge_after`), under
    /// this system's policy. `MergeOk` when they would merge. Used by `anonmm explain`.
    pub fn why_apart(&self, prev: VmaId, next: VmaId) -> MergeReason {
        let flags = self.vm.vmas[prev].flags | self.vm.vmas[next].flags;
        if flags.intersects(VmFlags::SPECIAL) {
            return MergeReason::NomergeSpecial;
        }
        let (start, end) = (self.vm.vmas[next].start, self.vm.vmas[next].end);
        let mut vmg = self.vm.vmg_from_vma(next, start, end, MergeCaller::Explain);
        vmg.prev = Some(prev);
        self.can_vma_merge_left(&vmg).err().unwrap_or(MergeReason::MergeOk)
    }

    /// `is_mergeable_anon_vma(vmg, merge_next)`, 6.16+ with the 6.18.y `copied_from` test.
    fn is_mergeable_anon_vma(&self, vmg: &Vmg, merge_next: bool) -> Result<(), MergeReason> {
        let tgt = if merge_next { vmg.next } else { vmg.prev }.expect("neighbour");
        let tgt_anon = self.vm.vmas[tgt].anon_vma;
        let src_anon = vmg.anon_vma;
        if !self.cfg.kernel.profile().anon_vma_merge_unfaulted_target {
            // Before 6.16: `is_mergeable_anon_vma(vmg->anon_vma, tgt->anon_vma, tgt)`. When
            // one side has no anon_vma, the target's chain must be singular: an unfaulted
            // target (empty chain) takes no faulted range, nor does a fork child.
            if (tgt_anon.is_none() || src_anon.is_none()) && self.vm.vmas[tgt].chain.len() == 1 {
                return Ok(());
            }
            return if tgt_anon == src_anon || self.policy_mergeable_anon_vma(vmg) {
                Ok(())
            } else {
                Err(MergeReason::NomergeAnonVma)
            };
        }
        match (tgt_anon, src_anon) {
            // Case 1: the target will take the source's anon_vma (dup_anon_vma).
            (None, Some(_)) => {
                if self.vm.vma_is_fork_child(vmg.middle) || self.vm.vma_is_fork_child(vmg.copied_from) {
                    Err(MergeReason::NomergeForkChild)
                } else {
                    Ok(())
                }
            }
            // Case 2: the unfaulted source joins a faulted target.
            (Some(_), None) => {
                if self.vm.vma_is_fork_child(Some(tgt)) {
                    Err(MergeReason::NomergeForkChild)
                } else {
                    Ok(())
                }
            }
            // Case 3.
            (a, b) => {
                if a == b || self.policy_mergeable_anon_vma(vmg) {
                    Ok(())
                } else {
                    Err(MergeReason::NomergeAnonVma)
                }
            }
        }
    }

    /// The design's `is_mergeable_anon_vma` (the policy probe notes it).
    fn policy_mergeable_anon_vma(&self, vmg: &Vmg) -> bool {
        self.probe("is_mergeable_anon_vma", |p| p.is_mergeable_anon_vma(self, vmg));
        self.policy.is_mergeable_anon_vma(self, vmg)
    }

    /// The design's `commit_merge` (the policy probe notes whether a design would act).
    pub(crate) fn policy_commit_merge(
        &mut self,
        mm: MmId,
        start: VirtAddr,
        end: VirtAddr,
        from: VmaId,
        to: VmaId,
    ) {
        self.probe("commit_merge", |p| p.commit_merge_acts(self, from, to));
        self.policy.commit_merge(self, mm, start, end, from, to);
    }

    /// `can_vma_merge_before`: vmg can join the front of next.
    fn can_vma_merge_before(&self, vmg: &Vmg) -> Result<(), MergeReason> {
        self.vm.is_mergeable_vma(vmg, true)?;
        self.is_mergeable_anon_vma(vmg, true)?;
        let next = &self.vm.vmas[vmg.next.expect("next")];
        if next.pgoff.0 == vmg.pgoff.0.wrapping_add(vmg.start.pages_to(vmg.end)) {
            Ok(())
        } else {
            Err(MergeReason::NomergePgoff)
        }
    }

    /// `can_vma_merge_after`: vmg can join the end of prev.
    fn can_vma_merge_after(&self, vmg: &Vmg) -> Result<(), MergeReason> {
        self.vm.is_mergeable_vma(vmg, false)?;
        self.is_mergeable_anon_vma(vmg, false)?;
        let prev = &self.vm.vmas[vmg.prev.expect("prev")];
        if prev.pgoff.0.wrapping_add(prev.pages()) == vmg.pgoff.0 {
            Ok(())
        } else {
            Err(MergeReason::NomergePgoff)
        }
    }

    /// `can_vma_merge_left`.
    fn can_vma_merge_left(&self, vmg: &Vmg) -> Result<(), MergeReason> {
        match vmg.prev {
            Some(p) if self.vm.neighbour_range(vmg.mm, p).1 == vmg.start.0 => self.can_vma_merge_after(vmg),
            _ => Err(MergeReason::NoNeighbour),
        }
    }

    /// `can_vma_merge_right`: also requires prev and next to be compatible with each other
    /// when both will merge.
    fn can_vma_merge_right(&self, vmg: &Vmg, can_merge_left: bool) -> Result<(), MergeReason> {
        let next = match vmg.next {
            Some(n) if self.vm.neighbour_range(vmg.mm, n).0 == vmg.end.0 => n,
            _ => return Err(MergeReason::NoNeighbour),
        };
        self.can_vma_merge_before(vmg)?;
        if !can_merge_left {
            return Ok(());
        }
        let pa = self.vm.vmas[vmg.prev.expect("prev")].anon_vma;
        let na = self.vm.vmas[next].anon_vma;
        if pa.is_none() || na.is_none() || pa == na { Ok(()) } else { Err(MergeReason::NomergeIncompatible) }
    }

    /// `mmap_region`'s own checks before 6.12 (`vma_merge_new_range` came with "mm: avoid
    /// using vma_merge() for new VMAs"): next first, then prev with *next's* anon_vma when
    /// next will merge (`can_vma_merge_after(prev, vm_flags, vma->anon_vma, ...)`). So an
    /// unfaulted prev (empty chain, not singular) refuses a range joining a faulted next, and
    /// with two different anon_vmas the range joins next, not prev.
    fn mmap_region_merge_checks(&self, vmg: &mut Vmg) -> (Result<(), MergeReason>, Result<(), MergeReason>) {
        let right = match vmg.next {
            Some(n) if self.vm.neighbour_range(vmg.mm, n).0 == vmg.end.0 => self.can_vma_merge_before(vmg),
            _ => Err(MergeReason::NoNeighbour),
        };
        let own = vmg.anon_vma;
        if right.is_ok() {
            vmg.anon_vma = self.vm.vmas[vmg.next.expect("next")].anon_vma;
        }
        let left = self.can_vma_merge_left(vmg);
        vmg.anon_vma = own;
        (left, right)
    }

    /// `target` grows over `[start, end)`, absorbing the VMAs `gone` (`vma_complete` with
    /// `anon_vma_merge`): one tree store writes the grown VMA over them (`vma_iter_store`),
    /// then they are freed and the target's range set, as a removal of each followed by
    /// `vma_set_range` did.
    fn merge_store(&mut self, target: VmaId, start: VirtAddr, end: VirtAddr, pgoff: PgOff, gone: &[VmaId]) {
        let (mm, old) = (self.vm.vmas[target].mm, self.vm.vmas[target].start);
        if self.vm.mms[mm].pt.pmds.has_leaves() {
            // split_huge_pmd looks up the VMAs at the new boundaries: keep the tree as each
            // step left it.
            for &v in gone {
                self.vm.vma_detach(v);
                self.vma_free(v);
            }
            self.vma_set_range(target, start, end, pgoff);
            return;
        }
        let removed =
            self.vm.mms[mm].vmas.store(old.0, start.0, crate::mm::VmaEntry { end: end.0, id: target });
        assert_eq!(removed, gone.len(), "a merge's range covers only the VMAs it absorbs");
        for &v in gone {
            self.vma_free(v);
        }
        self.vma_set_range_untreed(target, start, end, pgoff);
    }

    /// `vma_merge_new_range`: a new range `[start, end)` in a gap may extend prev, next or
    /// both. Returns the VMA that now covers it.
    pub fn vma_merge_new_range(&mut self, vmg: &mut Vmg) -> Option<VmaId> {
        let orig_end = vmg.end;
        if vmg.flags.intersects(VmFlags::SPECIAL) {
            self.trace.log_merge(
                "new_range",
                vmg,
                MergeReason::NomergeSpecial,
                MergeReason::NomergeSpecial,
                false,
            );
            return None;
        }
        if vmg.prev.is_none() && vmg.next.is_none() {
            self.trace.log_merge("new_range", vmg, MergeReason::NoNeighbour, MergeReason::NoNeighbour, false);
            return None;
        }
        let (left, right) =
            if vmg.caller == MergeCaller::Mmap && !self.cfg.kernel.profile().mmap_merge_new_range {
                self.mmap_region_merge_checks(vmg)
            } else {
                let left = self.can_vma_merge_left(vmg);
                let right = if vmg.just_expand {
                    Err(MergeReason::NomergeJustExpand)
                } else {
                    self.can_vma_merge_right(vmg, left.is_ok())
                };
                (left, right)
            };
        let (log_start, log_end) = (vmg.start, vmg.end);
        if right.is_ok() {
            let next = vmg.next.expect("next");
            vmg.end = self.vm.vmas[next].end;
            vmg.target = Some(next);
        }
        if left.is_ok() {
            let prev = vmg.prev.expect("prev");
            vmg.start = self.vm.vmas[prev].start;
            vmg.target = Some(prev);
            vmg.pgoff = self.vm.vmas[prev].pgoff;
            if right.is_ok() && !can_merge_remove_vma(self, vmg.next.expect("next")) {
                vmg.end = orig_end;
            }
        }
        let lr = left.err().unwrap_or(MergeReason::MergeOk);
        let rr = right.err().unwrap_or(MergeReason::MergeOk);
        let logged = Vmg { start: log_start, end: log_end, ..vmg.clone() };
        let Some(_) = vmg.target else {
            self.trace.log_merge("new_range", &logged, lr, rr, false);
            return None;
        };
        self.vma_expand(vmg);
        self.trace.log_merge("new_range", &logged, lr, rr, true);
        vmg.target
    }

    /// `vma_expand`: grow the target over `[start, end)`, removing next when it is covered.
    pub fn vma_expand(&mut self, vmg: &mut Vmg) {
        let target = vmg.target.expect("target");
        let remove_next =
            vmg.next.is_some_and(|n| n != target && vmg.end.0 == self.vm.neighbour_range(vmg.mm, n).1);
        if remove_next {
            self.rmap.dup_anon_vma(&mut self.vm, target, vmg.next.expect("next"));
        }
        if let Some(src) = vmg.copied_from {
            self.rmap.dup_anon_vma(&mut self.vm, target, src);
        }
        // The sticky flags of the range and of an absorbed next survive in the target.
        let mut sticky = vmg.flags & VmFlags::STICKY;
        if remove_next {
            sticky |= self.vm.vmas[vmg.next.expect("next")].flags & VmFlags::STICKY;
        }
        self.vm.vmas[target].flags |= sticky;
        if remove_next {
            self.merge_store(target, vmg.start, vmg.end, vmg.pgoff, &[vmg.next.expect("next")]);
        } else {
            self.vma_set_range(target, vmg.start, vmg.end, vmg.pgoff);
        }
    }

    /// `vma_merge_existing_range`: the attributes of `[start, end)` ⊆ middle are changing;
    /// merge with prev and/or next where the result would be one VMA.
    pub fn vma_merge_existing_range(&mut self, vmg: &mut Vmg) -> Option<VmaId> {
        let middle = vmg.middle.expect("middle");
        let (mstart, mend, mpgoff) = {
            let m = &self.vm.vmas[middle];
            (m.start, m.end, m.pgoff)
        };
        let (start, end) = (vmg.start, vmg.end);
        let left_side = start == mstart;
        let right_side = end == mend;
        let (prev, next) = if left_side || right_side {
            self.vm.mms[vmg.mm].vma_neighbours(mstart, mend)
        } else {
            (None, None)
        };
        if left_side {
            vmg.prev = prev;
        }
        if vmg.flags.intersects(VmFlags::SPECIAL) {
            self.trace.log_merge(
                "existing_range",
                vmg,
                MergeReason::NomergeSpecial,
                MergeReason::NomergeSpecial,
                false,
            );
            return None;
        }
        if !left_side && !right_side {
            self.trace.log_merge(
                "existing_range",
                vmg,
                MergeReason::NoNeighbour,
                MergeReason::NoNeighbour,
                false,
            );
            return None;
        }
        let left = if left_side { self.can_vma_merge_left(vmg) } else { Err(MergeReason::NoNeighbour) };
        let merge_left = left.is_ok();
        let right = if right_side {
            vmg.next = next;
            self.can_vma_merge_right(vmg, merge_left)
        } else {
            Err(MergeReason::NoNeighbour)
        };
        let merge_right = right.is_ok();
        let (lr, rr) =
            (left.err().unwrap_or(MergeReason::MergeOk), right.err().unwrap_or(MergeReason::MergeOk));
        if !merge_left && !merge_right {
            self.trace.log_merge("existing_range", vmg, lr, rr, false);
            return None;
        }
        let remove_middle = left_side && right_side;
        if remove_middle && !can_merge_remove_vma(self, middle) {
            self.trace.log_merge(
                "existing_range",
                vmg,
                MergeReason::NomergeClose,
                MergeReason::NomergeClose,
                false,
            );
            return None;
        }
        let mut merge_both = merge_left && merge_right;
        if merge_both && !can_merge_remove_vma(self, vmg.next.expect("next")) {
            // Degrade to prev + middle.
            merge_both = false;
        }
        let logged = vmg.clone();
        // The sticky flags of every VMA taking part survive in the target.
        let mut sticky = vmg.flags & VmFlags::STICKY;
        if remove_middle {
            sticky |= self.vm.vmas[middle].flags & VmFlags::STICKY;
        }
        if merge_both {
            sticky |= self.vm.vmas[vmg.next.expect("next")].flags & VmFlags::STICKY;
        }
        // The policy's hook runs once the target has the anon_vma it keeps (dup_anon_vma: an
        // unfaulted prev takes next's or middle's), before middle goes or shrinks.
        if merge_both {
            let prev = vmg.prev.expect("prev");
            let next = vmg.next.expect("next");
            let (pstart, ppgoff) = (self.vm.vmas[prev].start, self.vm.vmas[prev].pgoff);
            let nend = self.vm.vmas[next].end;
            let src = if self.vm.vmas[next].anon_vma.is_some() { next } else { middle };
            self.rmap.dup_anon_vma(&mut self.vm, prev, src);
            self.policy_commit_merge(vmg.mm, start, end, middle, prev);
            self.merge_store(prev, pstart, nend, ppgoff, &[middle, next]);
            vmg.target = Some(prev);
        } else if merge_left {
            let prev = vmg.prev.expect("prev");
            let (pstart, ppgoff) = (self.vm.vmas[prev].start, self.vm.vmas[prev].pgoff);
            self.rmap.dup_anon_vma(&mut self.vm, prev, middle);
            self.policy_commit_merge(vmg.mm, start, end, middle, prev);
            if remove_middle {
                self.merge_store(prev, pstart, end, ppgoff, &[middle]);
            } else {
                // __adjust_middle_start
                self.vma_set_range(middle, end, mend, mpgoff.plus(mstart.pages_to(end)));
                self.vma_set_range(prev, pstart, end, ppgoff);
            }
            vmg.target = Some(prev);
        } else {
            let next = vmg.next.expect("next");
            let (nstart, nend, npgoff) = {
                let n = &self.vm.vmas[next];
                (n.start, n.end, n.pgoff)
            };
            let pglen = start.pages_to(end);
            self.rmap.dup_anon_vma(&mut self.vm, next, middle);
            self.policy_commit_merge(vmg.mm, start, end, middle, next);
            if remove_middle {
                self.merge_store(next, start, nend, npgoff.minus(pglen), &[middle]);
            } else {
                // __adjust_next_start: middle keeps [mstart, start), next grows down to start.
                self.vma_set_range(middle, mstart, start, mpgoff);
                self.vma_set_range(next, start, nend, npgoff.minus(start.pages_to(nstart)));
            }
            vmg.target = Some(next);
        }
        let target = vmg.target.expect("target");
        self.vm.vmas[target].flags |= sticky;
        self.trace.log_merge("existing_range", &logged, lr, rr, true);
        vmg.target
    }

    /// `vma_modify`: merge if possible, else split so that `[start, end)` is one VMA, which
    /// is returned for the caller to change. A failed second split keeps the first.
    pub fn vma_modify(&mut self, vmg: &mut Vmg) -> KResult<VmaId> {
        if let Some(v) = self.vma_merge_existing_range(vmg) {
            return Ok(v);
        }
        let vma = vmg.middle.expect("middle");
        if self.vm.vmas[vma].start < vmg.start {
            self.split_vma(vma, vmg.start, true)?;
        }
        if self.vm.vmas[vma].end > vmg.end {
            self.split_vma(vma, vmg.end, false)?;
        }
        Ok(vma)
    }

    /// `vma_modify_flags` (6.18 passes the flags by value) followed by the caller's
    /// `vm_flags_reset`: returns the VMA now covering `[start, end)` with `flags`.
    pub fn vma_modify_flags(
        &mut self,
        vma: VmaId,
        start: VirtAddr,
        end: VirtAddr,
        flags: VmFlags,
        caller: MergeCaller,
    ) -> KResult<VmaId> {
        let mut vmg = self.vm.vmg_from_vma(vma, start, end, caller);
        vmg.flags = flags;
        let v = self.vma_modify(&mut vmg)?;
        // vma_modify_flags hands back the flags with the merge's sticky ones.
        self.vm.vmas[v].flags = flags | (self.vm.vmas[v].flags & VmFlags::STICKY);
        Ok(v)
    }

    /// `vma_modify_flags_name` / `vma_modify_name` (madvise and PR_SET_VMA_ANON_NAME).
    pub fn vma_modify_flags_name(
        &mut self,
        vma: VmaId,
        start: VirtAddr,
        end: VirtAddr,
        flags: VmFlags,
        name: AnonName,
        caller: MergeCaller,
    ) -> KResult<VmaId> {
        let mut vmg = self.vm.vmg_from_vma(vma, start, end, caller);
        vmg.flags = flags;
        vmg.anon_name = name.clone();
        let v = self.vma_modify(&mut vmg)?;
        self.vm.vmas[v].flags = flags | (self.vm.vmas[v].flags & VmFlags::STICKY);
        self.vm.vmas[v].anon_name = name;
        Ok(v)
    }
}

impl crate::stats::Trace {
    fn log_merge(
        &mut self,
        kind: &'static str,
        vmg: &Vmg,
        prev: MergeReason,
        next: MergeReason,
        merged: bool,
    ) {
        self.stats.merges_attempted += 1;
        if merged {
            self.stats.merges_done += 1;
        } else {
            for r in [prev, next] {
                if r != MergeReason::MergeOk && r != MergeReason::NoNeighbour {
                    *self.stats.merge_refused.entry(r).or_default() += 1;
                }
            }
        }
        if let Some(log) = &mut self.merge_log {
            log.push(MergeEvent {
                kind,
                caller: vmg.caller,
                start: vmg.start.0,
                end: vmg.end.0,
                prev,
                next,
                merged,
            });
        }
    }
}

impl crate::mm::Vm {
    /// `VMG_VMA_STATE(vmg, vmi, prev, vma, start, end)`.
    pub fn vmg_from_vma(&self, vma: VmaId, start: VirtAddr, end: VirtAddr, caller: MergeCaller) -> Vmg {
        let v = &self.vmas[vma];
        Vmg {
            mm: v.mm,
            prev: None,
            middle: Some(vma),
            next: None,
            target: None,
            start,
            end,
            // Unsigned arithmetic as in C: copy_vma states a range outside the VMA (the
            // destination of a move, possibly below it) and then sets its own pgoff.
            pgoff: v.pgoff.plus(start.0.wrapping_sub(v.start.0) >> PAGE_SHIFT),
            flags: v.flags,
            file: v.file,
            anon_vma: v.anon_vma,
            anon_name: v.anon_name.clone(),
            uffd: v.uffd,
            copied_from: None,
            just_expand: false,
            caller,
        }
    }

    /// `is_mergeable_vma(vmg, merge_next)`: attribute equality with the neighbour.
    fn is_mergeable_vma(&self, vmg: &Vmg, merge_next: bool) -> Result<(), MergeReason> {
        let v = &self.vmas[if merge_next { vmg.next } else { vmg.prev }.expect("neighbour")];
        if !((v.flags ^ vmg.flags) & !VmFlags::IGNORE_MERGE).is_empty() {
            return Err(MergeReason::NomergeFlags);
        }
        if v.file != vmg.file {
            return Err(MergeReason::NomergeFile);
        }
        // is_mergeable_vm_userfaultfd_ctx
        if v.uffd != vmg.uffd {
            return Err(MergeReason::NomergeUffdCtx);
        }
        if v.anon_name.as_deref() != vmg.anon_name.as_deref() {
            return Err(MergeReason::NomergeAnonName);
        }
        Ok(())
    }
}

impl crate::rmap::Rmap {
    /// `dup_anon_vma(dst, src)`: an unfaulted VMA that absorbs a faulted one takes its
    /// anon_vma and chains.
    fn dup_anon_vma(&mut self, vm: &mut crate::mm::Vm, dst: VmaId, src: VmaId) {
        if let Some(av) = vm.vmas[src].anon_vma
            && vm.vmas[dst].anon_vma.is_none()
        {
            vm.vmas[dst].anon_vma = Some(av);
            self.anon_vma_clone(vm, dst, src);
        }
    }
}
