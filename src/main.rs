//! `anonmm`: run scripts on the model, or (on Linux) on the kernel oracle.
//!
//! Exit status: 0 when every recorded result matched, 1 for mismatches or a broken invariant,
//! 2 for bad input (a script that does not parse, or asks for something impossible).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use anonmm::kernel::Kernel;
use anonmm::policy::Policy;
use anonmm::run::{RunError, RunOptions, run_script_each};
use anonmm::snapshot::{format_maps_text, format_smaps_text, step_changes_json, write_step_json};
use anonmm::{out, outln};

/// Exit codes, for the `--help` of every command that has no others.
const EXIT_CODES: &str = "Exit status: 0 when every result recorded in the script matched, 1 for a \
    mismatch or a broken invariant, 2 for bad input (errors read `anonmm: FILE:LINE: reason`) or \
    a call the model does not have (`not modelled: ...`).";

/// The policies `--policy` takes, for help texts.
const POLICY_HELP: &str = "kernel (Linux 6.18, the default), relocate, relocate-all, matena, copy-shared, auto, \
    auto:BYTES (auto with a copy budget per move, e.g. auto:1M); see docs/policies.md";

#[derive(Parser)]
#[command(
    name = "anonmm",
    version,
    about = "An executable model of Linux 6.18 anonymous memory management: run strace-style \
             scripts on the model, compare them with the running kernel, and replay real programs \
             under proposed mremap designs.",
    after_help = "Exit status: 0 success; 1 a mismatch, a broken invariant, or a difference \
                  from the kernel; 2 bad input or a call the model does not have. \
                  `anonmm COMMAND --help` gives each command's details. Documentation: README.md and docs/."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// A policy name, parsed when the command line is read (so a typo is a usage error).
fn policy_arg(s: &str) -> Result<Policy, String> {
    Policy::parse(s)
}

/// `--policy NAME|all`: the policies to run, in order.
#[derive(Clone, Debug)]
struct Policies(Vec<Policy>);

