//! `anonmm compare --kernel all`: one script on the model of each kernel (6.1, 6.12, 6.18),
//! side by side: every step's result, and the final `/proc/PID/maps`, marking where the
//! kernels differ.

use std::fmt::Write as _;

use crate::kernel::Kernel;
use crate::run::{RunOptions, run_script};
use crate::script::Script;
use crate::snapshot::StepView;

/// Each kernel's run of `script`: its steps, or the error that stopped it.
fn runs(script: &Script) -> Vec<(Kernel, Result<Vec<StepView>, String>)> {
    Kernel::ALL
        .into_iter()
        .map(|k| {
            let opts = RunOptions {
                config: crate::mm::Config { kernel: k, ..Default::default() },
                ..Default::default()
            };
            (k, run_script(script, &opts).map(|r| r.steps).map_err(|e| e.to_string()))
        })
        .collect()
}

fn table(out: &mut String, head: &[String], rows: &[Vec<String>], markdown: bool) {
    let widths: Vec<usize> = (0..head.len())
        .map(|c| rows.iter().map(|r| r[c].len()).chain([head[c].len()]).max().unwrap_or(0))
        .collect();
    let line = |cells: &[String]| -> String {
        let cells: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        if markdown {
            format!("| {} |\n", cells.join(" | "))
        } else {
            format!("{}\n", cells.join("  ").trim_end())
        }
    };
    out.push_str(&line(head));
    if markdown {
        let seps: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        out.push_str(&line(&seps));
    }
    for r in rows {
        out.push_str(&line(r));
    }
}

/// The side-by-side text and the exit status (0, or 2 when a kernel's run failed).
pub fn compare_kernels(script: &Script, markdown: bool) -> (String, i32) {
    let runs = runs(script);
    let mut out = String::new();
    let mut code = 0;
    let mut head = vec!["line".to_string(), "call".to_string()];
    head.extend(runs.iter().map(|(k, _)| format!("Linux {k}")));
    head.push(String::new());
    let mut rows = Vec::new();
    for (i, step) in script.steps.iter().enumerate() {
        let cells: Vec<String> = runs
            .iter()
            .map(|(_, r)| match r {
                Ok(v) => {
                    v.get(i).map_or_else(String::new, |s| format!("{} ({} VMAs)", s.result, vma_count(s)))
                }
                Err(_) => "(failed)".to_string(),
            })
            .collect();
        let differs = cells.windows(2).any(|w| w[0] != w[1]);
        let mut row = vec![step.line.to_string(), step.text.trim().to_string()];
        row.extend(cells);
        row.push(if differs { "differs".to_string() } else { String::new() });
        rows.push(row);
    }
    table(&mut out, &head, &rows, markdown);
    for (k, r) in &runs {
        if let Err(e) = r {
            let _ = writeln!(out, "\nLinux {k}: {e}");
            code = 2;
        }
    }
    // The final maps, one column per kernel.
    let finals: Vec<Vec<String>> = runs
        .iter()
        .map(|(_, r)| match r {
            Ok(v) => v.last().map_or_else(Vec::new, |s| {
                s.procs
                    .iter()
                    .flat_map(|(pid, p)| p.maps.iter().map(move |m| format!("{} {}", pid.0, m.trim_end())))
                    .collect()
            }),
            Err(_) => Vec::new(),
        })
        .collect();
    let n = finals.iter().map(Vec::len).max().unwrap_or(0);
    let mut rows = Vec::new();
    for i in 0..n {
        let cells: Vec<String> = finals.iter().map(|f| f.get(i).cloned().unwrap_or_default()).collect();
        let differs = cells.windows(2).any(|w| w[0] != w[1]);
        let mut row = cells;
        row.push(if differs { "differs".to_string() } else { String::new() });
        rows.push(row);
    }
    let mut head: Vec<String> =
        runs.iter().map(|(k, _)| format!("maps at the end, Linux {k} (pid, line)")).collect();
    head.push(String::new());
    out.push('\n');
    table(&mut out, &head, &rows, markdown);
    (out, code)
}

fn vma_count(s: &StepView) -> usize {
    s.procs.values().map(|p| p.maps.len()).sum()
}
