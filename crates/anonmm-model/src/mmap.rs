//! mmap, munmap and brk (mm/mmap.c, mm/vma.c): `do_mmap`, `__mmap_region`,
//! `get_unmapped_area` with x86_64's top-down allocator, `do_vmi_munmap`, `brk` and
//! `do_brk_flags`.

use crate::abi::*;
use crate::designs::Design;
use crate::errno::{Errno, KResult};
use crate::fs::FileId;
use crate::merge::{MergeCaller, Vmg};
use crate::mm::{MmId, System};
use crate::types::{PAGE_SHIFT, PAGE_SIZE, PMD_SIZE, PgOff, Pid, TASK_SIZE, VirtAddr, page_align};
use crate::vma::{SpecialMapping, VmFlags, Vma, VmaId, calc_vm_flag_bits, calc_vm_prot_bits};

/// `mmap_min_addr`.
pub const MMAP_MIN_ADDR: u64 = 4096;
/// `stack_guard_gap` (256 pages).
pub const STACK_GUARD_GAP: u64 = 256 * PAGE_SIZE;
/// `RLIMIT_STACK` (the default 8 MiB soft limit, which the oracle's processes run with).
pub const RLIMIT_STACK: u64 = 8 * 1024 * 1024;

/// VMAs detached by `vms_gather_munmap_vmas`, waiting for `vms_complete_munmap_vmas`.
pub struct Detached {
    /// The detached VMAs, split to the range and already zapped, in address order (a few
    /// inline: most unmaps detach one).
    pub vmas: smallvec::SmallVec<[VmaId; 4]>,
    /// Start of the unmapped range (`vms->start`).
    pub start: VirtAddr,
    /// End of the unmapped range (`vms->end`).
    pub end: VirtAddr,
}

impl System {
    /// `lock_mm_and_find_vma` for a fault at `a` that no VMA covers: the VMA above it, if it
    /// grows down (`VM_GROWSDOWN`: `[stack]`, MAP_GROWSDOWN), grows to `a`'s page as
    /// `expand_downwards` does, and is returned. It refuses (None: SIGSEGV) below
    /// `mmap_min_addr`, within `stack_guard_gap` of an accessible VMA below that does not
    /// grow down, past the VMA's pgoff, or beyond `RLIMIT_STACK` (`acct_stack_growth`).
    /// The anon_vma is prepared before the limits are checked, as the kernel does.
    pub(crate) fn expand_stack(&mut self, mm: MmId, a: VirtAddr) -> Option<VmaId> {
        let a = a.page_down();
        let vma = self.vm.mms[mm].find_vma(a)?;
        let v = &self.vm.vmas[vma];
        if !v.flags.contains(VmFlags::GROWSDOWN) || v.start <= a || a.0 < MMAP_MIN_ADDR {
            return None;
        }
        let (prev, _) = self.vm.mms[mm].vmas_around(v.start);
        if let Some(p) = prev {
            let p = &self.vm.vmas[p];
            if !p.flags.contains(VmFlags::GROWSDOWN)
                && p.flags.intersects(VmFlags::ACCESS)
                && a.0 - p.end.0 < STACK_GUARD_GAP
            {
                return None;
            }
        }
        self.rmap.anon_vma_prepare(&mut self.vm, &mut self.trace, vma);
        let v = &self.vm.vmas[vma];
        let (end, grow) = (v.end, (v.start.0 - a.0) >> PAGE_SHIFT);
        if grow > v.pgoff.0 || end.0 - a.0 > RLIMIT_STACK {
            return None;
        }
        let pgoff = crate::types::PgOff(v.pgoff.0 - grow);
        self.vm.mms[mm].total_vm += grow;
        self.vma_set_range(vma, a, end, pgoff);
        Some(vma)
    }

