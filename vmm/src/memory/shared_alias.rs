//! Shared memory: the alias `gpa | shared bit` of RAM the guest converted
//! with MapGPA. The page-state table tracks private memory only; this is
//! the small set of shared ranges beside it, with its own invariants
//! (checked in `invariants.rs`):
//! - a GPA is never both accepted-private and shared: a range is released
//!   (its private pages pending, their host memory freed) before it
//!   becomes shared, and stays pending when it becomes private again until
//!   the guest accepts it;
//! - every shared range, and nothing else above the shared bit, is in a
//!   memslot, at the host address of its RAM offset in the shared mirror.
//!
//! The shared mirror is a second host mapping laid out as RAM (offset for
//! offset), reserved without backing at the first conversion to shared:
//! shared pages get host memory when touched, and give it back when they
//! become private again. Fresh pages read zero; the contract does not
//! promise it.

use crate::memory::guest_ram::{Backing, GuestRam};
use crate::memory::memslots::SlotBackend;
use crate::memory::private::{MemoryError, PrivateMemory};
use std::collections::BTreeMap;

/// The shared ranges (GPAs without the shared bit) and the host mapping
/// behind them.
#[derive(Debug, Default)]
pub struct SharedAlias {
    /// Disjoint, non-adjacent ranges: start -> end.
    ranges: BTreeMap<u64, u64>,
    /// The mirror of RAM holding shared memory; reserved on first use.
    mirror: Option<GuestRam>,
    /// Bytes converted to shared and back over the run.
    to_shared: u64,
    to_private: u64,
    /// Console bytes read from shared memory.
    pub console_bytes: u64,
}

impl SharedAlias {
    /// The shared ranges, start and end, without the shared bit.
    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().map(|(s, e)| (*s, *e))
    }

    /// Shared bytes now.
    pub fn bytes(&self) -> u64 {
        self.ranges.iter().map(|(s, e)| e - s).sum()
    }

    /// Bytes converted to shared, and back to private, over the run.
    pub fn converted(&self) -> (u64, u64) {
        (self.to_shared, self.to_private)
    }

    /// The shared ranges, at most `max` of them, and how many more.
    pub fn listed(&self, max: usize) -> (Vec<[u64; 2]>, u64) {
        let list = self.ranges().take(max).map(|(s, e)| [s, e]).collect();
        (list, self.ranges.len().saturating_sub(max) as u64)
    }

    /// True when all of `[gpa, gpa + len)` is shared.
    pub fn contains(&self, gpa: u64, len: u64) -> bool {
        let end = gpa.saturating_add(len.max(1));
        self.ranges
            .range(..=gpa)
            .next_back()
            .is_some_and(|(_, e)| *e >= end)
    }

    /// The parts of `[gpa, end)` that are shared.
    fn shared_parts(&self, gpa: u64, end: u64) -> Vec<(u64, u64)> {
        let first = self
            .ranges
            .range(..=gpa)
            .next_back()
            .filter(|(_, e)| **e > gpa)
            .map_or(gpa, |(s, _)| *s);
        self.ranges
            .range(first..end)
            .map(|(s, e)| ((*s).max(gpa), (*e).min(end)))
            .collect()
    }

    /// The parts of `[gpa, end)` that are not shared.
    fn private_parts(&self, gpa: u64, end: u64) -> Vec<(u64, u64)> {
        let mut parts = Vec::new();
        let mut at = gpa;
        for (s, e) in self.shared_parts(gpa, end) {
            if s > at {
                parts.push((at, s));
            }
            at = e;
        }
        if at < end {
            parts.push((at, end));
        }
        parts
    }

    fn insert(&mut self, gpa: u64, end: u64) {
        let (mut lo, mut hi) = (gpa, end);
        let touching: Vec<(u64, u64)> = self
            .ranges
            .range(..=end)
            .rev()
            .take_while(|(_, e)| **e >= gpa)
            .map(|(s, e)| (*s, *e))
            .collect();
        for (s, e) in touching {
            self.ranges.remove(&s);
            (lo, hi) = (lo.min(s), hi.max(e));
        }
        self.ranges.insert(lo, hi);
    }

    fn remove(&mut self, gpa: u64, end: u64) {
        for (s, e) in self.shared_parts(gpa, end) {
            let (whole_s, whole_e) = self
                .ranges
                .range(..=s)
                .next_back()
                .map(|(a, b)| (*a, *b))
                .unwrap_or((s, e));
            self.ranges.remove(&whole_s);
            if whole_s < s {
                self.ranges.insert(whole_s, s);
            }
            if e < whole_e {
                self.ranges.insert(e, whole_e);
            }
        }
    }

    /// The mirror's host address of RAM offset `offset`, if reserved.
    pub fn host_addr(&self, offset: u64) -> Option<u64> {
        self.mirror.as_ref().map(|m| m.host_addr(offset))
    }
}

