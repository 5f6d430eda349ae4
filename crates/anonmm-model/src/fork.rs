//! fork, exit and exec (kernel/fork.c, mm/mmap.c): `dup_mmap` with `anon_vma_fork` and
//! `copy_page_range` (`copy_present_ptes`, `copy_huge_pmd`), `exit_mmap`, and the fresh mm
//! of `execve`.

use crate::errno::{Errno, KResult};
use crate::folio::{HUGE_ZERO_FOLIO, ZERO_FOLIO};
use crate::mm::{Mm, MmId, Process, System};
use crate::pagetable::{MigrationKind, Pmd, Pte, PteFlags, pmd_index};
use crate::types::{PAGE_SIZE, Pid, VirtAddr};
use crate::vma::{VmFlags, VmaId};

impl System {
    /// fork(2): a child with a copy of the parent's address space and descriptors.
    ///
    /// Returns the child's pid. Anonymous pages become shared copy-on-write (write-protected
    /// in both); `ESRCH` for an unknown parent, `EEXIST` for a child pid in use.
    ///
    /// ```
    /// use anonmm_model::api::prelude::*;
    ///
    /// let mut sys = System::default();
    /// sys.spawn(Pid(1))?;
    /// let a = sys.sys_mmap(Pid(1), 0, PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)?;
    /// sys.touch(Pid(1), a, PAGE_SIZE, true, &|_| 5)?.expect("no signal");
    /// assert_eq!(sys.sys_fork(Pid(1), Pid(2))?, 2);
    /// assert_eq!(sys.maps(Pid(2)), sys.maps(Pid(1)));
    /// let (p, c) = (sys.page_at(Pid(1), a)?.unwrap(), sys.page_at(Pid(2), a)?.unwrap());
    /// assert_eq!((p.folio, p.writable), (c.folio, false));
    /// assert_eq!(sys.sys_fork(Pid(1), Pid(2)), Err(Errno::EEXIST));
    /// # Ok::<(), Errno>(())
    /// ```
    pub fn sys_fork(&mut self, parent: Pid, child: Pid) -> KResult<u64> {
        let pmm = self.vm.mm_of(parent)?;
        if self.vm.procs.contains_key(&child) {
            return Err(Errno::EEXIST);
        }
        let cmm = self.dup_mmap(pmm);
        let files = self.fs.dup_fd(self.vm.procs[&parent].files);
        self.vm.procs.insert(child, Process { mm: cmm, files, tgid: child });
        Ok(child.0 as u64)
    }

    /// A thread or CLONE_VM child: shares the mm; with `CLONE_FILES` in `flags` it also
    /// shares the descriptor table (a close or open in one is seen by the other), else it
    /// gets a copy (`copy_files`); with `CLONE_THREAD` it joins the creator's thread group.
    /// EINVAL for the flag combinations `copy_process` refuses ([`clone_flags_invalid`]);
    /// flags whose effect the model lacks ([`clone_not_modelled`]) are reported as not
    /// modelled.
    ///
    /// ```
    /// use anonmm_model::abi::{CLONE_FILES, CLONE_VM, O_CREAT, O_RDWR};
    /// use anonmm_model::api::prelude::*;
    ///
    /// let mut sys = System::default();
    /// sys.spawn(Pid(1))?;
    /// let fd = sys.sys_openat(Pid(1), "f", O_RDWR | O_CREAT)?;
    /// sys.sys_clone_vm(Pid(1), Pid(2), CLONE_VM | CLONE_FILES)?;
    /// sys.sys_close(Pid(2), fd)?;
    /// assert_eq!(sys.sys_close(Pid(1), fd), Err(Errno::EBADF));
    /// # Ok::<(), Errno>(())
    /// ```
    pub fn sys_clone_vm(&mut self, parent: Pid, child: Pid, flags: u64) -> KResult<u64> {
        use crate::abi::*;
        let mm = self.vm.mm_of(parent)?;
        if self.vm.procs.contains_key(&child) {
            return Err(Errno::EEXIST);
        }
        if clone_flags_invalid(flags) {
            return Err(Errno::EINVAL);
        }
        if let Some(what) = clone_not_modelled(flags) {
            self.not_modelled(what);
            return Err(Errno::EINVAL);
        }
        let pfiles = self.vm.procs[&parent].files;
        let files = if flags & crate::abi::CLONE_FILES != 0 {
            self.fs.tables[pfiles].users += 1;
            pfiles
        } else {
            self.fs.dup_fd(pfiles)
        };
        self.vm.mms[mm].users += 1;
        let tgid = if flags & CLONE_THREAD != 0 { self.vm.procs[&parent].tgid } else { child };
        self.vm.procs.insert(child, Process { mm, files, tgid });
        Ok(child.0 as u64)
    }

