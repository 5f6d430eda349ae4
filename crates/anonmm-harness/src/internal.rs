//! The kernel's internal anonymous-memory state of a process, as `--internal` shows and the
//! VM oracle compares it: each VMA's `vm_pgoff`, `vm_flags`, anon_vma (its root, parent and
//! counters) and number of anon_vma_chains, and each present page's folio (`index`,
//! `mapping`, order, mapcount). The kernel side is read by the `anonmm_inspect` module in the
//! VM's guest (`oracle/kmod/`, see docs/internal.md); the model side by [`model_view`].
//!
//! Identities (anon_vmas, files) are pointers on the kernel's side and arena ids on the
//! model's; both are renamed in first-seen order within a step ([`Namer`]): first every VMA's
//! anon_vma, root and parent (processes by pid, VMAs by address), then the folios' mappings.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub use crate::inspect::{
    RawAnonVma, RawFolioPage, RawInternal, RawMapping, RawVma, compared_flags, model_view,
};

/// A VMA after renaming.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct VmaView {
    /// `vm_start`.
    pub start: u64,
    /// `vm_end`.
    pub end: u64,
    /// `vm_pgoff`.
    pub pgoff: u64,
    /// `vm_flags` masked to [`compared_flags`].
    pub flags: u64,
    /// The anon_vma's name, and those of its root and parent.
    pub anon_vma: Option<(u64, u64, u64)>,
    /// `refcount`, `num_children`, `num_active_vmas` of the anon_vma.
    pub counts: Option<(u64, u64, u64)>,
    /// Entries on `vma->anon_vma_chain`.
    pub chains: u64,
}

/// A folio's mapping after renaming.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum MappingName {
    /// NULL (the zero pages).
    None,
    /// An anon_vma, by name.
    Anon(u64),
    /// A file, by name (its own numbering, from 1).
    File(u64),
    /// KSM or movable.
    Other,
}

/// A present page's folio after renaming.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct FolioView {
    /// The page's virtual address.
    pub addr: u64,
    /// See [`RawFolioPage::index`].
    pub index: u64,
    /// The mapping, renamed.
    pub mapping: MappingName,
    /// `folio_order`.
    pub order: u8,
    /// See [`RawFolioPage::mapcount`].
    pub mapcount: u64,
}

/// One process's internal state after renaming: what is printed and compared.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct InternalView {
    /// The window's VMAs by address.
    pub vmas: Vec<VmaView>,
    /// The window's present pages by address.
    pub folios: Vec<FolioView>,
}

/// First-seen names of one step: anon_vmas from 1, files from 1.
#[derive(Default)]
pub struct Namer {
    anon: std::collections::HashMap<u64, u64>,
    files: std::collections::HashMap<u64, u64>,
}

impl Namer {
    fn anon(&mut self, id: u64) -> u64 {
        let n = self.anon.len() as u64 + 1;
        *self.anon.entry(id).or_insert(n)
    }
    fn file(&mut self, id: u64) -> u64 {
        let n = self.files.len() as u64 + 1;
        *self.files.entry(id).or_insert(n)
    }
}

/// Rename the internal state of every process of one step (in pid order).
pub fn rename<'a>(procs: impl Iterator<Item = &'a RawInternal> + Clone) -> Vec<InternalView> {
    let mut n = Namer::default();
    let vmas: Vec<Vec<VmaView>> = procs
        .clone()
        .map(|p| {
            p.vmas
                .iter()
                .map(|v| VmaView {
                    start: v.start,
                    end: v.end,
                    pgoff: v.pgoff,
                    flags: v.flags & compared_flags(),
                    anon_vma: v.anon_vma.map(|a| (n.anon(a.id), n.anon(a.root), n.anon(a.parent))),
                    counts: v.anon_vma.map(|a| (a.refcount, a.num_children, a.num_active_vmas)),
                    chains: v.chains,
                })
                .collect()
        })
        .collect();
    procs
        .zip(vmas)
        .map(|(p, vmas)| InternalView {
            vmas,
            folios: p
                .pages
                .iter()
                .map(|g| FolioView {
                    addr: g.addr,
                    index: g.index,
                    mapping: match g.mapping {
                        RawMapping::None => MappingName::None,
                        RawMapping::Anon(a) => MappingName::Anon(n.anon(a)),
                        RawMapping::File(f) => MappingName::File(n.file(f)),
                        RawMapping::Other => MappingName::Other,
                    },
                    order: g.order,
                    mapcount: g.mapcount,
                })
                .collect(),
        })
        .collect()
}

