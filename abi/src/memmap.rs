//! A fixed-capacity EFI memory map that can be edited in place: the
//! firmware builds one from the HOB list and carves allocations out of it;
//! a kernel keeps one for kexec. No allocation, sorted, adjacent ranges of
//! one type merged.

use crate::efi::{MemoryDescriptor, EFI_PAGE_SIZE};

/// `EFI_MEMORY_WB`: what every RAM descriptor here carries.
pub const ATTR_WB: u64 = 0x8;

/// Why an edit failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// The map has no room for another descriptor.
    Full,
    /// The range is empty, unaligned or wraps.
    BadRange { start: u64, end: u64 },
}

/// An editable memory map over caller-provided storage.
pub struct MemoryMap<'a> {
    descs: &'a mut [MemoryDescriptor],
    len: usize,
}

impl<'a> MemoryMap<'a> {
    /// An empty map using `storage`.
    pub fn new(storage: &'a mut [MemoryDescriptor]) -> Self {
        MemoryMap {
            descs: storage,
            len: 0,
        }
    }

    /// Takes over the first `len` descriptors already in the storage (a map
    /// kept across calls). The caller vouches that they are sorted and
    /// disjoint, as every map built by `set` is.
    pub fn adopt(&mut self, len: usize) {
        self.len = len.min(self.descs.len());
    }

    /// The descriptors, sorted by address.
    pub fn entries(&self) -> &[MemoryDescriptor] {
        &self.descs[..self.len]
    }

    /// The descriptors, for as long as the storage lives.
    pub fn into_entries(self) -> &'a [MemoryDescriptor] {
        &self.descs[..self.len]
    }

    fn insert(&mut self, at: usize, d: MemoryDescriptor) -> Result<(), MapError> {
        if self.len == self.descs.len() {
            return Err(MapError::Full);
        }
        self.descs.copy_within(at..self.len, at + 1);
        self.descs[at] = d;
        self.len += 1;
        Ok(())
    }

    fn remove(&mut self, at: usize) {
        self.descs.copy_within(at + 1..self.len, at);
        self.len -= 1;
    }

    /// Splits the descriptor that strictly contains `addr`, if any.
    fn split_at(&mut self, addr: u64) -> Result<(), MapError> {
        let Some(i) = self
            .entries()
            .iter()
            .position(|d| d.physical_start < addr && addr < d.end())
        else {
            return Ok(());
        };
        let d = self.descs[i];
        let head_pages = (addr - d.physical_start) / EFI_PAGE_SIZE;
        let tail = MemoryDescriptor {
            physical_start: addr,
            number_of_pages: d.number_of_pages - head_pages,
            ..d
        };
        self.insert(i + 1, tail)?;
        self.descs[i].number_of_pages = head_pages;
        Ok(())
    }

    /// Makes `[start, end)` one range of `memory_type`, replacing whatever
    /// described it before.
    pub fn set(&mut self, start: u64, end: u64, memory_type: u32) -> Result<(), MapError> {
        if start >= end
            || !start.is_multiple_of(EFI_PAGE_SIZE)
            || !end.is_multiple_of(EFI_PAGE_SIZE)
        {
            return Err(MapError::BadRange { start, end });
        }
        // Worst case needs two splits and one insertion: check room first so
        // a failed edit leaves the map unchanged.
        if self.len + 2 > self.descs.len() {
            return Err(MapError::Full);
        }
        self.split_at(start)?;
        self.split_at(end)?;
        let mut i = 0;
        while i < self.len {
            let d = self.descs[i];
            if d.physical_start >= start && d.end() <= end {
                self.remove(i);
            } else {
                i += 1;
            }
        }
        let at = self
            .entries()
            .iter()
            .position(|d| d.physical_start >= end)
            .unwrap_or(self.len);
        self.insert(
            at,
            MemoryDescriptor {
                memory_type,
                pad: 0,
                physical_start: start,
                virtual_start: 0,
                number_of_pages: (end - start) / EFI_PAGE_SIZE,
                attribute: ATTR_WB,
            },
        )?;
        self.merge_around(at);
        Ok(())
    }

    fn merge_around(&mut self, at: usize) {
        let mut at = at;
        if at > 0 && self.mergeable(at - 1) {
            self.descs[at - 1].number_of_pages += self.descs[at].number_of_pages;
            self.remove(at);
            at -= 1;
        }
        if at + 1 < self.len && self.mergeable(at) {
            self.descs[at].number_of_pages += self.descs[at + 1].number_of_pages;
            self.remove(at + 1);
        }
    }

    fn mergeable(&self, i: usize) -> bool {
        let (a, b) = (&self.descs[i], &self.descs[i + 1]);
        a.memory_type == b.memory_type && a.end() == b.physical_start && a.attribute == b.attribute
    }

    /// The highest `pages`-page range of `memory_type` that ends at or
    /// below `limit`, as its start address.
    pub fn find_top_down(&self, memory_type: u32, pages: u64, limit: u64) -> Option<u64> {
        let size = pages.checked_mul(EFI_PAGE_SIZE)?;
        self.entries().iter().rev().find_map(|d| {
            if d.memory_type != memory_type {
                return None;
            }
            let top = d.end().min(limit);
            (top >= d.physical_start.checked_add(size)?).then(|| top - size)
        })
    }

    /// Bytes of memory of `memory_type`.
    pub fn bytes_of(&self, memory_type: u32) -> u64 {
        self.entries()
            .iter()
            .filter(|d| d.memory_type == memory_type)
            .map(|d| d.number_of_pages * EFI_PAGE_SIZE)
            .sum()
    }
}

