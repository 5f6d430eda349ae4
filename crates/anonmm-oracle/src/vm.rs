//! The oracle in a virtual machine: `anonmm oracle run|diff|fuzz --kernel 6.1|6.12` boots
//! Debian's kernel package for that version under `qemu-system-x86_64` and runs the same
//! native executor inside the guest.
//!
//! # How
//! 1. **The kernel.** The newest `linux-image-6.1.0-N-amd64-unsigned` (or
//!    `linux-image-6.12.N+deb12-amd64-unsigned`) that `apt-cache` knows is fetched with
//!    `apt-get download` and unpacked with `dpkg-deb -x` under `~/.cache/anonmm/kernels/`
//!    (`$ANONMM_CACHE` overrides the directory); later runs use the cached one without the
//!    network.
//! 2. **The initramfs.** Busybox (Debian's `busybox-static`), the modules the guest needs
//!    from the package (virtio block and 9p, ext4 and what they depend on, read from each
//!    module's `depends=`; decompressed with `xz`), and an `/init` script, packed with
//!    `busybox cpio`. It is built per boot in the run directory (under a second).
//! 3. **The guest.** `qemu-system-x86_64 -accel kvm -cpu host` where `/dev/kvm` is hardware
//!    virtualisation, else (and when a KVM guest does not boot) `-accel tcg -cpu max`
//!    ([`first_accel`]; our machines' `/dev/kvm` is PVM, which cannot run Debian's kernels),
//!    one CPU, [`GUEST_MEM_MIB`] of memory. `/init` loads the modules, mounts
//!    the host's root file system read-only over virtio-9p at `/host`, the run directory's
//!    `share/` read-write over a second 9p export at the same path inside `/host`, and a fresh
//!    ext4 disk at `/host/tmp` and `/host/var/tmp` (scripts' files and the swap file live on a
//!    block device, as on the host); it copies the host's memory-management settings
//!    ([`SETTINGS`]), then `chroot /host` and runs this same `anonmm` binary as
//!    `anonmm oracle vm-guest` (see `guest`), which enables the swap file once for the boot.
//! 4. **The channel.** The guest's second serial port (`ttyS1`) is a Unix socket on the host:
//!    the host writes a script to `share/N.strace` and sends `run N SMAPS`; the guest runs it
//!    with the executor and answers `done N` after writing `share/N.json`. One boot serves
//!    every script of a batch (a whole fuzz run, shrinking included). The guest's console
//!    goes to `console.log` in the run directory, shown when the guest fails.
//!
//! The internal-state oracle (`--internal`, `super::internal`) loads its own module in the
//! same guest: [`VmSession::boot_with`].

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::errno::{Errno, Signal};
use crate::kernel::Kernel;
use crate::mm::{Config, ThpMode};
use crate::script::{Expect, Script};
use crate::smaps::Smaps;
use crate::snapshot::{PageName, PageView, ProcView, StepView};
use crate::types::Pid;

use super::{NativeStep, OracleError};

/// The guest's memory. The model's `ram_pages` is set to what the guest reports.
pub const GUEST_MEM_MIB: u64 = 2048;
/// The guest's scratch disk (sparse): the script's files and the 2 GiB swap file.
const DISK_BYTES: u64 = 6 << 30;
/// Booting to the guest's `ready` (10–16 s on an idle machine under TCG; the machine is shared).
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
/// Booting under KVM: seconds when it works; a guest that is not `ready` by then is not
/// going to be (see [`first_accel`]) and is booted again under TCG.
const KVM_BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// One script in the guest.
const RUN_TIMEOUT: Duration = Duration::from_secs(900);

/// How qemu runs the guest's CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation through `/dev/kvm` (`-accel kvm -cpu host`).
    Kvm,
    /// qemu's own translator (`-accel tcg -cpu max`): works everywhere, several times slower.
    Tcg,
}

impl Accel {
    fn qemu_args(self) -> [&'static str; 4] {
        match self {
            Accel::Kvm => ["-accel", "kvm", "-cpu", "host"],
            Accel::Tcg => ["-accel", "tcg", "-cpu", "max"],
        }
    }

    /// As `describe` prints it.
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "KVM",
            Accel::Tcg => "TCG",
        }
    }
}

/// Which accelerator to boot with first, and why not KVM when it is TCG.
///
/// `$ANONMM_VM_ACCEL` (`kvm` or `tcg`) decides when set. Otherwise KVM when `/dev/kvm` opens
/// for reading and writing and the module behind it is hardware virtualisation (`kvm_intel`
/// or `kvm_amd` under `/sys/module`). A `/dev/kvm` served by `kvm_pvm` alone (PVM, a
/// hypervisor for machines without VT-x/AMD-V, such as a cloud VM without nested
/// virtualisation) runs only kernels built as PVM guests: an unmodified Debian kernel's
/// ring-0 code goes to KVM's instruction emulator, which stops on the 6.12 decompressor's
/// BMI2 `shlx` ("KVM internal error ... emulation failure") and takes minutes to reach the
/// first lines of 6.1's boot. [`VmSession::boot_with`] still falls back to TCG when a KVM guest
/// does not come up.
pub fn first_accel() -> (Accel, String) {
    match std::env::var("ANONMM_VM_ACCEL").as_deref() {
        Ok("kvm") => return (Accel::Kvm, String::new()),
        Ok("tcg") => return (Accel::Tcg, "ANONMM_VM_ACCEL=tcg".into()),
        _ => {}
    }
    if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        return (Accel::Tcg, format!("/dev/kvm: {e}"));
    }
    let module = |m: &str| Path::new("/sys/module").join(m).exists();
    if module("kvm_intel") || module("kvm_amd") {
        return (Accel::Kvm, String::new());
    }
    if module("kvm_pvm") {
        return (Accel::Tcg, "/dev/kvm is PVM (kvm_pvm), which runs only PVM guest kernels".into());
    }
    (Accel::Tcg, "/dev/kvm has no hardware virtualisation behind it (no kvm_intel or kvm_amd)".into())
}