/// A policy name or `all`.
fn policy_or_all_arg(s: &str) -> Result<Policies, String> {
    if s == "all" {
        Ok(Policies(anonmm::policy::ALL_POLICIES.to_vec()))
    } else {
        policy_arg(s).map(|p| Policies(vec![p]))
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a script on the model and print the final maps of every live process.
    ///
    /// SCRIPT may be a trace (`perf script` text, `.zst`, or strace output with calls outside
    /// the memory subset, which are skipped and counted): it runs as `replay` runs it.
    #[command(after_help = EXIT_CODES)]
    Run {
        /// The script: strace -f syntax (docs/scenario-language.md).
        script: PathBuf,
        /// Stop after the step on this line, and show the state there.
        #[arg(long, value_name = "LINE")]
        at: Option<usize>,
        /// Print every step's state as JSON instead (streamed, one step at a time).
        #[arg(long)]
        json: bool,
        /// With --json: print, for each step, only the processes and fields (maps, pages,
        /// tags, smaps) that changed since the previous step; a process gone is `null`.
        #[arg(long, requires = "json")]
        changes: bool,
        /// Run the invariant checker: after as many steps as keep it within 3/4 of the run's
        /// own time, and after the last; a broken invariant is still blamed on the exact step
        /// (the run is redone with a check after every step).
        #[arg(long)]
        check: bool,
        /// Run the invariant checker after every step on what the step touched (the call's
        /// ranges: their VMAs, page-table entries, folios by an rmap walk, anon_vmas and
        /// contents), and in full as --check schedules it and after the last step (implies
        /// --check; docs/traces.md).
        #[arg(long)]
        check_every_step: bool,
        /// Print a line per merge attempt.
        #[arg(long)]
        trace: bool,
        /// Which behaviour to model.
        #[arg(long, value_name = "NAME", default_value = "kernel", value_parser = policy_arg,
              long_help = format!("Which behaviour to model: {POLICY_HELP}."))]
        policy: Policy,
        /// Model a kernel built with CONFIG_ANON_VMA_NAME (ours is not: naming gives EINVAL).
        #[arg(long)]
        anon_vma_name: bool,
        /// Print /proc/pid/smaps of every live process after the maps (with --json: an
        /// `smaps` list in every process of every step).
        #[arg(long)]
        smaps: bool,
        /// With --json: add each process's internal state, `vmas` (pgoff, flags, anon_vma,
        /// its root, parent and counters, chains) and `folios` ([address, index, mapping,
        /// order, mapcount]); see docs/internal.md.
        #[arg(long, requires = "json")]
        internal: bool,
        /// Which kernel to model: 6.1, 6.12 or 6.18 (see docs/kernels.md).
        #[arg(long, value_name = "6.1|6.12|6.18", default_value = "6.18")]
        kernel: Kernel,
    },
    /// Run a script under every policy and tabulate VMAs, merges, relocations and their
    /// cost, and whether every policy showed the same page contents as `kernel`.
    ///
    /// MREMAP_RELOCATE_ANON and MREMAP_MUST_RELOCATE_ANON exist only under `relocate` and
    /// `relocate-all`; the other policies run the script without them.
    ///
    /// SCRIPT may be a trace (perf.data, `perf script` text or strace output, also `.zst`):
    /// each policy runs it as `replay` does, results compared at every step and contents
    /// after the last.
    #[command(after_help = "Exit status: 0 when every policy ran with the same contents as kernel, 1 \
                            when a policy broke an invariant or changed contents, 2 for bad input.")]
    Compare {
        /// The script (strace -f syntax, docs/scenario-language.md) or trace (docs/traces.md).
        script: PathBuf,
        /// Output format.
        #[arg(long, default_value = "text", value_enum)]
        format: TableFormat,
        /// Which kernel the policies build on; `all` instead shows the script on 6.1, 6.12
        /// and 6.18 side by side (kernel policy).
        #[arg(long, value_name = "6.1|6.12|6.18|all", default_value = "6.18", value_parser = kernel_or_all_arg)]
        kernel: KernelChoice,
    },
    /// For every pair of adjacent VMAs of a process that stay apart, say why in the kernel's
    /// terms (the refusal's name as `run --trace` prints it, and what makes it), and which
    /// policies would merge them.
    ///
    /// SCRIPT may be a trace, run as `replay` runs it.
    #[command(after_help = "Exit status: 0 when explained, 1 for a broken invariant, 2 for bad input.")]
    Explain {
        /// The script (strace -f syntax, docs/scenario-language.md) or trace (perf.data,
        /// `perf script` text or strace output, also `.zst`; docs/traces.md).
        script: PathBuf,
        /// Explain the state after the step on this line (default: the last).
        #[arg(long, value_name = "LINE")]
        at: Option<usize>,
        /// Only this process.
        #[arg(long, value_name = "N")]
        pid: Option<u32>,
        /// The policy to run under.
        #[arg(long, value_name = "NAME", default_value = "kernel", value_parser = policy_arg,
              long_help = format!("The policy to run under: {POLICY_HELP}."))]
        policy: Policy,
        /// Which kernel to model: 6.1, 6.12 or 6.18 (a trace recorded on 6.1 is explained
        /// best as 6.1; see docs/kernels.md).
        #[arg(long, value_name = "6.1|6.12|6.18", default_value = "6.18")]
        kernel: Kernel,
    },
    /// Draw the reverse map (VMAs, anon_vma_chains, anon_vmas, folios) at one step of a
    /// script as Graphviz DOT, or as SVG, PNG or PDF by OUT's extension (through Graphviz's
    /// `dot`).
    #[command(after_help = "Exit status: 0 when drawn, 1 when `dot` failed, 2 for bad input, an \
                            unknown extension or no `dot`.")]
    Graph {
        /// The script (strace -f syntax, docs/scenario-language.md) or trace (perf.data,
        /// `perf script` text or strace output, also `.zst`; run as `replay` runs it).
        script: PathBuf,
        /// Draw the state after the call on this script line (default: the last); for a
        /// trace, after every step up to the last one at or before this line.
        #[arg(long, value_name = "LINE")]
        at: Option<usize>,
        /// Only this process.
        #[arg(long, value_name = "N")]
        pid: Option<u32>,
        /// Folios drawn one by one per VMA; more are summarised in one node.
        #[arg(long, default_value_t = 8)]
        max_folios: usize,
        /// Which behaviour to model.
        #[arg(long, value_name = "NAME", default_value = "kernel", value_parser = policy_arg,
              long_help = format!("Which behaviour to model: {POLICY_HELP}."))]
        policy: Policy,
        /// Which kernel to model: 6.1, 6.12 or 6.18 (see docs/kernels.md).
        #[arg(long, value_name = "6.1|6.12|6.18", default_value = "6.18")]
        kernel: Kernel,
        /// Draw the kernel's own rmap (read in the VM by the anonmm_inspect module, as
        /// `oracle run --internal`) beside the model's, differences in red (6.1, 6.12 only;
        /// docs/internal.md).
        #[arg(long)]
        from_oracle: bool,
        /// Where to write: `.dot` or `.gv` (DOT text), `.svg`, `.png` or `.pdf` (rendered by
        /// `dot`); DOT on stdout when absent.
        #[arg(short, long, value_name = "OUT")]
        out: Option<PathBuf>,
    },
    /// Import a real trace (`perf script` text, or strace; `.zst` or plain) as a script.
    ///
    /// Writes one script line per step (to OUT, or to stdout) and prints the import report
    /// as JSON (to stdout with -o, else to stderr).
    #[command(after_help = "Exit status: 0 when imported, 2 when the trace cannot be read.")]
    Import {
        /// The trace: `perf script` text (see `anonmm record`) or strace -f output, plain or
        /// `.zst`.
        trace: PathBuf,
        /// Where to write the script.
        #[arg(short, long, value_name = "OUT")]
        out: Option<PathBuf>,
        /// Write the script replay runs: each step as replay runs it (at the recorded
        /// address with MAP_FIXED where the kernel chose it, files created with O_CREAT, ...),
        /// a step replay does not run as a comment.
        #[arg(long)]
        resolved: bool,
    },
    /// Replay real traces on the model and report, per trace and policy, the work done and
    /// every disagreement with the recording, classified (placement, file, trace, model).
    #[command(after_help = "Exit status: 0 when every trace replayed (divergences are reported, not \
                            failures), 1 for a broken invariant (--check), 2 for a trace that \
                            cannot be read or a bad option.")]
    Replay {
        /// Traces: `perf script` text, strace -f output or anonmm scripts, plain or `.zst`.
        #[arg(required = true, value_name = "TRACE")]
        traces: Vec<PathBuf>,
        /// Which behaviour to model: a policy name, or `all` for every known one.
        #[arg(long, value_name = "NAME|all", default_value = "kernel", value_parser = policy_or_all_arg,
              long_help = format!("Which behaviour to model: {POLICY_HELP}; or all, for every one."))]
        policy: Policies,
        /// Output format.
        #[arg(long, value_name = "FORMAT", default_value = "text", value_enum)]
        format: ReportFormat,
        /// Run the invariant checker (sampled as in `run --check`; the broken step is still
        /// found exactly).
        #[arg(long)]
        check: bool,
        /// Run the invariant checker after every step on what the step touched, and in full
        /// as --check schedules it and after the last step (implies --check).
        #[arg(long)]
        check_every_step: bool,
        /// How many divergences of each class to list per trace.
        #[arg(long, value_name = "N", default_value_t = anonmm::replay::MAX_EXAMPLES)]
        examples: usize,
        /// Which kernel to model (a trace recorded on 6.1 replays best as 6.1).
        #[arg(long, value_name = "6.1|6.12|6.18", default_value = "6.18")]
        kernel: Kernel,
        /// Exit 0 for a damaged trace (garbled lines, lost events, a truncated stream) too;
        /// the damage is still reported.
        #[arg(long)]
        accept_damaged: bool,
    },
    /// Record a program's memory-management trace with perf as a `perf.data` file (or with
    /// `--text` as `perf script` text), for `import`, `replay` and `plot`, which read either.
    ///
    /// Needs perf (Debian: `apt-get install linux-perf`) and permission to trace (root, or
    /// `kernel.perf_event_paranoid` lowered). Tracepoints the running kernel lacks are left
    /// out.
    #[command(after_help = "Exit status: the program's own when recorded, 2 when perf cannot record.")]
    Record {
        /// Where to write the trace (zstd-compressed when it ends in `.zst`).
        #[arg(short, long, value_name = "OUT")]
        out: std::path::PathBuf,
        /// Write `perf script` text (as shared/record.sh does) instead of the `perf.data`.
        #[arg(long)]
        text: bool,
        /// The program and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Write a synthetic workload as a script (addresses in the oracle's window, every
    /// placement fixed, every result recorded), deterministic for a seed.
    ///
    /// Run it with `anonmm run`, `anonmm replay` or `anonmm oracle diff`.
    Gen {
        #[command(subcommand)]
        kind: GenKind,
    },
    /// Write the layout of a live process (its /proc/PID/maps, and for each private
    /// anonymous VMA which pages hold data, from /proc/PID/pagemap), as `gen restore
    /// --layout` reads it.
    #[command(after_help = "Exit status: 0 when written, 2 when the process cannot be read.")]
    Snapshot {
        /// The process.
        pid: u32,
        /// Where to write the layout (stdout when absent).
        #[arg(short, long, value_name = "OUT")]
        out: Option<PathBuf>,
    },
    /// Plot VMA counts over each trace's time (perf timestamps, or the step index of a
    /// script) as an SVG: one chart per trace, one line per policy.
    #[command(after_help = "Exit status: 0 when written, 2 for a trace that cannot be read or a bad option.")]
    Plot {
        /// Traces: `perf script` text, strace -f output or anonmm scripts, plain or `.zst`.
        #[arg(required = true, value_name = "TRACE")]
        traces: Vec<PathBuf>,
        /// A policy name, or `all` for every known one.
        #[arg(long, value_name = "NAME|all", default_value = "kernel", value_parser = policy_or_all_arg,
              long_help = format!("Which behaviour to model: {POLICY_HELP}; or all, for every one."))]
        policy: Policies,
        /// Where to write the SVG.
        #[arg(short, long, value_name = "OUT.svg")]
        out: PathBuf,
    },
    /// Run scripts on the real kernel (Linux, as root): alone, against the model, or random
    /// ones (docs/oracle.md).
    Oracle {
        #[command(subcommand)]
        cmd: OracleCmd,
    },
    /// Measure the model's throughput and scale (the figures of BENCHMARKS.md) and print them
    /// with the machine's description and each figure's target.
    #[command(after_help = "Exit status: 0 when every figure with a target met it, 1 otherwise, 2 \
                            for bad options or a trace that cannot be read.")]
    Bench {
        /// Which figures (comma-separated; default: all; perfdata only with `--perf-data`).
        #[arg(long, value_delimiter = ',', value_name = "LIST", value_enum)]
        only: Vec<BenchGroup>,
        /// Smaller sizes (a minute instead of several); the figures are less steady.
        #[arg(long)]
        quick: bool,
        /// The trace to replay (default: the bundled 1-million-fault recording; one of 2.9 M
        /// lines among 58,000 VMAs comes from `benches/vmas_program.c`, as its comment says).
        #[arg(long, value_name = "TRACE")]
        trace: Option<PathBuf>,
        /// A `perf.data` (also `.zst`) to time from the file to the replay table, against
        /// `perf script` and reading the file (record one with `anonmm record`; a 1 M-fault
        /// one from `benches/faults_program.c`, as its comment says).
        #[arg(long, value_name = "PERF.DATA")]
        perf_data: Option<PathBuf>,
        /// Output format.
        #[arg(long, default_value = "text", value_enum)]
        format: TableFormat,
        /// Which kernel to model (6.1, 6.12 or 6.18). The `oracle` figure compares with the
        /// host's kernel, so it is measured as 6.18 only.
        #[arg(long, value_name = "6.1|6.12|6.18", default_value = "6.18")]
        kernel: Kernel,
    },
}

