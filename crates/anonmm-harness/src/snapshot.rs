//! What a run shows after each step, in one shape for the model and for the kernel oracle,
//! so that the two can be printed by the same code and compared field by field.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::{Value, json};

use crate::types::Pid;

pub use anonmm_model::procfs::{RawPage, RawProc, RawPte};

/// A page's stable name within one step: 0 is the zero page, then 1, 2, … in first-seen order
/// (processes by pid, pages by address); `Swap` for a swap entry, `Migration` for a
/// migration entry.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PageName {
    /// A page by number: 0 is the zero page, the rest in first-seen order.
    Page(u64),
    /// A swap entry (serialized as `"swap"`).
    Swap,
    /// A migration entry (serialized as `"migration"`).
    Migration,
    /// A guard marker (serialized as `"guard"`).
    Guard,
}

impl Serialize for PageName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PageName::Page(n) => s.serialize_u64(*n),
            PageName::Swap => s.serialize_str("swap"),
            PageName::Migration => s.serialize_str("migration"),
            PageName::Guard => s.serialize_str("guard"),
        }
    }
}

/// One present (or swap or migration) PTE after renaming: a [`RawPte`] with its page named.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PageView {
    /// The page's virtual address.
    pub addr: u64,
    /// The page's stable name within the step.
    pub page: PageName,
    /// `/proc/pid/pagemap` bit 56 (PM_MMAP_EXCLUSIVE).
    pub exclusive: bool,
    /// The tag stored in the page by the last write touch (0 if never written).
    pub tag: u64,
}

/// One process after a step, with its pages renamed: what is printed and compared.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcView {
    /// `/proc/pid/maps` lines, exactly as the kernel formats them (no trailing newline).
    pub maps: Vec<String>,
    /// Every present, swap or migration PTE in ascending address order.
    pub pages: Vec<PageView>,
    /// `/proc/pid/smaps` entries, when asked for (`--smaps`); empty otherwise.
    pub smaps: Vec<crate::smaps::Smaps>,
    /// The internal state, renamed (`--internal`): see [`crate::internal`].
    pub internal: Option<crate::internal::InternalView>,
}

/// The state of every live process after one step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepView {
    /// The step's 1-based script line.
    pub line: usize,
    /// The process that made the call.
    pub pid: Pid,
    /// The call as written in the script.
    pub call: String,
    /// strace-formatted result: `= 0x…`, `= 0`, `= -1 ENOMEM (Cannot allocate memory)`, `= ?`.
    pub result: String,
    /// Every live process after the call, by pid.
    pub procs: BTreeMap<Pid, ProcView>,
}

/// Rename raw pages of one step to stable names.
pub fn rename(procs: BTreeMap<Pid, RawProc>) -> BTreeMap<Pid, ProcView> {
    // Anon_vmas and files are named across all processes of the step, like pages.
    let mut internal =
        crate::internal::rename(procs.values().filter_map(|p| p.internal.as_ref())).into_iter();
    let mut names: HashMap<RawPage, u64> = HashMap::new();
    let mut next = 1u64;
    procs
        .into_iter()
        .map(|(pid, p)| {
            let pages = p
                .ptes
                .iter()
                .map(|pte| {
                    let page = match pte.page {
                        RawPage::Zero => PageName::Page(0),
                        RawPage::Swap => PageName::Swap,
                        RawPage::Migration => PageName::Migration,
                        RawPage::Guard => PageName::Guard,
                        raw => PageName::Page(*names.entry(raw).or_insert_with(|| {
                            next += 1;
                            next - 1
                        })),
                    };
                    PageView { addr: pte.addr, page, exclusive: pte.exclusive, tag: pte.tag }
                })
                .collect();
            let internal = p.internal.as_ref().and_then(|_| internal.next());
            (pid, ProcView { maps: p.maps, pages, smaps: p.smaps, internal })
        })
        .collect()
}

