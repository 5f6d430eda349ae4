//! `/proc/pid/smaps` (fs/proc/task_mmu.c: `show_smap`, `smap_gather_stats`,
//! `smaps_pte_range`, `smaps_pte_entry`, `smaps_pmd_entry`, `smaps_account`,
//! `smaps_page_accumulate`, `__show_smap`, `show_smap_vma_flags`).
//!
//! The model computes every field from its page tables and folios, as the walk does on a
//! kernel built like ours (`CONFIG_PAGE_MAPCOUNT`, so PSS uses the precise per-page mapcount;
//! no `CONFIG_MEM_SOFT_DIRTY`, no `CONFIG_READ_ONLY_THP_FOR_FS`, no hugetlb in scripts).
//! `Referenced` depends on the hardware accessed bit and the LRU's `PG_referenced`, which
//! the model only approximates (`PteFlags::ACCESSED`), and `LazyFree` on when a per-CPU
//! batch drains, so the oracle does not compare them; see [`NOT_COMPARED`].

use std::fmt::Write;

use crate::folio::{FolioId, HUGE_ZERO_FOLIO, ZERO_FOLIO};
use crate::fs::InodeKind;
use crate::mm::System;
use crate::mm::{MmId, ThpMode};
use crate::pagetable::{Pmd, Pte, PteFlags, pte_index};
use crate::types::{PAGE_SIZE, PMD_SIZE, Pid, VirtAddr};
use crate::vma::{VmFlags, VmaId};

/// `PSS_SHIFT`: PSS is accumulated in bytes << 12, so that shares of a page add up exactly.
const PSS_SHIFT: u32 = 12;

/// The size fields of one entry, in the order `show_smap` and `__show_smap` print them.
pub const FIELDS: [&str; 22] = [
    "Size",
    "KernelPageSize",
    "MMUPageSize",
    "Rss",
    "Pss",
    "Pss_Dirty",
    "Shared_Clean",
    "Shared_Dirty",
    "Private_Clean",
    "Private_Dirty",
    "Referenced",
    "Anonymous",
    "KSM",
    "LazyFree",
    "AnonHugePages",
    "ShmemPmdMapped",
    "FilePmdMapped",
    "Shared_Hugetlb",
    "Private_Hugetlb",
    "Swap",
    "SwapPss",
    "Locked",
];

/// Fields the oracle does not compare, with the reason:
/// - `Referenced` is the hardware accessed bit (and `PG_referenced`/`PG_young`, set by the
///   LRU and cleared by reclaim scans), which the model does not follow;
/// - `LazyFree`: MADV_FREE queues the folio on a per-CPU batch (`folio_mark_lazyfree` →
///   `lru_lazyfree`), and `PG_swapbacked` is cleared only when the batch drains (31 folios,
///   or an `lru_add_drain` somewhere), so the kernel shows 0 kB for a while; the model
///   clears it at once (reclaim drains first, so MADV_PAGEOUT agrees).
pub const NOT_COMPARED: [&str; 2] = ["Referenced", "LazyFree"];

fn field(name: &str) -> usize {
    FIELDS.iter().position(|f| *f == name).unwrap_or(0)
}

/// One `/proc/pid/smaps` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Smaps {
    /// The maps line (`show_map_vma`), normalised as the maps view is.
    pub header: String,
    /// `vma->vm_start`.
    pub start: u64,
    /// `vma->vm_end`.
    pub end: u64,
    /// [`FIELDS`], in kB.
    pub kb: [u64; 22],
    /// `THPeligible`: `thp_vma_allowable_orders(vma, vm_flags, TVA_SMAPS, THP_ORDERS_ALL)`.
    pub thp_eligible: u64,
    /// `ProtectionKey`, printed only when `arch_pkeys_enabled()`.
    pub protection_key: Option<u64>,
    /// `show_smap_vma_flags`: the two-letter codes, in bit order.
    pub vm_flags: Vec<String>,
    /// Whether the VMA is anonymous (no file): `THPeligible` is compared only there.
    pub anonymous_vma: bool,
}

impl Smaps {
    /// The value in kB of the field `name` (one of [`FIELDS`], e.g. `"Rss"`); an unknown
    /// name reads the first field, `Size`.
    pub fn get(&self, name: &str) -> u64 {
        self.kb[field(name)]
    }

