//! The `anonmm replay` report: one row per trace × policy, as text, markdown, JSON or CSV.

use std::collections::BTreeMap;
use std::fmt::{Display, Write};

use serde::Serialize;

use crate::compare::PolicyRow;
use crate::replay::{DivClass, Divergence};
use crate::replayer::ReplayOutcome;
use crate::stats::MergeReason;

/// Policies `anonmm replay --policy` knows; `all` means every one of them. A new policy
/// is added here and in `Runner::new`'s check.
pub const POLICIES: &[&str] = crate::policy::POLICY_NAMES;

/// Output formats of `anonmm replay --format`.
pub const FORMATS: &[&str] = &["text", "markdown", "json", "csv"];

/// One trace replayed with one policy.
#[derive(Clone, Debug, Serialize)]
pub struct ReportRow {
    /// The trace's file name.
    pub trace: String,
    /// The `--policy` it was replayed with.
    pub policy: String,
    /// Steps in the trace.
    pub steps: usize,
    /// Thread groups: the first process and every fork.
    pub processes: u64,
    /// CLONE_VM children.
    pub threads: u64,
    /// VMAs after the last step (or just before the last exit_group when all exited).
    pub vmas_end: usize,
    /// The most VMAs held by the live processes after any step.
    pub vmas_peak: usize,
    /// `vmas_end`, counting only VMAs without a file (`vma_is_anonymous`).
    pub anon_vmas_end: usize,
    /// `vmas_peak`, counting only VMAs without a file.
    pub anon_vmas_peak: usize,
    /// Merge attempts ([`Stats::merges_attempted`](crate::stats::Stats::merges_attempted)).
    pub merges_attempted: u64,
    /// Merges done.
    pub merges_done: u64,
    /// Refusals by reason (`NOMERGE_*`, counted per side), nonzero ones only.
    pub merges_refused: BTreeMap<String, u64>,
    /// VMA splits (`__split_vma`).
    pub splits: u64,
    /// Page faults handled, one per page.
    pub faults: u64,
    /// Write faults that copied the page (`wp_page_copy`).
    pub cow_copies: u64,
    /// Write faults that reused an exclusive anonymous page in place.
    pub cow_reuses: u64,
    /// PTEs moved by mremap (`move_ptes`, and those in tables `move_normal_pmd` moved).
    pub ptes_moved: u64,
    /// PMD entries moved whole by mremap (`move_normal_pmd`/`move_huge_pmd`).
    pub pmds_moved: u64,
    /// What the policy did and cost (relocations, walks, copies).
    pub policy_work: crate::policy::PolicyStats,
    /// Divergences of class `placement` (the kernel chose another address).
    pub placement: u64,
    /// Divergences of class `file` (files or descriptors the trace does not show).
    pub file: u64,
    /// Divergences of class `trace` (the trace lacks the call behind the step).
    pub trace_gaps: u64,
    /// Divergences of class `model`: real divergences of the model.
    pub model: u64,
    /// Files the replay created because the trace opened or mapped them.
    pub files_created: u64,
    /// Times the replay made a file longer to keep a mapping or fault within EOF.
    pub files_grown: u64,
    /// The kernel's VMAs the trace recorded (perf's mmap records after mmap, mprotect and
    /// brk) compared with the model's at the same point.
    pub vma_records_checked: u64,
    /// Those that differed from the model's.
    pub vma_records_differ: u64,
    /// The first differing ones: the kernel's VMA as `expected`, the model's as `got`.
    pub vma_records_first_differing: Vec<Divergence>,
    /// The trace's damage (garbled lines, events cut in half, lost events, a truncated zstd
    /// stream), the first ones as `file:line: reason`; empty for a whole trace.
    pub import_problems: Vec<String>,
    /// Wall-clock replay time in seconds (reading the trace not included). With several
    /// policies, the shared part's time (up to the first step where a policy could differ,
    /// replayed once for all) plus the policy's own.
    pub seconds: f64,
    /// The first divergences of each class.
    pub examples: Vec<Divergence>,
    /// An invariant the checker found broken (`--check`); the replay stopped there.
    pub invariant: Option<String>,
}

