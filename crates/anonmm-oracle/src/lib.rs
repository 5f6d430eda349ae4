//! The kernel oracle: runs a script natively on the running Linux kernel and reports, after
//! every step, what the model reports (`StepView`), so that the two can be compared.
//!
//! Interface:
//! - [`run_native`]`(script) -> Result<Vec<StepView>, OracleError>`
//! - [`available`]`() -> Result<(), String>`: can the oracle run here (Linux x86_64, root,
//!   pagemap PFNs readable)?
//! - [`cmd_run`], [`cmd_diff`], [`cmd_fuzz`] (`cmd_fuzz(cases, seed, steps, out, keep_going,
//!   compared, kernel)`): the CLI commands (`anonmm oracle run|diff|fuzz`); `smaps` also
//!   reads and compares `/proc/PID/smaps` (see `crate::smaps`); `internal` loads the
//!   `anonmm_inspect` module in the VM and compares the kernel's anon_vmas, pgoffs and
//!   folios ([`kmod`], docs/internal.md).
//!
//! # How it runs
//! The controller (the calling process) forks process 1 before anything is mapped in the
//! window `[0x1000_0000_0000, 0x5000_0000_0000)`; every script process is a real,
//! single-threaded worker process that receives calls over a socket and runs them with raw
//! `syscall(2)`; it allocates nothing. A script `fork` is a real `fork()` in the worker. All
//! workers `chdir` into a fresh temp directory, so relative script paths create files there.
//! Script pids are mapped to real pids; a fork's child gets the pid from the step's recorded
//! result (`= N`), else the largest pid so far + 1.
//!
//! # What a step reports
//! After every step, for every live process in pid order:
//! - `maps`: the `/proc/PID/maps` lines that intersect the window, as the kernel prints
//!   them, except for file identity (the model has no devices or inode numbers):
//!   - a regular file mapping prints device `00:00`, inode = the file's number in
//!     first-open order (1, 2, …: the first successful script `openat` of each file), and
//!     the path as that `openat` wrote it;
//!   - a shared anonymous mapping (`/dev/zero (deleted)`, `[anon_shmem:NAME]`) prints
//!     device `00:01` and inode = the shmem object's number in creation order (1, 2, …, a
//!     counter separate from files; an object is numbered when a snapshot first shows it,
//!     which is right after the mmap that created it);
//!   - the name starts at column 74 as the kernel pads it (prefix padded to 72 characters,
//!     then one space); unnamed lines keep the kernel's trailing space.
//! - `ptes`: `/proc/PID/pagemap` (one `pread` per VMA): present pages as
//!   `RawPage::Id(pfn)`, or `RawPage::Zero` for the zero page's PFN (found at startup);
//!   swap entries as `RawPage::Swap` (tag 0: reading would swap in); guard markers
//!   (`PM_GUARD_REGION`) as `RawPage::Guard`. `exclusive` is bit 56 (`PM_MMAP_EXCLUSIVE`). Pages of the
//!   huge zero folio are ordinary `Id`s (one per subpage).
//! - `tag`: the u64 at offset 0 of each present page (0 for the zero page), read without
//!   faulting anything: by the worker itself for pages of accessible VMAs (up to 4096 pages
//!   per request, named by a bitmap of present pages), and through `/proc/PID/mem` for
//!   `PROT_NONE` VMAs (`FOLL_FORCE` without pinning: neither faults nor unshares a present
//!   page; `process_vm_readv` would pin, which unshares shared anonymous pages).
//!
//! # touch
//! Observed, not predicted: the worker really touches the pages in address order (one u64
//! at offset 0 of each, read, or written with `snapshot::touch_tag(line, page)`) through a
//! probe instruction whose SIGSEGV/SIGBUS its signal handler catches (an exception table:
//! the handler resumes after the probe with the signal number). The first page that faults
//! ends the touch with its signal; the pages before it stay touched. Whatever the kernel did
//! on the way to the signal (stack growth, fault-around, anon_vma preparation) is in the
//! next snapshot. The model's `touch` has the same semantics.
//!
//! # brk
//! Process 1 moves its break into the window with `prctl(PR_SET_MM, PR_SET_MM_MAP)` at
//! `mm::DEFAULT_START_BRK`, where the model's heap starts, before it serves calls; the
//! worker never allocates, so its inherited malloc heap is never used again. Script `brk`
//! calls run on the kernel and the heap VMA is compared. If the prctl fails, brk is refused.
//!
//! # vfork and execve
//! A script `vfork` is a real `clone(CLONE_VM | CLONE_VFORK | SIGCHLD)` in the worker (on a
//! stack of its own): the parent sleeps in the kernel and answers only when the child has
//! exited or exec'd; meanwhile the child reads the shared pages for the snapshot. A script
//! `execve` execs the worker's own binary, which becomes a worker again before `main` (a
//! constructor) on the same channel; its own mappings lie outside the window.
//!
//! # Swap and pins
//! A script with MADV_PAGEOUT runs with a swap file enabled (see `swapfile`; refused if
//! `swapon` fails) and its processes kept on one CPU. `pin(addr, len)` registers the range as
//! the one fixed buffer of a new io_uring (`IORING_REGISTER_BUFFERS`, which pins with
//! `FOLL_WRITE | FOLL_LONGTERM`); `unpin` unregisters and closes that ring. A forked worker
//! closes its copies of its parent's rings, so pins stay with the process that took them.
//!
//! # Refused
//! - addresses outside the window (every address argument, checked before running), a
//!   NULL-hint mmap, and at run time an mmap/mremap the kernel placed outside the window
//!   (a taken hint, or a MREMAP_MAYMOVE move): they cannot be compared with the model;
//! - `brk` past the window's end; `clone` with the flags the model refuses
//!   (`fork::clone_not_modelled`);
//! - more than 256 processes.
//!
//! Background kernel activity (khugepaged, compaction, reclaim) can in principle change
//! PFNs or sharing between steps; page names are only compared within one step.