/// `bench --only`: the groups of figures.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
enum BenchGroup {
    Faults,
    Vma,
    Scale,
    Replay,
    Check,
    Oracle,
    Perfdata,
    Text,
}

/// `compare --format` and `bench --format`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
enum TableFormat {
    Text,
    Markdown,
    Json,
}

/// `replay --format`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
enum ReportFormat {
    Text,
    Markdown,
    Json,
    Csv,
}

impl From<ReportFormat> for anonmm::report::Format {
    fn from(f: ReportFormat) -> Self {
        match f {
            ReportFormat::Text => anonmm::report::Format::Text,
            ReportFormat::Markdown => anonmm::report::Format::Markdown,
            ReportFormat::Json => anonmm::report::Format::Json,
            ReportFormat::Csv => anonmm::report::Format::Csv,
        }
    }
}

/// `compare --kernel`: one kernel, or all of them side by side.
#[derive(Clone, Copy, Debug)]
enum KernelChoice {
    One(Kernel),
    All,
}

/// `6.1`, `6.12`, `6.18` or `all`.
fn kernel_or_all_arg(s: &str) -> Result<KernelChoice, String> {
    if s == "all" { Ok(KernelChoice::All) } else { parse_kernel(s).map(KernelChoice::One) }
}

/// The synthetic workloads of `anonmm gen`.
/// Exit codes of `gen KIND`.
const GEN_EXIT: &str = "Exit status: 0 when written, 2 for parameters no script can have.";

#[derive(Subcommand)]
enum GenKind {
    /// Pieces of memory, mapped far apart and (a chosen fraction) written, then moved one
    /// behind the other with mremap FIXED: faulted pieces keep their anon_vma and page
    /// offsets, so Linux keeps them as separate VMAs.
    #[command(after_help = GEN_EXIT)]
    Stitch {
        #[command(flatten)]
        common: anonmm::workload::Common,
        #[command(flatten)]
        p: anonmm::workload::StitchParams,
    },
    /// A glibc-like allocator: blocks as their own anonymous mappings, grown in place with
    /// mremap when the space after is free, else moved (MAYMOVE|FIXED to the first free
    /// place), freed with munmap, written; with read-only and PROT_NONE mappings among them.
    #[command(after_help = GEN_EXIT)]
    Realloc {
        #[command(flatten)]
        common: anonmm::workload::Common,
        #[command(flatten)]
        p: anonmm::workload::ReallocParams,
    },
    /// A parent that maps and writes a pool, then forks workers which move part of the
    /// inherited pool (mremap FIXED), write (COW), map scratch memory and exit, while the
    /// parent keeps writing.
    #[command(after_help = GEN_EXIT)]
    Forkserver {
        #[command(flatten)]
        common: anonmm::workload::Common,
        #[command(flatten)]
        p: anonmm::workload::ForkserverParams,
    },
    /// An arena allocator: blocks bump-allocated and written, some freed (munmap), the live
    /// ones compacted toward the arena start with mremap FIXED, in rounds.
    #[command(after_help = GEN_EXIT)]
    Compact {
        #[command(flatten)]
        common: anonmm::workload::Common,
        #[command(flatten)]
        p: anonmm::workload::CompactParams,
    },
    /// The fuzzer's random scripts (every call and flag, files, shared memory, forks).
    #[command(after_help = GEN_EXIT)]
    Random {
        #[command(flatten)]
        common: anonmm::workload::Common,
        #[command(flatten)]
        p: anonmm::workload::RandomParams,
    },
    /// A CRIU-like restore of a process layout (`anonmm snapshot PID`, a maps file, or
    /// generated): every private VMA premapped in one area, its pages written, then moved to
    /// its address with mremap FIXED and given back its protection.
    #[command(after_help = GEN_EXIT)]
    Restore {
        #[command(flatten)]
        common: anonmm::workload::Common,
        #[command(flatten)]
        p: anonmm::workload::RestoreParams,
    },
    /// A region-based moving garbage collector over many cycles: live pages of sparse regions
    /// packed into free regions with mremap FIXED or UFFDIO_MOVE, the evacuated regions freed.
    #[command(after_help = GEN_EXIT)]
    Gc {
        #[command(flatten)]
        common: anonmm::workload::Common,
        #[command(flatten)]
        p: anonmm::workload::GcParams,
    },
    /// A cache moving its blocks one by one, in random order, into a second arena, until
    /// vm.max_map_count makes mremap fail with ENOMEM (every move is recorded as succeeding).
    #[command(name = "map-count", after_help = GEN_EXIT)]
    MapCount {
        #[command(flatten)]
        common: anonmm::workload::Common,
        #[command(flatten)]
        p: anonmm::workload::MapCountParams,
    },
}

