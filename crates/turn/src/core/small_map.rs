//! The map permissions and channel bindings are kept in.

/// A map for a handful of entries (bounded by `max_permissions`/`max_channels`): a linear scan
/// over a `Vec` beats hashing at these sizes and an empty one costs no heap.
pub(super) struct SmallMap<K, V>(Vec<(K, V)>);

impl<K: PartialEq + Copy, V> SmallMap<K, V> {
    /// An empty map; it allocates on the first insert.
    pub(super) fn new() -> Self {
        SmallMap(Vec::new())
    }
    pub(super) fn get(&self, k: &K) -> Option<&V> {
        self.0.iter().find(|(x, _)| x == k).map(|(_, v)| v)
    }
    pub(super) fn contains_key(&self, k: &K) -> bool {
        self.get(k).is_some()
    }
    pub(super) fn insert(&mut self, k: K, v: V) {
        match self.0.iter_mut().find(|(x, _)| *x == k) {
            Some(e) => e.1 = v,
            None => self.0.push((k, v)),
        }
    }
    pub(super) fn retain(&mut self, mut f: impl FnMut(&K, &mut V) -> bool) {
        self.0.retain_mut(|(k, v)| f(k, v));
        if self.0.capacity() > 8 && self.0.len() < self.0.capacity() / 4 {
            self.0.shrink_to_fit();
        }
    }
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }
}