impl<B: SlotBackend> PrivateMemory<B> {
    /// The shared ranges.
    pub fn shared(&self) -> &SharedAlias {
        &self.shared
    }

    /// Counts console bytes the host read from shared memory.
    pub fn count_console_shared(&mut self, bytes: u64) {
        self.shared.console_bytes += bytes;
    }

    /// Makes the RAM range `[gpa, gpa + len)` (4 KiB aligned, without the
    /// shared bit) shared: its accepted private pages go back to pending
    /// (host memory freed), and the parts not yet shared get a memslot at
    /// `gpa | shared bit` over the shared mirror. Returns the private pages
    /// released.
    pub fn convert_to_shared(&mut self, gpa: u64, len: u64) -> Result<u64, MemoryError> {
        let offset = self
            .layout()
            .ram_offset(gpa, len)
            .ok_or(MemoryError::NotRam { gpa, len })?;
        let released = self.release(gpa, len)?;
        if self.shared.mirror.is_none() {
            let layout = *self.layout();
            self.shared.mirror = Some(GuestRam::new(layout, Backing::OnTouch)?);
        }
        let shared_bit = self.layout().shared_bit();
        for (s, e) in self.shared.private_parts(gpa, gpa + len) {
            let host = self
                .shared
                .host_addr(offset + (s - gpa))
                .ok_or(MemoryError::NotRam { gpa: s, len: e - s })?;
            self.slots.map(s | shared_bit, e - s, host)?;
            self.shared.insert(s, e);
            self.shared.to_shared += e - s;
        }
        self.slots
            .merge_range((gpa | shared_bit) - 1, ((gpa + len) | shared_bit) + 1)?;
        Ok(released)
    }

    /// Makes the RAM range `[gpa, gpa + len)` private again: the shared
    /// alias of its shared parts leaves its memslots and their host memory
    /// is freed. The private pages stay pending until the guest accepts
    /// them. Returns the shared bytes converted.
    pub fn convert_to_private(&mut self, gpa: u64, len: u64) -> Result<u64, MemoryError> {
        let offset = self
            .layout()
            .ram_offset(gpa, len)
            .ok_or(MemoryError::NotRam { gpa, len })?;
        let shared_bit = self.layout().shared_bit();
        let mut bytes = 0;
        for (s, e) in self.shared.shared_parts(gpa, gpa + len) {
            self.slots.unmap(s | shared_bit, e - s)?;
            if let Some(host) = self.shared.host_addr(offset + (s - gpa)) {
                crate::memory::pending_mechanism::dontneed(host, e - s)?;
            }
            self.shared.remove(s, e);
            self.shared.to_private += e - s;
            bytes += e - s;
        }
        Ok(bytes)
    }

    /// Reads shared memory at `gpa` (with or without the shared bit) if
    /// the whole range is shared.
    pub fn read_shared(&self, gpa: u64, buf: &mut [u8]) -> bool {
        let gpa = gpa & !self.layout().shared_bit();
        let len = buf.len() as u64;
        match (self.shared_offset(gpa, len), self.shared.mirror.as_ref()) {
            (Some(offset), Some(m)) => {
                m.read(offset, buf);
                true
            }
            _ => false,
        }
    }

    /// Writes shared memory at `gpa` (with or without the shared bit) if
    /// the whole range is shared.
    #[cfg_attr(not(test), allow(dead_code))] // the VMM reads no shared memory yet; tests do
    pub fn write_shared(&self, gpa: u64, bytes: &[u8]) -> bool {
        let gpa = gpa & !self.layout().shared_bit();
        let len = bytes.len() as u64;
        match (self.shared_offset(gpa, len), self.shared.mirror.as_ref()) {
            (Some(offset), Some(m)) => {
                m.write(offset, bytes);
                true
            }
            _ => false,
        }
    }

    fn shared_offset(&self, gpa: u64, len: u64) -> Option<u64> {
        self.shared
            .contains(gpa, len)
            .then(|| self.layout().ram_offset(gpa, len))
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::SharedAlias;

    #[test]
    fn the_range_set_merges_and_splits() {
        let mut s = SharedAlias::default();
        s.insert(0x1000, 0x3000);
        s.insert(0x5000, 0x6000);
        s.insert(0x3000, 0x5000);
        assert_eq!(s.ranges().collect::<Vec<_>>(), [(0x1000, 0x6000)]);
        assert!(s.contains(0x2000, 0x4000));
        assert!(!s.contains(0x2000, 0x5000));
        s.remove(0x2000, 0x3000);
        assert_eq!(
            s.ranges().collect::<Vec<_>>(),
            [(0x1000, 0x2000), (0x3000, 0x6000)]
        );
        assert_eq!(
            s.private_parts(0, 0x7000),
            [(0, 0x1000), (0x2000, 0x3000), (0x6000, 0x7000)]
        );
        s.remove(0, 0x10000);
        assert_eq!(s.ranges().count(), 0);
    }
}
