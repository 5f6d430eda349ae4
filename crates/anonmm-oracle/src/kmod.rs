//! The kernel side of `--internal` (docs/internal.md): the `anonmm_inspect` module
//! (`oracle/kmod/`), built on the host against Debian's headers of the VM's exact kernel and
//! loaded by the guest's `/init`, and the guest's reading of `/proc/anonmm_inspect` after
//! every step.
//!
//! # The build
//! For the unpacked kernel package (`vm::kernel_package`, release R, Debian version V):
//! `apt-get download linux-headers-R=V`, then the two packages it points at (its `scripts`
//! link names `linux-kbuild-*`, its `Makefile` includes `linux-headers-*-common`), each
//! unpacked with `dpkg-deb -x` into one tree under `~/.cache/anonmm/headers/R/`, laid out as
//! under `/` so the packages' relative links hold; the one absolute path (the `Makefile`'s
//! `include /usr/src/...-common/Makefile`) is pointed into that tree. Then
//! `make -C .../linux-headers-R M=DIR modules` with the system's `gcc-12`, in a directory
//! named by a hash of the module's source, so a changed source is rebuilt and an unchanged
//! one is not. The host's own kernel (6.18) has no headers package: `--internal` runs in the
//! VMs only.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::OracleError;
use super::vm::{KernelPackage, Target, VmSession, cache_dir, fetch_deb, run_tool, tool, unavailable};
use crate::internal::{RawInternal, parse_kernel};
use crate::kernel::Kernel;

/// The module's files, kept in the repository (`oracle/kmod/`).
const SOURCES: &[(&str, &str)] = &[
    ("anonmm_inspect.c", include_str!("../../../oracle/kmod/anonmm_inspect.c")),
    ("Kbuild", include_str!("../../../oracle/kmod/Kbuild")),
];

/// The module's `/proc` file.
pub const PROC_FILE: &str = "/proc/anonmm_inspect";

/// Is the inspection module loaded (in the guest)?
pub fn loaded() -> bool {
    Path::new(PROC_FILE).exists()
}

/// The internal state of process `real` in `[lo, hi)`, read through the module: one write
/// of the request, then the answer (the module takes the kernel's locks; the worker is idle
/// between steps).
pub fn read(real: i32, lo: u64, hi: u64) -> Result<RawInternal, OracleError> {
    use std::io::{Read, Seek, Write};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(PROC_FILE)
        .map_err(|e| OracleError::sys("opening /proc/anonmm_inspect", e))?;
    f.write_all(format!("{real} {lo:x} {hi:x}").as_bytes())
        .map_err(|e| OracleError::sys("asking /proc/anonmm_inspect", e))?;
    f.rewind().map_err(|e| OracleError::sys("/proc/anonmm_inspect", e))?;
    let mut text = String::new();
    f.read_to_string(&mut text).map_err(|e| OracleError::sys("reading /proc/anonmm_inspect", e))?;
    parse_kernel(&text).map_err(OracleError::System)
}

/// The oracle's target for `kernel`, with the inspection module loaded when `internal`.
pub fn target(kernel: Kernel, internal: bool) -> Result<Target, OracleError> {
    if !internal {
        return Target::for_kernel(kernel);
    }
    if kernel == Kernel::V6_18 {
        return Err(unavailable(
            "--internal reads the kernel's structures with a module built against Debian's headers \
             of the VM's kernel: it runs with --kernel 6.1 or 6.12 (the host's 6.18 has no headers package)",
        ));
    }
    let package = super::vm::kernel_package(kernel)?;
    let ko = module(&package)?;
    let session = VmSession::boot_with(kernel, vec![("anonmm_inspect".to_string(), ko)])?;
    Ok(Target::Vm(Box::new(session)))
}

/// FNV-1a of the module's sources: the build directory's name.
fn source_hash() -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (name, text) in SOURCES {
        for b in name.bytes().chain(text.bytes()) {
            h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }
    h
}

fn io(what: &Path, e: std::io::Error) -> OracleError {
    unavailable(format!("{}: {e}", what.display()))
}

