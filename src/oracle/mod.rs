//! The kernel oracle.
//!
//! Interface (implemented in this module):
//! - `pub fn run_native(script: &Script) -> Result<Vec<StepView>, OracleError>`
//! - `pub fn cmd_run(path: &Path, json: bool) -> i32`, `pub fn cmd_diff(path: &Path) -> i32`
//! - `pub fn cmd_fuzz(cases: u64, seed: Option<u64>, steps: usize, out: &Path) -> i32`
//!
//! Until the oracle lands, the `cmd_*` entry points below are stubs so that the CLI builds.

use std::path::Path;

fn not_built() -> i32 {
    eprintln!("oracle: not built yet");
    2
}

pub fn cmd_run(_path: &Path, _json: bool) -> i32 {
    not_built()
}

pub fn cmd_diff(_path: &Path) -> i32 {
    not_built()
}

pub fn cmd_fuzz(_cases: u64, _seed: Option<u64>, _steps: usize, _out: &Path) -> i32 {
    not_built()
}
