//! `System::touch_each` (replay's runs of page faults) against the same touches made one by
//! one with `System::touch`: the same answers, counters, pages and smaps, over random
//! touches of two processes sharing copy-on-write pages, in anonymous VMAs writable,
//! read-only and inaccessible (some with pages), with huge pages, guard markers, holes and
//! multi-page touches.

use anonmm::abi::MADV_GUARD_INSTALL;
use anonmm::api::prelude::*;
use anonmm::fault::{PageRun, TouchFeed};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

type Touch = (Pid, u64, u64, bool);

/// The touches in turn; a write's tag names the touch and the page.
struct Feed<'a> {
    touches: &'a [Touch],
    next: usize,
}

impl TouchFeed for Feed<'_> {
    fn next(&mut self) -> Option<Touch> {
        let t = *self.touches.get(self.next)?;
        self.next += 1;
        Some(t)
    }
    fn tag(&self, addr: u64) -> u64 {
        tag(self.next - 1, addr)
    }
}

/// The touches in turn while they lie in a window of one process (`start <= addr`,
/// `addr + len <= end`), as replay's feed hands a trace's faults: it gives none past the
/// first that does not, and narrows runs to its window to give them with one test.
struct Windowed<'a> {
    touches: &'a [Touch],
    next: usize,
    window: (Pid, u64, u64),
}

impl Windowed<'_> {
    fn fits(&self, (pid, addr, len, _): Touch) -> bool {
        let (p, start, end) = self.window;
        p == pid && start <= addr && addr.checked_add(len).is_some_and(|e| e <= end)
    }
}

impl TouchFeed for Windowed<'_> {
    fn next(&mut self) -> Option<Touch> {
        let t = *self.touches.get(self.next)?;
        if !self.fits(t) {
            return None;
        }
        self.next += 1;
        Some(t)
    }
    fn tag(&self, addr: u64) -> u64 {
        tag(self.next - 1, addr)
    }
    fn narrow(&self, run: PageRun) -> PageRun {
        let (p, start, end) = self.window;
        if run.pid() == p { run.within(start, end) } else { run.within(0, 0) }
    }
    fn next_in(&mut self, run: &PageRun) -> Result<Touch, Option<Touch>> {
        match self.touches.get(self.next) {
            Some(&t) if run.holds(t.0, t.1, t.2) => {
                assert!(self.fits(t), "the narrowed run holds {t:?}, past the window {:?}", self.window);
                self.next += 1;
                Ok(t)
            }
            _ => Err(self.next()),
        }
    }
}

fn tag(i: usize, addr: u64) -> u64 {
    ((i as u64) << 36) | (addr >> 12)
}

const RW: u64 = PROT_READ | PROT_WRITE;
const ANON: u64 = MAP_PRIVATE | MAP_ANONYMOUS;

/// Two processes sharing copy-on-write pages: the regions (start, length) to touch, holes
/// between them.
fn setup() -> (System, Vec<(u64, u64)>) {
    let mut sys = System::default();
    sys.spawn(Pid(1)).expect("spawn");
    let mut regions = Vec::new();
    let mut map = |sys: &mut System, at: u64, len: u64, prot: u64| {
        let a = sys.sys_mmap(Pid(1), at, len, prot, ANON | MAP_FIXED_NOREPLACE, -1, 0).expect("mmap");
        regions.push((a, len));
        a
    };
    let big = map(&mut sys, 0x7f00_0000_0000, 4 * PMD_SIZE, RW);
    sys.sys_madvise(Pid(1), big + 2 * PMD_SIZE, 2 * PMD_SIZE, MADV_HUGEPAGE).expect("madvise");
    let ro = map(&mut sys, 0x7f10_0000_0000, 16 * PAGE_SIZE, PROT_READ);
    let guarded = map(&mut sys, 0x7f20_0000_0000, 64 * PAGE_SIZE, RW);
    sys.sys_madvise(Pid(1), guarded + 8 * PAGE_SIZE, 2 * PAGE_SIZE, MADV_GUARD_INSTALL).expect("guard");
    let _ = ro;
    // Written (so with an anon_vma), then made read-only, and inaccessible.
    let wp = map(&mut sys, 0x7f30_0000_0000, 32 * PAGE_SIZE, RW);
    let none = map(&mut sys, 0x7f40_0000_0000, 32 * PAGE_SIZE, RW);
    for a in [wp, wp + 5 * PAGE_SIZE, none, none + 9 * PAGE_SIZE] {
        sys.touch(Pid(1), a, 1, true, &|a| a).expect("pid").expect("no signal");
    }
    sys.sys_mprotect(Pid(1), wp, 32 * PAGE_SIZE, PROT_READ).expect("mprotect");
    sys.sys_mprotect(Pid(1), none, 32 * PAGE_SIZE, PROT_NONE).expect("mprotect");
    // Some pages written before the fork: shared copy-on-write after it.
    for k in 0..64 {
        sys.touch(Pid(1), big + k * 3 * PAGE_SIZE, 1, true, &|a| a).expect("pid").expect("no signal");
    }
    sys.touch(Pid(1), big + 2 * PMD_SIZE, 1, true, &|a| a).expect("pid").expect("no signal");
    sys.sys_fork(Pid(1), Pid(2)).expect("fork");
    (sys, regions)
}

