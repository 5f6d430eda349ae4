//! Parser for scripts in `strace -f` syntax, and the formatter that writes calls back out.
//!
//! A line is `[PID] [TIMESTAMP] CALL(ARGS) [= RESULT] [<TIME>] [# comment]`, where PID is a
//! bare number or strace's `[pid  1234]`. strace noise (`--- SIG... ---`, `+++ exited ... +++`)
//! is skipped, and `<unfinished ...>` / `<... X resumed>` halves are joined.
//!
//! The parser never panics: every problem becomes a `ParseError` naming the file and line.

use std::collections::HashMap;
use std::path::Path;

use super::ast::*;
use crate::abi::{self, FlagTable};
use crate::errno::{Errno, Signal};
use crate::types::Pid;

/// Why a script could not be parsed; displays as `PATH:LINE: REASON` (`PATH: REASON` when the
/// file as a whole is at fault).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}", crate::out::location(.path, *.line))]
pub struct ParseError {
    /// The script's path, as given to the parser.
    pub path: String,
    /// 1-based line number; 0 when the file could not be read at all.
    pub line: usize,
    /// What was wrong, for a human.
    pub reason: String,
}

/// Knobs for `parse_str_with`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ParseOptions {
    /// Record calls the model does not know in `Script::skipped` instead of failing, so that
    /// real strace output (full of `read`, `futex`, ...) can be replayed.
    pub skip_unknown: bool,
}

/// Parse a script; any unknown call is an error.
pub fn parse_str(path: &str, text: &str) -> Result<Script, ParseError> {
    parse_str_with(path, text, &ParseOptions::default())
}

/// Read and parse a script file; any unknown call is an error.
pub fn parse_file(path: &Path) -> Result<Script, ParseError> {
    parse_file_with(path, &ParseOptions::default())
}

/// Read and parse a script file with options. Non-UTF-8 bytes (traces may hold them in
/// strings) become replacement characters.
pub fn parse_file_with(path: &Path, opts: &ParseOptions) -> Result<Script, ParseError> {
    let name = path.display().to_string();
    let text = std::fs::read(path).map_err(|e| ParseError {
        path: name.clone(),
        line: 0,
        reason: format!("cannot read: {e}"),
    })?;
    // Traces may hold non-UTF-8 bytes in strings; keep going with replacement characters.
    let text = String::from_utf8_lossy(&text);
    parse_str_with(&name, &text, opts)
}

/// A call whose first half (`<unfinished ...>`) has been seen but not its second.
struct Pending {
    line: usize,
    name: String,
    text: String,
    /// Index reserved in the step list, for calls whose effect must precede what other
    /// processes print meanwhile (a fork's child runs before the parent's `resumed` line).
    slot: Option<usize>,
}

/// Parse script text with options; `path` is only used in errors and [`Script::path`].
pub fn parse_str_with(path: &str, text: &str, opts: &ParseOptions) -> Result<Script, ParseError> {
    let mut p = Parser {
        path,
        opts,
        slots: Vec::new(),
        skipped: Vec::new(),
        pending: HashMap::new(),
        first_pid: None,
    };
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        p.line(line, raw).map_err(|reason| p.err(line, reason))?;
    }
    p.finish()?;
    let steps = p.slots.into_iter().flatten().collect();
    Ok(Script { path: path.to_string(), steps, skipped: p.skipped })
}

struct Parser<'a> {
    path: &'a str,
    opts: &'a ParseOptions,
    /// Steps in replay order; `None` is a slot reserved by a pending call.
    slots: Vec<Option<Step>>,
    skipped: Vec<(usize, String)>,
    pending: HashMap<Pid, Pending>,
    first_pid: Option<Pid>,
}

impl Parser<'_> {
    fn err(&self, line: usize, reason: String) -> ParseError {
        ParseError { path: self.path.to_string(), line, reason }
    }

    fn line(&mut self, line: usize, raw: &str) -> Result<(), String> {
        let s = raw.trim();
        if s.is_empty() || s.starts_with('#') {
            return Ok(());
        }
        let (pid, body) = split_prefix(s)?;
        if body.is_empty() || body.starts_with('#') || body.starts_with("---") || body.starts_with("+++") {
            return Ok(());
        }
        // A line without a pid belongs to the first process seen.
        let pid = pid.or(self.first_pid).unwrap_or(Pid(1));
        self.first_pid.get_or_insert(pid);

        if let Some(rest) = body.strip_prefix("<...") {
            return self.resumed(line, pid, rest);
        }
        if let Some(idx) = body.find("<unfinished ...>") {
            let text = body[..idx].trim_end().to_string();
            let name = call_name(&text).to_string();
            if let Some(old) = self.pending.remove(&pid) {
                if !self.opts.skip_unknown {
                    return Err(format!("pid {pid}: `{}` (line {}) is still unfinished", old.name, old.line));
                }
                self.skipped.push((old.line, old.name));
                if let Some(slot) = old.slot {
                    self.slots[slot] = None;
                }
            }
            let slot =
                if matches!(name.as_str(), "fork" | "vfork" | "clone" | "clone3" | "exit" | "exit_group") {
                    self.slots.push(None);
                    Some(self.slots.len() - 1)
                } else {
                    None
                };
            self.pending.insert(pid, Pending { line, name, text, slot });
            return Ok(());
        }
        let step = self.step(line, pid, body)?;
        self.slots.extend(step.map(Some));
        Ok(())
    }

    /// `<... NAME resumed>REST`: join REST to the pending first half.
    fn resumed(&mut self, line: usize, pid: Pid, rest: &str) -> Result<(), String> {
        let rest = rest.trim_start();
        let Some(end) = rest.find("resumed>") else {
            return Err("expected `<... NAME resumed>`".to_string());
        };
        let name = rest[..end].trim();
        let tail = &rest[end + "resumed>".len()..];
        let Some(p) = self.pending.remove(&pid) else {
            if self.opts.skip_unknown {
                self.skipped.push((line, name.to_string()));
                return Ok(());
            }
            return Err(format!("`{name}` resumed, but pid {pid} has no unfinished call"));
        };
        if p.name != name {
            return Err(format!("`{name}` resumed, but pid {pid}'s unfinished call is `{}`", p.name));
        }
        let joined = format!("{}{}", p.text, tail);
        let step = self.step(p.line, pid, &joined)?;
        match p.slot {
            Some(slot) => self.slots[slot] = step,
            None => self.slots.extend(step.map(Some)),
        }
        Ok(())
    }

    /// Calls never resumed (a thread's `exit_group(0 <unfinished ...>`) still happened: close
    /// their argument list and keep them, without a recorded result.
    fn finish(&mut self) -> Result<(), ParseError> {
        let mut pending: Vec<(Pid, Pending)> = self.pending.drain().collect();
        pending.sort_by_key(|(_, p)| p.line);
        for (pid, p) in pending {
            // Drop a dangling `, ` before closing the argument list.
            let text = format!("{})", p.text.trim_end().trim_end_matches(','));
            let step = self.step(p.line, pid, &text).map_err(|r| self.err(p.line, r))?;
            match p.slot {
                Some(slot) => self.slots[slot] = step,
                None => self.slots.extend(step.map(Some)),
            }
        }
        Ok(())
    }

    /// Parse `CALL(ARGS) [= RESULT]`; `None` when the call is unknown and skipped.
    fn step(&mut self, line: usize, pid: Pid, body: &str) -> Result<Option<Step>, String> {
        let raw = split_call(body)?;
        if let Some(code) = restarted(raw.rest) {
            // Interrupted before it took effect, and restarted (`clone(...) = ?
            // ERESTARTNOINTR`): the restarted call follows on its own line.
            self.skipped.push((line, format!("{} interrupted ({code}), restarted", raw.name)));
            return Ok(None);
        }
        let call = match build_call(raw.name, &raw.args) {
            Ok(c) => c,
            Err(CallErr::Unknown(what)) if self.opts.skip_unknown => {
                self.skipped.push((line, what));
                return Ok(None);
            }
            Err(CallErr::Unknown(what)) => return Err(format!("unknown call {what}")),
            Err(CallErr::Bad(r)) => return Err(format!("{}: {r}", raw.name)),
        };
        let expect = match parse_tail(raw.rest) {
            // A replayed trace may fail with errnos the model never returns (`openat` on a
            // tty: ENXIO); such a step cannot be compared, so it is skipped too.
            Err(r) if self.opts.skip_unknown && r.starts_with(UNKNOWN_ERRNO) => {
                self.skipped.push((line, format!("{} ({})", raw.name, &r[UNKNOWN_ERRNO.len()..].trim())));
                return Ok(None);
            }
            r => r?,
        };
        Ok(Some(Step { line, pid, call, text: raw.text.to_string(), expect }))
    }
}

