//! Virtual memory areas: `struct vm_area_struct` and its flags (include/linux/mm.h,
//! include/linux/mm_types.h).

use std::sync::Arc;

use bitflags::bitflags;

use crate::arena::arena_id;
use crate::fs::FileId;
use crate::mm::MmId;
use crate::rmap::{AnonVmaId, AvcId};
use crate::types::{PAGE_SHIFT, PgOff, VirtAddr};

arena_id!(
    /// A VMA in the global VMA arena.
    VmaId
);

bitflags! {
    /// `vm_flags_t`, with the kernel's bit values (x86_64, 6.18).
    #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
    pub struct VmFlags: u64 {
        /// `VM_READ`: readable (PROT_READ).
        const READ = 0x1;
        /// `VM_WRITE`: writable (PROT_WRITE).
        const WRITE = 0x2;
        /// `VM_EXEC`: executable (PROT_EXEC).
        const EXEC = 0x4;
        /// `VM_SHARED`: MAP_SHARED, unless the file is open read-only.
        const SHARED = 0x8;
        /// `VM_MAYREAD`: mprotect may add VM_READ.
        const MAYREAD = 0x10;
        /// `VM_MAYWRITE`: mprotect may add VM_WRITE.
        const MAYWRITE = 0x20;
        /// `VM_MAYEXEC`: mprotect may add VM_EXEC.
        const MAYEXEC = 0x40;
        /// `VM_MAYSHARE`: a MAP_SHARED mapping, writable or not.
        const MAYSHARE = 0x80;
        /// `VM_GROWSDOWN`: a stack that grows down (MAP_GROWSDOWN).
        const GROWSDOWN = 0x100;
        /// `VM_UFFD_MISSING`: registered with userfaultfd for missing faults.
        const UFFD_MISSING = 0x200;
        /// `VM_PFNMAP`: raw PFNs without struct pages (never made by the model).
        const PFNMAP = 0x400;
        /// `VM_MAYBE_GUARD` (bit 11, `gu` in smaps): MADV_GUARD_INSTALL ran on the VMA, so
        /// its page tables may hold guard markers. Set on the whole VMA, never cleared;
        /// sticky across merges and makes fork copy the page tables (`VM_COPY_ON_FORK`).
        const MAYBE_GUARD = 0x800;
        /// `VM_UFFD_WP`: registered with userfaultfd for write-protect faults.
        const UFFD_WP = 0x1000;
        /// `VM_LOCKED`: mlocked (MAP_LOCKED).
        const LOCKED = 0x2000;
        /// `VM_IO`: device memory (never made by the model).
        const IO = 0x4000;
        /// `VM_SEQ_READ`: MADV_SEQUENTIAL.
        const SEQ_READ = 0x8000;
        /// `VM_RAND_READ`: MADV_RANDOM.
        const RAND_READ = 0x10000;
        /// `VM_DONTCOPY`: not copied to a fork child (MADV_DONTFORK).
        const DONTCOPY = 0x20000;
        /// `VM_DONTEXPAND`: mremap may not grow it (the kernel's special mappings, `[vdso]` ...).
        const DONTEXPAND = 0x40000;
        /// `VM_LOCKONFAULT`: mlocked as pages are faulted in (`MLOCK_ONFAULT`).
        const LOCKONFAULT = 0x80000;
        /// `VM_ACCOUNT`: charged to the overcommit accounting (`accountable_mapping`).
        const ACCOUNT = 0x100000;
        /// `VM_NORESERVE`: not charged (MAP_NORESERVE).
        const NORESERVE = 0x200000;
        /// `VM_HUGETLB`: a hugetlbfs mapping (never made by the model).
        const HUGETLB = 0x400000;
        /// `VM_SYNC`: synchronous page faults (MAP_SYNC).
        const SYNC = 0x800000;
        /// `VM_ARCH_1`: on x86, `VM_PAT` (never made by the model).
        const ARCH_1 = 0x1000000;
        /// `VM_WIPEONFORK`: a fork child sees it zero-filled (MADV_WIPEONFORK).
        const WIPEONFORK = 0x2000000;
        /// `VM_DONTDUMP`: left out of core dumps (MADV_DONTDUMP).
        const DONTDUMP = 0x4000000;
        /// `VM_SOFTDIRTY`: set on new VMAs with CONFIG_MEM_SOFT_DIRTY; merging ignores it.
        const SOFTDIRTY = 0x8000000;
        /// `VM_MIXEDMAP`: a mix of struct pages and raw PFNs (never made by the model).
        const MIXEDMAP = 0x10000000;
        /// `VM_HUGEPAGE`: MADV_HUGEPAGE.
        const HUGEPAGE = 0x20000000;
        /// `VM_NOHUGEPAGE`: MADV_NOHUGEPAGE (also set by MAP_STACK).
        const NOHUGEPAGE = 0x40000000;
        /// `VM_MERGEABLE`: offered to KSM (MADV_MERGEABLE).
        const MERGEABLE = 0x80000000;
        /// `VM_PKEY_BIT0..3` (x86 protection keys, `VM_HIGH_ARCH_0..3`).
        const PKEY_BIT0 = 1 << 32;
        /// `VM_PKEY_BIT1`.
        const PKEY_BIT1 = 1 << 33;
        /// `VM_PKEY_BIT2`.
        const PKEY_BIT2 = 1 << 34;
        /// `VM_PKEY_BIT3`.
        const PKEY_BIT3 = 1 << 35;
        /// `VM_UFFD_MINOR` (bit 41 on 64-bit).
        const UFFD_MINOR = 0x200_0000_0000;
    }
}

