//! Reading `/proc/PID/maps` and normalising file identity so that kernel lines read as the
//! model prints them.
//!
//! Rules (see the module doc of `oracle` for the full list):
//! - anonymous lines (private anon, `[anon:NAME]`, …) are kept byte for byte;
//! - a regular file line gets device `00:00`, inode = the file's number in first-open order
//!   (1, 2, …, assigned when a script `openat` first succeeds on it) and the path as the
//!   script wrote it;
//! - a shared-anonymous (shmem) line (`/dev/zero (deleted)` or `[anon_shmem:NAME]`) gets
//!   device `00:01` and inode = the shmem object's number in creation order (1, 2, …; a
//!   separate counter from files);
//! - the name starts at column 74: the prefix (ending with a space after the inode) is
//!   padded with spaces to 72 characters and one more space is added, as `seq_pad` does.

use std::collections::HashMap;

use super::{WINDOW_END, WINDOW_START};

/// One parsed maps line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MapsLine {
    pub start: u64,
    pub end: u64,
    /// `rw-p`.
    pub perms: String,
    pub offset: u64,
    pub dev: (u32, u32),
    pub ino: u64,
    /// Everything after the padding; empty for an unnamed mapping.
    pub name: String,
    /// The line as the kernel printed it.
    pub raw: String,
}

impl MapsLine {
    pub fn readable(&self) -> bool {
        // x86_64: any accessible VMA can be read, except an execute-only one where protection
        // keys make it so (the execute-only pkey denies data access).
        let p = &self.perms.as_bytes()[..3.min(self.perms.len())];
        if p == b"--x" && crate::mm::host_has_pku() {
            return false;
        }
        p.iter().any(|&b| b != b'-')
    }
    pub fn is_shmem(&self) -> bool {
        self.name == "/dev/zero (deleted)" || self.name.starts_with("[anon_shmem:")
    }
    pub fn in_window(&self) -> bool {
        self.start < WINDOW_END && self.end > WINDOW_START
    }
}

/// Parse one maps line; None if it is not in the kernel's format.
pub(crate) fn parse_line(line: &str) -> Option<MapsLine> {
    let mut rest = line;
    let mut field = || -> Option<&str> {
        let r = rest.trim_start_matches(' ');
        let end = r.find(' ').unwrap_or(r.len());
        let (f, tail) = r.split_at(end);
        rest = tail;
        if f.is_empty() { None } else { Some(f) }
    };
    let range = field()?;
    let perms = field()?.to_string();
    let offset = u64::from_str_radix(field()?, 16).ok()?;
    let dev = field()?;
    let ino = field()?.parse().ok()?;
    let (s, e) = range.split_once('-')?;
    let (maj, min) = dev.split_once(':')?;
    Some(MapsLine {
        start: u64::from_str_radix(s, 16).ok()?,
        end: u64::from_str_radix(e, 16).ok()?,
        perms,
        offset,
        dev: (u32::from_str_radix(maj, 16).ok()?, u32::from_str_radix(min, 16).ok()?),
        ino,
        name: rest.trim_start_matches(' ').to_string(),
        raw: line.to_string(),
    })
}

/// Parse a whole maps file.
pub(crate) fn parse_maps(text: &str) -> Result<Vec<MapsLine>, String> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| parse_line(l).ok_or_else(|| format!("unparsable maps line {l:?}")))
        .collect()
}

/// Format a maps line as `show_map_vma` does.
pub(crate) fn format_line(
    start: u64,
    end: u64,
    perms: &str,
    offset: u64,
    dev: (u32, u32),
    ino: u64,
    name: &str,
) -> String {
    let mut s = format!("{start:08x}-{end:08x} {perms} {offset:08x} {:02x}:{:02x} {ino} ", dev.0, dev.1);
    if !name.is_empty() {
        while s.len() < 72 {
            s.push(' ');
        }
        s.push(' ');
        s.push_str(name);
    }
    s
}

/// Small numbers for files and shmem objects, stable over a run.
#[derive(Default, Debug)]
pub(crate) struct FileIds {
    /// (major, minor, inode) → (number, path as the script wrote it).
    files: HashMap<(u32, u32, u64), (u64, String)>,
    shmem: HashMap<(u32, u32, u64), u64>,
}

impl FileIds {
    /// Record a file a script `openat` opened (no-op if already known).
    pub fn opened(&mut self, dev: (u32, u32), ino: u64, path: &str) {
        let n = self.files.len() as u64 + 1;
        self.files.entry((dev.0, dev.1, ino)).or_insert_with(|| (n, path.to_string()));
    }

    /// The line as the model prints it.
    pub fn normalise(&mut self, l: &MapsLine) -> String {
        let key = (l.dev.0, l.dev.1, l.ino);
        if l.is_shmem() {
            let n = self.shmem.len() as u64 + 1;
            let n = *self.shmem.entry(key).or_insert(n);
            format_line(l.start, l.end, &l.perms, l.offset, (0, 1), n, &l.name)
        } else if l.name.starts_with('/') {
            let n = self.files.len() as u64 + 1;
            let name = l.name.clone();
            let (n, path) = self.files.entry(key).or_insert_with(|| (n, name));
            format_line(l.start, l.end, &l.perms, l.offset, (0, 0), *n, path)
        } else {
            l.raw.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_reformats_kernel_lines() {
        for raw in [
            "200000000000-200000004000 rw-p 00000000 00:00 0 ",
            "200000010000-200000014000 rw-s 00000000 00:01 1025                       /dev/zero (deleted)",
            "200001000000-200001003000 rw-s 00000000 fe:00 10010846                   /tmp/oexp/f",
            "200000000000-200000004000 rw-p 00000000 00:00 0                          [anon:foo bar]",
        ] {
            let l = parse_line(raw).unwrap();
            assert_eq!(format_line(l.start, l.end, &l.perms, l.offset, l.dev, l.ino, &l.name), raw);
        }
    }

    #[test]
    fn normalises_files_and_shmem() {
        let mut ids = FileIds::default();
        ids.opened((0xfe, 0), 10010846, "data");
        let f = parse_line(
            "200001000000-200001003000 rw-s 00001000 fe:00 10010846                   /tmp/x/data",
        )
        .unwrap();
        assert_eq!(
            ids.normalise(&f),
            "200001000000-200001003000 rw-s 00001000 00:00 1                          data"
        );
        let s = parse_line(
            "200000010000-200000014000 rw-s 00000000 00:01 1025                       /dev/zero (deleted)",
        )
        .unwrap();
        assert_eq!(
            ids.normalise(&s),
            "200000010000-200000014000 rw-s 00000000 00:01 1                          /dev/zero (deleted)"
        );
        let a = parse_line("200000000000-200000004000 rw-p 00000000 00:00 0 ").unwrap();
        assert_eq!(ids.normalise(&a), a.raw);
        assert!(parse_line("garbage").is_none());
    }
}
