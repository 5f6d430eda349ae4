//! `/proc/pid/maps` and `/proc/pid/pagemap` views (fs/proc/task_mmu.c: `show_map_vma`,
//! `get_vma_name`, `pte_to_pagemap_entry`).
//!
//! File identity is printed as the oracle normalises the kernel's: regular files show
//! device `00:00` and inodes numbered in creation order; shared anonymous memory shows
//! device `00:01` and its shmem objects numbered in creation order.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::folio::{HUGE_ZERO_FOLIO, ZERO_FOLIO};
use crate::fs::InodeKind;
use crate::mm::{MmId, System};
use crate::pagetable::{Pmd, Pte, Walk, pmd_index, pte_index};
use crate::types::{PAGE_SHIFT, Pid, VirtAddr};
use crate::vma::{VmFlags, VmaId};

impl System {
    /// One `/proc/pid/maps` line, exactly as `show_map_vma` prints it.
    pub fn maps_line(&self, mm: MmId, vma: VmaId) -> String {
        let v = &self.vm.vmas[vma];
        let f = v.flags;
        let mut line = String::with_capacity(96);
        let (mut pgoff, mut dev, mut ino, mut name) = (0u64, "00:00", 0u64, None::<String>);
        if let Some(file) = v.file {
            let inode = &self.fs.inodes[self.fs.files[file].inode];
            pgoff = v.pgoff.0 << PAGE_SHIFT;
            ino = inode.ino;
            match &inode.kind {
                InodeKind::Regular { path } => name = Some(path.clone()),
                InodeKind::Shmem => {
                    dev = "00:01";
                    name = Some(match &v.anon_name {
                        Some(n) => format!("[anon_shmem:{n}]"),
                        None => "/dev/zero (deleted)".to_string(),
                    });
                }
            }
        } else if let Some(s) = &v.special {
            name = Some(s.to_string());
        } else {
            let m = &self.vm.mms[mm];
            let heap = if self.cfg.kernel.profile().heap_name_overlap_only {
                v.start < m.brk && v.end > m.start_brk
            } else {
                v.start <= m.brk && v.end >= m.start_brk
            };
            if heap {
                name = Some("[heap]".to_string());
            } else if let Some(n) = &v.anon_name {
                name = Some(format!("[anon:{n}]"));
            }
        }
        let _ = write!(
            line,
            "{:08x}-{:08x} {}{}{}{} {:08x} {} {} ",
            v.start.0,
            v.end.0,
            if f.contains(VmFlags::READ) { 'r' } else { '-' },
            if f.contains(VmFlags::WRITE) { 'w' } else { '-' },
            if f.contains(VmFlags::EXEC) { 'x' } else { '-' },
            if f.contains(VmFlags::MAYSHARE) { 's' } else { 'p' },
            pgoff,
            dev,
            ino
        );
        if let Some(n) = name {
            while line.len() < 72 {
                line.push(' ');
            }
            line.push(' ');
            line.push_str(&n);
        }
        line
    }

    /// `/proc/pid/maps` of a process: one line per VMA, in address order, without the
    /// newline. An unknown process has no lines ([`System::proc_maps`] says `ESRCH`).
    ///
    /// ```
    /// use anonmm_model::api::prelude::*;
    ///
    /// let mut sys = System::default();
    /// sys.spawn(Pid(1))?;
    /// let fixed = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED;
    /// sys.sys_mmap(Pid(1), 0x2000_0000_0000, 0x3000, PROT_READ | PROT_WRITE, fixed, -1, 0)?;
    /// sys.sys_mprotect(Pid(1), 0x2000_0000_2000, 0x1000, PROT_READ | PROT_EXEC)?;
    /// assert_eq!(
    ///     sys.maps(Pid(1)),
    ///     [
    ///         "200000000000-200000002000 rw-p 00000000 00:00 0 ",
    ///         "200000002000-200000003000 r-xp 00000000 00:00 0 ",
    ///     ]
    /// );
    /// assert!(sys.maps(Pid(2)).is_empty());
    /// # Ok::<(), Errno>(())
    /// ```
    pub fn maps(&self, pid: Pid) -> Vec<String> {
        let Some(p) = self.vm.procs.get(&pid) else { return Vec::new() };
        self.vm.mms[p.mm].vmas.values().map(|e| self.maps_line(p.mm, e.id)).collect()
    }

