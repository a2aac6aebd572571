//! Loading a static-PIE x86-64 ELF at any address, in place: copy each
//! `PT_LOAD` segment, zero its `.bss`, apply `R_X86_64_RELATIVE`
//! relocations. The firmware loads the kernel with it, and a kernel stages
//! the next kernel's image with it for kexec.

/// Why an image cannot be used. The messages are the ones users see
/// (the VMM prefixes the file name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfError {
    /// No `\x7fELF` magic.
    NotElf,
    /// `what` needs `need` bytes of the file, which has `have`.
    Truncated {
        what: &'static str,
        need: u64,
        have: u64,
    },
    WrongArch(ArchDefect),
    NoSegments,
    /// More loadable segments than an image of this project may have.
    TooManySegments(usize),
    BadSegment {
        index: usize,
        defect: SegmentDefect,
    },
    /// Two loadable segments (program header indices) overlap in memory.
    Overlap {
        a: usize,
        b: usize,
    },
    /// The entry point is not inside an executable segment.
    BadEntry(u64),
    /// The destination buffer is smaller than the image's memory span.
    DestinationTooSmall {
        need: u64,
        have: u64,
    },
    /// A relocation type other than NONE and RELATIVE (the type number).
    UnsupportedRelocation(u32),
    /// A dynamic tag this loader does not handle (REL, RELR, TEXTREL...).
    UnsupportedDynamic(u64),
    /// A relocation or the relocation table lies outside the image.
    BadRelocation(u64),
}

/// Why the header does not describe a 64-bit little-endian x86-64
/// executable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchDefect {
    Class(u8),
    Data(u8),
    Machine(u16),
    Type(u16),
    PhEntSize(u16),
}

/// What is wrong with one `PT_LOAD` segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentDefect {
    /// Guests run identity-mapped: the virtual address must be the
    /// physical one.
    NotIdentityMapped {
        vaddr: u64,
        paddr: u64,
    },
    FileLargerThanMemory {
        filesz: u64,
        memsz: u64,
    },
    /// Its memory range (or the image's page-rounded span) passes 2^64.
    Wraps {
        paddr: u64,
    },
    /// Below the previous loadable segment: the ELF specification wants
    /// `PT_LOAD` entries in ascending address order (kexec relies on it).
    OutOfOrder {
        paddr: u64,
        previous: u64,
    },
}

impl core::fmt::Display for ArchDefect {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ArchDefect::Class(c) => write!(f, "EI_CLASS {c} is not ELFCLASS64"),
            ArchDefect::Data(d) => write!(f, "EI_DATA {d} is not little-endian"),
            ArchDefect::Machine(m) => write!(f, "e_machine {m} is not x86-64 (62)"),
            ArchDefect::Type(t) => write!(f, "e_type {t} is not an executable"),
            ArchDefect::PhEntSize(s) => write!(f, "e_phentsize {s} is not {PHDR_SIZE}"),
        }
    }
}

impl core::fmt::Display for SegmentDefect {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SegmentDefect::NotIdentityMapped { vaddr, paddr } => write!(
                f,
                "p_vaddr {vaddr:#x} differs from p_paddr {paddr:#x} (guests run identity-mapped)"
            ),
            SegmentDefect::FileLargerThanMemory { filesz, memsz } => {
                write!(f, "p_filesz {filesz:#x} > p_memsz {memsz:#x}")
            }
            SegmentDefect::Wraps { paddr } => write!(f, "p_paddr {paddr:#x} + p_memsz wraps"),
            SegmentDefect::OutOfOrder { paddr, previous } => write!(
                f,
                "p_paddr {paddr:#x} is below the previous PT_LOAD's {previous:#x} (not in ascending order)"
            ),
        }
    }
}

