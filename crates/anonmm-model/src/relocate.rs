//! Relocating the folios of a moved anonymous VMA: rewriting each folio's `index` (and
//! `mapping`) so that it fits the VMA's new pgoff, which is what makes a moved faulted VMA
//! mergeable. This is the 2025 series' `relocate_anon_folios` (with `relocate_anon_pte`,
//! `relocate_anon_pmd`, `relocate_large_folio` and the undo walk), Matěna's
//! `update_faulted_pgoff` walk, and the unsharing copy Linus proposed in 2004
//! (`copy_one_pte` with `copy_page` when the page is shared), with the frame around them
//! that every design shares (`should_relocate_anon`'s checks, the undo and the retried
//! merge). Which variant runs, and where a moved VMA lands, is the design's choice: its hooks
//! are in `crate::designs`, one file per `--policy` ([`crate::policy`]); the caller in
//! [`crate::mremap`] decides when.

use std::collections::HashSet;

use crate::abi::MREMAP_MUST_RELOCATE_ANON;
use crate::designs::{Design, MoveTarget, SharedVma};
use crate::errno::{Errno, KResult};
use crate::folio::{FolioId, HUGE_ZERO_FOLIO, Mapping, ZERO_FOLIO};
use crate::merge::MergeCaller;
use crate::mm::{MmId, System};
use crate::mremap::Vrm;
use crate::pagetable::Pte;
use crate::policy::RelocReason;
use crate::rmap::AnonVmaId;
use crate::types::{PAGE_SHIFT, PAGE_SIZE, PMD_SIZE, PgOff, VirtAddr};
use crate::vma::VmFlags;
use crate::vma::VmaId;

/// How shared, pinned and non-present entries are treated.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct RelocMode {
    /// Copy a page another process maps (Torvalds 2004), instead of failing.
    pub copy_shared: bool,
    /// Read swap entries in so that they can be relocated (and copied if shared).
    pub swap_in: bool,
    /// Relocate long-term pinned folios (Matěna did not look at pins; `auto` holds that a pin
    /// holds the page, not its index).
    pub allow_pinned: bool,
    /// Split a partly covered large folio (the large-folio patch of the series).
    pub split_partial: bool,
}

impl RelocMode {
    /// The 2025 series: shared or pinned folios fail the walk (undo follows); swap entries are
    /// left; migration entries fail (the series skipped them, which strands them: the
    /// migration's rmap walk could no longer find them).
    pub const STOAKES: RelocMode =
        RelocMode { copy_shared: false, swap_in: false, allow_pinned: false, split_partial: true };
    /// Matěna 2022: a page walk checked beforehand that nothing is shared; pins were not
    /// looked at; swap entries are left.
    pub const MATENA: RelocMode =
        RelocMode { copy_shared: false, swap_in: false, allow_pinned: true, split_partial: false };
    /// Torvalds 2004: a shared page is copied for this process first; swap entries are read
    /// in so that shared ones can be copied too.
    pub const COPY_SHARED: RelocMode =
        RelocMode { copy_shared: true, swap_in: true, allow_pinned: false, split_partial: true };
}

/// One relocation: the folios mapped at `[old_addr, old_addr + len)` of `old` are rewritten
/// to fit `new` at `new_addr`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reloc {
    pub mm: MmId,
    pub old: VmaId,
    pub new: VmaId,
    pub old_addr: VirtAddr,
    pub new_addr: VirtAddr,
    pub len: u64,
    pub mode: RelocMode,
}

impl Reloc {
    fn old_end(&self) -> VirtAddr {
        self.old_addr.plus(self.len)
    }
    fn new_of(&self, a: VirtAddr) -> VirtAddr {
        self.new_addr.plus(a.0 - self.old_addr.0)
    }
}

/// What a rewrite replaced, for the undo.
struct Change {
    folio: FolioId,
    mapping: Mapping,
    index: PgOff,
}

/// What the page walk before a relocation found (`matena`'s check, `auto`'s estimate).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Prewalk {
    pub shared_pages: u64,
    pub pinned: bool,
    pub migration: bool,
    pub partial_large: bool,
}

