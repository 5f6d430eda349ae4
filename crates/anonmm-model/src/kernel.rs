//! Kernel versions: which Linux the model is (`--kernel 6.1|6.12|6.18`), and the named
//! switches where those kernels differ in what the model reports.
//!
//! A [`Kernel`] is a long-term kernel people run: 6.1 (Debian 12, Android 14/15), 6.12
//! (Debian 13, RHEL 10, Android 16) and 6.18 (our machines, the default). Its [`Profile`] is
//! a plain struct of booleans, one per behaviour that changed between them; the model reads
//! `self.cfg.kernel.profile().<switch>` at the point where the kernel's code differs, never
//! the version itself. Each switch's documentation names the release and commit that
//! brought the 6.18 behaviour; `tests/kernels.rs` has a scenario per switch with the outcome
//! on each kernel, and `docs/kernels.md` the table. The kernels themselves are run by the VM
//! oracle (`anonmm oracle fuzz --kernel 6.1`).
//!
//! It is the same mechanism as the designs' (`--policy`, `src/designs`): a typed value chosen
//! at the command line's edge ([`Kernel`] here, `Policy` there) resolves to one named set of
//! variation points, read at the place in the mirror where the kernels (or the designs)
//! differ. Kernels differ by conditions inside one code path, so their set is data (a
//! [`Profile`] of booleans); designs add code, so theirs is a trait of hooks. Nothing in the
//! model compares [`Kernel`] values or versions.
//!
//! To add a switch: a `pub` boolean field of [`Profile`], documented with what the older
//! kernels do instead and the release and commit title that brought the 6.18 behaviour;
//! `true` in [`V6_18`], and `false` in the profile of the newest kernel that lacks it (the
//! older ones inherit it through `..`); read it as `self.cfg.kernel.profile().<switch>` at
//! the one place the kernel's code differs; a scenario `tests/kernels/<switch>.strace` with
//! the outcome on each kernel (checked by `tests/kernels.rs`, and on the real kernels by the
//! VM oracle);
//! a row in `docs/kernels.md`. To add a kernel: a [`Kernel`] variant (with `ALL`, `version`,
//! `numbers` and `profile`) and its `Profile` constant, written as the nearest kernel's with
//! the switches that differ.

use std::fmt;

/// A kernel the model can be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kernel {
    /// Linux 6.1 (LTS; Debian 12's `linux-image-6.1.0-*-amd64`).
    V6_1,
    /// Linux 6.12 (LTS; Debian 12 backports' `linux-image-6.12.*+deb12-amd64`).
    V6_12,
    /// Linux 6.18 (our machines).
    #[default]
    V6_18,
}

impl Kernel {
    /// Every kernel, oldest first.
    pub const ALL: [Kernel; 3] = [Kernel::V6_1, Kernel::V6_12, Kernel::V6_18];

    /// The version as users write it (`6.1`, `6.12`, `6.18`).
    pub fn version(self) -> &'static str {
        match self {
            Kernel::V6_1 => "6.1",
            Kernel::V6_12 => "6.12",
            Kernel::V6_18 => "6.18",
        }
    }

    /// `(major, minor)`.
    pub fn numbers(self) -> (u32, u32) {
        match self {
            Kernel::V6_1 => (6, 1),
            Kernel::V6_12 => (6, 12),
            Kernel::V6_18 => (6, 18),
        }
    }

    /// Parse `6.1`, `6.12` or `6.18` (the command line's edge; `None` for anything else).
    pub fn parse(s: &str) -> Option<Kernel> {
        Kernel::ALL.into_iter().find(|k| k.version() == s.trim())
    }

    /// The kernel whose `uname -r` release is `release` (`6.1.0-50-amd64` → 6.1), if it is
    /// one of ours.
    pub fn from_release(release: &str) -> Option<Kernel> {
        let mut it = release.split(|c: char| !c.is_ascii_digit());
        let major: u32 = it.next()?.parse().ok()?;
        let minor: u32 = it.next()?.parse().ok()?;
        Kernel::ALL.into_iter().find(|k| k.numbers() == (major, minor))
    }

    /// The switches of this kernel.
    pub fn profile(self) -> &'static Profile {
        match self {
            Kernel::V6_1 => &V6_1,
            Kernel::V6_12 => &V6_12,
            Kernel::V6_18 => &V6_18,
        }
    }
}

impl std::str::FromStr for Kernel {
    type Err = String;