#![warn(missing_docs)]

mod cli;
mod controller;
mod fuzz;
mod guest;
pub mod kmod;
mod maps;
mod pages;
mod probe;
mod swapfile;
mod validate;
pub mod vm;
mod worker;

#[cfg(test)]
mod tests;

// The lower layers' modules, under the paths the files use (`crate::mm::System`).
use anonmm_abi::{abi, errno, types};
use anonmm_harness::{compare, internal, run, snapshot};
use anonmm_model::{fork, kernel, mm, policy, smaps};
use anonmm_script as script;
use anonmm_script::{r#gen, out, outln};

use crate::script::{Call, Expect, Script};
use crate::snapshot::{StepView, rename};
use crate::types::Pid;

pub use cli::{cmd_diff, cmd_run, graph_from_oracle};
pub use fuzz::{Compared, Verdict, cmd_fuzz, compare, compare_on, compare_with};
pub use guest::cmd_guest;
pub use vm::Target;

/// The part of the address space scripts may use.
pub const WINDOW_START: u64 = 0x1000_0000_0000;
/// End of that part (exclusive).
pub const WINDOW_END: u64 = 0x5000_0000_0000;

/// Why the oracle could not run a script (or the rest of it).
#[derive(Debug, thiserror::Error)]
pub enum OracleError {
    /// The oracle cannot run on this machine.
    #[error("kernel oracle unavailable: {0}")]
    Unavailable(String),
    /// The script asks for something the oracle cannot run or compare.
    #[error("line {line}: refused by the kernel oracle: {reason}")]
    Refused {
        /// The step's 1-based script line.
        line: usize,
        /// Why it was refused.
        reason: String,
    },
    /// The script is inconsistent (e.g. a call by a process that does not exist).
    #[error("line {line}: {reason}")]
    BadInput {
        /// The step's 1-based script line.
        line: usize,
        /// What is inconsistent.
        reason: String,
    },
    /// A worker died or stopped answering.
    #[error("line {line}: worker process failed: {reason}")]
    WorkerDied {
        /// The step's 1-based script line.
        line: usize,
        /// How the worker failed.
        reason: String,
    },
    /// A system call of the controller failed.
    #[error("kernel oracle: {0}")]
    System(String),
}

impl OracleError {
    pub(crate) fn sys(what: &str, e: std::io::Error) -> OracleError {
        OracleError::System(format!("{what}: {e}"))
    }
}

/// Can the oracle run here? `Err` says why not, in one line.
pub fn available() -> Result<(), String> {
    probe::probe().map(|_| ())
}

/// One step as run on the kernel: the outcome and the view.
pub(crate) struct NativeStep {
    pub got: Expect,
    pub view: StepView,
}

pub(crate) fn run_native_steps(script: &Script, smaps: bool) -> Result<Vec<NativeStep>, OracleError> {
    match run_native_prefix(script, smaps)? {
        (steps, None) => Ok(steps),
        (_, Some(e)) => Err(e),
    }
}

/// Run a script natively; a step the kernel executed in a way that cannot be compared
/// (say, it placed a mapping outside the window) stops the run, and the steps before it
/// are returned with the reason.
/// With `smaps`, every step also reads `/proc/PID/smaps` of the window's VMAs.
pub(crate) fn run_native_prefix(
    script: &Script,
    smaps: bool,
) -> Result<(Vec<NativeStep>, Option<OracleError>), OracleError> {
    validate::validate(script)?;
    let probe = probe::probe().map_err(OracleError::Unavailable)?;
    let first = script.steps.first().map_or(Pid(1), |s| s.pid);
    let forks = script.steps.iter().filter(|s| s.call.makes_task()).count();
    let pageout =
        script.steps.iter().any(|s| matches!(s.call, Call::Madvise { advice: crate::abi::MADV_PAGEOUT, .. }));
    // Declared before the controller, so dropped after its workers are gone.
    let _swap = if pageout { Some(swapfile::SwapGuard::acquire()?) } else { None };
    let mut c = controller::Controller::start(first, forks + 1, probe)?;
    c.smaps = smaps;
    if pageout && let Some(real) = c.real_pid(first) {
        swapfile::pin_to_current_cpu(real);
    }
    let mut max_pid = first;
    let mut out = Vec::with_capacity(script.steps.len());
    for step in &script.steps {
        let child = match step.expect {
            Some(Expect::Value(n)) if n > 0 && n <= u32::MAX as u64 => Pid(n as u32),
            _ => Pid(max_pid.0.saturating_add(1)),
        };
        let got = match c.step(step, child) {
            Ok(g) => g,
            Err(e @ OracleError::Refused { .. }) => return Ok((out, Some(e))),
            Err(e) => return Err(e),
        };
        if let (true, Expect::Value(_)) = (step.call.makes_task(), got) {
            max_pid = max_pid.max(child);
        }
        let procs = rename(c.snapshot()?);
        let view = StepView {
            line: step.line,
            pid: step.pid,
            call: step.call_text().into_owned(),
            result: format_outcome(&step.call, &got),
            procs,
        };
        out.push(NativeStep { got, view });
    }
    Ok((out, None))
}

/// Run `script` on the running kernel; one view per step.
pub fn run_native(script: &Script) -> Result<Vec<StepView>, OracleError> {
    Ok(run_native_steps(script, false)?.into_iter().map(|s| s.view).collect())
}

/// strace's spelling of an outcome, with the leading `= ` (as the model's runner reports it).
pub(crate) fn format_outcome(call: &Call, e: &Expect) -> String {
    crate::script::parse::format_result_for(call, e)
}
