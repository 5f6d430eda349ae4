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

/// A script piped in (`/dev/stdin`) is read once: sniffing its format must not eat it.
#[test]
fn run_reads_a_piped_script() {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_anonmm"))
        .args(["run", "--json", "/dev/stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(GOOD.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["steps"].as_array().unwrap().len(), 2);
}

/// `explain` runs an exit that later steps depend on (a vfork parent wakes when its child
/// exits), and explains a process that exits as it was just before.
#[test]
fn explain_runs_exits_before_the_end() {
    let path = script(
        "explain_vfork.strace",
        "1 mmap(0x200000000000, 16384, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_FIXED|MAP_ANONYMOUS, -1, 0) = 0x200000000000\n\
         1 vfork() = 2\n\
         2 exit_group(0) = ?\n\
         1 mprotect(0x200000001000, 4096, PROT_READ) = 0\n\
         1 exit_group(0) = ?\n",
    );
    let out = anonmm(&["explain", path.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.starts_with("== pid 1 (3 VMAs, as before its exit at line 5) =="), "{stdout}");
    // The vfork child borrowed its parent's mm: nothing of its own to explain.
    assert!(!stdout.contains("== pid 2"), "{stdout}");
    assert!(
        stdout.contains("200000000000-200000001000 and 200000001000-200000002000: NOMERGE_FLAGS"),
        "{stdout}"
    );
}

/// A trace piped in is replayed as the file is (read once, not streamed).
#[test]
fn replay_reads_a_piped_trace() {
    use std::io::Write;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read(root.join("tests/data/sort.excerpt.perf.txt")).unwrap();
    let file = anonmm(&[
        "replay",
        "--format",
        "json",
        root.join("tests/data/sort.excerpt.perf.txt").to_str().unwrap(),
    ]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_anonmm"))
        .args(["replay", "--format", "json", "/dev/stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&text).unwrap();
    let piped = child.wait_with_output().unwrap();
    assert_eq!(piped.status.code(), file.status.code(), "{}", String::from_utf8_lossy(&piped.stderr));
    let rows = |o: &Output| {
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let mut r = v.as_array().or_else(|| v["rows"].as_array()).cloned().unwrap_or_default();
        for x in &mut r {
            if let Some(m) = x.as_object_mut() {
                m.remove("seconds");
                m.remove("trace");
            }
        }
        r
    };
    assert!(!rows(&file).is_empty());
    assert_eq!(rows(&piped), rows(&file));
}