    /// `__get_unmapped_area`.
    pub fn get_unmapped_area(
        &self,
        mm: MmId,
        file: Option<FileId>,
        addr: u64,
        len: u64,
        pgoff: u64,
        flags: u64,
    ) -> KResult<u64> {
        if len > TASK_SIZE {
            return Err(Errno::ENOMEM);
        }
        let anon_private = file.is_none() && flags & MAP_SHARED == 0;
        // file->f_op->get_unmapped_area: thp_get_unmapped_area for a regular file.
        let regular_file = file.is_some_and(|f| {
            matches!(self.fs.inodes[self.fs.files[f].inode].kind, crate::fs::InodeKind::Regular { .. })
        });
        let addr = if anon_private && addr == 0 && len.is_multiple_of(PMD_SIZE) {
            // thp_get_unmapped_area_vmflags: pad by a PMD and align (anonymous memory has
            // pgoff 0 here).
            match self.vm.arch_get_unmapped_area_topdown(mm, 0, len + PMD_SIZE, 0, flags, false) {
                Ok(ret) => {
                    let off_sub = 0u64.wrapping_sub(ret) & (PMD_SIZE - 1);
                    if off_sub == 0 { ret + PMD_SIZE } else { ret + off_sub }
                }
                Err(_) => self.vm.arch_get_unmapped_area_topdown(mm, addr, len, 0, flags, false)?,
            }
        } else if regular_file
            && let Some(a) = self.vm.thp_get_unmapped_area_file(mm, addr, len, pgoff, flags)
        {
            a
        } else {
            let pgoff = if file.is_none() { 0 } else { pgoff };
            self.vm.arch_get_unmapped_area_topdown(mm, addr, len, pgoff, flags, file.is_some())?
        };
        if addr > TASK_SIZE - len {
            return Err(Errno::ENOMEM);
        }
        if addr % PAGE_SIZE != 0 {
            return Err(Errno::EINVAL);
        }
        Ok(addr)
    }

