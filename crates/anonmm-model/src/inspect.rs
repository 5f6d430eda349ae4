//! The model's side of the internal state `--internal` compares with the kernel's own: each
//! VMA's `vm_pgoff`, `vm_flags`, anon_vma (root, parent, counters) and anon_vma_chains, and
//! each present page's folio (`index`, `mapping`, order, mapcount), in the raw form the
//! `anonmm_inspect` kernel module (oracle/kmod/) reports for the kernel (pointers there, arena
//! ids here). Renaming and comparing live in the harness (`anonmm_harness::internal`).

use serde::{Deserialize, Serialize};

use crate::folio::{HUGE_ZERO_FOLIO, Mapping, ZERO_FOLIO};
use crate::mm::System;
use crate::pagetable::{Pmd, Pte};
use crate::types::Pid;
use crate::vma::VmFlags;

/// The `vm_flags` bits compared: the ones the model keeps whose value is the same on 6.1,
/// 6.12 and 6.18 (the low 32 bits; `VM_MAYBE_GUARD` is 6.18's and reuses a bit that was free).
pub fn compared_flags() -> u64 {
    VmFlags::all().bits() & 0xffff_ffff & !VmFlags::MAYBE_GUARD.bits()
}

/// An anon_vma as one side identifies it (a kernel pointer, or the model's id + 1).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct RawAnonVma {
    /// Its identity.
    pub id: u64,
    /// `anon_vma->root`.
    pub root: u64,
    /// `anon_vma->parent`.
    pub parent: u64,
    /// `anon_vma->refcount`.
    pub refcount: u64,
    /// `anon_vma->num_children`.
    pub num_children: u64,
    /// `anon_vma->num_active_vmas`.
    pub num_active_vmas: u64,
}

/// One VMA before renaming.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct RawVma {
    /// `vm_start`.
    pub start: u64,
    /// `vm_end`.
    pub end: u64,
    /// `vm_pgoff`.
    pub pgoff: u64,
    /// `vm_flags`, masked to [`compared_flags`].
    pub flags: u64,
    /// `vma->anon_vma` and its fields.
    pub anon_vma: Option<RawAnonVma>,
    /// Entries on `vma->anon_vma_chain`.
    pub chains: u64,
}

/// `folio->mapping` before renaming.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum RawMapping {
    /// NULL: the zero pages.
    None,
    /// `anon_vma | PAGE_MAPPING_ANON`.
    Anon(u64),
    /// A page-cache folio: the file's `address_space` (the model's inode).
    File(u64),
    /// KSM or a movable non-LRU page (the model has neither).
    Other,
}

/// One present page's folio, before renaming.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct RawFolioPage {
    /// The page's virtual address.
    pub addr: u64,
    /// The page's index: `folio->index` plus its number in the folio (0 for the zero pages).
    pub index: u64,
    /// `folio->mapping`.
    pub mapping: RawMapping,
    /// `folio_order`.
    pub order: u8,
    /// `page_mapcount`: the page's `_mapcount + 1`, plus the entire (PMD) mapcount of a large
    /// folio (0 for the zero pages).
    pub mapcount: u64,
}

/// One process's internal state before renaming.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct RawInternal {
    /// The window's VMAs by address.
    pub vmas: Vec<RawVma>,
    /// The window's present pages by address.
    pub pages: Vec<RawFolioPage>,
}

/// The model's internal state of `pid` in `[lo, hi)`, as the kernel module reports it.
pub fn model_view(sys: &System, pid: Pid, lo: u64, hi: u64) -> RawInternal {
    let mut out = RawInternal::default();
    let Some(p) = sys.vm.procs.get(&pid) else { return out };
    let mm = &sys.vm.mms[p.mm];
    let av_id = |a: crate::rmap::AnonVmaId| a.0 as u64 + 1;
    for e in mm.vmas.values() {
        let v = &sys.vm.vmas[e.id];
        if v.start.0 >= v.end.0 || v.end.0 <= lo || v.start.0 >= hi {
            continue;
        }
        let anon_vma = v.anon_vma.map(|a| {
            let av = &sys.rmap.anon_vmas[a];
            RawAnonVma {
                id: av_id(a),
                root: av_id(av.root),
                parent: av_id(av.parent),
                refcount: av.refcount as u64,
                num_children: av.num_children as u64,
                num_active_vmas: av.num_active_vmas as u64,
            }
        });
        out.vmas.push(RawVma {
            start: v.start.0,
            end: v.end.0,
            pgoff: v.pgoff.0,
            flags: v.flags.bits() & compared_flags(),
            anon_vma,
            chains: v.chain.len() as u64,
        });
        let (s, t) = (v.start.0.max(lo), v.end.0.min(hi));
        let mut a = s;
        while a < t {
            let key = crate::pagetable::pmd_index(crate::types::VirtAddr(a));
            let pmd_end = ((a >> crate::types::PMD_SHIFT) + 1) << crate::types::PMD_SHIFT;
            let stop = pmd_end.min(t);
            match mm.pt.pmds.get(&key) {
                None | Some(Pmd::Migration { .. }) => {}
                Some(Pmd::Huge { folio, .. }) => {
                    for b in (a..stop).step_by(crate::types::PAGE_SIZE as usize) {
                        let sub = crate::pagetable::pte_index(crate::types::VirtAddr(b));
                        out.pages.push(folio_page(sys, *folio, sub, b));
                    }
                }
                Some(Pmd::Table(tb)) => {
                    for b in (a..stop).step_by(crate::types::PAGE_SIZE as usize) {
                        if let Pte::Present { folio, sub, .. } =
                            tb.ptes[crate::pagetable::pte_index(crate::types::VirtAddr(b))]
                        {
                            out.pages.push(folio_page(sys, folio, sub as usize, b));
                        }
                    }
                }
            }
            a = stop;
        }
    }
    out
}

fn folio_page(sys: &System, folio: crate::folio::FolioId, sub: usize, addr: u64) -> RawFolioPage {
    if folio == ZERO_FOLIO || folio == HUGE_ZERO_FOLIO {
        let f = &sys.mem.folios[folio];
        // The kernel's huge zero folio is a large folio whose pages are never counted.
        let order = if folio == HUGE_ZERO_FOLIO { f.order } else { 0 };
        return RawFolioPage { addr, index: 0, mapping: RawMapping::None, order, mapcount: 0 };
    }
    let f = &sys.mem.folios[folio];
    let mapping = match f.mapping {
        Mapping::None => RawMapping::None,
        Mapping::Anon(a) => RawMapping::Anon(a.0 as u64 + 1),
        Mapping::File(i) => RawMapping::File(i.0 as u64 + 1),
    };
    RawFolioPage {
        addr,
        index: f.index.0 + sub as u64,
        mapping,
        order: f.order,
        mapcount: f.page_mapcount(sub) as u64,
    }
}