    /// vfork(2), which is `clone(CLONE_VM | CLONE_VFORK | SIGCHLD)`: the child borrows the
    /// parent's mm (no copy: the parent's pages stay writable and exclusive) and gets a copy
    /// of its descriptor table. The kernel then keeps the parent asleep in
    /// `wait_for_vfork_done` until the child execs or exits (`mm_release` →
    /// `complete_vfork_done`); the model does not schedule, so the caller must not run the
    /// parent meanwhile (the script runner refuses a step of a parent in vfork).
    ///
    /// ```
    /// use anonmm_model::api::prelude::*;
    ///
    /// let mut sys = System::default();
    /// sys.spawn(Pid(1))?;
    /// let a = sys.sys_mmap(Pid(1), 0, PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)?;
    /// sys.touch(Pid(1), a, PAGE_SIZE, true, &|_| 5)?.expect("no signal");
    /// assert_eq!(sys.sys_vfork(Pid(1), Pid(2))?, 2);
    /// sys.sys_execve(Pid(2))?;
    /// // The parent's page was never shared copy-on-write.
    /// assert!(sys.page_at(Pid(1), a)?.unwrap().writable);
    /// assert!(sys.maps(Pid(2)).is_empty());
    /// # Ok::<(), Errno>(())
    /// ```
    pub fn sys_vfork(&mut self, parent: Pid, child: Pid) -> KResult<u64> {
        use crate::abi::{CLONE_VFORK, CLONE_VM, SIGCHLD};
        self.sys_clone_vm(parent, child, CLONE_VM | CLONE_VFORK | SIGCHLD)
    }

    /// `dup_mmap`.
    fn dup_mmap(&mut self, pmm: MmId) -> MmId {
        let mut m = Mm::new(&self.cfg);
        m.brk = self.vm.mms[pmm].brk;
        m.start_brk = self.vm.mms[pmm].start_brk;
        m.mmap_base = self.vm.mms[pmm].mmap_base;
        m.total_vm = self.vm.mms[pmm].total_vm;
        // arch_dup_pkeys: the child has the same pkeys (and the same PKRU).
        m.execute_only_pkey = self.vm.mms[pmm].execute_only_pkey;
        let cmm = self.vm.mms.alloc(m);
        let pvmas: Vec<VmaId> = self.vm.mms[pmm].vmas.values().map(|e| e.id).collect();
        for pv in pvmas {
            let pflags = self.vm.vmas[pv].flags;
            if pflags.contains(VmFlags::DONTCOPY) {
                let pages = self.vm.vmas[pv].pages();
                self.vm.mms[cmm].total_vm -= pages.min(self.vm.mms[cmm].total_vm);
                continue;
            }
            let mut v = self.vm.vmas[pv].clone();
            v.mm = cmm;
            v.chain = crate::vma::VmaChain::new();
            v.flags -= VmFlags::LOCKED_MASK;
            // dup_userfaultfd: the context lacks UFFD_FEATURE_EVENT_FORK, so the child's
            // VMA is unregistered (userfaultfd_reset_ctx).
            v.uffd = None;
            v.flags -= VmFlags::UFFD_FLAGS;
            if let Some(f) = v.file {
                self.fs.files[f].refs += 1;
            }
            let wipe = pflags.contains(VmFlags::WIPEONFORK);
            if wipe {
                v.anon_vma = None;
            }
            let cv = self.vm.vma_link(v);
            if !wipe {
                self.rmap.anon_vma_fork(&mut self.vm, &mut self.trace, cv, pv);
                // vma_needs_copy: only VMAs with an anon_vma or a VM_COPY_ON_FORK flag
                // (VM_MAYBE_GUARD: guard markers cannot be faulted back in) copy their
                // page tables; the rest fault in lazily.
                if self.vm.vmas[pv].anon_vma.is_some() || pflags.contains(VmFlags::MAYBE_GUARD) {
                    self.copy_page_range(pmm, cmm, pv, cv);
                }
            }
        }
        cmm
    }

