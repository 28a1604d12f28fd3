//! The in-memory index of one disk: key → location of its live block.
//!
//! Keys are 32 bytes, but memory per entry is a headline figure, so the index does not keep
//! them: it keeps a 64-bit tag (SipHash-1-3 of the key, keyed with a per-disk random seed from
//! the superblock, so clients cannot aim collisions) and an 18-byte location (with where a
//! detached value is and the check that binds it to the key): a 26-byte slot.
//! The full key is in the record header on disk, and every read checks it. A key whose tag is
//! already taken by another key goes to a small overflow map by full key. Which key owns a tag
//! is therefore only known from the disk: callers that need to know (PUT of a key whose tag
//! exists, DELETE, recovery) read the record header and then call the precise method.
//!
//! Layout: a `base` vector of slots sorted by tag (exactly sized, 26 bytes per entry,
//! interpolation search) and a `delta` hash table of recent inserts, merged into `base` when it reaches
//! 1/[`DELTA_FRACTION`] of it. Deletes of base entries mark the slot dead until the next merge.
//! Memory stays near 26 bytes per entry instead of the 32–64 of a power-of-two hash table, and
//! iteration in tag order (checkpoints, paged LIST) is a merge of two sorted sequences.

use std::collections::HashMap;
use std::hash::Hasher;

use hashbrown::HashTable;
use siphasher::sip::SipHasher13;

use super::format::{Key, Location};

/// The delta is merged into the base when it holds more than base/DELTA_FRACTION entries.
pub const DELTA_FRACTION: usize = 8;
/// The delta always may hold this many entries before a merge.
pub const DELTA_MIN: usize = 4096;
/// Zone number that marks a dead base slot.
const DEAD_ZONE: u32 = u32::MAX;

/// One slot: 26 bytes, alignment 1.
#[derive(Clone, Copy)]
#[repr(C, packed)]
struct Slot {
    tag: u64,
    zone: u32,
    offset: u32,
    value_len: u32,
    check: u32,
    value_blocks: u16,
}

const _: () = assert!(std::mem::size_of::<Slot>() == 26);

impl Slot {
    fn new(tag: u64, location: Location) -> Slot {
        Slot {
            tag,
            zone: location.zone,
            offset: location.offset,
            value_len: location.value_len,
            check: location.check,
            value_blocks: location.value_blocks,
        }
    }

    fn location(&self) -> Location {
        Location {
            zone: self.zone,
            offset: self.offset,
            value_len: self.value_len,
            check: self.check,
            value_blocks: self.value_blocks,
        }
    }

    fn is_dead(&self) -> bool {
        ({ self.zone }) == DEAD_ZONE
    }
}

/// Where a key may be: the overflow entry (exact) and the tag slot (to be confirmed on disk).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Candidates {
    /// The key itself is in the overflow map.
    pub exact: Option<Location>,
    /// A block whose key has this key's tag: the key, or a colliding one.
    pub by_tag: Option<Location>,
}

/// The index of one disk.
pub struct Index {
    base: Vec<Slot>,
    base_dead: usize,
    delta: HashTable<Slot>,
    overflow: HashMap<Key, Location>,
    seed: [u8; 16],
    /// Bulk loading (recovery): merge once at the end instead of as the delta grows.
    merge_deferred: bool,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("len", &self.len())
            .field("overflow", &self.overflow.len())
            .finish()
    }
}

impl Index {
    /// An empty index whose tags are keyed with `seed`.
    pub fn new(seed: [u8; 16]) -> Index {
        Index {
            base: Vec::new(),
            base_dead: 0,
            delta: HashTable::new(),
            overflow: HashMap::new(),
            seed,
            merge_deferred: false,
        }
    }

    /// The tag of a key.
    pub fn tag(&self, key: &Key) -> u64 {
        let mut hasher = SipHasher13::new_with_key(&self.seed);
        hasher.write(key);
        hasher.finish()
    }

