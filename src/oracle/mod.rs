//! The kernel oracle.
//!
//! Interface (implemented in this module):
//! - `pub fn run_native(script: &Script) -> Result<Vec<StepView>, OracleError>`
//! - `pub fn cmd_run(path: &Path, json: bool) -> i32`, `pub fn cmd_diff(path: &Path) -> i32`
