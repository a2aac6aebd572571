//! The EFI stub phase (Linux's libstub): with boot services still up, read
//! the memory map, allocate the unaccepted-memory table in ACPI-reclaim
//! memory and install it under LINUX_EFI_UNACCEPTED_MEM_TABLE_GUID (or
//! reuse one already installed), allocate what the allocator needs, exit
//! boot services, then fill the bitmap like `process_unaccepted_memory`.
//! Keeps two maps: the one the kernel was booted with (what a kexec hands
//! on) and its own copy, in which it reserves what it uses.

use crate::unaccepted::{accept_now, Table, TABLE};
use abi::boot::{status, BootServices, SystemTable};
use abi::efi::{memory_type, ConfigurationTable, MemoryDescriptor};
use abi::guid::{Guid, LINUX_EFI_UNACCEPTED_MEM_TABLE};
use abi::report::Counter;
use abi::unaccepted::{Header, UNIT_SIZE, VERSION};
use guest_rt::fatal;
use guest_rt::fatal::code;
use guest_rt::global::Global;
use models::memmap::MapError;
use models::unaccepted::{bounds, fill_from_map};

/// Most descriptors the kernel keeps.
pub const MAX_DESCRIPTORS: usize = 512;

/// A memory map of at most `MAX_DESCRIPTORS` descriptors.
pub struct MemoryMap {
    pub descs: [MemoryDescriptor; MAX_DESCRIPTORS],
    pub len: usize,
}

impl MemoryMap {
    const EMPTY: MemoryMap = MemoryMap {
        descs: [MemoryDescriptor::ZERO; MAX_DESCRIPTORS],
        len: 0,
    };
}

/// The kernel's memory map: as of ExitBootServices, or for a kexec'd
/// kernel the one it was handed with its own image and parameters and its
/// allocator directory reserved.
pub static MAP: Global<MemoryMap> = Global::new(MemoryMap::EMPTY);

/// The memory map this kernel was booted with, unedited: the firmware's
/// final one, or the one the previous kernel handed over. A kexec hands
/// the next kernel this map (Linux passes on the EFI map it was booted
/// with), never `MAP`, whose reservations would pile up from one
/// generation to the next.
pub static BOOTED: Global<MemoryMap> = Global::new(MemoryMap::EMPTY);

/// Records `MAP` as the map the kernel was booted with, and reports its size.
fn keep_booted_map() {
    let len = MAP.with(|m| {
        BOOTED.with(|b| {
            b.descs[..m.len].copy_from_slice(&m.descs[..m.len]);
            b.len = m.len;
        });
        m.len
    });
    guest_rt::tdcall::counter(Counter::MemoryMapEntries, len as u64);
    guest_rt::println!("kernel: booted with a memory map of {len} descriptors");
}

/// Reads the memory map; returns the map key.
fn get_map(bs: &BootServices) -> u64 {
    MAP.with(|m| {
        let mut size = core::mem::size_of_val(&m.descs) as u64;
        let (mut key, mut desc_size, mut version) = (0u64, 0u64, 0u32);
        let st = (bs.get_memory_map)(
            &mut size,
            m.descs.as_mut_ptr(),
            &mut key,
            &mut desc_size,
            &mut version,
        );
        if st != status::SUCCESS || desc_size != core::mem::size_of::<MemoryDescriptor>() as u64 {
            fatal!(
                code::PANIC,
                "GetMemoryMap failed: status {st:#x}, descriptor size {desc_size}"
            );
        }
        m.len = abi::to_usize(size / desc_size);
        key
    })
}

/// The configuration table the firmware installed under `guid`, if any
/// (the unaccepted-memory table, the ACPI RSDP).
pub fn config_table(st: &SystemTable, guid: Guid) -> Option<u64> {
    // SAFETY: the firmware's system table lists `number_of_table_entries`
    // entries at `configuration_table`, in runtime-services memory.
    let entries = unsafe {
        core::slice::from_raw_parts(
            st.configuration_table as *const ConfigurationTable,
            abi::to_usize(st.number_of_table_entries),
        )
    };
    entries
        .iter()
        .find(|e| e.vendor_guid == guid)
        .map(|e| e.vendor_table)
}

