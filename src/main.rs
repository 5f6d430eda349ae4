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
use anonmm::snapshot::{format_maps_text, steps_to_json};

#[derive(Parser)]
#[command(name = "anonmm", version, about = "An executable model of Linux 6.18 anonymous memory")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a script on the model and print the final maps of every live process.
    Run {
        script: PathBuf,
        /// Print every step's state as JSON instead.
        #[arg(long)]
        json: bool,
        /// Run the invariant checker after every step.
        #[arg(long)]
        check: bool,
        /// Print a line per merge attempt.
        #[arg(long)]
        trace: bool,
        /// Which behaviour to model.
        #[arg(long, value_name = "NAME", default_value = "kernel")]
        policy: String,
        /// Model a kernel built with CONFIG_ANON_VMA_NAME (ours is not: naming gives EINVAL).
        #[arg(long)]
        anon_vma_name: bool,
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
    },
    /// Run scripts on the real kernel.
    Oracle {
        #[command(subcommand)]
        cmd: OracleCmd,
    },
}

#[derive(Subcommand)]
enum OracleCmd {
    /// Run a script natively and print what the kernel shows.
    Run {
        script: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Run a script on the model and natively, and print the differences.
    Diff { script: PathBuf },
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
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.cmd {
        Cmd::Run { script, json, check, trace, policy, anon_vma_name } => cmd_run(
            &script,
            json,
            RunOptions {
                check,
                trace,
                policy,
                last_view_only: !json,
                config: anonmm::mm::Config { anon_vma_name, ..Default::default() },
            },
        ),
        Cmd::Import { trace, out } => cmd_import(&trace, out.as_deref()),
        Cmd::Oracle { cmd } => oracle(cmd),
    };
    ExitCode::from(u8::try_from(code).unwrap_or(2))
}

fn cmd_run(path: &std::path::Path, json: bool, opts: RunOptions) -> i32 {
    let script = match parse_file(path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
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
    } else {
        for (line, t) in &res.trace {
            println!("line {line}: {t}");
        }
        if let Some(last) = res.steps.last() {
            print!("{}", format_maps_text(&last.procs));
        }
    }
    // The runner may or may not put the leading "= " in; print it once either way.
    let bare = |s: &str| s.strip_prefix('=').unwrap_or(s).trim().to_string();
    for m in &res.mismatches {
        eprintln!("{}:{}: expected = {}, got = {}", script.path, m.line, bare(&m.expected), bare(&m.got));
    }
    if res.mismatches.is_empty() { 0 } else { 1 }
}

fn cmd_import(trace: &std::path::Path, out: Option<&std::path::Path>) -> i32 {
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
    for step in &script.steps {
        text.push_str(&format_step(step));
        text.push('\n');
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

#[cfg(target_os = "linux")]
fn oracle(cmd: OracleCmd) -> i32 {
    use anonmm::oracle;
    match cmd {
        OracleCmd::Run { script, json } => oracle::cmd_run(&script, json),
        OracleCmd::Diff { script } => oracle::cmd_diff(&script),
        OracleCmd::Fuzz { cases, seed, steps, out, keep_going } => {
            oracle::cmd_fuzz(cases, seed, steps, &out, keep_going)
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn oracle(_cmd: OracleCmd) -> i32 {
    eprintln!("oracle: needs Linux");
    2
}
