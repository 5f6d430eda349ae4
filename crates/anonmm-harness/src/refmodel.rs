//! A plain reference model of what each process's memory holds, kept beside the real model
//! and compared with it by the checker: page contents must never be lost or mixed up.
//!
//! It knows nothing of VMAs, anon_vmas, folios or page tables: only which ranges are mapped,
//! to what (private anonymous memory, a private or shared view of a file or shmem object at an
//! offset), and what was written. It follows each call's documented effect on contents, given
//! the call's outcome in the model, so a model bug that loses, leaks or mixes data shows up as
//! a disagreement.

use std::collections::BTreeMap;

use crate::abi::*;
use crate::mm::System;
use crate::script::{Call, Expect, RecordedVma, Step};
use crate::types::{PAGE_SIZE, Pid, VirtAddr};

/// What a mapped range shows.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Backing {
    /// Private anonymous memory: zero until written.
    Anon,
    /// A private view of object `obj` from page offset `pgoff`: the object's contents until
    /// written (copy on write).
    FilePrivate { obj: u64, pgoff: u64 },
    /// A shared view of object `obj` from `pgoff`: reads and writes go to the object.
    Shared { obj: u64, pgoff: u64 },
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Seg {
    end: u64,
    back: Backing,
    /// MADV_DONTFORK / MADV_WIPEONFORK, which decide what a child sees.
    dontcopy: bool,
    wipe: bool,
    /// MAP_GROWSDOWN: a successful touch just below grows it down.
    growsdown: bool,
    /// `VM_LOCKED` without `VM_LOCKONFAULT` (MAP_LOCKED, mlock, mlockall without ONFAULT):
    /// mprotect making it writable, or mremap growing it, populates it, write-faulting
    /// (`populate_vma_page_range` does nothing for `VM_LOCKONFAULT`).
    locked: bool,
}

impl Seg {
    /// The same segment seen from `at` (offsets advance with the address).
    fn from(self, start: u64, at: u64) -> Seg {
        let d = (at - start) / PAGE_SIZE;
        let back = match self.back {
            Backing::Anon => Backing::Anon,
            Backing::FilePrivate { obj, pgoff } => Backing::FilePrivate { obj, pgoff: pgoff + d },
            Backing::Shared { obj, pgoff } => Backing::Shared { obj, pgoff: pgoff + d },
        };
        Seg { back, ..self }
    }
}

#[derive(Clone, Debug, Default)]
struct Space {
    segs: BTreeMap<u64, Seg>,
    /// Pages written through a private mapping: their own contents.
    private: BTreeMap<u64, u64>,
    brk: u64,
    /// `mlockall(MCL_FUTURE)` (without MCL_ONFAULT): new mappings are locked and populated.
    def_locked: bool,
    /// `mlockall(MCL_FUTURE | MCL_ONFAULT)`: new mappings are `VM_LOCKONFAULT`, which no
    /// populate touches (MAP_LOCKED and MAP_POPULATE included).
    def_onfault: bool,
}

/// The reference model: every process's mapped ranges and the contents written through
/// them, plus the files and shmem objects they view.
#[derive(Clone, Debug, Default)]
pub struct RefModel {
    spaces: BTreeMap<Pid, Space>,
    /// Object contents: (object, page offset) → tag.
    objects: BTreeMap<(u64, u64), u64>,
    /// Object sizes in pages (files and shmem objects).
    sizes: BTreeMap<u64, u64>,
    /// Regular files' sizes in bytes, once set by `ftruncate`: where the EOF page's
    /// zeroing starts.
    eof: BTreeMap<u64, u64>,
    /// Regular files by path, and open descriptors per process.
    files: BTreeMap<String, u64>,
    fds: BTreeMap<Pid, BTreeMap<i64, u64>>,
    next_obj: u64,
    /// Threads (CLONE_VM children) see their leader's address space.
    threads: BTreeMap<Pid, Pid>,
    /// CLONE_FILES children use the descriptors of the process named here.
    fd_owner: BTreeMap<Pid, Pid>,
    /// Set when a call's effect on contents cannot be followed (a multi-VMA mremap that
    /// failed halfway); checking stops then rather than report a false difference.
    pub lost_track: Option<String>,
    /// Contents of pages given up with MADV_FREE: the kernel may keep or drop each (it drops
    /// swapped-out ones at once), so a page may still show one of these, or zero.
    lazy_tags: std::collections::BTreeSet<u64>,
    /// The kernel unmaps an MREMAP_FIXED destination (and a shrink's tail) before it checks
    /// the source (before 6.17: `Profile::mremap_checks_before_unmap` off), so a failed
    /// move may have unmapped them.
    pub unmaps_before_checks: bool,
    /// An extending ftruncate zeroes the old EOF page past the old size
    /// (`Profile::ext4_truncate_up_zeroes_eof`).
    pub truncate_up_zeroes_eof: bool,
    /// The break of a fresh mm (the first process's, and an exec's).
    initial_brk: u64,
}

