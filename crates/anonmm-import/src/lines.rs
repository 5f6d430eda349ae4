//! `perf script` lines: the header every line starts with (`COMM PID/TID TIME: EVENT`), the
//! payloads the converter reads, and the chunked reader a streaming import splits a trace
//! with. Both the whole import (`perf`) and the streaming one (`stream`) use this module; it
//! uses neither.

use std::collections::VecDeque;
use std::io::Read;
use std::sync::mpsc::{Receiver, Sender, channel, sync_channel};

use rustc_hash::FxHashMap as HashMap;

use crate::abi;
use crate::script::Step;

/// A streaming import's reader as the converter (`perf::Conv`) sees it: asked to read one
/// more chunk into its queue when a line names a tid no line has shown yet (false at the end
/// of the trace). The reader is the stream's (`perf script` text, or a perf.data's records);
/// its owner takes it back by type (`as_any`), once a chunk, so the converter names neither.
pub(crate) trait ReadAhead: Send {
    /// Read one more chunk into the queue: false at the end of the trace.
    fn read_ahead(&mut self, tgid_of: &mut HashMap<u32, u32>) -> bool;
    /// The reader itself, for its owner to take back by type.
    fn as_any(&mut self) -> &mut dyn std::any::Any;
}

/// The fixed part of a perf line.
pub(crate) struct Header<'a> {
    pub(crate) pid: u32,
    pub(crate) tid: u32,
    /// After `TIME:`, trimmed.
    pub(crate) rest: &'a str,
    /// A well-formed `exceptions:page_fault_user` line's address and error code, read with
    /// the header (on the header threads): most lines of a trace are these.
    pub(crate) fault: Option<(u64, u64)>,
}

/// `address=0x... ip=0x... error_code=0x..` read in place (None if it is not exactly that
/// shape; the generic key lookup then decides).
pub(crate) fn fault_fields(payload: &str) -> Option<(u64, u64)> {
    let rest = payload.strip_prefix("address=")?;
    let (addr, _) = rest.split_once(' ')?;
    let (_, last) = rest.rsplit_once(' ')?;
    let code = last.strip_prefix("error_code=")?;
    Some((num(addr)?, num(code)?))
}

/// The headers of `lines` (None for a blank or garbled line). Header parsing is most of an
/// import's time and each line's is independent, so the two halves go to two threads.
pub(crate) fn headers_of<'a>(lines: &[&'a str]) -> Vec<Option<Header<'a>>> {
    let parse = |ls: &[&'a str]| ls.iter().map(|l| header_of(l)).collect::<Vec<_>>();
    if lines.len() < 100_000 {
        return parse(lines);
    }
    let (a, b) = lines.split_at(lines.len() / 2);
    std::thread::scope(|s| {
        let second = s.spawn(|| parse(b));
        let mut out = parse(a);
        match second.join() {
            Ok(rest) => out.extend(rest),
            Err(_) => out.extend(parse(b)),
        }
        out
    })
}

/// A line's header, with its fault fields if it is a page fault.
pub(crate) fn header_of(l: &str) -> Option<Header<'_>> {
    if let Some(h) = plain_header(l) {
        return Some(h);
    }
    let mut h = split_header(l)?;
    h.fault = fault_of(h.rest);
    Some(h)
}

/// The address and error code of a well-formed `exceptions:page_fault_user` event.
pub(crate) fn fault_of(rest: &str) -> Option<(u64, u64)> {
    // Compared as a fixed-size array, which compiles to a few word compares, not a call.
    const EVENT: &[u8; 27] = b"exceptions:page_fault_user:";
    let b = rest.as_bytes();
    let head: &[u8; 27] = b.get(..EVENT.len())?.try_into().ok()?;
    if head != EVENT || !b.get(EVENT.len())?.is_ascii_whitespace() {
        return None;
    }
    if let Some(f) = usual_fault(&b[EVENT.len()..]) {
        return Some(f);
    }
    let p = &rest[EVENT.len()..];
    let p = ascii_trimmed(p).unwrap_or_else(|| p.trim());
    plain_fault(p).or_else(|| fault_fields(p))
}

/// The usual payload, ` address=0xHEX ... error_code=0xHEX` after ASCII spaces: what
/// trimming and [`plain_fault`] read, in one pass; None for anything else, which they then
/// read.
fn usual_fault(b: &[u8]) -> Option<(u64, u64)> {
    let start = b.iter().position(|c| !c.is_ascii_whitespace())?;
    fault_digits(b[start..].strip_prefix(b"address=0x")?)
}

