//! mremap(2) (mm/mremap.c, Linux 6.18): `do_mremap`, `check_mremap_params`,
//! `check_prep_vma`, `remap_move` (the 6.17 multi-VMA move), `mremap_at`, `mremap_to`,
//! `expand_vma_in_place`, `move_vma`, `copy_vma_and_data`, `copy_vma` and, the place where
//! page tables move, `move_page_tables` with PMD realignment (`try_realign_addr`,
//! `can_align_down`), `move_normal_pmd`, `move_huge_pmd` and `move_ptes`.

use crate::abi::{
    MAP_FIXED, MAP_SHARED, MREMAP_DONTUNMAP, MREMAP_FIXED, MREMAP_MAYMOVE, MREMAP_MUST_RELOCATE_ANON,
    MREMAP_RELOCATE_ANON,
};
use crate::designs::Design;
use crate::errno::{Errno, KResult};
use crate::merge::MergeCaller;
use crate::mm::{MmId, System};
use crate::pagetable::{Pmd, Pte, PteFlags, pmd_index};
use crate::types::{PAGE_SHIFT, PAGE_SIZE, PMD_SIZE, PgOff, Pid, TASK_SIZE, VirtAddr, page_align};
use crate::vma::{VmFlags, VmaId};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum RemapType {
    NoResize,
    Shrink,
    Expand,
}

/// `struct vma_remap_struct`.
#[derive(Clone, Debug)]
pub(crate) struct Vrm {
    pub(crate) mm: MmId,
    pub(crate) addr: u64,
    pub(crate) old_len: u64,
    pub(crate) new_len: u64,
    pub(crate) flags: u64,
    pub(crate) new_addr: u64,
    pub(crate) vma: Option<VmaId>,
    /// The end of the whole source range of a multi-VMA move (`remap_move`), 0 otherwise:
    /// the VMAs between the current piece and it are still to move.
    pub(crate) src_end: u64,
    delta: u64,
    remap_type: RemapType,
}

impl Vrm {
    fn implies_new_addr(&self) -> bool {
        self.flags & (MREMAP_FIXED | MREMAP_DONTUNMAP) != 0
    }
    fn move_only(&self) -> bool {
        self.flags & MREMAP_FIXED != 0 && self.old_len == self.new_len
    }
    fn set_delta(&mut self) {
        self.delta = self.old_len.abs_diff(self.new_len);
        self.remap_type = if self.delta == 0 {
            RemapType::NoResize
        } else if self.old_len > self.new_len {
            RemapType::Shrink
        } else {
            RemapType::Expand
        };
    }
    fn will_map_new(&self) -> bool {
        self.remap_type == RemapType::Expand || self.implies_new_addr()
    }
}