fn random_touches(rng: &mut SmallRng, regions: &[(u64, u64)], n: usize) -> Vec<Touch> {
    let mut out = Vec::with_capacity(n);
    let mut last = regions[0].0;
    for _ in 0..n {
        let pid = Pid(if rng.random_bool(0.8) { 1 } else { 2 });
        let (start, len) = regions[rng.random_range(0..regions.len())];
        // Mostly the page after the last one (as a program touching memory in order does),
        // else anywhere in a region or just past its end.
        let addr = match rng.random_range(0..10) {
            0..=5 => last + PAGE_SIZE + rng.random_range(0..PAGE_SIZE),
            6..=8 => start + rng.random_range(0..len),
            _ => start + len + rng.random_range(0..PAGE_SIZE),
        };
        let tlen = match rng.random_range(0..20) {
            0 => 0,
            1 => 2 * PAGE_SIZE,
            _ => rng.random_range(1..=PAGE_SIZE - addr % PAGE_SIZE),
        };
        last = addr & !(PAGE_SIZE - 1);
        out.push((pid, addr, tlen, rng.random_bool(0.7)));
    }
    out
}

/// What a run leaves that the two ways must agree on.
fn state(sys: &System, regions: &[(u64, u64)]) -> String {
    let mut s = format!("{:?}\n", sys.trace.stats);
    for pid in [Pid(1), Pid(2)] {
        s += &format!("{:?}\n", sys.smaps(pid));
        for &(start, len) in regions {
            for a in (start..start + len).step_by(PAGE_SIZE as usize) {
                s += &format!("{:?}\n", sys.page_at(pid, a).expect("alive"));
            }
        }
    }
    s
}

/// Where a run of touches stopped: the touch, its answer, and what the model lacked.
type Stops = Vec<(usize, TouchResult, Option<String>)>;
type TouchResult = Result<Result<(), TouchSignal>, Errno>;

/// Touch `i` with `System::touch`, noting it in `stops` if it stopped there.
fn touch_one(sys: &mut System, i: usize, (pid, addr, len, write): Touch, stops: &mut Stops) {
    let res = sys.touch(pid, addr, len, write, &|a| tag(i, a));
    if !matches!(res, Ok(Ok(()))) || sys.unsupported.is_some() {
        stops.push((i, res, sys.unsupported.take()));
    }
}

/// The reference: `touches` made one by one on `sys`.
fn touch_after_touch(mut sys: System, touches: &[Touch]) -> (System, Stops) {
    let mut stops = Vec::new();
    for (i, &t) in touches.iter().enumerate() {
        touch_one(&mut sys, i, t, &mut stops);
    }
    (sys, stops)
}

#[test]
fn touch_each_is_touch_after_touch() {
    for seed in 0..12 {
        let mut rng = SmallRng::seed_from_u64(seed);
        let (base, regions) = setup();
        let touches = random_touches(&mut rng, &regions, 4000);

        let mut each = base.clone();
        let mut feed = Feed { touches: &touches, next: 0 };
        let mut stops_each = Vec::new();
        while let Some(res) = each.touch_each(&mut feed) {
            stops_each.push((feed.next - 1, res, each.unsupported.take()));
        }
        assert_eq!(feed.next, touches.len());

        let (one, stops_one) = touch_after_touch(base, &touches);

        assert!(stops_one.len() > 10, "seed {seed}: the touches signal now and then");
        assert_eq!(stops_each, stops_one, "seed {seed}");
        assert_eq!(state(&each, &regions), state(&one, &regions), "seed {seed}");
        each.check().unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    }
}

