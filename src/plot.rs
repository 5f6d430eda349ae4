//! `anonmm plot`: the VMA count of a replayed trace over its time, as an SVG.
//!
//! A table gives a trace's VMAs at the end and at the peak; the plot shows how they got
//! there (a program that maps and unmaps in bursts, a fork doubling the count, mremap
//! stitching that keeps pieces apart). Each trace gets its own small chart (traces differ by
//! orders of magnitude in length and VMAs), all in one SVG; each policy is one line, so that
//! policies can be compared where they differ. The x axis is the trace's own time when it
//! has timestamps (`perf script` lines do), else the step index (anonmm and strace scripts).

use std::path::Path;

use plotters::prelude::*;

use crate::policy::Policy;
use crate::replay::{VmaSample, replay_script_observed};
use crate::run::RunOptions;

/// One policy's line: (x, VMAs of all live processes) points, and the anonymous-VMA peak.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The `--policy` name the trace was replayed with.
    pub policy: String,
    /// (x, VMAs) after each step, thinned to at most [`MAX_POINTS`] and drawn as a staircase.
    pub points: Vec<(f64, f64)>,
    /// The most VMAs, and the most anonymous VMAs, after any step.
    pub peak: (usize, usize),
}

/// What one chart shows.
#[derive(Clone, Debug, PartialEq)]
pub struct Chart {
    /// The trace's file name, the chart's title.
    pub trace: String,
    /// True when x is seconds since the trace's first step, false for the step index.
    pub timed: bool,
    /// Number of steps in the trace.
    pub steps: usize,
    /// One line per policy, in the order asked for.
    pub series: Vec<Series>,
}

/// Most points kept per line: beyond about one per pixel column a line only grows the file.
pub const MAX_POINTS: usize = 2000;

/// Timestamps of a `perf script` text by line (1-based index − 1), None for other lines.
/// Only the first word of the form `SECONDS.FRACTION:` after a `PID/TID` word counts,
/// as in the importer's line header.
pub fn perf_line_times(text: &str) -> Vec<Option<f64>> {
    text.lines().map(line_time).collect()
}

/// The timestamp of one line, as [`perf_line_times`] reads it.
fn line_time(l: &str) -> Option<f64> {
    let mut prev_pid = false;
    for w in l.split_ascii_whitespace() {
        if prev_pid
            && let Some(t) = w.strip_suffix(':')
            && let Some((a, b)) = t.split_once('.')
            && !a.is_empty()
            && !b.is_empty()
            && a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit())
        {
            return t.parse().ok();
        }
        prev_pid = w.split_once('/').is_some_and(|(p, t)| {
            !p.is_empty() && !t.is_empty() && (p.bytes().chain(t.bytes())).all(|c| c.is_ascii_digit())
        });
    }
    None
}

/// Lines read back of the furthest line asked for: steps come in about their lines' order
/// (an import moves a record a few lines at most), so a window of times serves them.
const TIME_WINDOW: usize = 1 << 16;

/// The timestamps of a trace's lines, read as they are asked for (in about ascending
/// order), keeping only the last [`TIME_WINDOW`] lines': [`perf_line_times`] of the whole
/// text without holding it.
struct LineTimes<'p> {
    path: &'p Path,
    reader: Box<dyn std::io::BufRead + 'p>,
    /// The times of lines `first..next` (1-based).
    window: std::collections::VecDeque<Option<f64>>,
    first: usize,
    next: usize,
    buf: Vec<u8>,
}