    /// The entry exactly as `show_smap` prints it (one line per field, each ending in `\n`).
    pub fn format(&self) -> String {
        let mut s = String::with_capacity(1024);
        s.push_str(&self.header);
        s.push('\n');
        for (name, v) in FIELDS.iter().zip(self.kb) {
            // SEQ_PUT_DEC pads to 8 after a 16-column label; Private_Hugetlb's label is
            // one column longer and its width 7.
            if *name == "Private_Hugetlb" {
                let _ = writeln!(s, "Private_Hugetlb: {v:>7} kB");
            } else {
                let _ = writeln!(s, "{:<16}{v:>8} kB", format!("{name}:"));
            }
        }
        let _ = writeln!(s, "THPeligible:    {:>8}", self.thp_eligible);
        if let Some(k) = self.protection_key {
            let _ = writeln!(s, "ProtectionKey:  {k:>8}");
        }
        s.push_str("VmFlags: ");
        for f in &self.vm_flags {
            s.push_str(f);
            s.push(' ');
        }
        s.push('\n');
        s
    }

    /// The compared fields (those of [`Smaps::compared`]) that differ from `kernel`'s, one
    /// string each: `AnonHugePages: model 2048 kB, kernel 0 kB`.
    pub fn differences(&self, kernel: &Smaps) -> Vec<String> {
        let mut out = Vec::new();
        for ((name, m), k) in FIELDS.iter().zip(self.kb).zip(kernel.kb) {
            if m != k && !NOT_COMPARED.contains(name) {
                out.push(format!("{name}: model {m} kB, kernel {k} kB"));
            }
        }
        if (self.anonymous_vma || kernel.anonymous_vma) && self.thp_eligible != kernel.thp_eligible {
            out.push(format!("THPeligible: model {}, kernel {}", self.thp_eligible, kernel.thp_eligible));
        }
        if self.protection_key != kernel.protection_key {
            let k = |p: Option<u64>| p.map_or_else(|| "none".to_string(), |p| p.to_string());
            out.push(format!(
                "ProtectionKey: model {}, kernel {}",
                k(self.protection_key),
                k(kernel.protection_key)
            ));
        }
        if self.vm_flags != kernel.vm_flags {
            out.push(format!(
                "VmFlags: model {}, kernel {}",
                self.vm_flags.join(" "),
                kernel.vm_flags.join(" ")
            ));
        }
        out
    }

    /// One line with the fields the oracle compares (all but [`NOT_COMPARED`]; `THPeligible`
    /// only for anonymous VMAs: a file VMA's depends on the file system's `huge_fault`).
    pub fn compared(&self) -> String {
        let mut s = format!("{:x}-{:x}", self.start, self.end);
        for (name, v) in FIELDS.iter().zip(self.kb) {
            if !NOT_COMPARED.contains(name) {
                let _ = write!(s, " {name}={v}");
            }
        }
        if self.anonymous_vma {
            let _ = write!(s, " THPeligible={}", self.thp_eligible);
        }
        if let Some(k) = self.protection_key {
            let _ = write!(s, " ProtectionKey={k}");
        }
        let _ = write!(s, " VmFlags={}", self.vm_flags.join(","));
        s
    }
}

/// Parse the kernel's `/proc/PID/smaps` text. Lines that fit no entry are skipped; a
/// malformed value reads as 0 (the comparison then shows it).
pub fn parse_smaps(text: &str) -> Vec<Smaps> {
    let mut out: Vec<Smaps> = Vec::new();
    for line in text.lines() {
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            if let Some(e) = out.last_mut() {
                e.vm_flags = flags.split_whitespace().map(str::to_string).collect();
            }
            continue;
        }
        if let Some((name, rest)) = line.split_once(':')
            && !name.contains(' ')
            && !name.contains('-')
        {
            let v = rest.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            let Some(e) = out.last_mut() else { continue };
            match name {
                "THPeligible" => e.thp_eligible = v,
                "ProtectionKey" => e.protection_key = Some(v),
                _ => {
                    if let Some(i) = FIELDS.iter().position(|f| *f == name) {
                        e.kb[i] = v;
                    }
                }
            }
            continue;
        }
        // A maps line: `start-end perms offset dev inode [name]`.
        let Some((range, rest)) = line.split_once(' ') else { continue };
        let Some((s, e)) = range.split_once('-') else { continue };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(s, 16), u64::from_str_radix(e, 16)) else { continue };
        // The inode is the fifth column: anonymous VMAs show 0 (and no file name).
        let ino = rest.split_whitespace().nth(3).unwrap_or("0");
        out.push(Smaps {
            header: line.to_string(),
            start,
            end,
            anonymous_vma: ino == "0",
            ..Default::default()
        });
    }
    out
}

