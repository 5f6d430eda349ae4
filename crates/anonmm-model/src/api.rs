//! Conveniences for embedding the model: a [`prelude`] of the types and constants a caller
//! needs, and typed per-process views ([`System::page_at`], [`System::proc_maps`],
//! [`System::vma_count`]) that answer `ESRCH` for an unknown process instead of an empty
//! result.
//!
//! ```
//! use anonmm_model::api::prelude::*;
//!
//! let mut sys = System::default();
//! sys.spawn(Pid(1))?;
//! let a = sys.sys_mmap(Pid(1), 0, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)?;
//! sys.touch(Pid(1), a, 4096, true, &|_| 7)?.expect("no signal");
//! let page = sys.page_at(Pid(1), a)?.expect("faulted");
//! assert_eq!((page.tag, page.writable), (7, true));
//! assert_eq!(sys.page_at(Pid(1), a + 4096)?, None); // never touched
//! assert_eq!(sys.vma_count(Pid(1))?, 1);
//! assert_eq!(sys.proc_maps(Pid(9)), Err(Errno::ESRCH));
//! # Ok::<(), Errno>(())
//! ```

use crate::errno::KResult;
use crate::folio::FolioId;
use crate::mm::System;
use crate::pagetable::{Pte, PteFlags, Walk};
use crate::types::{Pid, VirtAddr};

/// Everything an embedding program usually names: `use anonmm_model::api::prelude::*;`.
pub mod prelude {
    pub use super::MappedPage;
    pub use crate::abi::{
        MADV_COLD, MADV_DONTFORK, MADV_DONTNEED, MADV_FREE, MADV_HUGEPAGE, MADV_NOHUGEPAGE, MADV_PAGEOUT,
        MADV_POPULATE_READ, MADV_POPULATE_WRITE, MAP_ANONYMOUS, MAP_FIXED, MAP_FIXED_NOREPLACE,
        MAP_NORESERVE, MAP_POPULATE, MAP_PRIVATE, MAP_SHARED, MREMAP_DONTUNMAP, MREMAP_FIXED, MREMAP_MAYMOVE,
        MREMAP_MUST_RELOCATE_ANON, MREMAP_RELOCATE_ANON, PROT_EXEC, PROT_NONE, PROT_READ, PROT_WRITE,
    };
    pub use crate::errno::{Errno, KResult, Signal};
    pub use crate::fault::TouchSignal;
    pub use crate::folio::{FolioId, HUGE_ZERO_FOLIO, ZERO_FOLIO};
    pub use crate::mm::{Config, System, ThpMode};
    pub use crate::policy::Policy;
    pub use crate::rmap::RmapHit;
    pub use crate::types::{PAGE_SIZE, PMD_SIZE, PgOff, Pid, VirtAddr};
}

/// The page a process maps at an address, as its page table holds it (PTE or PMD leaf).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MappedPage {
    /// The folio mapped there: [`crate::folio::ZERO_FOLIO`] (or `HUGE_ZERO_FOLIO`) after a
    /// read fault of untouched anonymous memory. `System::mem.folios[folio]` has its `index`,
    /// `mapping` and mapcounts, and [`Rmap::rmap_walk_anon`](crate::rmap::Rmap::rmap_walk_anon) takes it.
    pub folio: FolioId,
    /// Which page of the folio (0 for a small folio).
    pub page: u16,
    /// What the page holds: 0 for zero-filled, else the tag of the last write (the value
    /// `touch`'s `tag_of` gave).
    pub tag: u64,
    /// The entry is writable (false for a COW-shared page after fork, or the zero page).
    pub writable: bool,
    /// Mapped by a PMD leaf (a THP), not a PTE.
    pub huge: bool,
}

impl System {
    /// The page `pid` maps at `addr` (any address inside the page), or `None` when nothing
    /// present is there: no VMA, never faulted, swapped out or under migration.
    /// `ESRCH` for an unknown process. Never panics, whatever the address.
    ///
    /// ```
    /// use anonmm_model::api::prelude::*;
    ///
    /// let mut sys = System::default();
    /// sys.spawn(Pid(1))?;
    /// let a = sys.sys_mmap(Pid(1), 0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)?;
    /// sys.touch(Pid(1), a, 1, false, &|_| 0)?.expect("no signal");
    /// let p = sys.page_at(Pid(1), a + 100)?.expect("read fault maps the zero page");
    /// assert_eq!((p.folio, p.tag, p.writable), (ZERO_FOLIO, 0, false));
    /// assert_eq!(sys.page_at(Pid(1), u64::MAX)?, None);
    /// assert_eq!(sys.page_at(Pid(2), a), Err(Errno::ESRCH));
    /// # Ok::<(), Errno>(())
    /// ```
    pub fn page_at(&self, pid: Pid, addr: u64) -> KResult<Option<MappedPage>> {
        let mm = self.vm.mm_of(pid)?;
        let (folio, page, flags, huge) = match self.vm.mms[mm].pt.walk(VirtAddr(addr)) {
            Walk::Pte(Pte::Present { folio, sub, flags }) => (folio, sub, flags, false),
            Walk::Huge { folio, sub, flags } => (folio, sub, flags, true),
            _ => return Ok(None),
        };
        let tag = self.mem.folios[folio].pages[page as usize].tag;
        Ok(Some(MappedPage { folio, page, tag, writable: flags.contains(PteFlags::WRITE), huge }))
    }

    /// `/proc/pid/maps` as [`System::maps`] prints it, but `ESRCH` for an unknown process
    /// rather than no lines.
    ///
    /// ```
    /// use anonmm_model::api::prelude::*;
    ///
    /// let mut sys = System::default();
    /// sys.spawn(Pid(1))?;
    /// assert_eq!(sys.proc_maps(Pid(1))?, Vec::<String>::new()); // an empty address space
    /// sys.sys_exit(Pid(1))?;
    /// assert_eq!(sys.proc_maps(Pid(1)), Err(Errno::ESRCH));
    /// # Ok::<(), Errno>(())
    /// ```
    pub fn proc_maps(&self, pid: Pid) -> KResult<Vec<String>> {
        self.vm.mm_of(pid)?;
        Ok(self.maps(pid))
    }

    /// How many VMAs the process's address space holds (`mm->map_count`, the number of
    /// `/proc/pid/maps` lines); `ESRCH` for an unknown process.
    ///
    /// ```
    /// use anonmm_model::api::prelude::*;
    ///
    /// let mut sys = System::default();
    /// sys.spawn(Pid(1))?;
    /// let rw = PROT_READ | PROT_WRITE;
    /// let a = sys.sys_mmap(Pid(1), 0, 3 * 4096, rw, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)?;
    /// sys.sys_mprotect(Pid(1), a + 4096, 4096, PROT_READ)?; // splits the VMA in three
    /// assert_eq!(sys.vma_count(Pid(1))?, 3);
    /// # Ok::<(), Errno>(())
    /// ```
    pub fn vma_count(&self, pid: Pid) -> KResult<usize> {
        Ok(self.vm.mms[self.vm.mm_of(pid)?].map_count())
    }
}