impl System {
    /// `relocate_anon_folios(pmc, undo=false)`, and on failure `relocate_anon_folios(pmc,
    /// undo=true)`: every folio rewritten so far gets its old `mapping` and `index` back.
    /// Splits and copies already made stay (as in the series: a split is not undone).
    pub(crate) fn relocate_anon_folios(&mut self, r: &Reloc) -> Result<(), RelocReason> {
        self.trace.stats.policy.rmap_lock_holds += 1;
        let mut changes = Vec::new();
        let res = self.relocate_walk(r, &mut changes);
        if res.is_err() {
            // The undo walk visits the same range again.
            self.trace.stats.policy.entries_walked +=
                self.vm.mms[r.mm].pt.ptes_in(r.old_addr, r.old_end()).len() as u64;
            for c in changes.into_iter().rev() {
                let f = &mut self.mem.folios[c.folio];
                f.mapping = c.mapping;
                f.index = c.index;
                self.trace.stats.policy.folios_rewritten += 1;
            }
        }
        res
    }

    fn relocate_walk(&mut self, r: &Reloc, changes: &mut Vec<Change>) -> Result<(), RelocReason> {
        let mm = r.mm;
        let new_av = self.vm.vmas[r.new].anon_vma.expect("relocation target has an anon_vma");
        let to = Mapping::Anon(new_av);
        // A PMD migration entry fails the walk as a PTE one does.
        if !self.vm.mms[mm].pt.migration_pmds_in(r.old_addr, r.old_end()).is_empty() {
            return Err(RelocReason::Migration);
        }
        // PMD leaves first (`relocate_anon_pmd`): whole when the move covers them and lands
        // PMD-aligned, split otherwise.
        for (h, folio, _) in self.vm.mms[mm].pt.huge_in(r.old_addr, r.old_end()) {
            self.trace.stats.policy.entries_walked += 1;
            if folio == HUGE_ZERO_FOLIO {
                continue;
            }
            let covered = h >= r.old_addr && h.plus(PMD_SIZE) <= r.old_end();
            let shared = self.rmap.folio_mapped_in_other_mm(&self.vm, &self.mem, folio, mm);
            // Only a covered leaf has a place in the new range (`h` may start below it).
            let nh = covered.then(|| r.new_of(h));
            if let Some(nh) = nh
                && nh.0.is_multiple_of(PMD_SIZE)
                && !(shared && r.mode.copy_shared)
            {
                self.trace.stats.policy.folios_walked += 1;
                if shared {
                    return Err(RelocReason::Shared);
                }
                if self.mem.folios[folio].pincount > 0 && !r.mode.allow_pinned {
                    return Err(RelocReason::Pinned);
                }
                let index = self.vm.vmas[r.new].linear_page_index(nh);
                self.mem.rewrite_folio(&mut self.trace, changes, folio, to, index);
            } else {
                self.vm.split_huge_pmd(&mut self.mem, &mut self.trace, mm, h);
                self.trace.stats.policy.pmds_split += 1;
            }
        }
        let addrs: Vec<VirtAddr> =
            self.vm.mms[mm].pt.ptes_in(r.old_addr, r.old_end()).into_iter().map(|(a, _)| a).collect();
        let mut done: HashSet<FolioId> = HashSet::new();
        for a in addrs {
            // Retried after a split, a copy or a swap-in changed the entry.
            loop {
                self.trace.stats.policy.entries_walked += 1;
                match self.vm.mms[mm].pt.get_pte(a) {
                    Pte::None => break,
                    Pte::Swap { .. } => {
                        if r.mode.swap_in {
                            self.do_swap_page(mm, r.old, a, false);
                            self.trace.stats.policy.swapins += 1;
                            continue;
                        }
                        self.trace.stats.policy.skip(RelocReason::Swap);
                        break;
                    }
                    Pte::Migration { .. } => return Err(RelocReason::Migration),
                    // A guard marker moves with the page tables; it has no folio to adopt.
                    Pte::Guard => break,
                    Pte::Present { folio, sub, .. } => {
                        if folio == ZERO_FOLIO || done.contains(&folio) || !self.mem.folios[folio].is_anon() {
                            break;
                        }
                        self.trace.stats.policy.folios_walked += 1;
                        let large = self.mem.folios[folio].is_large();
                        let shared = if large {
                            self.rmap.folio_mapped_in_other_mm(&self.vm, &self.mem, folio, mm)
                        } else {
                            self.mem.folios[folio].pages[0].mapcount > 1
                        };
                        if shared {
                            if !r.mode.copy_shared {
                                return Err(RelocReason::Shared);
                            }
                            self.unshare_page(r, a, folio, sub, changes);
                            break;
                        }
                        if self.mem.folios[folio].pincount > 0 && !r.mode.allow_pinned {
                            return Err(RelocReason::Pinned);
                        }
                        if large {
                            if let Some(first) = self.fully_spanned(r, a, folio, sub) {
                                let index = self.vm.vmas[r.new].linear_page_index(r.new_of(first));
                                self.mem.rewrite_folio(&mut self.trace, changes, folio, to, index);
                                done.insert(folio);
                                break;
                            }
                            // Partly covered: split it (the series bails out when the folio's
                            // anon_vma shares the root it holds locked).
                            let Mapping::Anon(fav) = self.mem.folios[folio].mapping else { break };
                            if !r.mode.split_partial
                                || self.rmap.anon_vmas[fav].root == self.rmap.anon_vmas[new_av].root
                            {
                                return Err(RelocReason::PartialLarge);
                            }
                            match self.split_folio_for_relocation(folio) {
                                Ok(()) => {
                                    self.trace.stats.policy.folios_split += 1;
                                    continue;
                                }
                                Err(()) => return Err(RelocReason::PartialLarge),
                            }
                        }
                        let index = self.vm.vmas[r.new].linear_page_index(r.new_of(a));
                        self.mem.rewrite_folio(&mut self.trace, changes, folio, to, index);
                        done.insert(folio);
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// If every page of the large `folio` is mapped here, in order, inside the moved range,
    /// and nowhere else: the address of its first page (`is_thp_fully_spanned`).
    fn fully_spanned(&self, r: &Reloc, a: VirtAddr, folio: FolioId, sub: u16) -> Option<VirtAddr> {
        self.mem.large_fully_in(&self.vm.mms[r.mm].pt, r.old_addr, r.old_end(), a, folio, sub)
    }

    /// Copy the shared page at `a` into a new exclusive folio of this process, already
    /// placed at its new index (Linus's `copy_one_pte` with `copy_page`; the old page loses
    /// one mapping, as on a copy-on-write fault).
    fn unshare_page(&mut self, r: &Reloc, a: VirtAddr, old: FolioId, sub: u16, changes: &mut Vec<Change>) {
        let Pte::Present { flags, .. } = self.vm.mms[r.mm].pt.get_pte(a) else { return };
        let tag = self.mem.folios[old].pages[sub as usize].tag;
        let new = self.mem.folio_alloc(&mut self.trace, 0);
        let old_av = self.vm.vmas[r.old].anon_vma.expect("a faulted VMA");
        let old_index = self.vm.vmas[r.old].linear_page_index(a);
        {
            let f = &mut self.mem.folios[new];
            f.pages[0].tag = tag;
            f.pages[0].mapcount = 1;
            f.pages[0].anon_exclusive = true;
            // As if it had been faulted in the old VMA, for the undo.
            f.mapping = Mapping::Anon(old_av);
            f.index = old_index;
        }
        self.vm.mms[r.mm].pt.set_pte(a, Pte::Present { folio: new, sub: 0, flags });
        // As a copy-on-write fault: the copy is mlocked in a VM_LOCKED VMA, the old page
        // munlocked there.
        self.mem.folio_add_lru_vma(&self.vm, new, r.old);
        self.mem.munlock_vma_folio(&self.vm, old, r.old);
        self.mem.folio_remove_rmap_pte(&mut self.trace, old, sub, r.mm);
        let index = self.vm.vmas[r.new].linear_page_index(r.new_of(a));
        let to = Mapping::Anon(self.vm.vmas[r.new].anon_vma.expect("target anon_vma"));
        self.mem.rewrite_folio(&mut self.trace, changes, new, to, index);
        self.trace.stats.policy.pages_copied += 1;
        self.trace.stats.policy.bytes_copied += PAGE_SIZE;
    }

    /// Split a partly covered large folio so that the covered part can move (`split_folio`;
    /// it fails, as in the series, when the folio is pinned or otherwise referenced).
    fn split_folio_for_relocation(&mut self, folio: FolioId) -> Result<(), ()> {
        self.split_folio(folio).map_err(|_| ())
    }

    /// Walk `[start, start + len)` without changing anything: what a relocation would meet.
    pub(crate) fn reloc_prewalk(&mut self, mm: MmId, start: VirtAddr, len: u64) -> Prewalk {
        let end = start.plus(len);
        // A PMD migration entry counts as a PTE one does.
        let migration = !self.vm.mms[mm].pt.migration_pmds_in(start, end).is_empty();
        let mut p = Prewalk { migration, ..Default::default() };
        let mut seen: HashSet<FolioId> = HashSet::new();
        for (h, folio, _) in self.vm.mms[mm].pt.huge_in(start, end) {
            self.trace.stats.policy.entries_walked += 1;
            if folio == HUGE_ZERO_FOLIO {
                continue;
            }
            if h < start || h.plus(PMD_SIZE) > end {
                p.partial_large = true;
            }
            if self.rmap.folio_mapped_in_other_mm(&self.vm, &self.mem, folio, mm) {
                p.shared_pages += PMD_SIZE >> PAGE_SHIFT;
            }
            p.pinned |= self.mem.folios[folio].pincount > 0;
        }
        for (a, pte) in self.vm.mms[mm].pt.ptes_in(start, end) {
            self.trace.stats.policy.entries_walked += 1;
            match pte {
                Pte::Migration { .. } => p.migration = true,
                Pte::Present { folio, sub, .. }
                    if folio != ZERO_FOLIO && self.mem.folios[folio].is_anon() =>
                {
                    if seen.insert(folio) {
                        self.trace.stats.policy.folios_walked += 1;
                    }
                    let f = &self.mem.folios[folio];
                    p.pinned |= f.pincount > 0;
                    let shared = if f.is_large() {
                        if self.mem.large_fully_in(&self.vm.mms[mm].pt, start, end, a, folio, sub).is_none() {
                            p.partial_large = true;
                        }
                        self.rmap.folio_mapped_in_other_mm(&self.vm, &self.mem, folio, mm)
                    } else {
                        f.pages[0].mapcount > 1
                    };
                    if shared {
                        p.shared_pages += 1;
                    }
                }
                _ => {}
            }
        }
        p
    }
}

/// How one move will be relocated.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RelocPlan {
    /// `MREMAP_MUST_RELOCATE_ANON`: a move that cannot relocate fails with EFAULT.
    pub must: bool,
}

impl System {
    /// `should_relocate_anon` and its counterparts: whether this move relocates (the design
    /// says whether it tries, [`Design::should_relocate_anon`]; the checks here are every
    /// design's). With MREMAP_MUST_RELOCATE_ANON, a VMA that can never be relocated fails
    /// with EFAULT at once; an unfaulted one is a no-op success.
    pub(crate) fn reloc_plan(&mut self, vrm: &Vrm, vma: VmaId) -> KResult<Option<RelocPlan>> {
        if self.probe.is_some() {
            // Each design's answer matters only where the checks every design makes let the
            // move go on.
            let gate = self.reloc_gate(vrm, vma);
            self.probe("should_relocate_anon", |p| match (p.should_relocate_anon(vrm.flags), &gate) {
                (None, _) | (Some(_), Some(Ok(()))) => Ok(None),
                (Some(_), Some(Err(e))) => Err(*e),
                (Some(s), None) => Ok(Some(s)),
            });
        }
        let must = vrm.flags & MREMAP_MUST_RELOCATE_ANON != 0;
        let Some(shared_vma) = self.policy.should_relocate_anon(vrm.flags) else { return Ok(None) };
        if let Some(end) = self.reloc_gate(vrm, vma) {
            return end.map(|()| None);
        }
        self.trace.stats.policy.relocations_attempted += 1;
        if shared_vma == SharedVma::Refuse && self.vm.vma_maybe_has_shared_anon_folios(&self.rmap, vma) {
            self.trace.stats.policy.refuse(RelocReason::Shared);
            if must {
                return Err(Errno::EFAULT);
            }
            return Ok(None);
        }
        Ok(Some(RelocPlan { must }))
    }

    /// The checks of [`System::reloc_plan`] that every design makes, once the design tries
    /// to relocate: Some when they end the plan (`Ok`: a plain move), None when it goes on.
    fn reloc_gate(&self, vrm: &Vrm, vma: VmaId) -> Option<KResult<()>> {
        let must = vrm.flags & MREMAP_MUST_RELOCATE_ANON != 0;
        let v = &self.vm.vmas[vma];
        if v.flags.intersects(VmFlags::SPECIAL | VmFlags::HUGETLB) || !v.is_anonymous() {
            if must {
                return Some(Err(Errno::EFAULT));
            }
            return Some(Ok(()));
        }
        if v.anon_vma.is_none() {
            // Unfaulted: copy_vma re-linearises its pgoff anyway.
            return Some(Ok(()));
        }
        // A multi-VMA move whose destination borders a VMA the same move has yet to move: a
        // relocation would let the destination merge into it, and moving that VMA next would
        // move part of what was just moved. The piece moves as the kernel moves it.
        let rest = (vrm.addr + vrm.old_len, vrm.src_end);
        if rest.0 < rest.1 {
            let m = &self.vm.mms[vrm.mm];
            let (ds, de) = (VirtAddr(vrm.new_addr), VirtAddr(vrm.new_addr + vrm.new_len));
            let borders_rest =
                [ds.0.checked_sub(1).and_then(|a| m.vma_lookup(VirtAddr(a))), m.vma_lookup(de)]
                    .into_iter()
                    .flatten()
                    .any(|n| self.vm.vmas[n].start.0 < rest.1 && self.vm.vmas[n].end.0 > rest.0);
            if borders_rest {
                return Some(if must { Err(Errno::EFAULT) } else { Ok(()) });
            }
        }
        None
    }

    /// `copy_vma_and_data` with relocation: the destination VMA (the design's choice,
    /// [`Design::copy_vma_relocating`]), and whether its folios were relocated. An error
    /// means nothing was relocated (refused, or undone and the new VMA unmapped again); the
    /// caller then does a plain move, or fails with MUST.
    pub(crate) fn copy_vma_relocating(
        &mut self,
        vmap: &mut VmaId,
        vrm: &Vrm,
        pgoff: PgOff,
    ) -> Result<(VmaId, bool), RelocReason> {
        let mm = vrm.mm;
        let (addr, len) = (VirtAddr(vrm.new_addr), vrm.new_len);
        let old_addr = VirtAddr(vrm.addr);
        self.probe("copy_vma_relocating", crate::designs::copy_vma_key);
        let (new_vma, mode) = match self.policy.copy_vma_relocating(self, vmap, vrm, pgoff)? {
            MoveTarget::Merged(nv) => return Ok((nv, false)),
            MoveTarget::Relocate { vma, mode } => (vma, mode),
        };
        if self.vm.vmas[new_vma].anon_vma.is_none() {
            // __anon_vma_prepare: may reuse a neighbour's anon_vma (find_mergeable_anon_vma).
            self.rmap.anon_vma_prepare(&mut self.vm, &mut self.trace, new_vma);
        }
        let r = Reloc { mm, old: *vmap, new: new_vma, old_addr, new_addr: addr, len: vrm.old_len, mode };
        match self.relocate_anon_folios(&r) {
            Ok(()) => {
                self.trace.stats.policy.relocations_done += 1;
                Ok((new_vma, true))
            }
            Err(reason) => {
                self.trace.stats.policy.relocations_undone += 1;
                self.trace.stats.policy.refuse(reason);
                let _ = self.do_munmap(mm, addr.0, len);
                if let Some(v) = self.vm.mms[mm].vma_lookup(old_addr) {
                    *vmap = v;
                }
                Err(reason)
            }
        }
    }

    /// The ordinary merge attempt of `copy_vma` (`vma_merge_copied_range`) alone; like
    /// `copy_vma`, it follows the source into the new VMA if the source merged into it.
    pub(crate) fn copy_vma_merge_only(
        &mut self,
        vmap: &mut VmaId,
        addr: VirtAddr,
        len: u64,
        pgoff: PgOff,
    ) -> Option<VmaId> {
        let mut vmg = self.vm.copied_range_vmg(*vmap, addr, len, pgoff, MergeCaller::MremapMove)?;
        self.copy_vma_merge(vmap, &mut vmg)
    }

    /// A merge attempt at `pgoff` (`auto`: as if unfaulted, the folios will follow; `matena`:
    /// keeping the anon_vma, which `is_mergeable_anon_vma` may let a neighbour adopt), else
    /// a new VMA (`matena` keeps the anon_vma links, `auto` starts unfaulted).
    pub(crate) fn copy_vma_at(
        &mut self,
        vmap: &mut VmaId,
        addr: VirtAddr,
        len: u64,
        pgoff: PgOff,
        keep: bool,
    ) -> Option<VmaId> {
        let mut vmg = self.vm.copied_range_vmg(*vmap, addr, len, pgoff, MergeCaller::MremapRelocate)?;
        if !keep {
            // As if unfaulted: the folios follow by relocation.
            vmg.copied_from = None;
            vmg.anon_vma = None;
        }
        if let Some(nv) = self.copy_vma_merge(vmap, &mut vmg) {
            return Some(nv);
        }
        Some(self.copy_vma_new(*vmap, addr, len, pgoff, !keep))
    }

    /// After a relocated move: "Let's try merge again..." (`vma_merge_existing_range` on the
    /// new VMA).
    pub(crate) fn relocated_merge_retry(&mut self, new_vma: VmaId, addr: VirtAddr, len: u64) {
        if !self.vm.vmas.contains(new_vma)
            || self.vm.vmas[new_vma].start > addr
            || self.vm.vmas[new_vma].end < addr.plus(len)
        {
            return;
        }
        let (s, e) = (self.vm.vmas[new_vma].start, self.vm.vmas[new_vma].end);
        let mut vmg = self.vm.vmg_from_vma(new_vma, s, e, MergeCaller::MremapRelocate);
        vmg.prev = self.vm.mms[vmg.mm].vma_before(s);
        self.vma_merge_existing_range(&mut vmg);
    }
}

impl System {
    /// Give the faulted-or-not VMA `n` the pgoff `target` and, if `av` is given, that
    /// anon_vma, rewriting its folios' `index` and `mapping` to fit (its folios are exclusive:
    /// the caller checked).
    pub(crate) fn relocate_in_place(&mut self, mm: MmId, n: VmaId, target: PgOff, av: Option<AnonVmaId>) {
        self.trace.stats.policy.rmap_lock_holds += 1;
        let old_av = self.vm.vmas[n].anon_vma;
        let new_av = av.or(old_av);
        let (ns, ne) = (self.vm.vmas[n].start, self.vm.vmas[n].end);
        if new_av != old_av {
            self.rmap.unlink_anon_vmas(&mut self.vm, &mut self.trace, n);
        }
        self.vma_set_range(n, ns, ne, target);
        if new_av != old_av
            && let Some(b) = new_av
        {
            self.vm.vmas[n].anon_vma = Some(b);
            self.rmap.anon_vma_chain_link(&mut self.vm, n, b);
            self.rmap.anon_vmas[b].num_active_vmas += 1;
        }
        let Some(to) = new_av else { return };
        let (folios, swaps) = self.mapped_anon_folios(mm, ns, ne);
        for _ in 0..swaps {
            self.trace.stats.policy.skip(RelocReason::Swap);
        }
        for m in folios {
            if !m.pmd {
                self.trace.stats.policy.folios_walked += 1;
            }
            let index = self.vm.vmas[n].linear_page_index(m.first);
            let f = &mut self.mem.folios[m.folio];
            f.mapping = Mapping::Anon(to);
            f.index = index;
            self.trace.stats.policy.folios_rewritten += 1;
        }
    }

    /// The walk of a rewrite in place (`matena_adopt`, `relocate_in_place`) over
    /// `[start, end)`: the folios of its PMD leaves (but the huge zero folio), then its
    /// PTE-mapped anonymous folios, each once; and how many swap entries it met. Every PMD
    /// leaf and PTE counts as an entry walked.
    pub(crate) fn mapped_anon_folios(
        &mut self,
        mm: MmId,
        start: VirtAddr,
        end: VirtAddr,
    ) -> (Vec<MappedFolio>, u64) {
        let mut out = Vec::new();
        for (h, folio, _) in self.vm.mms[mm].pt.huge_in(start, end) {
            self.trace.stats.policy.entries_walked += 1;
            if folio != HUGE_ZERO_FOLIO {
                out.push(MappedFolio { folio, first: h, pmd: true });
            }
        }
        let mut swaps = 0;
        let mut done: HashSet<FolioId> = HashSet::new();
        for (a, pte) in self.vm.mms[mm].pt.ptes_in(start, end) {
            self.trace.stats.policy.entries_walked += 1;
            match pte {
                Pte::Present { folio, sub, .. }
                    if folio != ZERO_FOLIO && self.mem.folios[folio].is_anon() && done.insert(folio) =>
                {
                    let first = VirtAddr(a.0 - (u64::from(sub) << PAGE_SHIFT));
                    out.push(MappedFolio { folio, first, pmd: false });
                }
                Pte::Swap { .. } => swaps += 1,
                _ => {}
            }
        }
        (out, swaps)
    }
}

/// A folio a walk in place found: where its first page maps, and whether a PMD maps it.
pub(crate) struct MappedFolio {
    pub folio: FolioId,
    pub first: VirtAddr,
    pub pmd: bool,
}

impl System {
    /// Matěna's RFC v3 ("migration waiting ... to pagewalk"): wait for every migration with an
    /// entry in `[start, end)` to finish (`migration_entry_wait`), so that the walk that follows
    /// sees present pages.
    pub(crate) fn wait_migrations(&mut self, mm: MmId, start: VirtAddr, end: VirtAddr) {
        let pt = &self.vm.mms[mm].pt;
        let mut waits: Vec<FolioId> =
            pt.migration_pmds_in(start, end).into_iter().map(|(_, f, _, _)| f).collect();
        waits.extend(pt.ptes_in(start, end).into_iter().filter_map(|(_, p)| match p {
            Pte::Migration { folio, .. } => Some(folio),
            _ => None,
        }));
        let mut waited = HashSet::new();
        for folio in waits {
            if waited.insert(folio) && self.mem.folios.contains(folio) && self.mem.folios[folio].migrating {
                self.migration_entry_wait(folio);
                self.trace.stats.policy.migrations_waited += 1;
            }
        }
    }
}

impl crate::mm::Vm {
    /// `vma_maybe_has_shared_anon_folios` (the 2025 series): the VMA had unCoW'd parents
    /// (more than one anon_vma_chain) or its anon_vma has forked children.
    pub fn vma_maybe_has_shared_anon_folios(&self, rmap: &crate::rmap::Rmap, vma: VmaId) -> bool {
        let Some(av) = self.vmas[vma].anon_vma else { return false };
        if self.vma_is_fork_child(Some(vma)) {
            return true;
        }
        let a = &rmap.anon_vmas[av];
        let expected = u32::from(a.root == av);
        a.num_children > expected
    }
}

impl crate::folio::FolioStore {
    /// Whether every page of the large `folio` (page `sub` mapped at `a`) is mapped once, in
    /// order, inside `[start, end)` of the page table `pt`: the address of its first page.
    pub(crate) fn large_fully_in(
        &self,
        pt: &crate::pagetable::PageTable,
        start: VirtAddr,
        end: VirtAddr,
        a: VirtAddr,
        folio: FolioId,
        sub: u16,
    ) -> Option<VirtAddr> {
        let f = &self.folios[folio];
        let nr = f.nr_pages();
        let first = VirtAddr(a.0.checked_sub(u64::from(sub) << PAGE_SHIFT)?);
        if first < start || first.plus(nr << PAGE_SHIFT) > end || f.entire_mapcount != 0 {
            return None;
        }
        for i in 0..nr {
            if f.pages[i as usize].mapcount != 1 {
                return None;
            }
            match pt.get_pte(first.plus(i << PAGE_SHIFT)) {
                Pte::Present { folio: g, sub: s, .. } if g == folio && u64::from(s) == i => {}
                _ => return None,
            }
        }
        Some(first)
    }

    fn rewrite_folio(
        &mut self,
        trace: &mut crate::stats::Trace,
        changes: &mut Vec<Change>,
        folio: FolioId,
        mapping: Mapping,
        index: PgOff,
    ) {
        let f = &mut self.folios[folio];
        changes.push(Change { folio, mapping: f.mapping, index: f.index });
        f.mapping = mapping;
        f.index = index;
        trace.stats.policy.folios_rewritten += 1;
    }
}