impl Space {
    /// Split so that `a` is a segment boundary.
    fn split_at(&mut self, a: u64) {
        let Some((&s, &seg)) = self.segs.range(..a).next_back() else { return };
        if seg.end > a {
            self.segs.insert(s, Seg { end: a, ..seg });
            self.segs.insert(a, seg.from(s, a));
        }
    }
    fn remove(&mut self, start: u64, end: u64) -> Vec<(u64, Seg)> {
        if start >= end {
            return Vec::new();
        }
        self.split_at(start);
        self.split_at(end);
        let keys: Vec<u64> = self.segs.range(start..end).map(|(k, _)| *k).collect();
        let out = keys.iter().map(|k| (*k, self.segs.remove(k).expect("seg"))).collect();
        let pages: Vec<u64> = self.private.range(start..end).map(|(k, _)| *k).collect();
        for p in pages {
            self.private.remove(&p);
        }
        out
    }
    fn insert(&mut self, start: u64, end: u64, back: Backing) {
        self.remove(start, end);
        self.segs
            .insert(start, Seg { end, back, dontcopy: false, wipe: false, growsdown: false, locked: false });
    }
    /// Insert with the fork flags of `like` (a grown tail keeps its VMA's flags).
    fn insert_like(&mut self, start: u64, end: u64, like: Seg) {
        self.remove(start, end);
        self.segs.insert(start, Seg { end, ..like });
    }
    fn seg_at(&self, a: u64) -> Option<(u64, Seg)> {
        self.segs.range(..=a).next_back().filter(|(_, s)| s.end > a).map(|(k, s)| (*k, *s))
    }
    fn mapped_runs(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let mut runs: Vec<(u64, u64)> = Vec::new();
        if start >= end {
            return runs;
        }
        let first =
            self.segs.range(..start).next_back().filter(|(_, s)| s.end > start).map(|(k, s)| (*k, s.end));
        for (s, e) in first.into_iter().chain(self.segs.range(start..end).map(|(k, s)| (*k, s.end))) {
            let (s, e) = (s.max(start), e.min(end));
            match runs.last_mut() {
                Some(r) if r.1 == s => r.1 = e,
                _ => runs.push((s, e)),
            }
        }
        runs
    }
}

fn pages(len: u64) -> u64 {
    len.div_ceil(PAGE_SIZE)
}

/// PAGE_ALIGN, saturating: the calls it is applied to were accepted by the model, so their
/// ranges do not wrap; saturation only keeps arguments the model refused from panicking.
fn page_align(x: u64) -> u64 {
    x.saturating_add(PAGE_SIZE - 1) & !(PAGE_SIZE - 1)
}

impl RefModel {
    /// A reference model of one process, `first`, with nothing mapped and its break at `brk`.
    pub fn new(first: Pid, brk: u64) -> RefModel {
        let mut r = RefModel { initial_brk: brk, ..RefModel::default() };
        r.spaces.insert(first, Space { brk, ..Default::default() });
        r
    }

    fn new_obj(&mut self) -> u64 {
        self.next_obj += 1;
        self.next_obj
    }

    /// What a reader of `a` in `pid` sees.
    fn read(&self, pid: Pid, a: u64) -> Option<u64> {
        let sp = self.spaces.get(&pid)?;
        let (s, seg) = sp.seg_at(a)?;
        if let Some(&t) = sp.private.get(&a) {
            return Some(t);
        }
        Some(match seg.from(s, a).back {
            Backing::Anon => 0,
            Backing::FilePrivate { obj, pgoff } | Backing::Shared { obj, pgoff } => {
                self.objects.get(&(obj, pgoff)).copied().unwrap_or(0)
            }
        })
    }

    /// Write faults over `[start, end)` in order (populating): each private file page not
    /// copied yet becomes a private copy of what it shows; stops at a page outside any mapping
    /// or a file page beyond EOF, where the fault fails.
    fn cow_copies(&mut self, pid: Pid, start: u64, end: u64) {
        if end.saturating_sub(start) > crate::fault::MAX_FAULT_BYTES {
            // The model does not populate that much either (`not modelled`); page by page
            // this would not finish.
            self.lost_track.get_or_insert_with(|| "a populate of more than 64 GiB".into());
            return;
        }
        let mut copies = Vec::new();
        let mut a = start;
        while a < end {
            let Some(sp) = self.spaces.get(&pid) else { return };
            let Some((s, seg)) = sp.seg_at(a) else { break };
            if let Backing::FilePrivate { obj, pgoff } | Backing::Shared { obj, pgoff } = seg.from(s, a).back
                && pgoff >= self.sizes.get(&obj).copied().unwrap_or(0)
            {
                break;
            }
            if matches!(seg.back, Backing::FilePrivate { .. }) && !sp.private.contains_key(&a) {
                copies.push((a, self.read(pid, a).unwrap_or(0)));
            }
            a += PAGE_SIZE;
        }
        if let Some(sp) = self.spaces.get_mut(&pid) {
            sp.private.extend(copies);
        }
    }

    /// A touch got past every unmapped page before where it stopped (`stop`: `None` when it
    /// worked, else the page that signalled, if any): each such hole lay below a MAP_GROWSDOWN
    /// segment, which grew down to the hole's first page (`expand_downwards`; a refused growth
    /// is a signal at that page, handled by `apply`).
    fn grow_for_touch(&mut self, pid: Pid, addr: u64, len: u64, stop: Option<Option<u64>>) {
        let start = addr & !(PAGE_SIZE - 1);
        let reach = match stop {
            None => page_align(addr.saturating_add(len)),
            Some(at) => at.unwrap_or(start),
        };
        let Some(sp) = self.spaces.get_mut(&pid) else { return };
        let mut a = start;
        while a < reach {
            if let Some((_, seg)) = sp.seg_at(a) {
                a = seg.end;
                continue;
            }
            let Some((&s, &seg)) = sp.segs.range(a..).next() else { return };
            if seg.growsdown {
                // The segment now starts lower (private anonymous: no offset to move).
                sp.segs.remove(&s);
                sp.segs.insert(a, seg);
            }
            a = s;
        }
    }

