//! The memslot manager: KVM memslots cover exactly the accepted RAM, so a
//! guest access to pending memory finds no slot and exits with its GPA.
//!
//! Every accept adds a slot for the range it accepted (adding a slot is
//! cheap; removing one makes KVM drop its mappings). Slots are merged when
//! that pays off and keeps the count bounded:
//! - when a 2 MiB chunk or a 1 GiB block becomes fully accepted, the slots
//!   inside it become one;
//! - when the count reaches a threshold, all adjacent slots are merged and
//!   the threshold doubles (amortised: at most one removal per slot created);
//! - a merged slot never crosses a `MAX_SLOT_BYTES` boundary.
//!
//! If the accepted memory is so fragmented that even maximal runs exceed
//! KVM's slot limit, `map` fails and the TD is stopped with that diagnostic.
//!
//! `Mapping` names when accepted memory gets its slot (`--map`).

use std::collections::BTreeMap;
use thiserror::Error;

abi::named_enum! {
    /// When accepted memory gets its KVM memslot (`--map`, and the
    /// report's `inputs.map`, by these names). The default is
    /// `TdConfig::new`'s.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub enum Mapping {
        /// At accept.
        OnAccept => "on-accept",
        /// At the guest's first touch, which exits once and is completed
        /// by the VMM.
        #[default]
        OnTouch => "on-touch",
    }
}

/// Largest slot the manager builds (KVM's limit is 2^31 - 1 pages).
pub const MAX_SLOT_BYTES: u64 = 1 << 40;
/// Slot count at which the first global merge happens.
pub const DEFAULT_SOFT_CAP: usize = 1024;

/// Why a memslot operation failed.
#[derive(Debug, Error)]
pub enum MemslotError {
    #[error("KVM rejected memslot {slot} (gpa {gpa:#x}, size {size:#x}): {source}")]
    Kvm {
        slot: u32,
        gpa: u64,
        size: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("accepted memory is fragmented into more runs than KVM's {limit} memslots")]
    Exhausted { limit: usize },
    #[error("range gpa {gpa:#x} size {size:#x} overlaps an existing memslot")]
    Overlap { gpa: u64, size: u64 },
}

/// The KVM side of the manager, so the policy can be tested without KVM.
pub trait SlotBackend {
    /// Installs slot `slot` mapping `[gpa, gpa + size)` to host address `host`.
    fn install(&mut self, slot: u32, gpa: u64, size: u64, host: u64) -> Result<(), MemslotError>;
    /// Removes slot `slot` (previously installed at `gpa`, `host`).
    fn remove(&mut self, slot: u32, gpa: u64, host: u64) -> Result<(), MemslotError>;
    /// Keeps every other vCPU out of the guest until `resume_vcpus`: a
    /// merge removes live slots before it installs their union, and a
    /// vCPU walking its page tables through that gap would fault.
    fn pause_vcpus(&mut self) {}
    /// Ends `pause_vcpus`.
    fn resume_vcpus(&mut self) {}
}

/// One installed slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub id: u32,
    pub size: u64,
    pub host: u64,
}

/// Counters for the report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemslotStats {
    pub installed: u64,
    pub removed: u64,
    pub merges: u64,
    pub peak: usize,
}

/// Keeps KVM memslots equal to the accepted RAM, with a bounded count.
#[derive(Debug)]
pub struct MemslotManager<B> {
    backend: B,
    slots: BTreeMap<u64, Slot>,
    free_ids: Vec<u32>,
    next_id: u32,
    limit: usize,
    soft_cap: usize,
    merge_at: usize,
    stats: MemslotStats,
}

impl<B: SlotBackend> MemslotManager<B> {
    /// A manager that may use up to `limit` slots.
    pub fn new(backend: B, limit: usize, soft_cap: usize) -> Self {
        let soft_cap = soft_cap.min(limit / 2).max(1);
        MemslotManager {
            backend,
            slots: BTreeMap::new(),
            free_ids: Vec::new(),
            next_id: 0,
            limit,
            soft_cap,
            merge_at: soft_cap,
            stats: MemslotStats::default(),
        }
    }

    /// Number of installed slots.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when no slot is installed.
    #[allow(dead_code)] // the pair of `len`, unused for now
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Counters.
    pub fn stats(&self) -> MemslotStats {
        self.stats
    }

