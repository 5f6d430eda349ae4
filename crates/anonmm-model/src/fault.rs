//! Page faults (mm/memory.c, mm/huge_memory.c): `handle_mm_fault` with the zero page,
//! anonymous write faults (`do_anonymous_page`), huge PMD faults
//! (`do_huge_pmd_anonymous_page`, `do_huge_pmd_wp_page`), file faults with fault-around
//! (`do_read_fault`, `do_cow_fault`, `do_shared_fault`) and copy-on-write (`do_wp_page`,
//! `wp_can_reuse_anon_folio`, `wp_page_copy`).

use crate::arena::Arena;
use crate::errno::Signal;
use crate::folio::{Folio, FolioId, HUGE_ZERO_FOLIO, Mapping, PageState, ZERO_FOLIO};
use crate::fs::InodeId;
use crate::mm::{MmId, System, ThpMode};
use crate::pagetable::{Pmd, Pte, PteFlags, PteTable, Walk, pmd_index, pte_index};
use crate::rmap::AnonVmaId;
use crate::stats::Stats;
use crate::types::{
    HPAGE_PMD_ORDER, PAGE_SHIFT, PAGE_SIZE, PMD_SHIFT, PMD_SIZE, PTRS_PER_PTE, PgOff, Pid, VirtAddr,
    page_align,
};
use crate::vma::{VmFlags, Vma, VmaId};

/// `fault_around_bytes` (64 KiB) in pages.
const FAULT_AROUND_PAGES: u64 = 16;

/// The most a single call faults in page by page (touch, MAP_POPULATE, MADV_POPULATE_*):
/// beyond it the model would run out of memory before the kernel did, so the call is
/// reported as not modelled (`System::unsupported`) instead.
pub const MAX_FAULT_BYTES: u64 = 64 << 30;

/// Where a [`System::touch`] stopped: the signal and the page that raised it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TouchSignal {
    /// SIGSEGV (no VMA, no access, a guard marker) or SIGBUS (beyond EOF, userfaultfd).
    pub signal: Signal,
    /// The page that raised it.
    pub at: VirtAddr,
}

/// The touches [`System::touch_each`] runs, one at a time.
pub trait TouchFeed {
    /// The next touch (pid, address, length, whether a write), or `None`: no more.
    fn next(&mut self) -> Option<(Pid, u64, u64, bool)>;
    /// What a write of the touch last given stores in page `addr` (`touch`'s `tag_of`).
    fn tag(&self, addr: u64) -> u64;
    /// `run` narrowed to touches that [`TouchFeed::next`] would give as they come, asked
    /// once a run: a feed that knows where its touches must lie then gives them through
    /// [`TouchFeed::next_in`] with one test for both. Unchanged by default.
    #[inline(always)]
    fn narrow(&self, run: PageRun) -> PageRun {
        run
    }
    /// The next touch if `run` (as [`TouchFeed::narrow`] made it) holds it, else `Err` with
    /// what [`TouchFeed::next`] gives (which `run` may still hold: a feed need not say yes
    /// to every touch it could).
    #[inline(always)]
    fn next_in(&mut self, run: &PageRun) -> Result<Touch, Option<Touch>> {
        match self.next() {
            Some(t) if run.holds(t.0, t.1, t.2) => Ok(t),
            n => Err(n),
        }
    }
}

/// A touch a [`TouchFeed`] gives: pid, address, length, whether a write.
pub type Touch = (Pid, u64, u64, bool);

/// One-page touches by one process in `[lo, lo + width)`, whose end is page-aligned: a run
/// of them [`System::touch_each`] takes in one PTE table without a look at the VMA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRun {
    pid: Pid,
    lo: u64,
    width: u64,
}

impl PageRun {
    /// Touches by `pid` of one page in `[lo, hi)`; `hi` is rounded down to a page (none if
    /// it is at or below `lo`).
    pub fn new(pid: Pid, lo: u64, hi: u64) -> PageRun {
        PageRun { pid, lo, width: (hi & !(PAGE_SIZE - 1)).saturating_sub(lo) }
    }
    /// The process whose touches the run holds.
    pub fn pid(&self) -> Pid {
        self.pid
    }
    /// The touches this run and `[lo, hi)` both hold (`hi` rounded down to a page).
    pub fn within(&self, lo: u64, hi: u64) -> PageRun {
        PageRun::new(self.pid, self.lo.max(lo), (self.lo + self.width).min(hi))
    }
    /// Whether the run holds a touch of `len` bytes at `addr` by `pid`: one page (as
    /// [`System::touch`]'s first test has it) in the range. The range's end is page-aligned,
    /// so the page ends in it too. A fault of a trace is a whole page: that is asked first.
    #[inline(always)]
    pub fn holds(&self, pid: Pid, addr: u64, len: u64) -> bool {
        pid == self.pid
            && addr.wrapping_sub(self.lo) < self.width
            && ((len == PAGE_SIZE && addr & (PAGE_SIZE - 1) == 0)
                || len.wrapping_sub(1) < PAGE_SIZE - (addr & (PAGE_SIZE - 1)))
    }
}

/// Whether a touch of `len` bytes at `addr` covers one page that ends in the address space,
/// as [`System::touch`]'s first test has it.
#[inline(always)]
fn one_page(addr: u64, len: u64) -> bool {
    (addr & !(PAGE_SIZE - 1)).checked_add(PAGE_SIZE).is_some_and(|end| len.wrapping_sub(1) < end - addr)
}

/// The VMA of the last one-page touch of a [`System::touch_each`], as the touches after it
/// in the same VMA find it.
#[derive(Clone, Copy)]
struct FaultCursor {
    pid: Pid,
    mm: MmId,
    vma: VmaId,
    /// The VMA's range.
    lo: u64,
    hi: u64,
    /// A read passes `access_error`.
    read: bool,
    /// A write passes `access_error` and the VMA has its anon_vma: what a write fault
    /// needs of it.
    anon: Option<AnonFaultVma>,
}

