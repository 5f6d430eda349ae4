//! A process layout for `anonmm gen restore`: the lines of `/proc/PID/maps` and, for each
//! private VMA, which of its pages hold data (present or swapped in `/proc/PID/pagemap`,
//! `pagemap_pte_range` of fs/proc/task_mmu.c). `anonmm snapshot PID` writes one.
//!
//! The text is a maps file, each line optionally followed by an indented
//! `present A-B C ...` line of page ranges (inclusive, counted from the VMA's start). A plain
//! maps file is a layout too: without `present` lines, every page of a writable private VMA
//! counts as holding data.

use std::fmt::Write;

use super::{WorkloadError, bad};

const PAGE: u64 = 4096;

/// One VMA of a layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayoutVma {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// `PROT_READ`.
    pub read: bool,
    /// `PROT_WRITE`.
    pub write: bool,
    /// `PROT_EXEC`.
    pub exec: bool,
    /// `MAP_SHARED` (`s` in the maps line) rather than private.
    pub shared: bool,
    /// Backed by a file (an inode in the maps line) or special (`[vdso]`, `[vvar]`...):
    /// anything but private anonymous memory, `[heap]`, `[stack]` and `[anon:NAME]`.
    pub not_anon: bool,
    /// The path column, as read.
    pub path: String,
    /// Page ranges holding data, counted from `start`, `[first, last]` inclusive; `None`
    /// when the layout does not say.
    pub present: Option<Vec<(u64, u64)>>,
}

impl LayoutVma {
    /// Pages in the VMA.
    pub fn pages(&self) -> u64 {
        (self.end - self.start) / PAGE
    }

    /// Private anonymous memory: what a restore premaps, fills and moves into place.
    pub fn private_anon(&self) -> bool {
        !self.shared && !self.not_anon
    }

    /// The `PROT_*` names of its protection, `|`-joined.
    pub fn prot_text(&self, add_write: bool) -> String {
        let mut p = Vec::new();
        if self.read {
            p.push("PROT_READ");
        }
        if self.write || add_write {
            p.push("PROT_WRITE");
        }
        if self.exec {
            p.push("PROT_EXEC");
        }
        if p.is_empty() { "PROT_NONE".to_string() } else { p.join("|") }
    }

    /// Page ranges holding data (all pages of a writable VMA when the layout does not say).
    pub fn data_ranges(&self) -> Vec<(u64, u64)> {
        match &self.present {
            Some(r) => r.clone(),
            None if self.write && self.pages() > 0 => vec![(0, self.pages() - 1)],
            None => Vec::new(),
        }
    }
}

/// A process layout: its VMAs in address order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    /// The VMAs, sorted, disjoint.
    pub vmas: Vec<LayoutVma>,
}

impl Layout {
    /// Parses a layout (a maps file with optional `present` lines); `name` names it in errors.
    pub fn parse(name: &str, text: &str) -> Result<Layout, WorkloadError> {
        let mut vmas: Vec<LayoutVma> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let at = || format!("{name}:{}", i + 1);
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            if let Some(rest) = t.strip_prefix("present") {
                let Some(v) = vmas.last_mut() else {
                    return Err(bad(format!("{}: a present line before any VMA", at())));
                };
                let mut ranges = Vec::new();
                for r in rest.split_whitespace() {
                    let (a, b) = r.split_once('-').unwrap_or((r, r));
                    let (Ok(a), Ok(b)) = (a.parse::<u64>(), b.parse::<u64>()) else {
                        return Err(bad(format!("{}: bad page range `{r}`", at())));
                    };
                    if a > b || b >= v.pages() {
                        return Err(bad(format!(
                            "{}: page range `{r}` outside the VMA's {} pages",
                            at(),
                            v.pages()
                        )));
                    }
                    ranges.push((a, b));
                }
                v.present = Some(ranges);
                continue;
            }
            let v = parse_maps_line(t)
                .ok_or_else(|| bad(format!("{}: not a /proc/PID/maps line: `{t}`", at())))?;
            if let Some(prev) = vmas.last()
                && prev.end > v.start
            {
                return Err(bad(format!("{}: VMAs out of order or overlapping", at())));
            }
            vmas.push(v);
        }
        if vmas.is_empty() {
            return Err(bad(format!("{name}: no VMAs")));
        }
        Ok(Layout { vmas })
    }

    /// The layout as text ([`Layout::parse`] reads it back).
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for v in &self.vmas {
            let _ = writeln!(
                s,
                "{:x}-{:x} {}{}{}{} 00000000 00:00 {} {}",
                v.start,
                v.end,
                if v.read { 'r' } else { '-' },
                if v.write { 'w' } else { '-' },
                if v.exec { 'x' } else { '-' },
                if v.shared { 's' } else { 'p' },
                u8::from(v.not_anon && !v.path.starts_with('[')),
                v.path
            );
            if let Some(r) = &v.present {
                s.push_str("  present");
                for &(a, b) in r {
                    if a == b {
                        let _ = write!(s, " {a}");
                    } else {
                        let _ = write!(s, " {a}-{b}");
                    }
                }
                s.push('\n');
            }
        }
        s
    }
}

