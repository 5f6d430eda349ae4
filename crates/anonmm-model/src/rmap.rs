//! The anonymous reverse map (mm/rmap.c): `struct anon_vma`, `struct anon_vma_chain`, the
//! per-anon_vma interval tree of chains keyed on page offset (mm/interval_tree.c), and the
//! walk from a folio to every (process, VMA, address) that maps it.

use crate::arena::arena_id;
use crate::folio::{FolioId, Mapping};
use crate::types::{PgOff, VirtAddr};
use crate::vma::{VmFlags, VmaId};

/// The anonymous reverse map (mm/rmap.c): every `struct anon_vma` and every
/// `struct anon_vma_chain` linking one to a VMA.
#[derive(Clone, Debug, Default)]
pub struct Rmap {
    /// Every `struct anon_vma`.
    pub anon_vmas: crate::arena::Arena<AnonVmaId, AnonVma>,
    /// Every `struct anon_vma_chain`.
    pub avcs: crate::arena::Arena<AvcId, Avc>,
}

arena_id!(
    /// An anon_vma.
    AnonVmaId
);
arena_id!(
    /// An anon_vma_chain.
    AvcId
);

/// `struct anon_vma`. Aligned to a cache line, as a VMA is.
#[derive(Clone, Debug)]
#[repr(align(64))]
pub struct AnonVma {
    /// `anon_vma->root`: the root of this anon_vma's fork hierarchy (itself for a root).
    pub root: AnonVmaId,
    /// `anon_vma->parent`: the anon_vma it was forked from (itself for a root).
    pub parent: AnonVmaId,
    /// `anon_vma->refcount`: its own reference (dropped when its tree empties), one per
    /// non-root anon_vma with it as root (`get_anon_vma(root)` in `anon_vma_fork`), and one per
    /// folio under migration (`folio_get_anon_vma`).
    pub refcount: u32,
    /// Child anon_vmas, plus one self-parent link on a root.
    pub num_children: u32,
    /// VMAs with `vma->anon_vma == this`.
    pub num_active_vmas: u32,
    /// The interval tree (`rb_root`): chains keyed by their VMA's first page offset.
    pub tree: AvcTree,
}

/// Chains at most a small [`AvcTree`] holds before it becomes an [`AvcLeaves`].
const AVC_TREE_SMALL: usize = 32;

/// An anon_vma's chain key: (first page offset, chain).
type AvcKey = (u64, AvcId);

/// An anon_vma's chains ordered by (first page offset, chain): a sorted vector with a few
/// entries inline while small, as nearly every anon_vma is (a VMA and the pieces split off
/// it), so that filing a chain touches no other allocation; sorted leaves ([`AvcLeaves`])
/// past `AVC_TREE_SMALL` entries. The methods are the `BTreeSet` ones the model uses.
#[derive(Clone, Debug)]
pub enum AvcTree {
    /// Up to `AVC_TREE_SMALL` entries, sorted.
    Small(smallvec::SmallVec<[AvcKey; 4]>),
    /// More.
    Large(Box<AvcLeaves>),
}

impl Default for AvcTree {
    fn default() -> Self {
        AvcTree::Small(smallvec::SmallVec::new())
    }
}

