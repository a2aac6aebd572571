//! EFI GUIDs: the in-memory layout (mixed-endian, as EFI defines it) and the
//! GUID values this project uses.

use crate::pod::Pod;

/// An EFI GUID in its in-memory layout.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Guid {
    pub data1: u32,
    pub data2: u16,
    pub data3: u16,
    pub data4: [u8; 8],
}

// SAFETY: repr(C), 16 bytes, no padding, every bit pattern is a valid value.
unsafe impl Pod for Guid {}
const _: () = assert!(core::mem::size_of::<Guid>() == 16);

impl Guid {
    /// Builds a GUID from its textual parts `d1-d2-d3-d4[0..2]-d4[2..8]`.
    pub const fn new(data1: u32, data2: u16, data3: u16, data4: [u8; 8]) -> Self {
        Guid {
            data1,
            data2,
            data3,
            data4,
        }
    }
}

impl core::fmt::Debug for Guid {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Display::fmt(self, f)
    }
}

impl core::fmt::Display for Guid {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let d = &self.data4;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            self.data1, self.data2, self.data3, d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]
        )
    }
}

/// Owner GUID of the resource descriptors the VMM writes (all zero, as
/// cloud-hypervisor and TDVF do).
pub const ZERO: Guid = Guid::new(0, 0, 0, [0; 8]);

/// GUID HOB carrying the payload (kernel image) location and the command line:
/// this project's own, `724ba7ea-5845-456f-8f4a-243cde7fcd39`.
pub const PAYLOAD_INFO: Guid = Guid::new(
    0x724b_a7ea,
    0x5845,
    0x456f,
    [0x8f, 0x4a, 0x24, 0x3c, 0xde, 0x7f, 0xcd, 0x39],
);

/// `LINUX_EFI_UNACCEPTED_MEM_TABLE_GUID` d5d1de3c-105c-44f9-9ea9-bcef98120031.
pub const LINUX_EFI_UNACCEPTED_MEM_TABLE: Guid = Guid::new(
    0xd5d1_de3c,
    0x105c,
    0x44f9,
    [0x9e, 0xa9, 0xbc, 0xef, 0x98, 0x12, 0x00, 0x31],
);

/// `EFI_ACPI_20_TABLE_GUID` 8868e871-e4f1-11d3-bc22-0080c73c8881 (the RSDP).
pub const ACPI_20_TABLE: Guid = Guid::new(
    0x8868_e871,
    0xe4f1,
    0x11d3,
    [0xbc, 0x22, 0x00, 0x80, 0xc7, 0x3c, 0x88, 0x81],
);

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // small test values
mod tests {
    extern crate std;
    use super::*;
    use std::format;

    #[test]
    fn displays_in_registry_form() {
        assert_eq!(
            format!("{}", LINUX_EFI_UNACCEPTED_MEM_TABLE),
            "d5d1de3c-105c-44f9-9ea9-bcef98120031"
        );
        assert_eq!(
            format!("{}", PAYLOAD_INFO),
            "724ba7ea-5845-456f-8f4a-243cde7fcd39"
        );
    }

    #[test]
    fn in_memory_layout_is_mixed_endian() {
        let bytes = LINUX_EFI_UNACCEPTED_MEM_TABLE.as_bytes();
        assert_eq!(&bytes[..4], &[0x3c, 0xde, 0xd1, 0xd5]);
        assert_eq!(
            &bytes[8..],
            &[0x9e, 0xa9, 0xbc, 0xef, 0x98, 0x12, 0x00, 0x31]
        );
    }
}
