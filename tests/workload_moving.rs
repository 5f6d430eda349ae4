//! `anonmm gen restore | gc | map-count` and `anonmm snapshot`: deterministic for a seed, run
//! on the model with the invariant checker and every recorded result matching, real outcomes
//! (VMA counts), and clear errors for bad input.

use std::process::Command;

use anonmm::run::{RunOptions, run_script};
use anonmm::workload::*;

fn kinds() -> Vec<Workload> {
    vec![
        Workload::Restore(RestoreParams { layout: None, vmas: 24 }),
        Workload::Gc(GcParams { mode: GcMode::Mremap, regions: 8, region_pages: 16, cycles: 4, live: 0.5 }),
        Workload::Gc(GcParams { mode: GcMode::Uffd, regions: 8, region_pages: 16, cycles: 4, live: 0.5 }),
        Workload::MapCount(MapCountParams { blocks: 200, block_pages: 2 }),
    ]
}

#[test]
fn each_kind_is_deterministic_and_runs_checked() {
    for w in kinds() {
        for seed in [1, 9] {
            let a = w.script_text(seed).unwrap();
            assert_eq!(a, w.script_text(seed).unwrap(), "{} seed {seed} not deterministic", w.name());
            let script = w.script(seed, w.name()).unwrap();
            assert!(script.steps.len() > 10, "{}: {} steps", w.name(), script.steps.len());
            let res =
                run_script(&script, &RunOptions { check: true, last_view_only: true, ..Default::default() })
                    .unwrap_or_else(|e| panic!("{} seed {seed}: {e}", w.name()));
            assert!(
                res.mismatches.is_empty(),
                "{} seed {seed}: line {}: expected {}, got {}",
                w.name(),
                res.mismatches[0].line,
                res.mismatches[0].expected,
                res.mismatches[0].got
            );
        }
        assert_ne!(w.script_text(1).unwrap(), w.script_text(2).unwrap(), "{}: seed ignored", w.name());
        assert!(w.script_text(1).unwrap().starts_with(&format!("# anonmm gen {} --seed 1 ", w.name())));
    }
}

/// A layout of three adjacent read-write VMAs the original process kept apart, a PROT_NONE
/// tail and a file: restored, the three come back as one VMA under Linux, the read-only one
/// stays apart, and the file stand-in never merges.
#[test]
fn restore_of_a_layout_file() {
    let dir = std::env::temp_dir().join(format!("anonmm-restore-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let layout = dir.join("p.layout");
    std::fs::write(
        &layout,
        "# three buffers, a read-only table, a guard, a library\n\
         7f0000000000-7f0000002000 rw-p 00000000 00:00 0 \n  present 0-1\n\
         7f0000002000-7f0000003000 rw-p 00000000 00:00 0 \n  present 0\n\
         7f0000003000-7f0000005000 rw-p 00000000 00:00 0 \n  present 1\n\
         7f0000005000-7f0000006000 r--p 00000000 00:00 0 \n  present 0\n\
         7f0000006000-7f0000007000 ---p 00000000 00:00 0 \n\
         7f0000007000-7f0000009000 r-xp 00000000 08:01 1234 /usr/lib/libx.so\n",
    )
    .unwrap();
    let w = Workload::Restore(RestoreParams { layout: Some(layout.clone()), vmas: 64 });
    let text = w.script_text(1).unwrap();
    assert!(text.contains("# original VMA count: 6"), "{text}");
    let script = w.script(1, "p").unwrap();
    let res = run_script(&script, &RunOptions { check: true, ..Default::default() }).unwrap();
    assert!(res.mismatches.is_empty());
    let last = res.steps.last().expect("a view");
    let lines = &last.procs.values().next().expect("pid 1").maps;
    // [rw x3 merged][r--][---][r-x shared stand-in]
    assert_eq!(lines.len(), 4, "{lines:#?}");

    for (bad, why) in [
        ("present 0\n", "a present line before any VMA"),
        ("7f0000000000-7f0000001000 rw-p 00000000 00:00 0\n  present 0-1\n", "outside the VMA's 1 pages"),
        ("hello\n", "not a /proc/PID/maps line"),
        (
            "7f0000002000-7f0000003000 rw-p 0 00:00 0\n7f0000000000-7f0000001000 rw-p 0 00:00 0\n",
            "out of order",
        ),
    ] {
        std::fs::write(&layout, bad).unwrap();
        let e = w.script_text(1).unwrap_err().to_string();
        assert!(e.contains(why) && e.contains("p.layout:"), "{bad:?}: {e}");
    }
}

#[test]
fn bad_parameters_are_refused() {
    for w in [
        Workload::Restore(RestoreParams { layout: None, vmas: 0 }),
        Workload::Gc(GcParams { mode: GcMode::Mremap, regions: 1, region_pages: 16, cycles: 4, live: 0.5 }),
        Workload::Gc(GcParams { mode: GcMode::Uffd, regions: 8, region_pages: 16, cycles: 4, live: 1.5 }),
        Workload::MapCount(MapCountParams { blocks: 0, block_pages: 1 }),
    ] {
        assert!(w.script_text(1).is_err(), "{}", w.name());
    }
}

/// `anonmm snapshot` of a live process (this test's own child) gives a layout that parses back
/// and restores.
#[test]
fn snapshot_of_a_live_process() {
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    let layout = snapshot_pid(child.id()).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        layout.vmas.iter().any(|v| v.path == "[stack]" && v.present.as_ref().is_some_and(|p| !p.is_empty()))
    );
    let again = Layout::parse("again", &layout.to_text()).unwrap();
    assert_eq!(again, layout);
    let out = Command::new(env!("CARGO_BIN_EXE_anonmm")).args(["snapshot", "999999999"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/proc/999999999/maps"));
}