impl AvcTree {
    /// An empty tree.
    pub fn new() -> AvcTree {
        AvcTree::default()
    }
    /// Add `e`; false if it was there.
    #[inline]
    pub fn insert(&mut self, e: AvcKey) -> bool {
        match self {
            AvcTree::Small(v) => match v.binary_search(&e) {
                Ok(_) => false,
                Err(i) => {
                    if v.len() < AVC_TREE_SMALL {
                        v.insert(i, e);
                    } else {
                        v.insert(i, e);
                        *self = AvcTree::Large(Box::new(AvcLeaves::from_sorted(v.drain(..).collect())));
                    }
                    true
                }
            },
            AvcTree::Large(t) => t.insert(e),
        }
    }
    /// Remove `old` and add `new`: in place when `new` keeps the order (a re-filed chain's
    /// new pgoff, within its neighbours), so one search instead of two and no shifts.
    #[inline]
    pub fn rekey(&mut self, old: &AvcKey, new: AvcKey) {
        match self {
            AvcTree::Small(v) => {
                if let Ok(i) = v.binary_search(old)
                    && (i == 0 || v[i - 1] < new)
                    && v.get(i + 1).is_none_or(|n| new < *n)
                {
                    v[i] = new;
                    return;
                }
            }
            AvcTree::Large(t) => {
                if t.rekey_in_place(old, new) {
                    return;
                }
            }
        }
        self.remove(old);
        self.insert(new);
    }
    /// Remove `e`; false if it was not there.
    #[inline]
    pub fn remove(&mut self, e: &AvcKey) -> bool {
        match self {
            AvcTree::Small(v) => match v.binary_search(e) {
                Ok(i) => {
                    v.remove(i);
                    true
                }
                Err(_) => false,
            },
            AvcTree::Large(t) => t.remove(e),
        }
    }
    /// Whether `e` is there.
    pub fn contains(&self, e: &AvcKey) -> bool {
        match self {
            AvcTree::Small(v) => v.binary_search(e).is_ok(),
            AvcTree::Large(t) => t.contains(e),
        }
    }
    /// Entries.
    pub fn len(&self) -> usize {
        match self {
            AvcTree::Small(v) => v.len(),
            AvcTree::Large(t) => t.len,
        }
    }
    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Every entry, in order.
    pub fn iter(&self) -> AvcIter<'_> {
        self.range(..)
    }
    /// The entries in `r`, in order.
    pub fn range<R: std::ops::RangeBounds<AvcKey>>(&self, r: R) -> AvcIter<'_> {
        use std::ops::Bound;
        match self {
            AvcTree::Small(v) => {
                let lo = match r.start_bound() {
                    Bound::Included(x) => v.partition_point(|e| e < x),
                    Bound::Excluded(x) => v.partition_point(|e| e <= x),
                    Bound::Unbounded => 0,
                };
                let hi = match r.end_bound() {
                    Bound::Included(x) => v.partition_point(|e| e <= x),
                    Bound::Excluded(x) => v.partition_point(|e| e < x),
                    Bound::Unbounded => v.len(),
                };
                AvcIter::Small(v[lo..hi.max(lo)].iter())
            }
            AvcTree::Large(t) => {
                let lo = match r.start_bound() {
                    Bound::Included(x) => t.seek(x, false),
                    Bound::Excluded(x) => t.seek(x, true),
                    Bound::Unbounded => (0, 0),
                };
                let hi = match r.end_bound() {
                    Bound::Included(x) => t.seek(x, true),
                    Bound::Excluded(x) => t.seek(x, false),
                    Bound::Unbounded => (t.leaves.len(), 0),
                };
                AvcIter::Large(LeavesIter { t, lo, hi: hi.max(lo) })
            }
        }
    }
}

/// Entries a leaf of [`AvcLeaves`] holds at most; a full leaf splits in halves.
const AVC_LEAF: usize = 64;

/// A large anon_vma's chains (one VMA split into thousands, as an allocator's heap with
/// guard pages is): sorted leaves of up to `AVC_LEAF` entries under their first keys, a
/// two-level B+tree. A chain is filed with two binary searches and a shift within a leaf,
/// where a `BTreeSet` walked five levels of nodes; the leaves sit in deques so that an
/// unmap, which unlinks the VMAs in address order (so from the first leaf on), drops each
/// emptied leaf without shifting the others.
#[derive(Clone, Debug, Default)]
pub struct AvcLeaves {
    /// `firsts[l]` is the first key of `leaves[l]`; no leaf is empty.
    firsts: std::collections::VecDeque<AvcKey>,
    leaves: std::collections::VecDeque<Vec<AvcKey>>,
    len: usize,
    /// The leaf of the last search, tried first: a call files or unlinks the chains of
    /// neighbouring VMAs, so of neighbouring keys (a split's two halves, an unmap's run).
    finger: std::cell::Cell<usize>,
}

