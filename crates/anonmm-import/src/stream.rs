//! Streaming import of `perf script` traces: the trace is read, decompressed, split into
//! lines and converted on a second thread, which hands finished steps to the caller in
//! batches, so that a replay runs while the rest of the trace is still being read.
//!
//! The steps are exactly those of [`super::parse_perf`]: the converter is the same. Two things
//! it knows only from later lines are handled by waiting for them:
//! - a task's thread group comes from the first line with its `PID/TID`; when the converter
//!   asks about a tid no line has shown yet (a fork's child), the reader reads ahead until
//!   one does, or to the end;
//! - a step a later line may still edit (an exec's result, an openat's path) is held back,
//!   with every step after it, until it is final.

use std::io::Read;
use std::path::Path;
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::thread::JoinHandle;

use rustc_hash::FxHashMap as HashMap;

use crate::lines::{Header, LineRec, ReadAhead, Source, Streamed};
use crate::perf::{Conv, ImportError, ImportReport, ZSTD_MAGIC, looks_like_perf};
use crate::script::Script;

/// How much text is read, split and converted at a time.
const CHUNK: usize = 1 << 18;

/// Batches of steps in flight between the two threads.
const IN_FLIGHT: usize = 8;

/// How long a step a later line may edit is held back, in steps after it. A file opened
/// and kept open without an mmap (a shell's `2>/dev/null`) would otherwise hold back the
/// whole trace; an mmap naming a file that long after its openat is rare, and is caught
/// (`StreamEnd::exact`).
const HOLD: usize = 1 << 16;

/// How a streamed import ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamEnd {
    /// The import's report, as [`super::read_trace`] makes it.
    pub report: ImportReport,
    /// Whether every step handed on was final. False when a line edited a step already
    /// handed on (an mmap named a file more than 65,536 steps after its `openat`, so the
    /// openat's path changed): the steps were not exactly those of `read_trace`, and a
    /// user of them should import the trace whole instead.
    pub exact: bool,
}

/// A trace being imported: either streamed from a second thread, or (for anything that is
/// not perf text, which is never large) imported whole first.
pub struct TraceStream {
    inner: Inner,
    /// What a perf.data reader found besides its lines (lost events, damage).
    side: Option<super::perf_data::Side>,
}

enum Inner {
    Whole {
        script: Script,
        report: ImportReport,
        given: bool,
    },
    Thread {
        rx: Receiver<Vec<Streamed>>,
        recycle: Sender<Vec<Streamed>>,
        worker: Option<JoinHandle<StreamEnd>>,
    },
}

/// Start importing the trace at `path` (perf text, strace or anonmm script; `.zst` or not).
/// Errors that [`super::read_trace`] reports before converting anything are reported here.
pub fn stream_trace(path: &Path) -> Result<TraceStream, ImportError> {
    let whole = || {
        super::read_trace(path).map(|(script, report)| TraceStream {
            inner: Inner::Whole { script, report, given: false },
            side: None,
        })
    };
    let name = path.display().to_string();
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
        // A pipe (`/dev/stdin`, `<(zstdcat …)`) can be read only once: the format cannot be
        // sniffed first and the file opened again, nor read again if the stream is spoiled:
        // import it whole, reading it once.
        return whole();
    }
    if super::perf_data::file_is_perf_data(path) {
        let r = super::perf_data::open_path(path).map_err(|reason| ImportError {
            path: name.clone(),
            line: 0,
            reason,
        })?;
        let mut src = super::perf_data::DataSource::new(r);
        let side = src.side();
        let mut tgid_of = HashMap::default();
        // No record at all: the whole import says why.
        if !src.read_ahead(&mut tgid_of) {
            return whole();
        }
        return match start(name, Ahead::Data(Box::new(src)), tgid_of, HOLD) {
            Some(s) => Ok(TraceStream { side: Some(side), ..s }),
            None => whole(),
        };
    }
    let Ok(mut file) = std::fs::File::open(path) else { return whole() };
    let mut magic = Vec::with_capacity(4);
    let _ = (&mut file).take(4).read_to_end(&mut magic);
    let is_zstd = magic == ZSTD_MAGIC;
    let head = std::io::Cursor::new(magic).chain(file);
    let reader: Box<dyn Read + Send> = if is_zstd {
        match zstd::stream::read::Decoder::new(head) {
            Ok(d) => Box::new(d),
            Err(_) => return whole(),
        }
    } else if path.extension().is_some_and(|e| e == "zst") {
        return whole();
    } else {
        Box::new(head)
    };
    // Decompression, a third of the import, runs on a thread of its own.
    match stream_from(name, reader, is_zstd, CHUNK, HOLD) {
        Some(s) => Ok(s),
        None => whole(),
    }
}