/// `HEX ... error_code=0xHEX` to the end, the address's digits first: the address from the
/// front, the code back from the end (the middle, `ip=...`, is not read, as [`plain_fault`]
/// does not read it either). At most 14 digits each, so no overflow to check; None for
/// anything else.
fn fault_digits(b: &[u8]) -> Option<(u64, u64)> {
    let (addr, used) = hex14(b);
    if used == 0 || b.get(used) != Some(&b' ') {
        return None;
    }
    let mut i = b.len();
    let mut code: u64 = 0;
    let mut shift = 0;
    while i > used && shift < 60 {
        let d = HEX[usize::from(b[i - 1])];
        if d == 0xff {
            break;
        }
        code |= u64::from(d) << shift;
        shift += 4;
        i -= 1;
    }
    const CODE: &[u8; 14] = b" error_code=0x";
    let head: &[u8; 14] = b.get(i.checked_sub(CODE.len())?..i)?.try_into().ok()?;
    (shift > 0 && shift < 60 && head == CODE).then_some((addr, code))
}

/// The hex digits at the start of `b`, when at most 14 (0 digits for more).
fn hex14(b: &[u8]) -> (u64, usize) {
    let Some(b) = b.first_chunk::<15>() else {
        return hex_prefixed(b).filter(|&(_, n)| n < 15).unwrap_or((0, 0));
    };
    let mut v: u64 = 0;
    for (n, &c) in b.iter().enumerate() {
        let d = HEX[usize::from(c)];
        if d == 0xff {
            return (v, n);
        }
        v = v << 4 | u64::from(d);
    }
    (0, 0)
}

/// `s.trim()` when its ends are plainly not whitespace (an ASCII graphic byte after leading
/// ASCII whitespace, and before trailing), found byte by byte; None otherwise.
pub(crate) fn ascii_trimmed(s: &str) -> Option<&str> {
    let b = s.as_bytes();
    let start = b.iter().position(|c| !c.is_ascii_whitespace())?;
    let end = b.iter().rposition(|c| !c.is_ascii_whitespace())? + 1;
    (b[start].is_ascii_graphic() && b[end - 1].is_ascii_graphic()).then(|| &s[start..end])
}

/// The header of a line of the usual shape, `COMM PID/TID SECS.FRAC: EVENT ...` with plain
/// spaces, no colon in COMM and ASCII at the ends of the rest, read byte by byte; None for
/// anything else, which [`split_header`] then reads (giving the same header for these).
/// Most lines of a trace are page faults: their fields are read here too.
pub(crate) fn plain_header(l: &str) -> Option<Header<'_>> {
    let (colon, _, pid, tid) = plain_prefix(l.as_bytes())?;
    plain_rest(l, colon, pid, tid)
}

/// The fixed part of a usual line up to its time, read back from the first colon: (the
/// colon, where the time starts, pid, tid).
fn plain_prefix(b: &[u8]) -> Option<(usize, usize, u32, u32)> {
    let colon = memchr::memchr(b':', b)?;
    // SECS.FRAC, back from the colon.
    let mut i = colon;
    let mut frac = 0;
    while i > 0 && b[i - 1].is_ascii_digit() {
        i -= 1;
        frac += 1;
    }
    if frac == 0 || i < 2 || b[i - 1] != b'.' {
        return None;
    }
    i -= 1;
    let secs_end = i;
    while i > 0 && b[i - 1].is_ascii_digit() {
        i -= 1;
    }
    if i == secs_end || i == 0 || b[i - 1] != b' ' {
        return None;
    }
    let secs = i;
    while i > 0 && b[i - 1] == b' ' {
        i -= 1;
    }
    // PID/TID.
    let tid_end = i;
    let (tid, at) = dec_back(b, tid_end)?;
    if at == 0 || b[at - 1] != b'/' {
        return None;
    }
    let (pid, at) = dec_back(b, at - 1)?;
    if at > 0 && b[at - 1] != b' ' {
        return None;
    }
    Some((colon, secs, pid, tid))
}

/// A usual line's header from its time's colon on.
fn plain_rest(l: &str, colon: usize, pid: u32, tid: u32) -> Option<Header<'_>> {
    let b = l.as_bytes();
    if b.get(colon + 1).is_some_and(|&c| c != b' ') {
        return None;
    }
    // The rest, trimmed: only when its ends are plainly not whitespace.
    let mut r = colon + 1;
    while b.get(r) == Some(&b' ') {
        r += 1;
    }
    let (&first, &last) = (b.get(r)?, b.last()?);
    if !(first.is_ascii_graphic() && last.is_ascii_graphic()) {
        return None;
    }
    let rest = &l[r..];
    Some(Header { pid, tid, rest, fault: fault_of(rest) })
}

/// The start of the last usual line read (`COMM PID/TID ` up to its time) with its pid and
/// tid. A task's lines start alike, so a line that starts with the same bytes has the same
/// pid and tid, and only its time and rest are left to read: a third of a fault line's
/// reading, without the scan back from the colon.
/// Its middle too, when it was a usual page fault: from the time's colon to the address's
/// digits (`:   exceptions:page_fault_user: address=0x`), the same on every fault line.
#[derive(Clone, Default)]
pub(crate) struct LastPrefix {
    bytes: Vec<u8>,
    pid: u32,
    tid: u32,
    middle: Vec<u8>,
    /// Where the rest starts in `middle`.
    rest_at: usize,
}

