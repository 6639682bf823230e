//! The cache of live workflow instances (sticky execution): bounded by count, and when it is
//! full the least recently used instance goes, so the instances that receive events keep
//! receiving them without a replay. Its counters are readable while the worker runs.

use infinitic_core::Status;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// The instance cache of a workflow worker at one moment: what it holds and how well it serves.
///
/// A hit is an event whose instance was live in memory; a miss is one whose instance had to be
/// rebuilt by replaying its stored history (a start is neither). Many misses with evictions
/// mean [`WorkerConfig::cache_capacity`](super::WorkerConfig::cache_capacity) is smaller than
/// the number of instances that receive events.
///
/// ```
/// use infinitic_runtime::store::sqlite::{Durability, OpenMode, SqliteStore};
/// use infinitic_runtime::worker::{Worker, WorkerConfig};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let store = SqliteStore::open_with(":memory:", OpenMode::CreateIfMissing, Durability::InMemory)
///     .unwrap();
/// let config = WorkerConfig { cache_capacity: 1_000, ..WorkerConfig::default() };
/// let running = Worker::new(store) /* .workflow(..) */ .config(config).start();
///
/// let stats = running.cache_stats();
/// assert_eq!(stats.capacity, 1_000);
/// assert!(stats.size <= stats.capacity);
/// // A low hit rate under steady load says the cache is smaller than the live instances.
/// let lookups = stats.hits + stats.misses;
/// let hit_rate = if lookups == 0 { 1.0 } else { stats.hits as f64 / lookups as f64 };
/// assert!((0.0..=1.0).contains(&hit_rate));
/// running.shutdown().await;
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Live instances held now.
    pub size: usize,
    /// The most it holds.
    pub capacity: usize,
    /// Events whose instance was live in memory.
    pub hits: u64,
    /// Events whose instance was not in memory and was rebuilt from its history.
    pub misses: u64,
    /// Instances dropped to make room for others, the least recently used first. Instances
    /// that finished, or that the store shows were moved on elsewhere, are not counted.
    pub evictions: u64,
}

/// The counters behind [`CacheStats`]: written by the workflow worker loop, read from anywhere.
#[derive(Debug, Default)]
pub(crate) struct CacheCounters {
    size: AtomicUsize,
    capacity: AtomicUsize,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
}

impl CacheCounters {
    pub(crate) fn new(capacity: usize) -> Self {
        let counters = Self::default();
        counters.capacity.store(capacity, Ordering::Relaxed);
        counters
    }

    /// The counters now. Each is exact; read while the worker runs, they may be a step apart.
    pub(crate) fn snapshot(&self) -> CacheStats {
        CacheStats {
            size: self.size.load(Ordering::Relaxed),
            capacity: self.capacity.load(Ordering::Relaxed),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }
}

/// Values by key, at most `capacity` of them; when one more comes, the least recently used goes.
///
/// Each use gets the next tick of a counter; `by_use` orders the keys by the tick of their
/// last use, so the first one is the next to go. Every operation is O(log n), and both maps
/// only ever hold the entries that are in the cache.
pub(crate) struct Cache<K, V> {
    capacity: usize,
    entries: HashMap<K, Entry<V>>,
    by_use: BTreeMap<u64, K>,
    /// The tick of the next use; it only grows, so no two entries share one.
    next_tick: u64,
    /// The key last taken out and the tick of its last use, so that `put_back` restores it in
    /// its place. One slot: the worker puts back or keeps what it took before it takes more.
    taken: Option<(K, u64)>,
    counters: Arc<CacheCounters>,
}

struct Entry<V> {
    value: V,
    used: u64,
}

impl<K: Eq + Hash + Clone, V> Cache<K, V> {
    pub(crate) fn new(capacity: usize, counters: Arc<CacheCounters>) -> Self {
        counters.capacity.store(capacity, Ordering::Relaxed);
        Self {
            capacity,
            entries: HashMap::new(),
            by_use: BTreeMap::new(),
            next_tick: 0,
            taken: None,
            counters,
        }
    }

    /// Looks an entry up without using it (its place in the order stays; not a hit or miss).
    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        self.entries.get(key).map(|entry| &entry.value)
    }