/// `struct mem_size_stats`, in bytes (PSS fields shifted by [`PSS_SHIFT`]).
#[derive(Default)]
struct Mss {
    resident: u64,
    shared_clean: u64,
    shared_dirty: u64,
    private_clean: u64,
    private_dirty: u64,
    referenced: u64,
    anonymous: u64,
    lazyfree: u64,
    anonymous_thp: u64,
    shmem_thp: u64,
    file_thp: u64,
    swap: u64,
    pss: u64,
    pss_dirty: u64,
    pss_locked: u64,
    swap_pss: u64,
}

/// The two-letter codes of `show_smap_vma_flags`, by bit (`""`: printed as ProtectionKey).
const MNEMONICS: [(VmFlags, &str); 32] = [
    (VmFlags::READ, "rd"),
    (VmFlags::WRITE, "wr"),
    (VmFlags::EXEC, "ex"),
    (VmFlags::SHARED, "sh"),
    (VmFlags::MAYREAD, "mr"),
    (VmFlags::MAYWRITE, "mw"),
    (VmFlags::MAYEXEC, "me"),
    (VmFlags::MAYSHARE, "ms"),
    (VmFlags::GROWSDOWN, "gd"),
    (VmFlags::UFFD_MISSING, "um"),
    (VmFlags::PFNMAP, "pf"),
    (VmFlags::MAYBE_GUARD, "gu"),
    (VmFlags::UFFD_WP, "uw"),
    (VmFlags::LOCKED, "lo"),
    (VmFlags::IO, "io"),
    (VmFlags::SEQ_READ, "sr"),
    (VmFlags::RAND_READ, "rr"),
    (VmFlags::DONTCOPY, "dc"),
    (VmFlags::DONTEXPAND, "de"),
    (VmFlags::LOCKONFAULT, "lf"),
    (VmFlags::ACCOUNT, "ac"),
    (VmFlags::NORESERVE, "nr"),
    (VmFlags::HUGETLB, "ht"),
    (VmFlags::SYNC, "sf"),
    (VmFlags::ARCH_1, "ar"),
    (VmFlags::WIPEONFORK, "wf"),
    (VmFlags::DONTDUMP, "dd"),
    (VmFlags::SOFTDIRTY, "sd"),
    (VmFlags::MIXEDMAP, "mm"),
    (VmFlags::HUGEPAGE, "hg"),
    (VmFlags::NOHUGEPAGE, "nh"),
    (VmFlags::MERGEABLE, "mg"),
];

/// `show_smap_vma_flags`: `sd` only with `CONFIG_MEM_SOFT_DIRTY`, the pkey bits never
/// (they come out as ProtectionKey), `ui` (`VM_UFFD_MINOR`, bit 41) last.
pub fn vma_flag_mnemonics(flags: VmFlags, soft_dirty: bool) -> Vec<String> {
    let mut out: Vec<String> = MNEMONICS
        .iter()
        .filter(|(f, m)| flags.contains(*f) && (*m != "sd" || soft_dirty))
        .map(|(_, m)| m.to_string())
        .collect();
    if flags.contains(VmFlags::UFFD_MINOR) {
        out.push("ui".to_string());
    }
    out
}