/// Memory-management settings copied from the host into the guest (if both have the file),
/// so that the guest is set like the machine the model describes; the guest prints them.
pub const SETTINGS: &[&str] = &[
    "/sys/kernel/mm/transparent_hugepage/enabled",
    "/sys/kernel/mm/transparent_hugepage/defrag",
    "/sys/kernel/mm/transparent_hugepage/use_zero_page",
    "/sys/kernel/mm/transparent_hugepage/shmem_enabled",
    "/sys/kernel/mm/transparent_hugepage/khugepaged/defrag",
    "/sys/kernel/mm/transparent_hugepage/khugepaged/max_ptes_none",
    "/sys/kernel/mm/transparent_hugepage/khugepaged/max_ptes_swap",
    "/sys/kernel/mm/transparent_hugepage/khugepaged/max_ptes_shared",
    "/sys/kernel/mm/transparent_hugepage/khugepaged/pages_to_scan",
    "/sys/kernel/mm/transparent_hugepage/khugepaged/scan_sleep_millisecs",
    "/sys/kernel/mm/transparent_hugepage/hugepages-16kB/enabled",
    "/sys/kernel/mm/transparent_hugepage/hugepages-32kB/enabled",
    "/sys/kernel/mm/transparent_hugepage/hugepages-64kB/enabled",
    "/sys/kernel/mm/transparent_hugepage/hugepages-128kB/enabled",
    "/sys/kernel/mm/transparent_hugepage/hugepages-256kB/enabled",
    "/sys/kernel/mm/transparent_hugepage/hugepages-512kB/enabled",
    "/sys/kernel/mm/transparent_hugepage/hugepages-1024kB/enabled",
    "/sys/kernel/mm/transparent_hugepage/hugepages-2048kB/enabled",
    "/proc/sys/vm/max_map_count",
    "/proc/sys/vm/overcommit_memory",
    "/proc/sys/vm/overcommit_ratio",
    "/proc/sys/vm/swappiness",
    "/proc/sys/vm/page-cluster",
    "/proc/sys/vm/unprivileged_userfaultfd",
];

/// What the guest needs from the kernel package, as module names (`-` and `_` alike).
pub struct Needs {
    /// Loaded in dependency order by `/init`; names built into the kernel are skipped.
    pub modules: Vec<&'static str>,
}

impl Default for Needs {
    fn default() -> Self {
        // The 9p transport, the 9p file system, virtio disks, ext4 and the crc32c its
        // metadata checksums ask for (a module request the initramfs cannot serve).
        Needs { modules: vec!["virtio_pci", "virtio_blk", "9pnet_virtio", "9p", "crc32c_generic", "ext4"] }
    }
}

pub(super) fn unavailable(msg: impl Into<String>) -> OracleError {
    OracleError::Unavailable(msg.into())
}

/// The cache directory: `$ANONMM_CACHE`, else `$XDG_CACHE_HOME/anonmm`, else `~/.cache/anonmm`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("ANONMM_CACHE") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("anonmm");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache").join("anonmm")
}

/// `name` on `$PATH`, or an error naming the Debian package that has it.
pub(super) fn tool(name: &str, package: &str) -> Result<PathBuf, OracleError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")]) {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(unavailable(format!(
        "the VM oracle needs `{name}`: install Debian's `{package}` package (apt-get install -y {package})"
    )))
}

pub(super) fn run_tool(cmd: &mut Command, what: &str) -> Result<Vec<u8>, OracleError> {
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| unavailable(format!("{what}: {e}")))?;
    if !out.status.success() {
        return Err(unavailable(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out.stdout)
}

/// Debian's unsigned kernel package of `kernel` (`linux-image-...-amd64-unsigned`): its
/// name's pattern, and the number that orders its versions.
fn package_version(kernel: Kernel, name: &str) -> Option<u64> {
    let n = match kernel {
        // linux-image-6.1.0-50-amd64-unsigned: the ABI number.
        Kernel::V6_1 => name.strip_prefix("linux-image-6.1.0-")?.strip_suffix("-amd64-unsigned")?,
        // linux-image-6.12.107+deb12-amd64-unsigned: the stable release.
        Kernel::V6_12 => name.strip_prefix("linux-image-6.12.")?.strip_suffix("+deb12-amd64-unsigned")?,
        Kernel::V6_18 => return None,
    };
    n.parse().ok()
}

/// An unpacked kernel package.
#[derive(Clone, Debug)]
pub struct KernelPackage {
    /// Which kernel.
    pub kernel: Kernel,
    /// The Debian package name.
    pub name: String,
    /// Where it is unpacked.
    pub root: PathBuf,
    /// `uname -r` (the directory under `lib/modules`).
    pub release: String,
}

impl KernelPackage {
    /// The kernel image.
    pub fn vmlinuz(&self) -> PathBuf {
        self.root.join("boot").join(format!("vmlinuz-{}", self.release))
    }

    fn modules(&self) -> PathBuf {
        self.root.join("lib/modules").join(&self.release)
    }

    fn open(kernel: Kernel, name: &str, root: PathBuf) -> Result<KernelPackage, OracleError> {
        let release = std::fs::read_dir(root.join("lib/modules"))
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .ok_or_else(|| {
                unavailable(format!("{}: no lib/modules in the unpacked package", root.display()))
            })?;
        let p = KernelPackage { kernel, name: name.to_string(), root, release };
        if !p.vmlinuz().is_file() {
            return Err(unavailable(format!("{}: no kernel image", p.vmlinuz().display())));
        }
        Ok(p)
    }
}

/// The kernel package for `kernel`: the newest one unpacked in the cache, else the newest
/// one `apt-cache` knows, fetched and unpacked.
pub fn kernel_package(kernel: Kernel) -> Result<KernelPackage, OracleError> {
    if kernel == Kernel::V6_18 {
        return Err(unavailable("Linux 6.18 is the host's kernel: the oracle runs it natively"));
    }
    let dir = cache_dir().join("kernels");
    let cached = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            Some((package_version(kernel, &name)?, name))
        })
        .filter(|(_, name)| dir.join(name).join("boot").is_dir())
        .max();
    if let Some((_, name)) = cached {
        return KernelPackage::open(kernel, &name, dir.join(&name));
    }
    let apt_cache = tool("apt-cache", "apt")?;
    let pattern = match kernel {
        Kernel::V6_1 => r"^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$",
        _ => r"^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$",
    };
    let list =
        run_tool(Command::new(apt_cache).args(["search", "--names-only", pattern]), "apt-cache search")?;
    let name = String::from_utf8_lossy(&list)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|n| Some((package_version(kernel, n)?, n.to_string())))
        .max()
        .map(|(_, n)| n)
        .ok_or_else(|| {
            unavailable(format!(
                "no Debian package for Linux {kernel} (apt-cache search '{pattern}' found none; run `apt-get update`, with Debian 12's bookworm and bookworm-security in the sources)"
            ))
        })?;
    fetch(kernel, &name, &dir)
}