    /// `copy_page_range`: share every present page with the child, write-protecting both
    /// sides of a COW mapping and clearing PageAnonExclusive. A pinned exclusive page is
    /// copied for the child at once (`copy_present_page`). Swap and migration entries are
    /// shared too (`copy_nonpresent_pte`).
    fn copy_page_range(&mut self, pmm: MmId, cmm: MmId, pv: VmaId, cv: VmaId) {
        let (start, end) = (self.vm.vmas[pv].start, self.vm.vmas[pv].end);
        let cow = self.vm.vmas[pv].is_cow_mapping();
        let shared = self.vm.vmas[pv].flags.contains(VmFlags::SHARED);
        for (a, folio, _) in self.vm.mms[pmm].pt.huge_in(start, end) {
            // copy_huge_pmd: folio_try_dup_anon_rmap_pmd fails for a maybe-pinned exclusive
            // THP: the PMD is split and its pages copied one by one below.
            if folio != HUGE_ZERO_FOLIO
                && self.mem.folios[folio].pincount > 0
                && self.mem.folios[folio].pages[0].anon_exclusive
            {
                self.vm.split_huge_pmd(&mut self.mem, &mut self.trace, pmm, a);
            }
        }
        for (a, folio, flags) in self.vm.mms[pmm].pt.huge_in(start, end) {
            // copy_huge_pmd
            let mut f = flags;
            if cow {
                f -= PteFlags::WRITE;
                if let Some(pf) = self.vm.mms[pmm].pt.pte_flags_mut(a) {
                    *pf -= PteFlags::WRITE;
                }
            }
            if folio != HUGE_ZERO_FOLIO {
                let fo = &mut self.mem.folios[folio];
                fo.entire_mapcount += 1;
                fo.add_large_mapcount(1, cmm);
                for p in fo.pages.iter_mut() {
                    p.anon_exclusive = false;
                }
            }
            self.vm.mms[cmm].pt.set_pmd(pmd_index(a), Pmd::Huge { folio, flags: f - PteFlags::ACCESSED });
        }
        for (a, folio, kind, flags) in self.vm.mms[pmm].pt.migration_pmds_in(start, end) {
            // copy_huge_pmd of a PMD migration entry: a writable or exclusive one becomes
            // plain readable in the parent, and the child gets the same; no reference.
            let kind = if kind.is_exclusive() { MigrationKind::Read } else { kind };
            let pmd = Pmd::Migration { folio, kind, flags };
            self.vm.mms[pmm].pt.set_pmd(pmd_index(a), pmd.clone());
            self.vm.mms[cmm].pt.set_pmd(pmd_index(a), pmd);
        }
        // copy_pmd_range → copy_pte_range allocates the child's PTE table for every parent
        // table in range, even an empty one.
        for key in self.vm.mms[pmm].pt.pmd_keys_in(start, end) {
            if matches!(self.vm.mms[pmm].pt.pmds.get(&key), Some(Pmd::Table(_))) {
                self.vm.mms[cmm].pt.alloc_table(VirtAddr(key << crate::types::PMD_SHIFT));
            }
        }
        for (a, pte) in self.vm.mms[pmm].pt.ptes_in(start, end) {
            let child_pte = match pte {
                Pte::Present { folio, sub, flags } => {
                    let mut cf = flags - PteFlags::ACCESSED;
                    if shared {
                        cf -= PteFlags::DIRTY;
                    }
                    if folio != ZERO_FOLIO {
                        let anon = self.mem.folios[folio].is_anon();
                        if anon
                            && self.mem.folios[folio].pincount > 0
                            && self.mem.folios[folio].pages[sub as usize].anon_exclusive
                        {
                            // folio_try_dup_anon_rmap_pte fails: copy now.
                            let tag = self.mem.folios[folio].pages[sub as usize].tag;
                            let new = self.mem.folio_alloc(&mut self.trace, 0);
                            self.mem.folios[new].pages[0].tag = tag;
                            self.mem.folio_add_new_anon_rmap(&self.vm, new, cv, a, false);
                            // copy_present_page: folio_add_lru_vma (the child's VMA is
                            // never VM_LOCKED, so this mlocks nothing).
                            self.mem.folio_add_lru_vma(&self.vm, new, cv);
                            self.vm.mms[cmm].pt.set_pte(a, Pte::Present { folio: new, sub: 0, flags });
                            continue;
                        }
                        let fo = &mut self.mem.folios[folio];
                        fo.pages[sub as usize].mapcount += 1;
                        fo.add_large_mapcount(1, cmm);
                        if anon {
                            fo.pages[sub as usize].anon_exclusive = false;
                        }
                    }
                    if cow && flags.contains(PteFlags::WRITE) {
                        cf -= PteFlags::WRITE;
                        if let Some(pf) = self.vm.mms[pmm].pt.pte_flags_mut(a) {
                            *pf -= PteFlags::WRITE;
                        }
                    }
                    Pte::Present { folio, sub, flags: cf }
                }
                Pte::Swap { entry, exclusive } => {
                    // copy_nonpresent_pte: the slot gains a reference and the entry is marked
                    // shared in the parent too.
                    self.swap.swap_duplicate(entry);
                    if exclusive {
                        self.vm.mms[pmm].pt.set_pte(a, Pte::Swap { entry, exclusive: false });
                    }
                    Pte::Swap { entry, exclusive: false }
                }
                Pte::Migration { folio, sub, kind, flags } => {
                    // copy_nonpresent_pte: in a COW mapping a writable or exclusive entry
                    // becomes plain readable in both; the entry holds no reference to take.
                    let mut kind = kind;
                    if cow && kind.is_exclusive() {
                        kind = MigrationKind::Read;
                        self.vm.mms[pmm].pt.set_pte(a, Pte::Migration { folio, sub, kind, flags });
                    }
                    Pte::Migration { folio, sub, kind, flags }
                }
                // copy_nonpresent_pte → copy_pte_marker: guard markers are always copied.
                Pte::Guard => Pte::Guard,
                Pte::None => Pte::None,
            };
            self.vm.mms[cmm].pt.set_pte(a, child_pte);
        }
    }