fn find_table(st: &SystemTable) -> Option<u64> {
    config_table(st, LINUX_EFI_UNACCEPTED_MEM_TABLE)
}

/// What the stub hands the rest of the kernel.
pub struct StubResult {
    /// The allocator directory's top array (a word per 2 GiB section) and
    /// the number of 4 MiB blocks it covers.
    pub dir: u64,
    pub dir_blocks: u64,
}

/// Runs the stub phase against the firmware's boot services.
pub fn run(st_gpa: u64, bs: &BootServices) -> StubResult {
    let _ = get_map(bs);
    // SAFETY: validated by the caller (signature) and owned by the firmware.
    let st = unsafe { &*(st_gpa as *const SystemTable) };
    let (ranges, ram_top) = MAP.with(|m| {
        let d = &m.descs[..m.len];
        let top = d.iter().map(|d| d.end()).max().unwrap_or(0);
        (
            bounds(
                d.iter()
                    .filter(|d| d.memory_type == memory_type::UNACCEPTED)
                    .map(|d| (d.physical_start, d.end())),
            ),
            top,
        )
    });
    let allocate = |ty: u32, bytes: u64, what: &str| {
        let mut at = 0u64;
        let s = (bs.allocate_pages)(ty, bytes.div_ceil(4096), &mut at);
        if s != status::SUCCESS {
            fatal!(
                code::PANIC,
                "AllocatePages for {what} ({bytes} bytes) failed: {s:#x}"
            );
        }
        at
    };
    let reused = find_table(st);
    if let Some(existing) = reused {
        // SAFETY: a table installed before us lives in ACPI-reclaim memory.
        let header = unsafe { (existing as *const Header).read() };
        if let Err(e) = header.validate() {
            fatal!(
                code::PANIC,
                "installed unaccepted table at {existing:#x} is unusable: {e}"
            );
        }
        TABLE.with(|t| {
            *t = Some(Table {
                gpa: existing,
                header,
                units_accepted: 0,
                bytes_immediate: 0,
            })
        });
    } else if let Some((phys_base, size)) = ranges {
        let gpa = allocate(memory_type::ACPI_RECLAIM, 24 + size, "the unaccepted table");
        const _: () = assert!(UNIT_SIZE <= u32::MAX as u64);
        #[allow(clippy::cast_possible_truncation)] // a constant, asserted above
        let unit_size = UNIT_SIZE as u32;
        let header = Header {
            version: VERSION,
            unit_size,
            phys_base,
            size,
        };
        // SAFETY: a fresh ACPI-reclaim allocation of 24 + size bytes.
        unsafe {
            (gpa as *mut Header).write(header);
            core::ptr::write_bytes((gpa + 24) as *mut u8, 0, abi::to_usize(size));
        }
        let s = (bs.install_configuration_table)(&LINUX_EFI_UNACCEPTED_MEM_TABLE, gpa);
        if s != status::SUCCESS {
            fatal!(code::PANIC, "InstallConfigurationTable failed: {s:#x}");
        }
        TABLE.with(|t| {
            *t = Some(Table {
                gpa,
                header,
                units_accepted: 0,
                bytes_immediate: 0,
            })
        });
    }
    let dir_blocks = ram_top.div_ceil(guest_mm::buddy::BLOCK);
    let dir = allocate(
        memory_type::LOADER_DATA,
        guest_mm::directory::sections_for(dir_blocks) * 8,
        "the allocator directory",
    );
    // ExitBootServices wants the key of the latest map.
    let mut key = get_map(bs);
    if (bs.exit_boot_services)(key) != status::SUCCESS {
        key = get_map(bs);
        let s = (bs.exit_boot_services)(key);
        if s != status::SUCCESS {
            fatal!(code::PANIC, "ExitBootServices failed: {s:#x}");
        }
    }
    keep_booted_map();
    // Now fill the bitmap from the final map. Like Linux's setup_e820 this
    // runs on a table found already installed too (Linux's
    // allocate_unaccepted_bitmap returns early for one, but
    // process_unaccepted_memory still records every type-15 descriptor).
    fill_bitmap_from_map();
    StubResult { dir, dir_blocks }
}

