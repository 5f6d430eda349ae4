//! The controller: starts the workers, sends them calls, maps script pids to real pids and
//! reads their state from `/proc`.
//!
//! Channels: before forking process 1 the controller creates one `SOCK_SEQPACKET` socket pair
//! per script process (1 + the number of fork steps). Process 1 moves the worker ends to the
//! top of its fd table (`HIGH`, `HIGH-1`, … with `HIGH = min(RLIMIT_NOFILE, 1024) - 1`) and
//! closes every other fd above 2, so script `openat`/`dup` get the numbers the model gives.
//! A forking worker tells its child which channel to take; the child closes its parent's
//! channel, says hello with its real pid, and the parent closes the child's channel.
//! Every worker is watched through a pidfd, which also tells when an exited process's
//! address space has been torn down.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use crate::errno::{Errno, Signal};
use crate::script::{Call, Expect, Step};
use crate::snapshot::{RawPage, RawProc, RawPte};
use crate::types::Pid;

use super::maps::{FileIds, MapsLine, parse_maps};
use super::pages::{ptes, read_pagemap, read_tag};
use super::probe::Probe;
use super::worker::{
    BUF_LEN, Cmd, EXEC_ENV, OP_CLONE, OP_EXECVE, OP_EXIT, OP_FORK, OP_PIN, OP_SYSCALL, OP_TAGS, OP_TOUCH,
    OP_UFFD_MOVE, OP_UFFD_REGISTER, OP_UFFD_UNREGISTER, OP_UNPIN, OP_VFORK, PrctlMmMap, Reply, TAGS_MAX,
    process_one,
};
use super::{OracleError, WINDOW_END, WINDOW_START};

/// How long a single call may take (a few GiB of MAP_POPULATE or touches included).
const CALL_TIMEOUT_MS: i32 = 600_000;
/// Most script processes one run may have.
const MAX_PROCS: usize = 256;

struct Worker {
    real: i32,
    pidfd: OwnedFd,
    chan: OwnedFd,
    /// The worker's end of the channel, by its number in the worker's descriptor table.
    wfd: i32,
    /// Process 1 is our child and is reaped with waitpid; others are auto-reaped by their
    /// worker parents (SIGCHLD ignored) or by init.
    direct_child: bool,
    /// Asleep in vfork until this child execs or exits; its reply (the child's pid) is due
    /// then.
    vfork_child: Option<Pid>,
}

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir, OracleError> {
        let tmpl = std::env::temp_dir().join("anonmm-oracle-XXXXXX");
        let mut bytes = tmpl.as_os_str().as_bytes().to_vec();
        bytes.push(0);
        // SAFETY: mkdtemp edits the NUL-terminated template in place.
        let p = unsafe { libc::mkdtemp(bytes.as_mut_ptr() as *mut libc::c_char) };
        if p.is_null() {
            return Err(OracleError::sys("mkdtemp", std::io::Error::last_os_error()));
        }
        bytes.pop();
        Ok(TempDir(PathBuf::from(std::ffi::OsStr::from_bytes(&bytes))))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) struct Controller {
    probe: Probe,
    /// Controller ends of the channels not handed out yet, by channel index.
    chans: Vec<Option<OwnedFd>>,
    next_chan: usize,
    high: i32,
    live: BTreeMap<Pid, Worker>,
    /// Creation order, for teardown (children before parents).
    order: Vec<Pid>,
    pub ids: FileIds,
    dir: TempDir,
    /// Read `/proc/PID/smaps` too in every snapshot (`--smaps`).
    pub smaps: bool,
    /// Read the internal state through `/proc/anonmm_inspect` in every snapshot: set when
    /// the inspection module is loaded (the VM oracle's `--internal`).
    pub internal: bool,
    /// Process 1's break was moved to the model's start (`PR_SET_MM_MAP` worked).
    brk_ok: bool,
}

/// The mm bounds of this process (`/proc/self/stat` fields 26–28 and 45–51), with the data
/// segment and the break moved to `start_brk` (data ends one page below it).
pub(crate) fn mm_map_at(start_brk: u64) -> Option<PrctlMmMap> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let f: Vec<u64> =
        stat[stat.rfind(')')? + 2..].split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
    // Field n (1-based) of stat is f[n - 3] once pid and comm are cut off.
    let g = |n: usize| f.get(n - 3).copied();
    Some(PrctlMmMap {
        start_code: g(26)?,
        end_code: g(27)?,
        start_data: start_brk - 4096,
        end_data: start_brk - 4096,
        start_brk,
        brk: start_brk,
        start_stack: g(28)?,
        arg_start: g(48)?,
        arg_end: g(49)?,
        env_start: g(50)?,
        env_end: g(51)?,
        auxv: 0,
        auxv_size: 0,
        exe_fd: u32::MAX,
    })
}