/// Download Debian package `name` (at `version` when known) into the cache's `debs/` and
/// unpack it into `root`.
pub(super) fn fetch_deb(name: &str, version: Option<&str>, root: &Path) -> Result<(), OracleError> {
    let apt_get = tool("apt-get", "apt")?;
    let dpkg_deb = tool("dpkg-deb", "dpkg")?;
    let debs = cache_dir().join("debs");
    std::fs::create_dir_all(&debs).map_err(|e| unavailable(format!("{}: {e}", debs.display())))?;
    let spec = version.map_or_else(|| name.to_string(), |v| format!("{name}={v}"));
    eprintln!("anonmm: fetching {spec} (apt-get download) into {}", debs.display());
    run_tool(
        Command::new(apt_get).arg("download").arg(&spec).current_dir(&debs),
        &format!("apt-get download {spec}"),
    )?;
    let deb = std::fs::read_dir(&debs)
        .map_err(|e| unavailable(format!("{}: {e}", debs.display())))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name().is_some_and(|f| {
                let f = f.to_string_lossy();
                f.starts_with(&format!("{name}_")) && version.is_none_or(|v| f.contains(&format!("_{v}_")))
            })
        })
        .ok_or_else(|| unavailable(format!("apt-get download {spec} left no .deb in {}", debs.display())))?;
    run_tool(
        Command::new(dpkg_deb).arg("-x").arg(&deb).arg(root),
        &format!("dpkg-deb -x {}", deb.display()),
    )?;
    Ok(())
}

fn fetch(kernel: Kernel, name: &str, dir: &Path) -> Result<KernelPackage, OracleError> {
    let tmp = dir.join(format!("{name}.partial"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| unavailable(format!("{}: {e}", tmp.display())))?;
    fetch_deb(name, None, &tmp)?;
    let root = dir.join(name);
    let _ = std::fs::remove_dir_all(&root);
    std::fs::rename(&tmp, &root).map_err(|e| unavailable(format!("{}: {e}", root.display())))?;
    KernelPackage::open(kernel, name, root)
}

/// A module's `depends=` (from its `.modinfo` section, which is NUL-separated `key=value`).
fn module_depends(ko: &[u8]) -> Vec<String> {
    ko.split(|&b| b == 0)
        .filter_map(|f| f.strip_prefix(b"depends="))
        .flat_map(|d| d.split(|&b| b == b','))
        .filter(|d| !d.is_empty())
        .map(|d| String::from_utf8_lossy(d).replace('-', "_"))
        .collect()
}

fn module_name(file: &str) -> Option<String> {
    let stem = file.strip_suffix(".ko.xz").or_else(|| file.strip_suffix(".ko"))?;
    Some(stem.replace('-', "_"))
}

/// The modules to load, in dependency order, as (name, decompressed image).
fn resolve_modules(pkg: &KernelPackage, wanted: &[&str]) -> Result<Vec<(String, Vec<u8>)>, OracleError> {
    let dir = pkg.modules();
    let builtin: Vec<String> = std::fs::read_to_string(dir.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| module_name(l.rsplit('/').next()?))
        .collect();
    let mut files = std::collections::HashMap::new();
    let mut stack = vec![dir.join("kernel")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| unavailable(format!("{}: {e}", d.display())))?.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(n) = module_name(&e.file_name().to_string_lossy()) {
                files.insert(n, p);
            }
        }
    }
    let xz = tool("xz", "xz-utils")?;
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let mut visiting = Vec::new();
    fn visit(
        name: &str,
        files: &std::collections::HashMap<String, PathBuf>,
        builtin: &[String],
        xz: &Path,
        out: &mut Vec<(String, Vec<u8>)>,
        visiting: &mut Vec<String>,
        pkg: &KernelPackage,
    ) -> Result<(), OracleError> {
        if out.iter().any(|(n, _)| n == name)
            || builtin.iter().any(|b| b == name)
            || visiting.iter().any(|v| v == name)
        {
            return Ok(());
        }
        let path = files
            .get(name)
            .ok_or_else(|| unavailable(format!("{}: the kernel has no module `{name}`", pkg.name)))?;
        let image = if path.extension().is_some_and(|e| e == "xz") {
            run_tool(Command::new(xz).arg("-dc").arg(path), &format!("xz -dc {}", path.display()))?
        } else {
            std::fs::read(path).map_err(|e| unavailable(format!("{}: {e}", path.display())))?
        };
        visiting.push(name.to_string());
        for dep in module_depends(&image) {
            visit(&dep, files, builtin, xz, out, visiting, pkg)?;
        }
        visiting.pop();
        out.push((name.to_string(), image));
        Ok(())
    }
    for w in wanted {
        visit(&w.replace('-', "_"), &files, &builtin, &xz, &mut out, &mut visiting, pkg)?;
    }
    Ok(out)
}

/// Is the ELF file at `path` statically linked (no `PT_INTERP`)?
fn is_static_elf(path: &Path) -> bool {
    let Ok(b) = std::fs::read(path) else { return false };
    let u16_at = |o: usize| b.get(o..o + 2).map(|s| u16::from_le_bytes([s[0], s[1]]) as usize);
    let u32_at = |o: usize| b.get(o..o + 4).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]));
    let u64_at = |o: usize| b.get(o..o + 8).and_then(|s| s.try_into().ok()).map(u64::from_le_bytes);
    if b.get(..5) != Some(b"\x7fELF\x02") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return false;
    };
    (0..phnum).all(|i| u32_at(phoff as usize + i * phentsize) != Some(3))
}

/// A static busybox (Debian's `busybox-static` installs it as `/bin/busybox`).
fn static_busybox() -> Result<PathBuf, OracleError> {
    let b = tool("busybox", "busybox-static")?;
    if !is_static_elf(&b) {
        return Err(unavailable(format!(
            "{} is dynamically linked: the VM oracle needs Debian's `busybox-static` package (apt-get install -y busybox-static)",
            b.display()
        )));
    }
    Ok(b)
}