#[derive(Subcommand)]
enum OracleCmd {
    /// Run a script natively and print what the kernel shows.
    #[command(after_help = "Exit status: 0 when every recorded result matched, 1 when the kernel \
                            gave another, 2 for bad input or a script the oracle refuses.")]
    Run {
        /// The script: strace -f syntax, addresses in the oracle's window (docs/oracle.md).
        script: PathBuf,
        /// Print every step's state as JSON (the schema of `anonmm run --json`).
        #[arg(long)]
        json: bool,
        /// Print the kernel's /proc/pid/smaps of the window's VMAs after the maps.
        #[arg(long)]
        smaps: bool,
        /// Read the kernel's own VMAs (pgoff, flags, anon_vma tree) and folios (index,
        /// mapping, order, mapcount) after every step with a module loaded in the VM
        /// (--kernel 6.1|6.12; docs/internal.md) (in --json).
        #[arg(long)]
        internal: bool,
        /// Which kernel: 6.18 is the host's; 6.1 and 6.12 boot Debian's kernel in a VM (qemu).
        #[arg(long, value_name = "6.1|6.12|6.18", default_value = "6.18", value_parser = parse_kernel)]
        kernel: Kernel,
    },
    /// Run a script on the model and natively, check the results recorded in the script,
    /// and print the first step where they differ, field by field.
    #[command(after_help = "Exit status: 0 when model and kernel agree and match every recorded \
                            result, 1 for a difference, 2 for bad input or a script the oracle refuses.")]
    Diff {
        /// One or more scripts: strace -f syntax, addresses in the oracle's window
        /// (docs/oracle.md); a VM boots once for all of them.
        #[arg(required = true, value_name = "SCRIPT")]
        scripts: Vec<PathBuf>,
        /// Compare the /proc/pid/smaps fields the model knows too, after every step.
        #[arg(long)]
        smaps: bool,
        /// Read the kernel's own VMAs (pgoff, flags, anon_vma tree) and folios (index,
        /// mapping, order, mapcount) after every step with a module loaded in the VM
        /// (--kernel 6.1|6.12; docs/internal.md), and compare them with the model's.
        #[arg(long)]
        internal: bool,
        /// Which kernel: 6.18 is the host's; 6.1 and 6.12 boot Debian's kernel in a VM (qemu).
        #[arg(long, value_name = "6.1|6.12|6.18", default_value = "6.18", value_parser = parse_kernel)]
        kernel: Kernel,
    },
    /// Generate random scripts and diff model and kernel on each.
    #[command(after_help = "Exit status: 0 when no case diverged, 1 when one did (shrunk and \
                            written to --out), 2 when the oracle is unavailable.")]
    Fuzz {
        /// How many random scripts to run.
        #[arg(long)]
        cases: u64,
        /// The first case's seed (case i uses SEED + i); default: from the clock, printed.
        #[arg(long)]
        seed: Option<u64>,
        /// Steps (script lines) per case.
        #[arg(long, default_value_t = 50)]
        steps: usize,
        /// The directory for shrunk divergences (created when needed).
        #[arg(long, default_value = "fuzz-out")]
        out: PathBuf,
        /// Go on after a divergence (each is shrunk and written to --out).
        #[arg(long)]
        keep_going: bool,
        /// Compare the /proc/pid/smaps fields the model knows too, after every step.
        #[arg(long)]
        smaps: bool,
        /// Read the kernel's own VMAs (pgoff, flags, anon_vma tree) and folios (index,
        /// mapping, order, mapcount) after every step with a module loaded in the VM
        /// (--kernel 6.1|6.12; docs/internal.md), and compare them with the model's.
        #[arg(long)]
        internal: bool,
        /// Which kernel: 6.18 is the host's; 6.1 and 6.12 boot Debian's kernel in a VM (qemu).
        #[arg(long, value_name = "6.1|6.12|6.18", default_value = "6.18", value_parser = parse_kernel)]
        kernel: Kernel,
    },
    /// Inside the VM oracle's guest: serve the host's scripts (started by the guest's init).
    #[command(hide = true)]
    VmGuest {
        #[arg(long)]
        share: PathBuf,
        #[arg(long)]
        ctl: PathBuf,
    },
}

