//! Page migration with the migration held in flight (mm/migrate.c, mm/rmap.c,
//! mm/huge_memory.c).
//!
//! `migrate_pages` is one call in the kernel; the model splits it in two pseudo-calls so that
//! the state between the halves can be seen and acted on:
//!
//! - `migrate(addr, len)`: `migrate_folio_unmap` for every anonymous folio mapped in the range:
//!   the folio is isolated and locked, its anon_vma pinned (`folio_get_anon_vma`), and
//!   `try_to_migrate` walks the rmap (`rmap_walk_anon`) to replace every mapping of it, in
//!   every process, with a migration entry (`try_to_migrate_one`, `set_pmd_migration_entry`
//!   for a PMD-mapped THP: x86_64 migrates THPs whole). Mapcounts go, the folio stays.
//! - `migrate_done(addr, len)`: `migrate_folio_move` for every folio under migration with an
//!   entry in the range (and every one this process started from the range): a new folio of
//!   the same order gets the contents, `index` and `mapping` (`folio_migrate_mapping`,
//!   `folio_copy`), then `remove_migration_ptes` walks the rmap of the new folio, which is the
//!   old one's, and turns each migration entry it finds back into a mapping of the new folio.
//!   An entry the walk cannot reach stays behind, naming the freed old folio; the invariant
//!   checker reports it.
//!
//! A fault, GUP or MADV_COLLAPSE that meets a migration entry waits for the migration
//! (`migration_entry_wait`): the model finishes that folio's migration there and then. A
//! migration belongs to the process that started it (the task inside `migrate_pages`): its
//! exit finishes the ones still in flight.
//!
//! Errors are those of `do_mbind`'s range check (EINVAL for an unaligned start or a range that
//! wraps); `migrate` also gives ENOMEM for a hole, after the mapped parts are done, as
//! `madvise_walk_vmas` does. `migrate_done` looks at what is in flight, not at mappings: 0.
//! Pinned folios (`folio_maybe_dma_pinned`) are left alone: the kernel's attempt fails
//! (`folio_try_share_anon_rmap_pte` refuses, or the reference count does not match) and
//! restores every mapping.

use crate::errno::{Errno, KResult};
use crate::folio::{FolioId, HUGE_ZERO_FOLIO, Mapping, ZERO_FOLIO};
use crate::madvise::madvise_range;
use crate::mm::{MmId, System};
use crate::pagetable::{MIGRATION_KEPT_FLAGS, MigrationKind, Pmd, Pte, PteFlags, Walk, pmd_index};
use crate::rmap::AnonVmaId;
use crate::types::{Pid, VirtAddr};
use crate::vma::{VmFlags, VmaId};

/// One migration in flight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InFlight {
    /// The source folio.
    pub folio: FolioId,
    /// Where the `migrate` that started it found it.
    pub addr: u64,
    /// The anon_vma `folio_get_anon_vma` took a reference on, so that the rmap walk of
    /// `remove_migration_ptes` still has a tree to walk when every VMA has gone.
    pub anon_vma: AnonVmaId,
}

impl System {
    /// `migrate(addr, len)`: start migrating every anonymous folio mapped in the range.
    pub fn sys_migrate(&mut self, pid: Pid, addr: u64, len: u64) -> KResult<u64> {
        let mm = self.vm.mm_of(pid)?;
        let Some(end) = madvise_range(addr, len)? else { return Ok(0) };
        // do_mbind: lru_add_drain_all() before isolating.
        self.mem.lru_add_drain();
        let (start, end) = (VirtAddr(addr), VirtAddr(end));
        let vmas = self.vm.mms[mm].vmas_in(start, end);
        if vmas.is_empty() {
            return Err(Errno::ENOMEM);
        }
        let mut covered = start;
        let mut hole = false;
        // (address, folio) of every mapping in the range, PMD leaves at their first page.
        let mut found: Vec<(VirtAddr, FolioId)> = Vec::new();
        for vma in vmas {
            let v = &self.vm.vmas[vma];
            let (s, e) = (v.start.max(start), v.end.min(end));
            hole |= s > covered;
            covered = e;
            // vma_migratable
            if v.flags.intersects(VmFlags::IO | VmFlags::PFNMAP) {
                continue;
            }
            let pt = &self.vm.mms[mm].pt;
            found.extend(pt.huge_in(s, e).into_iter().map(|(a, f, _)| (a.max(s), f)));
            found.extend(
                pt.ptes_in(s, e).into_iter().filter_map(|(a, p)| p.present().map(|(f, _, _)| (a, f))),
            );
        }
        hole |= covered < end;
        found.sort_by_key(|&(a, _)| a);
        let mut seen = std::collections::HashSet::new();
        for (a, folio) in found {
            if folio == ZERO_FOLIO || folio == HUGE_ZERO_FOLIO || !seen.insert(folio) {
                continue;
            }
            let f = &self.mem.folios[folio];
            // Page-cache folios are not ours to move here; a pinned folio fails to migrate
            // and keeps its mappings; one already under migration is isolated already.
            if !f.is_anon() || f.pincount > 0 || f.migrating {
                continue;
            }
            self.migrate_folio_unmap(pid, folio, a.0);
        }
        if hole { Err(Errno::ENOMEM) } else { Ok(0) }
    }

