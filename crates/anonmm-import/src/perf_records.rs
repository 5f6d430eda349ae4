//! The records of a `perf.data`'s data section in order of time, read without a copy per
//! record: what `linux-perf-data`'s record iterator does (and in the same order), for the
//! files `anonmm record` makes (perf's own `-z` compression and simpleperf files are left
//! to that iterator).
//!
//! perf writes each CPU's ring buffer in turn, so records are in order of time only within
//! a CPU's run. perf's `PERF_RECORD_FINISHED_ROUND` says that no record after it is older
//! than the newest record two rounds back (`tools/perf/util/ordered-events.c`); so at each
//! round the records up to the newest of the previous round are sorted and handed on, as
//! `linux-perf-data`'s `Sorter` does. Here the records stay in one window of the file's
//! bytes and only their keys are sorted, with a sort that merges the per-CPU runs.

use std::io::{Read, Seek, SeekFrom};

use linux_perf_data::linux_perf_event_reader::{
    AttrFlags, Endianness, RawData, RawEventRecord, RecordIdParseInfo, RecordParseInfo, RecordType,
};
use rustc_hash::FxHashMap as HashMap;

/// `PERF_RECORD_SAMPLE`.
const SAMPLE: u32 = 9;
/// The first of perf's own record types (`PERF_RECORD_USER_TYPE_START`).
const USER_TYPE_START: u32 = 64;
/// `PERF_RECORD_FINISHED_ROUND`.
const FINISHED_ROUND: u32 = 68;
/// `PERF_RECORD_AUXTRACE`: its data follows the record.
const AUXTRACE: u32 = 71;
/// `PERF_RECORD_COMPRESSED` and `PERF_RECORD_COMPRESSED2`.
const COMPRESSED: [u32; 2] = [81, 83];

/// Bytes read from the file at a time.
const READ: usize = 1 << 20;

/// (timestamp, offset): the order `linux-perf-data` sorts records in, as one number
/// ([`key`]); 0, below every record's, is where a round starts.
type Key = u128;

/// The key of the record at `at` with time `ts`: `(ts, Some(at))` compared as a tuple of
/// options (no time first) is `(ts + 1 or 0, at + 1)`, which fits one u128 as long as
/// `at + 1 < 2^63` (checked on the section's size).
#[inline]
fn key(ts: Option<u64>, at: u64) -> Key {
    (ts.map_or(0, |t| u128::from(t) + 1) << 63) | u128::from(at + 1)
}

/// Where the record of `key` is: the offset of its header from the data section's start.
#[inline]
fn at_of(key: Key) -> u64 {
    (key as u64 & ((1 << 63) - 1)) - 1
}

/// A record read and not yet handed on, in 32 bytes: its key (which says where it is), and
/// what it is. A page fault's fields are read as the round is scanned, while its bytes are
/// in the near caches: handed on, it needs no second look at them.
#[derive(Clone, Copy)]
struct Ent {
    key: Key,
    /// A page fault ([`FAULT`] set): its address's page, with [`WRITE`] for a write. Any
    /// other record: its attribute (none for perf's own records) `<< 32`, with [`OWN`] for
    /// perf's own.
    what: u64,
    /// A page fault's `pid | tid << 32`.
    ids: u64,
}

/// [`Ent::what`]'s bits: a write fault; a page fault read in the scan; perf's own record.
pub(crate) const WRITE: u64 = 1;
pub(crate) const FAULT: u64 = 2;
const OWN: u64 = 4;

impl Ent {
    /// A record other than a page fault read in the scan.
    #[inline]
    fn other(key: Key, attr: usize, own: bool) -> Ent {
        Ent { key, what: ((attr as u64) << 32) | if own { OWN } else { 0 }, ids: 0 }
    }

    #[inline]
    fn attr(&self) -> usize {
        (self.what >> 32) as usize
    }
}

/// The type, misc and body of the record whose header is at `o` in `buf` (all there).
#[inline]
fn parts(buf: &[u8], o: usize) -> (u32, u16, &[u8]) {
    let h = &buf[o..o + 8];
    let ty = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let size = u16::from_le_bytes([h[6], h[7]]);
    (ty, u16::from_le_bytes([h[4], h[5]]), &buf[o + 8..o + usize::from(size)])
}

/// How a record's attribute is found (as `linux-perf-data` finds it).
enum Ids {
    /// The file has one attribute.
    One,
    /// Every attribute's records have their id at the same place.
    Same(RecordIdParseInfo),
    /// Every attribute has `PERF_SAMPLE_IDENTIFIER`; with `sample_id_all` or not.
    Identifier(bool),
}

/// Where a `perf.data`'s records are read from.
pub(crate) enum Src {
    /// A reader of the file, at its start.
    Read(Box<dyn super::perf_data::Input>),
    /// The file, mapped.
    Mapped(Mapped),
}

/// The bytes of the data section from `base` on (`filled` of them).
enum Window {
    /// Read into memory, a window at a time.
    Read { r: Box<dyn super::perf_data::Input>, buf: Vec<u8> },
    /// Mapped: the whole file from the data section's start (`from` in the mapping) to its
    /// end, which `base` 0 and `filled` cover; `released` bytes of it given back.
    Mapped { map: Mapped, from: usize, released: usize },
}

