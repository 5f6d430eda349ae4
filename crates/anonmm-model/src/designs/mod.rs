//! The designs: how each `--policy` ([`Policy`]) reaches the kernel mirror, through one named
//! set of hooks, [`Design`], called where the kernel's code would call them.
//!
//! | hook | called from | kernel function it sits in |
//! |---|---|---|
//! | [`Design::mremap_relocate_flags`] | `check_mremap_params` (mremap.rs) | `check_mremap_params` |
//! | [`Design::should_relocate_anon`] | `reloc_plan` ← `move_vma` (relocate.rs, mremap.rs) | the series' `should_relocate_anon` in `move_vma` |
//! | [`Design::copy_vma_relocating`] | `copy_vma_relocating` ← `move_vma` | `copy_vma_and_data` → `copy_vma` (the move's target pgoff) |
//! | [`Design::is_mergeable_anon_vma`] | `is_mergeable_anon_vma` (merge.rs) | `is_mergeable_anon_vma`, the different-anon_vma case |
//! | [`Design::commit_merge`] | `vma_merge_existing_range` (merge.rs) | `commit_merge`, before the VMAs change |
//! | [`Design::move_vma_done`] | `move_vma` (mremap.rs), at its end | `move_vma` |
//! | [`Design::anon_mmap_pgoff`] | `do_mmap` (mmap.rs) | `do_mmap`'s `pgoff = addr >> PAGE_SHIFT` |
//!
//! Each design is a file: [`kernel`] (Linux 6.18: every hook at its default, which is what
//! the kernel does), [`stoakes`] (`relocate`, `relocate-all`), [`matena`], [`copy_shared`]
//! and [`auto`]. [`Policy`] dispatches each hook to its design with a `match` (no dynamic
//! call; the designs are unit-like values). The machinery the designs share (the relocation
//! walk and its undo, the page walk before it, the rewrite in place) is in
//! [`crate::relocate`].
//!
//! The policy probe ([`System::probe_policies`]) asks every hook call whether another
//! policy would answer (pure hooks) or act (`commit_merge_acts`, `move_vma_done_acts`, the
//! design a `copy_vma_relocating` runs) differently: until one would, every policy's state is
//! the same, and `replay --policy all` replays those steps once.
//!
//! To add a design: a variant of [`Policy`] (with its name in `POLICY_NAMES`, `parse` and
//! `Display`), a file here implementing the hooks it changes (and, for `commit_merge` and
//! `move_vma_done`, the predicate saying when it acts), its arm in `dispatch!`, and its row
//! in docs/policies.md.

pub(crate) mod auto;
pub(crate) mod copy_shared;
pub(crate) mod kernel;
pub(crate) mod matena;
pub(crate) mod stoakes;

use crate::merge::Vmg;
use crate::mm::{MmId, System};
use crate::mremap::Vrm;
use crate::policy::{Policy, RelocReason};
use crate::relocate::RelocMode;
use crate::types::{PgOff, VirtAddr};
use crate::vma::{VmFlags, VmaId};

/// What `should_relocate_anon` does with a VMA that may share folios with another process
/// (`vma_maybe_has_shared_anon_folios`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum SharedVma {
    /// Refuse the relocation up front (the 2025 series; Matěna's unshared-root rule).
    Refuse,
    /// Let the walk decide, folio by folio (a shared folio may be copied).
    Walk,
}

/// Where a relocating move puts the moved range: the outcome of
/// [`Design::copy_vma_relocating`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum MoveTarget {
    /// `copy_vma`'s ordinary merge worked: this VMA, nothing to relocate.
    Merged(VmaId),
    /// A VMA at the design's pgoff whose folios the walk rewrites, walked in `mode`.
    Relocate {
        /// The destination VMA (new, or a neighbour the range merged into).
        vma: VmaId,
        /// How the walk treats shared, pinned, swapped and partly covered folios.
        mode: RelocMode,
    },
}

