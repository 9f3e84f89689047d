//! Which offsets may be committed: a message's offset is committed only
//! once it, and every message before it in its partition, is in the
//! ingest journal. Messages are journaled out of order across shards, so
//! per partition the commit position is the lowest offset still waiting
//! (or one past the highest received when none waits).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// One partition's messages between receipt and the journal.
#[derive(Debug, Default)]
struct Part {
    pending: BTreeSet<i64>,
    /// One past the highest offset received.
    next: i64,
    /// The position last handed out for committing.
    committed: i64,
}

impl Part {
    fn position(&self) -> i64 {
        self.pending.first().copied().unwrap_or(self.next)
    }
}

/// The offsets of every partition this consumer holds.
#[derive(Debug, Default)]
pub struct Tracker {
    parts: HashMap<(Arc<str>, i32), Part>,
    seqs: HashMap<u64, (Arc<str>, i32, i64)>,
    next_seq: u64,
}

impl Tracker {
    /// A message was received; returns the sequence number its
    /// acknowledgement will carry.
    pub fn received(&mut self, topic: &Arc<str>, partition: i32, offset: i64) -> u64 {
        // A partition's first message here: what came before it is committed
        // (or the previous owner's), so nothing needs committing yet.
        let p = self
            .parts
            .entry((topic.clone(), partition))
            .or_insert_with(|| Part {
                committed: offset,
                ..Default::default()
            });
        p.pending.insert(offset);
        p.next = p.next.max(offset + 1);
        self.next_seq += 1;
        self.seqs
            .insert(self.next_seq, (topic.clone(), partition, offset));
        self.next_seq
    }

    /// The message `seq` is in the journal.
    pub fn durable(&mut self, seq: u64) {
        if let Some((t, p, o)) = self.seqs.remove(&seq) {
            if let Some(part) = self.parts.get_mut(&(t, p)) {
                part.pending.remove(&o);
            }
        }
    }

    /// Positions to commit now (those that moved since the last call).
    pub fn to_commit(&mut self) -> Vec<(Arc<str>, i32, i64)> {
        let mut out = Vec::new();
        for ((t, p), part) in &mut self.parts {
            let pos = part.position();
            if pos > part.committed {
                part.committed = pos;
                out.push((t.clone(), *p, pos));
            }
        }
        out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        out
    }

    /// A commit of these positions failed: offer them again.
    pub fn commit_failed(&mut self, moved: &[(Arc<str>, i32, i64)]) {
        for (t, p, _) in moved {
            if let Some(part) = self.parts.get_mut(&(t.clone(), *p)) {
                part.committed = i64::MIN;
            }
        }
    }

    /// Messages still waiting for the journal in these partitions.
    pub fn pending_in(&self, parts: &[(String, i32)]) -> usize {
        parts
            .iter()
            .filter_map(|(t, p)| self.parts.get(&(Arc::from(t.as_str()), *p)))
            .map(|x| x.pending.len())
            .sum()
    }

    /// The commit positions of these partitions (where they have any).
    pub fn positions(&self, parts: &[(String, i32)]) -> Vec<(String, i32, i64)> {
        parts
            .iter()
            .filter_map(|(t, p)| {
                let part = self.parts.get(&(Arc::from(t.as_str()), *p))?;
                (part.next > 0).then(|| (t.clone(), *p, part.position()))
            })
            .collect()
    }

    /// Stop tracking partitions given away (their late acknowledgements are ignored).
    pub fn forget(&mut self, parts: &[(String, i32)]) {
        for (t, p) in parts {
            self.parts.remove(&(Arc::from(t.as_str()), *p));
        }
        let keep: std::collections::HashSet<(Arc<str>, i32)> = self.parts.keys().cloned().collect();
        self.seqs
            .retain(|_, (t, p, _)| keep.contains(&(t.clone(), *p)));
    }

    /// Messages received and not yet journaled, in all partitions.
    pub fn in_flight(&self) -> usize {
        self.seqs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_only_what_is_durable_in_order() {
        let t: Arc<str> = Arc::from("tel");
        let mut tr = Tracker::default();
        let s: Vec<u64> = (10..15).map(|o| tr.received(&t, 0, o)).collect();
        let s1 = tr.received(&t, 1, 7);
        assert!(tr.to_commit().is_empty(), "nothing durable yet");
        // 11 and 12 durable, 10 not: partition 0 cannot move.
        tr.durable(s[1]);
        tr.durable(s[2]);
        assert!(tr.to_commit().is_empty());
        tr.durable(s[0]);
        assert_eq!(tr.to_commit(), vec![(t.clone(), 0, 13)]);
        tr.durable(s1);
        tr.durable(s[3]);
        tr.durable(s[4]);
        assert_eq!(tr.to_commit(), vec![(t.clone(), 0, 15), (t.clone(), 1, 8)]);
        assert!(tr.to_commit().is_empty(), "only what moved");
        assert_eq!(tr.in_flight(), 0);
    }

    #[test]
    fn revoked_partitions_wait_then_are_forgotten() {
        let t: Arc<str> = Arc::from("tel");
        let mut tr = Tracker::default();
        let a = tr.received(&t, 0, 0);
        let _b = tr.received(&t, 2, 5);
        let parts = vec![("tel".to_string(), 0)];
        assert_eq!(tr.pending_in(&parts), 1);
        tr.durable(a);
        assert_eq!(tr.pending_in(&parts), 0);
        assert_eq!(tr.positions(&parts), vec![("tel".to_string(), 0, 1)]);
        tr.forget(&parts);
        assert_eq!(tr.in_flight(), 1);
        assert!(tr.positions(&parts).is_empty());
    }
}