impl ReportRow {
    /// The row for `trace` replayed under `policy`, from its outcome and wall-clock time.
    pub fn new(trace: &str, policy: &str, o: &ReplayOutcome, seconds: f64) -> ReportRow {
        let s = &o.stats;
        ReportRow {
            trace: trace.to_string(),
            policy: policy.to_string(),
            steps: o.steps,
            processes: o.replay.processes,
            threads: o.replay.threads,
            vmas_end: o.vmas_end.0,
            vmas_peak: o.vmas_peak.0,
            anon_vmas_end: o.vmas_end.1,
            anon_vmas_peak: o.vmas_peak.1,
            merges_attempted: s.merges_attempted,
            merges_done: s.merges_done,
            merges_refused: s
                .merge_refused
                .iter()
                .filter(|&(_, &n)| n > 0)
                .map(|(r, n)| (r.name().to_string(), *n))
                .collect(),
            splits: s.splits,
            faults: s.faults,
            cow_copies: s.cow_copies,
            cow_reuses: s.cow_reuses,
            ptes_moved: s.ptes_moved,
            pmds_moved: s.pmds_moved,
            policy_work: s.policy.clone(),
            placement: o.replay.count(DivClass::Placement),
            file: o.replay.count(DivClass::File),
            trace_gaps: o.replay.count(DivClass::Trace),
            model: o.replay.count(DivClass::Model),
            files_created: o.replay.files_created,
            files_grown: o.replay.files_grown,
            vma_records_checked: o.replay.vma_records_checked,
            vma_records_differ: o.replay.vma_records_differ,
            vma_records_first_differing: o.replay.vma_examples.clone(),
            import_problems: Vec::new(),
            seconds,
            examples: o.replay.examples.clone(),
            invariant: o.invariant.clone(),
        }
    }

    /// The row with its trace's import problems (its damage).
    pub fn with_import(mut self, report: &crate::import::ImportReport) -> ReportRow {
        self.import_problems = report.problems.clone();
        self
    }

    fn refused_short(&self) -> String {
        let short = self.merges_refused.iter().map(|(k, n)| (k.strip_prefix("NOMERGE_").unwrap_or(k), n));
        named_counts(short, "=", " ")
    }

    fn cells(&self) -> Vec<String> {
        vec![
            self.trace.clone(),
            self.policy.clone(),
            self.steps.to_string(),
            self.processes.to_string(),
            format!("{}/{}", self.vmas_end, self.vmas_peak),
            format!("{}/{}", self.anon_vmas_end, self.anon_vmas_peak),
            format!("{}/{}", self.merges_done, self.merges_attempted),
            self.refused_short(),
            self.splits.to_string(),
            self.faults.to_string(),
            format!("{}/{}", self.cow_copies, self.cow_reuses),
            format!("{}/{}", self.ptes_moved, self.pmds_moved),
            format!(
                "{}/{}/{}",
                self.policy_work.relocations_done,
                self.policy_work.relocations_attempted,
                self.policy_work.relocations_undone
            ),
            format!("{}/{}", self.policy_work.folios_rewritten, self.policy_work.pages_copied),
            self.placement.to_string(),
            self.file.to_string(),
            self.trace_gaps.to_string(),
            self.model.to_string(),
            self.vma_records_checked.to_string(),
            self.vma_records_differ.to_string(),
            self.import_problems.len().to_string(),
            format!("{:.2}", self.seconds),
        ]
    }
}

/// Column headers of the text and markdown tables.
pub const TABLE_HEADERS: [&str; 22] = [
    "trace",
    "policy",
    "steps",
    "processes",
    "VMAs end/peak",
    "anon VMAs end/peak",
    "merges done/attempted",
    "merges refused",
    "splits",
    "faults",
    "COW copies/reuses",
    "moved PTEs/PMDs",
    "relocations done/attempted/undone",
    "folios rewritten/pages copied",
    "placement",
    "file",
    "trace",
    "model",
    "VMA records checked",
    "VMA records differ",
    "import problems",
    "time (s)",
];

/// Counts by name as the reports show them: `name{eq}count`, joined by `sep`; `-` for none.
pub(crate) fn named_counts<K: Display, N: Display>(
    counts: impl IntoIterator<Item = (K, N)>,
    eq: &str,
    sep: &str,
) -> String {
    let v: Vec<String> = counts.into_iter().map(|(k, n)| format!("{k}{eq}{n}")).collect();
    if v.is_empty() { "-".to_string() } else { v.join(sep) }
}

/// Render rows in one of `FORMATS`; None for an unknown format.
pub fn render(rows: &[ReportRow], format: Format) -> String {
    match format {
        Format::Text => text(rows),
        Format::Markdown => markdown(rows),
        Format::Json => serde_json::to_string_pretty(rows).unwrap_or_default() + "\n",
        Format::Csv => csv(rows),
    }
}

