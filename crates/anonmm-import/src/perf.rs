//! Import `perf script` text (as `shared/record.sh` records it) into the script AST.
//!
//! A perf line is `COMM PID/TID TIME: EVENT PAYLOAD`. COMM may hold spaces, so the first
//! `PID/TID TIME:` pair is the anchor. The conversion, in short:
//!
//! - `syscalls:sys_enter_X` and the next `sys_exit_X` of the same tid become one step (at the
//!   position of the exit, with the enter's line and the exit's value as the result; a negative
//!   value is an errno). A step's pid is the tid: threads are separate script pids sharing an mm.
//! - `sched:sched_process_fork` is a `fork()`, or a thread (`clone(CLONE_VM|CLONE_THREAD)`) when
//!   the child's own lines show it in the parent's thread group (`PARENT/CHILD`).
//! - `sched:sched_process_exec` is an `execve` of its `filename=`, followed by the
//!   `PERF_RECORD_MMAP2` lines the exec made (they come before the exec event) as `map_record`s.
//! - `PERF_RECORD_MMAP2` during an `mmap` names the file behind the fd; `openat` only shows a
//!   pointer, so its path is taken from there (or is a synthetic `fd3@line123`).
//! - `exceptions:page_fault_user` is a one-page `touch`, a write when `error_code & 2`.
//! - `sched:sched_process_exit` is an `exit_group(0) = ?` when the task made no exit call.
//!
//! Everything else is counted in the report (`skipped`, by reason) and in `Script::skipped`.
//! Bad input never panics: garbled lines are counted and listed in `ImportReport::problems`;
//! only text that is no perf output at all, or an unreadable file, is an `ImportError`.

use std::collections::{BTreeMap, BTreeSet};

// Fx hashing: these maps are consulted once or twice per line of million-line traces.
use rustc_hash::FxHashMap as HashMap;
use std::io::Read;
use std::path::Path;

use serde::Serialize;

use crate::abi;
use crate::errno::Errno;
use crate::lines::*;
use crate::script::{Call, Expect, ParseOptions, RecordedVma, Script, Step, format_call, parse_str_with};
use crate::types::Pid;

/// Why a trace could not be imported at all.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}", crate::out::location(.path, *.line))]
pub struct ImportError {
    /// The trace's path.
    pub path: String,
    /// 1-based; 0 when the problem is the file as a whole.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// What an import made of a trace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// `perf` or `strace`.
    pub format: String,
    /// Event lines read (perf), or call lines (strace).
    pub events: u64,
    /// Steps in the script.
    pub steps: u64,
    /// What was not turned into a step, by reason.
    pub skipped: BTreeMap<String, u64>,
    /// Steps kept without all their information (a syscall whose exit is missing), by reason.
    pub incomplete: BTreeMap<String, u64>,
    /// Events perf says it lost (`PERF_RECORD_LOST` and friends).
    pub lost: u64,
    /// Thread groups (processes) seen.
    pub processes: u64,
    /// Tasks that are not their group's leader.
    pub threads: u64,
    /// The first garbled lines, as `file:line: reason` (and a truncated zstd stream, and
    /// lost events): the trace's damage.
    pub problems: Vec<String>,
    /// The first line of damage (a garbled line, lost events): what the model does from
    /// there on may be the damage's doing. None when the trace is whole (or only its end
    /// is missing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub damaged_from: Option<usize>,
    /// PERF_RECORD_MMAP2 records of the kernel's VMA after an mmap, mprotect or brk, kept
    /// as `vma_record` steps for replay to compare with the model's.
    pub vma_records: u64,
}

impl ImportReport {
    /// Whether the trace is damaged: garbled lines or events cut in half, lost events, a
    /// truncated or corrupt zstd stream.
    pub fn damaged(&self) -> bool {
        !self.problems.is_empty() || self.lost > 0
    }

    /// Damage at `line`.
    fn damage_at(&mut self, line: usize) {
        self.damaged_from = Some(self.damaged_from.map_or(line, |d| d.min(line)));
    }

    /// The zstd stream stopped early with `e`: what was decompressed is kept.
    pub(crate) fn zstd_cut(&mut self, name: &str, e: &str) {
        *self.skipped.entry("rest of a truncated or corrupt zstd stream".to_string()).or_default() += 1;
        self.problems.push(format!("{name}:0: zstd: {e}"));
    }
}

/// How many garbled lines `ImportReport::problems` lists.
const MAX_PROBLEMS: usize = 20;

/// Read a trace: `perf script` text or a strace/anonmm script, zstd-compressed or not.
pub fn read_trace(path: &Path) -> Result<(Script, ImportReport), ImportError> {
    let (name, bytes) = read_input(path)?;
    read_trace_bytes(&name, path.extension().is_some_and(|e| e == "zst"), bytes)
}

/// The name messages give `path`, and its bytes, read once.
pub(crate) fn read_input(path: &Path) -> Result<(String, Vec<u8>), ImportError> {
    let name = path.display().to_string();
    match std::fs::read(path) {
        Ok(bytes) => Ok((name, bytes)),
        Err(e) => Err(ImportError { path: name, line: 0, reason: format!("cannot read: {e}") }),
    }
}

/// [`read_trace`] of a file's bytes, read already; `name` names it in messages, `zst_name`
/// says whether its name ends in `.zst`.
pub(crate) fn read_trace_bytes(
    name: &str,
    zst_name: bool,
    bytes: Vec<u8>,
) -> Result<(Script, ImportReport), ImportError> {
    let name = name.to_string();
    let err = |line: usize, reason: String| ImportError { path: name.clone(), line, reason };
    let mut zst_problem = None;
    let bytes = if bytes.starts_with(&ZSTD_MAGIC) {
        let (out, e) = decompress(&bytes);
        match e {
            Some(e) if out.is_empty() => return Err(err(0, format!("cannot decompress: {e}"))),
            Some(e) => zst_problem = Some(e),
            None => {}
        }
        out
    } else if zst_name {
        return Err(err(0, "named .zst but not zstd-compressed".to_string()));
    } else {
        bytes
    };
    if super::perf_data::is_perf_data(&bytes) {
        // Straight from the records, as its `perf script` text would convert.
        let (script, mut report) = super::perf_data::import(&name, bytes).map_err(|e| err(0, e))?;
        if let Some(e) = zst_problem {
            report.zstd_cut(&name, &e);
        }
        return Ok((script, report));
    }
    // Valid UTF-8 (every real trace) is borrowed as it is; the lossy pass is much slower.
    let text = match std::str::from_utf8(&bytes) {
        Ok(t) => std::borrow::Cow::Borrowed(t),
        Err(_) => String::from_utf8_lossy(&bytes),
    };
    if text.trim().is_empty() {
        return Err(err(0, "empty trace".to_string()));
    }
    let (script, mut report) = if looks_like_perf(&text) {
        parse_perf(&name, &text)?
    } else if let Some(line) = perf_without_tid(&text) {
        return Err(err(line, PERF_FIELDS.to_string()));
    } else {
        let s =
            parse_str_with(&name, &text, &ParseOptions { skip_unknown: true }).map_err(|e| ImportError {
                path: e.path,
                line: e.line,
                reason: format!("neither `perf script` text nor a strace script: {}", e.reason),
            })?;
        let r = strace_report(&text, &s);
        (s, r)
    };
    if let Some(e) = zst_problem {
        // A recording cut short: keep what was decompressed, and say so.
        report.zstd_cut(&name, &e);
    }
    Ok((script, report))
}

/// The four bytes a zstd frame starts with.
pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Decompress as much as can be: the output, and the error that stopped it, if any.
fn decompress(bytes: &[u8]) -> (Vec<u8>, Option<String>) {
    // The frame says how big the text is when the writer knew; else guess from a typical
    // ratio. Growing a vector of hundreds of MiB by doubling was a tenth of an import.
    let size = zstd::zstd_safe::get_frame_content_size(bytes).ok().flatten();
    let mut out =
        Vec::with_capacity(size.map_or(bytes.len().saturating_mul(12), |s| s as usize).min(1 << 32));
    let mut dec = match zstd::stream::read::Decoder::new(bytes) {
        Ok(d) => d,
        Err(e) => return (out, Some(e.to_string())),
    };
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match dec.read(&mut buf) {
            Ok(0) => return (out, None),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return (out, Some(e.to_string())),
        }
    }
}

/// Whether one of the first non-empty lines is a perf event line.
pub(crate) fn looks_like_perf(text: &str) -> bool {
    text.lines().filter(|l| !l.trim().is_empty()).take(50).any(|l| split_header(l).is_some())
}

/// What `import` says of `perf script` text that lacks the fields it reads.
pub(crate) const PERF_FIELDS: &str = "`perf script` text without the PID/TID field: anonmm reads \
     `perf script --show-mmap-events -F comm,pid,tid,time,event,trace` (what `anonmm record` \
     writes; perf's default fields have no TID and add others)";

/// The line of the first of the first non-empty lines that is `perf script` output with
/// perf's default fields (`COMM PID [CPU] TIME: EVENT`) or another set without the TID.
pub(crate) fn perf_without_tid(text: &str) -> Option<usize> {
    let lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()).take(50);
    for (i, l) in lines {
        let words: Vec<&str> = l.split_whitespace().collect();
        let Some(t) = words.iter().position(|w| is_time_colon(w)) else { continue };
        let digits = |w: &str| !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit());
        let cpu = |w: &str| w.strip_prefix('[').and_then(|w| w.strip_suffix(']')).is_some_and(digits);
        let pid_before = match t {
            0 => false,
            _ if cpu(words[t - 1]) => t >= 2 && digits(words[t - 2]),
            _ => digits(words[t - 1]),
        };
        // An event (`system:name:` or `PERF_RECORD_...`) after the time.
        let event = words.get(t + 1).is_some_and(|e| e.ends_with(':') || e.starts_with("PERF_RECORD_"));
        if pid_before && event {
            return Some(i + 1);
        }
    }
    None
}

fn strace_report(text: &str, s: &Script) -> ImportReport {
    let mut r =
        ImportReport { format: "strace".to_string(), steps: s.steps.len() as u64, ..Default::default() };
    r.events = text
        .lines()
        .filter(|l| {
            let l = l.trim();
            !l.is_empty() && !l.starts_with('#')
        })
        .count() as u64;
    for (_, name) in &s.skipped {
        *r.skipped.entry(name.clone()).or_default() += 1;
    }
    let pids: BTreeSet<Pid> = s.steps.iter().map(|s| s.pid).collect();
    r.processes = pids.len() as u64;
    r
}

// ---------------------------------------------------------------------------------------------
// Conversion