impl core::fmt::Display for ElfError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ElfError::NotElf => write!(f, "not an ELF file (bad magic)"),
            ElfError::Truncated { what, need, have } => {
                write!(
                    f,
                    "truncated ELF ({what} needs {need} bytes, file has {have})"
                )
            }
            ElfError::WrongArch(d) => {
                write!(f, "not a 64-bit little-endian x86-64 executable ({d})")
            }
            ElfError::NoSegments => write!(f, "no loadable segment"),
            ElfError::TooManySegments(n) => write!(
                f,
                "{n} loadable segments, more than the {MAX_LOAD_SEGMENTS} an image may have"
            ),
            ElfError::BadSegment { index, defect } => {
                write!(f, "segment {index} is malformed: {defect}")
            }
            ElfError::Overlap { a, b } => write!(f, "segments {a} and {b} overlap"),
            ElfError::BadEntry(e) => {
                write!(f, "entry point {e:#x} is not inside an executable segment")
            }
            ElfError::DestinationTooSmall { need, have } => {
                write!(f, "image spans {need:#x} bytes, destination has {have:#x}")
            }
            ElfError::UnsupportedRelocation(t) => write!(f, "relocation type {t} is not supported"),
            ElfError::UnsupportedDynamic(t) => write!(f, "dynamic tag {t:#x} is not supported"),
            ElfError::BadRelocation(o) => write!(f, "relocation at {o:#x} lies outside the image"),
        }
    }
}

/// Most loadable segments an image may have (the overlap check compares
/// every pair without allocating).
pub const MAX_LOAD_SEGMENTS: usize = 64;
const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;
/// `e_type` of a fixed-address executable.
pub const ET_EXEC: u16 = 2;
/// `e_type` of a position-independent executable.
pub const ET_DYN: u16 = 3;
const PT_INTERP: u32 = 3;
const PF_X: u32 = 1;

/// `ELF64_R_TYPE(info)`: the low 32 bits of `r_info`.
#[allow(clippy::cast_possible_truncation)]
fn r_type(info: u64) -> u32 {
    (info & 0xffff_ffff) as u32
}

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const DT_NULL: u64 = 0;
const DT_RELA: u64 = 7;
const DT_RELASZ: u64 = 8;
const DT_RELAENT: u64 = 9;
const DT_REL: u64 = 17;
const DT_TEXTREL: u64 = 22;
const DT_RELR: u64 = 36;
const R_X86_64_NONE: u32 = 0;
const R_X86_64_RELATIVE: u32 = 8;

mod relocate;

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
}

/// One loadable segment (`p_paddr` equals `vaddr`: `parse` checks it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub offset: u64,
    pub vaddr: u64,
    pub filesz: u64,
    pub memsz: u64,
    pub flags: u32,
}

impl Segment {
    /// One past its last byte in memory (`parse` checked it does not wrap).
    pub fn end(&self) -> u64 {
        self.vaddr + self.memsz
    }
}

/// A parsed image: where it wants to be, how big it is in memory.
#[derive(Clone, Copy, Debug)]
pub struct Image<'a> {
    bytes: &'a [u8],
    entry: u64,
    phoff: usize,
    phnum: usize,
    /// `e_type`: `ET_EXEC` or `ET_DYN`.
    pub e_type: u16,
    /// A `PT_INTERP` segment names a program interpreter.
    pub has_interp: bool,
    /// Lowest segment address (page aligned down).
    pub min_vaddr: u64,
    /// Bytes from `min_vaddr` to the end of the last segment (page aligned up).
    pub span: u64,
}

