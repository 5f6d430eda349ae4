//! `anonmm graph`: run a script up to one step and draw the reverse map there, with the
//! model's [`to_dot`] (`anonmm_model::graph`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use anonmm_model::graph::to_dot;

use crate::internal::{FolioView, InternalView, MappingName, differences};

use crate::run::{RunError, RunOptions, Runner};
use crate::script::Script;
use crate::types::Pid;

/// What to draw.
#[derive(Clone, Debug)]
pub struct GraphOptions {
    /// Stop after the step on this script line (default: the last step).
    pub at: Option<usize>,
    /// Only this process (default: every live process).
    pub pid: Option<Pid>,
    /// Folios drawn one by one per VMA; more are summarised.
    pub max_folios: usize,
    /// Which policy runs the script.
    pub policy: crate::policy::Policy,
    /// Which kernel the model is.
    pub kernel: crate::kernel::Kernel,
    /// Run as `replay` runs a trace (its world taken as given; `at` then takes every step
    /// up to the last one at or before that line, as `run --at` does).
    pub replay: bool,
}

impl Default for GraphOptions {
    fn default() -> Self {
        GraphOptions {
            at: None,
            pid: None,
            max_folios: 8,
            policy: crate::policy::Policy::Kernel,
            kernel: crate::kernel::Kernel::V6_18,
            replay: false,
        }
    }
}

/// Run `script` up to `opts.at` and draw the state there.
pub fn graph_script(script: &Script, opts: &GraphOptions) -> Result<String, RunError> {
    let bad = |line: usize, reason: String| RunError::BadInput { path: script.path.clone(), line, reason };
    if let Some(at) = opts.at
        && !opts.replay
        && !script.steps.iter().any(|s| s.line == at)
    {
        return Err(bad(at, format!("--at {at}: no call on that line")));
    }
    let ropts = RunOptions {
        policy: opts.policy,
        replay: opts.replay,
        last_view_only: true,
        config: crate::mm::Config { kernel: opts.kernel, ..Default::default() },
        ..Default::default()
    };
    let mut runner = Runner::new(script, &ropts)?;
    for step in &script.steps[..crate::explain::prefix_until(script, opts.at)] {
        runner.step_or_diverge(step, false)?;
    }
    if let Some(p) = opts.pid
        && !runner.sys.vm.procs.contains_key(&p)
    {
        return Err(bad(0, format!("--pid {}: no such live process at that step", p.0)));
    }
    Ok(to_dot(&runner.sys, opts.pid, opts.max_folios))
}

/// One side of `anonmm graph --from-oracle`: its cluster's title and every process's
/// internal state (renamed, [`crate::internal::rename`]) at the step drawn.
#[derive(Clone, Copy, Debug)]
pub struct Side<'a> {
    /// The cluster's title (`kernel 6.12 (VM)`, `model 6.12`).
    pub title: &'a str,
    /// Every process's internal state, by pid.
    pub procs: &'a BTreeMap<Pid, InternalView>,
}

/// An anon_vma as the VMAs that point at it show it: root, parent and, when a VMA points at
/// it (the module prints the counters of `vma->anon_vma` only), its counters.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct AvInfo {
    root: u64,
    parent: u64,
    counts: Option<(u64, u64, u64)>,
}

/// A folio as the pages show it: neither side's view carries folio identities, so a folio is
/// a run of pages of one process with the same mapping and order, consecutive addresses and
/// indexes, at most `1 << order` long; the same folio mapped by several processes (after fork)
/// is one node, found by mapping, first index, order and length.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Debug)]
struct FolioInfo {
    mapping: MappingName,
    index: u64,
    order: u8,
    pages: u64,
    mapcounts: Vec<u64>,
    /// Where it is mapped: (pid, first address in each VMA that maps it).
    at: Vec<(Pid, u64)>,
}