/// The forms of the report (`replay --format`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Format {
    /// Aligned columns.
    Text,
    /// A markdown table.
    Markdown,
    /// The rows as a JSON array.
    Json,
    /// Comma-separated values, with a header line.
    Csv,
}

fn text(rows: &[ReportRow]) -> String {
    let cells: Vec<Vec<String>> = rows.iter().map(ReportRow::cells).collect();
    let mut width: Vec<usize> = TABLE_HEADERS.iter().map(|h| h.len()).collect();
    for r in &cells {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, r: &[&str]| {
        let parts: Vec<String> = r.iter().zip(&width).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    };
    line(&mut out, &TABLE_HEADERS);
    for r in &cells {
        line(&mut out, &r.iter().map(String::as_str).collect::<Vec<_>>());
    }
    out.push_str(&examples(rows, false));
    out
}

fn markdown(rows: &[ReportRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| {} |", TABLE_HEADERS.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(TABLE_HEADERS.len()));
    for r in rows {
        let cells: Vec<String> = r.cells().iter().map(|c| c.replace('|', "\\|")).collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out.push_str(&examples(rows, true));
    out
}

/// The divergence examples and broken invariants, after the table.
fn examples(rows: &[ReportRow], md: bool) -> String {
    let mut out = String::new();
    for r in rows {
        let bullet = if md { "- " } else { "  " };
        if !r.import_problems.is_empty() {
            let _ = write!(
                out,
                "\n{}{} ({}): damaged trace ({} import problems)\n",
                if md { "### " } else { "" },
                r.trace,
                r.policy,
                r.import_problems.len()
            );
            if md {
                out.push('\n');
            }
            for p in &r.import_problems {
                let _ = writeln!(out, "{bullet}{p}");
            }
        }
        if !r.vma_records_first_differing.is_empty() {
            let _ = write!(
                out,
                "\n{}{} ({}): first of {} kernel VMA records that differ from the model's\n",
                if md { "### " } else { "" },
                r.trace,
                r.policy,
                r.vma_records_differ
            );
            if md {
                out.push('\n');
            }
            for d in &r.vma_records_first_differing {
                let _ = writeln!(
                    out,
                    "{bullet}line {} (pid {}): kernel {}; model {}",
                    d.line, d.pid, d.expected, d.got
                );
            }
        }
        if r.examples.is_empty() && r.invariant.is_none() {
            continue;
        }
        let _ =
            write!(out, "\n{}{} ({}): first divergences\n", if md { "### " } else { "" }, r.trace, r.policy);
        if md {
            out.push('\n');
        }
        if let Some(inv) = &r.invariant {
            let _ = writeln!(out, "{}invariant broken, replay stopped: {inv}", if md { "- " } else { "  " });
        }
        for class in DivClass::ALL {
            for d in r.examples.iter().filter(|d| d.class == class) {
                let item = format!(
                    "{:<9} line {}: {} {} expected {}, got {}",
                    d.class.name(),
                    d.line,
                    d.pid,
                    d.call,
                    d.expected.trim_start_matches("= "),
                    d.got.trim_start_matches("= ")
                );
                if md {
                    let _ = writeln!(out, "- `{}`", item.replace('`', "'"));
                } else {
                    let _ = writeln!(out, "  {item}");
                }
            }
        }
    }
    out
}

/// The CSV header: fixed columns, then one column per merge refusal reason.
pub fn csv_header() -> Vec<String> {
    let mut h: Vec<String> = [
        "trace",
        "policy",
        "steps",
        "processes",
        "threads",
        "vmas_end",
        "vmas_peak",
        "anon_vmas_end",
        "anon_vmas_peak",
        "merges_attempted",
        "merges_done",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    h.extend(MergeReason::ALL.iter().filter(|r| **r != MergeReason::MergeOk).map(|r| r.name().to_string()));
    h.extend(
        [
            "splits",
            "faults",
            "cow_copies",
            "cow_reuses",
            "ptes_moved",
            "pmds_moved",
            "relocations_attempted",
            "relocations_done",
            "relocations_undone",
            "relocations_unneeded",
            "entries_walked",
            "folios_walked",
            "folios_rewritten",
            "folios_split",
            "pages_copied",
            "bytes_copied",
            "rmap_lock_holds",
            "placement",
            "file",
            "trace_gaps",
            "model",
            "files_created",
            "files_grown",
            "vma_records_checked",
            "vma_records_differ",
            "import_problems",
            "seconds",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    h
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}

fn csv(rows: &[ReportRow]) -> String {
    let mut out = csv_header().join(",") + "\n";
    for r in rows {
        let mut f: Vec<String> = vec![csv_field(&r.trace), csv_field(&r.policy)];
        f.extend(
            [r.steps as u64, r.processes, r.threads]
                .into_iter()
                .chain([r.vmas_end, r.vmas_peak, r.anon_vmas_end, r.anon_vmas_peak].map(|x| x as u64))
                .chain([r.merges_attempted, r.merges_done])
                .map(|x| x.to_string()),
        );
        for reason in MergeReason::ALL.iter().filter(|r| **r != MergeReason::MergeOk) {
            f.push(r.merges_refused.get(reason.name()).copied().unwrap_or(0).to_string());
        }
        f.extend(
            [
                r.splits,
                r.faults,
                r.cow_copies,
                r.cow_reuses,
                r.ptes_moved,
                r.pmds_moved,
                r.policy_work.relocations_attempted,
                r.policy_work.relocations_done,
                r.policy_work.relocations_undone,
                r.policy_work.relocations_unneeded,
                r.policy_work.entries_walked,
                r.policy_work.folios_walked,
                r.policy_work.folios_rewritten,
                r.policy_work.folios_split,
                r.policy_work.pages_copied,
                r.policy_work.bytes_copied,
                r.policy_work.rmap_lock_holds,
                r.placement,
                r.file,
                r.trace_gaps,
                r.model,
                r.files_created,
                r.files_grown,
                r.vma_records_checked,
                r.vma_records_differ,
                r.import_problems.len() as u64,
            ]
            .map(|x| x.to_string()),
        );
        f.push(format!("{:.3}", r.seconds));
        out.push_str(&f.join(","));
        out.push('\n');
    }
    out
}

/// Live processes named one by one in [`vmas_at_end`]; more are summed up.
const PIDS_LISTED: usize = 16;

/// The VMAs of the processes alive at the end, one by one (`pid 1: 3 (peak 5)`, the first
/// 16), and the exited ones summed up: a trace of 5,000 forks makes one line.
pub fn vmas_at_end(res: &crate::run::RunResult) -> String {
    let (live, exited): (Vec<_>, Vec<_>) =
        res.vmas_per_pid.iter().partition(|(pid, _)| res.alive.contains(pid));
    let mut parts: Vec<String> = live
        .iter()
        .take(PIDS_LISTED)
        .map(|(pid, (end, peak))| format!("pid {}: {end} (peak {peak})", pid.0))
        .collect();
    if live.len() > PIDS_LISTED {
        let rest = &live[PIDS_LISTED..];
        let vmas: usize = rest.iter().map(|(_, (end, _))| end).sum();
        parts.push(format!("{} more live processes with {vmas} VMAs", rest.len()));
    }
    if !exited.is_empty() {
        let peak = exited.iter().map(|(_, (_, peak))| *peak).max().unwrap_or(0);
        parts.push(format!(
            "{} exited process{} (at most {peak} VMAs in one)",
            exited.len(),
            if exited.len() == 1 { "" } else { "es" }
        ));
    }
    if parts.is_empty() { "-".to_string() } else { parts.join(", ") }
}

/// What `--check` did, for stderr: how often the checker ran and what it checked.
pub fn check_summary(res: &crate::run::RunResult, sampled: bool) -> String {
    format!(
        "check: the invariant checker ran {} time{} over {} steps ({}) and found every invariant \
         held: VMAs sorted, aligned and disjoint; anon_vma chains, interval trees and counts; \
         page tables inside VMAs; mapcounts and refcounts; rmap reaching every mapping; \
         exclusive pages mapped once; migration entries; and page contents equal to the \
         reference model's",
        res.checks,
        if res.checks == 1 { "" } else { "s" },
        res.steps_run,
        if res.incremental_checks > 0 {
            format!(
                "sampled, and after the last step; and after every step on what the step touched, \
                 {} incremental checks",
                res.incremental_checks
            )
        } else if sampled {
            "sampled, and after the last step".to_string()
        } else {
            "after every step".to_string()
        }
    )
}

/// The report `anonmm run` prints after the maps: VMA counts per process, merges by
/// outcome and reason, and what the policy's relocations did and cost.
pub fn run_report(policy: &str, res: &crate::run::RunResult) -> String {
    let s = &res.stats;
    let p = &s.policy;
    let mut out = format!("== report (policy {policy}) ==\n");
    let _ = writeln!(out, "VMAs at the end: {}", vmas_at_end(res));
    let _ = writeln!(out, "VMAs of all processes, peak: {} ({} anonymous)", res.vmas_peak.0, res.vmas_peak.1);
    let refused = s.merge_refused.iter().filter(|&(_, &n)| n > 0);
    let _ = writeln!(
        out,
        "merges: {} attempted, {} done; refused: {}",
        s.merges_attempted,
        s.merges_done,
        named_counts(refused, " ", ", ")
    );
    let named = |m| named_counts(m, " ", ", ");
    let _ = writeln!(
        out,
        "relocations: {} attempted, {} done, {} undone, {} unneeded (plain merge); refused: {}; entries left: {}",
        p.relocations_attempted,
        p.relocations_done,
        p.relocations_undone,
        p.relocations_unneeded,
        named(&p.relocations_refused),
        named(&p.entries_skipped)
    );
    let _ = writeln!(
        out,
        "work: {} entries and {} folios walked, {} folios rewritten, {} folios and {} PMDs split, \
         {} pages copied ({} bytes), {} swap-ins, {} migrations waited, {} rmap lock holds, {} anon_vma adoptions; \
         mremap moved {} PTEs and {} PMDs; {} COW copies",
        p.entries_walked,
        p.folios_walked,
        p.folios_rewritten,
        p.folios_split,
        p.pmds_split,
        p.pages_copied,
        p.bytes_copied,
        p.swapins,
        p.migrations_waited,
        p.rmap_lock_holds,
        p.anon_vma_adoptions,
        s.ptes_moved,
        s.pmds_moved,
        s.cow_copies
    );
    out
}

/// `pid:VMAs` of the first live processes, then how many more and how many exited.
fn vmas_end_cell(r: &PolicyRow) -> String {
    const LISTED: usize = 8;
    let mut parts: Vec<String> = r.vmas_end.iter().take(LISTED).map(|(p, n)| format!("{p}:{n}")).collect();
    if r.vmas_end.len() > LISTED {
        parts.push(format!("+{} live", r.vmas_end.len() - LISTED));
    }
    if r.exited > 0 {
        parts.push(format!("({} exited)", r.exited));
    }
    parts.join(" ")
}

/// `anonmm compare`'s table (markdown when `md`).
pub fn render_rows(rows: &[PolicyRow], md: bool) -> String {
    let head = [
        "policy",
        "VMAs at end (per live pid)",
        "merges done/attempted",
        "relocations done/attempted",
        "undone",
        "refused",
        "entries left",
        "folios rewritten",
        "pages copied",
        "entries walked",
        "contents = kernel",
    ];
    let named = |m| named_counts(m, "=", " ");
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.policy.clone(),
                vmas_end_cell(r),
                format!("{}/{}", r.merges_done, r.merges_attempted),
                format!("{}/{}", r.work.relocations_done, r.work.relocations_attempted),
                r.work.relocations_undone.to_string(),
                named(&r.work.relocations_refused),
                named(&r.work.entries_skipped),
                r.work.folios_rewritten.to_string(),
                r.work.pages_copied.to_string(),
                r.work.entries_walked.to_string(),
                match &r.contents {
                    Ok(n) => format!("yes ({n} steps)"),
                    Err(e) => format!("NO: {e}"),
                },
            ]
        })
        .collect();
    let mut out = String::new();
    if md {
        out += &format!("| {} |\n|{}\n", head.join(" | "), "---|".repeat(head.len()));
        for c in &cells {
            out += &format!("| {} |\n", c.join(" | "));
        }
        return out;
    }
    let mut w: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for c in &cells {
        for (w, x) in w.iter_mut().zip(c) {
            *w = (*w).max(x.chars().count());
        }
    }
    let line = |xs: Vec<&str>| {
        let v: Vec<String> = xs.iter().zip(&w).map(|(x, w)| format!("{x:<w$}")).collect();
        v.join("  ").trim_end().to_string() + "\n"
    };
    out += &line(head.to_vec());
    for c in &cells {
        out += &line(c.iter().map(String::as_str).collect());
    }
    out
}