    /// Live entries (tagged and overflow).
    pub fn len(&self) -> usize {
        self.base.len() - self.base_dead + self.delta.len() + self.overflow.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries in the overflow map.
    pub fn overflow_len(&self) -> usize {
        self.overflow.len()
    }

    /// Bytes the index holds on the heap (base vector, delta table with its control bytes,
    /// overflow map), for the memory-per-entry figure.
    pub fn heap_bytes(&self) -> usize {
        let slot = std::mem::size_of::<Slot>();
        let delta_buckets = match self.delta.capacity() {
            0 => 0,
            cap => (cap * 8).div_ceil(7).next_power_of_two(),
        };
        let overflow = self.overflow.capacity() * (std::mem::size_of::<(Key, Location)>() + 1);
        self.base.capacity() * slot + delta_buckets * (slot + 1) + overflow
    }

    fn base_find(&self, tag: u64) -> Option<usize> {
        self.base_search(tag).ok().filter(|&i| !self.base[i].is_dead())
    }

    /// Finds `tag` in the sorted base like `binary_search`. Tags are uniform (keyed SipHash),
    /// so interpolation lands within a few slots of the answer: about two cache misses instead
    /// of the ~10 of a binary search over a million 26-byte slots. A bounded number of rounds,
    /// then binary search, keeps the worst case at O(log n) whatever the tags are.
    fn base_search(&self, tag: u64) -> Result<usize, usize> {
        const ROUNDS_MAX: usize = 8;
        const LINEAR_SPAN: usize = 32;
        let base = &self.base;
        let (mut lo, mut hi) = (0usize, base.len());
        for _ in 0..ROUNDS_MAX {
            if hi - lo <= LINEAR_SPAN {
                break;
            }
            let (lo_tag, hi_tag) = ({ base[lo].tag }, { base[hi - 1].tag });
            if tag < lo_tag {
                return Err(lo);
            }
            if tag > hi_tag {
                return Err(hi);
            }
            if hi_tag == lo_tag {
                break;
            }
            let span = (hi - 1 - lo) as u128;
            let offset = (u128::from(tag - lo_tag) * span) / u128::from(hi_tag - lo_tag);
            let guess = lo + offset as usize;
            match ({ base[guess].tag }).cmp(&tag) {
                std::cmp::Ordering::Equal => return Ok(guess),
                std::cmp::Ordering::Less => lo = guess + 1,
                std::cmp::Ordering::Greater => hi = guess,
            }
        }
        base[lo..hi].binary_search_by_key(&tag, |slot| slot.tag).map(|i| lo + i).map_err(|i| lo + i)
    }

    fn by_tag(&self, tag: u64) -> Option<Location> {
        if let Some(slot) = self.delta.find(tag, |s| ({ s.tag }) == tag) {
            return Some(slot.location());
        }
        self.base_find(tag).map(|i| self.base[i].location())
    }

    /// Where `key` may be.
    pub fn candidates(&self, key: &Key) -> Candidates {
        self.candidates_tagged(key, self.tag(key))
    }

    /// Where `key`, whose tag is `tag`, may be.
    pub fn candidates_tagged(&self, key: &Key, tag: u64) -> Candidates {
        let exact = if self.overflow.is_empty() { None } else { self.overflow.get(key).copied() };
        Candidates { exact, by_tag: self.by_tag(tag) }
    }

    /// Records `key` at `location`: in its tag slot when the tag is free or already `key`'s
    /// (`tag_is_key`: the caller read the slot's record and it has this key), else in overflow.
    pub fn insert(&mut self, key: &Key, location: Location, tag_is_key: bool) {
        self.insert_tagged(key, self.tag(key), location, tag_is_key);
    }

    /// As [`Index::insert`], with the key's tag already computed.
    pub fn insert_tagged(&mut self, key: &Key, tag: u64, location: Location, tag_is_key: bool) {
        if self.by_tag(tag).is_some() && !tag_is_key {
            self.overflow.insert(*key, location);
            return;
        }
        self.overflow.remove(key);
        self.insert_tag(tag, location);
    }

    /// Sets a tag slot (also used to restore a checkpoint).
    pub fn insert_tag(&mut self, tag: u64, location: Location) {
        assert_ne!(location.zone, DEAD_ZONE, "zone number reserved for dead slots");
        let slot = Slot::new(tag, location);
        if let Some(existing) = self.delta.find_mut(tag, |s| ({ s.tag }) == tag) {
            *existing = slot;
            return;
        }
        if let Ok(i) = self.base_search(tag) {
            if self.base[i].is_dead() {
                self.base_dead -= 1;
            }
            self.base[i] = slot;
            return;
        }
        self.delta.insert_unique(tag, slot, |s| s.tag);
        if !self.merge_deferred
            && self.delta.len() > DELTA_MIN.max(self.base.len() / DELTA_FRACTION)
        {
            self.merge();
        }
    }

    /// Adds slots for tags that have none and are distinct (bulk loading: the caller looked
    /// each up with [`Index::candidates_tagged`]), in one sort and one merge into the base
    /// instead of a hash-table insert each; the delta is folded in too.
    pub fn insert_new_tags(&mut self, fresh: Vec<(u64, Location)>) {
        let mut slots: Vec<Slot> = self.delta.drain().collect();
        slots.reserve(fresh.len());
        for (tag, location) in fresh {
            debug_assert!(self.by_tag(tag).is_none(), "tag {tag:#x} has a slot");
            assert_ne!(location.zone, DEAD_ZONE, "zone number reserved for dead slots");
            slots.push(Slot::new(tag, location));
        }
        self.merge_sorted(slots);
    }

    /// Makes room in the base for `additional` slots about to be restored from a checkpoint
    /// (in huge pages where the system has them: lookups are random).
    pub fn reserve_base(&mut self, additional: usize) {
        if self.base.capacity() - self.base.len() >= additional {
            return;
        }
        let mut base = Vec::with_capacity(self.base.len() + additional);
        ioengine::buf::advise_huge_pages(&mut base);
        base.extend_from_slice(&self.base);
        self.base = base;
    }

    /// Appends a tag slot while restoring a checkpoint whose entries come sorted by tag.
    /// Falls back to `insert_tag` if the order is broken (a damaged checkpoint is rejected by
    /// its checksum first; this only keeps the index correct regardless).
    pub fn push_sorted(&mut self, tag: u64, location: Location) {
        match self.base.last() {
            Some(last) if ({ last.tag }) >= tag => self.insert_tag(tag, location),
            _ if !self.delta.is_empty() => self.insert_tag(tag, location),
            _ => self.base.push(Slot::new(tag, location)),
        }
    }

    /// Restores an overflow entry.
    pub fn insert_overflow(&mut self, key: Key, location: Location) {
        self.overflow.insert(key, location);
    }

    /// Removes `key` from the overflow map; returns whether it was there.
    pub fn remove_exact(&mut self, key: &Key) -> bool {
        self.overflow.remove(key).is_some()
    }

    /// Removes the tag slot of `key` (the caller confirmed the slot's record has this key).
    pub fn remove_tag(&mut self, key: &Key) -> Option<Location> {
        self.remove_by_tag(self.tag(key))
    }

    /// Removes the tag slot `tag` (the caller confirmed whose it is).
    pub fn remove_by_tag(&mut self, tag: u64) -> Option<Location> {
        if let Ok(entry) = self.delta.find_entry(tag, |s| ({ s.tag }) == tag) {
            return Some(entry.remove().0.location());
        }
        let i = self.base_find(tag)?;
        let location = self.base[i].location();
        self.base[i].zone = DEAD_ZONE;
        self.base_dead += 1;
        Some(location)
    }

    /// Defers merges while bulk loading; ending the deferral merges.
    pub fn defer_merges(&mut self, deferred: bool) {
        self.merge_deferred = deferred;
        if !deferred && !self.delta.is_empty() {
            self.merge();
        }
    }

    /// Folds the delta into the base: one exactly sized sorted vector, dead slots dropped.
    pub fn merge(&mut self) {
        let delta: Vec<Slot> = self.delta.drain().collect();
        self.merge_sorted(delta);
    }

    /// Sorts `delta` (slots whose tags the base does not have, or has dead) and merges it
    /// with the base's live slots into a new, exactly sized base; the delta table is emptied.
    fn merge_sorted(&mut self, mut delta: Vec<Slot>) {
        delta.sort_unstable_by_key(|s| s.tag);
        let live = self.base.len() - self.base_dead + delta.len();
        let mut merged = Vec::with_capacity(live);
        ioengine::buf::advise_huge_pages(&mut merged);
        let mut base = self.base.iter().filter(|s| !s.is_dead()).peekable();
        let mut delta = delta.into_iter().peekable();
        loop {
            let take_base = match (base.peek(), delta.peek()) {
                (Some(b), Some(d)) => ({ b.tag }) < ({ d.tag }),
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let next = if take_base {
                *base.next().expect("peeked")
            } else {
                delta.next().expect("peeked")
            };
            merged.push(next);
        }
        self.base = merged;
        self.base_dead = 0;
        self.delta = HashTable::new();
    }

    /// Tag slots in ascending tag order, starting after `after` (None: from the start).
    pub fn tags_from(&self, after: Option<u64>) -> impl Iterator<Item = (u64, Location)> + '_ {
        let start = match after {
            None => 0,
            Some(tag) => self.base.partition_point(|s| ({ s.tag }) <= tag),
        };
        let mut delta: Vec<(u64, Location)> = self
            .delta
            .iter()
            .filter(|s| after.is_none_or(|a| ({ s.tag }) > a))
            .map(|s| (s.tag, s.location()))
            .collect();
        delta.sort_unstable_by_key(|(tag, _)| *tag);
        let base =
            self.base[start..].iter().filter(|s| !s.is_dead()).map(|s| (s.tag, s.location()));
        MergeSorted { a: base.peekable(), b: delta.into_iter().peekable() }
    }

    /// Every overflow entry.
    pub fn overflow(&self) -> impl Iterator<Item = (&Key, &Location)> + '_ {
        self.overflow.iter()
    }

