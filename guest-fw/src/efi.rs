//! The EFI-style interface the kernel's stub sees: a system table with a
//! configuration-table array (kept in runtime-services memory so a kexec'd
//! kernel finds it too) and the boot services GetMemoryMap, AllocatePages,
//! InstallConfigurationTable and ExitBootServices.

use crate::memory::MEMORY;
use abi::boot::{self, status, BootServices, SystemTable};
use abi::efi::{memory_type, ConfigurationTable, MemoryDescriptor, MEMORY_DESCRIPTOR_VERSION};
use abi::guid::Guid;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use guest_rt::fatal::code;

/// Configuration-table entries the system table has room for.
pub const TABLE_CAPACITY: u64 = 32;

static SYSTEM_TABLE: AtomicU64 = AtomicU64::new(0);
static EXITED: AtomicBool = AtomicBool::new(false);

static BOOT_SERVICES: BootServices = BootServices {
    signature: boot::BOOT_SERVICES_SIGNATURE,
    get_memory_map,
    allocate_pages,
    install_configuration_table,
    exit_boot_services,
};

fn table() -> &'static mut SystemTable {
    let at = SYSTEM_TABLE.load(Ordering::Relaxed);
    // SAFETY: `init` placed the table in a page allocated for it and only
    // this module touches it, one call at a time (single vCPU).
    unsafe { &mut *(at as *mut SystemTable) }
}

fn entries() -> &'static mut [ConfigurationTable] {
    let t = table();
    // SAFETY: the array follows the table in the same allocation and has
    // room for `table_capacity` entries (see `init`).
    unsafe {
        core::slice::from_raw_parts_mut(
            t.configuration_table as *mut ConfigurationTable,
            abi::to_usize(t.table_capacity),
        )
    }
}

/// Allocates and fills the system table; returns its GPA.
pub fn init() -> u64 {
    let at = match MEMORY.with(|m| m.allocate(memory_type::RUNTIME_SERVICES_DATA, 1)) {
        Ok(a) => a,
        Err(e) => guest_rt::fatal!(code::PANIC, "no memory for the system table: {e:?}"),
    };
    let header = core::mem::size_of::<SystemTable>() as u64;
    let array = (at + header).next_multiple_of(8);
    const _: () = assert!(
        core::mem::size_of::<SystemTable>()
            + 8
            + abi::to_usize(TABLE_CAPACITY) * core::mem::size_of::<ConfigurationTable>()
            <= 4096
    );
    #[allow(clippy::cast_possible_truncation)] // under 4096 (asserted above)
    let header_size = header as u32;
    // SAFETY: `at` is a fresh, accepted, identity-mapped page owned by the
    // firmware; the table and its array fit in it (asserted above).
    unsafe {
        core::ptr::write_bytes(at as *mut u8, 0, 4096);
        (at as *mut SystemTable).write(SystemTable {
            signature: boot::SYSTEM_TABLE_SIGNATURE,
            revision: 1,
            header_size,
            boot_services: &BOOT_SERVICES as *const BootServices as u64,
            number_of_table_entries: 0,
            configuration_table: array,
            table_capacity: TABLE_CAPACITY,
        });
    }
    SYSTEM_TABLE.store(at, Ordering::Relaxed);
    guest_rt::tdcall::register_system_table(at);
    at
}

extern "efiapi" fn get_memory_map(
    size: *mut u64,
    map: *mut MemoryDescriptor,
    key: *mut u64,
    desc_size: *mut u64,
    desc_version: *mut u32,
) -> u64 {
    if size.is_null()
        || key.is_null()
        || desc_size.is_null()
        || desc_version.is_null()
        || EXITED.load(Ordering::Relaxed)
    {
        return status::INVALID_PARAMETER;
    }
    MEMORY.with(|m| {
        let entries = m.entries();
        let need = core::mem::size_of_val(entries) as u64;
        // SAFETY: the caller passes valid pointers (checked non-null); the
        // map buffer is written only when the caller said it is large enough.
        unsafe {
            *desc_size = core::mem::size_of::<MemoryDescriptor>() as u64;
            *desc_version = MEMORY_DESCRIPTOR_VERSION;
            *key = m.key;
            if *size < need || map.is_null() {
                *size = need;
                return status::BUFFER_TOO_SMALL;
            }
            *size = need;
            core::ptr::copy_nonoverlapping(entries.as_ptr(), map, entries.len());
        }
        status::SUCCESS
    })
}

extern "efiapi" fn allocate_pages(ty: u32, pages: u64, address: *mut u64) -> u64 {
    if address.is_null()
        || pages == 0
        || ty > memory_type::UNACCEPTED
        || ty == memory_type::CONVENTIONAL
        || EXITED.load(Ordering::Relaxed)
    {
        return status::INVALID_PARAMETER;
    }
    match MEMORY.with(|m| m.allocate(ty, pages)) {
        Ok(at) => {
            // SAFETY: checked non-null; the caller owns the output slot.
            unsafe { *address = at };
            status::SUCCESS
        }
        Err(_) => status::OUT_OF_RESOURCES,
    }
}

extern "efiapi" fn install_configuration_table(guid: *const Guid, table_gpa: u64) -> u64 {
    if guid.is_null() || EXITED.load(Ordering::Relaxed) {
        return status::INVALID_PARAMETER;
    }
    // SAFETY: checked non-null; a GUID is plain data.
    let guid = unsafe { *guid };
    let t = table();
    let n = abi::to_usize(t.number_of_table_entries);
    let list = entries();
    match list[..n].iter().position(|e| e.vendor_guid == guid) {
        Some(i) if table_gpa == 0 => {
            list.copy_within(i + 1..n, i);
            t.number_of_table_entries -= 1;
        }
        Some(i) => list[i].vendor_table = table_gpa,
        None if table_gpa == 0 => return status::NOT_FOUND,
        None if n == list.len() => return status::OUT_OF_RESOURCES,
        None => {
            list[n] = ConfigurationTable {
                vendor_guid: guid,
                vendor_table: table_gpa,
            };
            t.number_of_table_entries += 1;
        }
    }
    status::SUCCESS
}

/// InstallConfigurationTable for the firmware itself (before the kernel
/// runs); returns the EFI status.
pub fn install_table(guid: &Guid, table_gpa: u64) -> u64 {
    install_configuration_table(guid, table_gpa)
}

extern "efiapi" fn exit_boot_services(key: u64) -> u64 {
    if MEMORY.with(|m| m.key) != key {
        return status::INVALID_PARAMETER;
    }
    EXITED.store(true, Ordering::Relaxed);
    table().boot_services = 0;
    status::SUCCESS
}
