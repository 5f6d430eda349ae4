//! `kernel`: Linux 6.18 as it is. A moved faulted VMA keeps its pgoff (`copy_vma`) and its
//! folios their `index` and `mapping`, so it merges only where that pgoff happens to fit;
//! VMAs with different anon_vmas never merge; mremap flags 8 and 16 are EINVAL. This is the
//! anon_vma design Hugh Dickins merged in 2.6.7 ("rmap 39 add anon_vma rmap", May 2004),
//! which gave up mergeability after mremap for cheap moves (../shared/design/
//! relocate-anon-history.md §3).

use super::Design;

/// Linux 6.18: every hook at its default.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Kernel;

impl Design for Kernel {}
