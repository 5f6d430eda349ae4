//! x86 protection keys: on a CPU with `ospke`, a `PROT_EXEC`-only mapping gets the
//! execute-only pkey and cannot be read (`arch_vma_access_permitted`); without them it can.
//! mprotect to any other protection gives pkey 0 back (`arch_override_mprotect_pkey`).

use anonmm::mm::Config;
use anonmm::run::{RunOptions, run_script};
use anonmm::script::parse_str;

const SCRIPT: &str = "\
1 mmap(0x200000000000, 8192, PROT_EXEC, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED_NOREPLACE, -1, 0)
1 touch(0x200000000000, 4096, \"r\")
1 mprotect(0x200000000000, 8192, PROT_READ|PROT_EXEC)
1 touch(0x200000001000, 4096, \"r\")
1 mprotect(0x200000000000, 4096, PROT_EXEC)
1 touch(0x200000000000, 4096, \"r\")
1 fork()
2 touch(0x200000000000, 4096, \"r\")
2 touch(0x200000001000, 4096, \"r\")
";

fn results(pku: bool) -> Vec<String> {
    let script = parse_str("pkeys", SCRIPT).expect("parses");
    let opts = RunOptions { check: true, config: Config { pku, ..Config::default() }, ..Default::default() };
    run_script(&script, &opts).expect("runs").steps.iter().map(|s| s.result.clone()).collect()
}

#[test]
fn execute_only_mappings_fault_on_read_with_pkeys() {
    let r = results(true);
    assert_eq!(r[1], "= SIGSEGV", "{r:?}");
    assert_eq!(r[3], "= 0", "{r:?}");
    assert_eq!(r[5], "= SIGSEGV", "{r:?}");
    // The child inherits the pkey and PKRU.
    assert_eq!(r[7], "= SIGSEGV", "{r:?}");
    assert_eq!(r[8], "= 0", "{r:?}");
}

#[test]
fn execute_only_mappings_are_readable_without_pkeys() {
    let r = results(false);
    for i in [1, 3, 5, 7, 8] {
        assert_eq!(r[i], "= 0", "step {i}: {r:?}");
    }
}
