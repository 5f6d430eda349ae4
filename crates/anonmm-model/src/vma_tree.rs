//! The index of an mm's VMAs by start address: the model's maple tree (`mm->mm_mt`).
//!
//! A two-level B+tree: sorted leaves of up to `LEAF_CAP` entries under one sorted array of
//! the leaves' first keys, plus a finger on the leaves of the last two lookups. The kernel passes its
//! `vma_iterator` from lookup to lookup within a call; the finger plays that part, so the
//! several lookups a VMA call makes around one address cost one leaf search each instead of
//! a walk from the root (which, at 100,000 VMAs, was a third of a call's time with
//! `BTreeMap`).

use std::cell::Cell;
use std::ops::{Bound, RangeBounds};

use crate::mm::VmaEntry;
use crate::vma::VmaId;

/// Entries a leaf holds at most; a full leaf splits in two halves.
const LEAF_CAP: usize = 32;
const _: () = assert!(LEAF_CAP == 32, "Leaf::rank assumes 32 keys");
/// A leaf below this many entries merges with a neighbour when they fit in 3/4 of a leaf
/// (so that a merge is never undone by the next insertion).
const LEAF_MIN: usize = LEAF_CAP / 4;

/// A leaf, aligned to pairs of cache lines (as [`crate::vma::Vma`] is), so that each half
/// of its keys is one pair. Its keys are searched by a branch-free binary search
/// ([`Leaf::rank`]) that prefetches the half it goes on in, so a cold leaf costs about two
/// cache misses in a row. Unused keys are `u64::MAX` so that they never count.
#[derive(Clone, Debug)]
#[repr(C, align(128))]
struct Leaf {
    keys: [u64; LEAF_CAP],
    len: usize,
    vals: [VmaEntry; LEAF_CAP],
}

impl Leaf {
    fn new() -> Box<Leaf> {
        Box::new(Leaf {
            keys: [u64::MAX; LEAF_CAP],
            len: 0,
            vals: [VmaEntry { end: 0, id: crate::vma::VmaId(0) }; LEAF_CAP],
        })
    }
    fn keys(&self) -> &[u64] {
        &self.keys[..self.len]
    }
    /// How many keys are below `k`: where `k` is or would go. A branch-free binary search
    /// of five halvings and a last compare (a sum of 16 compares, vectorised, took ten times
    /// the instructions on x86-64's baseline, which has no 64-bit vector compare). The
    /// half that holds the answer is fetched whole at once, so a cold leaf costs two
    /// cache misses in a row, not one per halving.
    #[inline]
    fn rank(&self, k: u64) -> usize {
        let keys = &self.keys;
        let mut b = usize::from(keys[15] < k) * 16;
        prefetch(&keys[b + 8]);
        b += usize::from(keys[b + 7] < k) * 8;
        b += usize::from(keys[(b + 3) & 31] < k) * 4;
        b += usize::from(keys[(b + 1) & 31] < k) * 2;
        b += usize::from(keys[b & 31] < k);
        b + usize::from(keys[b & 31] < k)
    }
    /// The index of key `k`.
    #[inline]
    fn find(&self, k: u64) -> Result<usize, usize> {
        let i = self.rank(k);
        if i < self.len && self.keys[i] == k { Ok(i) } else { Err(i) }
    }
    fn insert_at(&mut self, i: usize, k: u64, v: VmaEntry) {
        debug_assert!(self.len < LEAF_CAP);
        self.keys.copy_within(i..self.len, i + 1);
        self.vals.copy_within(i..self.len, i + 1);
        self.keys[i] = k;
        self.vals[i] = v;
        self.len += 1;
    }
    fn remove_at(&mut self, i: usize) -> VmaEntry {
        let v = self.vals[i];
        self.keys.copy_within(i + 1..self.len, i);
        self.vals.copy_within(i + 1..self.len, i);
        self.len -= 1;
        self.keys[self.len] = u64::MAX;
        v
    }
    /// Keep the first `n` entries.
    fn truncate(&mut self, n: usize) {
        self.keys[n..].fill(u64::MAX);
        self.len = n;
    }
    /// Append every entry of `other`.
    fn append(&mut self, other: &Leaf) {
        let (n, m) = (self.len, other.len);
        self.keys[n..n + m].copy_from_slice(other.keys());
        self.vals[n..n + m].copy_from_slice(&other.vals[..m]);
        self.len = n + m;
    }
}