impl Window {
    #[inline]
    fn bytes(&self) -> &[u8] {
        match self {
            Window::Read { buf, .. } => buf,
            Window::Mapped { map, from, .. } => &map.bytes()[*from..],
        }
    }
}

/// A file mapped read-only, whole (`mmap(2)`), so that its records are read in place:
/// neither read(2)'s copy into memory nor the window's compaction. perf reads `perf.data`
/// the same way; as there, a file cut short by another process while it is read ends the
/// process (`SIGBUS`): a file is not recorded to while it is replayed.
pub(crate) struct Mapped {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
    /// Maps the pages in ahead of the reader and takes them out behind it, on a thread of
    /// its own; None if it could not start (the reader faults the pages in itself).
    pager: Option<Pager>,
}

/// The thread that maps a [`Mapped`] file's pages in ([`PAGER_AHEAD`] ahead of the
/// reader, by reading them) and out behind it (`MADV_DONTNEED`), so that the
/// reader's thread neither takes the page faults of the file nor the unmapping: that is
/// kernel work on the other core, which the replay leaves mostly idle on a perf.data.
struct Pager {
    /// The bytes the reader no longer needs (all below); `usize::MAX`: stop.
    done: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    thread: std::thread::JoinHandle<()>,
}

/// How far ahead of the reader a mapped file is mapped in.
const PAGER_AHEAD: usize = 8 << 20;

impl Pager {
    fn start(base: usize, len: usize) -> Option<Pager> {
        use std::sync::atomic::Ordering;
        let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = done.clone();
        let thread = std::thread::Builder::new()
            .name("anonmm-pager".into())
            .spawn(move || {
                let (mut mapped, mut released) = (0usize, 0usize);
                loop {
                    let done = seen.load(Ordering::Acquire);
                    if done == usize::MAX {
                        return;
                    }
                    let behind = done.min(len) / PAGE * PAGE;
                    if behind > released {
                        // SAFETY: the mapping outlives this thread (Drop joins it first).
                        unsafe { dont_need(base, len, released, behind) };
                        released = behind;
                    }
                    mapped = mapped.max(released);
                    if mapped < len && mapped < done.saturating_add(PAGER_AHEAD) {
                        let end = (mapped + RELEASE).min(len);
                        // A read faults a page in with its aligned block of neighbours (the
                        // kernel's fault-around), cheaper than MADV_POPULATE_READ's walk: one
                        // read a block, and one at the start (its block may begin before).
                        let mut sum = 0u8;
                        let first = (base + mapped).next_multiple_of(AROUND) - base;
                        for a in std::iter::once(mapped).chain((first..end).step_by(AROUND)) {
                            // SAFETY: a byte of the mapping, which outlives this thread.
                            sum =
                                sum.wrapping_add(unsafe { std::ptr::read_volatile((base + a) as *const u8) });
                        }
                        std::hint::black_box(sum);
                        mapped = end;
                        continue;
                    }
                    std::thread::park();
                }
            })
            .ok()?;
        Some(Pager { done, thread })
    }
}

// SAFETY: the mapping is read-only and only `Drop` unmaps it.
unsafe impl Send for Mapped {}

impl Mapped {
    /// `file` mapped, or None when it cannot be (empty, not a regular file): it is read.
    pub(crate) fn of(file: &std::fs::File) -> Option<Mapped> {
        use std::os::fd::AsRawFd;
        let meta = file.metadata().ok()?;
        let len = usize::try_from(meta.len()).ok().filter(|&l| l > 0 && meta.is_file())?;
        // SAFETY: a new private read-only mapping of an open file; nothing else refers to
        // that range of the address space.
        let ptr = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_PRIVATE, file.as_raw_fd(), 0)
        };
        if ptr == libc::MAP_FAILED {
            return None;
        }
        // SAFETY: advice on the mapping just made. Read front to back: the kernel reads
        // ahead, and maps more pages per fault.
        unsafe { libc::madvise(ptr, len, libc::MADV_SEQUENTIAL) };
        let ptr = std::ptr::NonNull::new(ptr.cast::<u8>())?;
        Some(Mapped { ptr, len, pager: Pager::start(ptr.as_ptr() as usize, len) })
    }

    #[inline]
    fn bytes(&self) -> &[u8] {
        // SAFETY: `len` readable bytes, mapped until `self` is dropped.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// Take the whole pages of `[from, to)` out of the process's memory (they stay in the
    /// page cache, and read again they are mapped again), so that a file read through adds
    /// little to the resident size.
    fn release(&self, from: usize, to: usize) {
        if let Some(p) = &self.pager {
            p.done.store(to.min(self.len), std::sync::atomic::Ordering::Release);
            p.thread.thread().unpark();
            return;
        }
        // SAFETY: the mapping, mapped until `self` is dropped.
        unsafe { dont_need(self.ptr.as_ptr() as usize, self.len, from, to) };
    }
}

/// The page size the mapped reader gives pages back in.
const PAGE: usize = 4096;