/// The JSON of one process's internal state: `vmas` (objects) and `folios`
/// (`[address, index, mapping, order, mapcount]`; `mapping` is an anon_vma's name, `"file N"`
/// for a file, null for the zero pages).
pub fn to_json(v: &InternalView) -> (Value, Value) {
    let hex = |x: u64| format!("{x:#x}");
    let vmas = v
        .vmas
        .iter()
        .map(|m| {
            let mut o = json!({
                "start": hex(m.start),
                "end": hex(m.end),
                "pgoff": hex(m.pgoff),
                "flags": hex(m.flags),
                "anon_vma": m.anon_vma.map(|a| a.0),
                "anon_vma_root": m.anon_vma.map(|a| a.1),
                "anon_vma_parent": m.anon_vma.map(|a| a.2),
                "chains": m.chains,
            });
            if let Some((r, c, a)) = m.counts {
                o["refcount"] = json!(r);
                o["num_children"] = json!(c);
                o["num_active_vmas"] = json!(a);
            }
            o
        })
        .collect();
    let folios = v
        .folios
        .iter()
        .map(|f| json!([hex(f.addr), hex(f.index), mapping_json(f.mapping), f.order, f.mapcount]))
        .collect();
    (Value::Array(vmas), Value::Array(folios))
}

fn mapping_json(m: MappingName) -> Value {
    match m {
        MappingName::None => Value::Null,
        MappingName::Anon(n) => json!(n),
        MappingName::File(n) => json!(format!("file {n}")),
        MappingName::Other => json!("other"),
    }
}

/// Field-by-field differences of two processes' internal states (empty when equal), one
/// line each, for `oracle diff`.
pub fn differences(model: &InternalView, kernel: &InternalView) -> Vec<String> {
    let mut out = Vec::new();
    let fmt_vma = |v: &VmaView| {
        let av = v.anon_vma.map_or("anon_vma -".to_string(), |(a, r, p)| {
            let (rc, c, n) = v.counts.unwrap_or_default();
            format!("anon_vma {a} root {r} parent {p} refcount {rc} num_children {c} num_active_vmas {n}")
        });
        format!(
            "{:x}-{:x} pgoff {:#x} flags {:#x} {av} chains {}",
            v.start, v.end, v.pgoff, v.flags, v.chains
        )
    };
    let n = model.vmas.len().max(kernel.vmas.len());
    for i in 0..n {
        let (m, k) = (model.vmas.get(i), kernel.vmas.get(i));
        if m != k {
            out.push(format!(
                "vma {i}: model {} | kernel {}",
                m.map_or("-".into(), fmt_vma),
                k.map_or("-".into(), fmt_vma)
            ));
        }
    }
    let fmt_folio = |f: &FolioView| {
        format!(
            "index {:#x} mapping {} order {} mapcount {}",
            f.index,
            mapping_json(f.mapping),
            f.order,
            f.mapcount
        )
    };
    let mut mi = model.folios.iter().peekable();
    let mut ki = kernel.folios.iter().peekable();
    loop {
        match (mi.peek(), ki.peek()) {
            (None, None) => break,
            (Some(m), Some(k)) if m.addr == k.addr => {
                if m != k {
                    out.push(format!("{:#x}: model {} | kernel {}", m.addr, fmt_folio(m), fmt_folio(k)));
                }
                mi.next();
                ki.next();
            }
            (Some(m), k) if k.is_none_or(|k| m.addr < k.addr) => {
                out.push(format!("{:#x}: model {} | kernel -", m.addr, fmt_folio(m)));
                mi.next();
            }
            (_, Some(k)) => {
                out.push(format!("{:#x}: model - | kernel {}", k.addr, fmt_folio(k)));
                ki.next();
            }
            (Some(_), None) => unreachable!("handled above"),
        }
    }
    out
}

