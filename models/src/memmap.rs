//! A fixed-capacity EFI memory map that can be edited in place: the
//! firmware builds one from the HOB list and carves allocations out of it;
//! a kernel keeps one for kexec. No allocation, sorted, adjacent ranges of
//! one type merged.

use abi::efi::{MemoryDescriptor, ATTR_WB, EFI_PAGE_SIZE};

/// Why an edit failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// The map has no room for another descriptor.
    Full,
    /// The range is empty, unaligned or wraps.
    BadRange { start: u64, end: u64 },
    /// An unaccepted range `[start, end)` crosses more conventional
    /// descriptors than `next_kernel_map` marks per range.
    Fragmented { start: u64, end: u64 },
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

    /// Most descriptors the storage holds.
    pub fn capacity(&self) -> usize {
        self.descs.len()
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

/// Most conventional pieces one unaccepted range may cross in
/// `next_kernel_map`.
pub const MAX_PIECES_PER_RANGE: usize = 8;

/// The memory map a kexec hands the next kernel, built into `storage` from
/// `booted`, the map the running kernel was booted with (not the copy it
/// edited for its own image and allocations): as Linux's kexec passes on
/// the EFI map it was booted with, each generation hands over the same
/// map, whatever memory it used, so the map does not grow from one
/// generation to the next. Loader and boot-services memory becomes free
/// (conventional), unaccepted ranges stay type 15 (the bitmap, not the
/// map, says what was accepted since), the payload `[payload.0,
/// payload.1)` is in use (loader data), and every range `unaccepted`
/// yields (what the bitmap still marks) becomes type 15 where it is
/// conventional, so unaccepted memory is never handed over as usable.
/// Empty descriptors are left out.
pub fn next_kernel_map<'a>(
    booted: &[MemoryDescriptor],
    payload: (u64, u64),
    unaccepted: impl Iterator<Item = (u64, u64)>,
    storage: &'a mut [MemoryDescriptor],
) -> Result<&'a [MemoryDescriptor], MapError> {
    use abi::efi::memory_type;
    let mut map = MemoryMap::new(storage);
    for d in booted.iter().filter(|d| d.number_of_pages > 0) {
        let ty = match d.memory_type {
            memory_type::LOADER_CODE
            | memory_type::LOADER_DATA
            | memory_type::BOOT_SERVICES_CODE
            | memory_type::BOOT_SERVICES_DATA => memory_type::CONVENTIONAL,
            t => t,
        };
        map.set(d.physical_start, d.end(), ty)?;
    }
    let page = abi::PAGE_4K;
    let (lo, hi) = (payload.0 & !(page - 1), payload.1.next_multiple_of(page));
    map.set(lo, hi, memory_type::LOADER_DATA)?;
    for (a, b) in unaccepted {
        // The conventional parts of [a, b).
        let mut pieces = [(0u64, 0u64); MAX_PIECES_PER_RANGE];
        let mut k = 0;
        for e in map.entries() {
            if e.memory_type == memory_type::CONVENTIONAL && e.physical_start < b && a < e.end() {
                // More pieces than room: refuse rather than hand unaccepted
                // memory over as usable.
                *pieces
                    .get_mut(k)
                    .ok_or(MapError::Fragmented { start: a, end: b })? =
                    (e.physical_start.max(a), e.end().min(b));
                k += 1;
            }
        }
        for (s, e) in pieces[..k].iter().copied().filter(|(s, e)| e > s) {
            map.set(s, e, memory_type::UNACCEPTED)?;
        }
    }
    Ok(map.into_entries())
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // small test values
mod tests {
    extern crate std;
    use super::*;
    use abi::efi::memory_type::*;
    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;