/// What one side shows, gathered for drawing and for comparing with the other.
struct Gathered {
    avs: BTreeMap<u64, AvInfo>,
    folios: Vec<FolioInfo>,
    /// Each folio by where it is mapped: (pid, first address) → index in `folios`.
    at: BTreeMap<(Pid, u64), usize>,
}

impl Gathered {
    /// Whether the other side has this folio, identical.
    fn has(&self, f: &FolioInfo) -> bool {
        f.at.first().and_then(|a| self.at.get(a)).is_some_and(|&i| self.folios[i] == *f)
    }
}

fn gather(procs: &BTreeMap<Pid, InternalView>, pid: Option<Pid>) -> Gathered {
    let mut avs: BTreeMap<u64, AvInfo> = BTreeMap::new();
    let mut folios: Vec<FolioInfo> = Vec::new();
    let mut by_key: BTreeMap<(MappingName, u64, u8, u64), usize> = BTreeMap::new();
    for (&p, v) in procs.iter().filter(|(p, _)| pid.is_none_or(|q| q == **p)) {
        for m in &v.vmas {
            if let Some((a, r, par)) = m.anon_vma {
                let e = avs.entry(a).or_insert(AvInfo { root: r, parent: par, counts: None });
                // A VMA's own anon_vma: its root and parent are known (not a placeholder).
                (e.root, e.parent, e.counts) = (r, par, e.counts.or(m.counts));
                // A root or parent no VMA points at: its own parent is unknown (drawn as none).
                for x in [r, par] {
                    avs.entry(x).or_insert(AvInfo { root: r, parent: x, counts: None });
                }
            }
        }
        let mut runs: Vec<Vec<&FolioView>> = Vec::new();
        for f in v.folios.iter().filter(|f| f.mapping != MappingName::None) {
            if let Some(run) = runs.last_mut() {
                let prev = run[run.len() - 1];
                let first = run[0];
                if f.order > 0
                    && f.order == first.order
                    && f.mapping == first.mapping
                    && f.addr == prev.addr + crate::types::PAGE_SIZE
                    && f.index == prev.index + 1
                    && (run.len() as u64) < 1u64 << f.order
                {
                    run.push(f);
                    continue;
                }
            }
            runs.push(vec![f]);
        }
        // The VMA (its number) a page is in: a folio mapped across VMAs (split by mprotect)
        // is reached from each, at its first address there.
        let vma_of = |a: u64| v.vmas.partition_point(|m| m.start <= a);
        for run in runs {
            let mut at = vec![(p, run[0].addr)];
            for w in run.windows(2) {
                if vma_of(w[1].addr) != vma_of(w[0].addr) {
                    at.push((p, w[1].addr));
                }
            }
            let info = FolioInfo {
                mapping: run[0].mapping,
                index: run[0].index,
                order: run[0].order,
                pages: run.len() as u64,
                mapcounts: run.iter().map(|f| f.mapcount).collect(),
                at,
            };
            let key = (info.mapping, info.index, info.order, info.pages);
            match by_key.get(&key) {
                // The same folio (mapcounts are the folio's, the same from every mapper).
                Some(&g) if folios[g].mapcounts == info.mapcounts => folios[g].at.extend(info.at),
                _ => {
                    by_key.insert(key, folios.len());
                    folios.push(info);
                }
            }
        }
    }
    let at = folios.iter().enumerate().flat_map(|(i, f)| f.at.iter().map(move |&a| (a, i))).collect();
    Gathered { avs, folios, at }
}

const RED: &str = "color=red, penwidth=2, fontcolor=red";