/// A perf.data record, typed: what its line of `perf script` text would say, for
/// [`Conv::event`]. Each is made only where that line would convert the same way.
pub(crate) enum Event<'e> {
    /// `exceptions:page_fault_user`: the address and the x86 error code.
    Fault { addr: u64, code: u64 },
    /// `syscalls:sys_enter_NAME` with its arguments as the print format names them.
    SysEnter { name: &'e str, args: &'e [(&'e str, u64)] },
    /// `syscalls:sys_exit_NAME` with its return value.
    SysExit { name: &'e str, ret: u64 },
    /// `sched:sched_process_fork` of a child (not 0).
    Fork { child: u32 },
    /// `sched:sched_process_exec` of a file (not empty), from `old_pid` if positive.
    Exec { path: &'e str, old_pid: Option<u32> },
    /// `sched:sched_process_exit`.
    Exit,
    /// Another event, by its `system:name`.
    Other(&'e str),
    /// `PERF_RECORD_MMAP2`.
    Mmap2(MapRec),
    /// Another `PERF_RECORD_*` line (`MMAP`), by what follows `PERF_RECORD_`.
    Record(&'e str),
}

/// What a recorded `sys_enter` will become when its exit comes.
#[derive(Debug)]
enum Kind {
    Call(Call),
    Execve,
    /// clone/clone3 with its flags (0 when unknown).
    Clone(u64),
    /// Counted as skipped already; the exit is only consumed.
    Skip,
}

#[derive(Debug)]
struct Pending {
    line: usize,
    name: String,
    kind: Kind,
    /// The file record perf made during an `mmap`.
    rec: Option<MapRec>,
    /// The records of the kernel's VMA perf made during an mmap, mprotect or brk, with
    /// their lines.
    vma_recs: Vec<(usize, MapRec)>,
    /// `dup3`/`openat` O_CLOEXEC.
    cloexec: bool,
}

#[derive(Debug, Default)]
struct Task {
    tgid: u32,
    /// Index in `Conv::fd_tables`.
    fdt: usize,
    pending: Option<Pending>,
    /// Records seen outside an mmap, waiting for the exec they belong to.
    exec_recs: Vec<(usize, MapRec)>,
    /// The Execve step waiting for its `sys_exit_execve`.
    exec_step: Option<usize>,
    exited: bool,
}

#[derive(Clone, Copy, Debug)]
struct FdEnt {
    file: usize,
    cloexec: bool,
}

#[derive(Debug)]
struct FileEnt {
    path: String,
    synthetic: bool,
    /// The Openat step that names it, while an mmap may still name it.
    open_step: Option<usize>,
    /// Entries of live fd tables that refer to it: at 0 no later mmap can name it.
    refs: u32,
}

/// A file descriptor table, shared by the tasks that use it.
#[derive(Debug, Default)]
struct FdTable {
    fds: HashMap<i64, FdEnt>,
    /// Tasks whose `fdt` it is; at 0 nothing can reach it again.
    users: u32,
}

pub(crate) struct Conv<'a> {
    path: &'a str,
    /// The steps made and not yet handed on; `steps[0]` is step number `base`. They are
    /// kept as a stream hands them on, so that a page fault is written once, in 32 bytes.
    pub(crate) steps: Vec<Streamed>,
    pub(crate) base: usize,
    /// Steps a later line may still edit: an exec's result (until its task's next
    /// `sys_exit`) and an openat's path (until an mmap names its file or no fd refers to it).
    /// A streaming import hands on only the steps before the first of these.
    held: BTreeSet<usize>,
    /// A streaming import hands on a held step anyway once this many steps came after it
    /// (the converter's memory stays bounded when, say, a file opened at the start stays
    /// open unnamed); `spoiled` says if a line then edited a step already handed on.
    pub(crate) hold_limit: usize,
    pub(crate) spoiled: bool,
    skipped: Vec<(usize, String)>,
    report: ImportReport,
    tasks: HashMap<u32, Task>,
    /// Thread group of every tid, from the first line with its `PID/TID`. A batch import
    /// knows every line's; a streaming one reads ahead until the tid asked for is known.
    pub(crate) tgid_of: HashMap<u32, u32>,
    /// A streaming import's reader, asked to read ahead for a tid no line has shown yet.
    pub(crate) ahead: Option<Box<dyn ReadAhead>>,
    /// Leave the text of steps empty (a streaming import: [`Step::call_text`] formats it
    /// when a report asks, which few do; formatting every call cost a streamed replay a
    /// tenth of its import thread).
    pub(crate) lazy_text: bool,
    fd_tables: Vec<FdTable>,
    files: Vec<FileEnt>,
    /// File names given out, with the (dev, ino) they stand for.
    names: HashMap<String, (u64, u64)>,
}

/// Parse `perf script` text into a script of the same events.
pub fn parse_perf(path: &str, text: &str) -> Result<(Script, ImportReport), ImportError> {
    let mut c = Conv::new(path);
    // Pass 1: which tid is in which thread group (a fork's child is only known later).
    let mut first_text = None;
    let mut any = false;
    let lines: Vec<&str> = text.lines().collect();
    let headers = headers_of(&lines);
    c.steps.reserve(lines.len());
    for (i, (raw, h)) in lines.iter().zip(&headers).enumerate() {
        match h {
            Some(h) => {
                any = true;
                if h.tid != 0 {
                    c.tgid_of.entry(h.tid).or_insert(h.pid);
                }
            }
            None if !raw.trim().is_empty() => {
                first_text.get_or_insert(i + 1);
            }
            None => {}
        }
    }
    if !any {
        return Err(ImportError {
            path: path.to_string(),
            line: first_text.unwrap_or(0),
            reason: if first_text.is_some() {
                "not `perf script` text: no line of the form `COMM PID/TID TIME: EVENT`".to_string()
            } else {
                "empty trace".to_string()
            },
        });
    }
    // Pass 2: convert.
    for (i, (raw, h)) in lines.iter().zip(headers).enumerate() {
        c.line(i + 1, raw, h);
    }
    c.finish();
    let report = c.final_report();
    Ok((c.into_script(), report))
}

const NOT_IN_AST: &[&str] =
    &["mlock", "mlock2", "munlock", "mlockall", "munlockall", "memfd_create", "shmat", "shmdt"];

impl<'a> Conv<'a> {
    pub(crate) fn new(path: &'a str) -> Conv<'a> {
        Conv {
            path,
            steps: Vec::new(),
            base: 0,
            held: BTreeSet::new(),
            hold_limit: usize::MAX,
            spoiled: false,
            skipped: Vec::new(),
            report: ImportReport { format: "perf".to_string(), ..Default::default() },
            tasks: HashMap::default(),
            tgid_of: HashMap::default(),
            ahead: None,
            lazy_text: false,
            fd_tables: Vec::new(),
            files: Vec::new(),
            names: HashMap::default(),
        }
    }

    /// The report, once every line is converted and `finish` ran.
    pub(crate) fn final_report(&mut self) -> ImportReport {
        let mut report = std::mem::take(&mut self.report);
        report.steps = (self.base + self.steps.len()) as u64;
        let mut groups = BTreeSet::new();
        for (&tid, t) in &self.tasks {
            groups.insert(t.tgid);
            if t.tgid != tid {
                report.threads += 1;
            }
        }
        report.processes = groups.len() as u64;
        report
    }

    /// How many of `steps` to hand on: those no later line can change, and those held for
    /// longer than `hold_limit` steps.
    pub(crate) fn releasable(&self) -> usize {
        let fin = self.held.first().map_or(self.steps.len(), |&h| h - self.base);
        fin.max(self.steps.len().saturating_sub(self.hold_limit))
    }

    /// The first `n` steps were handed on (and drained from `steps`).
    pub(crate) fn handed_on(&mut self, n: usize) {
        self.base += n;
        // Steps handed on while held are no longer waited for.
        while self.held.first().is_some_and(|&h| h < self.base) {
            self.held.pop_first();
        }
    }

    /// Step number `i`, to edit it; None (and `spoiled`) if it was handed on already.
    fn step_mut(&mut self, i: usize) -> Option<&mut Step> {
        if i < self.base {
            self.spoiled = true;
            return None;
        }
        self.steps.get_mut(i - self.base).and_then(Streamed::as_step_mut)
    }

    /// A new fd table holding `fds`, used by no task yet.
    fn new_table(&mut self, fds: HashMap<i64, FdEnt>) -> usize {
        for e in fds.values() {
            self.files[e.file].refs += 1;
        }
        self.fd_tables.push(FdTable { fds, users: 0 });
        self.fd_tables.len() - 1
    }

    /// A task stopped using fd table `fdt` (it exec'd, or its tid was given to a new task).
    fn drop_table_user(&mut self, fdt: usize) {
        let t = &mut self.fd_tables[fdt];
        t.users = t.users.saturating_sub(1);
        if t.users == 0 {
            let fds = std::mem::take(&mut t.fds);
            for e in fds.values() {
                self.unref_file(e.file);
            }
        }
    }

    fn fd_set(&mut self, fdt: usize, fd: i64, e: FdEnt) {
        self.files[e.file].refs += 1;
        if let Some(old) = self.fd_tables[fdt].fds.insert(fd, e) {
            self.unref_file(old.file);
        }
    }

    fn fd_close(&mut self, fdt: usize, fd: i64) {
        if let Some(old) = self.fd_tables[fdt].fds.remove(&fd) {
            self.unref_file(old.file);
        }
    }

    fn unref_file(&mut self, file: usize) {
        let f = &mut self.files[file];
        f.refs -= 1;
        if f.refs == 0
            && let Some(step) = f.open_step.take()
        {
            self.held.remove(&step);
        }
    }

    /// A task's new Task replaces `old` (fork to a tid seen before).
    fn drop_task(&mut self, old: Task) {
        if let Some(step) = old.exec_step {
            self.held.remove(&step);
        }
        self.drop_table_user(old.fdt);
    }

    fn skip(&mut self, line: usize, reason: impl Into<String>) {
        let reason = reason.into();
        *self.report.skipped.entry(reason.clone()).or_default() += 1;
        self.skipped.push((line, reason));
    }

    fn incomplete(&mut self, reason: String) {
        *self.report.incomplete.entry(reason).or_default() += 1;
    }

    /// A garbled line or event: counted as skipped under `reason`, listed with `detail`.
    fn garbled(&mut self, line: usize, reason: String, detail: &str) {
        self.report.damage_at(line);
        if self.report.problems.len() < MAX_PROBLEMS {
            // Garbage may hold control characters: shown escaped.
            self.report.problems.push(format!("{}:{line}: {reason}: {}", self.path, detail.escape_debug()));
        }
        self.skip(line, reason);
    }

    /// The thread group of `tid`, from the first line that shows it (reading ahead if it
    /// takes that).
    fn tgid(&mut self, tid: u32) -> Option<u32> {
        loop {
            if let Some(&g) = self.tgid_of.get(&tid) {
                return Some(g);
            }
            if !self.ahead.as_mut()?.read_ahead(&mut self.tgid_of) {
                return None;
            }
        }
    }

    fn task(&mut self, tid: u32) -> &mut Task {
        if !self.tasks.contains_key(&tid) {
            let tgid = self.tgid(tid).unwrap_or(tid);
            // A thread whose group leader is known shares its fd table.
            let fdt = match self.tasks.get(&tgid) {
                Some(t) if tgid != tid => t.fdt,
                _ => self.new_table(HashMap::default()),
            };
            self.fd_tables[fdt].users += 1;
            self.tasks.insert(tid, Task { tgid, fdt, ..Default::default() });
        }
        self.tasks.get_mut(&tid).expect("inserted above")
    }

    fn push(&mut self, line: usize, tid: u32, call: Call, expect: Option<Expect>) -> usize {
        // Page faults are most of a trace: their text is made only if a report needs it.
        let text = if self.lazy_text || matches!(call, Call::Touch { .. }) {
            String::new()
        } else {
            format_call(&call)
        };
        self.steps.push(Streamed::of(Step { line, pid: Pid(tid), text, call, expect }));
        self.base + self.steps.len() - 1
    }

    /// Convert one perf line (`h` its header, None if it has none).
    #[inline]
    pub(crate) fn line(&mut self, line: usize, raw: &str, h: Option<Header<'_>>) {
        // Most lines: a page fault, inline in the reading loop.
        if let Some(Header { tid, fault: Some((addr, code)), .. }) = h
            && tid != 0
        {
            return self.fault_line(line, tid, addr, code);
        }
        self.other_line(line, raw, h);
    }

    /// [`Conv::line`] of a page fault's line of task `tid` (not 0), read by its header.
    #[inline]
    pub(crate) fn fault_line(&mut self, line: usize, tid: u32, addr: u64, code: u64) {
        self.report.events += 1;
        self.user_event(tid);
        self.fault_at(line, tid, addr, code);
    }

    /// [`Conv::line`] of any line but a page fault's.
    #[inline(never)]
    fn other_line(&mut self, line: usize, raw: &str, h: Option<Header<'_>>) {
        let Some(h) = h else {
            if raw.trim().is_empty() {
                return;
            }
            self.garbled(line, "garbled line".to_string(), raw.trim());
            return;
        };
        self.report.events += 1;
        if let Some((addr, code)) = h.fault
            && h.tid != 0
        {
            self.user_event(h.tid);
            return self.fault_at(line, h.tid, addr, code);
        }
        let word = h.rest.split_whitespace().next().unwrap_or("");
        if let Some(rec) = word.strip_prefix("PERF_RECORD_") {
            return self.record(line, &h, rec);
        }
        if h.tid == 0 {
            return self.skip(line, "event of pid 0");
        }
        let Some(event) = word.strip_suffix(':').filter(|e| e.contains(':')) else {
            return self.garbled(line, "garbled event".to_string(), h.rest);
        };
        let payload = h.rest[word.len()..].trim();
        let (pid, tid) = (h.pid, h.tid);
        if let Some(name) = event.strip_prefix("syscalls:sys_enter_") {
            self.sys_enter(line, tid, name, payload);
        } else if let Some(name) = event.strip_prefix("syscalls:sys_exit_") {
            self.sys_exit(line, tid, name, payload);
        } else {
            match event {
                "exceptions:page_fault_user" => self.fault(line, tid, payload),
                "sched:sched_process_fork" => self.fork(line, tid, payload),
                "sched:sched_process_exec" => self.exec(line, pid, tid, payload),
                "sched:sched_process_exit" => self.exit(line, tid),
                _ => self.skip(line, format!("event {event}")),
            }
        }
    }

    /// [`Conv::fault_line`] for a reader that knows whether the last thing converted was a
    /// fault of `tid` that found its task with nothing to close (`clean`): then none is
    /// looked for, as nothing since can have left one. Whether the task had nothing to
    /// close, for the next fault. The fault's address is its page (`write`: the error
    /// code's write bit): all [`Conv::fault_at`] takes of them.
    #[inline]
    pub(crate) fn fault_of(&mut self, line: usize, tid: u32, page: u64, write: bool, clean: bool) -> bool {
        self.report.events += 1;
        let was =
            clean || self.tasks.get(&tid).is_some_and(|t| t.pending.is_none() && t.exec_recs.is_empty());
        if !was {
            self.close_user_event(tid);
        }
        self.steps.push(Streamed::Fault { line, pid: Pid(tid), addr: page, len: 4096, write });
        was
    }

    /// [`Conv::fault_of`] of the faults of `tid` on the lines from `first_line` on, each
    /// after one that found the task with nothing to close (so each does too): their pages,
    /// with `WRITE` (bit 0) for a write.
    #[inline]
    pub(crate) fn clean_faults(
        &mut self,
        tid: u32,
        first_line: usize,
        pages: impl ExactSizeIterator<Item = u64>,
    ) {
        self.report.events += pages.len() as u64;
        self.steps.extend(pages.enumerate().map(|(i, p)| Streamed::Fault {
            line: first_line + i,
            pid: Pid(tid),
            addr: p & !0xfff,
            len: 4096,
            write: p & super::perf_records::WRITE != 0,
        }));
    }

    /// A perf.data record (what one line of its `perf script` text says, read from the
    /// record itself): converted as [`Conv::line`] converts that line.
    pub(crate) fn event(&mut self, line: usize, pid: u32, tid: u32, ev: Event<'_>) {
        self.report.events += 1;
        match ev {
            Event::Mmap2(r) if r.tid != 0 => return self.mmap2(line, r),
            Event::Mmap2(_) => return self.skip(line, "PERF_RECORD_MMAP2 of pid 0"),
            Event::Record(rec) => return self.skip(line, format!("PERF_RECORD_{rec}")),
            _ if tid == 0 => return self.skip(line, "event of pid 0"),
            _ => {}
        }
        match ev {
            Event::Fault { addr, code } => {
                self.user_event(tid);
                self.fault_at(line, tid, addr, code);
            }
            Event::SysEnter { name, args } => self.sys_enter_args(line, tid, name, args),
            Event::SysExit { name, ret } => self.sys_exit_ret(line, tid, name, Some(ret)),
            Event::Fork { child } => self.fork_child(line, tid, child),
            Event::Exec { path, old_pid } => {
                let from = old_pid.filter(|&o| o != 0).unwrap_or(tid);
                self.exec_of(line, pid, tid, path.to_string(), from);
            }
            Event::Exit => self.exit(line, tid),
            Event::Other(event) => self.skip(line, format!("event {event}")),
            Event::Mmap2(_) | Event::Record(_) => {}
        }
    }

    /// `PERF_RECORD_*` lines.
    fn record(&mut self, line: usize, h: &Header<'_>, rec: &str) {
        let rec = rec.trim_end_matches(':');
        match rec {
            "MMAP2" => match parse_mmap2(h.rest) {
                Ok(r) if r.tid != 0 => self.mmap2(line, r),
                Ok(_) => self.skip(line, "PERF_RECORD_MMAP2 of pid 0"),
                Err(e) => self.garbled(line, "garbled PERF_RECORD_MMAP2".to_string(), &e),
            },
            "LOST" | "LOST_SAMPLES" => {
                // `PERF_RECORD_LOST lost 12`: the last number is the count.
                let n = h
                    .rest
                    .split(|c: char| !c.is_ascii_alphanumeric())
                    .filter_map(num)
                    .next_back()
                    .unwrap_or(1);
                self.report.lost = self.report.lost.saturating_add(n.max(1));
                self.report.damage_at(line);
                if self.report.problems.len() < MAX_PROBLEMS {
                    self.report
                        .problems
                        .push(format!("{}:{line}: PERF_RECORD_{rec}: {n} events lost", self.path));
                }
                self.skipped.push((line, format!("PERF_RECORD_{rec}")));
            }
            _ => self.skip(line, format!("PERF_RECORD_{rec}")),
        }
    }

    /// A user-mode event of `tid` (a fault, a syscall entry, its death): whatever syscall it
    /// had pending lost its exit, and records it saw since are no exec's.
    #[inline]
    fn user_event(&mut self, tid: u32) {
        // Nearly always (a page fault between calls of a known task): nothing to close,
        // found with one lookup.
        if self.tasks.get(&tid).is_some_and(|t| t.pending.is_none() && t.exec_recs.is_empty()) {
            return;
        }
        self.close_user_event(tid);
    }

    /// [`Conv::user_event`] of a task with something to close, or a new one.
    #[inline(never)]
    fn close_user_event(&mut self, tid: u32) {
        let t = self.task(tid);
        let pending = t.pending.take();
        let recs = std::mem::take(&mut t.exec_recs);
        for (l, _) in recs {
            self.skip(l, "PERF_RECORD_MMAP2 outside an exec or mmap");
        }
        if let Some(p) = pending {
            self.incomplete(format!("missing sys_exit_{}", p.name));
            self.complete(tid, p, None);
        }
    }

    fn sys_enter(&mut self, line: usize, tid: u32, name: &str, payload: &str) {
        let args = match parse_args(payload) {
            Ok(a) => a,
            Err(e) => {
                self.user_event(tid);
                self.garbled(line, format!("garbled sys_enter_{name}"), &e);
                self.set_pending(tid, line, name, Kind::Skip, false);
                return;
            }
        };
        self.sys_enter_args(line, tid, name, &args);
    }

    /// A `sys_enter_NAME` with its arguments, by name.
    fn sys_enter_args(&mut self, line: usize, tid: u32, name: &str, args: &[(&str, u64)]) {
        self.user_event(tid);
        let (kind, cloexec) = match self.build(name, args) {
            Ok(k) => k,
            Err(Some(e)) => {
                self.garbled(line, format!("garbled sys_enter_{name}"), &e);
                (Kind::Skip, false)
            }
            Err(None) => {
                let reason = if NOT_IN_AST.contains(&name) {
                    format!("{name} (not in the AST)")
                } else if name == "prctl" {
                    let opt = args.first().map_or(0, |a| a.1);
                    format!("prctl({opt:#x})")
                } else {
                    format!("syscall {name}")
                };
                self.skip(line, reason);
                (Kind::Skip, false)
            }
        };
        if let Kind::Call(call @ Call::ExitGroup { .. }) = kind {
            // No exit comes back from these.
            self.push(line, tid, call, Some(Expect::Unknown));
            self.task(tid).exited = true;
            return;
        }
        self.set_pending(tid, line, name, kind, cloexec);
    }

    fn set_pending(&mut self, tid: u32, line: usize, name: &str, kind: Kind, cloexec: bool) {
        self.task(tid).pending =
            Some(Pending { line, name: name.to_string(), kind, rec: None, vma_recs: Vec::new(), cloexec });
    }

    /// The call a `sys_enter_NAME` stands for: `Err(None)` when it has none, `Err(Some(why))`
    /// when its arguments are wrong.
    fn build(&self, name: &str, args: &[(&str, u64)]) -> Result<(Kind, bool), Option<String>> {
        let arg = |key: &str| -> Result<u64, Option<String>> {
            args.iter()
                .find(|(k, _)| *k == key)
                .map(|a| a.1)
                .ok_or_else(|| Some(format!("missing argument `{key}`")))
        };
        let call = match name {
            "mmap" => Call::Mmap {
                addr: arg("addr")?,
                len: arg("len")?,
                prot: arg("prot")?,
                flags: arg("flags")?,
                fd: fd_of(arg("fd")?),
                off: arg("off")?,
            },
            "munmap" => Call::Munmap { addr: arg("addr")?, len: arg("len")? },
            "mremap" => Call::Mremap {
                old_addr: arg("addr")?,
                old_len: arg("old_len")?,
                new_len: arg("new_len")?,
                flags: arg("flags")?,
                new_addr: arg("new_addr")?,
            },
            "mprotect" | "pkey_mprotect" => {
                Call::Mprotect { addr: arg("start")?, len: arg("len")?, prot: arg("prot")? }
            }
            "brk" => Call::Brk { addr: arg("brk")? },
            "madvise" => Call::Madvise { addr: arg("start")?, len: arg("len_in")?, advice: arg("behavior")? },
            "mlock" => Call::Mlock { addr: arg("start")?, len: arg("len")?, flags: None },
            "mlock2" => Call::Mlock { addr: arg("start")?, len: arg("len")?, flags: Some(arg("flags")?) },
            "munlock" => Call::Munlock { addr: arg("start")?, len: arg("len")? },
            "mlockall" => Call::Mlockall { flags: arg("flags")? },
            "munlockall" => Call::Munlockall,
            "openat" => {
                let flags = arg("flags")?;
                let call = Call::Openat {
                    dirfd: fd_of(arg("dfd")?),
                    // Named when the exit gives the fd.
                    path: String::new(),
                    flags,
                    mode: arg("mode")?,
                };
                return Ok((Kind::Call(call), flags & abi::O_CLOEXEC != 0));
            }
            "close" => Call::Close { fd: fd_of(arg("fd")?) },
            "dup" => Call::Dup { fd: fd_of(arg("fildes")?) },
            "dup2" | "dup3" => {
                let call = Call::Dup2 { oldfd: fd_of(arg("oldfd")?), newfd: fd_of(arg("newfd")?) };
                let cloexec = name == "dup3" && arg("flags")? & abi::O_CLOEXEC != 0;
                return Ok((Kind::Call(call), cloexec));
            }
            "prctl" => {
                if arg("option")? != abi::PR_SET_VMA || arg("arg2")? != abi::PR_SET_VMA_ANON_NAME {
                    return Err(None);
                }
                // The name is a pointer: the same pointer most likely holds the same name.
                let name = arg("arg5")?;
                Call::SetVmaAnonName {
                    addr: arg("arg3")?,
                    len: arg("arg4")?,
                    name: (name != 0).then(|| format!("{name:#x}")),
                }
            }
            "execve" | "execveat" => return Ok((Kind::Execve, false)),
            "clone" => return Ok((Kind::Clone(arg("clone_flags")?), false)),
            // Flags behind a pointer.
            "clone3" => return Ok((Kind::Clone(0), false)),
            "exit" | "exit_group" => Call::ExitGroup { code: i64::from(arg("error_code")? as u32 as i32) },
            _ => return Err(None),
        };
        Ok((Kind::Call(call), false))
    }

    fn sys_exit(&mut self, line: usize, tid: u32, name: &str, payload: &str) {
        let ret = num(payload);
        if ret.is_none() {
            self.garbled(line, format!("garbled sys_exit_{name}"), payload);
        }
        self.sys_exit_ret(line, tid, name, ret);
    }

    /// A `sys_exit_NAME` with its return value (None: garbled).
    fn sys_exit_ret(&mut self, line: usize, tid: u32, name: &str, ret: Option<u64>) {
        let t = self.task(tid);
        let exec_step = t.exec_step.take();
        let pending = t.pending.take();
        if let Some(i) = exec_step {
            // Edited below if this is its exit; final either way.
            self.held.remove(&i);
        }
        match pending {
            Some(p) if p.name == name => {
                if ret.is_none() {
                    self.incomplete(format!("garbled sys_exit_{name}"));
                }
                self.complete(tid, p, ret);
            }
            other => {
                // The exit of an exec whose step the sched_process_exec event made.
                if let (true, None, Some(i)) = (name == "execve" || name == "execveat", &other, exec_step) {
                    if let Some(s) = self.step_mut(i) {
                        s.expect = ret.map(|r| expect_of(r).unwrap_or(Expect::Unknown));
                    }
                    return;
                }
                if let Some(p) = other {
                    self.incomplete(format!("missing sys_exit_{}", p.name));
                    self.complete(tid, p, None);
                }
                self.skip(line, format!("sys_exit_{name} without its sys_enter"));
            }
        }
    }

    /// A syscall's exit: make its step, and the steps of the kernel's VMAs it made.
    fn complete(&mut self, tid: u32, mut p: Pending, ret: Option<u64>) {
        let recs = std::mem::take(&mut p.vma_recs);
        let pushed = self.complete_call(tid, p, ret);
        let ok = pushed.is_some_and(|i| {
            i.checked_sub(self.base)
                .and_then(|i| self.steps.get(i))
                .is_some_and(|s| matches!(s.expect(), Some(Expect::Value(_))))
        });
        self.vma_records(tid, recs, ok);
    }

    /// [`Conv::complete`] of the call itself: the step made, if one was.
    fn complete_call(&mut self, tid: u32, p: Pending, ret: Option<u64>) -> Option<usize> {
        let expect = match ret.map(expect_of) {
            None => None,
            Some(Ok(e)) => Some(e),
            Some(Err(code)) => {
                self.skip(p.line, format!("{} failed with unknown errno {code}", p.name));
                return None;
            }
        };
        let mut call = match p.kind {
            Kind::Skip => return None,
            Kind::Clone(_) => {
                // The step is the fork event's; a failed clone made none.
                if let Some(Expect::Err(e)) = expect {
                    self.skip(p.line, format!("clone failed ({})", e.name()));
                }
                return None;
            }
            Kind::Execve => {
                // No exec event came between enter and exit: it failed, and changed nothing.
                match expect {
                    Some(Expect::Err(e)) => self.skip(p.line, format!("execve failed ({})", e.name())),
                    _ => self.skip(p.line, "execve without sched_process_exec"),
                }
                return None;
            }
            Kind::Call(c) => c,
        };
        let fdt = self.task(tid).fdt;
        let ok = match expect {
            Some(Expect::Value(v)) => Some(v),
            _ => None,
        };
        match &mut call {
            Call::Openat { path, .. } => match ok {
                Some(fd) => {
                    *path = format!("fd{fd}@line{}", p.line);
                    let step = self.base + self.steps.len();
                    self.held.insert(step);
                    self.files.push(FileEnt {
                        path: path.clone(),
                        synthetic: true,
                        open_step: Some(step),
                        refs: 0,
                    });
                    let file = self.files.len() - 1;
                    self.fd_set(fdt, fd as i64, FdEnt { file, cloexec: p.cloexec });
                }
                None => *path = format!("open@line{}", p.line),
            },
            Call::Close { fd } => self.fd_close(fdt, *fd),
            Call::Dup { fd } => {
                if let (Some(new), Some(e)) = (ok, self.fd_tables[fdt].fds.get(fd).copied()) {
                    self.fd_set(fdt, new as i64, FdEnt { cloexec: false, ..e });
                }
            }
            Call::Dup2 { oldfd, newfd } => {
                if let (Some(_), Some(e)) = (ok, self.fd_tables[fdt].fds.get(oldfd).copied()) {
                    let cloexec = p.cloexec;
                    self.fd_set(fdt, *newfd, FdEnt { cloexec, ..e });
                }
            }
            Call::Mmap { fd, flags, .. } => {
                if let (Some(_), Some(rec)) = (ok, &p.rec)
                    && *fd >= 0
                    && *flags & abi::MAP_ANONYMOUS == 0
                {
                    match self.fd_tables[fdt].fds.get(fd).copied() {
                        Some(e) => self.name_file(e.file, rec),
                        None => self.incomplete("mmap of an fd opened before the trace".to_string()),
                    }
                }
            }
            _ => {}
        }
        Some(self.push(p.line, tid, call, expect))
    }

    /// The kernel's VMAs after a call, as `vma_record` steps after its step. A record a later
    /// one of the same call overlaps shows a VMA that call merged further (mprotect over
    /// several VMAs: each `mprotect_fixup` may merge with the one before).
    fn vma_records(&mut self, tid: u32, recs: Vec<(usize, MapRec)>, ok: bool) {
        for (i, (line, rec)) in recs.iter().enumerate() {
            if !ok {
                self.skip(*line, "PERF_RECORD_MMAP2 of a call without a recorded success");
                continue;
            }
            let end = rec.addr.saturating_add(rec.len);
            if recs[i + 1..].iter().any(|(_, r)| r.addr < end && rec.addr < r.addr.saturating_add(r.len)) {
                self.skip(*line, "PERF_RECORD_MMAP2 merged by the same call");
                continue;
            }
            let call = self.record_call(rec, true);
            self.report.vma_records += 1;
            self.push(*line, tid, call, None);
        }
    }

    /// The name for a file perf calls `name`: the same name for the same (dev, ino), and a
    /// `name#INO` when two files share a base name.
    /// The step of an mmap record: a mapping the kernel made at exec (`map_record`), or with
    /// `kernel_vma` the kernel's VMA after a call, to compare with the model's (`vma_record`).
    fn record_call(&mut self, rec: &MapRec, kernel_vma: bool) -> Call {
        let path = (!rec.is_anon() && !rec.is_special()).then(|| self.file_name(rec));
        let name = rec.is_special().then(|| rec.name.clone());
        let (addr, len, pgoff, prot, shared, dev, ino) =
            (rec.addr, rec.len, rec.pgoff >> 12, rec.prot, rec.shared, rec.dev, rec.ino);
        if kernel_vma {
            Call::VmaRecord(RecordedVma { addr, len, pgoff, prot, shared, dev, ino, path, name })
        } else {
            Call::MapRecord(RecordedVma { addr, len, pgoff, prot, shared, dev, ino, path, name })
        }
    }

    fn file_name(&mut self, rec: &MapRec) -> String {
        let id = (rec.dev, rec.ino);
        let mut name = rec.name.clone();
        loop {
            match self.names.get(&name) {
                None => {
                    self.names.insert(name.clone(), id);
                    return name;
                }
                Some(&have) if have == id => return name,
                Some(_) => name = format!("{}#{}", rec.name, rec.ino),
            }
            if name.len() > rec.name.len() + 40 {
                return name;
            }
        }
    }

    /// An mmap showed which file `file` is: name it, and the openat that opened it.
    fn name_file(&mut self, file: usize, rec: &MapRec) {
        if !self.files[file].synthetic || rec.is_anon() || rec.is_special() {
            return;
        }
        let name = self.file_name(rec);
        let f = &mut self.files[file];
        f.synthetic = false;
        f.path = name.clone();
        let open_step = f.open_step.take();
        if let Some(step) = open_step {
            self.held.remove(&step);
            if let Some(s) = self.step_mut(step)
                && let Call::Openat { path, .. } = &mut s.call
            {
                *path = name;
                if !s.text.is_empty() {
                    s.text = format_call(&s.call);
                }
            }
        }
    }

    fn mmap2(&mut self, line: usize, rec: MapRec) {
        let t = self.task(rec.tid);
        match &mut t.pending {
            Some(p) if p.name == "mmap" => {
                if !rec.is_anon() {
                    p.rec = Some(rec.clone());
                }
                p.vma_recs.push((line, rec));
            }
            Some(p) if matches!(p.name.as_str(), "mprotect" | "pkey_mprotect" | "brk") => {
                p.vma_recs.push((line, rec));
            }
            Some(p) if p.name == "execve" || p.name == "execveat" => t.exec_recs.push((line, rec)),
            Some(p) => {
                let reason = format!("PERF_RECORD_MMAP2 during {}", p.name);
                self.skip(line, reason);
            }
            // The first exec of the trace has no sys_enter_execve.
            None => t.exec_recs.push((line, rec)),
        }
    }

    fn fault(&mut self, line: usize, tid: u32, payload: &str) {
        self.user_event(tid);
        let fields = fault_fields(payload).or_else(|| {
            Some((kv(payload, "address").and_then(num)?, kv(payload, "error_code").and_then(num)?))
        });
        let Some((addr, code)) = fields else {
            return self.garbled(line, "garbled page_fault_user".to_string(), payload);
        };
        self.fault_at(line, tid, addr, code);
    }

    /// A user page fault at `addr` with x86 `error_code` (bit 1: write) as a one-page touch.
    fn fault_at(&mut self, line: usize, tid: u32, addr: u64, code: u64) {
        // Straight into the form a stream hands on: no `Step` is made for a fault.
        let (addr, write) = (addr & !0xfff, code & 2 != 0);
        self.steps.push(Streamed::Fault { line, pid: Pid(tid), addr, len: 4096, write });
    }

    fn fork(&mut self, line: usize, tid: u32, payload: &str) {
        let Some(child) = kv(payload, "child_pid").and_then(dec_u32).filter(|&c| c != 0) else {
            return self.garbled(line, "garbled sched_process_fork".to_string(), payload);
        };
        self.fork_child(line, tid, child);
    }

    /// `tid` made the task `child` (not 0).
    fn fork_child(&mut self, line: usize, tid: u32, child: u32) {
        let clone_flags = match &self.task(tid).pending {
            Some(Pending { kind: Kind::Clone(f), .. }) if *f != 0 => Some(*f),
            _ => None,
        };
        let call = match clone_flags {
            // The trace has no tid pointers: the flags that write the tid there (glibc points
            // them into the new thread's struct pthread, already written) are dropped.
            Some(f) if f & abi::CLONE_VM != 0 && f & abi::CLONE_VFORK == 0 => Call::CloneVm {
                flags: f & !(abi::CLONE_PARENT_SETTID | abi::CLONE_CHILD_SETTID | abi::CLONE_CHILD_CLEARTID),
            },
            Some(f) => Call::Fork { vfork: f & abi::CLONE_VFORK != 0 },
            // The child's own lines tell: `PARENT/CHILD` is a thread of the parent.
            None => match self.tgid(child) {
                // pthread_create's flags, less the tid pointers (see above).
                Some(g) if g != child => Call::CloneVm {
                    flags: abi::CLONE_VM
                        | abi::CLONE_FS
                        | abi::CLONE_FILES
                        | abi::CLONE_SIGHAND
                        | abi::CLONE_THREAD
                        | abi::CLONE_SYSVSEM,
                },
                _ => Call::Fork { vfork: false },
            },
        };
        let parent = self.task(tid);
        let (ptgid, pfdt) = (parent.tgid, parent.fdt);
        let (tgid, fdt) = match (&call, clone_flags) {
            (Call::CloneVm { flags }, _) if flags & abi::CLONE_THREAD != 0 => (ptgid, pfdt),
            _ => {
                let copy = self.fd_tables[pfdt].fds.clone();
                (child, self.new_table(copy))
            }
        };
        self.push(line, tid, call, Some(Expect::Value(u64::from(child))));
        self.fd_tables[fdt].users += 1;
        if let Some(old) = self.tasks.insert(child, Task { tgid, fdt, ..Default::default() }) {
            self.drop_task(old);
        }
    }

    fn exec(&mut self, line: usize, pid: u32, tid: u32, payload: &str) {
        // `filename=NAME pid=N old_pid=M`: NAME may hold spaces.
        let path = payload
            .strip_prefix("filename=")
            .and_then(|r| r.rfind(" pid=").map(|i| &r[..i]))
            .filter(|p| !p.is_empty());
        let Some(path) = path.map(str::to_string) else {
            return self.garbled(line, "garbled sched_process_exec".to_string(), payload);
        };
        // A thread that execs takes over the group leader's pid.
        let from = kv(payload, "old_pid").and_then(dec_u32).filter(|&o| o != 0).unwrap_or(tid);
        self.exec_of(line, pid, tid, path, from);
    }

    /// Task `from` (`tid`, or the thread that exec'd) ran `path` as `pid`'s `tid`.
    fn exec_of(&mut self, line: usize, pid: u32, tid: u32, path: String, from: u32) {
        let src = self.task(from);
        let pending = src.pending.take();
        let recs = std::mem::take(&mut src.exec_recs);
        let eline = match pending {
            Some(p) if p.name == "execve" || p.name == "execveat" => p.line,
            Some(p) => {
                self.incomplete(format!("missing sys_exit_{}", p.name));
                self.complete(from, p, None);
                line
            }
            None => line,
        };
        let step = self.push(eline, tid, Call::Execve { path }, None);
        self.held.insert(step);
        let t = self.task(tid);
        t.tgid = pid;
        t.exited = false;
        if let Some(old) = t.exec_step.replace(step) {
            self.held.remove(&old);
        }
        let old_fdt = self.task(tid).fdt;
        // exec unshares the fd table and closes the O_CLOEXEC fds.
        let mut fds = self.fd_tables[old_fdt].fds.clone();
        fds.retain(|_, e| !e.cloexec);
        let fdt = self.new_table(fds);
        self.fd_tables[fdt].users += 1;
        self.task(tid).fdt = fdt;
        self.drop_table_user(old_fdt);
        // The exec's own stack record (`setup_arg_pages` → `expand_stack_locked`) is named
        // `[stack]`; an anonymous record before it is the temporary stack `__bprm_mm_init`
        // made at STACK_TOP_MAX for the arguments, grown (`expand_downwards`) when they pass
        // a page, and moved away by `setup_arg_pages`: no VMA after the exec.
        let stack_at = recs.iter().position(|(_, r)| r.name == "[stack]");
        for (i, (l, rec)) in recs.into_iter().enumerate() {
            if stack_at.is_some_and(|s| i < s) && rec.is_anon() {
                self.skip(l, "PERF_RECORD_MMAP2 of the temporary exec stack");
                continue;
            }
            let call = self.record_call(&rec, false);
            self.push(l, tid, call, None);
        }
    }

    fn exit(&mut self, line: usize, tid: u32) {
        self.user_event(tid);
        let t = self.task(tid);
        if !t.exited {
            t.exited = true;
            self.push(line, tid, Call::ExitGroup { code: 0 }, Some(Expect::Unknown));
        }
    }

    /// The script of the steps made (all of them, for a whole import).
    pub(crate) fn into_script(self) -> Script {
        let steps = self.steps.into_iter().map(Streamed::into_step).collect();
        Script { path: self.path.to_string(), steps, skipped: self.skipped }
    }

    /// The end of the trace: syscalls still open lost their exits.
    pub(crate) fn finish(&mut self) {
        let mut open: Vec<(u32, Pending)> = Vec::new();
        let mut recs: Vec<usize> = Vec::new();
        for (&tid, t) in &mut self.tasks {
            if let Some(p) = t.pending.take() {
                open.push((tid, p));
            }
            recs.extend(t.exec_recs.drain(..).map(|(l, _)| l));
        }
        open.sort_by_key(|(_, p)| p.line);
        for (tid, p) in open {
            self.incomplete(format!("missing sys_exit_{}", p.name));
            self.complete(tid, p, None);
        }
        recs.sort_unstable();
        for l in recs {
            self.skip(l, "PERF_RECORD_MMAP2 outside an exec or mmap");
        }
    }
}

/// A syscall's return value: `Err(code)` for an errno the model does not know.
fn expect_of(ret: u64) -> Result<Expect, i64> {
    let v = ret as i64;
    if (-4095..0).contains(&v) {
        let code = -v;
        Errno::from_code(code as i32).map(Expect::Err).ok_or(code)
    } else {
        Ok(Expect::Value(ret))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::*;
    use crate::script::format_step;

    /// A perf line of `tid` in thread group `pid`.
    fn l(pid: u32, tid: u32, event: &str) -> String {
        format!("            prog  {pid}/{tid}   100.000001: {event}\n")
    }

    /// The whole import of `text`, checked against streamed imports in chunks of every size
    /// from a line or less to all of it: the same steps and the same report.
    fn import(text: &str) -> (Script, ImportReport) {
        let (script, report) = parse_perf("t.perf", text).unwrap_or_else(|e| panic!("{e}"));
        let whole: Vec<String> = script.steps.iter().map(crate::stream::tests::show).collect();
        for chunk in [1, 40, 200, 1 << 20] {
            for hold in [0, 1, 3, usize::MAX] {
                let Some((steps, end)) = crate::stream::tests::streamed(text, chunk, hold) else {
                    panic!("a streamed import (chunks of {chunk}) found no perf text")
                };
                let what = format!("streamed in chunks of {chunk} bytes, holding {hold} steps");
                assert_eq!(end.report, report, "{what}");
                // Steps held back long enough are final; else the stream says it was not.
                assert!(end.exact || hold < usize::MAX, "{what}");
                if end.exact {
                    assert_eq!(steps, whole, "{what}");
                }
            }
        }
        (script, report)
    }

    /// `PID CALL = RESULT` for every step.
    fn lines(s: &Script) -> Vec<String> {
        s.steps.iter().map(format_step).collect()
    }

    fn enter(name: &str, args: &str) -> String {
        format!("syscalls:sys_enter_{name}: {args}")
    }

    fn exit(name: &str, ret: &str) -> String {
        format!("syscalls:sys_exit_{name}: {ret}")
    }

    const MMAP_ANON: &str = "addr: 0x00000000, len: 0x00002000, prot: 0x00000003, flags: 0x00000022, fd: 0xffffffff, off: 0x00000000";

    #[test]
    fn headers() {
        let h = split_header("  Web Content 12/34  5.000001: sched:x: a=1").unwrap();
        assert_eq!((h.pid, h.tid, h.rest), (12, 34, "sched:x: a=1"));
        // A comm that looks like a number is still the comm.
        let h = split_header("1/2 3/4 1.5: e: x").unwrap();
        assert_eq!((h.pid, h.tid), (3, 4));
        for bad in [
            "",
            "sort 8742/8742",
            "sort 8742/8742 1009.6",
            "sort 87x/8742 1009.6: e",
            "sort /8742 1.0: e",
            "sort 8742/ 1.0: e",
            "sort 99999999999/1 1.0: e",
            "1009.601168: e",
        ] {
            assert!(split_header(bad).is_none(), "{bad}");
        }
    }

    /// The general reading of a line's header: what `plain_header` must agree with.
    type Read<'a> = (u32, u32, &'a str, Option<(u64, u64)>);

    fn general_header(l: &str) -> Option<Read<'_>> {
        let h = split_header(l)?;
        let fault = h
            .rest
            .strip_prefix("exceptions:page_fault_user:")
            .filter(|p| p.starts_with(|c: char| c.is_ascii_whitespace()))
            .and_then(|p| fault_fields(p.trim()));
        Some((h.pid, h.tid, h.rest, fault))
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(20_000))]
        /// Hex digits read as `u64::from_str_radix` reads them, up to overflow.
        #[test]
        fn hex_prefixed_is_from_str_radix(digits in "[0-9a-fA-F]{0,20}", tail in "[ g=x]{0,2}") {
            let text = format!("{digits}{tail}");
            let want = (!digits.is_empty())
                .then(|| u64::from_str_radix(&digits, 16).ok().map(|v| (v, digits.len())))
                .flatten();
            proptest::prop_assert_eq!(hex_prefixed(text.as_bytes()), want);
        }

        /// The byte-wise trim is `str::trim` whenever it answers.
        #[test]
        fn ascii_trimmed_is_trim(
            parts in proptest::collection::vec(proptest::sample::select(vec![
                " ", "\t", "\n", "\r", "\u{b}", "\u{c}", "\u{a0}", "\u{85}", "\u{2003}", "a", "é", "=",
            ]), 0..8)
        ) {
            let s: String = parts.concat();
            if let Some(t) = ascii_trimmed(&s) {
                proptest::prop_assert_eq!(t, s.trim());
            }
        }

        /// The byte-by-byte reading of usual lines gives what the general one gives, for
        /// lines built from the pieces of perf lines with odd spaces, colons and digits.
        #[test]
        fn plain_header_agrees_with_split_header(
            parts in proptest::collection::vec(proptest::sample::select(vec![
                " ", "  ", "\t", "\u{a0}", "\u{b}", ":", ": ", "/", ".", "0", "7", "42", "4294967296",
                "python3", "Web Content", "12/34", "8742/8750", "1009.601168:", "5.0", "x:",
                "exceptions:page_fault_user:", "exceptions:page_fault_user: ", "address=0x",
                "address=0x7f6d5c3f8010", " ip=0x55d0", " error_code=0x6", "error_code=0x",
                "ffffffffffffffffff", "ABC", "sched:sched_process_exit: pid=3", "é",
            ]), 0..14)
        ) {
            let line: String = parts.concat();
            if let Some(h) = plain_header(&line) {
                proptest::prop_assert_eq!(Some((h.pid, h.tid, h.rest, h.fault)), general_header(&line), "{:?}", line);
            }
            let h = header_of(&line).map(|h| (h.pid, h.tid, h.rest, h.fault));
            proptest::prop_assert_eq!(h, general_header(&line), "{:?}", line);
        }

        /// The same, for lines of the usual shape with one piece at a time made odd.
        #[test]
        fn plain_header_agrees_on_near_usual_lines(
            pieces in (
                proptest::sample::select(vec!["  python3", "python3", "", "a:b", "1/2", "é"]),
                proptest::sample::select(vec![" ", "  ", "\t", "/", "\u{a0}"]),
                proptest::sample::select(vec!["4321/4322", "0/0", "12/", "/3", "1234567890/1", "007/08", "1/2/3", "x1/2"]),
                proptest::sample::select(vec![" ", "  ", "\t", ""]),
                proptest::sample::select(vec!["1009.601168:", "1.0:", ".5:", "5.:", "1.2.3:", "10:", "1009.601168: "]),
                proptest::sample::select(vec![" ", "  ", "", "\t", " \u{b}", ":"]),
                proptest::sample::select(vec![
                    "exceptions:page_fault_user: address=0x7f6d5c3f8010 ip=0x7f6d5c2a1b2e error_code=0x6",
                    "exceptions:page_fault_user:  address=0x10 ip=0x1 error_code=0x7",
                    "exceptions:page_fault_user:\taddress=0x10 ip=0x1 error_code=0x2",
                    "exceptions:page_fault_user: address=0x10  ip=0x1 error_code=0x2 ",
                    "exceptions:page_fault_user: address=0x10 error_code=0x2",
                    "exceptions:page_fault_user: address=0x1ffffffffffffffff ip=0 error_code=0x2",
                    "exceptions:page_fault_user: address=0X10 ip=0 error_code=0x2",
                    "exceptions:page_fault_user: address=16 ip=0 error_code=2",
                    "exceptions:page_fault_user: address=0x10\t ip=0 error_code=0x2\u{a0}",
                    "exceptions:page_fault_user:address=0x10 ip=0 error_code=0x2",
                    "syscalls:sys_exit_mmap: 0x7f00",
                    "sched:sched_process_exit: pid=3",
                ]),
            )
        ) {
            let (a, b, c, d, e, f, g) = pieces;
            let line = format!("{a}{b}{c}{d}{e}{f}{g}");
            if let Some(h) = plain_header(&line) {
                proptest::prop_assert_eq!(Some((h.pid, h.tid, h.rest, h.fault)), general_header(&line), "{:?}", line);
            }
            let h = header_of(&line).map(|h| (h.pid, h.tid, h.rest, h.fault));
            proptest::prop_assert_eq!(h, general_header(&line), "{:?}", line);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(5_000))]
        /// Lines read after one another with the last one's start and middle kept
        /// (`header_with`) give what each gives alone: tasks' prefixes, times, fault middles
        /// and digits of every length, one piece at a time made odd.
        #[test]
        fn header_with_agrees_with_header_of(
            lines in proptest::collection::vec((
                proptest::sample::select(vec!["  python3 4321/4322 ", "  python3 4321/4323 ", "py:x 1/2 ", "  python3  4321/4322 ", "1/2 "]),
                proptest::sample::select(vec!["1009.601168", "1009.601170", "1.0", "10", ".5", "1009.60117a", "99999999.1"]),
                proptest::sample::select(vec![":", ": ", ":  ", ":\t", "::"]),
                proptest::sample::select(vec![
                    "      exceptions:page_fault_user: address=0x",
                    "      exceptions:page_fault_user:  address=0x",
                    "      exceptions:page_fault_user: address=0X",
                    "exceptions:page_fault_user: address=0x",
                    "      syscalls:sys_exit_mmap: 0x",
                ]),
                proptest::sample::select(vec!["7f6d5c3f8010", "0", "", "fffffffffffff", "ffffffffffffff", "fffffffffffffff", "1ffffffffffffffff", "DEAD", "g1"]),
                proptest::sample::select(vec![" ip=0x7f6d5c2a1b2e", "", "  ip=é", " ip=0x1 error_code=0x7", " ip=0x", " ip=0xffffffffffffffffff", " ip=0x1 "]),
                proptest::sample::select(vec![" error_code=0x6", " error_code=0x", " error_code=0xffffffffffffff", " error_code=0xfffffffffffffff", " error_code=0x6 ", "error_code=0x6", " error_code=0x6\u{a0}", " error_code=0x1g", " error_code=0x6\r"]),
            ), 1..6)
        ) {
            let mut last = crate::lines::LastPrefix::default();
            for (a, b, c, d, e, f, g) in lines {
                let line = format!("{a}{b}{c}{d}{e}{f}{g}");
                // The fast path of a text reader reads a fault as `header_with` does, and
                // finds the line's end.
                let fast = last.fault_at(format!("{line}\n").as_bytes(), 0);
                proptest::prop_assert_eq!(last.fault_at(line.as_bytes(), 0), fast.map(|(n, t, a, c)| (n - 1, t, a, c)));
                if let Some((next, tid, addr, code)) = fast {
                    let (h, seen) = crate::lines::header_with(&line, &mut last.clone());
                    proptest::prop_assert_eq!(next, line.len() + 1);
                    proptest::prop_assert!(seen && tid != 0);
                    proptest::prop_assert_eq!(h.map(|h| (h.tid, h.fault)), Some((tid, Some((addr, code)))));
                }
                let (h, _) = crate::lines::header_with(&line, &mut last);
                let h = h.map(|h| (h.pid, h.tid, h.rest, h.fault));
                let want = header_of(&line).map(|h| (h.pid, h.tid, h.rest, h.fault));
                proptest::prop_assert_eq!(h, want, "{:?}", line);
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3_000))]
        /// Syscall arguments and numbers read byte by byte, as `split` and `from_str_radix`
        /// read them.
        #[test]
        fn args_read_as_split_reads_them(
            noise in "[a-z0-9xX:, \t\u{a0}]{0,40}",
            pieces in proptest::collection::vec((
                proptest::sample::select(vec!["addr", "len", "", " a", "b "]),
                proptest::sample::select(vec![": ", ":", ": : ", " : "]),
                proptest::sample::select(vec!["0x1f", "0X1F", "31", "0x", "g", "0x00000000ffffffffff", " 0x1 ", "0x1ffffffffffffffff", "\u{a0}0x1", "0xffffffffffffffff"]),
                proptest::sample::select(vec![", ", ",", ",  ", ", , ", " ,"]),
            ), 0..5),
        ) {
            let args: String = pieces.iter().map(|(k, s, v, j)| format!("{k}{s}{v}{j}")).collect();
            for payload in [noise, args.clone(), args.trim_end_matches([',', ' ']).to_string()] {
            fn num_ref(s: &str) -> Option<u64> {
                let s = s.trim();
                if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
                    if h.is_empty() || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return None;
                    }
                    u64::from_str_radix(h, 16).ok()
                } else {
                    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                        return None;
                    }
                    s.parse().ok()
                }
            }
            let reference = |payload: &str| -> Result<Vec<(String, u64)>, String> {
                let payload = payload.trim();
                if payload.is_empty() {
                    return Ok(Vec::new());
                }
                payload
                    .split(", ")
                    .map(|a| {
                        let (k, v) = a.split_once(": ").ok_or_else(|| format!("expected `NAME: VALUE`, found `{a}`"))?;
                        let v = num_ref(v).ok_or_else(|| format!("bad number `{}` for {k}", v.trim()))?;
                        Ok((k.trim().to_string(), v))
                    })
                    .collect()
            };
            let got = parse_args(&payload).map(|v| v.into_iter().map(|(k, v)| (k.to_string(), v)).collect::<Vec<_>>());
            proptest::prop_assert_eq!(got, reference(&payload));
            for w in payload.split(',') {
                proptest::prop_assert_eq!(num(w), num_ref(w), "{:?}", w);
            }
            for pat in [", ", ": ", ": [", "]: ", " @ ", " : "] {
                proptest::prop_assert_eq!(crate::lines::split_str(&payload, pat), payload.split_once(pat));
            }
            let long = format!("0x{}", payload.replace(|c: char| !c.is_ascii_hexdigit(), "0"));
            proptest::prop_assert_eq!(num(&long), num_ref(&long));
            }
        }
    }

    /// A text reader's fast path takes the usual fault lines of the last line's task, and
    /// nothing else.
    #[test]
    fn fault_at_reads_the_next_usual_fault() {
        let f = |tid: u32, t: &str, addr: &str| {
            format!(
                "     python3  4321/{tid}  {t}:    exceptions:page_fault_user: address=0x{addr} ip=0x7f6d5c2a1b2e error_code=0x6\n"
            )
        };
        let mut last = crate::lines::LastPrefix::default();
        let first = f(4322, "1009.601168", "7f6d5c3f8010");
        assert_eq!(last.fault_at(first.as_bytes(), 0), None);
        let _ = crate::lines::header_with(first.trim_end(), &mut last);
        let text = [f(4322, "1009.601169", "10"), f(4323, "1009.601170", "10"), f(4322, "1009.601171", "ab")]
            .concat();
        let b = text.as_bytes();
        // Lines of the same length.
        let second = b.len() / 3;
        assert_eq!(last.fault_at(b, 0), Some((text.find('\n').unwrap() + 1, 4322, 0x10, 6)));
        // Another task's line, and a line that does not start there.
        assert_eq!(last.fault_at(b, second), None);
        assert_eq!(last.fault_at(b, 1), None);
        let third = text.rfind("     python3").unwrap();
        assert_eq!(last.fault_at(b, third), Some((b.len(), 4322, 0xab, 6)));
        assert_eq!(last.fault_at(&b[..b.len() - 1], third), Some((b.len() - 1, 4322, 0xab, 6)));
        let crlf = text.replace('\n', "\r\n");
        assert_eq!(last.fault_at(crlf.as_bytes(), 0), None);
    }

    #[test]
    fn plain_header_reads_usual_lines() {
        let l = "         python3  4321/4322  1009.601168: exceptions:page_fault_user: address=0x7f6d5c3f8010 ip=0x7f6d5c2a1b2e error_code=0x6";
        let h = plain_header(l).expect("the usual shape");
        assert_eq!((h.pid, h.tid, h.fault), (4321, 4322, Some((0x7f6d5c3f8010, 6))));
        let l = "python3 1/1 2.5: syscalls:sys_enter_mmap: addr: 0x00000000, len: 0x1000";
        let h = plain_header(l).expect("the usual shape");
        assert_eq!((h.rest, h.fault), ("syscalls:sys_enter_mmap: addr: 0x00000000, len: 0x1000", None));
    }

    #[test]
    fn numbers_and_fds() {
        assert_eq!(num("0x1f"), Some(31));
        assert_eq!(num("17"), Some(17));
        assert_eq!(num("0xfffffffffffffffe"), Some(u64::MAX - 1));
        for bad in ["", "0x", "x1", "-1", "0x1g", "0x10000000000000000"] {
            assert_eq!(num(bad), None, "{bad}");
        }
        assert_eq!(fd_of(0xffffffff), -1);
        assert_eq!(fd_of(0xffffff9c), AT_FDCWD);
        assert_eq!(fd_of(3), 3);
        // Junk above an int's 32 bits is ignored, as the kernel ignores it.
        assert_eq!(fd_of(0x5a5a_0000_0007), 7);
        assert_eq!(fd_of(0xffff_ffff_ffff_ffff), -1);
        assert_eq!(expect_of(0xfffffffffffffffe), Ok(Expect::Err(Errno::ENOENT)));
        assert_eq!(expect_of(0x7f00_0000_0000), Ok(Expect::Value(0x7f00_0000_0000)));
        assert_eq!(expect_of((-6i64) as u64), Err(6));
        assert_eq!(expect_of((-4096i64) as u64), Ok(Expect::Value((-4096i64) as u64)));
    }

    #[test]
    fn mmap2_records() {
        let r = parse_mmap2(
            "PERF_RECORD_MMAP2 8742/8743: [0x5606738c5000(0x12000) @ 0x3000 fe:01 247778 0]: r-xs my lib.so",
        )
        .unwrap();
        assert_eq!(
            r,
            MapRec {
                tid: 8743,
                addr: 0x5606738c5000,
                len: 0x12000,
                pgoff: 0x3000,
                dev: 0xfe01,
                ino: 247778,
                prot: PROT_READ | PROT_EXEC,
                shared: true,
                name: "my lib.so".into(),
            }
        );
        for bad in [
            "PERF_RECORD_MMAP2 1/1: [0x1000(0x1000) @ 0 fe:00 1]: r--p x",
            "PERF_RECORD_MMAP2 1/1: [0x1000(0x1000) @ 0 fe00 1 0]: r--p x",
            "PERF_RECORD_MMAP2 1/1: [0x1000 @ 0 fe:00 1 0]: r--p x",
            "PERF_RECORD_MMAP2 1/1: [0x1000(0x1000) @ 0 fe:00 1 0]: rq-p x",
            "PERF_RECORD_MMAP2 1/1: [0x1000(0x1000) @ 0 fe:00 1 0]: r-",
            "PERF_RECORD_MMAP2 1/1: [0x1000(0x1000) @ 0 fe:00 1 0]",
            "PERF_RECORD_MMAP2 x: [0x1000(0x1000) @ 0 fe:00 1 0]: r--p x",
            "PERF_RECORD_MMAP2 1/1: [0x1000(0x1000) @ 0 fe:00 1 0]: r--pé",
        ] {
            assert!(parse_mmap2(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn syscalls_pair_by_tid() {
        let text = [
            l(5, 5, &enter("mmap", MMAP_ANON)),
            l(5, 6, &enter("munmap", "addr: 0x7f0000000000, len: 0x00001000")),
            l(5, 5, &exit("mmap", "0x7f0000010000")),
            l(5, 6, &exit("munmap", "0xffffffffffffffea")),
            l(5, 5, &enter("mremap", "addr: 0x7f0000010000, old_len: 0x00002000, new_len: 0x00004000, flags: 0x00000001, new_addr: 0x00000000")),
            l(5, 5, &exit("mremap", "0x7f0000020000")),
            l(5, 5, &enter("pkey_mprotect", "start: 0x7f0000020000, len: 0x00001000, prot: 0x00000001, pkey: 0x00000000")),
            l(5, 5, &exit("pkey_mprotect", "0x0")),
            l(5, 5, &enter("madvise", "start: 0x7f0000020000, len_in: 0x00001000, behavior: 0x00000008")),
            l(5, 5, &exit("madvise", "0x0")),
            l(5, 5, &enter("brk", "brk: 0x00000000")),
            l(5, 5, &exit("brk", "0x555555559000")),
            l(5, 5, &enter("prctl", "option: 0x53564d41, arg2: 0x00000000, arg3: 0x7f0000020000, arg4: 0x00001000, arg5: 0x55550000")),
            l(5, 5, &exit("prctl", "0x0")),
            l(5, 5, &enter("prctl", "option: 0x0000000f, arg2: 0x55550000, arg3: 0x00000000, arg4: 0x00000000, arg5: 0x00000000")),
            l(5, 5, &exit("prctl", "0x0")),
            l(5, 5, &enter("mlock", "start: 0x7f0000020000, len: 0x00001000")),
            l(5, 5, &exit("mlock", "0x0")),
            l(5, 5, &enter("exit_group", "error_code: 0x00000003")),
        ]
        .concat();
        let (s, r) = import(&text);
        assert_eq!(
            lines(&s),
            [
                "5 mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000010000",
                "6 munmap(0x7f0000000000, 4096) = -1 EINVAL (Invalid argument)",
                "5 mremap(0x7f0000010000, 8192, 16384, MREMAP_MAYMOVE) = 0x7f0000020000",
                "5 mprotect(0x7f0000020000, 4096, PROT_READ) = 0",
                "5 madvise(0x7f0000020000, 4096, MADV_FREE) = 0",
                "5 brk(NULL) = 0x555555559000",
                "5 prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, 0x7f0000020000, 4096, \"0x55550000\") = 0",
                "5 mlock(0x7f0000020000, 4096) = 0",
                "5 exit_group(3) = ?",
            ]
        );
        let at: Vec<usize> = s.steps.iter().map(|s| s.line).collect();
        assert_eq!(at, [1, 2, 5, 7, 9, 11, 13, 17, 19]);
        assert_eq!(r.skipped["prctl(0xf)"], 1);
        assert_eq!(r.events, 19);
        assert_eq!(r.steps, 9);
        assert_eq!((r.processes, r.threads), (1, 1));
        assert_eq!(s.skipped, [(15, "prctl(0xf)".to_string())]);
    }

    #[test]
    fn fork_or_thread_from_the_childs_lines() {
        let text = [
            l(5, 5, "sched:sched_process_fork: comm=a b pid=5 child_comm=a b child_pid=6"),
            l(5, 5, "sched:sched_process_fork: comm=a b pid=5 child_comm=a b child_pid=7"),
            l(6, 6, "exceptions:page_fault_user: address=0x7f0000001234 ip=0x1 error_code=0x6"),
            l(5, 7, "exceptions:page_fault_user: address=0x7f0000001234 ip=0x1 error_code=0x15"),
            l(5, 7, &enter("exit", "error_code: 0x00000000")),
            l(5, 7, "sched:sched_process_exit: comm=a pid=7 prio=120 group_dead=false"),
            l(6, 6, "sched:sched_process_exit: comm=a pid=6 prio=120 group_dead=true"),
            // A child never seen again is a process.
            l(5, 5, "sched:sched_process_fork: comm=a pid=5 child_comm=a child_pid=8"),
        ]
        .concat();
        let (s, r) = import(&text);
        assert_eq!(
            lines(&s),
            [
                "5 fork() = 6",
                "5 clone(child_stack=NULL, flags=CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_SIGHAND|CLONE_THREAD|CLONE_SYSVSEM) = 7",
                "6 touch(0x7f0000001000, 4096, \"w\")",
                "7 touch(0x7f0000001000, 4096, \"r\")",
                "7 exit_group(0) = ?",
                "6 exit_group(0) = ?",
                "5 fork() = 8",
            ]
        );
        assert_eq!((r.processes, r.threads), (3, 1));
    }

    #[test]
    fn clone_flags_decide_when_recorded() {
        let text = [
            l(5, 5, &enter("clone", "clone_flags: 0x00004111, newsp: 0x00000000, parent_tidptr: 0x00000000, child_tidptr: 0x00000000, tls: 0x00000000")),
            l(5, 5, "sched:sched_process_fork: comm=a pid=5 child_comm=a child_pid=6"),
            l(5, 5, &exit("clone", "0x6")),
            l(5, 5, &enter("clone", "clone_flags: 0x00010900, newsp: 0x00000000, parent_tidptr: 0x00000000, child_tidptr: 0x00000000, tls: 0x00000000")),
            l(5, 5, "sched:sched_process_fork: comm=a pid=5 child_comm=a child_pid=7"),
            l(5, 5, &exit("clone", "0x7")),
        ]
        .concat();
        let (s, _) = import(&text);
        assert_eq!(
            lines(&s),
            ["5 vfork() = 6", "5 clone(child_stack=NULL, flags=CLONE_VM|CLONE_SIGHAND|CLONE_THREAD) = 7",]
        );
    }

    #[test]
    fn exec_records_and_failed_execs() {
        let text = [
            // The temporary stack of an exec with more than a page of arguments: dropped.
            l(
                5,
                5,
                "PERF_RECORD_MMAP2 5/5: [0x7fffffffd000(0x2000) @ 0x7fffffffd000 00:00 0 0]: rw-p //anon",
            ),
            l(
                5,
                5,
                "PERF_RECORD_MMAP2 5/5: [0x7ffe00000000(0x21000) @ 0x7ffffffde000 00:00 0 0]: rw-p [stack]",
            ),
            l(5, 5, "PERF_RECORD_MMAP2 5/5: [0x400000(0x1000) @ 0 fe:00 10 0]: r--p prog"),
            l(5, 5, "sched:sched_process_exec: filename=my prog pid=5 old_pid=5"),
            l(5, 5, &exit("execve", "0x0")),
            l(5, 5, &enter("execve", "filename: 0x7ffe00001000, argv: 0x7ffe00002000, envp: 0x7ffe00003000")),
            l(5, 5, &exit("execve", "0xfffffffffffffffe")),
            l(5, 5, &enter("execve", "filename: 0x7ffe00001000, argv: 0x7ffe00002000, envp: 0x7ffe00003000")),
            l(5, 5, "PERF_RECORD_MMAP2 5/5: [0x500000(0x2000) @ 0x1000 fe:00 11 0]: r-xp other"),
            l(5, 5, "PERF_RECORD_MMAP2 5/5: [0x502000(0x3000) @ 0x502000 00:00 0 0]: rw-p //anon"),
            l(5, 5, "sched:sched_process_exec: filename=other pid=5 old_pid=5"),
            l(5, 5, &exit("execve", "0x0")),
        ]
        .concat();
        let (s, r) = import(&text);
        assert_eq!(
            lines(&s),
            [
                "5 execve(\"my prog\", [\"my prog\"], NULL) = 0",
                "5 map_record(0x7ffe00000000, 135168, 34359738334, PROT_READ|PROT_WRITE, \"p\", 0x0, 0, NULL, \"[stack]\")",
                "5 map_record(0x400000, 4096, 0, PROT_READ, \"p\", 0xfe00, 10, \"prog\", NULL)",
                "5 execve(\"other\", [\"other\"], NULL) = 0",
                "5 map_record(0x500000, 8192, 1, PROT_READ|PROT_EXEC, \"p\", 0xfe00, 11, \"other\", NULL)",
                "5 map_record(0x502000, 12288, 1282, PROT_READ|PROT_WRITE, \"p\", 0x0, 0, NULL, NULL)",
            ]
        );
        let at: Vec<usize> = s.steps.iter().map(|s| s.line).collect();
        assert_eq!(at, [4, 2, 3, 8, 9, 10]);
        assert_eq!(r.skipped["execve failed (ENOENT)"], 1);
        assert_eq!(r.skipped["PERF_RECORD_MMAP2 of the temporary exec stack"], 1);
    }

    /// An mmap that names a file longer after its openat than a stream holds steps back:
    /// the stream says it was not exact (and with the usual hold it is).
    #[test]
    fn late_naming_spoils_a_short_hold() {
        let mut text = l(5, 5, &enter("openat", "dfd: 0xffffff9c, filename: 0x1, flags: 0x0, mode: 0x0"));
        text += &l(5, 5, &exit("openat", "0x3"));
        for i in 0..10 {
            text += &l(5, 5, &format!("exceptions:page_fault_user: address=0x{i}000 ip=0x1 error_code=0x6"));
        }
        text += &l(5, 5, &enter("mmap", "addr: 0x0, len: 0x1000, prot: 0x1, flags: 0x2, fd: 0x3, off: 0x0"));
        text += &l(5, 5, "PERF_RECORD_MMAP2 5/5: [0x7f0000000000(0x1000) @ 0 fe:00 7 0]: r--p a.so");
        text += &l(5, 5, &exit("mmap", "0x7f0000000000"));
        let (whole, _) = import(&text);
        assert!(matches!(&whole.steps[0].call, Call::Openat { path, .. } if path == "a.so"));
        let (_, end) = crate::stream::tests::streamed(&text, 1, 4).expect("perf text");
        assert!(!end.exact);
        let (steps, end) = crate::stream::tests::streamed(&text, 1, 11).expect("perf text");
        assert!(end.exact);
        assert_eq!(steps[0], crate::stream::tests::show(&whole.steps[0]));
    }

    #[test]
    fn mmap_records_name_files_through_dups_forks_and_execs() {
        let mmap_fd = |fd: &str| {
            enter(
                "mmap",
                &format!(
                    "addr: 0x00000000, len: 0x00001000, prot: 0x00000001, flags: 0x00000002, fd: {fd}, off: 0x00000000"
                ),
            )
        };
        let rec = |name: &str, ino: u32| {
            format!("PERF_RECORD_MMAP2 5/5: [0x7f0000000000(0x1000) @ 0 fe:00 {ino} 0]: r--p {name}")
        };
        let open = "dfd: 0xffffff9c, filename: 0x7ffe00001000, flags: 0x00000000, mode: 0x00000000";
        let open_cloexec = "dfd: 0xffffff9c, filename: 0x7ffe00001000, flags: 0x00080000, mode: 0x00000000";
        let text = [
            l(5, 5, &enter("openat", open)), // 1
            l(5, 5, &exit("openat", "0x3")),
            l(5, 5, &enter("dup", "fildes: 0x00000003")), // 3
            l(5, 5, &exit("dup", "0x4")),
            l(5, 5, &enter("close", "fd: 0x00000003")), // 5
            l(5, 5, &exit("close", "0x0")),
            l(5, 5, &mmap_fd("0x00000004")), // 7: names the openat at 1
            l(5, 5, &rec("a.so", 10)),
            l(5, 5, &exit("mmap", "0x7f0000000000")),
            l(5, 5, &enter("openat", open)), // 10: never mapped
            l(5, 5, &exit("openat", "0x3")),
            l(5, 5, &enter("openat", open_cloexec)), // 12
            l(5, 5, &exit("openat", "0x6")),
            l(5, 5, "sched:sched_process_fork: comm=a pid=5 child_comm=a child_pid=9"),
            l(9, 9, &enter("dup3", "oldfd: 0x00000006, newfd: 0x00000007, flags: 0x00000000")), // 15
            l(9, 9, &exit("dup3", "0x7")),
            l(9, 9, &enter("execve", "filename: 0x1, argv: 0x2, envp: 0x3")),
            l(9, 9, "sched:sched_process_exec: filename=x pid=9 old_pid=9"),
            l(9, 9, &exit("execve", "0x0")),
            // fd 6 was O_CLOEXEC: gone; fd 7 (dup3 without O_CLOEXEC) stays.
            l(9, 9, &mmap_fd("0x00000006")), // 20
            l(9, 9, &rec("lost.so", 12).replace("5/5", "9/9")),
            l(9, 9, &exit("mmap", "0x7f0000000000")),
            l(9, 9, &mmap_fd("0x00000007")), // 23: names the openat at 12
            l(9, 9, &rec("b/a.so", 11).replace("5/5", "9/9").replace("b/a.so", "a.so")),
            l(9, 9, &exit("mmap", "0x7f0000000000")),
        ]
        .concat();
        let (s, r) = import(&text);
        let opens: Vec<&str> = s
            .steps
            .iter()
            .filter_map(|s| match &s.call {
                Call::Openat { path, .. } => Some(path.as_str()),
                _ => None,
            })
            .collect();
        // A second file with the same base name gets its inode added.
        assert_eq!(opens, ["a.so", "fd3@line10", "a.so#11"]);
        let texts: Vec<&str> = s.steps.iter().map(|s| s.text.as_str()).collect();
        assert!(texts.contains(&"openat(AT_FDCWD, \"a.so#11\", O_RDONLY|O_CLOEXEC)"), "{texts:?}");
        assert_eq!(r.incomplete["mmap of an fd opened before the trace"], 1);
        assert_eq!(
            lines(&s).iter().filter(|l| l.contains("dup")).collect::<Vec<_>>(),
            ["5 dup(3) = 4", "9 dup2(6, 7) = 7"]
        );
    }

    #[test]
    fn lost_exits_and_garbage_are_counted() {
        let text = [
            l(5, 5, &enter("mmap", MMAP_ANON)),
            // The exit was lost: the fault shows the task back in user mode.
            l(5, 5, "exceptions:page_fault_user: address=0x1000 ip=0x1 error_code=0x4"),
            l(5, 5, &exit("munmap", "0x0")),
            l(5, 5, &enter("munmap", "addr: 0x1000")),
            l(5, 5, &exit("munmap", "0x0")),
            l(5, 5, &enter("munmap", "addr: 0x1000, len 0x1000")),
            l(5, 5, &exit("munmap", "0x0")),
            l(5, 5, &enter("openat", "dfd: 0xffffff9c, filename: 0x1, flags: 0x0, mode: 0x0")),
            l(5, 5, &exit("openat", "0xfffffffffffffffa")),
            l(5, 5, "exceptions:page_fault_user: address=zz ip=0x1 error_code=0x4"),
            l(5, 5, "sched:sched_switch: prev_comm=a"),
            l(5, 5, "sched:sched_process_fork: comm=a pid=5 child_comm=a"),
            l(5, 5, "sched:sched_process_exec: pid=5"),
            l(5, 5, "nonsense"),
            l(0, 0, "sched:sched_switch: x"),
            l(5, 5, "PERF_RECORD_LOST lost 17"),
            l(5, 5, "PERF_RECORD_COMM: prog 5/5"),
            "garbage in the middle\n".to_string(),
            l(5, 5, "PERF_RECORD_MMAP2 5/5: [0x1000(0x1000) @ 0 fe:00 1 0]: r--p stray"),
            l(5, 5, &enter("munmap", "addr: 0x00002000, len: 0x00001000")),
            "            prog  5/5   100.0000".to_string(),
        ]
        .concat();
        let (s, r) = import(&text);
        assert_eq!(
            lines(&s),
            [
                "5 mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0)",
                "5 touch(0x1000, 4096, \"r\")",
                "5 munmap(0x2000, 4096)",
            ]
        );
        let want: BTreeMap<String, u64> = [
            ("sys_exit_munmap without its sys_enter", 1),
            ("garbled sys_enter_munmap", 2),
            ("openat failed with unknown errno 6", 1),
            ("garbled page_fault_user", 1),
            ("event sched:sched_switch", 1),
            ("garbled sched_process_fork", 1),
            ("garbled sched_process_exec", 1),
            ("garbled event", 1),
            ("event of pid 0", 1),
            ("PERF_RECORD_COMM", 1),
            ("garbled line", 2),
            ("PERF_RECORD_MMAP2 outside an exec or mmap", 1),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(r.skipped, want);
        assert_eq!(r.incomplete["missing sys_exit_mmap"], 1);
        assert_eq!(r.incomplete["missing sys_exit_munmap"], 1);
        assert_eq!(r.lost, 17);
        assert!(
            r.problems[0].starts_with("t.perf:4: garbled sys_enter_munmap: missing argument `len`"),
            "{:?}",
            r.problems
        );
        assert!(
            r.problems.iter().any(|p| p.starts_with("t.perf:18: garbled line: garbage")),
            "{:?}",
            r.problems
        );
    }

    #[test]
    fn perf_default_fields_are_named() {
        let default = "            perf 15128 [001]   668.527414: syscalls:sys_enter_mmap: addr: 0x0\n";
        assert_eq!(perf_without_tid(default), Some(1));
        let no_cpu = "\nls 15128 668.527414: PERF_RECORD_MMAP2 15128/15128: [0x1(0x1000) @ 0 00:00 0 0]: ---p //anon\n";
        assert_eq!(perf_without_tid(no_cpu), Some(2));
        // strace lines with timestamps are not perf text.
        assert_eq!(perf_without_tid("1234 1009.601168 mmap(NULL, 4096, ...) = 0x1\n"), None);
        assert_eq!(perf_without_tid("1234 mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, 3, 0) = 0x1\n"), None);
        let dir = std::env::temp_dir().join(format!("anonmm-default-{}", std::process::id()));
        std::fs::write(&dir, default).unwrap();
        let e = read_trace(&dir).unwrap_err();
        let _ = std::fs::remove_file(&dir);
        assert_eq!(e.line, 1);
        assert!(e.reason.contains("-F comm,pid,tid,time,event,trace"), "{e}");
    }

    #[test]
    fn not_perf_text_is_an_error() {
        for (text, line) in
            [("", 0), ("\n\n", 0), ("# a script\n1 munmap(0x1000, 4096) = 0\n", 1), ("\nhello\n", 2)]
        {
            let e = parse_perf("t.perf", text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            // A file-level problem names no line.
            let at = if line == 0 { "t.perf: ".to_string() } else { format!("t.perf:{line}: ") };
            assert!(e.to_string().starts_with(&at), "{e}");
        }
    }
}