impl<'a> Image<'a> {
    /// Checks, in this order: the magic; the header's size; class, data
    /// encoding, machine, type (`ET_EXEC` or `ET_DYN`) and program-header
    /// entry size; the program-header table inside the file; each
    /// `PT_LOAD` (identity-mapped, `p_filesz <= p_memsz`, file range inside
    /// the file, memory range not wrapping); at least one and at most
    /// `MAX_LOAD_SEGMENTS` of them; no two overlapping; the entry point in
    /// an executable one. Every check is bounded and nothing wraps.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ElfError> {
        let have = bytes.len() as u64;
        if bytes.get(..4) != Some(b"\x7fELF") {
            return Err(ElfError::NotElf);
        }
        if bytes.len() < EHDR_SIZE {
            return Err(ElfError::Truncated {
                what: "ELF header",
                need: EHDR_SIZE as u64,
                have,
            });
        }
        // In bounds: the header is 64 bytes.
        let u16h = |o| u16_at(bytes, o).unwrap_or(0);
        let u64h = |o| u64_at(bytes, o).unwrap_or(0);
        let wrong = |d| Err(ElfError::WrongArch(d));
        if bytes[4] != 2 {
            return wrong(ArchDefect::Class(bytes[4]));
        }
        if bytes[5] != 1 {
            return wrong(ArchDefect::Data(bytes[5]));
        }
        if u16h(18) != 62 {
            return wrong(ArchDefect::Machine(u16h(18)));
        }
        let e_type = u16h(16);
        if e_type != ET_EXEC && e_type != ET_DYN {
            return wrong(ArchDefect::Type(e_type));
        }
        if u16h(54) as usize != PHDR_SIZE {
            return wrong(ArchDefect::PhEntSize(u16h(54)));
        }
        let (entry, phoff, phnum) = (u64h(24), u64h(32), u16h(56) as u64);
        let table_end = phoff.saturating_add(phnum * PHDR_SIZE as u64);
        if table_end > have {
            return Err(ElfError::Truncated {
                what: "program header table",
                need: table_end,
                have,
            });
        }
        let mut image = Image {
            bytes,
            entry,
            phoff: crate::to_usize(phoff),
            phnum: crate::to_usize(phnum),
            e_type,
            has_interp: false,
            min_vaddr: u64::MAX,
            span: 0,
        };
        let (mut min_vaddr, mut max_end, mut loads) = (u64::MAX, 0u64, 0usize);
        let mut previous: Option<u64> = None;
        for i in 0..image.phnum {
            let (ty, s, paddr) = image.phdr(i);
            image.has_interp |= ty == PT_INTERP;
            if ty != PT_LOAD {
                continue;
            }
            let bad = |defect| ElfError::BadSegment { index: i, defect };
            if s.vaddr != paddr {
                return Err(bad(SegmentDefect::NotIdentityMapped {
                    vaddr: s.vaddr,
                    paddr,
                }));
            }
            if s.filesz > s.memsz {
                return Err(bad(SegmentDefect::FileLargerThanMemory {
                    filesz: s.filesz,
                    memsz: s.memsz,
                }));
            }
            match s.offset.checked_add(s.filesz) {
                Some(end) if end <= have => {}
                _ => {
                    return Err(ElfError::Truncated {
                        what: "segment data",
                        need: s.offset.saturating_add(s.filesz),
                        have,
                    })
                }
            }
            let Some(mem_end) = s.vaddr.checked_add(s.memsz) else {
                return Err(bad(SegmentDefect::Wraps { paddr }));
            };
            if s.memsz == 0 {
                continue;
            }
            if let Some(prev) = previous.filter(|p| s.vaddr < *p) {
                return Err(bad(SegmentDefect::OutOfOrder {
                    paddr: s.vaddr,
                    previous: prev,
                }));
            }
            previous = Some(s.vaddr);
            loads += 1;
            min_vaddr = min_vaddr.min(s.vaddr & !0xfff);
            max_end = max_end.max(mem_end);
        }
        if loads == 0 {
            return Err(ElfError::NoSegments);
        }
        if loads > MAX_LOAD_SEGMENTS {
            return Err(ElfError::TooManySegments(loads));
        }
        // Pairwise overlap of the loadable segments (at most 64).
        for (i, a) in image.indexed_segments() {
            for (j, b) in image.indexed_segments().filter(|(j, _)| *j > i) {
                if a.vaddr < b.vaddr + b.memsz && b.vaddr < a.vaddr + a.memsz {
                    return Err(ElfError::Overlap { a: i, b: j });
                }
            }
        }
        image.min_vaddr = min_vaddr;
        // Found by fuzzing: a segment ending near 2^64 made this wrap.
        image.span = (max_end - image.min_vaddr)
            .div_ceil(4096)
            .checked_mul(4096)
            .ok_or(ElfError::BadSegment {
                index: 0,
                defect: SegmentDefect::Wraps { paddr: max_end },
            })?;
        if !image
            .segments()
            .any(|s| s.flags & PF_X != 0 && entry >= s.vaddr && entry < s.vaddr + s.memsz)
        {
            return Err(ElfError::BadEntry(entry));
        }
        Ok(image)
    }

    /// The entry point as linked.
    pub fn entry(&self) -> u64 {
        self.entry
    }

    /// The loadable segments with their program-header index.
    fn indexed_segments(&self) -> impl Iterator<Item = (usize, Segment)> + '_ {
        (0..self.phnum)
            .map(|i| (i, self.phdr(i)))
            .filter(|(_, (ty, s, _))| *ty == PT_LOAD && s.memsz > 0)
            .map(|(i, (_, s, _))| (i, s))
    }

    /// Program header `i`: its type, the segment, and its `p_paddr`.
    fn phdr(&self, i: usize) -> (u32, Segment, u64) {
        let o = self.phoff + i * PHDR_SIZE;
        let b = self.bytes;
        // In bounds: `parse` checked the table lies inside the file.
        let ty = u32_at(b, o).unwrap_or(0);
        let seg = Segment {
            flags: u32_at(b, o + 4).unwrap_or(0),
            offset: u64_at(b, o + 8).unwrap_or(0),
            vaddr: u64_at(b, o + 16).unwrap_or(0),
            filesz: u64_at(b, o + 32).unwrap_or(0),
            memsz: u64_at(b, o + 40).unwrap_or(0),
        };
        (ty, seg, u64_at(b, o + 24).unwrap_or(0))
    }

    /// The `PT_LOAD` segments with a non-zero memory size.
    pub fn segments(&self) -> impl Iterator<Item = Segment> + '_ {
        self.indexed_segments().map(|(_, s)| s)
    }

    fn dynamic(&self) -> Option<Segment> {
        (0..self.phnum)
            .map(|i| self.phdr(i))
            .find(|(ty, _, _)| *ty == PT_DYNAMIC)
            .map(|(_, s, _)| s)
    }

    /// Entry point once loaded at `base`.
    pub fn entry_at(&self, base: u64) -> u64 {
        self.entry - self.min_vaddr + base
    }

    /// Copies the image into `dest` (which will live at address `base`),
    /// zeroes what the file does not cover, and applies relocations for
    /// `base`. Returns the entry point.
    pub fn load(&self, dest: &mut [u8], base: u64) -> Result<u64, ElfError> {
        if (dest.len() as u64) < self.span {
            return Err(ElfError::DestinationTooSmall {
                need: self.span,
                have: dest.len() as u64,
            });
        }
        let dest = &mut dest[..crate::to_usize(self.span)];
        dest.fill(0);
        for s in self.segments() {
            let at = crate::to_usize(s.vaddr - self.min_vaddr);
            dest[at..at + crate::to_usize(s.filesz)].copy_from_slice(
                &self.bytes[crate::to_usize(s.offset)..crate::to_usize(s.offset + s.filesz)],
            );
        }
        self.relocate(dest, base)?;
        Ok(self.entry_at(base))
    }

    fn relocate(&self, dest: &mut [u8], base: u64) -> Result<(), ElfError> {
        self.walk_relocations(&mut relocate::Loaded(dest), base)
    }

    /// Checks every relocation `load` would apply (the dynamic table, the
    /// relocation table, each type and target) against the file alone,
    /// without a destination: what `load` would refuse, this refuses, so a
    /// host can reject a kernel before any guest runs. Bounded by the file:
    /// the relocation table must lie in one segment's bytes from the file.
    pub fn check_relocations(&self) -> Result<(), ElfError> {
        self.walk_relocations(&mut relocate::FileView(self), self.min_vaddr)
    }
}

