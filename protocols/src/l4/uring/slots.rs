//! The generation-tagged slot table behind every in-flight io_uring operation on a core.
//!
//! Each submission takes a slot; its [`Key`] (index and generation) travels to the kernel as the
//! SQE's `user_data` and comes back in the CQE. Freeing a slot bumps its generation, so a
//! completion that arrives late for an operation whose slot was since recycled carries a stale
//! key, and [`Slots::get_mut`] refuses it instead of completing somebody else's operation.

/// `user_data` of submissions whose completions are ignored (link timeouts, cancellations).
///
/// No key ever encodes to it: slot indices stay below `u32::MAX`.
pub(crate) const IGNORED_USER_DATA: u64 = u64::MAX;

/// `user_data` of the lean loop's alarm (an IORING_OP_TIMEOUT, see `Driver::wait`).
///
/// No key encodes to it either, tagged or not (see [`MAX_SLOTS`]).
pub(crate) const TIMER_USER_DATA: u64 = u64::MAX - 1;

/// `user_data` of the FILES_UPDATEs that register a stream's socket in the ring's table of files
/// (see `Driver::register_file`); they post a completion only when they fail.
///
/// No key encodes to it either (see [`MAX_SLOTS`]).
pub(crate) const FILES_USER_DATA: u64 = u64::MAX - 2;

/// Most slots one table hands out: indices stay below bit 31, which [`Key::send_failure_user_data`]
/// uses as a tag (and so no key encodes to [`IGNORED_USER_DATA`]), and below `2^31 - 3`, so that
/// no tagged key, whatever its generation, encodes to [`TIMER_USER_DATA`] or
/// [`FILES_USER_DATA`] either.
const MAX_SLOTS: usize = (1 << 31) - 3;

/// The tag bit in the index half of a `user_data`: "the SEND linked before this operation failed".
const SEND_FAILURE_TAG: u64 = 1 << 31;

/// Names one occupancy of one slot: the index and the generation it had when taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    index: u32,
    generation: u32,
}

impl Key {
    /// The `user_data` that carries this key through the kernel.
    pub(crate) fn to_user_data(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.index)
    }

    /// The `user_data` of a SEND hard-linked before the operation named by this key: it posts a
    /// CQE only when it fails or comes up short, and [`Key::from_send_failure`] finds the key.
    pub(crate) fn send_failure_user_data(self) -> u64 {
        self.to_user_data() | SEND_FAILURE_TAG
    }

    /// The key whose linked SEND failed, when `user_data` carries the tag.
    pub(crate) fn from_send_failure(user_data: u64) -> Option<Key> {
        (user_data != IGNORED_USER_DATA && user_data & SEND_FAILURE_TAG != 0)
            .then(|| Key::from_user_data(user_data & !SEND_FAILURE_TAG))
    }

    /// Decodes a `user_data` written by [`Key::to_user_data`].
    pub(crate) fn from_user_data(user_data: u64) -> Key {
        Key {
            index: user_data as u32,
            generation: (user_data >> 32) as u32,
        }
    }
}

enum Entry<T> {
    Occupied {
        generation: u32,
        value: T,
    },
    Vacant {
        generation: u32,
        next_free: Option<u32>,
    },
}

/// A free-listed table of values addressed by generation-tagged keys.
pub(crate) struct Slots<T> {
    entries: Vec<Entry<T>>,
    free_head: Option<u32>,
    occupied: usize,
}

impl<T> Slots<T> {
    /// An empty table.
    pub(crate) const fn new() -> Slots<T> {
        Slots {
            entries: Vec::new(),
            free_head: None,
            occupied: 0,
        }
    }

    /// Stores `value` and returns its key, or gives the value back when the table is full.
    pub(crate) fn insert(&mut self, value: T) -> Result<Key, T> {
        if let Some(index) = self.free_head {
            let slot = &mut self.entries[index as usize];
            let (generation, next_free) = match slot {
                Entry::Vacant {
                    generation,
                    next_free,
                } => (*generation, *next_free),
                // The free list only links vacant entries.
                Entry::Occupied { .. } => return Err(value),
            };
            *slot = Entry::Occupied { generation, value };
            self.free_head = next_free;
            self.occupied += 1;
            return Ok(Key { index, generation });
        }
        if self.entries.len() >= MAX_SLOTS {
            return Err(value);
        }
        let index = self.entries.len() as u32;
        self.entries.push(Entry::Occupied {
            generation: 0,
            value,
        });
        self.occupied += 1;
        Ok(Key {
            index,
            generation: 0,
        })
    }

