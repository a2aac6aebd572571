//! ELF images from the user (firmware, kernel payload): validation of every
//! header field we rely on, then loading with linux-loader.
//!
//! linux-loader copies `PT_LOAD` segments to their `p_paddr` but does not
//! check that they stay where we want them, that they do not overlap, or
//! zero `.bss`; this module does.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress};

const EM_X86_64: u16 = 62;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const PT_LOAD: u32 = 1;
const PT_INTERP: u32 = 3;
const PF_X: u32 = 1;
const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;
/// Largest image file we read.
pub const MAX_IMAGE_BYTES: u64 = 1 << 30;

/// Why an ELF image was rejected.
#[derive(Debug, Error)]
pub enum ElfError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: file is {size} bytes, more than the {MAX_IMAGE_BYTES}-byte limit")]
    TooBig { path: PathBuf, size: u64 },
    #[error("{path}: not an ELF file (bad magic)")]
    NotElf { path: PathBuf },
    #[error("{path}: truncated ELF ({what} needs {need} bytes, file has {have})")]
    Truncated {
        path: PathBuf,
        what: &'static str,
        need: u64,
        have: u64,
    },
    #[error("{path}: not a 64-bit little-endian x86-64 executable ({what})")]
    WrongArch { path: PathBuf, what: String },
    #[error("{path}: no loadable segment")]
    NoSegments { path: PathBuf },
    #[error("{path}: segment {index} is malformed: {what}")]
    BadSegment {
        path: PathBuf,
        index: usize,
        what: String,
    },
    #[error("{path}: segments {a} and {b} overlap")]
    Overlap { path: PathBuf, a: usize, b: usize },
    #[error("{path}: segment {index} at {start:#x}..{end:#x} lies outside the allowed window {lo:#x}..{hi:#x}")]
    OutsideWindow {
        path: PathBuf,
        index: usize,
        start: u64,
        end: u64,
        lo: u64,
        hi: u64,
    },
    #[error("{path}: entry point {entry:#x} is not inside an executable segment")]
    BadEntry { path: PathBuf, entry: u64 },
    #[error(transparent)]
    File(#[from] crate::host::files::FileError),
    #[error("{path}: loading failed: {what}")]
    Load { path: PathBuf, what: String },
    #[error("{path}: the kernel must be a static PIE (ELF type ET_DYN without an interpreter), but {what}")]
    NotStaticPie { path: PathBuf, what: &'static str },
    #[error("{path}: the kernel's memory image is {image} bytes (its page-rounded PT_LOAD segments), more than the guest's {ram} bytes of RAM")]
    ImageTooLarge { path: PathBuf, image: u64, ram: u64 },
}

/// One `PT_LOAD` segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub offset: u64,
    pub paddr: u64,
    pub filesz: u64,
    pub memsz: u64,
    pub flags: u32,
}

impl Segment {
    /// One past the segment's last byte in memory.
    pub fn end(&self) -> u64 {
        self.paddr + self.memsz
    }
}

/// A validated ELF image held in memory.
#[derive(Clone, Debug)]
pub struct ElfImage {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    pub entry: u64,
    pub segments: Vec<Segment>,
    /// `e_type`: ET_EXEC (2) or ET_DYN (3).
    pub e_type: u16,
    /// A `PT_INTERP` segment is present (a dynamically linked program).
    pub has_interp: bool,
}

impl ElfImage {
    /// Reads and validates the ELF file at `path` (a regular file, opened
    /// without blocking; see `host_files::open_input`); `role` names it in
    /// errors ("firmware", "kernel").
    pub fn read(role: &'static str, path: &Path) -> Result<Self, ElfError> {
        let (file, size) = crate::host::files::open_input(role, path)?;
        Self::read_file(path, file, size)
    }