/// Split off the pid (`1234 ` or `[pid  1234] `) and a timestamp (`12:34:56.789012`,
/// `1234.567890`) from the front of a line.
fn split_prefix(s: &str) -> Result<(Option<Pid>, &str), String> {
    let mut pid = None;
    let mut rest = s;
    if let Some(r) = s.strip_prefix("[pid") {
        let Some(close) = r.find(']') else {
            return Err("bad pid: missing `]` after `[pid`".to_string());
        };
        pid = Some(parse_pid(r[..close].trim())?);
        rest = &r[close + 1..];
    } else if s.starts_with(|c: char| c.is_ascii_digit()) {
        let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let next = s[end..].chars().next();
        match next {
            Some(c) if c.is_whitespace() => {
                pid = Some(parse_pid(&s[..end])?);
                rest = &s[end..];
            }
            // A timestamp with no pid in front.
            Some(':') | Some('.') => {}
            _ => return Err(format!("bad pid `{}`", first_word(s))),
        }
    }
    rest = rest.trim_start();
    let word = first_word(rest);
    if is_timestamp(word) {
        rest = rest[word.len()..].trim_start();
    }
    Ok((pid, rest))
}

fn first_word(s: &str) -> &str {
    s.split(char::is_whitespace).next().unwrap_or("")
}

fn parse_pid(s: &str) -> Result<Pid, String> {
    match s.parse::<u32>() {
        Ok(n) if n > 0 && s.bytes().all(|b| b.is_ascii_digit()) => Ok(Pid(n)),
        _ => Err(format!("bad pid `{s}`")),
    }
}

fn is_timestamp(w: &str) -> bool {
    w.starts_with(|c: char| c.is_ascii_digit())
        && w.contains([':', '.'])
        && w.bytes().all(|b| b.is_ascii_digit() || b == b':' || b == b'.')
}

/// The leading identifier of a call text.
fn call_name(s: &str) -> &str {
    let end = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len());
    &s[..end]
}

struct RawCall<'a> {
    name: &'a str,
    args: Vec<&'a str>,
    /// `name(args)`, as written.
    text: &'a str,
    /// What follows the closing parenthesis.
    rest: &'a str,
}

fn split_call(body: &str) -> Result<RawCall<'_>, String> {
    let name = call_name(body);
    if name.is_empty() {
        return Err(format!("expected a call, found `{}`", first_word(body)));
    }
    let after = body[name.len()..].trim_start();
    let Some(inner) = after.strip_prefix('(') else {
        return Err(format!("missing '(' after `{name}`"));
    };
    let (args, close) = split_list(inner, ')')?;
    let close_abs = body.len() - inner.len() + close;
    Ok(RawCall { name, args, text: &body[..=close_abs], rest: &body[close_abs + 1..] })
}

/// Split a comma-separated list up to the closing `close` at depth 0, minding nested
/// brackets, strings and `/* comments */`. Returns the trimmed items and the index of `close`.
fn split_list(s: &str, close: char) -> Result<(Vec<&str>, usize), String> {
    let b = s.as_bytes();
    let mut items = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                if i >= b.len() {
                    return Err("unterminated string".to_string());
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => match s[i + 2..].find("*/") {
                Some(e) => i += 2 + e + 1,
                None => return Err("unterminated comment".to_string()),
            },
            // `3</path>`: strace -y decorates fds with their path.
            b'<' if i > 0 && (b[i - 1].is_ascii_digit() || s[..i].ends_with("AT_FDCWD")) => {
                match s[i..].find('>') {
                    Some(e) => i += e,
                    None => return Err("missing '>' after fd path".to_string()),
                }
            }
            b'(' | b'[' | b'{' => depth += 1,
            c @ (b')' | b']' | b'}') => {
                if depth == 0 {
                    if c as char != close {
                        return Err(format!("unbalanced '{}'", c as char));
                    }
                    let last = s[start..i].trim();
                    if !(items.is_empty() && last.is_empty()) {
                        items.push(last);
                    }
                    if items.iter().any(|a| a.is_empty()) {
                        return Err("empty argument".to_string());
                    }
                    return Ok((items, i));
                }
                depth -= 1;
            }
            b',' if depth == 0 => {
                items.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    Err(format!("missing '{close}'"))
}

/// The part after `)`: an optional `= RESULT`, timing and comment.
fn parse_tail(rest: &str) -> Result<Option<Expect>, String> {
    // Errno messages and timings hold no `#`, so the first `#` starts the comment.
    let rest = rest.split('#').next().unwrap_or("").trim();
    if rest.is_empty() {
        return Ok(None);
    }
    let Some(r) = rest.strip_prefix('=') else {
        return Err(format!("unexpected `{rest}` after the call"));
    };
    parse_result(r.trim()).map(Some)
}

const UNKNOWN_ERRNO: &str = "unknown errno name";

/// The kernel-internal restart code of `= ? ERESTARTNOINTR (To be restarted)` (also
/// ERESTARTSYS, ERESTARTNOHAND, ERESTART_RESTARTBLOCK): the call was unwound by a signal.
fn restarted(rest: &str) -> Option<&str> {
    let r = rest.split('#').next()?.trim().strip_prefix('=')?.trim_start().strip_prefix('?')?;
    let code = first_word(r.trim_start());
    code.starts_with("ERESTART").then_some(code)
}

fn parse_result(s: &str) -> Result<Expect, String> {
    let word = first_word(s);
    let mut rest = s[word.len()..].trim_start();
    let expect = if word == "?" {
        // `= ? <unavailable>`, `= ? ERESTARTSYS (...)`: nothing to check.
        return Ok(Expect::Unknown);
    } else if word.is_empty() {
        return Err("missing result after '='".to_string());
    } else if word.starts_with("SIG") {
        Expect::Signal(Signal::from_name(word).ok_or_else(|| format!("unknown signal {word}"))?)
    } else if word == "-1" {
        let name = first_word(rest);
        if name.is_empty() {
            return Err("missing errno name after `= -1`".to_string());
        }
        rest = rest[name.len()..].trim_start();
        Expect::Err(Errno::from_name(name).ok_or_else(|| format!("{UNKNOWN_ERRNO} {name}"))?)
    } else {
        // `= 3</tmp/f>` under strace -y.
        let num = word.split('<').next().unwrap_or(word);
        match parse_num(num) {
            Some(v) if !num.starts_with('-') => Expect::Value(v),
            _ => return Err(format!("bad result `{word}`")),
        }
    };
    // What strace may append: `(strerror text)`, `(decoded flags)`, ` <0.000012>`.
    while !rest.is_empty() {
        let (open, close) = match rest.as_bytes()[0] {
            b'(' => ('(', ')'),
            b'<' => ('<', '>'),
            _ => return Err(format!("unexpected `{rest}` after the result")),
        };
        let mut depth = 0usize;
        let mut end = None;
        for (i, c) in rest.char_indices() {
            if c == open {
                depth += 1;
            } else if c == close {
                depth -= 1;
                if depth == 0 {
                    end = Some(i);
                    break;
                }
            }
        }
        let Some(end) = end else {
            return Err(format!("missing '{close}' after the result"));
        };
        rest = rest[end + 1..].trim_start();
    }
    Ok(expect)
}

/// A number: decimal, `0x` hex, `0`-prefixed octal (strace prints modes as `0600`),
/// negative decimal (two's complement), or `NULL`.
fn parse_num(s: &str) -> Option<u64> {
    if s == "NULL" {
        return Some(0);
    }
    if let Some(m) = s.strip_prefix('-') {
        return parse_unsigned(m).filter(|&v| v <= 1 << 63).map(|v| v.wrapping_neg());
    }
    parse_unsigned(s)
}

fn parse_unsigned(s: &str) -> Option<u64> {
    let (digits, radix) = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        (h, 16)
    } else if s.len() > 1 && s.starts_with('0') {
        (&s[1..], 8)
    } else {
        (s, 10)
    };
    // from_str_radix would take a leading '+'; only digits are numbers here.
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// Why a call could not be built.
enum CallErr {
    /// Not a call the model knows (skippable with `skip_unknown`).
    Unknown(String),
    /// A known call with bad arguments.
    Bad(String),
}

impl From<String> for CallErr {
    fn from(s: String) -> Self {
        CallErr::Bad(s)
    }
}

/// Strip strace's `/* ... */` annotations (`0x7ffd /* 25 vars */`).
fn strip_comment(s: &str) -> &str {
    match s.find("/*") {
        Some(i) => s[..i].trim_end(),
        None => s,
    }
}

fn num(args: &[&str], i: usize, what: &str) -> Result<u64, String> {
    let a = strip_comment(args.get(i).copied().unwrap_or(""));
    parse_num(a).ok_or_else(|| format!("bad number `{a}` for {what}"))
}

fn fd(args: &[&str], i: usize, what: &str) -> Result<i64, String> {
    let a = strip_comment(args.get(i).copied().unwrap_or(""));
    // `3</path>`, `AT_FDCWD</cwd>` under strace -y.
    let n = a.split('<').next().unwrap_or(a);
    if n == "AT_FDCWD" {
        return Ok(abi::AT_FDCWD);
    }
    parse_num(n).map(|v| v as i64).ok_or_else(|| format!("bad number `{a}` for {what}"))
}

/// `NAME|NAME|0x10`, with names from `table`.
fn parse_flags(s: &str, table: FlagTable, what: &str) -> Result<u64, String> {
    let s = strip_comment(s);
    let mut v = 0;
    for part in s.split('|').map(str::trim) {
        if let Some(n) = parse_num(part) {
            v |= n;
        } else if let Some(&(_, n)) = table.iter().find(|(name, _)| *name == part) {
            v |= n;
        } else if part.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
            return Err(format!("unknown flag {part} in {what}"));
        } else {
            return Err(format!("bad number `{part}` in {what}"));
        }
    }
    Ok(v)
}

fn flags(args: &[&str], i: usize, table: FlagTable, what: &str) -> Result<u64, String> {
    parse_flags(args.get(i).copied().unwrap_or(""), table, what)
}

/// A C string as strace prints it, possibly truncated (`"abc"...`); `NULL` is None.
fn parse_string(s: &str) -> Result<Option<String>, String> {
    // No `strip_comment` here: `/*` may be inside the string.
    if s == "NULL" || s == "0" {
        return Ok(None);
    }
    let body = s
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix("\"...").or_else(|| r.strip_suffix('"')))
        .ok_or_else(|| format!("expected a string, found `{s}`"))?;
    let b = body.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let Some(&e) = b.get(i + 1) else {
            return Err(format!("bad escape at the end of {s}"));
        };
        i += 2;
        out.push(match e {
            b'n' => b'\n',
            b't' => b'\t',
            b'r' => b'\r',
            b'v' => 0x0b,
            b'f' => 0x0c,
            b'a' => 0x07,
            b'b' => 0x08,
            b'\\' | b'"' | b'\'' | b'?' => e,
            b'x' => {
                let n = b[i..].iter().take(2).take_while(|c| c.is_ascii_hexdigit()).count();
                let v = std::str::from_utf8(&b[i..i + n]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                i += n;
                v.ok_or_else(|| format!("bad \\x escape in {s}"))?
            }
            b'0'..=b'7' => {
                let n = b[i - 1..].iter().take(3).take_while(|c| (b'0'..=b'7').contains(c)).count();
                let v = std::str::from_utf8(&b[i - 1..i - 1 + n])
                    .ok()
                    .and_then(|o| u8::from_str_radix(o, 8).ok());
                i += n - 1;
                v.ok_or_else(|| format!("bad octal escape in {s}"))?
            }
            _ => return Err(format!("bad escape `\\{}` in {s}", e as char)),
        });
    }
    Ok(Some(String::from_utf8_lossy(&out).into_owned()))
}

