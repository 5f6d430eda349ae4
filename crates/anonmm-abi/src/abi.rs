//! Linux x86_64 UAPI constants, with the names strace prints, so that scripts and traces
//! can be read and written in strace's spelling.

/// PROT_NONE (include/uapi/asm-generic/mman-common.h): no access; a touch raises SIGSEGV.
pub const PROT_NONE: u64 = 0x0;
/// PROT_READ: pages may be read.
pub const PROT_READ: u64 = 0x1;
/// PROT_WRITE: pages may be written.
pub const PROT_WRITE: u64 = 0x2;
/// PROT_EXEC: pages may be executed.
pub const PROT_EXEC: u64 = 0x4;
/// PROT_SEM: page may be used for atomic ops; accepted by mprotect and otherwise ignored on x86_64.
pub const PROT_SEM: u64 = 0x8;
/// PROT_GROWSDOWN: mprotect flag, extend the change down to the start of a VM_GROWSDOWN VMA.
pub const PROT_GROWSDOWN: u64 = 0x0100_0000;
/// PROT_GROWSUP: mprotect flag, extend the change up to the end of a VM_GROWSUP VMA.
pub const PROT_GROWSUP: u64 = 0x0200_0000;

/// MAP_SHARED (include/uapi/linux/mman.h): stores are shared with every mapping of the object.
pub const MAP_SHARED: u64 = 0x01;
/// MAP_PRIVATE (include/uapi/linux/mman.h): stores are private, copied on write into anonymous
/// folios.
pub const MAP_PRIVATE: u64 = 0x02;
/// MAP_SHARED_VALIDATE: MAP_SHARED that fails with EOPNOTSUPP on unknown flags (needed for
/// MAP_SYNC).
pub const MAP_SHARED_VALIDATE: u64 = 0x03;
/// MAP_TYPE: mask of the mapping type bits (MAP_SHARED / MAP_PRIVATE / MAP_SHARED_VALIDATE /
/// MAP_DROPPABLE).
pub const MAP_TYPE: u64 = 0x0f;
/// MAP_DROPPABLE (6.11): a mapping type whose anonymous pages reclaim may drop instead of
/// swapping. Named for parsing and printing only: the model's `do_mmap` refuses it as an
/// unknown MAP_TYPE (EINVAL).
pub const MAP_DROPPABLE: u64 = 0x08;
/// MAP_FIXED (mman-common.h): place exactly at `addr`, unmapping whatever is there.
pub const MAP_FIXED: u64 = 0x10;
/// MAP_ANONYMOUS: no backing file; the fd is ignored and pages start zero-filled.
pub const MAP_ANONYMOUS: u64 = 0x20;
/// MAP_32BIT (arch/x86/include/uapi/asm/mman.h): place in the low 2 GiB; only named for printing.
pub const MAP_32BIT: u64 = 0x40;
/// MAP_GROWSDOWN (asm-generic/mman.h): a stack-like mapping, `VM_GROWSDOWN`.
pub const MAP_GROWSDOWN: u64 = 0x0100;
/// MAP_DENYWRITE: legacy, ignored by the kernel; only named for printing.
pub const MAP_DENYWRITE: u64 = 0x0800;
/// MAP_EXECUTABLE: ignored by the kernel; only named for printing.
pub const MAP_EXECUTABLE: u64 = 0x1000;
/// MAP_LOCKED: mlock the mapping (`VM_LOCKED`), which also populates it.
pub const MAP_LOCKED: u64 = 0x2000;
/// MAP_NORESERVE: skip the overcommit accounting (`VM_NORESERVE`).
pub const MAP_NORESERVE: u64 = 0x4000;
/// MAP_POPULATE: prefault the whole mapping at mmap time (`mm_populate`).
pub const MAP_POPULATE: u64 = 0x8000;
/// MAP_NONBLOCK: together with MAP_POPULATE, cancels the populate (as `do_mmap` does).
pub const MAP_NONBLOCK: u64 = 0x10000;
/// MAP_STACK: a thread stack; from 6.7 it sets `VM_NOHUGEPAGE` (`calc_vm_flag_bits`).
pub const MAP_STACK: u64 = 0x20000;
/// MAP_HUGETLB: back with hugetlb pages: EINVAL on a file that is not on hugetlbfs, not
/// modelled on anonymous memory.
pub const MAP_HUGETLB: u64 = 0x40000;
/// `LEGACY_MAP_MASK` (include/linux/mman.h): the flags every mmap implementation accepts;
/// MAP_SHARED_VALIDATE refuses any other (EOPNOTSUPP) but those a file system adds.
pub const LEGACY_MAP_MASK: u64 = MAP_SHARED
    | MAP_PRIVATE
    | MAP_FIXED
    | MAP_ANONYMOUS
    | MAP_DENYWRITE
    | MAP_EXECUTABLE
    | MAP_UNINITIALIZED
    | MAP_GROWSDOWN
    | MAP_LOCKED
    | MAP_NORESERVE
    | MAP_POPULATE
    | MAP_NONBLOCK
    | MAP_STACK
    | MAP_HUGETLB
    | MAP_32BIT
    | 0x80 // MAP_ABOVE4G (x86)
    | (21 << 26) // MAP_HUGE_2MB
    | (30 << 26); // MAP_HUGE_1GB