    /// The installed slots by GPA.
    pub fn slots(&self) -> impl Iterator<Item = (u64, Slot)> + '_ {
        self.slots.iter().map(|(g, s)| (*g, *s))
    }

    /// The backend (for inspection in tests).
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// True when some slot covers `gpa`.
    pub fn covers(&self, gpa: u64) -> bool {
        self.slots
            .range(..=gpa)
            .next_back()
            .is_some_and(|(start, s)| gpa < start + s.size)
    }

    /// The largest part of `[lo, hi)` around `gpa` that no slot covers;
    /// `None` when a slot already covers `gpa`.
    pub fn free_span(&self, gpa: u64, lo: u64, hi: u64) -> Option<(u64, u64)> {
        if self.covers(gpa) {
            return None;
        }
        let a = self
            .slots
            .range(..=gpa)
            .next_back()
            .map_or(lo, |(start, s)| (start + s.size).max(lo));
        let b = self
            .slots
            .range(gpa..)
            .next()
            .map_or(hi, |(start, _)| (*start).min(hi));
        Some((a, b))
    }

    /// Maps newly accepted `[gpa, gpa + size)` at host address `host`.
    pub fn map(&mut self, gpa: u64, size: u64, host: u64) -> Result<(), MemslotError> {
        let overlaps_prev = self
            .slots
            .range(..gpa + size)
            .next_back()
            .is_some_and(|(start, s)| start + s.size > gpa);
        if overlaps_prev {
            return Err(MemslotError::Overlap { gpa, size });
        }
        if self.slots.len() >= self.merge_at {
            self.merge_range(0, u64::MAX)?;
            self.merge_at = (self.slots.len() * 2).clamp(self.soft_cap, self.limit);
        }
        if self.slots.len() >= self.limit {
            return Err(MemslotError::Exhausted { limit: self.limit });
        }
        self.install(gpa, size, host)
    }

    fn install(&mut self, gpa: u64, size: u64, host: u64) -> Result<(), MemslotError> {
        let id = self.free_ids.pop().unwrap_or_else(|| {
            self.next_id += 1;
            self.next_id - 1
        });
        if let Err(e) = self.backend.install(id, gpa, size, host) {
            self.free_ids.push(id);
            return Err(e);
        }
        self.slots.insert(gpa, Slot { id, size, host });
        self.stats.installed += 1;
        self.stats.peak = self.stats.peak.max(self.slots.len());
        Ok(())
    }

    /// Merges adjacent slots that intersect `[lo, hi)` into maximal runs
    /// (split at `MAX_SLOT_BYTES` boundaries). Slots outside the window but
    /// adjacent to a merged run are not pulled in.
    pub fn merge_range(&mut self, lo: u64, hi: u64) -> Result<(), MemslotError> {
        let window = self.overlapping(lo, hi.saturating_sub(lo));
        let mut i = 0;
        while i < window.len() {
            let mut j = i + 1;
            let mut end = window[i].0 + window[i].1.size;
            while j < window.len() {
                let (g, s) = window[j];
                let contiguous = g == end && s.host == window[i].1.host + (g - window[i].0);
                let same_block = g % MAX_SLOT_BYTES != 0;
                if !(contiguous && same_block) {
                    break;
                }
                end = g + s.size;
                j += 1;
            }
            if j - i > 1 {
                let (start, first_slot) = window[i];
                self.backend.pause_vcpus();
                let merged = self.replace(&window[i..j], start, end - start, first_slot.host);
                self.backend.resume_vcpus();
                merged?;
                self.stats.merges += 1;
            }
            i = j;
        }
        Ok(())
    }
}

impl<B: SlotBackend> MemslotManager<B> {
    /// The slots that intersect `[gpa, gpa + size)`.
    fn overlapping(&self, gpa: u64, size: u64) -> Vec<(u64, Slot)> {
        let end = gpa.saturating_add(size);
        let first = self
            .slots
            .range(..=gpa)
            .next_back()
            .filter(|(start, s)| *start + s.size > gpa)
            .map_or(gpa, |(start, _)| *start);
        self.slots
            .range(first..end)
            .map(|(g, s)| (*g, *s))
            .collect()
    }

