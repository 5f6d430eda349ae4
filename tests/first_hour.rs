//! What a new user meets first: every argument of every command described in `--help`, no
//! panic on a closed pipe, one error style, graphs rendered to the format asked for,
//! `run --json` streamed (whole, or only what changed), and `gen` headers that reproduce.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn anonmm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_anonmm")).args(args).output().unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("first_hour");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn example(name: &str) -> String {
    format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The entries of the `Commands:`, `Arguments:` and `Options:` sections of a help text, each
/// with its description (empty when it has none). Entries are indented by 2 to 6 columns;
/// a description follows on the same line after two spaces, or on the next lines, deeper.
fn entries(help: &str) -> Vec<(String, String, String)> {
    let lines: Vec<&str> = help.lines().collect();
    let mut out = Vec::new();
    let mut section = String::new();
    for (i, l) in lines.iter().enumerate() {
        if !l.starts_with(' ') && l.ends_with(':') {
            section = l.trim_end_matches(':').to_string();
            continue;
        }
        if !["Commands", "Arguments", "Options"].contains(&section.as_str()) {
            continue;
        }
        let indent = l.len() - l.trim_start().len();
        if !(2..=6).contains(&indent) || l.trim().is_empty() {
            continue;
        }
        let t = l.trim_start();
        let (spec, desc) = match t.find("  ") {
            Some(at) => (t[..at].to_string(), t[at..].trim().to_string()),
            None => {
                let next = lines.get(i + 1).copied().unwrap_or("");
                let deeper = next.len() - next.trim_start().len() > indent;
                (t.to_string(), if deeper { next.trim().to_string() } else { String::new() })
            }
        };
        out.push((section.clone(), spec, desc));
    }
    out
}

/// Every command path: [], ["run"], ["gen", "stitch"], ["oracle", "fuzz"], …
fn commands(prefix: &[String]) -> Vec<Vec<String>> {
    let mut args: Vec<&str> = prefix.iter().map(String::as_str).collect();
    args.push("--help");
    let o = anonmm(&args);
    assert!(o.status.success(), "{args:?}");
    let help = String::from_utf8_lossy(&o.stdout).to_string();
    let mut all = vec![prefix.to_vec()];
    for (section, spec, _) in entries(&help) {
        if section == "Commands" && spec != "help" {
            let mut p = prefix.to_vec();
            p.push(spec);
            all.extend(commands(&p));
        }
    }
    all
}

#[test]
fn every_argument_of_every_command_is_described() {
    let all = commands(&[]);
    assert!(all.len() >= 17, "{all:?}");
    for cmd in &all {
        for flag in ["-h", "--help"] {
            let mut args: Vec<&str> = cmd.iter().map(String::as_str).collect();
            args.push(flag);
            let help = String::from_utf8_lossy(&anonmm(&args).stdout).to_string();
            let found = entries(&help);
            assert!(!found.is_empty(), "{args:?}: no entries in\n{help}");
            for (section, spec, desc) in found {
                assert!(!desc.is_empty(), "{args:?}: {section} `{spec}` has no description:\n{help}");
            }
            let parent = cmd.len() == 1 && ["gen", "oracle"].contains(&cmd[0].as_str());
            if flag == "--help" && !cmd.is_empty() && !parent {
                assert!(help.contains("Exit status"), "{args:?} states no exit status:\n{help}");
            }
        }
    }
    // Names a user must type are listed.
    let run = String::from_utf8_lossy(&anonmm(&["run", "--help"]).stdout).to_string();
    for p in anonmm::report::POLICIES {
        assert!(run.contains(p), "run --help lists policy {p}");
    }
    let compare = String::from_utf8_lossy(&anonmm(&["compare", "--help"]).stdout).to_string();
    assert!(compare.contains("possible values: text, markdown, json"), "{compare}");
    let top = String::from_utf8_lossy(&anonmm(&["--help"]).stdout).to_string();
    assert!(top.contains("proposed mremap designs."), "the description is whole:\n{top}");
    assert!(top.contains("Exit status"), "{top}");
}

#[test]
fn a_bad_policy_or_format_is_a_usage_error() {
    let s = example("fork_cow.strace");
    for args in [
        vec!["run", "--policy", "linux", &s],
        vec!["compare", "--format", "yaml", &s],
        vec!["replay", "--format", "xml", &s],
        vec!["bench", "--only", "nothing"],
    ] {
        let o = anonmm(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("invalid value"), "{args:?}");
    }
}

/// Run with stdout a pipe whose reader has gone before the first write.
fn closed_pipe(args: &[&str]) -> (std::process::ExitStatus, String) {
    use std::os::fd::FromRawFd;
    // A pipe whose read end is closed before the child starts: no other process (a test
    // spawning at the same time) can hold it open, so the child's first write fails.
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors we then own.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fds[0] is ours and closed once; fds[1] is moved into the OwnedFd.
    let write_end = unsafe {
        libc::close(fds[0]);
        std::os::fd::OwnedFd::from_raw_fd(fds[1])
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_anonmm"))
        .args(args)
        .stdout(Stdio::from(write_end))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (child.wait().unwrap(), err)
}

#[test]
fn a_closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let s = example("policy_fork.strace");
    let cases: Vec<Vec<&str>> = vec![
        vec!["run", &s],
        vec!["run", "--json", &s],
        vec!["run", "--json", "--changes", &s],
        vec!["compare", &s],
        vec!["compare", "--format", "json", &s],
        vec!["replay", "--policy", "all", &s],
        vec!["gen", "random", "--steps", "50"],
        vec!["graph", &s],
        vec!["oracle", "run", "--json", &s],
        vec!["oracle", "diff", &s],
    ];
    for args in cases {
        let (status, err) = closed_pipe(&args);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_ne!(status.code(), Some(101), "{args:?}: {err}");
        // Ended by SIGPIPE, as Unix tools end; or before writing (the oracle unavailable).
        assert!(status.signal() == Some(13) || status.code() == Some(2), "{args:?}: {status:?} {err}");
    }
}

