//! anonmm: an executable model of Linux 6.18 anonymous memory management.
//!
//! The layout follows the kernel: one module per concept (VMAs, merging, page tables, folios,
//! the anon_vma reverse map, faults, fork, mmap/munmap/mprotect/madvise, mremap), then the
//! script language, the runner, the invariant checker and the kernel oracle around it.

pub mod abi;
pub mod arena;
pub mod bench;
pub mod check;
pub mod errno;
pub mod fault;
pub mod folio;
pub mod fork;
pub mod fs;
pub mod r#gen;
pub mod graph;
pub mod gup;
pub mod huge_memory;
pub mod import;
pub mod khugepaged;
pub mod madvise;
pub mod memory;
pub mod merge;
pub mod migrate;
pub mod mm;
pub mod mmap;
pub mod mprotect;
pub mod mremap;
pub mod pagetable;
pub mod plot;
pub mod policy;
pub mod procfs;
pub mod record;
pub mod refmodel;
pub mod relocate;
pub mod replay;
pub mod report;
pub mod rmap;
pub mod run;
pub mod script;
pub mod smaps;
pub mod snapshot;
pub mod stats;
pub mod swap;
pub mod types;
pub mod uffd;
pub mod vma;
pub mod workload;

#[cfg(target_os = "linux")]
pub mod oracle;