    /// Makes one slot cover `[gpa, gpa + size)` (host address `host`), even
    /// where slots already cover parts of it: the slots that intersect it
    /// and the range become one slot over their union, which is then
    /// merged with the slots adjacent to it. The range must lie inside one
    /// `MAX_SLOT_BYTES` block and map linearly to the host, as its
    /// intersecting slots do (the pending mechanism covers a 2 MiB chunk
    /// whose pending pages are poisoned).
    pub fn cover(&mut self, gpa: u64, size: u64, host: u64) -> Result<(), MemslotError> {
        let old = self.overlapping(gpa, size);
        if let [(g, s)] = old.as_slice() {
            if *g <= gpa && g + s.size >= gpa + size {
                return Ok(());
            }
        }
        let lo = old.first().map_or(gpa, |(g, _)| (*g).min(gpa));
        let hi = old
            .last()
            .map_or(gpa + size, |(g, s)| (g + s.size).max(gpa + size));
        let host_lo = host - (gpa - lo);
        if old.is_empty() {
            self.map(gpa, size, host)?;
        } else {
            self.backend.pause_vcpus();
            let r = self.replace(&old, lo, hi - lo, host_lo);
            self.backend.resume_vcpus();
            r?;
        }
        self.merge_range(lo.saturating_sub(1), hi.saturating_add(1))
    }

    /// Takes `[gpa, gpa + size)` out of every slot: a slot that covers more
    /// keeps the rest (as up to two slots). Returns true when a slot
    /// covered part of the range.
    pub fn unmap(&mut self, gpa: u64, size: u64) -> Result<bool, MemslotError> {
        let old = self.overlapping(gpa, size);
        if old.is_empty() {
            return Ok(false);
        }
        let end = gpa + size;
        // A slot cut in the middle becomes two: check the limit before
        // anything is removed, so a failure leaves every slot in place.
        let pieces: usize = old
            .iter()
            .map(|(g, s)| usize::from(*g < gpa) + usize::from(g + s.size > end))
            .sum();
        if self.slots.len() - old.len() + pieces > self.limit {
            return Err(MemslotError::Exhausted { limit: self.limit });
        }
        self.backend.pause_vcpus();
        let result = (|| {
            for (g, s) in &old {
                self.backend.remove(s.id, *g, s.host)?;
                self.slots.remove(g);
                self.free_ids.push(s.id);
                self.stats.removed += 1;
                if *g < gpa {
                    self.install(*g, gpa - g, s.host)?;
                }
                let slot_end = g + s.size;
                if slot_end > end {
                    self.install(end, slot_end - end, s.host + (end - g))?;
                }
            }
            Ok(())
        })();
        self.backend.resume_vcpus();
        result.map(|()| true)
    }

    /// Removes `old` and installs one slot over `[gpa, gpa + size)`.
    fn replace(
        &mut self,
        old: &[(u64, Slot)],
        gpa: u64,
        size: u64,
        host: u64,
    ) -> Result<(), MemslotError> {
        for (g, s) in old {
            self.backend.remove(s.id, *g, s.host)?;
            self.slots.remove(g);
            self.free_ids.push(s.id);
            self.stats.removed += 1;
        }
        self.install(gpa, size, host)
    }
}

/// Whoever can keep the vCPUs out of the guest while a memslot is
/// replaced (a vCPU walking its page tables through the gap would fault).
/// The vCPU side implements it; memory knows no vCPUs.
pub trait GuestPause: Send + Sync {
    /// Gets every other vCPU out of the guest, and keeps it out.
    fn pause_guests(&self);
    /// Lets them run the guest again.
    fn resume_guests(&self);
}

/// The real backend: `KVM_SET_USER_MEMORY_REGION` on a VM.
pub struct KvmSlots {
    pub vm: kvm_ioctls::VmFd,
    /// With several vCPUs: what pauses them around a merge.
    pub board: Option<std::sync::Arc<dyn GuestPause>>,
}

impl SlotBackend for KvmSlots {
    fn pause_vcpus(&mut self) {
        if let Some(b) = &self.board {
            b.pause_guests();
        }
    }

    fn resume_vcpus(&mut self) {
        if let Some(b) = &self.board {
            b.resume_guests();
        }
    }

    fn install(&mut self, slot: u32, gpa: u64, size: u64, host: u64) -> Result<(), MemslotError> {
        set_region(&self.vm, slot, gpa, size, host)
    }

    fn remove(&mut self, slot: u32, gpa: u64, host: u64) -> Result<(), MemslotError> {
        set_region(&self.vm, slot, gpa, 0, host)
    }
}

