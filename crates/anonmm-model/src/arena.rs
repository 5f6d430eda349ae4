//! Slab arenas with typed ids: the model's object graph (VMAs, anon_vmas, chains, folios)
//! lives in these instead of `Rc<RefCell<..>>` webs, so ids are cheap to copy and compare.

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
#[derive(Clone, Debug)]
pub struct Arena<I, T> {
    items: Vec<Option<T>>,
    free: Vec<u32>,
    live: usize,
    _id: PhantomData<I>,
}

impl<I: ArenaId, T> Default for Arena<I, T> {
    fn default() -> Self {
        Arena { items: Vec::new(), free: Vec::new(), live: 0, _id: PhantomData }
    }
}

impl<I: ArenaId, T> Arena<I, T> {
    /// Store `v` in a free slot (the most recently freed, else a new one) and return its id.
    /// Inline, so that a value built for it (a 112-byte folio) is built in its slot rather
    /// than copied there.
    #[inline(always)]
    pub fn alloc(&mut self, v: T) -> I {
        self.live += 1;
        if let Some(i) = self.free.pop() {
            // The slot is empty: writing over it needs none of the old value's drop code
            // (for a folio, its page vector's test for a heap buffer).
            let old = self.items[i as usize].replace(v);
            debug_assert!(old.is_none(), "a free slot holds a value");
            std::mem::forget(old);
            I::from_index(i)
        } else {
            self.items.push(Some(v));
            I::from_index((self.items.len() - 1) as u32)
        }
    }
    /// Take the value out of slot `id`, making the slot reusable. Panics on a double free.
    pub fn free(&mut self, id: I) -> T {
        let v = self.items[id.index() as usize].take().expect("double free in arena");
        self.free.push(id.index());
        self.live -= 1;
        v
    }
    /// Drop the value in slot `id` where it lies, making the slot reusable: [`Arena::free`]
    /// without moving the value out (a VMA is 128 bytes). Panics on a double free. Inline:
    /// a zap releases a folio a page.
    #[inline]
    pub fn release(&mut self, id: I) {
        let slot = &mut self.items[id.index() as usize];
        assert!(slot.is_some(), "double free in arena");
        *slot = None;
        self.free.push(id.index());
        self.live -= 1;
    }
    /// Whether `id` names a live value.
    pub fn contains(&self, id: I) -> bool {
        self.items.get(id.index() as usize).is_some_and(|s| s.is_some())
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

impl<I: ArenaId, T> std::ops::Index<I> for Arena<I, T> {
    type Output = T;
    #[inline]
    fn index(&self, id: I) -> &T {
        self.items[id.index() as usize].as_ref().expect("stale arena id")
    }
}
impl<I: ArenaId, T> std::ops::IndexMut<I> for Arena<I, T> {
    #[inline]
    fn index_mut(&mut self, id: I) -> &mut T {
        self.items[id.index() as usize].as_mut().expect("stale arena id")
    }
}
