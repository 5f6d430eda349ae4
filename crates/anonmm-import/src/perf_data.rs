//! Read `perf.data` itself, so that a recording needs no `perf script` run.
//!
//! A `perf.data` file (magic `PERFILE2`, also zstd-compressed as a whole, and with perf's own
//! `-z` compression inside) is turned into the very lines `perf script --show-mmap-events -F
//! comm,pid,tid,time,event,trace` prints for it, and those go through the same converter as
//! `perf script` text: the same recording gives the same steps, line for line, either way.
//!
//! The file format (header, feature sections, event attributes and their ids, records,
//! `PERF_RECORD_COMPRESSED`, and the ordering by time that perf does with
//! `PERF_RECORD_FINISHED_ROUND`) is read by the `linux-perf-data` crate. What no crate reads
//! is done here: the tracing-data feature section (the tracefs `format` files perf stored at
//! record time: each tracepoint's id, field names, offsets, sizes and print format), and the
//! printing of a tracepoint sample by its print format, as libtraceevent prints it. No
//! offset is hard-coded: they differ between kernels.
//!
//! What `perf script` does not print without extra options (COMM, FORK, EXIT records) makes no
//! line here either; COMM and FORK only name the command shown at the head of a line.
//! `PERF_RECORD_LOST` makes no line (as in `perf script`) but is counted in the report's
//! `lost`, and a file cut short is reported, with everything before the cut kept.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{Read, Seek};
use std::sync::{Arc, Mutex};

use linux_perf_data::linux_perf_event_reader::{
    EventRecord, PerfEventType, RawData, RecordType, SampleFormat,
};
use linux_perf_data::{PerfFileReader, PerfFileRecord};
use rustc_hash::FxHashMap as HashMap;

use super::lines::ReadAhead;
use super::perf::{Conv, Event};
use super::perf_records::{FAULT, WRITE};

/// The magic at the start of a `perf.data` file (little-endian; `2ELIFREP` big-endian).
pub const PERF_MAGIC: &[u8; 8] = b"PERFILE2";

/// Whether `head` (the first bytes of a file, decompressed) is a `perf.data` file.
pub fn is_perf_data(head: &[u8]) -> bool {
    head.starts_with(PERF_MAGIC) || head.starts_with(b"2ELIFREP")
}

/// What the reader found besides the lines: lost events and damage. Shared with the
/// converter's report, which is made on another thread.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SideReport {
    /// Events the kernel dropped (`PERF_RECORD_LOST`), and samples (`LOST_SAMPLES`).
    pub lost: u64,
    /// What was wrong with the file, as `file:0: reason`.
    pub problems: Vec<String>,
}

/// A shared [`SideReport`].
pub type Side = Arc<Mutex<SideReport>>;

/// Merge what the reader found into an import's report.
pub(crate) fn add_side(report: &mut super::ImportReport, side: &Side) {
    let s = side.lock().map(|s| s.clone()).unwrap_or_default();
    add_side_report(report, s);
}

/// Merge `s` into an import's report.
pub(crate) fn add_side_report(report: &mut super::ImportReport, s: SideReport) {
    report.lost = report.lost.saturating_add(s.lost);
    for p in s.problems {
        *report.skipped.entry("rest of a damaged perf.data".to_string()).or_default() += 1;
        report.problems.push(p);
    }
}

/// A source the `perf.data` reader can read: a file, or a decompressed one in memory.
pub trait Input: Read + Seek + Send {}
impl<T: Read + Seek + Send> Input for T {}

// ---------------------------------------------------------------------------------------------
// Tracepoint formats

/// One field of a tracepoint's record, as its `format` file describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    /// Its name (`addr`, `child_pid`, ...).
    pub name: String,
    /// Where it is in the raw record.
    pub offset: usize,
    /// Its size in bytes.
    pub size: usize,
    /// Whether it is signed.
    pub signed: bool,
    /// `__data_loc`: a 32-bit (length << 16 | offset) to the data.
    pub data_loc: bool,
    /// A `char` array (printed as a string).
    pub chars: bool,
}

/// A tracepoint's `format`: its id, name and fields, and how it prints.
#[derive(Clone, Debug)]
pub struct EventFormat {
    /// `syscalls`, `sched`, ...
    pub system: String,
    /// `sys_enter_mmap`, ...
    pub name: String,
    /// The id `perf_event_attr::config` holds.
    pub id: u64,
    /// Every field, the `common_*` ones included.
    pub fields: Vec<Field>,
    /// The print format, parsed; None when it uses what `Print` does not evaluate (the
    /// fields are then printed as `name=value`).
    print: Option<Print>,
}

impl EventFormat {
    /// The field named `name`.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// Parse one tracefs `format` file of `system`.
pub fn parse_format(system: &str, text: &str) -> Result<EventFormat, String> {
    let mut name = None;
    let mut id = None;
    let mut fields = Vec::new();
    let mut print = None;
    for line in text.lines() {
        let l = line.trim();
        if let Some(v) = l.strip_prefix("name:") {
            name = Some(v.trim().to_string());
        } else if let Some(v) = l.strip_prefix("ID:") {
            id = v.trim().parse::<u64>().ok();
        } else if let Some(v) = l.strip_prefix("print fmt:") {
            print = Some(v.trim().to_string());
        } else if l.starts_with("field:") {
            fields.push(parse_field(l).ok_or_else(|| format!("bad field line `{l}`"))?);
        }
    }
    let name = name.ok_or("no `name:`")?;
    let id = id.ok_or_else(|| format!("{system}:{name}: no `ID:`"))?;
    let print = print.and_then(|p| Print::parse(&p));
    Ok(EventFormat { system: system.to_string(), name, id, fields, print })
}

/// `field:unsigned long addr;\toffset:16;\tsize:8;\tsigned:0;`
fn parse_field(l: &str) -> Option<Field> {
    let mut decl = None;
    let (mut offset, mut size, mut signed) = (None, None, false);
    for part in l.split(';') {
        let part = part.trim();
        if let Some(d) = part.strip_prefix("field:") {
            decl = Some(d.trim());
        } else if let Some(v) = part.strip_prefix("offset:") {
            offset = v.parse().ok();
        } else if let Some(v) = part.strip_prefix("size:") {
            size = v.parse().ok();
        } else if let Some(v) = part.strip_prefix("signed:") {
            signed = v == "1";
        }
    }
    let decl = decl?;
    let data_loc = decl.starts_with("__data_loc");
    // The name is the last word, without an array size.
    let last = decl.rsplit([' ', '*']).next()?;
    let (name, array) = match last.split_once('[') {
        Some((n, _)) => (n, true),
        None => (last, false),
    };
    let chars = array && decl.contains("char");
    Some(Field { name: name.to_string(), offset: offset?, size: size?, signed, data_loc, chars })
}

/// The tracepoint formats of a `HEADER_TRACING_DATA` section (perf's
/// `tools/perf/util/trace-event-read.c`, `trace_report`), by id.
pub fn parse_tracing_data(data: &[u8]) -> Result<HashMap<u64, EventFormat>, String> {
    let mut r = Cursor { data, at: 0, big: false };
    let magic = r.take(10)?;
    if magic != b"\x17\x08\x44tracing" {
        return Err("tracing data: bad magic".into());
    }
    let version = r.cstr()?.to_string();
    r.big = r.take(1)?[0] != 0;
    let _long_size = r.take(1)?;
    let _page_size = r.u32()?;
    for name in ["header_page", "header_event"] {
        let n = r.cstr()?;
        if n != name {
            return Err(format!("tracing data: expected `{name}`, found `{n}`"));
        }
        let size = r.u64()?;
        r.skip(size)?;
    }
    // ftrace's own events.
    for _ in 0..r.u32()? {
        let size = r.u64()?;
        r.skip(size)?;
    }
    let mut out = HashMap::default();
    for _ in 0..r.u32()? {
        let system = r.cstr()?.to_string();
        for _ in 0..r.u32()? {
            let size = r.u64()?;
            let text = String::from_utf8_lossy(r.take(size)?);
            let f = parse_format(&system, &text).map_err(|e| format!("tracing data: {system}: {e}"))?;
            out.insert(f.id, f);
        }
    }
    // kallsyms, printk formats and (version 0.6 on) saved cmdlines follow: not needed.
    let _ = version;
    Ok(out)
}

/// A reader of the tracing-data section's numbers, in the file's byte order.
struct Cursor<'a> {
    data: &'a [u8],
    at: usize,
    big: bool,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64) -> Result<&'a [u8], String> {
        let n = usize::try_from(n).map_err(|_| "tracing data: size too large")?;
        let end =
            self.at.checked_add(n).filter(|&e| e <= self.data.len()).ok_or("tracing data: cut short")?;
        let s = &self.data[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn skip(&mut self, n: u64) -> Result<(), String> {
        self.take(n).map(|_| ())
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b: [u8; 4] = self.take(4)?.try_into().map_err(|_| "cut short")?;
        Ok(if self.big { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) })
    }
    fn u64(&mut self) -> Result<u64, String> {
        let b: [u8; 8] = self.take(8)?.try_into().map_err(|_| "cut short")?;
        Ok(if self.big { u64::from_be_bytes(b) } else { u64::from_le_bytes(b) })
    }
    fn cstr(&mut self) -> Result<&'a str, String> {
        let rest = &self.data[self.at..];
        let n = memchr::memchr(0, rest).ok_or("tracing data: unterminated string")?;
        self.at += n + 1;
        std::str::from_utf8(&rest[..n]).map_err(|_| "tracing data: bad string".to_string())
    }
}

// ---------------------------------------------------------------------------------------------
// Printing a tracepoint record by its print format

/// A parsed `print fmt:`: the pieces of the format string and the arguments.
#[derive(Clone, Debug)]
struct Print {
    pieces: Vec<Piece>,
    args: Vec<Expr>,
}

#[derive(Clone, Debug)]
enum Piece {
    Lit(String),
    Conv(Spec),
}

/// A `%...` conversion.
#[derive(Clone, Copy, Debug)]
struct Spec {
    zero: bool,
    alt: bool,
    left: bool,
    width: usize,
    /// `l` or `ll` or `z`: 64 bits; else 32.
    long: bool,
    conv: u8,
}

