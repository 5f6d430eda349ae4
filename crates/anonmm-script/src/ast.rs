//! The scenario language: `strace -f` lines, parsed into typed calls.

use crate::errno::{Errno, Signal};
use crate::types::Pid;

/// A parsed script or trace.
#[derive(Clone, Debug, Default)]
pub struct Script {
    /// The file it came from (for error messages).
    pub path: String,
    /// The call lines, in file order (the order they are run in).
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
    /// The process that makes the call: strace -f's leading pid column.
    pub pid: Pid,
    /// What is called, with its arguments.
    pub call: Call,
    /// The call as written (without pid and result), e.g. `mmap(0x200000000000, 16384, ...)`;
    /// empty when the step was made rather than read (imported page faults, which are most
    /// of a trace, and every step of a streamed import): [`Step::call_text`] formats it then.
    pub text: String,
    /// The recorded result, when the line has one.
    pub expect: Option<Expect>,
}

impl Step {
    /// The call as written, or formatted from [`Step::call`] when the step has no text.
    pub fn call_text(&self) -> std::borrow::Cow<'_, str> {
        if self.text.is_empty() {
            std::borrow::Cow::Owned(crate::format_call(&self.call))
        } else {
            std::borrow::Cow::Borrowed(&self.text)
        }
    }
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
    /// mmap(2): `mmap(addr, len, prot, flags, fd, off)`.
    Mmap {
        /// The hint, or the exact address with MAP_FIXED.
        addr: u64,
        /// Length in bytes (rounded up to pages by the kernel).
        len: u64,
        /// `PROT_*` bits.
        prot: u64,
        /// `MAP_*` bits, mapping type included.
        flags: u64,
        /// The file, or -1 (ignored with MAP_ANONYMOUS).
        fd: i64,
        /// Byte offset into the file; must be page aligned.
        off: u64,
    },
    /// munmap(2).
    Munmap {
        /// Start (page aligned).
        addr: u64,
        /// Length in bytes.
        len: u64,
    },
    /// mprotect(2); `pkey_mprotect` parses to this too (the model ignores the key).
    Mprotect {
        /// Start (page aligned).
        addr: u64,
        /// Length in bytes.
        len: u64,
        /// `PROT_*` bits, possibly with PROT_GROWSDOWN / PROT_GROWSUP.
        prot: u64,
    },
    /// mlock(2) (`flags` None) or mlock2(2) (`MLOCK_ONFAULT`).
    Mlock {
        /// Start (rounded down to a page).
        addr: u64,
        /// Length in bytes.
        len: u64,
        /// mlock2's flags; None for mlock.
        flags: Option<u64>,
    },
    /// munlock(2).
    Munlock {
        /// Start (rounded down to a page).
        addr: u64,
        /// Length in bytes.
        len: u64,
    },
    /// mlockall(2).
    Mlockall {
        /// `MCL_*` bits.
        flags: u64,
    },
    /// munlockall(2).
    Munlockall,
    /// madvise(2).
    Madvise {
        /// Start (page aligned).
        addr: u64,
        /// Length in bytes.
        len: u64,
        /// A `MADV_*` value.
        advice: u64,
    },
    /// mremap(2). `new_addr` is the fifth argument when present (strace prints it only with
    /// FIXED/DONTUNMAP).
    Mremap {
        /// Start of the range to resize or move (page aligned).
        old_addr: u64,
        /// Its length in bytes; 0 with a shared mapping asks for a duplicate.
        old_len: u64,
        /// The new length in bytes.
        new_len: u64,
        /// `MREMAP_*` bits.
        flags: u64,
        /// The destination with MREMAP_FIXED; 0 when the line has no fifth argument.
        new_addr: u64,
    },
    /// brk(2); the result is the new (or, on failure, the old) program break.
    Brk {
        /// The requested break; 0 (`brk(NULL)`) only queries it.
        addr: u64,
    },
    /// `fork()`, `vfork()`, or `clone(...)` without CLONE_VM/CLONE_THREAD. `vfork` is recorded
    /// for replay; the model treats the address space as fork does.
    Fork {
        /// Written as `vfork()` or a `clone` with CLONE_VM|CLONE_VFORK.
        vfork: bool,
    },
    /// `clone(...)` with CLONE_VM: a thread or a vfork-like child sharing the mm.
    CloneVm {
        /// The `CLONE_*` bits and exit signal, as parsed.
        flags: u64,
    },
    /// `exit_group(code)` (or `exit`): the process and its mm go away; the result is `?`.
    ExitGroup {
        /// The exit status.
        code: i64,
    },
    /// `execve(path, ...)`: the process gets a fresh, empty mm (the old one is released);
    /// in an imported trace the kernel's own exec mappings follow as [`Call::MapRecord`]s.
    Execve {
        /// The program; recorded for printing, the model does not read it.
        path: String,
    },
    /// `prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, addr, len, name)`; `name` None for NULL.
    SetVmaAnonName {
        /// Start (page aligned).
        addr: u64,
        /// Length in bytes.
        len: u64,
        /// The new name; None (NULL) clears it.
        name: Option<String>,
    },
    /// `openat(dirfd, path, flags[, mode])`; `open(path, flags[, mode])` parses to this
    /// with `dirfd` = `AT_FDCWD`. The result is the new fd.
    Openat {
        /// The directory fd, usually `AT_FDCWD`; the model resolves every path alike.
        dirfd: i64,
        /// The file name, the key of the model's flat file namespace.
        path: String,
        /// `O_*` bits.
        flags: u64,
        /// Creation mode (printed in octal); recorded, but the model has no permissions.
        mode: u64,
    },
    /// close(2).
    Close {
        /// The fd to close.
        fd: i64,
    },
    /// dup(2): the result is the new fd, sharing the open file.
    Dup {
        /// The fd to duplicate.
        fd: i64,
    },
    /// dup2(2).
    Dup2 {
        /// The fd to duplicate.
        oldfd: i64,
        /// The fd number to give it (closed first if open).
        newfd: i64,
    },
    /// ftruncate(2): resize the file; pages beyond the new EOF raise SIGBUS on touch.
    Ftruncate {
        /// An fd open for writing.
        fd: i64,
        /// The new size in bytes.
        len: u64,
    },
    /// Pseudo-call: fault every page of the range by reading or writing one byte.
    Touch {
        /// First byte.
        addr: u64,
        /// Length in bytes; every page it overlaps is touched.
        len: u64,
        /// Write (`"w"`) rather than read (`"r"`).
        write: bool,
    },
    /// Pseudo-call: pin every page of the range for write, long term, as io_uring's
    /// `IORING_REGISTER_BUFFERS` does (`pin_user_pages(FOLL_WRITE | FOLL_LONGTERM)`).
    Pin {
        /// Start of the range.
        addr: u64,
        /// Length in bytes.
        len: u64,
    },
    /// Pseudo-call: release the pin this process took with exactly this range.
    Unpin {
        /// Start, as given to the `pin`.
        addr: u64,
        /// Length, as given to the `pin`.
        len: u64,
    },
    /// Model-only pseudo-call: start migrating every anonymous folio mapped in the range
    /// (`migrate_folio_unmap`: every mapping becomes a migration entry) and hold it in flight.
    Migrate {
        /// Start of the range.
        addr: u64,
        /// Length in bytes.
        len: u64,
    },
    /// Model-only pseudo-call: finish the migrations in flight with an entry in the range
    /// (`migrate_folio_move`, `remove_migration_ptes`).
    MigrateDone {
        /// Start of the range.
        addr: u64,
        /// Length in bytes.
        len: u64,
    },
    /// Pseudo-call: `ioctl(uffd, UFFDIO_REGISTER, {range, mode})` on the process's own
    /// userfaultfd (created on first use with `UFFD_FEATURE_MOVE | UFFD_FEATURE_SIGBUS`).
    UffdRegister {
        /// `uffdio_register.range.start`.
        addr: u64,
        /// `uffdio_register.range.len`.
        len: u64,
        /// `UFFDIO_REGISTER_MODE_*` bits.
        mode: u64,
    },
    /// Pseudo-call: `ioctl(uffd, UFFDIO_UNREGISTER, {range})`.
    UffdUnregister {
        /// `uffdio_range.start`.
        addr: u64,
        /// `uffdio_range.len`.
        len: u64,
    },
    /// Pseudo-call: `ioctl(uffd, UFFDIO_MOVE, {dst, src, len, mode})`. The result is the
    /// `move` field when it is positive (bytes moved, all or part), else the error.
    UffdioMove {
        /// `uffdio_move.dst`.
        dst: u64,
        /// `uffdio_move.src`.
        src: u64,
        /// `uffdio_move.len`.
        len: u64,
        /// `UFFDIO_MOVE_MODE_*` bits.
        mode: u64,
    },
    /// A mapping the kernel made itself (at exec: the ELF image, ld.so, `[stack]`, `[vdso]`,
    /// …), as perf's mmap records show it. Not a syscall: it is installed as is, with
    /// MAP_FIXED semantics. `path` is the file (None for anonymous or a `[special]` name
    /// kept in `name`); records with the same (dev, ino) within one exec share one open file.
    MapRecord(RecordedVma),
    /// The kernel's own VMA after the call before it, as perf's mmap record shows it
    /// (`perf_event_mmap` at the end of `__mmap_region`, `mprotect_fixup` and
    /// `do_brk_flags`, merges included). Not a syscall and no change: the model's VMA at
    /// `addr` is compared with it.
    VmaRecord(RecordedVma),
}

