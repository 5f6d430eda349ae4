//! The generator reaches everything the script parser accepts: every call
//! ([`anonmm::script::CALL_NAMES`]), every mmap, mprotect and mremap flag, every madvise
//! advice, clone flag, mlock2 and mlockall flag and userfaultfd mode of the parser's own tables (`anonmm::abi`).
//! A new entry in one of those tables fails this test until `gen random` (the oracle
//! fuzzer's generator, with its default configuration) produces it, or it is listed below
//! with the reason and the issue that adds it.

use std::collections::BTreeSet;

use anonmm::abi::{
    CLONE_FLAGS, CLONE_VFORK, CLONE_VM, FlagTable, MADV_ADVICE, MAP_FLAGS, MCL_FLAGS, MLOCK_FLAGS,
    MREMAP_FLAGS, PROT_FLAGS, SIGCHLD, UFFDIO_MOVE_MODES, UFFDIO_REGISTER_MODES,
};
use anonmm::r#gen::{GenConfig, generate};
use anonmm::script::{CALL_NAMES, Call};

/// Entries the generator does not produce yet, each with the reason; the test fails when one
/// becomes covered, so that the entry goes.
const NOT_YET: &[(&str, &str)] = &[
    // Model-only steps: the oracle cannot hold a migration in flight or replay a recorded map.
    ("migrate", "model-only (the oracle cannot run it)"),
    ("migrate_done", "model-only (the oracle cannot run it)"),
    ("map_record", "model-only (replay of recorded images)"),
    ("vma_record", "model-only (the kernel's VMA in a perf trace, compared by replay)"),
    // Policy flags: the kernel answers EINVAL; the policy fuzz generates them
    // (GenConfig::relocate_flags).
    ("MREMAP_RELOCATE_ANON", "policy fuzz only"),
    ("MREMAP_MUST_RELOCATE_ANON", "policy fuzz only"),
    ("UFFDIO_REGISTER_MODE_WP", "issue 14 audit, not generated yet"),
    ("UFFDIO_REGISTER_MODE_MINOR", "issue 14 audit, not generated yet"),
];

/// Names of a table's entries that are set in some generated value (a zero entry, like
/// PROT_NONE or O_RDONLY, counts when a value is zero).
fn seen_in(table: FlagTable, values: &BTreeSet<u64>, exact: bool, out: &mut BTreeSet<String>) {
    for &(name, bit) in table {
        let hit = values.iter().any(|&v| if exact || bit == 0 { v == bit } else { v & bit == bit });
        if hit {
            out.insert(name.to_string());
        }
    }
}

#[test]
fn generator_covers_the_parser() {
    // The oracle fuzzer's configuration (`oracle fuzz --steps 60`).
    let cfg = GenConfig { steps: 60, ..GenConfig::default() };
    let mut calls: BTreeSet<String> = BTreeSet::new();
    let [mut prot, mut map, mut mremap, mut advice, mut clone, mut reg, mut mv, mut mlock, mut mcl]: [BTreeSet<
        u64,
    >; 9] = Default::default();
    for seed in 0..400 {
        for st in generate(seed, &cfg).steps {
            calls.insert(st.call.name().to_string());
            match st.call {
                Call::Mmap { prot: p, flags, .. } => {
                    prot.insert(p);
                    map.insert(flags);
                }
                Call::Mprotect { prot: p, .. } => {
                    prot.insert(p);
                }
                Call::Mremap { flags, .. } => {
                    mremap.insert(flags);
                }
                Call::Madvise { advice: a, .. } => {
                    advice.insert(a);
                }
                Call::CloneVm { flags } => {
                    clone.insert(flags);
                }
                // `clone` with CLONE_VM|CLONE_VFORK parses to it.
                Call::Fork { vfork: true } => {
                    clone.insert(CLONE_VM | CLONE_VFORK | SIGCHLD);
                }
                Call::UffdRegister { mode, .. } => {
                    reg.insert(mode);
                }
                Call::UffdioMove { mode, .. } => {
                    mv.insert(mode);
                }
                Call::Mlock { flags: Some(f), .. } => {
                    mlock.insert(f);
                }
                Call::Mlockall { flags } => {
                    mcl.insert(flags);
                }
                _ => {}
            }
        }
    }
    let mut seen: BTreeSet<String> = calls.clone();
    seen_in(PROT_FLAGS, &prot, false, &mut seen);
    seen_in(MAP_FLAGS, &map, false, &mut seen);
    seen_in(MREMAP_FLAGS, &mremap, false, &mut seen);
    seen_in(MADV_ADVICE, &advice, true, &mut seen);
    seen_in(CLONE_FLAGS, &clone, false, &mut seen);
    seen_in(UFFDIO_REGISTER_MODES, &reg, false, &mut seen);
    seen_in(UFFDIO_MOVE_MODES, &mv, false, &mut seen);
    seen_in(MLOCK_FLAGS, &mlock, false, &mut seen);
    seen_in(MCL_FLAGS, &mcl, false, &mut seen);
    let accepted: Vec<&str> = CALL_NAMES
        .iter()
        .copied()
        .chain(
            [
                PROT_FLAGS,
                MAP_FLAGS,
                MREMAP_FLAGS,
                MADV_ADVICE,
                CLONE_FLAGS,
                UFFDIO_REGISTER_MODES,
                UFFDIO_MOVE_MODES,
                MLOCK_FLAGS,
                MCL_FLAGS,
            ]
            .iter()
            .flat_map(|t| t.iter().map(|&(n, _)| n)),
        )
        .collect();
    let allowed = |n: &str| NOT_YET.iter().any(|&(a, _)| a == n);
    let missing: Vec<&str> = accepted.iter().copied().filter(|n| !seen.contains(*n) && !allowed(n)).collect();
    assert!(missing.is_empty(), "the generator never produces: {missing:?}");
    // An allow-list entry the generator now covers is stale.
    let stale: Vec<&str> = NOT_YET.iter().map(|&(n, _)| n).filter(|n| seen.contains(*n)).collect();
    assert!(stale.is_empty(), "covered now, remove from NOT_YET: {stale:?}");
}