/// The argument forms print formats of the events a recording holds use.
#[derive(Clone, Debug)]
pub(crate) enum Expr {
    /// `REC->name`
    Field(String),
    /// `REC->name` with its field found (in a [`Plan`]).
    FieldAt(Field),
    /// `__get_str(name)`
    Str(String),
    /// A string literal.
    Lit(String),
    /// An integer literal.
    Num(i64),
    /// `(type)expr`: to an unsigned (true) or signed 64-bit value, or a pointer.
    Cast { unsigned: bool, bits: u32, e: Box<Expr> },
    /// `c ? a : b`
    Cond(Box<Expr>, Box<Expr>, Box<Expr>),
}

/// A value while printing.
enum Val<'a> {
    Int(i128),
    Str(Cow<'a, str>),
}

impl Print {
    fn parse(s: &str) -> Option<Print> {
        let s = s.trim();
        let body = s.strip_prefix('"')?;
        // The closing quote: the first unescaped one.
        let mut end = None;
        let b = body.as_bytes();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'\\' => i += 2,
                b'"' => {
                    end = Some(i);
                    break;
                }
                _ => i += 1,
            }
        }
        let end = end?;
        let pieces = parse_pieces(&body[..end])?;
        let rest = body[end + 1..].trim();
        let args = if rest.is_empty() {
            Vec::new()
        } else {
            split_top(rest.strip_prefix(',')?, b',')
                .into_iter()
                .map(|a| parse_expr(a.trim()))
                .collect::<Option<_>>()?
        };
        let convs = pieces.iter().filter(|p| matches!(p, Piece::Conv(_))).count();
        (convs == args.len()).then_some(Print { pieces, args })
    }

    fn print(&self, ev: &EventFormat, raw: &[u8], out: &mut String) -> Option<()> {
        let mut args = self.args.iter();
        for p in &self.pieces {
            match p {
                Piece::Lit(s) => out.push_str(s),
                Piece::Conv(spec) => {
                    let v = eval(args.next()?, ev, raw)?;
                    put(out, spec, v)?;
                }
            }
        }
        Some(())
    }
}

fn parse_pieces(f: &str) -> Option<Vec<Piece>> {
    let mut out = Vec::new();
    let mut lit = String::new();
    let b = f.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => {
                let c = *b.get(i + 1)?;
                lit.push(match c {
                    b'n' => '\n',
                    b't' => '\t',
                    c => c as char,
                });
                i += 2;
            }
            b'%' if b.get(i + 1) == Some(&b'%') => {
                lit.push('%');
                i += 2;
            }
            b'%' => {
                i += 1;
                let mut spec = Spec { zero: false, alt: false, left: false, width: 0, long: false, conv: 0 };
                while let Some(&c) = b.get(i) {
                    match c {
                        b'0' => spec.zero = true,
                        b'#' => spec.alt = true,
                        b'-' => spec.left = true,
                        b'+' | b' ' => {}
                        _ => break,
                    }
                    i += 1;
                }
                while let Some(&c) = b.get(i).filter(|c| c.is_ascii_digit()) {
                    spec.width = spec.width * 10 + usize::from(c - b'0');
                    i += 1;
                }
                while let Some(&c) = b.get(i).filter(|c| matches!(c, b'l' | b'z' | b'h')) {
                    spec.long |= c != b'h';
                    i += 1;
                }
                let conv = *b.get(i)?;
                if !matches!(conv, b'd' | b'i' | b'u' | b'x' | b'X' | b's' | b'p' | b'c') {
                    return None;
                }
                i += 1;
                if conv == b'p' {
                    // `%ps`, `%pS`, `%pF`, ...: a symbol, or the address when there is none.
                    while b.get(i).is_some_and(|c| c.is_ascii_alphabetic()) {
                        i += 1;
                    }
                }
                spec.conv = conv;
                if !lit.is_empty() {
                    out.push(Piece::Lit(std::mem::take(&mut lit)));
                }
                out.push(Piece::Conv(spec));
            }
            _ => {
                // Whole UTF-8 characters.
                let ch = f[i..].chars().next()?;
                lit.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    if !lit.is_empty() {
        out.push(Piece::Lit(lit));
    }
    Some(out)
}

/// Split at `sep` outside parentheses and string literals.
fn split_top(s: &str, sep: u8) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut quoted, mut start) = (0i32, false, 0);
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b'(' | b'[' if !quoted => depth += 1,
            b')' | b']' if !quoted => depth -= 1,
            c if c == sep && !quoted && depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    out.push(&s[start..]);
    out
}

/// The index of the parenthesis closing the one at 0.
fn closing(s: &str) -> Option<usize> {
    let mut depth = 0;
    for (i, c) in s.bytes().enumerate() {
        match c {
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

fn parse_expr(s: &str) -> Option<Expr> {
    let s = s.trim();
    // c ? a : b (at the top level).
    let q = split_top(s, b'?');
    if q.len() == 2 {
        let ab = split_top(q[1], b':');
        if ab.len() == 2 {
            return Some(Expr::Cond(
                Box::new(parse_expr(q[0])?),
                Box::new(parse_expr(ab[0])?),
                Box::new(parse_expr(ab[1])?),
            ));
        }
        return None;
    }
    if s.starts_with('(') {
        let c = closing(s)?;
        if c == s.len() - 1 {
            return parse_expr(&s[1..c]);
        }
        // A cast.
        let ty = s[1..c].trim();
        let e = Box::new(parse_expr(&s[c + 1..])?);
        let pointer = ty.ends_with('*');
        let unsigned = pointer || ty.starts_with("unsigned") || ty.starts_with('u') || ty == "size_t";
        let bits =
            if pointer || ty.contains("long") || ty.contains("64") || ty == "size_t" { 64 } else { 32 };
        return Some(Expr::Cast { unsigned, bits, e });
    }
    if let Some(f) = s.strip_prefix("REC->") {
        return f.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_').then(|| Expr::Field(f.to_string()));
    }
    if let Some(a) = s.strip_prefix("__get_str(").and_then(|r| r.strip_suffix(')')) {
        return Some(Expr::Str(a.trim().to_string()));
    }
    if let Some(l) = s.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        return Some(Expr::Lit(l.replace("\\\"", "\"")));
    }
    if let Some(h) = s.strip_prefix("0x") {
        return i64::from_str_radix(h, 16).ok().map(Expr::Num);
    }
    s.parse().ok().map(Expr::Num)
}

/// A field's bytes as a number (sign-extended when the field is signed).
fn field_num(f: &Field, raw: &[u8]) -> Option<i128> {
    let b = raw.get(f.offset..f.offset + f.size)?;
    // Fixed-size reads for the usual sizes: a copy of a variable length is a `memcpy` call.
    let u = match *b {
        [a] => u64::from(a),
        [a0, a1] => u64::from(u16::from_le_bytes([a0, a1])),
        [a0, a1, a2, a3] => u64::from(u32::from_le_bytes([a0, a1, a2, a3])),
        [a0, a1, a2, a3, a4, a5, a6, a7] => u64::from_le_bytes([a0, a1, a2, a3, a4, a5, a6, a7]),
        _ if f.size > 8 => return None,
        _ => {
            let mut buf = [0u8; 8];
            buf[..f.size].copy_from_slice(b);
            u64::from_le_bytes(buf)
        }
    };
    Some(if f.signed && f.size < 8 {
        let shift = 64 - 8 * f.size as u32;
        i128::from(((u << shift) as i64) >> shift)
    } else if f.signed {
        i128::from(u as i64)
    } else {
        i128::from(u)
    })
}

/// A char array or `__data_loc` string, up to its first NUL.
fn field_str<'a>(f: &Field, raw: &'a [u8]) -> Option<Cow<'a, str>> {
    let bytes = if f.data_loc {
        let v = u32::from_le_bytes(raw.get(f.offset..f.offset + 4)?.try_into().ok()?);
        let (off, len) = ((v & 0xffff) as usize, (v >> 16) as usize);
        raw.get(off..off + len)?
    } else {
        raw.get(f.offset..f.offset + f.size)?
    };
    let end = memchr::memchr(0, bytes).unwrap_or(bytes.len());
    Some(String::from_utf8_lossy(&bytes[..end]))
}

fn eval<'a>(e: &Expr, ev: &EventFormat, raw: &'a [u8]) -> Option<Val<'a>> {
    Some(match e {
        Expr::Field(n) => {
            let f = ev.field(n)?;
            if f.chars || f.data_loc { Val::Str(field_str(f, raw)?) } else { Val::Int(field_num(f, raw)?) }
        }
        Expr::Str(n) => Val::Str(field_str(ev.field(n)?, raw)?),
        Expr::Lit(s) => Val::Str(Cow::Owned(s.clone())),
        Expr::Num(n) => Val::Int(i128::from(*n)),
        Expr::FieldAt(f) => Val::Int(field_num(f, raw)?),
        Expr::Cast { unsigned, bits, e } => {
            let Val::Int(v) = eval(e, ev, raw)? else { return None };
            Val::Int(cast(v, *bits, *unsigned))
        }
        Expr::Cond(c, a, b) => {
            let Val::Int(c) = eval(c, ev, raw)? else { return None };
            if c != 0 { eval(a, ev, raw)? } else { eval(b, ev, raw)? }
        }
    })
}

/// `(type)v`: to 64 or 32 bits, unsigned or signed.
fn cast(v: i128, bits: u32, unsigned: bool) -> i128 {
    match (bits, unsigned) {
        (64, true) => i128::from(v as u64),
        (64, false) => i128::from(v as i64),
        (_, true) => i128::from(v as u32),
        (_, false) => i128::from(v as i32),
    }
}

/// `e` with its numeric fields found in `ev`; None when it prints a string.
fn resolve(e: &Expr, ev: &EventFormat) -> Option<Expr> {
    Some(match e {
        Expr::Field(n) => Expr::FieldAt(num_field(ev, n)?),
        Expr::FieldAt(f) => Expr::FieldAt(f.clone()),
        Expr::Str(_) | Expr::Lit(_) => return None,
        Expr::Num(n) => Expr::Num(*n),
        Expr::Cast { unsigned, bits, e } => {
            Expr::Cast { unsigned: *unsigned, bits: *bits, e: Box::new(resolve(e, ev)?) }
        }
        Expr::Cond(c, a, b) => {
            Expr::Cond(Box::new(resolve(c, ev)?), Box::new(resolve(a, ev)?), Box::new(resolve(b, ev)?))
        }
    })
}