impl AvcLeaves {
    /// The tree of the sorted `v`.
    fn from_sorted(v: Vec<AvcKey>) -> AvcLeaves {
        let mut t = AvcLeaves::default();
        for chunk in v.chunks(AVC_LEAF / 2) {
            let mut leaf = Vec::with_capacity(AVC_LEAF);
            leaf.extend_from_slice(chunk);
            t.firsts.push_back(chunk[0]);
            t.leaves.push_back(leaf);
        }
        t.len = v.len();
        t
    }
    /// The leaf whose range holds `e`: the last whose first key is ≤ `e`, or the first.
    #[inline]
    fn leaf_for(&self, e: &AvcKey) -> usize {
        let (f, n) = (self.finger.get(), self.firsts.len());
        if f < n && (f == 0 || self.firsts[f] <= *e) && (f + 1 >= n || *e < self.firsts[f + 1]) {
            return f;
        }
        let l = self.firsts.partition_point(|f| f <= e).saturating_sub(1);
        self.finger.set(l);
        l
    }
    /// The position of the first key ≥ `e` (> `e` when `strict`), never past a leaf's end.
    fn seek(&self, e: &AvcKey, strict: bool) -> (usize, usize) {
        if self.leaves.is_empty() {
            return (0, 0);
        }
        let l = self.leaf_for(e);
        let leaf = &self.leaves[l];
        let i = if strict { leaf.partition_point(|x| x <= e) } else { leaf.partition_point(|x| x < e) };
        if i == leaf.len() { (l + 1, 0) } else { (l, i) }
    }
    /// Where `e` is: its leaf and its index there, or where it would go.
    #[inline]
    fn find(&self, e: &AvcKey) -> (usize, Result<usize, usize>) {
        let l = self.leaf_for(e);
        let Some(leaf) = self.leaves.get(l) else { return (l, Err(0)) };
        // The ends first: an unmap unlinks a leaf's first chain, a split of a VMA's start
        // re-files the last and files the next after it.
        let r = match (leaf.first(), leaf.last()) {
            (Some(f), _) if f == e => Ok(0),
            (_, Some(x)) if x == e => Ok(leaf.len() - 1),
            (_, Some(x)) if x < e => Err(leaf.len()),
            _ => leaf.binary_search(e),
        };
        (l, r)
    }
    fn contains(&self, e: &AvcKey) -> bool {
        self.find(e).1.is_ok()
    }
    #[inline(never)]
    fn insert(&mut self, e: AvcKey) -> bool {
        let (l, Err(i)) = self.find(&e) else { return false };
        self.len += 1;
        if self.leaves.is_empty() {
            let mut leaf = Vec::with_capacity(AVC_LEAF);
            leaf.push(e);
            self.leaves.push_back(leaf);
            self.firsts.push_back(e);
            return true;
        }
        let leaf = &mut self.leaves[l];
        leaf.insert(i, e);
        if i == 0 {
            self.firsts[l] = e;
        }
        if leaf.len() > AVC_LEAF {
            let mut upper = Vec::with_capacity(AVC_LEAF);
            upper.extend(leaf.drain(AVC_LEAF / 2..));
            self.firsts.insert(l + 1, upper[0]);
            self.leaves.insert(l + 1, upper);
        }
        true
    }
    #[inline(never)]
    fn remove(&mut self, e: &AvcKey) -> bool {
        let (l, Ok(i)) = self.find(e) else { return false };
        self.len -= 1;
        let leaf = &mut self.leaves[l];
        leaf.remove(i);
        if leaf.is_empty() {
            self.leaves.remove(l);
            self.firsts.remove(l);
            return true;
        }
        if i == 0 {
            self.firsts[l] = leaf[0];
        }
        // A small leaf joins its next one when both fit in three quarters of a leaf (so that
        // the next insertion does not split them again).
        if leaf.len() < AVC_LEAF / 4
            && let Some(next) = self.leaves.get(l + 1)
            && leaf_len_fits(self.leaves[l].len(), next.len())
        {
            let next = self.leaves.remove(l + 1).expect("a next leaf");
            self.firsts.remove(l + 1);
            self.leaves[l].extend_from_slice(&next);
        }
        true
    }
    /// Replace `old` by `new` where `new` keeps the order; false (and nothing done) else.
    #[inline(never)]
    fn rekey_in_place(&mut self, old: &AvcKey, new: AvcKey) -> bool {
        let (l, Ok(i)) = self.find(old) else { return false };
        let leaf = &self.leaves[l];
        let before = if i > 0 {
            Some(leaf[i - 1])
        } else {
            l.checked_sub(1).and_then(|p| self.leaves[p].last().copied())
        };
        let after = leaf.get(i + 1).or_else(|| self.firsts.get(l + 1)).copied();
        if before.is_some_and(|b| b >= new) || after.is_some_and(|a| new >= a) {
            return false;
        }
        self.leaves[l][i] = new;
        if i == 0 {
            self.firsts[l] = new;
        }
        true
    }
}