/// A VMA as perf's mmap record shows it (a line of `/proc/PID/maps`): what
/// [`Call::MapRecord`] installs and what [`Call::VmaRecord`] compares the model's VMA with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedVma {
    /// `vm_start` (page aligned).
    pub addr: u64,
    /// `vm_end - vm_start`, in bytes.
    pub len: u64,
    /// `vm_pgoff` (pages; for anonymous memory too).
    pub pgoff: u64,
    /// `PROT_*` bits of `vm_flags`.
    pub prot: u64,
    /// MAP_SHARED / VM_MAYSHARE (`"s"`) rather than private (`"p"`).
    pub shared: bool,
    /// Device number of the file (with `ino`, its identity within the exec).
    pub dev: u64,
    /// Inode number of the file.
    pub ino: u64,
    /// The mapped file's name as the import gives it, or None.
    pub path: Option<String>,
    /// A special mapping's name (`[stack]`, `[vdso]`, ...) when there is no file.
    pub name: Option<String>,
}

/// The name of every [`Call`] the script parser builds, as [`Call::name`] gives it (the
/// parser also accepts aliases: `pkey_mprotect`, `clone3`, `exit`, `open`). A new call
/// needs an entry here, which the generator coverage test (tests/gen_coverage.rs) then
/// asks the generator for.
pub const CALL_NAMES: [&str; 32] = [
    "mmap",
    "munmap",
    "mprotect",
    "madvise",
    "mremap",
    "brk",
    "fork",
    "vfork",
    "clone",
    "exit_group",
    "execve",
    "prctl",
    "openat",
    "close",
    "dup",
    "dup2",
    "ftruncate",
    "touch",
    "pin",
    "unpin",
    "migrate",
    "migrate_done",
    "uffd_register",
    "uffd_unregister",
    "uffdio_move",
    "map_record",
    "vma_record",
    "mlock",
    "mlock2",
    "munlock",
    "mlockall",
    "munlockall",
];