/// Quote for `sh` inside single quotes.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The guest's `/init`.
fn init_script(modules: &[String], exe: &Path, share: &Path, settings: &[(String, String)]) -> String {
    let mut s = String::from("#!/bin/busybox sh\n# anonmm VM oracle guest init\nB=/bin/busybox\n");
    s.push_str("fail() { echo \"anonmm-init: $*\"; $B poweroff -f; }\n");
    s.push_str("$B mount -t proc proc /proc; $B mount -t sysfs sys /sys; $B mount -t devtmpfs dev /dev\n");
    for m in modules {
        s.push_str(&format!("$B insmod /mod/{m}.ko || fail 'insmod {m}'\n"));
    }
    let share = sh_quote(&share.display().to_string());
    s.push_str("O=trans=virtio,version=9p2000.L,msize=512000\n");
    s.push_str("$B mount -t 9p -o $O,ro host /host || fail 'mount the host root over 9p'\n");
    s.push_str(&format!("$B mount -t 9p -o $O share /host{share} || fail 'mount the share over 9p'\n"));
    s.push_str("$B mount -t ext4 /dev/vda /host/tmp || fail 'mount the scratch disk'\n");
    s.push_str("$B mkdir -p /host/tmp/.var-tmp && $B mount --bind /host/tmp/.var-tmp /host/var/tmp || fail 'bind /var/tmp'\n");
    s.push_str("$B chmod 1777 /host/tmp /host/tmp/.var-tmp\n");
    s.push_str("$B mount -t proc proc /host/proc; $B mount -t sysfs sys /host/sys; $B mount -t devtmpfs dev /host/dev\n");
    s.push_str("$B mount -t tmpfs tmpfs /host/run; $B mkdir -p /host/dev/shm; $B mount -t tmpfs tmpfs /host/dev/shm\n");
    // Read-ahead as on the host's disk (the model's `readahead_pages`).
    s.push_str("echo 8192 > /sys/block/vda/queue/read_ahead_kb\n");
    for (path, value) in settings {
        s.push_str(&format!("echo {} > {} 2>/dev/null\n", sh_quote(value), sh_quote(path)));
    }
    s.push_str(&format!(
        "$B chroot /host {} oracle vm-guest --share {share} --ctl /dev/ttyS1\n",
        sh_quote(&exe.display().to_string())
    ));
    s.push_str("echo \"anonmm-init: guest exited with $?\"\n$B sync\n$B poweroff -f\n");
    s
}

/// The host's value of each of [`SETTINGS`] (the selected word of `[a] b c` lists).
fn host_settings() -> Vec<(String, String)> {
    SETTINGS
        .iter()
        .filter_map(|p| {
            let v = std::fs::read_to_string(p).ok()?;
            Some((p.to_string(), selected(&v)))
        })
        .collect()
}

/// `always [madvise] never` → `madvise`; `65530\n` → `65530`.
pub(crate) fn selected(v: &str) -> String {
    v.split_whitespace()
        .find_map(|w| w.strip_prefix('[').and_then(|w| w.strip_suffix(']')))
        .map_or_else(|| v.trim().to_string(), str::to_string)
}

/// The guest's settings as it reports them (`share/settings.json`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct GuestSettings {
    /// `uname -r`.
    pub release: String,
    /// `MemTotal` in kB.
    pub mem_total_kb: u64,
    /// The settings of [`SETTINGS`] the guest has, as read back.
    pub settings: Vec<(String, String)>,
    /// Protection keys enabled (`ospke` in `/proc/cpuinfo`).
    pub pku: bool,
    /// New VMAs carry `VM_SOFTDIRTY` (`sd` in smaps' VmFlags: CONFIG_MEM_SOFT_DIRTY).
    pub soft_dirty: bool,
    /// `CONFIG_ANON_VMA_NAME`: PR_SET_VMA_ANON_NAME is accepted.
    pub anon_vma_name: bool,
}

impl GuestSettings {
    fn get(&self, path: &str) -> Option<&str> {
        self.settings.iter().find(|(p, _)| p == path).map(|(_, v)| v.as_str())
    }

    /// The model's machine set like this guest.
    pub fn config(&self, kernel: Kernel) -> Config {
        let mut c = Config { kernel, ..Config::default() };
        c.thp = match self.get("/sys/kernel/mm/transparent_hugepage/enabled") {
            Some("always") => ThpMode::Always,
            Some("never") => ThpMode::Never,
            _ => ThpMode::Madvise,
        };
        if let Some(z) = self.get("/sys/kernel/mm/transparent_hugepage/use_zero_page") {
            c.thp_use_zero_page = z == "1";
        }
        if let Some(n) = self.get("/proc/sys/vm/max_map_count").and_then(|v| v.parse().ok()) {
            c.max_map_count = n;
        }
        if self.mem_total_kb > 0 {
            c.ram_pages = self.mem_total_kb / 4;
        }
        c.pku = self.pku;
        c.soft_dirty = self.soft_dirty;
        c.anon_vma_name = self.anon_vma_name;
        c
    }

    /// One line per setting, for the output.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "guest: Linux {}, MemTotal {} kB, pku {}, soft-dirty {}, anon_vma_name {}\n",
            self.release, self.mem_total_kb, self.pku, self.soft_dirty, self.anon_vma_name
        );
        for (p, v) in &self.settings {
            s.push_str(&format!(
                "  {} = {v}\n",
                p.rsplit_once("/mm/").or(p.rsplit_once("/sys/")).map_or(p.as_str(), |x| x.1)
            ));
        }
        s
    }
}

// ---- the wire format of results ------------------------------------------------------------

/// An [`Expect`] on the wire.
#[derive(Serialize, Deserialize)]
enum WireExpect {
    Value(u64),
    Err(String),
    Signal(String),
    Unknown,
}

#[derive(Serialize, Deserialize)]
struct WireSmaps {
    header: String,
    start: u64,
    end: u64,
    kb: Vec<u64>,
    thp_eligible: u64,
    protection_key: Option<u64>,
    vm_flags: Vec<String>,
    anonymous_vma: bool,
}

#[derive(Serialize, Deserialize)]
struct WireProc {
    pid: u32,
    maps: Vec<String>,
    /// (address, page number or -1 swap / -2 migration, exclusive, tag).
    pages: Vec<(u64, i64, bool, u64)>,
    smaps: Vec<WireSmaps>,
    /// The internal state (`--internal`: the guest has the inspection module loaded).
    #[serde(default)]
    internal: Option<crate::internal::InternalView>,
}

#[derive(Serialize, Deserialize)]
struct WireStep {
    got: WireExpect,
    line: usize,
    pid: u32,
    call: String,
    result: String,
    procs: Vec<WireProc>,
}

/// An [`OracleError`] on the wire (the kind and its fields).
#[derive(Serialize, Deserialize)]
enum WireError {
    Unavailable(String),
    Refused(usize, String),
    BadInput(usize, String),
    WorkerDied(usize, String),
    System(String),
}

/// What the guest answers for one script.
#[derive(Serialize, Deserialize)]
pub(crate) struct WireResult {
    steps: Vec<WireStep>,
    stopped: Option<WireError>,
    failed: Option<WireError>,
}