/// The memory map a kexec hands the next kernel, built into `storage`: the
/// EFI map as the running kernel got it (unaccepted ranges stay type 15,
/// as Linux's kexec passes the EFI map on), the running kernel's memory
/// free again (conventional), the payload `[payload.0, payload.1)` in use
/// (loader data), and every range `unaccepted` yields (what the bitmap
/// still marks) type 15 where it is conventional. Empty descriptors are
/// left out. `None` when it does not fit.
pub fn next_kernel_map<'a>(
    ram: &[MemoryDescriptor],
    payload: (u64, u64),
    unaccepted: impl Iterator<Item = (u64, u64)>,
    storage: &'a mut [MemoryDescriptor],
) -> Option<&'a [MemoryDescriptor]> {
    use crate::efi::memory_type;
    let mut map = MemoryMap::new(storage);
    for d in ram.iter().filter(|d| d.number_of_pages > 0) {
        let ty = match d.memory_type {
            memory_type::LOADER_CODE
            | memory_type::LOADER_DATA
            | memory_type::BOOT_SERVICES_CODE
            | memory_type::BOOT_SERVICES_DATA => memory_type::CONVENTIONAL,
            t => t,
        };
        map.set(d.physical_start, d.end(), ty).ok()?;
    }
    let page = crate::PAGE_4K;
    let (lo, hi) = (payload.0 & !(page - 1), payload.1.next_multiple_of(page));
    map.set(lo, hi, memory_type::LOADER_DATA).ok()?;
    for (a, b) in unaccepted {
        // The conventional parts of [a, b) (at most 8 pieces per range).
        let mut pieces = [(0u64, 0u64); 8];
        let mut k = 0;
        for e in map.entries() {
            if e.memory_type == memory_type::CONVENTIONAL && e.physical_start < b && a < e.end() {
                // More pieces than room: refuse rather than hand unaccepted
                // memory over as usable.
                *pieces.get_mut(k)? = (e.physical_start.max(a), e.end().min(b));
                k += 1;
            }
        }
        for (s, e) in pieces[..k].iter().copied().filter(|(s, e)| e > s) {
            map.set(s, e, memory_type::UNACCEPTED).ok()?;
        }
    }
    Some(map.into_entries())
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // small test values
mod tests {
    extern crate std;
    use super::*;
    use crate::efi::memory_type::*;
    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;