/// Print `v` by `spec` as C's printf does.
fn put(out: &mut String, spec: &Spec, v: Val<'_>) -> Option<()> {
    // Numbers are made in a stack buffer: this runs for every field of a million records.
    let mut buf = [0u8; 24];
    let (prefix, body): (&str, &str) = match (spec.conv, &v) {
        (b's', Val::Str(s)) => ("", s),
        (b's', Val::Int(_)) | (_, Val::Str(_)) => return None,
        (b'd' | b'i', &Val::Int(n)) => {
            let n = if spec.long { n as i64 } else { i64::from(n as i32) };
            (if n < 0 { "-" } else { "" }, digits(&mut buf, n.unsigned_abs(), 10, false))
        }
        (b'u', &Val::Int(n)) => {
            ("", digits(&mut buf, if spec.long { n as u64 } else { u64::from(n as u32) }, 10, false))
        }
        (b'x' | b'X', &Val::Int(n)) => {
            let n = if spec.long { n as u64 } else { u64::from(n as u32) };
            (if spec.alt && n != 0 { "0x" } else { "" }, digits(&mut buf, n, 16, spec.conv == b'X'))
        }
        // A user address has no symbol: libtraceevent prints it as 0x...
        (b'p', &Val::Int(n)) => ("0x", digits(&mut buf, n as u64, 16, false)),
        (b'c', &Val::Int(n)) => {
            buf[0] = n as u8;
            ("", std::str::from_utf8(&buf[..1]).ok()?)
        }
        _ => return None,
    };
    let len = prefix.len() + if body.is_ascii() { body.len() } else { body.chars().count() };
    let pad = spec.width.saturating_sub(len);
    if spec.left {
        out.push_str(prefix);
        out.push_str(body);
        spaces(out, pad);
    } else if spec.zero && spec.conv != b's' {
        // Zeros go after a sign or 0x.
        out.push_str(prefix);
        out.extend(std::iter::repeat_n('0', pad));
        out.push_str(body);
    } else {
        spaces(out, pad);
        out.push_str(prefix);
        out.push_str(body);
    }
    Some(())
}

fn spaces(out: &mut String, n: usize) {
    const S: &str = "                                ";
    let mut n = n;
    while n > 0 {
        let k = n.min(S.len());
        out.push_str(&S[..k]);
        n -= k;
    }
}

/// `v` in `base` (10 or 16), at the end of `buf`.
fn digits(buf: &mut [u8; 24], mut v: u64, base: u64, upper: bool) -> &str {
    let set: &[u8; 16] = if upper { b"0123456789ABCDEF" } else { b"0123456789abcdef" };
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = set[(v % base) as usize];
        v /= base;
        if v == 0 {
            break;
        }
    }
    // ASCII digits only.
    std::str::from_utf8(&buf[i..]).unwrap_or("")
}

/// Print a tracepoint record's payload as libtraceevent prints it (`perf script`'s `trace`
/// field); by `name=value` fields when its print format is beyond what this module evaluates.
pub fn print_event(ev: &EventFormat, raw: &[u8], out: &mut String) {
    let start = out.len();
    if let Some(p) = &ev.print
        && p.print(ev, raw, out).is_some()
    {
        return;
    }
    out.truncate(start);
    let mut first = true;
    for f in ev.fields.iter().filter(|f| !f.name.starts_with("common_")) {
        if !first {
            out.push(' ');
        }
        first = false;
        let _ = if f.chars || f.data_loc {
            write!(out, "{}={}", f.name, field_str(f, raw).unwrap_or_default())
        } else {
            match field_num(f, raw) {
                Some(v) if f.signed => write!(out, "{}={}", f.name, v as i64),
                Some(v) => write!(out, "{}={:#x}", f.name, v as u64),
                None => write!(out, "{}=?", f.name),
            }
        };
    }
}

// ---------------------------------------------------------------------------------------------
// The records, as `perf script` text or as the converter's events

/// How the records of one event attribute are read without text: decided once, from the
/// event's name and the tracepoint format the file holds. Only what its `perf script` line
/// would convert the same way is read directly; anything else is printed as that line.
#[derive(Clone, Debug)]
pub(crate) enum Plan {
    /// `exceptions:page_fault_user`: its `address` and `error_code` fields.
    Fault { addr: Field, code: Field },
    /// `syscalls:sys_enter_NAME`, whose print format is `LABEL: 0x%08lx, ...`: the labels
    /// and the expressions printed after them.
    SysEnter { name: String, args: Vec<(String, Expr)> },
    /// `syscalls:sys_exit_NAME`, printed `0x%lx`: the expression.
    SysExit { name: String, ret: Expr },
    /// `sched:sched_process_fork`: its `child_pid` field.
    Fork { child: Field },
    /// `sched:sched_process_exec`: its `filename` and `old_pid` fields.
    Exec { filename: Field, old_pid: Field },
    /// `sched:sched_process_exit`.
    Exit,
    /// Any other event with a plain `system:name`: skipped by name.
    Other(String),
    /// Printed, and the line converted.
    Text,
}

/// A numeric field of at most 8 bytes.
fn num_field(ev: &EventFormat, name: &str) -> Option<Field> {
    ev.field(name).filter(|f| !f.chars && !f.data_loc && f.size <= 8).cloned()
}

/// The plan for records of the event `name` (as perf names it) with format `tp`.
fn plan_of(name: &str, tp: Option<&EventFormat>) -> Plan {
    if name.is_empty() || !name.contains(':') || name.bytes().any(|b| b.is_ascii_whitespace()) {
        return Plan::Text;
    }
    let plan = || -> Option<Plan> {
        let ev = tp?;
        if name == "exceptions:page_fault_user" {
            // Printed `address=%ps ... error_code=0x%lx`: whole unsigned longs.
            let unsigned_long = |f: Field| (!f.signed && f.size == 8).then_some(f);
            let addr = num_field(ev, "address").and_then(unsigned_long)?;
            let code = num_field(ev, "error_code").and_then(unsigned_long)?;
            return Some(Plan::Fault { addr, code });
        }
        if let Some(sys) = name.strip_prefix("syscalls:sys_enter_") {
            let p = ev.print.as_ref()?;
            // `LABEL: 0x%08lx` pieces, joined by `, `, as `parse_args` reads them.
            let mut args = Vec::new();
            let mut pieces = p.pieces.iter();
            for (i, arg) in p.args.iter().enumerate() {
                let (Some(Piece::Lit(lit)), Some(Piece::Conv(spec))) = (pieces.next(), pieces.next()) else {
                    return None;
                };
                let label = lit.strip_prefix(if i == 0 { "" } else { ", " })?.strip_suffix(": 0x")?;
                let plain =
                    !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if !plain || spec.conv != b'x' || !spec.long || spec.alt {
                    return None;
                }
                args.push((label.to_string(), resolve(arg, ev)?));
            }
            if pieces.next().is_some() {
                return None;
            }
            return Some(Plan::SysEnter { name: sys.to_string(), args });
        }
        if let Some(sys) = name.strip_prefix("syscalls:sys_exit_") {
            let p = ev.print.as_ref()?;
            let [Piece::Lit(lit), Piece::Conv(spec)] = &p.pieces[..] else { return None };
            if lit != "0x" || spec.conv != b'x' || !spec.long || spec.alt || p.args.len() != 1 {
                return None;
            }
            return Some(Plan::SysExit { name: sys.to_string(), ret: resolve(&p.args[0], ev)? });
        }
        match name {
            "sched:sched_process_fork" => Some(Plan::Fork { child: num_field(ev, "child_pid")? }),
            "sched:sched_process_exec" => Some(Plan::Exec {
                filename: ev.field("filename").filter(|f| f.chars || f.data_loc).cloned()?,
                old_pid: num_field(ev, "old_pid")?,
            }),
            "sched:sched_process_exit" => Some(Plan::Exit),
            _ if name.starts_with("syscalls:sys_") => None,
            _ => Some(Plan::Other(name.to_string())),
        }
    };
    plan().unwrap_or(Plan::Text)
}

/// A record read ahead, as the converter will take it.
pub(crate) enum Rec {
    /// A page fault (most records), by its header's pid and tid.
    Fault { pid: u32, tid: u32, addr: u64, code: u64 },
    /// Any other event read directly.
    Ev { pid: u32, tid: u32, ev: Box<Owned> },
    /// A record read as its `perf script` line.
    Line(String),
}

/// The owned form of a [`super::perf::Event`] other than a fault.
pub(crate) enum Owned {
    /// Of the attribute whose plan is `Plan::SysEnter`: the arguments' values.
    SysEnter {
        attr: usize,
        vals: Vec<u64>,
    },
    SysExit {
        attr: usize,
        ret: u64,
    },
    Fork {
        child: u32,
    },
    Exec {
        path: String,
        old_pid: Option<u32>,
    },
    Exit,
    Other {
        attr: usize,
    },
    Mmap2(crate::lines::MapRec),
    /// `PERF_RECORD_MMAP`.
    Mmap,
}

/// A `perf.data` file read in order of time, either as the `perf script` text of its
/// records (its `Read`), or record by record for the converter.
pub struct PerfScriptText {
    name: String,
    reader: Option<Reader>,
    /// Per attribute: its name as perf prints it and its tracepoint format.
    events: Vec<(String, Option<usize>)>,
    formats: Vec<EventFormat>,
    /// Per attribute: how its records are read without text.
    plans: Arc<Vec<Plan>>,
    /// Per attribute: where a page-fault sample's fields are, when fixed.
    faults: Vec<Option<FaultAt>>,
    /// perf script right-aligns event names to the longest.
    name_width: usize,
    /// Command of each tid, as COMM and FORK records set it.
    comms: HashMap<i32, String>,
    /// Text made and not yet read.
    buf: Vec<u8>,
    at: usize,
    line: String,
    side: Side,
    done: bool,
}

/// Where the records come from.
enum Reader {
    /// This crate's reader of the data section.
    Own(Box<super::perf_records::Records>),
    /// `linux-perf-data`'s (perf's own compression, simpleperf files, an input read once).
    Crate(Box<PerfFileReader<Box<dyn Input>>>),
}

/// Open the `perf.data` in `input`. `name` names it in messages.
pub fn open(name: &str, input: Box<dyn Input>) -> Result<PerfScriptText, String> {
    open_with(name, input, None)
}