impl System {
    /// mremap(2): `do_mremap`.
    ///
    /// Returns the new address. A move (`MREMAP_MAYMOVE | MREMAP_FIXED`, or growing where
    /// there is no room) moves the page tables, not the pages; what it does to the moved
    /// folios' `index` depends on [`System::policy`] (see the crate documentation).
    /// `MREMAP_RELOCATE_ANON` and `MREMAP_MUST_RELOCATE_ANON` exist only under the 2025
    /// series' policies (`Relocate`, `RelocateAll`) and are `EINVAL` otherwise.
    ///
    /// ```
    /// use anonmm_model::api::prelude::*;
    ///
    /// let mut sys = System::default();
    /// sys.spawn(Pid(1))?;
    /// let fixed = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED;
    /// let a = sys.sys_mmap(Pid(1), 0x2000_0000_0000, 2 * PAGE_SIZE, PROT_READ | PROT_WRITE, fixed, -1, 0)?;
    /// sys.touch(Pid(1), a, 2 * PAGE_SIZE, true, &|addr| addr)?.expect("no signal");
    /// let to = 0x2000_0010_0000;
    /// assert_eq!(sys.sys_mremap(Pid(1), a, 2 * PAGE_SIZE, 2 * PAGE_SIZE, MREMAP_MAYMOVE | MREMAP_FIXED, to)?, to);
    /// assert_eq!(sys.maps(Pid(1)), ["200000100000-200000102000 rw-p 00000000 00:00 0 "]);
    /// assert_eq!(sys.page_at(Pid(1), to + PAGE_SIZE)?.map(|p| p.tag), Some(a + PAGE_SIZE));
    /// assert_eq!(sys.trace.stats.ptes_moved, 2);
    /// // Under the kernel policy the series' flag does not exist.
    /// let relocate = MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_RELOCATE_ANON;
    /// assert_eq!(sys.sys_mremap(Pid(1), to, PAGE_SIZE, PAGE_SIZE, relocate, a), Err(Errno::EINVAL));
    /// # Ok::<(), Errno>(())
    /// ```
    pub fn sys_mremap(
        &mut self,
        pid: Pid,
        addr: u64,
        old_len: u64,
        new_len: u64,
        flags: u64,
        new_addr: u64,
    ) -> KResult<u64> {
        let mm = self.vm.mm_of(pid)?;
        let old_len = page_align(old_len).ok_or(Errno::EINVAL)?;
        let new_len = page_align(new_len).ok_or(Errno::EINVAL)?;
        let mut vrm = Vrm {
            mm,
            addr,
            old_len,
            new_len,
            flags,
            new_addr,
            vma: None,
            src_end: 0,
            delta: 0,
            remap_type: RemapType::NoResize,
        };
        self.check_mremap_params(&vrm)?;
        let profile = self.cfg.kernel.profile();
        if vrm.move_only() && profile.mremap_multi_vma {
            return self.remap_move(&mut vrm);
        }
        vrm.vma = self.vm.mms[mm].vma_lookup(VirtAddr(addr));
        let res = if vrm.implies_new_addr() && !profile.mremap_checks_before_unmap {
            self.mremap_to_unmap_first(&mut vrm)?
        } else {
            self.vm.check_prep_vma(&mut vrm)?;
            if vrm.implies_new_addr() { self.mremap_to(&mut vrm) } else { self.mremap_at(&mut vrm) }?
        };
        // do_mremap: a grown VM_LOCKED mapping (vrm->mlocked) has its new part populated
        // (mm_populate), in place or moved.
        if new_len > old_len
            && self.vm.mms[mm]
                .vma_lookup(VirtAddr(res))
                .is_some_and(|v| self.vm.vmas[v].flags.contains(VmFlags::LOCKED))
        {
            self.populate(mm, VirtAddr(res + old_len), VirtAddr(res + new_len));
        }
        Ok(res)
    }

    /// `check_mremap_params`.
    fn check_mremap_params(&self, vrm: &Vrm) -> KResult<()> {
        let mut known = MREMAP_FIXED | MREMAP_MAYMOVE | MREMAP_DONTUNMAP;
        // Without flag 8 or 16 the answer changes nothing.
        let relocate_flags = vrm.flags & (MREMAP_RELOCATE_ANON | MREMAP_MUST_RELOCATE_ANON) != 0;
        self.probe("mremap_relocate_flags", |p| relocate_flags && p.mremap_relocate_flags());
        if self.policy.mremap_relocate_flags() {
            // The 2025 series: both flags need MREMAP_MAYMOVE.
            known |= MREMAP_RELOCATE_ANON | MREMAP_MUST_RELOCATE_ANON;
            if vrm.flags & (MREMAP_RELOCATE_ANON | MREMAP_MUST_RELOCATE_ANON) != 0
                && vrm.flags & MREMAP_MAYMOVE == 0
            {
                return Err(Errno::EINVAL);
            }
        }
        if vrm.flags & !known != 0 {
            return Err(Errno::EINVAL);
        }
        if !vrm.addr.is_multiple_of(PAGE_SIZE) {
            return Err(Errno::EINVAL);
        }
        if vrm.new_len == 0 || vrm.new_len > TASK_SIZE {
            return Err(Errno::EINVAL);
        }
        if !vrm.implies_new_addr() {
            return Ok(());
        }
        let early = self.cfg.kernel.profile().mremap_checks_before_unmap;
        if early && (vrm.new_addr > TASK_SIZE - vrm.new_len || !vrm.new_addr.is_multiple_of(PAGE_SIZE)) {
            return Err(Errno::EINVAL);
        }
        if vrm.flags & MREMAP_MAYMOVE == 0 {
            return Err(Errno::EINVAL);
        }
        if vrm.flags & MREMAP_DONTUNMAP != 0 && vrm.old_len != vrm.new_len {
            return Err(Errno::EINVAL);
        }
        if early { self.check_mremap_new_addr(vrm) } else { Ok(()) }
    }

    /// The destination's checks: in range, not overlapping the source, room in the map
    /// count. Before 6.17 they are `mremap_to`'s, after the source VMA was looked up.
    fn check_mremap_new_addr(&self, vrm: &Vrm) -> KResult<()> {
        if vrm.new_addr > TASK_SIZE - vrm.new_len || !vrm.new_addr.is_multiple_of(PAGE_SIZE) {
            return Err(Errno::EINVAL);
        }
        let (so, eo) = (vrm.addr, vrm.addr.saturating_add(vrm.old_len));
        let (sn, en) = (vrm.new_addr, vrm.new_addr + vrm.new_len);
        if eo > sn && en > so {
            return Err(Errno::EINVAL);
        }
        // Room for both VMAs to split in three before anything is unmapped.
        if self.vm.mms[vrm.mm].map_count() + 2 >= self.cfg.max_map_count - 3 {
            return Err(Errno::ENOMEM);
        }
        Ok(())
    }

