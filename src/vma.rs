//! Virtual memory areas: `struct vm_area_struct` and its flags (include/linux/mm.h,
//! include/linux/mm_types.h).

use std::rc::Rc;

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
        const READ = 0x1;
        const WRITE = 0x2;
        const EXEC = 0x4;
        const SHARED = 0x8;
        const MAYREAD = 0x10;
        const MAYWRITE = 0x20;
        const MAYEXEC = 0x40;
        const MAYSHARE = 0x80;
        const GROWSDOWN = 0x100;
        const UFFD_MISSING = 0x200;
        const PFNMAP = 0x400;
        const UFFD_WP = 0x1000;
        const LOCKED = 0x2000;
        const IO = 0x4000;
        const SEQ_READ = 0x8000;
        const RAND_READ = 0x10000;
        const DONTCOPY = 0x20000;
        const DONTEXPAND = 0x40000;
        const LOCKONFAULT = 0x80000;
        const ACCOUNT = 0x100000;
        const NORESERVE = 0x200000;
        const HUGETLB = 0x400000;
        const SYNC = 0x800000;
        const ARCH_1 = 0x1000000;
        const WIPEONFORK = 0x2000000;
        const DONTDUMP = 0x4000000;
        const SOFTDIRTY = 0x8000000;
        const MIXEDMAP = 0x10000000;
        const HUGEPAGE = 0x20000000;
        const NOHUGEPAGE = 0x40000000;
        const MERGEABLE = 0x80000000;
        /// `VM_PKEY_BIT0..3` (x86 protection keys, `VM_HIGH_ARCH_0..3`).
        const PKEY_BIT0 = 1 << 32;
        const PKEY_BIT1 = 1 << 33;
        const PKEY_BIT2 = 1 << 34;
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
    /// Flags `is_mergeable_vma` ignores in 6.18 (`VM_SOFTDIRTY`).
    pub const IGNORE_MERGE: VmFlags = VmFlags::SOFTDIRTY;
}

/// An anon_vma_name: shared, compared by string (`anon_vma_name_eq`).
pub type AnonName = Option<Rc<str>>;

/// `struct vm_area_struct`: the fields the model needs.
#[derive(Clone, Debug)]
pub struct Vma {
    pub mm: MmId,
    pub start: VirtAddr,
    pub end: VirtAddr,
    /// `vm_pgoff`.
    pub pgoff: PgOff,
    pub flags: VmFlags,
    /// `vm_file`: the open file (compared by identity, like the kernel's pointer).
    pub file: Option<FileId>,
    pub anon_vma: Option<AnonVmaId>,
    /// `anon_vma_chain`, newest first (list_add at the head, as `anon_vma_chain_link`).
    pub chain: Vec<AvcId>,
    pub anon_name: AnonName,
    /// The name of a kernel-made special mapping (`[vdso]`, `[vvar]`, `[stack]` …).
    pub special: Option<Rc<str>>,
    /// `vm_userfaultfd_ctx`: the userfaultfd this VMA is registered with.
    pub uffd: Option<crate::uffd::UffdCtx>,
}

impl Vma {
    pub fn pages(&self) -> u64 {
        self.start.pages_to(self.end)
    }
    pub fn len(&self) -> u64 {
        self.end.0 - self.start.0
    }
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
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

/// `calc_vm_flag_bits` (6.18: MAP_STACK implies VM_NOHUGEPAGE).
pub fn calc_vm_flag_bits(flags: u64) -> VmFlags {
    use crate::abi::*;
    let mut f = VmFlags::empty();
    if flags & MAP_GROWSDOWN != 0 {
        f |= VmFlags::GROWSDOWN;
    }
    if flags & MAP_LOCKED != 0 {
        f |= VmFlags::LOCKED;
    }
    if flags & MAP_SYNC != 0 && flags & MAP_TYPE == MAP_SHARED_VALIDATE {
        f |= VmFlags::SYNC;
    }
    if flags & MAP_STACK != 0 {
        f |= VmFlags::NOHUGEPAGE;
    }
    f
}