fn set_region(
    vm: &kvm_ioctls::VmFd,
    slot: u32,
    gpa: u64,
    size: u64,
    host: u64,
) -> Result<(), MemslotError> {
    let region = kvm_bindings::kvm_userspace_memory_region {
        slot,
        flags: 0,
        guest_phys_addr: gpa,
        memory_size: size,
        userspace_addr: host,
    };
    // SAFETY: `host` points into the guest RAM mapping owned by `GuestRam`,
    // which outlives the VM's use of it (the TD drops the VM first), and the
    // range `[host, host + size)` lies inside that mapping: callers derive it
    // from `RamLayout::ram_offset`, which checks the range is RAM.
    unsafe { vm.set_user_memory_region(region) }.map_err(|e| MemslotError::Kvm {
        slot,
        gpa,
        size,
        source: std::io::Error::from_raw_os_error(e.errno()),
    })
}

/// A backend for tests: no KVM; every install and removal succeeds.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct NoKvm;

#[cfg(test)]
impl SlotBackend for NoKvm {
    fn install(&mut self, _: u32, _: u64, _: u64, _: u64) -> Result<(), MemslotError> {
        Ok(())
    }
    fn remove(&mut self, _: u32, _: u64, _: u64) -> Result<(), MemslotError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// A fake KVM that checks slots never overlap and ids are unique.
    #[derive(Default, Debug)]
    struct Fake {
        live: BTreeMap<u32, (u64, u64)>,
        removals: u64,
    }

    impl SlotBackend for Fake {
        fn install(
            &mut self,
            slot: u32,
            gpa: u64,
            size: u64,
            _host: u64,
        ) -> Result<(), MemslotError> {
            assert!(
                !self.live.contains_key(&slot),
                "slot id {slot} reused while live"
            );
            for (g, s) in self.live.values() {
                assert!(gpa + size <= *g || *g + *s <= gpa, "overlapping slots");
            }
            self.live.insert(slot, (gpa, size));
            Ok(())
        }
        fn remove(&mut self, slot: u32, gpa: u64, _host: u64) -> Result<(), MemslotError> {
            assert_eq!(self.live.remove(&slot).map(|(g, _)| g), Some(gpa));
            self.removals += 1;
            Ok(())
        }
    }

    fn covered(m: &MemslotManager<Fake>) -> BTreeSet<u64> {
        let mut pages = BTreeSet::new();
        for (g, s) in m.slots() {
            for p in (g..g + s.size).step_by(4096) {
                pages.insert(p);
            }
        }
        pages
    }