impl System {
    /// `thp_vma_allowable_orders(vma, vm_flags, TVA_SMAPS, THP_ORDERS_ALL)` on our machine:
    /// only the PMD order is enabled (`inherit`), no file system offers `huge_fault` and
    /// `CONFIG_READ_ONLY_THP_FOR_FS` is off, shmem is `never`; so an anonymous VMA is eligible
    /// when THP is enabled for it (`always`, or `madvise` with `VM_HUGEPAGE`), not
    /// `VM_NOHUGEPAGE`, and a PMD-aligned 2 MiB range fits in it (`thp_vma_suitable_order`
    /// at `vm_end - HPAGE_PMD_SIZE`). A missing anon_vma does not matter for smaps.
    fn smaps_thp_eligible(&self, vma: VmaId) -> bool {
        let v = &self.vm.vmas[vma];
        if !v.is_anonymous() || v.special.is_some() || v.flags.contains(VmFlags::NOHUGEPAGE) {
            return false;
        }
        let enabled = match self.cfg.thp {
            ThpMode::Always => true,
            ThpMode::Madvise => v.flags.contains(VmFlags::HUGEPAGE),
            ThpMode::Never => false,
        };
        let Some(addr) = v.end.0.checked_sub(PMD_SIZE) else { return false };
        let haddr = addr & !(PMD_SIZE - 1);
        enabled && haddr >= v.start.0 && haddr + PMD_SIZE <= v.end.0
    }

    /// `show_smap` for one VMA: `smap_gather_stats` (the page walk) and the fields.
    pub fn smaps_vma(&self, mm: MmId, vma: VmaId) -> Smaps {
        let v = &self.vm.vmas[vma];
        let locked = v.flags.contains(VmFlags::LOCKED);
        let mut mss = Mss::default();
        let pt = &self.vm.mms[mm].pt;
        if v.start < v.end {
            let keys =
                crate::pagetable::pmd_index(v.start)..=crate::pagetable::pmd_index(VirtAddr(v.end.0 - 1));
            for (key, pmd) in pt.pmds.range(keys) {
                let base = key << crate::types::PMD_SHIFT;
                match pmd {
                    // smaps_pmd_entry: vm_normal_page_pmd is NULL for the huge zero folio.
                    Pmd::Huge { folio, flags } => {
                        if *folio != HUGE_ZERO_FOLIO {
                            self.mem.smaps_thp(&self.fs, &mut mss, *folio, *flags, locked, true);
                        }
                    }
                    // A PMD migration entry: its folio counts, not present; pmd_dirty and
                    // pmd_young of a swap PMD are not the page's bits, so neither is taken.
                    Pmd::Migration { folio, .. } => {
                        self.mem.smaps_thp(&self.fs, &mut mss, *folio, PteFlags::empty(), locked, false)
                    }
                    Pmd::Table(t) => {
                        let lo = base.max(v.start.0);
                        let hi = (base + PMD_SIZE).min(v.end.0);
                        let mut a = lo;
                        while a < hi {
                            let pte = t.ptes[pte_index(VirtAddr(a))];
                            self.mem.smaps_pte_entry(&self.swap, &mut mss, pte, locked);
                            a += PAGE_SIZE;
                        }
                    }
                }
            }
        }
        // Shared memory is never swapped in the model (MADV_PAGEOUT of page-cache folios is
        // not modelled), so shmem_swap_usage adds nothing.
        let mut kb = [0u64; 22];
        let mut set = |name: &str, bytes: u64| kb[field(name)] = bytes >> 10;
        set("Size", v.end.0 - v.start.0);
        set("KernelPageSize", PAGE_SIZE);
        set("MMUPageSize", PAGE_SIZE);
        set("Rss", mss.resident);
        set("Pss", mss.pss >> PSS_SHIFT);
        set("Pss_Dirty", mss.pss_dirty >> PSS_SHIFT);
        set("Shared_Clean", mss.shared_clean);
        set("Shared_Dirty", mss.shared_dirty);
        set("Private_Clean", mss.private_clean);
        set("Private_Dirty", mss.private_dirty);
        set("Referenced", mss.referenced);
        set("Anonymous", mss.anonymous);
        set("LazyFree", mss.lazyfree);
        set("AnonHugePages", mss.anonymous_thp);
        set("ShmemPmdMapped", mss.shmem_thp);
        set("FilePmdMapped", mss.file_thp);
        set("Swap", mss.swap);
        set("SwapPss", mss.swap_pss >> PSS_SHIFT);
        set("Locked", mss.pss_locked >> PSS_SHIFT);
        Smaps {
            header: self.maps_line(mm, vma),
            start: v.start.0,
            end: v.end.0,
            kb,
            thp_eligible: u64::from(self.smaps_thp_eligible(vma)),
            protection_key: self.cfg.pku.then_some(u64::from(v.flags.pkey())),
            vm_flags: vma_flag_mnemonics(v.flags, self.cfg.soft_dirty)
                .into_iter()
                .map(|m| {
                    if m == "lf" && !self.cfg.kernel.profile().smaps_lockonfault_mnemonic {
                        "??".into()
                    } else {
                        m
                    }
                })
                .collect(),
            anonymous_vma: v.file.is_none(),
        }
    }

