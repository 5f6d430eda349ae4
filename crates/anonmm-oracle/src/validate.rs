//! What the oracle refuses before running anything.

use crate::abi::{MAP_FIXED, MAP_FIXED_NOREPLACE, MREMAP_FIXED};
use crate::script::{Call, Script, Step};

use super::worker::BUF_LEN;
use super::{OracleError, WINDOW_END, WINDOW_START};

fn refuse(step: &Step, reason: impl Into<String>) -> OracleError {
    OracleError::Refused { line: step.line, reason: reason.into() }
}

/// `[addr, addr + len)` must lie in the window.
fn in_window(step: &Step, what: &str, addr: u64, len: u64) -> Result<(), OracleError> {
    let ok = addr >= WINDOW_START && addr.checked_add(len).is_some_and(|end| end <= WINDOW_END);
    if ok {
        Ok(())
    } else {
        Err(refuse(
            step,
            format!("{what} [{addr:#x}, +{len:#x}) leaves the window [{WINDOW_START:#x}, {WINDOW_END:#x})"),
        ))
    }
}

fn string_arg(step: &Step, s: &str) -> Result<(), OracleError> {
    if s.len() >= BUF_LEN || s.contains('\0') {
        return Err(refuse(step, format!("string argument too long or with NUL: {s:?}")));
    }
    Ok(())
}

/// Check every step before running anything.
pub(crate) fn validate(script: &Script) -> Result<(), OracleError> {
    for step in &script.steps {
        match &step.call {
            Call::Mmap { addr, len, flags, .. } => {
                if *addr == 0 && flags & (MAP_FIXED | MAP_FIXED_NOREPLACE) == 0 {
                    return Err(refuse(
                        step,
                        "NULL-hint mmap cannot be compared: the kernel places it near mmap_base, \
                         outside the window",
                    ));
                }
                in_window(step, "mmap range", *addr, *len)?;
            }
            Call::Munmap { addr, len }
            | Call::Mprotect { addr, len, .. }
            | Call::Madvise { addr, len, .. }
            | Call::Touch { addr, len, .. }
            | Call::Pin { addr, len }
            | Call::Unpin { addr, len }
            | Call::UffdRegister { addr, len, .. }
            | Call::UffdUnregister { addr, len }
            | Call::Mlock { addr, len, .. }
            | Call::Munlock { addr, len } => in_window(step, "range", *addr, *len)?,
            // They lock or unlock the worker's own VMAs outside the window too, which is not
            // compared; its code and stack are small, and it maps nothing after starting.
            Call::Mlockall { .. } | Call::Munlockall => {}
            Call::UffdioMove { dst, src, len, .. } => {
                in_window(step, "destination", *dst, *len)?;
                in_window(step, "source", *src, *len)?;
            }
            Call::SetVmaAnonName { addr, len, name } => {
                in_window(step, "range", *addr, *len)?;
                if let Some(n) = name {
                    string_arg(step, n)?;
                }
            }
            Call::Mremap { old_addr, old_len, new_len, flags, new_addr } => {
                in_window(step, "old range", *old_addr, *old_len)?;
                if flags & MREMAP_FIXED != 0 {
                    in_window(step, "new range", *new_addr, *new_len)?;
                } else {
                    in_window(step, "grown range", *old_addr, *new_len)?;
                }
            }
            // Below the window the kernel only answers the current break (it is below
            // `start_brk`); beyond it the heap would leave the window.
            Call::Brk { addr } => {
                if *addr > WINDOW_END {
                    return Err(refuse(
                        step,
                        format!("brk({addr:#x}) would grow the heap out of the window"),
                    ));
                }
            }
            Call::MapRecord(..) => {
                return Err(refuse(
                    step,
                    "map_record is a kernel-made mapping from a trace: it cannot be replayed natively",
                ));
            }
            Call::VmaRecord(..) => {
                return Err(refuse(
                    step,
                    "vma_record is a trace's record of the kernel's VMA: a check of the model",
                ));
            }
            Call::Migrate { .. } | Call::MigrateDone { .. } => {
                return Err(refuse(
                    step,
                    "migrate and migrate_done are model-only: user space cannot hold a \
                     migration in flight on the kernel",
                ));
            }
            Call::Openat { path, .. } => string_arg(step, path)?,
            Call::Fork { .. }
            | Call::Execve { .. }
            | Call::CloneVm { .. }
            | Call::ExitGroup { .. }
            | Call::Close { .. }
            | Call::Dup { .. }
            | Call::Dup2 { .. }
            | Call::Ftruncate { .. } => {}
        }
    }
    Ok(())
}