    #[test]
    fn set_splits_replaces_and_merges() {
        let mut storage = [MemoryDescriptor::default(); 16];
        let mut m = MemoryMap::new(&mut storage);
        m.set(0, 0x10_0000, CONVENTIONAL).unwrap();
        m.set(0x10_0000, 0x40_0000, UNACCEPTED).unwrap();
        m.set(0x2000, 0x3000, LOADER_DATA).unwrap();
        let shape: Vec<_> = m
            .entries()
            .iter()
            .map(|d| (d.memory_type, d.physical_start, d.end()))
            .collect();
        assert_eq!(
            shape,
            vec![
                (CONVENTIONAL, 0, 0x2000),
                (LOADER_DATA, 0x2000, 0x3000),
                (CONVENTIONAL, 0x3000, 0x10_0000),
                (UNACCEPTED, 0x10_0000, 0x40_0000)
            ]
        );
        // Turning unaccepted memory into conventional merges with its neighbour.
        m.set(0x10_0000, 0x20_0000, CONVENTIONAL).unwrap();
        assert_eq!(m.entries()[2].end(), 0x20_0000);
        assert_eq!(
            m.find_top_down(CONVENTIONAL, 16, u64::MAX),
            Some(0x20_0000 - 0x1_0000)
        );
        assert_eq!(m.find_top_down(CONVENTIONAL, 16, 0x2000), None);
        assert_eq!(
            m.set(5, 0x1000, CONVENTIONAL),
            Err(MapError::BadRange {
                start: 5,
                end: 0x1000
            })
        );
    }

    proptest! {
        /// The map always equals a per-page model, stays sorted, and never
        /// has two mergeable neighbours.
        #[test]
        fn matches_a_page_model(edits in proptest::collection::vec((0u64..64, 1u64..16, 0u32..4), 1..40)) {
            let mut storage = [MemoryDescriptor::default(); 64];
            let mut m = MemoryMap::new(&mut storage);
            let mut model: Vec<Option<u32>> = vec![None; 80];
            for (start, len, ty) in edits {
                m.set(start * 4096, (start + len) * 4096, ty).unwrap();
                for p in start..start + len { model[p as usize] = Some(ty); }
            }
            let mut seen: Vec<Option<u32>> = vec![None; 80];
            for d in m.entries() {
                for p in d.physical_start / 4096..d.end() / 4096 { seen[p as usize] = Some(d.memory_type); }
            }
            prop_assert_eq!(seen, model);
            for w in m.entries().windows(2) {
                prop_assert!(w[0].end() <= w[1].physical_start);
                prop_assert!(!(w[0].end() == w[1].physical_start && w[0].memory_type == w[1].memory_type));
            }
        }
    }

    #[test]
    fn the_next_kernel_map_frees_loader_memory_and_marks_what_is_unaccepted() {
        use crate::efi::memory_type as t;
        let d = |ty, start: u64, pages: u64| MemoryDescriptor {
            memory_type: ty,
            physical_start: start,
            number_of_pages: pages,
            ..MemoryDescriptor::ZERO
        };
        // 0-4 MiB: loader code, then conventional to 8 MiB, unaccepted to 16 MiB.
        let ram = [
            d(t::LOADER_CODE, 0, 1024),
            d(t::CONVENTIONAL, 4 << 20, 1024),
            d(t::UNACCEPTED, 8 << 20, 2048),
        ];
        let mut storage = [MemoryDescriptor::ZERO; 16];
        // The payload at 1 MiB..1 MiB + 5 KiB; the bitmap still marks 6-8 MiB.
        let map = next_kernel_map(
            &ram,
            (1 << 20, (1 << 20) + 5 * 1024),
            [(6u64 << 20, 8u64 << 20)].into_iter(),
            &mut storage,
        )
        .unwrap();
        let got: std::vec::Vec<(u32, u64, u64)> = map
            .iter()
            .map(|e| (e.memory_type, e.physical_start, e.end()))
            .collect();
        assert_eq!(
            got,
            [
                (t::CONVENTIONAL, 0, 1 << 20),
                (t::LOADER_DATA, 1 << 20, (1 << 20) + 0x2000),
                (t::CONVENTIONAL, (1 << 20) + 0x2000, 6 << 20),
                (t::UNACCEPTED, 6 << 20, 16 << 20),
            ]
        );
        // Too small a storage: None, not a truncated map.
        let mut tiny = [MemoryDescriptor::ZERO; 2];
        assert!(
            next_kernel_map(&ram, (1 << 20, 2 << 20), core::iter::empty(), &mut tiny).is_none()
        );
    }
}