/// Whether two leaves of these lengths fit in one at three quarters full.
fn leaf_len_fits(a: usize, b: usize) -> bool {
    a + b <= AVC_LEAF * 3 / 4
}

/// An iterator over [`AvcTree`] entries.
pub enum AvcIter<'a> {
    /// Over a small tree.
    Small(std::slice::Iter<'a, AvcKey>),
    /// Over a large one.
    Large(LeavesIter<'a>),
}

/// An iterator over [`AvcLeaves`] entries: from position `lo` up to `hi` (leaf, index;
/// never past a leaf's end).
pub struct LeavesIter<'a> {
    t: &'a AvcLeaves,
    lo: (usize, usize),
    hi: (usize, usize),
}

impl<'a> Iterator for AvcIter<'a> {
    type Item = &'a AvcKey;
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            AvcIter::Small(i) => i.next(),
            AvcIter::Large(LeavesIter { t, lo, hi }) => {
                if lo == hi {
                    return None;
                }
                let leaf = &t.leaves[lo.0];
                let e = &leaf[lo.1];
                *lo = if lo.1 + 1 == leaf.len() { (lo.0 + 1, 0) } else { (lo.0, lo.1 + 1) };
                Some(e)
            }
        }
    }
}

impl DoubleEndedIterator for AvcIter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        match self {
            AvcIter::Small(i) => i.next_back(),
            AvcIter::Large(LeavesIter { t, lo, hi }) => {
                if lo == hi {
                    return None;
                }
                // `hi` stays normalised: the one before it is in its leaf or ends the one before.
                *hi = if hi.1 > 0 { (hi.0, hi.1 - 1) } else { (hi.0 - 1, t.leaves[hi.0 - 1].len() - 1) };
                Some(&t.leaves[hi.0][hi.1])
            }
        }
    }
}

impl<'a> IntoIterator for &'a AvcTree {
    type Item = &'a AvcKey;
    type IntoIter = AvcIter<'a>;
    fn into_iter(self) -> AvcIter<'a> {
        self.iter()
    }
}

/// `struct anon_vma_chain`.
#[derive(Clone, Debug)]
pub struct Avc {
    /// `avc->vma`.
    pub vma: VmaId,
    /// `avc->anon_vma`.
    pub anon_vma: AnonVmaId,
    // Filed in the anon_vma's tree under its VMA's pgoff (`avc_start_pgoff`), which
    // `vma_set_range` re-files on every change, so the key is not kept here as well.
}

/// One place a folio is mapped, found by the rmap walk.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RmapHit {
    /// The VMA whose chain the walk followed.
    pub vma: VmaId,
    /// `vma_address(vma, folio->index, nr)`.
    pub addr: VirtAddr,
}

impl crate::mm::Vm {
    /// `[avc_start_pgoff, avc_last_pgoff]` of a VMA.
    pub fn vma_pgoff_interval(&self, vma: VmaId) -> (u64, u64) {
        let v = &self.vmas[vma];
        (v.pgoff.0, v.pgoff.0 + v.pages() - 1)
    }

    /// `anon_vma_compatible(a, b)`: flags may differ in access bits and `VM_IGNORE_MERGE`
    /// (so a guard-installed VMA, `VM_MAYBE_GUARD`, reuses its neighbour's anon_vma).
    fn anon_vma_compatible(&self, a: VmaId, b: VmaId) -> bool {
        let (a, b) = (&self.vmas[a], &self.vmas[b]);
        a.end == b.start
            && a.file == b.file
            && ((a.flags ^ b.flags) & !(VmFlags::ACCESS | VmFlags::IGNORE_MERGE)).is_empty()
            && b.pgoff.0 == a.pgoff.0 + a.start.pages_to(b.start)
    }

    /// `vma_had_uncowed_parents` (6.18): faulted and linked to more than its own anon_vma.
    pub fn vma_is_fork_child(&self, vma: Option<VmaId>) -> bool {
        vma.is_some_and(|v| {
            let v = &self.vmas[v];
            v.anon_vma.is_some() && v.chain.len() != 1
        })
    }

    /// `reusable_anon_vma(old, a, b)`.
    fn reusable_anon_vma(&self, old: VmaId, a: VmaId, b: VmaId) -> Option<AnonVmaId> {
        if self.anon_vma_compatible(a, b) {
            let o = &self.vmas[old];
            if o.anon_vma.is_some() && o.chain.len() == 1 {
                return o.anon_vma;
            }
        }
        None
    }