    /// `/proc/pid/smaps` of a process: every VMA.
    pub fn smaps(&self, pid: Pid) -> Vec<Smaps> {
        let Some(p) = self.vm.procs.get(&pid) else { return Vec::new() };
        self.vm.mms[p.mm].vmas.values().map(|e| self.smaps_vma(p.mm, e.id)).collect()
    }
}

impl crate::folio::FolioStore {
    /// `smaps_pmd_entry`: a PMD-mapped folio counts in AnonHugePages (or ShmemPmdMapped,
    /// FilePmdMapped) and is accounted whole.
    fn smaps_thp(
        &self,
        fs: &crate::fs::Fs,
        mss: &mut Mss,
        folio: FolioId,
        flags: PteFlags,
        locked: bool,
        present: bool,
    ) {
        let f = &self.folios[folio];
        if f.is_anon() {
            mss.anonymous_thp += PMD_SIZE;
        } else if let crate::folio::Mapping::File(ino) = f.mapping
            && matches!(fs.inodes[ino].kind, InodeKind::Shmem)
        {
            mss.shmem_thp += PMD_SIZE;
        } else {
            mss.file_thp += PMD_SIZE;
        }
        self.smaps_account(mss, folio, 0, f.nr_pages(), flags, locked, present);
    }

    /// `smaps_pte_entry`: a present normal page (not the zero page: `vm_normal_page` is NULL
    /// for it), a swap entry (Swap, and SwapPss divided by the slot's swap count
    /// `swp_swapcount`), or a migration entry (its page, not present).
    fn smaps_pte_entry(&self, swap: &crate::swap::SwapDevice, mss: &mut Mss, pte: Pte, locked: bool) {
        match pte {
            // A guard marker is no page and no swap (`smaps_pte_entry` skips marker entries).
            Pte::None | Pte::Guard => {}
            Pte::Present { folio, sub, flags } => {
                if folio != ZERO_FOLIO && folio != HUGE_ZERO_FOLIO {
                    self.smaps_account(mss, folio, sub as usize, 1, flags, locked, true);
                }
            }
            Pte::Swap { entry, .. } => {
                mss.swap += PAGE_SIZE;
                let count = swap.slot(entry).map_or(1, |s| s.count as u64);
                let mut pss = PAGE_SIZE << PSS_SHIFT;
                if count >= 2 {
                    pss /= count;
                }
                mss.swap_pss += pss;
            }
            Pte::Migration { folio, sub, .. } => {
                self.smaps_account(mss, folio, sub as usize, 1, PteFlags::empty(), locked, false);
            }
        }
    }