/// Ask for the cache line holding `x` without waiting for it.
#[inline(always)]
fn prefetch<T>(x: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it reads nothing and cannot fault.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>((x as *const T).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = x;
}

/// An entry: a VMA's start and its [`VmaEntry`].
pub type Entry = (u64, VmaEntry);

/// A position: entry `i` of leaf `leaf`; `(leaves, 0)` is the end.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Pos {
    leaf: usize,
    i: usize,
}

/// VMAs by start address (`vm_start` → `vm_end` and the VMA), with the ordered-map methods
/// the model uses.
#[derive(Debug)]
pub struct VmaTree {
    /// `firsts[l]` is the first key of `leaves[l]`; no leaf is empty.
    firsts: Vec<u64>,
    // Boxed so that inserting or removing a leaf moves pointers, not 800-byte leaves.
    #[allow(clippy::vec_box)]
    leaves: Vec<Box<Leaf>>,
    len: usize,
    /// The leaves of the last two searches, most recent first (`vma_iter`'s position; two, as
    /// a call often works at two places: the source and destination of a move).
    finger: Cell<[usize; 2]>,
    /// Where the last `last_le` found its answer, until the tree changes: faults look up
    /// the same VMA again and again, and checking that the answer still brackets the key
    /// is cheaper than a leaf search.
    last: Cell<Option<Pos>>,
    /// The neighbours the last neighbour search handed out ([`VmaTree::around_lt`],
    /// [`VmaTree::with_neighbours`], [`VmaTree::first_ge`]), until the tree changes: a merge
    /// then asks whether they touch the range, and their range here spares reading the
    /// VMAs (cold lines among 100,000) when they do not.
    /// (Only the ids are cleared when the tree changes: one store.)
    seen_ids: Cell<[VmaId; 2]>,
    seen: Cell<[(u64, u64); 2]>,
}

/// No VMA in [`VmaTree::seen_ids`].
const UNSEEN: VmaId = VmaId(u32::MAX);

impl Default for VmaTree {
    fn default() -> Self {
        VmaTree {
            firsts: Vec::new(),
            leaves: Vec::new(),
            len: 0,
            finger: Cell::new([0, 0]),
            last: Cell::new(None),
            seen_ids: Cell::new([UNSEEN; 2]),
            seen: Cell::new([(0, 0); 2]),
        }
    }
}

impl Clone for VmaTree {
    // A copy (a fork child's tree) starts with no remembered answers.
    fn clone(&self) -> Self {
        VmaTree {
            firsts: self.firsts.clone(),
            leaves: self.leaves.clone(),
            len: self.len,
            finger: self.finger.clone(),
            last: Cell::new(None),
            seen_ids: Cell::new([UNSEEN; 2]),
            seen: Cell::new([(0, 0); 2]),
        }
    }
}

impl VmaTree {
    /// An empty tree.
    pub fn new() -> VmaTree {
        VmaTree::default()
    }
    /// Entries.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forget the remembered answers: the tree changes.
    #[inline]
    fn changed(&self) {
        self.last.set(None);
        self.seen_ids.set([UNSEEN; 2]);
    }

    /// Remember the neighbours a search handed out.
    #[inline]
    fn see(&self, a: Option<Entry>, b: Option<Entry>) {
        let id = |e: Option<Entry>| e.map_or(UNSEEN, |(_, v)| v.id);
        let range = |e: Option<Entry>| e.map_or((0, 0), |(k, v)| (k, v.end));
        self.seen_ids.set([id(a), id(b)]);
        self.seen.set([range(a), range(b)]);
    }

    /// The range `[start, end)` of VMA `id` if the last neighbour search handed it out and
    /// the tree has not changed since (then it is the VMA's range).
    #[inline]
    pub fn seen_range(&self, id: VmaId) -> Option<(u64, u64)> {
        let [a, b] = self.seen_ids.get();
        if a == id {
            Some(self.seen.get()[0])
        } else if b == id {
            Some(self.seen.get()[1])
        } else {
            None
        }
    }

    /// Whether leaf `l` is the one for key `k`.
    #[inline]
    fn leaf_holds(&self, l: usize, k: u64) -> bool {
        let n = self.firsts.len();
        l < n && (l == 0 || self.firsts[l] <= k) && (l + 1 == n || k < self.firsts[l + 1])
    }

    /// The leaf whose key range holds `k`: the last leaf whose first key is ≤ `k`, or the
    /// first leaf. The tree must not be empty.
    #[inline]
    fn leaf_for(&self, k: u64) -> usize {
        let [f0, f1] = self.finger.get();
        if self.leaf_holds(f0, k) {
            return f0;
        }
        if self.leaf_holds(f1, k) {
            self.finger.set([f1, f0]);
            return f1;
        }
        let l = self.firsts.partition_point(|&x| x <= k).saturating_sub(1);
        self.finger.set([l, f0]);
        l
    }