    /// `6.1`, `6.12` or `6.18`, as `--kernel` takes it.
    fn from_str(s: &str) -> Result<Kernel, String> {
        Kernel::parse(s).ok_or_else(|| format!("unknown kernel `{s}` (known: 6.1, 6.12, 6.18)"))
    }
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.version())
    }
}

/// Where a kernel's behaviour differs from 6.18's, as named switches (`true` = the 6.18
/// behaviour is there). Each names the release and the commit (by its title) that brought it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Profile {
    /// `MADV_GUARD_INSTALL`/`MADV_GUARD_REMOVE` exist (6.13, 662df3e5c376 "mm: madvise:
    /// implement lightweight guard page mechanism"). Before, `madvise_behavior_valid` rejects them:
    /// EINVAL.
    pub madv_guard: bool,
    /// `UFFDIO_MOVE` exists (6.8, adef440691ba "userfaultfd: UFFDIO_MOVE uABI"). Before,
    /// `userfaultfd_ioctl` answers the unknown command with EINVAL (and `UFFDIO_API` offers
    /// no `UFFD_FEATURE_MOVE`).
    pub uffdio_move: bool,
    /// `mremap` moves several VMAs at once (6.17, "mm/mremap: permit mremap() move of
    /// multiple VMAs", Lorenzo Stoakes' July 2025 mremap series). Before, a move whose source range spans more than one VMA (or a
    /// gap) fails with EFAULT in `vma_to_resize`.
    pub mremap_multi_vma: bool,
    /// `mremap` checks the source (`check_prep_vma`) before unmapping anything (6.17,
    /// "mm/mremap: check remap conditions earlier", same series as `mremap_multi_vma`). Before, `mremap_to` unmaps the
    /// MREMAP_FIXED destination and a shrink's tail first, and `vma_to_resize` refuses
    /// afterwards, leaving them unmapped.
    pub mremap_checks_before_unmap: bool,
    /// `is_mergeable_anon_vma` lets an unfaulted VMA take a faulted range's anon_vma unless
    /// that range is a fork child's (6.16, 879bca0a2c4f "mm/vma: fix incorrectly disallowed
    /// anonymous VMA merges"). Before, it asked `list_is_singular(&tgt->anon_vma_chain)` of the VMA that
    /// survives the merge, so a faulted range never merged into an unfaulted neighbour, and
    /// an unfaulted range never into a fork child's faulted one.
    pub anon_vma_merge_unfaulted_target: bool,
    /// A `FOLL_LONGTERM` pin of a writable shared mapping of a regular file fails in GUP
    /// (`writable_file_mapping_allowed`), and io_uring's buffer registration leaves the
    /// file check to GUP (6.5, 8ac268436e6d "mm/gup: disallow FOLL_LONGTERM GUP-nonfast
    /// writing to file-backed mappings" and "io_uring: rsrc: delegate VMA file-backed check
    /// to GUP").
    /// Before, `io_pin_pages` pins everything and then refuses a buffer spanning different
    /// files (EINVAL) or any non-shmem file (EOPNOTSUPP).
    pub gup_longterm_file_check: bool,
    /// A `MREMAP_DONTUNMAP` copy of an unfaulted anonymous VMA may merge into that VMA, its
    /// own source, left in place (`copy_vma` re-linearises the copy's `vm_pgoff`): the host's
    /// 6.18.44 does. Debian's 6.1.192 and 6.12.118 carry the 2026 stable fix "mm/mremap: fix
    /// locked_vm leak from MREMAP_DONTUNMAP self-merge" (6.1.191, 6.12.114; upstream
    /// through mm-hotfixes in 2026): `copy_vma(..., keep_source)` disallows the self-merge (6.12
    /// drops the source as `prev`/`next`; 6.1 skips `vma_merge` whenever the copy touches
    /// its source, `dontunmap_copy_merges_other_side`). Read in Debian's `linux-source`
    /// packages; seen in the VM (oracle fuzz --kernel 6.1 seed 100028).
    pub dontunmap_merges_source: bool,
    /// After a `MREMAP_DONTUNMAP` move of a whole VMA (its anon_vmas unlinked), the source
    /// keeps its `vm_pgoff`: the host's 6.18.44 leaves it. Debian's 6.1.192 and 6.12.118 carry
    /// the 2026 stable fix "mm/mremap: reset unfaulted VMA page offset for MREMAP_DONTUNMAP"
    /// (6.1.191, 6.12.112): an anonymous source, unfaulted again, gets
    /// `vm_pgoff = vm_start >> PAGE_SHIFT` (read in Debian's `linux-source` packages; seen with `--internal`,
    /// tests/kernels/dontunmap_keeps_source_pgoff.strace).
    pub dontunmap_keeps_source_pgoff: bool,
    /// A `MREMAP_DONTUNMAP` copy of an unfaulted anonymous VMA right beside that VMA, its
    /// source (which it does not merge into, `dontunmap_merges_source`), may still merge with
    /// the VMA on its other side: 6.12's backport of "mm/mremap: fix locked_vm leak from
    /// MREMAP_DONTUNMAP self-merge" only drops the source as `vmg.prev`/`vmg.next` before
    /// `vma_merge_new_range`. 6.1's backport (6.1.191) skips `vma_merge` altogether when the
    /// copy touches its source (`addr == vma->vm_end || vma->vm_start == addr + len`), so
    /// such a copy merges with nothing (tests/kernels/dontunmap_beside_source_merges_nothing.strace,
    /// oracle fuzz --kernel 6.1 seed 100028). A faulted or file source is not concerned: a
    /// file page's copy beside its source merges with the next VMA on every kernel
    /// (tests/kernels/dontunmap_file_copy_merges_next.strace, seed 100658).
    pub dontunmap_copy_merges_other_side: bool,
    /// A `MREMAP_DONTUNMAP` move of part of a `VM_LOCKED` VMA unlocks the whole source VMA:
    /// the host's 6.18.44 `dontunmap_complete` clears `VM_LOCKED_MASK` on `vrm->vma` as it
    /// is. Debian's 6.1.192 and 6.12.118 carry the 2026 stable fix "mm/mremap: fix locked_vm
    /// leak by splitting VMA for MREMAP_DONTUNMAP" (6.1.191, 6.12.114): `move_vma` first
    /// splits the moved range out of a `VM_LOCKED` source, so only that piece is unlocked
    /// (smaps: `lo` gone from it only; oracle fuzz --kernel 6.1 seed 100305, --kernel 6.12
    /// seed 200514; tests/kernels/dontunmap_unlocks_whole_vma.strace), and that piece, now
    /// the whole old VMA, loses its anon_vma (`--internal`, 6.1 seed 310198;
    /// tests/kernels/dontunmap_locked_tail_unlinks.strace). The model splits after the copy
    /// rather than before it; the two differ only when the copy lands beside the source.
    pub dontunmap_unlocks_whole_vma: bool,
    /// `copy_vma` may merge the copy of a userfaultfd-registered VMA with a neighbour
    /// (`vma_merge_new_range` with the source's `vm_userfaultfd_ctx`; without
    /// `UFFD_FEATURE_EVENT_REMAP`, `mremap_userfaultfd_prep` then drops the registration of
    /// the whole merged VMA): 6.1 and the host's 6.18.44 do. Debian's 6.12.118 carries the
    /// stable fix "mm/vma: avoid broken uffd merge on mremap" (6.12.118): `copy_vma` skips
    /// the merge when `vma_has_uffd_without_event_remap(vma)`, so the copy merges with
    /// nothing, neither with a neighbour registered with the same context (its own source
    /// included) nor with an unregistered one (oracle fuzz --kernel 6.12 seeds 201011 and
    /// 202353; tests/kernels/uffd_copy_merges.strace; `--internal` shows the copy's
    /// `vm_pgoff` re-linearised and its uffd flags dropped, the neighbours keeping theirs).
    /// Debian's 6.1.192 does not have it.
    pub uffd_copy_merges: bool,
    /// MADV_FREE, MADV_COLD and MADV_PAGEOUT judge whether a large folio is shared by the
    /// mms that map it (`folio_maybe_mapped_shared` with CONFIG_MM_ID, 6.15, "mm/rmap: basic
    /// MM owner tracking for large folios (!hugetlb)" and "mm: convert
    /// folio_likely_mapped_shared() to folio_maybe_mapped_shared()", David Hildenbrand's
    /// mapcount series). 6.12's `folio_likely_mapped_shared` guesses from the folio's first
    /// page: a THP whose first pages a MADV_DONTNEED unmapped counts as not shared although
    /// parent and child both map the rest, so a child's MADV_FREE of one page splits it, and
    /// the split maps every never-written subpage to the zero page in both processes
    /// (`split_maps_unused_to_zeropage`; oracle fuzz --kernel 6.12 --internal seed 300462,
    /// tests/kernels/folio_shared_by_mm_ids.strace; Debian's 6.12.118 `madvise.c` calls
    /// `folio_likely_mapped_shared` there). 6.1 asks `folio_mapcount(folio) != 1`
    /// (MADV_FREE) or `page_mapcount(page) != 1` (COLD/PAGEOUT) and stops, which in that
    /// scenario agrees with 6.18, so it keeps the switch on.
    pub folio_shared_by_mm_ids: bool,
    /// MADV_COLLAPSE (and khugepaged) collapse a PMD whose PTEs are all read-only, e.g. a
    /// page write-protected for copy-on-write after fork (6.18, b9f85966d1be "mm: enable
    /// khugepaged anonymous collapse on non-writable regions" and 65b08d362ba5 "mm: drop all
    /// references of writable and SCAN_PAGE_RO", Dev Jain). Before, `hpage_collapse_scan_pmd`
    /// gives `SCAN_PAGE_RO` when no PTE is writable: MADV_COLLAPSE goes on to the next PMD
    /// and ends with EINVAL (`madvise_collapse_errno`), collapsing nothing there (Debian's
    /// 6.1.192 and 6.12.118 `khugepaged.c`; oracle fuzz --kernel 6.1 seed 80100101,
    /// tests/kernels/collapse_read_only_ptes.strace).
    pub collapse_read_only_ptes: bool,
    /// A write fault on a COW-shared page of a large anonymous folio may reuse it when
    /// every reference is a mapping of this mm (`__wp_can_reuse_large_anon_folio`, 6.15,
    /// "mm: CONFIG_NO_PAGE_MAPCOUNT" series). Before (6.12's `wp_can_reuse_anon_folio`:
    /// "let's just consistently not reuse subpages"), the page is always copied into a new
    /// small folio; seen by the internal-state oracle (tests/kernels/wp_large_folio_copy.strace).
    pub wp_reuses_large_anon_folio: bool,
    /// `wp_can_reuse_anon_folio` treats a large folio apart (6.12: never reuse a subpage;
    /// 6.15+: `__wp_can_reuse_large_anon_folio`). Debian's 6.1.192 `do_wp_page` has no such
    /// case: a page of a large folio is reused as a small one is, when `page_count` (the
    /// folio's refcount) is 1, i.e. when this PTE is the folio's last mapping, and
    /// `page_move_anon_rmap` moves the folio to the faulting VMA's anon_vma. So a populate
    /// that write-faults a fork-shared, PTE-mapped THP copies all its pages but the last,
    /// which keeps the THP (oracle fuzz --kernel 6.1 --internal seed 325140,
    /// tests/internal/wp_reuses_last_page_of_large_folio.strace). Between 6.1 and 6.12; not
    /// traced to one commit.
    pub wp_reuse_refuses_large_folio: bool,
    /// MADV_COLD/PAGEOUT and MADV_FREE leave a PMD-mapped THP alone when the folio is
    /// (maybe) mapped shared (`folio_likely_mapped_shared`, `folio_maybe_mapped_shared`:
    /// [`Profile::folio_shared_by_mm_ids`]). Debian's 6.1.192 asks its head page instead:
    /// `page_mapcount(page) != 1` in `madvise_cold_or_pageout_pte_range` (the PMD mappings
    /// and the head's own PTE mappings) and `total_mapcount(page) != 1` in
    /// `madvise_free_huge_pmd`. So a THP a fork child maps by PTEs all but the first page
    /// (moved away by mremap and copied) counts as unshared for MADV_PAGEOUT in the parent:
    /// 6.1 splits it and pages the first page out (oracle fuzz --kernel 6.1 --internal seed
    /// 327850, tests/kernels/madvise_thp_shared_by_folio.strace). The folio conversions of
    /// madvise.c came between 6.1 and 6.12; not traced to one commit.
    pub madvise_thp_shared_by_folio: bool,
    /// mprotect drops `VM_ACCOUNT` (and its commit charge) when it makes an unfaulted
    /// anonymous VMA unwritable (6.7, "mm/mprotect: allow unfaulted VMAs to be unaccounted
    /// on mprotect()", in mm-stable-2023-11-01). Before, the flag stays, so such a range no longer merges with a
    /// neighbour that was never writable.
    pub mprotect_unaccounts_unfaulted: bool,
    /// `userfaultfd_register`/`_unregister` merge with the page offset of the range's start
    /// (6.4, 270aa0106206 "mm/uffd: fix vma operation where start addr cuts part of vma").
    /// Linux 6.1 passes the VMA's own `vm_pgoff` to `vma_merge`, so a range that starts inside
    /// a VMA never merges with the next one. Debian's 6.1.192 in the VM still does, though
    /// linux-stable-rc's 6.1.y queue carried the fix in June 2025.
    pub uffd_merge_pgoff: bool,
    /// A write fault on the huge zero page's PMD maps a new THP (6.13, "mm: allocate THP on
    /// hugezeropage wp-fault", `do_huge_zero_wp_pmd`).
    /// Before, `do_huge_pmd_wp_page` falls back: the PMD is split into zero-page PTEs and only
    /// the written page is copied (seen on Debian's 6.12 with a GUP write pin).
    pub huge_zero_wp_thp: bool,
    /// `/proc/pid/maps` names a VMA `[heap]` only when it overlaps `[start_brk, brk)`
    /// (6.7, "mm: fix VMA heap bounds checking", Kefeng Wang; `vma_is_initial_heap` with `<`
    /// and `>`). Before, `show_map_vma` tested `vm_start <= brk && vm_end >= start_brk`
    /// (since 4.x's 0db0c01b53a1 "procfs: fix /proc/&lt;pid&gt;/maps heap check"), so an
    /// anonymous VMA that only touches the heap (starting at `brk`, or ending at
    /// `start_brk`, or any VMA at `start_brk` while the heap is empty) is named `[heap]` too.
    pub heap_name_overlap_only: bool,
    /// `do_sync_mmap_readahead` reads an executable mapping forward from the fault, within
    /// the VMA, with no lookahead, and `VM_RAND_READ` does not stop it (6.17, 38b0ece6d763
    /// "mm/filemap: allow arch to request folio size for exec memory"). Before, `VM_EXEC`
    /// is read around the fault like any other mapping (half the window behind it).
    pub exec_readahead_forward: bool,
    /// ext4 regular files have large folios (6.16, 7ac67301e82f "ext4: enable large folio
    /// for regular file"), so `page_cache_ra_order` reads the window itself and puts the
    /// PG_readahead mark where the uncut window says (often past EOF). Before,
    /// `mapping_large_folio_support` is false for ext4 and `page_cache_ra_order` falls back to
    /// `do_page_cache_ra`, which cuts the window at EOF first: the mark lands inside a small
    /// file, and fault-around skips that page.
    pub ext4_large_folios: bool,
    /// `pagemap_pmd_range` decides PM_MMAP_EXCLUSIVE of a PMD-mapped THP once, from the
    /// PMD's head page (6.15, "fs/proc/task_mmu: remove per-page mapcount dependency for
    /// PM_MMAP_EXCLUSIVE (CONFIG_NO_PAGE_MAPCOUNT)", which passes `page`, not `page + idx`).
    /// On 6.11-6.14 each subpage's own mapcount decides (`page_mapcount(page + idx) == 1`,
    /// 2c1f057e5be6 "fs/proc/task_mmu: properly detect PM_MMAP_EXCLUSIVE per page of
    /// PMD-mapped THPs"): after a fork and a partial split in the child, the parent's pages
    /// the child no longer maps are exclusive. Before 6.11 the head page decided, as on 6.18:
    /// so the switch is on for 6.1 (Debian's 6.1.192 in the VM shows the head-page answer)
    /// and off only for 6.12.
    pub pagemap_thp_exclusive_from_head: bool,
    /// MADV_DONTNEED (and MADV_DONTNEED_LOCKED) frees a PTE table it emptied over its whole
    /// 2 MiB (6.14, 6375e95f381e "mm: pgtable: reclaim empty PTE page in
    /// madvise(MADV_DONTNEED)", CONFIG_PT_RECLAIM on x86-64). Before, the empty table stays,
    /// so the next fault there is a PTE fault: a read maps one zero page, not the huge zero
    /// PMD, and a write one small page, not a THP.
    pub madv_dontneed_reclaims_pt: bool,
    /// `MADV_POPULATE_READ`/`_WRITE` walk the range themselves (6.9, "mm/madvise: don't
    /// perform madvise VMA walk for MADV_POPULATE_(READ|WRITE)" with 631426ba1d45
    /// "mm/madvise: make MADV_POPULATE_(READ|WRITE) handle VM_FAULT_RETRY properly",
    /// `faultin_page_range`): in address order, a hole is ENOMEM at once. Before (6.1),
    /// `madvise_populate` is a `madvise_walk_vmas` visitor calling `faultin_vma_page_range`
    /// per VMA: a hole is skipped and its ENOMEM returned only at the end, so a later VMA's
    /// EINVAL (`check_vma_flags`) or EFAULT wins, and the VMAs after a hole are populated.
    pub populate_without_vma_walk: bool,
    /// Splitting an anonymous THP maps its never-written (zero-filled) subpages to the
    /// shared zero page and frees them (6.12, b1f202060afe "mm: remap unused subpages to
    /// shared zeropage when splitting isolated thp", `try_to_map_unused_to_zeropage`).
    /// Before, `remap_page` maps every subpage back, so a split (MADV_COLD or MADV_PAGEOUT of
    /// part of a THP, a partial munmap/mprotect) keeps all 512 pages.
    pub split_maps_unused_to_zeropage: bool,
    /// `MAP_STACK` sets `VM_NOHUGEPAGE` (6.7, c4608d1bf7c6 "mm: mmap: map MAP_STACK to
    /// VM_NOHUGEPAGE", `calc_vm_flag_bits`). Before, the flag is ignored: such a mapping
    /// gets THPs and merges with an anonymous neighbour of the same protection (Debian's
    /// 6.1.192 in the VM, oracle fuzz --kernel 6.1 seed 100125).
    pub map_stack_nohugepage: bool,
    /// An extending `ftruncate` of an ext4 file whose old size ends inside a block zeroes
    /// that block from the old EOF on (`ext4_setattr` → `ext4_block_truncate_page(oldsize)`;
    /// 6.13, c7fc0366c656 "ext4: partial zero eof block on unaligned inode size extension",
    /// backported to 6.6.y, 6.11.y and 6.12.y): bytes written past EOF through a shared
    /// mapping are lost, and a hole's block gets a page-cache folio that is not up to date.
    /// Before (6.1: no 6.1.y backport), `pagecache_isize_extended` does nothing with 4 KiB
    /// blocks: the page keeps what was written past EOF and nothing is added to the cache.
    pub ext4_truncate_up_zeroes_eof: bool,
    /// smaps' VmFlags names `VM_LOCKONFAULT` `lf` (6.2, 8614d6c5eda0, Jason A. Donenfeld,
    /// December 2022). Before, the bit has no mnemonic and `show_smap_vma_flags` prints `??`
    /// for it (Debian's 6.1.192 in the VM, after mlock2(MLOCK_ONFAULT)).
    pub smaps_lockonfault_mnemonic: bool,
    /// `filemap_map_pages` maps a regular file's pages around a fault only when the first
    /// folio it finds ends before the file's last page, or a PTE table is already there
    /// (`can_map_large`; 6.18, 74207de2ba10 "mm/memory: do not populate page table entries
    /// beyond i_size", backported to 6.12.y): so a fault beyond EOF whose window holds only
    /// the last page maps nothing before its SIGBUS. Before (Debian's 6.1.192 lacks the
    /// backport), `filemap_map_pmd` always installs the preallocated table and the cached
    /// pages up to EOF are mapped.
    pub fault_around_checks_i_size: bool,
    /// `UFFDIO_UNREGISTER` refuses (EINVAL) a VMA registered with another userfaultfd of
    /// the same mm (6.17, "userfaultfd: prevent unregistering VMAs through a different
    /// userfaultfd", Tal Zussman; not for stable). Before, `userfaultfd_unregister` clears
    /// any registration in the range, so a thread's own context unregisters its sibling's
    /// (oracle fuzz --kernel 6.12 seed 214242).
    pub uffd_unregister_same_ctx: bool,
    /// `mmap_region` merges a new range through `vma_merge_new_range` (6.12, "mm: avoid
    /// using vma_merge() for new VMAs", Lorenzo Stoakes): prev first, and both neighbours
    /// only when their anon_vmas are compatible. Before (6.1), `mmap_region` checks next
    /// first and then prev with next's anon_vma (`can_vma_merge_after(prev, ..,
    /// vma->anon_vma, ..)`): an unfaulted prev refuses a range that joins a faulted next, and
    /// between two different anon_vmas the range joins next (oracle fuzz --kernel 6.1 seed
    /// 116394).
    pub mmap_merge_new_range: bool,
    /// A zero-filled folio MADV_PAGEOUT reclaims is not written at all: `swap_writepage`
    /// sets its slots' bits in the swap device's zeromap and unlocks it, never under
    /// writeback, so `shrink_folio_list` frees it at once and a swap-in reads a new, zeroed
    /// folio (`swap_read_folio_zeromap`), exclusive, on the faulting VMA's anon_vma and not
    /// mlocked (`folio_add_new_anon_rmap`). Any other folio is still under writeback when
    /// `shrink_folio_list` looks (the swap file's bio completes later), so it stays in the
    /// swap cache, unmapped, and a swap-in maps it again with its old mapping and index
    /// (`folio_add_anon_rmap_ptes`, which mlocks it in a `VM_LOCKED` VMA). 6.12, "mm: store
    /// zero pages to be swapped out in a bitmap" (Usama Arif); Debian's 6.1.192 writes the
    /// zeros too and keeps the folio (6.1 `--internal` seed 320609,
    /// tests/internal/pageout_of_zero_folio.strace; on the host,
    /// tests/kernels/swap_zeromap_frees_zero_folio.strace).
    pub swap_zeromap: bool,
    /// MADV_COLD/PAGEOUT and MADV_FREE take a PTE-mapped large folio as a batch
    /// (`folio_pte_batch`): one the range covers whole is left whole, one it covers in part
    /// is split unless (likely/maybe) mapped shared, else skipped, and the walk goes on (6.9,
    /// "mm: madvise: avoid split during MADV_PAGEOUT and MADV_COLD", Barry Song; 6.10,
    /// "mm/madvise: optimize lazyfreeing with mTHP in madvise_free", Lance Yang). Before
    /// (6.1), every large folio the walk meets is split when the page at hand (for
    /// MADV_FREE: its first page, `folio_estimated_sharers`) is mapped once, and otherwise
    /// the walk leaves the PMD (`break`): a fork-shared THP split by MADV_DONTFORK has its
    /// unshared page paged out on 6.1 (oracle fuzz --kernel 6.1 seed 119275).
    pub madvise_batches_large_folios: bool,
    /// A fault in a `MADV_SEQUENTIAL` file mapping reads ahead with `page_cache_sync_ra`,
    /// whose initial window (as large as the request) has an async size of half the window
    /// (6.10, Jan Kara's rework of `page_cache_sync_ra`; Debian's 6.12.118 has it): the
    /// PG_readahead mark lands half-way, beyond EOF in a small file, so the retried
    /// fault-around maps the pages read. Before (6.1's `ondemand_readahead`), the async size
    /// is the whole window and the mark is on the faulting page itself (oracle fuzz seed
    /// 91008951 on the host).
    pub seq_readahead_half_async: bool,
    /// MADV_COLLAPSE answers EBUSY for `SCAN_EXCEED_NONE_PTE` (`madvise_collapse_errno` in
    /// Debian's 6.12.118): with a userfaultfd armed, a none or zero-page PTE in the PMD.
    /// Debian's 6.1.192 has no case for it and answers EINVAL (oracle fuzz --kernel 6.1
    /// --internal seed 323878, tests/kernels/collapse_none_pte_ebusy.strace).
    pub collapse_none_pte_ebusy: bool,
    /// Unmapping pages does not drain the CPU's LRU batches: `free_pages_and_swap_cache`
    /// (the mmu_gather's release at munmap, MADV_DONTNEED, exit) lost its `lru_add_drain`
    /// (6.14, "mm: remove unnecessary calls to lru_add_drain", Rik van Riel). So a folio
    /// MADV_FREE queued for `lru_lazyfree` keeps the batch's reference across a zap, and a
    /// later write fault copies it ([`crate::folio::FolioStore::lazyfree_batch`]). Before,
    /// any zap that released a page drained the batch first: a fork child's MADV_FREE and
    /// exit left the parent's page reusable (oracle fuzz seed 94020231 on the host; 6.1 and
    /// 6.12 reuse, `tests/kernels/zap_skips_lru_drain.strace`).
    pub zap_skips_lru_drain: bool,
    /// A per-CPU folio batch holds 31 folios (`PAGEVEC_SIZE`; 6.6, 9cecde80aae0 "mm: increase folio
    /// batch size", Matthew Wilcox). Before, 15: the 15th folio MADV_FREE queues drains
    /// the `lru_lazyfree` batch (`folio_batch_add_and_move`).
    pub folio_batch_31: bool,
}

