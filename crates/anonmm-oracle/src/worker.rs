//! The worker side: the loop every script process runs.
//!
//! A worker is a forked child of a (possibly multi-threaded) controller, so after the fork it
//! may only use async-signal-safe operations: this file allocates nothing, formats nothing and
//! never panics. It receives fixed-size [`Cmd`] messages on one `SOCK_SEQPACKET` socket, runs
//! each with a raw `syscall(2)` and answers with one [`Reply`] (the raw return value, or
//! `-errno`).

use std::ffi::c_void;
use std::mem::size_of;

use crate::snapshot::touch_tag;

/// Run `nr` with `args`; a string argument, if any, points into `buf`.
pub(crate) const OP_SYSCALL: u64 = 1;
/// Touch every page of `[args[0], args[0] + args[1])` in address order; `args[2] != 0`
/// writes the tag. The reply is 0, or the number of the signal (SIGSEGV, SIGBUS) the first
/// faulting page raised; the pages before it stay touched.
pub(crate) const OP_TOUCH: u64 = 2;
/// `fork()`; the child takes the channel `args[0]` and says hello with its real pid.
pub(crate) const OP_FORK: u64 = 3;
/// `exit_group(args[0])`; no reply.
pub(crate) const OP_EXIT: u64 = 4;
/// Read the u64 at offset 0 of the pages `args[0] + i * 4096` for every bit `i` set in the
/// bitmap `buf` (`i < args[1] <= TAGS_MAX`); reply with `args[1]` u64s (0 where unset).
/// The controller only sets bits of present pages in accessible VMAs: nothing faults.
pub(crate) const OP_TAGS: u64 = 5;
/// Pin `[args[0], +args[1])` long term: a new io_uring with the range registered as its one
/// fixed buffer (`IORING_REGISTER_BUFFERS` pins with `FOLL_WRITE | FOLL_LONGTERM`). The ring
/// fd is moved to `RING_FD_MIN` or above, so script descriptors keep the model's numbers.
pub(crate) const OP_PIN: u64 = 6;
/// Unregister and close the ring this process pinned `[args[0], +args[1])` with; `-EINVAL` if
/// there is none.
pub(crate) const OP_UNPIN: u64 = 7;
/// `ioctl(uffd, UFFDIO_REGISTER)` of `[args[0], +args[1])` with mode `args[2]` on this
/// process's userfaultfd (made on first use, see [`uffd_get`]).
pub(crate) const OP_UFFD_REGISTER: u64 = 8;
/// `ioctl(uffd, UFFDIO_UNREGISTER)` of `[args[0], +args[1])`.
pub(crate) const OP_UFFD_UNREGISTER: u64 = 9;
/// `ioctl(uffd, UFFDIO_MOVE)` with dst `args[0]`, src `args[1]`, len `args[2]`, mode
/// `args[3]`; the reply is the `move` field when positive (a short move returns -EAGAIN with
/// the progress there), else `-errno`.
pub(crate) const OP_UFFD_MOVE: u64 = 10;
/// `clone(args[1])` with a stack of its own: the new task (a thread, or a process sharing the
/// mm) takes the channel `args[0]`, says hello with its tid and serves calls on it. The reply
/// is the new tid, or `-errno`.
pub(crate) const OP_CLONE: u64 = 11;
/// `vfork()` as `clone(CLONE_VM | CLONE_VFORK | SIGCHLD)` on a stack of its own (as
/// posix_spawn does): the child takes the channel `args[0]`, says hello with its pid and
/// serves calls on the parent's mm, while the parent sleeps in the kernel until the child
/// execs or exits. Only then does the parent reply: the child's pid, or `-errno`.
pub(crate) const OP_VFORK: u64 = 12;
/// `execve("/proc/self/exe")` with the environment `buf` (`EXEC_ENV=<channel fd>`): the
/// fresh image becomes a worker again before `main` (see [`exec_worker_init`]) and says hello
/// with its pid on the same channel. Pins are unregistered first (their rings are
/// `O_CLOEXEC`). The reply is that hello, or `-errno` if execve failed.
pub(crate) const OP_EXECVE: u64 = 13;
/// The environment variable that makes a fresh image of this binary a worker.
pub(crate) const EXEC_ENV: &str = "ANONMM_ORACLE_EXEC_WORKER";
/// Bytes of a cloned task's stack (mapped outside the window, never freed: the task may
/// outlive its creator's interest in it).
const CLONE_STACK: usize = 256 << 10;
/// `ARCH_GET_FS` (arch/x86/include/uapi/asm/prctl.h).
const ARCH_GET_FS: libc::c_int = 0x1003;
/// `UFFD_USER_MODE_ONLY`: an unprivileged-style context (faults from user space only).
const UFFD_USER_MODE_ONLY: u64 = 1;
const UFFD_API: u64 = 0xaa;
/// `UFFD_FEATURE_SIGBUS`: a missing fault raises SIGBUS instead of waiting for a reader that
/// the script never runs.
const UFFD_FEATURE_SIGBUS: u64 = 1 << 7;
const UFFD_FEATURE_MOVE: u64 = 1 << 16;
/// `_IOWR(UFFDIO, _UFFDIO_API, struct uffdio_api)` (24 bytes).
const UFFDIO_API: u64 = 0xc018_aa3f;
/// `_IOWR(UFFDIO, _UFFDIO_REGISTER, struct uffdio_register)` (32 bytes).
const UFFDIO_REGISTER: u64 = 0xc020_aa00;
/// `_IOR(UFFDIO, _UFFDIO_UNREGISTER, struct uffdio_range)` (16 bytes).
const UFFDIO_UNREGISTER: u64 = 0x8010_aa01;
/// `_IOWR(UFFDIO, _UFFDIO_MOVE, struct uffdio_move)` (40 bytes).
const UFFDIO_MOVE: u64 = 0xc028_aa05;
/// Most pins one process holds at once.
pub(crate) const MAX_RINGS: usize = 64;
/// Ring descriptors live at or above this (below the channel ends at the top of the table).
const RING_FD_MIN: u64 = 512;
const IORING_REGISTER_BUFFERS: u64 = 0;
const IORING_UNREGISTER_BUFFERS: u64 = 1;
/// `sizeof(struct io_uring_params)`.
const IO_URING_PARAMS_LEN: usize = 120;

