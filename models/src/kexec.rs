//! kexec's segment rules, shared so they can be tested on the host.
//!
//! `linux_checks` is Linux's `sanity_check_segment_list`
//! (kernel/kexec_core.c) rule for rule and in its order, with its error
//! codes; `accept_segments` is the loop at the end of that function
//! ("kexec_core: accept unaccepted kexec segments' destination
//! addresses"), which accepts every destination before anything is
//! copied. `inside_ram` is this project's own extra rule, not Linux's:
//! Linux leaves it to kexec-tools to pick destinations in System RAM.

use abi::efi::{memory_type, MemoryDescriptor};
use abi::PAGE_4K;

/// Linux's `-EINVAL`.
pub const EINVAL: i32 = -22;
/// Linux's `-EADDRNOTAVAIL`.
pub const EADDRNOTAVAIL: i32 = -99;

/// x86-64's `KEXEC_DESTINATION_MEMORY_LIMIT` (`MAXMEM - 1`) with 4-level
/// paging, as our guests run: `MAXMEM` is `1 << 46`.
pub const DESTINATION_LIMIT_4LEVEL: u64 = (1 << 46) - 1;
/// The same with 5-level paging (`MAXMEM` = `1 << 52`).
pub const DESTINATION_LIMIT_5LEVEL: u64 = (1 << 52) - 1;

/// A segment: where its bytes are staged (`src`, `bufsz` of them) and
/// where they go (`mem`, `memsz`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    pub src: u64,
    pub bufsz: u64,
    pub mem: u64,
    pub memsz: u64,
}

/// Why a segment list was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentError {
    /// Linux: `mem + memsz` wraps (`-EADDRNOTAVAIL`).
    Wraps,
    /// Linux: `mem` or its end is not page aligned (`-EADDRNOTAVAIL`).
    NotAligned,
    /// Linux: the end reaches `KEXEC_DESTINATION_MEMORY_LIMIT`
    /// (`-EADDRNOTAVAIL`).
    AboveLimit,
    /// Linux: two destinations overlap (`-EINVAL`).
    Overlap,
    /// Linux: a buffer is larger than its destination (`-EINVAL`).
    BufferLarger,
    /// Linux: a segment, or all of them, need more than half of RAM
    /// (`-EINVAL`).
    TooLarge,
    /// This project's extra rule (not Linux's): a destination outside the
    /// RAM of the memory map.
    OutsideRam,
}

impl SegmentError {
    pub const fn as_str(self) -> &'static str {
        match self {
            SegmentError::Wraps => "a segment wraps around the address space (-EADDRNOTAVAIL)",
            SegmentError::NotAligned => "a segment is not page aligned (-EADDRNOTAVAIL)",
            SegmentError::AboveLimit => {
                "a segment ends at or above KEXEC_DESTINATION_MEMORY_LIMIT (-EADDRNOTAVAIL)"
            }
            SegmentError::Overlap => "two segments overlap (-EINVAL)",
            SegmentError::BufferLarger => "a segment's buffer exceeds its memory size (-EINVAL)",
            SegmentError::TooLarge => "the segments need more than half of RAM (-EINVAL)",
            SegmentError::OutsideRam => {
                "a segment lies outside RAM (this project's extra check, not Linux's)"
            }
        }
    }

    /// The error code Linux returns for its rules (our extra rule uses
    /// `-EADDRNOTAVAIL`, as Linux does for destinations it cannot use).
    pub const fn errno(self) -> i32 {
        match self {
            SegmentError::Wraps
            | SegmentError::NotAligned
            | SegmentError::AboveLimit
            | SegmentError::OutsideRam => EADDRNOTAVAIL,
            SegmentError::Overlap | SegmentError::BufferLarger | SegmentError::TooLarge => EINVAL,
        }
    }
}

/// Linux's `PAGE_COUNT(x)`.
fn page_count(x: u64) -> u64 {
    x.wrapping_add(PAGE_4K - 1) >> 12
}