/// `--kernel`: 6.1, 6.12 or 6.18.
fn parse_kernel(s: &str) -> Result<Kernel, String> {
    Kernel::parse(s).ok_or_else(|| format!("unknown kernel `{s}` (known: 6.1, 6.12, 6.18)"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.cmd {
        Cmd::Explain { script, at, pid, policy, kernel } => cmd_explain(&script, at, pid, policy, kernel),
        Cmd::Run {
            script,
            at,
            json,
            changes,
            check,
            check_every_step,
            trace,
            policy,
            anon_vma_name,
            smaps,
            internal,
            kernel,
        } => cmd_run(
            &script,
            at,
            json.then_some(if changes { JsonForm::Changes } else { JsonForm::Full }),
            RunOptions {
                check: check || check_every_step,
                check_sampled: true,
                check_incremental: check_every_step,
                trace,
                policy,
                last_view_only: !json,
                config: anonmm::mm::Config { anon_vma_name, kernel, ..Default::default() },
                replay: false,
                smaps,
                internal,
                resolved: false,
            },
        ),
        Cmd::Compare { script, format, kernel } => cmd_compare(&script, format, kernel),
        Cmd::Graph { script, at, pid, max_folios, policy, kernel, from_oracle, out } => cmd_graph(
            &script,
            &anonmm::graph::GraphOptions {
                at,
                pid: pid.map(anonmm::types::Pid),
                max_folios,
                policy,
                kernel,
                replay: false,
            },
            from_oracle,
            out.as_deref(),
        ),
        Cmd::Import { trace, out, resolved } => cmd_import(&trace, out.as_deref(), resolved),
        Cmd::Replay { traces, policy, format, check, check_every_step, examples, kernel, accept_damaged } => {
            cmd_replay(
                &traces,
                &policy.0,
                format.into(),
                ReplayArgs {
                    check: check || check_every_step,
                    check_incremental: check_every_step,
                    examples,
                    kernel,
                    accept_damaged,
                },
            )
        }
        Cmd::Record { out, text, command } => cmd_record(&out, &command, text),
        Cmd::Gen { kind } => cmd_gen(kind),
        Cmd::Snapshot { pid, out } => cmd_snapshot(pid, out.as_deref()),
        Cmd::Plot { traces, policy, out } => cmd_plot(&traces, &policy.0, &out),
        Cmd::Oracle { cmd } => oracle(cmd),
        Cmd::Bench { only, quick, trace, perf_data, format, kernel } => {
            cmd_bench(&only, quick, trace, perf_data, format, kernel)
        }
    };
    anonmm::out::flush_stdout();
    ExitCode::from(u8::try_from(code).unwrap_or(2))
}

/// A spinner on stderr naming what is being measured (hidden when stderr is not a terminal).
fn spinner(msg: String) -> indicatif::ProgressBar {
    let s = indicatif::ProgressBar::new_spinner();
    s.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    s.set_message(msg);
    s.enable_steady_tick(std::time::Duration::from_millis(200));
    s
}

fn cmd_bench(
    only: &[BenchGroup],
    quick: bool,
    trace: Option<PathBuf>,
    perf_data: Option<PathBuf>,
    format: TableFormat,
    kernel: Kernel,
) -> i32 {
    use anonmm::bench::*;
    let want = |g: BenchGroup| only.is_empty() || only.contains(&g);
    let trace = trace.unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(BUNDLED_TRACE));
    if want(BenchGroup::Replay)
        && let Err(e) = std::fs::metadata(&trace)
    {
        eprintln!("anonmm: {}: cannot read: {e}", trace.display());
        return 2;
    }
    let machine = machine_description();
    if format == TableFormat::Text {
        outln!("machine: {machine}\nmodel: Linux {kernel}\n");
    }
    let mut figs = Vec::new();
    let emit = |new: Vec<Figure>, figs: &mut Vec<Figure>| {
        if format == TableFormat::Text {
            out!("{}", render_text(&new));
        }
        figs.extend(new);
    };
    let reps = if quick { 2 } else { 5 };
    let mut code = 0;
    // First: its memory figures are differences of the process's RSS, which later groups'
    // freed (but kept) heap would hide.
    if want(BenchGroup::Scale) {
        let (procs, vmas) = if quick { (16, 4096) } else { (64, 16384) };
        let s = spinner(format!("measuring scale: {procs} processes of {vmas} VMAs"));
        let f = bench_scale(procs, vmas, 16, kernel);
        s.finish_and_clear();
        emit(f, &mut figs);
    }
    if want(BenchGroup::Faults) {
        let pages = if quick { 1 << 16 } else { 1 << 18 };
        let s = spinner(format!("measuring faults: {pages} pages, 64 KiB touches, {reps} runs"));
        let f = bench_faults(pages, 64 * 1024, reps, kernel);
        s.finish_and_clear();
        emit(f, &mut figs);
        let s = spinner(format!("measuring faults: {pages} pages, one-page touches, {reps} runs"));
        let f = bench_faults(pages, 4096, reps, kernel);
        s.finish_and_clear();
        emit(
            f.into_iter()
                .map(|mut f| {
                    f.name =
                        f.name.replacen("faults:", "faults (one-page touches, as replay makes them):", 1);
                    f
                })
                .collect(),
            &mut figs,
        );
    }
    if want(BenchGroup::Vma) {
        let rounds = if quick { 20_000 } else { 100_000 };
        let mut f = Vec::new();
        for (vmas, in_order) in [(100_000, false), (100_000, true), (1_000, false)] {
            let s = spinner(format!(
                "measuring VMA calls: {rounds} rounds among {vmas} VMAs, {}",
                if in_order { "in address order" } else { "picked at random" }
            ));
            f.push(bench_vma_calls(vmas, rounds, reps, in_order, kernel));
            s.finish_and_clear();
        }
        emit(f, &mut figs);
    }
    if want(BenchGroup::Replay) {
        let policies = anonmm::policy::ALL_POLICIES;
        let s = spinner(format!("measuring replay: {} under every policy", trace.display()));
        let f = bench_replay(&trace, &policies, if quick { 1 } else { 3 }, kernel);
        s.finish_and_clear();
        match f {
            Ok(f) => emit(f, &mut figs),
            Err(e) => {
                eprintln!("anonmm: {e}");
                code = 2;
            }
        }
    }
    if want(BenchGroup::Perfdata) {
        match &perf_data {
            Some(p) => match bench_perf_data(p, if quick { 1 } else { 3 }, kernel) {
                Ok(f) => emit(f, &mut figs),
                Err(e) => {
                    eprintln!("anonmm: {e}");
                    code = 2;
                }
            },
            None if !only.is_empty() => {
                eprintln!(
                    "anonmm: bench: the perfdata figures need a perf.data: give one with --perf-data \
                     (a 1 M-fault one: `cc -O2 -o /tmp/faults benches/faults_program.c; anonmm record -o \
                     /tmp/big.data -- /tmp/faults 16`)"
                );
                code = 2;
            }
            None => {}
        }
    }
    if want(BenchGroup::Text) {
        match bench_text_and_all(&trace, if quick { 1 } else { 3 }, kernel) {
            Ok(f) => emit(f, &mut figs),
            Err(e) => {
                eprintln!("anonmm: {e}");
                code = 2;
            }
        }
    }
    if want(BenchGroup::Check) {
        let s = spinner("measuring the invariant checker's cost".to_string());
        let f = bench_check(if quick { 100 } else { 400 }, 60, reps, kernel);
        s.finish_and_clear();
        emit(vec![f], &mut figs);
    }
    if want(BenchGroup::Oracle) && kernel != Kernel::default() {
        // The oracle figure runs the same scripts on the host's kernel (6.18).
        eprintln!("anonmm: oracle: not measured with --kernel {kernel}: it compares with the host's 6.18");
        if !only.is_empty() {
            code = 2;
        }
    } else if want(BenchGroup::Oracle) {
        let s = spinner("measuring the model against the kernel oracle".to_string());
        let f = bench_oracle(if quick { 10 } else { 40 }, 60);
        s.finish_and_clear();
        match f {
            Ok(f) => emit(vec![f], &mut figs),
            Err(e) => eprintln!("anonmm: oracle: not measured: {e}"),
        }
    }
    match format {
        TableFormat::Markdown => {
            out!("Machine: {machine}\n\nModel: Linux {kernel}\n\n{}", render_markdown(&figs))
        }
        TableFormat::Json => outln!(
            "{}",
            serde_json::json!({ "machine": machine, "kernel": kernel.version(), "figures": figs })
        ),
        TableFormat::Text => {}
    }
    code.max(i32::from(figs.iter().any(Figure::missed)))
}

/// What `graph -o OUT` writes, by OUT's extension.
enum GraphOut {
    /// DOT text (`.dot`, `.gv`).
    Dot,
    /// Rendered by Graphviz's `dot -T<format>`.
    Rendered(&'static str),
}

fn cmd_graph(
    path: &std::path::Path,
    opts: &anonmm::graph::GraphOptions,
    from_oracle: bool,
    out: Option<&std::path::Path>,
) -> i32 {
    let kind = match out.map(|o| o.extension().and_then(|e| e.to_str()).unwrap_or("")) {
        None | Some("dot" | "gv") => GraphOut::Dot,
        Some("svg") => GraphOut::Rendered("svg"),
        Some("png") => GraphOut::Rendered("png"),
        Some("pdf") => GraphOut::Rendered("pdf"),
        Some(e) => {
            eprintln!(
                "anonmm: {}: cannot write a graph as `.{e}` (known: .dot, .gv, .svg, .png, .pdf)",
                out.map_or_else(String::new, |o| o.display().to_string())
            );
            return 2;
        }
    };
    let (script, replay) = match load_input(path) {
        Ok(s) => s,
        Err(code) => return code,
    };
    if replay && from_oracle {
        eprintln!(
            "anonmm: {}: graph --from-oracle runs a script on the kernel, not a recorded trace \
             (write the script replay runs with `anonmm import --resolved`)",
            path.display()
        );
        return 2;
    }
    let opts = &anonmm::graph::GraphOptions { replay, ..opts.clone() };
    let dot = if from_oracle {
        match anonmm::oracle::graph_from_oracle(&script, opts) {
            Ok(d) => d,
            Err(code) => return code,
        }
    } else {
        match anonmm::graph::graph_script(&script, opts) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("anonmm: {e}");
                return 2;
            }
        }
    };
    let Some(out) = out else {
        out!("{dot}");
        return 0;
    };
    match kind {
        GraphOut::Dot => match std::fs::write(out, dot) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("anonmm: {}: cannot write: {e}", out.display());
                2
            }
        },
        GraphOut::Rendered(format) => render_dot(&dot, format, out),
    }
}

