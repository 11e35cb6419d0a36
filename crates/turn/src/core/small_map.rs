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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_replaces_the_value_of_a_key_it_holds() {
        let mut m = SmallMap::new();
        m.insert(1u16, "a");
        m.insert(2, "b");
        m.insert(1, "c");
        assert_eq!(m.len(), 2);
        assert_eq!(m.get(&1), Some(&"c"));
        assert!(m.contains_key(&2));
        assert!(!m.contains_key(&3));
        assert_eq!(m.get(&3), None);
    }

    /// An empty map holds no heap; `retain` gives memory back once at most a quarter of it is
    /// used, and not before.
    #[test]
    fn empty_maps_hold_no_heap_and_retain_shrinks_a_mostly_empty_one() {
        let mut m: SmallMap<u32, ()> = SmallMap::new();
        assert_eq!(m.0.capacity(), 0);
        for k in 0..32 {
            m.insert(k, ());
        }
        let full = m.0.capacity();
        m.retain(|k, _| *k < 24);
        assert_eq!((m.len(), m.0.capacity()), (24, full));
        m.retain(|k, _| *k < 2);
        assert_eq!(m.len(), 2);
        assert!(m.0.capacity() < full, "shrunk to {}", m.0.capacity());
        assert!(m.contains_key(&0) && m.contains_key(&1) && !m.contains_key(&2));
    }
}
