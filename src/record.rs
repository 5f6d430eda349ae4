//! `anonmm record`: capture a real program's memory-management trace with `perf`, so that
//! `anonmm import` and `anonmm replay` read it. The trace is the `perf.data` perf writes
//! (anonmm reads it directly, see `import::perf_data`); with `text`, it is the `perf script`
//! text `shared/record.sh` produces instead.
//!
//! The events are those of record.sh: the memory system calls entered and exited (so that a
//! call's arguments and its result pair up), fork/exec/exit (so that address spaces are
//! followed), `exceptions:page_fault_user` (the faults that populate memory), `-d` (data
//! addresses), and `perf script --show-mmap-events` (the mappings the kernel makes at exec,
//! which no system call shows). A tracepoint the running kernel lacks (a syscall added later,
//! or compiled out) is left out rather than failing the whole recording: perf refuses an
//! unknown event outright.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The system calls whose enter and exit tracepoints are recorded (record.sh's list).
pub const SYSCALLS: &[&str] = &[
    "mmap",
    "munmap",
    "mremap",
    "mprotect",
    "pkey_mprotect",
    "brk",
    "madvise",
    "mlock",
    "mlock2",
    "munlock",
    "mlockall",
    "munlockall",
    "openat",
    "close",
    "dup",
    "dup2",
    "dup3",
    "prctl",
    "memfd_create",
    "shmat",
    "shmdt",
    "execve",
    "exit",
    "exit_group",
];

/// The other tracepoints: process life (the importer follows forks, execs and exits) and
/// user page faults (with `error_code`, telling reads from writes).
pub const OTHER_EVENTS: &[&str] = &[
    "sched:sched_process_fork",
    "sched:sched_process_exit",
    "sched:sched_process_exec",
    "exceptions:page_fault_user",
];

/// Events without which a recording is useless to the importer: without the mmap
/// tracepoints no mapping is seen, without the fault tracepoint no page is.
const REQUIRED: &[&str] =
    &["syscalls:sys_enter_mmap", "syscalls:sys_exit_mmap", "exceptions:page_fault_user"];

/// Where tracefs may be mounted; perf looks in the same places.
const TRACEFS: &[&str] = &["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// Why a recording could not be made. Each message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// `perf` could not be started or does not work; the text is the OS or perf error.
    #[error(
        "perf is not installed or does not run ({0}); install it (Debian: `apt-get install linux-perf`, \
         Ubuntu: `apt-get install linux-tools-$(uname -r)`, Fedora: `dnf install perf`)"
    )]
    PerfMissing(String),
    /// perf was refused access to tracepoints (permissions, `perf_event_paranoid`, tracefs);
    /// the text is perf's complaint.
    #[error(
        "perf may not trace here: {0}\n  run as root, or lower `kernel.perf_event_paranoid` \
         (`sysctl -w kernel.perf_event_paranoid=-1`) and make tracefs readable \
         (`mount -t tracefs nodev /sys/kernel/tracing`)"
    )]
    NotPermitted(String),
    /// Required events (the mmap tracepoints, `exceptions:page_fault_user`) are missing;
    /// the text lists them.
    #[error("the running kernel lacks tracepoints the importer needs: {0}")]
    MissingTracepoints(String),
    /// No program was given to record.
    #[error("nothing to run: give the program after `--`")]
    NoCommand,
    /// The program to record was not found; the text is its name.
    #[error("{0}: no such program (not a file, nor found in PATH)")]
    NoProgram(String),
    /// Writing the output failed; the text names the file and the error.
    #[error("{0}")]
    Io(String),
    /// `perf record` or `perf script` failed or produced nothing; the text says how.
    #[error("perf failed: {0}")]
    PerfFailed(String),
}