    /// `remap_move` (6.17+): move every VMA in `[addr, addr + old_len)`, keeping the gaps.
    /// Not atomic: portions moved before an error stay moved.
    fn remap_move(&mut self, vrm: &mut Vrm) -> KResult<u64> {
        let mm = vrm.mm;
        let start = vrm.addr;
        let end = vrm.addr + vrm.old_len;
        let new_addr = vrm.new_addr;
        let mut target = new_addr;
        let mut res: KResult<u64> = Err(Errno::EFAULT);
        let mut seen = false;
        let mut last_end = 0;
        let mut cursor = start;
        // for_each_vma_range: vma_find stops at `end`.
        while cursor < end {
            let Some(vma) =
                self.vm.mms[mm].find_vma(VirtAddr(cursor)).filter(|&v| self.vm.vmas[v].start.0 < end)
            else {
                break;
            };
            let (vstart, vend) = (self.vm.vmas[vma].start.0, self.vm.vmas[vma].end.0);
            let addr = vstart.max(start);
            let len = end.min(vend) - addr;
            if !seen && start < vstart {
                return Err(Errno::EFAULT);
            }
            let offset = if seen { vstart - last_end } else { 0 };
            last_end = vend;
            vrm.vma = Some(vma);
            vrm.addr = addr;
            vrm.new_addr = target + offset;
            vrm.old_len = len;
            vrm.new_len = len;
            vrm.src_end = end;
            // vma_multi_allowed: anonymous and ordinary file VMAs may move several at once,
            // but not one registered with a userfaultfd (its notification would have to drop
            // the mmap lock): it must be the whole move.
            if self.vm.vmas[vma].flags.intersects(VmFlags::UFFD_FLAGS) && (seen || vend < end) {
                return Err(Errno::EFAULT);
            }
            self.vm.check_prep_vma(vrm)?;
            let r = self.mremap_to(vrm)?;
            if !seen {
                res = Ok(r);
            }
            seen = true;
            target = r + len;
            // The iterator resumes after the VMA as it was found (mas_pause at vm_end).
            cursor = vend;
        }
        res
    }

    /// `mremap_at`: no new address.
    fn mremap_at(&mut self, vrm: &mut Vrm) -> KResult<u64> {
        match vrm.remap_type {
            RemapType::NoResize => Ok(vrm.addr),
            RemapType::Shrink => {
                self.do_munmap(vrm.mm, vrm.addr + vrm.new_len, vrm.delta)?;
                Ok(vrm.addr)
            }
            RemapType::Expand => self.expand_vma(vrm),
        }
    }

    /// `expand_vma`: in place when the range reaches the VMA's end and the space after it is
    /// free, else move (with MREMAP_MAYMOVE).
    fn expand_vma(&mut self, vrm: &mut Vrm) -> KResult<u64> {
        let vma = vrm.vma.expect("vma");
        let (vstart, vend) = (self.vm.vmas[vma].start.0, self.vm.vmas[vma].end.0);
        if vend - vrm.addr == vrm.old_len && self.vm.vma_expandable(vrm.mm, vstart, vend, vrm.delta) {
            let mut vmg = self.vm.vmg_from_vma(
                vma,
                VirtAddr(vend),
                VirtAddr(vend + vrm.delta),
                MergeCaller::MremapExpand,
            );
            vmg.prev = Some(vma);
            vmg.next = self.vm.mms[vrm.mm]
                .vma_at_start(VirtAddr(vend + vrm.delta))
                .or_else(|| self.vm.mms[vrm.mm].vma_from(VirtAddr(vend)));
            vmg.middle = None;
            // vma_merge_extend
            return match self.vma_merge_new_range(&mut vmg) {
                Some(_) => {
                    self.vm.mms[vrm.mm].total_vm += vrm.delta >> PAGE_SHIFT;
                    Ok(vrm.addr)
                }
                None => Err(Errno::ENOMEM),
            };
        }
        if vrm.flags & MREMAP_MAYMOVE == 0 {
            return Err(Errno::ENOMEM);
        }
        self.vrm_set_new_addr(vrm)?;
        self.move_vma(vrm)
    }