impl<'p> LineTimes<'p> {
    fn open(path: &'p Path) -> LineTimes<'p> {
        use std::io::Read;
        let reader: Box<dyn std::io::BufRead> = match std::fs::File::open(path) {
            Ok(mut f) => {
                let mut magic = Vec::with_capacity(4);
                let _ = (&mut f).take(4).read_to_end(&mut magic);
                let is_zstd = magic == [0x28, 0xb5, 0x2f, 0xfd];
                let head = std::io::Cursor::new(magic).chain(f);
                if !is_zstd {
                    Box::new(std::io::BufReader::with_capacity(1 << 20, head))
                } else {
                    match zstd::stream::read::Decoder::new(head) {
                        Ok(d) => Box::new(std::io::BufReader::with_capacity(1 << 20, d)),
                        Err(_) => Box::new(std::io::empty()),
                    }
                }
            }
            Err(_) => Box::new(std::io::empty()),
        };
        LineTimes { path, reader, window: Default::default(), first: 1, next: 1, buf: Vec::new() }
    }

    /// The time of line `line` (1-based), None for a line without one or past the end.
    fn time(&mut self, line: usize) -> Option<f64> {
        if line == 0 {
            return None;
        }
        while self.next <= line {
            self.buf.clear();
            // What can be read of a cut stream is read, as `trace_text` does.
            match std::io::BufRead::read_until(&mut self.reader, b'\n', &mut self.buf) {
                Ok(n) if n > 0 => {}
                _ => return None,
            }
            let l = self.buf.strip_suffix(b"\n").unwrap_or(&self.buf);
            let l = l.strip_suffix(b"\r").unwrap_or(l);
            self.window.push_back(line_time(&String::from_utf8_lossy(l)));
            self.next += 1;
            if self.window.len() > TIME_WINDOW {
                self.window.pop_front();
                self.first += 1;
            }
        }
        if line >= self.first {
            return self.window[line - self.first];
        }
        // Further back than the window: read the text again up to it (rare).
        let mut again = LineTimes::open(self.path);
        again.time(line)
    }
}

/// [`thin`] as the points come, for a line of `n` points known beforehand: per bucket of
/// points, the first, lowest, highest and last are kept (the first lowest and the last
/// highest, as `min_by` and `max_by` pick them).
struct Thinner {
    per: usize,
    out: Vec<(f64, f64)>,
    /// The bucket being filled: its points' count, and (index, point) of its first, lowest,
    /// highest and last point.
    len: usize,
    keep: [(usize, (f64, f64)); 4],
}

impl Thinner {
    fn new(n: usize, max: usize) -> Thinner {
        let per = if n <= max || max < 8 { usize::MAX } else { n.div_ceil(max / 4) };
        Thinner { per, out: Vec::new(), len: 0, keep: [(0, (0.0, 0.0)); 4] }
    }

