//! The guest-side lock bit of each Secure-EPT entry, as the TDX module's
//! `tdg_mem_page_accept` takes it (`sept_lock_acquire_guest`): one bit per
//! 2 MiB entry of RAM. An accept holds the entry's bit from its first look
//! at the page states to its commit; a vCPU that finds the bit taken gets
//! `TDX_OPERAND_BUSY` and changes nothing. A 4 KiB accept takes the bit of
//! the 2 MiB entry that contains it, so 4 KiB accepts inside a range
//! contend with a 2 MiB accept of it (and with each other); accepts of
//! different entries never meet. Lock-free: one atomic bit operation.
//! The table is zeroed lazily by the allocator (no bit set costs nothing).

use crate::memory::host_alloc::{try_zeroed_atomic_u64, ReserveError};
use std::sync::atomic::{AtomicU64, Ordering};

/// One lock bit per 2 MiB entry.
pub struct SeptLocks {
    words: Vec<AtomicU64>,
    entries: u64,
}

/// A held entry lock; released on drop.
#[must_use = "the entry is unlocked when the guard is dropped"]
pub struct SeptGuard<'a> {
    locks: &'a SeptLocks,
    entry: u64,
}

impl SeptLocks {
    /// Lock bits for `entries` 2 MiB entries.
    pub fn new(entries: u64) -> Result<Self, ReserveError> {
        Ok(SeptLocks {
            words: try_zeroed_atomic_u64(entries.div_ceil(64), "the Secure-EPT entry locks")?,
            entries,
        })
    }

    /// Takes the lock of `entry` (a RAM offset / 2 MiB), or None when
    /// another vCPU holds it (or the entry is outside RAM).
    pub fn try_lock(&self, entry: u64) -> Option<SeptGuard<'_>> {
        if entry >= self.entries {
            return None;
        }
        let bit = 1u64 << (entry % 64);
        let word = &self.word(entry);
        if word.fetch_or(bit, Ordering::Acquire) & bit != 0 {
            return None;
        }
        Some(SeptGuard { locks: self, entry })
    }

    /// True when `entry` is locked (for tests and invariant checks).
    #[cfg_attr(not(test), allow(dead_code))] // for tests of the lock holders
    pub fn is_locked(&self, entry: u64) -> bool {
        entry < self.entries && self.word(entry).load(Ordering::Acquire) & (1 << (entry % 64)) != 0
    }

    /// The word holding `entry`'s bit (`entry < entries`).
    fn word(&self, entry: u64) -> &AtomicU64 {
        &self.words[(entry / 64) as usize]
    }

    /// Memory used by the table.
    #[allow(dead_code)] // the locks' footprint, unused for now
    pub fn bytes(&self) -> u64 {
        self.words.len() as u64 * 8
    }
}

impl Drop for SeptGuard<'_> {
    fn drop(&mut self) {
        let bit = 1u64 << (self.entry % 64);
        self.locks
            .word(self.entry)
            .fetch_and(!bit, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_has_one_holder_and_others_are_independent() {
        let locks = SeptLocks::new(130).unwrap();
        let a = locks.try_lock(7).unwrap();
        assert!(locks.try_lock(7).is_none(), "second holder of entry 7");
        let b = locks.try_lock(8).unwrap();
        let c = locks.try_lock(129).unwrap();
        assert!(locks.is_locked(7) && locks.is_locked(8) && locks.is_locked(129));
        drop(a);
        assert!(!locks.is_locked(7));
        assert!(locks.is_locked(8));
        let _again = locks.try_lock(7).unwrap();
        drop((b, c));
        assert!(locks.try_lock(130).is_none(), "outside RAM");
    }

    #[test]
    fn threads_racing_for_one_entry_never_both_hold_it() {
        let locks = SeptLocks::new(4).unwrap();
        let inside = AtomicU64::new(0);
        let wins = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..20_000 {
                        if let Some(_g) = locks.try_lock(2) {
                            assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                            wins.fetch_add(1, Ordering::Relaxed);
                            inside.fetch_sub(1, Ordering::SeqCst);
                        }
                    }
                });
            }
        });
        assert!(wins.load(Ordering::Relaxed) > 0);
        assert!(!locks.is_locked(2));
    }
}
