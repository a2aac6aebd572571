//! EFI structures the firmware hands to the kernel: memory types, the memory
//! descriptor, and configuration-table entries (UEFI 2.x layouts).

use crate::guid::Guid;
use crate::pod::Pod;

/// EFI memory types.
pub mod memory_type {
    pub const RESERVED: u32 = 0;
    pub const LOADER_CODE: u32 = 1;
    pub const LOADER_DATA: u32 = 2;
    pub const BOOT_SERVICES_CODE: u32 = 3;
    pub const BOOT_SERVICES_DATA: u32 = 4;
    pub const RUNTIME_SERVICES_CODE: u32 = 5;
    pub const RUNTIME_SERVICES_DATA: u32 = 6;
    pub const CONVENTIONAL: u32 = 7;
    pub const UNUSABLE: u32 = 8;
    pub const ACPI_RECLAIM: u32 = 9;
    pub const ACPI_NVS: u32 = 10;
    pub const MMIO: u32 = 11;
    pub const MMIO_PORT_SPACE: u32 = 12;
    pub const PAL_CODE: u32 = 13;
    pub const PERSISTENT: u32 = 14;
    /// `EfiUnacceptedMemoryType`.
    pub const UNACCEPTED: u32 = 15;
}

/// `EFI_MEMORY_WB`: the attribute every RAM descriptor this project writes
/// carries.
pub const ATTR_WB: u64 = 0x8;

/// EFI_MEMORY_DESCRIPTOR (version 1).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryDescriptor {
    pub memory_type: u32,
    pub pad: u32,
    pub physical_start: u64,
    pub virtual_start: u64,
    pub number_of_pages: u64,
    pub attribute: u64,
}

/// EFI_CONFIGURATION_TABLE entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConfigurationTable {
    pub vendor_guid: Guid,
    pub vendor_table: u64,
}

// SAFETY: repr(C), naturally aligned fields, no padding (sizes asserted
// below; `pad` is an explicit field); every bit pattern is valid.
unsafe impl Pod for MemoryDescriptor {}
// SAFETY: as above.
unsafe impl Pod for ConfigurationTable {}

const _: () = assert!(core::mem::size_of::<MemoryDescriptor>() == 40);
const _: () = assert!(core::mem::size_of::<ConfigurationTable>() == 24);

/// Memory descriptor version this project writes.
pub const MEMORY_DESCRIPTOR_VERSION: u32 = 1;
/// EFI page size.
pub const EFI_PAGE_SIZE: u64 = 4096;

impl MemoryDescriptor {
    /// An all-zero descriptor, for initialising static storage.
    pub const ZERO: MemoryDescriptor = MemoryDescriptor {
        memory_type: 0,
        pad: 0,
        physical_start: 0,
        virtual_start: 0,
        number_of_pages: 0,
        attribute: 0,
    };

    /// One past the last byte described.
    pub fn end(&self) -> u64 {
        self.physical_start
            .saturating_add(self.number_of_pages.saturating_mul(EFI_PAGE_SIZE))
    }
}
