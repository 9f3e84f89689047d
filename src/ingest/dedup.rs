//! Exact duplicate detection on `(asset, signal, ts)`.
//!
//! Per signal the filter knows:
//! * the **watermark**: the newest timestamp ever accepted (in this run, in
//!   the journal, or committed to `silver.readings` before). A reading
//!   newer than it is new, without looking anything up: the common case.
//! * the most recent accepted timestamps (at most `ingest.dedup_recent`
//!   once silver holds them), complete from `complete_from` on: a reading
//!   in that range is a duplicate exactly when they hold its timestamp.
//!   They are kept in two parts: **pending**, accepted but perhaps not yet
//!   in `silver.readings` (with the journal position that brought each; a
//!   few per signal, those since the last silver commit), and **settled**,
//!   which silver holds durably, sorted, as 4-byte offsets from a base
//!   time. Only settled timestamps are forgotten, so the filter never
//!   forgets a reading the table does not have yet.
//! * anything older is **unsure**: the ingest stage looks it up in
//!   `silver.readings` (rare: a reading later than the memory reaches, or
//!   the first redeliveries after a restart), so a late reading that is new
//!   is kept however late, and a redelivery is dropped however late.
//!
//! Memory: with a million signals in one process (100,000 machines of 10
//! signals) every byte per timestamp is a megabyte per remembered reading;
//! 4 bytes instead of a (time, position) pair of 16 is what lets the
//! default memory of 512 timestamps per signal fit.

use std::collections::VecDeque;

/// What a timestamp is for a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    New,
    Duplicate,
    /// Older than what is remembered: ask the table.
    Unsure,
}

/// The filter of one `(asset, signal)`.
#[derive(Debug, Clone)]
pub struct SignalDedup {
    watermark: i64,
    complete_from: i64,
    /// Timestamps silver holds: sorted offsets (ms) from `base`.
    settled: VecDeque<u32>,
    base: i64,
    /// Accepted timestamps silver may not hold yet, with the journal
    /// position that brought each, in the order accepted.
    pending: Vec<(i64, u64)>,
}

impl SignalDedup {
    /// A filter that knows timestamps up to `watermark` were accepted before
    /// (but not which): those are unsure.
    pub fn new(watermark: i64) -> Self {
        SignalDedup {
            watermark,
            complete_from: watermark.saturating_add(1),
            settled: VecDeque::new(),
            base: 0,
            pending: Vec::new(),
        }
    }

    /// The newest accepted timestamp.
    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// What `ts` is.
    pub fn check(&self, ts: i64) -> Verdict {
        if ts > self.watermark {
            return Verdict::New;
        }
        if self.holds(ts) {
            return Verdict::Duplicate;
        }
        if ts >= self.complete_from {
            Verdict::New
        } else {
            Verdict::Unsure
        }
    }

    fn holds(&self, ts: i64) -> bool {
        self.pending.iter().rev().any(|&(t, _)| t == ts) || self.settled_pos(ts).is_ok()
    }

    /// Where `ts` is (or would go) among the settled timestamps.
    fn settled_pos(&self, ts: i64) -> Result<usize, usize> {
        let n = self.settled.len();
        let Some(&back) = self.settled.back() else {
            return Err(0);
        };
        let off = ts - self.base;
        if off < 0 {
            return Err(0);
        }
        if off > back as i64 {
            return Err(n);
        }
        let off = off as u32;
        if off == back {
            return Ok(n - 1);
        }
        self.settled.binary_search(&off)
    }

    /// Remember an accepted `ts`, brought by the record at `lsn`.
    pub fn accept(&mut self, ts: i64, lsn: u64) {
        if !self.holds(ts) {
            self.pending.push((ts, lsn));
        }
        self.watermark = self.watermark.max(ts);
    }

    /// Forget `ts` and everything older: they become unsure.
    fn forget_through(&mut self, ts: i64) {
        self.complete_from = self.complete_from.max(ts.saturating_add(1));
    }