fn string(args: &[&str], i: usize, what: &str) -> Result<Option<String>, String> {
    parse_string(args.get(i).copied().unwrap_or("")).map_err(|e| format!("{what}: {e}"))
}

fn want(args: &[&str], counts: &[usize]) -> Result<(), String> {
    if counts.contains(&args.len()) {
        return Ok(());
    }
    let n: Vec<String> = counts.iter().map(|c| c.to_string()).collect();
    Err(format!("expected {} arguments, got {}", n.join(" or "), args.len()))
}

/// Clone flag names beyond `abi::CLONE_FLAGS`, and the exit signals strace prints in the low byte.
const CLONE_EXTRA: FlagTable = &[
    ("CLONE_NEWTIME", 0x80),
    ("CLONE_NEWCGROUP", 0x0200_0000),
    ("CLONE_NEWUTS", 0x0400_0000),
    ("CLONE_NEWIPC", 0x0800_0000),
    ("CLONE_NEWUSER", 0x1000_0000),
    ("CLONE_NEWPID", 0x2000_0000),
    ("CLONE_NEWNET", 0x4000_0000),
    ("CLONE_IO", 0x8000_0000),
    ("CLONE_CLEAR_SIGHAND", 0x1_0000_0000),
    ("CLONE_INTO_CGROUP", 0x2_0000_0000),
];

const SIGNALS: FlagTable = &[
    ("SIGHUP", 1),
    ("SIGINT", 2),
    ("SIGKILL", 9),
    ("SIGUSR1", 10),
    ("SIGUSR2", 12),
    ("SIGTERM", 15),
    ("SIGCHLD", 17),
];

fn parse_clone_flags(s: &str) -> Result<u64, String> {
    let mut v = 0;
    for part in s.split('|').map(str::trim) {
        let table = [abi::CLONE_FLAGS, CLONE_EXTRA, SIGNALS];
        match table.iter().flat_map(|t| t.iter()).find(|(name, _)| *name == part) {
            Some(&(_, n)) => v |= n,
            None => v |= parse_flags(part, &[], "clone flags")?,
        }
    }
    Ok(v)
}

/// `name=value` among strace's named arguments.
fn named<'a>(args: &[&'a str], key: &str) -> Option<&'a str> {
    args.iter()
        .find_map(|a| a.strip_prefix(key).and_then(|r| r.trim_start().strip_prefix('=')).map(str::trim))
}

fn clone_call(flags: u64) -> Call {
    if flags & abi::CLONE_VM == 0 {
        Call::Fork { vfork: false }
    } else if flags & abi::CLONE_VFORK != 0 {
        Call::Fork { vfork: true }
    } else {
        Call::CloneVm { flags }
    }
}

