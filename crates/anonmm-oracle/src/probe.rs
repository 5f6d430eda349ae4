//! Can the oracle run here? And which PFNs are the zero pages?

use std::fs::File;
use std::sync::OnceLock;

use super::pages::{PM_FILE, PM_PFN_MASK, PM_PRESENT, read_pagemap};

/// What the probe learnt about this kernel.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Probe {
    /// PFN of the shared zero page.
    pub zero_pfn: u64,
    /// First PFN of the huge zero folio (512 PFNs), if a THP read fault produced one.
    /// Its pages are reported as ordinary `RawPage::Id`s (distinct per subpage).
    #[allow(dead_code)]
    pub huge_zero_pfn: Option<u64>,
}

static PROBE: OnceLock<Result<Probe, String>> = OnceLock::new();

/// Map `len` bytes of private anonymous memory somewhere (outside the window) and run `f`.
fn with_scratch<T>(len: usize, f: impl FnOnce(u64) -> Result<T, String>) -> Result<T, String> {
    // SAFETY: a fresh private mapping, unmapped below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(format!("probe mmap failed: {}", std::io::Error::last_os_error()));
    }
    let r = f(p as u64);
    // SAFETY: unmaps what we mapped.
    unsafe {
        libc::munmap(p, len);
    }
    r
}

fn entry(pm: &File, addr: u64) -> Result<u64, String> {
    read_pagemap(pm, addr, addr + 4096)
        .map_err(|e| e.to_string())?
        .first()
        .copied()
        .ok_or_else(|| "empty pagemap read".to_string())
}

fn run_probe() -> Result<Probe, String> {
    if !cfg!(target_arch = "x86_64") {
        return Err("the kernel oracle needs x86_64".into());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("the kernel oracle needs root (pagemap PFNs and /proc/PID/mem)".into());
    }
    let pm = File::open("/proc/self/pagemap").map_err(|e| format!("cannot open /proc/self/pagemap: {e}"))?;
    let zero_pfn = with_scratch(8192, |a| {
        // SAFETY: the scratch mapping is readable and writable.
        unsafe {
            std::ptr::read_volatile(a as *const u64);
            std::ptr::write_volatile((a + 4096) as *mut u64, 1);
        }
        let z = entry(&pm, a)?;
        let w = entry(&pm, a + 4096)?;
        if z & PM_PRESENT == 0 || w & PM_PRESENT == 0 {
            return Err("pagemap does not show touched pages as present".into());
        }
        if w & PM_PFN_MASK == 0 || z & PM_PFN_MASK == 0 {
            return Err("pagemap PFNs are unreadable (PFN 0: no CAP_SYS_ADMIN)".into());
        }
        Ok(z & PM_PFN_MASK)
    })?;
    // The huge zero folio: a read fault in a 2 MiB-aligned MADV_HUGEPAGE region.
    let huge_zero_pfn = with_scratch(4 << 20, |a| {
        let h = (a + (2 << 20) - 1) & !((2 << 20) - 1);
        // SAFETY: [h, h + 2 MiB) lies inside the scratch mapping.
        unsafe {
            libc::madvise(h as *mut libc::c_void, 2 << 20, libc::MADV_HUGEPAGE);
            std::ptr::read_volatile(h as *const u64);
        }
        let e = entry(&pm, h)?;
        let pfn = e & PM_PFN_MASK;
        Ok((e & PM_PRESENT != 0 && e & PM_FILE != 0 && pfn != zero_pfn && pfn & 511 == 0).then_some(pfn))
    })
    .unwrap_or(None);
    Ok(Probe { zero_pfn, huge_zero_pfn })
}

pub(crate) fn probe() -> Result<Probe, String> {
    PROBE.get_or_init(run_probe).clone()
}
