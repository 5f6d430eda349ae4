//! The headline numbers of docs/findings.md, re-run with the commands the page gives next to
//! them (`anonmm gen ...`, then `anonmm replay --policy all --format json`). Every workload
//! here takes well under a second; the full-scale map-count run (80,000 moves under six
//! designs, over a minute) is `#[ignore]`d: `cargo test --release --test findings --
//! --ignored`. Its scaled copy below runs the same workload against a lowered
//! `vm.max_map_count` through the library.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn anonmm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_anonmm"))
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("anonmm-findings-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// `anonmm gen ARGS -o OUT`, returning OUT.
fn generate(name: &str, args: &[&str]) -> PathBuf {
    let out = tmp(name);
    let st = anonmm().arg("gen").args(args).arg("-o").arg(&out).status().unwrap();
    assert!(st.success(), "gen {args:?}");
    out
}

/// `anonmm replay TRACE --policy all --format json`: one object per design.
fn replay_all(trace: &Path) -> Vec<Value> {
    let out = anonmm()
        .args(["replay", "--policy", "all", "--format", "json", "--examples", "1"])
        .arg(trace)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
}

fn row<'a>(rows: &'a [Value], policy: &str) -> &'a Value {
    rows.iter().find(|r| r["policy"] == policy).unwrap_or_else(|| panic!("no {policy} row"))
}

/// (VMAs at the end, VMAs at the peak).
fn vmas(rows: &[Value], policy: &str) -> (u64, u64) {
    let r = row(rows, policy);
    (r["vmas_end"].as_u64().unwrap(), r["vmas_peak"].as_u64().unwrap())
}

fn anon_vmas(rows: &[Value], policy: &str) -> (u64, u64) {
    let r = row(rows, policy);
    (r["anon_vmas_end"].as_u64().unwrap(), r["anon_vmas_peak"].as_u64().unwrap())
}

fn work(rows: &[Value], policy: &str, what: &str) -> u64 {
    row(rows, policy)["policy_work"][what].as_u64().unwrap()
}

const RELOCATING: [&str; 4] = ["relocate-all", "matena", "copy-shared", "auto"];

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn gc_mremap_fragments_under_linux_and_not_under_relocation() {
    let rows = replay_all(&generate("gc.strace", &["gc", "--seed", "1"]));
    assert_eq!(vmas(&rows, "kernel"), (155, 324));
    assert_eq!(vmas(&rows, "relocate"), (155, 324), "no flag passed: the series does nothing");
    for p in RELOCATING {
        assert_eq!(vmas(&rows, p), (1, 86), "{p}");
        assert_eq!(work(&rows, p, "relocations_done"), 1607, "{p}");
        assert_eq!(work(&rows, p, "folios_rewritten"), 9454, "{p}");
        assert_eq!(work(&rows, p, "pages_copied"), 0, "{p}");
    }
    assert_eq!(work(&rows, "matena", "folios_walked"), 18908, "Matěna's page walk reads every folio twice");
}

#[test]
fn gc_uffd_move_needs_no_design() {
    let rows = replay_all(&generate("gc-uffd.strace", &["gc", "--mode", "uffd", "--seed", "1"]));
    for r in &rows {
        let p = r["policy"].as_str().unwrap();
        assert_eq!(vmas(&rows, p), (1, 15), "{p}");
        assert_eq!(work(&rows, p, "relocations_attempted"), 0, "{p}");
        assert_eq!(r["model"], 0, "{p}");
    }
}

#[test]
fn restore_merges_as_well_under_every_design() {
    let script = generate("restore.strace", &["restore", "--seed", "1"]);
    let text = std::fs::read_to_string(&script).unwrap();
    assert!(text.contains("# original VMA count: 64"), "{text}");
    let rows = replay_all(&script);
    for r in &rows {
        assert_eq!(vmas(&rows, r["policy"].as_str().unwrap()), (43, 44));
    }
    assert_eq!(work(&rows, "relocate-all", "folios_rewritten"), 7834);
    assert_eq!(work(&rows, "auto", "relocations_done"), 5);
    assert_eq!(work(&rows, "auto", "folios_rewritten"), 6205);

    let script = generate(
        "py-restore.strace",
        &["restore", "--layout", repo("traces/python3.layout").to_str().unwrap()],
    );
    assert!(std::fs::read_to_string(&script).unwrap().contains("# original VMA count: 128"));
    let rows = replay_all(&script);
    for r in &rows {
        assert_eq!(vmas(&rows, r["policy"].as_str().unwrap()), (127, 127));
    }
    assert_eq!(work(&rows, "relocate-all", "folios_rewritten"), 32260);
    assert_eq!(work(&rows, "auto", "folios_rewritten"), 5345);
}