/// The Debian version of the unpacked kernel package (`NAME_VERSION_amd64.deb` in the cache).
fn package_version(pkg: &KernelPackage) -> Option<String> {
    let prefix = format!("{}_", pkg.name);
    std::fs::read_dir(cache_dir().join("debs")).ok()?.flatten().find_map(|e| {
        let f = e.file_name().to_string_lossy().into_owned();
        let rest = f.strip_prefix(&prefix)?.strip_suffix(".deb")?;
        Some(rest.rsplit_once('_')?.0.to_string())
    })
}

/// The headers tree of `pkg`'s kernel, fetched and unpacked on first use: the directory to
/// give `make -C`.
fn headers(pkg: &KernelPackage) -> Result<PathBuf, OracleError> {
    let base = cache_dir().join("headers").join(&pkg.release);
    let kdir = |root: &Path| root.join("usr/src").join(format!("linux-headers-{}", pkg.release));
    if kdir(&base).join("Makefile").is_file() && kdir(&base).join("scripts/Makefile.build").is_file() {
        return Ok(kdir(&base));
    }
    let version = package_version(pkg);
    let tmp = base.with_extension("partial");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    let arch = format!("linux-headers-{}", pkg.release);
    fetch_deb(&arch, version.as_deref(), &tmp)?;
    let kd = kdir(&tmp);
    // scripts -> ../../lib/linux-kbuild-6.1/scripts
    let link = std::fs::read_link(kd.join("scripts")).map_err(|e| io(&kd.join("scripts"), e))?;
    let kbuild = link
        .components()
        .find_map(|c| c.as_os_str().to_str().filter(|s| s.starts_with("linux-kbuild-")).map(str::to_string))
        .ok_or_else(|| unavailable(format!("{}: its scripts link names no linux-kbuild package", arch)))?;
    // include /usr/src/linux-headers-6.1.0-57-common/Makefile
    let makefile = std::fs::read_to_string(kd.join("Makefile")).map_err(|e| io(&kd.join("Makefile"), e))?;
    let common = makefile
        .lines()
        .find_map(|l| l.strip_prefix("include /usr/src/")?.strip_suffix("/Makefile"))
        .map(str::to_string)
        .ok_or_else(|| unavailable(format!("{arch}: its Makefile includes no linux-headers-*-common")))?;
    fetch_deb(&common, version.as_deref(), &tmp)?;
    fetch_deb(&kbuild, version.as_deref(), &tmp)?;
    let inside = tmp.join("usr/src").join(&common);
    let final_common = base.join("usr/src").join(&common);
    let fixed = makefile.replace(
        &format!("include /usr/src/{common}/Makefile"),
        &format!("include {}/Makefile", final_common.display()),
    );
    std::fs::write(kd.join("Makefile"), fixed).map_err(|e| io(&kd.join("Makefile"), e))?;
    if !inside.join("Makefile").is_file() {
        return Err(unavailable(format!("{common}: no Makefile after unpacking")));
    }
    let _ = std::fs::remove_dir_all(&base);
    std::fs::rename(&tmp, &base).map_err(|e| io(&base, e))?;
    Ok(kdir(&base))
}

/// `anonmm_inspect.ko` for `pkg`'s kernel, built on first use (and after a source change).
pub fn module(pkg: &KernelPackage) -> Result<Vec<u8>, OracleError> {
    let dir = cache_dir().join("kmod").join(format!("{}-{:016x}", pkg.release, source_hash()));
    let ko = dir.join("anonmm_inspect.ko");
    if let Ok(b) = std::fs::read(&ko) {
        return Ok(b);
    }
    let kdir = headers(pkg)?;
    let make = tool("make", "make")?;
    tool("gcc-12", "gcc-12")?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
    for (name, text) in SOURCES {
        std::fs::write(dir.join(name), text).map_err(|e| io(&dir.join(name), e))?;
    }
    eprintln!("anonmm: building anonmm_inspect.ko for {} in {}", pkg.release, dir.display());
    // No BTF for the module: Debian's newer header packages ship a `vmlinux`, with which
    // kbuild would run `pahole` (package dwarves) on the module; the oracle needs no BTF.
    run_tool(
        Command::new(make)
            .arg("-C")
            .arg(&kdir)
            .arg(format!("M={}", dir.display()))
            .arg("CONFIG_DEBUG_INFO_BTF_MODULES=")
            .arg("modules"),
        &format!("building anonmm_inspect.ko against {}", kdir.display()),
    )?;
    std::fs::read(&ko).map_err(|e| io(&ko, e))
}