/// Linux 6.18: every version switch on.
pub const V6_18: Profile = Profile {
    madv_guard: true,
    uffdio_move: true,
    mremap_multi_vma: true,
    mremap_checks_before_unmap: true,
    anon_vma_merge_unfaulted_target: true,
    gup_longterm_file_check: true,
    dontunmap_merges_source: true,
    dontunmap_keeps_source_pgoff: true,
    dontunmap_copy_merges_other_side: true,
    dontunmap_unlocks_whole_vma: true,
    wp_reuses_large_anon_folio: true,
    uffd_copy_merges: true,
    folio_shared_by_mm_ids: true,
    collapse_read_only_ptes: true,
    mprotect_unaccounts_unfaulted: true,
    uffd_merge_pgoff: true,
    huge_zero_wp_thp: true,
    heap_name_overlap_only: true,
    exec_readahead_forward: true,
    ext4_large_folios: true,
    pagemap_thp_exclusive_from_head: true,
    madv_dontneed_reclaims_pt: true,
    populate_without_vma_walk: true,
    split_maps_unused_to_zeropage: true,
    map_stack_nohugepage: true,
    ext4_truncate_up_zeroes_eof: true,
    smaps_lockonfault_mnemonic: true,
    fault_around_checks_i_size: true,
    uffd_unregister_same_ctx: true,
    mmap_merge_new_range: true,
    swap_zeromap: true,
    madvise_batches_large_folios: true,
    seq_readahead_half_async: true,
    collapse_none_pte_ebusy: true,
    wp_reuse_refuses_large_folio: true,
    madvise_thp_shared_by_folio: true,
    zap_skips_lru_drain: true,
    folio_batch_31: true,
};

