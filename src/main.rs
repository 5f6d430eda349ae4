//! `anonmm`: run scripts on the model, or (on Linux) on the kernel oracle.
//!
//! Exit status: 0 when every recorded result matched, 1 for mismatches or a broken invariant,
//! 2 for bad input (a script that does not parse, or asks for something impossible).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use anonmm::import::read_trace;
use anonmm::run::{RunError, RunOptions, run_script};
use anonmm::script::{format_step, parse_file};
use anonmm::snapshot::{format_maps_text, format_smaps_text, steps_to_json};

#[derive(Parser)]
#[command(name = "anonmm", version, about = "An executable model of Linux 6.18 anonymous memory")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a script on the model and print the final maps of every live process.
    ///
    /// SCRIPT may be a trace (`perf script` text, `.zst`, or strace output with calls outside
    /// the memory subset, which are skipped and counted): it runs as `replay` runs it.
    Run {
        script: PathBuf,
        /// Stop after the step on this line, and show the state there.
        #[arg(long, value_name = "LINE")]
        at: Option<usize>,
        /// Print every step's state as JSON instead.
        #[arg(long)]
        json: bool,
        /// Run the invariant checker: after as many steps as keep it within 3/4 of the run's
        /// own time, and after the last; a broken invariant is still blamed on the exact step
        /// (the run is redone with a check after every step).
        #[arg(long)]
        check: bool,
        /// With --check: check after every step.
        #[arg(long, requires = "check")]
        check_every_step: bool,
        /// Print a line per merge attempt.
        #[arg(long)]
        trace: bool,
        /// Which behaviour to model.
        #[arg(long, value_name = "NAME", default_value = "kernel")]
        policy: String,
        /// Model a kernel built with CONFIG_ANON_VMA_NAME (ours is not: naming gives EINVAL).
        #[arg(long)]
        anon_vma_name: bool,
        /// Print /proc/pid/smaps of every live process after the maps.
        #[arg(long)]
        smaps: bool,
    },
    /// Run a script under every policy and tabulate VMAs, merges, relocations and their
    /// cost, and whether every policy showed the same page contents as `kernel`.
    ///
    /// MREMAP_RELOCATE_ANON and MREMAP_MUST_RELOCATE_ANON exist only under `relocate` and
    /// `relocate-all`; the other policies run the script without them. Exit status 1 when a
    /// policy broke an invariant or changed contents.
    Compare {
        script: PathBuf,
        /// `text`, `markdown` or `json`.
        #[arg(long, default_value = "text")]
        format: String,
    },
    /// For every pair of adjacent VMAs of a process that stay apart, say why in the kernel's
    /// terms (the refusal's name as `run --trace` prints it, and what makes it), and which
    /// policies would merge them.
    ///
    /// SCRIPT may be a trace, run as `replay` runs it.
    Explain {
        script: PathBuf,
        /// Explain the state after the step on this line (default: the last).
        #[arg(long, value_name = "LINE")]
        at: Option<usize>,
        /// Only this process.
        #[arg(long, value_name = "N")]
        pid: Option<u32>,
        /// The policy to run under.
        #[arg(long, value_name = "NAME", default_value = "kernel")]
        policy: String,
    },
    /// Draw the reverse map (VMAs, anon_vma_chains, anon_vmas, folios) at one step of a
    /// script as Graphviz DOT, or SVG when OUT ends in `.svg` (needs Graphviz's `dot`).
    Graph {
        script: PathBuf,
        /// Draw the state after the call on this script line (default: the last).
        #[arg(long, value_name = "LINE")]
        at: Option<usize>,
        /// Only this process.
        #[arg(long, value_name = "N")]
        pid: Option<u32>,
        /// Folios drawn one by one per VMA; more are summarised in one node.
        #[arg(long, default_value_t = 8)]
        max_folios: usize,
        #[arg(long, value_name = "NAME", default_value = "kernel")]
        policy: String,
        /// Where to write (`.dot` or `.svg`); stdout (DOT) when absent.
        #[arg(short, long, value_name = "OUT")]
        out: Option<PathBuf>,
    },
    /// Import a real trace (`perf script` text, or strace; `.zst` or plain) as a script.
    ///
    /// Writes one script line per step (to OUT, or to stdout) and prints the import report
    /// as JSON (to stdout with -o, else to stderr).
    Import {
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
    /// every disagreement with the recording, classified (placement, file, model).
    ///
    /// Traces are `perf script` text, strace or anonmm scripts, `.zst` or plain. Exit status
    /// 0 when every trace replayed (divergences are reported, not failures), 1 for a broken
    /// invariant (`--check`), 2 for a trace that cannot be read or a bad option.
    Replay {
        #[arg(required = true, value_name = "TRACE")]
        traces: Vec<PathBuf>,
        /// Which behaviour to model: a policy name, or `all` for every known one.
        #[arg(long, value_name = "NAME|all", default_value = "kernel")]
        policy: String,
        /// Output format: text, markdown, json or csv.
        #[arg(long, value_name = "FORMAT", default_value = "text")]
        format: String,
        /// Run the invariant checker (sampled as in `run --check`; the broken step is still
        /// found exactly).
        #[arg(long)]
        check: bool,
        /// With --check: check after every step (slow).
        #[arg(long, requires = "check")]
        check_every_step: bool,
        /// How many divergences of each class to list per trace.
        #[arg(long, value_name = "N", default_value_t = anonmm::replay::MAX_EXAMPLES)]
        examples: usize,
        /// Exit 0 for a damaged trace (garbled lines, lost events, a truncated stream) too;
        /// the damage is still reported.
        #[arg(long)]
        accept_damaged: bool,
    },
    /// Record a program's memory-management trace with perf (the events of
    /// shared/record.sh) as `perf script` text, for `import`, `replay` and `plot`.
    ///
    /// Needs perf (Debian: `apt-get install linux-perf`) and permission to trace (root, or
    /// `kernel.perf_event_paranoid` lowered). Tracepoints the running kernel lacks are left
    /// out. Exit status: the program's own when recorded, 2 when perf cannot record.
    Record {
        /// Where to write the text (zstd-compressed when it ends in `.zst`).
        #[arg(short, long, value_name = "OUT")]
        out: std::path::PathBuf,
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
    /// Plot VMA counts over each trace's time (perf timestamps, or the step index of a
    /// script) as an SVG: one chart per trace, one line per policy.
    Plot {
        #[arg(required = true, value_name = "TRACE")]
        traces: Vec<PathBuf>,
        /// A policy name, or `all` for every known one.
        #[arg(long, value_name = "NAME|all", default_value = "kernel")]
        policy: String,
        /// Where to write the SVG.
        #[arg(short, long, value_name = "OUT.svg")]
        out: PathBuf,
    },
    /// Run scripts on the real kernel.
    Oracle {
        #[command(subcommand)]
        cmd: OracleCmd,
    },
    /// Measure the model's throughput and scale (the figures of BENCHMARKS.md) and print them
    /// with the machine's description and each figure's target.
    ///
    /// Exit status 0 when every figure with a target met it, 1 otherwise, 2 for bad options.
    Bench {
        /// Which figures: faults, vma, scale, replay, check, oracle (default: all).
        #[arg(long, value_delimiter = ',', value_name = "LIST")]
        only: Vec<String>,
        /// Smaller sizes (a minute instead of several); the figures are less steady.
        #[arg(long)]
        quick: bool,
        /// The trace to replay (default: the bundled 1-million-fault recording).
        #[arg(long, value_name = "TRACE")]
        trace: Option<PathBuf>,
        /// Output format: text, markdown or json.
        #[arg(long, default_value = "text")]
        format: String,
    },
}

/// The synthetic workloads of `anonmm gen`.
#[derive(Subcommand)]
enum GenKind {
    /// Pieces of memory, mapped far apart and (a chosen fraction) written, then moved one
    /// behind the other with mremap FIXED: faulted pieces keep their anon_vma and page
    /// offsets, so Linux keeps them as separate VMAs.
    Stitch {
        #[command(flatten)]
        common: anonmm::workload::Common,
        #[command(flatten)]
        p: anonmm::workload::StitchParams,
    },
    /// A glibc-like allocator: blocks as their own anonymous mappings, grown in place with
    /// mremap when the space after is free, else moved (MAYMOVE|FIXED to the first free
    /// place), freed with munmap, written; with read-only and PROT_NONE mappings among them.
    Realloc {
        #[command(flatten)]
        common: anonmm::workload::Common,
        #[command(flatten)]
        p: anonmm::workload::ReallocParams,
    },
    /// A parent that maps and writes a pool, then forks workers which move part of the
    /// inherited pool (mremap FIXED), write (COW), map scratch memory and exit, while the
    /// parent keeps writing.
    Forkserver {
        #[command(flatten)]
        common: anonmm::workload::Common,
        #[command(flatten)]
        p: anonmm::workload::ForkserverParams,
    },
    /// An arena allocator: blocks bump-allocated and written, some freed (munmap), the live
    /// ones compacted toward the arena start with mremap FIXED, in rounds.
    Compact {
        #[command(flatten)]
        common: anonmm::workload::Common,
        #[command(flatten)]
        p: anonmm::workload::CompactParams,
    },
    /// The fuzzer's random scripts (every call and flag, files, shared memory, forks).
    Random {
        #[command(flatten)]
        common: anonmm::workload::Common,
        #[command(flatten)]
        p: anonmm::workload::RandomParams,
    },
}

#[derive(Subcommand)]
enum OracleCmd {
    /// Run a script natively and print what the kernel shows.
    Run {
        script: PathBuf,
        #[arg(long)]
        json: bool,
        /// Print the kernel's /proc/pid/smaps of the window's VMAs after the maps.
        #[arg(long)]
        smaps: bool,
    },
    /// Run a script on the model and natively, and print the differences.
    Diff {
        script: PathBuf,
        /// Compare the /proc/pid/smaps fields the model knows too, after every step.
        #[arg(long)]
        smaps: bool,
    },
    /// Generate random scripts and diff model and kernel on each.
    Fuzz {
        #[arg(long)]
        cases: u64,
        #[arg(long)]
        seed: Option<u64>,
        #[arg(long, default_value_t = 50)]
        steps: usize,
        #[arg(long, default_value = "fuzz-out")]
        out: PathBuf,
        /// Go on after a divergence (each is shrunk and written to --out).
        #[arg(long)]
        keep_going: bool,
        /// Compare the /proc/pid/smaps fields the model knows too, after every step.
        #[arg(long)]
        smaps: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.cmd {
        Cmd::Explain { script, at, pid, policy } => cmd_explain(&script, at, pid, policy),
        Cmd::Run { script, at, json, check, check_every_step, trace, policy, anon_vma_name, smaps } => {
            cmd_run(
                &script,
                at,
                json,
                RunOptions {
                    check,
                    check_sampled: !check_every_step,
                    trace,
                    policy,
                    last_view_only: !json,
                    config: anonmm::mm::Config { anon_vma_name, ..Default::default() },
                    replay: false,
                    smaps,
                    resolved: false,
                },
            )
        }
        Cmd::Compare { script, format } => cmd_compare(&script, &format),
        Cmd::Graph { script, at, pid, max_folios, policy, out } => cmd_graph(
            &script,
            &anonmm::graph::GraphOptions { at, pid: pid.map(anonmm::types::Pid), max_folios, policy },
            out.as_deref(),
        ),
        Cmd::Import { trace, out, resolved } => cmd_import(&trace, out.as_deref(), resolved),
        Cmd::Replay { traces, policy, format, check, check_every_step, examples, accept_damaged } => {
            cmd_replay(&traces, &policy, &format, check, !check_every_step, examples, accept_damaged)
        }
        Cmd::Record { out, command } => cmd_record(&out, &command),
        Cmd::Gen { kind } => cmd_gen(kind),
        Cmd::Plot { traces, policy, out } => cmd_plot(&traces, &policy, &out),
        Cmd::Oracle { cmd } => oracle(cmd),
        Cmd::Bench { only, quick, trace, format } => cmd_bench(&only, quick, trace, &format),
    };
    ExitCode::from(u8::try_from(code).unwrap_or(2))
}

fn cmd_bench(only: &[String], quick: bool, trace: Option<PathBuf>, format: &str) -> i32 {
    use anonmm::bench::*;
    const ALL: [&str; 6] = ["faults", "vma", "scale", "replay", "check", "oracle"];
    if let Some(bad) = only.iter().find(|o| !ALL.contains(&o.as_str())) {
        eprintln!("unknown figure group `{bad}` (known: {})", ALL.join(", "));
        return 2;
    }
    if !["text", "markdown", "json"].contains(&format) {
        eprintln!("unknown format `{format}` (known: text, markdown, json)");
        return 2;
    }
    let want = |g: &str| only.is_empty() || only.iter().any(|o| o == g);
    let trace = trace.unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(BUNDLED_TRACE));
    let machine = machine_description();
    if format == "text" {
        println!("machine: {machine}\n");
    }
    let mut figs = Vec::new();
    let emit = |new: Vec<Figure>, figs: &mut Vec<Figure>| {
        if format == "text" {
            print!("{}", render_text(&new));
        }
        figs.extend(new);
    };
    let reps = if quick { 2 } else { 5 };
    // First: its memory figures are differences of the process's RSS, which later groups'
    // freed (but kept) heap would hide.
    if want("scale") {
        let (procs, vmas) = if quick { (16, 4096) } else { (64, 16384) };
        emit(bench_scale(procs, vmas, 16), &mut figs);
    }
    if want("faults") {
        let pages = if quick { 1 << 16 } else { 1 << 18 };
        emit(bench_faults(pages, 64 * 1024, reps), &mut figs);
        emit(
            bench_faults(pages, 4096, reps)
                .into_iter()
                .map(|mut f| {
                    f.name =
                        f.name.replacen("faults:", "faults (one-page touches, as replay makes them):", 1);
                    f
                })
                .collect(),
            &mut figs,
        );
    }
    if want("vma") {
        let rounds = if quick { 20_000 } else { 100_000 };
        emit(
            vec![
                bench_vma_calls(100_000, rounds, reps, false),
                bench_vma_calls(100_000, rounds, reps, true),
                bench_vma_calls(1_000, rounds, reps, false),
            ],
            &mut figs,
        );
    }
    if want("replay") {
        let policies: Vec<&str> = anonmm::report::POLICIES.to_vec();
        match bench_replay(&trace, &policies, if quick { 1 } else { 3 }) {
            Ok(f) => emit(f, &mut figs),
            Err(e) => eprintln!("replay: {e}"),
        }
    }
    if want("check") {
        emit(vec![bench_check(if quick { 100 } else { 400 }, 60, reps)], &mut figs);
    }
    if want("oracle") {
        match bench_oracle(if quick { 10 } else { 40 }, 60) {
            Ok(f) => emit(vec![f], &mut figs),
            Err(e) => eprintln!("oracle: not measured: {e}"),
        }
    }
    match format {
        "markdown" => print!("Machine: {machine}\n\n{}", render_markdown(&figs)),
        "json" => println!("{}", serde_json::json!({ "machine": machine, "figures": figs })),
        _ => {}
    }
    i32::from(figs.iter().any(|f| f.verdict() == "MISSED"))
}

fn cmd_graph(
    path: &std::path::Path,
    opts: &anonmm::graph::GraphOptions,
    out: Option<&std::path::Path>,
) -> i32 {
    let script = match parse_file(path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let dot = match anonmm::graph::graph_script(&script, opts) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let Some(out) = out else {
        print!("{dot}");
        return 0;
    };
    if out.extension().is_some_and(|e| e == "svg") {
        use std::io::Write;
        let child = std::process::Command::new("dot")
            .args(["-Tsvg", "-o"])
            .arg(out)
            .stdin(std::process::Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                eprintln!("anonmm graph: cannot run Graphviz `dot` ({e}); install graphviz, or write .dot");
                return 2;
            }
        };
        let wrote = child.stdin.take().map(|mut s| s.write_all(dot.as_bytes()));
        match (wrote, child.wait()) {
            (Some(Ok(())), Ok(st)) if st.success() => 0,
            _ => {
                eprintln!("anonmm graph: `dot` failed to write {}", out.display());
                1
            }
        }
    } else if let Err(e) = std::fs::write(out, dot) {
        eprintln!("{}: {e}", out.display());
        2
    } else {
        0
    }
}

fn cmd_compare(path: &std::path::Path, format: &str) -> i32 {
    let script = match parse_file(path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let rows = anonmm::policy::compare_all(&script, &anonmm::mm::Config::default());
    match format {
        "text" => print!("{}", anonmm::policy::render_rows(&rows, false)),
        "markdown" => print!("{}", anonmm::policy::render_rows(&rows, true)),
        "json" => println!("{}", serde_json::to_string_pretty(&rows).unwrap_or_default()),
        f => {
            eprintln!("unknown format `{f}` (known: text, markdown, json)");
            return 2;
        }
    }
    if rows.iter().all(|r| r.contents.is_ok()) { 0 } else { 1 }
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
            eprintln!("{e}");
            Err(2)
        }
    }
}