/// The hooks through which a design changes the kernel's behaviour. Every default is what
/// Linux 6.18 does ([`kernel::Kernel`] overrides nothing).
pub(crate) trait Design: Copy {
    /// `check_mremap_params`: whether `MREMAP_RELOCATE_ANON` and `MREMAP_MUST_RELOCATE_ANON`
    /// exist (else EINVAL, as on every released kernel).
    fn mremap_relocate_flags(self) -> bool {
        false
    }

    /// `should_relocate_anon` (mremap `move_vma`), the design's part: whether a move with
    /// mremap `flags` tries to relocate a faulted anonymous VMA at all (None: a plain move),
    /// and what it does with a VMA that may share folios. The checks every design makes
    /// (VM_SPECIAL, unfaulted, multi-VMA moves) are `System::reloc_plan`'s.
    fn should_relocate_anon(self, flags: u64) -> Option<SharedVma> {
        let _ = flags;
        None
    }

    /// `copy_vma_and_data` → `copy_vma` of a move `should_relocate_anon` accepted: the
    /// destination VMA and the pgoff it gets (the design's target pgoff; `pgoff` is the one
    /// the kernel would keep), or why nothing is relocated (a plain move follows). May
    /// replace `*vmap` as `copy_vma` does.
    fn copy_vma_relocating(
        self,
        sys: &mut System,
        vmap: &mut VmaId,
        vrm: &Vrm,
        pgoff: PgOff,
    ) -> Result<MoveTarget, RelocReason> {
        let _ = (sys, vmap, vrm, pgoff);
        // Not reached: the kernel never relocates (should_relocate_anon says None).
        Err(RelocReason::NotAnon)
    }

    /// `is_mergeable_anon_vma`, the case of two different anon_vmas (the kernel refuses):
    /// whether `vmg` may merge into its neighbour all the same.
    fn is_mergeable_anon_vma(self, sys: &System, vmg: &Vmg) -> bool {
        let _ = (sys, vmg);
        false
    }

    /// `commit_merge` of `vma_merge_existing_range`, once `to` has the anon_vma it keeps
    /// (`dup_anon_vma`) and before the VMAs change: `[start, end)` of `from` is about to
    /// become part of `to`.
    fn commit_merge(
        self,
        sys: &mut System,
        mm: MmId,
        start: VirtAddr,
        end: VirtAddr,
        from: VmaId,
        to: VmaId,
    ) {
        let _ = (sys, mm, start, end, from, to);
    }

    /// Whether [`Design::commit_merge`] would change anything for `from` and `to` (the
    /// policy probe: a design that overrides `commit_merge` says when it acts).
    fn commit_merge_acts(self, sys: &System, from: VmaId, to: VmaId) -> bool {
        let _ = (sys, from, to);
        false
    }

    /// The end of `move_vma`, once the source is unmapped (or emptied by DONTUNMAP): the
    /// moved range starts at `new_addr`.
    fn move_vma_done(self, sys: &mut System, mm: MmId, new_addr: VirtAddr) {
        let _ = (sys, mm, new_addr);
    }

    /// Whether [`Design::move_vma_done`] would change anything (counters included) for a
    /// move to `new_addr` (the policy probe).
    fn move_vma_done_acts(self, sys: &System, mm: MmId, new_addr: VirtAddr) -> bool {
        let _ = (sys, mm, new_addr);
        false
    }

    /// `do_mmap` of a private anonymous mapping: the pgoff instead of the kernel's
    /// `addr >> PAGE_SHIFT`, if the design chooses one.
    fn anon_mmap_pgoff(
        self,
        sys: &System,
        mm: MmId,
        addr: VirtAddr,
        len: u64,
        flags: VmFlags,
    ) -> Option<PgOff> {
        let _ = (sys, mm, addr, len, flags);
        None
    }
}