    /// mmap(2): `ksys_mmap_pgoff` → `do_mmap` → `mmap_region`.
    ///
    /// Returns the address mapped. `fd` is ignored with `MAP_ANONYMOUS`; without an address
    /// hint or `MAP_FIXED*` the mapping is placed top-down below `mmap_base`, as on x86_64.
    ///
    /// ```
    /// use anonmm_model::api::prelude::*;
    ///
    /// let mut sys = System::default();
    /// sys.spawn(Pid(1))?;
    /// let (rw, anon) = (PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
    /// let a = sys.sys_mmap(Pid(1), 0, 8192, rw, anon, -1, 0)?;
    /// // The next mapping goes just below, and merges with it.
    /// let b = sys.sys_mmap(Pid(1), 0, 4096, rw, anon, -1, 0)?;
    /// assert_eq!(b, a - 4096);
    /// assert_eq!(sys.vma_count(Pid(1))?, 1);
    /// // MAP_FIXED_NOREPLACE over an existing mapping, and an unaligned offset.
    /// assert_eq!(sys.sys_mmap(Pid(1), a, 4096, rw, anon | MAP_FIXED_NOREPLACE, -1, 0), Err(Errno::EEXIST));
    /// assert_eq!(sys.sys_mmap(Pid(1), 0, 4096, rw, anon, -1, 1), Err(Errno::EINVAL));
    /// # Ok::<(), Errno>(())
    /// ```
    #[allow(clippy::too_many_arguments)] // the syscall's own six arguments plus the pid
    pub fn sys_mmap(
        &mut self,
        pid: Pid,
        addr: u64,
        len: u64,
        prot: u64,
        flags: u64,
        fd: i64,
        off: u64,
    ) -> KResult<u64> {
        let mm = self.vm.mm_of(pid)?;
        if !off.is_multiple_of(PAGE_SIZE) {
            return Err(Errno::EINVAL);
        }
        if flags & MAP_ANONYMOUS == 0 {
            self.refuse_stdio(pid, fd, "mmap")?;
        }
        let file = if flags & MAP_ANONYMOUS == 0 { Some(self.file_of_fd(pid, fd)?) } else { None };
        if flags & MAP_HUGETLB != 0 {
            // ksys_mmap_pgoff: MAP_HUGETLB on a file that is not on hugetlbfs is EINVAL.
            if file.is_some() {
                return Err(Errno::EINVAL);
            }
            // An anonymous one maps a hugetlbfs file (hugetlb_file_setup): not modelled.
            self.not_modelled("MAP_HUGETLB (anonymous hugetlbfs mappings)");
            return Err(Errno::ENOMEM);
        }
        if flags & MAP_32BIT != 0 && flags & (MAP_FIXED | MAP_FIXED_NOREPLACE) == 0 {
            // x86's placement in the low 2 GiB (the bottom-up search of
            // arch_get_unmapped_area_topdown); with MAP_FIXED it is ignored.
            self.not_modelled("MAP_32BIT placement (without MAP_FIXED)");
            return Err(Errno::ENOMEM);
        }
        let pgoff = off >> PAGE_SHIFT;
        if len == 0 {
            return Err(Errno::EINVAL);
        }
        let mut addr = addr;
        if flags & MAP_FIXED == 0 && addr != 0 && addr < MMAP_MIN_ADDR {
            addr = MMAP_MIN_ADDR;
        }
        let len = page_align(len).ok_or(Errno::ENOMEM)?;
        if len == 0 {
            return Err(Errno::ENOMEM);
        }
        if pgoff.checked_add(len >> PAGE_SHIFT).is_none() {
            return Err(Errno::EOVERFLOW);
        }
        if self.vm.mms[mm].map_count() > self.cfg.max_map_count {
            return Err(Errno::ENOMEM);
        }
        // MAP_TYPE is validated before placement for files and after for anonymous
        // memory; both give EINVAL.
        let map_type = flags & MAP_TYPE;
        if map_type == MAP_DROPPABLE && file.is_none() {
            // 6.11+: VM_DROPPABLE anonymous memory that reclaim frees instead of swapping.
            self.not_modelled("MAP_DROPPABLE (droppable anonymous mappings)");
            return Err(Errno::EINVAL);
        }
        // A file's MAP_DROPPABLE is refused by do_mmap's switch, after placement.
        if !matches!(map_type, MAP_SHARED | MAP_PRIVATE | MAP_SHARED_VALIDATE | MAP_DROPPABLE) {
            return Err(Errno::EINVAL);
        }
        let fixed_flags = if flags & MAP_FIXED_NOREPLACE != 0 { flags | MAP_FIXED } else { flags };
        let shared = map_type != MAP_PRIVATE;
        let addr = self.get_unmapped_area(
            mm,
            file,
            addr,
            len,
            pgoff,
            if shared { fixed_flags | MAP_SHARED } else { fixed_flags },
        )?;
        if flags & MAP_FIXED_NOREPLACE != 0
            && self.vm.mms[mm].intersects(VirtAddr(addr), VirtAddr(addr + len))
        {
            return Err(Errno::EEXIST);
        }
        let pkey = if prot == PROT_EXEC { self.execute_only_pkey(mm) } else { 0 };
        let mut vm_flags = calc_vm_prot_bits(prot)
            | VmFlags::from_pkey(pkey)
            | calc_vm_flag_bits(flags, self.cfg.kernel.profile().map_stack_nohugepage)
            | self.vm.mms[mm].def_flags
            | VmFlags::MAYREAD
            | VmFlags::MAYWRITE
            | VmFlags::MAYEXEC;
        let mut pgoff = pgoff;
        if let Some(f) = file {
            // do_mmap: MAP_SHARED_VALIDATE refuses flags outside LEGACY_MAP_MASK (ext4 adds
            // MAP_SYNC, FOP_MMAP_SYNC), MAP_FIXED_NOREPLACE among them; ext4's mmap_prepare
            // refuses VM_SYNC without DAX (daxdev_mapping_supported).
            if map_type == MAP_SHARED_VALIDATE && flags & !(LEGACY_MAP_MASK | MAP_SYNC) != 0 {
                return Err(Errno::EOPNOTSUPP);
            }
            if map_type == MAP_DROPPABLE {
                return Err(Errno::EINVAL);
            }
            let of = &self.fs.files[f];
            match map_type {
                MAP_SHARED | MAP_SHARED_VALIDATE => {
                    if prot & PROT_WRITE != 0 && !of.writable {
                        return Err(Errno::EACCES);
                    }
                    vm_flags |= VmFlags::SHARED | VmFlags::MAYSHARE;
                    if !of.writable {
                        vm_flags -= VmFlags::MAYWRITE | VmFlags::SHARED;
                    }
                    if !of.readable {
                        return Err(Errno::EACCES);
                    }
                }
                _ => {
                    if !of.readable {
                        return Err(Errno::EACCES);
                    }
                }
            }
            // do_mmap's MAP_PRIVATE case (the shared ones fall through to it): no file
            // mapping grows.
            if vm_flags.contains(VmFlags::GROWSDOWN) {
                return Err(Errno::EINVAL);
            }
        } else if shared {
            // do_mmap's switch for anonymous memory has no MAP_SHARED_VALIDATE case.
            if map_type == MAP_SHARED_VALIDATE || vm_flags.contains(VmFlags::GROWSDOWN) {
                return Err(Errno::EINVAL);
            }
            pgoff = 0;
            vm_flags |= VmFlags::SHARED | VmFlags::MAYSHARE;
        } else {
            pgoff = addr >> PAGE_SHIFT;
            // `auto` picks the frame of the neighbour the new VMA will merge with.
            let linear = pgoff;
            self.probe("anon_mmap_pgoff", |p| {
                p.anon_mmap_pgoff(self, mm, VirtAddr(addr), len, vm_flags).map_or(linear, |p| p.0)
            });
            if let Some(p) = self.policy.anon_mmap_pgoff(self, mm, VirtAddr(addr), len, vm_flags) {
                pgoff = p.0;
            }
        }
        if flags & MAP_NORESERVE != 0 {
            vm_flags |= VmFlags::NORESERVE;
        }
        let v = self.mmap_region(mm, file, VirtAddr(addr), len, vm_flags, PgOff(pgoff))?;
        // do_mmap decides on the flags asked for (MAP_LOCKED, or mlockall's def_flags).
        if (self.vm.vmas[v].flags | vm_flags).contains(VmFlags::LOCKED)
            || flags & (MAP_POPULATE | MAP_NONBLOCK) == MAP_POPULATE
        {
            self.populate(mm, VirtAddr(addr), VirtAddr(addr + len));
        }
        Ok(addr)
    }