    /// `vrm_set_new_addr`: where the move goes (MAP_FIXED with MREMAP_FIXED, a hint with
    /// only DONTUNMAP, anywhere otherwise).
    fn vrm_set_new_addr(&mut self, vrm: &mut Vrm) -> KResult<()> {
        let vma = vrm.vma.expect("vma");
        let v = &self.vm.vmas[vma];
        let pgoff = v.pgoff.0 + ((vrm.addr - v.start.0) >> PAGE_SHIFT);
        let hint = if vrm.implies_new_addr() { vrm.new_addr } else { 0 };
        let mut map_flags = 0;
        if vrm.flags & MREMAP_FIXED != 0 {
            map_flags |= MAP_FIXED;
        }
        if v.flags.contains(VmFlags::MAYSHARE) {
            map_flags |= MAP_SHARED;
        }
        vrm.new_addr = self.get_unmapped_area(vrm.mm, v.file, hint, vrm.new_len, pgoff, map_flags)?;
        Ok(())
    }

    /// `mremap_to` before 6.17: the destination (MREMAP_FIXED) and a shrink's tail are
    /// unmapped first, and only then does `vma_to_resize` check the source, so a call it
    /// refuses (EFAULT, EINVAL) has already unmapped them.
    fn mremap_to_unmap_first(&mut self, vrm: &mut Vrm) -> KResult<u64> {
        let mm = vrm.mm;
        if vrm.vma.is_none() {
            return Err(Errno::EFAULT);
        }
        self.check_mremap_new_addr(vrm)?;
        if vrm.flags & MREMAP_FIXED != 0 {
            self.do_munmap(mm, vrm.new_addr, vrm.new_len)?;
        }
        if vrm.old_len > vrm.new_len {
            self.do_munmap(mm, vrm.addr + vrm.new_len, vrm.old_len - vrm.new_len)?;
            vrm.old_len = vrm.new_len;
        }
        // vma_to_resize
        vrm.vma = self.vm.mms[mm].vma_lookup(VirtAddr(vrm.addr));
        self.vm.check_prep_vma(vrm)?;
        self.vrm_set_new_addr(vrm)?;
        self.move_vma(vrm)
    }

    /// `mremap_to`: FIXED and/or DONTUNMAP.
    fn mremap_to(&mut self, vrm: &mut Vrm) -> KResult<u64> {
        let mm = vrm.mm;
        if vrm.flags & MREMAP_FIXED != 0 {
            self.do_munmap(mm, vrm.new_addr, vrm.new_len)?;
            vrm.vma = self.vm.mms[mm].vma_lookup(VirtAddr(vrm.addr));
            if vrm.vma.is_none() {
                return Err(Errno::EFAULT);
            }
        }
        if vrm.remap_type == RemapType::Shrink {
            self.do_munmap(mm, vrm.addr + vrm.new_len, vrm.delta)?;
            vrm.vma = self.vm.mms[mm].vma_lookup(VirtAddr(vrm.addr));
            if vrm.vma.is_none() {
                return Err(Errno::EFAULT);
            }
            vrm.old_len = vrm.new_len;
        }
        self.vrm_set_new_addr(vrm)?;
        self.move_vma(vrm)
    }