/// The pages a read fault maps at once (the kernel's `fault_around_bytes`, 64 KiB by
/// default): the pager reads one byte in each such aligned block.
const AROUND: usize = 64 << 10;

/// `MADV_DONTNEED` of the whole pages of `[from, to)` of the mapping of `len` bytes at
/// `base`: they stay in the page cache, and read again they are mapped again (a private
/// read-only file mapping reads the same bytes).
///
/// # Safety
/// `base` is a [`Mapped`] file's mapping, mapped for the whole call.
unsafe fn dont_need(base: usize, len: usize, from: usize, to: usize) {
    let (from, to) = (from.next_multiple_of(PAGE), to.min(len) / PAGE * PAGE);
    if from < to {
        // SAFETY: advice on a range of the mapping (the caller's promise).
        unsafe { libc::madvise((base + from) as *mut libc::c_void, to - from, libc::MADV_DONTNEED) };
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        if let Some(p) = self.pager.take() {
            p.done.store(usize::MAX, std::sync::atomic::Ordering::Release);
            p.thread.thread().unpark();
            // It uses the mapping until it stops.
            let _ = p.thread.join();
        }
        // SAFETY: the mapping made by `of`, no longer borrowed.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Bytes read through between two [`Mapped::release`]s.
const RELEASE: usize = 2 << 20;

/// The data section's records, in order of time.
pub(crate) struct Records {
    window: Window,
    base: u64,
    filled: usize,
    /// Bytes read at a time ([`READ`]; small in tests, so that the window is compacted).
    read: usize,
    /// The next record's offset, and the section's size.
    at: u64,
    len: u64,
    ids: Ids,
    attr_of: HashMap<u64, usize>,
    /// The last id looked up in `attr_of` and what it found (records of one event follow
    /// each other).
    last_id: Option<(u64, usize)>,
    infos: Vec<RecordParseInfo>,
    /// Per attribute: where a sample's time is.
    sample_time: Vec<Option<usize>>,
    /// Per attribute: where a page-fault sample's fields are, when [`Records::take_faults`]
    /// reads them.
    faults: Vec<Option<super::perf_data::FaultAt>>,
    /// The records read and not yet taken, in a ring (no copy of those waiting per round):
    /// the first `out` are handed on, in order; the rest wait for their round.
    ents: std::collections::VecDeque<Ent>,
    out: usize,
    /// How many of the first records may be out of order of their offsets (a sort moved
    /// them): those after them are in the order they were read, the file's.
    mixed: usize,
    /// Whether the records waiting are in order of their keys (one CPU's run, the usual
    /// round): then they need no sort.
    sorted: bool,
    prev_max: Key,
    cur_max: Key,
    lte_prev_max: usize,
    finished: bool,
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at.checked_add(8)?)?.try_into().ok()?))
}

impl Records {
    /// The records of the little-endian `perf.data` in `src`, whose attributes are
    /// `attrs`; None when this reader does not read it (perf's compression, simpleperf),
    /// and an error when the header cannot be read.
    pub(crate) fn new(src: Src, file: &linux_perf_data::PerfFile) -> Result<Option<Records>, String> {
        use linux_perf_data::Feature;
        let features = file.features();
        if features.has_feature(Feature::COMPRESSED) || features.has_feature(Feature::SIMPLEPERF_META_INFO) {
            return Ok(None);
        }
        let attrs = file.event_attributes();
        let Some(first) = attrs.first() else { return Ok(None) };
        // `struct perf_file_header`: magic, size, attr_size, then the attrs and data sections.
        let mut head = [0u8; 56];
        let src = match src {
            Src::Read(mut r) => {
                r.read_exact(&mut head).map_err(|e| format!("cannot read the header: {e}"))?;
                Src::Read(r)
            }
            Src::Mapped(m) => {
                let h = m.bytes().get(..56).ok_or("cannot read the header: the file ends")?;
                head.copy_from_slice(h);
                Src::Mapped(m)
            }
        };
        let (Some(offset), Some(len)) = (u64_at(&head, 40), u64_at(&head, 48)) else {
            return Err("cannot read the header".to_string());
        };
        if len >= 1 << 62 {
            // Offsets too large for a record's key: left to the crate's reader.
            return Ok(None);
        }
        let (window, filled) = match src {
            Src::Read(mut r) => {
                r.seek(SeekFrom::Start(offset)).map_err(|e| format!("cannot read the records: {e}"))?;
                (Window::Read { r, buf: Vec::new() }, 0)
            }
            Src::Mapped(map) => {
                // Past the end: no bytes, as a read there finds none.
                let from = usize::try_from(offset).map_or(map.len, |o| o.min(map.len));
                let filled = map.len - from;
                (Window::Mapped { map, from, released: 0 }, filled)
            }
        };
        let infos: Vec<RecordParseInfo> =
            attrs.iter().map(|a| RecordParseInfo::new(&a.attr, Endianness::LittleEndian)).collect();
        let ids = if attrs.len() == 1 {
            Ids::One
        } else if infos.iter().all(|i| i.id_parse_info == infos[0].id_parse_info) {
            Ids::Same(infos[0].id_parse_info)
        } else {
            Ids::Identifier(first.attr.flags.contains(AttrFlags::SAMPLE_ID_ALL))
        };
        let mut attr_of = HashMap::default();
        for (i, a) in attrs.iter().enumerate() {
            for &id in &a.event_ids {
                attr_of.insert(id, i);
            }
        }
        Ok(Some(Records {
            window,
            base: 0,
            filled,
            read: READ,
            at: 0,
            len,
            ids,
            attr_of,
            last_id: None,
            sample_time: infos
                .iter()
                .map(|i| i.sample_record_time_offset_from_start.map(usize::from))
                .collect(),
            infos,
            faults: Vec::new(),
            ents: std::collections::VecDeque::new(),
            out: 0,
            mixed: 0,
            sorted: true,
            prev_max: 0,
            cur_max: 0,
            lte_prev_max: 0,
            finished: false,
        }))
    }