    /// The position of the first key ≥ `k` (normalised: never past a leaf's end).
    #[inline]
    fn seek_ge(&self, k: u64) -> Pos {
        if self.len == 0 {
            return Pos { leaf: 0, i: 0 };
        }
        let l = self.leaf_for(k);
        let i = self.leaves[l].rank(k);
        self.normalise(Pos { leaf: l, i })
    }
    /// The position of the first key > `k`.
    #[inline]
    fn seek_gt(&self, k: u64) -> Pos {
        match k.checked_add(1) {
            Some(k1) => self.seek_ge(k1),
            None => self.end(),
        }
    }
    fn end(&self) -> Pos {
        Pos { leaf: self.leaves.len(), i: 0 }
    }
    #[inline]
    fn normalise(&self, p: Pos) -> Pos {
        if p.leaf < self.leaves.len() && p.i == self.leaves[p.leaf].len {
            Pos { leaf: p.leaf + 1, i: 0 }
        } else {
            p
        }
    }
    /// The position before `p`, if any.
    #[inline]
    fn prev(&self, p: Pos) -> Option<Pos> {
        if p.i > 0 {
            Some(Pos { leaf: p.leaf, i: p.i - 1 })
        } else if p.leaf > 0 {
            let l = p.leaf - 1;
            Some(Pos { leaf: l, i: self.leaves[l].len - 1 })
        } else {
            None
        }
    }
    #[inline]
    fn at(&self, p: Pos) -> Option<(&u64, &VmaEntry)> {
        let l = self.leaves.get(p.leaf)?;
        (p.i < l.len).then(|| (&l.keys[p.i], &l.vals[p.i]))
    }

    /// The entry with the greatest key ≤ `k`.
    #[inline]
    pub fn last_le(&self, k: u64) -> Option<Entry> {
        if let Some(p) = self.last.get() {
            let leaf = &self.leaves[p.leaf];
            let next = match leaf.keys.get(p.i + 1) {
                Some(&n) if p.i + 1 < leaf.len => n,
                _ => self.firsts.get(p.leaf + 1).copied().unwrap_or(u64::MAX),
            };
            if leaf.keys[p.i] <= k && k < next {
                return Some((leaf.keys[p.i], leaf.vals[p.i]));
            }
        }
        let p = self.prev(self.seek_gt(k))?;
        self.last.set(Some(p));
        self.at(p).map(|(k, v)| (*k, *v))
    }
    /// The entry whose range (its key up to its `end`) holds `k`: `last_le` filtered. The
    /// entry of the last `last_le` is tried first, as a fault's VMA is usually the one
    /// before: if its range holds `k`, it is the answer (ranges do not overlap), so the
    /// next key need not be looked at. That check is inlined; the search is not.
    #[inline(always)]
    pub fn containing(&self, k: u64) -> Option<Entry> {
        if let Some(p) = self.last.get() {
            let leaf = &self.leaves[p.leaf];
            let (start, e) = (leaf.keys[p.i], leaf.vals[p.i]);
            if start <= k && k < e.end {
                return Some((start, e));
            }
        }
        self.containing_search(k)
    }
    #[inline(never)]
    fn containing_search(&self, k: u64) -> Option<Entry> {
        self.last_le(k).filter(|(_, e)| k < e.end)
    }
    /// The entry with the greatest key < `k`.
    #[inline]
    pub fn last_lt(&self, k: u64) -> Option<Entry> {
        let p = self.prev(self.seek_ge(k))?;
        self.at(p).map(|(k, v)| (*k, *v))
    }
    /// The entry with the least key ≥ `k`.
    #[inline]
    pub fn first_ge(&self, k: u64) -> Option<Entry> {
        let e = self.at(self.seek_ge(k)).map(|(k, v)| (*k, *v));
        if e.is_some() {
            self.see(e, None);
        }
        e
    }

    /// The entries on either side of `k`: the last with key ≤ `k` and the first with key >
    /// `k`, from one search.
    #[inline]
    pub fn around(&self, k: u64) -> (Option<Entry>, Option<Entry>) {
        let p = self.seek_gt(k);
        let le = self.prev(p).and_then(|q| self.at(q)).map(|(k, v)| (*k, *v));
        (le, self.at(p).map(|(k, v)| (*k, *v)))
    }
    /// The entries on either side of `k`: the last with key < `k` and the first with key ≥
    /// `k`, from one search.
    #[inline]
    pub fn around_lt(&self, k: u64) -> (Option<Entry>, Option<Entry>) {
        let p = self.seek_ge(k);
        let lt = self.prev(p).and_then(|q| self.at(q)).map(|(k, v)| (*k, *v));
        let ge = self.at(p).map(|(k, v)| (*k, *v));
        self.see(lt, ge);
        (lt, ge)
    }

