//! Print a `perf.data` file as the `perf script --show-mmap-events -F
//! comm,pid,tid,time,event,trace` text anonmm reads it as:
//! `cargo run --release --example perf_data_script -- perf.data`.

use std::io::{Read, Write};

fn main() {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: perf_data_script PERF.DATA");
        std::process::exit(2);
    };
    let mut r = match anonmm::import::perf_data::open_path(std::path::Path::new(&path)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{}: {e}", std::path::Path::new(&path).display());
            std::process::exit(2);
        }
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if out.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(2);
            }
        }
    }
    let _ = out.flush();
    let side = r.side();
    let s = side.lock().map(|s| s.clone()).unwrap_or_default();
    if s.lost > 0 {
        eprintln!("lost events: {}", s.lost);
    }
    for p in s.problems {
        eprintln!("{p}");
    }
}
