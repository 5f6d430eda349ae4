//! Real traces that once replayed wrongly (issue 18): small recordings and hand-written
//! traces in tests/data/traces, each replaying with no `model` disagreement.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anonmm::import::read_trace;
use anonmm::replay::{DivClass, ReplayOutcome, replay_script};
use anonmm::run::RunOptions;
use anonmm::script::{Call, parse_str};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/traces").join(name)
}

fn replay(script: &anonmm::script::Script) -> ReplayOutcome {
    replay_script(script, &RunOptions { check: true, ..Default::default() }, 1000, &mut |_| {})
        .unwrap_or_else(|e| panic!("{e}"))
}

fn replay_text(text: &str) -> ReplayOutcome {
    replay(&parse_str("t.strace", text).unwrap_or_else(|e| panic!("{e}")))
}

/// (placement, file, trace, model)
fn classes(o: &ReplayOutcome) -> (u64, u64, u64, u64) {
    let c = |k| o.replay.count(k);
    (c(DivClass::Placement), c(DivClass::File), c(DivClass::Trace), c(DivClass::Model))
}

fn anonmm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_anonmm")).args(args).output().unwrap()
}

/// quirks.c recorded with `anonmm record`: an fd nobody traced (a pipe), an mmap whose fd
/// has junk in its upper 32 bits, an MREMAP_DONTUNMAP move without MREMAP_FIXED, and a child
/// exec with 6000 bytes of arguments (whose temporary exec stack perf shows).
#[test]
fn quirks_recording_replays_without_model_divergences() {
    let (script, report) = read_trace(&data("quirks.perf.txt.zst")).unwrap_or_else(|e| panic!("{e}"));
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.skipped.get("PERF_RECORD_MMAP2 of the temporary exec stack"), Some(&1));
    // The int fd: the junk above bit 31 is gone, so the mmap names /etc/passwd.
    assert!(script.steps.iter().any(|s| matches!(&s.call, Call::Mmap { fd: 7, .. })));
    assert!(
        script.steps.iter().any(|s| matches!(&s.call, Call::Openat { path, .. } if path == "/etc/passwd"))
    );
    // No map_record of the temporary stack at STACK_TOP_MAX.
    assert!(!script.steps.iter().any(|s| matches!(&s.call, Call::MapRecord { addr: 0x7fff_ffff_d000, .. })));
    let o = replay(&script);
    assert!(o.invariant.is_none(), "{:?}", o.invariant);
    // The two brk bases are placement; the pipe's two descriptors cost one `file` row.
    assert_eq!(classes(&o), (2, 1, 0, 0), "{:#?}", o.replay.examples);
}

/// MREMAP_DONTUNMAP without MREMAP_FIXED moves to where the kernel chose: replay takes the
/// recorded address (a `placement` row), and the pages are found there.
#[test]
fn dontunmap_without_fixed_takes_the_recorded_address() {
    let o = replay_text(
        "1 mmap(0x200000000000, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED, -1, 0) = 0x200000000000\n\
         1 touch(0x200000000000, 8192, \"w\")\n\
         1 mremap(0x200000000000, 8192, 8192, MREMAP_MAYMOVE|MREMAP_DONTUNMAP) = 0x300000000000\n\
         1 touch(0x300000000000, 8192, \"r\")\n\
         1 munmap(0x300000000000, 8192) = 0\n\
         1 munmap(0x200000000000, 8192) = 0\n",
    );
    assert_eq!(classes(&o), (1, 0, 0, 0), "{:#?}", o.replay.examples);
    let d = &o.replay.examples[0];
    assert_eq!((d.line, d.expected.as_str()), (3, "= 0x300000000000"));
}

/// `clone(...) = ? ERESTARTNOINTR` was interrupted and restarted: only the restarted clone
/// makes a child.
#[test]
fn an_interrupted_clone_is_not_a_fork() {
    let text = std::fs::read_to_string(data("restart.strace")).unwrap();
    let s = anonmm::script::parse_str_with(
        "restart.strace",
        &text,
        &anonmm::script::ParseOptions { skip_unknown: true },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(s.skipped.iter().any(|(_, why)| why == "clone interrupted (ERESTARTNOINTR), restarted"));
    let o = replay(&s);
    assert_eq!(classes(&o), (0, 0, 0, 0), "{:#?}", o.replay.examples);
    assert_eq!(o.replay.processes, 2);
}

/// Descriptors the trace does not show (3 and 4, say a pipe) cost one `file` row: the model
/// then numbers descriptors as the trace does.
#[test]
fn unseen_descriptors_cost_one_row() {
    let o = replay_text(
        "1 openat(AT_FDCWD, \"a\", O_RDONLY) = 5\n\
         1 openat(AT_FDCWD, \"b\", O_RDONLY) = 6\n\
         1 close(5) = 0\n\
         1 openat(AT_FDCWD, \"c\", O_RDONLY) = 5\n\
         1 close(3) = 0\n\
         1 openat(AT_FDCWD, \"d\", O_RDONLY) = 3\n\
         1 dup(3) = 7\n\
         1 close(4) = 0\n\
         1 dup(3) = 4\n",
    );
    assert_eq!(classes(&o), (0, 1, 0, 0), "{:#?}", o.replay.examples);
}

/// `perf script` with its default fields has no TID: the error says which fields to ask for.
#[test]
fn perf_script_default_fields_are_refused_with_the_fields_needed() {
    let dir = std::env::temp_dir().join(format!("anonmm-traces-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("default.perf.txt");
    std::fs::write(
        &p,
        "          quirks 15533 [001]   681.255016: syscalls:sys_enter_mmap: addr: 0x00000000, len: 0x00001000\n",
    )
    .unwrap();
    for cmd in ["replay", "import"] {
        let out = anonmm(&[cmd, p.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {err}");
        assert!(err.contains("-F comm,pid,tid,time,event,trace"), "{cmd}: {err}");
        assert!(err.contains("default.perf.txt:1:"), "{cmd}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