    /// The entry with key `k` and the entries before and after it, from one search; None
    /// if there is no entry with key `k`.
    #[inline]
    pub fn with_neighbours(&self, k: u64) -> Option<[Option<Entry>; 3]> {
        let p = self.seek_ge(k);
        let this = self.at(p).filter(|(x, _)| **x == k)?;
        let prev = self.prev(p).and_then(|q| self.at(q));
        let next = self.at(self.normalise(Pos { leaf: p.leaf, i: p.i + 1 }));
        let [prev, this, next] = [prev, Some(this), next].map(|e| e.map(|(k, v)| (*k, *v)));
        self.see(prev, next);
        Some([prev, this, next])
    }

    /// The entry with key `k`.
    pub fn get(&self, k: &u64) -> Option<&VmaEntry> {
        if self.len == 0 {
            return None;
        }
        let leaf = &self.leaves[self.leaf_for(*k)];
        leaf.find(*k).ok().map(|i| &leaf.vals[i])
    }

    /// Insert or replace the entry with key `k`; returns the old value.
    pub fn insert(&mut self, k: u64, v: VmaEntry) -> Option<VmaEntry> {
        self.changed();
        if self.len == 0 {
            let mut leaf = Leaf::new();
            leaf.insert_at(0, k, v);
            self.leaves.push(leaf);
            self.firsts.push(k);
            self.len = 1;
            self.finger.set([0, 0]);
            return None;
        }
        let l = self.leaf_for(k);
        let leaf = &mut self.leaves[l];
        let i = match leaf.find(k) {
            Ok(i) => return Some(std::mem::replace(&mut leaf.vals[i], v)),
            Err(i) => i,
        };
        self.insert_in(l, i, k, v);
        None
    }

    /// Insert `(k, v)` at index `i` of leaf `l`, where the order puts it.
    fn insert_in(&mut self, l: usize, i: usize, k: u64, v: VmaEntry) {
        let leaf = &mut self.leaves[l];
        self.len += 1;
        if leaf.len < LEAF_CAP {
            leaf.insert_at(i, k, v);
            if i == 0 {
                self.firsts[l] = k;
            }
            return;
        }
        // Split the full leaf in halves, then insert into the half that holds `k`.
        let half = LEAF_CAP / 2;
        let mut upper = Leaf::new();
        upper.keys[..LEAF_CAP - half].copy_from_slice(&leaf.keys[half..]);
        upper.vals[..LEAF_CAP - half].copy_from_slice(&leaf.vals[half..]);
        upper.len = LEAF_CAP - half;
        leaf.truncate(half);
        if i <= half {
            leaf.insert_at(i, k, v);
            if i == 0 {
                self.firsts[l] = k;
            }
        } else {
            upper.insert_at(i - half, k, v);
        }
        self.firsts.insert(l + 1, upper.keys[0]);
        self.leaves.insert(l + 1, upper);
    }

    /// Split the entry with key `old` in two (`__split_vma`): it becomes `keep`, and `new`
    /// goes right before it (`new_below`) or right after it, from the one search that finds
    /// `old`, as the kernel's `vma_iter_store` writes both halves at the iterator's
    /// position. The two halves must cover the old entry's range, so the order stays.
    pub fn split(&mut self, old: u64, keep: Entry, new: Entry, new_below: bool) {
        self.changed();
        let found = if self.len > 0 {
            let l = self.leaf_for(old);
            self.leaves[l].find(old).ok().map(|i| (l, i))
        } else {
            None
        };
        let Some((l, i)) = found else {
            // Not there: as a removal of nothing and two insertions.
            self.insert(keep.0, keep.1);
            self.insert(new.0, new.1);
            return;
        };
        let leaf = &mut self.leaves[l];
        leaf.keys[i] = keep.0;
        leaf.vals[i] = keep.1;
        if i == 0 {
            self.firsts[l] = keep.0;
        }
        self.insert_in(l, if new_below { i } else { i + 1 }, new.0, new.1);
    }