    /// Every present, swapped or migrating page of a process, as pagemap shows it: the page,
    /// bit 56 (the page is mapped exactly once: `folio_precise_page_mapcount == 1`), and its
    /// tag.
    pub fn pagemap(&self, pid: Pid) -> Vec<RawPte> {
        let Some(p) = self.vm.procs.get(&pid) else { return Vec::new() };
        let mm = &self.vm.mms[p.mm];
        let mut out = Vec::new();
        for e in mm.vmas.values() {
            let v = &self.vm.vmas[e.id];
            if v.start >= v.end {
                continue;
            }
            // One PMD lookup per 2 MiB, not per page: a 2 GiB VMA has 512K pages, and the
            // oracle tests take this view after every step.
            let keys = pmd_index(v.start)..=pmd_index(VirtAddr(v.end.0 - 1));
            for (key, pmd) in mm.pt.pmds.range(keys) {
                if matches!(pmd, Pmd::Table(t) if t.used == 0) {
                    continue;
                }
                let base = key << crate::types::PMD_SHIFT;
                let lo = base.max(v.start.0);
                let hi = (base + crate::types::PMD_SIZE).min(v.end.0);
                let mut a = lo;
                while a < hi {
                    let i = pte_index(VirtAddr(a));
                    let w = match pmd {
                        Pmd::Table(t) => Walk::Pte(t.ptes[i]),
                        Pmd::Huge { folio, flags } => {
                            Walk::Huge { folio: *folio, sub: i as u16, flags: *flags }
                        }
                        Pmd::Migration { folio, kind, flags } => {
                            Walk::PmdMigration { folio: *folio, sub: i as u16, kind: *kind, flags: *flags }
                        }
                    };
                    out.extend(self.pagemap_entry(w, a));
                    a += crate::types::PAGE_SIZE;
                }
            }
        }
        out
    }

    fn pagemap_entry(&self, w: Walk, a: u64) -> Option<RawPte> {
        // pagemap_pmd_range decides PM_MMAP_EXCLUSIVE once, from the head page (before 6.15,
        // from each subpage: Profile::pagemap_thp_exclusive_from_head).
        let from_head = self.cfg.kernel.profile().pagemap_thp_exclusive_from_head;
        let excl_page = |sub: u16| if from_head && matches!(w, Walk::Huge { .. }) { 0 } else { sub as usize };
        match w {
            Walk::Pte(Pte::Present { folio, sub, .. }) | Walk::Huge { folio, sub, .. } => {
                if folio == ZERO_FOLIO {
                    return Some(RawPte { addr: a, page: RawPage::Zero, exclusive: false, tag: 0 });
                }
                let f = &self.mem.folios[folio];
                Some(RawPte {
                    addr: a,
                    page: RawPage::Id(((folio.0 as u64) << 9) | sub as u64),
                    exclusive: folio != HUGE_ZERO_FOLIO && f.page_mapcount(excl_page(sub)) == 1,
                    tag: f.pages[sub as usize].tag,
                })
            }
            Walk::Pte(Pte::Swap { .. }) => {
                Some(RawPte { addr: a, page: RawPage::Swap, exclusive: false, tag: 0 })
            }
            // pte_to_pagemap_entry / pagemap_pmd_range: PM_SWAP, the migration swap type and
            // the PFN as offset; never PM_MMAP_EXCLUSIVE (only present pages get it).
            Walk::Pte(Pte::Migration { .. }) | Walk::PmdMigration { .. } => {
                Some(RawPte { addr: a, page: RawPage::Migration, exclusive: false, tag: 0 })
            }
            // pte_to_pagemap_entry: PM_SWAP | PM_GUARD_REGION.
            Walk::Pte(Pte::Guard) => Some(RawPte { addr: a, page: RawPage::Guard, exclusive: false, tag: 0 }),
            Walk::Pte(Pte::None) | Walk::NoTable => None,
        }
    }

    /// The raw view of every live process (before page renaming).
    pub fn raw_view(&self) -> BTreeMap<Pid, RawProc> {
        self.vm
            .procs
            .keys()
            .map(|&pid| {
                (pid, RawProc { maps: self.maps(pid), ptes: self.pagemap(pid), ..Default::default() })
            })
            .collect()
    }
}