/// [`header_of`], reading a line that starts as the last usual line did from its time on;
/// the flag says it did (so its tid was seen with that line).
pub(crate) fn header_with<'a>(l: &'a str, last: &mut LastPrefix) -> (Option<Header<'a>>, bool) {
    let b = l.as_bytes();
    let n = last.bytes.len();
    if n > 0
        && b.len() > n
        && b[..n] == last.bytes[..]
        && let Some(colon) = time_at(b, n)
    {
        // The same middle: a page fault (what `plain_rest` and `fault_of` find, read as
        // they read it from the address's digits on).
        let m = colon + last.middle.len();
        if !last.middle.is_empty()
            && b.get(colon..m) == Some(&last.middle[..])
            && let Some(fault) = fault_digits(&b[m..])
        {
            let rest = &l[colon + last.rest_at..];
            return (Some(Header { pid: last.pid, tid: last.tid, rest, fault: Some(fault) }), true);
        }
        if let Some(h) = plain_rest(l, colon, last.pid, last.tid) {
            last.note_middle(l, colon, &h);
            return (Some(h), true);
        }
    }
    if let Some((colon, secs, pid, tid)) = plain_prefix(b)
        && let Some(h) = plain_rest(l, colon, pid, tid)
    {
        last.bytes.clear();
        last.bytes.extend_from_slice(&b[..secs]);
        (last.pid, last.tid) = (pid, tid);
        last.note_middle(l, colon, &h);
        return (Some(h), false);
    }
    (header_of(l), false)
}

impl LastPrefix {
    /// Keep the middle of `h`, a usual line's header, if it is a usual page fault.
    fn note_middle(&mut self, l: &str, colon: usize, h: &Header<'_>) {
        let b = l.as_bytes();
        let rest_at = h.rest.as_ptr() as usize - l.as_ptr() as usize;
        let event = rest_at + 27;
        let Some(ws) = b.get(event..).and_then(|p| p.iter().position(|c| !c.is_ascii_whitespace())) else {
            return;
        };
        let digits = event + ws + b"address=0x".len();
        if h.fault.is_some()
            && b[event + ws..].starts_with(b"address=0x")
            && b.get(digits..).and_then(fault_digits) == h.fault
        {
            self.middle.clear();
            self.middle.extend_from_slice(&b[colon..digits]);
            self.rest_at = rest_at - colon;
        }
    }
}

impl LastPrefix {
    /// The page fault whose line starts at `at` in `b`, when [`header_with`] reads it as one
    /// of the last usual line's task from its time on and it has the usual shape
    /// (`address=0xHEX ip=0xHEX error_code=0xHEX`, ending in a newline or at the end of
    /// `b`): where the next line starts, the tid (not 0), the address and the error code.
    /// One pass finds the digits and the newline together; what is compared here equals
    /// valid text and the rest is ASCII, so the line needs no checking as UTF-8. None for
    /// anything else, which `header_with` then reads.
    #[inline]
    pub(crate) fn fault_at(&self, b: &[u8], at: usize) -> Option<(usize, u32, u64, u64)> {
        let n = self.bytes.len();
        if n == 0 || self.middle.is_empty() || self.tid == 0 {
            return None;
        }
        let p = b.get(at..)?;
        if !same(p.get(..n)?, &self.bytes) {
            return None;
        }
        let colon = time_at(p, n)?;
        let m = colon + self.middle.len();
        if !same(p.get(colon..m)?, &self.middle) {
            return None;
        }
        let (addr, i) = hex_to(p, m)?;
        if p.get(i..i + 6)? != b" ip=0x" {
            return None;
        }
        let i = hex_end(p, i + 6)?;
        const CODE: &[u8; 14] = b" error_code=0x";
        let head: &[u8; 14] = p.get(i..i + 14)?.try_into().ok()?;
        if head != CODE {
            return None;
        }
        let (code, end) = hex_to(p, i + 14)?;
        let next = match p.get(end) {
            Some(b'\n') => end + 1,
            None => end,
            Some(_) => return None,
        };
        Some((at + next, self.tid, addr, code))
    }
}

/// Whether `a` and `b` (short) are equal, compared a word at a time (a call to `memcmp`
/// cost more than the compare).
#[inline(always)]
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let word = |s: &[u8], i: usize| u64::from_le_bytes(s[i..i + 8].try_into().unwrap_or_default());
    let n = a.len();
    if n < 8 {
        return a == b;
    }
    let mut i = 0;
    while i + 8 <= n {
        if word(a, i) != word(b, i) {
            return false;
        }
        i += 8;
    }
    // The last word, overlapping the one before.
    word(a, n - 8) == word(b, n - 8)
}

