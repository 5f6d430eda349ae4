//! The scenario language: `strace -f` lines, parsed into typed calls.

use crate::errno::{Errno, Signal};
use crate::types::Pid;

/// A parsed script or trace.
#[derive(Clone, Debug, Default)]
pub struct Script {
    /// The file it came from (for error messages).
    pub path: String,
    pub steps: Vec<Step>,
    /// Calls the parser did not understand and skipped (only with `ParseOptions::skip_unknown`,
    /// for replaying real strace output): (line, call name).
    pub skipped: Vec<(usize, String)>,
}

/// One call line.
#[derive(Clone, Debug)]
pub struct Step {
    /// 1-based line number in the file.
    pub line: usize,
    pub pid: Pid,
    pub call: Call,
    /// The call as written (without pid and result), e.g. `mmap(0x200000000000, 16384, ...)`.
    pub text: String,
    /// The recorded result, when the line has one.
    pub expect: Option<Expect>,
}

/// A recorded result after `=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// `= 0`, `= 0x2000000`, `= 2`.
    Value(u64),
    /// `= -1 ENOMEM (Cannot allocate memory)`.
    Err(Errno),
    /// `= SIGSEGV`: a touch that faults with a signal.
    Signal(Signal),
    /// `= ?`: exit_group and friends.
    Unknown,
}

/// A call. Flag arguments hold the raw Linux values (see `abi`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    Mmap {
        addr: u64,
        len: u64,
        prot: u64,
        flags: u64,
        fd: i64,
        off: u64,
    },
    Munmap {
        addr: u64,
        len: u64,
    },
    Mprotect {
        addr: u64,
        len: u64,
        prot: u64,
    },
    Madvise {
        addr: u64,
        len: u64,
        advice: u64,
    },
    /// `new_addr` is the fifth argument when present (strace prints it only with FIXED/DONTUNMAP).
    Mremap {
        old_addr: u64,
        old_len: u64,
        new_len: u64,
        flags: u64,
        new_addr: u64,
    },
    Brk {
        addr: u64,
    },
    /// `fork()`, `vfork()`, or `clone(...)` without CLONE_VM/CLONE_THREAD. `vfork` is recorded
    /// for replay; the model treats the address space as fork does.
    Fork {
        vfork: bool,
    },
    /// `clone(...)` with CLONE_VM: a thread or a vfork-like child sharing the mm.
    CloneVm {
        flags: u64,
    },
    ExitGroup {
        code: i64,
    },
    Execve {
        path: String,
    },
    /// `prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, addr, len, name)`; `name` None for NULL.
    SetVmaAnonName {
        addr: u64,
        len: u64,
        name: Option<String>,
    },
    Openat {
        dirfd: i64,
        path: String,
        flags: u64,
        mode: u64,
    },
    Close {
        fd: i64,
    },
    Dup {
        fd: i64,
    },
    Dup2 {
        oldfd: i64,
        newfd: i64,
    },
    Ftruncate {
        fd: i64,
        len: u64,
    },
    /// Pseudo-call: fault every page of the range by reading or writing one byte.
    Touch {
        addr: u64,
        len: u64,
        write: bool,
    },
    /// Pseudo-call: pin every page of the range for write, long term, as io_uring's
    /// `IORING_REGISTER_BUFFERS` does (`pin_user_pages(FOLL_WRITE | FOLL_LONGTERM)`).
    Pin {
        addr: u64,
        len: u64,
    },
    /// Pseudo-call: release the pin this process took with exactly this range.
    Unpin {
        addr: u64,
        len: u64,
    },
    /// Model-only pseudo-call: start migrating every anonymous folio mapped in the range
    /// (`migrate_folio_unmap`: every mapping becomes a migration entry) and hold it in flight.
    Migrate {
        addr: u64,
        len: u64,
    },
    /// Model-only pseudo-call: finish the migrations in flight with an entry in the range
    /// (`migrate_folio_move`, `remove_migration_ptes`).
    MigrateDone {
        addr: u64,
        len: u64,
    },
    /// Pseudo-call: `ioctl(uffd, UFFDIO_REGISTER, {range, mode})` on the process's own
    /// userfaultfd (created on first use with `UFFD_FEATURE_MOVE | UFFD_FEATURE_SIGBUS`).
    UffdRegister {
        addr: u64,
        len: u64,
        mode: u64,
    },
    /// Pseudo-call: `ioctl(uffd, UFFDIO_UNREGISTER, {range})`.
    UffdUnregister {
        addr: u64,
        len: u64,
    },
    /// Pseudo-call: `ioctl(uffd, UFFDIO_MOVE, {dst, src, len, mode})`. The result is the
    /// `move` field when it is positive (bytes moved, all or part), else the error.
    UffdioMove {
        dst: u64,
        src: u64,
        len: u64,
        mode: u64,
    },
    /// A mapping the kernel made itself (at exec: the ELF image, ld.so, `[stack]`, `[vdso]`,
    /// …), as perf's mmap records show it. Not a syscall: it is installed as is, with
    /// MAP_FIXED semantics. `path` is the file (None for anonymous or a `[special]` name
    /// kept in `name`); records with the same (dev, ino) within one exec share one open file.
    MapRecord {
        addr: u64,
        len: u64,
        pgoff: u64,
        prot: u64,
        shared: bool,
        dev: u64,
        ino: u64,
        path: Option<String>,
        name: Option<String>,
    },
}

impl Call {
    /// The syscall name as strace prints it.
    pub fn name(&self) -> &'static str {
        match self {
            Call::Mmap { .. } => "mmap",
            Call::Munmap { .. } => "munmap",
            Call::Mprotect { .. } => "mprotect",
            Call::Madvise { .. } => "madvise",
            Call::Mremap { .. } => "mremap",
            Call::Brk { .. } => "brk",
            Call::Fork { vfork: false } => "fork",
            Call::Fork { vfork: true } => "vfork",
            Call::CloneVm { .. } => "clone",
            Call::ExitGroup { .. } => "exit_group",
            Call::Execve { .. } => "execve",
            Call::SetVmaAnonName { .. } => "prctl",
            Call::Openat { .. } => "openat",
            Call::Close { .. } => "close",
            Call::Dup { .. } => "dup",
            Call::Dup2 { .. } => "dup2",
            Call::Ftruncate { .. } => "ftruncate",
            Call::Touch { .. } => "touch",
            Call::Pin { .. } => "pin",
            Call::Unpin { .. } => "unpin",
            Call::Migrate { .. } => "migrate",
            Call::MigrateDone { .. } => "migrate_done",
            Call::UffdRegister { .. } => "uffd_register",
            Call::UffdUnregister { .. } => "uffd_unregister",
            Call::UffdioMove { .. } => "uffdio_move",
            Call::MapRecord { .. } => "map_record",
        }
    }
}