fn cmd_explain(path: &std::path::Path, at: Option<usize>, pid: Option<u32>, policy: String) -> i32 {
    let (script, replay) = match load_input(path) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let opts = anonmm::explain::ExplainOptions { at, pid: pid.map(anonmm::types::Pid), policy, replay };
    match anonmm::explain::explain(&script, &opts) {
        Ok(text) => {
            use std::io::Write;
            let _ = std::io::stdout().write_all(text.as_bytes());
            0
        }
        Err(e @ RunError::Invariant { .. }) => {
            eprintln!("{e}");
            1
        }
        Err(e) => {
            eprintln!("{e}");
            2
        }
    }
}

fn cmd_run(path: &std::path::Path, at: Option<usize>, json: bool, mut opts: RunOptions) -> i32 {
    let (mut script, replay) = match load_input(path) {
        Ok(s) => s,
        Err(code) => return code,
    };
    script.steps.truncate(anonmm::explain::prefix_until(&script, at));
    opts.replay = replay;
    let report = |res: &anonmm::run::RunResult| anonmm::report::run_report(&opts.policy, res);
    let res = match run_script(&script, &opts) {
        Ok(r) => r,
        Err(e @ (RunError::BadInput { .. } | RunError::NotModelled { .. })) => {
            eprintln!("{e}");
            return 2;
        }
        Err(e @ RunError::Invariant { .. }) => {
            eprintln!("{e}");
            return 1;
        }
    };
    if json {
        // Keep stdout valid JSON: the trace goes to stderr.
        for (line, t) in &res.trace {
            eprintln!("line {line}: {t}");
        }
        println!("{}", steps_to_json(&res.steps));
        eprint!("{}", report(&res));
    } else {
        for (line, t) in &res.trace {
            println!("line {line}: {t}");
        }
        if let Some(last) = res.steps.last() {
            if opts.smaps {
                print!("{}", format_smaps_text(&last.procs));
            } else {
                print!("{}", format_maps_text(&last.procs));
            }
        }
        print!("{}", report(&res));
    }
    // The runner may or may not put the leading "= " in; print it once either way.
    let bare = |s: &str| s.strip_prefix('=').unwrap_or(s).trim().to_string();
    if replay {
        // A trace's disagreements are replay's classes, not failures (see `anonmm replay`).
        return 0;
    }
    for m in &res.mismatches {
        eprintln!("{}:{}: expected = {}, got = {}", script.path, m.line, bare(&m.expected), bare(&m.got));
    }
    if res.mismatches.is_empty() { 0 } else { 1 }
}