/// The hex digits from `at` on, when there are 1 to 14 of them: their value, and where they
/// end.
#[inline]
fn hex_to(p: &[u8], at: usize) -> Option<(u64, usize)> {
    let Some(w) = p.get(at..at + 16).and_then(|w| <&[u8; 16]>::try_from(w).ok()) else {
        // Near the end of the text.
        return hex_prefixed(p.get(at..)?).filter(|&(_, n)| n <= 14).map(|(v, n)| (v, at + n));
    };
    let mut v: u64 = 0;
    for (n, &c) in w.iter().enumerate().take(15) {
        let d = HEX[usize::from(c)];
        if d == 0xff {
            return (n > 0).then_some((v, at + n));
        }
        v = v << 4 | u64::from(d);
    }
    None
}

/// Where the hex digits from `at` on end, when there are 1 to 15 of them and 16 bytes from
/// `at` on to read them in.
#[inline]
fn hex_end(p: &[u8], at: usize) -> Option<usize> {
    let w: &[u8; 16] = p.get(at..at + 16)?.try_into().ok()?;
    let n = w.iter().position(|&c| HEX[usize::from(c)] == 0xff)?;
    (n > 0).then_some(at + n)
}

/// `SECS.FRAC:` from `at` on: where its colon is. After a usual line's prefix (which ends
/// in a space and holds no colon) this is the time [`plain_prefix`] finds back from the
/// first colon.
#[inline]
fn time_at(b: &[u8], at: usize) -> Option<usize> {
    let i = digits_from(b, at);
    if i == at || b.get(i) != Some(&b'.') {
        return None;
    }
    let frac = i + 1;
    let i = digits_from(b, frac);
    (i > frac && b.get(i) == Some(&b':')).then_some(i)
}