    /// Move a timestamp silver now holds among the settled ones.
    fn settle(&mut self, ts: i64, cap: usize) {
        if self.settled.is_empty() {
            self.base = ts;
        }
        let mut off = ts - self.base;
        if off < 0 {
            // Older than every settled timestamp: rebase, if the newest
            // still fits in 32 bits; else forget it (it is in silver).
            let shift = -off;
            let back = *self.settled.back().unwrap_or(&0) as i64;
            if back + shift > u32::MAX as i64 {
                self.forget_through(ts);
                return;
            }
            for o in self.settled.iter_mut() {
                *o += shift as u32;
            }
            self.base = ts;
            off = 0;
        }
        // Too far after the oldest: forget the oldest until it fits.
        while off > u32::MAX as i64 {
            match self.settled.pop_front() {
                Some(o) => self.forget_through(self.base + o as i64),
                None => break,
            }
            match self.settled.front() {
                Some(&f) => {
                    let f = f as i64;
                    for o in self.settled.iter_mut() {
                        *o -= f as u32;
                    }
                    self.base += f;
                }
                None => self.base = ts,
            }
            off = ts - self.base;
        }
        if let Err(pos) = self.settled_pos(ts) {
            // Grow by doubling up to exactly `cap + 1`: a signal updated
            // rarely holds a small ring, a busy one no more than it needs.
            if self.settled.len() == self.settled.capacity() {
                let want = (self.settled.capacity() * 2).clamp(8, (cap + 1).max(8));
                self.settled
                    .reserve_exact(want.saturating_sub(self.settled.len()).max(1));
            }
            self.settled.insert(pos, off as u32);
        }
    }

    /// Settle the timestamps whose records silver holds (`durable`), then
    /// forget the oldest settled ones beyond `cap`.
    pub fn evict(&mut self, cap: usize, durable: u64) {
        if self.pending.iter().any(|&(_, lsn)| lsn <= durable) {
            let pending = std::mem::take(&mut self.pending);
            let mut keep = Vec::with_capacity(pending.iter().filter(|p| p.1 > durable).count());
            for (ts, lsn) in pending {
                if lsn <= durable {
                    self.settle(ts, cap);
                    self.trim_settled(cap);
                } else {
                    keep.push((ts, lsn));
                }
            }
            self.pending = keep;
        }
        while self.len() > cap && self.trim_settled(self.settled.len().saturating_sub(1)) {}
        if self.settled.capacity() > 2 * (cap + 1).max(8) {
            self.settled.shrink_to(cap + 1);
        }
    }

    /// Forget the oldest settled timestamps beyond `keep`; whether any was.
    fn trim_settled(&mut self, keep: usize) -> bool {
        let mut any = false;
        while self.settled.len() > keep {
            let Some(o) = self.settled.pop_front() else {
                break;
            };
            self.forget_through(self.base + o as i64);
            any = true;
        }
        any
    }

