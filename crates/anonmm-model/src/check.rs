//! The invariant checker: everything the kernel relies on, checked over the whole machine.
//!
//! - VMAs are sorted, non-overlapping, page aligned and filed under their start.
//! - anon_vma bookkeeping: chains, interval-tree keys, `num_active_vmas`, `num_children`,
//!   refcounts, root and parent links.
//! - Page tables only map inside VMAs; huge leaves are aligned and inside one VMA.
//! - Mapcounts equal the page-table references; no folio is leaked or freed while used.
//! - rmap reaches every mapping of every anon folio at the address its index implies.
//! - PageAnonExclusive pages are mapped once; a writable PTE of a COW mapping maps an
//!   exclusive page.
//! - Migration entries name a folio under migration (none is left behind), found by rmap
//!   where its index says; an exclusive one is the page's only entry; a folio under migration
//!   is unmapped, shared, and owned by one migration in flight.
//! - File pages sit in their inode's page cache at their index.

// Fx hashing: the checker runs after every step, and SipHash was a third of its time.
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use crate::folio::{FolioId, HUGE_ZERO_FOLIO, Mapping, ZERO_FOLIO};
use crate::mm::System;
use crate::pagetable::{Pmd, Pte, PteFlags};
use crate::rmap::AnonVmaId;
use crate::types::{PAGE_SIZE, PMD_SHIFT, PMD_SIZE, PgOff, VirtAddr};
use crate::vma::{VmFlags, VmaId};

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)*) => {
        if !$cond {
            return Err(format!($($fmt)*));
        }
    };
}

/// What a step may have changed, for [`System::check_touched`]: ranges of address spaces
/// (the call's own, as the runner knows them), and the folios and anon_vmas those ranges
/// used before the step (a step that unmaps them changes their counts where it no longer
/// reaches them).
#[derive(Clone, Debug, Default)]
pub struct Touched {
    /// `[start, end)` ranges of address spaces.
    pub ranges: Vec<(crate::mm::MmId, u64, u64)>,
    folios: Vec<FolioId>,
    anon_vmas: Vec<AnonVmaId>,
}

impl System {
    /// Before a step: note what the `ranges` use now (folios mapped, anon_vmas of the VMAs
    /// there), so that [`System::check_touched`] checks them after the step too.
    pub fn touched_before(&self, ranges: Vec<(crate::mm::MmId, u64, u64)>) -> Touched {
        let mut t = Touched { ranges, ..Default::default() };
        for &(mmid, s, e) in &t.ranges {
            if !self.vm.mms.contains(mmid) {
                continue;
            }
            let mm = &self.vm.mms[mmid];
            for (_, en) in mm.vmas.range(..e).rev() {
                let v = &self.vm.vmas[en.id];
                if v.end.0 <= s {
                    break;
                }
                t.anon_vmas.extend(v.chain.iter().map(|&c| self.rmap.avcs[c].anon_vma));
            }
            let last = e.saturating_sub(1) >> PMD_SHIFT;
            for (key, pmd) in mm.pt.pmds.range((s >> PMD_SHIFT)..=last) {
                match pmd {
                    Pmd::Huge { folio, .. } | Pmd::Migration { folio, .. } => t.folios.push(*folio),
                    Pmd::Table(tb) => {
                        for (i, pte) in tb.ptes.iter().enumerate() {
                            let a = (key << PMD_SHIFT) + i as u64 * PAGE_SIZE;
                            if a < s || a >= e {
                                continue;
                            }
                            if let Pte::Present { folio, .. } | Pte::Migration { folio, .. } = *pte {
                                t.folios.push(folio);
                            }
                        }
                    }
                }
            }
        }
        t.folios.sort_unstable();
        t.folios.dedup();
        t
    }