/// A `perf.data` in memory, read by two readers at once.
#[derive(Clone)]
struct Shared(Arc<Vec<u8>>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Open the `perf.data` in `bytes`.
fn open_bytes(name: &str, bytes: Vec<u8>) -> Result<PerfScriptText, String> {
    let b = Shared(Arc::new(bytes));
    let records = super::perf_records::Src::Read(Box::new(std::io::Cursor::new(b.clone())));
    open_with(name, Box::new(std::io::Cursor::new(b)), Some(records))
}

/// The sizes in a little-endian `perf.data`'s header, feature table and event descriptions
/// checked against the file's length before `linux_perf_data` reads them: it allocates what
/// they say, so a wrong size would abort the process instead of failing. Leaves `input` at
/// its start. A big-endian file stops here (`not modelled`); another magic, or a header cut
/// short, is left to the crate's own error.
fn check_sizes(input: &mut dyn Input) -> Result<(), String> {
    let sizes = |e: String| format!("not a readable perf.data: {e}");
    let io = |e: std::io::Error| sizes(e.to_string());
    let len = input.seek(std::io::SeekFrom::End(0)).map_err(io)?;
    input.rewind().map_err(io)?;
    // perf_file_header: magic, size, attr_size, then the attrs, data and event_types
    // sections (offset, size) and the 256 feature bits.
    let mut h = [0u8; 104];
    if input.read_exact(&mut h).is_err() {
        input.rewind().map_err(io)?;
        return Ok(());
    }
    input.rewind().map_err(io)?;
    if h.starts_with(b"2ELIFREP") {
        // The tracepoint payloads would need swapping too.
        return Err("not modelled: a big-endian perf.data".to_string());
    }
    if !h.starts_with(PERF_MAGIC) {
        return Ok(());
    }
    let word = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
    let attr_size = word(&h, 16);
    if !(64..=4096).contains(&attr_size) {
        return Err(sizes(format!(
            "the header's attribute size {attr_size} is not that of a perf_event_attr"
        )));
    }
    let section = |name: &str, off: u64, size: u64| -> Result<(), String> {
        match off.checked_add(size) {
            Some(end) if end <= len => Ok(()),
            _ => Err(sizes(format!(
                "the {name} ({size} bytes at {off}) ends past the file's end ({len} bytes)"
            ))),
        }
    };
    section("attribute section", word(&h, 24), word(&h, 32))?;
    let (data_off, data_size) = (word(&h, 40), word(&h, 48));
    section("data section", data_off, data_size)?;
    let (types_off, types_size) = (word(&h, 56), word(&h, 64));
    section("event types section", types_off, types_size)?;
    // The feature sections' table follows the data section: an (offset, size) per bit set.
    let bits: Vec<u32> = (0..256u32).filter(|&b| h[72 + (b / 8) as usize] >> (b % 8) & 1 == 1).collect();
    let table = data_off + data_size;
    section("feature table", table, 16 * bits.len() as u64)?;
    input.seek(std::io::SeekFrom::Start(table)).map_err(io)?;
    let mut t = vec![0u8; 16 * bits.len()];
    input.read_exact(&mut t).map_err(io)?;
    let mut event_desc = None;
    for (i, &bit) in bits.iter().enumerate() {
        let (off, size) = (word(&t, 16 * i), word(&t, 16 * i + 8));
        section(&format!("feature section {bit}"), off, size)?;
        if bit == linux_perf_data::Feature::EVENT_DESC.0 {
            event_desc = Some((off, size));
        }
    }
    if let Some((off, size)) = event_desc {
        input.seek(std::io::SeekFrom::Start(off)).map_err(io)?;
        let mut d = vec![0u8; size as usize];
        input.read_exact(&mut d).map_err(io)?;
        check_event_desc(&d).map_err(|e| sizes(format!("the event descriptions (HEADER_EVENT_DESC) {e}")))?;
    } else if types_size != 0 {
        // Old perf: each event type an attribute and the (offset, size) of its ids.
        let entry = attr_size + 16;
        input.seek(std::io::SeekFrom::Start(types_off)).map_err(io)?;
        let mut d = vec![0u8; (types_size / entry * entry) as usize];
        input.read_exact(&mut d).map_err(io)?;
        for e in d.chunks_exact(entry as usize) {
            let at = attr_size as usize;
            section("event type's id list", word(e, at), word(e, at + 8))?;
        }
    }
    input.rewind().map_err(io)?;
    Ok(())
}

/// `HEADER_EVENT_DESC`'s counts and lengths (events, ids, names) against its size, as
/// `read_event_desc` in perf's util/header.c reads them.
fn check_event_desc(d: &[u8]) -> Result<(), String> {
    let overrun = || "overrun their section".to_string();
    let u32_at = |at: usize| -> Result<u64, String> {
        d.get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as u64)
            .ok_or_else(overrun)
    };
    let (nr, attr_size) = (u32_at(0)?, u32_at(4)?);
    let mut at = 8u64;
    for _ in 0..nr {
        // The attribute, nr_ids, the name (a u32 length and its bytes), the ids.
        at = at.checked_add(attr_size).ok_or_else(overrun)?;
        let nr_ids = u32_at(usize::try_from(at).map_err(|_| overrun())?)?;
        let name_len = u32_at(usize::try_from(at + 4).map_err(|_| overrun())?)?;
        at += 8 + name_len + 8 * nr_ids;
        if at > d.len() as u64 {
            return Err(overrun());
        }
    }
    Ok(())
}

/// Open the `perf.data` in `input`; `records`, a second reader of the same file (or the
/// file mapped), reads the records where it can.
fn open_with(
    name: &str,
    input: Box<dyn Input>,
    records: Option<super::perf_records::Src>,
) -> Result<PerfScriptText, String> {
    let mut input = input;
    // A big-endian file stops there too (`not modelled`): what the crate reads is then
    // little-endian.
    check_sizes(&mut *input)?;
    let PerfFileReader { perf_file, record_iter } =
        PerfFileReader::parse_file(input).map_err(|e| format!("not a readable perf.data: {e}"))?;
    let formats: Vec<EventFormat> =
        match perf_file.feature_section_data(linux_perf_data::Feature::TRACING_DATA) {
            Some(d) => parse_tracing_data(d)?.into_values().collect(),
            None => Vec::new(),
        };
    let by_id: HashMap<u64, usize> = formats.iter().enumerate().map(|(i, f)| (f.id, i)).collect();
    let events: Vec<(String, Option<usize>)> = perf_file
        .event_attributes()
        .iter()
        .map(|a| {
            let tp = match a.attributes().type_ {
                PerfEventType::Tracepoint(id) => by_id.get(&id).copied(),
                _ => None,
            };
            let name = match (a.name(), tp) {
                (Some(n), _) => n.to_string(),
                (None, Some(i)) => format!("{}:{}", formats[i].system, formats[i].name),
                (None, None) => "[unknown]".to_string(),
            };
            (name, tp)
        })
        .collect();
    let plans: Vec<Plan> = events.iter().map(|(n, tp)| plan_of(n, tp.map(|i| &formats[i]))).collect();
    let faults: Vec<Option<FaultAt>> = perf_file
        .event_attributes()
        .iter()
        .zip(&plans)
        .map(|(a, plan)| FaultAt::of(a.attr.sample_format, plan))
        .collect();
    let own = match records {
        Some(r) => super::perf_records::Records::new(r, &perf_file)?.map(|mut r| {
            r.read_faults(faults.clone());
            r
        }),
        None => None,
    };
    let reader = match own {
        Some(r) => Reader::Own(Box::new(r)),
        None => Reader::Crate(Box::new(PerfFileReader { perf_file, record_iter })),
    };
    let name_width = events.iter().map(|e| e.0.len()).max().unwrap_or(0);
    let mut comms = HashMap::default();
    comms.insert(0, "swapper".to_string());
    Ok(PerfScriptText {
        name: name.to_string(),
        reader: Some(reader),
        events,
        formats,
        plans: Arc::new(plans),
        faults,
        name_width,
        comms,
        buf: Vec::with_capacity(1 << 16),
        at: 0,
        line: String::new(),
        side: Side::default(),
        done: false,
    })
}

/// What [`PerfScriptText::next_rec`] found.
enum Next {
    /// The record's line is in `line`.
    Line,
    /// The record, read directly.
    Rec(Rec),
}

impl PerfScriptText {
    /// What the reader found besides the lines (filled in as it reads).
    pub fn side(&self) -> Side {
        self.side.clone()
    }

    fn problem(&mut self, why: String) {
        if let Ok(mut s) = self.side.lock() {
            s.problems.push(format!("{}:0: perf.data: {why}", self.name));
        }
    }

    /// Make the text of the next records (at least one line, unless at the end).
    fn fill(&mut self) {
        self.buf.clear();
        self.at = 0;
        let (mut lost, mut problem) = (0u64, None);
        while self.buf.len() < (1 << 16) {
            match self.next_rec(false, &mut lost, &mut problem) {
                Some(Next::Line) => {
                    self.line.push('\n');
                    self.buf.extend_from_slice(self.line.as_bytes());
                }
                Some(Next::Rec(_)) => unreachable!("records are read directly only when asked"),
                None => break,
            }
        }
        self.after(lost, problem);
    }

    /// Report what a run of [`PerfScriptText::next_rec`] found besides its records.
    fn after(&mut self, lost: u64, problem: Option<String>) {
        if lost > 0
            && let Ok(mut s) = self.side.lock()
        {
            s.lost = s.lost.saturating_add(lost);
        }
        if let Some(p) = problem {
            self.problem(p);
        }
        if self.done {
            self.reader = None;
        }
    }