fn build_call(name: &str, a: &[&str]) -> Result<Call, CallErr> {
    use crate::abi::{MADV_ADVICE, MAP_FLAGS, MREMAP_FLAGS, OPEN_FLAGS, PROT_FLAGS};
    Ok(match name {
        "mmap" => {
            want(a, &[6])?;
            Call::Mmap {
                addr: num(a, 0, "addr")?,
                len: num(a, 1, "length")?,
                prot: flags(a, 2, PROT_FLAGS, "prot")?,
                flags: flags(a, 3, MAP_FLAGS, "flags")?,
                fd: fd(a, 4, "fd")?,
                off: num(a, 5, "offset")?,
            }
        }
        "munmap" => {
            want(a, &[2])?;
            Call::Munmap { addr: num(a, 0, "addr")?, len: num(a, 1, "length")? }
        }
        "mprotect" | "pkey_mprotect" => {
            // The protection key does not matter to the model.
            want(a, if name == "mprotect" { &[3] } else { &[4] })?;
            Call::Mprotect {
                addr: num(a, 0, "addr")?,
                len: num(a, 1, "length")?,
                prot: flags(a, 2, PROT_FLAGS, "prot")?,
            }
        }
        "mlock" | "munlock" => {
            want(a, &[2])?;
            let (addr, len) = (num(a, 0, "addr")?, num(a, 1, "len")?);
            if name == "mlock" { Call::Mlock { addr, len, flags: None } } else { Call::Munlock { addr, len } }
        }
        "mlock2" => {
            want(a, &[3])?;
            Call::Mlock {
                addr: num(a, 0, "addr")?,
                len: num(a, 1, "len")?,
                flags: Some(flags(a, 2, abi::MLOCK_FLAGS, "flags")?),
            }
        }
        "mlockall" => {
            want(a, &[1])?;
            Call::Mlockall { flags: flags(a, 0, abi::MCL_FLAGS, "flags")? }
        }
        "munlockall" => {
            want(a, &[0])?;
            Call::Munlockall
        }
        "madvise" => {
            want(a, &[3])?;
            Call::Madvise {
                addr: num(a, 0, "addr")?,
                len: num(a, 1, "length")?,
                advice: flags(a, 2, MADV_ADVICE, "advice")?,
            }
        }
        "mremap" => {
            want(a, &[4, 5])?;
            Call::Mremap {
                old_addr: num(a, 0, "old_address")?,
                old_len: num(a, 1, "old_size")?,
                new_len: num(a, 2, "new_size")?,
                flags: flags(a, 3, MREMAP_FLAGS, "flags")?,
                new_addr: if a.len() == 5 { num(a, 4, "new_address")? } else { 0 },
            }
        }
        "brk" => {
            want(a, &[1])?;
            Call::Brk { addr: num(a, 0, "addr")? }
        }
        "fork" | "vfork" => {
            want(a, &[0])?;
            Call::Fork { vfork: name == "vfork" }
        }
        "clone" => {
            let f = named(a, "flags").ok_or_else(|| "missing flags=".to_string())?;
            clone_call(parse_clone_flags(f)?)
        }
        "clone3" => {
            want(a, &[1, 2])?;
            // `{flags=..., exit_signal=..., ...} => {parent_tid=[..]}`: look in the first struct.
            let Some(inner) = a[0].strip_prefix('{') else {
                return Err(CallErr::Bad(format!("expected `{{...}}`, found `{}`", a[0])));
            };
            let (fields, _) = split_list(inner, '}')?;
            let f = match named(&fields, "flags") {
                Some(f) => parse_clone_flags(f)?,
                None => 0,
            };
            clone_call(f)
        }
        "exit_group" | "exit" => {
            want(a, &[1])?;
            Call::ExitGroup { code: num(a, 0, "status")? as i64 }
        }
        "execve" => {
            want(a, &[1, 2, 3])?;
            let path = string(a, 0, "pathname")?.ok_or_else(|| "pathname is NULL".to_string())?;
            Call::Execve { path }
        }
        "prctl" => {
            let opt = a.first().copied().unwrap_or("");
            if opt != "PR_SET_VMA" && parse_num(opt) != Some(abi::PR_SET_VMA) {
                return Err(CallErr::Unknown(format!("prctl({opt})")));
            }
            let sub = a.get(1).copied().unwrap_or("");
            if sub != "PR_SET_VMA_ANON_NAME" && parse_num(sub) != Some(abi::PR_SET_VMA_ANON_NAME) {
                return Err(CallErr::Unknown(format!("prctl(PR_SET_VMA, {sub})")));
            }
            want(a, &[5])?;
            Call::SetVmaAnonName {
                addr: num(a, 2, "addr")?,
                len: num(a, 3, "length")?,
                name: string(a, 4, "name")?,
            }
        }
        "openat" | "open" => {
            // open(path, flags[, mode]) is openat(AT_FDCWD, path, flags[, mode]).
            let (dirfd, a) = if name == "open" {
                want(a, &[2, 3])?;
                (abi::AT_FDCWD, a)
            } else {
                want(a, &[3, 4])?;
                (fd(a, 0, "dirfd")?, &a[1..])
            };
            Call::Openat {
                dirfd,
                path: string(a, 0, "pathname")?.ok_or_else(|| "pathname is NULL".to_string())?,
                flags: flags(a, 1, OPEN_FLAGS, "flags")?,
                mode: if a.len() == 3 { num(a, 2, "mode")? } else { 0 },
            }
        }
        "close" => {
            want(a, &[1])?;
            Call::Close { fd: fd(a, 0, "fd")? }
        }
        "dup" => {
            want(a, &[1])?;
            Call::Dup { fd: fd(a, 0, "oldfd")? }
        }
        "dup2" => {
            want(a, &[2])?;
            Call::Dup2 { oldfd: fd(a, 0, "oldfd")?, newfd: fd(a, 1, "newfd")? }
        }
        "ftruncate" => {
            want(a, &[2])?;
            Call::Ftruncate { fd: fd(a, 0, "fd")?, len: num(a, 1, "length")? }
        }
        "touch" => {
            want(a, &[3])?;
            let write = match string(a, 2, "mode")?.as_deref() {
                Some("r") => false,
                Some("w") => true,
                _ => {
                    return Err(CallErr::Bad(format!("mode must be \"r\" or \"w\", found `{}`", a[2])));
                }
            };
            Call::Touch { addr: num(a, 0, "addr")?, len: num(a, 1, "length")?, write }
        }
        "pin" | "unpin" => {
            want(a, &[2])?;
            let (addr, len) = (num(a, 0, "addr")?, num(a, 1, "length")?);
            if name == "pin" { Call::Pin { addr, len } } else { Call::Unpin { addr, len } }
        }
        "migrate" | "migrate_done" => {
            want(a, &[2])?;
            let (addr, len) = (num(a, 0, "addr")?, num(a, 1, "length")?);
            if name == "migrate" { Call::Migrate { addr, len } } else { Call::MigrateDone { addr, len } }
        }
        "uffd_register" => {
            want(a, &[3])?;
            Call::UffdRegister {
                addr: num(a, 0, "addr")?,
                len: num(a, 1, "length")?,
                mode: flags(a, 2, abi::UFFDIO_REGISTER_MODES, "mode")?,
            }
        }
        "uffd_unregister" => {
            want(a, &[2])?;
            Call::UffdUnregister { addr: num(a, 0, "addr")?, len: num(a, 1, "length")? }
        }
        "uffdio_move" => {
            want(a, &[4])?;
            Call::UffdioMove {
                dst: num(a, 0, "dst")?,
                src: num(a, 1, "src")?,
                len: num(a, 2, "length")?,
                mode: flags(a, 3, abi::UFFDIO_MOVE_MODES, "mode")?,
            }
        }
        "map_record" | "vma_record" => {
            // map_record(ADDR, LEN, PGOFF, PROT, "p"|"s", DEV, INO, "path"|NULL, "[name]"|NULL)
            want(a, &[9])?;
            let shared = match string(a, 4, "sharing")?.as_deref() {
                Some("p") => false,
                Some("s") => true,
                _ => {
                    return Err(CallErr::Bad(format!("sharing must be \"p\" or \"s\", found `{}`", a[4])));
                }
            };
            let (addr, len, pgoff) = (num(a, 0, "addr")?, num(a, 1, "length")?, num(a, 2, "pgoff")?);
            let prot = flags(a, 3, PROT_FLAGS, "prot")?;
            let (dev, ino) = (num(a, 5, "dev")?, num(a, 6, "ino")?);
            let (path, special) = (string(a, 7, "path")?, string(a, 8, "name")?);
            if name == "vma_record" {
                Call::VmaRecord(RecordedVma { addr, len, pgoff, prot, shared, dev, ino, path, name: special })
            } else {
                Call::MapRecord(RecordedVma { addr, len, pgoff, prot, shared, dev, ino, path, name: special })
            }
        }
        _ => return Err(CallErr::Unknown(name.to_string())),
    })
}

// ---------------------------------------------------------------------------------------------
// Formatting

/// A recorded result in strace style: `= 0`, `= 0x200000000000`, `= -1 ENOMEM (Cannot
/// allocate memory)`, `= ?`, `= SIGSEGV`. Values from 4096 up print in hex.
pub fn format_result(r: &Expect) -> String {
    match *r {
        Expect::Value(v) if v >= 4096 => format!("= {v:#x}"),
        Expect::Value(v) => format!("= {v}"),
        Expect::Err(e) => format!("= -1 {} ({})", e.name(), e.message()),
        Expect::Signal(s) => format!("= {}", s.name()),
        Expect::Unknown => "= ?".to_string(),
    }
}

/// Like `format_result`, but as strace prints this call's result: addresses (mmap, mremap,
/// brk) always in hex (`0` for zero, as C's `%#lx`), pids and fds always in decimal.
pub fn format_result_for(call: &Call, r: &Expect) -> String {
    match (call, *r) {
        (Call::Mmap { .. } | Call::Mremap { .. } | Call::Brk { .. }, Expect::Value(v)) => {
            format!("= {}", hex(v))
        }
        (
            Call::Fork { .. }
            | Call::CloneVm { .. }
            | Call::Openat { .. }
            | Call::Dup { .. }
            | Call::Dup2 { .. }
            | Call::Close { .. }
            | Call::Ftruncate { .. }
            | Call::UffdioMove { .. },
            Expect::Value(v),
        ) => format!("= {v}"),
        _ => format_result(r),
    }
}

/// C's `%#lx`: `0` for zero, `0x…` otherwise.
fn hex(v: u64) -> String {
    if v == 0 { "0".to_string() } else { format!("{v:#x}") }
}

/// A pointer argument: `NULL` or hex.
fn ptr(v: u64) -> String {
    if v == 0 { "NULL".to_string() } else { format!("{v:#x}") }
}

/// A string argument with C escapes; bytes outside printable ASCII as `\xHH`.
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for &b in s.as_bytes() {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\t' => out.push_str("\\t"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push('"');
    out
}

/// mmap flags as strace prints them: the mapping type by name, then the flag bits.
fn format_map_flags(flags: u64) -> String {
    let ty = flags & abi::MAP_TYPE;
    let mut parts = Vec::new();
    match abi::MAP_FLAGS.iter().find(|&&(n, v)| v == ty && n != "MAP_ANON") {
        Some(&(n, _)) if ty != 0 => parts.push(n.to_string()),
        _ if ty != 0 => parts.push(format!("{ty:#x}")),
        _ => {}
    }
    let rest = flags & !abi::MAP_TYPE;
    if rest != 0 {
        parts.push(abi::format_flags(abi::MAP_FLAGS, rest, "0"));
    }
    if parts.is_empty() { "0".to_string() } else { parts.join("|") }
}

/// clone flags: named bits, then the exit signal in the low byte.
fn format_clone_flags(flags: u64) -> String {
    let mut parts = Vec::new();
    let hi = flags & !0xff;
    if hi != 0 {
        let table: Vec<(&str, u64)> = abi::CLONE_FLAGS
            .iter()
            .chain(CLONE_EXTRA)
            .copied()
            .filter(|&(n, _)| n.starts_with("CLONE_"))
            .collect();
        let mut rest = hi;
        for (n, v) in table {
            if rest & v == v && v.count_ones() == 1 {
                parts.push(n.to_string());
                rest &= !v;
            }
        }
        if rest != 0 {
            parts.push(format!("{rest:#x}"));
        }
    }
    let sig = flags & 0xff;
    match SIGNALS.iter().find(|&&(_, v)| v == sig) {
        Some(&(n, _)) => parts.push(n.to_string()),
        None if sig != 0 || parts.is_empty() => parts.push(sig.to_string()),
        None => {}
    }
    parts.join("|")
}