impl System {
    /// The `touch` pseudo-call: fault every page of `[addr, addr + len)` in address order by
    /// reading or writing one byte (a write stores `tag_of(page)`), as a program touching
    /// page after page does. The first page that raises a signal stops it: the pages before
    /// it stay touched, and whatever the kernel does on the way to the signal is done (a
    /// read fault beyond EOF maps the cached pages around it first, a write fault beyond EOF
    /// of a private file mapping prepares the VMA's anon_vma), and the signal is returned
    /// with the page that raised it.
    ///
    /// The outer `Result` is `ESRCH` for an unknown process; the inner one is the signal.
    /// Any address and length are accepted: a range reaching past the address space is
    /// SIGSEGV at its first unmapped page. Touching more than [`MAX_FAULT_BYTES`] of mapped
    /// memory at once is not modelled: nothing is touched and [`System::unsupported`] says so.
    ///
    /// ```
    /// use anonmm_model::api::prelude::*;
    ///
    /// let mut sys = System::default();
    /// sys.spawn(Pid(1))?;
    /// let a = sys.sys_mmap(Pid(1), 0, 2 * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)?;
    /// // Write both pages, each one's tag being its page number.
    /// assert_eq!(sys.touch(Pid(1), a, 2 * PAGE_SIZE, true, &|addr| addr >> 12)?, Ok(()));
    /// assert_eq!(sys.page_at(Pid(1), a + PAGE_SIZE)?.map(|p| p.tag), Some((a >> 12) + 1));
    /// assert_eq!(sys.trace.stats.faults, 2);
    /// // One page past the mapping: SIGSEGV there, after the two pages before it.
    /// let segv = |at| Err(TouchSignal { signal: Signal::SIGSEGV, at: VirtAddr(at) });
    /// assert_eq!(sys.touch(Pid(1), a, 3 * PAGE_SIZE, true, &|_| 7)?, segv(a + 2 * PAGE_SIZE));
    /// assert_eq!(sys.page_at(Pid(1), a + PAGE_SIZE)?.map(|p| p.tag), Some(7));
    /// assert_eq!(sys.touch(Pid(1), u64::MAX, 2, false, &|_| 0)?, segv(u64::MAX & !(PAGE_SIZE - 1)));
    /// assert_eq!(sys.touch(Pid(2), a, 1, false, &|_| 0), Err(Errno::ESRCH));
    /// # Ok::<(), Errno>(())
    /// ```
    pub fn touch(
        &mut self,
        pid: Pid,
        addr: u64,
        len: u64,
        write: bool,
        tag_of: &dyn Fn(u64) -> u64,
    ) -> Result<Result<(), TouchSignal>, crate::errno::Errno> {
        let mm = self.vm.mm_of(pid)?;
        let start = VirtAddr(addr).page_down();
        // One page, the way replay faults: the same checks and fault steps as the loop
        // below, without its bookkeeping. The last page of the address space, which cannot
        // be touched (its end does not fit), takes the long way to its SIGSEGV.
        if let Some(end) = start.0.checked_add(PAGE_SIZE)
            && len.wrapping_sub(1) < end - addr
        {
            let Some(vma) = self.vm.mms[mm].vma_lookup(start).or_else(|| self.expand_stack(mm, start)) else {
                return Ok(Err(TouchSignal { signal: Signal::SIGSEGV, at: start }));
            };
            if let Some(sig) = self.vm.access_error_vma(vma, write) {
                return Ok(Err(TouchSignal { signal: sig, at: start }));
            }
            return Ok(self.fault_vma_range(mm, vma, start, VirtAddr(end), write, tag_of));
        }
        if len == 0 {
            return Ok(Ok(()));
        }
        // A range past the end of the address space is SIGSEGV at its first unmapped page,
        // which comes before any mapped one: no VMA reaches the top.
        let Some(end) = addr.checked_add(len).and_then(page_align) else {
            return Ok(Err(TouchSignal { signal: Signal::SIGSEGV, at: start }));
        };
        // The pages below run until the first hole; more than MAX_FAULT_BYTES of them would
        // not finish (a touch may be as long as the address space). This walk runs only for
        // a range that long, and ahead of the faults below, so that it is said before any
        // page is touched.
        let mut mapped = start;
        while end - start.0 > MAX_FAULT_BYTES
            && mapped.0 < end
            && mapped.0 - start.0 <= MAX_FAULT_BYTES
            && let Some(vma) = self.vm.mms[mm].vma_lookup(mapped)
        {
            mapped = self.vm.vmas[vma].end;
        }
        if mapped.0.min(end) - start.0 > MAX_FAULT_BYTES {
            self.not_modelled("touching more than 64 GiB");
            return Ok(Ok(()));
        }
        // Page by page, VMA by VMA: x86 `do_user_addr_fault` finds the VMA (none is
        // SIGSEGV) and checks its permissions (`access_error`), then `handle_mm_fault`
        // decides the rest (SIGBUS beyond EOF or from userfaultfd).
        let mut a = start;
        while a.0 < end {
            // The first page below a stack grows it (pages run upwards, so this is the lowest).
            let Some(vma) = self.vm.mms[mm].vma_lookup(a).or_else(|| self.expand_stack(mm, a)) else {
                return Ok(Err(TouchSignal { signal: Signal::SIGSEGV, at: a }));
            };
            if let Some(sig) = self.vm.access_error_vma(vma, write) {
                return Ok(Err(TouchSignal { signal: sig, at: a }));
            }
            let vend = VirtAddr(self.vm.vmas[vma].end.0.min(end));
            if let Err(sig) = self.fault_vma_range_outlined(mm, vma, a, vend, write, tag_of) {
                return Ok(Err(sig));
            }
            a = vend;
        }
        Ok(Ok(()))
    }

    /// Touches one after another, as replay runs a trace's page faults: each exactly as
    /// [`System::touch`] with the feed's tags, until the feed has no more (`None`) or a
    /// touch answers other than `Ok(Ok(()))` or meets what the model does not do
    /// ([`System::unsupported`]): that touch's answer.
    ///
    /// A one-page touch in the private anonymous VMA of the touch before it finds the
    /// process, the VMA and its permissions as that one left them (only these faults ran
    /// since, and a fault that took more than a PTE changes nothing here: the next looks
    /// again), so it goes straight to the PTE (`fault_pte_run`'s one-page steps).
    ///
    /// ```
    /// use anonmm_model::api::prelude::*;
    /// use anonmm_model::fault::TouchFeed;
    ///
    /// struct Pages(Vec<u64>, usize);
    /// impl TouchFeed for Pages {
    ///     fn next(&mut self) -> Option<(Pid, u64, u64, bool)> {
    ///         let a = *self.0.get(self.1)?;
    ///         self.1 += 1;
    ///         Some((Pid(1), a, 1, true))
    ///     }
    ///     fn tag(&self, addr: u64) -> u64 {
    ///         addr >> 12
    ///     }
    /// }
    /// let mut sys = System::default();
    /// sys.spawn(Pid(1))?;
    /// let a = sys.sys_mmap(Pid(1), 0, 2 * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)?;
    /// // Both pages, then the page past the mapping: SIGSEGV there, after the two.
    /// let mut feed = Pages(vec![a, a + PAGE_SIZE, a + 2 * PAGE_SIZE, a], 0);
    /// let segv = TouchSignal { signal: Signal::SIGSEGV, at: VirtAddr(a + 2 * PAGE_SIZE) };
    /// assert_eq!(sys.touch_each(&mut feed), Some(Ok(Err(segv))));
    /// assert_eq!((feed.1, sys.trace.stats.faults), (3, 2));
    /// assert_eq!(sys.page_at(Pid(1), a + PAGE_SIZE)?.map(|p| p.tag), Some((a >> 12) + 1));
    /// assert_eq!(sys.touch_each(&mut feed), None);
    /// assert_eq!(sys.trace.stats.faults, 3);
    /// # Ok::<(), Errno>(())
    /// ```
    pub fn touch_each(
        &mut self,
        feed: &mut impl TouchFeed,
    ) -> Option<Result<Result<(), TouchSignal>, crate::errno::Errno>> {
        let mut cursor: Option<FaultCursor> = None;
        let mut next = feed.next();
        while let Some(mut touch) = next {
            let (pid, addr, len, _) = touch;
            if one_page(addr, len) {
                let start = VirtAddr(addr).page_down();
                if cursor.is_none_or(|c| c.pid != pid || start.0 < c.lo || start.0 >= c.hi) {
                    cursor = self.fault_cursor(pid, start);
                }
                if let Some(c) = &cursor {
                    match self.cursor_faults(c, touch, feed) {
                        Ok(n) => {
                            next = n;
                            continue;
                        }
                        Err(t) => touch = t,
                    }
                }
            }
            cursor = None;
            let (pid, addr, len, write) = touch;
            let res = self.touch(pid, addr, len, write, &|a| feed.tag(a));
            if !matches!(res, Ok(Ok(()))) || self.unsupported.is_some() {
                return Some(res);
            }
            next = feed.next();
        }
        None
    }

    /// What [`System::touch`] would find for a one-page touch at `a` by `pid`, for the
    /// touches after it ([`System::touch_each`]): its VMA, when that is private and
    /// anonymous without userfaultfd (whose faults `fault_vma_range` sends the long way).
    #[inline]
    fn fault_cursor(&self, pid: Pid, a: VirtAddr) -> Option<FaultCursor> {
        let mm = self.vm.procs.mm_of(pid)?;
        let vma = self.vm.mms[mm].vma_lookup(a)?;
        let v = &self.vm.vmas[vma];
        if !v.is_anonymous() || v.flags.intersects(VmFlags::UFFD_FLAGS) {
            return None;
        }
        let write = self.vm.access_error_vma(vma, true).is_none() && v.anon_vma.is_some();
        Some(FaultCursor {
            pid,
            mm,
            vma,
            lo: v.start.0,
            hi: v.end.0,
            read: self.vm.access_error_vma(vma, false).is_none(),
            anon: write.then(|| AnonFaultVma::of(v)),
        })
    }

