//! ELF images from the user (firmware, kernel payload): read without
//! blocking and bounded by size, validated with the one ELF reader of the
//! project (`models::elf`, which the guests load with too), checked against
//! where they must go, and loaded with linux-loader, which copies the
//! `PT_LOAD` segments; this module zeroes their `.bss` and patches their
//! TDCALLs to the doorbell.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress};

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
    #[error(transparent)]
    File(#[from] crate::host::files::FileError),
    #[error("{path}: file is {size} bytes, more than the {MAX_IMAGE_BYTES}-byte limit")]
    TooBig { path: PathBuf, size: u64 },
    #[error("{path}: {defect}")]
    Elf {
        path: PathBuf,
        defect: models::elf::ElfError,
    },
    #[error("{path}: segment {index} at {start:#x}..{end:#x} lies outside the allowed window {lo:#x}..{hi:#x}")]
    OutsideWindow {
        path: PathBuf,
        index: usize,
        start: u64,
        end: u64,
        lo: u64,
        hi: u64,
    },
    #[error("{path}: loading failed: {what}")]
    Load { path: PathBuf, what: String },
    #[error("{path}: the kernel must be a static PIE (ELF type ET_DYN without an interpreter), but {what}")]
    NotStaticPie { path: PathBuf, what: &'static str },
    #[error("{path}: the kernel's memory image is {image} bytes (its page-rounded PT_LOAD segments), more than the guest's {ram} bytes of RAM")]
    ImageTooLarge { path: PathBuf, image: u64, ram: u64 },
}

/// One `PT_LOAD` segment (identity-mapped: `vaddr` is its GPA).
pub use models::elf::Segment;

/// A validated ELF image held in memory.
#[derive(Clone, Debug)]
pub struct ElfImage {
    /// The file it was read from.
    pub path: PathBuf,
    /// The whole file.
    pub bytes: Vec<u8>,
    /// The entry point (`e_entry`).
    pub entry: u64,
    /// Its PT_LOAD segments.
    pub segments: Vec<Segment>,
    /// `e_type`: ET_EXEC (2) or ET_DYN (3).
    pub e_type: u16,
    /// A `PT_INTERP` segment is present (a dynamically linked program).
    pub has_interp: bool,
}

impl ElfImage {
    /// Reads and validates the ELF file at `path` (a regular file, opened
    /// without blocking; see `host::files::open_input`); `role` names it in
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
        bytes.try_reserve_exact(abi::to_usize(size)).map_err(|_| {
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

    /// Validates an ELF image with `models::elf::Image::parse` (header
    /// identity, program header table bounds, each `PT_LOAD`, overlap,
    /// entry in an executable segment) and keeps what loading needs.
    pub fn parse(path: &Path, bytes: Vec<u8>) -> Result<Self, ElfError> {
        let image = models::elf::Image::parse(&bytes).map_err(|defect| ElfError::Elf {
            path: path.to_owned(),
            defect,
        })?;
        let segments = image.segments().collect();
        let (entry, e_type, has_interp) = (image.entry(), image.e_type, image.has_interp);
        Ok(ElfImage {
            path: path.to_owned(),
            bytes,
            entry,
            segments,
            e_type,
            has_interp,
        })
    }

    /// Writes the doorbell over every TDCALL (`66 0F 01 CC`) in the file
    /// bytes of its executable segments, before it is loaded (KVM makes a
    /// TDCALL #UD on a guest that is not a real TD; see
    /// `abi::tdcall::TDCALL_PATCH`); returns each site's link-time address,
    /// in segment order.
    pub fn patch_tdcalls(&mut self) -> Result<Vec<u64>, ElfError> {
        let mut sites = Vec::new();
        models::elf::patch_tdcalls(&mut self.bytes, |s| sites.push(s.addr)).map_err(|defect| {
            ElfError::Elf {
                path: self.path.clone(),
                defect,
            }
        })?;
        Ok(sites)
    }

    /// Checks what the firmware needs of a kernel payload: a static PIE
    /// (it is relocated to wherever it is allocated) whose relocations the
    /// firmware can apply and whose memory image fits in `ram_bytes`.
    pub fn check_kernel(&self, ram_bytes: u64) -> Result<(), ElfError> {
        let what = if self.e_type != models::elf::ET_DYN {
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
        let elf = |defect| ElfError::Elf {
            path: self.path.clone(),
            defect,
        };
        let parsed = models::elf::Image::parse(&self.bytes).map_err(elf)?;
        // The firmware allocates the whole span (first segment to last)
        // and loads the kernel there.
        let image = self.memory_image_bytes().max(parsed.span);
        if image > ram_bytes {
            return Err(ElfError::ImageTooLarge {
                path: self.path.clone(),
                image,
                ram: ram_bytes,
            });
        }
        // Then relocates it: a relocation it would refuse (a type other
        // than RELATIVE, a target outside the image or in the relocation
        // tables, a table the file does not hold, a dynamic tag it does
        // not handle) is refused here, before any guest runs, with the
        // same words.
        parsed.check_relocations().map_err(elf)
    }

    /// Sum of the page-rounded spans of the loadable segments: the memory
    /// a loader must allocate for the image (saturating).
    pub fn memory_image_bytes(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| {
                let lo = s.vaddr & !(abi::PAGE_4K - 1);
                let hi = s.end().saturating_add(abi::PAGE_4K - 1) & !(abi::PAGE_4K - 1);
                hi.saturating_sub(lo)
            })
            .fold(0u64, u64::saturating_add)
    }

    /// Lowest loaded address.
    pub fn start(&self) -> u64 {
        self.segments.iter().map(|s| s.vaddr).min().unwrap_or(0)
    }

    /// One past the highest loaded address.
    pub fn end(&self) -> u64 {
        self.segments.iter().map(|s| s.end()).max().unwrap_or(0)
    }

    /// Checks every segment lies inside `[lo, hi)`.
    pub fn check_window(&self, lo: u64, hi: u64) -> Result<(), ElfError> {
        for (index, s) in self.segments.iter().enumerate() {
            if s.vaddr < lo || s.end() > hi {
                return Err(ElfError::OutsideWindow {
                    path: self.path.clone(),
                    index,
                    start: s.vaddr,
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
        // Zeroed from one static page, never from a buffer the size of
        // a .bss the ELF file chose.
        static ZEROS: [u8; 4096] = [0; 4096];
        for s in &self.segments {
            let (mut at, end) = (s.vaddr + s.filesz, s.vaddr + s.memsz);
            while at < end {
                let n = abi::to_usize((end - at).min(ZEROS.len() as u64));
                memory
                    .write_slice(&ZEROS[..n], GuestAddress(at))
                    .map_err(|e| ElfError::Load {
                        path: self.path.clone(),
                        what: format!("zeroing .bss at {at:#x}: {e}"),
                    })?;
                at += n as u64;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const EHDR_SIZE: usize = 64;
    const PHDR_SIZE: usize = 56;
    const EM_X86_64: u16 = 62;
    const PT_LOAD: u32 = 1;
    use models::elf::ET_EXEC;

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
        b[52..54].copy_from_slice(&u16::try_from(EHDR_SIZE).unwrap().to_le_bytes());
        b[54..56].copy_from_slice(&u16::try_from(PHDR_SIZE).unwrap().to_le_bytes());
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
            Err(ElfError::Elf {
                defect: models::elf::ElfError::NotElf,
                ..
            })
        ));
        let good = tiny_elf(0x10_0000, &[0xf4; 16], 0x2000);
        assert!(matches!(
            parse(good[..40].to_vec()),
            Err(ElfError::Elf {
                defect: models::elf::ElfError::Truncated { .. },
                ..
            })
        ));
        assert!(matches!(
            parse(good[..100].to_vec()),
            Err(ElfError::Elf {
                defect: models::elf::ElfError::Truncated { .. },
                ..
            })
        ));
        let mut arm = good.clone();
        arm[18] = 183;
        let e = parse(arm).unwrap_err();
        assert!(e.to_string().contains("e_machine 183"), "{e}");
        let mut class32 = good.clone();
        class32[4] = 1;
        assert!(parse(class32)
            .unwrap_err()
            .to_string()
            .contains("EI_CLASS 1 is not ELFCLASS64"));
        let mut big_filesz = good.clone();
        big_filesz[EHDR_SIZE + 32..EHDR_SIZE + 40].copy_from_slice(&0x3000u64.to_le_bytes());
        assert!(parse(big_filesz)
            .unwrap_err()
            .to_string()
            .contains("segment 0 is malformed: p_filesz 0x3000 > p_memsz 0x2000"));
        let mut bad_entry = good;
        bad_entry[24..32].copy_from_slice(&0x50_0000u64.to_le_bytes());
        assert!(parse(bad_entry)
            .unwrap_err()
            .to_string()
            .ends_with("entry point 0x500000 is not inside an executable segment"));
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
        assert!(e.to_string().ends_with("segments 0 and 1 overlap"), "{e}");

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