    /// `find_mergeable_anon_vma`: try the adjacent next VMA first, then prev.
    pub fn find_mergeable_anon_vma(&self, vma: VmaId) -> Option<AnonVmaId> {
        let v = &self.vmas[vma];
        let mm = &self.mms[v.mm];
        if let Some(next) = mm.vma_at_start(v.end)
            && let Some(av) = self.reusable_anon_vma(next, vma, next)
        {
            return Some(av);
        }
        let prev = mm.vma_before(v.start)?;
        self.reusable_anon_vma(prev, prev, vma)
    }
}

impl crate::folio::FolioStore {
    /// `folio_move_anon_rmap`: an exclusively owned folio now belongs to this VMA's anon_vma.
    pub fn folio_move_anon_rmap(&mut self, vm: &crate::mm::Vm, folio: FolioId, vma: VmaId) {
        if let Some(av) = vm.vmas[vma].anon_vma {
            self.folios[folio].mapping = Mapping::Anon(av);
        }
    }
}

impl crate::rmap::Rmap {
    /// `anon_vma_alloc`.
    pub fn anon_vma_alloc(&mut self, trace: &mut crate::stats::Trace) -> AnonVmaId {
        let id = self.anon_vmas.alloc(AnonVma {
            root: AnonVmaId(0),
            parent: AnonVmaId(0),
            refcount: 1,
            num_children: 0,
            num_active_vmas: 0,
            tree: AvcTree::new(),
        });
        let av = &mut self.anon_vmas[id];
        av.root = id;
        av.parent = id;
        trace.stats.anon_vmas_allocated += 1;
        id
    }

    /// `put_anon_vma`: drop a reference; a freed non-root anon_vma drops its root's.
    pub fn put_anon_vma(&mut self, trace: &mut crate::stats::Trace, av: AnonVmaId) {
        let a = &mut self.anon_vmas[av];
        a.refcount -= 1;
        if a.refcount > 0 {
            return;
        }
        let root = a.root;
        self.anon_vmas.free(av);
        trace.stats.anon_vmas_freed += 1;
        if root != av {
            self.put_anon_vma(trace, root);
        }
    }

    /// The anon_vma of link `i` of `vma`'s chain. A lone link (no fork in the VMA's past) is
    /// to the VMA's own anon_vma (the checker's invariant): known without reading the link,
    /// whose cache line would be the first of two misses in a row.
    #[inline]
    fn chain_anon_vma(&self, vm: &crate::mm::Vm, vma: VmaId, i: usize) -> AnonVmaId {
        let v = &vm.vmas[vma];
        match (&v.chain[..], v.anon_vma) {
            ([avc], Some(av)) => {
                debug_assert_eq!(self.avcs[*avc].anon_vma, av);
                av
            }
            (chain, _) => self.avcs[chain[i]].anon_vma,
        }
    }

    /// `anon_vma_chain_link`: add at the head of the VMA's chain and into the tree.
    pub(crate) fn anon_vma_chain_link(&mut self, vm: &mut crate::mm::Vm, vma: VmaId, anon_vma: AnonVmaId) {
        let key = vm.vmas[vma].pgoff.0;
        let avc = self.avcs.alloc(Avc { vma, anon_vma });
        vm.vmas[vma].chain.insert(0, avc);
        self.anon_vmas[anon_vma].tree.insert((key, avc));
    }

    /// `anon_vma_interval_tree_pre_update_vma` and `_post_update_vma` around a change of
    /// the VMA's pgoff from `old`: its chains, filed under the old pgoff, are filed under
    /// the new one (in place where the order allows, [`AvcTree::rekey`]).
    pub fn rmap_refile(&mut self, vm: &crate::mm::Vm, vma: VmaId, old: u64) {
        let key = vm.vmas[vma].pgoff.0;
        for i in 0..vm.vmas[vma].chain.len() {
            let (avc, av) = (vm.vmas[vma].chain[i], self.chain_anon_vma(vm, vma, i));
            self.anon_vmas[av].tree.rekey(&(old, avc), (key, avc));
        }
    }

