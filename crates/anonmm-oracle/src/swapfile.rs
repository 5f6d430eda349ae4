//! A swap device for scripts that page out (MADV_PAGEOUT): without one the kernel leaves
//! anonymous memory in place, while the model's default machine has swap.
//!
//! One 2 GiB swap file, `/var/tmp/anonmm-oracle.swap` (the model's `DEFAULT_SWAP_PAGES`
//! slots), shared by every oracle run on the machine that needs it: a run holds a shared
//! `flock` on `/var/tmp/anonmm-oracle.swap.lock` while its workers live; whoever finds the
//! lock free afterwards (an exclusive lock taken without waiting) runs `swapoff` and removes
//! the file. A run never sees its swap taken away under it: `swapoff` would swap its pages
//! back in. Creating the device takes the exclusive lock: `fallocate`, `mkswap`, `swapon`.
//!
//! The VM guest (`anonmm oracle vm-guest`) instead enables the device once at boot and keeps
//! it ([`hold_for_session`]): it is alone on its machine, so no other run needs the space, and
//! under TCG the per-script `mkswap`, `swapon` and `swapoff` cost about a second a script.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::process::Command;

use super::OracleError;

const SWAP_PATH: &str = "/var/tmp/anonmm-oracle.swap";
const LOCK_PATH: &str = "/var/tmp/anonmm-oracle.swap.lock";
const SWAP_BYTES: u64 = 2 << 30;

/// Holds the swap device for one run; dropping it tears the device down if no other run
/// holds it.
pub(crate) struct SwapGuard {
    /// The shared lock; `None` for the session's device ([`hold_for_session`]), which stays.
    lock: Option<File>,
}

/// The device [`hold_for_session`] keeps until the process exits.
static SESSION: std::sync::Mutex<Option<SwapGuard>> = std::sync::Mutex::new(None);

/// Enable the swap device now and keep it until the process exits (the VM guest): every
/// script of the boot then runs with swap, as the model's machine has
/// (`Config::swap_pages`), and a script with MADV_PAGEOUT finds it ready.
pub(crate) fn hold_for_session() -> Result<(), OracleError> {
    let guard = SwapGuard::acquire()?;
    *SESSION.lock().unwrap_or_else(|e| e.into_inner()) = Some(guard);
    Ok(())
}

fn flock(f: &File, op: i32) -> bool {
    // SAFETY: flock on a descriptor we own.
    unsafe { libc::flock(f.as_raw_fd(), op) == 0 }
}

fn active() -> bool {
    std::fs::read_to_string("/proc/swaps").is_ok_and(|s| s.lines().any(|l| l.starts_with(SWAP_PATH)))
}

fn c_path() -> CString {
    CString::new(SWAP_PATH).unwrap_or_default()
}

fn refuse(reason: String) -> OracleError {
    OracleError::Refused { line: 0, reason: format!("cannot enable swap for MADV_PAGEOUT: {reason}") }
}

/// Create and enable the swap file (under the exclusive lock).
fn enable() -> Result<(), OracleError> {
    let _ = std::fs::remove_file(SWAP_PATH);
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(SWAP_PATH)
        .map_err(|e| refuse(format!("creating {SWAP_PATH}: {e}")))?;
    // SAFETY: fallocate on a descriptor we own.
    if unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, SWAP_BYTES as libc::off_t) } != 0 {
        return Err(refuse(format!("fallocate: {}", std::io::Error::last_os_error())));
    }
    // SAFETY: as above.
    unsafe { libc::fchmod(f.as_raw_fd(), 0o600) };
    drop(f);
    let out =
        Command::new("mkswap").arg(SWAP_PATH).output().map_err(|e| refuse(format!("running mkswap: {e}")))?;
    if !out.status.success() {
        return Err(refuse(format!("mkswap: {}", String::from_utf8_lossy(&out.stderr).trim())));
    }
    let p = c_path();
    // SAFETY: a NUL-terminated path.
    if unsafe { libc::swapon(p.as_ptr(), 0) } != 0 {
        let e = std::io::Error::last_os_error();
        let _ = std::fs::remove_file(SWAP_PATH);
        return Err(refuse(format!("swapon {SWAP_PATH}: {e}")));
    }
    Ok(())
}

impl SwapGuard {
    pub(crate) fn acquire() -> Result<SwapGuard, OracleError> {
        if SESSION.lock().unwrap_or_else(|e| e.into_inner()).is_some() && active() {
            return Ok(SwapGuard { lock: None });
        }
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK_PATH)
            .map_err(|e| refuse(format!("opening {LOCK_PATH}: {e}")))?;
        for _ in 0..100 {
            if !flock(&lock, libc::LOCK_EX) {
                return Err(refuse(format!("flock: {}", std::io::Error::last_os_error())));
            }
            if !active() {
                enable()?;
            }
            // Converting to shared is not atomic: check again that nobody tore it down.
            if !flock(&lock, libc::LOCK_SH) {
                return Err(refuse(format!("flock: {}", std::io::Error::last_os_error())));
            }
            if active() {
                return Ok(SwapGuard { lock: Some(lock) });
            }
            flock(&lock, libc::LOCK_UN);
        }
        Err(refuse("the swap file kept disappearing".into()))
    }
}

impl Drop for SwapGuard {
    fn drop(&mut self) {
        let Some(lock) = &self.lock else { return };
        flock(lock, libc::LOCK_UN);
        if flock(lock, libc::LOCK_EX | libc::LOCK_NB) {
            if active() {
                let p = c_path();
                // SAFETY: a NUL-terminated path.
                unsafe { libc::swapoff(p.as_ptr()) };
            }
            if !active() {
                let _ = std::fs::remove_file(SWAP_PATH);
            }
            flock(lock, libc::LOCK_UN);
        }
    }
}

/// Keep every process of a run on one CPU (`sched_setaffinity` of process 1, inherited by
/// its forks): new folios wait in the per-CPU LRU batch until drained, and MADV_PAGEOUT drains
/// only its own CPU's (`lru_add_drain`), skipping folios not on the LRU yet.
pub(crate) fn pin_to_current_cpu(pid: i32) {
    // SAFETY: sched_getcpu has no preconditions; the set is a plain value.
    unsafe {
        let cpu = libc::sched_getcpu();
        if cpu < 0 {
            return;
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}
