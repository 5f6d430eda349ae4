//! The guest's side of the VM oracle (`anonmm oracle vm-guest`, started by the guest's
//! `/init` inside `chroot /host`; see `vm`): report the guest's settings, then run each
//! script the host asks for with the native executor and write what it saw.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use super::vm::{GuestSettings, SETTINGS, WireResult, selected};

/// Put the serial port in raw mode: no echo of what the host sends, no line editing.
fn raw_tty(f: &std::fs::File) {
    // SAFETY: termios calls on a descriptor we own, with a zeroed struct they fill.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(f.as_raw_fd(), &mut t) == 0 {
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(f.as_raw_fd(), libc::TCSANOW, &t);
        }
    }
}

/// Does a fresh anonymous VMA carry `VM_SOFTDIRTY` (smaps' `sd`)?
fn soft_dirty() -> bool {
    // SAFETY: a fresh private mapping, unmapped below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return false;
    }
    let start = format!("{:x}-", p as u64);
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
    let sd = smaps
        .split_inclusive('\n')
        .skip_while(|l| !l.starts_with(&start))
        .find(|l| l.starts_with("VmFlags:"))
        .is_some_and(|l| l.split_whitespace().any(|w| w == "sd"));
    // SAFETY: unmaps what we mapped.
    unsafe { libc::munmap(p, 4096) };
    sd
}

/// Is `PR_SET_VMA_ANON_NAME` accepted (CONFIG_ANON_VMA_NAME)?
fn anon_vma_name() -> bool {
    // SAFETY: a fresh private mapping named and unmapped here.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return false;
        }
        let name = c"x";
        let r = libc::prctl(0x53564d41, 0, p as libc::c_ulong, 4096 as libc::c_ulong, name.as_ptr());
        libc::munmap(p, 4096);
        r == 0
    }
}

fn settings() -> GuestSettings {
    let mem_total_kb = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    GuestSettings {
        release: super::vm::host_release(),
        mem_total_kb,
        settings: SETTINGS
            .iter()
            .filter_map(|p| Some((p.to_string(), selected(&std::fs::read_to_string(p).ok()?))))
            .collect(),
        pku: crate::mm::host_has_pku(),
        soft_dirty: soft_dirty(),
        anon_vma_name: anon_vma_name(),
    }
}

/// `anonmm oracle vm-guest --share DIR --ctl TTY`: serve the host until it says `quit`.
pub fn cmd_guest(share: &Path, ctl: &Path) -> i32 {
    let port = match std::fs::OpenOptions::new().read(true).write(true).open(ctl) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("anonmm vm-guest: {}: {e}", ctl.display());
            return 2;
        }
    };
    raw_tty(&port);
    let mut out = match port.try_clone() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("anonmm vm-guest: {e}");
            return 2;
        }
    };
    let s = settings();
    let json = serde_json::to_string(&s).unwrap_or_default();
    if let Err(e) = std::fs::write(share.join("settings.json"), json) {
        eprintln!("anonmm vm-guest: settings.json: {e}");
        return 2;
    }
    if let Err(e) = super::probe::probe() {
        eprintln!("anonmm vm-guest: the executor cannot run here: {e}");
        return 2;
    }
    // One swap device for the whole boot, not one per MADV_PAGEOUT script (swapfile).
    if let Err(e) = super::swapfile::hold_for_session() {
        eprintln!("anonmm vm-guest: {e}");
        return 2;
    }
    if writeln!(out, "ready").is_err() {
        return 2;
    }
    let mut lines = BufReader::new(port);
    let mut line = String::new();
    loop {
        line.clear();
        match lines.read_line(&mut line) {
            Ok(0) | Err(_) => return 0,
            Ok(_) => {}
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["quit"] => return 0,
            ["run", id, smaps] => {
                let path = share.join(format!("{id}.strace"));
                let r = match crate::script::parse_file(&path) {
                    Ok(script) => super::run_native_prefix(&script, *smaps == "1"),
                    Err(e) => {
                        Err(super::OracleError::System(format!("the guest cannot parse the script: {e}")))
                    }
                };
                let json = serde_json::to_vec(&WireResult::new(r)).unwrap_or_default();
                if let Err(e) = std::fs::write(share.join(format!("{id}.json")), json) {
                    eprintln!("anonmm vm-guest: {id}.json: {e}");
                    return 2;
                }
                if writeln!(out, "done {id}").is_err() {
                    return 2;
                }
            }
            [] => {}
            _ => eprintln!("anonmm vm-guest: unknown request `{}`", line.trim()),
        }
    }
}