/// `mm->start_brk` of `real` (`/proc/PID/stat` field 47).
fn start_brk_of(real: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{real}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].split_whitespace().nth(47 - 3)?.parse().ok()
}

fn last_err(what: &str) -> OracleError {
    OracleError::sys(what, std::io::Error::last_os_error())
}

/// `PIDFD_THREAD` (`O_EXCL`, Linux 6.9+): a pidfd for one thread, readable when that thread
/// exits.
const PIDFD_THREAD: libc::c_int = libc::O_EXCL;

fn pidfd_open(pid: i32) -> Result<OwnedFd, OracleError> {
    pidfd_open_flags(pid, 0)
}

fn pidfd_open_flags(pid: i32, flags: libc::c_int) -> Result<OwnedFd, OracleError> {
    // SAFETY: pidfd_open has no memory arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, flags) };
    if fd < 0 {
        return Err(last_err("pidfd_open"));
    }
    // SAFETY: a fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Wait until `fd` is readable; false on timeout.
fn wait_readable(fd: &OwnedFd, timeout_ms: i32) -> bool {
    let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    loop {
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, timeout_ms) };
        if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return r > 0;
    }
}

fn recv_reply(chan: &OwnedFd, pidfd: &OwnedFd, line: usize) -> Result<i64, OracleError> {
    let mut rep = Reply::default();
    // SAFETY: Reply is plain old data.
    let bytes =
        unsafe { std::slice::from_raw_parts_mut(&mut rep as *mut Reply as *mut u8, size_of::<Reply>()) };
    if recv_bytes(chan, pidfd, line, bytes)? != size_of::<Reply>() {
        return Err(OracleError::WorkerDied { line, reason: "short answer".into() });
    }
    Ok(rep.ret)
}