/// Stream perf text from `reader` in chunks of about `chunk` bytes (read on a thread of its
/// own if `threaded`), holding back steps at most `hold` steps; None when the first chunk is
/// no perf text (or there is none, or a thread cannot start).
fn stream_from(
    name: String,
    reader: Box<dyn Read + Send>,
    threaded: bool,
    chunk: usize,
    hold: usize,
) -> Option<TraceStream> {
    let mut src = if threaded { Source::threaded(reader, chunk)? } else { Source::new(reader, chunk) };
    let mut tgid_of = HashMap::default();
    // Only perf text is streamed; the first chunk decides, as `read_trace` decides.
    if !src.read_ahead(&mut tgid_of) || !src.first_text().is_some_and(|t| looks_like_perf(&t)) {
        return None;
    }
    start(name, Ahead::Text(Box::new(src)), tgid_of, hold)
}

/// Start the import thread on `src` (its first chunk read ahead).
fn start(name: String, src: Ahead, tgid_of: HashMap<u32, u32>, hold: usize) -> Option<TraceStream> {
    let (tx, rx) = sync_channel(IN_FLIGHT);
    let (recycle, recycled) = channel();
    let worker = std::thread::Builder::new()
        .name("anonmm-import".to_string())
        .spawn(move || convert(&name, src, tgid_of, hold, &tx, &recycled))
        .ok()?;
    Some(TraceStream { inner: Inner::Thread { rx, recycle, worker: Some(worker) }, side: None })
}

/// What the converter reads from: perf text, or a perf.data's records.
enum Ahead {
    /// `perf script` text.
    Text(Box<Source>),
    /// A `perf.data`.
    Data(Box<super::perf_data::DataSource>),
}

impl ReadAhead for Ahead {
    fn read_ahead(&mut self, tgid_of: &mut HashMap<u32, u32>) -> bool {
        match self {
            Ahead::Text(s) => s.read_ahead(tgid_of),
            Ahead::Data(s) => s.read_ahead(tgid_of),
        }
    }