impl From<&OracleError> for WireError {
    fn from(e: &OracleError) -> Self {
        match e {
            OracleError::Unavailable(s) => WireError::Unavailable(s.clone()),
            OracleError::Refused { line, reason } => WireError::Refused(*line, reason.clone()),
            OracleError::BadInput { line, reason } => WireError::BadInput(*line, reason.clone()),
            OracleError::WorkerDied { line, reason } => WireError::WorkerDied(*line, reason.clone()),
            OracleError::System(s) => WireError::System(s.clone()),
        }
    }
}

impl WireError {
    fn into_error(self, line_of: &dyn Fn(usize) -> usize) -> OracleError {
        match self {
            WireError::Unavailable(s) => OracleError::Unavailable(s),
            WireError::Refused(l, reason) => OracleError::Refused { line: line_of(l), reason },
            WireError::BadInput(l, reason) => OracleError::BadInput { line: line_of(l), reason },
            WireError::WorkerDied(l, reason) => OracleError::WorkerDied { line: line_of(l), reason },
            WireError::System(s) => OracleError::System(s),
        }
    }
}

impl WireResult {
    /// Encode what `run_native_prefix` returned.
    pub(crate) fn new(r: Result<(Vec<NativeStep>, Option<OracleError>), OracleError>) -> WireResult {
        let (steps, stopped, failed) = match r {
            Ok((s, stop)) => (s, stop.as_ref().map(WireError::from), None),
            Err(e) => (Vec::new(), None, Some(WireError::from(&e))),
        };
        let steps = steps
            .into_iter()
            .map(|s| WireStep {
                got: match s.got {
                    Expect::Value(v) => WireExpect::Value(v),
                    Expect::Err(e) => WireExpect::Err(e.name().to_string()),
                    Expect::Signal(Signal::SIGSEGV) => WireExpect::Signal("SIGSEGV".into()),
                    Expect::Signal(Signal::SIGBUS) => WireExpect::Signal("SIGBUS".into()),
                    Expect::Unknown => WireExpect::Unknown,
                },
                line: s.view.line,
                pid: s.view.pid.0,
                call: s.view.call,
                result: s.view.result,
                procs: s
                    .view
                    .procs
                    .into_iter()
                    .map(|(pid, p)| WireProc {
                        pid: pid.0,
                        maps: p.maps,
                        pages: p
                            .pages
                            .iter()
                            .map(|v| {
                                let n = match v.page {
                                    PageName::Page(n) => n as i64,
                                    PageName::Swap => -1,
                                    PageName::Migration => -2,
                                    PageName::Guard => -3,
                                };
                                (v.addr, n, v.exclusive, v.tag)
                            })
                            .collect(),
                        smaps: p
                            .smaps
                            .into_iter()
                            .map(|s| WireSmaps {
                                header: s.header,
                                start: s.start,
                                end: s.end,
                                kb: s.kb.to_vec(),
                                thp_eligible: s.thp_eligible,
                                protection_key: s.protection_key,
                                vm_flags: s.vm_flags,
                                anonymous_vma: s.anonymous_vma,
                            })
                            .collect(),
                        internal: p.internal,
                    })
                    .collect(),
            })
            .collect();
        WireResult { steps, stopped, failed }
    }

    /// Decode, giving each step the line of the host's script (`lines[i]` for step `i`;
    /// the guest parsed a rewritten copy whose lines differ).
    fn decode(
        self,
        script: &Script,
        sent_lines: &[usize],
    ) -> Result<(Vec<NativeStep>, Option<OracleError>), OracleError> {
        let line_of = |l: usize| {
            sent_lines.iter().position(|&s| s == l).and_then(|i| script.steps.get(i)).map_or(l, |s| s.line)
        };
        if let Some(e) = self.failed {
            return Err(e.into_error(&line_of));
        }
        let bad = |what: String| OracleError::System(format!("the guest's answer: {what}"));
        let mut steps = Vec::with_capacity(self.steps.len());
        for (i, w) in self.steps.into_iter().enumerate() {
            let got = match w.got {
                WireExpect::Value(v) => Expect::Value(v),
                WireExpect::Err(n) => {
                    Expect::Err(Errno::from_name(&n).ok_or_else(|| bad(format!("errno {n}")))?)
                }
                WireExpect::Signal(s) => Expect::Signal(match s.as_str() {
                    "SIGSEGV" => Signal::SIGSEGV,
                    "SIGBUS" => Signal::SIGBUS,
                    _ => return Err(bad(format!("signal {s}"))),
                }),
                WireExpect::Unknown => Expect::Unknown,
            };
            let mut procs = std::collections::BTreeMap::new();
            for p in w.procs {
                let pages = p
                    .pages
                    .into_iter()
                    .map(|(addr, n, exclusive, tag)| PageView {
                        addr,
                        page: match n {
                            -1 => PageName::Swap,
                            -2 => PageName::Migration,
                            -3 => PageName::Guard,
                            n => PageName::Page(n as u64),
                        },
                        exclusive,
                        tag,
                    })
                    .collect();
                let mut smaps = Vec::with_capacity(p.smaps.len());
                for s in p.smaps {
                    smaps.push(Smaps {
                        header: s.header,
                        start: s.start,
                        end: s.end,
                        kb: s.kb.try_into().map_err(|_| bad("smaps fields".into()))?,
                        thp_eligible: s.thp_eligible,
                        protection_key: s.protection_key,
                        vm_flags: s.vm_flags,
                        anonymous_vma: s.anonymous_vma,
                    });
                }
                procs.insert(Pid(p.pid), ProcView { maps: p.maps, pages, smaps, internal: p.internal });
            }
            let line = script.steps.get(i).map_or(w.line, |s| s.line);
            let view = StepView { line, pid: Pid(w.pid), call: w.call, result: w.result, procs };
            steps.push(NativeStep { got, view });
        }
        Ok((steps, self.stopped.map(|e| e.into_error(&line_of))))
    }
}

// ---- the host's side of a running guest ----------------------------------------------------