    /// `move_vma`: copy the VMA to the new place, move its page tables, then unmap the
    /// source (or, with DONTUNMAP, leave it empty).
    fn move_vma(&mut self, vrm: &mut Vrm) -> KResult<u64> {
        let mm = vrm.mm;
        // prep_move_vma: room for the unmap to split in three.
        if self.vm.mms[mm].map_count() >= self.cfg.max_map_count - 3 {
            return Err(Errno::ENOMEM);
        }
        let mut vma = vrm.vma.expect("vma");
        // Stable 6.1/6.12 ("mm/mremap: fix locked_vm leak by splitting VMA for
        // MREMAP_DONTUNMAP"): a VM_LOCKED source is split to the moved range before the copy
        // (Profile::dontunmap_unlocks_whole_vma).
        if vrm.flags & MREMAP_DONTUNMAP != 0
            && !self.cfg.kernel.profile().dontunmap_unlocks_whole_vma
            && self.vm.vmas[vma].flags.contains(VmFlags::LOCKED)
        {
            let end = vrm.addr + vrm.old_len;
            if self.vm.vmas[vma].start.0 < vrm.addr {
                vma = self.split_vma(vma, VirtAddr(vrm.addr), false)?;
            }
            if end < self.vm.vmas[vma].end.0 {
                self.split_vma(vma, VirtAddr(end), false)?;
            }
            vrm.vma = Some(vma);
        }
        let internal_pgoff = (vrm.addr - self.vm.vmas[vma].start.0) >> PAGE_SHIFT;
        let new_pgoff = self.vm.vmas[vma].pgoff.plus(internal_pgoff);
        // The design may relocate the folios (its hooks `should_relocate_anon` and
        // `copy_vma_relocating`, crate::designs); under `kernel` it never does.
        let plan = self.reloc_plan(vrm, vma)?;
        let mut relocated = false;
        let mut new_vma = None;
        if let Some(plan) = plan {
            match self.copy_vma_relocating(&mut vma, vrm, new_pgoff) {
                Ok((nv, r)) => {
                    new_vma = Some(nv);
                    relocated = r;
                }
                Err(_) if plan.must => return Err(Errno::EFAULT),
                Err(_) => {}
            }
            vrm.vma = Some(vma);
        }
        let mut new_vma = match new_vma {
            Some(nv) => nv,
            None => match self.copy_vma(
                &mut vma,
                VirtAddr(vrm.new_addr),
                vrm.new_len,
                new_pgoff,
                vrm.flags & MREMAP_DONTUNMAP != 0,
            ) {
                Some(nv) => nv,
                None => return Err(Errno::ENOMEM),
            },
        };
        vrm.vma = Some(vma);
        self.move_page_tables(mm, vma, new_vma, VirtAddr(vrm.addr), VirtAddr(vrm.new_addr), vrm.old_len);
        if relocated {
            self.relocated_merge_retry(new_vma, VirtAddr(vrm.new_addr), vrm.new_len);
            // The merge may have absorbed the new VMA, or even the source VMA (the source's
            // remainder can be the new VMA's neighbour): look both up again.
            new_vma = self.vm.mms[mm].vma_lookup(VirtAddr(vrm.new_addr)).expect("moved range is mapped");
            vrm.vma = self.vm.mms[mm].vma_lookup(VirtAddr(vrm.addr));
            if vrm.vma.is_none() {
                vrm.vma = Some(new_vma);
            }
        }
        // mremap_userfaultfd_prep: without UFFD_FEATURE_EVENT_REMAP the moved VMA (possibly a
        // neighbour it merged into) drops its registration.
        self.vm.userfaultfd_reset_ctx(new_vma);
        self.vm.mms[mm].total_vm += vrm.new_len >> PAGE_SHIFT;
        if vrm.flags & MREMAP_DONTUNMAP != 0 {
            self.dontunmap_complete(vrm, new_vma);
        } else {
            self.unmap_source_vma(vrm);
        }
        self.probe("move_vma_done", |p| p.move_vma_done_acts(self, mm, VirtAddr(vrm.new_addr)));
        self.policy.move_vma_done(self, mm, VirtAddr(vrm.new_addr));
        Ok(vrm.new_addr)
    }

    /// `dontunmap_complete`: the old VMA stays, unlocked (6.18 keeps VM_ACCOUNT, unlike
    /// 6.16; the oracle showed it); if it moved whole it loses its anon_vma (the next fault
    /// zero-fills).
    fn dontunmap_complete(&mut self, vrm: &Vrm, new_vma: VmaId) {
        let vma = vrm.vma.expect("vma");
        // 6.1 and 6.12: move_vma split a VM_LOCKED source to the moved range before the copy,
        // so only that piece is unlocked here, and it is the whole old VMA, whose anon_vmas go
        // (--internal, oracle fuzz --kernel 6.1 seed 310198).
        self.vm.vmas[vma].flags -= VmFlags::LOCKED_MASK;
        let (s, e) = (self.vm.vmas[vma].start.0, self.vm.vmas[vma].end.0);
        if new_vma != vma && vrm.addr == s && vrm.addr + vrm.old_len == e {
            self.rmap.unlink_anon_vmas(&mut self.vm, &mut self.trace, vma);
            // Stable 6.1/6.12 (Profile::dontunmap_keeps_source_pgoff).
            if self.vm.vmas[vma].is_anonymous() && !self.cfg.kernel.profile().dontunmap_keeps_source_pgoff {
                self.vm.vmas[vma].pgoff = PgOff(s >> PAGE_SHIFT);
            }
        }
    }

