//! Real `strace -f` output parses with `skip_unknown` (skipped where strace cannot run).

use std::process::Command;

use anonmm::script::{Call, ParseOptions, parse_file_with};

#[test]
fn real_strace_output_parses() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let out = dir.join("replay.strace");
    // -tt -T -y: timestamps, timings and fd paths, which the parser must step over.
    let status = Command::new("strace")
        .args(["-f", "-tt", "-T", "-y", "-o"])
        .arg(&out)
        .args(["sh", "-c", "true & wait; ls / >/dev/null"])
        .output();
    match status {
        Ok(o) if o.status.success() => {}
        _ => {
            skipped("strace_replay", "strace unavailable or not permitted");
            return;
        }
    }
    let opts = ParseOptions { skip_unknown: true };
    let s = parse_file_with(&out, &opts).unwrap_or_else(|e| panic!("{e}"));
    assert!(s.steps.iter().any(|s| matches!(s.call, Call::Fork { .. })), "no fork");
    assert!(s.steps.iter().any(|s| matches!(s.call, Call::Mmap { .. })), "no mmap");
    assert!(s.steps.iter().any(|s| matches!(s.call, Call::Execve { .. })), "no execve");
    assert!(!s.skipped.is_empty());
}

/// Say that a test skipped its work, on the real stderr: the harness captures `eprintln!`
/// of passing tests, and a skipped test must not pass silently.
fn skipped(test: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "test {test}: SKIPPED: {why}");
}
