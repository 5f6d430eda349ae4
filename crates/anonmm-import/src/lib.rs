//! Importing real traces into the script AST, so the model can replay real programs.
//!
//! `perf script` text (as `shared/record.sh` records it) is converted by `perf::parse_perf`;
//! `read_trace` also takes strace/anonmm scripts and `.zst`-compressed files.

#![warn(missing_docs)]

pub mod lines;
pub mod perf;
pub mod perf_data;
mod perf_records;
pub mod stream;

pub use lines::Streamed;
pub use perf::{ImportError, ImportReport, parse_perf, read_trace};
pub use stream::{StreamEnd, TraceStream, stream_trace};

// The lower layers' modules, under the paths the files use (`crate::script::Script`).
use anonmm_abi::{abi, errno, types};
use anonmm_script as script;
use anonmm_script::out;

/// Read what `run`, `explain` and friends are given: an anonmm script, or a trace (`perf
/// script` text, `.zst`, or strace output with calls outside the memory subset). A trace
/// comes with its import report (`Some`), and is to be run as `replay` runs it
/// (`RunOptions::replay`); a script that parses strictly is a script (`None`).
pub fn load(path: &std::path::Path) -> Result<(crate::script::Script, Option<ImportReport>), ImportError> {
    // Read once: a pipe (`/dev/stdin`, a shell's `<(...)`) cannot be opened a second time.
    let (name, bytes) = perf::read_input(path)?;
    let zst_name = path.extension().is_some_and(|e| e == "zst");
    let head = &bytes[..bytes.len().min(1 << 16)];
    let text = String::from_utf8_lossy(head);
    let is_trace = head.starts_with(&perf::ZSTD_MAGIC)
        || head.starts_with(perf_data::PERF_MAGIC)
        || zst_name
        || perf::looks_like_perf(&text)
        || perf::perf_without_tid(&text).is_some();
    if !is_trace {
        let text = String::from_utf8_lossy(&bytes);
        match crate::script::parse_str(&name, &text) {
            Ok(s) => return Ok((s, None)),
            // strace output (strace ends every process with `+++ exited with N +++` or
            // `+++ killed by SIG +++`): calls outside the memory subset are skipped and
            // counted. A script's unknown call stays an error (a typo is not a trace).
            Err(e) if e.reason.starts_with("unknown call") && is_strace_output(&text) => {}
            Err(e) => return Err(ImportError { path: e.path, line: e.line, reason: e.reason }),
        }
    }
    perf::read_trace_bytes(&name, zst_name, bytes).map(|(s, r)| (s, Some(r)))
}

/// Whether the text holds strace's end-of-process line for some process.
fn is_strace_output(text: &str) -> bool {
    text.lines().any(|l| l.contains("+++ exited with ") || l.contains("+++ killed by "))
}