    /// `__mmap_region`: unmap what the range covers, try to merge, else make a new VMA.
    pub fn mmap_region(
        &mut self,
        mm: MmId,
        file: Option<FileId>,
        addr: VirtAddr,
        len: u64,
        mut vm_flags: VmFlags,
        pgoff: PgOff,
    ) -> KResult<VmaId> {
        let end = addr.plus(len);
        // accountable_mapping: private writable memory is charged and marked; heuristic
        // overcommit (`__vm_enough_memory`, OVERCOMMIT_GUESS) refuses one allocation larger
        // than RAM plus swap, before anything is unmapped.
        if vm_flags & (VmFlags::NORESERVE | VmFlags::SHARED | VmFlags::WRITE) == VmFlags::WRITE {
            if len / PAGE_SIZE > self.cfg.ram_pages + self.cfg.swap_pages as u64 {
                return Err(Errno::ENOMEM);
            }
            vm_flags |= VmFlags::ACCOUNT;
        }
        let detached = self.gather_munmap_vmas(mm, addr, end)?;
        if let Some(d) = detached {
            self.complete_munmap_vmas(mm, d);
        }
        // ext4_file_mmap refuses VM_SYNC without DAX (daxdev_mapping_supported); it runs
        // after the old range was cleared, so MAP_FIXED leaves a gap there.
        if file.is_some() && vm_flags.contains(VmFlags::SYNC) {
            return Err(Errno::EOPNOTSUPP);
        }
        let (prev, next) = self.vm.mms[mm].vmas_around(addr);
        let mut merged = None;
        // Shared anonymous memory gets its shmem file only after the merge attempt.
        if prev.is_some() || next.is_some() {
            let mut vmg = Vmg::new_range(mm, addr, end, pgoff, vm_flags);
            vmg.prev = prev;
            vmg.next = next;
            vmg.file = file;
            vmg.caller = MergeCaller::Mmap;
            merged = self.vma_merge_new_range(&mut vmg);
        }
        let vma = match merged {
            Some(v) => v,
            None => {
                let file = match file {
                    Some(f) => {
                        self.fs.files[f].refs += 1;
                        Some(f)
                    }
                    None if vm_flags.contains(VmFlags::SHARED) => Some(self.fs.new_shmem(len)),
                    None => None,
                };
                self.vm.vma_link(Vma {
                    mm,
                    start: addr,
                    end,
                    pgoff,
                    flags: vm_flags,
                    file,
                    anon_vma: None,
                    chain: crate::vma::VmaChain::new(),
                    anon_name: None,
                    uffd: None,
                    special: None,
                })
            }
        };
        // __mmap_complete
        if self.cfg.soft_dirty {
            self.vm.vmas[vma].flags |= VmFlags::SOFTDIRTY;
        }
        self.vm.mms[mm].total_vm += len >> PAGE_SHIFT;
        Ok(vma)
    }

    /// `vms_gather_munmap_vmas`: split the VMAs at the edges of `[start, end)` and detach
    /// those inside. Splits made before a failure stay, as in the kernel.
    pub fn gather_munmap_vmas(
        &mut self,
        mm: MmId,
        start: VirtAddr,
        end: VirtAddr,
    ) -> KResult<Option<Detached>> {
        let Some(first) = self.vm.mms[mm].find_vma(start).filter(|&v| self.vm.vmas[v].start < end) else {
            return Ok(None);
        };
        let mut vma = first;
        if start > self.vm.vmas[vma].start {
            if end < self.vm.vmas[vma].end && self.vm.mms[mm].map_count() >= self.cfg.max_map_count {
                return Err(Errno::ENOMEM);
            }
            // The new VMA is the part below `start`; `vma` keeps the rest.
            self.split_vma_nocheck(vma, start, true);
        }
        let mut out = smallvec::SmallVec::new();
        loop {
            if self.vm.vmas[vma].end > end {
                self.split_vma_nocheck(vma, end, false);
            }
            out.push(vma);
            let vend = self.vm.vmas[vma].end;
            if vend >= end {
                break;
            }
            match self.vm.mms[mm].vma_from(vend) {
                Some(n) if self.vm.vmas[n].start < end => vma = n,
                _ => break,
            }
        }
        for &v in &out {
            // Zap while the VMA is still in the tree, as vms_clean_up_area does; unmap_vmas
            // drops guard markers too (ZAP_FLAG_DROP_MARKER).
            let (s, e) = (self.vm.vmas[v].start, self.vm.vmas[v].end);
            self.zap_range_drop_markers(mm, s, e);
        }
        // Out of the tree in one store over the range (`vma_iter_clear_gc`): after the edge
        // splits, the VMAs starting in it are the gathered ones.
        let gone = self.vm.mms[mm].vmas.clear_range(start.0, end.0);
        debug_assert_eq!(gone, out.len());
        Ok(Some(Detached { vmas: out, start, end }))
    }

