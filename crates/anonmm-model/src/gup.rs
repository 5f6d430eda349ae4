//! Long-term pins (mm/gup.c): `pin_user_pages(FOLL_WRITE | FOLL_LONGTERM)`, as io_uring's
//! `IORING_REGISTER_BUFFERS` takes them (`io_pin_pages`), and `unpin_user_pages`.
//!
//! The `pin(addr, len)` pseudo-call pins every page of the range for one registered buffer;
//! `unpin(addr, len)` releases the buffer pinned with exactly that range by the same process
//! (io_uring's unregister); a process's pins go when it exits (its ring is closed).
//!
//! A pinned folio counts one pin and one reference per pinned page (`folio->_pincount`; the
//! kernel adds `GUP_PIN_COUNTING_BIAS` to the refcount of a small folio, which only matters
//! as "more than the mappings"). Fork copies pinned exclusive pages (`copy_present_page`),
//! reclaim leaves them alone. The pinning mm's `MMF_HAS_PINNED` is implied: only the pinner
//! can map a pinned page (pinning made it exclusive, and nothing can share it afterwards).

use crate::errno::{Errno, KResult};
use crate::folio::{FolioId, HUGE_ZERO_FOLIO, ZERO_FOLIO};
use crate::fs::InodeKind;
use crate::mm::System;
use crate::pagetable::{Pte, PteFlags, Walk};
use crate::types::{PAGE_SIZE, Pid, VirtAddr, page_align};
use crate::vma::VmFlags;

/// The pin and migration tables (mm/gup.c, mm/migrate.c): what holds folios in place or is
/// moving them.
#[derive(Clone, Debug, Default)]
pub struct Gup {
    /// Long-term pins by process (`pin`), released by `unpin` or at exit.
    pub pins: std::collections::BTreeMap<Pid, Vec<Pin>>,
    /// Migrations in flight by the process that started them (`migrate`), finished by
    /// `migrate_done`, a wait on one of their entries, or the process's exit.
    pub migrations: std::collections::BTreeMap<Pid, Vec<crate::migrate::InFlight>>,
}

/// Largest buffer io_uring registers (`io_buffer_validate`: `SZ_1G`).
const MAX_PIN_BYTES: u64 = 1 << 30;

/// One registered buffer: its range and the folios pinned for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pin {
    /// The buffer's start, as given to `pin` (the key `unpin` matches).
    pub addr: u64,
    /// The buffer's length in bytes, as given to `pin`.
    pub len: u64,
    /// One entry per pinned page, in address order: a folio appears once per page pinned.
    pub folios: Vec<FolioId>,
}

impl System {
    /// `pin_user_pages(addr, len, FOLL_WRITE | FOLL_LONGTERM)` for one io_uring buffer: each
    /// page is faulted in for write unless a writable PTE maps it already (`follow_page_pte`
    /// with `can_follow_write_pte`), then pinned. A page that cannot be pinned for write (no
    /// VMA, no `VM_WRITE`, `VM_IO`/`VM_PFNMAP`, a shared regular file mapping that needs dirty
    /// tracking, a file page beyond EOF) fails the call with EFAULT: the pages pinned so far
    /// are unpinned (`io_pin_pages`), the faults stay done.
    pub fn sys_pin(&mut self, pid: Pid, addr: u64, len: u64) -> KResult<u64> {
        let mm = self.vm.mm_of(pid)?;
        if addr == 0 || len == 0 || len > MAX_PIN_BYTES {
            return Err(Errno::EFAULT);
        }
        let start = VirtAddr(addr).page_down();
        let end = addr.checked_add(len).and_then(page_align).ok_or(Errno::EFAULT)?;
        let mut pinned: Vec<FolioId> = Vec::new();
        let mut a = start;
        while a.0 < end {
            match self.pin_one(mm, a) {
                Some(f) => pinned.push(f),
                None => {
                    for f in pinned {
                        self.mem.unpin_folio(&mut self.swap, &mut self.trace, f);
                    }
                    return Err(Errno::EFAULT);
                }
            }
            a = a.plus(PAGE_SIZE);
        }
        if !self.cfg.kernel.profile().gup_longterm_file_check
            && let Err(e) = self.vm.io_pin_pages_file_check(&self.fs, mm, start, end)
        {
            for f in pinned {
                self.mem.unpin_folio(&mut self.swap, &mut self.trace, f);
            }
            return Err(e);
        }
        self.gup.pins.entry(pid).or_default().push(Pin { addr, len, folios: pinned });
        Ok(0)
    }