/// Run `$call` with `$d` bound to the design of `$policy`.
macro_rules! dispatch {
    ($policy:expr, $d:ident => $call:expr) => {
        match $policy {
            Policy::Kernel => {
                let $d = kernel::Kernel;
                $call
            }
            Policy::Relocate => {
                let $d = stoakes::Stoakes { every_move: false };
                $call
            }
            Policy::RelocateAll => {
                let $d = stoakes::Stoakes { every_move: true };
                $call
            }
            Policy::Matena => {
                let $d = matena::Matena;
                $call
            }
            Policy::CopyShared => {
                let $d = copy_shared::CopyShared;
                $call
            }
            Policy::Auto { copy_budget } => {
                let $d = auto::Auto { copy_budget };
                $call
            }
        }
    };
}

impl Design for Policy {
    #[inline]
    fn mremap_relocate_flags(self) -> bool {
        dispatch!(self, d => d.mremap_relocate_flags())
    }

    #[inline]
    fn should_relocate_anon(self, flags: u64) -> Option<SharedVma> {
        dispatch!(self, d => d.should_relocate_anon(flags))
    }

    #[inline]
    fn copy_vma_relocating(
        self,
        sys: &mut System,
        vmap: &mut VmaId,
        vrm: &Vrm,
        pgoff: PgOff,
    ) -> Result<MoveTarget, RelocReason> {
        dispatch!(self, d => d.copy_vma_relocating(sys, vmap, vrm, pgoff))
    }

    #[inline]
    fn is_mergeable_anon_vma(self, sys: &System, vmg: &Vmg) -> bool {
        dispatch!(self, d => d.is_mergeable_anon_vma(sys, vmg))
    }

    #[inline]
    fn commit_merge(
        self,
        sys: &mut System,
        mm: MmId,
        start: VirtAddr,
        end: VirtAddr,
        from: VmaId,
        to: VmaId,
    ) {
        dispatch!(self, d => d.commit_merge(sys, mm, start, end, from, to))
    }

    #[inline]
    fn commit_merge_acts(self, sys: &System, from: VmaId, to: VmaId) -> bool {
        dispatch!(self, d => d.commit_merge_acts(sys, from, to))
    }

    #[inline]
    fn move_vma_done(self, sys: &mut System, mm: MmId, new_addr: VirtAddr) {
        dispatch!(self, d => d.move_vma_done(sys, mm, new_addr))
    }

    #[inline]
    fn move_vma_done_acts(self, sys: &System, mm: MmId, new_addr: VirtAddr) -> bool {
        dispatch!(self, d => d.move_vma_done_acts(sys, mm, new_addr))
    }

    #[inline]
    fn anon_mmap_pgoff(
        self,
        sys: &System,
        mm: MmId,
        addr: VirtAddr,
        len: u64,
        flags: VmFlags,
    ) -> Option<PgOff> {
        dispatch!(self, d => d.anon_mmap_pgoff(sys, mm, addr, len, flags))
    }
}

/// The design a policy's [`Design::copy_vma_relocating`] runs (`relocate` and
/// `relocate-all` share theirs): two policies with the same key do the same there.
pub(crate) fn copy_vma_key(p: Policy) -> Policy {
    match p {
        Policy::RelocateAll => Policy::Relocate,
        other => other,
    }
}

/// The policy probe ([`crate::policy::PolicyProbe`]): at every hook call, each design's
/// answer (a pure hook) or whether it would act (a hook that changes state) is compared
/// with the model's own policy's; the first difference is noted. The hooks are called
/// where the kernel mirror calls them, so a step without a difference leaves the state every
/// probed policy would have left.
impl System {
    /// Start comparing `policies` with [`System::policy`] at every design hook call.
    pub fn probe_policies(&mut self, policies: &[Policy]) {
        self.probe = Some(Box::new(crate::policy::PolicyProbe {
            policies: policies.to_vec(),
            diverged: std::cell::Cell::new(false),
            hook: std::cell::Cell::new(None),
            differs: policies.iter().map(|_| std::cell::Cell::new(false)).collect(),
            differing: std::cell::Cell::new(0),
        }));
    }