    /// A write-back descriptor of type `ty` over `[start, end)`.
    fn d(ty: u32, start: u64, end: u64) -> MemoryDescriptor {
        MemoryDescriptor {
            memory_type: ty,
            physical_start: start,
            number_of_pages: (end - start) / 4096,
            attribute: ATTR_WB,
            ..MemoryDescriptor::ZERO
        }
    }

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
        use abi::efi::memory_type as t;
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
        .expect("fits");
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
        // An unaccepted range over more conventional pieces than one pass
        // marks: refused, never handed over as usable.
        let mut islands = std::vec::Vec::new();
        for i in 0..9u64 {
            islands.push(d(t::CONVENTIONAL, i * 0x2000, 1));
            islands.push(d(t::RESERVED, i * 0x2000 + 0x1000, 1));
        }
        let mut storage = [MemoryDescriptor::ZERO; 32];
        assert_eq!(
            next_kernel_map(
                &islands,
                (0x20_0000, 0x20_1000),
                [(0, 0x12000)].into_iter(),
                &mut storage
            ),
            Err(MapError::Fragmented {
                start: 0,
                end: 0x12000
            })
        );
        // Too small a storage: an error naming it, not a truncated map.
        let mut tiny = [MemoryDescriptor::ZERO; 2];
        assert_eq!(
            next_kernel_map(&ram, (1 << 20, 2 << 20), core::iter::empty(), &mut tiny),
            Err(MapError::Full)
        );
    }

    /// Bytes of each memory type a map covers.
    fn bytes_per_type(map: &[MemoryDescriptor]) -> std::collections::BTreeMap<u32, u64> {
        let mut by = std::collections::BTreeMap::new();
        for d in map {
            *by.entry(d.memory_type).or_insert(0) += d.number_of_pages * EFI_PAGE_SIZE;
        }
        by
    }

    /// Sorted, disjoint, no empty descriptor and no two neighbours that
    /// one descriptor could describe.
    fn assert_canonical(map: &[MemoryDescriptor]) {
        assert!(map.iter().all(|d| d.number_of_pages > 0), "{map:?}");
        for w in map.windows(2) {
            assert!(w[0].end() <= w[1].physical_start, "{map:?}");
            assert!(
                !(w[0].end() == w[1].physical_start
                    && w[0].memory_type == w[1].memory_type
                    && w[0].attribute == w[1].attribute),
                "{map:?}"
            );
        }
    }

    /// What `next_kernel_map` must hand over, page by page: loader and
    /// boot-services memory free, the payload loader data, the bitmap's
    /// ranges type 15 where conventional; `Err` with the first range that
    /// crosses more than `MAX_PIECES_PER_RANGE` conventional runs.
    fn reference_next_map(
        pages: &[Option<u32>],
        payload: (u64, u64),
        unaccepted: &[(u64, u64)],
    ) -> Result<Vec<Option<u32>>, MapError> {
        let mut out: Vec<Option<u32>> = pages
            .iter()
            .map(|t| {
                t.map(|t| match t {
                    LOADER_CODE | LOADER_DATA | BOOT_SERVICES_CODE | BOOT_SERVICES_DATA => {
                        CONVENTIONAL
                    }
                    t => t,
                })
            })
            .collect();
        for p in payload.0 / 4096..payload.1.div_ceil(4096) {
            out[p as usize] = Some(LOADER_DATA);
        }
        for &(a, b) in unaccepted {
            // Conventional runs reaching into [a, b).
            let conventional = |p: usize| out.get(p) == Some(&Some(CONVENTIONAL));
            let (first, last) = ((a / 4096) as usize, (b.div_ceil(4096)) as usize);
            let mut runs = 0;
            for p in first..last.min(out.len()) {
                if conventional(p) && (p == first || !conventional(p - 1)) {
                    runs += 1;
                }
            }
            if runs > MAX_PIECES_PER_RANGE {
                return Err(MapError::Fragmented { start: a, end: b });
            }
            for t in out.iter_mut().take(last).skip(first) {
                if *t == Some(CONVENTIONAL) {
                    *t = Some(UNACCEPTED);
                }
            }
        }
        Ok(out)
    }

    fn pages_of(map: &[MemoryDescriptor], n: usize) -> Vec<Option<u32>> {
        let mut seen = vec![None; n];
        for d in map {
            for p in d.physical_start / 4096..d.end() / 4096 {
                seen[p as usize] = Some(d.memory_type);
            }
        }
        seen
    }

    const TYPES: [u32; 9] = [
        CONVENTIONAL,
        LOADER_CODE,
        LOADER_DATA,
        BOOT_SERVICES_CODE,
        BOOT_SERVICES_DATA,
        UNACCEPTED,
        ACPI_RECLAIM,
        RUNTIME_SERVICES_DATA,
        RESERVED,
    ];

    proptest! {
        /// `next_kernel_map` equals the page-by-page reference, is
        /// canonical (coalesced), and covers as many bytes of each type as
        /// the reference does.
        #[test]
        fn the_next_kernel_map_matches_a_page_reference(
            edits in proptest::collection::vec((0u64..48, 1u64..12, 0usize..9), 1..30),
            payload in (0u64..48 * 4096, 1u64..4 * 4096),
            cuts in proptest::collection::vec(0u64..=48, 0..6),
        ) {
            const PAGES: usize = 48;
            let mut storage = [MemoryDescriptor::ZERO; 64];
            let mut booted = MemoryMap::new(&mut storage);
            for (start, len, ty) in edits {
                let end = (start + len).min(PAGES as u64);
                booted.set(start * 4096, end * 4096, TYPES[ty]).unwrap();
            }
            let booted = booted.into_entries();
            let payload = (payload.0, (payload.0 + payload.1).min(PAGES as u64 * 4096));
            // The bitmap's ranges: page aligned (whole units in fact), sorted
            // and disjoint, as it yields them.
            let mut cuts: Vec<u64> = cuts.into_iter().map(|c| c * 4096).collect();
            cuts.sort_unstable();
            cuts.dedup();
            let unaccepted: Vec<(u64, u64)> =
                cuts.chunks_exact(2).map(|w| (w[0], w[1])).collect();
            let want = reference_next_map(&pages_of(booted, PAGES), payload, &unaccepted);
            let mut out = [MemoryDescriptor::ZERO; 64];
            let got = next_kernel_map(booted, payload, unaccepted.iter().copied(), &mut out);
            match (got, want) {
                (Ok(map), Ok(want)) => {
                    assert_canonical(map);
                    prop_assert_eq!(pages_of(map, PAGES), want.clone());
                    let mut want_bytes = std::collections::BTreeMap::new();
                    for t in want.iter().flatten() {
                        *want_bytes.entry(*t).or_insert(0u64) += 4096;
                    }
                    prop_assert_eq!(bytes_per_type(map), want_bytes);
                }
                (got, want) => prop_assert_eq!(got.map(|m| m.to_vec()), want.map(|_| Vec::new())),
            }
        }

        /// A chain of kexecs: each kernel reserves its own image and its
        /// allocator directory in its copy of the map, the bitmap loses the
        /// units each destination accepted, and the map handed to every
        /// generation after the first is the first one's, descriptor for
        /// descriptor: the map does not grow, whatever the destinations.
        #[test]
        fn a_kexec_chain_hands_every_generation_the_same_map(
            dests in proptest::collection::vec(0u64..60, 1..80),
            span_pages in 1u64..600,
        ) {
            let unit = abi::unaccepted::UNIT_SIZE;
            let mib = 1u64 << 20;
            // The firmware's map at ExitBootServices: low memory with the
            // firmware's tables, the first kernel, its payload and its
            // directory, then 240 MiB of unaccepted memory above 16 MiB.
            let firmware = [
                d(CONVENTIONAL, 0x10_0000, 0x20_0000),
                d(RUNTIME_SERVICES_DATA, 0x20_0000, 0x20_1000),
                d(ACPI_RECLAIM, 0x20_1000, 0x20_2000),
                d(LOADER_CODE, 0x20_2000, 0x30_0000),
                d(LOADER_DATA, 0x30_0000, 0x40_0000),
                d(BOOT_SERVICES_DATA, 0x40_0000, 0x50_0000),
                d(LOADER_DATA, 0x50_0000, 0x50_1000),
                d(CONVENTIONAL, 0x50_1000, 16 * mib),
                d(UNACCEPTED, 16 * mib, 256 * mib),
            ];
            let payload = (0x30_0000, 0x3f_f000);
            let mut unaccepted: std::collections::BTreeSet<u64> =
                (16 * mib / unit..256 * mib / unit).collect();
            let ranges = |u: &std::collections::BTreeSet<u64>| -> Vec<(u64, u64)> {
                u.iter().map(|&n| (n * unit, (n + 1) * unit)).collect()
            };
            let mut booted: Vec<MemoryDescriptor> = firmware.to_vec();
            let mut first: Option<Vec<MemoryDescriptor>> = None;
            let mut running_at: Option<u64> = None;
            for dest_block in dests {
                // This kernel's copy (what it allocates from): its own
                // image, then its directory, reserved.
                let mut storage = [MemoryDescriptor::ZERO; 64];
                storage[..booted.len()].copy_from_slice(&booted);
                let mut mine = MemoryMap::new(&mut storage);
                mine.adopt(booted.len());
                if let Some(at) = running_at {
                    mine.set(at, at + span_pages * 4096, LOADER_CODE).unwrap();
                }
                let at = mine.find_top_down(CONVENTIONAL, 1, u64::MAX).unwrap();
                mine.set(at, at + 4096, LOADER_DATA).unwrap();
                prop_assert!(mine.entries().len() <= booted.len() + 4);
                // The next kernel goes elsewhere.
                let dest = 16 * mib + dest_block * 4 * mib;
                // kexec accepts the next destination first (units it spans).
                let end = dest + span_pages * 4096;
                for n in dest / unit..end.div_ceil(unit) {
                    unaccepted.remove(&n);
                }
                let mut out = [MemoryDescriptor::ZERO; 64];
                let next = next_kernel_map(&booted, payload, ranges(&unaccepted).into_iter(), &mut out)
                    .unwrap()
                    .to_vec();
                assert_canonical(&next);
                match &first {
                    None => first = Some(next.clone()),
                    Some(f) => {
                        prop_assert_eq!(&next, f);
                        prop_assert_eq!(bytes_per_type(&next), bytes_per_type(f));
                    }
                }
                // The next kernel is booted with it.
                booted = next;
                running_at = Some(dest);
            }
            // Loader and boot-services memory is free, the payload kept.
            let first = first.unwrap();
            prop_assert_eq!(
                first.iter().map(|d| (d.memory_type, d.physical_start, d.end())).collect::<Vec<_>>(),
                vec![
                    (CONVENTIONAL, 0x10_0000, 0x20_0000),
                    (RUNTIME_SERVICES_DATA, 0x20_0000, 0x20_1000),
                    (ACPI_RECLAIM, 0x20_1000, 0x20_2000),
                    (CONVENTIONAL, 0x20_2000, 0x30_0000),
                    (LOADER_DATA, 0x30_0000, 0x3f_f000),
                    (CONVENTIONAL, 0x3f_f000, 16 * mib),
                    (UNACCEPTED, 16 * mib, 256 * mib),
                ]
            );
        }
    }

    /// Why a kexec chain once stopped at generation 251: handing over the
    /// map a kernel edited (its own image reserved) left each old kernel's
    /// image as a conventional island in unaccepted memory, two more
    /// descriptors per generation, until the 512 were used up. From the
    /// map it was booted with, the map stays the same.
    #[test]
    fn handing_over_the_edited_map_grew_two_descriptors_per_generation() {
        let mib = 1u64 << 20;
        let firmware = [
            d(CONVENTIONAL, 0x10_0000, 0x30_0000),
            d(LOADER_DATA, 0x30_0000, 0x40_0000),
            d(UNACCEPTED, 0x40_0000, 256 * mib),
        ];
        let payload = (0x30_0000, 0x40_0000);
        let mut edited: Vec<MemoryDescriptor> = firmware.to_vec();
        let mut booted: Vec<MemoryDescriptor> = firmware.to_vec();
        let (mut edited_lens, mut booted_lens) = (Vec::new(), Vec::new());
        for g in 0..5u64 {
            // Generation g + 1 runs 304 KiB at the top block minus g, with
            // the first 2 MiB unit accepted (the rest stays unaccepted).
            let dest = 252 * mib - g * 4 * mib;
            let unaccepted = [(dest + 2 * mib, dest + 4 * mib)];
            let mut out = [MemoryDescriptor::ZERO; 64];
            let next = next_kernel_map(&edited, payload, unaccepted.into_iter(), &mut out)
                .unwrap()
                .to_vec();
            let mut storage = [MemoryDescriptor::ZERO; 64];
            storage[..next.len()].copy_from_slice(&next);
            let mut mine = MemoryMap::new(&mut storage);
            mine.adopt(next.len());
            mine.set(dest, dest + 0x4_c000, LOADER_CODE).unwrap();
            edited = mine.entries().to_vec();
            edited_lens.push(next.len());
            let mut out = [MemoryDescriptor::ZERO; 64];
            booted = next_kernel_map(&booted, payload, unaccepted.into_iter(), &mut out)
                .unwrap()
                .to_vec();
            booted_lens.push(booted.len());
        }
        assert_eq!(edited_lens, [3, 5, 7, 9, 11]);
        assert_eq!(booted_lens, [3, 3, 3, 3, 3]);
    }
}