fn cmd_import(trace: &std::path::Path, out: Option<&std::path::Path>, resolved: bool) -> i32 {
    use std::io::Write;
    let (script, report) = match read_trace(trace) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let mut text = format!(
        "# imported from {} ({}) by anonmm import: {} steps from {} events\n",
        trace.display(),
        report.format,
        report.steps,
        report.events
    );
    if resolved {
        let opts = RunOptions { replay: true, last_view_only: true, resolved: true, ..Default::default() };
        match run_script(&script, &opts) {
            Ok(res) => {
                text.insert_str(0, "# resolved: each step as `anonmm replay` runs it\n");
                for l in res.resolved {
                    text.push_str(&l);
                    text.push('\n');
                }
            }
            Err(e) => {
                eprintln!("{e}");
                return 2;
            }
        }
    } else {
        for step in &script.steps {
            text.push_str(&format_step(step));
            text.push('\n');
        }
    }
    let json = serde_json::to_string_pretty(&report).unwrap_or_default();
    match out {
        Some(path) => {
            if let Err(e) = std::fs::write(path, text) {
                eprintln!("{}: cannot write: {e}", path.display());
                return 2;
            }
            // A closed stdout (`| head`) is not worth a panic.
            let _ = writeln!(std::io::stdout(), "{json}");
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            if let Err(e) = stdout.write_all(text.as_bytes()) {
                eprintln!("stdout: {e}");
                return 2;
            }
            eprintln!("{json}");
        }
    }
    0
}

