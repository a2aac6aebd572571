//! The kernel's memory manager: the buddy allocator of `guest-mm` over all
//! usable RAM in the memory map. Blocks holding unaccepted memory are parked
//! (`accept_memory=lazy`, Linux's default) or accepted before use
//! (`accept_memory=eager`). Partial blocks are accepted at once, as Linux's
//! `__free_pages_core` does for chunks below MAX_PAGE_ORDER
//! (`guest_mm::free_run`). The allocator sits behind one lock (Linux's
//! zone lock); a parked block is taken off under it, accepted with it
//! dropped and freed under it again, as Linux's `__accept_page` does, so
//! CPUs accept different blocks in parallel. Memory above 4 GiB is
//! mapped when it first leaves the parked state (`map_range`: a page
//! directory per GiB, `guest_rt::paging`), not at boot.

use crate::stub::MAP;
use crate::unaccepted::{accept_memory, contains_unaccepted, unaccepted_prefix};
use abi::efi::memory_type;
use core::sync::atomic::{AtomicUsize, Ordering};
use guest_mm::buddy::{Buddy, Phys, META_BYTES};
use guest_mm::directory::Directory;
use guest_mm::free_run::{self, Acceptance};
use guest_rt::fatal;
use guest_rt::fatal::code;
use guest_rt::paging;
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
/// its first touch). `dir` holds the directory's top array for
/// `dir_blocks` blocks (`sections_for(dir_blocks)` words).
pub fn init(dir: u64, dir_blocks: u64, lazy: bool, ve_accept: bool) {
    let words = guest_mm::directory::sections_for(dir_blocks);
    // SAFETY: the top array is a LOADER_DATA allocation of `words` words
    // made for this purpose, used only by the allocator.
    let top = unsafe { core::slice::from_raw_parts_mut(dir as *mut u64, abi::to_usize(words)) };
    let boot = core::ptr::addr_of_mut!(BOOTSTRAP) as u64;
    let dir = Directory::new(top, abi::to_usize(dir_blocks));
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
    fn reachable(
        &mut self,
        buddy: &mut Buddy<'_>,
        _mem: &mut impl Phys,
        start: u64,
        end: u64,
    ) -> bool {
        map_at_init(buddy, start, end)
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
    fn reachable(
        &mut self,
        buddy: &mut Buddy<'_>,
        _mem: &mut impl Phys,
        start: u64,
        end: u64,
    ) -> bool {
        map_at_init(buddy, start, end)
    }
}

/// Pages for page directories when the allocator has none free (its
/// first GiB above 4 GiB may need mapping before any memory is free).
#[repr(C, align(4096))]
struct TableReserve([[u8; 4096]; TABLE_RESERVE]);
const TABLE_RESERVE: usize = 4;
static mut TABLE_RESERVE_PAGES: TableReserve = TableReserve([[0; 4096]; TABLE_RESERVE]);
static TABLE_RESERVE_USED: AtomicUsize = AtomicUsize::new(0);

fn reserve_page() -> Option<u64> {
    let i = TABLE_RESERVE_USED.fetch_add(1, Ordering::Relaxed);
    (i < TABLE_RESERVE)
        .then(|| core::ptr::addr_of_mut!(TABLE_RESERVE_PAGES) as u64 + i as u64 * 4096)
}

/// Maps `[start, end)` while the allocator is being built, with pages
/// from it (or the reserve).
fn map_at_init(buddy: &mut Buddy<'_>, start: u64, end: u64) -> bool {
    let mut page = || buddy.alloc_free(&mut Identity, 0).or_else(reserve_page);
    match paging::map(start, end, &mut page) {
        Ok(_) => true,
        Err(e) => fatal!(code::PANIC, "cannot map {start:#x}..{end:#x}: {e:?}"),
    }
}

/// Maps `[start, start + len)` (memory the kernel is about to use), with
/// page directories from the allocator's free pages. Must not be called
/// with the allocator's lock held.
pub fn map_range(start: u64, len: u64) {
    let mut page = || {
        ALLOCATOR
            .with(|a| a.as_mut()?.alloc_free(&mut Identity, 0))
            .or_else(reserve_page)
    };
    if let Err(e) = paging::map(start, start + len, &mut page) {
        fatal!(
            code::PANIC,
            "cannot map {start:#x}..{:#x}: {e:?}",
            start + len
        );
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
                if let Some(block) = b.take_parked_next(&mut Identity) {
                    return Step::Accept(block);
                }
            }
            match b.alloc_free(&mut Identity, order) {
                Some(at) => Step::Got(at),
                None => b
                    .take_parked_next(&mut Identity)
                    .map_or(Step::Empty, Step::Accept),
            }
        });
        match step {
            Step::Got(at) => return Some(at),
            Step::Empty => {
                if stats().dir_starved > 0 {
                    fatal!(
                        code::PANIC,
                        "allocator: no page for a directory section (no free memory, no spare)"
                    );
                }
                return None;
            }
            Step::Accept(block) => {
                accept_memory(block, guest_mm::buddy::BLOCK);
                map_range(block, guest_mm::buddy::BLOCK);
                ALLOCATOR.with(|a| {
                    if let Some(b) = a.as_mut() {
                        b.return_accepted(&mut Identity, block)
                    }
                });
            }
        }
    }
}

/// The highest parked block, taken without accepting it (and mapped).
pub fn take_parked_top() -> Option<u64> {
    let block = ALLOCATOR.with(|a| a.as_mut()?.take_parked_top(&mut Identity))?;
    map_range(block, guest_mm::buddy::BLOCK);
    Some(block)
}

/// The highest parked block ending at or below `limit`, taken without
/// accepting it (and mapped).
pub fn take_parked_below(limit: u64) -> Option<u64> {
    let block = ALLOCATOR.with(|a| a.as_mut()?.take_parked_below(&mut Identity, limit))?;
    map_range(block, guest_mm::buddy::BLOCK);
    Some(block)
}

/// Parks a block again (one taken with `take_parked_top` and not used;
/// its directory section has a page already, so this cannot fail).
pub fn park(block: u64) {
    let parked = ALLOCATOR.with(|a| a.as_mut().is_none_or(|b| b.park(&mut Identity, block)));
    if !parked {
        fatal!(code::PANIC, "allocator: cannot park {block:#x} again");
    }
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

/// Bytes of the allocator's directory (top array, section pages, spares).
pub fn dir_bytes() -> u64 {
    ALLOCATOR.with(|a| a.as_ref().map_or(0, |b| b.dir_bytes()))
}
