//! Reading `/proc/PID/pagemap` (one `pread` per VMA), and the tags of present pages of
//! `PROT_NONE` VMAs through `/proc/PID/mem` (the worker reads the others itself).
//!
//! `/proc/PID/mem` reads with `FOLL_FORCE` and `FOLL_GET` (not `FOLL_PIN`): it reads
//! `PROT_NONE` pages, and on a present page it neither faults nor unshares anything
//! (`process_vm_readv` would pin, which unshares shared anonymous pages, and respects
//! protections). Only present pages are read: on a missing one it would fault.

use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::snapshot::{RawPage, RawPte};

use super::OracleError;

pub(crate) const PM_PRESENT: u64 = 1 << 63;
pub(crate) const PM_SWAP: u64 = 1 << 62;
pub(crate) const PM_FILE: u64 = 1 << 61;
pub(crate) const PM_GUARD_REGION: u64 = 1 << 58;
pub(crate) const PM_MMAP_EXCLUSIVE: u64 = 1 << 56;
pub(crate) const PM_PFN_MASK: u64 = (1 << 55) - 1;

/// Entries for the pages `[start, end)`.
pub(crate) fn read_pagemap(pm: &File, start: u64, end: u64) -> Result<Vec<u64>, OracleError> {
    let n = ((end - start) >> 12) as usize;
    let mut buf = vec![0u8; n * 8];
    let mut done = 0;
    while done < buf.len() {
        let got = pm
            .read_at(&mut buf[done..], (start >> 12) * 8 + done as u64)
            .map_err(|e| OracleError::sys("reading pagemap", e))?;
        if got == 0 {
            return Err(OracleError::System("pagemap ended early".into()));
        }
        done += got;
    }
    Ok(buf.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect())
}

/// Turn pagemap entries of `[start, …)` into PTEs, with tag 0 (the caller reads the tags of
/// `RawPage::Id` pages). Guard markers are swap entries with `PM_GUARD_REGION`.
pub(crate) fn ptes(
    entries: &[u64],
    start: u64,
    zero_pfn: u64,
    out: &mut Vec<RawPte>,
) -> Result<(), OracleError> {
    for (i, &e) in entries.iter().enumerate() {
        let addr = start + ((i as u64) << 12);
        if e & PM_PRESENT != 0 {
            let pfn = e & PM_PFN_MASK;
            if pfn == 0 {
                return Err(OracleError::Unavailable(
                    "pagemap shows PFN 0 for a present page (needs CAP_SYS_ADMIN)".into(),
                ));
            }
            let page = if pfn == zero_pfn { RawPage::Zero } else { RawPage::Id(pfn) };
            out.push(RawPte { addr, page, exclusive: e & PM_MMAP_EXCLUSIVE != 0, tag: 0 });
        } else if e & PM_GUARD_REGION != 0 {
            out.push(RawPte { addr, page: RawPage::Guard, exclusive: false, tag: 0 });
        } else if e & PM_SWAP != 0 {
            // Reading a swapped-out page would swap it in: its tag is reported as 0.
            out.push(RawPte { addr, page: RawPage::Swap, exclusive: false, tag: 0 });
        }
    }
    Ok(())
}

/// The tag of a present page, through `/proc/PID/mem`.
pub(crate) fn read_tag(mem: &File, addr: u64) -> Result<u64, OracleError> {
    let mut b = [0u8; 8];
    mem.read_exact_at(&mut b, addr)
        .map_err(|e| OracleError::sys(&format!("reading the tag at {addr:#x}"), e))?;
    Ok(u64::from_le_bytes(b))
}