    /// The next record that makes a line in `perf script` (None at the end): read directly
    /// when `direct` and its plan allows, else printed into `line`.
    fn next_rec(&mut self, direct: bool, lost: &mut u64, problem: &mut Option<String>) -> Option<Next> {
        let Some(reader) = self.reader.as_mut() else {
            self.done = true;
            return None;
        };
        loop {
            let next = match reader {
                Reader::Own(r) => r.next(),
                Reader::Crate(r) => {
                    let PerfFileReader { perf_file, record_iter } = &mut **r;
                    match record_iter.next_record(perf_file) {
                        Ok(Some(PerfFileRecord::EventRecord { attr_index, record })) => {
                            Ok(Some((attr_index, record)))
                        }
                        Ok(Some(_)) => continue,
                        Ok(None) => Ok(None),
                        Err(e) => Err(e.to_string()),
                    }
                }
            };
            let (attr_index, record) = match next {
                Ok(Some(r)) => r,
                Ok(None) => {
                    self.done = true;
                    return None;
                }
                Err(e) => {
                    problem
                        .get_or_insert_with(|| format!("cut short or damaged after the records read: {e}"));
                    self.done = true;
                    return None;
                }
            };
            // A page fault (most samples) straight from its bytes; what this does not read
            // goes the general way below.
            if direct
                && record.record_type == RecordType::SAMPLE
                && let RawData::Single(body) = record.data
                && let Some(Some(f)) = self.faults.get(attr_index)
                && f.format == record.parse_info.sample_format
                && let Some((pid, tid, addr, code)) = f.read(body)
            {
                return Some(Next::Rec(Rec::Fault { pid, tid, addr, code }));
            }
            // A sample read directly needs its pid, tid and raw data only: found in place,
            // without parsing (and moving) the whole sample.
            if direct
                && record.record_type == RecordType::SAMPLE
                && let RawData::Single(body) = record.data
                && let Some((pid, tid, raw)) = sample_fields(record.parse_info.sample_format, body)
                && let Some(plan) = self.plans.get(attr_index)
                && let Some(r) = direct_sample(plan, attr_index, pid, tid, raw)
            {
                return Some(Next::Rec(r));
            }
            let line = &mut self.line;
            line.clear();
            let parsed = match record.parse() {
                Ok(p) => p,
                Err(e) => {
                    problem.get_or_insert_with(|| format!("a bad {:?} record: {e}", record.record_type));
                    continue;
                }
            };
            let common = |r: &linux_perf_data::linux_perf_event_reader::RawEventRecord<'_>| {
                r.common_data().map(|c| (c.pid.unwrap_or(-1), c.tid.unwrap_or(-1), c.timestamp.unwrap_or(0)))
            };
            let ids = |pid: i32, tid: i32| Some((u32::try_from(pid).ok()?, u32::try_from(tid).ok()?));
            match parsed {
                EventRecord::Sample(s) => {
                    let (pid, tid, time) =
                        (s.pid.unwrap_or(-1), s.tid.unwrap_or(-1), s.timestamp.unwrap_or(0));
                    let Some((ev_name, tp)) = self.events.get(attr_index) else { continue };
                    if direct
                        && let Some((pid, tid)) = ids(pid, tid)
                        && let Some(raw) = s.raw.map(|r| r.as_slice())
                        && let Some(r) = direct_sample(&self.plans[attr_index], attr_index, pid, tid, &raw)
                    {
                        return Some(Next::Rec(r));
                    }
                    head(line, comm_of(&self.comms, tid), pid, tid, time);
                    spaces(line, self.name_width.saturating_sub(ev_name.len()));
                    line.push_str(ev_name);
                    line.push_str(": ");
                    if let (Some(i), Some(raw)) = (tp, s.raw) {
                        let raw = raw.as_slice();
                        print_event(&self.formats[*i], &raw, line);
                    }
                }
                EventRecord::Mmap2(m) => {
                    let Ok((pid, tid, time)) = common(&record) else { continue };
                    if direct
                        && let Some((pid, tid)) = ids(pid, tid)
                        && let Some(r) = direct_mmap2(&m)
                    {
                        return Some(Next::Rec(Rec::Ev { pid, tid, ev: Box::new(Owned::Mmap2(r)) }));
                    }
                    head(line, comm_of(&self.comms, tid), pid, tid, time);
                    let _ = write!(
                        line,
                        "PERF_RECORD_MMAP2 {}/{}: [{}({}) @ {}",
                        m.pid,
                        m.tid,
                        Cx(m.address),
                        Cx(m.length),
                        Cx(m.page_offset)
                    );
                    match &m.file_id {
                        linux_perf_data::linux_perf_event_reader::Mmap2FileId::InodeAndVersion(v) => {
                            let _ = write!(
                                line,
                                " {:02x}:{:02x} {} {}]: ",
                                v.major, v.minor, v.inode, v.inode_generation
                            );
                        }
                        linux_perf_data::linux_perf_event_reader::Mmap2FileId::BuildId(id) => {
                            line.push_str(" <");
                            for b in id {
                                let _ = write!(line, "{b:02x}");
                            }
                            line.push_str(">]: ");
                        }
                    }
                    let p = m.protection;
                    line.push(if p & 1 != 0 { 'r' } else { '-' });
                    line.push(if p & 2 != 0 { 'w' } else { '-' });
                    line.push(if p & 4 != 0 { 'x' } else { '-' });
                    line.push(if m.flags & 1 != 0 { 's' } else { 'p' });
                    line.push(' ');
                    line.push_str(&String::from_utf8_lossy(&m.path.as_slice()));
                }
                EventRecord::Mmap(m) => {
                    let Ok((pid, tid, time)) = common(&record) else { continue };
                    if direct && let Some((pid, tid)) = ids(pid, tid) {
                        return Some(Next::Rec(Rec::Ev { pid, tid, ev: Box::new(Owned::Mmap) }));
                    }
                    head(line, comm_of(&self.comms, tid), pid, tid, time);
                    let _ = write!(
                        line,
                        "PERF_RECORD_MMAP {}/{}: [{}({}) @ {}]: {} ",
                        m.pid,
                        m.tid,
                        Cx(m.address),
                        Cx(m.length),
                        Cx(m.page_offset),
                        if m.is_executable { 'x' } else { 'r' }
                    );
                    line.push_str(&String::from_utf8_lossy(&m.path.as_slice()));
                }
                EventRecord::Comm(c) => {
                    self.comms.insert(c.tid, String::from_utf8_lossy(&c.name.as_slice()).into_owned());
                    continue;
                }
                EventRecord::Fork(f) => {
                    let parent = comm_of(&self.comms, f.ptid).into_owned();
                    self.comms.insert(f.tid, parent);
                    continue;
                }
                EventRecord::Lost(l) => {
                    *lost = lost.saturating_add(l.count);
                    continue;
                }
                EventRecord::Raw(r) if r.record_type == RecordType::LOST_SAMPLES => {
                    // `u64 lost` first.
                    let d = r.data.as_slice();
                    let n = d.get(..8).and_then(|b| b.try_into().ok()).map_or(1, u64::from_le_bytes);
                    *lost = lost.saturating_add(n.max(1));
                    continue;
                }
                _ => continue,
            }
            return Some(Next::Line);
        }
    }
}

/// A tracepoint sample of the attribute `attr` read by its plan, or None when its line is
/// to be printed (no plan, or values its line would not convert the same way).
fn direct_sample(plan: &Plan, attr: usize, pid: u32, tid: u32, raw: &[u8]) -> Option<Rec> {
    let ev = |o: Owned| Some(Rec::Ev { pid, tid, ev: Box::new(o) });
    match plan {
        Plan::Text => None,
        Plan::Other(_) => ev(Owned::Other { attr }),
        Plan::Exit => ev(Owned::Exit),
        _ => {
            let int = |e: &Expr| match eval_int(e, raw)? {
                Val::Int(v) => Some(v as u64),
                Val::Str(_) => None,
            };
            match plan {
                Plan::Fault { addr, code } => Some(Rec::Fault {
                    pid,
                    tid,
                    addr: field_num(addr, raw)? as u64,
                    code: field_num(code, raw)? as u64,
                }),
                Plan::SysEnter { args, .. } => {
                    let vals = args.iter().map(|(_, e)| int(e)).collect::<Option<Vec<u64>>>()?;
                    ev(Owned::SysEnter { attr, vals })
                }
                Plan::SysExit { ret, .. } => ev(Owned::SysExit { attr, ret: int(ret)? }),
                Plan::Fork { child } => {
                    let c = field_num(child, raw)?;
                    // `child_pid=%d`: a positive pid, or the line is garbled.
                    let child = u32::try_from(i32::try_from(c).ok()?).ok().filter(|&c| c != 0)?;
                    ev(Owned::Fork { child })
                }
                Plan::Exec { filename, old_pid } => {
                    let path = field_str(filename, raw)?;
                    // A name the line would garble (empty, or breaking the line) is printed.
                    if path.is_empty() || path.contains(['\n', '\r']) {
                        return None;
                    }
                    let o = i32::try_from(field_num(old_pid, raw)?).ok()?;
                    ev(Owned::Exec { path: path.into_owned(), old_pid: u32::try_from(o).ok() })
                }
                Plan::Text | Plan::Other(_) | Plan::Exit => None,
            }
        }
    }
}

/// Where the fields of a page-fault sample are, for an attribute whose samples have them at
/// fixed places (no callchain or `read` group before the raw data): what
/// [`sample_fields`] and [`direct_sample`] read, without working it out per sample.
#[derive(Clone, Copy)]
pub(crate) struct FaultAt {
    format: SampleFormat,
    /// Of the `u32 pid, tid` word, and of the raw data's `u32 size`, in the sample.
    pub(crate) ids: usize,
    pub(crate) raw: usize,
    /// Of `address` and `error_code` (8-byte unsigned fields) in the raw data.
    pub(crate) addr: usize,
    pub(crate) code: usize,
}

impl FaultAt {
    fn of(f: SampleFormat, plan: &Plan) -> Option<FaultAt> {
        let Plan::Fault { addr, code } = plan else { return None };
        if !f.contains(SampleFormat::TID)
            || !f.contains(SampleFormat::RAW)
            || f.contains(SampleFormat::READ)
            || f.contains(SampleFormat::CALLCHAIN)
            || [addr, code].iter().any(|x| x.size != 8 || x.signed || x.offset > 1 << 16)
        {
            return None;
        }
        let words = |flags: &[SampleFormat]| 8 * flags.iter().filter(|&&x| f.contains(x)).count();
        let ids = words(&BEFORE_TID);
        let raw = ids + 8 + words(&TID_TO_CALLCHAIN);
        Some(FaultAt { format: f, ids, raw, addr: addr.offset, code: code.offset })
    }

    /// The fault in the sample `body` (pid, tid, address, error code), or None when it is
    /// to be read the general way (a negative pid or tid, fields out of bounds). A tuple:
    /// a [`Rec`] would be dropped, by a call, after its fields are taken.
    #[inline]
    pub(crate) fn read(&self, body: &[u8]) -> Option<(u32, u32, u64, u64)> {
        let word = |b: &[u8], at: usize| Some(u64::from_le_bytes(*b.get(at..)?.first_chunk()?));
        let ids = word(body, self.ids)?;
        let (pid, tid) =
            (u32::try_from(ids as u32 as i32).ok()?, u32::try_from((ids >> 32) as u32 as i32).ok()?);
        let size = u32::from_le_bytes(*body.get(self.raw..)?.first_chunk()?) as usize;
        let raw = body.get(self.raw + 4..)?.get(..size)?;
        Some((pid, tid, word(raw, self.addr)?, word(raw, self.code)?))
    }
}

/// The one-word fields of a sample before its `u32 pid, tid` (`struct perf_event_sample` in
/// `perf_event_open(2)`), in order.
const BEFORE_TID: [SampleFormat; 2] = [SampleFormat::IDENTIFIER, SampleFormat::IP];

