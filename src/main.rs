//! `anonmm`: run scripts on the model, or (on Linux) on the kernel oracle.
//!
//! Exit status: 0 when every recorded result matched, 1 for mismatches or a broken invariant,
//! 2 for bad input (a script that does not parse, or asks for something impossible).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use anonmm::run::{RunError, RunOptions, run_script};
use anonmm::script::parse_file;
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

#[cfg(target_os = "linux")]
fn oracle(cmd: OracleCmd) -> i32 {
    use anonmm::oracle;
    match cmd {
        OracleCmd::Run { script, json } => oracle::cmd_run(&script, json),
        OracleCmd::Diff { script } => oracle::cmd_diff(&script),
        OracleCmd::Fuzz { cases, seed, steps, out } => oracle::cmd_fuzz(cases, seed, steps, &out),
    }
}

#[cfg(not(target_os = "linux"))]
fn oracle(_cmd: OracleCmd) -> i32 {
    eprintln!("oracle: needs Linux");
    2
}
