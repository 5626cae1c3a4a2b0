//! A height index over the transcript's cells (a Fenwick tree of prefix sums): the line where a
//! cell starts, the cell at a line, and the total, each in O(log n), with O(log n) updates when a
//! cell is laid out or grows. Heights not yet measured at the current width are estimates.

/// Prefix sums of cell heights.
#[derive(Debug, Clone, Default)]
pub struct HeightIndex {
    tree: Vec<u64>,
    values: Vec<u32>,
}

impl HeightIndex {
    /// An index of `heights`, built in O(n).
    pub fn from_heights(heights: impl IntoIterator<Item = u32>) -> Self {
        let mut index = HeightIndex::default();
        index.rebuild(heights);
        index
    }

    /// Replaces every height (a resize), reusing the index's memory: O(n), no allocation when
    /// the number of cells has not grown.
    pub fn rebuild(&mut self, heights: impl IntoIterator<Item = u32>) {
        self.values.clear();
        self.values.extend(heights);
        let n = self.values.len();
        self.tree.clear();
        self.tree.resize(n + 1, 0);
        for i in 1..=n {
            self.tree[i] += u64::from(self.values[i - 1]);
            let parent = i + (i & i.wrapping_neg());
            if parent <= n {
                self.tree[parent] += self.tree[i];
            }
        }
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// No cells.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Height of cell `i`.
    pub fn get(&self, i: usize) -> u32 {
        self.values.get(i).copied().unwrap_or(0)
    }

    /// Adds a cell at the end.
    pub fn push(&mut self, h: u32) {
        if self.tree.is_empty() {
            self.tree.push(0);
        }
        let i = self.values.len() + 1;
        // tree[i] covers (i - lowbit(i), i]: the new value plus the sums of the ranges before it.
        let low = i & i.wrapping_neg();
        let covered = self.prefix(i - 1) - self.prefix(i - low);
        self.values.push(h);
        self.tree.push(u64::from(h) + covered);
    }

    /// Sets the height of cell `i`.
    pub fn set(&mut self, i: usize, h: u32) {
        let Some(old) = self.values.get(i).copied() else {
            return;
        };
        if old == h {
            return;
        }
        self.values[i] = h;
        let mut k = i + 1;
        while k < self.tree.len() {
            self.tree[k] = self.tree[k] + u64::from(h) - u64::from(old);
            k += k & k.wrapping_neg();
        }
    }

    /// Lines before cell `i` (the line where it starts).
    pub fn prefix(&self, i: usize) -> u64 {
        let mut k = i.min(self.values.len());
        let mut s = 0;
        while k > 0 {
            s += self.tree[k];
            k -= k & k.wrapping_neg();
        }
        s
    }

    /// All lines.
    pub fn total(&self) -> u64 {
        self.prefix(self.values.len())
    }

    /// The cell holding line `line` and the line's offset in it; `None` past the end.
    pub fn find(&self, line: u64) -> Option<(usize, u32)> {
        let n = self.values.len();
        if line >= self.total() {
            return None;
        }
        let mut pos = 0usize;
        let mut rem = line;
        let mut step = n.next_power_of_two();
        while step > 0 {
            let next = pos + step;
            if next <= n && self.tree[next] <= rem {
                pos = next;
                rem -= self.tree[next];
            }
            step >>= 1;
        }
        // Cells of height 0 hold no line: skip them.
        let mut i = pos;
        while i < n && u64::from(self.values[i]) <= rem {
            rem -= u64::from(self.values[i]);
            i += 1;
        }
        (i < n).then_some((i, rem as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn matches_a_plain_scan(heights in proptest::collection::vec(0u32..7, 0..60), updates in proptest::collection::vec((0usize..60, 0u32..7), 0..20)) {
            let mut idx = HeightIndex::default();
            for h in &heights { idx.push(*h); }
            let mut plain = heights.clone();
            let built = HeightIndex::from_heights(heights.clone());
            for (i, h) in updates {
                if i < plain.len() { plain[i] = h; idx.set(i, h); }
            }
            let mut start = 0u64;
            for (i, h) in plain.iter().enumerate() {
                prop_assert_eq!(idx.prefix(i), start);
                for off in 0..*h {
                    prop_assert_eq!(idx.find(start + u64::from(off)), Some((i, off)));
                }
                start += u64::from(*h);
            }
            prop_assert_eq!(idx.total(), start);
            prop_assert_eq!(idx.find(start), None);
            prop_assert_eq!(built.total(), heights.iter().map(|h| u64::from(*h)).sum::<u64>());
            // Rebuilt in place over an index of another size (a resize), it is the same index.
            let mut rebuilt = HeightIndex::from_heights(vec![3; 70]);
            rebuilt.rebuild(plain.iter().copied());
            let mut start = 0u64;
            for (i, h) in plain.iter().enumerate() {
                prop_assert_eq!(rebuilt.prefix(i), start);
                prop_assert_eq!(rebuilt.get(i), *h);
                start += u64::from(*h);
            }
            prop_assert_eq!(rebuilt.len(), plain.len());
            prop_assert_eq!(rebuilt.total(), start);
        }
    }
}