#[test]
fn realloc_generated_saves_a_quarter() {
    let rows = replay_all(&generate("realloc.strace", &["realloc", "--seed", "1", "--ops", "2000"]));
    assert_eq!(vmas(&rows, "kernel"), (261, 261));
    assert_eq!(vmas(&rows, "relocate-all"), (196, 196));
    assert_eq!(vmas(&rows, "matena"), (196, 196));
    assert_eq!(vmas(&rows, "auto"), (195, 195));
    assert_eq!(work(&rows, "relocate-all", "folios_rewritten"), 5301);
}

#[test]
fn recorded_allocators() {
    let rows = replay_all(&repo("traces/allocs-glibc.perf.txt.zst"));
    assert_eq!(anon_vmas(&rows, "kernel"), (9, 17));
    for p in RELOCATING {
        assert_eq!(vmas(&rows, p), (24, 36), "{p}");
        assert_eq!(anon_vmas(&rows, p), (9, 14), "{p}");
        assert_eq!(work(&rows, p, "relocations_done"), 19, "{p}");
        assert_eq!(work(&rows, p, "folios_rewritten"), 8430, "{p}");
    }
    // jemalloc, tcmalloc and mimalloc never move memory with mremap: every design is Linux.
    for (name, end_peak) in [("jemalloc", (48, 48)), ("tcmalloc", (45, 45)), ("mimalloc", (28, 36))] {
        let rows = replay_all(&repo(&format!("traces/allocs-{name}.perf.txt.zst")));
        for r in &rows {
            let p = r["policy"].as_str().unwrap();
            assert_eq!(vmas(&rows, p), end_peak, "{name} {p}");
            assert_eq!(r["ptes_moved"], 0, "{name} {p}");
            assert_eq!(work(&rows, p, "relocations_attempted"), 0, "{name} {p}");
        }
    }
}

/// The map-count workload against a limit of 2,000 VMAs: Linux refuses moves from some point
/// on, the relocating designs never.
#[test]
fn map_count_scaled() {
    use anonmm::workload::{MapCountParams, Workload};
    let w = Workload::MapCount(MapCountParams { blocks: 3000, block_pages: 1 });
    let script = w.script(1, "map-count").unwrap();
    let first_refusal = |policy: &str| {
        let opts = anonmm::run::RunOptions {
            policy: anonmm::policy::Policy::parse(policy).unwrap(),
            config: anonmm::mm::Config { max_map_count: 2000, ..Default::default() },
            ..Default::default()
        };
        let out = anonmm::replay::replay_script(&script, &opts, 1, &mut |_| {}).unwrap();
        assert!(out.replay.examples.iter().all(|d| d.got.contains("ENOMEM")), "{:?}", out.replay.examples);
        let refused = out.replay.counts.values().sum::<u64>();
        (out.replay.examples.first().map(|d| d.line), refused, out.vmas_peak.0)
    };
    let (line, refused, peak) = first_refusal("kernel");
    assert_eq!(
        (line, refused),
        (Some(1277), 1729),
        "Linux reaches the limit at line 1277, and refuses every move after"
    );
    // mremap_to refuses once map_count + 2 >= max_map_count - 3.
    assert_eq!(peak, 1995);
    for p in RELOCATING {
        let (line, _, peak) = first_refusal(p);
        assert_eq!(line, None, "{p} never reaches the limit");
        assert!(peak < 1000, "{p}: peak {peak}");
    }
}

#[test]
#[ignore = "full scale: 80,000 moves under six designs, over a minute in release"]
fn map_count_full_scale() {
    let rows = replay_all(&generate("map-count.strace", &["map-count", "--seed", "1"]));
    let k = row(&rows, "kernel");
    assert_eq!(vmas(&rows, "kernel"), (65526, 65526));
    assert_eq!(k["model"], 34137, "moves refused with ENOMEM");
    assert_eq!(k["examples"][0]["line"], 45869);
    for p in RELOCATING {
        assert_eq!(vmas(&rows, p), (1, 20065), "{p}");
        assert_eq!(row(&rows, p)["model"], 0, "{p}");
    }
}