    /// Check the invariants of what a step touched, in time proportional to it: the VMAs
    /// overlapping each range and their neighbours (filing, order, alignment, chains and
    /// their interval-tree keys), every page-table entry in the ranges (inside a VMA,
    /// rmap reaches it at the address its index implies, exclusivity, migration entries,
    /// guard markers, swap entries naming used slots), every anon folio mapped there or
    /// noted before (mapcounts, entire mapcount and `_mm_id` slots counted by an rmap walk
    /// of its anon_vma's tree, as `rmap_walk_anon` finds its mappings; extra references;
    /// a folio with nothing left referencing it is a leak), the anon_vmas of those VMAs
    /// (root, parent, tree filing, `num_active_vmas`), and the VMA count against the VMAs
    /// the address spaces hold.
    ///
    /// Not checked here (the full [`System::check`] does, and the runner runs it
    /// periodically and after the last step): mapcounts of page-cache folios (the model has
    /// no `i_mmap` to walk), swap slot counts, `num_children` and exact anon_vma refcounts,
    /// leaks of chains and of folios the step never reached.
    pub fn check_touched(&self, t: &Touched) -> Result<(), String> {
        let mut folios: HashSet<FolioId> = t.folios.iter().copied().collect();
        let mut avs: HashSet<AnonVmaId> = t.anon_vmas.iter().copied().collect();
        for &(mmid, s, e) in &t.ranges {
            if !self.vm.mms.contains(mmid) {
                continue;
            }
            let mm = &self.vm.mms[mmid];
            // The VMAs overlapping [s, e) and one neighbour on each side (a merge's).
            let mut ids = Vec::new();
            let before = mm.vmas.range(..s).next_back();
            ids.extend(before.map(|(&k, en)| (k, en.end, en.id)));
            for (&k, en) in mm.vmas.range(s..) {
                ids.push((k, en.end, en.id));
                if k >= e {
                    break;
                }
            }
            let mut last_end = 0;
            for &(start, end, id) in &ids {
                ensure!(self.vm.vmas.contains(id), "{mmid:?}: a freed VMA filed at {start:#x}");
                let v = &self.vm.vmas[id];
                ensure!(v.mm == mmid, "VMA {id:?} filed in the wrong mm");
                ensure!(v.start.0 == start && v.end.0 == end, "VMA {id:?} filed under a stale range");
                ensure!(v.start < v.end, "empty VMA at {start:#x}");
                ensure!(v.start.is_page_aligned() && v.end.is_page_aligned(), "unaligned VMA {start:#x}");
                ensure!(v.start.0 >= last_end, "VMAs overlap at {start:#x}");
                last_end = v.end.0;
                if let Some(av) = v.anon_vma {
                    ensure!(self.rmap.anon_vmas.contains(av), "VMA {start:#x} points to a freed anon_vma");
                    ensure!(
                        v.chain.iter().any(|&c| self.rmap.avcs[c].anon_vma == av),
                        "VMA {start:#x}: its anon_vma is not in its chain"
                    );
                } else {
                    ensure!(v.chain.is_empty(), "unfaulted VMA {start:#x} has chains");
                }
                for &c in &v.chain {
                    ensure!(self.rmap.avcs.contains(c), "VMA {start:#x}: a freed chain");
                    let avc = &self.rmap.avcs[c];
                    ensure!(avc.vma == id, "chain of VMA {start:#x} points to another VMA");
                    ensure!(
                        self.rmap.anon_vmas.contains(avc.anon_vma),
                        "chain of VMA {start:#x}: a freed anon_vma"
                    );
                    ensure!(
                        self.rmap.anon_vmas[avc.anon_vma].tree.contains(&(v.pgoff.0, c)),
                        "chain of VMA {start:#x} missing from its anon_vma's tree under its pgoff"
                    );
                    avs.insert(avc.anon_vma);
                }
                if let Some(f) = v.file {
                    ensure!(self.fs.files.contains(f), "VMA {start:#x} holds a closed file");
                }
            }
            self.check_range_entries(mmid, s, e, &mut folios)?;
        }
        for av in avs {
            self.check_one_anon_vma(av)?;
        }
        for f in folios {
            self.check_one_folio(f)?;
        }
        let linked: usize = self.vm.mms.iter().map(|(_, m)| m.map_count()).sum();
        ensure!(
            linked == self.vm.vmas.len(),
            "{} VMAs allocated but {} linked (leak)",
            self.vm.vmas.len(),
            linked
        );
        Ok(())
    }

    /// The page-table entries of `[s, e)` in `mmid`, checked as [`System::check`] checks
    /// them; the folios they map go to `folios`.
    fn check_range_entries(
        &self,
        mmid: crate::mm::MmId,
        s: u64,
        e: u64,
        folios: &mut HashSet<FolioId>,
    ) -> Result<(), String> {
        let mm = &self.vm.mms[mmid];
        // rmap reaches a VMA from an anon_vma when one of the VMA's chains is in its tree.
        let reach = &|av: AnonVmaId, vma: VmaId| {
            self.vm.vmas[vma].chain.iter().any(|&c| {
                self.rmap.avcs[c].anon_vma == av
                    && self.rmap.anon_vmas[av].tree.contains(&(self.vm.vmas[vma].pgoff.0, c))
            })
        };
        let last = e.saturating_sub(1) >> PMD_SHIFT;
        for (key, pmd) in mm.pt.pmds.range((s >> PMD_SHIFT)..=last) {
            let base = VirtAddr(key << PMD_SHIFT);
            let Pmd::Table(tb) = pmd else {
                folios.extend(self.check_pmd_entry(reach, mmid, base, pmd)?);
                continue;
            };
            self.check_pmd_entry(reach, mmid, base, pmd)?;
            for (i, pte) in tb.ptes.iter().enumerate() {
                let a = base.plus(i as u64 * PAGE_SIZE);
                if pte.is_none() || a.0 < s || a.0 >= e {
                    continue;
                }
                let Some(vma) = mm.vma_lookup(a) else {
                    return Err(format!("PTE at {a:?} outside any VMA"));
                };
                folios.extend(self.check_pte_entry(reach, mmid, vma, a, *pte)?);
                if let Pte::Swap { entry, .. } = *pte {
                    ensure!(self.swap.slot(entry).is_some(), "swap PTE at {a:?} names free slot {}", entry.0);
                    ensure!(
                        self.vm.vmas[vma].anon_vma.is_some(),
                        "swap PTE at {a:?} in a VMA without anon_vma"
                    );
                }
            }
        }
        Ok(())
    }