    /// `rmap_walk_anon`: every VMA linked to the folio's anon_vma whose pgoff range covers
    /// the folio, with `vma_address` of the folio's first page.
    ///
    /// As in the kernel these are the candidates: a VMA linked to the anon_vma need not map
    /// the folio any more (after a COW copy, say); its page table says. A folio that is not
    /// anonymous (the zero page, a page-cache folio) or no longer exists has no hits.
    ///
    /// ```
    /// use anonmm_model::api::prelude::*;
    ///
    /// let mut sys = System::default();
    /// sys.spawn(Pid(1))?;
    /// let a = sys.sys_mmap(Pid(1), 0, 2 * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)?;
    /// sys.touch(Pid(1), a, 2 * PAGE_SIZE, true, &|_| 1)?.expect("no signal");
    /// let folio = sys.page_at(Pid(1), a + PAGE_SIZE)?.expect("mapped").folio;
    /// let hits = sys.rmap.rmap_walk_anon(&sys.vm, &sys.mem, folio);
    /// assert_eq!(hits.len(), 1);
    /// assert_eq!(hits[0].addr, VirtAddr(a + PAGE_SIZE));
    /// assert_eq!(sys.vm.vmas[hits[0].vma].start, VirtAddr(a));
    /// assert!(sys.rmap.rmap_walk_anon(&sys.vm, &sys.mem, ZERO_FOLIO).is_empty());
    /// // Once unmapped and freed, the folio id names nothing (until a new folio reuses it).
    /// sys.sys_munmap(Pid(1), a, 2 * PAGE_SIZE)?;
    /// assert!(sys.rmap.rmap_walk_anon(&sys.vm, &sys.mem, folio).is_empty());
    /// # Ok::<(), Errno>(())
    /// ```
    pub fn rmap_walk_anon(
        &self,
        vm: &crate::mm::Vm,
        mem: &crate::folio::FolioStore,
        folio: FolioId,
    ) -> Vec<RmapHit> {
        if !mem.folios.contains(folio) {
            return Vec::new();
        }
        let f = &mem.folios[folio];
        let Mapping::Anon(av) = f.mapping else { return Vec::new() };
        if !self.anon_vmas.contains(av) {
            return Vec::new();
        }
        let nr = f.nr_pages();
        let (first, last) = (f.index.0, f.index.0 + nr - 1);
        let mut hits = Vec::new();
        for &(_, avc) in self.anon_vmas[av].tree.range(..=(last, AvcId(u32::MAX))) {
            let vma = self.avcs[avc].vma;
            let v = &vm.vmas[vma];
            if v.pgoff.0 + v.pages() - 1 < first {
                continue;
            }
            if let Some(addr) = v.address_of(PgOff(first), nr) {
                hits.push(RmapHit { vma, addr });
            }
        }
        hits
    }

    /// `anon_vma_clone(dst, src)` (6.18): link `dst` to every anon_vma `src` is linked to.
    /// When `dst->anon_vma` is unset (fork), an anon_vma with no active VMAs and fewer than
    /// two children is reused.
    pub fn anon_vma_clone(&mut self, vm: &mut crate::mm::Vm, dst: VmaId, src: VmaId) {
        let src_has_anon = vm.vmas[src].anon_vma.is_some();
        // Oldest first; linking dst leaves src's chain as it is, so no copy of it is needed.
        for i in (0..vm.vmas[src].chain.len()).rev() {
            let pavc = vm.vmas[src].chain[i];
            let av = self.avcs[pavc].anon_vma;
            self.anon_vma_chain_link(vm, dst, av);
            let a = &self.anon_vmas[av];
            if vm.vmas[dst].anon_vma.is_none() && src_has_anon && a.num_children < 2 && a.num_active_vmas == 0
            {
                vm.vmas[dst].anon_vma = Some(av);
            }
        }
        if let Some(av) = vm.vmas[dst].anon_vma {
            self.anon_vmas[av].num_active_vmas += 1;
        }
    }

    /// `anon_vma_fork(vma, pvma)`: link a child VMA to its parent's anon_vmas and give it
    /// one of its own (or reuse an idle one).
    pub fn anon_vma_fork(
        &mut self,
        vm: &mut crate::mm::Vm,
        trace: &mut crate::stats::Trace,
        vma: VmaId,
        pvma: VmaId,
    ) {
        let Some(pav) = vm.vmas[pvma].anon_vma else { return };
        vm.vmas[vma].anon_vma = None;
        self.anon_vma_clone(vm, vma, pvma);
        if vm.vmas[vma].anon_vma.is_some() {
            return;
        }
        let av = self.anon_vma_alloc(trace);
        let root = self.anon_vmas[pav].root;
        {
            let a = &mut self.anon_vmas[av];
            a.num_active_vmas += 1;
            a.root = root;
            a.parent = pav;
        }
        self.anon_vmas[root].refcount += 1; // get_anon_vma(root)
        vm.vmas[vma].anon_vma = Some(av);
        self.anon_vma_chain_link(vm, vma, av);
        self.anon_vmas[pav].num_children += 1;
    }