/// Most pages one `OP_TAGS` covers (the bitmap fills `buf`).
pub(crate) const TAGS_MAX: usize = BUF_LEN * 8;

/// Room for a path or a VMA name, NUL included.
pub(crate) const BUF_LEN: usize = 512;
/// `str_arg` value meaning "no string argument".
pub(crate) const NO_STR: u64 = u64::MAX;

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Cmd {
    pub op: u64,
    pub nr: u64,
    pub args: [u64; 6],
    /// Index of the argument to replace with a pointer to `buf`, or [`NO_STR`].
    pub str_arg: u64,
    /// Script line (for touch tags).
    pub line: u64,
    pub buf: [u8; BUF_LEN],
}

impl Cmd {
    pub(crate) fn new(op: u64) -> Cmd {
        Cmd { op, nr: 0, args: [0; 6], str_arg: NO_STR, line: 0, buf: [0; BUF_LEN] }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct Reply {
    pub ret: i64,
}

fn errno() -> i64 {
    // SAFETY: __errno_location is async-signal-safe and always valid.
    unsafe { *libc::__errno_location() as i64 }
}

/// A raw syscall: the result, or `-errno`.
///
/// # Safety
/// The caller passes arguments that are valid for `nr`.
unsafe fn raw(nr: u64, a: [u64; 6]) -> i64 {
    // SAFETY: forwarded to the caller.
    let r = unsafe { libc::syscall(nr as libc::c_long, a[0], a[1], a[2], a[3], a[4], a[5]) };
    if r == -1 { -errno() } else { r }
}

fn send_reply(fd: i32, ret: i64) {
    let r = Reply { ret };
    // SAFETY: sends a plain repr(C) value.
    unsafe {
        libc::send(fd, &r as *const Reply as *const c_void, size_of::<Reply>(), libc::MSG_NOSIGNAL);
    }
}

fn exit_group(code: u64) -> ! {
    // SAFETY: ends the process.
    unsafe {
        libc::syscall(libc::SYS_exit_group, code as libc::c_long);
    }
    // exit_group does not return; keep the type checker happy without panicking.
    loop {
        // SAFETY: pause only sleeps.
        unsafe {
            libc::pause();
        }
    }
}

/// `PR_SET_MM` (include/uapi/linux/prctl.h) and its `PR_SET_MM_MAP` sub-option.
const PR_SET_MM: i32 = 35;
const PR_SET_MM_MAP: u64 = 14;

/// `struct prctl_mm_map`: the mm's code, data, heap, stack, argument and environment bounds
/// (`auxv` NULL, `exe_fd` -1: left alone).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PrctlMmMap {
    pub start_code: u64,
    pub end_code: u64,
    pub start_data: u64,
    pub end_data: u64,
    pub start_brk: u64,
    pub brk: u64,
    pub start_stack: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
    pub auxv: u64,
    pub auxv_size: u32,
    pub exe_fd: u32,
}

/// A constructor of every binary that links the oracle (`.init_array`, run by the dynamic
/// loader before `main`): in an image the worker exec'd ([`OP_EXECVE`]), it becomes a worker
/// again and never returns; anywhere else it returns at once.
#[used]
#[unsafe(link_section = ".init_array")]
pub(crate) static EXEC_WORKER_INIT: extern "C" fn() = exec_worker_init;

/// The body of [`EXEC_WORKER_INIT`]: with [`EXEC_ENV`] set to a channel fd, move the break
/// into the window as process 1 does (see [`process_one`]), catch probe faults, say hello
/// with our pid and serve calls. The rest of the process (signal mask, ignored SIGCHLD and
/// SIGPIPE, death signal, working directory, script descriptors) came through execve.
extern "C" fn exec_worker_init() {
    let name = [EXEC_ENV.as_bytes(), b"\0"].concat();
    // SAFETY: a NUL-terminated name; getenv returns NULL or a NUL-terminated string.
    let v = unsafe { libc::getenv(name.as_ptr() as *const libc::c_char) };
    if v.is_null() {
        return;
    }
    // SAFETY: as above.
    let text = unsafe { std::ffi::CStr::from_ptr(v) };
    let Some(fd) = text.to_str().ok().and_then(|t| t.parse::<i32>().ok()) else { exit_group(1) };
    // Before anything here allocates: this image's malloc may have made a heap already,
    // outside the window; nothing grows it once the break has moved.
    if let Some(m) = crate::controller::mm_map_at(crate::mm::DEFAULT_START_BRK) {
        // SAFETY: prctl reads the struct; on failure the break stays and the controller sees it.
        unsafe {
            libc::prctl(
                PR_SET_MM,
                PR_SET_MM_MAP as libc::c_ulong,
                &m as *const PrctlMmMap as libc::c_ulong,
                size_of::<PrctlMmMap>() as libc::c_ulong,
                0 as libc::c_ulong,
            );
        }
    }
    install_probe_handler();
    // SAFETY: getpid has no preconditions.
    send_reply(fd, unsafe { libc::getpid() } as i64);
    worker_loop(fd)
}

/// execve of this binary with `env` (one NUL-terminated `NAME=value`); returns only on
/// failure, with `-errno`.
fn exec_self(env: &[u8]) -> i64 {
    const EXE: &[u8] = b"/proc/self/exe\0";
    const ARG0: &[u8] = b"anonmm-oracle-worker\0";
    let argv = [ARG0.as_ptr() as *const libc::c_char, std::ptr::null()];
    let envp = [env.as_ptr() as *const libc::c_char, std::ptr::null()];
    // SAFETY: NUL-terminated strings and NULL-terminated arrays that live across the call.
    unsafe {
        raw(
            libc::SYS_execve as u64,
            [EXE.as_ptr() as u64, argv.as_ptr() as u64, envp.as_ptr() as u64, 0, 0, 0],
        )
    }
}

/// Prepare a freshly forked process 1 and run the loop; never returns.
///
/// `mm_map`, if any, moves the break (and the data segment's end, which must lie below it)
/// into the window with `prctl(PR_SET_MM, PR_SET_MM_MAP)`, so script `brk` calls grow a heap
/// the snapshot sees; the worker itself never allocates, so its inherited heap is never used
/// again. `moves` lists (current fd, wanted fd) for every worker channel end; `close_lo..=close_hi`
/// and everything above `keep_hi` are closed so the script sees a clean fd table (0, 1, 2
/// kept). `dir` is the NUL-terminated temp directory.
///
/// # Safety
/// Must only be called in a freshly forked child; the slices were built before the fork.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn process_one(
    mm_map: Option<&PrctlMmMap>,
    moves: &[(i32, i32)],
    close_lo: i32,
    close_hi: i32,
    keep_hi: i32,
    own_fd: i32,
    dir: &[u8],
    controller: i32,
) -> ! {
    // SAFETY: only async-signal-safe calls on memory prepared before the fork.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0);
        if libc::getppid() != controller {
            exit_group(1);
        }
        if let Some(m) = mm_map {
            // On failure the break stays where it was; the controller sees that and refuses brk.
            libc::prctl(
                PR_SET_MM,
                PR_SET_MM_MAP as libc::c_ulong,
                m as *const PrctlMmMap as libc::c_ulong,
                size_of::<PrctlMmMap>() as libc::c_ulong,
                0 as libc::c_ulong,
            );
        }
        for &(from, to) in moves {
            if libc::dup2(from, to) < 0 {
                exit_group(1);
            }
        }
        if close_lo <= close_hi {
            raw(libc::SYS_close_range as u64, [close_lo as u64, close_hi as u64, 0, 0, 0, 0]);
        }
        raw(libc::SYS_close_range as u64, [keep_hi as u64 + 1, u32::MAX as u64, 0, 0, 0, 0]);
        if libc::chdir(dir.as_ptr() as *const libc::c_char) != 0 {
            exit_group(1);
        }
        libc::signal(libc::SIGCHLD, libc::SIG_IGN);
        install_probe_handler();
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        send_reply(own_fd, libc::getpid() as i64);
    }
    worker_loop(own_fd)
}