/// Where the run of ASCII digits from `at` ends, eight bytes at a time.
#[inline]
fn digits_from(b: &[u8], at: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let mut i = at;
    while let Some(w) = b.get(i..i + 8) {
        let x = u64::from_le_bytes(w.try_into().unwrap_or_default());
        // A byte below '0' borrows, one above '9' carries into its top bit; either only
        // disturbs the bytes after it, so the lowest flagged byte is the first non-digit.
        let t = (x.wrapping_sub(0x30 * ONES) | x.wrapping_add(0x46 * ONES)) & (0x80 * ONES);
        if t != 0 {
            return i + (t.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    i
}

/// The decimal number (at most 9 digits, so it fits a u32) that ends at `end`, and where it
/// starts.
pub(crate) fn dec_back(b: &[u8], end: usize) -> Option<(u32, usize)> {
    let mut i = end;
    let mut v: u32 = 0;
    let mut scale: u32 = 1;
    while i > 0 && b[i - 1].is_ascii_digit() {
        if end - i == 9 {
            return None;
        }
        i -= 1;
        v += u32::from(b[i] - b'0') * scale;
        scale = scale.wrapping_mul(10);
    }
    (i < end).then_some((v, i))
}

/// `address=0xHEX ... error_code=0xHEX` with plain hex numbers (None for anything else).
pub(crate) fn plain_fault(p: &str) -> Option<(u64, u64)> {
    let b = p.as_bytes();
    let (addr, used) = hex_prefixed(b.strip_prefix(b"address=0x")?)?;
    if b.get(10 + used) != Some(&b' ') {
        return None;
    }
    let last = memchr::memrchr(b' ', b)?;
    let (code, used) = hex_prefixed(b[last + 1..].strip_prefix(b"error_code=0x")?)?;
    (last + 1 + 13 + used == b.len()).then_some((addr, code))
}

/// The hex digits at the start of `b` as a number (None if none, or if it overflows), and
/// how many there were.
pub(crate) fn hex_prefixed(b: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    let mut n = 0;
    // Fifteen digits always fit: no overflow check for them.
    while let Some(&c) = b.get(n).filter(|_| n < 15) {
        let d = HEX[usize::from(c)];
        if d == 0xff {
            return (n > 0).then_some((v, n));
        }
        v = v << 4 | u64::from(d);
        n += 1;
    }
    for &c in &b[n..] {
        let d = HEX[usize::from(c)];
        if d == 0xff {
            break;
        }
        // Past sixteen digits only leading zeros may have come first.
        v = v.checked_mul(16)? | u64::from(d);
        n += 1;
    }
    (n > 0).then_some((v, n))
}

/// The value of each hex digit, 0xff for other bytes.
pub(crate) const HEX: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// The header is the first `PID/TID TIME:` pair of words (the command before it may hold
/// spaces and colons). Only a word ending in `:` can be the time, so the search jumps from
/// colon to colon: this runs once or twice per line of traces of millions of lines.
pub(crate) fn split_header(s: &str) -> Option<Header<'_>> {
    let b = s.as_bytes();
    let ws = |c: u8| c.is_ascii_whitespace();
    let mut from = 0;
    while let Some(off) = b[from..].iter().position(|&c| c == b':') {
        let colon = from + off;
        from = colon + 1;
        if b.get(colon + 1).is_some_and(|&c| !ws(c)) {
            continue;
        }
        let tstart = b[..colon].iter().rposition(|&c| ws(c)).map_or(0, |i| i + 1);
        if !is_time_colon(&s[tstart..=colon]) {
            continue;
        }
        let before = &b[..tstart];
        let Some(pend) = before.iter().rposition(|&c| !ws(c)).map(|i| i + 1) else { continue };
        let pstart = before[..pend].iter().rposition(|&c| ws(c)).map_or(0, |i| i + 1);
        if let Some((pid, tid)) = pid_tid(&s[pstart..pend]) {
            return Some(Header { pid, tid, rest: s[colon + 1..].trim(), fault: None });
        }
    }
    None
}

/// `8742/8750`.
pub(crate) fn pid_tid(w: &str) -> Option<(u32, u32)> {
    let (p, t) = w.split_once('/')?;
    Some((dec_u32(p)?, dec_u32(t)?))
}

pub(crate) fn dec_u32(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `1009.601168:`.
pub(crate) fn is_time_colon(w: &str) -> bool {
    let Some(t) = w.strip_suffix(':') else {
        return false;
    };
    let Some((a, b)) = t.split_once('.') else {
        return false;
    };
    !a.is_empty()
        && !b.is_empty()
        && a.bytes().all(|c| c.is_ascii_digit())
        && b.bytes().all(|c| c.is_ascii_digit())
}

/// `0x1f` or `31`.
pub(crate) fn num(s: &str) -> Option<u64> {
    let s = ascii_trimmed(s).unwrap_or_else(|| s.trim());
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        if h.is_empty() || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        // All of them hex digits: `u64::from_str_radix(h, 16)`.
        hex_prefixed(h.as_bytes()).map(|(v, _)| v)
    } else {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    }
}

/// A file descriptor: the kernel takes it as an `int` (`ksys_mmap_pgoff` → `fget(unsigned
/// int)`, `close_fd(unsigned int)`), ignoring the upper 32 bits of the register, which
/// callers leave with junk in them; `0xffffffff` is -1.
pub(crate) fn fd_of(v: u64) -> i64 {
    i64::from(v as u32 as i32)
}

/// One `PERF_RECORD_MMAP2` line: `PID/TID: [ADDR(LEN) @ PGOFF MAJ:MIN INO GEN]: PERMS NAME`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MapRec {
    pub(crate) tid: u32,
    pub(crate) addr: u64,
    pub(crate) len: u64,
    /// In bytes, as perf prints it.
    pub(crate) pgoff: u64,
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    pub(crate) prot: u64,
    pub(crate) shared: bool,
    pub(crate) name: String,
}

impl MapRec {
    /// Memory no file backs (perf's `//anon`, or no name).
    pub(crate) fn is_anon(&self) -> bool {
        self.name.is_empty() || self.name == "//anon"
    }
    pub(crate) fn is_special(&self) -> bool {
        self.name.starts_with('[')
    }
}

pub(crate) fn parse_mmap2(rest: &str) -> Result<MapRec, String> {
    let bad = |what: &str| format!("PERF_RECORD_MMAP2: {what}");
    let r = rest.strip_prefix("PERF_RECORD_MMAP2").unwrap_or(rest).trim_start();
    let (pt, r) = split_str(r, ": [").ok_or_else(|| bad("expected `PID/TID: [`"))?;
    let (_, tid) = pid_tid(pt.trim()).ok_or_else(|| bad("bad PID/TID"))?;
    let (inside, r) = split_str(r, "]: ").ok_or_else(|| bad("expected `]: PERMS NAME`"))?;
    let (range, meta) = split_str(inside, " @ ").ok_or_else(|| bad("expected `ADDR(LEN) @ ...`"))?;
    let (addr, len) =
        range.strip_suffix(')').and_then(|r| r.split_once('(')).ok_or_else(|| bad("expected `ADDR(LEN)`"))?;
    let addr = num(addr).ok_or_else(|| bad("bad address"))?;
    let len = num(len).ok_or_else(|| bad("bad length"))?;
    let mut meta = meta.split_whitespace();
    let (Some(pgoff), Some(dev), Some(ino), Some(_gen), None) =
        (meta.next(), meta.next(), meta.next(), meta.next(), meta.next())
    else {
        return Err(bad("expected `PGOFF MAJ:MIN INO GEN`"));
    };
    let pgoff = num(pgoff).ok_or_else(|| bad("bad pgoff"))?;
    let (maj, min) = dev
        .split_once(':')
        .and_then(|(a, b)| Some((u64::from_str_radix(a, 16).ok()?, u64::from_str_radix(b, 16).ok()?)))
        .ok_or_else(|| bad("bad MAJ:MIN"))?;
    let ino = num(ino).ok_or_else(|| bad("bad inode"))?;
    let perms = r
        .get(..4)
        .filter(|_| r[4..].is_empty() || r[4..].starts_with(' '))
        .ok_or_else(|| bad("bad permissions"))?;
    let p = perms.as_bytes();
    let flag = |i: usize, yes: u8, bit: u64| match p[i] {
        c if c == yes => Ok(bit),
        b'-' => Ok(0),
        _ => Err(bad("bad permissions")),
    };
    let prot =
        flag(0, b'r', abi::PROT_READ)? | flag(1, b'w', abi::PROT_WRITE)? | flag(2, b'x', abi::PROT_EXEC)?;
    let shared = match p[3] {
        b's' => true,
        b'p' => false,
        _ => return Err(bad("bad permissions")),
    };
    Ok(MapRec {
        tid,
        addr,
        len,
        pgoff,
        dev: (maj << 8) | min,
        ino,
        prot,
        shared,
        name: r[4..].trim().to_string(),
    })
}

/// `name: 0x..., name: 0x...` as the syscall tracepoints print their arguments.
pub(crate) fn parse_args(payload: &str) -> Result<Vec<(&str, u64)>, String> {
    let payload = payload.trim();
    if payload.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::with_capacity(6);
    let mut rest = payload;
    loop {
        let (a, next) = match split_str(rest, ", ") {
            Some((a, n)) => (a, Some(n)),
            None => (rest, None),
        };
        let (k, v) = split_str(a, ": ").ok_or_else(|| format!("expected `NAME: VALUE`, found `{a}`"))?;
        let v = num(v).ok_or_else(|| format!("bad number `{}` for {k}", v.trim()))?;
        out.push((k.trim(), v));
        match next {
            Some(n) => rest = n,
            None => return Ok(out),
        }
    }
}

/// `s.split_once(pat)` for a short ASCII `pat`, found by a search for its first byte: a
/// search for a string pattern costs more to set up than these short lines take to read.
pub(crate) fn split_str<'a>(s: &'a str, pat: &str) -> Option<(&'a str, &'a str)> {
    let (b, p) = (s.as_bytes(), pat.as_bytes());
    let mut from = 0;
    while let Some(i) = memchr::memchr(*p.first()?, &b[from..]) {
        let i = from + i;
        if b[i..].starts_with(p) {
            // At an ASCII byte, and after ASCII bytes: both are character boundaries.
            return Some((s.get(..i)?, s.get(i + p.len()..)?));
        }
        from = i + 1;
    }
    None
}