/// What a recording gave.
#[derive(Clone, Debug, Default)]
pub struct RecordSummary {
    /// The trace file written.
    pub out: PathBuf,
    /// Lines of `perf script` text written (0 for a `perf.data`).
    pub lines: usize,
    /// Bytes written (compressed when OUT ends in `.zst`).
    pub bytes: u64,
    /// Tracepoints of record.sh's list the running kernel does not have (left out).
    pub missing: Vec<String>,
    /// The program's exit status as perf reported it (perf returns the workload's status).
    pub status: Option<i32>,
}

/// The full list of events record.sh asks for, in its order.
pub fn wanted_events() -> Vec<String> {
    let mut ev = Vec::new();
    for s in SYSCALLS {
        ev.push(format!("syscalls:sys_enter_{s}"));
        ev.push(format!("syscalls:sys_exit_{s}"));
    }
    ev.extend(OTHER_EVENTS.iter().map(|s| s.to_string()));
    ev
}

/// Tracepoint names (`system:event`) in `perf list tracepoint` output: lines like
/// `  syscalls:sys_enter_mmap                            [Tracepoint event]`.
pub fn parse_perf_list(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.contains("[Tracepoint event]"))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.contains(':'))
        .map(str::to_string)
        .collect()
}

/// Which of `wanted` exist on the running kernel: looked up in tracefs when it is mounted
/// and readable, else asked of `perf list` (which mounts tracefs itself when it can).
fn available(wanted: &[String]) -> Result<Vec<String>, RecordError> {
    for root in TRACEFS {
        let events = Path::new(root).join("events");
        if events.join("syscalls").is_dir() || events.join("sched").is_dir() {
            return Ok(wanted
                .iter()
                .filter(|e| {
                    let (sys, name) = e.split_once(':').unwrap_or(("", e));
                    events.join(sys).join(name).is_dir()
                })
                .cloned()
                .collect());
        }
    }
    let out = Command::new("perf")
        .args(["list", "tracepoint"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| RecordError::PerfMissing(e.to_string()))?;
    let listed = parse_perf_list(&String::from_utf8_lossy(&out.stdout));
    if listed.is_empty() {
        return Err(RecordError::NotPermitted(
            "`perf list tracepoint` shows no tracepoint (tracefs not mounted or not readable)".into(),
        ));
    }
    Ok(wanted.iter().filter(|e| listed.contains(e)).cloned().collect())
}

/// Check that perf runs at all: the Debian `perf` wrapper exists without a matching binary.
fn perf_version() -> Result<String, RecordError> {
    let out = Command::new("perf")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| RecordError::PerfMissing(e.to_string()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(RecordError::PerfMissing(if err.is_empty() {
            "perf --version failed".into()
        } else {
            err
        }));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Whether perf's complaint is about permissions rather than the program or the events.
fn is_permission_problem(stderr: &str) -> bool {
    let s = stderr.to_ascii_lowercase();
    ["perf_event_paranoid", "permission denied", "no permission", "eacces", "operation not permitted"]
        .iter()
        .any(|k| s.contains(k))
}

/// Whether `prog` names a file (with a `/`) or is found in `PATH`, as execvp would look.
fn program_exists(prog: &str) -> bool {
    if prog.contains('/') {
        return Path::new(prog).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(prog).is_file()))
}

/// A temporary file removed when dropped, so that a failed recording leaves no perf.data.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Record `command` under perf and write its `perf.data` to `out`, or with `text` the
/// `perf script` text of it (zstd-compressed when `out` ends in `.zst`, either way). The
/// program's standard output and error pass through to ours.
pub fn record(out: &Path, command: &[String], text: bool) -> Result<RecordSummary, RecordError> {
    let Some((prog, args)) = command.split_first() else {
        return Err(RecordError::NoCommand);
    };
    // perf -q says nothing when the workload cannot be run: look for it first.
    if !program_exists(prog) {
        return Err(RecordError::NoProgram(prog.clone()));
    }
    // A recording lost because OUT cannot be written is found out before the program runs.
    let created = !out.exists();
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(out)
        .map_err(|e| RecordError::Io(format!("{}: cannot write: {e}", out.display())))?;
    let res = record_to(out, prog, args, text);
    if res.is_err() && created {
        let _ = std::fs::remove_file(out);
    }
    res
}

/// [`record`] once OUT is known to be writable.
fn record_to(out: &Path, prog: &String, args: &[String], text: bool) -> Result<RecordSummary, RecordError> {
    perf_version()?;
    let wanted = wanted_events();
    let have = available(&wanted)?;
    let missing: Vec<String> = wanted.iter().filter(|e| !have.contains(e)).cloned().collect();
    let lacking: Vec<&str> = REQUIRED.iter().copied().filter(|r| !have.iter().any(|h| h == r)).collect();
    if !lacking.is_empty() {
        return Err(RecordError::MissingTracepoints(lacking.join(", ")));
    }
    let data = TempFile(std::env::temp_dir().join(format!("anonmm-record-{}.data", std::process::id())));
    let mut cmd = Command::new("perf");
    cmd.args(["record", "-q", "-d", "-m", "4096", "-o"]).arg(&data.0);
    for e in &have {
        cmd.args(["-e", e]);
    }
    cmd.arg("--").arg(prog).args(args);
    // perf's own complaints come on stderr; keep them to explain a failure, and pass the
    // program's through afterwards.
    let rec = cmd
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| RecordError::PerfMissing(e.to_string()))?;
    let rec_err = String::from_utf8_lossy(&rec.stderr).to_string();
    let recorded = std::fs::metadata(&data.0).map(|m| m.len() > 0).unwrap_or(false);
    if !recorded {
        let why = rec_err.trim().to_string();
        if is_permission_problem(&why) {
            return Err(RecordError::NotPermitted(why));
        }
        return Err(RecordError::PerfFailed(if why.is_empty() {
            format!("perf record wrote no data (exit status {:?})", rec.status.code())
        } else {
            why
        }));
    }
    let _ = std::io::stderr().write_all(rec_err.as_bytes());
    if !text {
        let bytes = keep_perf_data(&data.0, out)?;
        return Ok(RecordSummary {
            out: out.to_path_buf(),
            lines: 0,
            bytes,
            missing,
            status: Some(exit_status(rec.status)),
        });
    }
    let script = Command::new("perf")
        .args(["script", "-i"])
        .arg(&data.0)
        .args(["--show-mmap-events", "--show-lost-events", "-F", "comm,pid,tid,time,event,trace"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| RecordError::PerfFailed(format!("perf script: {e}")))?;
    if script.stdout.is_empty() {
        return Err(RecordError::PerfFailed("perf script printed nothing".into()));
    }
    let lines = script.stdout.iter().filter(|&&b| b == b'\n').count();
    let bytes = write_maybe_zst(out, &script.stdout)?;
    Ok(RecordSummary { out: out.to_path_buf(), lines, bytes, missing, status: Some(exit_status(rec.status)) })
}

/// The program's exit status as perf passes it on: its exit code, or, for a program killed
/// by a signal (perf raises the same signal on itself), 128 + the signal, as a shell says.
fn exit_status(st: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    st.code().or_else(|| st.signal().map(|s| 128 + s)).unwrap_or(1)
}

/// Move the recorded `perf.data` at `data` to `out`, zstd-compressed (at a fast level: the
/// file is large and mostly numbers) when `out` ends in `.zst`; the bytes written.
fn keep_perf_data(data: &Path, out: &Path) -> Result<u64, RecordError> {
    let io = |e: std::io::Error| RecordError::Io(format!("{}: cannot write: {e}", out.display()));
    if out.extension().is_some_and(|e| e == "zst") {
        let src = std::fs::File::open(data).map_err(io)?;
        let dst = std::fs::File::create(out).map_err(io)?;
        let mut enc = zstd::stream::write::Encoder::new(std::io::BufWriter::new(dst), 3).map_err(io)?;
        std::io::copy(&mut std::io::BufReader::new(src), &mut enc).map_err(io)?;
        enc.finish().and_then(|mut w| w.flush()).map_err(io)?;
    } else if std::fs::rename(data, out).is_err() {
        // Another file system: copy.
        std::fs::copy(data, out).map_err(io)?;
    }
    Ok(std::fs::metadata(out).map_err(io)?.len())
}

/// Write `text` to `out`, zstd-compressed when the name ends in `.zst`; the bytes written.
pub fn write_maybe_zst(out: &Path, text: &[u8]) -> Result<u64, RecordError> {
    let io = |e: std::io::Error| RecordError::Io(format!("{}: cannot write: {e}", out.display()));
    let body = if out.extension().is_some_and(|e| e == "zst") {
        // A fast level on every core: level 19 on one thread took five times as long as the
        // recorded program; traces are text with much repetition, and level 3 keeps most of
        // the gain (`zstd -19` recompresses one for the repository).
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).map_err(io)?;
        enc.multithread(threads).map_err(io)?;
        enc.write_all(text).map_err(io)?;
        enc.finish().map_err(io)?
    } else {
        text.to_vec()
    };
    std::fs::write(out, &body).map_err(io)?;
    Ok(body.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_record_sh_s() {
        let ev = wanted_events();
        assert_eq!(ev.len(), SYSCALLS.len() * 2 + OTHER_EVENTS.len());
        assert_eq!(ev[0], "syscalls:sys_enter_mmap");
        assert_eq!(ev[1], "syscalls:sys_exit_mmap");
        assert!(ev.contains(&"exceptions:page_fault_user".to_string()));
    }

    #[test]
    fn perf_list_is_parsed() {
        let text = "\nList of pre-defined events:\n\n  syscalls:sys_enter_mmap                            [Tracepoint event]\n  sched:sched_process_fork                           [Tracepoint event]\n  cycles                                             [Hardware event]\n";
        assert_eq!(parse_perf_list(text), vec!["syscalls:sys_enter_mmap", "sched:sched_process_fork"]);
    }

    #[test]
    fn permission_words() {
        assert!(is_permission_problem(
            "Error:\nAccess to performance monitoring... perf_event_paranoid setting is 4"
        ));
        assert!(!is_permission_problem("event syntax error: 'foo'"));
    }

    #[test]
    fn missing_program() {
        let cmd = vec!["/nonexistent/prog".to_string()];
        assert!(matches!(record(Path::new("/nonexistent/x"), &cmd, false), Err(RecordError::NoProgram(_))));
        assert!(program_exists("sh"));
    }

    #[test]
    fn an_unwritable_output_is_refused_before_running() {
        let cmd = vec!["sh".to_string(), "-c".to_string(), "exit 0".to_string()];
        let e = record(Path::new("/nonexistent/dir/out.txt"), &cmd, false).unwrap_err();
        assert!(matches!(&e, RecordError::Io(m) if m.contains("/nonexistent/dir/out.txt")), "{e}");
    }

    #[test]
    fn a_killed_program_is_not_exit_0() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(exit_status(std::process::ExitStatus::from_raw(9)), 137);
        assert_eq!(exit_status(std::process::ExitStatus::from_raw(7 << 8)), 7);
        assert_eq!(exit_status(std::process::ExitStatus::from_raw(0)), 0);
    }

    #[test]
    fn zst_output_round_trips() {
        let p = std::env::temp_dir().join(format!("anonmm-record-{}.txt.zst", std::process::id()));
        let text = b"line\n".repeat(100_000);
        write_maybe_zst(&p, &text).unwrap();
        let back = zstd::stream::decode_all(std::fs::File::open(&p).unwrap()).unwrap();
        let _ = std::fs::remove_file(&p);
        assert_eq!(back, text);
    }

    #[test]
    fn no_command() {
        assert!(matches!(record(Path::new("/nonexistent/x"), &[], false), Err(RecordError::NoCommand)));
    }
}
