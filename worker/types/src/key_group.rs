//! Key groups: the unit of keyed state and of keyed routing. A key hashes to one of
//! `max_parallelism` key groups; a contiguous range of key groups belongs to each subtask, so
//! that state can be redistributed when the parallelism changes (Flink's scheme).

use crate::SubtaskIndex;

/// Flink's and Millrace's default number of key groups.
pub const DEFAULT_MAX_PARALLELISM: u32 = 128;

/// One of `max_parallelism` key groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyGroup(pub u32);

/// A parallelism that key groups cannot express.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyGroupError {
    #[error("parallelism {parallelism} must be between 1 and maxParallelism {max_parallelism}")]
    Parallelism { parallelism: usize, max_parallelism: u32 },
}

impl KeyGroup {
    /// The key group of a key hash.
    pub fn of_hash(hash: u64, max_parallelism: u32) -> Self {
        // The high bits of ahash-style hashes are well mixed; fold them in so that a modulus
        // by a power of two does not look only at the low bits.
        let folded = hash ^ (hash >> 32);
        KeyGroup((folded % u64::from(max_parallelism.max(1))) as u32)
    }
}

/// The subtask that owns `key_group` (Flink's `keyGroup * parallelism / maxParallelism`).
pub fn subtask_for_key_group(
    key_group: KeyGroup,
    parallelism: usize,
    max_parallelism: u32,
) -> Result<SubtaskIndex, KeyGroupError> {
    if parallelism == 0 || parallelism > max_parallelism as usize {
        return Err(KeyGroupError::Parallelism { parallelism, max_parallelism });
    }
    Ok(SubtaskIndex(key_group.0 as usize * parallelism / max_parallelism as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_groups_map_to_contiguous_subtasks() {
        let owners: Vec<usize> = (0..128)
            .map(|kg| subtask_for_key_group(KeyGroup(kg), 4, 128).map(|s| s.0).unwrap_or(usize::MAX))
            .collect();
        assert_eq!(owners[0], 0);
        assert_eq!(owners[31], 0);
        assert_eq!(owners[32], 1);
        assert_eq!(owners[127], 3);
        assert!(owners.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(
            subtask_for_key_group(KeyGroup(0), 0, 128),
            Err(KeyGroupError::Parallelism { parallelism: 0, max_parallelism: 128 })
        );
    }

    #[test]
    fn key_group_is_in_range() {
        for h in [0u64, 1, u64::MAX, 0xdead_beef_0000_0000] {
            assert!(KeyGroup::of_hash(h, 128).0 < 128);
        }
    }
}