// One access that may fault, and where a fault resumes. `anonmm_probe_read(p)` reads the
// u64 at `p`, `anonmm_probe_write(p, v)` stores `v` there; both return 0. If the access
// raises SIGSEGV or SIGBUS, `probe_handler` resumes at `anonmm_probe_fixup` with the signal
// number in rax, so the probe returns it (an exception table, as the kernel's uaccess has).
#[cfg(target_arch = "x86_64")]
std::arch::global_asm!(
    ".pushsection .text.anonmm_probe,\"ax\",@progbits",
    ".globl anonmm_probe_read",
    ".hidden anonmm_probe_read",
    ".type anonmm_probe_read,@function",
    "anonmm_probe_read:",
    "    xor eax, eax",
    ".globl anonmm_probe_read_insn",
    ".hidden anonmm_probe_read_insn",
    "anonmm_probe_read_insn:",
    "    mov rcx, qword ptr [rdi]",
    "    ret",
    ".globl anonmm_probe_write",
    ".hidden anonmm_probe_write",
    ".type anonmm_probe_write,@function",
    "anonmm_probe_write:",
    "    xor eax, eax",
    ".globl anonmm_probe_write_insn",
    ".hidden anonmm_probe_write_insn",
    "anonmm_probe_write_insn:",
    "    mov qword ptr [rdi], rsi",
    "    ret",
    ".globl anonmm_probe_fixup",
    ".hidden anonmm_probe_fixup",
    "anonmm_probe_fixup:",
    "    ret",
    ".popsection",
);

