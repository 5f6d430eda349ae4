//! `anonmm graph`: the seed pictures come out of the example scripts.

use anonmm::graph::{GraphOptions, graph_script};
use anonmm::script::{parse_file, parse_str};
use anonmm::types::Pid;

fn dot(path: &str, opts: &GraphOptions) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    graph_script(&parse_file(&p).expect("parses"), opts).expect("draws")
}

fn count(d: &str, pat: &str) -> usize {
    d.matches(pat).count()
}

#[test]
fn split_vma_keeps_one_anon_vma_and_the_indexes() {
    let before = dot("examples/graph_split.strace", &GraphOptions { at: Some(6), ..Default::default() });
    assert_eq!(count(&before, "label=\"VMA ["), 1);
    assert_eq!(count(&before, "[shape=ellipse"), 3);
    let d = dot("examples/graph_split.strace", &GraphOptions::default());
    assert_eq!(count(&d, "label=\"VMA ["), 2, "{d}");
    assert_eq!(count(&d, "label=\"avc\""), 2);
    assert_eq!(count(&d, "label=\"anon_vma "), 1);
    assert!(d.contains("index 0x200000000\\n") && d.contains("index 0x200000002\\n"), "{d}");
    assert!(!d.contains("index 0x200000001\\n"));
    assert_eq!(count(&d, "[label=\"mapping\"]"), 2);
}

#[test]
fn forked_vma_has_two_anon_vmas() {
    let d = dot("examples/graph_fork.strace", &GraphOptions::default());
    assert_eq!(count(&d, "label=\"anon_vma "), 2, "{d}");
    assert_eq!(count(&d, "label=\"parent\""), 1);
    // The child's VMA links to both anon_vmas; the parent's to its own.
    assert_eq!(count(&d, "label=\"avc\""), 3);
    assert_eq!(count(&d, "subgraph cluster_pid"), 2);
    // Only the child's copy of page 2 is the child's; the rest are shared (mapcount 2).
    assert_eq!(count(&d, "mapcount 2"), 2);
    let child = dot("examples/graph_fork.strace", &GraphOptions { pid: Some(Pid(2)), ..Default::default() });
    assert_eq!(count(&child, "subgraph cluster_pid"), 1);
}

#[test]
fn large_states_are_summarised_and_bad_options_are_errors() {
    let s = parse_str(
        "big",
        "1 mmap(0x200000000000, 81920, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED_NOREPLACE, -1, 0)\n\
         1 touch(0x200000000000, 81920, \"w\")\n",
    )
    .unwrap();
    let d = graph_script(&s, &GraphOptions { max_folios: 4, ..Default::default() }).unwrap();
    assert_eq!(count(&d, "[shape=ellipse"), 4);
    assert!(d.contains("16 more folios\\nindex 0x200000004..0x200000013"), "{d}");
    assert!(graph_script(&s, &GraphOptions { at: Some(9), ..Default::default() }).is_err());
    assert!(graph_script(&s, &GraphOptions { pid: Some(Pid(7)), ..Default::default() }).is_err());
}

