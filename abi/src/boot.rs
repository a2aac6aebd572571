//! The firmware-to-kernel hand-off: an EFI-style system table with a
//! configuration-table array and the few boot services a kernel's EFI stub
//! needs, and the boot-info block a kernel is entered with (RDI) — by the
//! firmware, or by a previous kernel through kexec.

use crate::efi::MemoryDescriptor;
use crate::guid::Guid;

/// EFI status codes returned by the boot services.
pub mod status {
    pub const SUCCESS: u64 = 0;
    const ERROR: u64 = 1 << 63;
    pub const INVALID_PARAMETER: u64 = ERROR | 2;
    pub const BUFFER_TOO_SMALL: u64 = ERROR | 5;
    pub const OUT_OF_RESOURCES: u64 = ERROR | 9;
    pub const NOT_FOUND: u64 = ERROR | 14;
}

/// `EFI_SYSTEM_TABLE_SIGNATURE` ("IBI SYST").
pub const SYSTEM_TABLE_SIGNATURE: u64 = 0x5453_5953_2049_4249;
/// `EFI_BOOT_SERVICES_SIGNATURE` ("BOOTSERV").
pub const BOOT_SERVICES_SIGNATURE: u64 = 0x5652_4553_544f_4f42;

/// The system table (a subset of EFI's, same spirit: the configuration
/// table array is how the kernel, and a kexec'd kernel, find the unaccepted
/// memory table).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SystemTable {
    pub signature: u64,
    pub revision: u32,
    pub header_size: u32,
    /// GPA of the `BootServices`, 0 once boot services have exited.
    pub boot_services: u64,
    pub number_of_table_entries: u64,
    /// GPA of the `efi::ConfigurationTable` array.
    pub configuration_table: u64,
    /// Entries the array has room for.
    pub table_capacity: u64,
}

/// `GetMemoryMap(map_size, map, map_key, descriptor_size, descriptor_version)`.
pub type GetMemoryMap =
    extern "efiapi" fn(*mut u64, *mut MemoryDescriptor, *mut u64, *mut u64, *mut u32) -> u64;
/// `AllocatePages(memory_type, pages, address)`: any pages, below 4 GiB;
/// the address comes back through the pointer.
pub type AllocatePages = extern "efiapi" fn(u32, u64, *mut u64) -> u64;
/// `InstallConfigurationTable(guid, table)`.
pub type InstallConfigurationTable = extern "efiapi" fn(*const Guid, u64) -> u64;
/// `ExitBootServices(map_key)`.
pub type ExitBootServices = extern "efiapi" fn(u64) -> u64;

/// The boot services the firmware provides.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct BootServices {
    pub signature: u64,
    pub get_memory_map: GetMemoryMap,
    pub allocate_pages: AllocatePages,
    pub install_configuration_table: InstallConfigurationTable,
    pub exit_boot_services: ExitBootServices,
}

/// `BootInfo::magic`.
pub const BOOT_INFO_MAGIC: u64 = 0x4f46_4e49_544f_4f42; // "BOOTINFO"
/// `BootInfo::version`.
pub const BOOT_INFO_VERSION: u32 = 1;

/// What a kernel is entered with (RDI holds its GPA).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BootInfo {
    pub magic: u64,
    pub version: u32,
    /// 0 for the kernel the firmware starts, then +1 per kexec.
    pub generation: u32,
    /// GPA of the `SystemTable`.
    pub system_table: u64,
    /// GPA, bytes and descriptor size of a memory map, for a kernel entered
    /// after boot services exited (kexec); 0 when boot services are live.
    pub memory_map: u64,
    pub memory_map_size: u64,
    pub descriptor_size: u64,
    /// GPA and length of the command line.
    pub cmdline: u64,
    pub cmdline_len: u64,
    /// GPA and size of the kernel's ELF file, kept for kexec.
    pub image: u64,
    pub image_size: u64,
    /// Where the kernel was loaded and how much memory its image spans.
    pub load_base: u64,
    pub load_size: u64,
}

// SAFETY: repr(C); u64/u32/u32 then u64s, no padding; any bits are valid.
unsafe impl crate::pod::Pod for BootInfo {}
const _: () = assert!(core::mem::size_of::<BootInfo>() == 96);