fn draw_side(
    out: &mut String,
    prefix: &str,
    side: &Side<'_>,
    other: &Side<'_>,
    pid: Option<Pid>,
    max_folios: usize,
) {
    let mine = gather(side.procs, pid);
    let theirs = gather(other.procs, pid);
    let mut edges = String::new();
    let mut drawn: BTreeSet<usize> = BTreeSet::new();
    let _ = writeln!(
        out,
        "  subgraph cluster_{prefix} {{\n    label=\"{}\";\n    style=bold;\n    fontsize=14;",
        side.title
    );
    for (&p, v) in side.procs.iter().filter(|(p, _)| pid.is_none_or(|q| q == **p)) {
        let other_v = other.procs.get(&p);
        let _ = writeln!(
            out,
            "    subgraph cluster_{prefix}_pid{} {{\n      label=\"pid {}{}\";\n      style=rounded;{}",
            p.0,
            p.0,
            if other_v.is_none() { " (only here)" } else { "" },
            if other_v.is_none() { format!(" {RED};") } else { String::new() }
        );
        for (i, m) in v.vmas.iter().enumerate() {
            let same = other_v.is_some_and(|o| o.vmas.iter().any(|x| x == m));
            let vn = format!("{prefix}p{}v{i}", p.0);
            let _ = writeln!(
                out,
                "      {vn} [shape=box, style=filled, fillcolor=\"{}\", label=\"VMA [{:#x}, {:#x})\\npgoff {:#x} flags {:#x}\\nchains {}\"{}];",
                if same { "#dbe9f6" } else { "#f8d0d0" },
                m.start,
                m.end,
                m.pgoff,
                m.flags,
                m.chains,
                if same { String::new() } else { format!(", {RED}") }
            );
            if let Some((a, _, _)) = m.anon_vma {
                let _ = writeln!(edges, "    {vn} -> {prefix}av{a} [label=\"anon_vma\"];");
            }
            let mut mapped: Vec<(usize, u64)> = mine
                .folios
                .iter()
                .enumerate()
                .flat_map(|(fi, f)| {
                    f.at.iter()
                        .filter(|(q, a)| *q == p && *a >= m.start && *a < m.end)
                        .map(move |&(_, a)| (fi, a))
                })
                .collect();
            mapped.sort_by_key(|&(_, a)| a);
            for &(fi, a) in mapped.iter().take(max_folios) {
                drawn.insert(fi);
                let _ = writeln!(
                    edges,
                    "    {vn} -> {prefix}f{fi} [style=dotted, arrowhead=none, color=gray, constraint=false, label=\"{a:#x}\"];"
                );
            }
            if mapped.len() > max_folios {
                let rest = &mapped[max_folios..];
                let (lo, hi) = rest.iter().fold((u64::MAX, 0), |(lo, hi), &(fi, _)| {
                    (lo.min(mine.folios[fi].index), hi.max(mine.folios[fi].index))
                });
                let differ = rest.iter().any(|&(fi, _)| !theirs.has(&mine.folios[fi]));
                let sn = format!("{prefix}p{}more{i}", p.0);
                let _ = writeln!(
                    out,
                    "      {sn} [shape=note, label=\"{} more folios\\nindex {lo:#x}..{hi:#x}\"{}];",
                    rest.len(),
                    if differ { format!(", {RED}") } else { String::new() }
                );
                let _ = writeln!(
                    edges,
                    "    {vn} -> {sn} [style=dotted, arrowhead=none, color=gray, constraint=false];"
                );
            }
        }
        out.push_str("    }\n");
    }
    for (&n, a) in &mine.avs {
        let same = theirs.avs.get(&n) == Some(a);
        let counts = a
            .counts
            .map_or(String::new(), |(r, c, v)| format!("\\nrefcount {r} children {c} active VMAs {v}"));
        let _ = writeln!(
            out,
            "    {prefix}av{n} [shape=box, style=filled, fillcolor=\"{}\", label=\"anon_vma {n}{counts}\"{}];",
            if same { "#e3f1dc" } else { "#f8d0d0" },
            if same { String::new() } else { format!(", {RED}") }
        );
        if a.parent != n {
            let _ = writeln!(
                edges,
                "    {prefix}av{n} -> {prefix}av{} [style=dashed, label=\"parent\"];",
                a.parent
            );
        }
        if a.root != n && a.root != a.parent && mine.avs.contains_key(&a.root) {
            let _ =
                writeln!(edges, "    {prefix}av{n} -> {prefix}av{} [style=dotted, label=\"root\"];", a.root);
        }
    }
    let mut named = 0;
    for (fi, f) in mine.folios.iter().enumerate() {
        // Only the folios some VMA's edge reaches are drawn (the rest are summarised).
        if !drawn.contains(&fi) {
            continue;
        }
        named += 1;
        let same = theirs.has(f);
        let (lo, hi) = f.mapcounts.iter().fold((u64::MAX, 0), |(lo, hi), &m| (lo.min(m), hi.max(m)));
        let mapcount = if lo == hi { lo.to_string() } else { format!("{lo}..{hi}") };
        let size = if f.order > 0 {
            format!(" ({} KiB, {} mapped)", 4u64 << f.order, f.pages)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "    {prefix}f{fi} [shape=ellipse, style=filled, fillcolor=\"{}\", label=\"folio {named}{size}\\nindex {:#x}\\nmapcount {mapcount}\"{}];",
            if same { "#fdf2d0" } else { "#f8d0d0" },
            f.index,
            if same { String::new() } else { format!(", {RED}") }
        );
        match f.mapping {
            MappingName::Anon(a) => {
                let _ = writeln!(edges, "    {prefix}f{fi} -> {prefix}av{a} [label=\"mapping\"];");
            }
            MappingName::File(n) => {
                let _ = writeln!(out, "    {prefix}file{n} [shape=folder, label=\"file {n}\"];");
                let _ = writeln!(edges, "    {prefix}f{fi} -> {prefix}file{n} [label=\"mapping\"];");
            }
            MappingName::Other | MappingName::None => {}
        }
    }
    out.push_str(&edges);
    out.push_str("  }\n");
}