    /// One-page touches through `c` from `first` on ([`System::touch_each`]), while they
    /// fall in the same PTE table: for each, what `fault_vma_range` does in
    /// `fault_pte_run`, after the same checks. `Ok` with the first touch past the table (or
    /// `None`: the feed has no more), or `Err` with a touch that needs more, untouched (a
    /// permission fault, a write before the anon_vma, a huge page, anything but a plain
    /// PTE): `touch` decides it.
    #[inline(always)]
    fn cursor_faults(
        &mut self,
        c: &FaultCursor,
        first: Touch,
        feed: &mut impl TouchFeed,
    ) -> Result<Option<Touch>, Touch> {
        let a = VirtAddr(first.1).page_down();
        if if first.3 { c.anon.is_none() } else { !c.read } {
            return Err(first);
        }
        let key = pmd_index(a);
        let t = match self.vm.mms[c.mm].pt.pmds.get_mut(&key) {
            Some(Pmd::Table(t)) => t,
            Some(_) => return Err(first),
            None => {
                // A missing table: the THP fault path decides whether a huge page goes here.
                if self.thp_fault_allowed(c.vma, a) {
                    return Err(first);
                }
                match self.vm.mms[c.mm].pt.pmds.get_or_alloc_table(key) {
                    Pmd::Table(t) => t,
                    _ => return Err(first),
                }
            }
        };
        // The table's part of the VMA, and of it what the feed can give at once.
        let table = PageRun::new(first.0, c.lo.max(key << PMD_SHIFT), c.hi.min((key + 1) << PMD_SHIFT));
        let run = feed.narrow(table);
        let (folios, queued, stats) = (&mut self.mem.folios, &self.mem.lazyfree_batch, &mut self.trace.stats);
        let mut touch = first;
        loop {
            let (_, addr, _, write) = touch;
            let a = VirtAddr(addr).page_down();
            let served = match c.anon {
                Some(v) if write => {
                    let mut cx = AnonPteFault { folios: &mut *folios, queued, stats: &mut *stats, v };
                    anon_write_fault_pte(&mut cx, t, a, |x| feed.tag(x))
                }
                _ => !write && c.read && anon_read_fault_pte(t, a, stats),
            };
            if !served {
                return Err(touch);
            }
            touch = match feed.next_in(&run) {
                Ok(n) => n,
                Err(None) => return Ok(None),
                Err(Some(n)) if table.holds(n.0, n.1, n.2) => n,
                Err(Some(n)) => return Ok(Some(n)),
            };
        }
    }

    /// [`System::fault_vma_range`] out of line, for touches of more than one page: the
    /// one-page path has its own copy, inlined.
    #[inline(never)]
    fn fault_vma_range_outlined(
        &mut self,
        mm: MmId,
        vma: VmaId,
        a: VirtAddr,
        end: VirtAddr,
        write: bool,
        tag_of: &dyn Fn(u64) -> u64,
    ) -> Result<(), TouchSignal> {
        self.fault_vma_range(mm, vma, a, end, write, tag_of)
    }

    /// Fault `[a, end)` of `vma`, page by page, after the permission checks of
    /// [`System::touch`]: runs of PTEs through `fault_pte_run`, single present pages through
    /// `fault_resident`, the rest through `handle_mm_fault`, until a fault signals.
    #[inline(always)]
    fn fault_vma_range(
        &mut self,
        mm: MmId,
        vma: VmaId,
        mut a: VirtAddr,
        end: VirtAddr,
        write: bool,
        tag_of: &dyn Fn(u64) -> u64,
    ) -> Result<(), TouchSignal> {
        // The fast paths leave out userfaultfd, whose VMAs take every fault the long way.
        let fast = !self.vm.vmas[vma].flags.intersects(VmFlags::UFFD_FLAGS);
        while a < end {
            if fast {
                let next = self.fault_pte_run(mm, vma, a, end, write, tag_of);
                if next > a {
                    a = next;
                    continue;
                }
            }
            if !(fast && self.vm.fault_resident(&mut self.mem, &mut self.trace, mm, a, write, tag_of)) {
                if !self.handle_mm_fault(mm, vma, a, write) {
                    // handle_pte_marker: a guard marker is VM_FAULT_SIGSEGV.
                    let signal = if self.vm.mms[mm].pt.get_pte(a) == Pte::Guard {
                        Signal::SIGSEGV
                    } else {
                        Signal::SIGBUS
                    };
                    return Err(TouchSignal { signal, at: a });
                }
                if write {
                    self.set_page_tag(mm, a, tag_of(a.0));
                }
            }
            a = a.plus(PAGE_SIZE);
        }
        Ok(())
    }

    /// Fault a run of pages of one PTE table in a private anonymous VMA, for the cases that
    /// need nothing but the table and the folio: a present page read, or written through a
    /// writable PTE; a missing page read (the zero page) or written (a new exclusive folio,
    /// `do_anonymous_page`); a write to a read-only small anonymous folio or the zero page
    /// (`do_wp_page`: reuse or `wp_page_copy`), exactly as `handle_mm_fault` would, through
    /// the same [`AnonPteFault`] steps. A write needs the VMA's anon_vma (the full path
    /// prepares it); a read does not. Stops at the first page that needs more (a large or
    /// swap-cached folio, swap and migration entries, file pages) and returns its address,
    /// or the run's end. This is the hot path of replay: one table lookup for up to 512
    /// pages.
    #[inline(always)]
    fn fault_pte_run(
        &mut self,
        mm: MmId,
        vma: VmaId,
        start: VirtAddr,
        end: VirtAddr,
        write: bool,
        tag_of: &dyn Fn(u64) -> u64,
    ) -> VirtAddr {
        let v = &self.vm.vmas[vma];
        if !v.is_anonymous() || (write && v.anon_vma.is_none()) {
            return start;
        }
        let run_end = VirtAddr(end.0.min(start.pmd_down().0 + PMD_SIZE));
        let key = pmd_index(start);
        let t = match self.vm.mms[mm].pt.pmds.get_mut(&key) {
            Some(Pmd::Table(t)) => t,
            Some(_) => return start,
            None => {
                // A missing table: the THP fault path decides whether a huge page goes here.
                if self.thp_fault_allowed(vma, start) {
                    return start;
                }
                match self.vm.mms[mm].pt.pmds.get_or_alloc_table(key) {
                    Pmd::Table(t) => t,
                    _ => return start,
                }
            }
        };
        let mut a = start;
        if !write {
            while a < run_end && anon_read_fault_pte(t, a, &mut self.trace.stats) {
                a = a.plus(PAGE_SIZE);
            }
            return a;
        }
        let mut cx = AnonPteFault::new(&self.vm.vmas[vma], &mut self.mem, &mut self.trace.stats);
        while a < run_end && anon_write_fault_pte(&mut cx, t, a, tag_of) {
            a = a.plus(PAGE_SIZE);
        }
        a
    }

    /// Store a tag in the page mapped at `a` (after a write fault made it writable).
    fn set_page_tag(&mut self, mm: MmId, a: VirtAddr, tag: u64) {
        let (folio, sub) = match self.vm.mms[mm].pt.walk(a) {
            Walk::Pte(Pte::Present { folio, sub, .. }) => (folio, sub),
            Walk::Huge { folio, sub, .. } => (folio, sub),
            // Only a fault that stopped at behaviour the model lacks leaves no page.
            w => {
                debug_assert!(self.unsupported.is_some(), "write fault left no page at {a:?}: {w:?}");
                return;
            }
        };
        debug_assert!(folio != ZERO_FOLIO && folio != HUGE_ZERO_FOLIO);
        self.mem.folios[folio].pages[sub as usize].tag = tag;
    }

    /// `thp_vma_allowable_order` + `thp_vma_suitable_order` for a PMD fault at `a`.
    fn thp_fault_allowed(&self, vma: VmaId, a: VirtAddr) -> bool {
        let v = &self.vm.vmas[vma];
        if !v.is_anonymous() || v.flags.contains(VmFlags::NOHUGEPAGE) || v.flags.intersects(VmFlags::SPECIAL)
        {
            return false;
        }
        let enabled = match self.cfg.thp {
            ThpMode::Always => true,
            ThpMode::Madvise => v.flags.contains(VmFlags::HUGEPAGE),
            ThpMode::Never => false,
        };
        let h = a.pmd_down();
        enabled && h >= v.start && h.0 + PMD_SIZE <= v.end.0
    }

