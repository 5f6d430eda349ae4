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

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.version())
    }
}

/// Where a kernel's behaviour differs from 6.18's, as named switches (`true` = the 6.18
/// behaviour is there). Each names the release and commit that brought it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Profile {
    /// `MADV_GUARD_INSTALL`/`MADV_GUARD_REMOVE` exist (6.13, commit 662df3e5c376 "mm:
    /// madvise: implement lightweight guard page mechanism"). Before, `madvise_behavior_valid`
    /// rejects the advice with EINVAL.
    pub madv_guard: bool,
    /// `UFFDIO_MOVE` exists (6.8, commit adef440691ba "userfaultfd: UFFDIO_MOVE uABI").
    /// Before, `userfaultfd_ioctl` answers the unknown command with EINVAL and `UFFDIO_API`
    /// does not offer `UFFD_FEATURE_MOVE`.
    pub uffdio_move: bool,
    /// mremap moves several VMAs at once (6.17, commit d23cb648e365 "mm/mremap: permit
    /// mremap() move of multiple VMAs"). Before, a move whose source range spans more than
    /// one VMA fails with EFAULT.
    pub mremap_multi_vma: bool,
}

/// Linux 6.18: every switch on.
pub const V6_18: Profile = Profile { madv_guard: true, uffdio_move: true, mremap_multi_vma: true };

/// Linux 6.12.
pub const V6_12: Profile = Profile { mremap_multi_vma: false, ..V6_18 };

/// Linux 6.1.
pub const V6_1: Profile = Profile { madv_guard: false, uffdio_move: false, ..V6_12 };

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
