//! mprotect(2) (mm/mprotect.c): `do_mprotect_pkey`, `mprotect_fixup`, `change_protection`.

use crate::abi::{PROT_EXEC, PROT_GROWSDOWN, PROT_GROWSUP, PROT_READ, PROT_SEM, PROT_WRITE};
use crate::errno::{Errno, KResult};
use crate::folio::ZERO_FOLIO;
use crate::merge::MergeCaller;
use crate::mm::{MmId, System};
use crate::pagetable::{MigrationKind, Pmd, Pte, PteFlags, pmd_index};
use crate::types::{PAGE_SIZE, Pid, VirtAddr, page_align};
use crate::vma::{VmFlags, VmaId, calc_vm_prot_bits};

impl System {
    /// `do_mprotect_pkey`. VMAs changed before a hole or an error stay changed.
    pub fn sys_mprotect(&mut self, pid: Pid, start: u64, len: u64, prot: u64) -> KResult<u64> {
        let mm = self.vm.mm_of(pid)?;
        let grows = prot & (PROT_GROWSDOWN | PROT_GROWSUP);
        let prot = prot & !(PROT_GROWSDOWN | PROT_GROWSUP);
        if grows == PROT_GROWSDOWN | PROT_GROWSUP {
            return Err(Errno::EINVAL);
        }
        if !start.is_multiple_of(PAGE_SIZE) {
            return Err(Errno::EINVAL);
        }
        if len == 0 {
            return Ok(0);
        }
        let len = page_align(len).ok_or(Errno::ENOMEM)?;
        let end = start.checked_add(len).filter(|&e| e > start).ok_or(Errno::ENOMEM)?;
        if prot & !(PROT_READ | PROT_WRITE | PROT_EXEC | PROT_SEM) != 0 {
            return Err(Errno::EINVAL);
        }
        let (start, end) = (VirtAddr(start), VirtAddr(end));
        let Some(mut vma) = self.vm.mms[mm].find_vma(start).filter(|&v| self.vm.vmas[v].start < end) else {
            return Err(Errno::ENOMEM);
        };
        let mut start = start;
        if grows & PROT_GROWSDOWN != 0 {
            start = self.vm.vmas[vma].start;
            if !self.vm.vmas[vma].flags.contains(VmFlags::GROWSDOWN) {
                return Err(Errno::EINVAL);
            }
        } else if self.vm.vmas[vma].start > start {
            return Err(Errno::ENOMEM);
        } else if grows & PROT_GROWSUP != 0 {
            // x86 has no VM_GROWSUP: no VMA grows up, so PROT_GROWSUP is always EINVAL here.
            return Err(Errno::EINVAL);
        }
        let mut nstart = start;
        let mut tmp = self.vm.vmas[vma].start;
        loop {
            if self.vm.vmas[vma].start != tmp {
                return Err(Errno::ENOMEM);
            }
            let old = self.vm.vmas[vma].flags;
            // arch_override_mprotect_pkey: PROT_EXEC alone takes the execute-only pkey; an
            // execute-only VMA given any other protection goes back to pkey 0.
            let exec_only = |s: &System, f: VmFlags| {
                f & VmFlags::ACCESS == VmFlags::EXEC && Some(f.pkey()) == s.vm.mms[mm].execute_only_pkey
            };
            let pkey = if prot == PROT_EXEC {
                match self.execute_only_pkey(mm) {
                    0 => old.pkey(),
                    k => k,
                }
            } else if exec_only(self, old) {
                0
            } else {
                old.pkey()
            };
            let newflags = calc_vm_prot_bits(prot)
                | VmFlags::from_pkey(pkey)
                | (old - VmFlags::ACCESS - VmFlags::PKEY_MASK);
            // newflags >> 4 puts VM_MAY* in place of VM_*.
            let may = VmFlags::from_bits_retain(newflags.bits() >> 4);
            if !(newflags - may).intersection(VmFlags::ACCESS).is_empty() {
                return Err(Errno::EACCES);
            }
            tmp = self.vm.vmas[vma].end.min(end);
            let v = self.mprotect_fixup(mm, vma, nstart, tmp, newflags)?;
            tmp = self.vm.vmas[v].end;
            nstart = tmp;
            if nstart >= end {
                break;
            }
            match self.vm.mms[mm].vma_from(nstart) {
                Some(n) if self.vm.vmas[n].start < end => vma = n,
                _ => break,
            }
        }
        if tmp < end {
            return Err(Errno::ENOMEM);
        }
        Ok(0)
    }