/// The one-word fields between the `pid, tid` word and the callchain, in order.
const TID_TO_CALLCHAIN: [SampleFormat; 6] = [
    SampleFormat::TIME,
    SampleFormat::ADDR,
    SampleFormat::ID,
    SampleFormat::STREAM_ID,
    SampleFormat::CPU,
    SampleFormat::PERIOD,
];

/// A sample's pid, tid and raw data, read in place (`struct perf_event_sample` in
/// `perf_event_open(2)`: the fields before `raw` in their order). None when the sample has
/// no tid or raw data, or a `read` group before them (of variable size): it is parsed whole.
fn sample_fields(f: SampleFormat, body: &[u8]) -> Option<(u32, u32, &[u8])> {
    if !f.contains(SampleFormat::TID) || !f.contains(SampleFormat::RAW) || f.contains(SampleFormat::READ) {
        return None;
    }
    let word = |at: usize| Some(u64::from_le_bytes(body.get(at..at.checked_add(8)?)?.try_into().ok()?));
    let mut at = 0;
    for flag in BEFORE_TID {
        at += if f.contains(flag) { 8 } else { 0 };
    }
    let ids = word(at)?;
    // `u32 pid, tid`: negative ones are printed, not read.
    let (pid, tid) = (u32::try_from(ids as u32 as i32).ok()?, u32::try_from((ids >> 32) as u32 as i32).ok()?);
    at += 8;
    for flag in TID_TO_CALLCHAIN {
        at += if f.contains(flag) { 8 } else { 0 };
    }
    if f.contains(SampleFormat::CALLCHAIN) {
        let n = usize::try_from(word(at)?).ok()?;
        at = at.checked_add(n.checked_mul(8)?.checked_add(8)?)?;
    }
    let size = u32::from_le_bytes(body.get(at..at + 4)?.try_into().ok()?) as usize;
    Some((pid, tid, body.get(at + 4..(at + 4).checked_add(size)?)?))
}

/// [`eval`] of an expression of fields and numbers, by the formats' fields the plan keeps.
fn eval_int<'a>(e: &Expr, raw: &'a [u8]) -> Option<Val<'a>> {
    Some(match e {
        Expr::Field(_) | Expr::Str(_) | Expr::Lit(_) => return None,
        Expr::FieldAt(f) => Val::Int(field_num(f, raw)?),
        Expr::Num(n) => Val::Int(i128::from(*n)),
        Expr::Cast { unsigned, bits, e } => {
            let Val::Int(v) = eval_int(e, raw)? else { return None };
            Val::Int(cast(v, *bits, *unsigned))
        }
        Expr::Cond(c, a, b) => {
            let Val::Int(c) = eval_int(c, raw)? else { return None };
            if c != 0 { eval_int(a, raw)? } else { eval_int(b, raw)? }
        }
    })
}

/// A `PERF_RECORD_MMAP2` as its line reads, or None when that line is printed instead (a
/// build id in place of the device and inode, a negative pid, a name that breaks lines).
fn direct_mmap2(
    m: &linux_perf_data::linux_perf_event_reader::Mmap2Record<'_>,
) -> Option<crate::lines::MapRec> {
    use super::abi;
    let linux_perf_data::linux_perf_event_reader::Mmap2FileId::InodeAndVersion(v) = &m.file_id else {
        return None;
    };
    u32::try_from(m.pid).ok()?;
    let tid = u32::try_from(m.tid).ok()?;
    let path = m.path.as_slice();
    let name = String::from_utf8_lossy(&path);
    if name.contains(['\n', '\r']) {
        return None;
    }
    let p = m.protection;
    let bit = |b: u32, prot: u64| if p & b != 0 { prot } else { 0 };
    Some(crate::lines::MapRec {
        tid,
        addr: m.address,
        len: m.length,
        pgoff: m.page_offset,
        dev: (u64::from(v.major) << 8) | u64::from(v.minor),
        ino: v.inode,
        prot: bit(1, abi::PROT_READ) | bit(2, abi::PROT_WRITE) | bit(4, abi::PROT_EXEC),
        shared: m.flags & 1 != 0,
        name: name.trim().to_string(),
    })
}

/// Records handed to the converter at a time.
const RECS: usize = 1 << 13;

/// A `perf.data` read for the converter: chunks of records in order of time, each tid's
/// thread group noted as it is read (as [`super::stream`]'s text reader notes it from each
/// line); chunks read ahead wait in a queue.
pub(crate) struct DataSource {
    r: PerfScriptText,
    plans: Arc<Vec<Plan>>,
    /// The number the next record's `perf script` line would have.
    next_line: usize,
    queue: VecDeque<DataChunk>,
    spare: Vec<DataChunk>,
}

/// Records in order, the first with line number `first_line`.
#[derive(Default)]
pub(crate) struct DataChunk {
    first_line: usize,
    recs: Vec<Packed>,
    /// What the records' events and lines hold.
    evs: Vec<Owned>,
    lines: Vec<String>,
}

/// A [`Rec`] in a chunk, in 16 bytes with nothing to drop (so that a chunk of faults is
/// cleared for reuse without a look at each): `pid | tid << 32`, and what it is. A page fault
/// ([`FAULT`] set) holds its address's page, with [`WRITE`] for a write, as the reader's
/// scan reads it (and hands it on as it is); any other record the index of its event in
/// `evs` (bit 0 clear) or of its line in `lines` (set), `<< 2`.
#[derive(Clone, Copy)]
struct Packed {
    ids: u64,
    what: u64,
}

impl Packed {
    #[inline]
    fn item(self) -> Item {
        let (pid, tid) = (self.ids as u32, (self.ids >> 32) as u32);
        if self.what & FAULT != 0 {
            Item::Fault { pid, tid, page: self.what & !FAULT }
        } else if self.what & 1 == 0 {
            Item::Ev { pid, tid, ev: (self.what >> 2) as usize }
        } else {
            Item::Line((self.what >> 2) as usize)
        }
    }

    #[inline]
    fn tid(self) -> u32 {
        (self.ids >> 32) as u32
    }
}

/// A [`Packed`] record.
#[derive(Clone, Copy)]
enum Item {
    /// A page fault: its address's page, with [`WRITE`] for a write (all the converter
    /// takes of the address and error code).
    Fault { pid: u32, tid: u32, page: u64 },
    /// The chunk's `evs[ev]`.
    Ev { pid: u32, tid: u32, ev: usize },
    /// The chunk's `lines[line]`.
    Line(usize),
}

/// A fault's address and error code as an [`Item::Fault`] holds them.
#[inline]
fn page_of(addr: u64, code: u64) -> u64 {
    (addr & !0xfff) | if code & 2 != 0 { WRITE } else { 0 }
}

impl DataChunk {
    /// Add `r` to the end.
    fn push(&mut self, r: Rec) {
        let ids = |pid: u32, tid: u32| u64::from(pid) | (u64::from(tid) << 32);
        let item = match r {
            Rec::Fault { pid, tid, addr, code } => {
                Packed { ids: ids(pid, tid), what: page_of(addr, code) | FAULT }
            }
            Rec::Ev { pid, tid, ev } => {
                self.evs.push(*ev);
                Packed { ids: ids(pid, tid), what: ((self.evs.len() - 1) as u64) << 2 }
            }
            Rec::Line(l) => {
                self.lines.push(l);
                Packed { ids: 0, what: (((self.lines.len() - 1) as u64) << 2) | 1 }
            }
        };
        self.recs.push(item);
    }
}

impl DataSource {
    pub(crate) fn new(r: PerfScriptText) -> DataSource {
        let plans = r.plans.clone();
        DataSource { r, plans, next_line: 1, queue: VecDeque::new(), spare: Vec::new() }
    }

    /// What the reader found besides the records.
    pub(crate) fn side(&self) -> Side {
        self.r.side()
    }

    /// How each attribute's records are read.
    pub(crate) fn plans(&self) -> Arc<Vec<Plan>> {
        self.plans.clone()
    }

    /// The next chunk in order.
    pub(crate) fn next(&mut self, tgid_of: &mut HashMap<u32, u32>) -> Option<DataChunk> {
        if self.queue.is_empty() {
            self.read_ahead(tgid_of);
        }
        self.queue.pop_front()
    }

    pub(crate) fn give_back(&mut self, mut c: DataChunk) {
        if self.spare.len() < 4 {
            c.recs.clear();
            c.evs.clear();
            c.lines.clear();
            self.spare.push(c);
        }
    }

    /// Read one more chunk into the queue: false at the end of the records.
    pub(crate) fn read_ahead(&mut self, tgid_of: &mut HashMap<u32, u32>) -> bool {
        let mut chunk = self.spare.pop().unwrap_or_default();
        let (mut lost, mut problem) = (0, None);
        // The last tid seen, whose thread group is noted (0: none; tid 0 is never noted):
        // a task's faults come in runs.
        let mut noted = 0;
        while chunk.recs.len() < RECS {
            if let Some(Reader::Own(own)) = &mut self.r.reader {
                // The page faults (most records) of the round handed on, as the reader read
                // them in its scan; the first record that is none, or that `FaultAt::read`
                // left to the general way, goes through `next_rec` below.
                let recs = &mut chunk.recs;
                recs.reserve(RECS - recs.len());
                own.take_faults(RECS - recs.len(), |ids, what| {
                    let tid = (ids >> 32) as u32;
                    if tid != 0 && noted != tid {
                        tgid_of.entry(tid).or_insert(ids as u32);
                        noted = tid;
                    }
                    recs.push(Packed { ids, what });
                });
                if recs.len() == RECS {
                    break;
                }
            }
            let (pid, tid) = match self.r.next_rec(true, &mut lost, &mut problem) {
                None => break,
                Some(Next::Rec(r)) => {
                    let ids = match &r {
                        Rec::Fault { pid, tid, .. } | Rec::Ev { pid, tid, .. } => (*pid, *tid),
                        Rec::Line(_) => unreachable!("printed lines come as Next::Line"),
                    };
                    chunk.push(r);
                    ids
                }
                Some(Next::Line) => {
                    let line = self.r.line.clone();
                    let ids = crate::lines::header_of(&line).map_or((0, 0), |h| (h.pid, h.tid));
                    chunk.push(Rec::Line(line));
                    ids
                }
            };
            if tid != 0 && noted != tid {
                tgid_of.entry(tid).or_insert(pid);
                noted = tid;
            }
        }
        self.r.after(lost, problem);
        if chunk.recs.is_empty() {
            self.spare.push(chunk);
            return false;
        }
        chunk.first_line = self.next_line;
        self.next_line += chunk.recs.len();
        self.queue.push_back(chunk);
        true
    }
}

