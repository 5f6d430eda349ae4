//! Address newtypes and architecture constants (x86_64, 4 KiB pages).

use std::fmt;

pub const PAGE_SHIFT: u32 = 12;
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
pub const PMD_SHIFT: u32 = 21;
pub const PMD_SIZE: u64 = 1 << PMD_SHIFT;
pub const PUD_SHIFT: u32 = 30;
pub const PUD_SIZE: u64 = 1 << PUD_SHIFT;
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
    pub const fn new(a: u64) -> Self {
        VirtAddr(a)
    }
    pub fn vpn(self) -> Vpn {
        Vpn(self.0 >> PAGE_SHIFT)
    }
    pub fn is_page_aligned(self) -> bool {
        self.0 & (PAGE_SIZE - 1) == 0
    }
    pub fn page_down(self) -> Self {
        VirtAddr(self.0 & !(PAGE_SIZE - 1))
    }
    pub fn pmd_down(self) -> Self {
        VirtAddr(self.0 & !(PMD_SIZE - 1))
    }
    pub fn plus(self, bytes: u64) -> Self {
        VirtAddr(self.0 + bytes)
    }
    pub fn minus(self, bytes: u64) -> Self {
        VirtAddr(self.0 - bytes)
    }
    /// Pages between `self` and a later address.
    pub fn pages_to(self, end: VirtAddr) -> u64 {
        (end.0 - self.0) >> PAGE_SHIFT
    }
}

impl Vpn {
    pub fn addr(self) -> VirtAddr {
        VirtAddr(self.0 << PAGE_SHIFT)
    }
}

impl PgOff {
    pub fn plus(self, pages: u64) -> Self {
        PgOff(self.0.wrapping_add(pages))
    }
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