/// The entry path of a kexec'd kernel (no boot services): take the memory
/// map from the boot info, find the unaccepted table through the
/// configuration tables and validate it, then reuse it (the default) or,
/// with `kexec_reuse_bitmap=off`, rebuild its bitmap from the memory map as
/// a kernel unaware of the previous one's acceptances would. Allocates the
/// allocator directory from conventional memory in the map.
/// Adopts the table the previous kernel left at `gpa`: reused as it is, or
/// (`kexec_reuse_bitmap=off`) cleared and rebuilt from the memory map.
fn adopt_table(gpa: u64, reuse: bool) {
    // SAFETY: the table lives in ACPI-reclaim memory, which every kernel keeps.
    let header = unsafe { (gpa as *const Header).read() };
    if let Err(e) = header.validate() {
        fatal!(
            code::PANIC,
            "kexec: the unaccepted table at {gpa:#x} is unusable: {e}"
        );
    }
    TABLE.with(|t| {
        *t = Some(Table {
            gpa,
            header,
            units_accepted: 0,
            bytes_immediate: 0,
        })
    });
    if !reuse {
        guest_rt::println!(
            "kernel: kexec_reuse_bitmap=off: rebuilding the bitmap from the memory map"
        );
        TABLE.with(|t| {
            if let Some(t) = t.as_mut() {
                let mut bits = t.bitmap();
                let n = bits.bits();
                bits.clear_range(0, n);
            }
        });
        fill_bitmap_from_map();
    }
}

pub fn run_kexec(info: &abi::boot::BootInfo, reuse: bool) -> StubResult {
    let count = abi::to_usize(info.memory_map_size / info.descriptor_size.max(1));
    if info.descriptor_size != core::mem::size_of::<MemoryDescriptor>() as u64
        || count > MAX_DESCRIPTORS
    {
        fatal!(
            code::PANIC,
            "kexec boot info has a memory map of {count} descriptors of {} bytes",
            info.descriptor_size
        );
    }
    MAP.with(|m| {
        // SAFETY: the previous kernel wrote `count` descriptors there, in
        // this kernel's parameter segment.
        let src = unsafe {
            core::slice::from_raw_parts(info.memory_map as *const MemoryDescriptor, count)
        };
        m.descs[..count].copy_from_slice(src);
        m.len = count;
    });
    keep_booted_map();
    // Our own image and parameters, which the map does not show as in use.
    let params_end = (info.memory_map + info.memory_map_size).next_multiple_of(4096);
    let reserved = if params_end <= info.load_base {
        Err(MapError::BadRange {
            start: info.load_base,
            end: params_end,
        })
    } else {
        reserve(info.load_base, params_end, memory_type::LOADER_CODE)
    };
    if let Err(e) = reserved {
        fatal!(
            code::PANIC,
            "kexec: cannot reserve the kernel at {:#x}..{params_end:#x}: {}",
            info.load_base,
            MapErrorText(e)
        );
    }
    keep_page_tables();
    // SAFETY: the system table persists in runtime-services memory.
    let st = unsafe { &*(info.system_table as *const SystemTable) };
    // Without a table (nothing was left unaccepted when the first kernel
    // booted) Linux's accept_memory is a no-op, and so is ours.
    match find_table(st) {
        Some(gpa) => adopt_table(gpa, reuse),
        None => guest_rt::println!(
            "kernel: no unaccepted-memory table: all memory is accepted, nothing to accept"
        ),
    }
    let dir_blocks = MAP.with(|m| {
        let top = m.descs[..m.len].iter().map(|d| d.end()).max().unwrap_or(0);
        top.div_ceil(guest_mm::buddy::BLOCK)
    });
    let pages = (guest_mm::directory::sections_for(dir_blocks) * 8).div_ceil(4096);
    let found = MAP.with(|m| {
        let mut map = models::memmap::MemoryMap::new(&mut m.descs);
        map.adopt(m.len);
        map.find_top_down(memory_type::CONVENTIONAL, pages, u64::MAX)
    });
    let Some(dir) = found else {
        fatal!(
            code::PANIC,
            "kexec: no conventional memory for the allocator directory ({pages} pages)"
        );
    };
    if let Err(e) = reserve(dir, dir + pages * 4096, memory_type::LOADER_DATA) {
        fatal!(
            code::PANIC,
            "kexec: cannot reserve the allocator directory at {dir:#x}: {}",
            MapErrorText(e)
        );
    }
    StubResult { dir, dir_blocks }
}