/// Linux's checks of `sanity_check_segment_list`, in its order: per
/// segment wrap, alignment and the destination limit; then pairwise
/// overlap; then `bufsz > memsz`; then half of `nr_pages` per segment and
/// in total. (The crash-kernel range check applies to crash images only,
/// which this project does not load.)
pub fn linux_checks(segs: &[Segment], nr_pages: u64, limit: u64) -> Result<(), SegmentError> {
    for s in segs {
        let (mstart, mend) = (s.mem, s.mem.wrapping_add(s.memsz));
        if mstart > mend {
            return Err(SegmentError::Wraps);
        }
        if mstart % PAGE_4K != 0 || mend % PAGE_4K != 0 {
            return Err(SegmentError::NotAligned);
        }
        if mend >= limit {
            return Err(SegmentError::AboveLimit);
        }
    }
    for (i, s) in segs.iter().enumerate() {
        let (mstart, mend) = (s.mem, s.mem + s.memsz);
        for p in &segs[..i] {
            let (pstart, pend) = (p.mem, p.mem + p.memsz);
            if mend > pstart && mstart < pend {
                return Err(SegmentError::Overlap);
            }
        }
    }
    if segs.iter().any(|s| s.bufsz > s.memsz) {
        return Err(SegmentError::BufferLarger);
    }
    let mut total_pages = 0u64;
    for s in segs {
        if page_count(s.memsz) > nr_pages / 2 {
            return Err(SegmentError::TooLarge);
        }
        total_pages = total_pages.wrapping_add(page_count(s.memsz));
    }
    if total_pages > nr_pages / 2 {
        return Err(SegmentError::TooLarge);
    }
    Ok(())
}

/// The accept loop that ends `sanity_check_segment_list`: every
/// destination, `(mem, memsz)`, goes to `accept_memory` in order.
pub fn accept_segments(segs: &[Segment], mut accept_memory: impl FnMut(u64, u64)) {
    for s in segs {
        accept_memory(s.mem, s.memsz);
    }
}

/// This project's extra rule (not in Linux, where kexec-tools picks
/// destinations in System RAM): every destination lies in RAM of the
/// memory map `ram`, where runs of adjacent descriptors count as one.
/// Call it after `linux_checks` (segments are then known not to wrap).
pub fn inside_ram(segs: &[Segment], ram: &[MemoryDescriptor]) -> Result<(), SegmentError> {
    for s in segs {
        let e = s.mem.checked_add(s.memsz).ok_or(SegmentError::Wraps)?;
        let mut at = s.mem;
        while at < e {
            match ram.iter().find(|d| d.physical_start <= at && at < d.end()) {
                Some(d) => at = d.end(),
                None => return Err(SegmentError::OutsideRam),
            }
        }
    }
    Ok(())
}

/// Most segments a kexec of this project stages (the control page holds
/// their table).
pub const MAX_SEGMENTS: usize = 16;

/// A segment list that does not fit in `MAX_SEGMENTS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooManySegments;

/// The segments of a kexec: the image's loadable segments (relative to
/// its lowest page, at `dest`, staged at `staging`), page rounded and
/// merged where they touch, then the boot parameters `(src, len)` right
/// after the image's span at `dest + span`. Returns the count written.
pub fn build_segments(
    image: &crate::elf::Image<'_>,
    dest: u64,
    staging: u64,
    params: (u64, u64),
    out: &mut [Segment; MAX_SEGMENTS],
) -> Result<usize, TooManySegments> {
    let mut n = 0;
    for s in image.segments() {
        let start = (s.vaddr - image.min_vaddr) & !(PAGE_4K - 1);
        let end = (s.vaddr - image.min_vaddr + s.memsz).next_multiple_of(PAGE_4K);
        if n > 0 && out[n - 1].mem + out[n - 1].memsz >= dest + start {
            let last = &mut out[n - 1];
            last.memsz = (dest + end).max(last.mem + last.memsz) - last.mem;
            last.bufsz = last.memsz;
            continue;
        }
        if n + 1 == MAX_SEGMENTS {
            return Err(TooManySegments);
        }
        out[n] = Segment {
            src: staging + start,
            bufsz: end - start,
            mem: dest + start,
            memsz: end - start,
        };
        n += 1;
    }
    out[n] = Segment {
        src: params.0,
        bufsz: params.1,
        mem: dest + image.span,
        memsz: params.1,
    };
    Ok(n + 1)
}