fn cmd_replay(
    traces: &[PathBuf],
    policy: &str,
    format: &str,
    check: bool,
    check_sampled: bool,
    examples: usize,
    accept_damaged: bool,
) -> i32 {
    use std::io::{IsTerminal, Write};

    use anonmm::replay::replay_script;
    use anonmm::report::{FORMATS, POLICIES, ReportRow, render};

    let policies: Vec<&str> = match policy {
        "all" => POLICIES.to_vec(),
        p if anonmm::policy::Policy::parse(p).is_ok() => vec![p],
        p => {
            eprintln!("unknown policy `{p}` (known: {}, or all)", POLICIES.join(", "));
            return 2;
        }
    };
    if !FORMATS.contains(&format) {
        eprintln!("unknown format `{format}` (known: {})", FORMATS.join(", "));
        return 2;
    }
    let bar = if std::io::stdout().is_terminal() {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg:<24} [{bar:40}] {pos}/{len} steps ({eta})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut rows = Vec::new();
    let mut code = 0;
    // Damaged traces, told once each.
    let mut warned = std::collections::BTreeSet::new();
    // One policy's run of one trace: its row, or its error on stderr.
    let mut record =
        |name: &str,
         p: &str,
         t0: std::time::Instant,
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
                    let row = ReportRow::new(name, p, &out, t0.elapsed().as_secs_f64());
                    rows.push(row.with_import(import));
                }
                Err(e) => {
                    bar.suspend(|| eprintln!("{e}"));
                    code = 2;
                }
            }
        };
    for path in traces {
        let name =
            path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into());
        // One policy, unchecked: the import streams into the replay on a second thread.
        if let [p] = policies[..]
            && !check
        {
            bar.set_message(format!("{name} ({p})"));
            bar.set_length(0);
            bar.set_position(0);
            let opts = RunOptions { policy: p.to_string(), ..Default::default() };
            let t0 = std::time::Instant::now();
            let res =
                anonmm::replay::replay_trace(path, &opts, examples, &mut |n| bar.set_position(n as u64));
            match res {
                Ok((out, import)) => record(&name, p, t0, Ok((out, &import))),
                Err(e) => record(&name, p, t0, Err(e.to_string())),
            }
            continue;
        }
        bar.set_message(format!("reading {name}"));
        let (script, import) = match read_trace(path) {
            Ok(s) => s,
            Err(e) => {
                record(&name, "", std::time::Instant::now(), Err(e.to_string()));
                continue;
            }
        };
        for &p in &policies {
            bar.set_message(format!("{name} ({p})"));
            bar.set_length(script.steps.len() as u64);
            bar.set_position(0);
            let opts = RunOptions { check, check_sampled, policy: p.to_string(), ..Default::default() };
            let t0 = std::time::Instant::now();
            let res = replay_script(&script, &opts, examples, &mut |n| bar.set_position(n as u64));
            let res = res.map(|mut out| {
                out.blame_damage(&import);
                (out, &import)
            });
            record(&name, p, t0, res.map_err(|e| e.to_string()));
        }
    }
    bar.finish_and_clear();
    let text = render(&rows, format).unwrap_or_default();
    // A closed stdout (`| head`) is not worth a panic.
    let _ = std::io::stdout().write_all(text.as_bytes());
    code
}

