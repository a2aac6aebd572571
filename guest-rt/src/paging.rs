//! The identity map beyond what the host built. The host maps RAM below
//! 4 GiB (the firmware's domain) when it builds the TD, and only the PML4
//! and PDPTs above: a guest maps each further GiB the first time it needs
//! it (`map`), with one page directory of 2 MiB leaves from a page its
//! caller provides. A 64 TiB TD thus never holds 256 MiB of page
//! directories for memory it does not use (on a host with 1 GiB pages the
//! host maps everything with 1 GiB leaves and `map` has nothing to do).

use crate::spin::SpinLock;
use abi::pte::{ADDR, HUGE, PRESENT, TABLE};
use core::sync::atomic::{AtomicU64, Ordering};

const GIB: u64 = 1 << 30;
const MIB2: u64 = 1 << 21;

/// Serializes mapping, so two vCPUs never both map one GiB.
static LOCK: SpinLock<()> = SpinLock::new(());
/// Page directories this guest added.
static ADDED: AtomicU64 = AtomicU64::new(0);

/// Why a range could not be mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// No PDPT covers this address (beyond the host's map).
    NoPdpt(u64),
    /// The caller had no page for the directory of this GiB.
    NoPage(u64),
}

/// Page directories this guest has added so far.
pub fn added_tables() -> u64 {
    ADDED.load(Ordering::Relaxed)
}

/// The PML4's address (CR3 without flags).
pub fn root() -> u64 {
    let v: u64;
    // SAFETY: reading CR3 has no side effect (trapped and emulated in the
    // pvm-native profile).
    unsafe { core::arch::asm!("mov {}, cr3", out(reg) v, options(nomem, nostack)) };
    v & ADDR
}

fn read(at: u64) -> u64 {
    // SAFETY: `at` is an entry of the live page tables, which are in
    // identity-mapped memory (the host's initial memory or pages `map`
    // was given, themselves mapped).
    unsafe { (at as *const u64).read_volatile() }
}

fn write(at: u64, value: u64) {
    // SAFETY: as `read`; only `map` writes, under `LOCK`, and only
    // entries that were not present (no TLB entry can exist for them).
    unsafe { (at as *mut u64).write_volatile(value) }
}

/// The address of the PDPT entry for the GiB holding `gpa`.
pub fn pdpt_entry(gpa: u64) -> Result<u64, MapError> {
    let pml4e = read(root() + ((gpa >> 39) & 511) * 8);
    if pml4e & PRESENT == 0 {
        return Err(MapError::NoPdpt(gpa));
    }
    Ok((pml4e & ADDR) + ((gpa >> 30) & 511) * 8)
}

/// Maps every GiB `[start, end)` touches that is not mapped yet: each
/// gets a directory of 2 MiB leaves in a page from `new_page` (accepted,
/// mapped, unused; all 4096 bytes are written). Returns the directories
/// added. `new_page` runs under this module's lock (so the lock order is
/// this lock, then the caller's allocator lock: callers must not hold
/// their allocator's lock when they call `map`).
pub fn map(
    start: u64,
    end: u64,
    new_page: &mut dyn FnMut() -> Option<u64>,
) -> Result<u64, MapError> {
    if end <= start {
        return Ok(0);
    }
    let mut added = 0;
    let mut gib = start / GIB;
    while gib <= (end - 1) / GIB {
        let at = pdpt_entry(gib * GIB)?;
        if read(at) & PRESENT == 0 {
            let _guard = LOCK.lock();
            // Another vCPU may have mapped it meanwhile.
            if read(at) & PRESENT == 0 {
                let page = new_page().ok_or(MapError::NoPage(gib * GIB))?;
                for i in 0..512u64 {
                    write(page + i * 8, (gib * GIB + i * MIB2) | TABLE | HUGE);
                }
                write(at, page | TABLE);
                ADDED.fetch_add(1, Ordering::Relaxed);
                added += 1;
            }
        }
        gib += 1;
    }
    Ok(added)
}

/// True when the GiB holding `gpa` is mapped (any leaf size).
pub fn is_mapped(gpa: u64) -> bool {
    pdpt_entry(gpa).is_ok_and(|at| read(at) & PRESENT != 0)
}