impl ReadAhead for DataSource {
    fn read_ahead(&mut self, tgid_of: &mut HashMap<u32, u32>) -> bool {
        DataSource::read_ahead(self, tgid_of)
    }

    fn as_any(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

/// Convert a chunk's records, as [`Conv::line`] converts their lines.
pub(crate) fn feed(c: &mut Conv<'_>, plans: &[Plan], chunk: &DataChunk) {
    c.steps.reserve(chunk.recs.len());
    // The task whose fault came last, when it found the task with nothing to close.
    let mut clean = None;
    let recs = &chunk.recs;
    let mut next = 0;
    while let Some(&rec) = recs.get(next) {
        let (k, line) = (next, chunk.first_line + next);
        next += 1;
        let rec = rec.item();
        if let Item::Fault { tid, page, .. } = rec
            && tid != 0
        {
            clean =
                c.fault_of(line, tid, page & !0xfff, page & WRITE != 0, clean == Some(tid)).then_some(tid);
            if clean.is_some() {
                // The faults of the task that follow (a run, most of the time) find it
                // with nothing to close too.
                let run = recs[k + 1..].iter().take_while(|r| r.what & FAULT != 0 && r.tid() == tid).count();
                let pages = recs[k + 1..k + 1 + run].iter().map(|r| r.what);
                c.clean_faults(tid, line + 1, pages);
                next += run;
            }
            continue;
        }
        clean = None;
        match rec {
            Item::Fault { pid, tid, page } => {
                let (addr, code) = (page & !0xfff, if page & WRITE != 0 { 2 } else { 0 });
                c.event(line, pid, tid, Event::Fault { addr, code })
            }
            Item::Line(i) => {
                let text = &chunk.lines[i];
                c.line(line, text, crate::lines::header_of(text));
            }
            Item::Ev { pid, tid, ev } => match &chunk.evs[ev] {
                Owned::SysEnter { attr, vals } => {
                    let Plan::SysEnter { name, args } = &plans[*attr] else { continue };
                    let args: Vec<(&str, u64)> =
                        args.iter().zip(vals).map(|((n, _), &v)| (n.as_str(), v)).collect();
                    c.event(line, pid, tid, Event::SysEnter { name, args: &args });
                }
                Owned::SysExit { attr, ret } => {
                    let Plan::SysExit { name, .. } = &plans[*attr] else { continue };
                    c.event(line, pid, tid, Event::SysExit { name, ret: *ret });
                }
                Owned::Fork { child } => c.event(line, pid, tid, Event::Fork { child: *child }),
                Owned::Exec { path, old_pid } => {
                    c.event(line, pid, tid, Event::Exec { path, old_pid: *old_pid });
                }
                Owned::Exit => c.event(line, pid, tid, Event::Exit),
                Owned::Other { attr } => {
                    let Plan::Other(name) = &plans[*attr] else { continue };
                    c.event(line, pid, tid, Event::Other(name));
                }
                Owned::Mmap2(r) => c.event(line, pid, tid, Event::Mmap2(r.clone())),
                Owned::Mmap => c.event(line, pid, tid, Event::Record("MMAP")),
            },
        }
    }
}

/// Import a whole `perf.data` (in memory) straight from its records: the steps and report
/// an import of its `perf script` text gives.
pub fn import(name: &str, bytes: Vec<u8>) -> Result<(crate::script::Script, super::ImportReport), String> {
    let r = open_bytes(name, bytes)?;
    let side = r.side();
    let mut src = DataSource::new(r);
    let plans = src.plans.clone();
    let mut c = Conv::new(name);
    if !src.read_ahead(&mut c.tgid_of) {
        let s = side.lock().map(|s| s.clone()).unwrap_or_default();
        return Err(s.problems.into_iter().next().unwrap_or_else(|| "empty trace".to_string()));
    }
    c.ahead = Some(Box::new(src));
    // The converter's reader, taken back.
    fn source(a: &mut Option<Box<dyn ReadAhead>>) -> Option<&mut DataSource> {
        a.as_deref_mut()?.as_any().downcast_mut()
    }
    loop {
        let chunk = match source(&mut c.ahead) {
            Some(s) => s.next(&mut c.tgid_of),
            None => None,
        };
        let Some(chunk) = chunk else { break };
        feed(&mut c, &plans, &chunk);
        if let Some(s) = source(&mut c.ahead) {
            s.give_back(chunk);
        }
    }
    c.finish();
    let mut report = c.final_report();
    add_side(&mut report, &side);
    Ok((c.into_script(), report))
}

/// A number as C's `%#lx` prints it: `0x1f`, but `0` for zero.
struct Cx(u64);

impl std::fmt::Display for Cx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0 == 0 { f.write_str("0") } else { write!(f, "{:#x}", self.0) }
    }
}

fn comm_of(comms: &HashMap<i32, String>, tid: i32) -> Cow<'_, str> {
    match comms.get(&tid) {
        Some(c) => Cow::Borrowed(c),
        None => Cow::Owned(format!(":{tid}")),
    }
}

/// `            sort  8742/8742   1009.601157: `, as `perf script` starts a line
/// (`%16s %5d/%-5d %12s: `, the time in seconds with microseconds).
fn head(line: &mut String, comm: Cow<'_, str>, pid: i32, tid: i32, time: u64) {
    let mut buf = [0u8; 24];
    let w = if comm.is_ascii() { comm.len() } else { comm.chars().count() };
    spaces(line, 16usize.saturating_sub(w));
    line.push_str(&comm);
    line.push(' ');
    let signed = |buf: &mut [u8; 24], v: i32| -> (usize, bool) {
        let d = digits(buf, u64::from(v.unsigned_abs()), 10, false).len();
        (d + usize::from(v < 0), v < 0)
    };
    let (n, neg) = signed(&mut buf, pid);
    spaces(line, 5usize.saturating_sub(n));
    if neg {
        line.push('-');
    }
    line.push_str(digits(&mut buf, u64::from(pid.unsigned_abs()), 10, false));
    line.push('/');
    let (n, neg) = signed(&mut buf, tid);
    if neg {
        line.push('-');
    }
    line.push_str(digits(&mut buf, u64::from(tid.unsigned_abs()), 10, false));
    spaces(line, 5usize.saturating_sub(n));
    line.push(' ');
    let secs = digits(&mut buf, time / 1_000_000_000, 10, false).len();
    spaces(line, 12usize.saturating_sub(secs + 7));
    line.push_str(digits(&mut buf, time / 1_000_000_000, 10, false));
    line.push('.');
    let usecs = (time % 1_000_000_000) / 1000;
    let u = digits(&mut buf, usecs, 10, false);
    line.extend(std::iter::repeat_n('0', 6 - u.len()));
    line.push_str(digits(&mut buf, usecs, 10, false));
    line.push_str(": ");
}