    /// The value stored under `key`, unless that occupancy has ended.
    pub(crate) fn get_mut(&mut self, key: Key) -> Option<&mut T> {
        match self.entries.get_mut(key.index as usize) {
            Some(Entry::Occupied { generation, value }) if *generation == key.generation => {
                Some(value)
            }
            _ => None,
        }
    }

    /// Ends the occupancy named by `key` and returns its value; a stale key removes nothing.
    pub(crate) fn remove(&mut self, key: Key) -> Option<T> {
        let slot = self.entries.get_mut(key.index as usize)?;
        match slot {
            Entry::Occupied { generation, .. } if *generation == key.generation => {}
            _ => return None,
        }
        let next = Entry::Vacant {
            generation: key.generation.wrapping_add(1),
            next_free: self.free_head,
        };
        match std::mem::replace(slot, next) {
            Entry::Occupied { value, .. } => {
                self.free_head = Some(key.index);
                self.occupied -= 1;
                Some(value)
            }
            // Checked occupied just above.
            Entry::Vacant { .. } => None,
        }
    }

    /// How many slots are occupied.
    pub(crate) fn len(&self) -> usize {
        self.occupied
    }

    /// Removes and returns every stored value (used when the ring shuts down).
    pub(crate) fn drain(&mut self) -> Vec<T> {
        let mut out = Vec::with_capacity(self.occupied);
        for (index, slot) in self.entries.iter_mut().enumerate() {
            if let Entry::Occupied { generation, .. } = slot {
                let next = Entry::Vacant {
                    generation: generation.wrapping_add(1),
                    next_free: self.free_head,
                };
                if let Entry::Occupied { value, .. } = std::mem::replace(slot, next) {
                    out.push(value);
                }
                self.free_head = Some(index as u32);
            }
        }
        self.occupied = 0;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_user_data() {
        let key = Key {
            index: 7,
            generation: 0xdead_beef,
        };
        assert_eq!(Key::from_user_data(key.to_user_data()), key);
        assert_ne!(key.to_user_data(), IGNORED_USER_DATA);
    }

    #[test]
    fn a_late_completion_never_reaches_a_recycled_slot() {
        let mut slots = Slots::new();
        // 1. An operation takes slot 0.
        let first = slots.insert("first").unwrap();
        // 2. It completes (or is abandoned and reaped): the slot is freed.
        assert_eq!(slots.remove(first), Some("first"));
        // 3. The next operation reuses the same index with a new generation.
        let second = slots.insert("second").unwrap();
        assert_eq!(first.index, second.index, "the index is recycled");
        assert_ne!(first.generation, second.generation);
        // 4. A duplicate or late CQE carrying the first key finds nothing...
        assert!(slots.get_mut(first).is_none());
        assert!(slots.remove(first).is_none());
        // 5. ...and the second operation is untouched.
        assert_eq!(slots.get_mut(second).copied(), Some("second"));
        assert_eq!(slots.len(), 1);
    }

    #[test]
    fn free_list_reuses_and_grows() {
        let mut slots = Slots::new();
        let keys: Vec<Key> = (0..100).map(|i| slots.insert(i).unwrap()).collect();
        assert_eq!(slots.len(), 100);
        for k in keys.iter().step_by(2) {
            slots.remove(*k).unwrap();
        }
        assert_eq!(slots.len(), 50);
        // Reinsertion fills the holes before growing.
        let again: Vec<Key> = (0..50).map(|i| slots.insert(1000 + i).unwrap()).collect();
        assert!(again.iter().all(|k| k.index < 100));
        let grown = slots.insert(5000).unwrap();
        assert_eq!(grown.index, 100);
        // Odd keys survived every reuse.
        for (i, k) in keys.iter().enumerate().skip(1).step_by(2) {
            assert_eq!(slots.get_mut(*k).copied(), Some(i));
        }
    }

    #[test]
    fn generations_wrap_without_panicking() {
        let mut slots = Slots::new();
        let mut key = slots.insert(0u8).unwrap();
        if let Some(Entry::Occupied { generation, .. }) = slots.entries.get_mut(0) {
            *generation = u32::MAX;
        }
        key.generation = u32::MAX;
        slots.remove(key).unwrap();
        let next = slots.insert(1).unwrap();
        assert_eq!(next.generation, 0);
        assert!(slots.get_mut(key).is_none());
    }

    #[test]
    fn drain_empties_and_invalidates() {
        let mut slots = Slots::new();
        let a = slots.insert(1).unwrap();
        let b = slots.insert(2).unwrap();
        let mut drained = slots.drain();
        drained.sort();
        assert_eq!(drained, vec![1, 2]);
        assert_eq!(slots.len(), 0);
        assert!(slots.get_mut(a).is_none() && slots.get_mut(b).is_none());
        let c = slots.insert(3).unwrap();
        assert!(c.index < 2);
    }
}