    /// Move the entry with key `old` to key `new` with value `v` (a VMA whose start moves
    /// within the gap its neighbours leave: the order stays). One search instead of a
    /// removal and an insertion; falls back to those when `new` would not keep the order.
    pub fn rekey(&mut self, old: u64, new: u64, v: VmaEntry) {
        self.changed();
        if self.len > 0 {
            let l = self.leaf_for(old);
            if let Ok(i) = self.leaves[l].find(old) {
                let leaf = &self.leaves[l];
                let left = if i > 0 {
                    Some(leaf.keys[i - 1])
                } else {
                    l.checked_sub(1).map(|p| self.leaves[p].keys[self.leaves[p].len - 1])
                };
                let right =
                    if i + 1 < leaf.len { Some(leaf.keys[i + 1]) } else { self.firsts.get(l + 1).copied() };
                if left.is_none_or(|x| x < new) && right.is_none_or(|x| new < x) {
                    let leaf = &mut self.leaves[l];
                    leaf.keys[i] = new;
                    leaf.vals[i] = v;
                    if i == 0 {
                        self.firsts[l] = new;
                    }
                    return;
                }
            }
        }
        self.remove(&old);
        self.insert(new, v);
    }

    /// Store `v` over `[start, v.end)` as the entry that had key `old` (the maple tree's
    /// store of an expanded VMA, `vma_iter_store`): every other entry whose key lies in the
    /// range goes (the VMAs a merge absorbs), with one search and one shift when they share
    /// a leaf. `old` must lie in the range. Returns how many entries went.
    pub fn store(&mut self, old: u64, start: u64, v: VmaEntry) -> usize {
        self.changed();
        debug_assert!(start <= old && old < v.end);
        if self.len > 0 {
            let l = self.leaf_for(start);
            let leaf = &self.leaves[l];
            let i = leaf.rank(start);
            let n = leaf.rank(v.end);
            let next_first = self.firsts.get(l + 1).copied().unwrap_or(u64::MAX);
            // The run [i, n) holds `old` and ends inside this leaf.
            if i < n
                && leaf.keys[i] <= old
                && old <= leaf.keys[n - 1]
                && (n < leaf.len || v.end <= next_first)
            {
                let leaf = &mut self.leaves[l];
                leaf.keys[i] = start;
                leaf.vals[i] = v;
                let gone = n - i - 1;
                if gone > 0 {
                    let len = leaf.len;
                    leaf.keys.copy_within(n..len, i + 1);
                    leaf.vals.copy_within(n..len, i + 1);
                    leaf.keys[len - gone..len].fill(u64::MAX);
                    leaf.len -= gone;
                    self.len -= gone;
                }
                if i == 0 {
                    self.firsts[l] = start;
                }
                if leaf.len < LEAF_MIN {
                    self.merge_small(l);
                }
                return gone;
            }
        }
        // Across leaves: one removal at a time.
        let covered: Vec<u64> = self.range(start..v.end).map(|(k, _)| *k).filter(|&k| k != old).collect();
        for k in &covered {
            self.remove(k);
        }
        self.rekey(old, start, v);
        covered.len()
    }

    /// Remove the entry with key `k`; returns its value.
    pub fn remove(&mut self, k: &u64) -> Option<VmaEntry> {
        self.changed();
        if self.len == 0 {
            return None;
        }
        let l = self.leaf_for(*k);
        let i = self.leaves[l].find(*k).ok()?;
        Some(self.remove_in(l, i))
    }

    /// Remove entry `i` of leaf `l`; returns its value.
    #[inline]
    fn remove_in(&mut self, l: usize, i: usize) -> VmaEntry {
        let leaf = &mut self.leaves[l];
        let v = leaf.remove_at(i);
        self.len -= 1;
        if leaf.len == 0 {
            self.leaves.remove(l);
            self.firsts.remove(l);
            self.finger.set([l.saturating_sub(1), 0]);
            return v;
        }
        if i == 0 {
            self.firsts[l] = leaf.keys[0];
        }
        if leaf.len < LEAF_MIN {
            self.merge_small(l);
        }
        v
    }

