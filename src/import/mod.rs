//! Importing real traces into the script AST, so the model can replay real programs.
//!
//! `perf script` text (as `shared/record.sh` records it) is converted by `perf::parse_perf`;
//! `read_trace` also takes strace/anonmm scripts and `.zst`-compressed files.

pub mod perf;
pub mod perf_data;
pub mod stream;

pub use perf::{ImportError, ImportReport, parse_perf, read_trace};
pub use stream::{StreamEnd, Streamed, TraceStream, stream_trace};