    fn push(&mut self, p: (f64, f64)) {
        if self.per == usize::MAX {
            self.out.push(p);
            return;
        }
        let i = self.len;
        if i == 0 {
            self.keep = [(0, p); 4];
        } else {
            if p.1.total_cmp(&self.keep[1].1.1).is_lt() {
                self.keep[1] = (i, p);
            }
            if p.1.total_cmp(&self.keep[2].1.1).is_ge() {
                self.keep[2] = (i, p);
            }
            self.keep[3] = (i, p);
        }
        self.len += 1;
        if self.len == self.per {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.len == 0 {
            return;
        }
        let mut k = self.keep;
        k.sort_by_key(|&(i, _)| i);
        let mut last = None;
        for (i, p) in k {
            if last != Some(i) {
                self.out.push(p);
            }
            last = Some(i);
        }
        self.len = 0;
    }

    fn finish(mut self) -> Vec<(f64, f64)> {
        self.flush();
        self.out
    }
}

/// A trace's text, decompressed when it is zstd (what can be decompressed of a cut stream).
fn trace_text(path: &Path) -> String {
    let Ok(bytes) = std::fs::read(path) else { return String::new() };
    if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let mut out = Vec::new();
        if let Ok(mut dec) = zstd::stream::read::Decoder::new(&bytes[..]) {
            let _ = std::io::copy(&mut dec, &mut out);
        }
        return String::from_utf8_lossy(&out).into_owned();
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Thin a line to at most about `max` points, keeping per bucket of x the first, lowest,
/// highest and last points, so that spikes survive.
pub fn thin(points: &[(f64, f64)], max: usize) -> Vec<(f64, f64)> {
    if points.len() <= max || max < 8 {
        return points.to_vec();
    }
    let buckets = max / 4;
    let per = points.len().div_ceil(buckets);
    let mut out = Vec::with_capacity(max + 4);
    for chunk in points.chunks(per) {
        let lo = chunk.iter().enumerate().min_by(|a, b| a.1.1.total_cmp(&b.1.1)).map_or(0, |(i, _)| i);
        let hi = chunk.iter().enumerate().max_by(|a, b| a.1.1.total_cmp(&b.1.1)).map_or(0, |(i, _)| i);
        let mut idx = vec![0, lo, hi, chunk.len() - 1];
        idx.sort_unstable();
        idx.dedup();
        out.extend(idx.into_iter().map(|i| chunk[i]));
    }
    out
}

/// A count holds until the next step changes it: draw it as a staircase (a horizontal then
/// a vertical segment between samples), not as slopes that suggest values never held.
pub fn steps(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(points.len() * 2);
    for (i, &(x, y)) in points.iter().enumerate() {
        if i > 0 && points[i - 1].1 != y {
            out.push((x, points[i - 1].1));
        }
        out.push((x, y));
    }
    out
}

/// Replay one trace with each policy and collect its chart. Errors name the trace.
///
/// The trace streams (memory is the model's state and a few hundred points, not the
/// trace): once to count its steps and find their times, then once per policy. In the rare
/// case a stream was not exact ([`crate::import::StreamEnd::exact`]), the trace is
/// imported whole ([`chart_whole`]), which gives the same chart.
pub fn chart_for(path: &Path, policies: &[Policy]) -> Result<Chart, String> {
    let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into());
    let mut stream = crate::import::stream_trace(path).map_err(|e| e.to_string())?;
    let mut times = LineTimes::open(path);
    let (mut n, mut timed, mut t0) = (0usize, true, 0.0);
    while let Some(batch) = stream.next_batch() {
        for item in &batch {
            let t = times.time(item.step().line);
            if n == 0 {
                t0 = t.unwrap_or(0.0);
            }
            timed &= t.is_some();
            n += 1;
        }
        stream.recycle(batch);
    }
    if !stream.finish().exact {
        return chart_whole(path, policies);
    }
    // Timed when every step's line has a timestamp (perf text); scripts have none.
    let timed = n > 0 && timed;
    let mut series = Vec::new();
    for &p in policies {
        let opts = RunOptions { policy: p, ..Default::default() };
        let mut times = LineTimes::open(path);
        let mut thin = Thinner::new(n, MAX_POINTS);
        // See `chart_whole`: the x of a step is the latest time seen so far.
        let mut latest = 0.0f64;
        let out = crate::replay::replay_trace_observed(path, &opts, 0, &mut |s| {
            let x = if timed { times.time(s.line).unwrap_or(t0) - t0 } else { s.index as f64 };
            latest = latest.max(x);
            thin.push((latest, s.all as f64));
        })
        .map_err(|e| format!("{name} ({p}): {e}"))?;
        let Some((out, _)) = out else { return chart_whole(path, policies) };
        series.push(Series { policy: p.to_string(), points: steps(&thin.finish()), peak: out.vmas_peak });
    }
    Ok(Chart { trace: name, timed, steps: n, series })
}

/// [`chart_for`] from the whole import and the whole text of the trace.
pub fn chart_whole(path: &Path, policies: &[Policy]) -> Result<Chart, String> {
    let (script, _) = crate::import::read_trace(path).map_err(|e| e.to_string())?;
    let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into());
    let times = perf_line_times(&trace_text(path));
    // Timed when every step's line has a timestamp (perf text); scripts have none.
    let step_time = |line: usize| line.checked_sub(1).and_then(|i| times.get(i).copied().flatten());
    let timed = !script.steps.is_empty() && script.steps.iter().all(|s| step_time(s.line).is_some());
    let t0 = script.steps.first().and_then(|s| step_time(s.line)).unwrap_or(0.0);
    let mut series = Vec::new();
    for &p in policies {
        let opts = RunOptions { policy: p, ..Default::default() };
        let mut samples: Vec<VmaSample> = Vec::with_capacity(script.steps.len());
        let out = replay_script_observed(&script, &opts, 0, &mut |_| {}, &mut |s| samples.push(s))
            .map_err(|e| format!("{name} ({p}): {e}"))?;
        // A step carries the time of its call's entry, and steps are replayed in the order
        // the calls returned: an overlapping call of another CPU may have entered earlier.
        // The x of a step is the latest time seen so far, so that the line only goes forward.
        let mut latest = 0.0f64;
        let points: Vec<(f64, f64)> = samples
            .iter()
            .map(|s| {
                let x = if timed { step_time(s.line).unwrap_or(t0) - t0 } else { s.index as f64 };
                latest = latest.max(x);
                (latest, s.all as f64)
            })
            .collect();
        series.push(Series {
            policy: p.to_string(),
            points: steps(&thin(&points, MAX_POINTS)),
            peak: out.vmas_peak,
        });
    }
    Ok(Chart { trace: name, timed, steps: script.steps.len(), series })
}

/// Colours of the policies' lines, in order (colour-blind safe: Okabe–Ito).
const COLOURS: [RGBColor; 6] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
];

