//! kexec's segment rules, shared so they can be tested on the host: Linux's
//! `sanity_check_segment_list` (page-aligned, no wrap, inside RAM, no
//! overlap, at most half of RAM in total). Every sum is checked: a hostile
//! or corrupted segment list is refused, never wrapped into a valid one.

use crate::efi::MemoryDescriptor;
use crate::PAGE_4K;

/// A segment: where its bytes are staged, where they go, how many.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub src: u64,
    pub mem: u64,
    pub memsz: u64,
}

/// Why a segment list was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentError {
    NotAligned,
    Wraps,
    OutsideRam,
    Overlap,
    TooLarge,
}

impl SegmentError {
    pub const fn as_str(self) -> &'static str {
        match self {
            SegmentError::NotAligned => "a segment is not page aligned",
            SegmentError::Wraps => "a segment wraps around the address space",
            SegmentError::OutsideRam => "a segment lies outside RAM",
            SegmentError::Overlap => "two segments overlap",
            SegmentError::TooLarge => "the segments need more than half of RAM",
        }
    }
}

fn end(s: &Segment) -> Option<u64> {
    s.mem.checked_add(s.memsz)
}

/// Checks `segs` against the memory map `ram` (every descriptor counts as
/// RAM, as in the map the kernel was given).
pub fn sanity_check(segs: &[Segment], ram: &[MemoryDescriptor]) -> Result<(), SegmentError> {
    let ram_bytes = ram
        .iter()
        .fold(0u64, |a, d| a.saturating_add(d.end() - d.physical_start));
    let mut total = 0u64;
    for s in segs {
        if !s.mem.is_multiple_of(PAGE_4K) || !s.memsz.is_multiple_of(PAGE_4K) {
            return Err(SegmentError::NotAligned);
        }
        end(s).ok_or(SegmentError::Wraps)?;
    }
    for (i, s) in segs.iter().enumerate() {
        let e = end(s).ok_or(SegmentError::Wraps)?;
        // Inside RAM: covered by a run of descriptors.
        let mut at = s.mem;
        while at < e {
            match ram.iter().find(|d| d.physical_start <= at && at < d.end()) {
                Some(d) => at = d.end(),
                None => return Err(SegmentError::OutsideRam),
            }
        }
        for t in &segs[i + 1..] {
            let te = end(t).ok_or(SegmentError::Wraps)?;
            if s.mem < te && t.mem < e {
                return Err(SegmentError::Overlap);
            }
        }
        total = total.saturating_add(s.memsz);
    }
    if total > ram_bytes / 2 {
        return Err(SegmentError::TooLarge);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::efi::memory_type;
    use proptest::prelude::*;
    use std::vec::Vec;

    fn desc(start: u64, pages: u64) -> MemoryDescriptor {
        MemoryDescriptor {
            memory_type: memory_type::CONVENTIONAL,
            physical_start: start,
            number_of_pages: pages,
            ..MemoryDescriptor::ZERO
        }
    }

    fn seg(mem: u64, memsz: u64) -> Segment {
        Segment { src: 0, mem, memsz }
    }

    #[test]
    fn each_rule_refuses_its_case() {
        let ram = [desc(0, 256), desc(0x10_0000, 256)]; // 2 MiB in two pieces
        assert_eq!(sanity_check(&[seg(0x1000, 0x1000)], &ram), Ok(()));
        // Crossing from one descriptor into the next is fine.
        assert_eq!(sanity_check(&[seg(0xf_f000, 0x2000)], &ram), Ok(()));
        assert_eq!(
            sanity_check(&[seg(0x1001, 0x1000)], &ram),
            Err(SegmentError::NotAligned)
        );
        assert_eq!(
            sanity_check(&[seg(0x1000, 0x10)], &ram),
            Err(SegmentError::NotAligned)
        );
        assert_eq!(
            sanity_check(&[seg(!0xfff, 0x2000)], &ram),
            Err(SegmentError::Wraps)
        );
        assert_eq!(
            sanity_check(&[seg(0x20_0000, 0x1000)], &ram),
            Err(SegmentError::OutsideRam)
        );
        assert_eq!(
            sanity_check(&[seg(0x1000, 0x2000), seg(0x2000, 0x1000)], &ram),
            Err(SegmentError::Overlap)
        );
        assert_eq!(
            sanity_check(&[seg(0, 0x10_1000)], &ram),
            Err(SegmentError::TooLarge)
        );
        // A later segment that wraps is refused as such, not mis-summed.
        assert_eq!(
            sanity_check(&[seg(0x1000, 0x1000), seg(!0xfff, 0x2000)], &ram),
            Err(SegmentError::Wraps)
        );
    }

    /// The reference: page by page over a small address space.
    fn model(segs: &[Segment], ram: &[MemoryDescriptor]) -> Result<(), SegmentError> {
        let page = PAGE_4K;
        if segs
            .iter()
            .any(|s| s.mem % page != 0 || s.memsz % page != 0)
        {
            return Err(SegmentError::NotAligned);
        }
        if segs.iter().any(|s| s.mem.checked_add(s.memsz).is_none()) {
            return Err(SegmentError::Wraps);
        }
        let is_ram = |p: u64| ram.iter().any(|d| d.physical_start <= p && p < d.end());
        let mut owner = std::collections::BTreeMap::new();
        for (i, s) in segs.iter().enumerate() {
            for p in (s.mem..s.mem + s.memsz).step_by(page as usize) {
                if !is_ram(p) {
                    return Err(SegmentError::OutsideRam);
                }
            }
            for p in (s.mem..s.mem + s.memsz).step_by(page as usize) {
                if let Some(j) = owner.insert(p, i) {
                    if j != i {
                        return Err(SegmentError::Overlap);
                    }
                }
            }
        }
        let ram_bytes: u64 = ram.iter().map(|d| d.end() - d.physical_start).sum();
        if segs.iter().map(|s| s.memsz).sum::<u64>() > ram_bytes / 2 {
            return Err(SegmentError::TooLarge);
        }
        Ok(())
    }

    proptest! {
        /// Over a 1 MiB space (256 pages) with random RAM pieces and
        /// segments, the check accepts exactly what the page model accepts.
        /// (The model reports the first failing segment's rule, the check
        /// the first failing rule per segment, so only acceptance is
        /// compared, plus the error when there is a single segment.)
        #[test]
        fn check_agrees_with_the_page_model(
            pieces in proptest::collection::vec((0u64..256, 1u64..64), 0..5),
            segs in proptest::collection::vec((0u64..260, 1u64..40, 0u64..8), 0..5),
        ) {
            let ram: Vec<MemoryDescriptor> = {
                // Non-overlapping descriptors, as in a memory map.
                let mut taken = [false; 320];
                let mut v = Vec::new();
                for (start, pages) in pieces {
                    let range = start as usize..(start + pages) as usize;
                    if range.clone().all(|p| !taken[p]) {
                        range.for_each(|p| taken[p] = true);
                        v.push(desc(start * PAGE_4K, pages));
                    }
                }
                v
            };
            let segs: Vec<Segment> = segs
                .into_iter()
                .map(|(page, pages, skew)| seg(page * PAGE_4K + if skew == 0 { 8 } else { 0 }, pages * PAGE_4K))
                .collect();
            let got = sanity_check(&segs, &ram);
            let want = model(&segs, &ram);
            prop_assert_eq!(got.is_ok(), want.is_ok(), "{:?} vs {:?}", got, want);
            if segs.len() == 1 {
                prop_assert_eq!(got, want);
            }
        }
    }
}