/// MAP_SYNC: synchronous page faults for DAX files, honoured only with MAP_SHARED_VALIDATE
/// (`VM_SYNC`).
pub const MAP_SYNC: u64 = 0x80000;
/// MAP_FIXED_NOREPLACE: like MAP_FIXED but fail with EEXIST instead of unmapping.
pub const MAP_FIXED_NOREPLACE: u64 = 0x100000;
/// MAP_UNINITIALIZED: no-MMU only (CONFIG_MMAP_ALLOW_UNINITIALIZED); only named for printing.
pub const MAP_UNINITIALIZED: u64 = 0x4000000;

/// MREMAP_MAYMOVE (include/uapi/linux/mman.h): mremap may move the mapping if it cannot grow in
/// place.
pub const MREMAP_MAYMOVE: u64 = 1;
/// MREMAP_FIXED: move to `new_address` (requires MREMAP_MAYMOVE).
pub const MREMAP_FIXED: u64 = 2;
/// MREMAP_DONTUNMAP: move the pages but leave the old range mapped and empty.
pub const MREMAP_DONTUNMAP: u64 = 4;
/// Stoakes 2025 (not in mainline): relocate anonymous folios on move.
pub const MREMAP_RELOCATE_ANON: u64 = 8;
/// Stoakes 2025 (not in mainline): relocate or fail with EFAULT.
pub const MREMAP_MUST_RELOCATE_ANON: u64 = 16;

/// mlock2's MLOCK_ONFAULT (include/uapi/asm-generic/mman-common.h): lock pages as they are
/// faulted in, not populate.
pub const MLOCK_ONFAULT: u64 = 1;
/// mlockall's MCL_CURRENT (include/uapi/asm-generic/mman.h): lock what is mapped now.
pub const MCL_CURRENT: u64 = 1;
/// mlockall's MCL_FUTURE: lock what is mapped later (`mm->def_flags`).
pub const MCL_FUTURE: u64 = 2;
/// mlockall's MCL_ONFAULT: with the others, lock on fault instead of populating.
pub const MCL_ONFAULT: u64 = 4;

