//! anonmm's harness: what drives the model. The script runner ([`run`]), trace replay
//! ([`replay`]), the reference model of memory contents the runner checks the model against
//! ([`refmodel`]), the per-step views shared with the kernel oracle ([`snapshot`]), reports
//! and statistics ([`report`]), the policy and kernel comparisons ([`compare`],
//! [`kernel_compare`]), `explain`, `graph` and the synthetic workloads ([`workload`]).
//!
//! The model (`anonmm-model`) does not know this crate: the harness calls the model's system
//! calls and reads its state, never the other way round (ARCHITECTURE.md).

#![warn(missing_docs)]

pub mod compare;
pub mod explain;
pub mod graph;
pub mod internal;
pub mod kernel_compare;
pub mod refmodel;
pub mod replay;
pub mod replayer;
pub mod report;
pub mod run;
pub mod snapshot;
pub mod workload;

// The lower layers' modules, under the paths the files use (`crate::mm::System`).
use anonmm_abi::{abi, errno, types};
use anonmm_import as import;
use anonmm_model::{fault, fs, inspect, kernel, mm, mmap, policy, rmap, smaps, stats, vma};
use anonmm_script as script;
use anonmm_script::{r#gen, out};