/// open flags as strace prints them: the access mode always by name (`O_RDONLY|O_CLOEXEC`).
fn format_open_flags(flags: u64) -> String {
    let acc = match flags & abi::O_ACCMODE {
        abi::O_RDONLY => "O_RDONLY".to_string(),
        abi::O_WRONLY => "O_WRONLY".to_string(),
        abi::O_RDWR => "O_RDWR".to_string(),
        other => format!("{other:#x}"),
    };
    let rest = flags & !abi::O_ACCMODE;
    if rest == 0 { acc } else { format!("{acc}|{}", abi::format_flags(abi::OPEN_FLAGS, rest, "0")) }
}

fn format_advice(advice: u64) -> String {
    match abi::MADV_ADVICE.iter().find(|&&(_, v)| v == advice) {
        Some(&(n, _)) => n.to_string(),
        None => advice.to_string(),
    }
}

/// A call in strace syntax, e.g. `mmap(NULL, 4096, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0)`.
/// `parse_str` reads it back to the same `Call`.
pub fn format_call(call: &Call) -> String {
    use crate::abi::{PROT_FLAGS, format_flags};
    match call {
        Call::Mmap { addr, len, prot, flags, fd, off } => format!(
            "mmap({}, {len}, {}, {}, {fd}, {})",
            ptr(*addr),
            format_flags(PROT_FLAGS, *prot, "PROT_NONE"),
            format_map_flags(*flags),
            hex(*off)
        ),
        Call::Munmap { addr, len } => format!("munmap({}, {len})", ptr(*addr)),
        Call::Mprotect { addr, len, prot } => {
            format!("mprotect({}, {len}, {})", ptr(*addr), format_flags(PROT_FLAGS, *prot, "PROT_NONE"))
        }
        Call::Madvise { addr, len, advice } => {
            format!("madvise({}, {len}, {})", ptr(*addr), format_advice(*advice))
        }
        Call::Mlock { addr, len, flags: None } => format!("mlock({}, {len})", ptr(*addr)),
        Call::Mlock { addr, len, flags: Some(f) } => {
            format!("mlock2({}, {len}, {})", ptr(*addr), format_flags(abi::MLOCK_FLAGS, *f, "0"))
        }
        Call::Munlock { addr, len } => format!("munlock({}, {len})", ptr(*addr)),
        Call::Mlockall { flags } => format!("mlockall({})", format_flags(abi::MCL_FLAGS, *flags, "0")),
        Call::Munlockall => "munlockall()".to_string(),
        Call::Mremap { old_addr, old_len, new_len, flags, new_addr } => {
            let f = format_flags(abi::MREMAP_FLAGS, *flags, "0");
            // strace prints the fifth argument only when the flags use it.
            if *new_addr != 0 || flags & (abi::MREMAP_FIXED | abi::MREMAP_DONTUNMAP) != 0 {
                format!("mremap({}, {old_len}, {new_len}, {f}, {})", ptr(*old_addr), ptr(*new_addr))
            } else {
                format!("mremap({}, {old_len}, {new_len}, {f})", ptr(*old_addr))
            }
        }
        Call::Brk { addr } => format!("brk({})", ptr(*addr)),
        Call::Fork { vfork: false } => "fork()".to_string(),
        Call::Fork { vfork: true } => "vfork()".to_string(),
        Call::CloneVm { flags } => format!("clone(child_stack=NULL, flags={})", format_clone_flags(*flags)),
        Call::ExitGroup { code } => format!("exit_group({code})"),
        Call::Execve { path } => format!("execve({}, [{}], NULL)", quote(path), quote(path)),
        Call::MapRecord(RecordedVma { addr, len, pgoff, prot, shared, dev, ino, path, name })
        | Call::VmaRecord(RecordedVma { addr, len, pgoff, prot, shared, dev, ino, path, name }) => format!(
            "{}({}, {len}, {pgoff}, {}, {}, {dev:#x}, {ino}, {}, {})",
            call.name(),
            ptr(*addr),
            format_flags(PROT_FLAGS, *prot, "PROT_NONE"),
            if *shared { "\"s\"" } else { "\"p\"" },
            path.as_deref().map(quote).unwrap_or_else(|| "NULL".into()),
            name.as_deref().map(quote).unwrap_or_else(|| "NULL".into())
        ),
        Call::SetVmaAnonName { addr, len, name } => format!(
            "prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, {}, {len}, {})",
            ptr(*addr),
            name.as_deref().map_or("NULL".to_string(), quote)
        ),
        Call::Openat { dirfd, path, flags, mode } => {
            let d = if *dirfd == abi::AT_FDCWD { "AT_FDCWD".to_string() } else { dirfd.to_string() };
            let f = format_open_flags(*flags);
            if *mode != 0 || flags & abi::O_CREAT != 0 {
                format!("openat({d}, {}, {f}, 0{mode:o})", quote(path))
            } else {
                format!("openat({d}, {}, {f})", quote(path))
            }
        }
        Call::Close { fd } => format!("close({fd})"),
        Call::Dup { fd } => format!("dup({fd})"),
        Call::Dup2 { oldfd, newfd } => format!("dup2({oldfd}, {newfd})"),
        Call::Ftruncate { fd, len } => format!("ftruncate({fd}, {len})"),
        Call::Touch { addr, len, write } => {
            format!("touch({}, {len}, \"{}\")", ptr(*addr), if *write { "w" } else { "r" })
        }
        Call::Pin { addr, len } => format!("pin({}, {len})", ptr(*addr)),
        Call::Unpin { addr, len } => format!("unpin({}, {len})", ptr(*addr)),
        Call::Migrate { addr, len } => format!("migrate({}, {len})", ptr(*addr)),
        Call::MigrateDone { addr, len } => format!("migrate_done({}, {len})", ptr(*addr)),
        Call::UffdRegister { addr, len, mode } => format!(
            "uffd_register({}, {len}, {})",
            ptr(*addr),
            abi::format_flags(abi::UFFDIO_REGISTER_MODES, *mode, "0")
        ),
        Call::UffdUnregister { addr, len } => format!("uffd_unregister({}, {len})", ptr(*addr)),
        Call::UffdioMove { dst, src, len, mode } => format!(
            "uffdio_move({}, {}, {len}, {})",
            ptr(*dst),
            ptr(*src),
            abi::format_flags(abi::UFFDIO_MOVE_MODES, *mode, "0")
        ),
    }
}