    /// exit_group(2): the process goes; its mm goes with its last user (`exit_mmap`), and
    /// its descriptors are closed.
    pub fn sys_exit(&mut self, pid: Pid) -> KResult<()> {
        let files = self.vm.procs.get(&pid).ok_or(Errno::ESRCH)?.files;
        // A ring in a descriptor table another task keeps stays open, its buffers pinned,
        // with no process of the model's to hold them.
        if self.fs.tables[files].users > 1 && self.gup.pins.get(&pid).is_some_and(|p| !p.is_empty()) {
            self.not_modelled("exit of a task whose pinned buffers stay in a shared descriptor table");
            return Err(Errno::EINVAL);
        }
        let p = self.vm.procs.remove(&pid).ok_or(Errno::ESRCH)?;
        // exit_mm before exit_files: the userfaultfd's release finds the mm still there only
        // if another task uses it, and the descriptor goes only with the table's last user.
        let mm_lives = self.vm.mms[p.mm].users > 1;
        let table_lives = self.fs.tables[p.files].users > 1;
        self.put_files(p.files);
        self.mm_put(p.mm);
        self.release_pins(pid);
        self.release_migrations(pid);
        if let Some(ctx) = self.uffd.ctxs.remove(&pid)
            && mm_lives
            && !table_lives
        {
            self.userfaultfd_release(p.mm, ctx);
        }
        Ok(())
    }