    /// Per probed policy: whether it would have differed at a hook call since the probe
    /// started (never the model's own policy).
    pub fn probe_differs(&self) -> Vec<bool> {
        self.probe.as_ref().map_or_else(Vec::new, |p| p.differs.iter().map(std::cell::Cell::get).collect())
    }

    /// How many probed policies have differed ([`System::probe_differs`]).
    pub fn probe_differing(&self) -> usize {
        self.probe.as_ref().map_or(0, |p| p.differing.get())
    }

    /// Whether a probed policy would have differed at a hook call since the probe started.
    pub fn probe_diverged(&self) -> bool {
        self.probe.as_ref().is_some_and(|p| p.diverged.get())
    }

    /// Stop the probe.
    pub fn probe_off(&mut self) {
        self.probe = None;
    }

    /// The hook at which a probed policy first differed.
    pub fn probe_hook(&self) -> Option<&'static str> {
        self.probe.as_ref().and_then(|p| p.hook.get())
    }

    /// At a call of `hook`: `sig` of each probed policy against the model's own (one branch
    /// when the probe is off).
    #[inline]
    pub(crate) fn probe<T: PartialEq>(&self, hook: &'static str, sig: impl Fn(Policy) -> T) {
        if let Some(p) = &self.probe {
            probe_note(p, self.policy, hook, &sig);
        }
    }
}

