//! anonmm: an executable model of Linux 6.18 anonymous memory management.
//!
//! The layout follows the kernel: one module per concept (VMAs, merging, page tables, folios,
//! the anon_vma reverse map, faults, fork, mmap/munmap/mprotect/madvise, mremap), then the
//! script language, the runner, the invariant checker and the kernel oracle around it.

pub mod abi;
pub mod errno;
pub mod import;
pub mod run;
pub mod script;
pub mod snapshot;
pub mod types;

#[cfg(target_os = "linux")]
pub mod oracle;