/// Receive one message into `buf`; its length.
fn recv_bytes(chan: &OwnedFd, pidfd: &OwnedFd, line: usize, buf: &mut [u8]) -> Result<usize, OracleError> {
    let mut fds = [
        libc::pollfd { fd: chan.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 },
    ];
    loop {
        // SAFETY: two valid pollfds.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, CALL_TIMEOUT_MS) };
        if r < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(last_err("poll"));
        }
        if r == 0 {
            return Err(OracleError::WorkerDied { line, reason: "no answer within 600 s".into() });
        }
        if fds[0].revents & libc::POLLIN != 0 {
            // SAFETY: receives into `buf`.
            let n =
                unsafe { libc::recv(chan.as_raw_fd(), buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
            if n > 0 {
                return Ok(n as usize);
            }
            return Err(OracleError::WorkerDied { line, reason: "channel closed".into() });
        }
        if fds[1].revents != 0 || fds[0].revents != 0 {
            return Err(OracleError::WorkerDied {
                line,
                reason: "the process died (an unexpected signal?)".into(),
            });
        }
    }
}

fn send_cmd(chan: &OwnedFd, cmd: &Cmd, line: usize) -> Result<(), OracleError> {
    // SAFETY: sends a plain repr(C) value.
    let n = unsafe {
        libc::send(
            chan.as_raw_fd(),
            cmd as *const Cmd as *const libc::c_void,
            size_of::<Cmd>(),
            libc::MSG_NOSIGNAL,
        )
    };
    if n != size_of::<Cmd>() as isize {
        return Err(OracleError::WorkerDied { line, reason: "cannot send to the worker".into() });
    }
    Ok(())
}

fn read_maps(real: i32) -> Result<Vec<MapsLine>, OracleError> {
    let text = std::fs::read_to_string(format!("/proc/{real}/maps"))
        .map_err(|e| OracleError::sys("reading /proc/PID/maps", e))?;
    parse_maps(&text).map_err(OracleError::System)
}

fn to_expect(ret: i64) -> Result<Expect, OracleError> {
    if ret < 0 {
        let code = (-ret) as i32;
        Errno::from_code(code)
            .map(Expect::Err)
            .ok_or_else(|| OracleError::System(format!("the kernel returned errno {code}, unknown to Errno")))
    } else {
        Ok(Expect::Value(ret as u64))
    }
}

impl Controller {
    /// Fork process 1 (script pid `first`) with room for `nprocs` processes in all.
    pub(crate) fn start(first: Pid, nprocs: usize, probe: Probe) -> Result<Controller, OracleError> {
        if nprocs > MAX_PROCS {
            return Err(OracleError::Refused {
                line: 0,
                reason: format!("too many processes ({nprocs}; at most {MAX_PROCS})"),
            });
        }
        let dir = TempDir::new()?;
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: writes one rlimit.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return Err(last_err("getrlimit"));
        }
        let high = lim.rlim_cur.min(1024) as i32 - 1;
        let mut ctl = Vec::new();
        let mut wrk = Vec::new();
        for _ in 0..nprocs {
            let mut sv = [0i32; 2];
            // SAFETY: writes two fds.
            let r = unsafe {
                libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, sv.as_mut_ptr())
            };
            if r != 0 {
                return Err(last_err("socketpair"));
            }
            // SAFETY: fresh fds we own.
            unsafe {
                ctl.push(OwnedFd::from_raw_fd(sv[0]));
                wrk.push(OwnedFd::from_raw_fd(sv[1]));
            }
        }
        let lowest_target = high - nprocs as i32 + 1;
        if lowest_target <= 3 || wrk.iter().any(|f| f.as_raw_fd() >= lowest_target) {
            return Err(OracleError::System(format!(
                "not enough room in the fd table for {nprocs} channels below fd {high}"
            )));
        }
        let moves: Vec<(i32, i32)> =
            wrk.iter().enumerate().map(|(i, f)| (f.as_raw_fd(), high - i as i32)).collect();
        let dir_c = CString::new(dir.0.as_os_str().as_bytes())
            .map_err(|_| OracleError::System("temp dir path has a NUL".into()))?;
        let dir_b = dir_c.as_bytes_with_nul();
        // Keep the exec'd workers' constructor in the binary (see `worker::OP_EXECVE`).
        std::hint::black_box(&super::worker::EXEC_WORKER_INIT);
        let start_brk = crate::mm::DEFAULT_START_BRK;
        let mm_map = mm_map_at(start_brk);
        // SAFETY: getpid has no preconditions.
        let me = unsafe { libc::getpid() };
        // SAFETY: the child only runs `process_one`, which is async-signal-safe.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(last_err("fork"));
        }
        if pid == 0 {
            // SAFETY: we are the freshly forked child.
            unsafe { process_one(mm_map.as_ref(), &moves, 3, lowest_target - 1, high, high, dir_b, me) }
        }
        drop(wrk);
        let pidfd = match pidfd_open(pid) {
            Ok(f) => f,
            Err(e) => {
                // SAFETY: kill and reap our own child.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
                return Err(e);
            }
        };
        let mut chans: Vec<Option<OwnedFd>> = ctl.into_iter().map(Some).collect();
        let chan = chans[0].take().ok_or_else(|| OracleError::System("no channel".into()))?;
        let mut c = Controller {
            probe,
            chans,
            next_chan: 1,
            high,
            live: BTreeMap::new(),
            order: vec![first],
            ids: FileIds::default(),
            dir,
            smaps: false,
            internal: super::kmod::loaded(),
            brk_ok: false,
        };
        c.live.insert(
            first,
            Worker { real: pid, pidfd, chan, wfd: high, direct_child: true, vfork_child: None },
        );
        let w = &c.live[&first];
        let hello = recv_reply(&w.chan, &w.pidfd, 0)?;
        if hello != pid as i64 {
            return Err(OracleError::System(format!("process 1 said hello as {hello}, not {pid}")));
        }
        c.brk_ok = start_brk_of(pid) == Some(start_brk);
        // The window must be free in process 1.
        if let Some(l) = read_maps(pid)?.iter().find(|l| l.in_window()) {
            return Err(OracleError::Refused {
                line: 0,
                reason: format!("the window is not free in process 1: {}", l.raw),
            });
        }
        Ok(c)
    }

    /// The real pid of a live script process.
    pub(crate) fn real_pid(&self, pid: Pid) -> Option<i32> {
        self.live.get(&pid).map(|w| w.real)
    }

    #[allow(dead_code)]
    pub(crate) fn dir(&self) -> &std::path::Path {
        &self.dir.0
    }

    fn worker(&self, step: &Step) -> Result<&Worker, OracleError> {
        let w = self.live.get(&step.pid).ok_or_else(|| OracleError::BadInput {
            line: step.line,
            reason: format!("process {} does not exist (not forked yet, or exited)", step.pid),
        })?;
        if let Some(c) = w.vfork_child {
            return Err(OracleError::BadInput {
                line: step.line,
                reason: format!("process {} is asleep in vfork until its child {c} execs or exits", step.pid),
            });
        }
        Ok(w)
    }

    /// A task that can read `pid`'s pages for it: itself, or if it is asleep in vfork the
    /// child it waits for (which shares its mm), or that child's, and so on.
    fn awake_sharer(&self, pid: Pid) -> Option<&Worker> {
        let mut w = self.live.get(&pid)?;
        while let Some(c) = w.vfork_child {
            w = self.live.get(&c)?;
        }
        Some(w)
    }

    /// After `child` exec'd or exited: the parent it kept asleep in vfork, if any, wakes and
    /// answers the vfork with the child's pid.
    fn vfork_done(&mut self, step: &Step, child: Pid, real: i32) -> Result<(), OracleError> {
        let Some((&parent, _)) = self.live.iter().find(|(_, w)| w.vfork_child == Some(child)) else {
            return Ok(());
        };
        let w = &self.live[&parent];
        let r = recv_reply(&w.chan, &w.pidfd, step.line)?;
        if r != real as i64 {
            return Err(OracleError::System(format!("vfork answered {r} in the parent, not {real}")));
        }
        if let Some(w) = self.live.get_mut(&parent) {
            w.vfork_child = None;
        }
        Ok(())
    }

    fn request(&self, step: &Step, cmd: &Cmd) -> Result<i64, OracleError> {
        let w = self.worker(step)?;
        send_cmd(&w.chan, cmd, step.line)?;
        recv_reply(&w.chan, &w.pidfd, step.line)
    }

    fn syscall(
        &self,
        step: &Step,
        nr: i64,
        args: &[u64],
        s: Option<(usize, &str)>,
    ) -> Result<i64, OracleError> {
        let mut cmd = Cmd::new(OP_SYSCALL);
        cmd.nr = nr as u64;
        cmd.args[..args.len()].copy_from_slice(args);
        if let Some((i, text)) = s {
            let b = text.as_bytes();
            if b.len() >= BUF_LEN {
                return Err(OracleError::Refused { line: step.line, reason: "string too long".into() });
            }
            cmd.buf[..b.len()].copy_from_slice(b);
            cmd.str_arg = i as u64;
        }
        self.request(step, &cmd)
    }

    /// Run one step; `fork_child` is the script pid a fork gives its child.
    pub(crate) fn step(&mut self, step: &Step, fork_child: Pid) -> Result<Expect, OracleError> {
        use libc::*;
        let ret = match &step.call {
            Call::Mmap { addr, len, prot, flags, fd, off } => {
                let r =
                    self.syscall(step, SYS_mmap, &[*addr, *len, *prot, *flags, *fd as u64, *off], None)?;
                self.check_placed(step, r, *len)?;
                r
            }
            Call::Munmap { addr, len } => self.syscall(step, SYS_munmap, &[*addr, *len], None)?,
            Call::Mprotect { addr, len, prot } => {
                self.syscall(step, SYS_mprotect, &[*addr, *len, *prot], None)?
            }
            Call::Madvise { addr, len, advice } => {
                self.syscall(step, SYS_madvise, &[*addr, *len, *advice], None)?
            }
            Call::Mlock { addr, len, flags: None } => self.syscall(step, SYS_mlock, &[*addr, *len], None)?,
            Call::Mlock { addr, len, flags: Some(f) } => {
                self.syscall(step, SYS_mlock2, &[*addr, *len, *f], None)?
            }
            Call::Munlock { addr, len } => self.syscall(step, SYS_munlock, &[*addr, *len], None)?,
            Call::Mlockall { flags } => self.syscall(step, SYS_mlockall, &[*flags], None)?,
            Call::Munlockall => self.syscall(step, SYS_munlockall, &[], None)?,
            Call::Mremap { old_addr, old_len, new_len, flags, new_addr } => {
                let r = self.syscall(
                    step,
                    SYS_mremap,
                    &[*old_addr, *old_len, *new_len, *flags, *new_addr],
                    None,
                )?;
                self.check_placed(step, r, *new_len)?;
                r
            }
            Call::SetVmaAnonName { addr, len, name } => {
                let args = [crate::abi::PR_SET_VMA, crate::abi::PR_SET_VMA_ANON_NAME, *addr, *len, 0];
                self.syscall(step, SYS_prctl, &args, name.as_deref().map(|n| (4, n)))?
            }
            Call::Openat { dirfd, path, flags, mode } => {
                let r =
                    self.syscall(step, SYS_openat, &[*dirfd as u64, 0, *flags, *mode], Some((1, path)))?;
                if r >= 0 {
                    let real = self.worker(step)?.real;
                    if let Ok(m) = std::fs::metadata(format!("/proc/{real}/fd/{r}")) {
                        let dev = m.dev();
                        self.ids.opened((major(dev), minor(dev)), m.ino(), path);
                    }
                }
                r
            }
            Call::Close { fd } => self.syscall(step, SYS_close, &[*fd as u64], None)?,
            Call::Dup { fd } => self.syscall(step, SYS_dup, &[*fd as u64], None)?,
            Call::Dup2 { oldfd, newfd } => {
                self.syscall(step, SYS_dup2, &[*oldfd as u64, *newfd as u64], None)?
            }
            Call::Ftruncate { fd, len } => self.syscall(step, SYS_ftruncate, &[*fd as u64, *len], None)?,
            Call::Touch { addr, len, write } => {
                let mut cmd = Cmd::new(OP_TOUCH);
                cmd.args[..3].copy_from_slice(&[*addr, *len, *write as u64]);
                cmd.line = step.line as u64;
                return match self.request(step, &cmd)? {
                    0 => Ok(Expect::Value(0)),
                    s if s == libc::SIGSEGV as i64 => Ok(Expect::Signal(Signal::SIGSEGV)),
                    s if s == libc::SIGBUS as i64 => Ok(Expect::Signal(Signal::SIGBUS)),
                    s => Err(OracleError::System(format!("touch: the worker answered {s}"))),
                };
            }
            Call::Pin { addr, len } | Call::Unpin { addr, len } => {
                let op = if matches!(step.call, Call::Pin { .. }) { OP_PIN } else { OP_UNPIN };
                let mut cmd = Cmd::new(op);
                cmd.args[..2].copy_from_slice(&[*addr, *len]);
                self.request(step, &cmd)?
            }
            Call::UffdRegister { addr, len, mode } => {
                let mut cmd = Cmd::new(OP_UFFD_REGISTER);
                cmd.args[..3].copy_from_slice(&[*addr, *len, *mode]);
                self.request(step, &cmd)?
            }
            Call::UffdUnregister { addr, len } => {
                let mut cmd = Cmd::new(OP_UFFD_UNREGISTER);
                cmd.args[..2].copy_from_slice(&[*addr, *len]);
                self.request(step, &cmd)?
            }
            Call::UffdioMove { dst, src, len, mode } => {
                let mut cmd = Cmd::new(OP_UFFD_MOVE);
                cmd.args[..4].copy_from_slice(&[*dst, *src, *len, *mode]);
                self.request(step, &cmd)?
            }
            Call::Fork { vfork: false } => return self.fork(step, fork_child),
            Call::Fork { vfork: true } => return self.vfork(step, fork_child),
            Call::Execve { .. } => return self.execve(step),
            Call::CloneVm { flags } => return self.clone_vm(step, fork_child, *flags),
            Call::ExitGroup { code } => {
                self.exit(step, *code)?;
                return Ok(Expect::Unknown);
            }
            Call::Brk { addr } => {
                if !self.brk_ok {
                    return Err(OracleError::Refused {
                        line: step.line,
                        reason: "brk: prctl(PR_SET_MM_MAP) could not move the worker's break into \
                                 the window (needs CONFIG_CHECKPOINT_RESTORE)"
                            .into(),
                    });
                }
                self.syscall(step, SYS_brk, &[*addr], None)?
            }
            Call::MapRecord(..) | Call::VmaRecord(..) | Call::Migrate { .. } | Call::MigrateDone { .. } => {
                return Err(OracleError::Refused {
                    line: step.line,
                    reason: format!("{} is not supported by the oracle", step.call.name()),
                });
            }
        };
        to_expect(ret)
    }

    /// A successful mmap/mremap must land in the window, or nothing can be compared.
    fn check_placed(&self, step: &Step, ret: i64, len: u64) -> Result<(), OracleError> {
        if ret < 0 {
            return Ok(());
        }
        let a = ret as u64;
        if a < WINDOW_START || a.saturating_add(len) > WINDOW_END {
            return Err(OracleError::Refused {
                line: step.line,
                reason: format!(
                    "the kernel placed the mapping at {a:#x}, outside the window (the hint was \
                     taken or the mapping moved): cannot be compared"
                ),
            });
        }
        Ok(())
    }

    /// The channel of a task `call` is about to make as `child`: refused when `child` lives,
    /// else the next unused channel (`what` names the task in the error when none is left).
    fn new_task_channel(
        &mut self,
        step: &Step,
        child: Pid,
        call: &str,
        what: &str,
    ) -> Result<(usize, OwnedFd), OracleError> {
        if self.live.contains_key(&child) {
            return Err(OracleError::BadInput {
                line: step.line,
                reason: format!("{call} would create process {child}, which exists"),
            });
        }
        let idx = self.next_chan;
        let chan = self
            .chans
            .get_mut(idx)
            .and_then(Option::take)
            .ok_or_else(|| OracleError::System(format!("no channel left for the new {what}")))?;
        self.next_chan += 1;
        Ok((idx, chan))
    }

    fn fork(&mut self, step: &Step, child: Pid) -> Result<Expect, OracleError> {
        let (idx, chan) = self.new_task_channel(step, child, "fork", "process")?;
        let mut cmd = Cmd::new(OP_FORK);
        cmd.args[0] = (self.high - idx as i32) as u64;
        let r = self.request(step, &cmd)?;
        if r < 0 {
            return to_expect(r);
        }
        let real = r as i32;
        let pidfd = pidfd_open(real)?;
        let hello = recv_reply(&chan, &pidfd, step.line)?;
        if hello != r {
            return Err(OracleError::System(format!("fork child said hello as {hello}, not {r}")));
        }
        self.live.insert(
            child,
            Worker { real, pidfd, chan, wfd: self.high - idx as i32, direct_child: false, vfork_child: None },
        );
        self.order.push(child);
        Ok(Expect::Value(child.0 as u64))
    }

    /// A script `clone` with `CLONE_VM`: the worker really clones with the script's flags
    /// (see `worker::OP_CLONE`), and the new task serves the child's calls, so what it does to
    /// the shared mm and descriptor table happens on the kernel.
    fn clone_vm(&mut self, step: &Step, child: Pid, flags: u64) -> Result<Expect, OracleError> {
        // What the model refuses is refused here too, once the kernel's own EINVAL checks pass
        // (the script gives no tid or pidfd pointers to run it with).
        if let Some(what) = crate::fork::clone_not_modelled(flags)
            && !crate::fork::clone_flags_invalid(flags)
        {
            return Err(OracleError::Refused { line: step.line, reason: what.to_string() });
        }
        let (idx, chan) = self.new_task_channel(step, child, "clone", "task")?;
        let mut cmd = Cmd::new(OP_CLONE);
        cmd.args[0] = (self.high - idx as i32) as u64;
        cmd.args[1] = flags;
        let r = self.request(step, &cmd)?;
        if r < 0 {
            return to_expect(r);
        }
        let real = r as i32;
        // A thread needs a thread pidfd (its tid is no thread group's); a process sharing the
        // mm gets the usual one.
        let pidfd = if flags & crate::abi::CLONE_THREAD != 0 {
            pidfd_open_flags(real, PIDFD_THREAD).map_err(|e| OracleError::Refused {
                line: step.line,
                reason: format!("threads need pidfd_open(PIDFD_THREAD) (Linux 6.9+): {e}"),
            })?
        } else {
            pidfd_open(real)?
        };
        let hello = recv_reply(&chan, &pidfd, step.line)?;
        if hello != r {
            return Err(OracleError::System(format!("clone child said hello as {hello}, not {r}")));
        }
        self.live.insert(
            child,
            Worker { real, pidfd, chan, wfd: self.high - idx as i32, direct_child: false, vfork_child: None },
        );
        self.order.push(child);
        Ok(Expect::Value(child.0 as u64))
    }

    /// A script `vfork`: the worker clones with `CLONE_VM | CLONE_VFORK` (see
    /// `worker::OP_VFORK`) and sleeps in the kernel; the child's hello is the call's result.
    /// The parent's own answer comes when the child execs or exits ([`Self::vfork_done`]).
    fn vfork(&mut self, step: &Step, child: Pid) -> Result<Expect, OracleError> {
        let (idx, chan) = self.new_task_channel(step, child, "vfork", "process")?;
        let mut cmd = Cmd::new(OP_VFORK);
        cmd.args[0] = (self.high - idx as i32) as u64;
        let w = self.worker(step)?;
        send_cmd(&w.chan, &cmd, step.line)?;
        // The child says hello on its channel; a failed clone answers on the parent's.
        let mut fds = [
            libc::pollfd { fd: chan.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: w.chan.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        loop {
            // SAFETY: two valid pollfds.
            let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, CALL_TIMEOUT_MS) };
            if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            if r <= 0 {
                return Err(OracleError::WorkerDied { line: step.line, reason: "vfork: no answer".into() });
            }
            break;
        }
        if fds[0].revents & libc::POLLIN == 0 {
            let r = recv_reply(&w.chan, &w.pidfd, step.line)?;
            if r >= 0 {
                return Err(OracleError::System(format!("vfork returned {r} before its child said hello")));
            }
            return to_expect(r);
        }
        // The pid comes before the pidfd: nothing can reap the child while its parent sleeps.
        let mut rep = Reply::default();
        // SAFETY: receives a plain repr(C) value.
        let n = unsafe {
            libc::recv(chan.as_raw_fd(), &mut rep as *mut Reply as *mut libc::c_void, size_of::<Reply>(), 0)
        };
        if n != size_of::<Reply>() as isize || rep.ret <= 0 {
            return Err(OracleError::WorkerDied {
                line: step.line,
                reason: "vfork child said no hello".into(),
            });
        }
        let real = rep.ret as i32;
        let pidfd = pidfd_open(real)?;
        if let Some(w) = self.live.get_mut(&step.pid) {
            w.vfork_child = Some(child);
        }
        self.live.insert(
            child,
            Worker { real, pidfd, chan, wfd: self.high - idx as i32, direct_child: false, vfork_child: None },
        );
        self.order.push(child);
        Ok(Expect::Value(child.0 as u64))
    }

    /// A script `execve`: the worker execs its own binary, which comes back as a fresh worker
    /// on the same channel (see `worker::OP_EXECVE`); the script's path is not used (the model
    /// maps nothing of the new image into the window, and the kernel's image lies outside
    /// it). A vfork parent waiting for this task wakes.
    fn execve(&mut self, step: &Step) -> Result<Expect, OracleError> {
        let mut cmd = Cmd::new(OP_EXECVE);
        let w = self.worker(step)?;
        let env = format!("{EXEC_ENV}={}", w.wfd);
        cmd.buf[..env.len()].copy_from_slice(env.as_bytes());
        let real = w.real;
        let r = self.request(step, &cmd)?;
        if r < 0 {
            return to_expect(r);
        }
        if r != real as i64 {
            return Err(OracleError::System(format!("the exec'd worker said hello as {r}, not {real}")));
        }
        if self.brk_ok && start_brk_of(real) != Some(crate::mm::DEFAULT_START_BRK) {
            return Err(OracleError::System(
                "the exec'd worker could not move its break into the window".into(),
            ));
        }
        self.vfork_done(step, step.pid, real)?;
        Ok(Expect::Value(0))
    }

    fn exit(&mut self, step: &Step, code: i64) -> Result<(), OracleError> {
        let mut cmd = Cmd::new(OP_EXIT);
        cmd.args[0] = code as u64;
        let w = self.worker(step)?;
        send_cmd(&w.chan, &cmd, step.line)?;
        if !wait_readable(&w.pidfd, CALL_TIMEOUT_MS) {
            return Err(OracleError::WorkerDied {
                line: step.line,
                reason: "exit_group did not end the process".into(),
            });
        }
        if let Some(w) = self.live.remove(&step.pid) {
            reap(&w);
            self.vfork_done(step, step.pid, w.real)?;
        }
        Ok(())
    }

    /// The state of every live process, by script pid.
    pub(crate) fn snapshot(&mut self) -> Result<BTreeMap<Pid, RawProc>, OracleError> {
        let mut out = BTreeMap::new();
        for (&pid, w) in &self.live {
            let lines = read_maps(w.real)?;
            let pm = File::open(format!("/proc/{}/pagemap", w.real))
                .map_err(|e| OracleError::sys("opening pagemap", e))?;
            let mem = File::open(format!("/proc/{}/mem", w.real))
                .map_err(|e| OracleError::sys("opening /proc/PID/mem", e))?;
            let mut p = RawProc::default();
            let mut v: Vec<RawPte> = Vec::new();
            for l in lines.iter().filter(|l| l.in_window()) {
                p.maps.push(self.ids.normalise(l));
                if self.smaps {
                    p.smaps.push(crate::smaps::Smaps {
                        header: self.ids.normalise(l),
                        start: l.start,
                        end: l.end,
                        ..Default::default()
                    });
                }
                let (s, e) = (l.start.max(WINDOW_START), l.end.min(WINDOW_END));
                let entries = read_pagemap(&pm, s, e)?;
                let first = v.len();
                ptes(&entries, s, self.probe.zero_pfn, &mut v)?;
                if l.readable() {
                    let reader = self.awake_sharer(pid).unwrap_or(w);
                    worker_tags(reader, &mut v[first..])?;
                } else {
                    for pte in v[first..].iter_mut().filter(|p| matches!(p.page, RawPage::Id(_))) {
                        pte.tag = read_tag(&mem, pte.addr)?;
                    }
                }
            }
            p.ptes = v;
            if self.smaps {
                read_smaps(w.real, &mut p.smaps)?;
            }
            if self.internal {
                p.internal = Some(super::kmod::read(w.real, WINDOW_START, WINDOW_END)?);
            }
            out.insert(pid, p);
        }
        Ok(out)
    }
}