    /// One anon_vma, as [`System::check`]'s anon_vma pass checks it, but for the counts
    /// that need every other anon_vma (`num_children`, the root's refcount).
    fn check_one_anon_vma(&self, id: AnonVmaId) -> Result<(), String> {
        // Freed since: what referenced it was checked through its VMAs and chains.
        if !self.rmap.anon_vmas.contains(id) {
            return Ok(());
        }
        let a = &self.rmap.anon_vmas[id];
        ensure!(self.rmap.anon_vmas.contains(a.root), "anon_vma {id:?}: freed root");
        ensure!(a.tree.is_empty() || self.rmap.anon_vmas.contains(a.parent), "anon_vma {id:?}: freed parent");
        ensure!(self.rmap.anon_vmas[a.root].root == a.root, "anon_vma {id:?}: root is not a root");
        let mut active = 0;
        for &(key, c) in &a.tree {
            ensure!(self.rmap.avcs.contains(c), "anon_vma {id:?}: tree holds a freed chain");
            let avc = &self.rmap.avcs[c];
            ensure!(
                avc.anon_vma == id && self.vm.vmas.contains(avc.vma) && self.vm.vmas[avc.vma].pgoff.0 == key,
                "anon_vma {id:?}: misfiled chain (not under its VMA's pgoff)"
            );
            active += u32::from(self.vm.vmas[avc.vma].anon_vma == Some(id));
        }
        ensure!(
            a.num_active_vmas == active,
            "anon_vma {id:?}: num_active_vmas {} but {} VMAs",
            a.num_active_vmas,
            active
        );
        ensure!(a.refcount > 0, "anon_vma {id:?}: alive with no reference");
        Ok(())
    }

    /// One folio: its mapcounts against the mappings an rmap walk finds (anon folios), its
    /// extra references, exclusivity, migration state and `_mm_id` slots.
    fn check_one_folio(&self, id: FolioId) -> Result<(), String> {
        if id == ZERO_FOLIO || id == HUGE_ZERO_FOLIO {
            return Ok(());
        }
        // Freed since (unmapped): what mapped it was checked in its range.
        if !self.mem.folios.contains(id) {
            return Ok(());
        }
        let f = &self.mem.folios[id];
        let cached = match f.mapping {
            Mapping::File(ino) => u32::from(
                self.fs.inodes.contains(ino) && self.fs.inodes[ino].cache.get(&f.index.0) == Some(&id),
            ),
            _ => 0,
        };
        let (sc, mg) = (u32::from(f.swap.is_some()), u32::from(f.migrating));
        ensure!(
            f.extra_refs == cached + sc + f.pincount + mg,
            "folio {id:?}: {} extra references but page cache {cached}, swap cache {sc}, pins {}, migration {mg}",
            f.extra_refs,
            f.pincount
        );
        if let Some(e) = f.swap {
            ensure!(
                self.swap.slot(e).and_then(|s| s.cache) == Some(id),
                "folio {id:?} claims swap slot {} which does not cache it",
                e.0
            );
        }
        ensure!(
            !f.lazyfree || (f.is_anon() && f.swap.is_none()),
            "folio {id:?}: lazily freed but swap-backed"
        );
        for (i, p) in f.pages.iter().enumerate() {
            if p.anon_exclusive {
                ensure!(
                    f.page_mapcount(i) <= 1,
                    "folio {id:?} page {i}: exclusive but mapped {} times",
                    f.page_mapcount(i)
                );
            }
        }
        if f.migrating {
            ensure!(f.is_anon(), "folio {id:?}: a page-cache folio under migration");
            ensure!(!f.is_mapped(), "folio {id:?}: under migration but still mapped");
        }
        ensure!(f.refcount() > 0, "folio {id:?} leaked: nothing references it");
        let Mapping::Anon(av) = f.mapping else { return Ok(()) };
        ensure!(self.rmap.anon_vmas.contains(av), "folio {id:?} points to a freed anon_vma");
        // rmap_walk_anon: every VMA in the anon_vma's tree, at the address the index implies.
        let n = f.nr_pages();
        let mut ptes = vec![0u32; n as usize];
        let mut pmds = 0u32;
        let mut by_mm: HashMap<crate::mm::MmId, i64> = HashMap::default();
        let mut seen: HashSet<VmaId> = HashSet::default();
        for &(_, c) in &self.rmap.anon_vmas[av].tree {
            let vma = self.rmap.avcs[c].vma;
            if !seen.insert(vma) {
                continue;
            }
            let v = &self.vm.vmas[vma];
            let mm = &self.vm.mms[v.mm];
            for i in 0..n {
                let idx = f.index.0 + i;
                let Some(off) = idx.checked_sub(v.pgoff.0) else { continue };
                let Some(a) = off.checked_mul(PAGE_SIZE).and_then(|o| v.start.0.checked_add(o)) else {
                    continue;
                };
                if a >= v.end.0 {
                    continue;
                }
                match mm.pt.pmds.get(&(a >> PMD_SHIFT)) {
                    Some(Pmd::Table(t)) => {
                        if let Pte::Present { folio, sub, .. } = t.ptes[((a >> 12) & 511) as usize]
                            && folio == id
                            && u64::from(sub) == i
                        {
                            ptes[i as usize] += 1;
                            if f.is_large() {
                                *by_mm.entry(v.mm).or_default() += 1;
                            }
                        }
                    }
                    Some(Pmd::Huge { folio, .. }) if *folio == id && i == 0 && a % PMD_SIZE == 0 => {
                        pmds += 1;
                        *by_mm.entry(v.mm).or_default() += 1;
                    }
                    _ => {}
                }
            }
        }
        for (i, p) in f.pages.iter().enumerate() {
            ensure!(
                p.mapcount == ptes[i],
                "folio {id:?} page {i}: mapcount {} but rmap finds {} PTEs",
                p.mapcount,
                ptes[i]
            );
        }
        ensure!(
            f.entire_mapcount == pmds,
            "folio {id:?}: entire_mapcount {} but rmap finds {pmds} PMDs",
            f.entire_mapcount
        );
        self.check_mm_ids(id, Some(&by_mm).filter(|m| !m.is_empty()))
    }