    fn as_any(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

/// The converter's reader, taken back.
fn ahead(a: &mut Option<Box<dyn ReadAhead>>) -> Option<&mut Ahead> {
    a.as_deref_mut()?.as_any().downcast_mut()
}

impl TraceStream {
    /// The next steps, in order; None at the end of the trace.
    pub fn next_batch(&mut self) -> Option<Vec<Streamed>> {
        match &mut self.inner {
            Inner::Whole { script, given, .. } => (!std::mem::replace(given, true))
                .then(|| std::mem::take(&mut script.steps).into_iter().map(Streamed::of).collect()),
            Inner::Thread { rx, .. } => rx.recv().ok(),
        }
    }

    /// Give a batch back once its steps are used: its memory is reused (and its steps are
    /// dropped on the import thread).
    pub fn recycle(&mut self, batch: Vec<Streamed>) {
        if let Inner::Thread { recycle, .. } = &self.inner {
            let _ = recycle.send(batch);
        }
    }

    /// The import's report, once every batch is taken (the rest is read and dropped).
    pub fn finish(mut self) -> StreamEnd {
        while let Some(b) = self.next_batch() {
            self.recycle(b);
        }
        let mut end = match self.inner {
            Inner::Whole { report, .. } => StreamEnd { report, exact: true },
            Inner::Thread { worker, .. } => match worker.map(JoinHandle::join) {
                Some(Ok(end)) => end,
                // A bug in the converter: let it show.
                Some(Err(e)) => std::panic::resume_unwind(e),
                None => StreamEnd::default(),
            },
        };
        if let Some(side) = &self.side {
            super::perf_data::add_side(&mut end.report, side);
        }
        end
    }
}

/// The import thread: convert chunk by chunk and hand on each run of final steps.
fn convert(
    name: &str,
    src: Ahead,
    tgid_of: HashMap<u32, u32>,
    hold: usize,
    tx: &SyncSender<Vec<Streamed>>,
    recycled: &Receiver<Vec<Streamed>>,
) -> StreamEnd {
    let mut c = Conv::new(name);
    c.tgid_of = tgid_of;
    c.hold_limit = hold;
    c.lazy_text = true;
    let plans = match &src {
        Ahead::Data(s) => Some(s.plans()),
        Ahead::Text(_) => None,
    };
    c.ahead = Some(Box::new(src));
    // A fixed set of step vectors goes round between the threads: fresh memory would cost
    // a page fault per 4 KiB.
    let mut made = 0;
    let mut hand_on = |c: &mut Conv<'_>, upto: usize| {
        if upto == 0 {
            return true;
        }
        let mut batch = match recycled.try_recv() {
            Ok(b) => b,
            Err(_) if made < IN_FLIGHT + 2 => {
                made += 1;
                Vec::new()
            }
            Err(_) => match recycled.recv() {
                Ok(b) => b,
                Err(_) => return false,
            },
        };
        // Emptied by hand: nearly every step is a fault, with nothing to drop, and the drop
        // glue's call per step was most of what a clear cost.
        for s in batch.drain(..) {
            if let Streamed::Step(step) = s {
                drop(step);
            }
        }
        if upto == c.steps.len() {
            // All of them (nothing held back, most of the time): no step is moved.
            std::mem::swap(&mut batch, &mut c.steps);
        } else {
            batch.extend(c.steps.drain(..upto));
        }
        c.handed_on(upto);
        tx.send(batch).is_ok()
    };
    loop {
        match ahead(&mut c.ahead) {
            Some(Ahead::Text(s)) => {
                let Some(chunk) = s.next(&mut c.tgid_of) else { break };
                c.steps.reserve(chunk.lines.len());
                for (k, rec) in chunk.lines.iter().enumerate() {
                    match *rec {
                        // A page fault needs none of its text.
                        LineRec::Fault { tid, addr, code } => {
                            c.fault_line(chunk.first_line + k, tid, addr, code)
                        }
                        LineRec::Other { start, end, head } => {
                            let h = head.map(|h| Header {
                                pid: h.pid,
                                tid: h.tid,
                                rest: &chunk.text[h.rest.0..h.rest.1],
                                fault: h.fault,
                            });
                            c.line(chunk.first_line + k, &chunk.text[start..end], h);
                        }
                    }
                }
                if let Some(Ahead::Text(s)) = ahead(&mut c.ahead) {
                    s.give_back(chunk);
                }
            }
            Some(Ahead::Data(s)) => {
                let Some(chunk) = s.next(&mut c.tgid_of) else { break };
                super::perf_data::feed(&mut c, plans.as_deref().map_or(&[], |p| p), &chunk);
                if let Some(Ahead::Data(s)) = ahead(&mut c.ahead) {
                    s.give_back(chunk);
                }
            }
            None => break,
        }
        let upto = c.releasable();
        if !hand_on(&mut c, upto) {
            // Nobody is listening any more.
            return StreamEnd::default();
        }
    }
    c.finish();
    let zst_problem = match ahead(&mut c.ahead) {
        Some(Ahead::Text(s)) => s.problem.take(),
        _ => None,
    };
    c.ahead = None;
    let n = c.steps.len();
    hand_on(&mut c, n);
    let mut report = c.final_report();
    if let Some(e) = zst_problem {
        report.zstd_cut(name, &e);
    }
    StreamEnd { report, exact: !c.spoiled }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Every step and the report of a streamed import of `text` (read `chunk` bytes at a
    /// time), as text to compare with a whole import's; read on a thread of its own, as a
    /// compressed trace is, the same.
    pub(crate) fn streamed(text: &str, chunk: usize, hold: usize) -> Option<(Vec<String>, StreamEnd)> {
        let run = |threaded: bool| {
            let reader = Box::new(std::io::Cursor::new(text.as_bytes().to_vec()));
            let mut s = stream_from("t.perf".to_string(), reader, threaded, chunk, hold)?;
            let mut steps = Vec::new();
            while let Some(b) = s.next_batch() {
                steps.extend(b.iter().map(|s| show(&s.step())));
                s.recycle(b);
            }
            Some((steps, s.finish()))
        };
        let here = run(false);
        assert_eq!(run(true), here, "read on a thread of its own, chunks of {chunk}");
        here
    }

    pub(crate) fn show(s: &crate::script::Step) -> String {
        format!("{} {} {:?} {:?} {}", s.line, s.pid.0, s.call, s.expect, s.call_text())
    }

    /// Lines end as `str::lines` ends them: CRLF, blank lines, a last line without a newline
    /// (keeping its CR), and invalid UTF-8 replaced as a whole-text conversion replaces it.
    #[test]
    fn lines_split_as_str_lines_splits_them() {
        let f =
            |t: &str| format!("p 1/1 {t}: exceptions:page_fault_user: address=0x1000 ip=0x1 error_code=0x6");
        let text = format!(
            "{}\r\n\n{}\n\r\n garbage\u{a0} \n{}\nx \u{fffd}\r\n{}\r",
            f("1.0"),
            f("1.1"),
            f("1.2"),
            f("1.3")
        );
        let (script, report) = crate::parse_perf("t.perf", &text).expect("perf text");
        let whole: Vec<String> = script.steps.iter().map(show).collect();
        assert_eq!(whole.len(), 4);
        for chunk in [1, 7, 100, 1 << 20] {
            let (steps, end) = streamed(&text, chunk, HOLD).expect("perf text");
            assert_eq!(steps, whole, "chunks of {chunk}");
            assert_eq!(end, StreamEnd { report: report.clone(), exact: true }, "chunks of {chunk}");
        }
        let mut bytes = text.clone().into_bytes();
        bytes.extend_from_slice(b"\nq 2/2 3.0: e:x: \xff\xfe\n");
        // Faults of a task, one with invalid UTF-8 in its ip, and of a task whose name is not
        // valid UTF-8: read the general way, as a whole import reads them.
        let g = |c: &[u8], t: &str, ip: &[u8]| {
            [
                c,
                format!(" 3/3 {t}: exceptions:page_fault_user: address=0x2000 ip=0x").as_bytes(),
                ip,
                b" error_code=0x7\n",
            ]
            .concat()
        };
        for (c, ip) in
            [(&b"r"[..], &b"1"[..]), (b"r", b"\xff\xfe"), (b"r", b"1"), (b"s\xff", b"1"), (b"s\xff", b"1")]
        {
            for t in ["4.0", "4.1"] {
                bytes.extend_from_slice(&g(c, t, ip));
            }
        }
        let lossy = String::from_utf8_lossy(&bytes).into_owned();
        let (script, report) = crate::parse_perf("t.perf", &lossy).expect("perf text");
        let whole: Vec<String> = script.steps.iter().map(show).collect();
        assert_eq!(whole.len(), 14);
        for chunk in [16, 1 << 20] {
            for threaded in [false, true] {
                let reader = Box::new(std::io::Cursor::new(bytes.clone()));
                let mut st =
                    stream_from("t.perf".to_string(), reader, threaded, chunk, HOLD).expect("perf text");
                let mut steps = Vec::new();
                while let Some(b) = st.next_batch() {
                    steps.extend(b.iter().map(|s| show(&s.step())));
                    st.recycle(b);
                }
                assert_eq!(steps, whole);
                assert_eq!(st.finish().report, report);
            }
        }
    }
}