/// Fill in the tags of the present (non-zero-page) PTEs of one accessible VMA: the worker
/// reads them itself, up to `TAGS_MAX` pages per request.
fn worker_tags(w: &Worker, ptes: &mut [RawPte]) -> Result<(), OracleError> {
    let mut i = 0;
    let mut tags = vec![0u64; TAGS_MAX];
    while i < ptes.len() {
        if !matches!(ptes[i].page, RawPage::Id(_)) {
            i += 1;
            continue;
        }
        let base = ptes[i].addr;
        let limit = base + ((TAGS_MAX as u64) << 12);
        let mut cmd = Cmd::new(OP_TAGS);
        let mut j = i;
        let mut n = 0;
        while j < ptes.len() && ptes[j].addr < limit {
            if matches!(ptes[j].page, RawPage::Id(_)) {
                let k = ((ptes[j].addr - base) >> 12) as usize;
                cmd.buf[k / 8] |= 1 << (k % 8);
                n = k + 1;
            }
            j += 1;
        }
        cmd.args[0] = base;
        cmd.args[1] = n as u64;
        send_cmd(&w.chan, &cmd, 0)?;
        // SAFETY: u64s are plain old data.
        let bytes = unsafe { std::slice::from_raw_parts_mut(tags.as_mut_ptr() as *mut u8, TAGS_MAX * 8) };
        if recv_bytes(&w.chan, &w.pidfd, 0, bytes)? != n * 8 {
            return Err(OracleError::WorkerDied { line: 0, reason: "short tag answer".into() });
        }
        for pte in &mut ptes[i..j] {
            if matches!(pte.page, RawPage::Id(_)) {
                pte.tag = tags[((pte.addr - base) >> 12) as usize];
            }
        }
        i = j;
    }
    Ok(())
}