    /// `unmap_source_vma`: unmap the old range without unaccounting it; the pieces that
    /// remain get VM_ACCOUNT back.
    fn unmap_source_vma(&mut self, vrm: &Vrm) {
        let mm = vrm.mm;
        let vma = vrm.vma.expect("vma");
        let accountable =
            self.vm.vmas[vma].flags.contains(VmFlags::ACCOUNT) && vrm.flags & MREMAP_DONTUNMAP == 0;
        let (vstart, vend) = (self.vm.vmas[vma].start.0, self.vm.vmas[vma].end.0);
        if accountable {
            self.vm.vmas[vma].flags -= VmFlags::ACCOUNT;
        }
        if self.do_munmap(mm, vrm.addr, vrm.old_len).is_err() {
            return;
        }
        if accountable {
            let end = vrm.addr + vrm.old_len;
            if vstart < vrm.addr
                && let Some(p) = self.vm.mms[mm].vma_before(VirtAddr(vrm.addr))
            {
                self.vm.vmas[p].flags |= VmFlags::ACCOUNT;
            }
            if vend > end
                && let Some(n) = self.vm.mms[mm].vma_from(VirtAddr(end))
            {
                self.vm.vmas[n].flags |= VmFlags::ACCOUNT;
            }
        }
    }

    /// `copy_vma` (mm/vma.c): the destination VMA, merged with a neighbour if possible
    /// (`vma_merge_copied_range`), else a copy. An unfaulted anonymous source is
    /// re-linearised to the new address. May replace `*vmap` when the source merged into
    /// the destination (only possible when unfaulted).
    /// With `dontunmap` (MREMAP_DONTUNMAP), Debian's 6.1 and 6.12 (a 2026 stable fix) never
    /// merge an unfaulted anonymous copy into the source VMA it is copied from (see
    /// [`Profile::dontunmap_merges_source`](crate::kernel::Profile::dontunmap_merges_source)).
    pub(crate) fn copy_vma(
        &mut self,
        vmap: &mut VmaId,
        addr: VirtAddr,
        len: u64,
        pgoff: PgOff,
        dontunmap: bool,
    ) -> Option<VmaId> {
        let vma = *vmap;
        let mut pgoff = pgoff;
        let unfaulted_anon = self.vm.vmas[vma].is_anonymous() && self.vm.vmas[vma].anon_vma.is_none();
        if unfaulted_anon {
            pgoff = PgOff(addr.0 >> PAGE_SHIFT);
        }
        let mut vmg = self.vm.copied_range_vmg(vma, addr, len, pgoff, MergeCaller::MremapMove)?;
        let profile = self.cfg.kernel.profile();
        // Stable 6.12 ("mm/vma: avoid broken uffd merge on mremap"): a copy whose userfaultfd
        // registration mremap_userfaultfd_prep will drop is not merged
        // (Profile::uffd_copy_merges).
        if !profile.uffd_copy_merges && self.vm.vmas[vma].uffd.is_some() {
            return Some(self.copy_vma_new(vma, addr, len, pgoff, false));
        }
        // Stable 6.1 and 6.12 ("mm/mremap: fix locked_vm leak from MREMAP_DONTUNMAP
        // self-merge"): with DONTUNMAP an unfaulted anonymous copy never merges into its
        // source; 6.12 drops the source as neighbour, 6.1 does not merge at all when the copy
        // touches it (Profile::dontunmap_merges_source, dontunmap_copy_merges_other_side).
        if dontunmap && unfaulted_anon && !profile.dontunmap_merges_source {
            let source_prev = vmg.prev == Some(vma) && self.vm.vmas[vma].end == addr;
            let source_next = vmg.next == Some(vma) && self.vm.vmas[vma].start == addr.plus(len);
            if !profile.dontunmap_copy_merges_other_side && (source_prev || source_next) {
                return Some(self.copy_vma_new(vma, addr, len, pgoff, false));
            }
            if source_prev {
                vmg.prev = None;
            }
            if source_next {
                vmg.next = None;
            }
        }
        if let Some(nv) = self.copy_vma_merge(vmap, &mut vmg) {
            return Some(nv);
        }
        Some(self.copy_vma_new(vma, addr, len, pgoff, false))
    }

    /// `copy_vma`'s merge of the copied range `vmg` into a neighbour. The range can fit both
    /// neighbours when they are pieces of the source's own frame (the destination inside the
    /// source's old extent): then the source, as `next`, merges away into `prev`, and
    /// `*vmap` follows it.
    pub(crate) fn copy_vma_merge(&mut self, vmap: &mut VmaId, vmg: &mut crate::merge::Vmg) -> Option<VmaId> {
        let vma_start = self.vm.vmas[*vmap].start;
        let nv = self.vma_merge_new_range(vmg)?;
        let n = &self.vm.vmas[nv];
        if vma_start >= n.start && vma_start < n.end {
            *vmap = nv;
        }
        Some(nv)
    }