    /// Have the page faults of the attributes `faults` says where to find them in (all
    /// of that attribute's samples: their format is the attribute's) read as each round
    /// is scanned, for [`Records::take_faults`].
    pub(crate) fn read_faults(&mut self, faults: Vec<Option<super::perf_data::FaultAt>>) {
        self.faults = faults;
    }

    /// The next record of an attribute, in order (None at the end).
    pub(crate) fn next(&mut self) -> Result<Option<(usize, RawEventRecord<'_>)>, String> {
        loop {
            if self.out > 0
                && let Some(e) = self.ents.pop_front()
            {
                self.out -= 1;
                self.mixed = self.mixed.saturating_sub(1);
                if e.what & OWN != 0 {
                    continue;
                }
                let (ty, misc, body) = parts(self.window.bytes(), (at_of(e.key) - self.base) as usize);
                // A page fault read in the scan (taken here after all: rare) has its
                // attribute found again, as the scan found it.
                let attr = if e.what & FAULT != 0 {
                    attr_at(&self.ids, &self.attr_of, &mut None, ty, body)
                } else {
                    e.attr()
                };
                let record = RecordType(ty);
                let record = RawEventRecord {
                    record_type: record,
                    misc,
                    data: RawData::Single(body),
                    parse_info: self.infos[attr],
                };
                return Ok(Some((attr, record)));
            }
            if self.finished {
                return Ok(None);
            }
            self.read_round()?;
        }
    }

