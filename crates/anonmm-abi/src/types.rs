//! Address newtypes and architecture constants (x86_64, 4 KiB pages).

use std::fmt;

/// `PAGE_SHIFT`: log2 of the base page size.
pub const PAGE_SHIFT: u32 = 12;
/// `PAGE_SIZE`: 4 KiB.
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
/// `PMD_SHIFT`: log2 of the range one PMD entry maps.
pub const PMD_SHIFT: u32 = 21;
/// `PMD_SIZE`: 2 MiB, the range one PMD entry (or a PMD-mapped THP) maps.
pub const PMD_SIZE: u64 = 1 << PMD_SHIFT;
/// `PUD_SHIFT`: log2 of the range one PUD entry maps.
pub const PUD_SHIFT: u32 = 30;
/// `PUD_SIZE`: 1 GiB.
pub const PUD_SIZE: u64 = 1 << PUD_SHIFT;
/// `PTRS_PER_PTE`: PTEs in one page table (`PMD_SIZE / PAGE_SIZE`).
pub const PTRS_PER_PTE: usize = 512;
/// Order of a PMD-sized folio (2 MiB).
pub const HPAGE_PMD_ORDER: u8 = 9;
/// x86_64 four-level `TASK_SIZE` (`TASK_SIZE_MAX` with 47-bit user space).
pub const TASK_SIZE: u64 = 0x7fff_ffff_f000;
/// `DEFAULT_MAX_MAP_COUNT`, as `vm.max_map_count` on our machines.
pub const DEFAULT_MAX_MAP_COUNT: usize = 65530;

/// A user virtual address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct VirtAddr(pub u64);

/// A virtual page number (`addr >> PAGE_SHIFT`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug)]
pub struct Vpn(pub u64);

/// A page offset into a VMA's backing object (`vm_pgoff`, `folio->index`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug)]
pub struct PgOff(pub u64);

/// A process id as the script or trace names it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug)]
pub struct Pid(pub u32);

impl VirtAddr {
    /// Wrap a raw address (usable in `const` contexts).
    pub const fn new(a: u64) -> Self {
        VirtAddr(a)
    }
    /// The page containing this address.
    pub fn vpn(self) -> Vpn {
        Vpn(self.0 >> PAGE_SHIFT)
    }
    /// `PAGE_ALIGNED(addr)`.
    pub fn is_page_aligned(self) -> bool {
        self.0 & (PAGE_SIZE - 1) == 0
    }
    /// Round down to a page boundary (`addr & PAGE_MASK`).
    pub fn page_down(self) -> Self {
        VirtAddr(self.0 & !(PAGE_SIZE - 1))
    }
    /// Round down to a PMD boundary (`addr & HPAGE_PMD_MASK`).
    pub fn pmd_down(self) -> Self {
        VirtAddr(self.0 & !(PMD_SIZE - 1))
    }
    /// The address `bytes` later; panics on overflow in debug builds.
    pub fn plus(self, bytes: u64) -> Self {
        VirtAddr(self.0 + bytes)
    }
    /// The address `bytes` earlier; panics on underflow in debug builds.
    pub fn minus(self, bytes: u64) -> Self {
        VirtAddr(self.0 - bytes)
    }
    /// Pages between `self` and a later address.
    pub fn pages_to(self, end: VirtAddr) -> u64 {
        (end.0 - self.0) >> PAGE_SHIFT
    }
}

impl Vpn {
    /// The first address of the page.
    pub fn addr(self) -> VirtAddr {
        VirtAddr(self.0 << PAGE_SHIFT)
    }
}

impl PgOff {
    /// `pages` later, wrapping like the kernel's unsigned `pgoff_t` arithmetic.
    pub fn plus(self, pages: u64) -> Self {
        PgOff(self.0.wrapping_add(pages))
    }
    /// `pages` earlier, wrapping like the kernel's unsigned `pgoff_t` arithmetic.
    pub fn minus(self, pages: u64) -> Self {
        PgOff(self.0.wrapping_sub(pages))
    }
}

impl fmt::Debug for VirtAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}
impl fmt::Display for VirtAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}
impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// `PAGE_ALIGN(x)`, or None on overflow.
pub fn page_align(x: u64) -> Option<u64> {
    x.checked_add(PAGE_SIZE - 1).map(|v| v & !(PAGE_SIZE - 1))
}

/// Where the heap of a fresh address space starts (`mm->start_brk`, the initial break):
/// inside the window of addresses scripts use, so that the kernel oracle, which moves its
/// worker's break there (`PR_SET_MM_MAP`), can compare brk and the heap VMA. A real program's
/// break lies just past its data segment; replay takes it from the trace's first `brk(NULL)`.
pub const DEFAULT_START_BRK: u64 = 0x2000_0300_0000;