    /// Timestamps remembered.
    pub fn len(&self) -> usize {
        self.settled.len() + self.pending.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn in_order_late_redelivered_and_forgotten() {
        let mut d = SignalDedup::new(i64::MIN);
        for t in 0..10 {
            assert_eq!(d.check(t * 10), Verdict::New);
            d.accept(t * 10, t as u64 + 1);
        }
        assert_eq!(d.check(50), Verdict::Duplicate);
        assert_eq!(d.check(55), Verdict::New, "late but new");
        d.accept(55, 11);
        assert_eq!(d.check(55), Verdict::Duplicate);
        // Not durable yet: nothing is forgotten.
        d.evict(4, 0);
        assert_eq!(d.len(), 11);
        d.evict(4, 100);
        assert_eq!(d.len(), 4);
        assert_eq!(d.check(0), Verdict::Unsure, "older than remembered");
        assert_eq!(d.check(80), Verdict::Duplicate);
        // After a restart: below the watermark everything is unsure.
        let d = SignalDedup::new(90);
        assert_eq!(d.check(90), Verdict::Unsure);
        assert_eq!(d.check(91), Verdict::New);
    }

    proptest! {
        /// Against a set of everything accepted: never `New` for a seen
        /// timestamp, never `Duplicate` for an unseen one.
        #[test]
        fn exact_against_a_reference(ts in proptest::collection::vec(0i64..200, 1..400), cap in 1usize..32) {
            let mut d = SignalDedup::new(i64::MIN);
            let mut seen = std::collections::HashSet::new();
            for (i, t) in ts.into_iter().enumerate() {
                let v = d.check(t);
                match v {
                    Verdict::New => prop_assert!(!seen.contains(&t)),
                    Verdict::Duplicate => prop_assert!(seen.contains(&t)),
                    Verdict::Unsure => {}
                }
                if v != Verdict::Duplicate && !seen.contains(&t) {
                    seen.insert(t);
                    d.accept(t, i as u64 + 1);
                }
                d.evict(cap, i as u64);
            }
        }

        /// The same with timestamps days to years apart (offsets that do
        /// not fit in 32 bits, late readings older than every settled one)
        /// and silver lagging behind: a reading silver may not hold yet is
        /// never forgotten (never unsure).
        #[test]
        fn exact_with_wide_gaps_and_a_lagging_silver(
            steps in proptest::collection::vec((0i64..64, 0u32..3), 1..300),
            cap in 1usize..16,
            lag in 0u64..20,
        ) {
            let mut d = SignalDedup::new(i64::MIN);
            let mut seen = std::collections::HashMap::new();
            for (i, (t, scale)) in steps.into_iter().enumerate() {
                // ms, hours or ~12 days per step: up to two years apart.
                let t = t * [1, 3_600_000, 1 << 30][scale as usize];
                let lsn = i as u64 + 1;
                let durable = lsn.saturating_sub(lag);
                match d.check(t) {
                    Verdict::New => prop_assert!(!seen.contains_key(&t)),
                    Verdict::Duplicate => prop_assert!(seen.contains_key(&t)),
                    Verdict::Unsure => prop_assert!(
                        seen.get(&t).is_none_or(|&at| at <= durable),
                        "{t} accepted at {:?} forgotten before silver held it ({durable})",
                        seen.get(&t)
                    ),
                }
                if let std::collections::hash_map::Entry::Vacant(e) = seen.entry(t) {
                    e.insert(lsn);
                    d.accept(t, lsn);
                }
                d.evict(cap, durable);
                prop_assert!(d.len() <= cap + lag as usize + 1);
            }
        }
    }

    #[test]
    fn four_bytes_per_settled_timestamp() {
        let mut d = SignalDedup::new(i64::MIN);
        let t0 = 1_790_000_000_000i64;
        for i in 0..10_000u64 {
            d.accept(t0 + i as i64 * 1000 + (i as i64 % 7), i + 1);
            d.evict(512, i.saturating_sub(3));
        }
        assert_eq!(d.len(), 512);
        assert!(d.settled.capacity() <= 513, "{}", d.settled.capacity());
        assert!(d.pending.capacity() <= 16, "{}", d.pending.capacity());
        assert_eq!(d.check(t0 + 9_999 * 1000 + 3), Verdict::Duplicate);
        assert_eq!(d.check(t0 + 9_600 * 1000 + 3), Verdict::Duplicate);
        assert_eq!(d.check(t0 + 9_600 * 1000 + 4), Verdict::New);
        assert_eq!(d.check(t0 + 1000 + 1), Verdict::Unsure);
    }

    #[test]
    fn a_rarely_updated_signal_holds_a_small_ring() {
        let mut d = SignalDedup::new(i64::MIN);
        for i in 0..10u64 {
            d.accept(1_790_000_000_000 + i as i64 * 3_600_000, i + 1);
            d.evict(512, i + 1);
        }
        assert_eq!(d.len(), 10);
        assert!(d.settled.capacity() <= 16, "{}", d.settled.capacity());
    }
}