    /// Hand the page faults of the round handed on, in order, to `take` (`pid | tid << 32`,
    /// and the address's page with [`FAULT`], and [`WRITE`] for a write), `max` at the most (the rest are left to
    /// the next call, or to [`Records::next`]), up to the first record that is none read
    /// in the scan; perf's own records between them are passed over, as `next` passes
    /// them. The records' bytes are not read again.
    #[inline]
    pub(crate) fn take_faults(&mut self, max: usize, mut take: impl FnMut(u64, u64)) {
        let (a, b) = self.ents.as_slices();
        let (a, b) =
            if a.len() >= self.out { (&a[..self.out], &b[..0]) } else { (a, &b[..self.out - a.len()]) };
        let (mut n, mut taken) = (0, 0);
        'all: for s in [a, b] {
            for e in s {
                if e.what & FAULT != 0 {
                    if taken == max {
                        break 'all;
                    }
                    take(e.ids, e.what);
                    taken += 1;
                } else if e.what & OWN == 0 {
                    break 'all;
                }
                n += 1;
            }
        }
        self.ents.drain(..n);
        self.out -= n;
        self.mixed = self.mixed.saturating_sub(n);
    }

    /// Have the section's bytes up to `end` in the window; false at the end of the file.
    #[inline]
    fn fill(&mut self, end: u64) -> Result<bool, String> {
        // Almost always there already: only a read needs the call.
        if self.base + (self.filled as u64) >= end {
            return Ok(true);
        }
        self.read_to(end)
    }

    /// [`Records::fill`] when bytes must be read.
    #[inline(never)]
    fn read_to(&mut self, end: u64) -> Result<bool, String> {
        while self.base + (self.filled as u64) < end {
            // A mapped file is all there.
            let Window::Read { buf, .. } = &self.window else { return Ok(false) };
            if buf.len() < self.filled + self.read {
                // Out of room: drop what no record needs, if that is at least as much as
                // what stays (a copy of the window per round would be the file's size in
                // copies); else the window grows.
                self.compact();
            }
            let need = (end - self.base) as usize;
            let Window::Read { r, buf } = &mut self.window else { return Ok(false) };
            if buf.len() < need.max(self.filled + self.read) {
                buf.resize(need.max(self.filled + self.read), 0);
            }
            match r.read(&mut buf[self.filled..]) {
                Ok(0) => return Ok(false),
                Ok(n) => self.filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(true)
    }

    /// Drop the bytes no record waiting needs from the window, when they are at least as
    /// many as those kept. Only while no record is handed on (those handed on before are
    /// taken): the record at `at` and those waiting are all that is still read.
    fn compact(&mut self) {
        let keep = self.needed();
        let drop = (keep - self.base) as usize;
        let Window::Read { buf, .. } = &mut self.window else { return };
        if drop == 0 || drop < self.filled - drop {
            return;
        }
        buf.copy_within(drop..self.filled, 0);
        self.filled -= drop;
        self.base = keep;
    }

    /// Where the bytes still to be read start, once the records handed on are taken: the
    /// record at `at` and those waiting are all that is still read.
    fn needed(&self) -> u64 {
        debug_assert!(self.out == 0);
        let first = || self.ents.front().map(|e| at_of(e.key));
        let keep = if self.mixed == 0 { first() } else { self.ents.iter().map(|e| at_of(e.key)).min() };
        let keep = keep.unwrap_or(self.at).min(self.at);
        // `at` can be past the window after an AUXTRACE record (its data is skipped).
        keep.min(self.base + self.filled as u64)
    }

    /// [`Records::compact`] of a mapped file: what no record needs is released, a few MiB
    /// at a time.
    fn release(&mut self) {
        if !matches!(self.window, Window::Mapped { .. }) {
            return;
        }
        // What is needed starts at `at` at the most: nothing to release below RELEASE bytes
        // on (the usual round), found without a look at the records waiting.
        if let Window::Mapped { released, .. } = &self.window
            && (self.at.min(self.base + self.filled as u64) as usize).saturating_sub(*released) < RELEASE
        {
            return;
        }
        let keep = self.needed() as usize;
        if let Window::Mapped { map, from, released } = &mut self.window
            && keep.saturating_sub(*released) >= RELEASE
        {
            map.release(*from + *released, *from + keep);
            *released = keep;
        }
    }

    /// Read records until a round hands some on, or to the end of the section.
    fn read_round(&mut self) -> Result<(), String> {
        while self.at < self.len {
            self.scan();
            if self.at >= self.len {
                break;
            }
            let at = self.at;
            if !self.fill(at + 8)? {
                return Err(format!("the records end early, at byte {at} of {}", self.len));
            }
            let h = &self.window.bytes()[(at - self.base) as usize..];
            let ty = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
            let size = u16::from_le_bytes([h[6], h[7]]);
            if size < 8 {
                return Err(format!("a record of {size} bytes at byte {at}"));
            }
            let mut next = at + u64::from(size);
            if !self.fill(next)? {
                return Err(format!("the records end early, at byte {at} of {}", self.len));
            }
            let o = (at - self.base) as usize;
            let body = &self.window.bytes()[o + 8..o + usize::from(size)];
            if ty == FINISHED_ROUND {
                self.at = next;
                self.finish_round();
                if self.out > 0 {
                    return Ok(());
                }
                continue;
            }
            if COMPRESSED.contains(&ty) {
                return Err("compressed records in a file without perf's compression feature".to_string());
            }
            if ty == AUXTRACE {
                // The trace data follows the record: skipped with it.
                next += u64_at(body, 0).ok_or("a short AUXTRACE record")?;
            }
            let (attr, ts) = if ty < USER_TYPE_START {
                let attr = attr_at(&self.ids, &self.attr_of, &mut self.last_id, ty, body);
                (attr, time_at(ty, body, &self.infos[attr]))
            } else {
                (0, None)
            };
            let key = key(ts, at);
            if key <= self.prev_max {
                self.lte_prev_max += 1;
            } else if key > self.cur_max {
                self.cur_max = key;
            }
            if self.sorted && self.ents.back().is_some_and(|l| l.key > key) {
                self.sorted = false;
            }
            // A page fault here (across a read window's end) is read by `next`'s caller.
            self.ents.push_back(Ent::other(key, attr, ty >= USER_TYPE_START));
            self.at = next;
        }
        // The end: everything left, in order.
        self.lte_prev_max = self.ents.len();
        self.hand_on();
        self.finished = true;
        Ok(())
    }

    /// What [`Records::read_round`] does with each record of the kernel's (most records:
    /// perf's own, from `PERF_RECORD_USER_TYPE_START` on, are left to it) that is whole in
    /// the window, with the state in locals: up to the first other record, or the window's
    /// or the section's end.
    #[inline]
    fn scan(&mut self) {
        let Records {
            window,
            base,
            filled,
            at,
            len,
            ids,
            attr_of,
            last_id,
            infos,
            sample_time,
            faults,
            ents,
            sorted,
            prev_max,
            cur_max,
            lte_prev_max,
            ..
        } = self;
        let base = *base;
        let win = &window.bytes()[..*filled];
        let end = (*len).min(base + win.len() as u64);
        let mut run = Run {
            prev: *prev_max,
            cur: *cur_max,
            lte: *lte_prev_max,
            in_order: *sorted,
            // Keys are at least 1: 0 is below every record's.
            last: ents.back().map_or(0, |e| e.key),
        };
        // Where a sample's id is (`attr_at`'s answer for samples, worked out once): None
        // when the file has one attribute.
        let sample_id = match ids {
            Ids::One => None,
            Ids::Same(p) => Some(p.sample_record_id_offset_from_start.map(usize::from)),
            Ids::Identifier(_) => Some(Some(0)),
        };
        let mut seen = *last_id;
        let mut a = *at;
        while a + 8 <= end {
            let o = (a - base) as usize;
            let Some(h) = win.get(o..o + 8) else { break };
            let ty = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
            let size = u16::from_le_bytes([h[6], h[7]]);
            if ty >= USER_TYPE_START || size < 8 || a + u64::from(size) > end {
                break;
            }
            let body = &win[o + 8..o + usize::from(size)];
            let (mut fault, mut same) = (None, None);
            let (attr, ts) = if ty == SAMPLE {
                // `id`: what the samples after it must have to be of the same attribute
                // (None: no sample after it is taken to be).
                let (attr, id) = match sample_id.map(|at| at.map(|at| (at, u64_at(body, at)))) {
                    None | Some(None) => (0, Some(None)),
                    Some(Some((_, None))) => (0, None),
                    Some(Some((at, Some(id)))) => match seen {
                        Some((last, attr)) if last == id => (attr, Some(Some((at, id)))),
                        _ => {
                            let attr = attr_of.get(&id).copied().unwrap_or(0);
                            seen = Some((id, attr));
                            (attr, Some(Some((at, id))))
                        }
                    },
                };
                let ts = sample_time[attr].and_then(|at| u64_at(body, at));
                // The fault's fields, while its bytes are in the near caches.
                if let Some(Some(f)) = faults.get(attr) {
                    fault = f.read(body);
                    // What the samples after it must match to be read the same way.
                    if let (Some(_), Some(t), Some(id)) = (fault, sample_time[attr], id) {
                        same = Some(Layout::of(id, t, *f));
                    }
                }
                (attr, ts)
            } else {
                let attr = attr_at(ids, attr_of, &mut seen, ty, body);
                (attr, time_at(ty, body, &infos[attr]))
            };
            let ent = match fault {
                Some((pid, tid, addr, code)) => fault_ent(key(ts, a), pid, tid, addr, code),
                None => Ent::other(key(ts, a), attr, false),
            };
            run.add(ent, ents);
            a += u64::from(size);
            if let Some(l) = same {
                // The run of faults of this attribute that follows (most records).
                a = fault_run(win, base, a, end, l, &mut run, ents);
            }
        }
        *at = a;
        *last_id = seen;
        *cur_max = run.cur;
        *lte_prev_max = run.lte;
        *sorted = run.in_order;
    }

    /// A round ended: what no later record can come before goes out, in order.
    fn finish_round(&mut self) {
        self.release();
        if self.lte_prev_max > 0 {
            self.hand_on();
        }
        self.prev_max = self.cur_max;
        self.lte_prev_max = self.ents.len() - self.out;
    }

    /// Hand on the first `lte_prev_max` records waiting, in order of their keys (once
    /// those handed on before are taken: all are waiting).
    fn hand_on(&mut self) {
        debug_assert!(self.out == 0);
        if !self.sorted {
            // The per-CPU runs are merged (keys are unique: each has its offset).
            self.ents.make_contiguous().sort_by_key(|e| e.key);
            self.mixed = self.ents.len();
        }
        self.out = self.lte_prev_max;
        // What stays is the end of a sorted run.
        self.sorted = true;
    }
}

/// What a scan of a round knows of the keys read: the newest of the round before (`prev`)
/// and of this round (`cur`), how many are not newer than `prev`, the last, and whether
/// they came in order.
#[derive(Clone, Copy)]
struct Run {
    prev: Key,
    cur: Key,
    lte: usize,
    last: Key,
    in_order: bool,
}

impl Run {
    #[inline(always)]
    fn add(&mut self, e: Ent, ents: &mut std::collections::VecDeque<Ent>) {
        let k = e.key;
        if k <= self.prev {
            self.lte += 1;
        } else if k > self.cur {
            self.cur = k;
        }
        self.in_order &= self.last <= k;
        self.last = k;
        ents.push_back(e);
    }
}

/// The entry of a page fault read in the scan.
#[inline(always)]
fn fault_ent(key: Key, pid: u32, tid: u32, addr: u64, code: u64) -> Ent {
    Ent {
        key,
        what: (addr & !0xfff) | FAULT | u64::from(code & 2 != 0),
        ids: u64::from(pid) | (u64::from(tid) << 32),
    }
}

/// Where the fields of the samples a [`fault_run`] reads are in a sample's body, worked out
/// once per run.
#[derive(Clone, Copy)]
struct Layout {
    /// Of the id, and the value it must have (when the file has several attributes).
    id: Option<(usize, u64)>,
    time: usize,
    /// Of the `u32 pid, tid` word and of the raw data's `u32 size`.
    ids: usize,
    raw: usize,
    /// Of the fault's address and error code, in the raw data.
    addr: usize,
    code: usize,
    /// The least body that holds the id, time, `pid, tid` and the raw data's size.
    fixed: usize,
    /// The least raw data that holds the address and error code.
    need: usize,
}

impl Layout {
    fn of(id: Option<(usize, u64)>, time: usize, f: super::perf_data::FaultAt) -> Layout {
        let fixed =
            [id.map_or(0, |(at, _)| at + 8), time + 8, f.ids + 8, f.raw + 4].into_iter().max().unwrap_or(0);
        Layout {
            id,
            time,
            ids: f.ids,
            raw: f.raw,
            addr: f.addr,
            code: f.code,
            fixed,
            need: f.addr.max(f.code) + 8,
        }
    }
}

/// The 8 bytes of `b` at `at`, little-endian.
///
/// # Safety
/// `at + 8 <= b.len()`.
#[inline(always)]
unsafe fn word_at(b: &[u8], at: usize) -> u64 {
    debug_assert!(at + 8 <= b.len());
    // SAFETY: in `b` (the caller's promise); any bytes are a u64.
    u64::from_le(unsafe { b.as_ptr().add(at).cast::<u64>().read_unaligned() })
}

/// The 4 bytes of `b` at `at`, little-endian.
///
/// # Safety
/// `at + 4 <= b.len()`.
#[inline(always)]
unsafe fn u32_at(b: &[u8], at: usize) -> u32 {
    debug_assert!(at + 4 <= b.len());
    // SAFETY: in `b` (the caller's promise); any bytes are a u32.
    u32::from_le(unsafe { b.as_ptr().add(at).cast::<u32>().read_unaligned() })
}

/// [`Records::scan`] of the run of samples from `a` on that are read as the one before
/// was (most records): each with the id, time and page fault where `l` says (what
/// `FaultAt::read` reads, the same checks); up to the first other record, or the window's
/// end (`end`). Where it stopped.
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn fault_run(
    win: &[u8],
    base: u64,
    a: u64,
    end: u64,
    l: Layout,
    run: &mut Run,
    ents: &mut std::collections::VecDeque<Ent>,
) -> u64 {
    // The records whole in the window and the section: as `scan` bounds them.
    let Some(win) = win.get(..(end - base) as usize) else { return a };
    let mut r = *run;
    let mut o = (a - base) as usize;
    while let Some((h, _)) = win.get(o..).and_then(|rest| rest.split_first_chunk::<8>()) {
        let ty = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let size = usize::from(u16::from_le_bytes([h[6], h[7]]));
        if ty != SAMPLE || size < 8 {
            break;
        }
        let Some(rec) = win.get(o..o + size) else { break };
        let body = &rec[8..];
        if body.len() < l.fixed {
            break;
        }
        // SAFETY (each `word_at` of the fixed fields): below `l.fixed`, checked above.
        if let Some((at, want)) = l.id
            && unsafe { word_at(body, at) } != want
        {
            break;
        }
        let ts = unsafe { word_at(body, l.time) };
        let ids = unsafe { word_at(body, l.ids) };
        // A negative pid or tid: left to the general way.
        if ids & 0x8000_0000_8000_0000 != 0 {
            break;
        }
        // SAFETY: `l.raw + 4 <= l.fixed`, checked above.
        let raw_size = unsafe { u32_at(body, l.raw) } as usize;
        // The raw data: within the body (`l.raw + 4 <= body.len()`), and holding the
        // address and error code.
        let raw = l.raw + 4;
        if raw_size < l.need || raw_size > body.len() - raw {
            break;
        }
        // SAFETY: `raw + l.addr + 8` and `raw + l.code + 8` are at most `raw + l.need`, at
        // most `raw + raw_size`, within the body (checked above).
        let (addr, code) = unsafe { (word_at(body, raw + l.addr), word_at(body, raw + l.code)) };
        let at = base + o as u64;
        r.add(fault_ent(key(Some(ts), at), ids as u32, (ids >> 32) as u32, addr, code), ents);
        o += size;
    }
    *run = r;
    base + o as u64
}

/// The attribute of a record of the kernel's (type `ty`), by its id (`get_record_id`);
/// `last_id` caches the last id looked up.
#[inline]
fn attr_at(
    ids: &Ids,
    attr_of: &HashMap<u64, usize>,
    last_id: &mut Option<(u64, usize)>,
    ty: u32,
    body: &[u8],
) -> usize {
    match *ids {
        Ids::One => 0,
        Ids::Same(p) => id_at(ty, body, p).map_or(0, |id| match *last_id {
            Some((last, attr)) if last == id => attr,
            _ => {
                let attr = attr_of.get(&id).copied().unwrap_or(0);
                *last_id = Some((id, attr));
                attr
            }
        }),
        Ids::Identifier(all) => {
            let id = if ty == SAMPLE {
                u64_at(body, 0)
            } else if all {
                body.len().checked_sub(8).and_then(|i| u64_at(body, i))
            } else {
                None
            };
            id.and_then(|id| attr_of.get(&id).copied()).unwrap_or(0)
        }
    }
}

/// A record's id, where `p` says it is (`get_record_id`).
fn id_at(ty: u32, body: &[u8], p: RecordIdParseInfo) -> Option<u64> {
    if ty == SAMPLE {
        u64_at(body, usize::from(p.sample_record_id_offset_from_start?))
    } else {
        u64_at(body, body.len().checked_sub(usize::from(p.nonsample_record_id_offset_from_end?))?)
    }
}

/// A record's time, where its attribute says it is (`get_record_timestamp`).
fn time_at(ty: u32, body: &[u8], p: &RecordParseInfo) -> Option<u64> {
    if ty == SAMPLE {
        u64_at(body, usize::from(p.sample_record_time_offset_from_start?))
    } else {
        u64_at(body, body.len().checked_sub(usize::from(p.nonsample_record_time_offset_from_end?))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every record of the perf.data `bytes` in order (attribute, type, misc, body), read
    /// `read` bytes at a time.
    fn records(bytes: &[u8], read: usize) -> Vec<(usize, u32, u16, Vec<u8>)> {
        let file = linux_perf_data::PerfFileReader::parse_file(std::io::Cursor::new(bytes.to_vec()))
            .expect("a perf.data")
            .perf_file;
        let mut r = Records::new(Src::Read(Box::new(std::io::Cursor::new(bytes.to_vec()))), &file)
            .expect("its header")
            .expect("read by this reader");
        r.read = read;
        let mut out = Vec::new();
        while let Some((attr, rec)) = r.next().expect("its records") {
            let body = match rec.data {
                RawData::Single(b) => b.to_vec(),
                RawData::Split(a, b) => [a, b].concat(),
            };
            out.push((attr, rec.record_type.0, rec.misc, body));
        }
        out
    }

    /// Records as (attribute, type, misc, body).
    type Recs = Vec<(usize, u32, u16, Vec<u8>)>;

    /// Every record of `r` in order, or the error that ends them.
    fn all(mut r: Records) -> Result<Recs, String> {
        let mut out = Vec::new();
        while let Some((attr, rec)) = r.next()? {
            let RawData::Single(body) = rec.data else { panic!("records are read whole") };
            out.push((attr, rec.record_type.0, rec.misc, body.to_vec()));
        }
        Ok(out)
    }

    /// A file read in place (mapped) gives what one read into memory gives: the same
    /// records, or the same error when the header's data section runs past the file's end;
    /// a record across the section's end is read as far as the file goes, either way.
    #[test]
    fn a_mapped_file_reads_as_a_read_one() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/data/sort-threads.perf.data.zst");
        let bytes = zstd::decode_all(&std::fs::read(path).expect("the bundled recording")[..]).expect("zstd");
        let tmp = std::env::temp_dir().join(format!("anonmm-mapped-{}.data", std::process::id()));
        // The attributes, from the file as it is (the feature sections follow the data
        // section, where its header says it ends).
        let file = linux_perf_data::PerfFileReader::parse_file(std::io::Cursor::new(bytes.clone()))
            .expect("a perf.data")
            .perf_file;
        let size = u64::from_le_bytes(bytes[48..56].try_into().expect("8 bytes"));
        let mut seen = Vec::new();
        for new_size in [size, bytes.len() as u64, size - 50, size - 1] {
            let mut b = bytes.clone();
            b[48..56].copy_from_slice(&new_size.to_le_bytes());
            std::fs::write(&tmp, &b).expect("a temporary file");
            let read = Records::new(Src::Read(Box::new(std::io::Cursor::new(b))), &file)
                .expect("its header")
                .expect("read by this reader");
            let map = Mapped::of(&std::fs::File::open(&tmp).expect("the file")).expect("mapped");
            let mapped =
                Records::new(Src::Mapped(map), &file).expect("its header").expect("read by this reader");
            let (read, mapped) = (all(read), all(mapped));
            assert!(read == mapped, "data section of {new_size} bytes");
            seen.push(read.map(|r| r.len()));
        }
        let _ = std::fs::remove_file(&tmp);
        assert!(seen[0].as_ref().is_ok_and(|&n| n > 4000), "{seen:?}");
    }

    /// A mapped file larger than the pager's reach, read front to back while what is behind
    /// is released (by the pager, as it goes): every byte reads as the file has it.
    #[test]
    fn a_mapped_file_reads_whole_while_paged_in_and_out() {
        let len = 3 * PAGER_AHEAD + 12345;
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let tmp = std::env::temp_dir().join(format!("anonmm-paged-{}.data", std::process::id()));
        std::fs::write(&tmp, &data).expect("a temporary file");
        let map = Mapped::of(&std::fs::File::open(&tmp).expect("the file")).expect("mapped");
        assert!(map.pager.is_some());
        let step = RELEASE / 3;
        for at in (0..len).step_by(step) {
            let end = (at + step).min(len);
            assert!(map.bytes()[at..end] == data[at..end], "bytes {at}..{end}");
            map.release(0, end);
        }
        // Released pages read again are mapped again, the same.
        assert!(map.bytes()[..4096] == data[..4096]);
        drop(map);
        let _ = std::fs::remove_file(&tmp);
    }

    /// A window that must be compacted many times (and grown for records larger than a
    /// read) hands on the same records in the same order as one that never is.
    #[test]
    fn a_small_window_reads_the_same_records() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/data/sort-threads.perf.data.zst");
        let bytes = zstd::decode_all(&std::fs::read(path).expect("the bundled recording")[..]).expect("zstd");
        let whole = records(&bytes, READ);
        assert!(whole.len() > 4000, "{} records", whole.len());
        for read in [8, 100, 4096, 65536] {
            assert!(records(&bytes, read) == whole, "read {read} bytes at a time");
        }
    }
}