/// Linux 6.12.
pub const V6_12: Profile = Profile {
    madv_guard: false,
    huge_zero_wp_thp: false,
    mremap_multi_vma: false,
    mremap_checks_before_unmap: false,
    anon_vma_merge_unfaulted_target: false,
    dontunmap_merges_source: false,
    exec_readahead_forward: false,
    ext4_large_folios: false,
    pagemap_thp_exclusive_from_head: false,
    madv_dontneed_reclaims_pt: false,
    dontunmap_keeps_source_pgoff: false,
    dontunmap_unlocks_whole_vma: false,
    wp_reuses_large_anon_folio: false,
    uffd_copy_merges: false,
    folio_shared_by_mm_ids: false,
    collapse_read_only_ptes: false,
    uffd_unregister_same_ctx: false,
    zap_skips_lru_drain: false,
    ..V6_18
};

/// Linux 6.1.
pub const V6_1: Profile = Profile {
    uffdio_move: false,
    gup_longterm_file_check: false,
    mprotect_unaccounts_unfaulted: false,
    uffd_merge_pgoff: false,
    heap_name_overlap_only: false,
    populate_without_vma_walk: false,
    split_maps_unused_to_zeropage: false,
    dontunmap_copy_merges_other_side: false,
    map_stack_nohugepage: false,
    ext4_truncate_up_zeroes_eof: false,
    smaps_lockonfault_mnemonic: false,
    fault_around_checks_i_size: false,
    mmap_merge_new_range: false,
    swap_zeromap: false,
    madvise_batches_large_folios: false,
    seq_readahead_half_async: false,
    collapse_none_pte_ebusy: false,
    wp_reuse_refuses_large_folio: false,
    madvise_thp_shared_by_folio: false,
    // Before 6.11 (2c1f057e5be6, not in Debian's 6.1.192) the head page decided, as on 6.18.
    pagemap_thp_exclusive_from_head: true,
    // Debian's 6.1.192 merges such a copy, as 6.18 does.
    uffd_copy_merges: true,
    // 6.1 asks page_mapcount() of the page at hand, not the first page's.
    folio_shared_by_mm_ids: true,
    collapse_read_only_ptes: false,
    folio_batch_31: false,
    ..V6_12
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_round_trip() {
        for k in Kernel::ALL {
            assert_eq!(Kernel::parse(k.version()), Some(k));
        }
        assert_eq!(Kernel::parse("6.2"), None);
        assert_eq!(Kernel::from_release("6.1.0-50-amd64"), Some(Kernel::V6_1));
        assert_eq!(Kernel::from_release("6.12.107+deb12-amd64"), Some(Kernel::V6_12));
        assert_eq!(Kernel::from_release("6.18.3"), Some(Kernel::V6_18));
        assert_eq!(Kernel::from_release("5.15.0"), None);
        assert_eq!(Kernel::default().profile(), &V6_18);
    }
}