    /// Check every invariant; the error names the first one broken.
    pub fn check(&self) -> Result<(), String> {
        self.check_vmas()?;
        self.check_anon_vmas()?;
        self.check_pages()?;
        self.check_swap()?;
        let without_file = self.vm.vmas.iter().filter(|(_, v)| v.file.is_none()).count();
        ensure!(
            without_file == self.vm.vmas_without_file,
            "{without_file} VMAs have no file but the count kept says {}",
            self.vm.vmas_without_file
        );
        Ok(())
    }

    /// Swap slots and the swap cache (mm/swapfile.c's `swap_map`, mm/swap_state.c): a slot's
    /// count is the number of swap PTEs naming it; a used slot has references or a cached
    /// folio (else it leaked); a swap-cache folio is cached under its own slot, and an
    /// unmapped one only while a swap PTE still needs it; pins are the pinned buffers' pages.
    fn check_swap(&self) -> Result<(), String> {
        let mut refs: HashMap<u32, u32> = HashMap::default();
        for (_, mm) in self.vm.mms.iter() {
            for (key, pmd) in mm.pt.pmds.iter() {
                let Pmd::Table(t) = pmd else { continue };
                for (i, pte) in t.ptes.iter().enumerate() {
                    let Pte::Swap { entry, .. } = *pte else { continue };
                    let a = VirtAddr(key << PMD_SHIFT).plus(i as u64 * PAGE_SIZE);
                    ensure!(self.swap.slot(entry).is_some(), "swap PTE at {a:?} names free slot {}", entry.0);
                    let vma = mm.vma_lookup(a).ok_or_else(|| format!("swap PTE at {a:?} outside any VMA"))?;
                    ensure!(
                        self.vm.vmas[vma].anon_vma.is_some(),
                        "swap PTE at {a:?} in a VMA without anon_vma"
                    );
                    *refs.entry(entry.0).or_default() += 1;
                }
            }
        }
        ensure!(self.swap.slots.len() as u64 <= self.swap.pages as u64, "more swap slots used than exist");
        for (&off, slot) in &self.swap.slots {
            let r = refs.get(&off).copied().unwrap_or(0);
            ensure!(slot.count == r, "swap slot {off}: count {} but {r} swap PTEs", slot.count);
            match slot.cache {
                None => ensure!(slot.count > 0, "swap slot {off} leaked: no reference and no cache"),
                Some(f) => {
                    ensure!(self.mem.folios.contains(f), "swap slot {off} caches a freed folio");
                    let fo = &self.mem.folios[f];
                    ensure!(fo.swap.map(|e| e.0) == Some(off), "swap-cache folio of slot {off} misfiled");
                    ensure!(!fo.is_large(), "large folio in the swap cache");
                    // A folio under migration is unmapped for a while, and stays cached.
                    ensure!(
                        fo.is_mapped() || slot.count > 0 || fo.migrating,
                        "swap slot {off}: unmapped cached folio and no swap PTE (leak)"
                    );
                }
            }
        }
        let mut pinned: HashMap<FolioId, u32> = HashMap::default();
        for pins in self.gup.pins.values() {
            for p in pins {
                for &f in &p.folios {
                    *pinned.entry(f).or_default() += 1;
                }
            }
        }
        for (id, f) in self.mem.folios.iter() {
            if let Some(e) = f.swap {
                ensure!(
                    self.swap.slot(e).and_then(|s| s.cache) == Some(id),
                    "folio {id:?} claims swap slot {} which does not cache it",
                    e.0
                );
            }
            let p = pinned.get(&id).copied().unwrap_or(0);
            ensure!(f.pincount == p, "folio {id:?}: pincount {} but {p} pinned pages", f.pincount);
            // folio_mark_lazyfree takes only anonymous folios outside the swap cache, and reclaim
            // never gives a lazily freed folio swap space.
            ensure!(
                !f.lazyfree || (f.is_anon() && f.swap.is_none()),
                "folio {id:?}: lazily freed but swap-backed"
            );
        }
        Ok(())
    }

    fn check_vmas(&self) -> Result<(), String> {
        let mut linked = 0;
        for (mmid, mm) in self.vm.mms.iter() {
            let mut last_end = 0;
            for (&start, e) in &mm.vmas {
                let v = &self.vm.vmas[e.id];
                linked += 1;
                ensure!(v.mm == mmid, "VMA {:?} filed in the wrong mm", e.id);
                ensure!(v.start.0 == start && v.end.0 == e.end, "VMA {:?} filed under a stale range", e.id);
                ensure!(v.start < v.end, "empty VMA at {:#x}", start);
                ensure!(v.start.is_page_aligned() && v.end.is_page_aligned(), "unaligned VMA {:#x}", start);
                ensure!(v.start.0 >= last_end, "VMAs overlap at {:#x}", start);
                last_end = v.end.0;
                if let Some(av) = v.anon_vma {
                    ensure!(self.rmap.anon_vmas.contains(av), "VMA {:#x} points to a freed anon_vma", start);
                    ensure!(
                        v.chain.iter().any(|&c| self.rmap.avcs[c].anon_vma == av),
                        "VMA {:#x}: its anon_vma is not in its chain",
                        start
                    );
                } else {
                    ensure!(v.chain.is_empty(), "unfaulted VMA {:#x} has chains", start);
                }
                for &c in &v.chain {
                    let avc = &self.rmap.avcs[c];
                    ensure!(avc.vma == e.id, "chain of VMA {:#x} points to another VMA", start);
                    ensure!(
                        self.rmap.anon_vmas[avc.anon_vma].tree.contains(&(v.pgoff.0, c)),
                        "chain of VMA {:#x} missing from its anon_vma's tree under its pgoff",
                        start
                    );
                }
                if let Some(f) = v.file {
                    ensure!(self.fs.files.contains(f), "VMA {:#x} holds a closed file", start);
                }
            }
        }
        ensure!(
            linked == self.vm.vmas.len(),
            "{} VMAs allocated but {} linked (leak)",
            self.vm.vmas.len(),
            linked
        );
        for (_, p) in self.vm.procs.iter() {
            ensure!(self.vm.mms.contains(p.mm), "process uses a freed mm");
        }
        Ok(())
    }

