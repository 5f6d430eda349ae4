//! The `anonmm` binary: exit statuses and error messages.

use std::path::PathBuf;
use std::process::{Command, Output};

/// Write `text` to a fresh file under the test temp dir.
fn script(name: &str, text: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn anonmm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_anonmm")).args(args).output().unwrap()
}

const GOOD: &str = "1 mmap(0x200000000000, 16384, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED_NOREPLACE, -1, 0) = 0x200000000000\n\
                    1 touch(0x200000000000, 16384, \"w\") = 0\n";

#[test]
fn bad_scripts_exit_2_naming_file_and_line() {
    let cases = [
        ("unknown_call.strace", "1 frobnicate(1) = 0", "unknown call frobnicate"),
        ("bad_number.strace", "1 munmap(0x20000000000z, 4096) = 0", "bad number"),
        ("missing_paren.strace", "1 munmap(0x200000000000, 4096 = 0", "missing ')'"),
        (
            "unknown_flag.strace",
            "1 mprotect(0x200000000000, 4096, PROT_READ|PROT_FLY) = 0",
            "unknown flag PROT_FLY",
        ),
        ("unknown_errno.strace", "1 munmap(0x200000000000, 4096) = -1 EWHAT (x)", "unknown errno name EWHAT"),
    ];
    for (name, bad, want) in cases {
        // The bad line is line 3.
        let path = script(name, &format!("{GOOD}{bad}\n"));
        let out = anonmm(&["run", path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(stderr.contains(&format!("{}:3: ", path.display())), "{name}: {stderr}");
        assert!(stderr.contains(want), "{name}: {stderr}");
    }
}

#[test]
fn missing_file_exits_2() {
    let out = anonmm(&["run", "/nonexistent/x.strace"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/x.strace"));
}

#[test]
fn bad_usage_exits_2() {
    assert_eq!(anonmm(&["run"]).status.code(), Some(2));
    assert_eq!(anonmm(&["frob"]).status.code(), Some(2));
}

#[test]
fn run_good_script_prints_maps() {
    let path = script("good.strace", GOOD);
    let out = anonmm(&["run", "--check", path.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.starts_with("== pid 1 ==\n"), "{stdout}");
    assert!(stdout.contains("200000000000-200000004000 rw-p 00000000 00:00 0"), "{stdout}");
}

#[test]
fn run_json_has_one_step_per_call() {
    let path = script("good_json.strace", GOOD);
    let out = anonmm(&["run", "--json", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let steps = v["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0]["line"], 1);
    assert_eq!(steps[0]["result"], "= 0x200000000000");
    let pages = steps[1]["procs"]["1"]["pages"].as_array().unwrap();
    assert_eq!(pages.len(), 4);
    assert_eq!(pages[0][0], "0x200000000000");
    assert_eq!(steps[1]["procs"]["1"]["tags"].as_array().unwrap().len(), 4);
}

#[test]
fn run_mismatch_exits_1() {
    let path = script("mismatch.strace", "1 munmap(0x200000000000, 4096) = -1 EINVAL (Invalid argument)\n");
    let out = anonmm(&["run", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("{}:1: expected = -1 EINVAL", path.display())), "{stderr}");
    assert!(stderr.contains("got = 0"), "{stderr}");
}

#[test]
fn run_bad_input_exits_2() {
    // A call from a process that does not exist.
    let path = script("no_proc.strace", "1 fork() = 2\n7 brk(NULL)\n");
    let out = anonmm(&["run", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}