/// Render DOT text to `out` with Graphviz's `dot -T<format>`.
fn render_dot(dot: &str, format: &str, out: &std::path::Path) -> i32 {
    use std::io::Write;
    let child = std::process::Command::new("dot")
        .arg(format!("-T{format}"))
        .arg("-o")
        .arg(out)
        .stdin(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "anonmm: {}: cannot run Graphviz `dot` ({e}); install graphviz (Debian: \
                 `apt-get install graphviz`), or write .dot",
                out.display()
            );
            return 2;
        }
    };
    let wrote = child.stdin.take().map(|mut s| s.write_all(dot.as_bytes()));
    match (wrote, child.wait()) {
        (Some(Ok(())), Ok(st)) if st.success() => 0,
        _ => {
            eprintln!("anonmm: {}: `dot -T{format}` failed", out.display());
            1
        }
    }
}

fn cmd_compare(path: &std::path::Path, format: TableFormat, kernel: KernelChoice) -> i32 {
    let (script, replay) = match load_input(path) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let kernel = match kernel {
        KernelChoice::All if replay => {
            eprintln!(
                "anonmm: {}: compare --kernel all tabulates every step of a script; for a trace, \
                 compare the kernels' tables of `anonmm replay --kernel K`",
                path.display()
            );
            return 2;
        }
        KernelChoice::All => {
            let (text, code) =
                anonmm::kernel_compare::compare_kernels(&script, format == TableFormat::Markdown);
            out!("{text}");
            return code;
        }
        KernelChoice::One(k) => k,
    };
    let rows =
        anonmm::policy::compare_all_as(&script, &anonmm::mm::Config { kernel, ..Default::default() }, replay);
    match format {
        TableFormat::Markdown => out!("{}", anonmm::policy::render_rows(&rows, true)),
        TableFormat::Json => outln!("{}", serde_json::to_string_pretty(&rows).unwrap_or_default()),
        TableFormat::Text => out!("{}", anonmm::policy::render_rows(&rows, false)),
    }
    if rows.iter().all(|r| r.contents.is_ok()) { 0 } else { 1 }
}

/// The forms of `run --json`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum JsonForm {
    /// Every step with every live process whole.
    Full,
    /// Every step with only what changed since the previous one (`--changes`).
    Changes,
}

/// Load a script or a trace for `run` and `explain`: the script, and whether it is a trace
/// (then told on stderr what its import skipped).
fn load_input(path: &std::path::Path) -> Result<(anonmm::script::Script, bool), i32> {
    match anonmm::import::load(path) {
        Ok((s, None)) => Ok((s, false)),
        Ok((s, Some(report))) => {
            let skipped: u64 = report.skipped.values().sum();
            eprintln!(
                "{}: a {} trace, run as `anonmm replay` runs it: {} steps; {skipped} events skipped \
                 (calls outside the memory subset and the like){}",
                path.display(),
                report.format,
                s.steps.len(),
                if report.damaged() {
                    format!("; damaged: {}", report.problems.join("; "))
                } else {
                    String::new()
                }
            );
            Ok((s, true))
        }
        Err(e) => {
            eprintln!("anonmm: {e}");
            Err(2)
        }
    }
}

fn cmd_explain(
    path: &std::path::Path,
    at: Option<usize>,
    pid: Option<u32>,
    policy: Policy,
    kernel: Kernel,
) -> i32 {
    let (script, replay) = match load_input(path) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let opts =
        anonmm::explain::ExplainOptions { at, pid: pid.map(anonmm::types::Pid), policy, replay, kernel };
    match anonmm::explain::explain(&script, &opts) {
        Ok(text) => {
            use std::io::Write;
            let _ = std::io::stdout().write_all(text.as_bytes());
            0
        }
        Err(e @ RunError::Invariant { .. }) => {
            eprintln!("anonmm: {e}");
            1
        }
        Err(e) => {
            eprintln!("anonmm: {e}");
            2
        }
    }
}