    /// `handle_mm_fault` for one page. False for `VM_FAULT_SIGBUS`: the fault went to
    /// userfaultfd (`handle_userfault` with `UFFD_FEATURE_SIGBUS`), or found a file page
    /// beyond EOF, or hit a guard marker (`handle_pte_marker`: VM_FAULT_SIGSEGV); what the
    /// kernel did before noticing stays done.
    pub fn handle_mm_fault(&mut self, mm: MmId, vma: VmaId, a: VirtAddr, write: bool) -> bool {
        self.trace.stats.faults += 1;
        if self.userfaultfd_missing_fault(mm, vma, a, write) {
            return false;
        }
        match self.vm.mms[mm].pt.walk(a) {
            Walk::NoTable if self.thp_fault_allowed(vma, a) => {
                self.do_huge_pmd_anonymous_page(mm, vma, a, write)
            }
            Walk::Huge { folio, sub, flags } => {
                if write && !flags.contains(PteFlags::WRITE) {
                    self.do_huge_pmd_wp_page(mm, vma, a, folio, sub);
                } else if write && let Some(f) = self.vm.mms[mm].pt.pte_flags_mut(a) {
                    *f |= PteFlags::DIRTY | PteFlags::ACCESSED;
                }
            }
            Walk::NoTable | Walk::Pte(Pte::None) => {
                if self.vm.vmas[vma].is_anonymous() {
                    self.do_anonymous_page(mm, vma, a, write);
                } else {
                    return self.do_fault(mm, vma, a, write);
                }
            }
            Walk::Pte(Pte::Present { flags, .. }) => {
                if write {
                    if flags.contains(PteFlags::WRITE) {
                        if let Some(f) = self.vm.mms[mm].pt.pte_flags_mut(a) {
                            *f |= PteFlags::DIRTY | PteFlags::ACCESSED;
                        }
                    } else {
                        self.do_wp_page(mm, vma, a);
                    }
                }
            }
            Walk::Pte(Pte::Swap { .. }) => {
                self.do_swap_page(mm, vma, a, write);
                if write && self.unsupported.is_none() {
                    self.handle_mm_fault(mm, vma, a, true);
                }
            }
            Walk::Pte(Pte::Migration { folio, .. }) | Walk::PmdMigration { folio, .. } => {
                // do_swap_page → migration_entry_wait (or pmd_migration_entry_wait), then the
                // fault is taken again.
                if self.migration_entry_wait(folio) {
                    self.handle_mm_fault(mm, vma, a, write);
                }
            }
            // do_swap_page → handle_pte_marker: VM_FAULT_SIGSEGV.
            Walk::Pte(Pte::Guard) => return false,
        }
        true
    }

    /// Whether a fault at `a` is a missing fault of a VMA registered with `VM_UFFD_MISSING`,
    /// which `handle_userfault` turns into SIGBUS; if so, what the kernel did before
    /// noticing is done: `do_anonymous_page` allocates the PTE table (and a write prepares
    /// the anon_vma, `vmf_anon_prepare`), `do_huge_pmd_anonymous_page` prepares the anon_vma,
    /// a shmem read fault maps the cached pages around first (`do_read_fault`) and
    /// `shmem_get_folio_gfp` finds no folio.
    pub(crate) fn userfaultfd_missing_fault(
        &mut self,
        mm: MmId,
        vma: VmaId,
        a: VirtAddr,
        write: bool,
    ) -> bool {
        if !self.vm.vmas[vma].flags.contains(VmFlags::UFFD_MISSING) {
            return false;
        }
        match self.vm.mms[mm].pt.walk(a) {
            Walk::NoTable if self.thp_fault_allowed(vma, a) => {
                self.rmap.anon_vma_prepare(&mut self.vm, &mut self.trace, vma);
                true
            }
            Walk::NoTable | Walk::Pte(Pte::None) => {
                if self.vm.vmas[vma].is_anonymous() {
                    self.vm.mms[mm].pt.alloc_table(a);
                    if write {
                        self.rmap.anon_vma_prepare(&mut self.vm, &mut self.trace, vma);
                    }
                    return true;
                }
                let inode = self.fs.vma_inode(&self.vm, vma);
                let index = self.vm.vmas[vma].linear_page_index(a);
                if self.fs.inodes[inode].cache.contains_key(&index.0) {
                    return false;
                }
                if !write {
                    self.fault_around(mm, vma, a);
                }
                true
            }
            _ => false,
        }
    }

    /// `do_anonymous_page`: a read maps the zero page; a write allocates an exclusive folio.
    fn do_anonymous_page(&mut self, mm: MmId, vma: VmaId, a: VirtAddr, write: bool) {
        if !write {
            self.vm.mms[mm].pt.set_pte(a, ZERO_PTE);
            return;
        }
        self.rmap.anon_vma_prepare(&mut self.vm, &mut self.trace, vma);
        let pte = self.anon_pte_fault(vma).new_folio_pte(a, 0);
        self.vm.mms[mm].pt.set_pte(a, pte);
    }

    /// `do_huge_pmd_anonymous_page`: the huge zero folio for reads, a new THP for writes.
    fn do_huge_pmd_anonymous_page(&mut self, mm: MmId, vma: VmaId, a: VirtAddr, write: bool) {
        let h = a.pmd_down();
        // vmf_anon_prepare comes first: even a huge-zero read fault gives the VMA its
        // anon_vma (so fork copies the PMD and merges see a faulted VMA).
        self.rmap.anon_vma_prepare(&mut self.vm, &mut self.trace, vma);
        if !write && self.cfg.thp_use_zero_page {
            // set_pmd: the PUD entry above now points to a PMD table too.
            self.vm.mms[mm]
                .pt
                .set_pmd(pmd_index(h), Pmd::Huge { folio: HUGE_ZERO_FOLIO, flags: PteFlags::ACCESSED });
            return;
        }
        self.map_new_thp(mm, vma, h, write);
    }

    fn map_new_thp(&mut self, mm: MmId, vma: VmaId, h: VirtAddr, write: bool) {
        self.rmap.anon_vma_prepare(&mut self.vm, &mut self.trace, vma);
        let folio = self.mem.folio_alloc(&mut self.trace, HPAGE_PMD_ORDER);
        self.trace.stats.thp_allocated += 1;
        self.mem.folio_add_new_anon_rmap(&self.vm, folio, vma, h, true);
        self.mem.folio_add_lru_vma(&self.vm, folio, vma);
        let mut flags = self.vm.new_pte_flags(vma, true);
        if !write {
            flags -= PteFlags::DIRTY;
        }
        self.vm.mms[mm].pt.set_pmd(pmd_index(h), Pmd::Huge { folio, flags });
    }

    /// `do_huge_pmd_wp_page`: a write to a read-only PMD. The huge zero folio is replaced
    /// by a new THP; an exclusive THP is reused; anything else is split and handled per PTE.
    fn do_huge_pmd_wp_page(&mut self, mm: MmId, vma: VmaId, a: VirtAddr, folio: FolioId, sub: u16) {
        let h = a.pmd_down();
        if folio == HUGE_ZERO_FOLIO && self.cfg.kernel.profile().huge_zero_wp_thp {
            self.vm.mms[mm].pt.pmds.remove(&pmd_index(h));
            self.map_new_thp(mm, vma, h, true);
            return;
        }
        if folio == HUGE_ZERO_FOLIO {
            // Before 6.13: `goto fallback`, the zero PMD is split into zero-page PTEs and the
            // write copies one page.
            self.vm.split_huge_pmd(&mut self.mem, &mut self.trace, mm, a);
            self.do_wp_page(mm, vma, a);
            return;
        }
        // pmd_page() is the head page: exclusivity of a PMD mapping lives there.
        let _ = sub;
        let f = &self.mem.folios[folio];
        let reuse = f.pages[0].anon_exclusive || (f.refcount() == 1 && f.is_anon());
        if reuse {
            self.mem.folio_move_anon_rmap(&self.vm, folio, vma);
            self.mem.folios[folio].pages[0].anon_exclusive = true;
            if let Some(fl) = self.vm.mms[mm].pt.pte_flags_mut(a) {
                *fl |= PteFlags::WRITE | PteFlags::DIRTY | PteFlags::ACCESSED;
            }
            return;
        }
        self.vm.split_huge_pmd(&mut self.mem, &mut self.trace, mm, a);
        self.do_wp_page(mm, vma, a);
    }

    /// `do_wp_page`: a write to a present, write-protected PTE.
    fn do_wp_page(&mut self, mm: MmId, vma: VmaId, a: VirtAddr) {
        let Pte::Present { folio, sub, .. } = self.vm.mms[mm].pt.get_pte(a) else { unreachable!() };
        if self.vm.vmas[vma].flags.contains(VmFlags::SHARED) && folio != ZERO_FOLIO {
            // wp_page_shared: the page cache page becomes writable in place, and
            // fault_dirty_shared_page marks it dirty (smaps shows it as dirty everywhere).
            self.vm.make_pte_writable(mm, a);
            self.mem.folios[folio].dirty = true;
            return;
        }
        if folio != ZERO_FOLIO && self.mem.folios[folio].is_anon() {
            let excl = self.mem.folios[folio].pages[sub as usize].anon_exclusive;
            if excl || self.wp_can_reuse_anon_folio(folio, vma) {
                let flags = self.vm.mms[mm].pt.pte_flags_mut(a).expect("a present PTE");
                wp_reuse(&mut self.mem.folios[folio].pages[sub as usize], flags, &mut self.trace.stats);
                return;
            }
        }
        self.wp_page_copy(mm, vma, a, folio, sub);
    }