/// Parse what `/proc/anonmm_inspect` prints (see `oracle/kmod/anonmm_inspect.c`).
pub fn parse_kernel(text: &str) -> Result<RawInternal, String> {
    let mut out = RawInternal::default();
    for (i, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let bad = || format!("anonmm_inspect line {}: cannot parse `{line}`", i + 1);
        let h = |k: usize| f.get(k).and_then(|s| u64::from_str_radix(s, 16).ok()).ok_or_else(bad);
        match f.first().copied() {
            Some("vma") => out.vmas.push(RawVma {
                start: h(1)?,
                end: h(2)?,
                pgoff: h(3)?,
                flags: h(4)? & compared_flags(),
                anon_vma: None,
                chains: h(6)?,
            }),
            Some("av") => {
                let v = out.vmas.last_mut().ok_or_else(bad)?;
                v.anon_vma = Some(RawAnonVma {
                    id: h(1)?,
                    root: h(2)?,
                    parent: h(3)?,
                    refcount: h(4)?,
                    num_children: h(5)?,
                    num_active_vmas: h(6)?,
                });
            }
            Some("pg") => {
                let ptr = h(3)?;
                let mapping = match f.get(4).copied() {
                    Some("n") => RawMapping::None,
                    Some("a") => RawMapping::Anon(ptr),
                    Some("f") => RawMapping::File(ptr),
                    Some("k") => RawMapping::Other,
                    _ => return Err(bad()),
                };
                out.pages.push(RawFolioPage {
                    addr: h(1)?,
                    index: h(2)?,
                    mapping,
                    order: h(5)? as u8,
                    mapcount: h(6)?,
                });
            }
            None => {}
            _ => return Err(bad()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_text_parses_and_renames_in_first_seen_order() {
        let text = "vma 100000000000 100000002000 100000000 100073 ffff8880aa00 1\n\
                    av ffff8880aa00 ffff8880aa00 ffff8880aa00 1 1 1\n\
                    pg 100000000000 100000000 ffff8880aa00 a 0 1\n\
                    pg 100000001000 0 0 n 0 0\n\
                    vma 100000004000 100000005000 3 8000071 0 0\n";
        let raw = parse_kernel(text).expect("parses");
        assert_eq!(raw.vmas.len(), 2);
        assert_eq!(raw.vmas[1].anon_vma, None);
        let child = RawInternal {
            vmas: vec![RawVma {
                anon_vma: Some(RawAnonVma {
                    id: 7,
                    root: 0xffff8880aa00,
                    parent: 0xffff8880aa00,
                    ..raw.vmas[0].anon_vma.unwrap()
                }),
                ..raw.vmas[0]
            }],
            pages: vec![RawFolioPage { mapping: RawMapping::Anon(0xffff8880aa00), ..raw.pages[0] }],
        };
        let v = rename([&raw, &child].into_iter());
        assert_eq!(v[0].vmas[0].anon_vma, Some((1, 1, 1)));
        assert_eq!(v[1].vmas[0].anon_vma, Some((2, 1, 1)));
        assert_eq!(v[1].folios[0].mapping, MappingName::Anon(1));
        assert_eq!(v[0].folios[1].mapping, MappingName::None);
        assert!(differences(&v[0], &v[0]).is_empty());
        let d = differences(&v[0], &v[1]);
        assert!(d[0].starts_with("vma 0: model 100000000000-100000002000"), "{d:?}");
        assert!(d.iter().any(|l| l.starts_with("0x100000001000: model index 0x0 mapping null")), "{d:?}");
        assert!(parse_kernel("vma 1 2\n").is_err());
    }
}
