//! The command line's standard output, and its one error style.
//!
//! A closed pipe (`anonmm run x | head`) ends the process the way Unix tools end: by
//! `SIGPIPE`, quietly, instead of the panic `println!` gives (Rust ignores `SIGPIPE`, so a
//! write to a closed pipe fails with `EPIPE`). The signal is restored only at that moment:
//! the oracle's controller writes to its workers' sockets and must get `EPIPE`, not die.

use std::io::Write;

/// Write to stdout; on a closed pipe end quietly, on another error end with exit status 2.
pub fn write_stdout(args: std::fmt::Arguments) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args) {
        stdout_failed(&e);
    }
}

/// Flush stdout, with [`write_stdout`]'s handling of errors.
pub fn flush_stdout() {
    if let Err(e) = std::io::stdout().lock().flush() {
        stdout_failed(&e);
    }
}

/// End the process after a failed write to stdout: quietly, by `SIGPIPE`, when the reader
/// has gone; with a message and exit status 2 otherwise (a full disk).
pub fn stdout_failed(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        // SAFETY: restoring the default action of a signal and raising it in this thread.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            libc::raise(libc::SIGPIPE);
        }
        // Not reached: SIGPIPE's default action ends the process. 128 + SIGPIPE otherwise.
        std::process::exit(141);
    }
    eprintln!("anonmm: stdout: {e}");
    std::process::exit(2);
}

/// Where an error is: `FILE:LINE`, or `FILE` alone when it concerns the whole file
/// (line 0), for the one error style `anonmm: FILE:LINE: reason`.
pub fn location(path: &str, line: usize) -> String {
    if line == 0 { path.to_string() } else { format!("{path}:{line}") }
}

/// `print!` that ends quietly on a closed pipe (see the module documentation).
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::out::write_stdout(format_args!($($arg)*)) };
}

/// `println!` that ends quietly on a closed pipe (see the module documentation).
#[macro_export]
macro_rules! outln {
    () => { $crate::out::write_stdout(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::out::write_stdout(format_args!("{}\n", format_args!($($arg)*))) };
}