/// Keeps the page tables this kernel runs on: the page directories and
/// tables an earlier kernel added to the identity map (GiBs it mapped when
/// it first used them, 1 GiB leaves it split) are in memory that earlier
/// kernel owned, which the map hands on as free. Each table page in
/// usable memory becomes LOADER_DATA, so the allocator never gives it out.
fn keep_page_tables() {
    use abi::pte::{ADDR, HUGE, PRESENT};
    let entry = |at: u64| {
        // SAFETY: entries of the live page tables, identity-mapped.
        unsafe { (at as *const u64).read_volatile() }
    };
    let mut kept = 0u64;
    let mut keep = |table: u64| {
        let free = MAP.with(|m| {
            m.descs[..m.len].iter().any(|d| {
                d.physical_start <= table
                    && table < d.end()
                    && d.memory_type == memory_type::CONVENTIONAL
            })
        });
        if !free {
            return;
        }
        if let Err(e) = reserve(table, table + 4096, memory_type::LOADER_DATA) {
            fatal!(
                code::PANIC,
                "kexec: cannot keep the page table at {table:#x}: {}",
                MapErrorText(e)
            );
        }
        kept += 1;
    };
    let root = guest_rt::paging::root();
    for i in 0..512 {
        let pml4e = entry(root + i * 8);
        if pml4e & PRESENT == 0 {
            continue;
        }
        let pdpt = pml4e & ADDR;
        keep(pdpt);
        for j in 0..512 {
            let pdpte = entry(pdpt + j * 8);
            if pdpte & PRESENT == 0 || pdpte & HUGE != 0 {
                continue;
            }
            let pd = pdpte & ADDR;
            keep(pd);
            for k in 0..512 {
                let pde = entry(pd + k * 8);
                if pde & PRESENT != 0 && pde & HUGE == 0 {
                    keep(pde & ADDR);
                }
            }
        }
    }
    if kept > 0 {
        guest_rt::println!("kernel: kept {kept} page-table pages an earlier kernel added");
    }
}

/// Marks `[start, end)` as `ty` in the kernel's own map (`MAP`).
fn reserve(start: u64, end: u64, ty: u32) -> Result<(), MapError> {
    MAP.with(|m| {
        let mut map = models::memmap::MemoryMap::new(&mut m.descs);
        map.adopt(m.len);
        let r = map.set(start, end, ty);
        m.len = map.entries().len();
        r
    })
}

/// A failed map edit spelled out for a message: a full map names its
/// capacity.
pub struct MapErrorText(pub MapError);

impl core::fmt::Display for MapErrorText {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            MapError::Full => write!(f, "memory map full ({MAX_DESCRIPTORS} entries)"),
            MapError::BadRange { start, end } => write!(f, "bad range {start:#x}..{end:#x}"),
            MapError::Fragmented { start, end } => write!(
                f,
                "unaccepted range {start:#x}..{end:#x} crosses more than {} conventional descriptors",
                models::memmap::MAX_PIECES_PER_RANGE
            ),
        }
    }
}

/// Linux's `process_unaccepted_memory` over every type-15 descriptor of the
/// map: unaligned heads and tails and small ranges are accepted now, the
/// aligned middles are recorded in the bitmap.
fn fill_bitmap_from_map() {
    MAP.with(|m| {
        let unaccepted = m.descs[..m.len]
            .iter()
            .filter(|d| d.memory_type == memory_type::UNACCEPTED)
            .map(|d| (d.physical_start, d.end()));
        TABLE.with(|t| {
            let Some(t) = t.as_mut() else { return };
            let header = t.header;
            let mut immediate = 0;
            let filled = fill_from_map(&header, &mut t.bitmap(), unaccepted, |s, e| {
                accept_now(s, e);
                immediate += e.saturating_sub(s);
            });
            t.bytes_immediate += immediate;
            if let Err(o) = filled {
                // Linux would write past the bitmap here (a table it did not
                // build that does not reach this range); we stop instead.
                fatal!(
                    code::PANIC,
                    "unaccepted table at {:#x} does not reach unaccepted memory {:#x}..{:#x}",
                    t.gpa,
                    o.start,
                    o.end
                );
            }
        });
    });
}