/// MADV_NORMAL (include/uapi/asm-generic/mman-common.h): clear MADV_RANDOM / MADV_SEQUENTIAL.
pub const MADV_NORMAL: u64 = 0;
/// MADV_RANDOM: expect random access (`VM_RAND_READ`).
pub const MADV_RANDOM: u64 = 1;
/// MADV_SEQUENTIAL: expect sequential access (`VM_SEQ_READ`).
pub const MADV_SEQUENTIAL: u64 = 2;
/// MADV_WILLNEED: start readahead / swapin of the range.
pub const MADV_WILLNEED: u64 = 3;
/// MADV_DONTNEED: zap the range; private anonymous pages read back as zero.
pub const MADV_DONTNEED: u64 = 4;
/// MADV_FREE: anonymous pages may be freed lazily unless written again.
pub const MADV_FREE: u64 = 8;
/// MADV_REMOVE: punch a hole in the backing shmem/file.
pub const MADV_REMOVE: u64 = 9;
/// MADV_DONTFORK: the child of fork does not get this range (`VM_DONTCOPY`).
pub const MADV_DONTFORK: u64 = 10;
/// MADV_DOFORK: undo MADV_DONTFORK.
pub const MADV_DOFORK: u64 = 11;
/// MADV_MERGEABLE: offer the range to KSM (`VM_MERGEABLE`).
pub const MADV_MERGEABLE: u64 = 12;
/// MADV_UNMERGEABLE: undo MADV_MERGEABLE.
pub const MADV_UNMERGEABLE: u64 = 13;
/// MADV_HUGEPAGE: ask for THP in the range (`VM_HUGEPAGE`).
pub const MADV_HUGEPAGE: u64 = 14;
/// MADV_NOHUGEPAGE: forbid THP in the range (`VM_NOHUGEPAGE`).
pub const MADV_NOHUGEPAGE: u64 = 15;
/// MADV_DONTDUMP: leave the range out of core dumps (`VM_DONTDUMP`).
pub const MADV_DONTDUMP: u64 = 16;
/// MADV_DODUMP: undo MADV_DONTDUMP.
pub const MADV_DODUMP: u64 = 17;
/// MADV_WIPEONFORK: the child of fork sees the range zero-filled (`VM_WIPEONFORK`).
pub const MADV_WIPEONFORK: u64 = 18;
/// MADV_KEEPONFORK: undo MADV_WIPEONFORK.
pub const MADV_KEEPONFORK: u64 = 19;
/// MADV_COLD: deactivate the pages (move them to the inactive LRU).
pub const MADV_COLD: u64 = 20;
/// MADV_PAGEOUT: reclaim the pages now (anonymous ones go to swap).
pub const MADV_PAGEOUT: u64 = 21;
/// MADV_POPULATE_READ: fault the range in as if read.
pub const MADV_POPULATE_READ: u64 = 22;
/// MADV_POPULATE_WRITE: fault the range in as if written (breaking COW).
pub const MADV_POPULATE_WRITE: u64 = 23;
/// MADV_DONTNEED_LOCKED: MADV_DONTNEED that also applies to `VM_LOCKED` VMAs.
pub const MADV_DONTNEED_LOCKED: u64 = 24;
/// MADV_COLLAPSE: synchronously collapse the range into PMD-sized THPs.
pub const MADV_COLLAPSE: u64 = 25;
/// MADV_GUARD_INSTALL (6.13): install guard-region PTE markers; a touch raises SIGSEGV.
pub const MADV_GUARD_INSTALL: u64 = 102;
/// MADV_GUARD_REMOVE: remove guard-region PTE markers.
pub const MADV_GUARD_REMOVE: u64 = 103;

/// O_RDONLY (include/uapi/asm-generic/fcntl.h): open for reading only.
pub const O_RDONLY: u64 = 0;
/// O_WRONLY: open for writing only.
pub const O_WRONLY: u64 = 1;
/// O_RDWR: open for reading and writing.
pub const O_RDWR: u64 = 2;
/// O_ACCMODE: mask of the access-mode bits (O_RDONLY / O_WRONLY / O_RDWR).
pub const O_ACCMODE: u64 = 3;
/// O_CREAT: create the file if it does not exist.
pub const O_CREAT: u64 = 0o100;
/// O_EXCL: with O_CREAT, fail with EEXIST if the file exists.
pub const O_EXCL: u64 = 0o200;
/// O_NOCTTY: do not make a terminal the controlling tty.
pub const O_NOCTTY: u64 = 0o400;
/// O_TRUNC: truncate the file to length 0.
pub const O_TRUNC: u64 = 0o1000;
/// O_APPEND: writes go to the end of the file.
pub const O_APPEND: u64 = 0o2000;
/// O_NONBLOCK: non-blocking I/O.
pub const O_NONBLOCK: u64 = 0o4000;
/// O_DSYNC: synchronous data writes.
pub const O_DSYNC: u64 = 0o10000;
/// O_DIRECT: bypass the page cache.
pub const O_DIRECT: u64 = 0o40000;
/// O_LARGEFILE: 64-bit offsets (always set on x86_64; strace still prints it).
pub const O_LARGEFILE: u64 = 0o100000;
/// O_DIRECTORY: fail with ENOTDIR unless the path is a directory.
pub const O_DIRECTORY: u64 = 0o200000;
/// O_NOFOLLOW: do not follow a trailing symlink.
pub const O_NOFOLLOW: u64 = 0o400000;
/// O_NOATIME: do not update the access time.
pub const O_NOATIME: u64 = 0o1000000;
/// O_CLOEXEC: close the fd on execve.
pub const O_CLOEXEC: u64 = 0o2000000;
/// O_PATH: a path-only fd, usable for neither read nor write nor mmap.
pub const O_PATH: u64 = 0o10000000;
/// AT_FDCWD (include/uapi/linux/fcntl.h): the `dirfd` of openat meaning "the current directory".
pub const AT_FDCWD: i64 = -100;

