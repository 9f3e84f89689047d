//! Which topic filters each of ironlake's MQTT connections subscribes to.
//!
//! A broker lets a few QoS 1 messages be in flight per connection before it
//! waits for their acknowledgements (rumqttd: 100, Mosquitto:
//! `max_inflight_messages`, 20 unless configured), and ironlake acknowledges
//! only what its journal holds. One connection therefore carries at most
//! `window / round trip` messages a second; `mqtt.connections` sessions
//! carry that many times more.
//!
//! Filters are spread over the connections by a stable hash, so adding a
//! machine never moves another machine's topic to a different session.
//! Filters that can match the same topic stay on one connection: the broker
//! then delivers each message once.

use crate::connectors::stable_hash;

/// Most MQTT connections (sessions) ironlake opens to one broker.
pub const MAX_CONNECTIONS: usize = 16;

/// Whether some topic matches both filters.
pub fn filters_overlap(a: &str, b: &str) -> bool {
    let mut al = a.split('/');
    let mut bl = b.split('/');
    loop {
        match (al.next(), bl.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (None, None) => return true,
            (Some(x), Some(y)) if x == "+" || y == "+" || x == y => {}
            _ => return false,
        }
    }
}

fn is_wildcard(f: &str) -> bool {
    f.contains(['+', '#'])
}

/// Client id of connection `k` (`client_id`, `client_id-1`, ...).
pub fn client_id(base: &str, k: usize) -> String {
    if k == 0 {
        base.to_string()
    } else {
        format!("{base}-{k}")
    }
}

/// The filters of each of `n` connections (some may be empty).
pub fn partition(filters: &[String], n: usize) -> Vec<Vec<String>> {
    let n = n.clamp(1, MAX_CONNECTIONS);
    let mut uniq: Vec<&String> = filters.iter().collect();
    uniq.sort();
    uniq.dedup();
    // Union-find over overlapping filters; concrete topics overlap only
    // with wildcards (and are unique), so only wildcards are compared with
    // everything.
    let mut parent: Vec<usize> = (0..uniq.len()).collect();
    fn root(p: &mut [usize], mut i: usize) -> usize {
        while p[i] != i {
            p[i] = p[p[i]];
            i = p[i];
        }
        i
    }
    for i in 0..uniq.len() {
        if !is_wildcard(uniq[i]) {
            continue;
        }
        for j in 0..uniq.len() {
            if i != j && filters_overlap(uniq[i], uniq[j]) {
                let (a, b) = (root(&mut parent, i), root(&mut parent, j));
                parent[a.max(b)] = a.min(b);
            }
        }
    }
    let mut out = vec![Vec::new(); n];
    for i in 0..uniq.len() {
        // A group goes where its smallest filter (its root) hashes.
        let r = root(&mut parent, i);
        let k = (stable_hash(uniq[r]) % n as u64) as usize;
        out[k].push(uniq[i].clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn overlap() {
        assert!(filters_overlap("a/#", "a"));
        assert!(filters_overlap("a/+/c", "a/b/+"));
        assert!(filters_overlap("+/b", "a/+"));
        assert!(filters_overlap("#", "x/y"));
        assert!(!filters_overlap("a/+", "a/b/c"));
        assert!(!filters_overlap("a/b", "a/c"));
        assert!(!filters_overlap("a/+/c", "a/b/d"));
    }

    #[test]
    fn topics_spread_and_stay_put() {
        let topics: Vec<String> = (0..1000).map(|i| format!("plant/m{i}")).collect();
        let p = partition(&topics, 4);
        assert_eq!(p.iter().map(Vec::len).sum::<usize>(), 1000);
        for part in &p {
            assert!(part.len() > 150 && part.len() < 350, "{}", part.len());
        }
        // One more machine moves no other topic.
        let mut more = topics.clone();
        more.push("plant/new".into());
        let q = partition(&more, 4);
        for (a, b) in p.iter().zip(&q) {
            assert!(a.iter().all(|t| b.contains(t)));
        }
    }

    #[test]
    fn overlapping_filters_share_a_connection() {
        let f = s(&["ironlake/#", "ironlake/a/m1", "other/m2", "other/+", "x/y"]);
        let p = partition(&f, 8);
        let home = |t: &str| p.iter().position(|v| v.iter().any(|x| x == t)).unwrap();
        assert_eq!(home("ironlake/#"), home("ironlake/a/m1"));
        assert_eq!(home("other/+"), home("other/m2"));
        assert_eq!(p.iter().map(Vec::len).sum::<usize>(), 5);
        assert_eq!(
            partition(&f, 1),
            vec![{
                let mut v = f.clone();
                v.sort();
                v
            }]
        );
    }
}