fn cmd_run(path: &std::path::Path, at: Option<usize>, json: Option<JsonForm>, mut opts: RunOptions) -> i32 {
    let (mut script, replay) = match load_input(path) {
        Ok(s) => s,
        Err(code) => return code,
    };
    script.steps.truncate(anonmm::explain::prefix_until(&script, at));
    opts.replay = replay;
    let report = |res: &anonmm::run::RunResult| anonmm::report::run_report(&opts.policy.to_string(), res);
    // With --json each step is printed as it is made: `{"steps":[` step `,` step … `]}`.
    let mut first = true;
    let mut prev: Option<anonmm::snapshot::StepView> = None;
    // Without --json only the last step has a view: the maps printed at the end.
    let mut last = None;
    let mut stream = |v: anonmm::snapshot::StepView| {
        let Some(form) = json else {
            last = Some(v);
            return;
        };
        let mut text = String::from(if first { "{\"steps\":[" } else { "," });
        match form {
            JsonForm::Full => write_step_json(&mut text, &v),
            JsonForm::Changes => text.push_str(&step_changes_json(prev.as_ref(), &v).to_string()),
        }
        out!("{text}");
        first = false;
        if form == JsonForm::Changes {
            prev = Some(v);
        }
    };
    let res = run_script_each(&script, &opts, &mut stream);
    if json.is_some() {
        // Close the document even after an error, so that the steps run stay readable.
        outln!("{}", if first { "{\"steps\":[]}" } else { "]}" });
    }
    let res = match res {
        Ok(r) => r,
        Err(e @ (RunError::BadInput { .. } | RunError::NotModelled { .. })) => {
            eprintln!("anonmm: {e}");
            return 2;
        }
        Err(e @ RunError::Invariant { .. }) => {
            eprintln!("anonmm: {e}");
            return 1;
        }
    };
    if json.is_some() {
        // Keep stdout valid JSON: the trace and the report go to stderr.
        for (line, t) in &res.trace {
            eprintln!("line {line}: {t}");
        }
        eprint!("{}", report(&res));
    } else {
        for (line, t) in &res.trace {
            outln!("line {line}: {t}");
        }
        if let Some(last) = &last {
            if opts.smaps {
                out!("{}", format_smaps_text(&last.procs));
            } else {
                out!("{}", format_maps_text(&last.procs));
            }
        }
        out!("{}", report(&res));
    }
    if opts.check {
        eprintln!("anonmm: {}", anonmm::report::check_summary(&res, opts.check_sampled));
    }
    // The runner may or may not put the leading "= " in; print it once either way.
    let bare = |s: &str| s.strip_prefix('=').unwrap_or(s).trim().to_string();
    if replay {
        // A trace's disagreements are replay's classes, not failures (see `anonmm replay`).
        return 0;
    }
    for m in &res.mismatches {
        eprintln!(
            "anonmm: {}:{}: expected = {}, got = {}",
            script.path,
            m.line,
            bare(&m.expected),
            bare(&m.got)
        );
    }
    if res.mismatches.is_empty() { 0 } else { 1 }
}

fn cmd_import(trace: &std::path::Path, out: Option<&std::path::Path>, resolved: bool) -> i32 {
    use std::io::{Seek, Write};
    // The steps stream into a scratch file as the import converts them: the header before
    // them needs the step and event counts, known only at the end. Memory is then a few
    // batches of steps, not the trace.
    let scratch_path = std::env::temp_dir().join(format!("anonmm-import-{}.steps", std::process::id()));
    let scratch =
        std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&scratch_path);
    let mut scratch = match scratch {
        Ok(f) => f,
        Err(e) => {
            eprintln!("anonmm: {}: cannot write: {e}", scratch_path.display());
            return 2;
        }
    };
    // Unlinked at once: it goes when closed, whatever happens.
    let _ = std::fs::remove_file(&scratch_path);
    let report = match anonmm::replay::write_import(
        trace,
        resolved,
        &mut scratch,
        &scratch_path.display().to_string(),
    ) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("anonmm: {e}");
            return 2;
        }
    };
    let mut head = String::new();
    if resolved {
        head.push_str("# resolved: each step as `anonmm replay` runs it\n");
    }
    head.push_str(&format!(
        "# imported from {} ({}) by anonmm import: {} steps from {} events\n",
        trace.display(),
        report.format,
        report.steps,
        report.events
    ));
    let json = serde_json::to_string_pretty(&report).unwrap_or_default();
    let copy = |w: &mut dyn Write, scratch: &mut std::fs::File| -> std::io::Result<()> {
        scratch.seek(std::io::SeekFrom::Start(0))?;
        w.write_all(head.as_bytes())?;
        std::io::copy(scratch, w)?;
        w.flush()
    };
    match out {
        Some(path) => {
            let written = std::fs::File::create(path)
                .and_then(|f| copy(&mut std::io::BufWriter::with_capacity(1 << 20, f), &mut scratch));
            if let Err(e) = written {
                eprintln!("anonmm: {}: cannot write: {e}", path.display());
                return 2;
            }
            outln!("{json}");
        }
        None => {
            anonmm::out::flush_stdout();
            let stdout = std::io::stdout();
            let mut lock = stdout.lock();
            match copy(&mut lock, &mut scratch) {
                // A closed pipe ends quietly, as everywhere.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return 0,
                Err(e) => {
                    eprintln!("anonmm: stdout: cannot write: {e}");
                    return 2;
                }
                Ok(()) => {}
            }
            eprintln!("{json}");
        }
    }
    0
}

/// Replay's progress on stderr (hidden when stderr is not a terminal): a bar with rate and
/// ETA when the number of steps is known, else a spinner with the count and the rate.
fn replay_progress(bar: &indicatif::ProgressBar, total: Option<u64>) {
    // indicatif's `per_sec` prints four decimals.
    let rate = |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
        let _ = write!(w, "{:.0} steps/s", s.per_sec());
    };
    let style = match total {
        Some(n) => {
            bar.set_length(n);
            indicatif::ProgressStyle::with_template(
                "{msg:<24} [{bar:40}] {human_pos}/{human_len} steps ({rate}, {eta} left)",
            )
            .map(|s| s.progress_chars("=> "))
        }
        None => {
            bar.unset_length();
            indicatif::ProgressStyle::with_template("{spinner} {msg:<24} {human_pos} steps ({rate})")
        }
    };
    bar.set_style(
        style.map_or_else(|_| indicatif::ProgressStyle::default_bar(), |s| s.with_key("rate", rate)),
    );
    bar.reset();
}

/// `replay`'s options beyond the traces, the policy and the format.
struct ReplayArgs {
    check: bool,
    check_incremental: bool,
    examples: usize,
    kernel: Kernel,
    accept_damaged: bool,
}