/// PR_SET_VMA (include/uapi/linux/prctl.h): the prctl option that names VMAs.
pub const PR_SET_VMA: u64 = 0x53564d41;
/// PR_SET_VMA_ANON_NAME: the PR_SET_VMA sub-option that sets an anonymous VMA's name
/// (`anon_vma_name`, shown as `[anon:NAME]` in /proc/PID/maps).
pub const PR_SET_VMA_ANON_NAME: u64 = 0;

/// CLONE_VM (include/uapi/linux/sched.h): share the mm instead of copying it (a thread or vfork).
pub const CLONE_VM: u64 = 0x100;
/// CLONE_FILES: share the descriptor table (threads do).
pub const CLONE_FILES: u64 = 0x400;
/// CLONE_VFORK: the parent sleeps until the child execs or exits.
pub const CLONE_VFORK: u64 = 0x4000;
/// CLONE_THREAD: the child joins the parent's thread group.
pub const CLONE_THREAD: u64 = 0x10000;
/// CLONE_FS: share root, working directory and umask.
pub const CLONE_FS: u64 = 0x200;
/// CLONE_SIGHAND: share the signal handlers (needs CLONE_VM; CLONE_THREAD needs it).
pub const CLONE_SIGHAND: u64 = 0x800;
/// CLONE_PIDFD: return a pidfd through the `parent_tid` pointer.
pub const CLONE_PIDFD: u64 = 0x1000;
/// CLONE_PARENT: the child's parent is the caller's parent.
pub const CLONE_PARENT: u64 = 0x8000;
/// CLONE_NEWNS: a new mount namespace.
pub const CLONE_NEWNS: u64 = 0x20000;
/// CLONE_SYSVSEM: share System V semaphore undo lists.
pub const CLONE_SYSVSEM: u64 = 0x40000;
/// CLONE_SETTLS: the child's TLS pointer is the `tls` argument.
pub const CLONE_SETTLS: u64 = 0x80000;
/// CLONE_PARENT_SETTID: store the child's tid at `parent_tid` in the parent.
pub const CLONE_PARENT_SETTID: u64 = 0x100000;
/// CLONE_CHILD_CLEARTID: clear (and futex-wake) `child_tid` when the child exits.
pub const CLONE_CHILD_CLEARTID: u64 = 0x200000;
/// CLONE_DETACHED: ignored by the kernel (legacy), refused with CLONE_PIDFD.
pub const CLONE_DETACHED: u64 = 0x400000;
/// CLONE_CHILD_SETTID: store the child's tid at `child_tid` in the child.
pub const CLONE_CHILD_SETTID: u64 = 0x1000000;
/// CLONE_PTRACE: trace the child too if the caller is traced.
pub const CLONE_PTRACE: u64 = 0x2000;
/// CLONE_UNTRACED: a tracer cannot force CLONE_PTRACE on the child.
pub const CLONE_UNTRACED: u64 = 0x800000;
/// SIGCHLD: the usual exit signal in clone's low byte.
pub const SIGCHLD: u64 = 17;
/// CLONE_NEWUSER: a new user namespace.
pub const CLONE_NEWUSER: u64 = 0x1000_0000;
/// CLONE_NEWPID: a new pid namespace.
pub const CLONE_NEWPID: u64 = 0x2000_0000;
/// Every CLONE_NEW* namespace flag of clone(2) (mount, cgroup, UTS, IPC, user, pid, net).
pub const CLONE_NEW_NAMESPACES: u64 =
    CLONE_NEWNS | 0x0200_0000 | 0x0400_0000 | 0x0800_0000 | CLONE_NEWUSER | CLONE_NEWPID | 0x4000_0000;
/// The exit signal's byte of clone's flags.
pub const CSIGNAL: u64 = 0xff;

/// `UFFDIO_REGISTER_MODE_MISSING` (include/uapi/linux/userfaultfd.h): track faults on
/// missing pages.
pub const UFFDIO_REGISTER_MODE_MISSING: u64 = 1 << 0;
/// `UFFDIO_REGISTER_MODE_WP`: track write-protect faults.
pub const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;
/// `UFFDIO_REGISTER_MODE_MINOR`: track minor faults (page in the page cache, not mapped).
pub const UFFDIO_REGISTER_MODE_MINOR: u64 = 1 << 2;
/// `UFFDIO_MOVE_MODE_DONTWAKE`: do not wake threads waiting on the destination range.
pub const UFFDIO_MOVE_MODE_DONTWAKE: u64 = 1 << 0;
/// `UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES`: skip unpopulated source pages instead of failing with
/// ENOENT.
pub const UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES: u64 = 1 << 1;