    /// `__get_user_pages` for one page with `FOLL_WRITE | FOLL_PIN | FOLL_LONGTERM`. A
    /// migration entry is not present: the fault waits for the migration and maps the new
    /// folio, which is the one pinned.
    fn pin_one(&mut self, mm: crate::mm::MmId, a: VirtAddr) -> Option<FolioId> {
        let vma = self.vm.mms[mm].vma_lookup(a)?;
        let v = &self.vm.vmas[vma];
        // check_vma_flags + writable_file_mapping_allowed
        if !v.flags.contains(VmFlags::WRITE) || v.flags.intersects(VmFlags::IO | VmFlags::PFNMAP) {
            return None;
        }
        if let Some(file) = v.file {
            let inode = self.fs.files[file].inode;
            let regular = matches!(self.fs.inodes[inode].kind, InodeKind::Regular { .. });
            // writable_file_mapping_allowed (6.5; before, io_uring's own check refuses).
            if regular
                && v.flags.contains(VmFlags::SHARED)
                && self.cfg.kernel.profile().gup_longterm_file_check
            {
                return None;
            }
        }
        let writable = match self.vm.mms[mm].pt.walk(a) {
            Walk::Pte(Pte::Present { flags, .. }) | Walk::Huge { flags, .. } => {
                flags.contains(PteFlags::WRITE)
            }
            _ => false,
        };
        // A fault beyond EOF (do_cow_fault prepares the anon_vma first) or to userfaultfd is
        // SIGBUS: EFAULT.
        if !writable && !self.handle_mm_fault(mm, vma, a, true) {
            return None;
        }
        let (folio, _sub) = match self.vm.mms[mm].pt.walk(a) {
            Walk::Pte(Pte::Present { folio, sub, .. }) | Walk::Huge { folio, sub, .. } => (folio, sub),
            _ => return None,
        };
        if folio == ZERO_FOLIO || folio == HUGE_ZERO_FOLIO {
            return None;
        }
        let f = &mut self.mem.folios[folio];
        f.pincount += 1;
        f.extra_refs += 1;
        Some(folio)
    }

    /// `unpin(addr, len)`: unregister the buffer this process pinned with exactly this range
    /// (`io_sqe_buffers_unregister`); EINVAL if there is none.
    pub fn sys_unpin(&mut self, pid: Pid, addr: u64, len: u64) -> KResult<u64> {
        self.vm.mm_of(pid)?;
        let list = self.gup.pins.get_mut(&pid).ok_or(Errno::EINVAL)?;
        let i = list.iter().position(|p| p.addr == addr && p.len == len).ok_or(Errno::EINVAL)?;
        let pin = list.remove(i);
        if list.is_empty() {
            self.gup.pins.remove(&pid);
        }
        for f in pin.folios {
            self.mem.unpin_folio(&mut self.swap, &mut self.trace, f);
        }
        Ok(0)
    }

    /// A process exits: its io_uring rings close and their buffers are unpinned. (The kernel
    /// frees a closed ring's buffers from a work queue, `io_ring_exit_work`, soon after; the
    /// model, and the oracle, which unregisters them before the task exits, take it as done
    /// at the exit, so that a fork right after sees no pin.)
    pub fn release_pins(&mut self, pid: Pid) {
        for pin in self.gup.pins.remove(&pid).unwrap_or_default() {
            for f in pin.folios {
                self.mem.unpin_folio(&mut self.swap, &mut self.trace, f);
            }
        }
    }
}

impl crate::mm::Vm {
    /// `io_pin_pages` before 6.5: once every page is pinned, io_uring refuses a buffer whose
    /// pages are not all in VMAs of the same file (EINVAL) or that is file-backed but not
    /// shmem (EOPNOTSUPP), and unpins it.
    fn io_pin_pages_file_check(
        &self,
        fs: &crate::fs::Fs,
        mm: crate::mm::MmId,
        start: VirtAddr,
        end: u64,
    ) -> Result<(), Errno> {
        let file_of = |a: VirtAddr| self.mms[mm].vma_lookup(a).and_then(|v| self.vmas[v].file);
        let first = file_of(start);
        let mut a = start;
        while a.0 < end {
            let file = file_of(a);
            if file != first {
                return Err(Errno::EINVAL);
            }
            if let Some(f) = file
                && !matches!(fs.inodes[fs.files[f].inode].kind, InodeKind::Shmem)
            {
                return Err(Errno::EOPNOTSUPP);
            }
            a = a.plus(PAGE_SIZE);
        }
        Ok(())
    }
}

impl crate::folio::FolioStore {
    /// `unpin_user_page`: drop one pin; the folio goes if that was its last reference.
    fn unpin_folio(
        &mut self,
        swap: &mut crate::swap::SwapDevice,
        trace: &mut crate::stats::Trace,
        folio: FolioId,
    ) {
        let f = &mut self.folios[folio];
        f.pincount -= 1;
        f.extra_refs -= 1;
        swap.free_swap_cache(self, trace, folio);
        self.folio_put_if_unused(trace, folio);
    }
}