fn cmd_replay(
    traces: &[PathBuf],
    policies: &[Policy],
    format: anonmm::report::Format,
    args: ReplayArgs,
) -> i32 {
    let ReplayArgs { check, check_incremental, examples, kernel, accept_damaged } = args;
    let config = anonmm::mm::Config { kernel, ..Default::default() };
    use anonmm::report::{ReportRow, render};

    // Drawn on stderr, and only when it is a terminal.
    let bar = indicatif::ProgressBar::no_length();
    replay_progress(&bar, None);
    bar.enable_steady_tick(std::time::Duration::from_millis(250));
    let mut rows = Vec::new();
    let mut code = 0;
    // Damaged traces, told once each.
    let mut warned = std::collections::BTreeSet::new();
    // One policy's run of one trace: its row, or its error on stderr.
    let mut record =
        |name: &str,
         p: &str,
         secs: f64,
         res: Result<(anonmm::replay::ReplayOutcome, &anonmm::import::ImportReport), String>| {
            match res {
                Ok((out, import)) => {
                    if out.invariant.is_some() {
                        code = code.max(1);
                    }
                    if import.damaged() && warned.insert(name.to_string()) {
                        let first = import.problems.first().map_or("", String::as_str);
                        bar.suspend(|| {
                            eprintln!(
                                "{name}: damaged trace ({} problems, {} events lost; first: {first}): \
                                 divergences after the damage are counted as `trace`{}",
                                import.problems.len(),
                                import.lost,
                                if accept_damaged {
                                    ""
                                } else {
                                    "; exit status 2 (--accept-damaged to accept)"
                                }
                            )
                        });
                    }
                    if import.damaged() && !accept_damaged {
                        code = 2;
                    }
                    let row = ReportRow::new(name, p, &out, secs);
                    rows.push(row.with_import(import));
                }
                Err(e) => {
                    bar.suspend(|| eprintln!("anonmm: {e}"));
                    code = 2;
                }
            }
        };
    for path in traces {
        let name =
            path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into());
        // One policy: the import streams into the replay on a second thread, and the number
        // of steps is known only at the end.
        let opts_for = |p: Policy| RunOptions {
            check,
            check_sampled: true,
            check_incremental,
            policy: p,
            config: config.clone(),
            ..Default::default()
        };
        if let [p] = policies[..] {
            bar.set_message(format!("{name} ({p})"));
            replay_progress(&bar, None);
            let t0 = std::time::Instant::now();
            let res = anonmm::replay::replay_trace(path, &opts_for(p), examples, &mut |n| {
                bar.set_position(n as u64)
            });
            match res {
                Ok((out, import)) => {
                    record(&name, &p.to_string(), t0.elapsed().as_secs_f64(), Ok((out, &import)))
                }
                Err(e) => record(&name, &p.to_string(), t0.elapsed().as_secs_f64(), Err(e.to_string())),
            }
            continue;
        }
        // Several policies: one streamed import feeds one replay per policy, all at the same
        // time.
        bar.set_message(format!("{name} ({} policies)", policies.len()));
        bar.set_length(0);
        bar.set_position(0);
        let opts: Vec<RunOptions> = policies.iter().map(|&policy| opts_for(policy)).collect();
        match anonmm::replay::replay_trace_all(path, &opts, examples, &mut |n| bar.set_position(n as u64)) {
            Ok((runs, import)) => {
                for (&p, run) in policies.iter().zip(runs) {
                    match run {
                        Ok((mut out, secs)) => {
                            out.blame_damage(&import);
                            record(&name, &p.to_string(), secs, Ok((out, &import)))
                        }
                        Err(e) => record(&name, &p.to_string(), 0.0, Err(e.to_string())),
                    }
                }
            }
            Err(e) => record(&name, "", 0.0, Err(e.to_string())),
        }
    }
    bar.finish_and_clear();
    out!("{}", render(&rows, format));
    if check && code == 0 {
        eprintln!(
            "anonmm: check: the invariant checker ran on {} replay{} ({}) and found every invariant held",
            rows.len(),
            if rows.len() == 1 { "" } else { "s" },
            if check_incremental {
                "on what each step touched after every step, in full sampled and after the last step"
            } else {
                "sampled, and after the last step"
            }
        );
    }
    code
}

fn cmd_record(out: &std::path::Path, command: &[String], text: bool) -> i32 {
    match anonmm::record::record(out, command, text) {
        Ok(sum) => {
            if text {
                eprintln!(
                    "anonmm record: {} lines, {} bytes written to {}",
                    sum.lines,
                    sum.bytes,
                    sum.out.display()
                );
            } else {
                eprintln!("anonmm record: perf.data of {} bytes written to {}", sum.bytes, sum.out.display());
            }
            if !sum.missing.is_empty() {
                eprintln!("  tracepoints this kernel lacks (left out): {}", sum.missing.join(" "));
            }
            // The program's own status, as a shell wrapper would pass it on.
            sum.status.unwrap_or(0)
        }
        Err(e) => {
            eprintln!("anonmm: record: {e}");
            2
        }
    }
}

fn cmd_gen(kind: GenKind) -> i32 {
    use anonmm::workload::Workload;
    let (common, w) = match kind {
        GenKind::Stitch { common, p } => (common, Workload::Stitch(p)),
        GenKind::Realloc { common, p } => (common, Workload::Realloc(p)),
        GenKind::Forkserver { common, p } => (common, Workload::Forkserver(p)),
        GenKind::Compact { common, p } => (common, Workload::Compact(p)),
        GenKind::Random { common, p } => (common, Workload::Random(p)),
        GenKind::Restore { common, p } => (common, Workload::Restore(p)),
        GenKind::Gc { common, p } => (common, Workload::Gc(p)),
        GenKind::MapCount { common, p } => (common, Workload::MapCount(p)),
    };
    let text = match w.script_text_for(common.seed, common.kernel) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("anonmm: gen {}: {e}", w.name());
            return 2;
        }
    };
    match &common.out {
        Some(path) => {
            if let Err(e) = std::fs::write(path, text) {
                eprintln!("anonmm: {}: cannot write: {e}", path.display());
                return 2;
            }
        }
        None => out!("{text}"),
    }
    0
}

fn cmd_snapshot(pid: u32, out: Option<&std::path::Path>) -> i32 {
    let layout = match anonmm::workload::snapshot_pid(pid) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("anonmm: snapshot: {e}");
            return 2;
        }
    };
    let text = format!(
        "# anonmm snapshot {pid}: /proc/{pid}/maps, pages holding data from /proc/{pid}/pagemap\n{}",
        layout.to_text()
    );
    match out {
        Some(path) => {
            if let Err(e) = std::fs::write(path, text) {
                eprintln!("anonmm: {}: cannot write: {e}", path.display());
                return 2;
            }
        }
        None => out!("{text}"),
    }
    0
}

fn cmd_plot(traces: &[PathBuf], policies: &[Policy], out: &std::path::Path) -> i32 {
    match anonmm::plot::plot(traces, policies, out) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("anonmm: {e}");
            2
        }
    }
}

#[cfg(target_os = "linux")]
fn oracle(cmd: OracleCmd) -> i32 {
    use anonmm::oracle;
    match cmd {
        OracleCmd::Run { script, json, smaps, internal, kernel } => {
            oracle::cmd_run(&script, json, smaps, kernel, internal)
        }
        OracleCmd::Diff { scripts, smaps, internal, kernel } => {
            oracle::cmd_diff(&scripts, smaps, kernel, internal)
        }
        OracleCmd::Fuzz { cases, seed, steps, out, keep_going, smaps, internal, kernel } => oracle::cmd_fuzz(
            cases,
            seed,
            steps,
            &out,
            keep_going,
            oracle::Compared { smaps, internal },
            kernel,
        ),
        OracleCmd::VmGuest { share, ctl } => oracle::cmd_guest(&share, &ctl),
    }
}

#[cfg(not(target_os = "linux"))]
fn oracle(_cmd: OracleCmd) -> i32 {
    eprintln!("anonmm: oracle: needs Linux");
    2
}
