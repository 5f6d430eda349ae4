//! Slab arenas with typed ids: the model's object graph (VMAs, anon_vmas, chains, folios)
//! lives in these instead of `Rc<RefCell<..>>` webs, so ids are cheap to copy and compare.

use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::marker::PhantomData;

/// A typed index into an [`Arena`].
pub trait ArenaId: Copy + Eq + std::fmt::Debug {
    /// The id of slot `i`.
    fn from_index(i: u32) -> Self;
    /// The slot this id names.
    fn index(self) -> u32;
}

macro_rules! arena_id {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
        pub struct $name(pub u32);
        impl $crate::arena::ArenaId for $name {
            fn from_index(i: u32) -> Self { $name(i) }
            fn index(self) -> u32 { self.0 }
        }
    };
}
pub(crate) use arena_id;

/// A slab: freed slots are reused last-in first-out, so runs are deterministic.
#[derive(Debug)]
pub struct Arena<I, T: 'static> {
    items: Vec<Slot<T>>,
    /// The most recently freed slot, the head of the free slots' list ([`NO_SLOT`]: none).
    free: u32,
    live: usize,
    _id: PhantomData<I>,
}

/// One slot of an [`Arena`]: a value, or a free slot holding the next free one (the free
/// list lives in the slots, so that freeing and reusing a slot touch only it and the head;
/// a free slot's `u32` fits beside the value's niche, so a slot is as large as a value).
#[derive(Clone, Debug)]
pub(crate) enum Slot<T> {
    Full(T),
    Free(u32),
}

/// The end of an arena's free list.
const NO_SLOT: u32 = u32::MAX;

impl<T> Slot<T> {
    #[inline(always)]
    fn as_ref(&self) -> Option<&T> {
        match self {
            Slot::Full(v) => Some(v),
            Slot::Free(_) => None,
        }
    }
    #[inline(always)]
    fn as_mut(&mut self) -> Option<&mut T> {
        match self {
            Slot::Full(v) => Some(v),
            Slot::Free(_) => None,
        }
    }
}

/// A dropped arena's slot vector at least this large is kept, emptied, for the thread's next
/// arena of its type.
const SPARE_MIN_BYTES: usize = 1 << 20;

thread_local! {
    /// Emptied slot vectors of dropped arenas, one per type, for the next arena of that type
    /// the thread makes. `replay --policy all` runs one model after another on each worker,
    /// and each would otherwise fault in its large arenas afresh (the folios: 64 bytes a
    /// folio, 17,000 pages of fresh memory a model of a 1 M-fault trace) after the one before
    /// gave them back to the system.
    static SPARE: RefCell<Vec<(TypeId, Box<dyn Any>)>> = const { RefCell::new(Vec::new()) };
}

impl<I: ArenaId, T: 'static> Default for Arena<I, T> {
    fn default() -> Self {
        let spare = SPARE
            .try_with(|s| {
                let mut s = s.borrow_mut();
                let k = s.iter().position(|(t, _)| *t == TypeId::of::<T>())?;
                s.swap_remove(k).1.downcast::<Vec<Slot<T>>>().ok().map(|b| *b)
            })
            .ok()
            .flatten();
        Arena { items: spare.unwrap_or_default(), free: NO_SLOT, live: 0, _id: PhantomData }
    }
}

/// A copy in the thread's spare slot vector if it has one (a model forked on a worker that
/// dropped one before: `replay --policy all`), with room for as many slots as the original.
impl<I: ArenaId, T: Clone + 'static> Clone for Arena<I, T> {
    fn clone(&self) -> Self {
        let mut a = Self::default();
        a.items.reserve(self.items.capacity());
        a.items.extend_from_slice(&self.items);
        a.free = self.free;
        a.live = self.live;
        a
    }
}

impl<I, T: 'static> Drop for Arena<I, T> {
    fn drop(&mut self) {
        if self.items.capacity() * std::mem::size_of::<Slot<T>>() < SPARE_MIN_BYTES {
            return;
        }
        let mut items = std::mem::take(&mut self.items);
        items.clear();
        // At thread exit the spare list may be gone already: then the vector is just freed.
        let _ = SPARE.try_with(|s| {
            let mut s = s.borrow_mut();
            match s.iter_mut().find(|(t, _)| *t == TypeId::of::<T>()) {
                // Keep the larger of two.
                Some((_, old)) => {
                    if old.downcast_ref::<Vec<Slot<T>>>().is_some_and(|o| o.capacity() < items.capacity()) {
                        *old = Box::new(items);
                    }
                }
                None => s.push((TypeId::of::<T>(), Box::new(items))),
            }
        });
    }
}