/// Writes the doorbell over every TDCALL in the file bytes of `bytes`'
/// executable `PT_LOAD` segments (`models::tdcall_patch`), calling
/// `on_site` with each one's file offset and link-time address, in
/// segment order; returns how many. The image is parsed (and so checked)
/// first; nothing outside those segments' file bytes changes.
pub fn patch_tdcalls(
    bytes: &mut [u8],
    mut on_site: impl FnMut(crate::tdcall_patch::TdcallSite),
) -> Result<usize, ElfError> {
    let mut code = [None::<Segment>; MAX_LOAD_SEGMENTS];
    for (slot, s) in code.iter_mut().zip(
        Image::parse(bytes)?
            .segments()
            .filter(|s| s.flags & PF_X != 0),
    ) {
        *slot = Some(s);
    }
    let mut count = 0;
    for s in code.into_iter().flatten() {
        let file = s.offset..s.offset + s.filesz;
        count += crate::tdcall_patch::patch(bytes, file, |offset| {
            on_site(crate::tdcall_patch::TdcallSite {
                offset,
                addr: s.vaddr + (offset - s.offset),
            })
        });
    }
    Ok(count)
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // small test values
mod tests {
    extern crate std;
    use super::*;
    use std::vec;
    use std::vec::Vec;

    /// A PIE with a code segment, a data segment holding one pointer, a
    /// DYNAMIC segment and one RELATIVE relocation of that pointer.
    fn pie() -> Vec<u8> {
        let mut b = vec![0u8; 0x3000];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[16] = 3; // ET_DYN
        b[18] = 62;
        b[24..32].copy_from_slice(&0x1000u64.to_le_bytes()); // entry
        b[32..40].copy_from_slice(&64u64.to_le_bytes());
        b[54] = 56;
        b[56] = 3;
        let ph =
            |b: &mut Vec<u8>, i: usize, ty: u32, off: u64, vaddr: u64, filesz: u64, memsz: u64| {
                let o = 64 + i * 56;
                b[o..o + 4].copy_from_slice(&ty.to_le_bytes());
                b[o + 4..o + 8].copy_from_slice(&5u32.to_le_bytes()); // R+X
                b[o + 8..o + 16].copy_from_slice(&off.to_le_bytes());
                b[o + 16..o + 24].copy_from_slice(&vaddr.to_le_bytes());
                b[o + 24..o + 32].copy_from_slice(&vaddr.to_le_bytes());
                b[o + 32..o + 40].copy_from_slice(&filesz.to_le_bytes());
                b[o + 40..o + 48].copy_from_slice(&memsz.to_le_bytes());
            };
        ph(&mut b, 0, PT_LOAD, 0x1000, 0x1000, 0x10, 0x10);
        ph(&mut b, 1, PT_LOAD, 0x2000, 0x2000, 0x100, 0x3000); // .bss beyond
        ph(&mut b, 2, PT_DYNAMIC, 0x2000, 0x2000, 0x40, 0x40);
        b[0x1000] = 0xc3;
        let dynamic: [(u64, u64); 4] = [
            (DT_RELA, 0x2080),
            (DT_RELASZ, 24),
            (DT_RELAENT, 24),
            (DT_NULL, 0),
        ];
        for (i, (t, v)) in dynamic.iter().enumerate() {
            b[0x2000 + i * 16..0x2008 + i * 16].copy_from_slice(&t.to_le_bytes());
            b[0x2008 + i * 16..0x2010 + i * 16].copy_from_slice(&v.to_le_bytes());
        }
        // Pointer at 0x20f0 to 0x1000, relocated.
        b[0x2080..0x2088].copy_from_slice(&0x20f0u64.to_le_bytes());
        b[0x2088..0x2090].copy_from_slice(&(R_X86_64_RELATIVE as u64).to_le_bytes());
        b[0x2090..0x2098].copy_from_slice(&0x1000u64.to_le_bytes());
        b[0x20f8] = 0xee; // inside filesz: must survive; .bss after 0x2100 zeroed
        b
    }

    #[test]
    fn tdcalls_are_patched_in_executable_segments_only() {
        use abi::tdcall::{TDCALL_INSN, TDCALL_PATCH};
        let mut file = pie();
        // The data segment read-write, not executable.
        file[64 + 56 + 4..64 + 56 + 8].copy_from_slice(&6u32.to_le_bytes());
        // Two TDCALLs in the code's file bytes (the second ends at its
        // end), one in the data, one in no segment.
        for at in [0x1004usize, 0x100c, 0x20c0, 0x1800] {
            file[at..at + 4].copy_from_slice(&TDCALL_INSN);
        }
        let before = file.clone();
        let mut sites = vec![];
        assert_eq!(patch_tdcalls(&mut file, |s| sites.push(s)), Ok(2));
        let at = |offset, addr| crate::tdcall_patch::TdcallSite { offset, addr };
        assert_eq!(sites, vec![at(0x1004, 0x1004), at(0x100c, 0x100c)]);
        let changed: Vec<usize> = (0..file.len()).filter(|&i| file[i] != before[i]).collect();
        assert_eq!(
            changed,
            vec![0x1004, 0x1005, 0x1006, 0x1007, 0x100c, 0x100d, 0x100e, 0x100f]
        );
        assert_eq!(file[0x1004..0x1008], TDCALL_PATCH);
        // Not an ELF image: refused, untouched.
        let mut junk = vec![0u8; 64];
        assert_eq!(patch_tdcalls(&mut junk, |_| {}), Err(ElfError::NotElf));
    }

    #[test]
    fn a_dynamic_segment_at_the_top_of_the_address_space_is_refused() {
        // Found by fuzzing: the DYNAMIC entry offset plus 16 wrapped.
        let mut file = pie();
        let o = 64 + 2 * 56;
        // 8 bytes below the image start: relative to it, 2^64 - 8.
        file[o + 16..o + 24].copy_from_slice(&0xff8u64.to_le_bytes());
        let img = Image::parse(&file).unwrap();
        let mut dest = vec![0u8; img.span as usize];
        assert!(matches!(
            img.load(&mut dest, 0x40_0000),
            Err(ElfError::BadRelocation(_))
        ));
    }

    #[test]
    fn a_span_reaching_the_top_of_the_address_space_is_refused() {
        let mut file = pie();
        // Segment 0 starts in page 0 and segment 1 ends at 2^64 - 1: the
        // span, rounded up to a page, is 2^64.
        file[64 + 16..64 + 24].copy_from_slice(&0x800u64.to_le_bytes());
        file[64 + 24..64 + 32].copy_from_slice(&0x800u64.to_le_bytes());
        let o = 64 + 56;
        file[o + 40..o + 48].copy_from_slice(&(u64::MAX - 0x2000).to_le_bytes());
        assert!(matches!(
            Image::parse(&file),
            Err(ElfError::BadSegment { .. })
        ));
    }

    #[test]
    fn loads_and_relocates_at_any_base() {
        let file = pie();
        let img = Image::parse(&file).unwrap();
        assert_eq!(img.min_vaddr, 0x1000);
        assert_eq!(img.span, 0x4000);
        let mut dest = vec![0xffu8; 0x4000];
        let base = 0x7654_3000;
        let entry = img.load(&mut dest, base).unwrap();
        assert_eq!(entry, base);
        assert_eq!(dest[0], 0xc3);
        let ptr = u64::from_le_bytes(dest[0x10f0..0x10f8].try_into().unwrap());
        assert_eq!(ptr, base, "RELATIVE: addend - min_vaddr + base");
        assert_eq!(dest[0x10f8], 0xee);
        assert!(dest[0x1100..].iter().all(|b| *b == 0), ".bss zeroed");
        let mut small = vec![0u8; 0x1000];
        assert!(matches!(
            img.load(&mut small, base),
            Err(ElfError::DestinationTooSmall { .. })
        ));
    }

    #[test]
    fn refuses_what_it_cannot_relocate() {
        let mut file = pie();
        file[0x2088] = 1; // R_X86_64_64
        let img = Image::parse(&file).unwrap();
        let mut dest = vec![0u8; 0x4000];
        assert_eq!(
            img.load(&mut dest, 0),
            Err(ElfError::UnsupportedRelocation(1))
        );
        let mut file = pie();
        file[0x2000] = DT_RELR as u8;
        let img = Image::parse(&file).unwrap();
        assert_eq!(
            img.load(&mut dest, 0),
            Err(ElfError::UnsupportedDynamic(DT_RELR))
        );
        assert_eq!(
            Image::parse(b"\x7fELF").unwrap_err(),
            ElfError::Truncated {
                what: "ELF header",
                need: 64,
                have: 4
            }
        );
        assert_eq!(Image::parse(b"MZ..").unwrap_err(), ElfError::NotElf);
    }

    #[test]
    fn never_panics() {
        use proptest::prelude::*;
        let file = pie();
        proptest!(|(flips in proptest::collection::vec((0usize..0x2100, any::<u8>()), 1..10))| {
            let mut f = file.clone();
            for (i, v) in flips { f[i] = v; }
            if let Ok(img) = Image::parse(&f) {
                if img.span <= 1 << 20 {
                    let mut dest = vec![0u8; img.span as usize];
                    let _ = img.load(&mut dest, 0x10_0000);
                }
            }
        });
    }

    #[test]
    fn the_file_check_refuses_exactly_what_loading_refuses() {
        let img_file = pie();
        assert_eq!(Image::parse(&img_file).unwrap().check_relocations(), Ok(()));
        let mut bad_type = pie();
        bad_type[0x2088] = 99;
        assert_eq!(
            Image::parse(&bad_type).unwrap().check_relocations(),
            Err(ElfError::UnsupportedRelocation(99))
        );
        let mut outside = pie();
        outside[0x2080..0x2088].copy_from_slice(&0x9000u64.to_le_bytes());
        assert_eq!(
            Image::parse(&outside).unwrap().check_relocations(),
            Err(ElfError::BadRelocation(0x9000))
        );
        // Random edits of the headers, the dynamic table and the
        // relocation: the check from the file and the load agree.
        use proptest::prelude::*;
        let file = pie();
        proptest!(|(flips in proptest::collection::vec((0usize..0x2100, any::<u8>()), 1..6),
                    in_tables in proptest::collection::vec((0x2000usize..0x20a0, any::<u8>()), 0..6))| {
            let mut f = file.clone();
            for (i, v) in flips.into_iter().chain(in_tables) { f[i] = v; }
            if let Ok(img) = Image::parse(&f) {
                if img.span <= 1 << 20 {
                    let mut dest = vec![0u8; img.span as usize];
                    let loaded = img.load(&mut dest, 0x10_0000).map(|_| ());
                    let checked = img.check_relocations();
                    prop_assert_eq!(checked, loaded);
                }
            }
        });
    }

    #[test]
    fn a_relocation_table_the_file_does_not_hold_or_one_that_rewrites_itself_is_refused() {
        // The table claimed in .bss (zeros, never in the file): a size the
        // file cannot back is refused, not walked.
        let mut in_bss = pie();
        in_bss[0x2008..0x2010].copy_from_slice(&0x2200u64.to_le_bytes()); // DT_RELA
        in_bss[0x2018..0x2020].copy_from_slice(&48u64.to_le_bytes()); // DT_RELASZ
        let img = Image::parse(&in_bss).unwrap();
        assert_eq!(
            img.check_relocations(),
            Err(ElfError::BadRelocation(0x2200))
        );
        let mut dest = vec![0u8; img.span as usize];
        assert_eq!(img.load(&mut dest, 0), Err(ElfError::BadRelocation(0x2200)));
        // A relocation of its own table's next entry, or of the dynamic
        // table: both refused, by the check and by the load alike.
        for target in [0x2090u64, 0x2008] {
            let mut f = pie();
            f[0x2080..0x2088].copy_from_slice(&target.to_le_bytes());
            let img = Image::parse(&f).unwrap();
            assert_eq!(
                img.check_relocations(),
                Err(ElfError::BadRelocation(target))
            );
            let mut dest = vec![0u8; img.span as usize];
            assert_eq!(img.load(&mut dest, 0), Err(ElfError::BadRelocation(target)));
        }
    }
}