    /// `wp_can_reuse_anon_folio`: our mapping holds the only reference.
    ///
    /// 6.1's `do_wp_page` asks the same of a page of a large folio (`page_count` is the
    /// folio's refcount): the last mapped page of a THP is reused, and `page_move_anon_rmap`
    /// moves the folio to the faulting VMA's anon_vma (`wp_reuse_refuses_large_folio` off).
    ///
    /// A large folio goes through `__wp_can_reuse_large_anon_folio`, which (in 6.18) only
    /// answers and leaves `folio->mapping` alone: no `folio_move_anon_rmap`. The folio may
    /// be PTE-mapped by several VMAs of this mm with different anon_vmas (split by
    /// `userfaultfd_register`, moved apart by mremap in a forked child, ...); moving it to
    /// the faulting VMA's anon_vma would hide the other mappings from rmap.
    fn wp_can_reuse_anon_folio(&mut self, folio: FolioId, vma: VmaId) -> bool {
        let f = &self.mem.folios[folio];
        let p = self.cfg.kernel.profile();
        if f.is_large() && p.wp_reuse_refuses_large_folio {
            // 6.12 never reuses a page of a large folio.
            if !p.wp_reuses_large_anon_folio {
                return false;
            }
            // __wp_can_reuse_large_anon_folio (6.15+): all references are mappings, all in
            // this mm, and more than one page is mapped.
            // Mapped by one mm: the folio's FOLIO_MM_IDS_SHARED bit is clear.
            let mapcount = f.total_mapcount();
            return !(mapcount <= 1
                || f.entire_mapcount > 0
                || f.mm_ids().shared
                || mapcount != f.refcount());
        }
        if !f.is_large() && self.mem.lazyfree_queued(folio) {
            // MADV_FREE's `lru_lazyfree` batch holds a reference, and the folio is still
            // PG_lru, so nothing drains it here (`lru_add_drain` only for a folio off the
            // LRU): refcount > 1, the page is copied.
            return false;
        }
        if f.swap.is_some() {
            // refcount > 1 + swapcache: someone else holds it; else the swap cache is
            // dropped first (folio_free_swap) and only our mapping may be left.
            if f.refcount() > 2 {
                return false;
            }
            self.swap.folio_free_swap(&mut self.mem, folio);
        }
        wp_can_reuse_small_folio(&mut self.mem.folios[folio], self.vm.vmas[vma].anon_vma)
    }

    /// `wp_page_copy`: a new exclusive anon page with the old page's contents.
    fn wp_page_copy(&mut self, mm: MmId, vma: VmaId, a: VirtAddr, old: FolioId, sub: u16) {
        self.rmap.anon_vma_prepare(&mut self.vm, &mut self.trace, vma);
        let tag = if old == ZERO_FOLIO { 0 } else { self.mem.folios[old].pages[sub as usize].tag };
        let pte = self.anon_pte_fault(vma).wp_page_copy(a, tag);
        self.vm.mms[mm].pt.set_pte(a, pte);
        self.mem.munlock_vma_folio(&self.vm, old, vma);
        self.mem.folio_remove_rmap_pte(&mut self.trace, old, sub, mm);
    }