    /// `mprotect_fixup`: account, merge or split, set the flags, change the PTEs.
    fn mprotect_fixup(
        &mut self,
        mm: MmId,
        vma: VmaId,
        start: VirtAddr,
        end: VirtAddr,
        mut newflags: VmFlags,
    ) -> KResult<VmaId> {
        let old = self.vm.vmas[vma].flags;
        if newflags == old {
            return Ok(vma);
        }
        if newflags.contains(VmFlags::WRITE) {
            if !old.intersects(
                VmFlags::ACCOUNT | VmFlags::WRITE | VmFlags::HUGETLB | VmFlags::SHARED | VmFlags::NORESERVE,
            ) {
                newflags |= VmFlags::ACCOUNT;
            }
        } else if old.contains(VmFlags::ACCOUNT)
            && self.cfg.kernel.profile().mprotect_unaccounts_unfaulted
            && self.vm.vmas[vma].is_anonymous()
            && self.vm.vmas[vma].anon_vma.is_none()
        {
            newflags -= VmFlags::ACCOUNT;
        }
        let v = self.vma_modify_flags(vma, start, end, newflags, MergeCaller::Mprotect)?;
        self.change_protection(mm, v, start, end);
        if old & (VmFlags::WRITE | VmFlags::SHARED | VmFlags::LOCKED) == VmFlags::LOCKED
            && newflags.contains(VmFlags::WRITE)
        {
            self.populate(mm, start, end);
        }
        Ok(v)
    }

    /// `change_protection`: PTEs lose write when the VMA does; with
    /// MM_CP_TRY_CHANGE_WRITABLE, exclusive anon pages (and shared pages) become writable
    /// again without a fault. Writable migration entries become readable exclusive ones.
    fn change_protection(&mut self, mm: MmId, vma: VmaId, start: VirtAddr, end: VirtAddr) {
        let flags = self.vm.vmas[vma].flags;
        self.vm.split_huge_pmds_partial(&mut self.mem, &mut self.trace, mm, start, end);
        let writable = flags.contains(VmFlags::WRITE);
        // A writable vm_page_prot (shmem, shared anonymous): every PTE becomes writable.
        let prot_writable = self.vm.shared_prot_writable(&self.fs, vma);
        for (a, pte) in self.vm.mms[mm].pt.ptes_in(start, end) {
            if let Pte::Migration { folio, sub, kind: MigrationKind::Write, flags } = pte {
                // change_pte_range: "a protection check is difficult so just be safe and
                // disable write", whatever the new protection; an anonymous page stays
                // exclusive.
                let kind = MigrationKind::ReadExclusive;
                self.vm.mms[mm].pt.set_pte(a, Pte::Migration { folio, sub, kind, flags });
            }
            if let Pte::Present { folio, sub, .. } = pte {
                let can_write = writable
                    && folio != ZERO_FOLIO
                    && (flags.contains(VmFlags::SHARED)
                        || self.mem.folios[folio].pages[sub as usize].anon_exclusive);
                if let Some(f) = self.vm.mms[mm].pt.pte_flags_mut(a) {
                    if !writable {
                        *f -= PteFlags::WRITE;
                    } else if can_write && (prot_writable || f.contains(PteFlags::DIRTY)) {
                        *f |= PteFlags::WRITE;
                    }
                }
            }
        }
        if !self.vm.mms[mm].pt.any_leaf_in(start, end) {
            return;
        }
        for (a, folio, kind, flags) in self.vm.mms[mm].pt.migration_pmds_in(start, end) {
            // change_huge_pmd on a PMD migration entry: the same.
            if kind.is_writable() {
                let kind = MigrationKind::ReadExclusive;
                self.vm.mms[mm].pt.set_pmd(pmd_index(a), Pmd::Migration { folio, kind, flags });
            }
        }
        for (a, folio, _) in self.vm.mms[mm].pt.huge_in(start, end) {
            let excl =
                folio != crate::folio::HUGE_ZERO_FOLIO && self.mem.folios[folio].pages[0].anon_exclusive;
            if let Some(f) = self.vm.mms[mm].pt.pte_flags_mut(a) {
                if !writable {
                    *f -= PteFlags::WRITE;
                } else if excl && f.contains(PteFlags::DIRTY) {
                    *f |= PteFlags::WRITE;
                }
            }
        }
    }
}