/// Size of one chart in pixels, its legend (below the axes) included.
const CHART: (u32, u32) = (620, 430);
/// Height of the figure title band.
const TITLE_H: u32 = 50;
/// Height of one legend row; the legend has two columns.
const LEGEND_ROW: u32 = 18;
/// Markers per line: policies with the same counts draw the same line, and their markers,
/// each policy's at its own places along x, tell them apart.
const MARKERS: usize = 8;

/// Draw `charts` into an SVG document (two columns of small multiples under one title).
pub fn render_svg(charts: &[Chart]) -> Result<String, String> {
    let cols = if charts.len() > 1 { 2 } else { 1 };
    let rows = charts.len().div_ceil(cols).max(1);
    let size = (CHART.0 * cols as u32, CHART.1 * rows as u32 + TITLE_H);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        let err = |e: &dyn std::fmt::Display| e.to_string();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let (title, body) = root.split_vertically(TITLE_H);
        title
            .titled(
                "VMAs held by the live processes while anonmm replays each trace",
                ("sans-serif", 22).into_font().color(&BLACK),
            )
            .map_err(|e| err(&e))?;
        let areas = body.split_evenly((rows, cols));
        for (chart, area) in charts.iter().zip(areas) {
            draw_chart(chart, &area).map_err(|e| format!("{}: {e}", chart.trace))?;
        }
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}

/// Draw policy `i`'s marker at `at` (a coordinate of `area`): each policy its own shape.
fn marker<DB: DrawingBackend, CT: CoordTranslate>(
    area: &DrawingArea<DB, CT>,
    at: CT::From,
    i: usize,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let colour = COLOURS[i % COLOURS.len()];
    let (line, fill) = (colour.stroke_width(2), colour.filled());
    let at = EmptyElement::at(at);
    match i % 6 {
        0 => area.draw(&(at + Circle::new((0, 0), 4, line))),
        1 => area.draw(&(at + TriangleMarker::new((0, 0), 6, fill))),
        2 => area.draw(&(at + Cross::new((0, 0), 5, line))),
        3 => area.draw(&(at + Rectangle::new([(-4, -4), (4, 4)], line))),
        4 => area.draw(&(at + Circle::new((0, 0), 4, fill))),
        _ => area.draw(&(at + Rectangle::new([(-4, -4), (4, 4)], fill))),
    }
    .map_err(|e| e.to_string())
}