impl VmFlags {
    /// `ARCH_VM_PKEY_FLAGS`.
    pub const PKEY_MASK: VmFlags =
        VmFlags::PKEY_BIT0.union(VmFlags::PKEY_BIT1).union(VmFlags::PKEY_BIT2).union(VmFlags::PKEY_BIT3);

    /// The protection key bits for `pkey` (`calc_vm_prot_bits`'s pkey part).
    pub fn from_pkey(pkey: u8) -> VmFlags {
        VmFlags::from_bits_retain(u64::from(pkey & 0xf) << 32)
    }

    /// `vma_pkey`.
    pub fn pkey(self) -> u8 {
        ((self.bits() >> 32) & 0xf) as u8
    }

    /// `VM_SPECIAL`: never merged (mm.h).
    pub const SPECIAL: VmFlags =
        VmFlags::IO.union(VmFlags::DONTEXPAND).union(VmFlags::PFNMAP).union(VmFlags::MIXEDMAP);
    /// `VM_ACCESS_FLAGS`.
    pub const ACCESS: VmFlags = VmFlags::READ.union(VmFlags::WRITE).union(VmFlags::EXEC);
    /// `VM_LOCKED_MASK`.
    pub const LOCKED_MASK: VmFlags = VmFlags::LOCKED.union(VmFlags::LOCKONFAULT);
    /// `__VM_UFFD_FLAGS`.
    pub const UFFD_FLAGS: VmFlags = VmFlags::UFFD_MISSING.union(VmFlags::UFFD_WP).union(VmFlags::UFFD_MINOR);
    /// Flags `is_mergeable_vma` ignores (`VM_IGNORE_MERGE`: `VM_SOFTDIRTY` and the sticky
    /// `VM_MAYBE_GUARD`).
    pub const IGNORE_MERGE: VmFlags = VmFlags::SOFTDIRTY.union(VmFlags::MAYBE_GUARD);
    /// Flags a merged VMA takes from every VMA it absorbs (the `VM_STICKY` part the model
    /// has: `VM_MAYBE_GUARD`).
    pub const STICKY: VmFlags = VmFlags::MAYBE_GUARD;
}

/// An anon_vma_name: shared (across threads too: `replay --policy all` forks a model on
/// another), compared by string (`anon_vma_name_eq`).
pub type AnonName = Option<Arc<str>>;

/// A VMA's `anon_vma_chain`: a few inline, as a VMA's chain is one link per anon_vma of its
/// fork ancestry (one until a fork), so splitting or copying a VMA allocates nothing.
pub type VmaChain = smallvec::SmallVec<[AvcId; 4]>;

/// `struct vm_area_struct`: the fields the model needs. A VMA is 128 bytes, aligned to
/// 128 so that it is one pair of cache lines, the unit x86's adjacent-line prefetcher
/// fetches: aligned to 64, a large arena (its own mmap, base at 64 mod 128) put every VMA
/// across two pairs, so a cold VMA drew four lines.
#[derive(Clone, Debug)]
#[repr(align(128))]
pub struct Vma {
    /// `vm_mm`: the address space it belongs to.
    pub mm: MmId,
    /// `vm_start`.
    pub start: VirtAddr,
    /// `vm_end` (exclusive).
    pub end: VirtAddr,
    /// `vm_pgoff`.
    pub pgoff: PgOff,
    /// `vm_flags`.
    pub flags: VmFlags,
    /// `vm_file`: the open file (compared by identity, like the kernel's pointer).
    pub file: Option<FileId>,
    /// `anon_vma`: None until the first anonymous fault (`anon_vma_prepare`) or a fork/merge
    /// gives it one.
    pub anon_vma: Option<AnonVmaId>,
    /// `anon_vma_chain`, newest first (list_add at the head, as `anon_vma_chain_link`).
    pub chain: VmaChain,
    /// `anon_name`: the PR_SET_VMA_ANON_NAME name, shown as `[anon:NAME]`.
    pub anon_name: AnonName,
    /// The name of a kernel-made special mapping (`[vdso]`, `[vvar]`, `[stack]` …), for
    /// `/proc/pid/maps` only (its kind was read by `map_record`; a name keeps `Vma` small).
    pub special: Option<Arc<str>>,
    /// `vm_userfaultfd_ctx`: the userfaultfd this VMA is registered with.
    pub uffd: Option<crate::uffd::UffdCtx>,
}