    /// The [`AnonPteFault`] steps of a fault in `vma`, which has its anon_vma.
    fn anon_pte_fault(&mut self, vma: VmaId) -> AnonPteFault<'_> {
        AnonPteFault::new(&self.vm.vmas[vma], &mut self.mem, &mut self.trace.stats)
    }

    /// Find or create the page-cache folio at `index` of `inode` (`filemap_fault`,
    /// `shmem_fault`): a hole reads as zeroes, and a folio found not up to date is read
    /// (`filemap_read_folio`).
    pub(crate) fn page_cache_get(&mut self, inode: InodeId, index: PgOff) -> FolioId {
        if let Some(&f) = self.fs.inodes[inode].cache.get(&index.0) {
            self.mem.folios[f].not_uptodate = false;
            return f;
        }
        let f = self.mem.folio_alloc(&mut self.trace, 0);
        let fo = &mut self.mem.folios[f];
        fo.mapping = Mapping::File(inode);
        fo.index = index;
        fo.extra_refs = 1;
        self.fs.inodes[inode].cache.insert(index.0, f);
        f
    }

    /// `do_fault` for a missing page of a file or shmem mapping: `do_read_fault`,
    /// `do_cow_fault` or `do_shared_fault`. False for SIGBUS (a page beyond EOF).
    fn do_fault(&mut self, mm: MmId, vma: VmaId, a: VirtAddr, write: bool) -> bool {
        if !write {
            self.do_read_fault(mm, vma, a)
        } else if self.vm.vmas[vma].flags.contains(VmFlags::SHARED) {
            self.do_shared_fault(mm, vma, a)
        } else {
            self.do_cow_fault(mm, vma, a)
        }
    }

    /// `do_read_fault`: map cached pages around the fault (`do_fault_around`,
    /// `filemap_map_pages`), even when the page itself is beyond EOF (then `__do_fault` is
    /// SIGBUS); on a cache miss, read around the page (`do_sync_mmap_readahead`) and retry,
    /// as `VM_FAULT_RETRY` does, so the retry's fault-around maps the pages just read. A page
    /// cached but not up to date (see [`System::truncate_inode`]) is read by the fault.
    fn do_read_fault(&mut self, mm: MmId, vma: VmaId, a: VirtAddr) -> bool {
        let inode = self.fs.vma_inode(&self.vm, vma);
        let index = self.vm.vmas[vma].linear_page_index(a);
        if self.vm.should_fault_around(vma) {
            self.fault_around(mm, vma, a);
            if !self.vm.mms[mm].pt.get_pte(a).is_none() {
                return true;
            }
        }
        if self.fs.beyond_eof(&self.vm, vma, a) {
            return false;
        }
        if !self.fs.inodes[inode].cache.contains_key(&index.0)
            && self.mmap_readahead(vma, index)
            && self.vm.should_fault_around(vma)
        {
            self.fault_around(mm, vma, a);
            if !self.vm.mms[mm].pt.get_pte(a).is_none() {
                return true;
            }
        }
        let ro = self.vm.read_fault_pte_flags(&self.fs, vma);
        let f = self.page_cache_get(inode, index);
        self.async_mmap_readahead(vma, f);
        self.vm.map_file_page(&mut self.mem, mm, vma, a, f, ro);
        true
    }

    /// `do_fault_around`: map the pages already cached in the 16-page window around `a`,
    /// inside the VMA, the PTE table and the file.
    fn fault_around(&mut self, mm: MmId, vma: VmaId, a: VirtAddr) {
        let inode = self.fs.vma_inode(&self.vm, vma);
        let (vstart, vpages, vpgoff) = {
            let v = &self.vm.vmas[vma];
            (v.start, v.pages(), v.pgoff)
        };
        let ro = self.vm.read_fault_pte_flags(&self.fs, vma);
        let pte_off = pte_index(a) as u64;
        let vma_off = vstart.pages_to(a);
        let from = (pte_off - pte_off % FAULT_AROUND_PAGES).max(pte_off - pte_off.min(vma_off));
        let to = (from + FAULT_AROUND_PAGES).min(PTRS_PER_PTE as u64).min(pte_off + vpages - vma_off) - 1;
        let file_end = self.fs.size_pages(inode);
        let base = a.0 - pte_off * PAGE_SIZE;
        if !self.fault_around_can_map(
            mm,
            inode,
            a,
            vpgoff.plus(vstart.pages_to(VirtAddr(base + from * PAGE_SIZE))),
            to - from + 1,
        ) {
            return;
        }
        for i in from..=to {
            let pa = VirtAddr(base + i * PAGE_SIZE);
            let index = vpgoff.plus(vstart.pages_to(pa));
            if index.0 >= file_end || !self.vm.mms[mm].pt.get_pte(pa).is_none() {
                continue;
            }
            // next_uptodate_folio: neither the PG_readahead folio nor one not up to date.
            if let Some(&f) = self.fs.inodes[inode].cache.get(&index.0)
                && !self.mem.folios[f].readahead
                && !self.mem.folios[f].not_uptodate
            {
                self.vm.map_file_page(&mut self.mem, mm, vma, pa, f, ro);
            }
        }
    }

    /// `filemap_map_pages` before it maps: the first folio `next_uptodate_folio` finds in the
    /// `nr` pages of the window from `first` (up to date, not `PG_readahead`, before EOF)
    /// decides `can_map_large`, false for a regular file's folio that reaches the file's last
    /// page ("mm/memory: do not populate page table entries beyond i_size", 6.18, backported
    /// to 6.12.y; not on 6.1, [`Profile::fault_around_checks_i_size`](crate::kernel::Profile),
    /// whose `filemap_map_pmd` always installs the table). Then `filemap_map_pmd`, which installs the
    /// preallocated PTE table, is skipped, and with no PTE table under the fault
    /// (`pmd_none`) `pte_offset_map_lock` fails: fault-around maps nothing. Shmem is exempt.
    /// Returns whether fault-around goes on to map.
    fn fault_around_can_map(&self, mm: MmId, inode: InodeId, a: VirtAddr, first: PgOff, nr: u64) -> bool {
        let file_end = self.fs.size_pages(inode);
        let node = &self.fs.inodes[inode];
        let Some(f) = (first.0..(first.0 + nr).min(file_end)).find_map(|i| {
            node.cache
                .get(&i)
                .copied()
                .filter(|&f| !self.mem.folios[f].readahead && !self.mem.folios[f].not_uptodate)
        }) else {
            return false;
        };
        let shmem = matches!(node.kind, crate::fs::InodeKind::Shmem);
        let next_index = self.mem.folios[f].index.0 + (1u64 << self.mem.folios[f].order);
        // The kernel's file_end is the last page's index: `file_end >= folio_next_index`.
        let can_map_large =
            shmem || file_end > next_index || !self.cfg.kernel.profile().fault_around_checks_i_size;
        can_map_large || matches!(self.vm.mms[mm].pt.pmd(a), Some(Pmd::Table(_)))
    }

    /// `do_sync_mmap_readahead` for a regular file: read the window around `index` into the
    /// page cache (holes read as zeroes). Shmem has no read-ahead. Returns whether it read.
    fn mmap_readahead(&mut self, vma: VmaId, index: PgOff) -> bool {
        let inode = self.fs.vma_inode(&self.vm, vma);
        if !matches!(self.fs.inodes[inode].kind, crate::fs::InodeKind::Regular { .. }) {
            return false;
        }
        let flags = self.vm.vmas[vma].flags;
        if flags.contains(VmFlags::HUGEPAGE) {
            // Reads ahead PMD-order folios, which the model's page cache cannot hold.
            self.not_modelled("read-ahead into large page-cache folios (VM_HUGEPAGE file mapping)");
            return false;
        }
        // VM_RAND_READ stops read-ahead, but not for executable mappings, whose read-ahead
        // is meant for random access already (before 6.17 it stops theirs too:
        // Profile::exec_readahead_forward).
        let exec_forward = self.cfg.kernel.profile().exec_readahead_forward;
        let exec_exempt = if exec_forward { VmFlags::EXEC } else { VmFlags::empty() };
        if flags & (VmFlags::RAND_READ | exec_exempt) == VmFlags::RAND_READ || self.cfg.readahead_pages == 0 {
            return false;
        }
        let ra = self.cfg.readahead_pages;
        // (window start, window end, lookahead): the lookahead decides where PG_readahead
        // goes (`mark = nr_to_read - lookahead_size` once the window is cut at EOF).
        let (start, end, lookahead) = if flags.contains(VmFlags::SEQ_READ) {
            // page_cache_sync_ra's initial window: async size = the whole window when it is
            // the request (mark at its start) before 6.10, half of it since
            // (Profile::seq_readahead_half_async).
            let half = self.cfg.kernel.profile().seq_readahead_half_async;
            (index.0, index.0 + ra, if half { ra / 2 } else { ra })
        } else if exec_forward && flags.contains(VmFlags::EXEC) {
            // Executable memory reads ahead from the fault, within the VMA only
            // (exec_folio_order() is 0 on x86), with no lookahead.
            let v = &self.vm.vmas[vma];
            let start = index.0.max(v.pgoff.0);
            (start, (start + ra).min(v.pgoff.0 + v.pages()), 0)
        } else {
            // mmap read-around
            let start = index.0.saturating_sub(ra / 2);
            (start, start + ra, ra / 4)
        };
        if let Some(f) = self.vm.vmas[vma].file {
            self.fs.files[f].ra = Some((start, end - start, lookahead));
        }
        self.page_cache_ra_order(inode, start, end - start, lookahead);
        true
    }

    /// `page_cache_ra_order` (order 0, on a mapping with large-folio support such as ext4):
    /// read `[start, start + size)` up to EOF, marking `start + size - lookahead` (not cut at
    /// EOF, so often beyond it). A page already cached stops it, and `do_page_cache_ra` goes
    /// on from there with the window cut at EOF first, which moves the mark inside the file.
    fn page_cache_ra_order(&mut self, inode: InodeId, start: u64, size: u64, lookahead: u64) {
        let eof = self.fs.size_pages(inode);
        if eof == 0 || start >= eof {
            return;
        }
        let mut idx = start;
        // Without large folios (ext4 before 6.16) it is do_page_cache_ra from the start.
        if size >= 4 && self.cfg.kernel.profile().ext4_large_folios {
            let limit = (eof - 1).min(start + size - 1);
            let mark = start + size - lookahead;
            while idx <= limit && !self.fs.inodes[inode].cache.contains_key(&idx) {
                let f = self.page_cache_get(inode, PgOff(idx));
                self.mem.folios[f].readahead = idx == mark;
                idx += 1;
            }
            if idx > limit {
                return;
            }
        }
        self.do_page_cache_ra(inode, idx, size - (idx - start), lookahead);
    }

    /// `do_page_cache_ra` → `page_cache_ra_unbounded`: read `nr` pages from `index`, cut at
    /// EOF, skipping those already cached (up to date or not), marking the one `lookahead`
    /// before the end (none for a lookahead of 0).
    pub(crate) fn do_page_cache_ra(&mut self, inode: InodeId, index: u64, nr: u64, lookahead: u64) {
        let eof = self.fs.size_pages(inode);
        if index >= eof {
            return;
        }
        let nr = nr.min(eof - index);
        let mark = (lookahead <= nr).then(|| index + nr - lookahead);
        for i in index..index + nr {
            if !self.fs.inodes[inode].cache.contains_key(&i) {
                let f = self.page_cache_get(inode, PgOff(i));
                self.mem.folios[f].readahead = Some(i) == mark;
            }
        }
    }

    /// A fault found the PG_readahead folio (`do_async_mmap_readahead`): the mark goes and
    /// the next window is read, in large folios the model's page cache cannot hold.
    fn async_mmap_readahead(&mut self, vma: VmaId, folio: FolioId) {
        if !self.mem.folios[folio].readahead || self.vm.vmas[vma].flags.contains(VmFlags::RAND_READ) {
            return;
        }
        self.mem.folios[folio].readahead = false;
        let inode = self.fs.vma_inode(&self.vm, vma);
        let next = self.vm.vmas[vma].file.and_then(|f| self.fs.files[f].ra).map(|(s, n, _)| s + n);
        if next.is_some_and(|n| n < self.fs.size_pages(inode)) {
            self.not_modelled("asynchronous read-ahead (large page-cache folios)");
        }
    }

    /// `__do_fault` → `filemap_fault` for a write fault: the page-cache folio for `a`, read
    /// around first on a cache miss (`do_sync_mmap_readahead`), and the next window started
    /// if it is the PG_readahead one (`do_async_mmap_readahead`).
    fn filemap_fault(&mut self, vma: VmaId, a: VirtAddr) -> FolioId {
        let inode = self.fs.vma_inode(&self.vm, vma);
        let index = self.vm.vmas[vma].linear_page_index(a);
        if !self.fs.inodes[inode].cache.contains_key(&index.0) {
            self.mmap_readahead(vma, index);
        }
        let f = self.page_cache_get(inode, index);
        self.async_mmap_readahead(vma, f);
        f
    }

    /// `do_shared_fault`: write to a shared file mapping maps the cache page writable.
    /// False for SIGBUS beyond EOF.
    fn do_shared_fault(&mut self, mm: MmId, vma: VmaId, a: VirtAddr) -> bool {
        if self.fs.beyond_eof(&self.vm, vma, a) {
            return false;
        }
        let f = self.filemap_fault(vma, a);
        let flags = self.vm.new_pte_flags(vma, true);
        self.vm.map_file_page(&mut self.mem, mm, vma, a, f, flags);
        // fault_dirty_shared_page: folio_mark_dirty, seen by every mapping's smaps.
        self.mem.folios[f].dirty = true;
        true
    }

    /// `do_cow_fault`: write to a private file mapping copies the cache page into a new
    /// anonymous page. The anon_vma is prepared first (`vmf_anon_prepare`), so a fault
    /// beyond EOF, SIGBUS in `__do_fault`, leaves the VMA with one.
    fn do_cow_fault(&mut self, mm: MmId, vma: VmaId, a: VirtAddr) -> bool {
        self.rmap.anon_vma_prepare(&mut self.vm, &mut self.trace, vma);
        if self.fs.beyond_eof(&self.vm, vma, a) {
            return false;
        }
        let src = self.filemap_fault(vma, a);
        let tag = self.mem.folios[src].pages[0].tag;
        let pte = self.anon_pte_fault(vma).new_folio_pte(a, tag);
        self.vm.mms[mm].pt.set_pte(a, pte);
        self.mem.folio_put_if_unused(&mut self.trace, src);
        true
    }
}