impl System {
    /// What a read of `a` would return without faulting: the present page's tag, the page
    /// cache's for an absent file page, zero for an absent anonymous page (None if unmapped).
    pub fn read_tag(&self, mm: crate::mm::MmId, a: VirtAddr) -> Option<u64> {
        use crate::pagetable::{Pte, Walk};
        let vma = self.vm.mms[mm].vma_lookup(a)?;
        match self.vm.mms[mm].pt.walk(a) {
            Walk::Pte(Pte::Present { folio, sub, .. }) | Walk::Huge { folio, sub, .. } => {
                return Some(self.mem.folios[folio].pages[sub as usize].tag);
            }
            Walk::Pte(Pte::Swap { entry, .. }) => return Some(self.swap.swap_read_tag(&self.mem, entry)),
            // A page under migration still holds its contents (in the old folio); an entry
            // left behind by a finished migration names a freed folio: nothing to read.
            Walk::Pte(Pte::Migration { folio, sub, .. }) | Walk::PmdMigration { folio, sub, .. } => {
                let live = self.mem.folios.contains(folio) && self.mem.folios[folio].migrating;
                return live.then(|| self.mem.folios[folio].pages.get(sub as usize).map(|p| p.tag)).flatten();
            }
            _ => {}
        }
        let v = &self.vm.vmas[vma];
        match v.file {
            None => Some(0),
            Some(f) => {
                let inode = self.fs.files[f].inode;
                let idx = v.linear_page_index(a).0;
                Some(self.fs.inodes[inode].cache.get(&idx).map_or(0, |&fo| self.mem.folios[fo].pages[0].tag))
            }
        }
    }
}

/// A page as one side identifies it before renaming: a folio page in the model, a PFN in
/// the kernel. `ZERO` is the shared zero page on both sides.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum RawPage {
    /// The shared 4 KiB zero page (`ZERO_PAGE`); the huge zero folio's pages are `Id`s.
    Zero,
    /// A page's identity on its side: `folio << 9 | subpage` in the model, the PFN in the kernel.
    Id(u64),
    /// A swap entry (pagemap PM_SWAP); the page it holds is not identified.
    Swap,
    /// A migration entry (model only: pagemap reports it as PM_SWAP with a migration swap
    /// type, which the oracle never sees since it cannot hold a migration in flight).
    Migration,
    /// A guard marker (MADV_GUARD_INSTALL; pagemap PM_SWAP with PM_GUARD_REGION, bit 58).
    Guard,
}

/// One present (or swapped) PTE.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RawPte {
    /// The page's virtual address.
    pub addr: u64,
    /// What the entry maps.
    pub page: RawPage,
    /// `/proc/pid/pagemap` bit 56 (PM_MMAP_EXCLUSIVE).
    pub exclusive: bool,
    /// The tag stored in the page by the last write touch (0 if never written).
    pub tag: u64,
}

/// One process after a step, before page renaming.
#[derive(Clone, Debug, Default)]
pub struct RawProc {
    /// `/proc/pid/maps` lines, exactly as the kernel formats them (no trailing newline).
    pub maps: Vec<String>,
    /// Every present or swap PTE in ascending address order.
    pub ptes: Vec<RawPte>,
    /// `/proc/pid/smaps` entries, when asked for (`--smaps`); empty otherwise.
    pub smaps: Vec<crate::smaps::Smaps>,
    /// The internal state (VMAs' anon_vmas, folios), when asked for (`--internal`).
    pub internal: Option<crate::inspect::RawInternal>,
}

impl crate::mm::Vm {
    /// The resident set of a process in pages, as `/proc/pid/statm` counts it
    /// (`get_mm_rss`): present PTEs and PMD leaves (512 pages each); the shared zero pages are
    /// not counted (`do_anonymous_page` maps them without `inc_mm_counter`).
    pub fn rss_pages(&self, pid: Pid) -> crate::errno::KResult<u64> {
        let mm = self.mm_of(pid)?;
        let mut n = 0;
        for (_, pmd) in self.mms[mm].pt.pmds.iter() {
            match pmd {
                Pmd::Table(t) => {
                    n += t
                        .ptes
                        .iter()
                        .filter(|p| matches!(p, Pte::Present { folio, .. } if *folio != ZERO_FOLIO))
                        .count() as u64;
                }
                Pmd::Huge { folio, .. } if *folio != HUGE_ZERO_FOLIO => n += 512,
                _ => {}
            }
        }
        Ok(n)
    }
}
