//! Tree ensembles in ironlake's own serving format: flat arrays per tree
//! (split feature, threshold, children, leaf value), read from smartcore's
//! trained forests once and then scored without smartcore, row by row (a
//! twin) or a whole matrix at a time (batch, parallel over row chunks).
//!
//! A node goes to its `left` child when `x[feature] <= threshold` (missing
//! values are imputed before scoring); a leaf has `left == LEAF`.

use serde::{Deserialize, Serialize};

/// Marks a leaf in `left`.
pub const LEAF: u32 = u32::MAX;

/// One regression tree, flat.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Tree {
    pub feature: Vec<u16>,
    pub threshold: Vec<f64>,
    pub left: Vec<u32>,
    pub right: Vec<u32>,
    /// Leaf output (the node's mean target for inner nodes).
    pub value: Vec<f64>,
}

impl Tree {
    #[inline]
    pub fn leaf(&self, x: &[f64]) -> f64 {
        let mut n = 0usize;
        loop {
            let l = self.left[n];
            if l == LEAF {
                return self.value[n];
            }
            n = if x[self.feature[n] as usize] <= self.threshold[n] {
                l as usize
            } else {
                self.right[n] as usize
            };
        }
    }

    pub fn nodes(&self) -> usize {
        self.left.len()
    }
}

/// One node of a packed tree.
#[derive(Debug, Clone, Copy)]
struct Node {
    threshold: f64,
    feature: u32,
    /// Right, then left (taken when x <= threshold: index 1); a leaf
    /// points at itself twice.
    kids: [u32; 2],
}

/// A tree packed for batch scoring.
struct Packed {
    nodes: Vec<Node>,
    value: Vec<f64>,
    depth: u32,
}

impl Packed {
    fn of(t: &Tree) -> Packed {
        let nodes: Vec<Node> = (0..t.nodes())
            .map(|i| {
                if t.left[i] == LEAF {
                    Node {
                        threshold: 0.0,
                        feature: 0,
                        kids: [i as u32, i as u32],
                    }
                } else {
                    Node {
                        threshold: t.threshold[i],
                        feature: t.feature[i] as u32,
                        kids: [t.right[i], t.left[i]],
                    }
                }
            })
            .collect();
        // The longest path from the root (the number of lockstep steps).
        let mut depth = 0;
        let mut stack = vec![(0usize, 0u32)];
        while let Some((n, d)) = stack.pop() {
            if n >= nodes.len() {
                continue;
            }
            if t.left[n] == LEAF {
                depth = depth.max(d);
            } else {
                stack.push((t.left[n] as usize, d + 1));
                stack.push((t.right[n] as usize, d + 1));
            }
        }
        Packed {
            nodes,
            value: t.value.clone(),
            depth,
        }
    }

    /// Add each row's leaf value to `out` (rows of `k` features in `xs`).
    fn add_leaves(&self, xs: &[f64], k: usize, out: &mut [f64]) {
        const LANES: usize = 8;
        if self.nodes.is_empty() {
            return;
        }
        let rows = out.len();
        let full = rows - rows % LANES;
        let nodes = &self.nodes[..];
        for r in (0..full).step_by(LANES) {
            let mut at = [0u32; LANES];
            for _ in 0..self.depth {
                for (j, a) in at.iter_mut().enumerate() {
                    let nd = nodes[*a as usize];
                    let v = xs[(r + j) * k + nd.feature as usize];
                    // Left when x <= threshold (NaN goes right, as in `leaf`).
                    *a = nd.kids[(v <= nd.threshold) as usize];
                }
            }
            for (j, a) in at.iter().enumerate() {
                out[r + j] += self.value[*a as usize];
            }
        }
        for (r, o) in out.iter_mut().enumerate().skip(full) {
            let mut a = 0usize;
            for _ in 0..self.depth {
                let nd = nodes[a];
                let v = xs[r * k + nd.feature as usize];
                a = nd.kids[(v <= nd.threshold) as usize] as usize;
            }
            *o += self.value[a];
        }
    }
}

/// A forest: the mean of its trees' leaves.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Forest {
    pub trees: Vec<Tree>,
}

/// Why a trained model could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the trained forest: {0}")]
pub struct ExportError(pub String);

impl Forest {
    /// Score one row (features in the model's order, no missing values).
    #[inline]
    pub fn predict_row(&self, x: &[f64]) -> f64 {
        if self.trees.is_empty() {
            return f64::NAN;
        }
        let mut s = 0.0;
        for t in &self.trees {
            s += t.leaf(x);
        }
        s / self.trees.len() as f64
    }