    /// `migrate_done(addr, len)`: finish the migrations with an entry in the range of this
    /// process's page tables, and those this process started from the range.
    pub fn sys_migrate_done(&mut self, pid: Pid, addr: u64, len: u64) -> KResult<u64> {
        let mm = self.vm.mm_of(pid)?;
        let Some(end) = madvise_range(addr, len)? else { return Ok(0) };
        let (start, end) = (VirtAddr(addr), VirtAddr(end));
        let pt = &self.vm.mms[mm].pt;
        let mut found: Vec<(VirtAddr, FolioId)> =
            pt.migration_pmds_in(start, end).into_iter().map(|(a, f, _, _)| (a, f)).collect();
        found.extend(pt.ptes_in(start, end).into_iter().filter_map(|(a, p)| match p {
            Pte::Migration { folio, .. } => Some((a, folio)),
            _ => None,
        }));
        found.sort_by_key(|&(a, _)| a);
        let mut folios: Vec<FolioId> = found.into_iter().map(|(_, f)| f).collect();
        if let Some(list) = self.gup.migrations.get(&pid) {
            folios.extend(list.iter().filter(|m| (start.0..end.0).contains(&m.addr)).map(|m| m.folio));
        }
        let mut seen = std::collections::HashSet::new();
        for folio in folios {
            // An entry whose folio is not under migration was left behind by a migration
            // that ended: there is nothing to finish.
            if seen.insert(folio) && self.mem.folios.contains(folio) && self.mem.folios[folio].migrating {
                self.finish_migration(folio);
            }
        }
        Ok(0)
    }

    /// `migrate_folio_unmap` for an anonymous folio: isolate it, pin its anon_vma, and
    /// replace every mapping with a migration entry (`try_to_migrate`). If a mapping is left
    /// (the rmap could not reach it) the attempt is undone, as `migrate_folio_unmap` does
    /// when the folio is still mapped (`remove_migration_ptes(src, src)`).
    fn migrate_folio_unmap(&mut self, pid: Pid, folio: FolioId, addr: u64) {
        let Mapping::Anon(av) = self.mem.folios[folio].mapping else { return };
        self.rmap.anon_vmas[av].refcount += 1; // folio_get_anon_vma
        let f = &mut self.mem.folios[folio];
        f.migrating = true;
        f.extra_refs += 1;
        self.vm.try_to_migrate(&self.rmap, &mut self.mem, folio);
        if self.mem.folios[folio].is_mapped() {
            self.vm.remove_migration_ptes(&self.rmap, &mut self.mem, folio, folio);
            let f = &mut self.mem.folios[folio];
            f.migrating = false;
            f.extra_refs -= 1;
            self.rmap.put_anon_vma(&mut self.trace, av);
            return;
        }
        self.trace.stats.migrations_started += 1;
        self.gup.migrations.entry(pid).or_default().push(InFlight { folio, addr, anon_vma: av });
    }

    /// Finish the migration of `src` (whichever process started it).
    pub(crate) fn finish_migration(&mut self, src: FolioId) {
        let mut rec = None;
        for list in self.gup.migrations.values_mut() {
            if let Some(i) = list.iter().position(|m| m.folio == src) {
                rec = Some(list.remove(i));
                break;
            }
        }
        self.gup.migrations.retain(|_, l| !l.is_empty());
        if let Some(rec) = rec {
            self.migrate_folio_move(rec);
        }
    }

