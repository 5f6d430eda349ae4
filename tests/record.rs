//! `anonmm record`: a real recording of a tiny program imports and replays. Skipped (with a
//! message) where perf is missing or may not trace: CI machines need not have it.

use std::path::PathBuf;
use std::process::Command;

fn anonmm(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_anonmm")).args(args).output().unwrap()
}

fn out_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("record");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Record `true`; None (and a message) when this machine cannot record.
fn record_true(name: &str, text: bool) -> Option<PathBuf> {
    let out = out_dir().join(name);
    let mut args = vec!["record", "-o", out.to_str().unwrap()];
    if text {
        args.push("--text");
    }
    args.extend(["--", "true"]);
    let o = anonmm(&args);
    if o.status.code() == Some(2) {
        skipped(name, &format!("perf cannot record here: {}", String::from_utf8_lossy(&o.stderr).trim()));
        return None;
    }
    assert!(o.status.success(), "record failed: {}", String::from_utf8_lossy(&o.stderr));
    Some(out)
}

#[test]
fn records_true_and_imports_it() {
    let Some(trace) = record_true("true.perf.txt.zst", true) else { return };
    let bytes = std::fs::read(&trace).unwrap();
    assert!(bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]), ".zst output is zstd");
    let script = out_dir().join("true.strace");
    let o = anonmm(&["import", trace.to_str().unwrap(), "-o", script.to_str().unwrap()]);
    assert!(o.status.success(), "import failed: {}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["format"], "perf", "{report}");
    let text = std::fs::read_to_string(&script).unwrap();
    // ld.so maps libc; the exec's mappings are there as map_record lines.
    assert!(text.contains(" mmap("), "{text}");
    assert!(text.contains(" map_record("), "{text}");
    let o = anonmm(&["replay", trace.to_str().unwrap(), "--format", "json"]);
    assert!(o.status.success(), "replay failed: {}", String::from_utf8_lossy(&o.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rows[0]["model"], 0, "{rows}");
}

#[test]
fn the_default_output_is_the_perf_data() {
    let Some(trace) = record_true("true.data", false) else { return };
    let bytes = std::fs::read(&trace).unwrap();
    assert!(bytes.starts_with(b"PERFILE2"), "a perf.data");
    let o = anonmm(&["replay", trace.to_str().unwrap(), "--format", "json"]);
    assert!(o.status.success(), "replay failed: {}", String::from_utf8_lossy(&o.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rows[0]["model"], 0, "{rows}");
    assert!(rows[0]["steps"].as_u64().unwrap() > 10, "{rows}");
}

#[test]
fn plain_output_is_perf_text() {
    let Some(trace) = record_true("true.perf.txt", true) else { return };
    let text = std::fs::read_to_string(&trace).unwrap();
    assert!(text.contains("syscalls:sys_enter_mmap"), "{}", &text[..text.len().min(2000)]);
    assert!(text.contains("PERF_RECORD_MMAP2"));
}

#[test]
fn no_command_is_refused() {
    let o = anonmm(&["record", "-o", "/nonexistent/x"]);
    assert_eq!(o.status.code(), Some(2));
}

/// Say that a test skipped its work, on the real stderr: the harness captures `eprintln!`
/// of passing tests, and a skipped test must not pass silently.
fn skipped(test: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "test {test}: SKIPPED: {why}");
}