    /// Remove every entry with a key in `[lo, hi)` (munmap's `vma_iter_clear_gc`: one store
    /// of nothing over the range): whole leaves go in one drain and the edge leaves are cut
    /// once, where a removal at a time shifted the leaf array at every leaf merge. Returns
    /// how many entries went.
    pub fn clear_range(&mut self, lo: u64, hi: u64) -> usize {
        self.changed();
        if self.len == 0 || lo >= hi {
            return 0;
        }
        // One entry (the unmap of one VMA): as a removal.
        let l = self.leaf_for(lo);
        let leaf = &self.leaves[l];
        let i = leaf.rank(lo);
        if i < leaf.len && leaf.keys[i] < hi {
            let next = match leaf.keys.get(i + 1) {
                Some(&k) if i + 1 < leaf.len => k,
                _ => self.firsts.get(l + 1).copied().unwrap_or(u64::MAX),
            };
            if hi <= next {
                self.remove_in(l, i);
                return 1;
            }
        }
        let a = self.seek_ge(lo);
        let Some(leaf) = self.leaves.get(a.leaf) else { return 0 };
        // A few entries in `a`'s leaf: one shift.
        let n = leaf.rank(hi);
        if n < leaf.len || self.firsts.get(a.leaf + 1).is_none_or(|&f| hi <= f) {
            let (l, len, gone) = (a.leaf, leaf.len, n - a.i);
            if gone == len {
                self.leaves.remove(l);
                self.firsts.remove(l);
                self.finger.set([l.saturating_sub(1), 0]);
            } else if gone > 0 {
                let leaf = &mut self.leaves[l];
                leaf.keys.copy_within(n..len, a.i);
                leaf.vals.copy_within(n..len, a.i);
                leaf.keys[len - gone..len].fill(u64::MAX);
                leaf.len -= gone;
                if a.i == 0 {
                    self.firsts[l] = leaf.keys[0];
                }
                if leaf.len < LEAF_MIN {
                    self.merge_small(l);
                }
            }
            self.len -= gone;
            return gone;
        }
        let b = self.seek_ge(hi);
        let mut gone = self.leaves[a.leaf].len - a.i;
        // The head of `b`'s leaf (none when `b` is the end).
        if b.i > 0 {
            let leaf = &mut self.leaves[b.leaf];
            let len = leaf.len;
            leaf.keys.copy_within(b.i..len, 0);
            leaf.vals.copy_within(b.i..len, 0);
            leaf.truncate(len - b.i);
            self.firsts[b.leaf] = leaf.keys[0];
            gone += b.i;
        }
        // The tail of `a`'s leaf: the whole leaf when `a` is its first entry.
        let first_whole = if a.i == 0 {
            a.leaf
        } else {
            self.leaves[a.leaf].truncate(a.i);
            a.leaf + 1
        };
        gone += self.leaves[a.leaf + 1..b.leaf].iter().map(|l| l.len).sum::<usize>();
        self.leaves.drain(first_whole..b.leaf);
        self.firsts.drain(first_whole..b.leaf);
        self.len -= gone;
        // The cut leaves now sit side by side at `first_whole - 1` and `first_whole`.
        let around = first_whole.saturating_sub(1);
        for l in [around + 1, around] {
            if l < self.leaves.len() && self.leaves[l].len < LEAF_MIN {
                self.merge_small(l);
            }
        }
        let last = self.leaves.len().saturating_sub(1);
        self.finger.set([around.min(last), 0]);
        gone
    }

    /// Merge the small leaf `l` with a neighbour when both fit in 3/4 of a leaf.
    fn merge_small(&mut self, l: usize) {
        let fits = |a: &Leaf, b: &Leaf| a.len + b.len <= LEAF_CAP * 3 / 4;
        let (lo, hi) = if l + 1 < self.leaves.len() && fits(&self.leaves[l], &self.leaves[l + 1]) {
            (l, l + 1)
        } else if l > 0 && fits(&self.leaves[l - 1], &self.leaves[l]) {
            (l - 1, l)
        } else {
            return;
        };
        let upper = self.leaves.remove(hi);
        self.firsts.remove(hi);
        self.leaves[lo].append(&upper);
        self.finger.set([lo, 0]);
    }

    /// Entries with keys in `r`, in order (double-ended).
    pub fn range<R: RangeBounds<u64>>(&self, r: R) -> Iter<'_> {
        let lo = match r.start_bound() {
            Bound::Included(&k) => self.seek_ge(k),
            Bound::Excluded(&k) => self.seek_gt(k),
            Bound::Unbounded => Pos { leaf: 0, i: 0 },
        };
        let hi = match r.end_bound() {
            Bound::Included(&k) => self.seek_gt(k),
            Bound::Excluded(&k) => self.seek_ge(k),
            Bound::Unbounded => self.end(),
        };
        let hi = if (hi.leaf, hi.i) < (lo.leaf, lo.i) { lo } else { hi };
        Iter { tree: self, lo, hi }
    }
    /// Every entry, in order.
    pub fn iter(&self) -> Iter<'_> {
        Iter { tree: self, lo: Pos { leaf: 0, i: 0 }, hi: self.end() }
    }
    /// Every value, in key order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &VmaEntry> {
        self.iter().map(|(_, v)| v)
    }
}