/// One named flag table: (name, value) in strace's spelling.
pub type FlagTable = &'static [(&'static str, u64)];

/// mmap/mprotect `prot` bits.
pub const PROT_FLAGS: FlagTable = &[
    ("PROT_NONE", PROT_NONE),
    ("PROT_READ", PROT_READ),
    ("PROT_WRITE", PROT_WRITE),
    ("PROT_EXEC", PROT_EXEC),
    ("PROT_SEM", PROT_SEM),
    ("PROT_GROWSDOWN", PROT_GROWSDOWN),
    ("PROT_GROWSUP", PROT_GROWSUP),
];

/// mmap `flags`; `MAP_ANON` is accepted as an alias of MAP_ANONYMOUS when parsing.
pub const MAP_FLAGS: FlagTable = &[
    ("MAP_SHARED", MAP_SHARED),
    ("MAP_PRIVATE", MAP_PRIVATE),
    ("MAP_SHARED_VALIDATE", MAP_SHARED_VALIDATE),
    ("MAP_DROPPABLE", MAP_DROPPABLE),
    ("MAP_FIXED", MAP_FIXED),
    ("MAP_ANONYMOUS", MAP_ANONYMOUS),
    ("MAP_ANON", MAP_ANONYMOUS),
    ("MAP_32BIT", MAP_32BIT),
    ("MAP_GROWSDOWN", MAP_GROWSDOWN),
    ("MAP_DENYWRITE", MAP_DENYWRITE),
    ("MAP_EXECUTABLE", MAP_EXECUTABLE),
    ("MAP_LOCKED", MAP_LOCKED),
    ("MAP_NORESERVE", MAP_NORESERVE),
    ("MAP_POPULATE", MAP_POPULATE),
    ("MAP_NONBLOCK", MAP_NONBLOCK),
    ("MAP_STACK", MAP_STACK),
    ("MAP_HUGETLB", MAP_HUGETLB),
    ("MAP_SYNC", MAP_SYNC),
    ("MAP_FIXED_NOREPLACE", MAP_FIXED_NOREPLACE),
    ("MAP_UNINITIALIZED", MAP_UNINITIALIZED),
];

/// mlock2 `flags`.
pub const MLOCK_FLAGS: FlagTable = &[("MLOCK_ONFAULT", MLOCK_ONFAULT)];

/// mlockall `flags`.
pub const MCL_FLAGS: FlagTable =
    &[("MCL_CURRENT", MCL_CURRENT), ("MCL_FUTURE", MCL_FUTURE), ("MCL_ONFAULT", MCL_ONFAULT)];

/// mremap `flags`, including the out-of-tree relocate flags.
pub const MREMAP_FLAGS: FlagTable = &[
    ("MREMAP_MAYMOVE", MREMAP_MAYMOVE),
    ("MREMAP_FIXED", MREMAP_FIXED),
    ("MREMAP_DONTUNMAP", MREMAP_DONTUNMAP),
    ("MREMAP_RELOCATE_ANON", MREMAP_RELOCATE_ANON),
    ("MREMAP_MUST_RELOCATE_ANON", MREMAP_MUST_RELOCATE_ANON),
];

/// madvise advice values; `sys_madvise` also checks `behavior` against it
/// (`madvise_behavior_valid`).
pub const MADV_ADVICE: FlagTable = &[
    ("MADV_NORMAL", MADV_NORMAL),
    ("MADV_RANDOM", MADV_RANDOM),
    ("MADV_SEQUENTIAL", MADV_SEQUENTIAL),
    ("MADV_WILLNEED", MADV_WILLNEED),
    ("MADV_DONTNEED", MADV_DONTNEED),
    ("MADV_FREE", MADV_FREE),
    ("MADV_REMOVE", MADV_REMOVE),
    ("MADV_DONTFORK", MADV_DONTFORK),
    ("MADV_DOFORK", MADV_DOFORK),
    ("MADV_MERGEABLE", MADV_MERGEABLE),
    ("MADV_UNMERGEABLE", MADV_UNMERGEABLE),
    ("MADV_HUGEPAGE", MADV_HUGEPAGE),
    ("MADV_NOHUGEPAGE", MADV_NOHUGEPAGE),
    ("MADV_DONTDUMP", MADV_DONTDUMP),
    ("MADV_DODUMP", MADV_DODUMP),
    ("MADV_WIPEONFORK", MADV_WIPEONFORK),
    ("MADV_KEEPONFORK", MADV_KEEPONFORK),
    ("MADV_COLD", MADV_COLD),
    ("MADV_PAGEOUT", MADV_PAGEOUT),
    ("MADV_POPULATE_READ", MADV_POPULATE_READ),
    ("MADV_POPULATE_WRITE", MADV_POPULATE_WRITE),
    ("MADV_DONTNEED_LOCKED", MADV_DONTNEED_LOCKED),
    ("MADV_COLLAPSE", MADV_COLLAPSE),
    ("MADV_GUARD_INSTALL", MADV_GUARD_INSTALL),
    ("MADV_GUARD_REMOVE", MADV_GUARD_REMOVE),
];