#[cfg(target_arch = "x86_64")]
unsafe extern "C" {
    fn anonmm_probe_read(p: u64) -> u64;
    fn anonmm_probe_write(p: u64, v: u64) -> u64;
    static anonmm_probe_read_insn: u8;
    static anonmm_probe_write_insn: u8;
    static anonmm_probe_fixup: u8;
}

/// The SIGSEGV/SIGBUS handler of every worker: a fault of a probe instruction resumes at the
/// fixup with the signal number as the probe's result; any other fault is a bug of the
/// worker, which then dies of it (the default action, restored here, on the refault).
#[cfg(target_arch = "x86_64")]
extern "C" fn probe_handler(sig: libc::c_int, _info: *mut libc::siginfo_t, ctx: *mut c_void) {
    // SAFETY: the kernel passes a valid ucontext_t to an SA_SIGINFO handler; only
    // async-signal-safe calls are made.
    unsafe {
        let uc = &mut *(ctx as *mut libc::ucontext_t);
        let rip = uc.uc_mcontext.gregs[libc::REG_RIP as usize] as usize;
        let read = &raw const anonmm_probe_read_insn as usize;
        let write = &raw const anonmm_probe_write_insn as usize;
        if rip == read || rip == write {
            uc.uc_mcontext.gregs[libc::REG_RIP as usize] = &raw const anonmm_probe_fixup as i64;
            uc.uc_mcontext.gregs[libc::REG_RAX as usize] = sig as i64;
        } else {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
}

/// Install [`probe_handler`] for SIGSEGV and SIGBUS (inherited by forked workers).
fn install_probe_handler() {
    #[cfg(target_arch = "x86_64")]
    for sig in [libc::SIGSEGV, libc::SIGBUS] {
        // SAFETY: a plain sigaction with a handler that is async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = probe_handler as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Touch the pages of `[addr, addr + len)` one u64 at offset 0 each, in address order, as a
/// program would; the first page that faults ends the touch: its signal number, else 0.
fn touch(addr: u64, len: u64, write: bool, line: u64) -> i64 {
    if len == 0 {
        return 0;
    }
    let start = addr & !0xfff;
    let Some(end) = addr.checked_add(len).and_then(|e| e.checked_add(0xfff)).map(|e| e & !0xfff) else {
        return libc::SIGSEGV as i64;
    };
    let mut p = start;
    while p < end {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a fault of the probe is caught by `probe_handler` and returned.
        let sig = unsafe {
            if write { anonmm_probe_write(p, touch_tag(line as usize, p)) } else { anonmm_probe_read(p) }
        };
        #[cfg(not(target_arch = "x86_64"))]
        let sig = {
            let _ = (write, line);
            libc::SIGSEGV as u64
        };
        if sig != 0 {
            return sig as i64;
        }
        p += 0x1000;
    }
    0
}

fn send_tags(fd: i32, cmd: &Cmd) {
    let mut tags = [0u64; TAGS_MAX];
    let n = (cmd.args[1] as usize).min(TAGS_MAX);
    for (i, t) in tags.iter_mut().enumerate().take(n) {
        if cmd.buf[i / 8] & (1 << (i % 8)) != 0 {
            let p = cmd.args[0] + ((i as u64) << 12);
            // SAFETY: the controller saw this page present in an accessible VMA.
            *t = unsafe { std::ptr::read_volatile(p as *const u64) };
        }
    }
    // SAFETY: sends the first n u64s of a stack array.
    unsafe {
        libc::send(fd, tags.as_ptr() as *const c_void, n * 8, libc::MSG_NOSIGNAL);
    }
}

/// One pinned range: (addr, len, ring fd); fd < 0 for a free entry.
type Ring = (u64, u64, i32);

fn pin(rings: &mut [Ring; MAX_RINGS], addr: u64, len: u64) -> i64 {
    let Some(i) = rings.iter().position(|r| r.2 < 0) else { return -(libc::EMFILE as i64) };
    let mut params = [0u8; IO_URING_PARAMS_LEN];
    // SAFETY: io_uring_setup writes at most sizeof(struct io_uring_params) into `params`.
    let ring = unsafe { raw(libc::SYS_io_uring_setup as u64, [1, params.as_mut_ptr() as u64, 0, 0, 0, 0]) };
    if ring < 0 {
        return ring;
    }
    let iov = libc::iovec { iov_base: addr as *mut c_void, iov_len: len as usize };
    // SAFETY: registers one iovec that lives on our stack for the call.
    let r = unsafe {
        raw(
            libc::SYS_io_uring_register as u64,
            [ring as u64, IORING_REGISTER_BUFFERS, &iov as *const libc::iovec as u64, 1, 0, 0],
        )
    };
    if r < 0 {
        // SAFETY: closes the ring we just made.
        unsafe { libc::close(ring as i32) };
        return r;
    }
    // SAFETY: fd bookkeeping on our own descriptors.
    let high = unsafe {
        raw(libc::SYS_fcntl as u64, [ring as u64, libc::F_DUPFD_CLOEXEC as u64, RING_FD_MIN, 0, 0, 0])
    };
    // SAFETY: closes the low copy.
    unsafe { libc::close(ring as i32) };
    if high < 0 {
        return high;
    }
    rings[i] = (addr, len, high as i32);
    0
}

fn unpin(rings: &mut [Ring; MAX_RINGS], addr: u64, len: u64) -> i64 {
    let Some(i) = rings.iter().position(|r| r.2 >= 0 && r.0 == addr && r.1 == len) else {
        return -(libc::EINVAL as i64);
    };
    let fd = rings[i].2;
    // SAFETY: unregisters the buffers of our own ring (synchronous: the pages are unpinned
    // on return, while a plain close would leave that to a work queue), then closes it.
    let r = unsafe {
        raw(libc::SYS_io_uring_register as u64, [fd as u64, IORING_UNREGISTER_BUFFERS, 0, 0, 0, 0])
    };
    // SAFETY: as above.
    unsafe { libc::close(fd) };
    rings[i] = (0, 0, -1);
    r.min(0)
}

/// This process's userfaultfd, made on first use: `userfaultfd(O_CLOEXEC |
/// UFFD_USER_MODE_ONLY)`, `UFFDIO_API` with `UFFD_FEATURE_MOVE | UFFD_FEATURE_SIGBUS` (no
/// `EVENT_FORK`: a child's VMAs lose the registration), moved to `RING_FD_MIN` or above.
fn uffd_get(uffd: &mut i32) -> Result<i32, i64> {
    if *uffd >= 0 {
        return Ok(*uffd);
    }
    let flags = libc::O_CLOEXEC as u64 | UFFD_USER_MODE_ONLY;
    // SAFETY: userfaultfd has no memory arguments.
    let fd = unsafe { raw(libc::SYS_userfaultfd as u64, [flags, 0, 0, 0, 0, 0]) };
    if fd < 0 {
        return Err(fd);
    }
    let mut api = [UFFD_API, UFFD_FEATURE_MOVE | UFFD_FEATURE_SIGBUS, 0u64];
    // SAFETY: UFFDIO_API reads and writes the 24-byte struct on our stack.
    let mut r =
        unsafe { raw(libc::SYS_ioctl as u64, [fd as u64, UFFDIO_API, api.as_mut_ptr() as u64, 0, 0, 0]) };
    if r == -(libc::EINVAL as i64) {
        // A kernel before 6.8 (the VM oracle's 6.1) has no UFFD_FEATURE_MOVE; a failed
        // handshake leaves the context waiting for another.
        api = [UFFD_API, UFFD_FEATURE_SIGBUS, 0u64];
        // SAFETY: as above.
        r = unsafe { raw(libc::SYS_ioctl as u64, [fd as u64, UFFDIO_API, api.as_mut_ptr() as u64, 0, 0, 0]) };
    }
    // SAFETY: fd bookkeeping on our own descriptor.
    let high = unsafe {
        raw(libc::SYS_fcntl as u64, [fd as u64, libc::F_DUPFD_CLOEXEC as u64, RING_FD_MIN, 0, 0, 0])
    };
    // SAFETY: closes the low copy.
    unsafe { libc::close(fd as i32) };
    if r < 0 {
        if high >= 0 {
            // SAFETY: closes the copy of a context we cannot use.
            unsafe { libc::close(high as i32) };
        }
        return Err(r);
    }
    if high < 0 {
        return Err(high);
    }
    *uffd = high as i32;
    Ok(*uffd)
}

fn uffd_ioctl(uffd: &mut i32, req: u64, arg: &mut [u64]) -> i64 {
    match uffd_get(uffd) {
        // SAFETY: `arg` is the request's struct, on the caller's stack.
        Ok(fd) => unsafe { raw(libc::SYS_ioctl as u64, [fd as u64, req, arg.as_mut_ptr() as u64, 0, 0, 0]) },
        Err(e) => e,
    }
}

/// UFFDIO_MOVE: bytes moved when any were (`move`, even on a short move's -EAGAIN), else the
/// error.
fn uffd_move(uffd: &mut i32, a: &[u64; 6]) -> i64 {
    let mut m = [a[0], a[1], a[2], a[3], 0u64];
    let r = uffd_ioctl(uffd, UFFDIO_MOVE, &mut m);
    let moved = m[4] as i64;
    if r == 0 || (r == -(libc::EAGAIN as i64) && moved > 0) { moved } else { r }
}

/// The argument of a cloned task: its channel in bits 0..20, its creator's in 20..40, and
/// bit 40 when it shares the descriptor table (packed by value: nothing to outlive).
fn clone_arg(fd: i32, parent_fd: i32, files: bool) -> u64 {
    fd as u64 | (parent_fd as u64) << 20 | u64::from(files) << 40
}

/// The entry of a cloned task (on its own stack, in the shared or copied mm); never returns.
extern "C" fn clone_main(arg: *mut c_void) -> libc::c_int {
    let a = arg as u64;
    let (fd, parent_fd, files) = ((a & 0xfffff) as i32, ((a >> 20) & 0xfffff) as i32, a >> 40 != 0);
    // SAFETY: fd bookkeeping and a hello on our own channel.
    unsafe {
        if !files {
            // A copied table: the creator's channel, pin rings and userfaultfd are not ours
            // (as after fork).
            libc::close(parent_fd);
            raw(libc::SYS_close_range as u64, [RING_FD_MIN, RING_FD_MIN + MAX_RINGS as u64 + 1, 0, 0, 0, 0]);
        }
        send_reply(fd, libc::syscall(libc::SYS_gettid) as i64);
    }
    worker_loop(fd)
}

/// `clone(flags)` through glibc's wrapper, which switches to the new stack and calls
/// [`clone_main`]. The TLS pointer given with `CLONE_SETTLS` is the caller's own (the new
/// task runs the same async-signal-safe loop and touches no thread-local state but errno,
/// and only one task runs at a time).
fn clone_task(parent_fd: i32, child_fd: i32, flags: u64) -> i64 {
    // SAFETY: a fresh private anonymous mapping for the stack; NULL hint, so the kernel puts
    // it top-down below mmap_base, far above the script window.
    let stack = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            CLONE_STACK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return -errno();
    }
    let files = flags & crate::abi::CLONE_FILES != 0;
    let mut tls: u64 = 0;
    // SAFETY: ARCH_GET_FS writes one u64.
    unsafe {
        libc::syscall(libc::SYS_arch_prctl, ARCH_GET_FS, &mut tls as *mut u64);
    }
    // SAFETY: the stack top is 16-byte aligned and the stack is the child's alone.
    let r = unsafe {
        libc::clone(
            clone_main,
            (stack as *mut u8).add(CLONE_STACK) as *mut c_void,
            flags as libc::c_int,
            clone_arg(child_fd, parent_fd, files) as *mut c_void,
            std::ptr::null_mut::<libc::pid_t>(),
            tls as *mut c_void,
            std::ptr::null_mut::<libc::pid_t>(),
        )
    };
    if r < 0 {
        let e = -errno();
        // SAFETY: the stack nobody uses.
        unsafe { libc::munmap(stack, CLONE_STACK) };
        return e;
    }
    if !files {
        // SAFETY: the child's channel end is not ours to keep (the child has its copy).
        unsafe { libc::close(child_fd) };
    }
    r as i64
}

fn worker_loop(mut fd: i32) -> ! {
    let mut rings: [Ring; MAX_RINGS] = [(0, 0, -1); MAX_RINGS];
    let mut uffd: i32 = -1;
    loop {
        let mut cmd = Cmd::new(0);
        // SAFETY: receives into a plain repr(C) value of the right size.
        let n = unsafe { libc::recv(fd, &mut cmd as *mut Cmd as *mut c_void, size_of::<Cmd>(), 0) };
        if n < 0 && errno() == libc::EINTR as i64 {
            continue;
        }
        if n != size_of::<Cmd>() as isize {
            // The controller is gone (EOF) or spoke nonsense: leave quietly.
            exit_group(0);
        }
        let ret = match cmd.op {
            OP_SYSCALL => {
                let mut a = cmd.args;
                if (cmd.str_arg as usize) < 6 {
                    a[cmd.str_arg as usize] = cmd.buf.as_ptr() as u64;
                }
                // SAFETY: the controller builds valid argument lists; pointers lie in `buf`.
                unsafe { raw(cmd.nr, a) }
            }
            OP_TOUCH => touch(cmd.args[0], cmd.args[1], cmd.args[2] != 0, cmd.line),
            OP_FORK => {
                let child_fd = cmd.args[0] as i32;
                // SAFETY: a plain fork of a single-threaded process.
                let r = unsafe { raw(libc::SYS_fork as u64, [0; 6]) };
                if r == 0 {
                    // SAFETY: fd bookkeeping in the new child.
                    unsafe {
                        libc::close(fd);
                        fd = child_fd;
                        // The parent's pins are not the child's: drop its copies of the rings.
                        for r in rings.iter_mut().filter(|r| r.2 >= 0) {
                            libc::close(r.2);
                            *r = (0, 0, -1);
                        }
                        // The parent's userfaultfd works on the parent's mm only.
                        if uffd >= 0 {
                            libc::close(uffd);
                            uffd = -1;
                        }
                        send_reply(fd, libc::getpid() as i64);
                    }
                    continue;
                }
                if r > 0 {
                    // SAFETY: the child's channel end is not ours to keep.
                    unsafe {
                        libc::close(child_fd);
                    }
                }
                r
            }
            OP_EXIT => {
                // Closing a ring frees its buffers from a work queue, racing with what the
                // other tasks sharing the mm do next; unregister them now, as the model has it.
                while let Some(&(addr, len, _)) = rings.iter().find(|r| r.2 >= 0) {
                    unpin(&mut rings, addr, len);
                }
                exit_group(cmd.args[0])
            }
            OP_EXECVE => {
                // As at exit: the O_CLOEXEC rings would release their buffers late.
                while let Some(&(addr, len, _)) = rings.iter().find(|r| r.2 >= 0) {
                    unpin(&mut rings, addr, len);
                }
                exec_self(&cmd.buf)
            }
            OP_CLONE => clone_task(fd, cmd.args[0] as i32, cmd.args[1]),
            OP_VFORK => clone_task(
                fd,
                cmd.args[0] as i32,
                crate::abi::CLONE_VM | crate::abi::CLONE_VFORK | crate::abi::SIGCHLD,
            ),
            OP_PIN => pin(&mut rings, cmd.args[0], cmd.args[1]),
            OP_UNPIN => unpin(&mut rings, cmd.args[0], cmd.args[1]),
            OP_UFFD_REGISTER => {
                let mut r = [cmd.args[0], cmd.args[1], cmd.args[2], 0];
                uffd_ioctl(&mut uffd, UFFDIO_REGISTER, &mut r)
            }
            OP_UFFD_UNREGISTER => {
                let mut r = [cmd.args[0], cmd.args[1]];
                uffd_ioctl(&mut uffd, UFFDIO_UNREGISTER, &mut r)
            }
            OP_UFFD_MOVE => uffd_move(&mut uffd, &cmd.args),
            OP_TAGS => {
                send_tags(fd, &cmd);
                continue;
            }
            _ => -(libc::EINVAL as i64),
        };
        send_reply(fd, ret);
    }
}