/// A `key=value` of a sched event; the value runs to the next space.
pub(crate) fn kv<'a>(payload: &'a str, key: &str) -> Option<&'a str> {
    payload.split(' ').filter_map(|w| w.strip_prefix(key)?.strip_prefix('=')).next_back()
}

/// A line of a chunk, as the converter needs it.
#[derive(Clone, Copy)]
pub(crate) enum LineRec {
    /// A page fault of a task other than 0: all its line says (its text is not kept).
    Fault { tid: u32, addr: u64, code: u64 },
    /// Any other line: where it is in the chunk's `text`, and its header (offsets into it).
    Other { start: usize, end: usize, head: Option<Head> },
}

#[derive(Clone, Copy)]
pub(crate) struct Head {
    pub(crate) pid: u32,
    pub(crate) tid: u32,
    pub(crate) rest: (usize, usize),
    pub(crate) fault: Option<(u64, u64)>,
}

/// Whole lines of the trace, with their headers parsed.
pub(crate) struct Chunk {
    /// The lines as read, for their buffer to be reused.
    bytes: Vec<u8>,
    /// The text of the lines that are not page faults, one after another (invalid UTF-8
    /// replaced as a conversion of the whole text replaces it): most lines are faults, read
    /// from their bytes, which need no checking as UTF-8.
    pub(crate) text: String,
    /// Number of the first line (1-based).
    pub(crate) first_line: usize,
    pub(crate) lines: Vec<LineRec>,
}

/// Reads whole lines: fills a buffer from the reader to about `chunk` bytes and cuts it
/// after its last newline, keeping the rest for the next.
struct Filler {
    reader: Box<dyn Read + Send>,
    chunk: usize,
    /// The start of a line the last chunk cut.
    tail: Vec<u8>,
    eof: bool,
    /// Why decompression stopped early, if it did.
    problem: Option<String>,
}

impl Filler {
    /// The next whole lines (the rest at the end of the trace) in `buf`, a recycled buffer
    /// whose old bytes are overwritten (zeroing a whole chunk again before every read cost a
    /// twentieth of the import thread); None at the end.
    fn fill(&mut self, mut buf: Vec<u8>) -> Option<Vec<u8>> {
        if self.eof && self.tail.is_empty() {
            return None;
        }
        let mut filled = self.tail.len();
        if buf.len() < filled {
            buf.resize(filled, 0);
        }
        buf[..filled].copy_from_slice(&self.tail);
        self.tail.clear();
        let cut = loop {
            if !self.eof {
                let want = filled.max(self.chunk) + (self.chunk >> 4).max(1);
                if buf.len() < want {
                    buf.resize(want, 0);
                }
                while filled < want && !self.eof {
                    match self.reader.read(&mut buf[filled..want]) {
                        Ok(0) => self.eof = true,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            // A recording cut short: keep what was decompressed.
                            self.problem = Some(e.to_string());
                            self.eof = true;
                        }
                    }
                }
            }
            if self.eof {
                break filled;
            }
            // A line longer than a chunk makes the chunk longer.
            if let Some(i) = memchr::memrchr(b'\n', &buf[..filled]) {
                break i + 1;
            }
        };
        self.tail.extend_from_slice(&buf[cut..filled]);
        buf.truncate(cut);
        (!buf.is_empty() || !self.tail.is_empty()).then_some(buf)
    }
}