/// What kind of mapping the kernel made itself at exec, as a perf mmap record names it
/// (`map_record`): the name is read once, where the record enters the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpecialMapping {
    /// `[stack]`: the main thread's stack, set up by `setup_arg_pages` (`VM_GROWSDOWN`).
    Stack,
    /// `[heap]`: the brk area (`mm->start_brk`..`mm->brk`), a plain anonymous VMA.
    Heap,
    /// Another `_install_special_mapping` (`[vdso]`, `[vvar]`, `[vsyscall]` …), by its name.
    Other(Arc<str>),
}

impl SpecialMapping {
    /// The kind a recorded mapping's name means.
    pub fn from_name(name: &str) -> SpecialMapping {
        match name {
            "[stack]" => SpecialMapping::Stack,
            "[heap]" => SpecialMapping::Heap,
            other => SpecialMapping::Other(other.into()),
        }
    }

    /// The name `/proc/pid/maps` shows.
    pub fn name(self) -> Arc<str> {
        match self {
            SpecialMapping::Stack => "[stack]".into(),
            SpecialMapping::Heap => "[heap]".into(),
            SpecialMapping::Other(n) => n,
        }
    }
}

impl Vma {
    /// Size in pages (`vma_pages`).
    pub fn pages(&self) -> u64 {
        self.start.pages_to(self.end)
    }
    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.end.0 - self.start.0
    }
    /// Whether it covers no address; the checker rejects such a VMA once linked.
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
    /// Whether `a` lies in `[start, end)`.
    pub fn contains(&self, a: VirtAddr) -> bool {
        self.start <= a && a < self.end
    }
    /// `vma_is_anonymous`: no vm_ops. Shared anonymous memory is shmem and has a file.
    pub fn is_anonymous(&self) -> bool {
        self.file.is_none()
    }
    /// `linear_page_index(vma, addr)`.
    pub fn linear_page_index(&self, addr: VirtAddr) -> PgOff {
        self.pgoff.plus((addr.0 - self.start.0) >> PAGE_SHIFT)
    }
    /// `vma_address(vma, pgoff, nr)` (mm/internal.h): where a folio at `pgoff` with `nr`
    /// pages maps into this VMA, or None.
    pub fn address_of(&self, pgoff: PgOff, nr: u64) -> Option<VirtAddr> {
        if pgoff >= self.pgoff {
            let off = (pgoff.0 - self.pgoff.0).checked_shl(PAGE_SHIFT)?;
            let a = self.start.0.checked_add(off)?;
            (a < self.end.0).then_some(VirtAddr(a))
        } else if pgoff.0 + nr > self.pgoff.0 {
            Some(self.start)
        } else {
            None
        }
    }
    /// `is_cow_mapping`: private and may be written.
    pub fn is_cow_mapping(&self) -> bool {
        self.flags & (VmFlags::SHARED | VmFlags::MAYWRITE) == VmFlags::MAYWRITE
    }
}

/// `calc_vm_prot_bits`.
pub fn calc_vm_prot_bits(prot: u64) -> VmFlags {
    let mut f = VmFlags::empty();
    if prot & crate::abi::PROT_READ != 0 {
        f |= VmFlags::READ;
    }
    if prot & crate::abi::PROT_WRITE != 0 {
        f |= VmFlags::WRITE;
    }
    if prot & crate::abi::PROT_EXEC != 0 {
        f |= VmFlags::EXEC;
    }
    f
}

/// `calc_vm_flag_bits`. MAP_STACK implies VM_NOHUGEPAGE when `map_stack_nohugepage` (the
/// kernel profile's switch: from 6.7).
pub fn calc_vm_flag_bits(flags: u64, map_stack_nohugepage: bool) -> VmFlags {
    use crate::abi::*;
    let mut f = VmFlags::empty();
    if flags & MAP_GROWSDOWN != 0 {
        f |= VmFlags::GROWSDOWN;
    }
    if flags & MAP_LOCKED != 0 {
        f |= VmFlags::LOCKED;
    }
    // Any mapping type: do_mmap computes the VMA's flags before it validates a file's.
    if flags & MAP_SYNC != 0 {
        f |= VmFlags::SYNC;
    }
    if flags & MAP_STACK != 0 && map_stack_nohugepage {
        f |= VmFlags::NOHUGEPAGE;
    }
    f
}