/// An iterator over a key range of a [`VmaTree`].
pub struct Iter<'a> {
    tree: &'a VmaTree,
    /// The next entry from the front.
    lo: Pos,
    /// One past the next entry from the back (normalised like `lo`).
    hi: Pos,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a u64, &'a VmaEntry);
    fn next(&mut self) -> Option<Self::Item> {
        if self.lo == self.hi {
            return None;
        }
        let leaf = &self.tree.leaves[self.lo.leaf];
        let item = (&leaf.keys[self.lo.i], &leaf.vals[self.lo.i]);
        self.lo.i += 1;
        if self.lo.i == leaf.len {
            self.lo = Pos { leaf: self.lo.leaf + 1, i: 0 };
        }
        Some(item)
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        if self.lo == self.hi {
            return None;
        }
        let p = self.tree.prev(self.hi).expect("non-empty range");
        // `hi` stays normalised: one past `p` is (p.leaf, p.i + 1) unless that ends the leaf.
        self.hi = p;
        self.tree.at(p)
    }
}

impl<'a> IntoIterator for &'a VmaTree {
    type Item = (&'a u64, &'a VmaEntry);
    type IntoIter = Iter<'a>;
    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rand::{Rng, SeedableRng, rngs::SmallRng};

    use super::*;
    use crate::vma::VmaId;

    fn e(k: u64) -> VmaEntry {
        VmaEntry { end: k + 1, id: VmaId(k as u32) }
    }

    /// `Leaf::rank` counts the keys below `k` for every fill and every key between.
    #[test]
    fn rank_counts_the_keys_below() {
        for len in 0..=LEAF_CAP {
            let mut leaf = Leaf::new();
            for i in 0..len {
                leaf.insert_at(i, 10 * (i as u64 + 1), e(0));
            }
            for k in 0..=10 * (LEAF_CAP as u64 + 2) {
                assert_eq!(leaf.rank(k), leaf.keys().iter().filter(|&&x| x < k).count(), "len {len} k {k}");
            }
            assert_eq!(leaf.rank(u64::MAX), len);
        }
    }