    /// `vms_complete_munmap_vmas`: free the detached VMAs and the page tables left empty.
    pub fn complete_munmap_vmas(&mut self, mm: MmId, d: Detached) {
        for v in d.vmas {
            let pages = self.vm.vmas[v].pages();
            self.vm.mms[mm].total_vm -= pages.min(self.vm.mms[mm].total_vm);
            self.vma_free(v);
        }
        self.vm.free_pgtables(
            mm,
            d.start,
            d.end,
            d.start.pmd_down(),
            VirtAddr(page_align(d.end.0).unwrap_or(d.end.0)).plus(PMD_SIZE - 1),
        );
    }

    /// `do_vmi_munmap`.
    pub fn do_munmap(&mut self, mm: MmId, start: u64, len: u64) -> KResult<()> {
        if !start.is_multiple_of(PAGE_SIZE) || start > TASK_SIZE || len > TASK_SIZE - start {
            return Err(Errno::EINVAL);
        }
        let end = start + page_align(len).ok_or(Errno::EINVAL)?;
        if end == start {
            return Err(Errno::EINVAL);
        }
        if let Some(d) = self.gather_munmap_vmas(mm, VirtAddr(start), VirtAddr(end))? {
            self.complete_munmap_vmas(mm, d);
        }
        Ok(())
    }

    /// munmap(2) (`__vm_munmap`).
    pub fn sys_munmap(&mut self, pid: Pid, addr: u64, len: u64) -> KResult<u64> {
        let mm = self.vm.mm_of(pid)?;
        self.do_munmap(mm, addr, len).map(|_| 0)
    }

    /// `mm_populate`: `__mm_populate` ignoring errors (a VMA that fails is left where it
    /// failed, the next one is populated).
    pub fn populate(&mut self, mm: MmId, start: VirtAddr, end: VirtAddr) {
        let _ = self.mm_populate(mm, start, end, true);
    }

    /// `__mm_populate`: fault in every VMA of `[start, end)` (`populate_vma_page_range`:
    /// a write fault where the mapping is private and writable, else a read;
    /// `VM_LOCKONFAULT` VMAs are skipped, "rightly or wrongly", and `VM_IO`/`VM_PFNMAP` ones
    /// too). A VMA GUP refuses (`check_vma_flags`: `PROT_NONE`, whose populate has no
    /// `FOLL_FORCE`; the execute-only protection key) or a page whose fault fails (SIGBUS
    /// past EOF, userfaultfd) is EFAULT: with `ignore_errors` the next VMA follows, else
    /// the walk stops there.
    pub fn mm_populate(
        &mut self,
        mm: MmId,
        start: VirtAddr,
        end: VirtAddr,
        ignore_errors: bool,
    ) -> KResult<()> {
        let mut a = start;
        while a < end {
            let Some(v) = self.vm.mms[mm].find_vma(a).filter(|&v| self.vm.vmas[v].start < end) else {
                return Ok(());
            };
            let vend = self.vm.vmas[v].end.min(end);
            a = a.max(self.vm.vmas[v].start);
            let f = self.vm.vmas[v].flags;
            if f.intersects(VmFlags::IO | VmFlags::PFNMAP) || f.contains(VmFlags::LOCKONFAULT) {
                a = vend;
                continue;
            }
            // check_vma_flags: arch_vma_access_permitted refuses GUP through the
            // execute-only protection key (a PROT_EXEC mapping with pkeys).
            let exec_only = f.pkey() != 0 && Some(f.pkey()) == self.vm.mms[mm].execute_only_pkey;
            let mut failed = !f.intersects(VmFlags::ACCESS) || exec_only;
            if !failed && vend.0 - a.0 > crate::fault::MAX_FAULT_BYTES {
                // Page by page this would not finish; the kernel would run out of memory first.
                self.not_modelled("populating more than 64 GiB");
                return Ok(());
            }
            if !failed {
                let write = f & (VmFlags::WRITE | VmFlags::SHARED) == VmFlags::WRITE;
                while a < vend {
                    if !self.handle_mm_fault(mm, v, a, write) {
                        failed = true;
                        break;
                    }
                    a = a.plus(PAGE_SIZE);
                }
            }
            if failed && !ignore_errors {
                return Err(Errno::EFAULT);
            }
            a = vend;
        }
        Ok(())
    }

