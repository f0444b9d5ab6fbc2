//! The lean executor's timers: a hierarchical timing wheel of millisecond ticks.
//!
//! A proxy bounds nearly every wait (the read of a response, the next request of a keep-alive
//! connection) and nearly none of those bounds is reached. The B-tree keyed by
//! deadline that this replaces cost about 1,600 instructions per request at 50 connections
//! (callgrind: searches, node inserts and removals with their memmoves), 8% of the proxy's
//! user-space work. Here arming and cancelling are constant time: a timer is an entry in a slab,
//! linked into one slot of one level (level `l` has 64 slots of 64^l ticks each), and cancelling
//! unlinks it. Each level keeps a bitmap of its non-empty slots, so the next deadline is a few
//! bit operations away; when a slot of a higher level comes due, its timers move down to the
//! levels below (each timer moves at most once per level), or on to their own slot if their
//! deadline was pushed back ([`Timers::rearm`]: a connection's reads move one timer along instead
//! of arming and cancelling one each, and it moves again each time its old slot comes round).
//!
//! Deadlines are rounded up to the next tick: a timer never fires early, and at most a
//! millisecond late. Six levels reach 64^6 ms (two years); a timer beyond that is kept in the
//! last slot and re-filed when it comes round.

use std::collections::VecDeque;
use std::task::Waker;
use std::time::{Duration, Instant};

const LEVELS: usize = 6;
const SLOT_BITS: u32 = 6;
const SLOTS: usize = 1 << SLOT_BITS;
/// Ticks the wheel reaches from `elapsed`.
const RANGE: u64 = 1 << (SLOT_BITS * LEVELS as u32);
const NIL: u32 = u32::MAX;
/// An armed timer's handle: its slab index and the entry's generation then. The generation is
/// 64 bits so that it never wraps: an `rt::Timer` may keep the id of a timer that fired for as
/// long as its connection does no timed wait (a tunnel open for hours), while its slot is
/// reused by every other timer; with 31 bits, 2^31 reuses would have let the stale id name
/// another task's timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimerId {
    index: u32,
    generation: u64,
}

impl TimerId {
    /// An id no armed timer has (its generation is never reached).
    pub(crate) const NONE: TimerId = TimerId {
        index: u32::MAX,
        generation: u64::MAX,
    };
}

struct Entry {
    /// The tick the timer is due at.
    when: u64,
    /// `Some` while armed.
    waker: Option<Waker>,
    prev: u32,
    next: u32,
    generation: u64,
    level: u8,
    slot: u8,
}

/// Every armed timer of one executor.
pub(crate) struct Timers {
    /// Tick 0, set by the first timer armed.
    origin: Option<Instant>,
    /// Ticks processed: every linked timer is due at `elapsed` or later.
    elapsed: u64,
    heads: [[u32; SLOTS]; LEVELS],
    occupied: [u64; LEVELS],
    entries: Vec<Entry>,
    free: Vec<u32>,
    live: usize,
    /// Wakers of timers found due, in deadline order, not yet taken.
    ready: VecDeque<Waker>,
    /// No armed timer is due before this instant, when known (`None`: unknown, or nothing
    /// armed): [`Timers::pop_due`] returns at once before it, which is nearly every loop pass.
    not_before: Option<Instant>,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            origin: None,
            elapsed: 0,
            heads: [[NIL; SLOTS]; LEVELS],
            occupied: [0; LEVELS],
            entries: Vec::new(),
            free: Vec::new(),
            live: 0,
            ready: VecDeque::new(),
            not_before: None,
        }
    }
}

/// The level and slot of a timer due at `when`, seen from `elapsed` (`when >= elapsed`).
fn position(elapsed: u64, when: u64) -> (usize, usize) {
    let when = when.min(elapsed + RANGE - 1);
    // The highest bit in which `when` differs from `elapsed` picks the level.
    let masked = (elapsed ^ when) | (SLOTS as u64 - 1);
    let significant = 63 - masked.leading_zeros();
    let level = ((significant / SLOT_BITS) as usize).min(LEVELS - 1);
    let slot = ((when >> (level as u32 * SLOT_BITS)) as usize) & (SLOTS - 1);
    (level, slot)
}