impl<I: ArenaId, T: 'static> Arena<I, T> {
    /// Store `v` in a free slot (the most recently freed, else a new one) and return its id.
    /// Inline, so that a value built for it (a 112-byte folio) is built in its slot rather
    /// than copied there.
    #[inline(always)]
    pub fn alloc(&mut self, v: T) -> I {
        self.live += 1;
        let i = self.free;
        if i != NO_SLOT {
            let slot = &mut self.items[i as usize];
            let Slot::Free(next) = *slot else { unreachable!("a free slot holds a value") };
            self.free = next;
            // The slot is free: writing over it needs none of a value's drop code (for a
            // folio, its page vector's test for a heap buffer).
            std::mem::forget(std::mem::replace(slot, Slot::Full(v)));
            I::from_index(i)
        } else {
            self.items.push(Slot::Full(v));
            I::from_index((self.items.len() - 1) as u32)
        }
    }
    /// Take the value out of slot `id`, making the slot reusable. Panics on a double free.
    pub fn free(&mut self, id: I) -> T {
        let slot = &mut self.items[id.index() as usize];
        assert!(matches!(slot, Slot::Full(_)), "double free in arena");
        let Slot::Full(v) = std::mem::replace(slot, Slot::Free(self.free)) else { unreachable!() };
        self.free = id.index();
        self.live -= 1;
        v
    }
    /// Drop the value in slot `id` where it lies, making the slot reusable: [`Arena::free`]
    /// without moving the value out (a VMA is 128 bytes). Panics on a double free. Inline:
    /// a zap releases a folio a page.
    #[inline(always)]
    pub fn release(&mut self, id: I) {
        let slot = &mut self.items[id.index() as usize];
        assert!(matches!(slot, Slot::Full(_)), "double free in arena");
        *slot = Slot::Free(self.free);
        self.free = id.index();
        self.live -= 1;
    }
    /// Change the value in slot `id` with `f`, then free the slot where the value lies if
    /// `f` said so (its second answer): one lookup for a change that may free it (a zap
    /// drops a mapping a page, and most pages go with it). Panics on a stale id.
    #[inline(always)]
    pub fn update_or_release<R>(&mut self, id: I, f: impl FnOnce(&mut T) -> (R, bool)) -> R {
        let slot = &mut self.items[id.index() as usize];
        let (r, free) = f(slot.as_mut().expect("stale arena id"));
        if free {
            *slot = Slot::Free(self.free);
            self.free = id.index();
            self.live -= 1;
        }
        r
    }
    /// Whether `id` names a live value.
    pub fn contains(&self, id: I) -> bool {
        self.items.get(id.index() as usize).is_some_and(|s| matches!(s, Slot::Full(_)))
    }
    /// Live values.
    pub fn len(&self) -> usize {
        self.live
    }
    /// Whether no value is live.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }
    /// Every live value with its id, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (I, &T)> {
        self.items.iter().enumerate().filter_map(|(i, s)| s.as_ref().map(|v| (I::from_index(i as u32), v)))
    }
}

impl<I: ArenaId, T: 'static> std::ops::Index<I> for Arena<I, T> {
    type Output = T;
    #[inline]
    fn index(&self, id: I) -> &T {
        self.items[id.index() as usize].as_ref().expect("stale arena id")
    }
}
impl<I: ArenaId, T: 'static> std::ops::IndexMut<I> for Arena<I, T> {
    #[inline]
    fn index_mut(&mut self, id: I) -> &mut T {
        self.items[id.index() as usize].as_mut().expect("stale arena id")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    arena_id!(TestId);

    /// A large arena dropped on a thread hands its emptied storage to the thread's next arena
    /// of the same type, which starts empty: the same ids from slot 0, nothing live.
    #[test]
    fn a_dropped_large_arena_leaves_its_storage_to_the_next() {
        std::thread::spawn(|| {
            let n = 100_000u64; // 1.6 MB of slots, above SPARE_MIN_BYTES
            let mut a: Arena<TestId, u64> = Arena::default();
            for v in 0..n {
                a.alloc(v);
            }
            let cap = a.items.capacity();
            let ptr = a.items.as_ptr() as usize;
            drop(a);
            let mut b: Arena<TestId, u64> = Arena::default();
            assert_eq!((b.len(), b.iter().count()), (0, 0));
            assert_eq!((b.items.capacity(), b.items.as_ptr() as usize), (cap, ptr), "the same storage");
            assert_eq!(b.alloc(7), TestId(0));
            assert_eq!(b[TestId(0)], 7);
            assert!(!b.contains(TestId(1)));
            // Another type does not take it; a small arena is not kept.
            let c: Arena<TestId, u32> = Arena::default();
            assert_eq!(c.items.capacity(), 0);
            let mut d: Arena<TestId, u32> = Arena::default();
            d.alloc(1);
            drop(d);
            assert_eq!(Arena::<TestId, u32>::default().items.capacity(), 0);
        })
        .join()
        .expect("the test thread");
    }
}