    /// brk(2).
    pub fn sys_brk(&mut self, pid: Pid, brk: u64) -> KResult<u64> {
        let mm = self.vm.mm_of(pid)?;
        let (origbrk, start_brk) = (self.vm.mms[mm].brk, self.vm.mms[mm].start_brk);
        if brk < start_brk.0 {
            return Ok(origbrk.0);
        }
        let newbrk = page_align(brk).ok_or(Errno::ENOMEM)?;
        let oldbrk = page_align(origbrk.0).ok_or(Errno::ENOMEM)?;
        if oldbrk == newbrk {
            self.vm.mms[mm].brk = VirtAddr(brk);
            return Ok(brk);
        }
        if brk <= origbrk.0 {
            let Some(v) = self.vm.mms[mm].find_vma(VirtAddr(newbrk)) else { return Ok(origbrk.0) };
            if self.vm.vmas[v].start.0 >= oldbrk {
                return Ok(origbrk.0);
            }
            self.vm.mms[mm].brk = VirtAddr(brk);
            if self.do_munmap(mm, newbrk, oldbrk - newbrk).is_err() {
                self.vm.mms[mm].brk = origbrk;
                return Ok(origbrk.0);
            }
            return Ok(brk);
        }
        if newbrk > TASK_SIZE {
            return Ok(origbrk.0);
        }
        if let Some(n) = self.vm.mms[mm].find_vma(VirtAddr(oldbrk))
            && self.vm.vmas[n].start.0 < newbrk + PAGE_SIZE + STACK_GUARD_GAP
            && newbrk + PAGE_SIZE > self.vm.vm_start_gap(n)
        {
            return Ok(origbrk.0);
        }
        let brkvma =
            self.vm.mms[mm].vma_before(VirtAddr(oldbrk)).filter(|&v| self.vm.vmas[v].end.0 > start_brk.0);
        if self.do_brk_flags(mm, brkvma, VirtAddr(oldbrk), newbrk - oldbrk).is_err() {
            return Ok(origbrk.0);
        }
        self.vm.mms[mm].brk = VirtAddr(brk);
        // mlockall(MCL_FUTURE): the new part is populated (mm_populate).
        if self.vm.mms[mm].def_flags.contains(VmFlags::LOCKED) {
            self.populate(mm, VirtAddr(oldbrk), VirtAddr(newbrk));
        }
        Ok(brk)
    }

    /// `do_brk_flags`: extend the brk VMA (never merging with next) or make a new one.
    fn do_brk_flags(&mut self, mm: MmId, vma: Option<VmaId>, addr: VirtAddr, len: u64) -> KResult<()> {
        let vm_flags = VmFlags::READ
            | VmFlags::WRITE
            | VmFlags::MAYREAD
            | VmFlags::MAYWRITE
            | VmFlags::MAYEXEC
            | VmFlags::ACCOUNT
            | self.vm.mms[mm].def_flags;
        if self.vm.mms[mm].map_count() > self.cfg.max_map_count {
            return Err(Errno::ENOMEM);
        }
        let end = addr.plus(len);
        let mut merged = None;
        if let Some(v) = vma
            && self.vm.vmas[v].end == addr
        {
            let mut vmg = Vmg::new_range(mm, addr, end, PgOff(addr.0 >> PAGE_SHIFT), vm_flags);
            vmg.prev = Some(v);
            vmg.just_expand = true;
            vmg.caller = MergeCaller::Brk;
            merged = self.vma_merge_new_range(&mut vmg);
        }
        let v = match merged {
            Some(v) => v,
            None => self.vm.vma_link(Vma {
                mm,
                start: addr,
                end,
                pgoff: PgOff(addr.0 >> PAGE_SHIFT),
                flags: vm_flags,
                file: None,
                anon_vma: None,
                chain: crate::vma::VmaChain::new(),
                anon_name: None,
                uffd: None,
                special: None,
            }),
        };
        self.vm.mms[mm].total_vm += len >> PAGE_SHIFT;
        if self.cfg.soft_dirty {
            self.vm.vmas[v].flags |= VmFlags::SOFTDIRTY;
        }
        Ok(())
    }

