//! The relocation walk of an image: its dynamic table, its RELA table and
//! each relocation, applied to a loaded copy (`Loaded`, what `Image::load`
//! does) or only checked against the file (`FileView`, what a host does
//! before any guest runs). Both go through the same walk, so they accept
//! and refuse the same images.

use super::{
    r_type, u64_at, ElfError, Image, DT_NULL, DT_REL, DT_RELA, DT_RELAENT, DT_RELASZ, DT_RELR,
    DT_TEXTREL, R_X86_64_NONE, R_X86_64_RELATIVE,
};

/// The loaded image as the relocation walk sees it.
pub(super) trait ImageMemory {
    /// Its size (the image's memory span).
    fn len(&self) -> u64;
    /// The word at `at` (the walk has checked `at + 8 <= len`).
    fn read(&self, at: u64) -> u64;
    /// Stores the relocated word at `at` (checked as for `read`).
    fn write(&mut self, at: u64, value: u64);
}

/// A destination the image was copied into.
pub(super) struct Loaded<'d>(pub &'d mut [u8]);

impl ImageMemory for Loaded<'_> {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
    fn read(&self, at: u64) -> u64 {
        u64_at(self.0, crate::to_usize(at)).unwrap_or(0)
    }
    fn write(&mut self, at: u64, value: u64) {
        let at = crate::to_usize(at);
        if let Some(word) = self.0.get_mut(at..at + 8) {
            word.copy_from_slice(&value.to_le_bytes());
        }
    }
}

/// The image as its file describes it, never written (for checks).
pub(super) struct FileView<'i, 'a>(pub &'i Image<'a>);

impl ImageMemory for FileView<'_, '_> {
    fn len(&self) -> u64 {
        self.0.span
    }
    fn read(&self, at: u64) -> u64 {
        self.0.file_u64(at)
    }
    fn write(&mut self, _: u64, _: u64) {}
}

/// True when `[a, a + n)` and `[b, b + m)` (offsets into the image)
/// share a byte.
fn overlaps(a: u64, n: u64, b: u64, m: u64) -> bool {
    a < b.saturating_add(m) && b < a.saturating_add(n)
}

impl Image<'_> {
    /// The relocation walk of `load` (writing through `mem`) and of
    /// `check_relocations` (reading the file, writing nothing). The RELA
    /// table must lie in the bytes one segment takes from the file (so the
    /// walk is bounded by the file, not by a size the file claims), and no
    /// relocation may write into the dynamic or the RELA table (so what a
    /// relocation reads never depends on an earlier one: the file alone
    /// predicts the load).
    pub(super) fn walk_relocations(
        &self,
        mem: &mut impl ImageMemory,
        base: u64,
    ) -> Result<(), ElfError> {
        let Some(dynamic) = self.dynamic() else {
            return Ok(());
        };
        let len = mem.len();
        let (mut rela, mut relasz, mut relaent) = (0u64, 0u64, 24u64);
        let dyn_at = dynamic.vaddr.wrapping_sub(self.min_vaddr);
        let mut i = 0;
        loop {
            let o = dyn_at
                .checked_add(i * 16)
                .filter(|o| o.checked_add(16).is_some_and(|e| e <= len))
                .ok_or(ElfError::BadRelocation(dynamic.vaddr))?;
            let (tag, val) = (mem.read(o), mem.read(o + 8));
            match tag {
                DT_NULL => break,
                DT_RELA => rela = val,
                DT_RELASZ => relasz = val,
                DT_RELAENT => relaent = val,
                DT_REL | DT_RELR | DT_TEXTREL => return Err(ElfError::UnsupportedDynamic(tag)),
                _ => {}
            }
            i += 1;
        }
        let dyn_len = (i + 1) * 16;
        if relasz == 0 {
            return Ok(());
        }
        if relaent != 24 {
            return Err(ElfError::UnsupportedDynamic(DT_RELAENT));
        }
        let table = rela.wrapping_sub(self.min_vaddr);
        if table.checked_add(relasz).is_none_or(|e| e > len) || !self.in_file(rela, relasz) {
            return Err(ElfError::BadRelocation(rela));
        }
        for r in 0..relasz / 24 {
            let o = table + r * 24;
            let (offset, info, addend) = (mem.read(o), mem.read(o + 8), mem.read(o + 16));
            match r_type(info) {
                R_X86_64_NONE => {}
                R_X86_64_RELATIVE => {
                    let at = offset.wrapping_sub(self.min_vaddr);
                    if at.checked_add(8).is_none_or(|e| e > len)
                        || overlaps(at, 8, table, relasz)
                        || overlaps(at, 8, dyn_at, dyn_len)
                    {
                        return Err(ElfError::BadRelocation(offset));
                    }
                    let value = addend.wrapping_sub(self.min_vaddr).wrapping_add(base);
                    mem.write(at, value);
                }
                other => return Err(ElfError::UnsupportedRelocation(other)),
            }
        }
        Ok(())
    }

    /// True when `[vaddr, vaddr + len)` lies in the part of one segment
    /// that the file provides.
    fn in_file(&self, vaddr: u64, len: u64) -> bool {
        self.segments().any(|s| {
            vaddr >= s.vaddr
                && vaddr
                    .checked_add(len)
                    .is_some_and(|e| e <= s.vaddr + s.filesz)
        })
    }

    /// The little-endian word at `at` bytes into the loaded image, read
    /// from the file: bytes no segment's file part covers read as zero,
    /// as `load` leaves them.
    fn file_u64(&self, at: u64) -> u64 {
        let addr = self.min_vaddr.wrapping_add(at);
        // The usual case: the whole word in one segment's file bytes.
        if let Some(s) = self.segments().find(|s| {
            addr >= s.vaddr && addr.checked_add(8).is_some_and(|e| e <= s.vaddr + s.filesz)
        }) {
            let o = crate::to_usize(s.offset + (addr - s.vaddr));
            return u64_at(self.bytes, o).unwrap_or(0);
        }
        let mut word = [0u8; 8];
        for (k, b) in word.iter_mut().enumerate() {
            let addr = addr.wrapping_add(k as u64);
            *b = self
                .segments()
                .find(|s| addr >= s.vaddr && addr - s.vaddr < s.filesz)
                .and_then(|s| self.bytes.get(crate::to_usize(s.offset + (addr - s.vaddr))))
                .copied()
                .unwrap_or(0);
        }
        u64::from_le_bytes(word)
    }
}
