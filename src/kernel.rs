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
    /// `MADV_GUARD_INSTALL`/`MADV_GUARD_REMOVE` exist (6.13, "mm: madvise: implement
    /// lightweight guard page mechanism"). Before, `madvise_behavior_valid` rejects them:
    /// EINVAL.
    pub madv_guard: bool,
    /// `UFFDIO_MOVE` exists (6.8, "userfaultfd: UFFDIO_MOVE uABI"). Before,
    /// `userfaultfd_ioctl` answers the unknown command with EINVAL (and `UFFDIO_API` offers
    /// no `UFFD_FEATURE_MOVE`).
    pub uffdio_move: bool,
    /// `mremap` moves several VMAs at once (6.17, "mm/mremap: permit mremap() move of
    /// multiple VMAs"). Before, a move whose source range spans more than one VMA (or a
    /// gap) fails with EFAULT in `vma_to_resize`.
    pub mremap_multi_vma: bool,
    /// `mremap` checks the source (`check_prep_vma`) before unmapping anything (6.16,
    /// "mm/mremap: check remap conditions earlier"). Before, `mremap_to` unmaps the
    /// MREMAP_FIXED destination and a shrink's tail first, and `vma_to_resize` refuses
    /// afterwards, leaving them unmapped.
    pub mremap_checks_before_unmap: bool,
    /// `is_mergeable_anon_vma` lets an unfaulted VMA take a faulted range's anon_vma unless
    /// that range is a fork child's (6.16, "mm/vma: fix incorrectly disallowed anonymous VMA
    /// merges"). Before, it asked `list_is_singular(&tgt->anon_vma_chain)` of the VMA that
    /// survives the merge, so a faulted range never merged into an unfaulted neighbour, and
    /// an unfaulted range never into a fork child's faulted one.
    pub anon_vma_merge_unfaulted_target: bool,
    /// A `FOLL_LONGTERM` pin of a writable shared mapping of a regular file fails in GUP
    /// (`writable_file_mapping_allowed`), and io_uring's buffer registration leaves the
    /// file check to GUP (6.4, "mm/gup: disallow FOLL_LONGTERM GUP-nonfast writing to
    /// file-backed mappings" and "io_uring: rsrc: delegate VMA file-backed check to GUP").
    /// Before, `io_pin_pages` pins everything and then refuses a buffer spanning different
    /// files (EINVAL) or any non-shmem file (EOPNOTSUPP).
    pub gup_longterm_file_check: bool,
    /// A `MREMAP_DONTUNMAP` move may merge the new range into the VMA it was copied from
    /// (its own source, left in place): 6.18 does. The VM oracle shows that Debian's 6.1
    /// and 6.12 kernels never do (a one-page move to the page right after, or right before,
    /// its unfaulted source stays a VMA of its own), while a plain MREMAP_FIXED move and a
    /// DONTUNMAP move next to another VMA merge alike on all three. The 6.18 behaviour came
    /// with the mremap rework of 6.16/6.17 (`vma_merge_copied_range`, `dontunmap_complete`);
    /// the exact commit is not identified.
    pub dontunmap_merges_source: bool,
    /// After a `MREMAP_DONTUNMAP` move of a whole VMA (its anon_vmas unlinked), the source
    /// keeps its `vm_pgoff`: 6.18's `dontunmap_complete` leaves it. Debian's 6.1 and 6.12
    /// kernels, read by the internal-state oracle (`--internal`, docs/internal.md), show the
    /// source re-linearised to `vm_start >> PAGE_SHIFT` (tests/kernels/
    /// dontunmap_keeps_source_pgoff.strace); the code that does it is not identified.
    pub dontunmap_keeps_source_pgoff: bool,
    /// A write fault on a COW-shared page of a large anonymous folio may reuse it when
    /// every reference is a mapping of this mm (`__wp_can_reuse_large_anon_folio`, 6.15,
    /// "mm: CONFIG_NO_PAGE_MAPCOUNT" series). Before (6.12's `wp_can_reuse_anon_folio`:
    /// "let's just consistently not reuse subpages"), the page is always copied into a new
    /// small folio; seen by the internal-state oracle (tests/kernels/wp_large_folio_copy.strace).
    pub wp_reuses_large_anon_folio: bool,
    /// mprotect drops `VM_ACCOUNT` (and its commit charge) when it makes an unfaulted
    /// anonymous VMA unwritable (6.6, "mm/mprotect: allow unfaulted VMAs to be unaccounted
    /// on mprotect()"). Before, the flag stays, so such a range no longer merges with a
    /// neighbour that was never writable.
    pub mprotect_unaccounts_unfaulted: bool,
    /// `userfaultfd_register`/`_unregister` merge with the page offset of the range's start.
    /// Linux 6.1 passes the VMA's own `vm_pgoff` to `vma_merge`, so a range that starts inside
    /// a VMA never merges with the next one; 6.12 has the right offset (its merges go through
    /// `vma_modify_flags_uffd`, since 6.7).
    pub uffd_merge_pgoff: bool,
    /// A write fault on the huge zero page's PMD maps a new THP (6.13, `do_huge_zero_wp_pmd`).
    /// Before, `do_huge_pmd_wp_page` falls back: the PMD is split into zero-page PTEs and only
    /// the written page is copied (seen on Debian's 6.12 with a GUP write pin).
    pub huge_zero_wp_thp: bool,
}

/// Linux 6.18: every switch on.
pub const V6_18: Profile = Profile {
    madv_guard: true,
    uffdio_move: true,
    mremap_multi_vma: true,
    mremap_checks_before_unmap: true,
    anon_vma_merge_unfaulted_target: true,
    gup_longterm_file_check: true,
    dontunmap_merges_source: true,
    dontunmap_keeps_source_pgoff: true,
    wp_reuses_large_anon_folio: true,
    mprotect_unaccounts_unfaulted: true,
    uffd_merge_pgoff: true,
    huge_zero_wp_thp: true,
};

/// Linux 6.12.
pub const V6_12: Profile = Profile {
    madv_guard: false,
    huge_zero_wp_thp: false,
    mremap_multi_vma: false,
    mremap_checks_before_unmap: false,
    anon_vma_merge_unfaulted_target: false,
    dontunmap_merges_source: false,
    dontunmap_keeps_source_pgoff: false,
    wp_reuses_large_anon_folio: false,
    ..V6_18
};

/// Linux 6.1.
pub const V6_1: Profile = Profile {
    uffdio_move: false,
    gup_longterm_file_check: false,
    mprotect_unaccounts_unfaulted: false,
    uffd_merge_pgoff: false,
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