    /// Install a mapping the kernel made itself (a perf mmap record at exec: the ELF image,
    /// ld.so, `[stack]`, `[vdso]`, `[heap]`…) with MAP_FIXED semantics. Records of one
    /// (dev, ino) in one address space share an open file, as the ELF loader's do.
    #[allow(clippy::too_many_arguments)]
    pub fn map_record(
        &mut self,
        pid: Pid,
        addr: u64,
        len: u64,
        pgoff: u64,
        prot: u64,
        shared: bool,
        id: (u64, u64),
        path: Option<&str>,
        special: Option<SpecialMapping>,
    ) -> KResult<u64> {
        let mm = self.vm.mm_of(pid)?;
        let len = page_align(len).ok_or(Errno::EINVAL)?;
        if !addr.is_multiple_of(PAGE_SIZE) || len == 0 || addr > TASK_SIZE - len.min(TASK_SIZE) {
            return Err(Errno::EINVAL);
        }
        let (start, end) = (VirtAddr(addr), VirtAddr(addr + len));
        let mut flags = calc_vm_prot_bits(prot) | VmFlags::MAYREAD | VmFlags::MAYWRITE | VmFlags::MAYEXEC;
        if shared {
            flags |= VmFlags::SHARED | VmFlags::MAYSHARE;
        }
        match (path, special) {
            (Some(path), _) => {
                let file = match self.vm.mms[mm].exec_files.get(&id) {
                    Some(&f) => f,
                    None => {
                        let f = self.fs.open_for_exec(path, (pgoff << PAGE_SHIFT) + len);
                        self.vm.mms[mm].exec_files.insert(id, f);
                        f
                    }
                };
                let inode = self.fs.files[file].inode;
                let need = (pgoff << PAGE_SHIFT) + len;
                if self.fs.inodes[inode].size < need {
                    self.fs.inodes[inode].size = need;
                }
                if flags & (VmFlags::NORESERVE | VmFlags::SHARED | VmFlags::WRITE) == VmFlags::WRITE {
                    flags |= VmFlags::ACCOUNT;
                }
                if let Some(d) = self.gather_munmap_vmas(mm, start, end)? {
                    self.complete_munmap_vmas(mm, d);
                }
                self.mmap_region(mm, Some(file), start, len, flags, PgOff(pgoff))?;
            }
            (None, Some(SpecialMapping::Heap)) => {
                self.vm.mms[mm].start_brk = start;
                self.vm.mms[mm].brk = end;
                self.mmap_region(mm, None, start, len, flags | VmFlags::ACCOUNT, PgOff(addr >> PAGE_SHIFT))?;
            }
            (None, Some(special)) => {
                if let Some(d) = self.gather_munmap_vmas(mm, start, end)? {
                    self.complete_munmap_vmas(mm, d);
                }
                flags |= match &special {
                    // setup_arg_pages
                    SpecialMapping::Stack => VmFlags::GROWSDOWN | VmFlags::ACCOUNT,
                    // _install_special_mapping (the heap took the arm above)
                    SpecialMapping::Heap | SpecialMapping::Other(_) => VmFlags::DONTEXPAND,
                };
                self.vm.vma_link(Vma {
                    mm,
                    start,
                    end,
                    pgoff: PgOff(addr >> PAGE_SHIFT),
                    flags,
                    file: None,
                    anon_vma: None,
                    chain: crate::vma::VmaChain::new(),
                    anon_name: None,
                    uffd: None,
                    special: Some(special.name()),
                });
            }
            (None, None) => {
                if flags & (VmFlags::NORESERVE | VmFlags::SHARED | VmFlags::WRITE) == VmFlags::WRITE {
                    flags |= VmFlags::ACCOUNT;
                }
                self.mmap_region(mm, None, start, len, flags, PgOff(addr >> PAGE_SHIFT))?;
            }
        }
        Ok(0)
    }
}

impl System {
    /// x86 `execute_only_pkey`: the pkey whose PKRU bits deny data access, allocated
    /// (`mm_pkey_alloc`: the first free key, 1) by the first `PROT_EXEC`-only mapping; 0 when
    /// the CPU has no protection keys.
    pub fn execute_only_pkey(&mut self, mm: MmId) -> u8 {
        if !self.cfg.pku {
            return 0;
        }
        *self.vm.mms[mm].execute_only_pkey.get_or_insert(1)
    }
}

impl crate::mm::Vm {
    /// `__thp_get_unmapped_area` for a regular file, whose `f_op->get_unmapped_area` is
    /// `thp_get_unmapped_area` (ext4, xfs): when the mapping covers a whole PMD-aligned
    /// stretch of the file, pad the request by a PMD and place it so that file offsets and
    /// addresses agree modulo PMD_SIZE. None means "not aligned": the caller's plain
    /// `mm_get_unmapped_area` applies.
    fn thp_get_unmapped_area_file(
        &self,
        mm: MmId,
        addr: u64,
        len: u64,
        pgoff: u64,
        flags: u64,
    ) -> Option<u64> {
        let off = pgoff.checked_mul(PAGE_SIZE)?;
        let off_end = off.checked_add(len)?;
        let off_align = off.checked_next_multiple_of(PMD_SIZE)?;
        if off_end <= off_align || off_end - off_align < PMD_SIZE {
            return None;
        }
        let len_pad = len.checked_add(PMD_SIZE)?;
        off.checked_add(len_pad)?;
        let ret = self.arch_get_unmapped_area_topdown(mm, addr, len_pad, pgoff, flags, true).ok()?;
        if ret == addr {
            return Some(addr);
        }
        let off_sub = off.wrapping_sub(ret) & (PMD_SIZE - 1);
        // MMF_TOPDOWN: take the upper end of the padded gap.
        Some(if off_sub == 0 { ret + PMD_SIZE } else { ret + off_sub })
    }