/// open/openat `flags` (the access mode is printed separately, by name).
pub const OPEN_FLAGS: FlagTable = &[
    ("O_RDONLY", O_RDONLY),
    ("O_WRONLY", O_WRONLY),
    ("O_RDWR", O_RDWR),
    ("O_CREAT", O_CREAT),
    ("O_EXCL", O_EXCL),
    ("O_NOCTTY", O_NOCTTY),
    ("O_TRUNC", O_TRUNC),
    ("O_APPEND", O_APPEND),
    ("O_NONBLOCK", O_NONBLOCK),
    ("O_DSYNC", O_DSYNC),
    ("O_DIRECT", O_DIRECT),
    ("O_LARGEFILE", O_LARGEFILE),
    ("O_DIRECTORY", O_DIRECTORY),
    ("O_NOFOLLOW", O_NOFOLLOW),
    ("O_NOATIME", O_NOATIME),
    ("O_CLOEXEC", O_CLOEXEC),
    ("O_PATH", O_PATH),
];

/// clone `flags`, with SIGCHLD for the exit signal in the low byte.
pub const CLONE_FLAGS: FlagTable = &[
    ("CLONE_VM", CLONE_VM),
    ("CLONE_FS", 0x200),
    ("CLONE_FILES", 0x400),
    ("CLONE_SIGHAND", 0x800),
    ("CLONE_PIDFD", 0x1000),
    ("CLONE_PTRACE", 0x2000),
    ("CLONE_VFORK", CLONE_VFORK),
    ("CLONE_PARENT", 0x8000),
    ("CLONE_THREAD", CLONE_THREAD),
    ("CLONE_NEWNS", 0x20000),
    ("CLONE_SYSVSEM", 0x40000),
    ("CLONE_SETTLS", 0x80000),
    ("CLONE_PARENT_SETTID", 0x100000),
    ("CLONE_CHILD_CLEARTID", 0x200000),
    ("CLONE_DETACHED", 0x400000),
    ("CLONE_UNTRACED", 0x800000),
    ("CLONE_CHILD_SETTID", 0x1000000),
    ("SIGCHLD", 17),
];

/// Render `value` as strace does: names joined by `|`, any unnamed rest in hex.
/// `zero_name` is printed for 0 (e.g. PROT_NONE).
pub fn format_flags(table: FlagTable, value: u64, zero_name: &str) -> String {
    if value == 0 {
        return zero_name.to_string();
    }
    let mut rest = value;
    let mut parts = Vec::new();
    for &(name, v) in table {
        if v != 0 && rest & v == v && v.count_ones() == 1 {
            parts.push(name.to_string());
            rest &= !v;
        }
    }
    if rest != 0 {
        parts.push(format!("{rest:#x}"));
    }
    parts.join("|")
}

/// `UFFDIO_REGISTER` `mode` bits.
pub const UFFDIO_REGISTER_MODES: FlagTable = &[
    ("UFFDIO_REGISTER_MODE_MISSING", UFFDIO_REGISTER_MODE_MISSING),
    ("UFFDIO_REGISTER_MODE_WP", UFFDIO_REGISTER_MODE_WP),
    ("UFFDIO_REGISTER_MODE_MINOR", UFFDIO_REGISTER_MODE_MINOR),
];

/// `UFFDIO_MOVE` `mode` bits.
pub const UFFDIO_MOVE_MODES: FlagTable = &[
    ("UFFDIO_MOVE_MODE_DONTWAKE", UFFDIO_MOVE_MODE_DONTWAKE),
    ("UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES", UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES),
];