/// The zero page mapped read-only, as a read fault on a missing anonymous page maps it.
const ZERO_PTE: Pte = Pte::Present { folio: ZERO_FOLIO, sub: 0, flags: PteFlags::ACCESSED };

/// The bits of a new PTE in `v` (`vma->vm_page_prot`, made writable and dirty for a write
/// fault in a writable VMA: `maybe_mkwrite(pte_mkdirty(...))`), young.
fn new_pte_flags(v: &Vma, write: bool) -> PteFlags {
    let mut f = PteFlags::ACCESSED;
    if write && v.flags.contains(VmFlags::WRITE) {
        f |= PteFlags::WRITE | PteFlags::DIRTY;
    }
    f
}

/// What an anonymous fault on a PTE needs of its VMA, which has its anon_vma: read once
/// per run of faults ([`System::fault_pte_run`], [`System::touch_each`]).
#[derive(Clone, Copy)]
struct AnonFaultVma {
    anon_vma: AnonVmaId,
    start: VirtAddr,
    pgoff: PgOff,
    /// `new_pte_flags(vma, true)`.
    flags: PteFlags,
    /// `VM_LOCKED` without `VM_SPECIAL`: new folios are mlocked (`folio_add_lru_vma` →
    /// `mlock_new_folio`).
    mlock_new: bool,
    /// `VM_LOCKED`: a folio whose mapping the fault removes is munlocked
    /// (`munlock_vma_folio`).
    locked: bool,
}

impl AnonFaultVma {
    /// For a fault in `v`, which has its anon_vma (`anon_vma_prepare` came first).
    #[inline]
    fn of(v: &Vma) -> Self {
        AnonFaultVma {
            anon_vma: v.anon_vma.expect("anon_vma_prepare before an anonymous fault"),
            start: v.start,
            pgoff: v.pgoff,
            flags: new_pte_flags(v, true),
            mlock_new: v.flags & (VmFlags::LOCKED | VmFlags::SPECIAL) == VmFlags::LOCKED,
            locked: v.flags.contains(VmFlags::LOCKED),
        }
    }
}

/// The steps of an anonymous fault on one PTE that both the full path (`do_anonymous_page`,
/// `wp_page_copy`, `do_cow_fault`) and the fast path (`fault_pte_run`) take: what they need
/// of the VMA is read once, and the folios and counters are borrowed apart from the page
/// table, so that the fast path can hold its PTE table through a run of faults.
struct AnonPteFault<'a> {
    folios: &'a mut Arena<FolioId, Folio>,
    /// MADV_FREE's batch ([`crate::folio::FolioStore::lazyfree_batch`]): a write to a
    /// shared page of a folio it holds goes the long way (`wp_can_reuse_anon_folio`).
    queued: &'a [FolioId],
    stats: &'a mut Stats,
    v: AnonFaultVma,
}

impl<'a> AnonPteFault<'a> {
    /// For a fault in `v`, which has its anon_vma (`anon_vma_prepare` came first).
    #[inline]
    fn new(v: &Vma, mem: &'a mut crate::folio::FolioStore, stats: &'a mut Stats) -> Self {
        AnonPteFault { folios: &mut mem.folios, queued: &mem.lazyfree_batch, stats, v: AnonFaultVma::of(v) }
    }

    /// `folio_alloc` and `folio_add_new_anon_rmap` of a small folio holding `tag`, to be
    /// mapped at `a`: the PTE that maps it.
    #[inline(always)]
    fn new_folio_pte(&mut self, a: VirtAddr, tag: u64) -> Pte {
        let index = self.v.pgoff.plus((a.0 - self.v.start.0) >> PAGE_SHIFT);
        let mut new = Folio::new_anon_page(self.v.anon_vma, index, tag);
        if self.v.mlock_new {
            new.mlock_new();
        }
        let folio = self.folios.alloc(new);
        self.stats.folios_allocated += 1;
        Pte::Present { folio, sub: 0, flags: self.v.flags }
    }

    /// `wp_page_copy`'s new page, holding `tag` (the old page's contents): the PTE that
    /// replaces the old one, whose rmap the caller removes.
    #[inline]
    fn wp_page_copy(&mut self, a: VirtAddr, tag: u64) -> Pte {
        self.stats.cow_copies += 1;
        self.new_folio_pte(a, tag)
    }
}

/// The end of `wp_can_reuse_anon_folio` for a small folio out of the swap cache: reusable
/// when our mapping holds the only reference, and then `folio_move_anon_rmap`.
#[inline]
fn wp_can_reuse_small_folio(f: &mut Folio, anon_vma: Option<AnonVmaId>) -> bool {
    if f.refcount() != 1 {
        return false;
    }
    if let Some(av) = anon_vma {
        f.mapping = Mapping::Anon(av);
    }
    true
}

/// `do_wp_page` reusing the page (`wp_page_reuse`): it is exclusive, and its PTE writable,
/// dirty and young.
#[inline]
fn wp_reuse(page: &mut PageState, flags: &mut PteFlags, stats: &mut Stats) {
    page.anon_exclusive = true;
    *flags |= PteFlags::WRITE | PteFlags::DIRTY | PteFlags::ACCESSED;
    stats.cow_reuses += 1;
}

/// A read fault on page `a` of PTE table `t` in a private anonymous VMA, if it needs nothing
/// more (`fault_pte_run`): a missing page maps the zero page (`do_anonymous_page`), a present
/// one changes nothing. False, with nothing changed, for any other entry.
#[inline(always)]
fn anon_read_fault_pte(t: &mut PteTable, a: VirtAddr, stats: &mut Stats) -> bool {
    let slot = &mut t.ptes[pte_index(a)];
    match slot {
        Pte::Present { .. } => {}
        Pte::None => {
            *slot = ZERO_PTE;
            t.used += 1;
        }
        _ => return false,
    }
    stats.faults += 1;
    true
}