/// `anonmm graph --from-oracle`: the kernel's rmap picture beside the model's, as one DOT
/// with a cluster each. Both sides are drawn from the internal views (the kernel's read by
/// the `anonmm_inspect` module): VMA → anon_vma (its chains counted in the VMA), anon_vma →
/// parent (and → root), folio → anon_vma by `mapping`, VMA ··· folio at each address.
/// Names are first-seen on each side, so they match where the two agree; what one side has
/// and the other has not the same of (a VMA, an anon_vma with its root, parent and counters,
/// a folio with its index, mapping, mapcounts and addresses) is drawn red.
pub fn compare_dot(kernel: &Side<'_>, model: &Side<'_>, pid: Option<Pid>, max_folios: usize) -> String {
    let pids: BTreeSet<Pid> = kernel
        .procs
        .keys()
        .chain(model.procs.keys())
        .copied()
        .filter(|p| pid.is_none_or(|q| q == *p))
        .collect();
    let differing: usize = pids
        .iter()
        .map(|p| {
            let empty = InternalView::default();
            let k = kernel.procs.get(p).unwrap_or(&empty);
            let m = model.procs.get(p).unwrap_or(&empty);
            differences(m, k).len() + usize::from(kernel.procs.contains_key(p) != model.procs.contains_key(p))
        })
        .sum();
    let mut out = String::from(
        "digraph rmap {\n  rankdir=BT;\n  node [fontname=\"monospace\", fontsize=10];\n  edge [fontsize=9];\n",
    );
    let _ = writeln!(
        out,
        "  labelloc=t;\n  label=\"{}\";",
        if differing == 0 {
            "kernel and model agree".to_string()
        } else {
            format!("{differing} difference{} (red)", if differing == 1 { "" } else { "s" })
        }
    );
    draw_side(&mut out, "k", kernel, model, pid, max_folios);
    draw_side(&mut out, "m", model, kernel, pid, max_folios);
    out.push_str("}\n");
    out
}