    fn check_anon_vmas(&self) -> Result<(), String> {
        let mut active: HashMap<AnonVmaId, u32> = HashMap::default();
        for (_, v) in self.vm.vmas.iter() {
            if let Some(av) = v.anon_vma {
                *active.entry(av).or_default() += 1;
            }
        }
        // folio_get_anon_vma references held by migrations in flight.
        let mut migrating: HashMap<AnonVmaId, u32> = HashMap::default();
        for m in self.gup.migrations.values().flatten() {
            *migrating.entry(m.anon_vma).or_default() += 1;
        }
        let mut children: HashMap<AnonVmaId, u32> = HashMap::default();
        let mut descendants: HashMap<AnonVmaId, u32> = HashMap::default();
        for (id, a) in self.rmap.anon_vmas.iter() {
            ensure!(self.rmap.anon_vmas.contains(a.root), "anon_vma {id:?}: freed root");
            // Only a linked anon_vma needs its parent (for num_children); one kept alive by a
            // migration's reference after its last VMA went may outlive it, as in the kernel.
            ensure!(
                a.tree.is_empty() || self.rmap.anon_vmas.contains(a.parent),
                "anon_vma {id:?}: freed parent"
            );
            ensure!(self.rmap.anon_vmas[a.root].root == a.root, "anon_vma {id:?}: root is not a root");
            if id != a.root {
                *descendants.entry(a.root).or_default() += 1;
            }
            if !a.tree.is_empty() {
                *children.entry(a.parent).or_default() += 1;
            }
            for &(key, c) in &a.tree {
                ensure!(self.rmap.avcs.contains(c), "anon_vma {id:?}: tree holds a freed chain");
                ensure!(
                    self.rmap.avcs[c].anon_vma == id
                        && self.vm.vmas.contains(self.rmap.avcs[c].vma)
                        && self.vm.vmas[self.rmap.avcs[c].vma].pgoff.0 == key,
                    "anon_vma {id:?}: misfiled chain (not under its VMA's pgoff)"
                );
            }
        }
        let mut chained = 0;
        for (id, a) in self.rmap.anon_vmas.iter() {
            chained += a.tree.len();
            let act = active.get(&id).copied().unwrap_or(0);
            ensure!(
                a.num_active_vmas == act,
                "anon_vma {id:?}: num_active_vmas {} but {} VMAs",
                a.num_active_vmas,
                act
            );
            let ch = children.get(&id).copied().unwrap_or(0);
            ensure!(
                a.num_children == ch,
                "anon_vma {id:?}: num_children {} but {} expected",
                a.num_children,
                ch
            );
            let rc = u32::from(!a.tree.is_empty())
                + if a.root == id { descendants.get(&id).copied().unwrap_or(0) } else { 0 }
                + migrating.get(&id).copied().unwrap_or(0);
            ensure!(a.refcount == rc, "anon_vma {id:?}: refcount {} but {} expected", a.refcount, rc);
            ensure!(a.refcount > 0, "anon_vma {id:?}: alive with no reference");
        }
        ensure!(
            chained == self.rmap.avcs.len(),
            "{} chains allocated but {} filed (leak)",
            self.rmap.avcs.len(),
            chained
        );
        Ok(())
    }

