//! The loader's TDCALL patch, for every image format: find each TDCALL
//! (`66 0F 01 CC`) in a byte range of an image and write the doorbell
//! ([`abi::tdcall::TDCALL_PATCH`]) over it. TDVF images are scanned in
//! their boot firmware volumes, ELF images in their executable segments.

use abi::tdcall::{TDCALL_INSN, TDCALL_PATCH};
use core::ops::Range;

/// One TDCALL the loader found (and patched).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TdcallSite {
    /// File offset of the instruction.
    pub offset: u64,
    /// Its address in the image's memory: the GPA for a TDVF section or an
    /// ELF segment loaded where it is linked; the link-time address for a
    /// relocatable (PIE) kernel.
    pub addr: u64,
}

/// The next TDCALL in `image[from..end]` (whole instructions only), as a
/// file offset; `None` past the image.
fn next(image: &[u8], from: u64, end: u64) -> Option<u64> {
    let end = usize::try_from(end).ok()?.min(image.len());
    let from = usize::try_from(from).ok()?;
    let at = image
        .get(from..end)?
        .windows(TDCALL_INSN.len())
        .position(|w| w == TDCALL_INSN)?;
    Some((from + at) as u64)
}

/// File offsets of the TDCALLs in `image[range]` (clipped to the image),
/// in ascending order; matches do not overlap.
pub fn find(image: &[u8], range: Range<u64>) -> impl Iterator<Item = u64> + '_ {
    let mut from = range.start;
    core::iter::from_fn(move || {
        let at = next(image, from, range.end)?;
        from = at + TDCALL_INSN.len() as u64;
        Some(at)
    })
}

/// Writes [`TDCALL_PATCH`] over each TDCALL in `image[range]`, in
/// ascending order, calling `on_site` with each file offset; returns how
/// many. Nothing else changes.
pub fn patch(image: &mut [u8], range: Range<u64>, mut on_site: impl FnMut(u64)) -> usize {
    let mut count = 0;
    let mut from = range.start;
    while let Some(at) = next(image, from, range.end) {
        let i = crate::to_usize(at);
        image[i..i + TDCALL_PATCH.len()].copy_from_slice(&TDCALL_PATCH);
        on_site(at);
        count += 1;
        from = at + TDCALL_PATCH.len() as u64;
    }
    count
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec;
    use std::vec::Vec;

    #[test]
    fn patches_whole_instructions_inside_the_range_only() {
        let mut img = vec![0x90u8; 64];
        for at in [0usize, 10, 14, 60] {
            img[at..at + 4].copy_from_slice(&TDCALL_INSN);
        }
        // Range [2, 62): the site at 0 is outside, the one at 60 ends at
        // 64, past the range's end.
        assert_eq!(find(&img, 2..62).collect::<Vec<_>>(), vec![10, 14]);
        let mut seen = vec![];
        assert_eq!(patch(&mut img, 2..64, |o| seen.push(o)), 3);
        assert_eq!(seen, vec![10, 14, 60]);
        assert_eq!(img[0..4], TDCALL_INSN);
        for at in [10usize, 14, 60] {
            assert_eq!(img[at..at + 4], TDCALL_PATCH);
        }
        // A range past the image is empty, not a panic.
        assert_eq!(find(&img, 100..200).count(), 0);
        assert_eq!(patch(&mut img, 63..u64::MAX, |_| {}), 0);
    }
}
