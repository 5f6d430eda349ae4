//! `anonmm graph`: the reverse-map structures of a [`System`] as Graphviz DOT, drawn
//! the way kernel developers draw them (VMA ← anon_vma_chain ← anon_vma ← page, as in
//! ../shared/seeds/000): VMAs with their range and pgoff grouped by process, their
//! anon_vma_chains, anon_vmas with parent and root links, and anonymous folios with `index`
//! and `mapping`. Large states are summarised: past a limit, a VMA's folios become one node.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use crate::folio::{FolioId, HUGE_ZERO_FOLIO, Mapping, ZERO_FOLIO};
use crate::mm::System;
use crate::pagetable::Pte;
use crate::rmap::AnonVmaId;
use crate::types::{PAGE_SHIFT, Pid};
use crate::vma::VmaId;

/// The DOT text of the reverse map of `pid` (or of every process).
pub fn to_dot(sys: &System, pid: Option<Pid>, max_folios: usize) -> String {
    let mut out = String::from(
        "digraph rmap {\n  rankdir=BT;\n  node [fontname=\"monospace\", fontsize=10];\n  edge [fontsize=9];\n",
    );
    let mut anon_vmas: BTreeSet<AnonVmaId> = BTreeSet::new();
    let mut folios: BTreeMap<FolioId, ()> = BTreeMap::new();
    let mut edges = String::new();
    for (&p, proc_) in &sys.vm.procs {
        if pid.is_some_and(|q| q != p) {
            continue;
        }
        let mm = proc_.mm;
        let _ =
            writeln!(out, "  subgraph cluster_pid{} {{\n    label=\"pid {}\";\n    style=rounded;", p.0, p.0);
        for e in sys.vm.mms[mm].vmas.values() {
            let v = &sys.vm.vmas[e.id];
            if v.special.is_some() {
                continue;
            }
            let vn = vma_node(e.id);
            let line = sys.maps_line(mm, e.id);
            let perms = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let _ = writeln!(
                out,
                "    {vn} [shape=box, style=filled, fillcolor=\"#dbe9f6\", label=\"VMA [{:#x}, {:#x})\\n{perms} pgoff {:#x}\"];",
                v.start.0, v.end.0, v.pgoff.0
            );
            for (i, &avc) in v.chain.iter().enumerate() {
                let a = &sys.rmap.avcs[avc];
                let an = format!("avc{}", avc.0);
                let _ = writeln!(out, "    {an} [shape=box, style=rounded, label=\"avc\"];");
                let _ = writeln!(edges, "  {an} -> {vn};");
                let _ = writeln!(
                    edges,
                    "  {} -> {an}{};",
                    av_node(a.anon_vma),
                    if i > 0 { " [style=dashed]" } else { "" }
                );
                anon_vmas.insert(a.anon_vma);
            }
            // The anonymous folios this VMA maps, by address.
            let mut mine: Vec<(u64, FolioId)> = Vec::new();
            let mut seen = BTreeSet::new();
            for (h, f, _) in sys.vm.mms[mm].pt.huge_in(v.start, v.end) {
                if f != HUGE_ZERO_FOLIO && seen.insert(f) {
                    mine.push((h.0, f));
                }
            }
            for (a, pte) in sys.vm.mms[mm].pt.ptes_in(v.start, v.end) {
                if let Pte::Present { folio, .. } = pte
                    && folio != ZERO_FOLIO
                    && sys.mem.folios[folio].is_anon()
                    && seen.insert(folio)
                {
                    mine.push((a.0, folio));
                }
            }
            mine.sort();
            for &(a, f) in mine.iter().take(max_folios) {
                folios.insert(f, ());
                let _ = writeln!(
                    edges,
                    "  {vn} -> {} [style=dotted, arrowhead=none, color=gray, constraint=false, label=\"{a:#x}\"];",
                    folio_node(f)
                );
            }
            if mine.len() > max_folios {
                let rest = &mine[max_folios..];
                let (lo, hi) = rest.iter().fold((u64::MAX, 0), |(lo, hi), &(_, f)| {
                    let i = sys.mem.folios[f].index.0;
                    (lo.min(i), hi.max(i))
                });
                let sn = format!("more{}", e.id.0);
                let _ = writeln!(
                    out,
                    "    {sn} [shape=note, label=\"{} more folios\\nindex {lo:#x}..{hi:#x}\"];",
                    rest.len()
                );
                let _ = writeln!(
                    edges,
                    "  {vn} -> {sn} [style=dotted, arrowhead=none, color=gray, constraint=false];"
                );
                for &(_, f) in rest {
                    if let Mapping::Anon(av) = sys.mem.folios[f].mapping {
                        anon_vmas.insert(av);
                    }
                }
            }
        }
        out.push_str("  }\n");
    }
    for &f in folios.keys() {
        let fo = &sys.mem.folios[f];
        let pages = fo.nr_pages();
        let mapcount: u64 = fo.total_mapcount();
        let _ = writeln!(
            out,
            "  {} [shape=ellipse, style=filled, fillcolor=\"#fdf2d0\", label=\"folio {}{}\\nindex {:#x}\\nmapcount {mapcount}\"];",
            folio_node(f),
            f.0,
            if pages > 1 { format!(" ({} KiB)", pages << (PAGE_SHIFT - 10)) } else { String::new() },
            fo.index.0
        );
        if let Mapping::Anon(av) = fo.mapping {
            anon_vmas.insert(av);
            let _ = writeln!(edges, "  {} -> {} [label=\"mapping\"];", folio_node(f), av_node(av));
        }
    }
    // Parents and roots (and the anon_vmas they lead to) are drawn too.
    let mut todo: Vec<AnonVmaId> = anon_vmas.iter().copied().collect();
    while let Some(av) = todo.pop() {
        let a = &sys.rmap.anon_vmas[av];
        for x in [a.parent, a.root] {
            if anon_vmas.insert(x) {
                todo.push(x);
            }
        }
    }
    for &av in &anon_vmas {
        let a = &sys.rmap.anon_vmas[av];
        let _ = writeln!(
            out,
            "  {} [shape=box, style=filled, fillcolor=\"#e3f1dc\", label=\"anon_vma {}\\nchildren {} active VMAs {}\"];",
            av_node(av),
            av.0,
            a.num_children,
            a.num_active_vmas
        );
        if a.parent != av {
            let _ = writeln!(
                edges,
                "  {} -> {} [style=dashed, label=\"parent\"];",
                av_node(av),
                av_node(a.parent)
            );
        }
        if a.root != av && a.root != a.parent {
            let _ =
                writeln!(edges, "  {} -> {} [style=dotted, label=\"root\"];", av_node(av), av_node(a.root));
        }
    }
    out.push_str(&edges);
    out.push_str("}\n");
    out
}

fn vma_node(v: VmaId) -> String {
    format!("vma{}", v.0)
}

fn av_node(a: AnonVmaId) -> String {
    format!("av{}", a.0)
}

fn folio_node(f: FolioId) -> String {
    format!("folio{}", f.0)
}