    /// `unlink_anon_vmas`: drop a VMA's chains, freeing anon_vmas whose trees empty.
    pub fn unlink_anon_vmas(&mut self, vm: &mut crate::mm::Vm, trace: &mut crate::stats::Trace, vma: VmaId) {
        let v = &mut vm.vmas[vma];
        let (chain, key) = (std::mem::take(&mut v.chain), v.pgoff.0);
        let mut emptied = Vec::new();
        for &avc in &chain {
            let anon_vma = self.avcs[avc].anon_vma;
            self.avcs.release(avc);
            let a = &mut self.anon_vmas[anon_vma];
            a.tree.remove(&(key, avc));
            if a.tree.is_empty() {
                let parent = a.parent;
                self.anon_vmas[parent].num_children -= 1;
                emptied.push(anon_vma);
            }
        }
        if let Some(av) = vm.vmas[vma].anon_vma.take() {
            self.anon_vmas[av].num_active_vmas -= 1;
        }
        for av in emptied {
            self.put_anon_vma(trace, av);
        }
    }

    /// `__anon_vma_prepare`: give a VMA its anon_vma on the first write fault.
    pub fn anon_vma_prepare(
        &mut self,
        vm: &mut crate::mm::Vm,
        trace: &mut crate::stats::Trace,
        vma: VmaId,
    ) -> AnonVmaId {
        if let Some(av) = vm.vmas[vma].anon_vma {
            return av;
        }
        let av = match vm.find_mergeable_anon_vma(vma) {
            Some(av) => av,
            None => {
                let av = self.anon_vma_alloc(trace);
                self.anon_vmas[av].num_children += 1; // self-parent link of a new root
                av
            }
        };
        vm.vmas[vma].anon_vma = Some(av);
        self.anon_vma_chain_link(vm, vma, av);
        self.anon_vmas[av].num_active_vmas += 1;
        av
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use rand::{Rng, SeedableRng, rngs::SmallRng};

    use super::*;

    /// Insertions, removals and range queries agree with `BTreeSet`, across the switch from
    /// the small form to the large one.
    #[test]
    fn avc_tree_agrees_with_btreeset() {
        let mut rng = SmallRng::seed_from_u64(3);
        for span in [8u64, 40, 200, 2000] {
            let mut t = AvcTree::new();
            let mut m = BTreeSet::new();
            for _ in 0..3000 {
                let e = (rng.random_range(0..span), AvcId(rng.random_range(0..4)));
                if rng.random_range(0..3) > 0 {
                    assert_eq!(t.insert(e), m.insert(e));
                } else {
                    assert_eq!(t.remove(&e), m.remove(&e));
                }
                assert_eq!(t.len(), m.len());
                let q = (rng.random_range(0..span), AvcId(u32::MAX));
                assert!(t.range(..=q).eq(m.range(..=q)));
                assert!(t.range(..q).rev().eq(m.range(..q).rev()));
                assert!(t.range(e..).eq(m.range(e..)));
                assert!(
                    t.range((std::ops::Bound::Excluded(e), std::ops::Bound::Included(q))).rev().eq(m
                        .range((std::ops::Bound::Excluded(e), std::ops::Bound::Included(q.max(e))))
                        .rev())
                );
                assert!(t.iter().eq(m.iter()));
                assert!(t.iter().rev().eq(m.iter().rev()));
                assert_eq!(t.contains(&e), m.contains(&e));
                // A chain re-filed under a new pgoff, as vma_set_range does.
                if let Some(&old) = m.iter().nth(rng.random_range(0..m.len().max(1)))
                    && rng.random_range(0..4) == 0
                {
                    let new = (rng.random_range(0..span), old.1);
                    t.rekey(&old, new);
                    m.remove(&old);
                    m.insert(new);
                    assert!(t.iter().eq(m.iter()));
                }
            }
        }
    }
}