#[test]
fn errors_read_anonmm_file_line_reason() {
    let bad = tmp("bad.strace");
    std::fs::write(&bad, "1 munmap(0x200000000000, 4096) = 0\n1 junk\n").unwrap();
    let b = bad.to_str().unwrap();
    let o = anonmm(&["run", b]);
    assert_eq!(String::from_utf8_lossy(&o.stderr), format!("anonmm: {b}:2: missing '(' after `junk`\n"));
    // A file-level error has no line, and no fake `:0:`.
    let o = anonmm(&["run", "/nonexistent/x.strace"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.starts_with("anonmm: /nonexistent/x.strace: cannot read"), "{e}");
    let o = anonmm(&["replay", "/nonexistent/x.strace"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.starts_with("anonmm: /nonexistent/x.strace: cannot read"), "{e}");
    assert!(!e.contains(":0:"), "{e}");
    let o = anonmm(&["bench", "--only", "replay", "--trace", "/nonexistent/t.perf.txt"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("anonmm: /nonexistent/t.perf.txt: cannot read"));
}

#[test]
fn graph_writes_the_format_its_name_asks_for() {
    let s = example("graph_fork.strace");
    let txt = tmp("g.txt");
    let o = anonmm(&["graph", &s, "-o", txt.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot write a graph as `.txt`"));
    assert!(!txt.exists());
    let dot = tmp("g.dot");
    assert!(anonmm(&["graph", &s, "-o", dot.to_str().unwrap()]).status.success());
    assert!(std::fs::read_to_string(&dot).unwrap().starts_with("digraph"));
    if Command::new("dot").arg("-V").output().is_err() {
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            b"test graph_writes_the_format_its_name_asks_for: SKIPPED for PNG: no Graphviz `dot`\n",
        );
        let png = tmp("g.png");
        let o = anonmm(&["graph", &s, "-o", png.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&o.stderr).contains("install graphviz"));
        return;
    }
    let png = tmp("g.png");
    let o = anonmm(&["graph", &s, "-o", png.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(&std::fs::read(&png).unwrap()[..8], b"\x89PNG\r\n\x1a\n");
}

#[test]
fn run_json_streams_whole_steps_or_only_changes() {
    let s = example("fork_cow.strace");
    let full: serde_json::Value =
        serde_json::from_slice(&anonmm(&["run", "--json", "--smaps", &s]).stdout).unwrap();
    let steps = full["steps"].as_array().unwrap();
    assert!(steps.len() > 3);
    // --smaps is kept with --json.
    let smaps = &steps.last().unwrap()["procs"]["1"]["smaps"];
    assert!(smaps[0]["Rss"].is_u64() && smaps[0]["vma"].is_string(), "{smaps}");
    let o = anonmm(&["run", "--json", "--changes", &s]);
    let changes: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let ch = changes["steps"].as_array().unwrap();
    assert_eq!(ch.len(), steps.len());
    // Replaying the changes over the first step gives every step whole (smaps aside).
    let mut state = serde_json::Map::new();
    for (c, f) in ch.iter().zip(steps) {
        assert_eq!((&c["line"], &c["call"], &c["result"]), (&f["line"], &f["call"], &f["result"]));
        for (pid, p) in c["procs"].as_object().unwrap() {
            if p.is_null() {
                state.remove(pid);
                continue;
            }
            let e = state.entry(pid.clone()).or_insert_with(|| serde_json::json!({}));
            for (k, v) in p.as_object().unwrap() {
                e[k] = v.clone();
            }
        }
        let mut want = f["procs"].as_object().unwrap().clone();
        for p in want.values_mut() {
            p.as_object_mut().unwrap().remove("smaps");
        }
        assert_eq!(state, want, "line {}", f["line"]);
    }
    // A step that changes nothing of a process leaves it out.
    assert!(
        ch.iter()
            .any(|c| c["procs"].as_object().unwrap().len()
                < steps[0]["procs"].as_object().unwrap().len().max(2))
    );
}

#[test]
fn gen_header_is_the_command_that_reproduces_the_script() {
    for kind in ["stitch", "realloc", "forkserver", "compact", "random"] {
        let o = anonmm(&["gen", kind, "--seed", "7"]);
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        let first = text.lines().next().unwrap();
        let cmd = first.strip_prefix("# anonmm ").unwrap_or_else(|| panic!("{first}"));
        let again = anonmm(&cmd.split(' ').collect::<Vec<_>>());
        assert_eq!(String::from_utf8_lossy(&again.stdout), text, "{first}");
    }
}

#[test]
fn check_says_what_it_checked() {
    let s = example("fork_cow.strace");
    for (flag, how) in [("--check", "sampled"), ("--check-every-step", "after every step")] {
        let o = anonmm(&["run", flag, &s]);
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{e}");
        assert!(e.contains("anonmm: check: the invariant checker ran") && e.contains(how), "{flag}: {e}");
    }
    let o = anonmm(&["run", &s]);
    assert!(!String::from_utf8_lossy(&o.stderr).contains("check:"));
}