/// The script as the guest parses it, and the line each step gets there. Each step keeps
/// its own line when the lines increase (a touch's tag is made from its line), with comment
/// lines between; otherwise the steps are numbered in order.
fn guest_text(script: &Script) -> (String, Vec<usize>) {
    use std::fmt::Write as _;
    let keep = script.steps.first().is_some_and(|s| s.line >= 1)
        && script.steps.windows(2).all(|w| w[0].line < w[1].line);
    let mut text = String::new();
    let mut lines = Vec::with_capacity(script.steps.len());
    let mut at = 1;
    for (i, s) in script.steps.iter().enumerate() {
        let want = if keep { s.line } else { i + 1 };
        while at < want {
            text.push_str("#\n");
            at += 1;
        }
        let _ = write!(text, "{} {}", s.pid, crate::r#gen::render(&s.call));
        if let (true, Some(Expect::Value(v))) = (s.call.makes_task(), s.expect) {
            let _ = write!(text, " = {v}");
        }
        text.push('\n');
        lines.push(at);
        at += 1;
    }
    (text, lines)
}

/// A booted guest running one kernel, serving scripts until dropped.
pub struct VmSession {
    /// The kernel package it runs.
    pub package: KernelPackage,
    /// What the guest reported at boot.
    pub settings: GuestSettings,
    /// How long the boot took.
    pub boot_time: Duration,
    /// The `anonmm_inspect` module is loaded: every step reads the internal state.
    pub internal: bool,
    /// How qemu runs the guest.
    pub accel: Accel,
    /// Why it is not KVM, when it is not.
    pub accel_note: String,
    qemu: Child,
    ctl: BufReader<UnixStream>,
    dir: PathBuf,
    share: PathBuf,
    next: u64,
    /// Leave the run directory when dropped (a failed first boot: the next one reuses it).
    keep_dir: bool,
}

fn io(what: &str, e: std::io::Error) -> OracleError {
    OracleError::System(format!("VM oracle: {what}: {e}"))
}

impl VmSession {
    /// Fetch (or find in the cache) the kernel package, build the initramfs and boot it.
    pub fn boot(kernel: Kernel) -> Result<VmSession, OracleError> {
        Self::boot_with(kernel, Vec::new())
    }

    /// [`VmSession::boot`], with modules of our own (name, image) loaded after the package's.
    pub fn boot_with(kernel: Kernel, extra: Vec<(String, Vec<u8>)>) -> Result<VmSession, OracleError> {
        if !cfg!(target_arch = "x86_64") {
            return Err(unavailable("the VM oracle needs an x86_64 host"));
        }
        let qemu = tool("qemu-system-x86_64", "qemu-system-x86")?;
        let busybox = static_busybox()?;
        let mkfs = tool("mkfs.ext4", "e2fsprogs")?;
        let exe = std::env::current_exe().map_err(|e| io("the anonmm binary's path", e))?;
        let package = kernel_package(kernel)?;
        let mut modules = resolve_modules(&package, &Needs::default().modules)?;
        let internal = extra.iter().any(|(n, _)| n == "anonmm_inspect");
        modules.extend(extra);

        let dir = cache_dir().join("vm").join(format!("run-{}-{}", std::process::id(), kernel));
        let _ = std::fs::remove_dir_all(&dir);
        let share = dir.join("share");
        let staging = dir.join("initramfs");
        for d in [&share, &staging.join("bin"), &staging.join("mod")] {
            std::fs::create_dir_all(d).map_err(|e| io(&d.display().to_string(), e))?;
        }
        for d in ["dev", "proc", "sys", "host"] {
            std::fs::create_dir_all(staging.join(d)).map_err(|e| io(d, e))?;
        }
        std::fs::copy(&busybox, staging.join("bin/busybox")).map_err(|e| io("copying busybox", e))?;
        for (name, image) in &modules {
            std::fs::write(staging.join("mod").join(format!("{name}.ko")), image).map_err(|e| io(name, e))?;
        }
        // The guest runs a copy: a rebuild of the binary during a long run must not change
        // what the guest executes.
        let guest_exe = dir.join("anonmm");
        std::fs::copy(&exe, &guest_exe).map_err(|e| io("copying the anonmm binary", e))?;
        let exe = guest_exe;
        let names: Vec<String> = modules.iter().map(|(n, _)| n.clone()).collect();
        let init = init_script(&names, &exe, &share, &host_settings());
        let init_path = staging.join("init");
        std::fs::write(&init_path, init).map_err(|e| io("init", e))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&init_path, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| io("init", e))?;
        let initrd = dir.join("initrd.cpio");
        let mut list = String::new();
        let mut stack = vec![PathBuf::from(".")];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(staging.join(&d)).map_err(|e| io("initramfs", e))?.flatten() {
                let rel = d.join(e.file_name());
                list.push_str(&format!("{}\n", rel.display()));
                if e.path().is_dir() {
                    stack.push(rel);
                }
            }
        }
        let out = std::fs::File::create(&initrd).map_err(|e| io("initrd", e))?;
        let mut cpio = Command::new(&busybox)
            .args(["cpio", "-o", "-H", "newc"])
            .current_dir(&staging)
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| io("busybox cpio", e))?;
        if let Some(mut i) = cpio.stdin.take() {
            i.write_all(list.as_bytes()).map_err(|e| io("busybox cpio", e))?;
        }
        let st = cpio.wait().map_err(|e| io("busybox cpio", e))?;
        if !st.success() {
            return Err(unavailable(format!("busybox cpio failed ({st})")));
        }
        let (first, why) = first_accel();
        let mut kvm_failed = None;
        if first == Accel::Kvm {
            match Self::launch(&package, &qemu, &mkfs, &initrd, &dir, &share, internal, kernel, Accel::Kvm) {
                Ok(s) => return Ok(s),
                // Detected, not guessed: the guest did not come up under KVM (qemu stopped with
                // a KVM error, or no `ready` in KVM_BOOT_TIMEOUT); boot it again under TCG.
                Err(e) => {
                    let first_line = e.to_string().lines().next().unwrap_or_default().to_string();
                    eprintln!("anonmm: the KVM guest did not boot ({first_line}); booting under TCG");
                    kvm_failed = Some(first_line);
                }
            }
        }
        let mut session =
            Self::launch(&package, &qemu, &mkfs, &initrd, &dir, &share, internal, kernel, Accel::Tcg)
                .inspect_err(|_| {
                    let _ = std::fs::remove_dir_all(&dir);
                })?;
        session.accel_note = match kvm_failed {
            Some(e) => format!("KVM tried and failed: {e}"),
            None => why,
        };
        Ok(session)
    }

    /// Start qemu with `accel` on the prepared run directory and wait for the guest's `ready`.
    #[allow(clippy::too_many_arguments)]
    fn launch(
        package: &KernelPackage,
        qemu: &Path,
        mkfs: &Path,
        initrd: &Path,
        dir: &Path,
        share: &Path,
        internal: bool,
        kernel: Kernel,
        accel: Accel,
    ) -> Result<VmSession, OracleError> {
        // A fresh scratch disk and settings (a failed first boot may have left them).
        let _ = std::fs::remove_file(share.join("settings.json"));
        let disk = dir.join("disk.img");
        let _ = std::fs::remove_file(&disk);
        std::fs::File::create(&disk)
            .and_then(|f| f.set_len(DISK_BYTES))
            .map_err(|e| io(&disk.display().to_string(), e))?;
        run_tool(Command::new(mkfs).args(["-q", "-F"]).arg(&disk), "mkfs.ext4")?;

        let sock = dir.join("ctl.sock");
        let _ = std::fs::remove_file(&sock);
        let console = dir.join("console.log");
        let t0 = Instant::now();
        let mut cmd = Command::new(qemu);
        // SAFETY: prctl in the child before exec; it touches no memory of the parent.
        unsafe {
            use std::os::unix::process::CommandExt;
            // The guest dies with this process, whatever ends it.
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .args(accel.qemu_args())
            .args(["-smp", "1", "-m"])
            .arg(GUEST_MEM_MIB.to_string())
            .args(["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"])
            .arg("-kernel")
            .arg(package.vmlinuz())
            .arg("-initrd")
            .arg(initrd)
            // no_timer_check: under TCG on a loaded host 6.1's IO-APIC timer check can miss
            // its ticks and panic at boot ("IO-APIC + timer doesn't work!").
            .args(["-append", "console=ttyS0 quiet panic=-1 oops=panic no_timer_check"])
            .arg("-virtfs")
            .arg("local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap")
            .arg("-virtfs")
            .arg(format!("local,path={},mount_tag=share,security_model=none", share.display()))
            .arg("-drive")
            .arg(format!("file={},if=virtio,format=raw", disk.display()))
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-chardev")
            .arg(format!("socket,id=ctl,path={},server=on,wait=off", sock.display()))
            .arg("-serial")
            .arg("chardev:ctl")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("qemu.err")).map_err(|e| io("qemu.err", e))?)
            .spawn()
            .map_err(|e| io("starting qemu-system-x86_64", e))?;
        let mut session = VmSession {
            package: package.clone(),
            settings: GuestSettings::default(),
            boot_time: Duration::ZERO,
            internal,
            accel,
            accel_note: String::new(),
            qemu: child,
            // Replaced below once the socket is there.
            ctl: BufReader::new(UnixStream::pair().map_err(|e| io("socketpair", e))?.0),
            dir: dir.to_path_buf(),
            share: share.to_path_buf(),
            next: 0,
            // The run directory is the caller's until the guest is up.
            keep_dir: true,
        };
        let stream = loop {
            match UnixStream::connect(&sock) {
                Ok(s) => break s,
                Err(_) if t0.elapsed() < Duration::from_secs(30) => {
                    if let Ok(Some(st)) = session.qemu.try_wait() {
                        return Err(session.failed(&format!("qemu exited at start ({st})")));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(session.failed(&format!("connecting to the guest's serial port: {e}"))),
            }
        };
        session.ctl = BufReader::new(stream);
        let timeout = if accel == Accel::Kvm { KVM_BOOT_TIMEOUT } else { BOOT_TIMEOUT };
        let line = session.read_line(timeout, "booting")?;
        if line != "ready" {
            return Err(session.failed(&format!("the guest said `{line}` instead of `ready`")));
        }
        let settings = std::fs::read_to_string(session.share.join("settings.json"))
            .map_err(|e| io("the guest's settings.json", e))?;
        session.settings = serde_json::from_str(&settings)
            .map_err(|e| OracleError::System(format!("the guest's settings: {e}")))?;
        if Kernel::from_release(&session.settings.release) != Some(kernel) {
            return Err(session.failed(&format!("the guest runs {}, not {kernel}", session.settings.release)));
        }
        session.boot_time = t0.elapsed();
        session.keep_dir = false;
        Ok(session)
    }

    /// The model's machine set like the guest.
    pub fn config(&self) -> Config {
        self.settings.config(self.package.kernel)
    }

    /// An error with the end of the guest's console.
    fn failed(&mut self, what: &str) -> OracleError {
        let console = std::fs::read_to_string(self.dir.join("console.log")).unwrap_or_default();
        let qerr = std::fs::read_to_string(self.dir.join("qemu.err")).unwrap_or_default();
        let tail: Vec<&str> = console.lines().rev().take(25).collect();
        let mut msg = format!("VM oracle ({}): {what}", self.package.name);
        if !qerr.trim().is_empty() {
            msg.push_str(&format!("\nqemu: {}", qerr.trim()));
        }
        if !tail.is_empty() {
            msg.push_str("\nguest console (last lines):\n");
            for l in tail.iter().rev() {
                msg.push_str(&format!("  {l}\n"));
            }
        }
        OracleError::System(msg)
    }

    fn read_line(&mut self, timeout: Duration, what: &str) -> Result<String, OracleError> {
        let t0 = Instant::now();
        let mut buf = Vec::new();
        loop {
            let left = timeout.saturating_sub(t0.elapsed());
            if left.is_zero() {
                return Err(self.failed(&format!("{what}: no answer in {}s", timeout.as_secs())));
            }
            let _ = self.ctl.get_ref().set_read_timeout(Some(left.min(Duration::from_secs(1))));
            match self.ctl.read_until(b'\n', &mut buf) {
                Ok(0) => return Err(self.failed(&format!("{what}: the guest closed its serial port"))),
                Ok(_) if buf.ends_with(b"\n") => {
                    let s = String::from_utf8_lossy(&buf).trim().to_string();
                    // Stray bytes before the guest opened its port are not a line.
                    if s.is_empty() {
                        buf.clear();
                        continue;
                    }
                    return Ok(s);
                }
                Ok(_) => {}
                Err(e)
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    if let Ok(Some(st)) = self.qemu.try_wait() {
                        return Err(self.failed(&format!("{what}: qemu exited ({st})")));
                    }
                    // On a KVM failure qemu stops the guest and stays: read what it said.
                    if self.accel == Accel::Kvm
                        && std::fs::read_to_string(self.dir.join("qemu.err"))
                            .is_ok_and(|e| e.contains("KVM internal error"))
                    {
                        return Err(self.failed(&format!("{what}: KVM internal error")));
                    }
                }
                Err(e) => return Err(self.failed(&format!("{what}: {e}"))),
            }
        }
    }

    /// Run one script in the guest, as [`super::run_native_prefix`] does natively.
    pub(crate) fn run_prefix(
        &mut self,
        script: &Script,
        smaps: bool,
    ) -> Result<(Vec<NativeStep>, Option<OracleError>), OracleError> {
        let pending = self.submit(script, smaps)?;
        self.collect(pending, script)
    }

    /// Send one script to the guest without waiting for its answer ([`VmSession::collect`]).
    fn submit(&mut self, script: &Script, smaps: bool) -> Result<Pending, OracleError> {
        self.next += 1;
        let id = self.next;
        let (text, sent_lines) = guest_text(script);
        let req = self.share.join(format!("{id}.strace"));
        std::fs::write(&req, &text).map_err(|e| io(&req.display().to_string(), e))?;
        writeln!(self.ctl.get_mut(), "run {id} {}", u8::from(smaps)).map_err(|e| io("the serial port", e))?;
        Ok(Pending { id, sent_lines })
    }

    /// Wait for the answer to the script [`VmSession::submit`] sent.
    fn collect(
        &mut self,
        pending: Pending,
        script: &Script,
    ) -> Result<(Vec<NativeStep>, Option<OracleError>), OracleError> {
        let Pending { id, sent_lines } = pending;
        let line = self.read_line(RUN_TIMEOUT, &format!("running {}", script.path))?;
        if line != format!("done {id}") {
            return Err(self.failed(&format!("the guest said `{line}` instead of `done {id}`")));
        }
        let req = self.share.join(format!("{id}.strace"));
        let resp = self.share.join(format!("{id}.json"));
        let json = std::fs::read(&resp).map_err(|e| io(&resp.display().to_string(), e))?;
        let _ = std::fs::remove_file(&req);
        let _ = std::fs::remove_file(&resp);
        let wire: WireResult = serde_json::from_slice(&json)
            .map_err(|e| OracleError::System(format!("the guest's answer: {e}")))?;
        wire.decode(script, &sent_lines)
    }
}