    /// Random insertions, removals and queries agree with `BTreeMap`.
    #[test]
    fn agrees_with_btreemap() {
        let mut rng = SmallRng::seed_from_u64(7);
        let (mut splits, mut stores, mut clears) = (0, 0, 0);
        for round in 0..20 {
            let span = [50u64, 300, 5000][round % 3];
            let mut t = VmaTree::new();
            let mut m: BTreeMap<u64, VmaEntry> = BTreeMap::new();
            for step in 0..4000 {
                let k = rng.random_range(0..span);
                if rng.random_range(0..3) > (step / 1500) % 2 {
                    assert_eq!(
                        t.insert(k, e(k + step)).map(|v| v.end),
                        m.insert(k, e(k + step)).map(|v| v.end)
                    );
                } else {
                    assert_eq!(t.remove(&k).map(|v| v.end), m.remove(&k).map(|v| v.end));
                }
                assert_eq!(t.len(), m.len());
                let q = rng.random_range(0..span + 2);
                let kv = |x: Option<(&u64, &VmaEntry)>| x.map(|(k, v)| (*k, v.end));
                assert_eq!(t.last_le(q).map(|(k, v)| (k, v.end)), kv(m.range(..=q).next_back()));
                assert_eq!(t.last_lt(q).map(|(k, v)| (k, v.end)), kv(m.range(..q).next_back()));
                assert_eq!(t.first_ge(q).map(|(k, v)| (k, v.end)), kv(m.range(q..).next()));
                assert_eq!(t.get(&q).map(|v| v.end), m.get(&q).map(|v| v.end));
                let (le, gt) = t.around(q);
                assert_eq!(le.map(|(k, _)| k), m.range(..=q).next_back().map(|(k, _)| *k));
                assert_eq!(gt.map(|(k, _)| k), m.range(q + 1..).next().map(|(k, _)| *k));
                if let Some((k0, _)) = t.first_ge(q)
                    && rng.random_range(0..4) == 0
                {
                    // Move a key within its gap, as vma_set_range does.
                    let lo = m.range(..k0).next_back().map_or(0, |(k, _)| k + 1);
                    let hi = m.range(k0 + 1..).next().map_or(span + 2, |(k, _)| *k);
                    let nk = rng.random_range(lo..hi);
                    t.rekey(k0, nk, e(nk));
                    m.remove(&k0);
                    m.insert(nk, e(nk));
                    assert_eq!(t.len(), m.len());
                    assert!(t.iter().map(|(k, v)| (*k, v.end)).eq(m.iter().map(|(k, v)| (*k, v.end))));
                }
                if let Some((k0, v0)) = t.first_ge(q)
                    && let gap = m.range(k0 + 1..).next().map_or(u64::MAX, |(k, _)| *k).min(v0.end)
                    && gap > k0 + 1
                    && rng.random_range(0..4) == 0
                {
                    // Split an entry's range in two, as __split_vma does (the keys stay
                    // below the next entry's).
                    let mid = rng.random_range(k0 + 1..gap);
                    let below = rng.random_range(0..2) == 0;
                    let (lo, hi) = ((k0, VmaEntry { end: mid, id: v0.id }), (mid, v0));
                    let (keep, new) = if below { (hi, lo) } else { (lo, hi) };
                    t.split(k0, keep, new, below);
                    splits += 1;
                    m.insert(lo.0, lo.1);
                    m.insert(hi.0, hi.1);
                    assert_eq!(t.len(), m.len());
                    assert!(t.iter().map(|(k, v)| (*k, v.end)).eq(m.iter().map(|(k, v)| (*k, v.end))));
                }
                if let Some((k0, v0)) = t.first_ge(q)
                    && rng.random_range(0..4) == 0
                {
                    // Store an entry over its neighbours, as a merge does.
                    let lo = m.range(..k0).next_back().map_or(0, |(k, _)| *k);
                    let start = rng.random_range(lo..=k0);
                    let end = k0 + 1 + rng.random_range(0..60);
                    let gone: Vec<u64> = m.range(start..end).map(|(k, _)| *k).filter(|&k| k != k0).collect();
                    for k in &gone {
                        m.remove(k);
                    }
                    m.remove(&k0);
                    let nv = VmaEntry { end, id: v0.id };
                    m.insert(start, nv);
                    assert_eq!(t.store(k0, start, nv), gone.len());
                    stores += 1;
                    assert_eq!(t.len(), m.len());
                    assert!(t.iter().map(|(k, v)| (*k, v.end)).eq(m.iter().map(|(k, v)| (*k, v.end))));
                }
                if rng.random_range(0..8) == 0 {
                    // Clear a range, as munmap does: within a leaf, across a few, or all.
                    let hi = q.saturating_add([3, 40, span / 3, span][rng.random_range(0..4)]);
                    let gone: Vec<u64> = m.range(q..hi).map(|(k, _)| *k).collect();
                    for k in &gone {
                        m.remove(k);
                    }
                    assert_eq!(t.clear_range(q, hi), gone.len());
                    clears += usize::from(gone.len() > LEAF_CAP);
                    assert_eq!(t.len(), m.len());
                    assert!(t.iter().map(|(k, v)| (*k, v.end)).eq(m.iter().map(|(k, v)| (*k, v.end))));
                    for (l, leaf) in t.leaves.iter().enumerate() {
                        assert!(leaf.len > 0 && t.firsts[l] == leaf.keys[0]);
                        assert!(leaf.keys[leaf.len..].iter().all(|&k| k == u64::MAX));
                    }
                }
                let wn = t.with_neighbours(q).map(|w| w.map(|e| e.map(|(k, _)| k)));
                let want = m.contains_key(&q).then(|| {
                    [
                        m.range(..q).next_back().map(|(k, _)| *k),
                        Some(q),
                        m.range(q + 1..).next().map(|(k, _)| *k),
                    ]
                });
                assert_eq!(wn, want);
                let (lt, ge) = t.around_lt(q);
                assert_eq!(lt.map(|(k, _)| k), m.range(..q).next_back().map(|(k, _)| *k));
                assert_eq!(ge.map(|(k, _)| k), m.range(q..).next().map(|(k, _)| *k));
                let q2 = rng.random_range(0..span + 2);
                let a: Vec<_> = t.range(q..q2.max(q)).map(|(k, _)| *k).collect();
                let b: Vec<_> = m.range(q..q2.max(q)).map(|(k, _)| *k).collect();
                assert_eq!(a, b);
                let a: Vec<_> = t.range(..=q).rev().take(3).map(|(k, _)| *k).collect();
                let b: Vec<_> = m.range(..=q).rev().take(3).map(|(k, _)| *k).collect();
                assert_eq!(a, b);
                if step % 500 == 0 {
                    assert!(t.iter().map(|(k, _)| *k).eq(m.keys().copied()));
                    assert!(t.iter().rev().map(|(k, _)| *k).eq(m.keys().rev().copied()));
                    for (l, leaf) in t.leaves.iter().enumerate() {
                        assert!(leaf.len > 0 && t.firsts[l] == leaf.keys[0]);
                        assert!(leaf.keys[leaf.len..].iter().all(|&k| k == u64::MAX));
                    }
                }
            }
        }
        assert!(
            splits > 1000 && stores > 1000 && clears > 50,
            "{splits} splits, {stores} stores, {clears} clears"
        );
    }
}