    /// `copy_vma`'s new VMA: `vma` copied to `[addr, addr + len)` at `pgoff`, linked to
    /// `vma`'s anon_vmas (`anon_vma_clone`); with `relocate_anon` (the 2025 series), to none
    /// (`__anon_vma_prepare` follows).
    pub(crate) fn copy_vma_new(
        &mut self,
        vma: VmaId,
        addr: VirtAddr,
        len: u64,
        pgoff: PgOff,
        relocate_anon: bool,
    ) -> VmaId {
        let mut new = self.vm.vmas[vma].clone();
        new.chain = crate::vma::VmaChain::new();
        new.start = addr;
        new.end = addr.plus(len);
        new.pgoff = pgoff;
        if relocate_anon {
            new.anon_vma = None;
        }
        if let Some(f) = new.file {
            self.fs.files[f].refs += 1;
        }
        let nv = self.vm.vma_link(new);
        if !relocate_anon {
            self.rmap.anon_vma_clone(&mut self.vm, nv, vma);
        }
        nv
    }

    /// `move_page_tables`: move `len` bytes of page tables from `old_addr` to `new_addr`,
    /// realigning both down to a PMD boundary when that lets whole PTE tables move.
    /// Folios keep their `index` and `mapping`. A VMA registered with userfaultfd without
    /// `UFFD_FEATURE_EVENT_REMAP` (every registration the executor makes) never moves a
    /// whole PTE table: `move_normal_pmd` refuses (`vma_has_uffd_without_event_remap`,
    /// 0cef0bb836e3 "mm: clear uffd-wp PTE/PMD state on mremap()", 6.13, in 6.1.y and
    /// 6.12.y), so the PTEs move one by one and the source keeps its empty table.
    fn move_page_tables(
        &mut self,
        mm: MmId,
        old: VmaId,
        new: VmaId,
        old_addr: VirtAddr,
        new_addr: VirtAddr,
        len: u64,
    ) {
        if len == 0 {
            return;
        }
        let old_end = old_addr.plus(len);
        let (mut oa, mut na) = (old_addr, new_addr);
        // try_realign_addr
        let off = old_addr.0 & (PMD_SIZE - 1);
        if len >= PMD_SIZE - off
            && off != 0
            && off == new_addr.0 & (PMD_SIZE - 1)
            && self.vm.can_align_down(mm, old, old_addr)
            && self.vm.can_align_down(mm, new, new_addr)
        {
            oa = old_addr.pmd_down();
            na = new_addr.pmd_down();
        }
        let uffd_supports_move = self.vm.vmas[old].uffd.is_none() && self.vm.vmas[new].uffd.is_none();
        while oa < old_end {
            let extent = (PMD_SIZE - (oa.0 & (PMD_SIZE - 1)))
                .min(old_end.0 - oa.0)
                .min(PMD_SIZE - (na.0 & (PMD_SIZE - 1)));
            let okey = pmd_index(oa);
            match self.vm.mms[mm].pt.pmds.get(&okey) {
                None => {}
                Some(Pmd::Huge { .. } | Pmd::Migration { .. }) => {
                    if extent == PMD_SIZE && !self.vm.mms[mm].pt.pmds.contains_key(&pmd_index(na)) {
                        // move_huge_pmd (a PMD migration entry moves as it is)
                        let e = self.vm.mms[mm].pt.pmds.remove(&okey).expect("pmd");
                        self.vm.mms[mm].pt.set_pmd(pmd_index(na), e);
                        self.trace.stats.pmds_moved += 1;
                    } else {
                        self.vm.split_huge_pmd(&mut self.mem, &mut self.trace, mm, oa);
                        self.vm.mms[mm].pt.alloc_table(na);
                        self.vm.move_ptes(&mut self.trace, mm, oa, na, extent);
                    }
                }
                Some(Pmd::Table(_)) => {
                    if extent == PMD_SIZE
                        && uffd_supports_move
                        && !self.vm.mms[mm].pt.pmds.contains_key(&pmd_index(na))
                    {
                        // move_normal_pmd: the whole PTE table moves.
                        let e = self.vm.mms[mm].pt.pmds.remove(&okey).expect("pmd");
                        if let Pmd::Table(t) = &e {
                            self.trace.stats.ptes_moved += t.used as u64;
                        }
                        self.vm.mms[mm].pt.set_pmd(pmd_index(na), e);
                        self.trace.stats.pmds_moved += 1;
                    } else {
                        // pte_alloc at the destination happens before move_ptes, even
                        // when no PTE lands there.
                        self.vm.mms[mm].pt.alloc_table(na);
                        self.vm.move_ptes(&mut self.trace, mm, oa, na, extent);
                    }
                }
            }
            oa = oa.plus(extent);
            na = na.plus(extent);
        }
    }
}

