//! The kernel's memory manager: the buddy allocator of `guest-mm` over all
//! usable RAM in the memory map. Blocks holding unaccepted memory are parked
//! (`accept_memory=lazy`, Linux's default) or accepted before use
//! (`accept_memory=eager`). Partial blocks are accepted at once, as Linux's
//! `__free_pages_core` does for chunks below MAX_PAGE_ORDER
//! (`guest_mm::free_run`). The allocator sits behind one lock (Linux's
//! zone lock); a parked block is taken off under it, accepted with it
//! dropped and freed under it again, as Linux's `__accept_page` does, so
//! CPUs accept different blocks in parallel.

use crate::stub::MAP;
use crate::unaccepted::{accept_memory, contains_unaccepted, unaccepted_prefix};
use abi::efi::memory_type;
use guest_mm::buddy::{Buddy, Phys, META_BYTES};
use guest_mm::free_run::{self, Acceptance};
use guest_rt::fatal;
use guest_rt::fatal::code;
use guest_rt::spin::SpinLock;

/// Identity-mapped physical memory.
pub struct Identity;

impl Phys for Identity {
    fn read(&self, addr: u64) -> u64 {
        // SAFETY: the allocator only reads accepted memory it manages
        // (free blocks and its own maps), identity-mapped and 8-aligned.
        unsafe { (addr as *const u64).read_volatile() }
    }
    fn write(&mut self, addr: u64, value: u64) {
        // SAFETY: as for `read`: accepted memory owned by the allocator.
        unsafe { (addr as *mut u64).write_volatile(value) }
    }
}

/// Maps for split blocks before the allocator has pages of its own.
#[repr(C, align(4096))]
struct Bootstrap([u8; 16 * abi::to_usize(META_BYTES)]);
static mut BOOTSTRAP: Bootstrap = Bootstrap([0; 16 * abi::to_usize(META_BYTES)]);

pub static ALLOCATOR: SpinLock<Option<Buddy<'static>>> = SpinLock::new(None);

fn usable(ty: u32) -> bool {
    matches!(
        ty,
        memory_type::CONVENTIONAL
            | memory_type::BOOT_SERVICES_CODE
            | memory_type::BOOT_SERVICES_DATA
            | memory_type::UNACCEPTED
    )
}

/// Builds the allocator over the memory map; with `ve_accept` all usable
/// memory goes in as it is, accepted or not (a #VE accepts each page at
/// its first touch).
pub fn init(dir: u64, dir_blocks: u64, lazy: bool, ve_accept: bool) {
    // SAFETY: the directory is a LOADER_DATA allocation of `dir_blocks`
    // words made for this purpose, used only by the allocator.
    let dir =
        unsafe { core::slice::from_raw_parts_mut(dir as *mut u64, abi::to_usize(dir_blocks)) };
    let boot = core::ptr::addr_of_mut!(BOOTSTRAP) as u64;
    let mut buddy = Buddy::new(dir, &mut Identity, boot, 16 * META_BYTES);
    MAP.with(|m| {
        let descs = &m.descs[..m.len];
        let mut i = 0;
        while i < descs.len() {
            if !usable(descs[i].memory_type) {
                i += 1;
                continue;
            }
            // A run of adjacent usable descriptors.
            let start = descs[i].physical_start;
            let mut end = descs[i].end();
            while i + 1 < descs.len()
                && usable(descs[i + 1].memory_type)
                && descs[i + 1].physical_start == end
            {
                i += 1;
                end = descs[i].end();
            }
            i += 1;
            if ve_accept {
                add_run_as_is(&mut buddy, start, end);
            } else {
                add_run(&mut buddy, start, end, lazy);
            }
        }
    });
    ALLOCATOR.with(|a| *a = Some(buddy));
}

/// The kernel's unaccepted-memory table, as the allocator sees it.
struct Table;

impl Acceptance for Table {
    fn contains(&mut self, start: u64, size: u64) -> bool {
        contains_unaccepted(start, size)
    }
    fn accept(&mut self, start: u64, size: u64) {
        accept_memory(start, size)
    }
    fn unaccepted_prefix(&mut self, start: u64, end: u64) -> u64 {
        unaccepted_prefix(start, end)
    }
}

/// The allocator's view under `ve_accept=on`: nothing is unaccepted, so
/// nothing is parked or accepted up front.
struct AsIs;

impl Acceptance for AsIs {
    fn contains(&mut self, _start: u64, _size: u64) -> bool {
        false
    }
    fn accept(&mut self, _start: u64, _size: u64) {}
    fn unaccepted_prefix(&mut self, start: u64, _end: u64) -> u64 {
        start
    }
}

fn add_run_as_is(buddy: &mut Buddy<'static>, start: u64, end: u64) {
    if let Err(e) = free_run::add_run(buddy, &mut Identity, &mut AsIs, start, end, false) {
        fatal!(
            code::PANIC,
            "allocator out of metadata adding {:#x}..{:#x}",
            e.start,
            e.end
        );
    }
}

fn add_run(buddy: &mut Buddy<'static>, start: u64, end: u64, lazy: bool) {
    if let Err(e) = free_run::add_run(buddy, &mut Identity, &mut Table, start, end, lazy) {
        fatal!(
            code::PANIC,
            "allocator out of metadata adding {:#x}..{:#x}",
            e.start,
            e.end
        );
    }
}

/// Allocates 4 KiB << `order`, accepting parked memory as needed
/// (`cond_accept_memory`, then a parked block when nothing is free).
pub fn alloc(order: u32) -> Option<u64> {
    enum Step {
        Got(u64),
        Accept(u64),
        Empty,
    }
    loop {
        let step = ALLOCATOR.with(|a| {
            let Some(b) = a.as_mut() else {
                return Step::Empty;
            };
            if b.wants_accept(order) {
                if let Some(block) = b.take_parked_next() {
                    return Step::Accept(block);
                }
            }
            match b.alloc_free(&mut Identity, order) {
                Some(at) => Step::Got(at),
                None => b.take_parked_next().map_or(Step::Empty, Step::Accept),
            }
        });
        match step {
            Step::Got(at) => return Some(at),
            Step::Empty => return None,
            Step::Accept(block) => {
                accept_memory(block, guest_mm::buddy::BLOCK);
                ALLOCATOR.with(|a| {
                    if let Some(b) = a.as_mut() {
                        b.return_accepted(&mut Identity, block)
                    }
                });
            }
        }
    }
}

/// The highest parked block, taken without accepting it.
pub fn take_parked_top() -> Option<u64> {
    ALLOCATOR.with(|a| a.as_mut()?.take_parked_top())
}

/// The highest parked block ending at or below `limit`, taken without
/// accepting it.
pub fn take_parked_below(limit: u64) -> Option<u64> {
    ALLOCATOR.with(|a| a.as_mut()?.take_parked_below(limit))
}

/// Parks a block again (one taken with `take_parked_top` and not used).
pub fn park(block: u64) {
    ALLOCATOR.with(|a| {
        if let Some(b) = a.as_mut() {
            b.park(block)
        }
    })
}

/// Frees what `alloc(order)` returned.
pub fn free(addr: u64, order: u32) {
    ALLOCATOR.with(|a| {
        if let Some(b) = a.as_mut() {
            b.free(&mut Identity, addr, order)
        }
    })
}

/// The allocator's counters.
pub fn stats() -> guest_mm::buddy::Stats {
    ALLOCATOR.with(|a| a.as_ref().map(|b| b.stats).unwrap_or_default())
}