impl Read for PerfScriptText {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.buf.len() {
            if self.done {
                return Ok(0);
            }
            self.fill();
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Whether the file at `path` is a `perf.data` (also zstd-compressed).
pub fn file_is_perf_data(path: &std::path::Path) -> bool {
    let Ok(f) = std::fs::File::open(path) else { return false };
    let mut head = Vec::with_capacity(8);
    let mut magic = [0u8; 4];
    let mut f = std::io::BufReader::new(f);
    if f.read_exact(&mut magic).is_err() {
        return false;
    }
    let more = std::io::Cursor::new(magic).chain(f);
    let _ = if magic == super::perf::ZSTD_MAGIC {
        match zstd::stream::read::Decoder::new(more) {
            Ok(d) => d.take(8).read_to_end(&mut head),
            Err(_) => return false,
        }
    } else {
        more.take(8).read_to_end(&mut head)
    };
    is_perf_data(&head)
}

/// Open the `perf.data` at `path` (zstd-compressed or not).
pub fn open_path(path: &std::path::Path) -> Result<PerfScriptText, String> {
    let name = path.display().to_string();
    let mut f = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut magic = [0u8; 4];
    let n = f.read(&mut magic).map_err(|e| format!("cannot read: {e}"))?;
    f.rewind().map_err(|e| format!("cannot read: {e}"))?;
    let input: Box<dyn Input> = if n == 4 && magic == super::perf::ZSTD_MAGIC {
        // The reader seeks (to the header's sections): decompress into memory.
        let mut out = Vec::new();
        zstd::stream::read::Decoder::new(f)
            .and_then(|mut d| d.read_to_end(&mut out))
            .map_err(|e| format!("cannot decompress: {e}"))?;
        return open_bytes(&name, out);
    } else {
        Box::new(std::io::BufReader::with_capacity(1 << 16, f))
    };
    let records = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    // Read in place where it can be mapped.
    let records = match super::perf_records::Mapped::of(&records) {
        Some(m) => super::perf_records::Src::Mapped(m),
        None => super::perf_records::Src::Read(Box::new(records)),
    };
    open_with(&name, input, Some(records))
}

/// The whole `perf script` text of a `perf.data` (for a whole import), and what the reader
/// found besides.
pub fn to_text(name: &str, bytes: Vec<u8>) -> Result<(String, SideReport), String> {
    let mut r = open_bytes(name, bytes)?;
    let mut text = Vec::new();
    r.read_to_end(&mut text).map_err(|e| e.to_string())?;
    let side = r.side.lock().map(|s| s.clone()).unwrap_or_default();
    let text = match String::from_utf8(text) {
        Ok(t) => t,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    };
    Ok((text, side))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MMAP_FMT: &str = "name: sys_enter_mmap\nID: 174\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n\tfield:unsigned long addr;\toffset:16;\tsize:8;\tsigned:0;\n\tfield:unsigned long len;\toffset:24;\tsize:8;\tsigned:0;\n\nprint fmt: \"addr: 0x%08lx, len: 0x%08lx\", ((unsigned long)(REC->addr)), ((unsigned long)(REC->len))\n";

    fn raw(fields: &[(usize, &[u8])], len: usize) -> Vec<u8> {
        let mut r = vec![0u8; len];
        for (off, b) in fields {
            r[*off..*off + b.len()].copy_from_slice(b);
        }
        r
    }

    #[test]
    fn syscall_format_prints_as_perf_script() {
        let f = parse_format("syscalls", MMAP_FMT).expect("format");
        assert_eq!(f.id, 174);
        assert_eq!(f.field("len").map(|f| (f.offset, f.size)), Some((24, 8)));
        let r = raw(&[(16, &0x7f00_0000_1000u64.to_le_bytes()), (24, &0x2000u64.to_le_bytes())], 32);
        let mut out = String::new();
        print_event(&f, &r, &mut out);
        assert_eq!(out, "addr: 0x7f0000001000, len: 0x00002000");
    }

    #[test]
    fn sched_and_fault_formats_print_as_perf_script() {
        let exec = "name: sched_process_exec\nID: 365\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\tfield:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;\n\tfield:pid_t pid;\toffset:12;\tsize:4;\tsigned:1;\n\tfield:pid_t old_pid;\toffset:16;\tsize:4;\tsigned:1;\n\nprint fmt: \"filename=%s pid=%d old_pid=%d\", __get_str(filename), REC->pid, REC->old_pid\n";
        let f = parse_format("sched", exec).expect("format");
        let loc = (7u32 << 16) | 20;
        let r = raw(
            &[
                (8, &loc.to_le_bytes()),
                (12, &42i32.to_le_bytes()),
                (16, &(-1i32).to_le_bytes()),
                (20, b"/bin/a\0"),
            ],
            28,
        );
        let mut out = String::new();
        print_event(&f, &r, &mut out);
        assert_eq!(out, "filename=/bin/a pid=42 old_pid=-1");
        let exit = "name: sched_process_exit\nID: 369\nformat:\n\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\tfield:pid_t pid;\toffset:24;\tsize:4;\tsigned:1;\n\tfield:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;\n\nprint fmt: \"comm=%s pid=%d group_dead=%s\", REC->comm, REC->pid, REC->group_dead ? \"true\" : \"false\"\n";
        let f = parse_format("sched", exit).expect("format");
        let r = raw(&[(8, b"sh\0"), (24, &7i32.to_le_bytes()), (32, &[1])], 40);
        out.clear();
        print_event(&f, &r, &mut out);
        assert_eq!(out, "comm=sh pid=7 group_dead=true");
        let fault = "name: page_fault_user\nID: 190\nformat:\n\tfield:unsigned long address;\toffset:8;\tsize:8;\tsigned:0;\n\tfield:unsigned long ip;\toffset:16;\tsize:8;\tsigned:0;\n\tfield:unsigned long error_code;\toffset:24;\tsize:8;\tsigned:0;\n\nprint fmt: \"address=%ps ip=%ps error_code=0x%lx\", (void *)REC->address, (void *)REC->ip, REC->error_code\n";
        let f = parse_format("exceptions", fault).expect("format");
        let r = raw(
            &[(8, &0x7ffd_1234u64.to_le_bytes()), (16, &0x55u64.to_le_bytes()), (24, &6u64.to_le_bytes())],
            32,
        );
        out.clear();
        print_event(&f, &r, &mut out);
        assert_eq!(out, "address=0x7ffd1234 ip=0x55 error_code=0x6");
    }

    #[test]
    fn unknown_print_formats_fall_back_to_fields() {
        let t = "name: x\nID: 1\nformat:\n\tfield:int a;\toffset:8;\tsize:4;\tsigned:1;\n\nprint fmt: \"%s\", __print_flags(REC->a, \"|\", {1, \"A\"})\n";
        let f = parse_format("s", t).expect("format");
        let mut out = String::new();
        print_event(&f, &raw(&[(8, &(-3i32).to_le_bytes())], 12), &mut out);
        assert_eq!(out, "a=-3");
    }

    #[test]
    fn a_recording_s_records_are_read_without_text() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/data/sort-threads.perf.data.zst");
        let mut src = DataSource::new(open_path(&path).expect("perf.data"));
        // Every event anonmm records has a plan that reads it directly.
        for (p, (name, _)) in src.plans.iter().zip(&src.r.events) {
            assert!(!matches!(p, Plan::Text | Plan::Other(_)), "{name}: {p:?}");
        }
        let mut tgid_of = HashMap::default();
        let (mut direct, mut printed) = (0, 0);
        while let Some(c) = src.next(&mut tgid_of) {
            for r in &c.recs {
                match r.item() {
                    Item::Line(l) => {
                        printed += 1;
                        assert!(c.lines[l].contains("PERF_RECORD_MMAP2"), "{}", c.lines[l]);
                    }
                    _ => direct += 1,
                }
            }
        }
        assert!(direct > 4000 && printed == 0, "{direct} read directly, {printed} printed");
    }

    /// The page faults read as each round is scanned (and handed on without a second look at
    /// their bytes) are those read one by one the general way: the same records in the same
    /// order, the same thread groups noted and the same problems, for the bundled recording
    /// and for copies whose samples are damaged where a fault's fields are (a negative tid,
    /// raw data too short for the fault's fields, or running past the sample's end).
    #[test]
    fn faults_read_in_the_scan_are_those_read_one_by_one() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/data/sort-threads.perf.data.zst");
        let good = zstd::decode_all(std::fs::File::open(path).expect("recording")).expect("zstd");
        let read = |bytes: Vec<u8>, scan: bool| {
            let mut r = open_bytes("t.data", bytes).expect("perf.data");
            let Some(Reader::Own(own)) = &mut r.reader else { panic!("read by this crate's reader") };
            if !scan {
                own.read_faults(Vec::new());
            }
            let mut src = DataSource::new(r);
            let side = src.side();
            let (mut tgid_of, mut out, mut faults) = (HashMap::default(), Vec::new(), 0);
            while let Some(c) = src.next(&mut tgid_of) {
                for (k, p) in c.recs.iter().enumerate() {
                    let line = c.first_line + k;
                    out.push(match p.item() {
                        Item::Fault { pid, tid, page } => {
                            faults += 1;
                            format!("{line} fault {pid}/{tid} {page:#x}")
                        }
                        Item::Ev { pid, tid, ev } => format!("{line} event {pid}/{tid} {ev}"),
                        Item::Line(l) => format!("{line} {}", c.lines[l]),
                    });
                }
            }
            let mut tgids: Vec<(u32, u32)> = tgid_of.into_iter().collect();
            tgids.sort_unstable();
            let side = side.lock().map(|s| (s.lost, s.problems.clone())).expect("side");
            (out, tgids, side, faults)
        };
        let whole = read(good.clone(), true);
        assert!(whole == read(good.clone(), false));
        assert!(whole.3 > 4000, "{} faults", whole.3);
        // Where the fault attribute's samples have their fields.
        let opened = open_bytes("t.data", good.clone()).expect("perf.data");
        let f = opened.faults.iter().flatten().next().copied().expect("a fault attribute");
        let word = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8"));
        let (data, size) = (word(&good, 40) as usize, word(&good, 48) as usize);
        for (every, what) in [(7, "tid"), (11, "short"), (13, "long")] {
            let mut b = good.clone();
            let (mut at, mut n) = (data, 0);
            while at + 8 <= data + size {
                let ty = u32::from_le_bytes(b[at..at + 4].try_into().expect("4"));
                let len = usize::from(u16::from_le_bytes(b[at + 6..at + 8].try_into().expect("2")));
                let body = at + 8;
                if ty == 9 && body + f.raw + 4 <= at + len {
                    n += 1;
                    if n % every == 0 {
                        match what {
                            "tid" => {
                                b[body + f.ids + 4..body + f.ids + 8].copy_from_slice(&u32::MAX.to_le_bytes())
                            }
                            "short" => b[body + f.raw..body + f.raw + 4].copy_from_slice(&8u32.to_le_bytes()),
                            _ => b[body + f.raw..body + f.raw + 4].copy_from_slice(&60000u32.to_le_bytes()),
                        }
                    }
                }
                at += len.max(8);
            }
            let damaged = read(b.clone(), true);
            assert!(damaged == read(b, false), "damaged: {what}");
            assert!(damaged.3 < whole.3, "damaged: {what}: {} faults", damaged.3);
        }
    }

    /// Every size and offset of the header, the feature table and the event descriptions
    /// changed in turn: the file reads or fails with an error, never aborts on an allocation
    /// of what a wrong size says.
    #[test]
    fn wrong_sizes_in_the_header_are_an_error_not_an_abort() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/data/sort-threads.perf.data.zst");
        let good = zstd::decode_all(std::fs::File::open(path).expect("recording")).expect("zstd");
        let word = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8"));
        let len = good.len() as u64;
        let table = (word(&good, 40) + word(&good, 48)) as usize;
        let features = (0..32).map(|i| good[72 + i].count_ones() as usize).sum::<usize>();
        let mut at: Vec<usize> = (8..104).step_by(8).collect();
        at.extend((table..table + 16 * features).step_by(8));
        let (mut read, mut refused) = (0, 0);
        for &a in &at {
            let v = word(&good, a);
            for new in [v + 1000, v.wrapping_sub(8), len, len - 8, 0, 1 << 40, u64::MAX] {
                let mut b = good.clone();
                b[a..a + 8].copy_from_slice(&new.to_le_bytes());
                match to_text("x", b) {
                    Ok(_) => read += 1,
                    Err(_) => refused += 1,
                }
            }
        }
        // The event descriptions' counts and lengths, a u32 at a time.
        let desc = (0..features)
            .map(|i| (word(&good, table + 16 * i) as usize, word(&good, table + 16 * i + 8) as usize))
            .nth(
                (0..linux_perf_data::Feature::EVENT_DESC.0 as usize)
                    .filter(|&bit| good[72 + bit / 8] >> (bit % 8) & 1 == 1)
                    .count(),
            )
            .expect("HEADER_EVENT_DESC");
        for a in (desc.0..desc.0 + desc.1.min(512)).step_by(4) {
            for new in [0x7fff_ffffu32, u32::MAX] {
                let mut b = good.clone();
                b[a..a + 4].copy_from_slice(&new.to_le_bytes());
                if open_bytes("x", b).is_err() {
                    refused += 1;
                }
            }
        }
        assert!(read > 0 && refused > 100, "{read} read, {refused} refused");
        // A big-endian file is refused as not modelled, before any size is read.
        let mut b = good.clone();
        b[..8].copy_from_slice(b"2ELIFREP");
        let e = open_bytes("x", b).err().expect("refused");
        assert_eq!(e, "not modelled: a big-endian perf.data");
    }

    #[test]
    fn damaged_input_is_an_error_not_a_panic() {
        assert!(open("x", Box::new(std::io::Cursor::new(b"PERFILE2 and nothing".to_vec()))).is_err());
        assert!(parse_tracing_data(b"\x17\x08\x44tracing0.6\0").is_err());
        assert!(parse_tracing_data(b"garbage").is_err());
    }
}