    /// Reads and validates an opened regular file of `size` bytes; a file
    /// over `MAX_IMAGE_BYTES` is refused from its size, unread.
    pub fn read_file(path: &Path, file: std::fs::File, size: u64) -> Result<Self, ElfError> {
        use std::io::Read;
        let read_err = |source| ElfError::Read {
            path: path.to_owned(),
            source,
        };
        if size > MAX_IMAGE_BYTES {
            return Err(ElfError::TooBig {
                path: path.to_owned(),
                size,
            });
        }
        let mut bytes = Vec::new();
        bytes.try_reserve_exact(size as usize).map_err(|_| {
            read_err(std::io::Error::new(
                std::io::ErrorKind::OutOfMemory,
                format!("cannot reserve {size} bytes to read it"),
            ))
        })?;
        file.take(MAX_IMAGE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
        if bytes.len() as u64 > MAX_IMAGE_BYTES {
            return Err(ElfError::TooBig {
                path: path.to_owned(),
                size: size.max(bytes.len() as u64),
            });
        }
        Self::parse(path, bytes)
    }

    /// Validates an ELF image: header identity, program header table bounds,
    /// each `PT_LOAD` (file range inside the file, `filesz <= memsz`, no
    /// address overflow), pairwise non-overlap, entry in an executable segment.
    pub fn parse(path: &Path, bytes: Vec<u8>) -> Result<Self, ElfError> {
        let p = || path.to_owned();
        let have = bytes.len() as u64;
        if bytes.len() < 4 || &bytes[..4] != b"\x7fELF" {
            return Err(ElfError::NotElf { path: p() });
        }
        if bytes.len() < EHDR_SIZE {
            return Err(ElfError::Truncated {
                path: p(),
                what: "ELF header",
                need: EHDR_SIZE as u64,
                have,
            });
        }
        let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
        let wrong = |what: String| ElfError::WrongArch { path: p(), what };
        if bytes[4] != 2 {
            return Err(wrong(format!("EI_CLASS {} is not ELFCLASS64", bytes[4])));
        }
        if bytes[5] != 1 {
            return Err(wrong(format!("EI_DATA {} is not little-endian", bytes[5])));
        }
        let machine = u16_at(18);
        if machine != EM_X86_64 {
            return Err(wrong(format!("e_machine {machine} is not x86-64 (62)")));
        }
        let e_type = u16_at(16);
        if e_type != ET_EXEC && e_type != ET_DYN {
            return Err(wrong(format!("e_type {e_type} is not an executable")));
        }
        let entry = u64_at(24);
        let phoff = u64_at(32);
        let phentsize = u16_at(54) as u64;
        let phnum = u16_at(56) as u64;
        if phentsize != PHDR_SIZE as u64 {
            return Err(wrong(format!("e_phentsize {phentsize} is not {PHDR_SIZE}")));
        }
        let table_end = phoff.saturating_add(phnum * phentsize);
        if table_end > have {
            return Err(ElfError::Truncated {
                path: p(),
                what: "program header table",
                need: table_end,
                have,
            });
        }
        let mut segments = Vec::new();
        let mut has_interp = false;
        for i in 0..phnum as usize {
            let o = phoff as usize + i * PHDR_SIZE;
            has_interp |= u32_at(o) == PT_INTERP;
            if u32_at(o) != PT_LOAD {
                continue;
            }
            let vaddr = u64_at(o + 16);
            let seg = Segment {
                flags: u32_at(o + 4),
                offset: u64_at(o + 8),
                paddr: u64_at(o + 24),
                filesz: u64_at(o + 32),
                memsz: u64_at(o + 40),
            };
            let bad = |what: String| ElfError::BadSegment {
                path: p(),
                index: i,
                what,
            };
            if vaddr != seg.paddr {
                return Err(bad(format!(
                    "p_vaddr {vaddr:#x} differs from p_paddr {:#x} (guests run identity-mapped)",
                    seg.paddr
                )));
            }
            if seg.filesz > seg.memsz {
                return Err(bad(format!(
                    "p_filesz {:#x} > p_memsz {:#x}",
                    seg.filesz, seg.memsz
                )));
            }
            match seg.offset.checked_add(seg.filesz) {
                Some(end) if end <= have => {}
                _ => {
                    return Err(ElfError::Truncated {
                        path: p(),
                        what: "segment data",
                        need: seg.offset.saturating_add(seg.filesz),
                        have,
                    })
                }
            }
            if seg.paddr.checked_add(seg.memsz).is_none() {
                return Err(bad(format!("p_paddr {:#x} + p_memsz wraps", seg.paddr)));
            }
            if seg.memsz == 0 {
                continue;
            }
            segments.push((i, seg));
        }
        if segments.is_empty() {
            return Err(ElfError::NoSegments { path: p() });
        }
        let mut by_addr: Vec<&(usize, Segment)> = segments.iter().collect();
        by_addr.sort_by_key(|(_, s)| s.paddr);
        for pair in by_addr.windows(2) {
            let ((ia, a), (ib, b)) = (pair[0], pair[1]);
            if b.paddr < a.end() {
                return Err(ElfError::Overlap {
                    path: p(),
                    a: *ia.min(ib),
                    b: *ia.max(ib),
                });
            }
        }
        let segments: Vec<Segment> = segments.into_iter().map(|(_, s)| s).collect();
        if !segments
            .iter()
            .any(|s| s.flags & PF_X != 0 && entry >= s.paddr && entry < s.end())
        {
            return Err(ElfError::BadEntry { path: p(), entry });
        }
        Ok(ElfImage {
            path: path.to_owned(),
            bytes,
            entry,
            segments,
            e_type,
            has_interp,
        })
    }

    /// Checks what the firmware needs of a kernel payload: a static PIE
    /// (it is relocated to wherever it is allocated) whose memory image
    /// fits in `ram_bytes`.
    pub fn check_kernel(&self, ram_bytes: u64) -> Result<(), ElfError> {
        let what = if self.e_type != ET_DYN {
            Some("it is ET_EXEC (linked at a fixed address)")
        } else if self.has_interp {
            Some("it names a program interpreter (PT_INTERP)")
        } else {
            None
        };
        if let Some(what) = what {
            return Err(ElfError::NotStaticPie {
                path: self.path.clone(),
                what,
            });
        }
        let image = self.memory_image_bytes();
        if image > ram_bytes {
            return Err(ElfError::ImageTooLarge {
                path: self.path.clone(),
                image,
                ram: ram_bytes,
            });
        }
        Ok(())
    }

    /// Sum of the page-rounded spans of the loadable segments: the memory
    /// a loader must allocate for the image (saturating).
    pub fn memory_image_bytes(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| {
                let lo = s.paddr & !(abi::PAGE_4K - 1);
                let hi = s.end().saturating_add(abi::PAGE_4K - 1) & !(abi::PAGE_4K - 1);
                hi.saturating_sub(lo)
            })
            .fold(0u64, u64::saturating_add)
    }