impl crate::mm::Vm {
    /// `check_prep_vma`.
    fn check_prep_vma(&self, vrm: &mut Vrm) -> KResult<()> {
        let Some(vma) = vrm.vma else { return Err(Errno::EFAULT) };
        vrm.set_delta();
        if !vrm.implies_new_addr() {
            vrm.new_addr = vrm.addr;
        }
        if !vrm.will_map_new() {
            return Ok(());
        }
        let v = &self.vmas[vma];
        let mut old_len = vrm.old_len;
        if old_len == 0 && !v.flags.intersects(VmFlags::SHARED | VmFlags::MAYSHARE) {
            return Err(Errno::EINVAL);
        }
        if vrm.flags & MREMAP_DONTUNMAP != 0 && v.flags.intersects(VmFlags::DONTEXPAND | VmFlags::PFNMAP) {
            return Err(Errno::EINVAL);
        }
        if vrm.remap_type == RemapType::Shrink {
            old_len = vrm.new_len;
        }
        if old_len > v.end.0 - vrm.addr {
            return Err(Errno::EFAULT);
        }
        if vrm.new_len == old_len {
            return Ok(());
        }
        let pgoff = v.pgoff.0 + ((vrm.addr - v.start.0) >> PAGE_SHIFT);
        if pgoff.checked_add(vrm.new_len >> PAGE_SHIFT).is_none() {
            return Err(Errno::EINVAL);
        }
        if v.flags.intersects(VmFlags::DONTEXPAND | VmFlags::PFNMAP) {
            return Err(Errno::EFAULT);
        }
        Ok(())
    }

    /// `vma_expandable`.
    fn vma_expandable(&self, mm: MmId, vstart: u64, vend: u64, delta: u64) -> bool {
        let Some(end) = vend.checked_add(delta) else { return false };
        if self.mms[mm].intersects(VirtAddr(vend), VirtAddr(end)) {
            return false;
        }
        end - vstart <= TASK_SIZE && vstart <= TASK_SIZE - (end - vstart)
    }

    /// `can_align_down`: the range starts its VMA and nothing lies between the PMD
    /// boundary below and the VMA.
    fn can_align_down(&self, mm: MmId, vma: VmaId, addr: VirtAddr) -> bool {
        let v = &self.vmas[vma];
        if v.start != addr {
            return false;
        }
        let down = addr.pmd_down();
        !self.mms[mm].intersects(down, v.start)
    }

    /// The merge state `copy_vma` builds for `[addr, addr + len)` at `pgoff`, copied from
    /// `vma`, with its neighbours; None when the range is not free.
    pub(crate) fn copied_range_vmg(
        &self,
        vma: VmaId,
        addr: VirtAddr,
        len: u64,
        pgoff: PgOff,
        caller: MergeCaller,
    ) -> Option<crate::merge::Vmg> {
        let mm = self.vmas[vma].mm;
        let end = addr.plus(len);
        // find_vma_intersection and the neighbours, from one search.
        let (prev, next) = self.mms[mm].vmas_around(addr);
        if prev.is_some_and(|p| self.neighbour_range(mm, p).1 > addr.0)
            || next.is_some_and(|n| self.neighbour_range(mm, n).0 < end.0)
        {
            return None;
        }
        let mut vmg = self.vmg_from_vma(vma, addr, end, caller);
        vmg.pgoff = pgoff;
        vmg.prev = prev;
        vmg.next = next;
        vmg.copied_from = Some(vma);
        vmg.middle = None;
        Some(vmg)
    }

    /// `move_ptes`: move each PTE of `[old, old + extent)`; moved PTEs become soft-dirty.
    fn move_ptes(
        &mut self,
        trace: &mut crate::stats::Trace,
        mm: MmId,
        old: VirtAddr,
        new: VirtAddr,
        extent: u64,
    ) {
        let pt = &mut self.mms[mm].pt;
        for (a, pte) in pt.ptes_in(old, old.plus(extent)) {
            pt.set_pte(a, Pte::None);
            let moved = match pte {
                Pte::Present { folio, sub, flags } => {
                    Pte::Present { folio, sub, flags: flags | PteFlags::SOFT_DIRTY }
                }
                // move_soft_dirty_pte: pte_swp_mksoft_dirty; the entry keeps its folio, whose
                // index the rmap still finds here (the new VMA keeps the pgoff).
                Pte::Migration { folio, sub, kind, flags } => {
                    Pte::Migration { folio, sub, kind, flags: flags | PteFlags::SOFT_DIRTY }
                }
                p => p,
            };
            pt.set_pte(new.plus(a.0 - old.0), moved);
            trace.stats.ptes_moved += 1;
        }
    }
}
