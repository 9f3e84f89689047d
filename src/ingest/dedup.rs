//! Exact duplicate detection on `(asset, signal, ts)`.
//!
//! Per signal the filter knows:
//! * the **watermark**: the newest timestamp ever accepted (in this run, in
//!   the journal, or committed to `silver.readings` before). A reading
//!   newer than it is new, without looking anything up: the common case.
//! * a **ring** of the most recent accepted timestamps (sorted, at most
//!   `ingest.dedup_recent`), complete from `complete_from` on: a reading in
//!   that range is a duplicate exactly when the ring holds its timestamp.
//!   Entries leave the ring only once the silver writer holds them durably,
//!   so the ring never forgets a reading the table does not have yet.
//! * anything older is **unsure**: the ingest stage looks it up in
//!   `silver.readings` (rare: a reading later than the ring reaches, or the
//!   first redeliveries after a restart), so a late reading that is new is
//!   kept however late, and a redelivery is dropped however late.

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
    /// (timestamp, journal position that brought it), sorted by timestamp.
    ring: VecDeque<(i64, u64)>,
}

impl SignalDedup {
    /// A filter that knows timestamps up to `watermark` were accepted before
    /// (but not which): those are unsure.
    pub fn new(watermark: i64) -> Self {
        SignalDedup {
            watermark,
            complete_from: watermark.saturating_add(1),
            ring: VecDeque::new(),
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
        if self.find(ts).is_ok() {
            return Verdict::Duplicate;
        }
        if ts >= self.complete_from {
            Verdict::New
        } else {
            Verdict::Unsure
        }
    }

    fn find(&self, ts: i64) -> Result<usize, usize> {
        // Mostly in order: check the back first.
        match self.ring.back() {
            Some(&(b, _)) if ts > b => Err(self.ring.len()),
            Some(&(b, _)) if ts == b => Ok(self.ring.len() - 1),
            _ => self.ring.binary_search_by(|(t, _)| t.cmp(&ts)),
        }
    }

    /// Remember an accepted `ts`, brought by the record at `lsn`.
    pub fn accept(&mut self, ts: i64, lsn: u64) {
        if let Err(pos) = self.find(ts) {
            if pos == self.ring.len() {
                self.ring.push_back((ts, lsn));
            } else {
                self.ring.insert(pos, (ts, lsn));
            }
        }
        self.watermark = self.watermark.max(ts);
    }

    /// Forget the oldest timestamps beyond `cap`, but only those whose
    /// records the silver table holds (`durable`).
    pub fn evict(&mut self, cap: usize, durable: u64) {
        while self.ring.len() > cap {
            match self.ring.front() {
                Some(&(ts, lsn)) if lsn <= durable => {
                    self.ring.pop_front();
                    self.complete_from = self.complete_from.max(ts.saturating_add(1));
                }
                _ => break,
            }
        }
    }

    /// Timestamps remembered.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
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
    }
}