    /// Lowest loaded address.
    pub fn start(&self) -> u64 {
        self.segments.iter().map(|s| s.paddr).min().unwrap_or(0)
    }

    /// One past the highest loaded address.
    pub fn end(&self) -> u64 {
        self.segments.iter().map(|s| s.end()).max().unwrap_or(0)
    }

    /// Checks every segment lies inside `[lo, hi)`.
    pub fn check_window(&self, lo: u64, hi: u64) -> Result<(), ElfError> {
        for (index, s) in self.segments.iter().enumerate() {
            if s.paddr < lo || s.end() > hi {
                return Err(ElfError::OutsideWindow {
                    path: self.path.clone(),
                    index,
                    start: s.paddr,
                    end: s.end(),
                    lo,
                    hi,
                });
            }
        }
        Ok(())
    }

    /// Copies the segments to their physical addresses with linux-loader and
    /// zeroes each segment's `.bss` tail. The caller has checked the window.
    pub fn load(&self, memory: &vm_memory::GuestMemoryMmap) -> Result<(), ElfError> {
        use linux_loader::loader::{Elf, KernelLoader};
        let mut cursor = Cursor::new(self.bytes.as_slice());
        Elf::load(memory, None, &mut cursor, None).map_err(|e| ElfError::Load {
            path: self.path.clone(),
            what: e.to_string(),
        })?;
        for s in &self.segments {
            let bss = (s.memsz - s.filesz) as usize;
            if bss > 0 {
                memory
                    .write_slice(&vec![0u8; bss], GuestAddress(s.paddr + s.filesz))
                    .map_err(|e| ElfError::Load {
                        path: self.path.clone(),
                        what: format!("zeroing .bss at {:#x}: {e}", s.paddr + s.filesz),
                    })?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal valid ELF: one PT_LOAD (R+X) of `code` at `paddr`.
    pub(crate) fn tiny_elf(paddr: u64, code: &[u8], memsz: u64) -> Vec<u8> {
        let mut b = vec![0u8; EHDR_SIZE + PHDR_SIZE];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[6] = 1;
        b[16..18].copy_from_slice(&ET_EXEC.to_le_bytes());
        b[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        b[24..32].copy_from_slice(&paddr.to_le_bytes());
        b[32..40].copy_from_slice(&(EHDR_SIZE as u64).to_le_bytes());
        b[52..54].copy_from_slice(&(EHDR_SIZE as u16).to_le_bytes());
        b[54..56].copy_from_slice(&(PHDR_SIZE as u16).to_le_bytes());
        b[56..58].copy_from_slice(&1u16.to_le_bytes());
        let o = EHDR_SIZE;
        b[o..o + 4].copy_from_slice(&PT_LOAD.to_le_bytes());
        b[o + 4..o + 8].copy_from_slice(&5u32.to_le_bytes());
        b[o + 8..o + 16].copy_from_slice(&((EHDR_SIZE + PHDR_SIZE) as u64).to_le_bytes());
        b[o + 16..o + 24].copy_from_slice(&paddr.to_le_bytes());
        b[o + 24..o + 32].copy_from_slice(&paddr.to_le_bytes());
        b[o + 32..o + 40].copy_from_slice(&(code.len() as u64).to_le_bytes());
        b[o + 40..o + 48].copy_from_slice(&memsz.to_le_bytes());
        b.extend_from_slice(code);
        b
    }

    fn parse(b: Vec<u8>) -> Result<ElfImage, ElfError> {
        ElfImage::parse(Path::new("fw.elf"), b)
    }

    #[test]
    fn accepts_a_valid_image() {
        let img = parse(tiny_elf(0x10_0000, &[0xf4; 16], 0x2000)).unwrap();
        assert_eq!(img.entry, 0x10_0000);
        assert_eq!(img.end(), 0x10_2000);
        assert!(img.check_window(0x10_0000, 0x20_0000).is_ok());
        assert!(matches!(
            img.check_window(0x20_0000, 0x30_0000),
            Err(ElfError::OutsideWindow { .. })
        ));
    }

    #[test]
    fn rejects_bad_images_with_named_reasons() {
        assert!(matches!(
            parse(b"MZ\x90\x00".to_vec()),
            Err(ElfError::NotElf { .. })
        ));
        let good = tiny_elf(0x10_0000, &[0xf4; 16], 0x2000);
        assert!(matches!(
            parse(good[..40].to_vec()),
            Err(ElfError::Truncated { .. })
        ));
        assert!(matches!(
            parse(good[..100].to_vec()),
            Err(ElfError::Truncated { .. })
        ));
        let mut arm = good.clone();
        arm[18] = 183;
        let e = parse(arm).unwrap_err();
        assert!(e.to_string().contains("e_machine 183"), "{e}");
        let mut class32 = good.clone();
        class32[4] = 1;
        assert!(matches!(parse(class32), Err(ElfError::WrongArch { .. })));
        let mut big_filesz = good.clone();
        big_filesz[EHDR_SIZE + 32..EHDR_SIZE + 40].copy_from_slice(&0x3000u64.to_le_bytes());
        assert!(matches!(
            parse(big_filesz),
            Err(ElfError::BadSegment { .. })
        ));
        let mut bad_entry = good;
        bad_entry[24..32].copy_from_slice(&0x50_0000u64.to_le_bytes());
        assert!(matches!(parse(bad_entry), Err(ElfError::BadEntry { .. })));
    }

    #[test]
    fn rejects_overlapping_segments_and_virtual_addresses_that_differ() {
        // Duplicate the one program header: two segments at the same place.
        let mut two = tiny_elf(0x10_0000, &[0xf4; 16], 0x2000);
        let phdr = two[EHDR_SIZE..EHDR_SIZE + PHDR_SIZE].to_vec();
        two.extend_from_slice(&phdr);
        let second = two.len() - PHDR_SIZE;
        two[32..40].copy_from_slice(&(second as u64 - PHDR_SIZE as u64).to_le_bytes());
        two[second - PHDR_SIZE..second].copy_from_slice(&phdr);
        two[56..58].copy_from_slice(&2u16.to_le_bytes());
        let e = parse(two).unwrap_err();
        assert!(matches!(e, ElfError::Overlap { a: 0, b: 1, .. }), "{e}");

        let mut moved = tiny_elf(0x10_0000, &[0xf4; 16], 0x2000);
        moved[EHDR_SIZE + 16..EHDR_SIZE + 24]
            .copy_from_slice(&0xffff_8000_0010_0000u64.to_le_bytes());
        let e = parse(moved).unwrap_err();
        assert!(e.to_string().contains("p_vaddr"), "{e}");
    }

    #[test]
    fn refuses_non_regular_files_without_reading_forever() {
        let e = ElfImage::read("firmware", Path::new("/dev/zero")).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }

    #[test]
    fn never_panics_on_random_bytes() {
        use proptest::prelude::*;
        proptest!(|(mut bytes in proptest::collection::vec(any::<u8>(), 0..400))| {
            if bytes.len() >= 4 { bytes[..4].copy_from_slice(b"\x7fELF"); }
            let _ = parse(bytes);
        });
    }
}