    /// `migrate_folio_move`: `move_to_new_folio` (a new folio of the same order gets the
    /// contents, `index`, `mapping` and swap-cache place: `folio_copy`,
    /// `folio_migrate_mapping`), `remove_migration_ptes`, then the references go: the old
    /// folio is freed, the new one too if no entry was found, and the anon_vma reference.
    fn migrate_folio_move(&mut self, rec: InFlight) {
        let src = rec.folio;
        let dst = self.mem.folio_alloc(&mut self.trace, self.mem.folios[src].order);
        let (index, mapping) = (self.mem.folios[src].index, self.mem.folios[src].mapping);
        for i in 0..self.mem.folios[src].pages.len() {
            self.mem.folios[dst].pages[i].tag = self.mem.folios[src].pages[i].tag;
        }
        let d = &mut self.mem.folios[dst];
        d.index = index;
        d.mapping = mapping;
        self.swap.migrate_swap_cache(&mut self.mem, src, dst);
        self.vm.remove_migration_ptes(&self.rmap, &mut self.mem, src, dst);
        let s = &mut self.mem.folios[src];
        s.migrating = false;
        s.extra_refs -= 1;
        self.mem.folio_put_if_unused(&mut self.trace, src);
        // An unmapped new folio goes, leaving the swap cache first if no swap PTE needs it.
        self.swap.free_swap_cache(&mut self.mem, &mut self.trace, dst);
        self.mem.folio_put_if_unused(&mut self.trace, dst);
        self.rmap.put_anon_vma(&mut self.trace, rec.anon_vma);
        self.trace.stats.migrations_done += 1;
    }

    /// `migration_entry_wait` / `pmd_migration_entry_wait`: whoever meets a migration entry
    /// sleeps on the folio lock until the migration ends; the model ends it now. False (and
    /// not modelled) for an entry no migration in flight owns: one that ended left it behind,
    /// and the kernel would BUG (`pfn_swap_entry_folio` on an unlocked folio) or wait forever.
    pub(crate) fn migration_entry_wait(&mut self, folio: FolioId) -> bool {
        if !self.mem.folios.contains(folio) || !self.mem.folios[folio].migrating {
            self.not_modelled("a migration entry left behind by a finished migration (the kernel BUGs)");
            return false;
        }
        self.finish_migration(folio);
        true
    }

    /// A process exits: the migrations it started finish (`migrate_pages` returns before the
    /// task can exit).
    pub fn release_migrations(&mut self, pid: Pid) {
        for rec in self.gup.migrations.remove(&pid).unwrap_or_default() {
            self.migrate_folio_move(rec);
        }
    }
}

impl crate::mm::Vm {
    /// The pages of a folio at `index` (`nr` pages) that `vma` maps, with their addresses: what
    /// `page_vma_mapped_walk` visits from `vma_address`.
    fn folio_pages_in(&self, vma: VmaId, index: crate::types::PgOff, nr: u64) -> Vec<(u16, VirtAddr)> {
        let v = &self.vmas[vma];
        (0..nr).filter_map(|i| v.address_of(index.plus(i), 1).map(|a| (i as u16, a))).collect()
    }

    /// `try_to_migrate_one` for one PTE: the entry is writable if the PTE was, else readable
    /// exclusive if the page was PageAnonExclusive (`folio_try_share_anon_rmap_pte` clears
    /// that, pins having been ruled out), else readable; young, dirty and soft-dirty go with it.
    /// The mapping's rmap and reference go (`folio_remove_rmap_pte`, `folio_put`).
    fn try_to_migrate_one(
        &mut self,
        mem: &mut crate::folio::FolioStore,
        mm: MmId,
        a: VirtAddr,
        folio: FolioId,
        sub: u16,
        flags: PteFlags,
    ) {
        let p = &mut mem.folios[folio].pages[sub as usize];
        let kind = MigrationKind::of(flags.contains(PteFlags::WRITE), p.anon_exclusive);
        p.anon_exclusive = false;
        p.mapcount -= 1;
        mem.folios[folio].sub_large_mapcount(1, mm);
        self.mms[mm].pt.set_pte(a, Pte::Migration { folio, sub, kind, flags: flags & MIGRATION_KEPT_FLAGS });
    }

    /// `set_pmd_migration_entry`: the same for a PMD-mapped THP; its exclusivity lives on the
    /// head page.
    fn set_pmd_migration_entry(
        &mut self,
        mem: &mut crate::folio::FolioStore,
        mm: MmId,
        a: VirtAddr,
        folio: FolioId,
        flags: PteFlags,
    ) {
        let f = &mut mem.folios[folio];
        let kind = MigrationKind::of(flags.contains(PteFlags::WRITE), f.pages[0].anon_exclusive);
        f.pages[0].anon_exclusive = false;
        f.entire_mapcount -= 1;
        f.sub_large_mapcount(1, mm);
        let pmd = Pmd::Migration { folio, kind, flags: flags & MIGRATION_KEPT_FLAGS };
        self.mms[mm].pt.set_pmd(pmd_index(a), pmd);
    }