    /// Drop a user of an mm; the last one tears it down (`exit_mmap`).
    fn mm_put(&mut self, mm: MmId) {
        self.vm.mms[mm].users -= 1;
        if self.vm.mms[mm].users > 0 {
            return;
        }
        if !self.cfg.kernel.profile().zap_skips_lru_drain {
            // Before 6.14 exit_mmap's zap drains the CPU's LRU batches
            // (`free_pages_and_swap_cache`): a real process always unmaps pages of its own.
            self.mem.lru_add_drain();
        }
        let vmas: Vec<VmaId> = self.vm.mms[mm].vmas.values().map(|e| e.id).collect();
        for &v in &vmas {
            let (s, e) = (self.vm.vmas[v].start, self.vm.vmas[v].end);
            // unmap_vmas: ZAP_FLAG_DROP_MARKER.
            self.zap_range_drop_markers(mm, s, e);
        }
        for v in vmas {
            self.vm.vma_detach(v);
            self.vma_free(v);
        }
        self.vm.mms.free(mm);
    }

    /// execve(2): a fresh, empty mm (the new image's mappings come from the trace). The old
    /// mm goes with its last user (a vfork child leaves its parent's to the parent); the
    /// task's long-term pins go (they are held by `O_CLOEXEC` io_uring descriptors, whose
    /// buffers the oracle's worker unregisters before it execs).
    pub fn sys_execve(&mut self, pid: Pid) -> KResult<u64> {
        let old = self.vm.mm_of(pid)?;
        self.release_pins(pid);
        let mm_lives = self.vm.mms[old].users > 1;
        let mm = self.vm.mms.alloc(Mm::new(&self.cfg));
        self.vm.procs.get_mut(&pid).expect("pid").mm = mm;
        self.mm_put(old);
        // begin_new_exec → unshare_files: the new image gets a table of its own.
        let t = self.vm.procs[&pid].files;
        let shared = self.fs.tables[t].users > 1;
        if shared {
            let own = self.fs.dup_fd(t);
            self.fs.tables[t].users -= 1;
            self.vm.procs.get_mut(&pid).expect("pid").files = own;
        }
        // The userfaultfd is O_CLOEXEC and worked on the old mm: closing it releases its
        // registrations there if that mm lives on (a CLONE_VM creator) and no shared table
        // still holds the descriptor.
        if let Some(ctx) = self.uffd.ctxs.remove(&pid)
            && mm_lives
            && !shared
        {
            self.userfaultfd_release(old, ctx);
        }
        Ok(0)
    }

    /// Every page address of `[start, end)`.
    pub fn pages_of(start: VirtAddr, end: VirtAddr) -> impl Iterator<Item = VirtAddr> {
        (start.0..end.0).step_by(PAGE_SIZE as usize).map(VirtAddr)
    }
}

/// Why the model cannot run a clone with `flags`, if it cannot: the flags that write the new
/// task's id to user memory (at pointers the script does not carry), that make a pidfd, or
/// that make namespaces.
pub fn clone_not_modelled(flags: u64) -> Option<&'static str> {
    use crate::abi::*;
    if flags & (CLONE_PARENT_SETTID | CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID) != 0 {
        Some(
            "clone with CLONE_PARENT_SETTID, CLONE_CHILD_SETTID or CLONE_CHILD_CLEARTID (the kernel writes the thread id to user memory at pointers the script does not give)",
        )
    } else if flags & CLONE_PIDFD != 0 {
        Some("clone with CLONE_PIDFD (a pidfd descriptor)")
    } else if flags & CLONE_NEW_NAMESPACES != 0 {
        Some("clone with a CLONE_NEW* flag (namespaces)")
    } else {
        None
    }
}

/// clone's EINVAL flag checks (`copy_process`, and `kernel_clone` for the legacy clone, which
/// passes `parent_tid` as the pidfd pointer too), made before anything is written or created.
/// CLONE_SIGHAND needs CLONE_VM, which a `clone_vm` has.
pub fn clone_flags_invalid(flags: u64) -> bool {
    use crate::abi::*;
    flags & (CLONE_NEWNS | CLONE_FS) == CLONE_NEWNS | CLONE_FS
        || flags & (CLONE_NEWUSER | CLONE_FS) == CLONE_NEWUSER | CLONE_FS
        || (flags & CLONE_THREAD != 0 && flags & CLONE_SIGHAND == 0)
        || (flags & CLONE_THREAD != 0 && flags & (CLONE_NEWUSER | CLONE_NEWPID) != 0)
        || (flags & CLONE_PIDFD != 0 && flags & (CLONE_PARENT_SETTID | CLONE_DETACHED) != 0)
}