    fn check_pages(&self) -> Result<(), String> {
        // (folio, page) -> PTE mappings; folio -> PMD mappings.
        let mut pte_maps: HashMap<(FolioId, u16), u32> = HashMap::default();
        let mut pmd_maps: HashMap<FolioId, u32> = HashMap::default();
        // (folio, page) -> (migration entries, whether any is exclusive).
        let mut mig_maps: HashMap<(FolioId, u16), (u32, bool)> = HashMap::default();
        // Mappings of each large folio by mm, for its `_mm_id` slots.
        let mut mm_maps: HashMap<FolioId, HashMap<crate::mm::MmId, i64>> = HashMap::default();
        // Folios a VM_LOCKED VMA maps whole (a small folio's PTE, a THP's PMD): mlocked.
        let mut locked_maps: HashSet<FolioId> = HashSet::default();
        // Which VMAs each anon_vma's interval tree reaches, once, instead of a tree scan per page.
        let reach: HashSet<(AnonVmaId, VmaId)> = self
            .rmap
            .anon_vmas
            .iter()
            .flat_map(|(av, a)| a.tree.iter().map(move |&(_, c)| (av, c)))
            .map(|(av, c)| (av, self.rmap.avcs[c].vma))
            .collect();
        let reach = &|av, v| reach.contains(&(av, v));
        for (mmid, mm) in self.vm.mms.iter() {
            let leaves = mm.pt.pmds.iter().filter(|(_, p)| !matches!(p, Pmd::Table(_))).count();
            ensure!(
                leaves == mm.pt.pmds.leaf_count(),
                "{mmid:?} counts {} PMD leaves but has {leaves}",
                mm.pt.pmds.leaf_count()
            );
            let mut last_vma: Option<(VmaId, u64, u64)> = None;
            for (key, pmd) in mm.pt.pmds.iter() {
                let base = VirtAddr(key << PMD_SHIFT);
                let leaf = self.check_pmd_entry(reach, mmid, base, pmd)?;
                match pmd {
                    Pmd::Huge { .. } => {
                        let Some(folio) = leaf else { continue };
                        *pmd_maps.entry(folio).or_default() += 1;
                        *mm_maps.entry(folio).or_default().entry(mmid).or_default() += 1;
                        if mm.vma_lookup(base).is_some_and(|v| self.vm.vma_mlocks(v)) {
                            locked_maps.insert(folio);
                        }
                    }
                    Pmd::Migration { folio, kind, .. } => {
                        for i in 0..512u16 {
                            let m = mig_maps.entry((*folio, i)).or_default();
                            m.0 += 1;
                            m.1 |= kind.is_exclusive();
                        }
                    }
                    Pmd::Table(t) => {
                        for (i, pte) in t.ptes.iter().enumerate() {
                            let a = base.plus(i as u64 * PAGE_SIZE);
                            if pte.is_none() {
                                continue;
                            }
                            // Neighbouring PTEs are mostly in one VMA: look up only past its end.
                            let vma = match last_vma {
                                Some((v, s, e)) if s <= a.0 && a.0 < e => v,
                                _ => {
                                    let Some(v) = mm.vma_lookup(a) else {
                                        return Err(format!("PTE at {a:?} outside any VMA"));
                                    };
                                    last_vma = Some((v, self.vm.vmas[v].start.0, self.vm.vmas[v].end.0));
                                    v
                                }
                            };
                            let Some(folio) = self.check_pte_entry(reach, mmid, vma, a, *pte)? else {
                                continue;
                            };
                            match *pte {
                                Pte::Present { sub, .. } => {
                                    *pte_maps.entry((folio, sub)).or_default() += 1;
                                    if self.mem.folios[folio].is_large() {
                                        *mm_maps.entry(folio).or_default().entry(mmid).or_default() += 1;
                                    } else if self.vm.vma_mlocks(vma) {
                                        locked_maps.insert(folio);
                                    }
                                }
                                Pte::Migration { sub, kind, .. } => {
                                    let m = mig_maps.entry((folio, sub)).or_default();
                                    m.0 += 1;
                                    m.1 |= kind.is_exclusive();
                                }
                                _ => {}
                            }
                        }
                    }
                }
            }
        }
        for (&(folio, sub), &(n, excl)) in &mig_maps {
            ensure!(
                !excl || n == 1,
                "folio {folio:?} page {sub}: an exclusive migration entry, but {n} entries name the page"
            );
        }
        let mut in_flight: HashMap<FolioId, u32> = HashMap::default();
        for (pid, list) in &self.gup.migrations {
            for m in list {
                ensure!(
                    self.mem.folios.contains(m.folio) && self.mem.folios[m.folio].migrating,
                    "pid {pid}: migration of folio {:?} in flight but the folio is not under migration",
                    m.folio
                );
                ensure!(
                    self.rmap.anon_vmas.contains(m.anon_vma),
                    "migration of {:?} holds a freed anon_vma",
                    m.folio
                );
                *in_flight.entry(m.folio).or_default() += 1;
            }
        }
        let mut cached: HashMap<FolioId, u32> = HashMap::default();
        for (ino, inode) in self.fs.inodes.iter() {
            for (&idx, &f) in &inode.cache {
                ensure!(self.mem.folios.contains(f), "page cache holds a freed folio");
                let fo = &self.mem.folios[f];
                ensure!(
                    fo.mapping == Mapping::File(ino) && fo.index == PgOff(idx),
                    "page cache folio misfiled"
                );
                *cached.entry(f).or_default() += 1;
            }
        }
        for (id, f) in self.mem.folios.iter() {
            if id == ZERO_FOLIO || id == HUGE_ZERO_FOLIO {
                continue;
            }
            // mm/mlock.c: a folio a VM_LOCKED VMA maps whole was mlocked when it was mapped
            // (mlock_new_folio, mlock_vma_folio) and stays so while that mapping lasts; the
            // count lives only with PG_mlocked (an mlocked folio in a VMA that lost
            // VM_LOCKED without an unmap, as MREMAP_DONTUNMAP's source, is allowed).
            // A folio swapped in to a VM_LOCKED VMA waits for an rmap walk (mlock_deferred).
            ensure!(
                !locked_maps.contains(&id) || f.mlocked || f.mlock_deferred,
                "folio {id:?} mapped whole by a VM_LOCKED VMA but not PG_mlocked"
            );
            ensure!(
                f.mlocked || f.mlock_count == 0,
                "folio {id:?}: mlock_count {} without PG_mlocked",
                f.mlock_count
            );
            for (i, p) in f.pages.iter().enumerate() {
                let m = pte_maps.get(&(id, i as u16)).copied().unwrap_or(0);
                ensure!(p.mapcount == m, "folio {id:?} page {i}: mapcount {} but {} PTEs", p.mapcount, m);
                if p.anon_exclusive {
                    ensure!(
                        f.page_mapcount(i) <= 1,
                        "folio {id:?} page {i}: exclusive but mapped {} times",
                        f.page_mapcount(i)
                    );
                }
            }
            let e = pmd_maps.get(&id).copied().unwrap_or(0);
            ensure!(
                f.entire_mapcount == e,
                "folio {id:?}: entire_mapcount {} but {} PMDs",
                f.entire_mapcount,
                e
            );
            let c = cached.get(&id).copied().unwrap_or(0);
            let sc = u32::from(f.swap.is_some());
            let mg = u32::from(f.migrating);
            ensure!(
                f.extra_refs == c + sc + f.pincount + mg,
                "folio {id:?}: {} extra references but page cache {c}, swap cache {sc}, pins {}, migration {mg}",
                f.extra_refs,
                f.pincount
            );
            let fl = in_flight.get(&id).copied().unwrap_or(0);
            ensure!(fl == mg, "folio {id:?}: under migration {mg} but {fl} migrations in flight");
            if f.migrating {
                // try_to_migrate replaced every mapping and shared every mapped page (a page of
                // a large folio that was already unmapped keeps its flag, as in the kernel; the
                // new folio takes exclusivity from the entries only).
                ensure!(f.is_anon(), "folio {id:?}: a page-cache folio under migration");
                ensure!(!f.is_mapped(), "folio {id:?}: under migration but still mapped");
                ensure!(
                    f.is_large() || f.pages.iter().all(|p| !p.anon_exclusive),
                    "folio {id:?}: under migration but PageAnonExclusive"
                );
            }
            ensure!(f.refcount() > 0, "folio {id:?} leaked: nothing references it");
            self.check_mm_ids(id, mm_maps.get(&id))?;
        }
        Ok(())
    }