    /// `try_to_migrate`: the rmap walk over every VMA that may map the folio.
    fn try_to_migrate(
        &mut self,
        rmap: &crate::rmap::Rmap,
        mem: &mut crate::folio::FolioStore,
        folio: FolioId,
    ) {
        let (index, nr) = (mem.folios[folio].index, mem.folios[folio].nr_pages());
        for hit in rmap.rmap_walk_anon(self, mem, folio) {
            let mm = self.vmas[hit.vma].mm;
            for (_, a) in self.folio_pages_in(hit.vma, index, nr) {
                match self.mms[mm].pt.walk(a) {
                    Walk::Huge { folio: g, flags, .. } if g == folio => {
                        // The rmap removal munlocks in a VM_LOCKED VMA (munlock_vma_folio).
                        mem.munlock_vma_folio(self, folio, hit.vma);
                        self.set_pmd_migration_entry(mem, mm, a, folio, flags)
                    }
                    Walk::Pte(Pte::Present { folio: g, sub, flags }) if g == folio => {
                        mem.munlock_vma_folio(self, folio, hit.vma);
                        self.try_to_migrate_one(mem, mm, a, folio, sub, flags)
                    }
                    _ => {}
                }
            }
        }
    }

    /// `remove_migration_ptes(src, dst)`: walk the rmap of `dst` (its `mapping` and `index`
    /// are `src`'s) and map `dst` wherever a migration entry for `src` is found. Only the
    /// entries the walk reaches are restored.
    fn remove_migration_ptes(
        &mut self,
        rmap: &crate::rmap::Rmap,
        mem: &mut crate::folio::FolioStore,
        src: FolioId,
        dst: FolioId,
    ) {
        let (index, nr) = (mem.folios[dst].index, mem.folios[dst].nr_pages());
        for hit in rmap.rmap_walk_anon(self, mem, dst) {
            let mm = self.vmas[hit.vma].mm;
            for (idx, a) in self.folio_pages_in(hit.vma, index, nr) {
                match self.mms[mm].pt.walk(a) {
                    Walk::Pte(Pte::Migration { folio, kind, flags, .. }) if folio == src => {
                        // The page is chosen by address (`linear_page_index(vma, address) -
                        // pgoff`), not by the entry.
                        let flags = mem.remove_migration_entry(mm, dst, Some(idx), kind, flags);
                        self.mms[mm].pt.set_pte(a, Pte::Present { folio: dst, sub: idx, flags });
                        // folio_add_anon_rmap_pte → mlock_vma_folio (whole small folios only).
                        mem.mlock_vma_folio(self, dst, hit.vma, 1);
                    }
                    Walk::PmdMigration { folio, kind, flags, .. } if folio == src => {
                        let flags = mem.remove_migration_entry(mm, dst, None, kind, flags);
                        self.mms[mm].pt.set_pmd(pmd_index(a), Pmd::Huge { folio: dst, flags });
                        // folio_add_anon_rmap_pmd → mlock_vma_folio.
                        let nr = mem.folios[dst].nr_pages();
                        mem.mlock_vma_folio(self, dst, hit.vma, nr);
                    }
                    _ => {}
                }
            }
        }
    }
}

impl crate::folio::FolioStore {
    /// `remove_migration_pte` for a migration entry of `kind` with `flags` that page `idx`
    /// of `dst` replaces, or `remove_migration_pmd` (`idx` None) for one the whole THP
    /// does: `folio_add_anon_rmap_pte` (`_pmd`), with RMAP_EXCLUSIVE unless the entry was
    /// plain readable (a PMD mapping keeps it on the head page). Returns the bits of the new
    /// PTE or PMD: `mk_pte(new, vm_page_prot)` (read-only in the private mappings anonymous
    /// folios live in), writable if the entry was, old unless it was young, dirty and
    /// soft-dirty as it was.
    fn remove_migration_entry(
        &mut self,
        mm: MmId,
        dst: FolioId,
        idx: Option<u16>,
        kind: MigrationKind,
        flags: PteFlags,
    ) -> PteFlags {
        let f = &mut self.folios[dst];
        let page = match idx {
            Some(i) => {
                f.pages[i as usize].mapcount += 1;
                i as usize
            }
            None => {
                f.entire_mapcount += 1;
                0
            }
        };
        if kind.is_exclusive() {
            f.pages[page].anon_exclusive = true;
        }
        f.add_large_mapcount(1, mm);
        let mut pf = flags & MIGRATION_KEPT_FLAGS;
        if kind.is_writable() {
            pf |= PteFlags::WRITE;
        }
        pf
    }
}