/// The same with a feed that stops at the edge of a window (ends anywhere, not only at page
/// boundaries) and narrows runs to it, as replay's does: the touches past a window are made
/// one by one, as replay makes them, and the next window is drawn around the next touch.
#[test]
fn touch_each_with_a_windowed_feed_is_touch_after_touch() {
    for seed in 0..12 {
        let mut rng = SmallRng::seed_from_u64(100 + seed);
        let (base, regions) = setup();
        let touches = random_touches(&mut rng, &regions, 4000);

        let mut each = base.clone();
        let mut feed = Windowed { touches: &touches, next: 0, window: (Pid(1), 0, 0) };
        let mut stops_each = Vec::new();
        let mut windows = 0;
        while feed.next < touches.len() {
            let (pid, addr, _, _) = touches[feed.next];
            // Often a window of a few pages, so that runs reach its ends.
            let span = if rng.random_bool(0.5) { 16 * PAGE_SIZE } else { 2 * PMD_SIZE };
            let lo = addr.saturating_sub(rng.random_range(0..span));
            let hi = addr.saturating_add(rng.random_range(0..span));
            feed.window = (pid, lo, hi);
            windows += 1;
            if let Some(res) = each.touch_each(&mut feed) {
                stops_each.push((feed.next - 1, res, each.unsupported.take()));
            } else if feed.next < touches.len() && !feed.fits(touches[feed.next]) {
                touch_one(&mut each, feed.next, touches[feed.next], &mut stops_each);
                feed.next += 1;
            }
        }

        let (one, stops_one) = touch_after_touch(base, &touches);

        assert!(windows > 100, "seed {seed}: windows end now and then ({windows})");
        assert_eq!(stops_each, stops_one, "seed {seed}");
        assert_eq!(state(&each, &regions), state(&one, &regions), "seed {seed}");
        each.check().unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    }
}

/// A write to a copy-on-write page whose folio MADV_FREE's batch still holds (a fork
/// child's MADV_FREE and exit, on 6.18, where the exit's zap no longer drains the batch):
/// `wp_can_reuse_anon_folio` sees the batch's reference and copies the page. A run of
/// faults must do the same as one touch, and leave the checker content.
#[test]
fn a_write_to_a_page_madv_free_queued_is_copied_in_a_run_too() {
    let mut base = System::default();
    base.spawn(Pid(1)).expect("spawn");
    let a = base
        .sys_mmap(Pid(1), 0x7f00_0000_0000, PAGE_SIZE, RW, ANON | MAP_FIXED_NOREPLACE, -1, 0)
        .expect("mmap");
    base.touch(Pid(1), a, 1, true, &|a| a).expect("pid").expect("no signal");
    base.sys_fork(Pid(1), Pid(3)).expect("fork");
    base.sys_madvise(Pid(3), a, PAGE_SIZE, MADV_FREE).expect("madvise");
    base.sys_exit(Pid(3)).expect("exit");
    assert!(!base.mem.lazyfree_batch.is_empty(), "the folio waits in the batch");
    let touches = [(Pid(1), a, PAGE_SIZE, true), (Pid(1), a, PAGE_SIZE, true)];

    let mut each = base.clone();
    let mut feed = Feed { touches: &touches, next: 0 };
    assert_eq!(each.touch_each(&mut feed), None);
    let (one, stops) = touch_after_touch(base, &touches);
    assert!(stops.is_empty());

    assert_eq!(
        (one.trace.stats.cow_copies, one.trace.stats.cow_reuses),
        (1, 0),
        "copied, as the kernel does"
    );
    assert_eq!(format!("{:?}", each.trace.stats), format!("{:?}", one.trace.stats));
    assert_eq!(each.page_at(Pid(1), a).expect("alive"), one.page_at(Pid(1), a).expect("alive"));
    assert_eq!(each.smaps(Pid(1)), one.smaps(Pid(1)));
    each.check().expect("checker");
}
