//! What a run shows after each step, in one shape for the model and for the kernel oracle,
//! so that the two can be printed by the same code and compared field by field.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::types::Pid;

/// A page as one side identifies it before renaming: a folio page in the model, a PFN in
/// the kernel. `ZERO` is the shared zero page on both sides.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum RawPage {
    Zero,
    Id(u64),
    Swap,
}

/// One present (or swapped) PTE.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RawPte {
    pub addr: u64,
    pub page: RawPage,
    /// `/proc/pid/pagemap` bit 56 (PM_MMAP_EXCLUSIVE).
    pub exclusive: bool,
    /// The tag stored in the page by the last write touch (0 if never written).
    pub tag: u64,
}

/// One process after a step, before page renaming.
#[derive(Clone, Debug, Default)]
pub struct RawProc {
    /// `/proc/pid/maps` lines, exactly as the kernel formats them (no trailing newline).
    pub maps: Vec<String>,
    /// Every present or swap PTE in ascending address order.
    pub ptes: Vec<RawPte>,
}

/// A page's stable name within one step: 0 is the zero page, then 1, 2, … in first-seen order
/// (processes by pid, pages by address); `Swap` for a swap entry.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PageName {
    Page(u64),
    Swap,
}

impl Serialize for PageName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PageName::Page(n) => s.serialize_u64(*n),
            PageName::Swap => s.serialize_str("swap"),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PageView {
    pub addr: u64,
    pub page: PageName,
    pub exclusive: bool,
    pub tag: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcView {
    pub maps: Vec<String>,
    pub pages: Vec<PageView>,
}

/// The state of every live process after one step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepView {
    pub line: usize,
    pub pid: Pid,
    /// The call as written in the script.
    pub call: String,
    /// strace-formatted result: `= 0x…`, `= 0`, `= -1 ENOMEM (Cannot allocate memory)`, `= ?`.
    pub result: String,
    pub procs: BTreeMap<Pid, ProcView>,
}

/// Rename raw pages of one step to stable names.
pub fn rename(procs: BTreeMap<Pid, RawProc>) -> BTreeMap<Pid, ProcView> {
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
                        raw => PageName::Page(*names.entry(raw).or_insert_with(|| {
                            next += 1;
                            next - 1
                        })),
                    };
                    PageView {
                        addr: pte.addr,
                        page,
                        exclusive: pte.exclusive,
                        tag: pte.tag,
                    }
                })
                .collect();
            (
                pid,
                ProcView {
                    maps: p.maps,
                    pages,
                },
            )
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

/// The tag a write touch stores in the page at `addr` during the step on script line `line`.
/// Never 0, so a written page is told apart from a zero-filled one.
pub fn touch_tag(line: usize, addr: u64) -> u64 {
    ((line as u64) << 36) | ((addr >> 12) & ((1 << 36) - 1))
}