    /// Follow one step, given the outcome the model gave it. A touch that raised a signal
    /// wrote the pages before `signal_at`, the page whose fault raised it (a program faults
    /// page by page; only the model knows permissions, so it says where the touch stopped).
    pub fn apply(
        &mut self,
        step: &Step,
        outcome: &Expect,
        signal_at: Option<u64>,
        tag_of: &dyn Fn(u64) -> u64,
    ) {
        // Whose descriptor table this task uses.
        let fdp = self.fd_owner.get(&step.pid).copied().unwrap_or(step.pid);
        if let Call::ExitGroup { .. } = step.call {
            // A table goes with its last user.
            if self.fd_owner.remove(&step.pid).is_none() && !self.fd_owner.values().any(|&o| o == step.pid) {
                self.fds.remove(&step.pid);
            }
            if self.threads.remove(&step.pid).is_some() {
                return;
            }
        }
        let pid = self.threads.get(&step.pid).copied().unwrap_or(step.pid);
        let ok = |o: &Expect| matches!(o, Expect::Value(_));
        if let Call::Touch { addr, len, .. } = step.call {
            self.grow_for_touch(pid, addr, len, if ok(outcome) { None } else { Some(signal_at) });
        }
        match &step.call {
            Call::Mmap { addr, len, flags, fd, off, prot } => {
                // A file MAP_SYNC refused by ext4 after MAP_FIXED cleared the range: a gap.
                if matches!(outcome, Expect::Err(crate::errno::Errno::EOPNOTSUPP))
                    && flags & (MAP_FIXED | MAP_SYNC) == MAP_FIXED | MAP_SYNC
                    && (flags & MAP_TYPE != MAP_SHARED_VALIDATE || flags & !(LEGACY_MAP_MASK | MAP_SYNC) == 0)
                    && let Some(sp) = self.spaces.get_mut(&pid)
                {
                    sp.remove(*addr, addr.saturating_add(page_align(*len)));
                    return;
                }
                let Expect::Value(a) = *outcome else { return };
                let end = a.saturating_add(page_align(*len));
                let back = if flags & MAP_ANONYMOUS != 0 {
                    if flags & MAP_TYPE == MAP_PRIVATE {
                        Backing::Anon
                    } else {
                        let obj = self.new_obj();
                        self.sizes.insert(obj, pages(*len));
                        Backing::Shared { obj, pgoff: 0 }
                    }
                } else {
                    let Some(obj) = self.fds.get(&fdp).and_then(|f| f.get(fd)).copied() else { return };
                    if flags & MAP_TYPE == MAP_PRIVATE {
                        Backing::FilePrivate { obj, pgoff: off / PAGE_SIZE }
                    } else {
                        Backing::Shared { obj, pgoff: off / PAGE_SIZE }
                    }
                };
                if let Some(sp) = self.spaces.get_mut(&pid) {
                    sp.insert(a, end, back);
                    if let Some(s) = sp.segs.get_mut(&a) {
                        s.growsdown = flags & MAP_GROWSDOWN != 0;
                        s.locked = flags & MAP_LOCKED != 0;
                    }
                }
                // Populating a writable private file mapping write-faults it: each page up to
                // EOF becomes a private copy of what the file holds now.
                let def_locked = self.spaces.get(&pid).is_some_and(|sp| sp.def_locked);
                if def_locked && let Some(s) = self.spaces.get_mut(&pid).and_then(|sp| sp.segs.get_mut(&a)) {
                    s.locked = true;
                }
                let def_onfault = self.spaces.get(&pid).is_some_and(|sp| sp.def_onfault);
                if def_onfault && let Some(s) = self.spaces.get_mut(&pid).and_then(|sp| sp.segs.get_mut(&a)) {
                    s.locked = false;
                }
                let populate = !def_onfault
                    && (flags & MAP_LOCKED != 0
                        || def_locked
                        || flags & (MAP_POPULATE | MAP_NONBLOCK) == MAP_POPULATE);
                if populate && prot & PROT_WRITE != 0 && matches!(back, Backing::FilePrivate { .. }) {
                    self.cow_copies(pid, a, end);
                }
            }
            Call::Madvise { addr, len, advice: MADV_POPULATE_WRITE } => {
                let (start, end) = (*addr, addr.saturating_add(page_align(*len)));
                if matches!(outcome, Expect::Err(crate::errno::Errno::EINVAL)) {
                    // Refused at a VMA after populating those before it, which permissions
                    // (not followed here) decide.
                    self.lost_track
                        .get_or_insert_with(|| "a MADV_POPULATE_WRITE was refused part way".into());
                    return;
                }
                self.cow_copies(pid, start, end);
            }
            // mprotect_fixup: a locked private VMA that becomes writable is populated
            // (`populate_vma_page_range`, write faults: private copies of the file's pages).
            Call::Mprotect { addr, len, prot } if ok(outcome) && prot & PROT_WRITE != 0 => {
                let end = addr.saturating_add(page_align(*len));
                let locked: Vec<(u64, u64)> = self.spaces.get(&pid).map_or_else(Vec::new, |sp| {
                    sp.segs
                        .range(..end)
                        .filter(|(_, g)| {
                            g.end > *addr && g.locked && matches!(g.back, Backing::FilePrivate { .. })
                        })
                        .map(|(&st, g)| (st.max(*addr), g.end.min(end)))
                        .collect()
                });
                for (a, b) in locked {
                    self.cow_copies(pid, a, b);
                }
            }
            // mlock_fixup sets or clears VM_LOCKED on the range (on every VMA for
            // mlockall/munlockall), and the populate write-faults writable private file
            // mappings: private copies. The protections that decide it are not followed here.
            Call::Mlock { .. } | Call::Munlock { .. } | Call::Mlockall { .. } | Call::Munlockall => {
                let (start, end, lock) = match step.call {
                    Call::Mlock { addr, len, flags } => {
                        let onfault = flags.is_some_and(|f| f & MLOCK_ONFAULT != 0);
                        (addr & !(PAGE_SIZE - 1), addr.saturating_add(len), Some(!onfault))
                    }
                    Call::Munlock { addr, len } => (addr & !(PAGE_SIZE - 1), addr.saturating_add(len), None),
                    Call::Mlockall { flags } => {
                        if let Some(sp) = self.spaces.get_mut(&pid) {
                            sp.def_locked = flags & (MCL_FUTURE | MCL_ONFAULT) == MCL_FUTURE;
                            sp.def_onfault = flags & (MCL_FUTURE | MCL_ONFAULT) == MCL_FUTURE | MCL_ONFAULT;
                        }
                        let current = flags & MCL_CURRENT != 0;
                        (0, u64::MAX, current.then_some(flags & MCL_ONFAULT == 0))
                    }
                    _ => {
                        if let Some(sp) = self.spaces.get_mut(&pid) {
                            sp.def_locked = false;
                            sp.def_onfault = false;
                        }
                        (0, u64::MAX, None)
                    }
                };
                let end = page_align(end.min(u64::MAX - PAGE_SIZE));
                let Some(sp) = self.spaces.get_mut(&pid) else { return };
                if lock.is_some() || matches!(step.call, Call::Munlock { .. } | Call::Munlockall) {
                    sp.split_at(start);
                    sp.split_at(end);
                    for (_, g) in sp.segs.range_mut(start..end) {
                        g.locked = lock == Some(true);
                    }
                }
                if lock == Some(true)
                    && sp.segs.range(start..end).any(|(_, g)| matches!(g.back, Backing::FilePrivate { .. }))
                {
                    self.lost_track.get_or_insert_with(|| "mlock populated a private file mapping".into());
                }
            }
            Call::Munmap { addr, len } if ok(outcome) => {
                if let Some(sp) = self.spaces.get_mut(&pid) {
                    sp.remove(*addr, addr.saturating_add(page_align(*len)));
                }
            }
            Call::Mremap { old_addr, old_len, new_len, flags, new_addr } => {
                self.apply_mremap(
                    pid,
                    *old_addr,
                    page_align(*old_len),
                    page_align(*new_len),
                    *flags,
                    *new_addr,
                    outcome,
                );
            }
            Call::Madvise { addr, len, advice: MADV_REMOVE } => {
                // A hole punched in the file (or shmem) behind each shared view: it reads as
                // zero there, in every view; private copies stay. A refusal after some VMAs
                // were done leaves an unknown prefix punched.
                let (start, end) = (*addr, addr.saturating_add(page_align(*len)));
                let Some(sp) = self.spaces.get(&pid) else { return };
                // Per shared segment, the object and its page range (a range can be huge:
                // walk segments, not pages).
                let mut holes = Vec::new();
                for (rs, re) in sp.mapped_runs(start, end) {
                    let mut a = rs;
                    while a < re {
                        let Some((s, seg)) = sp.seg_at(a) else { break };
                        let e = seg.end.min(re);
                        if let Backing::Shared { obj, pgoff } = seg.from(s, a).back {
                            holes.push((obj, pgoff, pgoff + (e - a) / PAGE_SIZE));
                        }
                        a = e;
                    }
                }
                if !matches!(outcome, Expect::Value(_) | Expect::Err(crate::errno::Errno::ENOMEM)) {
                    if !holes.is_empty() {
                        self.lost_track.get_or_insert_with(|| "a MADV_REMOVE failed part way".into());
                    }
                    return;
                }
                for (obj, lo, hi) in holes {
                    let gone: Vec<(u64, u64)> =
                        self.objects.range((obj, lo)..(obj, hi)).map(|(k, _)| *k).collect();
                    for k in gone {
                        self.objects.remove(&k);
                    }
                }
            }
            Call::Madvise { addr, len, advice } => {
                // Effects apply to the mapped parts even when a hole makes the call fail, and
                // to the VMAs before one that refuses (WIPEONFORK on a file or shared VMA
                // is EINVAL after the anonymous VMAs before it were changed).
                // A zap refused by a VMA (mlocked for MADV_DONTNEED and MADV_GUARD_INSTALL,
                // PFN map, hugetlb) zapped the VMAs before it; which VMA refused depends on
                // flags this model does not follow.
                if matches!(*advice, MADV_DONTNEED | MADV_DONTNEED_LOCKED | MADV_GUARD_INSTALL)
                    && matches!(outcome, Expect::Err(crate::errno::Errno::EINVAL))
                    && addr % PAGE_SIZE == 0
                    && self.spaces.get(&pid).is_some_and(|sp| {
                        sp.private.range(*addr..addr.saturating_add(page_align(*len))).next().is_some()
                    })
                {
                    self.lost_track.get_or_insert_with(|| "a zapping madvise refused part way".into());
                    return;
                }
                let partial =
                    *advice == MADV_WIPEONFORK && matches!(outcome, Expect::Err(crate::errno::Errno::EINVAL));
                if !partial && !matches!(outcome, Expect::Value(_) | Expect::Err(crate::errno::Errno::ENOMEM))
                {
                    return;
                }
                let (start, end) = (*addr, addr.saturating_add(page_align(*len)));
                let Some(sp) = self.spaces.get_mut(&pid) else { return };
                match *advice {
                    // MADV_GUARD_INSTALL zaps the range as MADV_DONTNEED does (a refused VMA
                    // keeps its pages, but a touch there would fault: nothing to compare).
                    MADV_DONTNEED | MADV_DONTNEED_LOCKED | MADV_GUARD_INSTALL => {
                        let gone: Vec<u64> = sp
                            .private
                            .range(start..end)
                            .map(|(k, _)| *k)
                            .filter(|k| !matches!(sp.seg_at(*k), Some((_, s)) if matches!(s.back, Backing::Shared { .. })))
                            .collect();
                        for p in gone {
                            sp.private.remove(&p);
                        }
                    }
                    MADV_FREE => {
                        let gone: Vec<(u64, u64)> = sp
                            .private
                            .range(start..end)
                            .map(|(k, v)| (*k, *v))
                            .filter(|(k, _)| matches!(sp.seg_at(*k), Some((_, s)) if s.back == Backing::Anon))
                            .collect();
                        for (p, t) in gone {
                            sp.private.remove(&p);
                            self.lazy_tags.insert(t);
                        }
                    }
                    MADV_DONTFORK | MADV_DOFORK | MADV_WIPEONFORK | MADV_KEEPONFORK => {
                        for (s, e) in sp.mapped_runs(start, end) {
                            sp.split_at(s);
                            sp.split_at(e);
                            for (_, seg) in sp.segs.range_mut(s..e) {
                                if *advice == MADV_WIPEONFORK && seg.back != Backing::Anon {
                                    return;
                                }
                                match *advice {
                                    MADV_DONTFORK => seg.dontcopy = true,
                                    MADV_DOFORK => seg.dontcopy = false,
                                    MADV_WIPEONFORK => seg.wipe = true,
                                    _ => seg.wipe = false,
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
            Call::Brk { addr } => {
                let Expect::Value(new) = *outcome else { return };
                let Some(sp) = self.spaces.get_mut(&pid) else { return };
                if *addr == 0 || new != *addr {
                    // A query, or a refused change: where the break is, nothing mapped.
                    if *addr == 0 {
                        sp.brk = new;
                    }
                    return;
                }
                let (old, newp) = (page_align(sp.brk), page_align(new));
                if newp > old {
                    sp.insert(old, newp, Backing::Anon);
                } else if newp < old {
                    sp.remove(newp, old);
                }
                sp.brk = new;
            }
            Call::Fork { .. } | Call::CloneVm { .. } => {
                let Expect::Value(c) = *outcome else { return };
                let child = Pid(c as u32);
                if let Call::CloneVm { flags } = step.call
                    && flags & CLONE_FILES != 0
                {
                    self.fd_owner.insert(child, fdp);
                } else if let Some(fds) = self.fds.get(&fdp).cloned() {
                    self.fds.insert(child, fds);
                }
                // A CLONE_VM task or a vfork child shares the creator's space.
                if matches!(step.call, Call::CloneVm { .. } | Call::Fork { vfork: true }) {
                    self.threads.insert(child, pid);
                    return;
                }
                let Some(sp) = self.spaces.get(&pid).cloned() else { return };
                let mut cs = Space { brk: sp.brk, ..Default::default() };
                for (&s, seg) in &sp.segs {
                    if seg.dontcopy {
                        continue;
                    }
                    // dup_mmap: the child's VMAs are not locked.
                    cs.segs.insert(s, Seg { locked: false, ..*seg });
                    if !seg.wipe {
                        for (&p, &t) in sp.private.range(s..seg.end) {
                            cs.private.insert(p, t);
                        }
                    }
                }
                self.spaces.insert(child, cs);
            }
            Call::ExitGroup { .. } => {
                self.spaces.remove(&pid);
            }
            Call::Execve { .. } if ok(outcome) => {
                // unshare_files: a table of its own.
                if let Some(o) = self.fd_owner.remove(&step.pid) {
                    let fds = self.fds.get(&o).cloned().unwrap_or_default();
                    self.fds.insert(step.pid, fds);
                }
                let brk = self.initial_brk;
                if self.threads.remove(&step.pid).is_none() {
                    // The old space lives on in the tasks that share it, if any: the first
                    // of them holds it now.
                    let sharers: Vec<Pid> =
                        self.threads.iter().filter(|&(_, &o)| o == pid).map(|(&t, _)| t).collect();
                    if let (Some(&heir), Some(old)) = (sharers.first(), self.spaces.remove(&pid)) {
                        self.threads.remove(&heir);
                        for t in &sharers[1..] {
                            self.threads.insert(*t, heir);
                        }
                        self.spaces.insert(heir, old);
                    }
                }
                self.spaces.insert(step.pid, Space { brk, ..Default::default() });
            }
            Call::Openat { path, .. } => {
                let Expect::Value(fd) = *outcome else { return };
                let obj = match self.files.get(path) {
                    Some(&o) => o,
                    None => {
                        let o = self.new_obj();
                        self.files.insert(path.clone(), o);
                        o
                    }
                };
                self.fds.entry(fdp).or_default().insert(fd as i64, obj);
            }
            Call::Close { fd } if ok(outcome) => {
                self.fds.entry(fdp).or_default().remove(fd);
            }
            Call::Dup { fd } | Call::Dup2 { oldfd: fd, .. } => {
                let Expect::Value(nfd) = *outcome else { return };
                if let Some(o) = self.fds.get(&fdp).and_then(|f| f.get(fd)).copied() {
                    self.fds.entry(fdp).or_default().insert(nfd as i64, o);
                }
            }
            Call::Ftruncate { fd, len } if ok(outcome) => {
                let Some(obj) = self.fds.get(&fdp).and_then(|f| f.get(fd)).copied() else { return };
                let keep = pages(*len);
                let old = self.sizes.insert(obj, keep).unwrap_or(u64::MAX);
                // The page holding EOF is zeroed past it: the new EOF unless the file grew
                // (`truncate_inode_partial_folio`, `ext4_block_truncate_page`), the old one
                // when it grew (`ext4_setattr` from 6.13). Pages are a tag at their start.
                let old_eof = self.eof.insert(obj, *len);
                let zero_at = match old_eof {
                    Some(o) if *len > o => self.truncate_up_zeroes_eof.then_some(o),
                    _ => Some(*len),
                };
                if let Some(pos) = zero_at
                    && pos % PAGE_SIZE != 0
                    && let Some(t) = self.objects.get_mut(&(obj, pos / PAGE_SIZE))
                {
                    *t = crate::fs::zero_tag_from(*t, pos % PAGE_SIZE);
                }
                if keep < old {
                    let gone: Vec<(u64, u64)> =
                        self.objects.range((obj, keep)..(obj + 1, 0)).map(|(k, _)| *k).collect();
                    for k in gone {
                        self.objects.remove(&k);
                    }
                    // Private copies beyond EOF go too (unmap_mapping_range with even_cows).
                    for sp in self.spaces.values_mut() {
                        let drop: Vec<u64> = sp
                            .private
                            .keys()
                            .copied()
                            .filter(|&p| match sp.seg_at(p) {
                                Some((s, seg)) => {
                                    matches!(seg.from(s, p).back, Backing::FilePrivate { obj: o, pgoff } if o == obj && pgoff >= keep)
                                }
                                None => false,
                            })
                            .collect();
                        for p in drop {
                            sp.private.remove(&p);
                        }
                    }
                }
            }
            // A touch that signalled at a page below a MAP_GROWSDOWN segment (its first page,
            // or one past a hole it ran into): either the growth was refused, or it happened
            // and the access then faulted (a PROT_NONE stack grows too). Which one depends on
            // protections this model does not follow.
            Call::Touch { .. }
                if matches!(outcome, Expect::Signal(_))
                    && signal_at.is_some_and(|at| {
                        self.spaces.get(&pid).is_some_and(|sp| {
                            sp.seg_at(at).is_none()
                                && sp.segs.range(at..).next().is_some_and(|(_, seg)| seg.growsdown)
                        })
                    }) =>
            {
                self.lost_track.get_or_insert_with(|| "a touch below a growable segment signalled".into());
            }
            Call::Touch { addr, len, write: true } if ok(outcome) || matches!(outcome, Expect::Signal(_)) => {
                let start = addr & !(PAGE_SIZE - 1);
                let mut end = page_align(addr.saturating_add(*len));
                if matches!(outcome, Expect::Signal(_)) {
                    end = end.min(signal_at.unwrap_or(start));
                }
                let mut a = start;
                while a < end {
                    let tag = tag_of(a);
                    if let Some(sp) = self.spaces.get_mut(&pid)
                        && let Some((s, seg)) = sp.seg_at(a)
                    {
                        match seg.from(s, a).back {
                            Backing::Shared { obj, pgoff } => {
                                self.objects.insert((obj, pgoff), tag);
                            }
                            _ => {
                                sp.private.insert(a, tag);
                            }
                        }
                    }
                    a += PAGE_SIZE;
                }
            }
            Call::Pin { addr, len } => {
                // Pinning for write breaks COW: a private file page becomes a private copy of
                // what it shows now. A failed pin did so for an unknown prefix.
                let (start, end) = (addr & !(PAGE_SIZE - 1), page_align(addr.saturating_add(*len)));
                let mut copies = Vec::new();
                let mut a = start;
                while a < end {
                    if let Some(sp) = self.spaces.get(&pid)
                        && let Some((s, seg)) = sp.seg_at(a)
                        && matches!(seg.from(s, a).back, Backing::FilePrivate { .. })
                        && !sp.private.contains_key(&a)
                    {
                        copies.push((a, self.read(pid, a).unwrap_or(0)));
                    }
                    a += PAGE_SIZE;
                }
                if !ok(outcome) {
                    if !copies.is_empty() {
                        self.lost_track
                            .get_or_insert_with(|| "a pin of a private file mapping failed".into());
                    }
                    return;
                }
                if let Some(sp) = self.spaces.get_mut(&pid) {
                    sp.private.extend(copies);
                }
            }
            Call::UffdioMove { dst, src, .. } => {
                // The moved prefix: each source page's contents now show at the destination
                // (both are private anonymous), and the source reads as zero.
                let Expect::Value(moved) = *outcome else { return };
                let Some(sp) = self.spaces.get_mut(&pid) else { return };
                let mut off = 0;
                while off < moved {
                    match sp.private.remove(&(src + off)) {
                        Some(t) => sp.private.insert(dst + off, t),
                        None => sp.private.remove(&(dst + off)),
                    };
                    off += PAGE_SIZE;
                }
            }
            Call::VmaRecord(..) => {}
            Call::MapRecord(RecordedVma { addr, len, .. }) => {
                // Kernel-made mappings of traces: contents unknown, treated as fresh.
                if let Some(sp) = self.spaces.get_mut(&pid) {
                    let obj = self.next_obj + 1;
                    self.next_obj = obj;
                    sp.insert(
                        *addr,
                        addr.saturating_add(page_align(*len)),
                        Backing::FilePrivate { obj, pgoff: 0 },
                    );
                }
            }
            _ => {}
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_mremap(
        &mut self,
        pid: Pid,
        old: u64,
        old_len: u64,
        new_len: u64,
        flags: u64,
        new: u64,
        outcome: &Expect,
    ) {
        let Some(sp) = self.spaces.get_mut(&pid) else { return };
        let r = match *outcome {
            Expect::Value(r) => r,
            _ => {
                // The reference cannot tell VMAs apart: an EFAULT from a userfaultfd-registered
                // VMA after the first (vma_multi_allowed) may also have moved part of the range.
                let efault = matches!(outcome, Expect::Err(crate::errno::Errno::EFAULT));
                if flags & MREMAP_FIXED != 0
                    && old_len == new_len
                    && (efault || sp.mapped_runs(old, old.saturating_add(old_len)).len() > 1)
                {
                    self.lost_track.get_or_insert_with(|| "a multi-VMA mremap failed part way".into());
                }
                if self.unmaps_before_checks && flags & MREMAP_FIXED != 0 {
                    self.lost_track
                        .get_or_insert_with(|| "a failed mremap may have unmapped its destination".into());
                }
                if flags & crate::abi::MREMAP_MUST_RELOCATE_ANON != 0
                    && flags & MREMAP_FIXED != 0
                    && *outcome == Expect::Err(crate::errno::Errno::EFAULT)
                {
                    // The 2025 series fails MUST only after mremap_to unmapped the target.
                    self.lost_track
                        .get_or_insert_with(|| "MREMAP_MUST_RELOCATE_ANON failed after unmapping".into());
                }
                return;
            }
        };
        let dontunmap = flags & MREMAP_DONTUNMAP != 0;
        // A locked VMA that grows is populated there (mremap's `mm_populate` of the new
        // tail): write faults, so private copies of a writable private file mapping's pages,
        // whose protection is not followed here.
        if new_len > old_len
            && old_len > 0
            && sp
                .seg_at(old + old_len - PAGE_SIZE)
                .is_some_and(|(_, g)| g.locked && matches!(g.back, Backing::FilePrivate { .. }))
        {
            self.lost_track.get_or_insert_with(|| "mremap populated a locked private file mapping".into());
        }
        let Some(sp) = self.spaces.get_mut(&pid) else { return };
        if old_len == 0 {
            // Duplicating a shared mapping: a second view of the same object.
            if let Some((s, seg)) = sp.seg_at(old) {
                sp.insert_like(r, r + new_len, seg.from(s, old));
            }
            return;
        }
        if r == old && flags & (MREMAP_FIXED | MREMAP_DONTUNMAP) == 0 {
            if new_len < old_len {
                sp.remove(old + new_len, old + old_len);
            } else if new_len > old_len {
                let last = old + old_len - PAGE_SIZE;
                let Some((s, seg)) = sp.seg_at(last) else {
                    // Only after the reference lost track of this space (a partial failure).
                    self.lost_track.get_or_insert_with(|| "an mremap grew a mapping it did not know".into());
                    return;
                };
                let tail = seg.from(s, last).from(last, old + old_len);
                sp.insert_like(old + old_len, old + new_len, tail);
            }
            return;
        }
        let moved = old_len.min(new_len);
        let _ = new;
        // What moves: each mapped run of the source keeps its offset from `old`.
        let runs = sp.mapped_runs(old, old + moved);
        let mut pieces = Vec::new();
        for (s, e) in runs {
            sp.split_at(s);
            sp.split_at(e);
            let segs: Vec<(u64, Seg)> = sp.segs.range(s..e).map(|(k, v)| (*k, *v)).collect();
            let priv_pages: Vec<(u64, u64)> = sp.private.range(s..e).map(|(k, v)| (*k, *v)).collect();
            pieces.push((s, e, segs, priv_pages));
        }
        let last_seg = pieces.last().and_then(|p| p.2.last().copied());
        for (s, e, segs, priv_pages) in &pieces {
            let d = |a: u64| a - old + r;
            sp.remove(d(*s), d(*e));
            for (k, seg) in segs {
                sp.segs.insert(d(*k), Seg { end: d(seg.end), ..*seg });
            }
            for (p, t) in priv_pages {
                sp.private.insert(d(*p), *t);
            }
            if dontunmap {
                // The old range stays mapped but empty: private pages moved away.
                for (p, _) in priv_pages {
                    sp.private.remove(p);
                }
            }
        }
        if new_len > old_len
            && let Some((k, seg)) = last_seg
        {
            let tail = seg.from(k, seg.end - PAGE_SIZE).from(seg.end - PAGE_SIZE, seg.end);
            sp.insert_like(r + old_len, r + new_len, tail);
        }
        if !dontunmap {
            sp.remove(old, old + old_len);
        }
    }

    /// [`RefModel::check`] within `[s, e)` of the processes using `mm`, in time
    /// proportional to the range: the mapped ranges there, and the written private pages
    /// there still holding what was written (the incremental check after a step; the full
    /// check also compares every present page's contents).
    pub fn check_range(&self, sys: &System, mm: crate::mm::MmId, s: u64, e: u64) -> Result<(), String> {
        if self.lost_track.is_some() {
            return Ok(());
        }
        let clip = |a: u64, b: u64, out: &mut Vec<(u64, u64)>| {
            let (a, b) = (a.max(s), b.min(e));
            if a >= b {
                return;
            }
            match out.last_mut() {
                Some(r) if r.1 == a => r.1 = b,
                _ => out.push((a, b)),
            }
        };
        for (&pid, sp) in &self.spaces {
            let Some(p) = sys.vm.procs.get(&pid) else {
                return Err(format!("pid {} missing in the model", pid.0));
            };
            if p.mm != mm {
                continue;
            }
            let mut want = Vec::new();
            if let Some((&k, seg)) = sp.segs.range(..s).next_back() {
                clip(k, seg.end, &mut want);
            }
            for (&k, seg) in sp.segs.range(s..e) {
                clip(k, seg.end, &mut want);
            }
            let mut have = Vec::new();
            let m = &sys.vm.mms[p.mm];
            if let Some((&k, en)) = m.vmas.range(..s).next_back() {
                clip(k, en.end, &mut have);
            }
            for (&k, en) in m.vmas.range(s..e) {
                clip(k, en.end, &mut have);
            }
            if want != have {
                return Err(format!(
                    "pid {}: mapped ranges in [{s:#x}, {e:#x}) differ from the reference: {:x?} vs {:x?}",
                    pid.0, have, want
                ));
            }
            for (&a, &t) in sp.private.range(s..e) {
                let got = sys.read_tag(p.mm, VirtAddr(a));
                if got != Some(t) {
                    return Err(format!(
                        "pid {}: page {a:#x} should hold {t:#x} but holds {got:x?} (data lost)",
                        pid.0
                    ));
                }
            }
        }
        Ok(())
    }

    /// Compare with the model: the same ranges mapped, and every page holds what the
    /// reference says (present pages by their tag; absent private pages must be zero, else
    /// their data was lost).
    pub fn check(&self, sys: &System) -> Result<(), String> {
        if self.lost_track.is_some() {
            return Ok(());
        }
        for (&pid, sp) in &self.spaces {
            let Some(p) = sys.vm.procs.get(&pid) else {
                return Err(format!("pid {} missing in the model", pid.0));
            };
            let mm = &sys.vm.mms[p.mm];
            // Mapped ranges.
            let mut want: Vec<(u64, u64)> = Vec::new();
            for (&s, seg) in &sp.segs {
                match want.last_mut() {
                    Some(r) if r.1 == s => r.1 = seg.end,
                    _ => want.push((s, seg.end)),
                }
            }
            let mut have: Vec<(u64, u64)> = Vec::new();
            for (&s, e) in &mm.vmas {
                match have.last_mut() {
                    Some(r) if r.1 == s => r.1 = e.end,
                    _ => have.push((s, e.end)),
                }
            }
            if want != have {
                return Err(format!(
                    "pid {}: mapped ranges differ from the reference: {:x?} vs {:x?}",
                    pid.0, have, want
                ));
            }
            // Written private pages must still be there.
            for (&a, &t) in &sp.private {
                let got = sys.read_tag(p.mm, VirtAddr(a));
                if got != Some(t) {
                    return Err(format!(
                        "pid {}: page {a:#x} should hold {t:#x} but holds {got:x?} (data lost)",
                        pid.0
                    ));
                }
            }
            // Every present page holds what the reference says. Pages, segments and written
            // pages are all in address order: walk them together rather than look each up.
            let mut segs = sp.segs.iter().peekable();
            let mut private = sp.private.iter().peekable();
            for pte in sys.pagemap(pid) {
                let a = pte.addr;
                // A guard marker holds nothing to read.
                if pte.page == crate::snapshot::RawPage::Guard {
                    continue;
                }
                while segs.next_if(|(_, seg)| seg.end <= a).is_some() {}
                while private.next_if(|(pa, _)| **pa < a).is_some() {}
                let want = match (segs.peek().copied(), private.peek().copied()) {
                    (Some((s, _)), _) if *s > a => 0,
                    (Some(_), Some((pa, t))) if *pa == a => *t,
                    (Some((s, seg)), _) => match seg.from(*s, a).back {
                        Backing::Anon => 0,
                        Backing::FilePrivate { obj, pgoff } | Backing::Shared { obj, pgoff } => {
                            self.objects.get(&(obj, pgoff)).copied().unwrap_or(0)
                        }
                    },
                    (None, _) => 0,
                };
                debug_assert_eq!(Some(want), self.read(pid, a).or(Some(0)));
                // A swapped-out page holds its slot's contents.
                let tag = match pte.page {
                    crate::snapshot::RawPage::Swap | crate::snapshot::RawPage::Migration => {
                        sys.read_tag(p.mm, VirtAddr(pte.addr)).unwrap_or(0)
                    }
                    _ => pte.tag,
                };
                if tag != want && !self.lazy_tags.contains(&tag) {
                    return Err(format!(
                        "pid {}: page {:#x} holds {:#x} but the reference says {want:#x}",
                        pid.0, pte.addr, tag
                    ));
                }
            }
            let _ = mm;
        }
        Ok(())
    }
}