    /// Score a row-major matrix of `n_features` columns into `out`: the
    /// same sums, in the same order, as [`Forest::predict_row`].
    ///
    /// Rows go through each tree eight at a time, in lockstep and without
    /// branches: the trees are first packed into one node array each
    /// (threshold, feature and both children side by side, one cache line)
    /// where a leaf is its own child, so every row takes exactly the tree's
    /// depth in steps and eight independent chains of loads keep the core
    /// busy instead of waiting on one.
    pub fn predict_into(&self, x: &[f64], n_features: usize, out: &mut [f64]) {
        use rayon::prelude::*;
        const CHUNK: usize = 4096;
        if n_features == 0 {
            return;
        }
        let packed: Vec<Packed> = self.trees.iter().map(Packed::of).collect();
        out.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK * n_features))
            .for_each(|(o, xs)| {
                o.fill(0.0);
                // Tree-major within a chunk: a tree's nodes stay in cache.
                for t in &packed {
                    t.add_leaves(xs, n_features, o);
                }
                let k = self.trees.len().max(1) as f64;
                o.iter_mut().for_each(|v| *v /= k);
            });
    }

    /// Read a smartcore forest (`RandomForestRegressor`) through its serde
    /// form: every `nodes` array found is one tree.
    pub fn from_smartcore<T: Serialize>(model: &T) -> Result<Forest, ExportError> {
        let v = serde_json::to_value(model).map_err(|e| ExportError(e.to_string()))?;
        let mut trees = Vec::new();
        collect(&v, &mut trees)?;
        if trees.is_empty() {
            return Err(ExportError("no trees in the model".into()));
        }
        Ok(Forest { trees })
    }

    /// Split counts per feature (a cheap importance).
    pub fn split_counts(&self, n_features: usize) -> Vec<u64> {
        let mut c = vec![0u64; n_features];
        for t in &self.trees {
            for (i, &l) in t.left.iter().enumerate() {
                if l != LEAF {
                    if let Some(s) = c.get_mut(t.feature[i] as usize) {
                        *s += 1;
                    }
                }
            }
        }
        c
    }
}

fn collect(v: &serde_json::Value, out: &mut Vec<Tree>) -> Result<(), ExportError> {
    match v {
        serde_json::Value::Object(m) => {
            if let Some(serde_json::Value::Array(nodes)) = m.get("nodes") {
                out.push(tree(nodes)?);
                return Ok(());
            }
            for x in m.values() {
                collect(x, out)?;
            }
        }
        serde_json::Value::Array(a) => {
            for x in a {
                collect(x, out)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn tree(nodes: &[serde_json::Value]) -> Result<Tree, ExportError> {
    let bad = |i: usize, what: &str| ExportError(format!("node {i}: {what}"));
    let mut t = Tree::default();
    for (i, n) in nodes.iter().enumerate() {
        let output = n
            .get("output")
            .and_then(|o| o.as_f64())
            .ok_or_else(|| bad(i, "no numeric output"))?;
        let child = |k: &str| n.get(k).and_then(|c| c.as_u64());
        match (child("true_child"), child("false_child")) {
            (Some(l), Some(r)) => {
                let f = n
                    .get("split_feature")
                    .and_then(|f| f.as_u64())
                    .ok_or_else(|| bad(i, "no split feature"))?;
                let th = n
                    .get("split_value")
                    .and_then(|s| s.as_f64())
                    .ok_or_else(|| bad(i, "no split value"))?;
                if l as usize >= nodes.len() || r as usize >= nodes.len() || f > u16::MAX as u64 {
                    return Err(bad(i, "child or feature out of range"));
                }
                t.feature.push(f as u16);
                t.threshold.push(th);
                t.left.push(l as u32);
                t.right.push(r as u32);
            }
            _ => {
                t.feature.push(0);
                t.threshold.push(0.0);
                t.left.push(LEAF);
                t.right.push(LEAF);
            }
        }
        t.value.push(output);
    }
    if t.left.is_empty() {
        return Err(ExportError("a tree without nodes".into()));
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use smartcore::ensemble::random_forest_regressor::{
        RandomForestRegressor, RandomForestRegressorParameters,
    };
    use smartcore::linalg::basic::matrix::DenseMatrix;

    #[test]
    fn the_exported_forest_scores_exactly_as_smartcore() {
        // Not a multiple of the batch path's eight lanes: the tail is scored too.
        let n = 403;
        let mut xs = Vec::new();
        let mut y = Vec::new();
        for i in 0..n {
            let a = (i as f64 * 0.37).sin() * 3.0;
            let b = (i % 17) as f64;
            let c = i as f64 / n as f64;
            xs.extend([a, b, c]);
            y.push(a * a + if b > 8.0 { 2.0 } else { 0.0 } + c);
        }
        let x = DenseMatrix::new(n, 3, xs.clone(), false).unwrap();
        let params = RandomForestRegressorParameters {
            max_depth: Some(6),
            min_samples_leaf: 2,
            min_samples_split: 4,
            n_trees: 12,
            m: Some(2),
            keep_samples: false,
            seed: 7,
        };
        let rf = RandomForestRegressor::fit(&x, &y, params).unwrap();
        let theirs: Vec<f64> = rf.predict(&x).unwrap();
        let f = Forest::from_smartcore(&rf).unwrap();
        assert_eq!(f.trees.len(), 12);
        let mut ours = vec![0.0; n];
        f.predict_into(&xs, 3, &mut ours);
        for i in 0..n {
            let one = f.predict_row(&xs[i * 3..i * 3 + 3]);
            assert!(
                (one - theirs[i]).abs() < 1e-9,
                "row {i}: {one} vs {}",
                theirs[i]
            );
            assert_eq!(
                ours[i], one,
                "row {i}: batch and one-row scores agree exactly"
            );
        }
        // The round trip through the artifact format keeps it.
        let back: Forest = serde_json::from_str(&serde_json::to_string(&f).unwrap()).unwrap();
        assert_eq!(back, f);
        assert!(f.split_counts(3).iter().all(|&c| c > 0));
    }
}