/// What the kernel did with one script: the steps it ran, and why it stopped early if it did.
type NativeRun = (Vec<NativeStep>, Option<OracleError>);

/// A script the guest is running: its number and the lines the guest gave its steps.
struct Pending {
    id: u64,
    sent_lines: Vec<usize>,
}

impl Drop for VmSession {
    fn drop(&mut self) {
        let _ = writeln!(self.ctl.get_mut(), "quit");
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = self.qemu.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Ok(None) = self.qemu.try_wait() {
            let _ = self.qemu.kill();
            let _ = self.qemu.wait();
        }
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Where the oracle runs scripts: natively on the host's kernel, or in a VM.
pub enum Target {
    /// The running kernel (6.18 on our machines).
    Native,
    /// A booted guest.
    Vm(Box<VmSession>),
}

impl Target {
    /// The target for `kernel`: native when the host runs it, else a booted VM.
    pub fn for_kernel(kernel: Kernel) -> Result<Target, OracleError> {
        let host = host_release();
        if Kernel::from_release(&host) == Some(kernel) {
            return Ok(Target::Native);
        }
        if kernel == Kernel::V6_18 {
            return Err(unavailable(format!(
                "--kernel 6.18 runs on the host's kernel, and this host runs {host}"
            )));
        }
        let s = VmSession::boot(kernel)?;
        Ok(Target::Vm(Box::new(s)))
    }

    /// Run one script.
    pub(crate) fn run_prefix(
        &mut self,
        script: &Script,
        smaps: bool,
    ) -> Result<(Vec<NativeStep>, Option<OracleError>), OracleError> {
        match self {
            Target::Native => super::run_native_prefix(script, smaps),
            Target::Vm(s) => s.run_prefix(script, smaps),
        }
    }

    /// Run one script on the kernel and `alongside` here. In a VM the two overlap: the guest
    /// runs the script while this process runs `alongside` (the model's side of a comparison);
    /// natively `alongside` runs first.
    pub(crate) fn run_prefix_alongside<T>(
        &mut self,
        script: &Script,
        smaps: bool,
        alongside: impl FnOnce() -> T,
    ) -> (Result<NativeRun, OracleError>, T) {
        match self {
            Target::Native => {
                let t = alongside();
                (super::run_native_prefix(script, smaps), t)
            }
            Target::Vm(s) => match s.submit(script, smaps) {
                Ok(pending) => {
                    let t = alongside();
                    (s.collect(pending, script), t)
                }
                Err(e) => (Err(e), alongside()),
            },
        }
    }

    /// Does every step read the kernel's internal state (`--internal`)?
    pub fn internal(&self) -> bool {
        matches!(self, Target::Vm(s) if s.internal)
    }

    /// The model's machine for this target, running `kernel`.
    pub fn config(&self, kernel: Kernel) -> Config {
        match self {
            Target::Native => Config { kernel, ..Config::default() },
            Target::Vm(s) => s.config(),
        }
    }

    /// Where it runs, and how it is set (printed with results).
    pub fn describe(&self) -> String {
        match self {
            Target::Native => format!("kernel: the host's, Linux {}\n", host_release()),
            Target::Vm(s) => format!(
                "kernel: {} in a VM (qemu {}{}, booted in {:.1}s)\n{}",
                s.package.name,
                s.accel.name(),
                if s.accel_note.is_empty() { String::new() } else { format!("; {}", s.accel_note) },
                s.boot_time.as_secs_f64(),
                s.settings.describe()
            ),
        }
    }
}

/// The host's `uname -r`.
pub fn host_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_names_order_by_their_number() {
        assert_eq!(package_version(Kernel::V6_1, "linux-image-6.1.0-50-amd64-unsigned"), Some(50));
        assert_eq!(package_version(Kernel::V6_1, "linux-image-6.1.0-50-cloud-amd64-unsigned"), None);
        assert_eq!(package_version(Kernel::V6_12, "linux-image-6.12.107+deb12-amd64-unsigned"), Some(107));
        assert_eq!(package_version(Kernel::V6_12, "linux-image-6.12.107+deb12-rt-amd64-unsigned"), None);
    }

    #[test]
    fn modinfo_depends_and_selected_settings() {
        assert_eq!(module_depends(b"\0license=GPL\0depends=9pnet,netfs\0intree=Y\0"), ["9pnet", "netfs"]);
        assert!(module_depends(b"\0depends=\0").is_empty());
        assert_eq!(module_name("crc32c-intel.ko.xz").as_deref(), Some("crc32c_intel"));
        assert_eq!(selected("always [madvise] never\n"), "madvise");
        assert_eq!(selected("65530\n"), "65530");
    }
}