    /// `smaps_account`: one PTE-mapped page (`nr == 1`) or a PMD-mapped folio, starting at
    /// page `sub`. A present entry's pages count as private when mapped once
    /// (`folio_precise_page_mapcount < 2`), their PSS divided by the mapcount otherwise; a
    /// non-present one (a migration entry) counts whole, as "maybe shared".
    #[allow(clippy::too_many_arguments)]
    fn smaps_account(
        &self,
        mss: &mut Mss,
        folio: FolioId,
        sub: usize,
        nr: u64,
        flags: PteFlags,
        locked: bool,
        present: bool,
    ) {
        let f = &self.folios[folio];
        let size = nr * PAGE_SIZE;
        let (young, dirty) = (flags.contains(PteFlags::ACCESSED), flags.contains(PteFlags::DIRTY));
        if f.is_anon() {
            mss.anonymous += size;
            // !folio_test_swapbacked: MADV_FREE cleared it; a write since made it dirty.
            if f.lazyfree && !dirty && !f.dirty {
                mss.lazyfree += size;
            }
        }
        mss.resident += size;
        if young {
            mss.referenced += size;
        }
        let mut acc = |size: u64, pss: u64, private: bool| {
            // smaps_page_accumulate
            mss.pss += pss;
            if locked {
                mss.pss_locked += pss;
            }
            if dirty || f.dirty {
                mss.pss_dirty += pss;
                if private { mss.private_dirty += size } else { mss.shared_dirty += size }
            } else if private {
                mss.private_clean += size;
            } else {
                mss.shared_clean += size;
            }
        };
        if !present {
            acc(size, size << PSS_SHIFT, false);
            return;
        }
        // The refcount == 1 shortcut gives the same numbers as this loop (a folio
        // referenced once is mapped once), so the model always takes the loop.
        for i in 0..nr as usize {
            let mapcount = f.page_mapcount(sub + i) as u64;
            let mut pss = PAGE_SIZE << PSS_SHIFT;
            if mapcount >= 2 {
                pss /= mapcount;
            }
            acc(PAGE_SIZE, pss, mapcount < 2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KERNEL: &str = "\
5577061dd000-5577061df000 r--p 00000000 fe:00 247030                     /usr/bin/cat
Size:                  8 kB
KernelPageSize:        4 kB
MMUPageSize:           4 kB
Rss:                   8 kB
Pss:                   8 kB
Pss_Dirty:             0 kB
Shared_Clean:          0 kB
Shared_Dirty:          0 kB
Private_Clean:         8 kB
Private_Dirty:         0 kB
Referenced:            8 kB
Anonymous:             0 kB
KSM:                   0 kB
LazyFree:              0 kB
AnonHugePages:         0 kB
ShmemPmdMapped:        0 kB
FilePmdMapped:         0 kB
Shared_Hugetlb:        0 kB
Private_Hugetlb:       0 kB
Swap:                  0 kB
SwapPss:               0 kB
Locked:                0 kB
THPeligible:           0
ProtectionKey:         0
VmFlags: rd mr mw me 
";

    #[test]
    fn parse_then_format_is_the_kernel_text() {
        let e = parse_smaps(KERNEL);
        assert_eq!(e.len(), 1);
        assert_eq!((e[0].start, e[0].end), (0x5577061dd000, 0x5577061df000));
        assert!(!e[0].anonymous_vma);
        assert_eq!(e[0].get("Private_Clean"), 8);
        assert_eq!(e[0].vm_flags, ["rd", "mr", "mw", "me"]);
        assert_eq!(e[0].format(), KERNEL);
    }

    #[test]
    fn wide_values_keep_the_kernel_columns() {
        let mut e = Smaps { header: "h".into(), protection_key: None, ..Default::default() };
        e.kb[field("Size")] = 123_456_789;
        e.kb[field("Private_Hugetlb")] = 12_345_678;
        let t = e.format();
        assert!(t.contains("\nSize:           123456789 kB\n"));
        assert!(t.contains("\nPrivate_Hugetlb: 12345678 kB\n"));
        assert!(!t.contains("ProtectionKey"));
        assert!(t.ends_with("VmFlags: \n"));
    }

    #[test]
    fn garbage_does_not_panic() {
        for t in [
            "",
            "Rss: x kB",
            ":::",
            "VmFlags: rd",
            "1-2",
            "zz-1 r",
            "a-b c d e f\nRss: 99999999999999999999 kB",
        ] {
            let _ = parse_smaps(t);
        }
    }

    #[test]
    fn mnemonics_in_bit_order() {
        let f = VmFlags::READ
            | VmFlags::WRITE
            | VmFlags::MAYREAD
            | VmFlags::MAYWRITE
            | VmFlags::ACCOUNT
            | VmFlags::HUGEPAGE
            | VmFlags::SOFTDIRTY
            | VmFlags::UFFD_MISSING
            | VmFlags::from_pkey(3);
        assert_eq!(vma_flag_mnemonics(f, false), ["rd", "wr", "mr", "mw", "um", "ac", "hg"]);
        assert_eq!(vma_flag_mnemonics(f, true), ["rd", "wr", "mr", "mw", "um", "ac", "sd", "hg"]);
    }
}