/// A write fault on page `a` of PTE table `t` in a private anonymous VMA with its anon_vma,
/// if it needs nothing but the table and the folio (`fault_pte_run`): a write through a
/// writable PTE; a missing page (a new exclusive folio, `do_anonymous_page`); a read-only
/// small anonymous folio or the zero page (`do_wp_page`: reuse or `wp_page_copy`). False,
/// with nothing changed, for anything else (a large or swap-cached folio, swap and
/// migration entries, file pages).
#[inline(always)]
fn anon_write_fault_pte(
    cx: &mut AnonPteFault<'_>,
    t: &mut PteTable,
    a: VirtAddr,
    tag_of: impl Fn(u64) -> u64,
) -> bool {
    let slot = &mut t.ptes[pte_index(a)];
    match slot {
        Pte::Present { folio, sub, flags } => {
            let (old, sub) = (*folio, *sub as usize);
            if flags.contains(PteFlags::WRITE) {
                *flags |= PteFlags::DIRTY | PteFlags::ACCESSED;
                cx.folios[old].pages[sub].tag = tag_of(a.0);
            } else {
                // do_wp_page on the zero page or a small anonymous folio; large folios and
                // the swap cache (folio_free_swap) go the long way.
                if old != ZERO_FOLIO {
                    let f = &mut cx.folios[old];
                    let excl = f.pages[sub].anon_exclusive;
                    if !f.is_anon()
                        || f.is_large()
                        || (!excl && (f.swap.is_some() || cx.queued.contains(&old)))
                    {
                        return false;
                    }
                    if excl || wp_can_reuse_small_folio(f, Some(cx.v.anon_vma)) {
                        wp_reuse(&mut f.pages[sub], flags, cx.stats);
                        f.pages[sub].tag = tag_of(a.0);
                        cx.stats.faults += 1;
                        return true;
                    }
                }
                *slot = cx.wp_page_copy(a, tag_of(a.0));
                if old != ZERO_FOLIO {
                    // folio_remove_rmap_pte, short: the folio is small and stays referenced
                    // (its refcount was above 1), so nothing is freed.
                    let f = &mut cx.folios[old];
                    if cx.v.locked {
                        f.munlock();
                    }
                    let p = &mut f.pages[sub];
                    p.mapcount -= 1;
                    if p.mapcount == 0 {
                        p.anon_exclusive = false;
                    }
                }
            }
        }
        Pte::None => {
            *slot = cx.new_folio_pte(a, tag_of(a.0));
            t.used += 1;
        }
        _ => return false,
    }
    cx.stats.faults += 1;
    true
}

impl crate::mm::Vm {
    /// Whether the VMA's `vm_page_prot` is writable: a shared writable mapping that needs no
    /// write notification (`vma_wants_writenotify`: no `page_mkwrite`, as for shmem and
    /// shared anonymous memory, unlike ext4 files; not registered for userfaultfd-wp). Its
    /// PTEs are writable as soon as they are made, clean until written (`set_pte_range`
    /// builds them from `vm_page_prot`; a read fault does not make them dirty).
    pub(crate) fn shared_prot_writable(&self, fs: &crate::fs::Fs, vma: VmaId) -> bool {
        let v = &self.vmas[vma];
        if !v.flags.contains(VmFlags::SHARED | VmFlags::WRITE) || v.flags.contains(VmFlags::UFFD_WP) {
            return false;
        }
        v.file.is_none_or(|f| {
            !matches!(fs.inodes[fs.files[f].inode].kind, crate::fs::InodeKind::Regular { .. })
        })
    }

    /// The PTE flags of a page a read fault (or fault-around) maps in a file or shmem VMA
    /// (`set_pte_range` builds them from `vm_page_prot`).
    fn read_fault_pte_flags(&self, fs: &crate::fs::Fs, vma: VmaId) -> PteFlags {
        if self.shared_prot_writable(fs, vma) {
            PteFlags::ACCESSED | PteFlags::WRITE
        } else if self.vmas[vma].flags.contains(VmFlags::SHARED) {
            self.new_pte_flags(vma, false)
        } else {
            PteFlags::ACCESSED
        }
    }

    /// x86 `access_error`: the VMA's permissions, and the protection key. Inline: every
    /// touch asks, and as a call it cost a one-page fault ~20 instructions.
    #[inline]
    fn access_error_vma(&self, vma: VmaId, write: bool) -> Option<Signal> {
        let v = &self.vmas[vma];
        if write {
            if !v.flags.contains(VmFlags::WRITE) {
                return Some(Signal::SIGSEGV);
            }
        } else if !v.flags.intersects(VmFlags::READ | VmFlags::WRITE | VmFlags::EXEC) {
            return Some(Signal::SIGSEGV);
        }
        // arch_vma_access_permitted: PKRU denies data access through the execute-only pkey.
        let pkey = v.flags.pkey();
        if pkey != 0 && Some(pkey) == self.mms[v.mm].execute_only_pkey {
            return Some(Signal::SIGSEGV);
        }
        None
    }

    pub(crate) fn new_pte_flags(&self, vma: VmaId, write: bool) -> PteFlags {
        new_pte_flags(&self.vmas[vma], write)
    }

    fn make_pte_writable(&mut self, mm: MmId, a: VirtAddr) {
        if let Some(f) = self.mms[mm].pt.pte_flags_mut(a) {
            *f |= PteFlags::WRITE | PteFlags::DIRTY | PteFlags::ACCESSED;
        }
    }

    /// `should_fault_around`: not in a VMA registered for userfaultfd write-protect or
    /// minor faults (`uffd_disable_fault_around`).
    fn should_fault_around(&self, vma: VmaId) -> bool {
        !self.vmas[vma].flags.intersects(VmFlags::UFFD_WP | VmFlags::UFFD_MINOR)
    }

    /// The fast path of a fault on a page that is already mapped with the access it needs
    /// (`handle_pte_fault` finding a present PTE: a read, or a write through a writable PTE,
    /// which only marks it dirty and young). False when the full fault must run.
    #[inline]
    fn fault_resident(
        &mut self,
        mem: &mut crate::folio::FolioStore,
        trace: &mut crate::stats::Trace,
        mm: MmId,
        a: VirtAddr,
        write: bool,
        tag_of: &dyn Fn(u64) -> u64,
    ) -> bool {
        let (folio, sub) = match self.mms[mm].pt.pmds.get_mut(&pmd_index(a)) {
            Some(Pmd::Table(t)) => match &mut t.ptes[pte_index(a)] {
                Pte::Present { folio, sub, flags } => {
                    if write {
                        if !flags.contains(PteFlags::WRITE) {
                            return false;
                        }
                        *flags |= PteFlags::DIRTY | PteFlags::ACCESSED;
                    }
                    (*folio, *sub)
                }
                _ => return false,
            },
            Some(Pmd::Huge { folio, flags }) => {
                if write {
                    if !flags.contains(PteFlags::WRITE) {
                        return false;
                    }
                    *flags |= PteFlags::DIRTY | PteFlags::ACCESSED;
                }
                (*folio, pte_index(a) as u16)
            }
            _ => return false,
        };
        trace.stats.faults += 1;
        if write {
            mem.folios[folio].pages[sub as usize].tag = tag_of(a.0);
        }
        true
    }

    /// `set_pte_range` → `folio_add_file_rmap_ptes` of a small page-cache folio in `vma`,
    /// which mlocks it in a `VM_LOCKED` VMA (`mlock_vma_folio`).
    fn map_file_page(
        &mut self,
        mem: &mut crate::folio::FolioStore,
        mm: MmId,
        vma: VmaId,
        a: VirtAddr,
        folio: FolioId,
        flags: PteFlags,
    ) {
        mem.folios[folio].pages[0].mapcount += 1;
        mem.mlock_vma_folio(self, folio, vma, 1);
        self.mms[mm].pt.set_pte(a, Pte::Present { folio, sub: 0, flags });
    }
}

impl crate::rmap::Rmap {
    /// Whether any mapping of the folio is outside `mm` (the `_mm_ids` shared bit).
    pub(crate) fn folio_mapped_in_other_mm(
        &self,
        vm: &crate::mm::Vm,
        mem: &crate::folio::FolioStore,
        folio: FolioId,
        mm: MmId,
    ) -> bool {
        let nr = mem.folios[folio].nr_pages();
        let index = mem.folios[folio].index;
        for hit in self.rmap_walk_anon(vm, mem, folio) {
            let v = &vm.vmas[hit.vma];
            if v.mm == mm {
                continue;
            }
            for i in 0..nr {
                let Some(a) = v.address_of(index.plus(i), 1) else { continue };
                if let Walk::Pte(Pte::Present { folio: f, .. }) | Walk::Huge { folio: f, .. } =
                    vm.mms[v.mm].pt.walk(a)
                    && f == folio
                {
                    return true;
                }
            }
        }
        false
    }
}

impl crate::fs::Fs {
    /// `file_inode(vma->vm_file)` of a file or shmem VMA.
    fn vma_inode(&self, vm: &crate::mm::Vm, vma: VmaId) -> InodeId {
        self.files[vm.vmas[vma].file.expect("file vma")].inode
    }

    /// Whether `a` of a file VMA lies beyond EOF: `filemap_fault` (and `shmem_get_folio_gfp`)
    /// returns `VM_FAULT_SIGBUS` there, before any read-ahead.
    fn beyond_eof(&self, vm: &crate::mm::Vm, vma: VmaId, a: VirtAddr) -> bool {
        let inode = self.vma_inode(vm, vma);
        vm.vmas[vma].linear_page_index(a).0 >= self.size_pages(inode)
    }
}
