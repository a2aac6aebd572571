//! Linux's unaccepted-memory table (`struct efi_unaccepted_memory`) as the
//! kernel publishes it and the VMM reads it: its header, version, unit size
//! and size limit, and the check a reader makes before trusting a table it
//! did not build. The table's GUID is `guid::LINUX_EFI_UNACCEPTED_MEM_TABLE`. What
//! Linux does with the bitmap (its algorithms) is `models::unaccepted`.
//!
//! A set bit means the `unit_size` bytes at `phys_base + bit * unit_size`
//! are unaccepted.

use crate::pod::Pod;

/// Table version Linux accepts.
pub const VERSION: u32 = 1;
/// x86's `EFI_UNACCEPTED_UNIT_SIZE` (PMD_SIZE).
pub const UNIT_SIZE: u64 = 2 << 20;

/// The table's 24-byte header; the bitmap follows it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub version: u32,
    pub unit_size: u32,
    pub phys_base: u64,
    /// Bitmap length in bytes.
    pub size: u64,
}

// SAFETY: repr(C), u32/u32/u64/u64 without padding; any bits are valid.
unsafe impl Pod for Header {}
const _: () = assert!(core::mem::size_of::<Header>() == 24);

/// Why a table header is unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableError {
    Version(u32),
    UnitSize(u32),
    Unaligned(u64),
    TooLarge(u64),
    /// `phys_base` plus what the bitmap covers passes 2^64.
    Wraps(u64),
}

impl core::fmt::Display for TableError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            TableError::Version(v) => write!(f, "unaccepted table version {v} is not {VERSION}"),
            TableError::UnitSize(u) => write!(f, "unaccepted table unit size {u:#x} is not 2 MiB"),
            TableError::Unaligned(b) => {
                write!(f, "unaccepted table base {b:#x} is not unit aligned")
            }
            TableError::Wraps(b) => {
                write!(
                    f,
                    "unaccepted table base {b:#x} plus its coverage passes 2^64"
                )
            }
            TableError::TooLarge(s) => write!(
                f,
                "unaccepted table bitmap of {s} bytes is implausibly large"
            ),
        }
    }
}

/// Largest bitmap accepted (covers 4 PiB at 2 MiB units).
pub const MAX_BITMAP_BYTES: u64 = 256 << 20;

impl Header {
    /// Checks what a kexec'd kernel (or the VMM) must check before trusting
    /// a table it did not build.
    pub fn validate(&self) -> Result<(), TableError> {
        if self.version != VERSION {
            return Err(TableError::Version(self.version));
        }
        if self.unit_size as u64 != UNIT_SIZE {
            return Err(TableError::UnitSize(self.unit_size));
        }
        if !self.phys_base.is_multiple_of(UNIT_SIZE) {
            return Err(TableError::Unaligned(self.phys_base));
        }
        if self.size > MAX_BITMAP_BYTES {
            return Err(TableError::TooLarge(self.size));
        }
        if self.phys_base.checked_add(self.coverage()).is_none() {
            return Err(TableError::Wraps(self.phys_base));
        }
        Ok(())
    }

    /// Bytes of physical memory the bitmap can describe.
    /// (`size * unit_size * BITS_PER_BYTE` with C's wrap-around, as Linux
    /// computes its "not past the bitmap" bound.)
    pub fn coverage(&self) -> u64 {
        self.size
            .wrapping_mul(self.unit_size as u64)
            .wrapping_mul(8)
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // small test values
mod tests {
    use super::*;

    fn header(base: u64, bytes: u64) -> Header {
        Header {
            version: VERSION,
            unit_size: UNIT_SIZE as u32,
            phys_base: base,
            size: bytes,
        }
    }

    #[test]
    fn validation() {
        assert!(header(0, 8).validate().is_ok());
        assert_eq!(
            Header {
                version: 2,
                ..header(0, 8)
            }
            .validate(),
            Err(TableError::Version(2))
        );
        assert_eq!(header(4096, 8).validate(), Err(TableError::Unaligned(4096)));
        assert_eq!(
            Header {
                unit_size: 4096,
                ..header(0, 8)
            }
            .validate(),
            Err(TableError::UnitSize(4096))
        );
    }

    #[test]
    fn headers_that_wrap_or_lie_are_refused() {
        let ok = Header {
            version: 1,
            unit_size: 2 << 20,
            phys_base: 4 << 30,
            size: 64,
        };
        assert_eq!(ok.validate(), Ok(()));
        for (bad, want) in [
            (Header { version: 2, ..ok }, TableError::Version(2)),
            (
                Header {
                    unit_size: 4096,
                    ..ok
                },
                TableError::UnitSize(4096),
            ),
            (
                Header {
                    phys_base: 4096,
                    ..ok
                },
                TableError::Unaligned(4096),
            ),
            (
                Header {
                    size: MAX_BITMAP_BYTES + 1,
                    ..ok
                },
                TableError::TooLarge(MAX_BITMAP_BYTES + 1),
            ),
            (
                Header {
                    phys_base: u64::MAX - (2 << 20) + 1,
                    size: 1,
                    ..ok
                },
                TableError::Wraps(u64::MAX - (2 << 20) + 1),
            ),
        ] {
            assert_eq!(bad.validate(), Err(want));
        }
    }
}
