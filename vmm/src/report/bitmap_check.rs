//! The bitmap cross-check: finds the guest's unaccepted-memory table through
//! the EFI system table it registered, and compares every unit with the
//! page-state table. A set bit must cover only pending pages; a clear bit
//! only accepted ones, or pages the guest holds shared (RAM pages only: the
//! hole is neither).
//!
//! Every guest structure is hostile input: reads go through
//! `read_accepted`, sizes are bounded, and failures are reported, not fatal.

use crate::memory::memslots::SlotBackend;
use crate::memory::page_state::PAGES_PER_CHUNK;
use crate::memory::private::PrivateMemory;
use crate::report::schema::UnacceptedTable;
use abi::boot::{SystemTable, SYSTEM_TABLE_SIGNATURE};
use abi::efi::ConfigurationTable;
use abi::guid::LINUX_EFI_UNACCEPTED_MEM_TABLE;
use abi::pod::Pod;
use abi::unaccepted::{Header, UNIT_SIZE};
use abi::PAGE_4K;
use thiserror::Error;

/// Most configuration-table entries read.
const MAX_TABLES: u64 = 256;
/// `CheckError::to_string` of "no table installed" (not an error for a
/// guest that never installed one, e.g. the firmware alone).
pub const NO_TABLE: &str = "no unaccepted-memory table is installed";

/// Why the guest's table could not be checked.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CheckError {
    #[error("system table at {0:#x} is not readable accepted memory")]
    Unreadable(u64),
    #[error("system table at {gpa:#x} has signature {signature:#x}")]
    BadSignature { gpa: u64, signature: u64 },
    #[error("system table lists {0} configuration tables, more than {MAX_TABLES}")]
    TooManyTables(u64),
    #[error("{}", NO_TABLE)]
    NoTable,
    #[error("unaccepted table at {gpa:#x}: {why}")]
    BadTable { gpa: u64, why: String },
}

/// The result of a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checked {
    pub table: UnacceptedTable,
    pub mismatches: u64,
}

fn read<T: Pod>(mem: &PrivateMemory<impl SlotBackend>, gpa: u64) -> Result<T, CheckError> {
    let mut buf = vec![0u8; core::mem::size_of::<T>()];
    if !mem.read_accepted(gpa, &mut buf) {
        return Err(CheckError::Unreadable(gpa));
    }
    T::read_from_prefix(&buf).ok_or(CheckError::Unreadable(gpa))
}

/// The 4 KiB pages of the 2 MiB unit at `unit` that are shared.
fn shared_pages(mem: &PrivateMemory<impl SlotBackend>, unit: u64) -> u64 {
    let end = unit + UNIT_SIZE;
    mem.shared()
        .ranges()
        .filter(|(s, e)| *s < end && *e > unit)
        .map(|(s, e)| (e.min(end) - s.max(unit)) / PAGE_4K)
        .sum()
}

/// Finds the table and counts the units whose bit disagrees with the
/// page states.
pub fn check(
    mem: &PrivateMemory<impl SlotBackend>,
    system_table: u64,
) -> Result<Checked, CheckError> {
    let mut raw = [0u8; core::mem::size_of::<SystemTable>()];
    if !mem.read_accepted(system_table, &mut raw) {
        return Err(CheckError::Unreadable(system_table));
    }
    let word = |o: usize| u64::from_le_bytes(raw[o..o + 8].try_into().unwrap_or_default());
    let signature = word(0);
    if signature != SYSTEM_TABLE_SIGNATURE {
        return Err(CheckError::BadSignature {
            gpa: system_table,
            signature,
        });
    }
    let (count, array) = (word(24), word(32));
    if count > MAX_TABLES {
        return Err(CheckError::TooManyTables(count));
    }
    let table_gpa = (0..count)
        .map(|i| read::<ConfigurationTable>(mem, array.wrapping_add(i * 24)))
        .find_map(|e| match e {
            Ok(e) if e.vendor_guid == LINUX_EFI_UNACCEPTED_MEM_TABLE => Some(Ok(e.vendor_table)),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
        .ok_or(CheckError::NoTable)??;
    let header: Header = read(mem, table_gpa)?;
    let bad = |why: String| CheckError::BadTable {
        gpa: table_gpa,
        why,
    };
    header.validate().map_err(|e| bad(e.to_string()))?;
    // Only the part of the bitmap that describes RAM matters: read no more
    // than that, however large the guest says it is.
    let layout = mem.layout();
    let ram_units = layout
        .ram_top()
        .saturating_sub(header.phys_base)
        .div_ceil(UNIT_SIZE);
    let read_bytes = header.size.min(ram_units.div_ceil(8));
    let mut bitmap = Vec::new();
    if bitmap.try_reserve_exact(abi::to_usize(read_bytes)).is_err() {
        return Err(bad(format!(
            "the host cannot allocate {read_bytes} bytes to read its bitmap"
        )));
    }
    bitmap.resize(abi::to_usize(read_bytes), 0u8);
    if !mem.read_accepted(table_gpa + 24, &mut bitmap) {
        return Err(bad(format!(
            "its {}-byte bitmap is not readable accepted memory",
            header.size
        )));
    }
    let mut mismatches = 0;
    let mut bits_set = 0;
    for bit in 0..read_bytes * 8 {
        let set = bitmap[(bit / 8) as usize] & (1 << (bit % 8)) != 0;
        bits_set += u64::from(set);
        let unit = header.phys_base + bit * UNIT_SIZE;
        // Units are 2 MiB aligned, like the table's chunks, and RAM regions
        // start 2 MiB aligned: a unit is one chunk, or not RAM at all.
        let wrong = layout.ram_offset(unit, PAGE_4K).is_some_and(|off| {
            let chunk = off / (PAGES_PER_CHUNK * PAGE_4K);
            let accepted = mem.pages().chunk_accepted(chunk);
            // Pages the guest holds shared are not private memory: a clear
            // bit over them is Linux's state while they are shared (they
            // are accepted again when converted back).
            let shared = shared_pages(mem, unit);
            if set {
                accepted != 0
            } else {
                accepted + shared != mem.pages().chunk_pages(chunk)
            }
        });
        if wrong {
            if mismatches < 8 {
                log::debug!(
                    "bitmap unit at {unit:#x} says {} but the VMM has pages in another state",
                    if set { "unaccepted" } else { "accepted" }
                );
            }
            mismatches += 1;
        }
    }
    Ok(Checked {
        table: UnacceptedTable {
            gpa: table_gpa,
            version: header.version,
            unit_size: header.unit_size,
            phys_base: header.phys_base,
            size: header.size,
            bits_set,
        },
        mismatches,
    })
}