/// Linux's `totalram_pages()` as our kernels see it: the pages of the
/// memory map's RAM that the kernel manages (usable, loader and
/// unaccepted memory).
pub fn total_ram_pages(map: &[MemoryDescriptor]) -> u64 {
    map.iter()
        .filter(|d| {
            matches!(
                d.memory_type,
                memory_type::CONVENTIONAL
                    | memory_type::LOADER_CODE
                    | memory_type::LOADER_DATA
                    | memory_type::BOOT_SERVICES_CODE
                    | memory_type::BOOT_SERVICES_DATA
                    | memory_type::UNACCEPTED
            )
        })
        .fold(0u64, |a, d| a.saturating_add(d.number_of_pages))
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // small test values
mod tests {
    extern crate std;
    use super::*;

    fn desc(start: u64, pages: u64) -> MemoryDescriptor {
        MemoryDescriptor {
            memory_type: memory_type::CONVENTIONAL,
            physical_start: start,
            number_of_pages: pages,
            ..MemoryDescriptor::ZERO
        }
    }

    fn seg(mem: u64, memsz: u64) -> Segment {
        Segment {
            src: 0,
            bufsz: memsz,
            mem,
            memsz,
        }
    }

    const LIMIT: u64 = DESTINATION_LIMIT_4LEVEL;

    #[test]
    fn each_linux_rule_refuses_its_case_with_its_errno() {
        let pages = 512; // 2 MiB of RAM
        let check = |segs: &[Segment]| linux_checks(segs, pages, LIMIT).map_err(|e| (e, e.errno()));
        assert_eq!(check(&[seg(0x1000, 0x1000)]), Ok(()));
        assert_eq!(
            check(&[seg(0x1001, 0x1000)]),
            Err((SegmentError::NotAligned, EADDRNOTAVAIL))
        );
        assert_eq!(
            check(&[seg(0x1000, 0x10)]),
            Err((SegmentError::NotAligned, EADDRNOTAVAIL))
        );
        assert_eq!(
            check(&[seg(!0xfff, 0x2000)]),
            Err((SegmentError::Wraps, EADDRNOTAVAIL))
        );
        assert_eq!(
            check(&[seg(0x1000, 0x1000), seg(0x1000, 0x1000)]),
            Err((SegmentError::Overlap, EINVAL))
        );
        let mut big_buf = seg(0x1000, 0x1000);
        big_buf.bufsz = 0x1001;
        assert_eq!(check(&[big_buf]), Err((SegmentError::BufferLarger, EINVAL)));
        assert_eq!(
            check(&[seg(0, 0x10_1000)]),
            Err((SegmentError::TooLarge, EINVAL))
        );
        assert_eq!(
            check(&[seg(0, 0x8_0000), seg(0x10_0000, 0x8_1000)]),
            Err((SegmentError::TooLarge, EINVAL)),
            "each fits, the total does not"
        );
    }

    #[test]
    fn the_destination_limit_is_maxmem_minus_one() {
        let pages = 1 << 40;
        // mend = 2^46 - 4 KiB passes; mend = 2^46 >= MAXMEM - 1 does not.
        let top = 1u64 << 46;
        assert_eq!(
            linux_checks(&[seg(top - 0x2000, 0x1000)], pages, LIMIT),
            Ok(())
        );
        assert_eq!(
            linux_checks(&[seg(top - 0x1000, 0x1000)], pages, LIMIT),
            Err(SegmentError::AboveLimit)
        );
        assert_eq!(
            linux_checks(
                &[seg(top - 0x1000, 0x1000)],
                pages,
                DESTINATION_LIMIT_5LEVEL
            ),
            Ok(())
        );
        assert_eq!(SegmentError::AboveLimit.errno(), EADDRNOTAVAIL);
    }

    #[test]
    fn linux_checks_run_in_linux_order() {
        // A later segment's wrap is found before an earlier pair's overlap
        // (the first loop covers every segment before the second starts).
        let segs = [
            seg(0x1000, 0x1000),
            seg(0x1000, 0x1000),
            seg(!0xfff, 0x2000),
        ];
        assert_eq!(linux_checks(&segs, 512, LIMIT), Err(SegmentError::Wraps));
        // Zero-size segments: inside another one overlaps, at its edge not.
        assert_eq!(
            linux_checks(&[seg(0x1000, 0x2000), seg(0x2000, 0)], 512, LIMIT),
            Err(SegmentError::Overlap)
        );
        assert_eq!(
            linux_checks(&[seg(0x1000, 0x2000), seg(0x3000, 0)], 512, LIMIT),
            Ok(())
        );
    }

    #[test]
    fn the_extra_rule_is_ours_and_says_so() {
        let ram = [desc(0, 256), desc(0x10_0000, 256)]; // 2 MiB in two pieces
        assert_eq!(
            inside_ram(&[seg(0xf_f000, 0x2000)], &ram),
            Ok(()),
            "across descriptors"
        );
        let e = inside_ram(&[seg(0x20_0000, 0x1000)], &ram).unwrap_err();
        assert_eq!(e, SegmentError::OutsideRam);
        assert!(e.as_str().contains("not Linux's"));
        assert_eq!(total_ram_pages(&ram), 512);
    }

    #[test]
    fn segments_are_page_rounded_merged_and_followed_by_the_parameters() {
        // Two loadable segments that touch once page rounded, one apart.
        let mut f = std::vec![0u8; 0x3000];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        f[16] = 3;
        f[18] = 62;
        f[24..32].copy_from_slice(&0x1000u64.to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes());
        f[54] = 56;
        let phs = [(0x1000u64, 0x800u64), (0x1800, 0x900), (0x5000, 0x100)];
        f[56] = phs.len() as u8;
        for (i, (vaddr, memsz)) in phs.iter().enumerate() {
            let o = 64 + i * 56;
            f[o..o + 4].copy_from_slice(&1u32.to_le_bytes());
            f[o + 4..o + 8].copy_from_slice(&5u32.to_le_bytes());
            f[o + 16..o + 24].copy_from_slice(&vaddr.to_le_bytes());
            f[o + 24..o + 32].copy_from_slice(&vaddr.to_le_bytes());
            f[o + 40..o + 48].copy_from_slice(&memsz.to_le_bytes());
        }
        let img = crate::elf::Image::parse(&f).unwrap();
        let mut out = [Segment::default(); MAX_SEGMENTS];
        let n = build_segments(&img, 0x40_0000, 0x90_0000, (0x99_0000, 0x2000), &mut out).unwrap();
        assert_eq!(
            &out[..n],
            &[
                Segment {
                    src: 0x90_0000,
                    bufsz: 0x2000,
                    mem: 0x40_0000,
                    memsz: 0x2000
                },
                Segment {
                    src: 0x90_4000,
                    bufsz: 0x1000,
                    mem: 0x40_4000,
                    memsz: 0x1000
                },
                Segment {
                    src: 0x99_0000,
                    bufsz: 0x2000,
                    mem: 0x40_5000,
                    memsz: 0x2000
                },
            ]
        );
    }

    #[test]
    fn every_destination_is_accepted_in_order() {
        let mut calls = [(0u64, 0u64); 3];
        let mut n = 0;
        accept_segments(&[seg(0x4000, 0), seg(0x1000, 0x2000)], |s, l| {
            calls[n] = (s, l);
            n += 1;
        });
        assert_eq!(&calls[..n], &[(0x4000, 0), (0x1000, 0x2000)]);
    }
}