fn reap(w: &Worker) {
    if w.direct_child {
        // SAFETY: reaps our own child.
        unsafe {
            libc::waitpid(w.real, std::ptr::null_mut(), 0);
        }
    } else {
        // A clone with CLONE_PARENT by process 1 made a child of ours: reap it too (ECHILD,
        // harmlessly, for every other task).
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid on a pidfd we own, writing one siginfo_t.
        unsafe {
            libc::waitid(
                libc::P_PIDFD,
                w.pidfd.as_raw_fd() as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG,
            );
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        // Children before parents, so that worker parents reap them.
        for pid in self.order.iter().rev() {
            if let Some(w) = self.live.remove(pid) {
                // SAFETY: signals through a pidfd we own: no pid reuse race.
                unsafe {
                    libc::syscall(libc::SYS_pidfd_send_signal, w.pidfd.as_raw_fd(), libc::SIGKILL, 0, 0);
                }
                wait_readable(&w.pidfd, 10_000);
                reap(&w);
            }
        }
    }
}

/// Fill in the window's smaps entries (their headers already normalised from the maps
/// read just before; the worker is idle, so nothing changed in between) from
/// `/proc/PID/smaps`.
fn read_smaps(real: i32, entries: &mut [crate::smaps::Smaps]) -> Result<(), OracleError> {
    let text = std::fs::read_to_string(format!("/proc/{real}/smaps"))
        .map_err(|e| OracleError::sys("reading /proc/PID/smaps", e))?;
    let mut kernel =
        crate::smaps::parse_smaps(&text).into_iter().filter(|k| k.start < WINDOW_END && k.end > WINDOW_START);
    for e in entries.iter_mut() {
        let Some(k) = kernel.next() else {
            return Err(OracleError::System("smaps lists fewer VMAs than maps".into()));
        };
        if (k.start, k.end) != (e.start, e.end) {
            return Err(OracleError::System(format!("smaps and maps disagree at {:#x}", e.start)));
        }
        let header = std::mem::take(&mut e.header);
        *e = crate::smaps::Smaps { header, ..k };
    }
    Ok(())
}
