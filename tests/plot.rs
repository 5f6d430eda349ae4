//! `anonmm plot`: the SVG is well-formed enough for a browser and readable on its own:
//! a title, named axes, a legend, and one polyline per policy per trace.

use std::path::PathBuf;
use std::process::Command;

fn dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plot");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Crude XML well-formedness: every element opened is closed in order.
fn balanced(svg: &str) -> Result<(), String> {
    let mut stack: Vec<String> = Vec::new();
    let mut rest = svg;
    while let Some(i) = rest.find('<') {
        rest = &rest[i + 1..];
        let end = rest.find('>').ok_or("unterminated tag")?;
        let tag = &rest[..end];
        rest = &rest[end + 1..];
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            let open = stack.pop().ok_or_else(|| format!("stray </{name}>"))?;
            if open != name.trim() {
                return Err(format!("<{open}> closed by </{name}>"));
            }
        } else if !tag.ends_with('/') {
            stack.push(tag.split_whitespace().next().unwrap_or("").to_string());
        }
    }
    if stack.is_empty() { Ok(()) } else { Err(format!("unclosed {stack:?}")) }
}

#[test]
fn svg_has_title_axes_legend_and_one_line_per_policy() {
    let script = dir().join("stitch.strace");
    let text = anonmm::workload::Workload::Stitch(anonmm::workload::StitchParams {
        pieces: 6,
        min_pages: 1,
        max_pages: 4,
        faulted: 1.0,
    })
    .script_text(1)
    .unwrap();
    std::fs::write(&script, text).unwrap();
    let out = dir().join("stitch.svg");
    let o = Command::new(env!("CARGO_BIN_EXE_anonmm"))
        .args(["plot", script.to_str().unwrap(), "examples/fork_cow.strace", "--policy", "all", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let svg = std::fs::read_to_string(&out).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..100]);
    balanced(&svg).unwrap();
    assert!(svg.contains("VMAs held by the live processes"), "figure title");
    assert!(svg.contains("stitch.strace"), "chart title names the trace");
    assert!(svg.contains("fork_cow.strace"));
    assert!(svg.contains("VMAs (count)"), "y axis");
    assert!(svg.contains("step (call index in the script)"), "x axis of a script");
    let policies = anonmm::report::POLICIES;
    for p in policies {
        assert!(svg.lines().any(|l| l.trim_start().starts_with(&format!("{p}: peak "))), "legend names {p}");
    }
    // Axes and ticks are thin black polylines too; the data lines are the 2-pixel ones.
    let lines =
        svg.lines().filter(|l| l.starts_with("<polyline") && l.contains("stroke-width=\"2\"")).count();
    assert_eq!(lines, 2 * policies.len(), "one line per policy per chart");
}

#[test]
fn perf_trace_is_plotted_over_time() {
    let trace = PathBuf::from("traces/realloc.perf.txt.zst");
    let chart = anonmm::plot::chart_for(&trace, &[anonmm::policy::Policy::Kernel]).unwrap();
    assert!(chart.timed);
    let pts = &chart.series[0].points;
    assert!(pts.windows(2).all(|w| w[0].0 <= w[1].0), "time goes forward");
    assert!(pts.iter().any(|p| p.1 >= 20.0));
    let svg = anonmm::plot::render_svg(&[chart]).unwrap();
    assert!(svg.contains("trace time (seconds since the first step)"));
}

#[test]
fn unreadable_trace_and_bad_policy_exit_2() {
    let out = dir().join("x.svg");
    for args in [
        vec!["plot", "/nonexistent/trace", "-o"],
        vec!["plot", "examples/fork_cow.strace", "--policy", "nope", "-o"],
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_anonmm")).args(&args).arg(&out).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(!o.stderr.is_empty());
    }
}