/// What a filler thread hands on: whole lines, or the end (and why it came early, if it
/// did).
enum Filled {
    Lines(Vec<u8>),
    End(Option<String>),
}

/// Where the chunks' bytes come from.
enum Feed {
    /// Read on the converter's thread (plain text: reading it is a copy).
    Here(Filler),
    /// Read on a thread of its own (decompression, a third of a compressed trace's import):
    /// the buffers it fills are parsed as they are, and go back to it to be filled again.
    Thread { rx: Receiver<Filled>, back: Sender<Vec<u8>> },
    /// At the end.
    Ended,
}

/// Chunks a filler thread may have ready.
const FILLED_AHEAD: usize = 2;

/// The reader: reads chunks of whole lines and parses their headers, noting each tid's
/// thread group in order; chunks read ahead wait in a queue.
pub(crate) struct Source {
    feed: Feed,
    pub(crate) next_line: usize,
    /// Why decompression stopped early, if it did (known at the end).
    pub(crate) problem: Option<String>,
    pub(crate) queue: VecDeque<Chunk>,
    /// Buffers of converted chunks, reused: fresh ones cost a page fault per 4 KiB.
    spare: Vec<(Vec<u8>, String, Vec<LineRec>)>,
    /// The start of the last usual line, to read the next of its task's lines faster.
    pub(crate) last: LastPrefix,
}

impl Source {
    /// Read `reader` on the converter's thread, in chunks of about `chunk` bytes.
    pub(crate) fn new(reader: Box<dyn Read + Send>, chunk: usize) -> Source {
        let filler = Filler { reader, chunk, tail: Vec::new(), eof: false, problem: None };
        Source {
            feed: Feed::Here(filler),
            next_line: 1,
            problem: None,
            queue: VecDeque::new(),
            spare: Vec::new(),
            last: LastPrefix::default(),
        }
    }

    /// Read `reader` (a decompressor) on a thread of its own, so that decompressing, parsing
    /// and a replay share the cores; None if the thread cannot start.
    pub(crate) fn threaded(reader: Box<dyn Read + Send>, chunk: usize) -> Option<Source> {
        let mut filler = Filler { reader, chunk, tail: Vec::new(), eof: false, problem: None };
        let (tx, rx) = sync_channel(FILLED_AHEAD);
        let (back, recycled) = channel::<Vec<u8>>();
        let run = move || {
            loop {
                let buf = recycled.try_recv().unwrap_or_default();
                let (msg, end) = match filler.fill(buf) {
                    Some(b) => (Filled::Lines(b), false),
                    None => (Filled::End(filler.problem.take()), true),
                };
                // At the end, or nobody reads any more: stop.
                if tx.send(msg).is_err() || end {
                    return;
                }
            }
        };
        std::thread::Builder::new().name("anonmm-unzstd".to_string()).spawn(run).ok()?;
        let mut s = Source::new(Box::new(std::io::empty()), chunk);
        s.feed = Feed::Thread { rx, back };
        Some(s)
    }

    /// The next chunk in order.
    pub(crate) fn next(&mut self, tgid_of: &mut HashMap<u32, u32>) -> Option<Chunk> {
        if self.queue.is_empty() {
            self.read_ahead(tgid_of);
        }
        self.queue.pop_front()
    }

    pub(crate) fn give_back(&mut self, c: Chunk) {
        let Chunk { bytes, text, lines, .. } = c;
        let bytes = match &self.feed {
            // The filler thread fills it again.
            Feed::Thread { back, .. } => {
                let _ = back.send(bytes);
                Vec::new()
            }
            _ => bytes,
        };
        if self.spare.len() < 4 {
            self.spare.push((bytes, text, lines));
        }
    }

    /// The next bytes of whole lines, read here or by the filler thread; None at the end.
    fn fill(&mut self, spare: Vec<u8>) -> Option<Vec<u8>> {
        let got = match &mut self.feed {
            Feed::Here(f) => f.fill(spare).ok_or_else(|| f.problem.take()),
            Feed::Thread { rx, .. } => match rx.recv() {
                Ok(Filled::Lines(b)) => Ok(b),
                Ok(Filled::End(problem)) => Err(problem),
                // The thread is gone: a bug in the reader.
                Err(_) => Err(Some("the reading thread stopped".to_string())),
            },
            Feed::Ended => Err(None),
        };
        got.map_err(|problem| {
            if problem.is_some() {
                self.problem = problem;
            }
            self.feed = Feed::Ended;
        })
        .ok()
    }