impl Timers {
    /// Timers armed and not yet fired or cancelled.
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    /// Whether no timer is armed.
    pub(crate) fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// The tick `deadline` falls in, rounded up (never early).
    fn tick_of(&mut self, deadline: Instant, now: Instant) -> u64 {
        // Tick 0 is the loop's clock when the first timer is armed: no deadline armed later
        // is earlier than that clock (a due timer is never armed).
        let origin = *self.origin.get_or_insert(now);
        let d = deadline.saturating_duration_since(origin);
        let ms = d.as_millis() as u64;
        if d.subsec_nanos().is_multiple_of(1_000_000) {
            ms
        } else {
            ms + 1
        }
    }

    /// The instant tick `tick` starts at.
    fn instant_of(&self, tick: u64) -> Option<Instant> {
        self.origin
            .and_then(|o| o.checked_add(Duration::from_millis(tick)))
    }

    /// Arms a timer that wakes `waker` at `deadline`; `now` is the loop's clock.
    pub(crate) fn arm(&mut self, deadline: Instant, now: Instant, waker: Waker) -> TimerId {
        let when = self.tick_of(deadline, now).max(self.elapsed);
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.entries.push(Entry {
                    when: 0,
                    waker: None,
                    prev: NIL,
                    next: NIL,
                    generation: 0,
                    level: 0,
                    slot: 0,
                });
                (self.entries.len() - 1) as u32
            }
        };
        let entry = &mut self.entries[index as usize];
        entry.when = when;
        entry.waker = Some(waker);
        let generation = entry.generation;
        self.link(index);
        self.live += 1;
        match self.not_before {
            Some(n) if n <= deadline => {}
            // A lower bound stays one; `None` with timers armed means unknown, and stays so.
            None if self.live > 1 => {}
            _ => self.not_before = Some(deadline),
        }
        TimerId { index, generation }
    }

    /// Links entry `index` into the slot its `when` falls in.
    fn link(&mut self, index: u32) {
        let (level, slot) = position(self.elapsed, self.entries[index as usize].when);
        let head = self.heads[level][slot];
        {
            let e = &mut self.entries[index as usize];
            e.level = level as u8;
            e.slot = slot as u8;
            e.prev = NIL;
            e.next = head;
        }
        if head != NIL {
            self.entries[head as usize].prev = index;
        }
        self.heads[level][slot] = index;
        self.occupied[level] |= 1 << slot;
    }

    /// Unlinks entry `index` from its slot.
    fn unlink(&mut self, index: u32) {
        let (prev, next, level, slot) = {
            let e = &self.entries[index as usize];
            (e.prev, e.next, e.level as usize, e.slot as usize)
        };
        if prev == NIL {
            self.heads[level][slot] = next;
            if next == NIL {
                self.occupied[level] &= !(1 << slot);
            }
        } else {
            self.entries[prev as usize].next = next;
        }
        if next != NIL {
            self.entries[next as usize].prev = prev;
        }
    }

    fn is_armed(&self, id: TimerId) -> bool {
        self.entries
            .get(id.index as usize)
            .is_some_and(|e| e.generation == id.generation && e.waker.is_some())
    }

    /// Replaces the waker of an armed timer when it would not wake the same task; false when
    /// `id` is not armed any more (it fired).
    pub(crate) fn update(&mut self, id: TimerId, waker: &Waker) -> bool {
        if !self.is_armed(id) {
            return false;
        }
        if let Some(w) = &mut self.entries[id.index as usize].waker {
            if !w.will_wake(waker) {
                *w = waker.clone();
            }
        }
        true
    }

    /// Moves an armed timer to `deadline` and makes it wake `waker`; false when `id` is not
    /// armed any more (it fired), and nothing changes.
    ///
    /// A later deadline only changes the entry's `when`: it stays linked in its slot, which
    /// comes due no later than it should, and [`Timers::advance`] links it further on then
    /// (as it does a timer of a higher level). A task that pushes one timer's deadline back
    /// at every wait (a connection's reads, see `rt::Timer`) pays no unlinking and linking
    /// per wait, only a move when the old deadline comes round. An earlier deadline relinks.
    pub(crate) fn rearm(
        &mut self,
        id: TimerId,
        deadline: Instant,
        now: Instant,
        waker: &Waker,
    ) -> bool {
        if !self.update(id, waker) {
            return false;
        }
        let index = id.index;
        let when = self.tick_of(deadline, now).max(self.elapsed);
        let entry = &mut self.entries[index as usize];
        if when >= entry.when {
            entry.when = when;
            return true;
        }
        entry.when = when;
        self.unlink(index);
        self.link(index);
        match self.not_before {
            Some(n) if n <= deadline => {}
            None if self.live > 1 => {}
            _ => self.not_before = Some(deadline),
        }
        true
    }

    /// Cancels an armed timer (nothing when it already fired) and returns its waker, to be
    /// dropped by the caller once no borrow of the timers is held.
    pub(crate) fn disarm(&mut self, id: TimerId) -> Option<Waker> {
        if !self.is_armed(id) {
            return None;
        }
        let index = id.index;
        self.unlink(index);
        self.release(index)
    }

    /// Frees a slab entry and bumps its generation; returns its waker.
    fn release(&mut self, index: u32) -> Option<Waker> {
        let e = &mut self.entries[index as usize];
        e.generation = e.generation.wrapping_add(1);
        let waker = e.waker.take();
        self.free.push(index);
        self.live -= 1;
        waker
    }

    /// The level, slot and first tick of the earliest non-empty slot.
    fn next_expiration(&self) -> Option<(usize, usize, u64)> {
        for level in 0..LEVELS {
            let occupied = self.occupied[level];
            if occupied == 0 {
                continue;
            }
            let shift = level as u32 * SLOT_BITS;
            let pos = ((self.elapsed >> shift) as usize) & (SLOTS - 1);
            let slot = (pos + occupied.rotate_right(pos as u32).trailing_zeros() as usize) % SLOTS;
            let level_range = 1u64 << (shift + SLOT_BITS);
            let mut start = (self.elapsed & !(level_range - 1)) + ((slot as u64) << shift);
            if slot < pos {
                start += level_range;
            }
            return Some((level, slot, start.max(self.elapsed)));
        }
        None
    }

    /// Processes every slot due by tick `now`: due timers' wakers go to `ready`, the others
    /// are linked where their deadline falls now (a level down, or further on for one pushed
    /// back).
    fn advance(&mut self, now: u64) {
        while let Some((level, slot, start)) = self.next_expiration() {
            if start > now {
                break;
            }
            self.elapsed = start;
            let mut index = std::mem::replace(&mut self.heads[level][slot], NIL);
            self.occupied[level] &= !(1 << slot);
            while index != NIL {
                let next = self.entries[index as usize].next;
                if self.entries[index as usize].when <= self.elapsed {
                    if let Some(w) = self.release(index) {
                        self.ready.push_back(w);
                    }
                } else {
                    self.link(index);
                }
                index = next;
            }
        }
        self.elapsed = self.elapsed.max(now);
    }

    /// Takes the waker of one timer due at `now` (deadline reached), if any.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Waker> {
        if let Some(w) = self.ready.pop_front() {
            return Some(w);
        }
        if self.live == 0 || self.not_before.is_some_and(|n| now < n) {
            return None;
        }
        let origin = self.origin?;
        let tick = now.saturating_duration_since(origin).as_millis() as u64;
        self.advance(tick);
        // The earliest slot's start is a lower bound of every deadline left.
        self.not_before = self
            .next_expiration()
            .and_then(|(_, _, start)| self.instant_of(start));
        self.ready.pop_front()
    }

    /// The earliest deadline armed (the start of its tick), or `None`.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        if !self.ready.is_empty() {
            return self.origin;
        }
        if let Some(n) = self.not_before {
            return Some(n);
        }
        let (_, _, start) = self.next_expiration()?;
        let at = self.instant_of(start);
        self.not_before = at;
        at
    }

    /// Cancels every timer; returns their wakers.
    pub(crate) fn take_all(&mut self) -> Vec<Waker> {
        let mut wakers: Vec<Waker> = self.ready.drain(..).collect();
        wakers.extend(self.entries.iter_mut().filter_map(|e| e.waker.take()));
        *self = Timers::default();
        wakers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    /// A waker that records its name in a shared log when woken.
    struct Named(usize, Arc<std::sync::Mutex<Vec<usize>>>);
    impl Wake for Named {
        fn wake(self: Arc<Self>) {
            self.1.lock().unwrap().push(self.0);
        }
    }

    fn named(n: usize, log: &Arc<std::sync::Mutex<Vec<usize>>>) -> Waker {
        Waker::from(Arc::new(Named(n, Arc::clone(log))))
    }

    fn noop() -> Waker {
        struct Noop(AtomicUsize);
        impl Wake for Noop {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        Waker::from(Arc::new(Noop(AtomicUsize::new(0))))
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Fires everything due at `now`; returns how many.
    fn fire(t: &mut Timers, now: Instant) -> usize {
        let mut n = 0;
        while let Some(w) = t.pop_due(now) {
            w.wake();
            n += 1;
        }
        n
    }

    #[test]
    fn timers_fire_in_deadline_order_never_early_at_most_a_tick_late() {
        let t0 = Instant::now();
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut t = Timers::default();
        // Deadlines across levels (1 ms to 5 minutes), armed in a scrambled order, some sharing
        // a tick, one between ticks.
        let deadlines: Vec<Duration> = [
            ms(50),
            ms(20),
            ms(4_100),
            ms(1),
            ms(300_000),
            ms(64),
            ms(63),
            ms(65),
            ms(4_096),
            ms(20),
            Duration::from_micros(20_500),
            ms(262_144),
        ]
        .to_vec();
        for (i, d) in deadlines.iter().enumerate() {
            t.arm(t0 + *d, t0, named(i, &log));
        }
        assert_eq!(t.len(), deadlines.len());
        // Step through time 1 ms at a time up to the last deadline, noting when each fires.
        let mut fired_at = vec![None; deadlines.len()];
        for (i, at) in run_until(&mut t, &log, t0, t0 + ms(300_001)) {
            fired_at[i] = Some(at);
        }
        for (i, d) in deadlines.iter().enumerate() {
            let at = fired_at[i].unwrap_or_else(|| panic!("timer {i} never fired"));
            assert!(at >= t0 + *d, "timer {i} fired early");
            assert!(
                at <= t0 + *d + ms(1),
                "timer {i} fired late: {:?}",
                at - (t0 + *d)
            );
        }
        let order = log.lock().unwrap().clone();
        let mut by_deadline: Vec<usize> = (0..deadlines.len()).collect();
        by_deadline.sort_by_key(|&i| deadlines[i]);
        let order_deadlines: Vec<Duration> = order.iter().map(|&i| deadlines[i]).collect();
        let mut sorted = order_deadlines.clone();
        sorted.sort();
        assert_eq!(order_deadlines, sorted, "fired out of deadline order");
        assert!(t.is_empty());
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn a_cancelled_timer_never_fires_and_its_slot_is_reused_safely() {
        let t0 = Instant::now();
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut t = Timers::default();
        let id1 = t.arm(t0 + ms(10), t0, named(1, &log));
        assert!(t.disarm(id1).is_some());
        assert!(t.disarm(id1).is_none(), "twice");
        let id2 = t.arm(t0 + ms(20), t0, named(2, &log));
        assert_ne!(id1, id2, "same slot, new generation");
        assert!(!t.update(id1, &noop()), "a stale id is not armed");
        assert!(t.next_deadline().unwrap() <= t0 + ms(20));
        assert_eq!(fire(&mut t, t0 + ms(15)), 0);
        assert_eq!(fire(&mut t, t0 + ms(20)), 1);
        assert_eq!(*log.lock().unwrap(), [2]);
        assert!(t.disarm(id2).is_none(), "fired already");
        assert!(t.is_empty());
    }

    #[test]
    fn a_million_armed_and_cancelled_leave_nothing_behind() {
        let t0 = Instant::now();
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut t = Timers::default();
        let keep = t.arm(t0 + ms(60_000), t0, named(0, &log));
        let mut now = t0;
        for i in 0..1_000_000u64 {
            now = t0 + Duration::from_micros(i * 50);
            let id = t.arm(now + ms(60_000 + i % 7), t0, noop());
            drop(t.disarm(id));
            if i % 1000 == 0 {
                assert_eq!(fire(&mut t, now), 0);
            }
        }
        assert_eq!(t.len(), 1);
        assert!(t.entries.len() <= 2, "{} entries", t.entries.len());
        assert_eq!(fire(&mut t, now), 0);
        assert_eq!(fire(&mut t, t0 + ms(60_000)), 1);
        assert!(t.disarm(keep).is_none());
        assert_eq!(*log.lock().unwrap(), [0]);
    }

    #[test]
    fn many_distinct_deadlines_fire_in_order() {
        let t0 = Instant::now();
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut t = Timers::default();
        let mut deadlines = Vec::new();
        for i in 0..2000u64 {
            // A permutation of 1..=2000 ms, plus microseconds, armed in scrambled order.
            let d = Duration::from_micros(((i * 7919) % 2000 + 1) * 1000 + i % 999);
            t.arm(t0 + d, t0, named(i as usize, &log));
            deadlines.push(d);
        }
        let mut now = t0;
        while let Some(next) = t.next_deadline() {
            now = now.max(next);
            fire(&mut t, now);
            now += Duration::from_micros(250);
        }
        let order = log.lock().unwrap().clone();
        assert_eq!(order.len(), 2000);
        let fired: Vec<Duration> = order.iter().map(|&i| deadlines[i]).collect();
        // Order by tick (deadlines within one tick fire together, in any order).
        let ticks: Vec<u128> = fired.iter().map(|d| d.as_micros().div_ceil(1000)).collect();
        let mut sorted = ticks.clone();
        sorted.sort();
        assert_eq!(ticks, sorted);
    }

    #[test]
    fn a_timer_armed_in_the_past_fires_at_once_and_far_ones_wait() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        t.arm(t0 + ms(100), t0, noop());
        assert_eq!(fire(&mut t, t0 + ms(100)), 1);
        t.arm(t0 + ms(50), t0, noop());
        assert_eq!(fire(&mut t, t0 + ms(100)), 1, "already due when armed");
        // Beyond the wheel's reach (two years): kept, not fired.
        t.arm(t0 + Duration::from_secs(3 * 365 * 86_400), t0, noop());
        assert_eq!(fire(&mut t, t0 + Duration::from_secs(86_400)), 0);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn take_all_returns_every_waker() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        for i in 0..10 {
            t.arm(t0 + ms(i), t0, noop());
        }
        assert_eq!(t.take_all().len(), 10);
        assert!(t.is_empty());
        assert_eq!(t.next_deadline(), None);
    }

    /// Fires every timer due up to `end`, stepping as the loop's sleep does (to the next
    /// deadline the wheel reports); returns (name, when) of each firing.
    fn run_until(
        t: &mut Timers,
        log: &Arc<std::sync::Mutex<Vec<usize>>>,
        mut now: Instant,
        end: Instant,
    ) -> Vec<(usize, Instant)> {
        let mut fired = Vec::new();
        while now <= end {
            let before = log.lock().unwrap().len();
            fire(t, now);
            for &i in &log.lock().unwrap()[before..] {
                fired.push((i, now));
            }
            now = match t.next_deadline() {
                Some(d) if d > now => d,
                Some(_) => now + ms(1),
                None => break,
            };
        }
        fired
    }

    /// A timer moved to a later deadline stays in its slot and fires at the new deadline, not
    /// the old one; moved earlier, it fires at the earlier one; a fired timer cannot be moved.
    #[test]
    fn a_rearmed_timer_fires_at_its_last_deadline_only() {
        let t0 = Instant::now();
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut t = Timers::default();
        let later = t.arm(t0 + ms(100), t0, named(0, &log));
        let earlier = t.arm(t0 + ms(60_000), t0, named(1, &log));
        // Pushed back again and again, across levels (as a connection's reads do)...
        for step in 1..=5u64 {
            assert!(t.rearm(later, t0 + ms(100 + step * 20_000), t0, &named(0, &log)));
        }
        // ...and one brought forward below another timer's level.
        assert!(t.rearm(earlier, t0 + ms(30), t0, &named(1, &log)));
        assert_eq!(t.len(), 2);
        let fired = run_until(&mut t, &log, t0, t0 + ms(200_000));
        assert_eq!(fired.len(), 2, "{fired:?}");
        let (first, at) = fired[0];
        assert_eq!(first, 1);
        assert!(at >= t0 + ms(30) && at <= t0 + ms(31), "{:?}", at - t0);
        let (second, at) = fired[1];
        assert_eq!(second, 0);
        assert!(
            at >= t0 + ms(100_100) && at <= t0 + ms(100_101),
            "fired at {:?}, not at its last deadline",
            at - t0
        );
        assert!(t.is_empty());
        assert!(!t.rearm(later, t0 + ms(300_000), t0, &noop()), "fired");
        assert!(t.is_empty());
    }

    /// A timer pushed back and then cancelled never fires, and a rearm changes its waker.
    #[test]
    fn a_rearmed_timer_can_be_cancelled_and_wakes_its_new_waker() {
        let t0 = Instant::now();
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut t = Timers::default();
        let a = t.arm(t0 + ms(10), t0, named(0, &log));
        assert!(t.rearm(a, t0 + ms(5_000), t0, &named(0, &log)));
        assert!(t.disarm(a).is_some());
        let b = t.arm(t0 + ms(10), t0, named(1, &log));
        assert!(t.rearm(b, t0 + ms(20), t0, &named(2, &log)));
        let fired = run_until(&mut t, &log, t0, t0 + ms(10_000));
        assert_eq!(fired.iter().map(|f| f.0).collect::<Vec<_>>(), [2]);
        assert!(fired[0].1 >= t0 + ms(20));
    }
}