    /// Every live location (tag slots and overflow), for accounting.
    pub fn locations(&self) -> impl Iterator<Item = Location> + '_ {
        self.tags_from(None).map(|(_, l)| l).chain(self.overflow.values().copied())
    }
}

/// Merges two iterators sorted by tag.
struct MergeSorted<A: Iterator<Item = (u64, Location)>, B: Iterator<Item = (u64, Location)>> {
    a: std::iter::Peekable<A>,
    b: std::iter::Peekable<B>,
}

impl<A, B> Iterator for MergeSorted<A, B>
where
    A: Iterator<Item = (u64, Location)>,
    B: Iterator<Item = (u64, Location)>,
{
    type Item = (u64, Location);

    fn next(&mut self) -> Option<Self::Item> {
        match (self.a.peek(), self.b.peek()) {
            (Some(x), Some(y)) if x.0 <= y.0 => self.a.next(),
            (Some(_), Some(_)) => self.b.next(),
            (Some(_), None) => self.a.next(),
            (None, _) => self.b.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(zone: u32) -> Location {
        Location::inline(zone, zone * 8, 100)
    }

    #[test]
    fn insert_lookup_remove() {
        let mut index = Index::new([1; 16]);
        let key = [5u8; 32];
        assert_eq!(index.candidates(&key), Candidates::default());
        index.insert(&key, loc(3), false);
        assert_eq!(index.candidates(&key).by_tag, Some(loc(3)));
        index.insert(&key, loc(4), true);
        assert_eq!(index.len(), 1);
        assert_eq!(index.candidates(&key).by_tag, Some(loc(4)));
        assert_eq!(index.remove_tag(&key), Some(loc(4)));
        assert!(index.is_empty());
    }

    #[test]
    fn a_colliding_key_goes_to_overflow_and_is_found_exactly() {
        let mut index = Index::new([1; 16]);
        let a = [1u8; 32];
        let b = [2u8; 32];
        index.insert(&a, loc(1), false);
        // Pretend b's tag slot is occupied by another key (a real collision is 2^-64).
        let tag_b = index.tag(&b);
        index.insert_tag(tag_b, loc(7));
        index.insert(&b, loc(2), false);
        let c = index.candidates(&b);
        assert_eq!(c.exact, Some(loc(2)));
        assert_eq!(c.by_tag, Some(loc(7)));
        assert!(index.remove_exact(&b));
        assert_eq!(index.overflow_len(), 0);
    }

    #[test]
    fn tags_depend_on_the_seed() {
        let a = Index::new([1; 16]);
        let b = Index::new([2; 16]);
        assert_ne!(a.tag(&[9; 32]), b.tag(&[9; 32]));
        assert_eq!(a.tag(&[9; 32]), Index::new([1; 16]).tag(&[9; 32]));
    }

    #[test]
    fn memory_per_entry_is_near_the_slot_size() {
        let n = 1_000_000usize;
        let mut index = Index::new([3; 16]);
        for i in 0..n as u64 {
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&i.to_le_bytes());
            index.insert(&key, loc(i as u32), false);
        }
        let per_entry = index.heap_bytes() as f64 / n as f64;
        assert!(per_entry <= 34.0, "{per_entry:.1} bytes per entry");
        index.merge();
        let per_entry = index.heap_bytes() as f64 / n as f64;
        assert!(per_entry <= 26.5, "{per_entry:.1} bytes per entry after a merge");
        for i in (0..n as u64).step_by(997) {
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&i.to_le_bytes());
            assert_eq!(index.candidates(&key).by_tag, Some(loc(i as u32)));
        }
    }

    #[test]
    fn interpolation_search_agrees_with_binary_search() {
        let mut index = Index::new([5; 16]);
        for i in 0..50_000u32 {
            let mut key = [0u8; 32];
            key[..4].copy_from_slice(&i.to_le_bytes());
            index.insert(&key, loc(i), false);
        }
        index.merge();
        // Also a skewed set: tags that are not uniform must still be found.
        for probe in
            (0..u64::MAX - (u64::MAX / 7)).step_by((u64::MAX / 7919) as usize).chain([0, u64::MAX])
        {
            let expected = index.base.binary_search_by_key(&probe, |s| s.tag);
            assert_eq!(index.base_search(probe), expected, "probe {probe}");
        }
        for slot in index.base.clone() {
            let tag = slot.tag;
            assert_eq!(index.base_search(tag), index.base.binary_search_by_key(&tag, |s| s.tag));
        }
        let mut skewed = Index::new([6; 16]);
        for t in (0..10_000u64).map(|i| i * i * i) {
            skewed.push_sorted(t, loc(1));
        }
        for probe in [0, 1, 7, 8, 27, 999_999_999_999, 999_970_000_299_999, u64::MAX] {
            assert_eq!(
                skewed.base_search(probe),
                skewed.base.binary_search_by_key(&probe, |s| s.tag)
            );
        }
    }

    #[test]
    fn iteration_is_in_tag_order_across_base_and_delta() {
        let mut index = Index::new([4; 16]);
        for i in 0..10_000u32 {
            let mut key = [0u8; 32];
            key[..4].copy_from_slice(&i.to_le_bytes());
            index.insert(&key, loc(i), false);
            if i % 3 == 0 {
                index.remove_tag(&key);
            }
        }
        let tags: Vec<u64> = index.tags_from(None).map(|(t, _)| t).collect();
        assert_eq!(tags.len(), index.len());
        assert!(tags.windows(2).all(|w| w[0] < w[1]));
        let after = tags[100];
        let rest: Vec<u64> = index.tags_from(Some(after)).map(|(t, _)| t).collect();
        assert_eq!(rest, tags[101..]);
    }
}