fn draw_chart<DB: DrawingBackend>(
    c: &Chart,
    area: &DrawingArea<DB, plotters::coord::Shift>,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    // The legend goes below the axes, never over the data.
    let legend_h = LEGEND_ROW * (c.series.len().div_ceil(2) as u32) + 10;
    let (plot_area, legend) = area.split_vertically(CHART.1 - legend_h);
    let x_max = c.series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).fold(0.0f64, f64::max);
    let y_max = c.series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(0.0f64, f64::max);
    // A non-empty range for a trace of one step or no VMA, and room above the highest point.
    let x_max = if x_max > 0.0 { x_max } else { 1.0 };
    let y_max = (y_max * 1.08).max(1.0).ceil();
    let caption = format!("{} ({} steps)", c.trace, c.steps);
    let mut ch = ChartBuilder::on(&plot_area)
        .caption(caption, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(err)?;
    let x_desc =
        if c.timed { "trace time (seconds since the first step)" } else { "step (call index in the script)" };
    let timed = c.timed;
    let small_x = x_max < 10.0;
    ch.configure_mesh()
        .x_desc(x_desc)
        .y_desc("VMAs (count)")
        .x_labels(6)
        .y_labels(6)
        .light_line_style(WHITE)
        .x_label_formatter(&|x: &f64| {
            if timed && small_x {
                format!("{x:.2}")
            } else if timed {
                format!("{x:.1}")
            } else {
                format!("{x:.0}")
            }
        })
        .y_label_formatter(&|y: &f64| format!("{y:.0}"))
        .axis_desc_style(("sans-serif", 13))
        .label_style(("sans-serif", 12))
        .draw()
        .map_err(err)?;
    let n = c.series.len().max(1);
    for (i, s) in c.series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        ch.draw_series(LineSeries::new(s.points.iter().copied(), colour.stroke_width(2))).map_err(err)?;
        // Markers at x positions of this policy's own, on the staircase's value there.
        for k in 0..MARKERS {
            let x = x_max * (k as f64 + (i as f64 + 0.5) / n as f64) / MARKERS as f64;
            let Some(&(_, y)) = s.points.iter().take_while(|p| p.0 <= x).last() else { continue };
            marker(ch.plotting_area(), (x, y), i)?;
        }
    }
    // Two columns of rows: a swatch of the line with its marker, then the policy's name.
    let half = CHART.0 as i32 / 2;
    for (i, s) in c.series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let (col, row) = ((i % 2) as i32, (i / 2) as i32);
        let (x, y) = (24 + col * (half - 12), 4 + row * LEGEND_ROW as i32 + LEGEND_ROW as i32 / 2);
        legend.draw(&Rectangle::new([(x, y - 1), (x + 28, y + 1)], colour.filled())).map_err(err)?;
        marker(&legend, (x + 14, y), i)?;
        let label = format!("{}: peak {} VMAs ({} anonymous)", s.policy, s.peak.0, s.peak.1);
        legend
            .draw(&Text::new(label, (x + 36, y - 7), ("sans-serif", 12).into_font().color(&BLACK)))
            .map_err(err)?;
    }
    Ok(())
}

/// `anonmm plot`: replay every trace with every policy and write the SVG to `out`.
pub fn plot(traces: &[std::path::PathBuf], policies: &[Policy], out: &Path) -> Result<(), String> {
    let mut charts = Vec::new();
    for t in traces {
        charts.push(chart_for(t, policies)?);
    }
    let svg = render_svg(&charts)?;
    std::fs::write(out, svg).map_err(|e| format!("{}: cannot write: {e}", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perf_times() {
        let t = perf_line_times(
            "            sort  8742/8742   1009.601157: syscalls:sys_enter_brk: brk: 0x0\n1 mmap(0x1, 2) = 0\n  a b 3/4 12.5: x",
        );
        assert_eq!(t, vec![Some(1009.601157), None, Some(12.5)]);
    }

    #[test]
    fn thinning_as_points_come_is_thin() {
        for n in [0usize, 7, 2000, 2001, 9_999, 10_000, 123_457] {
            let pts: Vec<(f64, f64)> = (0..n)
                .map(|i| (i as f64, ((i * 7919) % 97) as f64 + if i % 13 == 0 { 0.5 } else { 0.0 }))
                .collect();
            let mut t = Thinner::new(n, MAX_POINTS);
            pts.iter().for_each(|&p| t.push(p));
            assert_eq!(t.finish(), thin(&pts, MAX_POINTS), "{n} points");
        }
    }

    #[test]
    fn thinning_keeps_extremes() {
        let pts: Vec<(f64, f64)> =
            (0..10_000).map(|i| (i as f64, if i == 5555 { 99.0 } else { 1.0 })).collect();
        let t = thin(&pts, 100);
        assert!(t.len() <= 110);
        assert!(t.contains(&(5555.0, 99.0)));
        assert_eq!(t.first(), pts.first());
        assert_eq!(t.last(), pts.last());
    }
}
