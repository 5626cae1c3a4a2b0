//! A height index over the transcript's cells: the line where a cell starts, the cell at a line,
//! and the total, each in O(log n + BLOCK), with O(log n) updates when a cell is laid out or grows.
//! Heights not yet measured at the current width are estimates.
//!
//! Cells are summed in blocks of [`BLOCK`], and a Fenwick tree holds the blocks' prefix sums: a
//! resize, which replaces every height, writes one sum per block instead of one tree node per cell.

/// Cells per block.
const BLOCK: usize = 64;

/// Prefix sums of cell heights.
#[derive(Debug, Clone, Default)]
pub struct HeightIndex {
    values: Vec<u32>,
    /// Fenwick tree over the blocks' sums (1-based: `tree[0]` is unused).
    tree: Vec<u64>,
}

impl HeightIndex {
    /// An index of `heights`, built in O(n).
    pub fn from_heights(heights: impl IntoIterator<Item = u32>) -> Self {
        let mut index = HeightIndex::default();
        index.rebuild(heights);
        index
    }

    /// Replaces every height (a resize), reusing the index's memory: one pass over the heights,
    /// one sum per block.
    pub fn rebuild(&mut self, heights: impl IntoIterator<Item = u32>) {
        self.values.clear();
        self.values.extend(heights);
        let n = self.values.len().div_ceil(BLOCK);
        self.tree.clear();
        self.tree.resize(n + 1, 0);
        for (k, block) in (1..=n).zip(self.values.chunks(BLOCK)) {
            self.tree[k] += block.iter().map(|&h| u64::from(h)).sum::<u64>();
            let parent = k + (k & k.wrapping_neg());
            if parent <= n {
                self.tree[parent] += self.tree[k];
            }
        }
    }

    /// Cells in the index.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// No cells.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Height of cell `i` (0 past the end).
    pub fn get(&self, i: usize) -> u32 {
        self.values.get(i).copied().unwrap_or(0)
    }

    /// Appends a cell of height `h`.
    pub fn push(&mut self, h: u32) {
        let i = self.values.len();
        self.values.push(h);
        if i.is_multiple_of(BLOCK) {
            // A new block: tree[k] covers blocks (k - lowbit(k), k].
            if self.tree.is_empty() {
                self.tree.push(0);
            }
            let k = self.tree.len();
            let low = k & k.wrapping_neg();
            let covered = self.blocks_prefix(k - 1) - self.blocks_prefix(k - low);
            self.tree.push(u64::from(h) + covered);
        } else {
            self.add(i / BLOCK, i64::from(h));
        }
    }

    /// Sets cell `i`'s height.
    pub fn set(&mut self, i: usize, h: u32) {
        let Some(old) = self.values.get(i).copied() else {
            return;
        };
        if old == h {
            return;
        }
        self.values[i] = h;
        self.add(i / BLOCK, i64::from(h) - i64::from(old));
    }

    /// Adds `delta` to block `b`'s sum.
    fn add(&mut self, b: usize, delta: i64) {
        let mut k = b + 1;
        while k < self.tree.len() {
            self.tree[k] = self.tree[k].wrapping_add_signed(delta);
            k += k & k.wrapping_neg();
        }
    }

    /// Blocks in the index.
    fn blocks(&self) -> usize {
        self.tree.len().saturating_sub(1)
    }

    /// Lines in the first `b` blocks.
    fn blocks_prefix(&self, b: usize) -> u64 {
        let mut k = b.min(self.blocks());
        let mut s = 0;
        while k > 0 {
            s += self.tree[k];
            k -= k & k.wrapping_neg();
        }
        s
    }

    /// Lines before cell `i`.
    pub fn prefix(&self, i: usize) -> u64 {
        let i = i.min(self.values.len());
        let b = i / BLOCK;
        self.blocks_prefix(b)
            + self.values[b * BLOCK..i]
                .iter()
                .map(|&h| u64::from(h))
                .sum::<u64>()
    }

    /// Lines in all.
    pub fn total(&self) -> u64 {
        self.blocks_prefix(self.blocks())
    }

    /// The cell holding line `line` and the line's offset in it; `None` past the end.
    pub fn find(&self, line: u64) -> Option<(usize, u32)> {
        let n = self.values.len();
        if line >= self.total() {
            return None;
        }
        // The last block whose start is at or before the line.
        let blocks = self.blocks();
        let mut pos = 0usize;
        let mut rem = line;
        let mut step = blocks.next_power_of_two();
        while step > 0 {
            let next = pos + step;
            if next <= blocks && self.tree[next] <= rem {
                pos = next;
                rem -= self.tree[next];
            }
            step >>= 1;
        }
        // Then cell by cell; cells of height 0 hold no line: skip them.
        let mut i = pos * BLOCK;
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
        fn matches_a_plain_scan(heights in proptest::collection::vec(0u32..7, 0..300), updates in proptest::collection::vec((0usize..300, 0u32..7), 0..40)) {
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
            let mut rebuilt = HeightIndex::from_heights(vec![3; 170]);
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