#[cold]
#[inline(never)]
fn probe_note<T: PartialEq>(
    p: &crate::policy::PolicyProbe,
    own: Policy,
    hook: &'static str,
    sig: &dyn Fn(Policy) -> T,
) {
    let mut mine = None;
    for (&q, differs) in p.policies.iter().zip(&p.differs) {
        if q == own || differs.get() {
            continue;
        }
        let mine = mine.get_or_insert_with(|| sig(own));
        if sig(q) != *mine {
            differs.set(true);
            p.differing.set(p.differing.get() + 1);
            if !p.diverged.replace(true) {
                p.hook.set(Some(hook));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The policy probe fires at the hook where a design differs, and not where none does;
    //! where it did not fire, every probed policy leaves the same state.
    use super::*;
    use crate::abi::*;
    use crate::policy::ALL_POLICIES;
    use crate::types::{PAGE_SIZE, Pid};

    const P: Pid = Pid(1);
    const RW: u64 = PROT_READ | PROT_WRITE;
    const X: u64 = 0x2000_0000_0000;
    const LEN: u64 = 4 * PAGE_SIZE;

    fn map(sys: &mut System, addr: u64, len: u64) {
        let flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE;
        assert_eq!(sys.sys_mmap(P, addr, len, RW, flags, -1, 0), Ok(addr));
    }

    fn write(sys: &mut System, addr: u64, len: u64) {
        sys.touch(P, addr, len, true, &|a| a).expect("touch").expect("no signal");
    }

    /// A system under `policy` set up by `setup` (probe off), then `call` with the probe on
    /// over `policies`: the hook the probe noted (None: no policy differed). Where none did,
    /// `call` under each policy of `policies` from the same state ends in the same state
    /// (`/proc/pid/maps`, the folios' indices and mappings, the counters).
    fn probe(
        policy: Policy,
        policies: &[Policy],
        setup: &dyn Fn(&mut System),
        call: &dyn Fn(&mut System),
    ) -> Option<&'static str> {
        let run = |p: Policy, probed: bool| {
            let mut sys = System { policy, ..System::default() };
            sys.spawn(P).expect("spawn");
            setup(&mut sys);
            // As `replay --policy all` forks: the same state, another policy from here on.
            sys.policy = p;
            if probed {
                sys.probe_policies(policies);
            }
            call(&mut sys);
            assert_eq!(sys.check(), Ok(()));
            sys
        };
        let sys = run(policy, true);
        let hook = sys.probe_hook();
        assert_eq!(sys.probe_diverged(), hook.is_some());
        if hook.is_none() {
            let state = |s: &System| {
                let folios: Vec<String> =
                    s.mem.folios.iter().map(|(_, f)| format!("{:?} {:?}", f.index, f.mapping)).collect();
                (s.maps(P), folios, format!("{:?}", s.trace.stats))
            };
            for &p in policies {
                assert_eq!(state(&run(p, false)), state(&sys), "{p} differs where the probe saw nothing");
            }
        }
        hook
    }

    #[test]
    fn mremap_relocate_flags_only_with_the_flags() {
        let setup = |s: &mut System| {
            map(s, X, LEN);
            write(s, X, LEN);
        };
        let mv = |flags: u64| {
            move |s: &mut System| {
                let _ = s.sys_mremap(P, X, LEN, LEN, MREMAP_MAYMOVE | MREMAP_FIXED | flags, X + 0x100_0000);
            }
        };
        let set = [Policy::Kernel, Policy::Relocate];
        assert_eq!(
            probe(Policy::Kernel, &set, &setup, &mv(MREMAP_RELOCATE_ANON)),
            Some("mremap_relocate_flags")
        );
        // Without flag 8 or 16, `relocate` is the kernel.
        assert_eq!(probe(Policy::Kernel, &set, &setup, &mv(0)), None);
    }

    #[test]
    fn should_relocate_anon_only_for_a_faulted_vma() {
        let set = [Policy::Kernel, Policy::Matena, Policy::CopyShared];
        let mv = |s: &mut System| {
            s.sys_mremap(P, X, LEN, LEN, MREMAP_MAYMOVE | MREMAP_FIXED, X + 0x100_0000).expect("moved");
        };
        let faulted = |s: &mut System| {
            map(s, X, LEN);
            write(s, X, LEN);
        };
        assert_eq!(probe(Policy::Kernel, &set, &faulted, &mv), Some("should_relocate_anon"));
        // Per policy: `relocate` without the flags goes on as the kernel.
        let mut sys = System::default();
        sys.spawn(P).expect("spawn");
        faulted(&mut sys);
        sys.probe_policies(&[Policy::Kernel, Policy::Relocate, Policy::Matena]);
        mv(&mut sys);
        assert_eq!(sys.probe_differs(), [false, false, true]);
        assert_eq!(sys.probe_differing(), 1);
        // Unfaulted: every design moves it as the kernel does.
        assert_eq!(probe(Policy::Kernel, &set, &|s| map(s, X, LEN), &mv), None);
    }

    #[test]
    fn copy_vma_relocating_by_design() {
        let faulted = |s: &mut System| {
            map(s, X, LEN);
            write(s, X, LEN);
        };
        let mv = |flags: u64| {
            move |s: &mut System| {
                s.sys_mremap(P, X, LEN, LEN, MREMAP_MAYMOVE | MREMAP_FIXED | flags, X + 0x100_0000)
                    .expect("moved");
            }
        };
        // Both relocate every move of an unshared VMA, each with its own copy_vma.
        let set = [Policy::RelocateAll, Policy::Matena];
        assert_eq!(probe(Policy::RelocateAll, &set, &faulted, &mv(0)), Some("copy_vma_relocating"));
        // The same design asked by the flag.
        let set = [Policy::Relocate, Policy::RelocateAll];
        assert_eq!(probe(Policy::Relocate, &set, &faulted, &mv(MREMAP_RELOCATE_ANON)), None);
    }

    /// Two faulted neighbours with their own anon_vmas (VM_DONTCOPY kept the second from
    /// reusing the first's), made compatible by MADV_DOFORK: no mremap anywhere.
    fn neighbours(s: &mut System) {
        map(s, X, LEN);
        s.sys_madvise(P, X, LEN, MADV_DONTFORK).expect("madvise");
        map(s, X + LEN, LEN);
        write(s, X, 2 * LEN);
    }

    #[test]
    fn is_mergeable_anon_vma_without_mremap() {
        let dofork = |s: &mut System| {
            s.sys_madvise(P, X, LEN, MADV_DOFORK).expect("madvise");
        };
        assert_eq!(probe(Policy::Kernel, &ALL_POLICIES, &neighbours, &dofork), Some("is_mergeable_anon_vma"));
        // Every design but Matěna's refuses two anon_vmas.
        let others: Vec<Policy> = ALL_POLICIES.into_iter().filter(|&p| p != Policy::Matena).collect();
        assert_eq!(probe(Policy::Kernel, &others, &neighbours, &dofork), None);
    }

    #[test]
    fn commit_merge_acts_on_two_anon_vmas() {
        let mut sys = System::default();
        sys.spawn(P).expect("spawn");
        neighbours(&mut sys);
        map(&mut sys, X + 0x100_0000, LEN);
        let mm = sys.vm.mm_of(P).expect("mm");
        let at = |s: &System, a: u64| s.vm.mms[mm].vma_lookup(VirtAddr(a)).expect("vma");
        let (a, b, unfaulted) = (at(&sys, X), at(&sys, X + LEN), at(&sys, X + 0x100_0000));
        let fired = |sys: &mut System, from: VmaId, to: VmaId| {
            sys.probe_policies(&ALL_POLICIES);
            sys.probe("commit_merge", |p| p.commit_merge_acts(sys, from, to));
            sys.probe_hook()
        };
        assert_eq!(fired(&mut sys, a, b), Some("commit_merge"));
        assert_eq!(fired(&mut sys, a, unfaulted), None);
        assert_eq!(fired(&mut sys, a, a), None);
    }

    #[test]
    fn anon_mmap_pgoff_only_where_the_frame_differs() {
        let set = [Policy::Kernel, Policy::Auto { copy_budget: 0 }];
        let next_to = |s: &mut System| map(s, X + 0x100_0000 + LEN, LEN);
        // A neighbour that moved keeps its old frame: auto continues it, the kernel does not.
        let moved = |s: &mut System| {
            map(s, X, LEN);
            write(s, X, LEN);
            s.sys_mremap(P, X, LEN, LEN, MREMAP_MAYMOVE | MREMAP_FIXED, X + 0x100_0000).expect("moved");
        };
        assert_eq!(probe(Policy::Kernel, &set, &moved, &next_to), Some("anon_mmap_pgoff"));
        // A neighbour that never moved: both choose `addr >> PAGE_SHIFT`.
        let stayed = |s: &mut System| {
            map(s, X + 0x100_0000, LEN);
            write(s, X + 0x100_0000, LEN);
        };
        assert_eq!(probe(Policy::Kernel, &set, &stayed, &next_to), None);
    }

    #[test]
    fn move_vma_done_where_auto_stitches() {
        let set = [Policy::Kernel, Policy::Auto { copy_budget: 0 }];
        // A faulted VMA moved under the kernel (it keeps its frame), and an unfaulted one.
        let setup = |s: &mut System| {
            map(s, X, LEN);
            write(s, X, LEN);
            s.sys_mremap(P, X, LEN, LEN, MREMAP_MAYMOVE | MREMAP_FIXED, X + 0x100_0000).expect("moved");
            map(s, X + 0x200_0000, LEN);
        };
        // Moved unfaulted next to it: auto relocates the neighbour in place to merge.
        let beside = |s: &mut System| {
            s.sys_mremap(P, X + 0x200_0000, LEN, LEN, MREMAP_MAYMOVE | MREMAP_FIXED, X + 0x100_0000 + LEN)
                .expect("moved");
        };
        assert_eq!(probe(Policy::Kernel, &set, &setup, &beside), Some("move_vma_done"));
        let alone = |s: &mut System| {
            s.sys_mremap(P, X + 0x200_0000, LEN, LEN, MREMAP_MAYMOVE | MREMAP_FIXED, X + 0x300_0000)
                .expect("moved");
        };
        assert_eq!(probe(Policy::Kernel, &set, &setup, &alone), None);
    }
}