impl Call {
    /// A call that makes a new task (`fork`, `vfork`, or `clone`): its result is the child's pid.
    pub fn makes_task(&self) -> bool {
        matches!(self, Call::Fork { .. } | Call::CloneVm { .. })
    }

    /// The syscall name as strace prints it.
    pub fn name(&self) -> &'static str {
        match self {
            Call::Mmap { .. } => CALL_NAMES[0],
            Call::Munmap { .. } => CALL_NAMES[1],
            Call::Mprotect { .. } => CALL_NAMES[2],
            Call::Madvise { .. } => CALL_NAMES[3],
            Call::Mremap { .. } => CALL_NAMES[4],
            Call::Brk { .. } => CALL_NAMES[5],
            Call::Fork { vfork: false } => CALL_NAMES[6],
            Call::Fork { vfork: true } => CALL_NAMES[7],
            Call::CloneVm { .. } => CALL_NAMES[8],
            Call::ExitGroup { .. } => CALL_NAMES[9],
            Call::Execve { .. } => CALL_NAMES[10],
            Call::SetVmaAnonName { .. } => CALL_NAMES[11],
            Call::Openat { .. } => CALL_NAMES[12],
            Call::Close { .. } => CALL_NAMES[13],
            Call::Dup { .. } => CALL_NAMES[14],
            Call::Dup2 { .. } => CALL_NAMES[15],
            Call::Ftruncate { .. } => CALL_NAMES[16],
            Call::Touch { .. } => CALL_NAMES[17],
            Call::Pin { .. } => CALL_NAMES[18],
            Call::Unpin { .. } => CALL_NAMES[19],
            Call::Migrate { .. } => CALL_NAMES[20],
            Call::MigrateDone { .. } => CALL_NAMES[21],
            Call::UffdRegister { .. } => CALL_NAMES[22],
            Call::UffdUnregister { .. } => CALL_NAMES[23],
            Call::UffdioMove { .. } => CALL_NAMES[24],
            Call::MapRecord(..) => CALL_NAMES[25],
            Call::VmaRecord(..) => CALL_NAMES[26],
            Call::Mlock { flags: None, .. } => CALL_NAMES[27],
            Call::Mlock { flags: Some(_), .. } => CALL_NAMES[28],
            Call::Munlock { .. } => CALL_NAMES[29],
            Call::Mlockall { .. } => CALL_NAMES[30],
            Call::Munlockall => CALL_NAMES[31],
        }
    }
}