/// One maps line: `start-end perms offset dev inode [path]`.
fn parse_maps_line(t: &str) -> Option<LayoutVma> {
    let mut f = t.split_whitespace();
    let (range, perms, _off, _dev, inode) = (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
    let path = f.collect::<Vec<_>>().join(" ");
    let (a, b) = range.split_once('-')?;
    let start = u64::from_str_radix(a, 16).ok()?;
    let end = u64::from_str_radix(b, 16).ok()?;
    let p = perms.as_bytes();
    if p.len() != 4 || start >= end || start % PAGE != 0 || end % PAGE != 0 {
        return None;
    }
    let inode: u64 = inode.parse().ok()?;
    let anon_name = path.is_empty() || path == "[heap]" || path == "[stack]" || path.starts_with("[anon:");
    Some(LayoutVma {
        start,
        end,
        read: p[0] == b'r',
        write: p[1] == b'w',
        exec: p[2] == b'x',
        shared: p[3] == b's',
        not_anon: inode != 0 || !anon_name,
        path,
        present: None,
    })
}

/// `anonmm snapshot PID`: the layout of a live process, from `/proc/PID/maps` and, for each
/// private anonymous VMA, `/proc/PID/pagemap` (bit 63 present, bit 62 swapped: the page
/// holds data). Reading another process's pagemap needs ptrace access (root here).
pub fn snapshot_pid(pid: u32) -> Result<Layout, WorkloadError> {
    use std::io::{Read, Seek, SeekFrom};
    let maps_path = format!("/proc/{pid}/maps");
    let maps = std::fs::read_to_string(&maps_path).map_err(|e| bad(format!("{maps_path}: {e}")))?;
    let mut layout = Layout::parse(&maps_path, &maps)?;
    let pm_path = format!("/proc/{pid}/pagemap");
    let mut pm = std::fs::File::open(&pm_path).map_err(|e| bad(format!("{pm_path}: {e}")))?;
    for v in &mut layout.vmas {
        if !v.private_anon() {
            continue;
        }
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        // In chunks, so that a large reservation does not need a large buffer.
        const CHUNK: u64 = 1 << 16;
        let mut page = 0;
        while page < v.pages() {
            let n = CHUNK.min(v.pages() - page);
            let mut buf = vec![0u8; (n * 8) as usize];
            pm.seek(SeekFrom::Start((v.start / PAGE + page) * 8))
                .and_then(|_| pm.read_exact(&mut buf))
                .map_err(|e| bad(format!("{pm_path}: {e}")))?;
            for (i, e) in buf.chunks_exact(8).enumerate() {
                let e = u64::from_le_bytes(e.try_into().expect("8 bytes"));
                if e & (3 << 62) == 0 {
                    continue;
                }
                let p = page + i as u64;
                match ranges.last_mut() {
                    Some(r) if r.1 + 1 == p => r.1 = p,
                    _ => ranges.push((p, p)),
                }
            }
            page += n;
        }
        v.present = Some(ranges);
    }
    Ok(layout)
}