/// `graph --from-oracle`'s picture from a fixed pair of views (no VM): a parent and a child
/// after fork, the child's pages partly COWed, a 16 KiB folio in the parent; the model
/// disagrees on the child's chains and on one shared page's mapcount.
#[test]
fn from_oracle_draws_both_sides_with_shared_names_and_marks_differences() {
    use anonmm::graph::{Side, compare_dot};
    use anonmm::internal::{FolioView, InternalView, MappingName, VmaView};
    use std::collections::BTreeMap;
    let vma = |start: u64, av: (u64, u64, u64), counts: (u64, u64, u64), chains: u64| VmaView {
        start,
        end: start + 0x4000,
        pgoff: start >> 12,
        flags: 0x100073,
        anon_vma: Some(av),
        counts: Some(counts),
        chains,
    };
    let page = |addr: u64, av: u64, order: u8, mapcount: u64| FolioView {
        addr,
        index: addr >> 12,
        mapping: MappingName::Anon(av),
        order,
        mapcount,
    };
    let (a, b) = (0x2000_0001_0000u64, 0x2000_0020_0000u64);
    let parent = InternalView {
        vmas: vec![vma(a, (1, 1, 1), (3, 1, 1), 1), vma(b, (1, 1, 1), (3, 1, 1), 1)],
        folios: (0..4)
            .map(|i| page(a + i * 0x1000, 1, 0, 2))
            .chain((0..4).map(|i| page(b + i * 0x1000, 1, 2, 1)))
            .collect(),
    };
    let child = InternalView {
        vmas: vec![vma(a, (2, 1, 1), (1, 0, 1), 2)],
        folios: std::iter::once(page(a, 2, 0, 1))
            .chain((1..4).map(|i| page(a + i * 0x1000, 1, 0, 2)))
            .collect(),
    };
    let kernel: BTreeMap<Pid, InternalView> = [(Pid(1), parent.clone()), (Pid(2), child)].into();
    let mut model = kernel.clone();
    model.get_mut(&Pid(2)).expect("child").vmas[0].chains = 3;
    for p in [Pid(1), Pid(2)] {
        let m = model.get_mut(&p).expect("pid");
        m.folios.iter_mut().find(|f| f.addr == a + 0x3000).expect("page").mapcount = 1;
    }
    let k = Side { title: "kernel 6.12 (VM)", procs: &kernel };
    let m = Side { title: "model 6.12", procs: &model };
    let d = compare_dot(&k, &m, None, 8);
    assert!(d.contains("label=\"kernel 6.12 (VM)\"") && d.contains("label=\"model 6.12\""), "{d}");
    assert!(d.contains("label=\"3 differences (red)\""), "{d}");
    // The same names on both sides: anon_vma 1 is the root and 2's parent on each.
    for s in ["k", "m"] {
        assert!(d.contains(&format!("{s}av1 [shape=box, style=filled, fillcolor=\"#e3f1dc\", label=\"anon_vma 1\\nrefcount 3 children 1 active VMAs 1\"]")), "{d}");
        assert!(d.contains(&format!("{s}av2 -> {s}av1 [style=dashed, label=\"parent\"]")), "{d}");
        assert!(d.contains(&format!("{s}p2v0 -> {s}av2 [label=\"anon_vma\"]")), "{d}");
        assert!(d.contains(&format!("{s}p1v1 -> {s}av1 [label=\"anon_vma\"]")), "{d}");
    }
    // Folios: 4 small in the parent (3 shared with the child, one node each), 1 COWed in
    // the child, the 16 KiB one: 6 a side; the one whose mapcount differs is red on both.
    assert_eq!(count(&d, "[shape=ellipse"), 12, "{d}");
    assert_eq!(count(&d, "(16 KiB, 4 mapped)\\nindex 0x200000200\\n"), 2, "{d}");
    let red =
        |s: &str| d.lines().filter(|l| l.trim_start().starts_with(s) && l.contains("color=red")).count();
    assert_eq!(red("kp2v0 "), 1, "{d}");
    assert_eq!(red("mp2v0 "), 1, "{d}");
    assert_eq!(red("kp1v"), 0, "{d}");
    assert_eq!(red("kf") + red("mf"), 2, "{d}");
    assert_eq!(red("kav") + red("mav"), 0, "{d}");
    assert!(d.contains("label=\"folio 4\\nindex 0x200000013\\nmapcount 2\""), "{d}");
    assert!(d.contains("label=\"folio 4\\nindex 0x200000013\\nmapcount 1\", color=red"), "{d}");
    // Agreement is said, and nothing is red.
    let same = compare_dot(&k, &k, None, 8);
    assert!(same.contains("label=\"kernel and model agree\"") && !same.contains("color=red"), "{same}");
    // A process on one side only is marked; --pid keeps one process.
    let lonely: BTreeMap<Pid, InternalView> = [(Pid(1), parent)].into();
    let d1 = compare_dot(&k, &Side { title: "model 6.12", procs: &lonely }, None, 8);
    assert!(d1.contains("label=\"pid 2 (only here)\""), "{d1}");
    // A large folio mapped across two VMAs (split by mprotect) is one node, reached from each.
    let mut split = kernel.clone();
    let pv = split.get_mut(&Pid(1)).expect("parent");
    let tail = VmaView { start: b + 0x2000, pgoff: (b + 0x2000) >> 12, ..pv.vmas[1] };
    pv.vmas[1].end = b + 0x2000;
    pv.vmas.push(tail);
    let ds = compare_dot(
        &Side { title: "kernel", procs: &split },
        &Side { title: "model", procs: &split },
        None,
        8,
    );
    assert_eq!(count(&ds, "(16 KiB, 4 mapped)"), 2, "{ds}");
    assert!(
        ds.contains(&format!(
            "kp1v2 -> kf4 [style=dotted, arrowhead=none, color=gray, constraint=false, label=\"{:#x}\"]",
            b + 0x2000
        )),
        "{ds}"
    );
    assert!(
        ds.contains(&format!(
            "kp1v1 -> kf4 [style=dotted, arrowhead=none, color=gray, constraint=false, label=\"{b:#x}\"]"
        )),
        "{ds}"
    );
    let only1 = compare_dot(&k, &m, Some(Pid(1)), 2);
    assert!(!only1.contains("p2v0") && only1.contains("2 more folios"), "{only1}");
    // Graphviz reads it, when it is installed.
    if let Ok(mut c) = std::process::Command::new("dot")
        .arg("-Tsvg")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
    {
        use std::io::Write;
        c.stdin.take().expect("stdin").write_all(d.as_bytes()).expect("writes");
        assert!(c.wait().expect("dot").success(), "dot rejected:\n{d}");
    } else {
        eprintln!("dot not installed: the DOT text was not rendered");
    }
}

/// `--from-oracle` needs the inspection module, which the host's 6.18 cannot load: exit 2,
/// saying so, before anything runs.
#[test]
fn from_oracle_on_the_host_kernel_is_refused() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_anonmm"))
        .args(["graph", "--kernel", "6.18", "--from-oracle", "examples/graph_from_oracle.strace"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--from-oracle") && err.contains("--kernel 6.1 or 6.12"), "{err}");
    assert!(out.stdout.is_empty());
}