fn cmd_record(out: &std::path::Path, command: &[String]) -> i32 {
    match anonmm::record::record(out, command) {
        Ok(sum) => {
            eprintln!(
                "anonmm record: {} lines, {} bytes written to {}",
                sum.lines,
                sum.bytes,
                sum.out.display()
            );
            if !sum.missing.is_empty() {
                eprintln!("  tracepoints this kernel lacks (left out): {}", sum.missing.join(" "));
            }
            // The program's own status, as a shell wrapper would pass it on.
            sum.status.unwrap_or(0)
        }
        Err(e) => {
            eprintln!("anonmm record: {e}");
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
    };
    let text = match w.script_text(common.seed) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("anonmm gen {}: {e}", w.name());
            return 2;
        }
    };
    match &common.out {
        Some(path) => {
            if let Err(e) = std::fs::write(path, text) {
                eprintln!("{}: cannot write: {e}", path.display());
                return 2;
            }
        }
        None => {
            use std::io::Write;
            let _ = std::io::stdout().write_all(text.as_bytes());
        }
    }
    0
}

fn cmd_plot(traces: &[PathBuf], policy: &str, out: &std::path::Path) -> i32 {
    use anonmm::report::POLICIES;
    let policies: Vec<&str> = match policy {
        "all" => POLICIES.to_vec(),
        p if anonmm::policy::Policy::parse(p).is_ok() => vec![p],
        p => {
            eprintln!("unknown policy `{p}` (known: {}, or all)", POLICIES.join(", "));
            return 2;
        }
    };
    match anonmm::plot::plot(traces, &policies, out) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("anonmm plot: {e}");
            2
        }
    }
}

#[cfg(target_os = "linux")]
fn oracle(cmd: OracleCmd) -> i32 {
    use anonmm::oracle;
    match cmd {
        OracleCmd::Run { script, json, smaps } => oracle::cmd_run(&script, json, smaps),
        OracleCmd::Diff { script, smaps } => oracle::cmd_diff(&script, smaps),
        OracleCmd::Fuzz { cases, seed, steps, out, keep_going, smaps } => {
            oracle::cmd_fuzz(cases, seed, steps, &out, keep_going, smaps)
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn oracle(_cmd: OracleCmd) -> i32 {
    eprintln!("oracle: needs Linux");
    2
}