/// A whole script line: `PID CALL = RESULT` (or without the result).
pub fn format_step(step: &Step) -> String {
    match &step.expect {
        Some(e) => format!("{} {} {}", step.pid, format_call(&step.call), format_result_for(&step.call, e)),
        None => format!("{} {}", step.pid, format_call(&step.call)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::*;

    fn parse(text: &str) -> Script {
        parse_str("t.strace", text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn one(text: &str) -> Step {
        let s = parse(text);
        assert_eq!(s.steps.len(), 1, "{:?}", s.steps);
        s.steps.into_iter().next().unwrap()
    }

    fn err(text: &str) -> ParseError {
        match parse_str("t.strace", text) {
            Ok(s) => panic!("parsed: {:?}", s.steps),
            Err(e) => e,
        }
    }

    #[test]
    fn example_script() {
        let s = parse(
            "# comment\n\
             1 mmap(0x200000000000, 16384, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED_NOREPLACE, -1, 0) = 0x200000000000\n\
             \n\
             1 touch(0x200000000000, 16384, \"w\") = 0\n\
             1 fork() = 2\n\
             2 mremap(0x200000000000, 8192, 4096, MREMAP_MAYMOVE|MREMAP_FIXED, 0x200000100000) = 0x200000100000\n\
             2 exit_group(0) = ?\n",
        );
        assert_eq!(s.path, "t.strace");
        let lines: Vec<usize> = s.steps.iter().map(|s| s.line).collect();
        assert_eq!(lines, [2, 4, 5, 6, 7]);
        assert_eq!(
            s.steps[0].call,
            Call::Mmap {
                addr: 0x2000_0000_0000,
                len: 16384,
                prot: PROT_READ | PROT_WRITE,
                flags: MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
                fd: -1,
                off: 0
            }
        );
        assert_eq!(s.steps[0].expect, Some(Expect::Value(0x2000_0000_0000)));
        assert_eq!(s.steps[0].pid, Pid(1));
        assert!(s.steps[0].text.starts_with("mmap(0x200000000000, 16384,"));
        assert!(s.steps[0].text.ends_with(", -1, 0)"));
        assert_eq!(s.steps[1].call, Call::Touch { addr: 0x2000_0000_0000, len: 16384, write: true });
        assert_eq!(s.steps[2].call, Call::Fork { vfork: false });
        assert_eq!(s.steps[2].expect, Some(Expect::Value(2)));
        assert_eq!(
            s.steps[3].call,
            Call::Mremap {
                old_addr: 0x2000_0000_0000,
                old_len: 8192,
                new_len: 4096,
                flags: MREMAP_MAYMOVE | MREMAP_FIXED,
                new_addr: 0x2000_0010_0000
            }
        );
        assert_eq!(s.steps[3].pid, Pid(2));
        assert_eq!(s.steps[4].call, Call::ExitGroup { code: 0 });
        assert_eq!(s.steps[4].expect, Some(Expect::Unknown));
    }

    #[test]
    fn pid_forms_and_timestamps() {
        let s = parse(
            "mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0)\n\
             [pid  1234] munmap(0x1000, 4096) = 0\n\
             1234  12:34:56.789012 brk(NULL) = 0x555555559000\n\
             77 1234.567890 close(3) = 0\n\
             [pid 5] 12:00:00 dup(3</tmp/f>) = 4\n\
             12:00:01.5 dup(3)\n",
        );
        let pids: Vec<u32> = s.steps.iter().map(|s| s.pid.0).collect();
        assert_eq!(pids, [1, 1234, 1234, 77, 5, 1]);
        assert_eq!(s.steps[0].expect, None);
        assert_eq!(s.steps[2].call, Call::Brk { addr: 0 });
        assert_eq!(s.steps[4].call, Call::Dup { fd: 3 });

        // Without any pid, lines belong to the first process seen.
        let s = parse("9 brk(NULL)\nbrk(NULL)\n");
        assert_eq!(s.steps[1].pid, Pid(9));
    }

    #[test]
    fn strace_noise_is_skipped() {
        let s = parse(
            "1 --- SIGCHLD {si_signo=SIGCHLD, si_code=CLD_EXITED, si_pid=2} ---\n\
             2 +++ exited with 0 +++\n\
             +++ killed by SIGSEGV +++\n\
             1 close(3) = 0 <0.000012>  # trailing comment\n",
        );
        assert_eq!(s.steps.len(), 1);
        assert_eq!(s.steps[0].expect, Some(Expect::Value(0)));
    }

    #[test]
    fn unfinished_and_resumed_are_joined() {
        let s = parse(
            "1 mmap(NULL, 8192, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0 <unfinished ...>\n\
             2 munmap(0x1000, 4096) = 0\n\
             1 <... mmap resumed>) = 0x7f0000000000\n",
        );
        assert_eq!(s.steps.len(), 2);
        // A plain call takes effect when it returns.
        assert_eq!(s.steps[0].pid, Pid(2));
        let m = &s.steps[1];
        assert_eq!(m.line, 1);
        assert_eq!(m.expect, Some(Expect::Value(0x7f00_0000_0000)));
        assert_eq!(m.text, "mmap(NULL, 8192, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0)");

        // A fork takes its place where it started: its child prints before the parent resumes.
        let s = parse(
            "1 clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|CLONE_CHILD_SETTID|SIGCHLD, <unfinished ...>\n\
             2 brk(NULL) = 0x1000\n\
             1 <... clone resumed>child_tidptr=0x7f0000000a10) = 2\n\
             2 exit_group(0 <unfinished ...>\n",
        );
        let calls: Vec<&Call> = s.steps.iter().map(|s| &s.call).collect();
        assert_eq!(
            calls,
            [&Call::Fork { vfork: false }, &Call::Brk { addr: 0 }, &Call::ExitGroup { code: 0 }]
        );
        assert_eq!(s.steps[0].expect, Some(Expect::Value(2)));
        assert_eq!(s.steps[2].expect, None);

        assert!(err("1 <... mmap resumed>) = 0\n").reason.contains("no unfinished call"));
        let e = err("1 mmap(NULL, 1, 0, 0, -1, 0 <unfinished ...>\n1 <... munmap resumed>) = 0\n");
        assert_eq!(e.line, 2);
    }

    #[test]
    fn restarted_calls_are_skipped() {
        let text = "1 clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|CLONE_CHILD_SETTID|SIGCHLD, child_tidptr=0x7f12) = ? ERESTARTNOINTR (To be restarted)\n\
                    1 --- SIGCHLD {si_signo=SIGCHLD, si_code=CLD_EXITED} ---\n\
                    1 clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|CLONE_CHILD_SETTID|SIGCHLD, child_tidptr=0x7f12) = 2\n\
                    2 exit_group(0) = ?\n";
        for opts in [ParseOptions::default(), ParseOptions { skip_unknown: true }] {
            let s = parse_str_with("t", text, &opts).unwrap();
            assert_eq!(s.steps.len(), 2, "{:?}", s.steps);
            assert_eq!(s.steps[0].line, 3);
            assert_eq!(s.skipped, [(1, "clone interrupted (ERESTARTNOINTR), restarted".to_string())]);
        }
        assert_eq!(restarted(" = ? ERESTARTSYS (To be restarted if SA_RESTART is set)"), Some("ERESTARTSYS"));
        assert_eq!(restarted(" = ?"), None);
        assert_eq!(restarted(" = ? <unavailable>"), None);
    }

    #[test]
    fn clone_variants() {
        let c = |s: &str| one(s).call;
        assert_eq!(c("1 vfork() = 2"), Call::Fork { vfork: true });
        assert_eq!(
            c(
                "1 clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|CLONE_CHILD_SETTID|SIGCHLD, child_tidptr=0x7f12) = 2"
            ),
            Call::Fork { vfork: false }
        );
        let thread =
            CLONE_VM | 0x200 | 0x400 | 0x800 | CLONE_THREAD | 0x40000 | 0x80000 | 0x100000 | 0x200000;
        assert_eq!(
            c(
                "1 clone(child_stack=0x7f00, flags=CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_SIGHAND|CLONE_THREAD|CLONE_SYSVSEM|CLONE_SETTLS|CLONE_PARENT_SETTID|CLONE_CHILD_CLEARTID, parent_tid=[3], tls=0x7f, child_tidptr=0x7f) = 3"
            ),
            Call::CloneVm { flags: thread }
        );
        assert_eq!(
            c("1 clone(child_stack=0x7f00, flags=CLONE_VM|CLONE_VFORK|SIGCHLD) = 2"),
            Call::Fork { vfork: true }
        );
        assert_eq!(
            c(
                "1 clone3({flags=CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_SIGHAND|CLONE_THREAD|CLONE_SYSVSEM|CLONE_SETTLS|CLONE_PARENT_SETTID|CLONE_CHILD_CLEARTID, child_tid=0x7f, parent_tid=0x7f, exit_signal=0, stack=0x7f, stack_size=0x7fff00, tls=0x7f} => {parent_tid=[8]}, 88) = 8"
            ),
            Call::CloneVm { flags: thread }
        );
        assert_eq!(
            c(
                "1 clone3({flags=CLONE_VM|CLONE_VFORK, exit_signal=SIGCHLD, stack=0x7f, stack_size=0x9000}, 88) = 2"
            ),
            Call::Fork { vfork: true }
        );
        assert_eq!(c("1 clone3({exit_signal=SIGCHLD}, 88) = 2"), Call::Fork { vfork: false });
    }

    #[test]
    fn other_calls() {
        let c = |s: &str| one(s).call;
        assert_eq!(c("1 exit(3) = ?"), Call::ExitGroup { code: 3 });
        assert_eq!(
            c("1 execve(\"/bin/true\", [\"true\", \"a,b)\"], 0x7ffd4 /* 25 vars */) = 0"),
            Call::Execve { path: "/bin/true".into() }
        );
        assert_eq!(
            c("1 prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, 0x1000, 8192, \"heap\\x21\") = 0"),
            Call::SetVmaAnonName { addr: 0x1000, len: 8192, name: Some("heap!".into()) }
        );
        assert_eq!(
            c("1 prctl(0x53564d41, 0, 0x1000, 8192, NULL) = 0"),
            Call::SetVmaAnonName { addr: 0x1000, len: 8192, name: None }
        );
        assert_eq!(
            c("1 openat(AT_FDCWD, \"/tmp/f\", O_RDWR|O_CREAT, 0600) = 3"),
            Call::Openat { dirfd: AT_FDCWD, path: "/tmp/f".into(), flags: O_RDWR | O_CREAT, mode: 0o600 }
        );
        assert_eq!(
            c("1 openat(5</tmp>, \"f\", O_RDONLY|O_CLOEXEC) = 3"),
            Call::Openat { dirfd: 5, path: "f".into(), flags: O_CLOEXEC, mode: 0 }
        );
        assert_eq!(
            c("1 open(\"f\", O_WRONLY) = 3"),
            Call::Openat { dirfd: AT_FDCWD, path: "f".into(), flags: O_WRONLY, mode: 0 }
        );
        assert_eq!(c("1 close(3</tmp/f>) = 0"), Call::Close { fd: 3 });
        assert_eq!(c("1 dup2(3, 10) = 10"), Call::Dup2 { oldfd: 3, newfd: 10 });
        assert_eq!(c("1 ftruncate(3, 0x4000) = 0"), Call::Ftruncate { fd: 3, len: 0x4000 });
        assert_eq!(
            c("1 pkey_mprotect(0x1000, 4096, PROT_READ|0x10, 2) = 0"),
            Call::Mprotect { addr: 0x1000, len: 4096, prot: PROT_READ | 0x10 }
        );
        assert_eq!(
            c("1 madvise(0x1000, 4096, MADV_DONTNEED) = 0"),
            Call::Madvise { addr: 0x1000, len: 4096, advice: MADV_DONTNEED }
        );
        assert_eq!(
            c("1 mremap(0x1000, 4096, 8192, MREMAP_MAYMOVE) = 0x2000"),
            Call::Mremap {
                old_addr: 0x1000,
                old_len: 4096,
                new_len: 8192,
                flags: MREMAP_MAYMOVE,
                new_addr: 0
            }
        );
        assert_eq!(c("1 touch(0x1000, 1, \"r\")"), Call::Touch { addr: 0x1000, len: 1, write: false });
        assert_eq!(c("1 migrate(0x1000, 8192) = 0"), Call::Migrate { addr: 0x1000, len: 8192 });
        assert_eq!(c("1 migrate_done(0x1000, 4096)"), Call::MigrateDone { addr: 0x1000, len: 4096 });
        assert_eq!(
            c("1 mmap(NULL, 4096, PROT_READ, MAP_SHARED, 3</tmp/f>, 0x1000) = 0x7f0000000000"),
            Call::Mmap { addr: 0, len: 4096, prot: PROT_READ, flags: MAP_SHARED, fd: 3, off: 0x1000 }
        );
    }

    #[test]
    fn results() {
        let e = |s: &str| one(&format!("1 munmap(0x1000, 4096) {s}")).expect;
        assert_eq!(e(""), None);
        assert_eq!(e("= 0"), Some(Expect::Value(0)));
        assert_eq!(e("= 0x7f0000000000"), Some(Expect::Value(0x7f00_0000_0000)));
        assert_eq!(e("= -1 ENOMEM (Cannot allocate memory)"), Some(Expect::Err(Errno::ENOMEM)));
        assert_eq!(e("= -1 EINVAL"), Some(Expect::Err(Errno::EINVAL)));
        assert_eq!(e("= -1 EINVAL (Invalid argument) <0.000010>"), Some(Expect::Err(Errno::EINVAL)));
        assert_eq!(e("= ?"), Some(Expect::Unknown));
        assert_eq!(e("= ? <unavailable>"), Some(Expect::Unknown));
        assert_eq!(e("= SIGSEGV"), Some(Expect::Signal(Signal::SIGSEGV)));
        assert_eq!(e("= SIGBUS # comment"), Some(Expect::Signal(Signal::SIGBUS)));
        assert_eq!(e("= 3</tmp/f>"), Some(Expect::Value(3)));
        assert_eq!(e("= 1 (flags FD_CLOEXEC)"), Some(Expect::Value(1)));
    }

    #[test]
    fn strings() {
        let s = |a: &str| parse_string(a);
        assert_eq!(s("\"a\\x41\\101\\n\\\"\\\\\""), Ok(Some("aAA\n\"\\".to_string())));
        assert_eq!(s("\"abc\"..."), Ok(Some("abc".to_string())));
        assert_eq!(s("\"\\0\""), Ok(Some("\0".to_string())));
        assert_eq!(s("NULL"), Ok(None));
        assert!(s("abc").is_err());
        assert!(s("\"\\q\"").is_err());
        assert!(s("\"\\x\"").is_err());
        assert!(s("\"\\777\"").is_err());
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_num("0"), Some(0));
        assert_eq!(parse_num("42"), Some(42));
        assert_eq!(parse_num("0x1F"), Some(31));
        assert_eq!(parse_num("0600"), Some(0o600));
        assert_eq!(parse_num("-1"), Some(u64::MAX));
        assert_eq!(parse_num("NULL"), Some(0));
        for bad in
            ["", "+1", "0x", "0x+1", "08", "1a", "-", "--1", "18446744073709551616", "-9223372036854775809"]
        {
            assert_eq!(parse_num(bad), None, "{bad}");
        }
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            ("1 frobnicate(1) = 0", "unknown call frobnicate"),
            ("1 munmap(0x1000, 4k) = 0", "bad number `4k`"),
            ("1 munmap(0x1000, 4096 = 0", "missing ')'"),
            ("1 munmap 0x1000, 4096) = 0", "missing '('"),
            ("1 mprotect(0x1000, 4096, PROT_BOGUS) = 0", "unknown flag PROT_BOGUS"),
            ("1 munmap(0x1000) = 0", "expected 2 arguments, got 1"),
            ("1 mremap(0x1000, 1, 2) = 0", "expected 4 or 5 arguments, got 3"),
            ("1 munmap(0x1000, 4096) = -1 EBOGUS (x)", "unknown errno name EBOGUS"),
            ("1 munmap(0x1000, 4096) = -1", "missing errno name"),
            ("1 munmap(0x1000, 4096) = SIGFOO", "unknown signal SIGFOO"),
            ("1 munmap(0x1000, 4096) = zz", "bad result"),
            ("1 munmap(0x1000, 4096) junk", "unexpected `junk`"),
            ("0 munmap(0x1000, 4096)", "bad pid `0`"),
            ("99999999999 munmap(0x1000, 4096)", "bad pid"),
            ("[pid x] munmap(0x1000, 4096)", "bad pid `x`"),
            ("1x munmap(0x1000, 4096)", "bad pid"),
            ("1 touch(0x1000, 1, \"x\")", "mode must be"),
            ("1 prctl(PR_SET_NAME, \"x\") = 0", "unknown call prctl(PR_SET_NAME)"),
            ("1 execve(\"/bin/x, [], NULL) = 0", "unterminated string"),
            ("1 munmap(0x1000,, 4096)", "empty argument"),
        ];
        for (text, want) in cases {
            let e = err(&format!("# first\n\n{text}\n"));
            assert_eq!(e.line, 3, "{text}: {e}");
            assert!(e.reason.contains(want), "{text}: got `{}`, want `{want}`", e.reason);
            assert!(e.to_string().starts_with("t.strace:3: "), "{e}");
        }
    }

    #[test]
    fn skip_unknown_records_calls() {
        let text = "1 read(3, \"\\177ELF\\2\\1\\1\"..., 832) = 832\n\
                    1 ioctl(1, TCGETS, {B38400 opost isig}) = -1 ENOTTY (Inappropriate ioctl for device)\n\
                    1 futex(0x7f, FUTEX_WAIT, 2, NULL <unfinished ...>\n\
                    2 prctl(PR_SET_NAME, \"w\") = 0\n\
                    1 <... futex resumed>) = 0\n\
                    1 munmap(0x1000, 4096) = 0\n";
        assert!(parse_str("t", text).is_err());
        let s = parse_str_with("t", text, &ParseOptions { skip_unknown: true }).unwrap();
        assert_eq!(s.steps.len(), 1);
        assert_eq!(s.steps[0].line, 6);
        let skipped: Vec<(usize, &str)> = s.skipped.iter().map(|(l, n)| (*l, n.as_str())).collect();
        assert_eq!(skipped, [(1, "read"), (2, "ioctl"), (4, "prctl(PR_SET_NAME)"), (3, "futex")]);
    }

    #[test]
    fn map_record_round_trips() {
        let rec = Call::MapRecord(RecordedVma {
            addr: 0x5606738c5000,
            len: 0x12000,
            pgoff: 3,
            prot: PROT_READ | PROT_EXEC,
            shared: false,
            dev: 0xfe00,
            ino: 247778,
            path: Some("sort".into()),
            name: None,
        });
        let text = format_call(&rec);
        assert_eq!(
            text,
            "map_record(0x5606738c5000, 73728, 3, PROT_READ|PROT_EXEC, \"p\", 0xfe00, 247778, \"sort\", NULL)"
        );
        assert_eq!(one(&format!("7 {text} = 0x5606738c5000")).call, rec);
        let stack = Call::MapRecord(RecordedVma {
            addr: 0x7ffe5f441000,
            len: 0x21000,
            pgoff: 0x7ffffffde,
            prot: PROT_READ | PROT_WRITE,
            shared: true,
            dev: 0,
            ino: 0,
            path: None,
            name: Some("[stack]".into()),
        });
        let text = format_call(&stack);
        assert!(text.contains("\"s\", 0x0, 0, NULL, \"[stack]\")"), "{text}");
        assert_eq!(one(&format!("7 {text}")).call, stack);
        for bad in [
            "1 map_record(0x1000, 4096, 0, PROT_READ, \"x\", 0, 0, NULL, NULL)",
            "1 map_record(0x1000, 4096, 0, PROT_READ, \"p\", 0, 0, NULL)",
            "1 map_record(0x1000, 4096, 0, PROT_BOGUS, \"p\", 0, 0, NULL, NULL)",
        ] {
            assert!(parse_str("t", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formatting_results() {
        assert_eq!(format_result(&Expect::Value(0)), "= 0");
        assert_eq!(format_result(&Expect::Value(4095)), "= 4095");
        assert_eq!(format_result(&Expect::Value(0x2000_0000_0000)), "= 0x200000000000");
        assert_eq!(format_result(&Expect::Err(Errno::ENOMEM)), "= -1 ENOMEM (Cannot allocate memory)");
        assert_eq!(format_result(&Expect::Unknown), "= ?");
        assert_eq!(format_result(&Expect::Signal(Signal::SIGSEGV)), "= SIGSEGV");
        let mmap = Call::Mmap { addr: 0, len: 4096, prot: 0, flags: 0, fd: -1, off: 0 };
        assert_eq!(format_result_for(&mmap, &Expect::Value(0x10)), "= 0x10");
        assert_eq!(format_result_for(&Call::Brk { addr: 0 }, &Expect::Value(0x555000)), "= 0x555000");
        assert_eq!(format_result_for(&Call::Fork { vfork: false }, &Expect::Value(5000)), "= 5000");
        assert_eq!(format_result_for(&Call::Dup { fd: 3 }, &Expect::Value(4096)), "= 4096");
        assert_eq!(
            format_result_for(&Call::Close { fd: 3 }, &Expect::Err(Errno::EBADF)),
            "= -1 EBADF (Bad file descriptor)"
        );
    }

    #[test]
    fn formatting_calls() {
        let f = |c: Call| format_call(&c);
        assert_eq!(
            f(Call::Mmap {
                addr: 0,
                len: 4096,
                prot: PROT_READ | PROT_WRITE,
                flags: MAP_PRIVATE | MAP_ANONYMOUS,
                fd: -1,
                off: 0
            }),
            "mmap(NULL, 4096, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0)"
        );
        assert_eq!(
            f(Call::Mmap {
                addr: 0x1000,
                len: 1,
                prot: 0,
                flags: MAP_SHARED_VALIDATE | MAP_FIXED,
                fd: 3,
                off: 0x2000
            }),
            "mmap(0x1000, 1, PROT_NONE, MAP_SHARED_VALIDATE|MAP_FIXED, 3, 0x2000)"
        );
        assert_eq!(
            f(Call::Mremap { old_addr: 0x1000, old_len: 1, new_len: 2, flags: MREMAP_MAYMOVE, new_addr: 0 }),
            "mremap(0x1000, 1, 2, MREMAP_MAYMOVE)"
        );
        assert_eq!(
            f(Call::CloneVm { flags: CLONE_VM | CLONE_THREAD | 17 }),
            "clone(child_stack=NULL, flags=CLONE_VM|CLONE_THREAD|SIGCHLD)"
        );
        assert_eq!(f(Call::Madvise { addr: 0x1000, len: 1, advice: 99 }), "madvise(0x1000, 1, 99)");
        assert_eq!(
            f(Call::Openat { dirfd: AT_FDCWD, path: "a\"b".into(), flags: O_RDWR | O_CREAT, mode: 0o600 }),
            "openat(AT_FDCWD, \"a\\\"b\", O_RDWR|O_CREAT, 0600)"
        );
        assert_eq!(
            f(Call::Openat { dirfd: 3, path: "f".into(), flags: O_CLOEXEC, mode: 0 }),
            "openat(3, \"f\", O_RDONLY|O_CLOEXEC)"
        );
        let step = one("3 touch(0x1000, 4096, \"w\") = SIGSEGV");
        assert_eq!(format_step(&step), "3 touch(0x1000, 4096, \"w\") = SIGSEGV");
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        fn any_string() -> impl Strategy<Value = String> {
            prop_oneof![any::<String>(), "[a-z/._\\-]{0,12}"]
        }

        /// A VMA as a trace records it, for both record calls.
        fn recorded_vma() -> impl Strategy<Value = RecordedVma> {
            let n = any::<u64>;
            (
                (n(), n(), n(), n(), any::<bool>()),
                (n(), n(), proptest::option::of(any_string()), proptest::option::of(any_string())),
            )
                .prop_map(|((addr, len, pgoff, prot, shared), (dev, ino, path, name))| {
                    RecordedVma { addr, len, pgoff, prot, shared, dev, ino, path, name }
                })
        }

        fn any_call() -> impl Strategy<Value = Call> {
            let n = any::<u64>;
            prop_oneof![
                (n(), n(), n(), n(), any::<i64>(), n()).prop_map(|(addr, len, prot, flags, fd, off)| {
                    Call::Mmap { addr, len, prot, flags, fd, off }
                }),
                (n(), n()).prop_map(|(addr, len)| Call::Munmap { addr, len }),
                (n(), n(), n()).prop_map(|(addr, len, prot)| Call::Mprotect { addr, len, prot }),
                (n(), n(), n()).prop_map(|(addr, len, advice)| Call::Madvise { addr, len, advice }),
                (n(), n(), n(), n(), prop_oneof![Just(0), n()]).prop_map(
                    |(old_addr, old_len, new_len, flags, new_addr)| Call::Mremap {
                        old_addr,
                        old_len,
                        new_len,
                        flags,
                        new_addr
                    }
                ),
                n().prop_map(|addr| Call::Brk { addr }),
                any::<bool>().prop_map(|vfork| Call::Fork { vfork }),
                // CLONE_VM without CLONE_VFORK: anything else parses to a Fork.
                n().prop_map(|f| Call::CloneVm { flags: (f | CLONE_VM) & !CLONE_VFORK }),
                any::<i64>().prop_map(|code| Call::ExitGroup { code }),
                any_string().prop_map(|path| Call::Execve { path }),
                (n(), n(), proptest::option::of(any_string()))
                    .prop_map(|(addr, len, name)| Call::SetVmaAnonName { addr, len, name }),
                (prop_oneof![Just(AT_FDCWD), any::<i64>()], any_string(), n(), prop_oneof![Just(0), n()])
                    .prop_map(|(dirfd, path, flags, mode)| Call::Openat { dirfd, path, flags, mode }),
                any::<i64>().prop_map(|fd| Call::Close { fd }),
                any::<i64>().prop_map(|fd| Call::Dup { fd }),
                (any::<i64>(), any::<i64>()).prop_map(|(oldfd, newfd)| Call::Dup2 { oldfd, newfd }),
                (any::<i64>(), n()).prop_map(|(fd, len)| Call::Ftruncate { fd, len }),
                (n(), n(), any::<bool>()).prop_map(|(addr, len, write)| Call::Touch { addr, len, write }),
                (n(), n(), 0u8..4).prop_map(|(addr, len, k)| match k {
                    0 => Call::Pin { addr, len },
                    1 => Call::Unpin { addr, len },
                    2 => Call::Migrate { addr, len },
                    _ => Call::MigrateDone { addr, len },
                }),
                (n(), n(), n()).prop_map(|(addr, len, mode)| Call::UffdRegister { addr, len, mode }),
                (n(), n()).prop_map(|(addr, len)| Call::UffdUnregister { addr, len }),
                (n(), n(), n(), n()).prop_map(|(dst, src, len, mode)| Call::UffdioMove {
                    dst,
                    src,
                    len,
                    mode
                }),
                recorded_vma().prop_map(Call::MapRecord),
                recorded_vma().prop_map(Call::VmaRecord),
            ]
        }

        fn any_expect() -> impl Strategy<Value = Option<Expect>> {
            let errnos: Vec<Errno> = (0..200).filter_map(Errno::from_code).collect();
            proptest::option::of(prop_oneof![
                any::<u64>().prop_map(Expect::Value),
                proptest::sample::select(errnos).prop_map(Expect::Err),
                prop_oneof![Just(Signal::SIGSEGV), Just(Signal::SIGBUS)].prop_map(Expect::Signal),
                Just(Expect::Unknown),
            ])
        }

        proptest! {
            #[test]
            fn format_then_parse_is_identity(call in any_call(), expect in any_expect(), pid in 1u32..100000) {
                let step = Step { line: 1, pid: Pid(pid), call, text: String::new(), expect };
                let line = format_step(&step);
                let s = parse_str("t", &line).map_err(|e| TestCaseError::fail(format!("{line}: {e}")))?;
                prop_assert_eq!(s.steps.len(), 1);
                let got = &s.steps[0];
                prop_assert_eq!(&got.call, &step.call, "{}", line);
                prop_assert_eq!(got.expect, step.expect, "{}", line);
                prop_assert_eq!(got.pid, step.pid);
                prop_assert_eq!(&got.text, &format_call(&step.call));
            }

            #[test]
            fn garbage_never_panics(text in "\\PC{0,200}") {
                let _ = parse_str("t", &text);
                let _ = parse_str_with("t", &text, &ParseOptions { skip_unknown: true });
            }

            #[test]
            fn mutated_lines_never_panic(call in any_call(), cut in 0usize..200, junk in "[\\(\\)\\[\\]{}\",|<>=#/*\\\\ x0-9.:-]{0,4}") {
                // Insert junk into a valid line, at a char boundary.
                let line = format!("1 {} = 0", format_call(&call));
                let at = line.char_indices().map(|(i, _)| i).nth(cut).unwrap_or(line.len());
                let mutated = format!("{}{}{}", &line[..at], junk, &line[at..]);
                let _ = parse_str("t", &mutated);
                let _ = parse_str_with("t", &mutated, &ParseOptions { skip_unknown: true });
                let truncated = &line[..at];
                let _ = parse_str("t", truncated);
                let _ = parse_str("t", &format!("{truncated} <unfinished ...>\n1 <... {} resumed>{}", call.name(), &line[at..]));
            }
        }
    }
}
