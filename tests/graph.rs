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