    /// Read, split and parse one more chunk into the queue: false at the end of the trace.
    pub(crate) fn read_ahead(&mut self, tgid_of: &mut HashMap<u32, u32>) -> bool {
        let (spare, mut text, mut lines) = self.spare.pop().unwrap_or_default();
        let Some(bytes) = self.fill(spare) else {
            return false;
        };
        text.clear();
        lines.clear();
        let b = &bytes[..];
        let mut start = 0;
        while start < b.len() {
            // Most lines: a page fault of the task of the line before.
            if let Some((next, tid, addr, code)) = self.last.fault_at(b, start) {
                lines.push(LineRec::Fault { tid, addr, code });
                start = next;
                continue;
            }
            // `str::lines`, with a vectorised search for the newline.
            let (end, next) = match memchr::memchr(b'\n', &b[start..]) {
                Some(i) => (start + i, start + i + 1),
                None => (b.len(), b.len()),
            };
            let mut lb = &b[start..end];
            if end < b.len() {
                lb = lb.strip_suffix(b"\r").unwrap_or(lb);
            }
            start = next;
            // Lines end at a newline, so a lossy conversion replaces exactly what a
            // conversion of the whole text would.
            let l = match std::str::from_utf8(lb) {
                Ok(l) => std::borrow::Cow::Borrowed(l),
                // Much slower, and never needed by a real trace.
                Err(_) => String::from_utf8_lossy(lb),
            };
            let (head, seen) = header_with(&l, &mut self.last);
            if let Some(h) = &head
                && h.tid != 0
                && !seen
            {
                // A line that starts as the last usual one has its tid, entered then.
                tgid_of.entry(h.tid).or_insert(h.pid);
            }
            if let Some(Header { tid, fault: Some((addr, code)), .. }) = head
                && tid != 0
            {
                lines.push(LineRec::Fault { tid, addr, code });
                continue;
            }
            let at = text.len();
            let head = head.map(|h| {
                let rs = at + (h.rest.as_ptr() as usize - l.as_ptr() as usize);
                Head { pid: h.pid, tid: h.tid, rest: (rs, rs + h.rest.len()), fault: h.fault }
            });
            text.push_str(&l);
            lines.push(LineRec::Other { start: at, end: text.len(), head });
        }
        let first_line = self.next_line;
        self.next_line += lines.len();
        self.queue.push_back(Chunk { bytes, text, first_line, lines });
        true
    }

    /// The first chunk read ahead, as text (to tell whether it is perf text).
    pub(crate) fn first_text(&self) -> Option<std::borrow::Cow<'_, str>> {
        self.queue.front().map(|c| String::from_utf8_lossy(&c.bytes))
    }
}

/// A step as a stream hands it on: a page fault (most of a trace) in 32 bytes, anything
/// else boxed, so that little memory crosses from the import thread's cache to the
/// replay's.
#[derive(Clone, Debug)]
pub enum Streamed {
    /// A `touch` step without text or expected result, as the converter makes page faults.
    Fault {
        /// The step's line.
        line: usize,
        /// Who faulted.
        pid: crate::types::Pid,
        /// The touched range.
        addr: u64,
        /// Its length.
        len: u64,
        /// Whether it was a write.
        write: bool,
    },
    /// Any other step.
    Step(Box<Step>),
}

impl Streamed {
    pub(crate) fn of(s: Step) -> Streamed {
        match s.call {
            crate::script::Call::Touch { addr, len, write } if s.text.is_empty() && s.expect.is_none() => {
                Streamed::Fault { line: s.line, pid: s.pid, addr, len, write }
            }
            _ => Streamed::Step(Box::new(s)),
        }
    }

    /// The step itself, for a whole import's script.
    pub(crate) fn into_step(self) -> Step {
        match self {
            Streamed::Fault { line, pid, addr, len, write } => Step {
                line,
                pid,
                call: crate::script::Call::Touch { addr, len, write },
                text: String::new(),
                expect: None,
            },
            Streamed::Step(s) => *s,
        }
    }

    /// The step, to edit it; None for a fault, which no later line edits.
    pub(crate) fn as_step_mut(&mut self) -> Option<&mut Step> {
        match self {
            Streamed::Fault { .. } => None,
            Streamed::Step(s) => Some(s),
        }
    }

    /// The step's expected result (a fault has none).
    pub(crate) fn expect(&self) -> Option<crate::script::Expect> {
        match self {
            Streamed::Fault { .. } => None,
            Streamed::Step(s) => s.expect,
        }
    }

    /// The step (made on the spot for a fault).
    pub fn step(&self) -> std::borrow::Cow<'_, Step> {
        match self {
            &Streamed::Fault { line, pid, addr, len, write } => std::borrow::Cow::Owned(Step {
                line,
                pid,
                call: crate::script::Call::Touch { addr, len, write },
                text: String::new(),
                expect: None,
            }),
            Streamed::Step(s) => std::borrow::Cow::Borrowed(s),
        }
    }
}