    /// `vm_start_gap`.
    fn vm_start_gap(&self, vma: VmaId) -> u64 {
        let v = &self.vmas[vma];
        if v.flags.contains(VmFlags::GROWSDOWN) {
            v.start.0.saturating_sub(STACK_GUARD_GAP)
        } else {
            v.start.0
        }
    }

    fn unmapped_area_bottomup(&self, mm: MmId, len: u64) -> KResult<u64> {
        let mut lo = page_align(TASK_SIZE / 3).unwrap_or(0);
        for (&s, e) in self.mms[mm].vmas.range(lo..) {
            if s >= lo && s - lo >= len {
                return Ok(lo);
            }
            lo = lo.max(e.end);
        }
        if TASK_SIZE - lo >= len { Ok(lo) } else { Err(Errno::ENOMEM) }
    }

    /// `unmapped_area_topdown`: the highest gap of `len` bytes in `[low, high)` whose start
    /// is `align_offset` modulo `align_mask + 1`.
    fn unmapped_area_topdown(
        &self,
        mm: MmId,
        len: u64,
        low: u64,
        high: u64,
        align_mask: u64,
        align_offset: u64,
    ) -> KResult<u64> {
        let length = len.checked_add(align_mask).ok_or(Errno::ENOMEM)?;
        if length > high || high - length < low {
            return Err(Errno::ENOMEM);
        }
        let m = &self.mms[mm];
        // Walk gaps from the top: between each VMA's end and the next VMA's start gap.
        let mut gap_end = high;
        let entries = m.vmas.iter().rev().map(|(s, e)| (*s, e.end, e.id));
        let try_gap = |gap_start: u64, gap_end: u64| -> Option<u64> {
            let gs = gap_start.max(low);
            let ge = gap_end.min(high);
            if ge < gs || ge - gs < length {
                return None;
            }
            let mut addr = ge - len;
            addr -= addr.wrapping_sub(align_offset) & align_mask;
            (addr >= gs).then_some(addr)
        };
        for (start, end, id) in entries {
            if end >= gap_end {
                gap_end = gap_end.min(self.vm_start_gap(id));
                continue;
            }
            if let Some(a) = try_gap(end, gap_end) {
                return Ok(a);
            }
            gap_end = self.vm_start_gap(id).min(start);
            if gap_end <= low {
                break;
            }
        }
        try_gap(low, gap_end).ok_or(Errno::ENOMEM)
    }

    /// `arch_get_unmapped_area_topdown` (x86_64) for a hint or none.
    fn arch_get_unmapped_area_topdown(
        &self,
        mm: MmId,
        addr: u64,
        len: u64,
        pgoff: u64,
        flags: u64,
        file: bool,
    ) -> KResult<u64> {
        if len > TASK_SIZE {
            return Err(Errno::ENOMEM);
        }
        if flags & MAP_FIXED != 0 {
            return Ok(addr);
        }
        if addr != 0 {
            let addr = addr & !(PAGE_SIZE - 1);
            if TASK_SIZE - len >= addr {
                let m = &self.mms[mm];
                let vma = m.find_vma(VirtAddr(addr));
                let prev = m.vma_before(VirtAddr(addr.saturating_add(1)).min(VirtAddr(addr)));
                let prev = match m.vma_lookup(VirtAddr(addr)) {
                    Some(_) => prev,
                    None => m.vma_before(VirtAddr(addr)),
                };
                let ok_next = vma.is_none_or(|v| addr + len <= self.vm_start_gap(v));
                let ok_prev = prev.is_none_or(|p| addr >= self.vmas[p].end.0);
                if ok_next && ok_prev {
                    return Ok(addr);
                }
            }
        }
        let high = self.mms[mm].mmap_base.0;
        let align_offset = if file { pgoff << PAGE_SHIFT } else { 0 };
        match self.unmapped_area_topdown(mm, len, PAGE_SIZE, high, 0, align_offset) {
            Ok(a) => Ok(a),
            // Fall back to bottom-up from TASK_UNMAPPED_BASE (mmap_base / 3 rounded).
            Err(_) => self.unmapped_area_bottomup(mm, len),
        }
    }
}