    /// Takes an entry out while its event is processed: a hit if it was there, else a miss.
    pub(crate) fn take(&mut self, key: &K) -> Option<V> {
        let taken = self.remove(key);
        let counter = match &taken {
            Some(_) => &self.counters.hits,
            None => &self.counters.misses,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.taken = taken.as_ref().map(|entry| (key.clone(), entry.used));
        taken.map(|entry| entry.value)
    }

    /// Restores an entry whose event changed nothing. Taken out last, it goes back in its
    /// place, as if never taken: an ignored duplicate is no reason to keep an instance longer.
    /// Otherwise (rebuilt after a miss) it counts as a use.
    pub(crate) fn put_back(&mut self, key: K, value: V) {
        let place = self.taken.take_if(|(taken, _)| *taken == key);
        let used = match place {
            Some((_, used)) => used,
            None => self.tick(),
        };
        self.insert(key, value, used);
    }

    /// Keeps a running instance as the most recently used; one that finished (or was parked)
    /// is dropped, as its events are over (or must wait for a replay after a fix).
    pub(crate) fn keep(&mut self, key: K, value: V, status: &Status) {
        if *status != Status::Running {
            self.evict(&key);
            return;
        }
        let used = self.tick();
        self.insert(key, value, used);
    }

    /// Forgets an entry: its stored form moved on without it (not counted as an eviction,
    /// which is about room).
    pub(crate) fn evict(&mut self, key: &K) {
        self.remove(key);
    }

    /// Entries held now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }

    /// The keys from the least to the most recently used.
    #[cfg(test)]
    fn keys_by_use(&self) -> Vec<K> {
        self.by_use.values().cloned().collect()
    }

    fn tick(&mut self) -> u64 {
        let tick = self.next_tick;
        self.next_tick += 1;
        tick
    }

    fn insert(&mut self, key: K, value: V, used: u64) {
        self.remove(&key);
        if self.capacity == 0 {
            return;
        }
        self.by_use.insert(used, key.clone());
        self.entries.insert(key, Entry { value, used });
        while self.entries.len() > self.capacity {
            let Some((_, oldest)) = self.by_use.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
            self.counters.evictions.fetch_add(1, Ordering::Relaxed);
        }
        self.publish_size();
    }

    /// Removes an entry and any claim of `put_back` to its place.
    fn remove(&mut self, key: &K) -> Option<Entry<V>> {
        self.taken.take_if(|(taken, _)| taken == key);
        let entry = self.entries.remove(key)?;
        self.by_use.remove(&entry.used);
        self.publish_size();
        Some(entry)
    }

    fn publish_size(&self) {
        self.counters
            .size
            .store(self.entries.len(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUNNING: Status = Status::Running;

    fn finished() -> Status {
        Status::Completed(Vec::new())
    }

    fn new_cache<V>(capacity: usize) -> (Cache<&'static str, V>, Arc<CacheCounters>) {
        let counters = Arc::new(CacheCounters::new(capacity));
        (Cache::new(capacity, Arc::clone(&counters)), counters)
    }

    #[test]
    fn an_instance_just_used_is_not_the_one_evicted() {
        let (mut cache, counters) = new_cache(2);
        cache.keep("a", 1, &RUNNING);
        cache.keep("b", 2, &RUNNING);
        // An event for `a`: taken while it is processed, then kept (it still runs).
        assert_eq!(cache.take(&"a"), Some(1));
        cache.keep("a", 10, &RUNNING);
        // A third instance: `b` is the least recently used, so `b` goes, not `a`.
        cache.keep("c", 3, &RUNNING);
        assert_eq!(cache.get(&"a"), Some(&10));
        assert_eq!(cache.get(&"b"), None);
        assert_eq!(cache.get(&"c"), Some(&3));
        assert_eq!(cache.keys_by_use(), ["a", "c"]);
        assert_eq!(counters.snapshot().evictions, 1);
    }

    #[test]
    fn a_put_back_entry_keeps_its_place_and_a_rebuilt_one_counts_as_used() {
        let (mut cache, _) = new_cache(2);
        cache.keep("a", 1, &RUNNING);
        cache.keep("b", 2, &RUNNING);
        let a = cache.take(&"a").unwrap();
        cache.put_back("a", a);
        assert_eq!(cache.keys_by_use(), ["a", "b"], "as if never taken");
        // Not in the cache (a miss, rebuilt from history), then put back: a use.
        assert_eq!(cache.take(&"c"), None);
        cache.put_back("c", 3);
        assert_eq!(cache.keys_by_use(), ["b", "c"]);
    }

    #[test]
    fn finished_instances_are_dropped_and_a_zero_capacity_holds_nothing() {
        let (mut cache, counters) = new_cache(2);
        cache.keep("a", 1, &RUNNING);
        cache.take(&"a");
        cache.keep("a", 2, &finished());
        assert_eq!(cache.get(&"a"), None);
        let (mut none, none_counters) = new_cache::<u32>(0);
        none.keep("a", 1, &RUNNING);
        none.put_back("b", 2);
        assert_eq!((none.len(), none.get(&"a")), (0, None));
        assert_eq!(
            none_counters.snapshot().evictions,
            0,
            "nothing was ever held"
        );
        assert_eq!(counters.snapshot().evictions, 0);
    }

    #[test]
    fn the_counters_follow_hits_misses_evictions_and_size() {
        let (mut cache, counters) = new_cache(2);
        for (key, value) in [("a", 1), ("b", 2), ("c", 3)] {
            cache.keep(key, value, &RUNNING);
        }
        assert_eq!(cache.take(&"a"), None);
        let b = cache.take(&"b").unwrap();
        cache.keep("b", b, &RUNNING);
        cache.evict(&"c");
        assert_eq!(
            counters.snapshot(),
            CacheStats {
                size: 1,
                capacity: 2,
                hits: 1,
                misses: 1,
                evictions: 1,
            }
        );
    }

    /// A deterministic pseudo-random sequence (xorshift64*).
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) % n
        }
    }

    /// The naive model: entries from the least to the most recently used, where the entry
    /// taken out last leaves a hole (`None`) that `put_back` fills.
    #[derive(Default)]
    struct Model {
        capacity: usize,
        order: Vec<(u8, Option<u32>)>,
        stats: CacheStats,
    }

    impl Model {
        fn position(&self, key: u8, held: bool) -> Option<usize> {
            self.order
                .iter()
                .position(|(k, v)| *k == key && v.is_some() == held)
        }

        fn forget(&mut self, key: u8) {
            self.order.retain(|(k, _)| *k != key);
        }

        fn take(&mut self, key: u8) -> Option<u32> {
            self.order.retain(|(_, v)| v.is_some());
            match self.position(key, true) {
                Some(i) => {
                    self.stats.hits += 1;
                    self.order[i].1.take()
                }
                None => {
                    self.stats.misses += 1;
                    None
                }
            }
        }

        fn put_back(&mut self, key: u8, value: u32) {
            match self.position(key, false) {
                Some(i) => self.order[i].1 = Some(value),
                None => {
                    self.forget(key);
                    self.order.push((key, Some(value)));
                }
            }
            self.trim();
        }

        fn keep(&mut self, key: u8, value: u32, running: bool) {
            self.forget(key);
            if running {
                self.order.push((key, Some(value)));
            }
            self.trim();
        }

        fn trim(&mut self) {
            if self.capacity == 0 {
                self.order.retain(|(_, v)| v.is_none());
            }
            while self.held().len() > self.capacity {
                let oldest = self.position_of_oldest();
                self.order.remove(oldest);
                self.stats.evictions += 1;
            }
        }

        fn position_of_oldest(&self) -> usize {
            self.order.iter().position(|(_, v)| v.is_some()).unwrap()
        }

        fn held(&self) -> Vec<u8> {
            self.order
                .iter()
                .filter(|(_, v)| v.is_some())
                .map(|(k, _)| *k)
                .collect()
        }

        fn get(&self, key: u8) -> Option<u32> {
            self.position(key, true).and_then(|i| self.order[i].1)
        }
    }

    #[test]
    fn random_operations_match_a_naive_model() {
        for seed in 1..=300u64 {
            let capacity = (seed % 6) as usize;
            let counters = Arc::new(CacheCounters::new(capacity));
            let mut cache: Cache<u8, u32> = Cache::new(capacity, Arc::clone(&counters));
            let mut model = Model {
                capacity,
                stats: CacheStats {
                    capacity,
                    ..CacheStats::default()
                },
                ..Model::default()
            };
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let mut last_taken = 0u8;
            for step in 0..400u32 {
                let key = rng.below(8) as u8;
                let op = rng.below(100);
                let context = format!("seed {seed}, step {step}, op {op}, key {key}");
                match op {
                    0..=29 => {
                        assert_eq!(cache.take(&key), model.take(key), "{context}");
                        last_taken = key;
                    }
                    30..=54 => {
                        cache.keep(key, step, &RUNNING);
                        model.keep(key, step, true);
                    }
                    55..=64 => {
                        cache.keep(key, step, &finished());
                        model.keep(key, step, false);
                    }
                    65..=84 => {
                        // Mostly what was taken last, as the worker does.
                        let key = if rng.below(3) > 0 { last_taken } else { key };
                        cache.put_back(key, step);
                        model.put_back(key, step);
                    }
                    85..=94 => {
                        cache.evict(&key);
                        model.forget(key);
                    }
                    _ => assert_eq!(cache.get(&key).copied(), model.get(key), "{context}"),
                }
                model.stats.size = model.held().len();
                assert_eq!(cache.keys_by_use(), model.held(), "{context}");
                assert_eq!(counters.snapshot(), model.stats, "{context}");
                assert!(cache.len() <= capacity, "{context}");
                assert_eq!(cache.by_use.len(), cache.entries.len(), "{context}");
                for k in model.held() {
                    assert_eq!(cache.get(&k).copied(), model.get(k), "{context}");
                }
            }
        }
    }
}