    #[test]
    fn sequential_2m_maps_merge_into_one_slot_per_block() {
        let mut m = MemslotManager::new(Fake::default(), 32764, 1024);
        for i in 0..512u64 {
            m.map(i << 21, 2 << 20, 0x1000_0000_0000 + (i << 21))
                .unwrap();
        }
        m.merge_range(0, 1 << 30).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m.slots().next().unwrap().1.size, 1 << 30);
        assert!(m.covers((1 << 30) - 1));
        assert!(!m.covers(1 << 30));
    }

    #[test]
    fn slots_never_merge_across_a_host_discontinuity() {
        let mut m = MemslotManager::new(Fake::default(), 100, 10);
        m.map(0, 4096, 0x10000).unwrap();
        m.map(4096, 4096, 0x90000).unwrap();
        m.merge_range(0, u64::MAX).unwrap();
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn fragmentation_beyond_the_limit_is_an_error_not_a_panic() {
        let mut m = MemslotManager::new(Fake::default(), 8, 4);
        let mut result = Ok(());
        for i in 0..20u64 {
            // Every other page: no two slots can ever merge.
            result = m.map(i * 8192, 4096, i * 8192);
            if result.is_err() {
                break;
            }
        }
        assert!(matches!(result, Err(MemslotError::Exhausted { limit: 8 })));
        assert!(m.len() <= 8);
    }

    #[test]
    fn a_merge_is_tried_before_giving_up_on_the_limit() {
        // 8 slots allowed; 20 adjacent pages must fit after merging.
        let mut m = MemslotManager::new(Fake::default(), 8, 4);
        for i in 0..20u64 {
            m.map(i * 4096, 4096, i * 4096).unwrap();
        }
        assert!(m.len() <= 8);
        m.merge_range(0, u64::MAX).unwrap();
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn overlap_is_refused() {
        let mut m = MemslotManager::new(Fake::default(), 100, 10);
        m.map(0, 8192, 0).unwrap();
        assert!(matches!(
            m.map(4096, 4096, 4096),
            Err(MemslotError::Overlap { .. })
        ));
    }

    #[test]
    fn cover_joins_the_slots_inside_and_merges_with_neighbours() {
        let mut m = MemslotManager::new(Fake::default(), 100, 50);
        let chunk = 2u64 << 20;
        // An accepted run crossing into the chunk, one inside it, and the
        // next chunk covered already.
        m.map(chunk - 8192, 12288, chunk - 8192).unwrap();
        m.map(chunk + 40960, 4096, chunk + 40960).unwrap();
        m.map(2 * chunk, chunk, 2 * chunk).unwrap();
        m.cover(chunk, chunk, chunk).unwrap();
        let slots: Vec<_> = m.slots().map(|(g, s)| (g, s.size, s.host)).collect();
        assert_eq!(slots, vec![(chunk - 8192, 8192 + 2 * chunk, chunk - 8192)]);
        assert_eq!(m.backend().live.len(), 1);
        // Covering a covered range changes nothing.
        let installed = m.stats().installed;
        m.cover(chunk + 4096, 4096, chunk + 4096).unwrap();
        assert_eq!(m.stats().installed, installed);
    }

    #[test]
    fn unmap_past_the_limit_changes_nothing() {
        let mut m = MemslotManager::new(Fake::default(), 3, 2);
        m.map(0, 1 << 21, 0).unwrap();
        m.map(4 << 20, 1 << 21, 4 << 20).unwrap();
        assert!(m.unmap(0x5000, 0x1000).unwrap());
        assert_eq!(m.len(), 3);
        // A second cut in the middle would need a fourth slot.
        assert!(matches!(
            m.unmap((4 << 20) + 0x5000, 0x1000),
            Err(MemslotError::Exhausted { limit: 3 })
        ));
        assert_eq!(m.len(), 3);
        assert!(m.covers((4 << 20) + 0x5000));
        // Cutting at an edge needs no new slot.
        assert!(m.unmap(4 << 20, 0x1000).unwrap());
        assert_eq!(m.backend().live.len(), m.len());
    }

    #[test]
    fn unmap_punches_a_hole_and_keeps_the_rest() {
        let mut m = MemslotManager::new(Fake::default(), 100, 50);
        m.map(0, 1 << 21, 0x7000_0000).unwrap();
        assert!(m.unmap(0x5000, 0x2000).unwrap());
        let slots: Vec<_> = m.slots().map(|(g, s)| (g, s.size, s.host)).collect();
        assert_eq!(
            slots,
            vec![
                (0, 0x5000, 0x7000_0000),
                (0x7000, (1 << 21) - 0x7000, 0x7000_7000)
            ]
        );
        assert!(!m.covers(0x5000) && !m.covers(0x6fff) && m.covers(0x7000));
        // A hole at a slot's edge leaves one piece; nothing there: false.
        assert!(m.unmap(0, 0x1000).unwrap());
        assert_eq!(m.slots().next().unwrap().0, 0x1000);
        assert!(!m.unmap(0x5000, 0x2000).unwrap());
        assert_eq!(m.backend().live.len(), m.len());
    }

    proptest! {
        /// Whatever the order of accepts, slots cover exactly the accepted
        /// pages, the count stays under the soft cap plus the number of
        /// maximal runs, and removals never exceed installations.
        #[test]
        fn coverage_and_bounds(order in Just((0u64..2048).collect::<Vec<_>>()).prop_shuffle(), take in 1usize..2048) {
            let mut m = MemslotManager::new(Fake::default(), 32764, 64);
            let mut accepted = BTreeSet::new();
            let (mut runs, mut max_runs) = (0i64, 0i64);
            for &page in order.iter().take(take) {
                let gpa = page * 4096;
                m.map(gpa, 4096, gpa).unwrap();
                runs += 1 - i64::from(gpa > 0 && accepted.contains(&(gpa - 4096))) - i64::from(accepted.contains(&(gpa + 4096)));
                max_runs = max_runs.max(runs);
                accepted.insert(gpa);
                let chunk = gpa & !((2 << 20) - 1);
                if (chunk..chunk + (2 << 20)).step_by(4096).all(|p| accepted.contains(&p)) {
                    m.merge_range(chunk, chunk + (2 << 20)).unwrap();
                }
                prop_assert!(m.len() as i64 <= (2 * max_runs).max(64) + 1, "{} slots, at most {} runs", m.len(), max_runs);
            }
            prop_assert_eq!(covered(&m), accepted.clone());
            prop_assert!(m.stats().removed <= m.stats().installed);
            prop_assert_eq!(m.backend().live.len(), m.len());
        }
    }
}