/// Text output of `run`: `== pid N ==` and the maps lines of every live process.
pub fn format_maps_text(procs: &BTreeMap<Pid, ProcView>) -> String {
    let mut out = String::new();
    for (pid, p) in procs {
        out.push_str(&format!("== pid {} ==\n", pid.0));
        for l in &p.maps {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

/// Text output of `run --smaps`: `== pid N ==`, the maps lines, then `-- smaps --` and every
/// smaps entry of every live process.
pub fn format_smaps_text(procs: &BTreeMap<Pid, ProcView>) -> String {
    let mut out = format_maps_text(procs);
    for (pid, p) in procs {
        out.push_str(&format!("== pid {} smaps ==\n", pid.0));
        for e in &p.smaps {
            out.push_str(&e.format());
        }
    }
    out
}

/// The tag a write touch stores in the page at `addr` during the step on script line `line`.
/// Never 0, so a written page is told apart from a zero-filled one.
pub fn touch_tag(line: usize, addr: u64) -> u64 {
    ((line as u64) << 36) | ((addr >> 12) & ((1 << 36) - 1))
}

/// The `--json` output of `run` (and of the oracle): `{"steps": [...]}`, one element per call
/// line (see [`step_to_json`]).
pub fn steps_to_json(steps: &[StepView]) -> Value {
    json!({ "steps": steps.iter().map(step_to_json).collect::<Vec<_>>() })
}

/// One element of `steps`: the call, its result, and every live process's maps, pages
/// `[address, page, exclusive]`, nonzero tags `[address, tag]` and, when captured, smaps
/// entries; addresses and tags as hex strings.
pub fn step_to_json(s: &StepView) -> Value {
    let procs: serde_json::Map<String, Value> =
        s.procs.iter().map(|(pid, p)| (pid.0.to_string(), Value::Object(proc_to_json(p)))).collect();
    step_json(s, procs)
}

/// A step's JSON object around its processes (whole, or only what changed).
fn step_json(s: &StepView, procs: serde_json::Map<String, Value>) -> Value {
    json!({
        "line": s.line,
        "pid": s.pid.0,
        "call": s.call,
        "result": s.result,
        "procs": procs,
    })
}

/// [`step_to_json`] written straight into `out`, byte for byte the same text as the value's
/// compact form, without building the value: a long run's views are mostly pages, and
/// building a JSON value for each page was most of `run --json`'s time.
pub fn write_step_json(out: &mut String, s: &StepView) {
    use std::fmt::Write;
    let string = |out: &mut String, x: &str| {
        out.push_str(&serde_json::to_string(x).unwrap_or_default());
    };
    out.push_str("{\"call\":");
    string(out, &s.call);
    let _ = write!(out, ",\"line\":{},\"pid\":{},\"procs\":{{", s.line, s.pid.0);
    for (i, (pid, p)) in s.procs.iter().enumerate() {
        // Keys in sorted order, as serde_json's map keeps them in `proc_to_json`.
        let internal = p.internal.as_ref().map(crate::internal::to_json);
        let _ = write!(out, "{}\"{}\":{{", if i == 0 { "" } else { "," }, pid.0);
        if let Some((_, folios)) = &internal {
            let _ = write!(out, "\"folios\":{folios},");
        }
        out.push_str("\"maps\":[");
        for (j, m) in p.maps.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            string(out, m);
        }
        out.push_str("],\"pages\":[");
        for (j, pg) in p.pages.iter().enumerate() {
            let page = match pg.page {
                PageName::Page(n) => n.to_string(),
                PageName::Swap => "\"swap\"".to_string(),
                PageName::Migration => "\"migration\"".to_string(),
                PageName::Guard => "\"guard\"".to_string(),
            };
            let _ = write!(
                out,
                "{}[\"{:#x}\",{page},{}]",
                if j == 0 { "" } else { "," },
                pg.addr,
                u8::from(pg.exclusive)
            );
        }
        out.push(']');
        if !p.smaps.is_empty() {
            let smaps: Vec<Value> = p.smaps.iter().map(smaps_to_json).collect();
            let _ = write!(out, ",\"smaps\":{}", Value::Array(smaps));
        }
        out.push_str(",\"tags\":[");
        for (j, pg) in p.pages.iter().filter(|pg| pg.tag != 0).enumerate() {
            let _ = write!(out, "{}[\"{:#x}\",\"{:#x}\"]", if j == 0 { "" } else { "," }, pg.addr, pg.tag);
        }
        out.push(']');
        if let Some((vmas, _)) = &internal {
            let _ = write!(out, ",\"vmas\":{vmas}");
        }
        out.push('}');
    }
    out.push_str("},\"result\":");
    string(out, &s.result);
    out.push('}');
}

/// One element of `steps` in the `--changes` form: like [`step_to_json`], but a process
/// appears only if it changed since `prev` (the previous step), with only the fields that
/// changed (`maps`, `pages`, `tags`, `smaps`); a process gone since `prev` is `null`.
/// Page names are per step, so `pages` changes whenever a page appears before another.
pub fn step_changes_json(prev: Option<&StepView>, s: &StepView) -> Value {
    let mut procs = serde_json::Map::new();
    for (pid, p) in &s.procs {
        let old = prev.and_then(|v| v.procs.get(pid));
        if old == Some(p) {
            continue;
        }
        let mut now = proc_to_json(p);
        if let Some(old) = old {
            let old = proc_to_json(old);
            now.retain(|k, v| old.get(k) != Some(v));
        }
        procs.insert(pid.0.to_string(), Value::Object(now));
    }
    if let Some(prev) = prev {
        for pid in prev.procs.keys().filter(|p| !s.procs.contains_key(p)) {
            procs.insert(pid.0.to_string(), Value::Null);
        }
    }
    step_json(s, procs)
}

fn proc_to_json(p: &ProcView) -> serde_json::Map<String, Value> {
    let pages: Vec<Value> = p
        .pages
        .iter()
        .map(|pg| json!([format!("{:#x}", pg.addr), pg.page, u8::from(pg.exclusive)]))
        .collect();
    let tags: Vec<Value> = p
        .pages
        .iter()
        .filter(|pg| pg.tag != 0)
        .map(|pg| json!([format!("{:#x}", pg.addr), format!("{:#x}", pg.tag)]))
        .collect();
    let mut m = serde_json::Map::new();
    m.insert("maps".into(), json!(p.maps));
    m.insert("pages".into(), Value::Array(pages));
    m.insert("tags".into(), Value::Array(tags));
    if !p.smaps.is_empty() {
        m.insert("smaps".into(), Value::Array(p.smaps.iter().map(smaps_to_json).collect()));
    }
    if let Some(i) = &p.internal {
        let (vmas, folios) = crate::internal::to_json(i);
        m.insert("vmas".into(), vmas);
        m.insert("folios".into(), folios);
    }
    m
}

/// One smaps entry: `vma` (`start-end`, hex), every field of [`crate::smaps::FIELDS`] in kB,
/// `THPeligible`, `ProtectionKey` when the CPU has pkeys, and `VmFlags`.
fn smaps_to_json(e: &crate::smaps::Smaps) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("vma".into(), json!(format!("{:x}-{:x}", e.start, e.end)));
    for (name, v) in crate::smaps::FIELDS.iter().zip(e.kb) {
        m.insert((*name).into(), json!(v));
    }
    m.insert("THPeligible".into(), json!(e.thp_eligible));
    if let Some(k) = e.protection_key {
        m.insert("ProtectionKey".into(), json!(k));
    }
    m.insert("VmFlags".into(), json!(e.vm_flags));
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape() {
        let proc1 = ProcView {
            maps: vec!["200000000000-200000002000 rw-p 00000000 00:00 0".to_string()],
            pages: vec![
                PageView {
                    addr: 0x2000_0000_0000,
                    page: PageName::Page(1),
                    exclusive: true,
                    tag: 0x5_0200_0000,
                },
                PageView { addr: 0x2000_0000_1000, page: PageName::Swap, exclusive: false, tag: 0 },
            ],
            smaps: Vec::new(),
            internal: None,
        };
        let proc2 =
            ProcView { maps: vec!["a\"b".to_string()], pages: Vec::new(), smaps: Vec::new(), internal: None };
        let step = StepView {
            line: 3,
            pid: Pid(1),
            call: "touch(0x200000000000, 8192, \"w\")".to_string(),
            result: "= 0".to_string(),
            procs: BTreeMap::from([(Pid(1), proc1), (Pid(2), proc2)]),
        };
        let want = json!({"steps": [{
            "line": 3,
            "pid": 1,
            "call": "touch(0x200000000000, 8192, \"w\")",
            "result": "= 0",
            "procs": {"1": {
                "maps": ["200000000000-200000002000 rw-p 00000000 00:00 0"],
                "pages": [["0x200000000000", 1, 1], ["0x200000001000", "swap", 0]],
                "tags": [["0x200000000000", "0x502000000"]],
            }, "2": {"maps": ["a\"b"], "pages": [], "tags": []}},
        }]});
        let mut text = String::new();
        write_step_json(&mut text, &step);
        assert_eq!(text, want["steps"][0].to_string());
        assert_eq!(steps_to_json(std::slice::from_ref(&step)), want);

        // With the internal state: the same text both ways, `folios` and `vmas` included.
        let mut step = step;
        let internal = crate::internal::InternalView {
            vmas: vec![crate::internal::VmaView {
                start: 0x2000_0000_0000,
                end: 0x2000_0000_2000,
                pgoff: 0x2_0000_0000,
                flags: 0x73,
                anon_vma: Some((1, 1, 1)),
                counts: Some((1, 1, 1)),
                chains: 1,
            }],
            folios: vec![crate::internal::FolioView {
                addr: 0x2000_0000_0000,
                index: 0x2_0000_0000,
                mapping: crate::internal::MappingName::Anon(1),
                order: 0,
                mapcount: 1,
            }],
        };
        step.procs.get_mut(&Pid(1)).expect("pid 1").internal = Some(internal);
        let mut text = String::new();
        write_step_json(&mut text, &step);
        let value = step_to_json(&step);
        assert_eq!(text, value.to_string());
        assert_eq!(value["procs"]["1"]["folios"], json!([["0x200000000000", "0x200000000", 1, 0, 1]]));
        assert_eq!(value["procs"]["1"]["vmas"][0]["anon_vma_root"], json!(1));
    }
}
