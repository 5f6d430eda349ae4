//! anonmm: an executable model of Linux 6.18 anonymous memory management, and the `anonmm`
//! command line around it.
//!
//! The work is done by the layer crates (ARCHITECTURE.md); this library re-exports them
//! under the paths the project has always used (`anonmm::mm::System`, `anonmm::run`, ...),
//! and holds what only the binary needs: [`bench`](mod@bench), [`plot`] and [`record`]. A program that
//! only drives the model depends on `anonmm-model` alone (its crate documentation shows how).

#![warn(missing_docs)]

pub mod bench;
pub mod plot;
pub mod record;

pub use anonmm_abi::{abi, errno, types};
pub use anonmm_harness::{explain, internal, kernel_compare, refmodel, report, run, snapshot, workload};
pub use anonmm_import as import;
pub use anonmm_model::{
    api, arena, check, fault, folio, fork, fs, gup, huge_memory, inspect, kernel, khugepaged, madvise,
    memory, merge, migrate, mm, mmap, mprotect, mremap, pagetable, procfs, relocate, rmap, smaps, stats,
    swap, uffd, vma, vma_tree,
};
#[cfg(target_os = "linux")]
pub use anonmm_oracle as oracle;
pub use anonmm_script as script;
pub use anonmm_script::{r#gen, out, outln};

/// The policies (`anonmm_model::policy`) and `anonmm compare` (`anonmm_harness::compare`,
/// its table `anonmm_harness::report::render_rows`).
pub mod policy {
    pub use anonmm_harness::compare::*;
    pub use anonmm_harness::report::render_rows;
    pub use anonmm_model::policy::*;
}

/// The reverse-map graph (`anonmm_model::graph`) and `anonmm graph` (`anonmm_harness::graph`).
pub mod graph {
    pub use anonmm_harness::graph::*;
    pub use anonmm_model::graph::*;
}

/// Replay mode (`anonmm_harness::replay`) and replaying traces (`anonmm_harness::replayer`).
pub mod replay {
    pub use anonmm_harness::replay::*;
    pub use anonmm_harness::replayer::*;
}