    /// One PMD entry at `base` of `mmid`, as both [`System::check`] and
    /// [`System::check_touched`] check it: a huge leaf or a PMD migration entry lies inside
    /// one VMA and maps a 512-page folio that rmap reaches there (the huge zero page
    /// read-only); a PTE table counts its entries. The folio a leaf maps, if any but the huge
    /// zero page.
    fn check_pmd_entry(
        &self,
        reach: &dyn Fn(AnonVmaId, VmaId) -> bool,
        mmid: crate::mm::MmId,
        base: VirtAddr,
        pmd: &Pmd,
    ) -> Result<Option<FolioId>, String> {
        let mm = &self.vm.mms[mmid];
        match pmd {
            Pmd::Huge { folio, flags } => {
                let vma = mm.vma_lookup(base);
                ensure!(
                    vma.is_some_and(|v| self.vm.vmas[v].end.0 >= base.0 + PMD_SIZE),
                    "huge PMD at {base:?} not inside one VMA"
                );
                ensure!(self.mem.folios.contains(*folio), "huge PMD at {base:?} maps a freed folio");
                if *folio == HUGE_ZERO_FOLIO {
                    ensure!(!flags.contains(PteFlags::WRITE), "writable huge zero page at {base:?}");
                    return Ok(None);
                }
                ensure!(self.mem.folios[*folio].nr_pages() == 512, "huge PMD at {base:?} maps a small folio");
                self.check_anon_mapping(reach, mmid, vma.expect("vma"), base, *folio, 0, *flags, 512)?;
                Ok(Some(*folio))
            }
            Pmd::Migration { folio, kind, .. } => {
                let vma = mm.vma_lookup(base);
                ensure!(
                    vma.is_some_and(|v| self.vm.vmas[v].end.0 >= base.0 + PMD_SIZE),
                    "PMD migration entry at {base:?} not inside one VMA"
                );
                let vma = vma.expect("vma");
                self.check_migration_entry(base, *folio, 0, *kind, vma)?;
                ensure!(
                    self.mem.folios[*folio].nr_pages() == 512,
                    "PMD migration entry at {base:?} for a small folio"
                );
                self.check_anon_mapping(reach, mmid, vma, base, *folio, 0, PteFlags::empty(), 512)?;
                Ok(Some(*folio))
            }
            Pmd::Table(t) => {
                let used = t.ptes.iter().filter(|p| !p.is_none()).count();
                ensure!(used == t.used as usize, "PTE table at {base:?} miscounts its entries");
                Ok(None)
            }
        }
    }

    /// One PTE at `a` in `vma` of `mmid`, as both [`System::check`] and
    /// [`System::check_touched`] check it: a guard marker lies in a `VM_MAYBE_GUARD` VMA (an
    /// anonymous one with its anon_vma: fork must copy them); a present page or a migration
    /// entry names a live folio's page that rmap reaches there (the zero page read-only).
    /// The folio it maps, if any but the zero page. Swap entries are left to the callers.
    fn check_pte_entry(
        &self,
        reach: &dyn Fn(AnonVmaId, VmaId) -> bool,
        mmid: crate::mm::MmId,
        vma: VmaId,
        a: VirtAddr,
        pte: Pte,
    ) -> Result<Option<FolioId>, String> {
        match pte {
            Pte::Guard => {
                let v = &self.vm.vmas[vma];
                ensure!(
                    v.flags.contains(VmFlags::MAYBE_GUARD),
                    "guard marker at {a:?} in a VMA without VM_MAYBE_GUARD"
                );
                ensure!(
                    !v.is_anonymous() || v.anon_vma.is_some(),
                    "guard marker at {a:?} in an anonymous VMA without anon_vma"
                );
                Ok(None)
            }
            Pte::Present { folio, sub, flags } => {
                ensure!(self.mem.folios.contains(folio), "PTE at {a:?} maps a freed folio");
                ensure!((sub as u64) < self.mem.folios[folio].nr_pages(), "PTE at {a:?} maps past its folio");
                if folio == ZERO_FOLIO {
                    ensure!(!flags.contains(PteFlags::WRITE), "writable zero page at {a:?}");
                    return Ok(None);
                }
                self.check_anon_mapping(reach, mmid, vma, a, folio, sub, flags, 1)?;
                Ok(Some(folio))
            }
            Pte::Migration { folio, sub, kind, .. } => {
                self.check_migration_entry(a, folio, sub, kind, vma)?;
                self.check_anon_mapping(reach, mmid, vma, a, folio, sub, PteFlags::empty(), 1)?;
                Ok(Some(folio))
            }
            _ => Ok(None),
        }
    }

    /// A migration entry at `a` (mm/migrate.c): it names a folio under migration (an entry
    /// naming any other was left behind by a migration that ended without
    /// `remove_migration_ptes` reaching it), and a writable one lies in a writable VMA
    /// (mprotect makes them readable).
    fn check_migration_entry(
        &self,
        a: VirtAddr,
        folio: FolioId,
        sub: u16,
        kind: crate::pagetable::MigrationKind,
        vma: VmaId,
    ) -> Result<(), String> {
        ensure!(
            self.mem.folios.contains(folio) && self.mem.folios[folio].migrating,
            "migration entry at {a:?} names folio {folio:?}, which is not under migration (left \
             behind: its migration ended without remove_migration_ptes reaching this entry)"
        );
        ensure!(
            (sub as u64) < self.mem.folios[folio].nr_pages(),
            "migration entry at {a:?} points past its folio"
        );
        ensure!(
            !kind.is_writable() || self.vm.vmas[vma].flags.contains(crate::vma::VmFlags::WRITE),
            "writable migration entry at {a:?} in a VMA without VM_WRITE"
        );
        Ok(())
    }

    /// `folio->_mm_id` slots (CONFIG_MM_ID): a slot is free exactly when its count is -1,
    /// never counts more mappings than its mm has (it may count fewer: mappings made while
    /// both slots were taken are not counted), and a folio not marked maybe-shared is mapped
    /// by one mm at most. Small and unmapped folios use no slot and are not shared.
    fn check_mm_ids(&self, id: FolioId, maps: Option<&HashMap<crate::mm::MmId, i64>>) -> Result<(), String> {
        let f = &self.mem.folios[id];
        let ids = f.mm_ids();
        if !f.is_large() || !f.is_mapped() {
            ensure!(
                *ids == crate::folio::MmIds::NONE,
                "folio {id:?}: small or unmapped but its mm_id slots are in use"
            );
            return Ok(());
        }
        for i in 0..2 {
            match ids.mm_id[i] {
                None => {
                    ensure!(ids.mm_id_mapcount[i] == -1, "folio {id:?}: free mm_id slot {i} counts mappings")
                }
                Some(mm) => {
                    let n = maps.and_then(|m| m.get(&mm)).copied().unwrap_or(0);
                    ensure!(
                        (0..n).contains(&ids.mm_id_mapcount[i]),
                        "folio {id:?}: mm_id slot {i} counts {} mappings but its mm has {n}",
                        ids.mm_id_mapcount[i] + 1
                    );
                }
            }
        }
        ensure!(
            ids.mm_id[0].is_none() || ids.mm_id[0] != ids.mm_id[1],
            "folio {id:?}: one mm in both mm_id slots"
        );
        ensure!(
            ids.shared || maps.is_none_or(|m| m.len() <= 1),
            "folio {id:?}: mapped by several mms but not marked maybe shared"
        );
        Ok(())
    }

    /// One mapping of `folio` page `sub` at `a` in `vma`: rmap must find it there.
    #[allow(clippy::too_many_arguments)]
    fn check_anon_mapping(
        &self,
        reach: &dyn Fn(AnonVmaId, VmaId) -> bool,
        mm: crate::mm::MmId,
        vma: VmaId,
        a: VirtAddr,
        folio: FolioId,
        sub: u16,
        flags: PteFlags,
        nr: u64,
    ) -> Result<(), String> {
        let f = &self.mem.folios[folio];
        let v = &self.vm.vmas[vma];
        match f.mapping {
            Mapping::Anon(av) => {
                ensure!(self.rmap.anon_vmas.contains(av), "folio at {a:?} points to a freed anon_vma");
                ensure!(v.anon_vma.is_some(), "anon page at {a:?} in an unfaulted VMA");
                let want = f.index.plus(sub as u64);
                ensure!(
                    v.linear_page_index(a) == want,
                    "folio at {a:?} has index {:#x} but the VMA maps {:#x} there",
                    want.0,
                    v.linear_page_index(a).0
                );
                let found = reach(av, vma);
                ensure!(found, "rmap of the folio at {a:?} (mm {mm:?}) does not reach its VMA");
                if flags.contains(PteFlags::WRITE) && v.is_cow_mapping() {
                    // A PMD mapping's exclusivity is its head page's.
                    let _ = nr;
                    let excl = f.pages[sub as usize].anon_exclusive;
                    ensure!(excl, "writable PTE at {a:?} maps a shared anon page");
                }
            }
            Mapping::File(ino) => {
                let Some(file) = v.file else {
                    return Err(format!("file page at {a:?} in an anonymous VMA"));
                };
                ensure!(self.fs.files[file].inode == ino, "file page at {a:?} from another file");
                ensure!(v.linear_page_index(a) == f.index, "file page at {a:?} at the wrong offset");
                ensure!(
                    !(flags.contains(PteFlags::WRITE) && v.is_cow_mapping()),
                    "writable file page in a private mapping at {a:?}"
                );
            }
            Mapping::None => return Err(format!("page at {a:?} has no mapping")),
        }
        Ok(())
    }
}
