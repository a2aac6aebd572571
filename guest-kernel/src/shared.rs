//! Shared memory, as Linux makes it in a TD: the bounce pool
//! (`bounce_pool=SIZE`, default 2 MiB, in 2 MiB chunks) converted to shared
//! at boot, the console's lines going through it, the conversions back to
//! private, and the kexec step that converts every shared page back first.
//!
//! Linux is the specification (v6.12):
//! - `set_memory_decrypted` / `set_memory_encrypted` and
//!   `__set_memory_enc_pgtable` (arch/x86/mm/pat/set_memory.c): flush,
//!   `enc_status_change_prepare`, the page-table change, flush,
//!   `enc_status_change_finish`;
//! - TDX's hooks (arch/x86/coco/tdx/tdx.c): to shared, MapGPA after the
//!   mapping became shared (`tdx_enc_status_change_finish`); to private,
//!   MapGPA and accepting the pages before the mapping becomes private
//!   (`tdx_enc_status_change_prepare`, `tdx_enc_status_changed`), so there
//!   is never a private mapping of a shared page; `nr_shared` counts;
//! - kexec (`native_machine_shutdown`): `tdx_kexec_begin` stops new
//!   conversions while the other CPUs run, `tdx_kexec_finish` walks the
//!   mappings once they are stopped and converts every shared leaf back,
//!   then compares what it found with `nr_shared`.
//!
//! Where we differ: conversions are 2 MiB leaves of the identity map (a
//! 1 GiB leaf is split first and merged again when all of it is private);
//! and `kexec_finish` puts the private identity entry back after the
//! conversion instead of leaving it empty, because our next kernel runs on
//! the same identity map (Linux's builds its own).

use crate::mm;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use guest_rt::spin::SpinLock;
use guest_rt::{println, tdcall};
use models::shared_memory::{self, pte, Leaf};

const PAGE: u64 = 4096;
const CHUNK: u64 = 2 << 20;
/// Most 2 MiB chunks in the pool.
pub const MAX_CHUNKS: usize = 16;
/// The largest `bounce_pool=` (a size is rounded up to 2 MiB chunks).
pub const MAX_POOL_BYTES: u64 = MAX_CHUNKS as u64 * CHUNK;
/// Most 1 GiB leaves split at once.
const MAX_SPLITS: usize = 8;

/// Linux's `nr_shared`: 4 KiB pages converted to shared and not back.
static NR_SHARED: AtomicU64 = AtomicU64::new(0);
/// Linux's `mem_enc_lock` taken for good (`set_memory_enc_stop_conversion`).
static STOPPED: AtomicBool = AtomicBool::new(false);

/// The pool's chunks (identity addresses) and the split 1 GiB leaves:
/// (the PDPT entry's address, the leaf it replaced).
struct State {
    chunks: [u64; MAX_CHUNKS],
    len: usize,
    splits: [(u64, u64); MAX_SPLITS],
    nsplits: usize,
}

static STATE: SpinLock<State> = SpinLock::new(State {
    chunks: [0; MAX_CHUNKS],
    len: 0,
    splits: [(0, 0); MAX_SPLITS],
    nsplits: 0,
});

/// Why a conversion failed.
#[derive(Clone, Copy, Debug)]
pub enum ConvertError {
    /// Not 2 MiB aligned, or not in the identity map.
    NotALeaf(u64),
    /// kexec stopped conversions.
    Stopped,
    /// MapGPA failed (its GPA).
    MapGpa(u64),
    /// Accepting the pages back failed: GPA and status.
    Accept(u64, u64),
    /// No page for splitting a 1 GiB leaf.
    NoMemory,
}

impl core::fmt::Display for ConvertError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            ConvertError::NotALeaf(va) => {
                write!(f, "{va:#x} is not a 2 MiB leaf of the identity map")
            }
            ConvertError::Stopped => write!(f, "conversions are stopped (kexec)"),
            ConvertError::MapGpa(gpa) => write!(f, "MapGPA of {gpa:#x} failed"),
            ConvertError::Accept(gpa, st) => {
                write!(f, "accepting {gpa:#x} back answered {st:#x}")
            }
            ConvertError::NoMemory => write!(f, "no page to split a 1 GiB leaf"),
        }
    }
}

/// The shared bit: GPA bit GPAW - 1 (TDG.VP.INFO).
pub fn shared_bit() -> u64 {
    let gpaw = tdcall::vp_info().rcx & abi::tdcall::vp_info::GPAW_MASK;
    1 << (gpaw.clamp(32, 52) - 1)
}

/// Flushes the TLB (reloads CR3): `__flush_tlb_all` / `cpa_flush` here.
fn flush_tlb() {
    // SAFETY: writing CR3 back with its own value only flushes
    // non-global translations.
    unsafe {
        core::arch::asm!(
            "mov {t}, cr3",
            "mov cr3, {t}",
            t = out(reg) _,
            options(nostack)
        )
    };
}

fn read_entry(at: u64) -> u64 {
    // SAFETY: `at` is an entry of the live page tables, identity-mapped.
    unsafe { (at as *const u64).read_volatile() }
}

fn write_entry(at: u64, value: u64) {
    // SAFETY: as `read_entry`; the kernel owns its page tables, and the
    // caller flushes the TLB after changing a leaf.
    unsafe { (at as *mut u64).write_volatile(value) }
}

/// The address of the PD entry mapping the 2 MiB at `va` (a 2 MiB leaf),
/// splitting a 1 GiB leaf into 2 MiB ones first.
fn pd_entry(va: u64, st: &mut State) -> Result<u64, ConvertError> {
    if !va.is_multiple_of(CHUNK) {
        return Err(ConvertError::NotALeaf(va));
    }
    let pml4e = read_entry(guest_rt::paging::root() + ((va >> 39) & 511) * 8);
    if pml4e & pte::PRESENT == 0 {
        return Err(ConvertError::NotALeaf(va));
    }
    let pdpte_at = (pml4e & pte::ADDR) + ((va >> 30) & 511) * 8;
    let pdpte = read_entry(pdpte_at);
    if pdpte & pte::PRESENT == 0 {
        return Err(ConvertError::NotALeaf(va));
    }
    if pdpte & pte::HUGE != 0 {
        // split_large_page: 512 2 MiB leaves with the 1 GiB leaf's bits.
        if st.nsplits == MAX_SPLITS {
            return Err(ConvertError::NoMemory);
        }
        let Some(pd) = mm::alloc(0) else {
            return Err(ConvertError::NoMemory);
        };
        let flags = pdpte & !pte::ADDR;
        for j in 0..512u64 {
            write_entry(pd + j * 8, ((pdpte & pte::ADDR) + j * CHUNK) | flags);
        }
        let table = pd | (flags & 0x7) | pte::PRESENT;
        write_entry(pdpte_at, table);
        st.splits[st.nsplits] = (pdpte_at, pdpte);
        st.nsplits += 1;
        flush_tlb();
        return Ok(pd + ((va >> 21) & 511) * 8);
    }
    let pde_at = (pdpte & pte::ADDR) + ((va >> 21) & 511) * 8;
    let pde = read_entry(pde_at);
    if pde & pte::PRESENT == 0 || pde & pte::HUGE == 0 {
        return Err(ConvertError::NotALeaf(va));
    }
    Ok(pde_at)
}

/// Merges split 1 GiB leaves whose 2 MiB leaves are all private again
/// (their PD page goes back to the allocator).
fn merge_splits(st: &mut State, bit: u64) {
    let mut i = 0;
    while i < st.nsplits {
        let (at, leaf) = st.splits[i];
        let pd = read_entry(at) & pte::ADDR;
        let private = (0..512u64).all(|j| read_entry(pd + j * 8) & bit == 0);
        if private {
            write_entry(at, leaf);
            flush_tlb();
            mm::free(pd, 0);
            st.nsplits -= 1;
            st.splits[i] = st.splits[st.nsplits];
        } else {
            i += 1;
        }
    }
}

/// MapGPA for `[gpa, gpa + len)`, to shared or private
/// (`models::shared_memory::map_gpa`, Linux's `tdx_map_gpa`).
fn map_gpa(gpa: u64, len: u64, shared: Option<u64>) -> Result<(), ConvertError> {
    let ok = shared_memory::map_gpa(gpa, gpa + len, shared, |start, size| {
        let r = tdcall::vmcall(
            abi::vmcall::GHCI_STANDARD,
            abi::vmcall::ghci::MAP_GPA,
            start,
            size,
            0,
            0,
        );
        (r.r10, r.r11)
    });
    if ok {
        Ok(())
    } else {
        Err(ConvertError::MapGpa(gpa))
    }
}

/// `tdx_enc_status_changed(.., enc = true)`: MapGPA to private, then
/// accept every page (`tdx_accept_memory`): shared to private.
fn to_private(gpa: u64, len: u64) -> Result<(), ConvertError> {
    map_gpa(gpa, len, None)?;
    tdcall::accept_memory_pages(gpa, gpa + len).map_err(|(at, st)| ConvertError::Accept(at, st))
}

/// `set_memory_decrypted` of the 2 MiB at `va`: the mapping becomes shared
/// (shared bit in the leaf), then MapGPA makes the memory shared; the
/// private pages are gone (the host frees them).
pub fn set_memory_decrypted(va: u64) -> Result<(), ConvertError> {
    if STOPPED.load(Ordering::SeqCst) {
        return Err(ConvertError::Stopped);
    }
    let bit = shared_bit();
    STATE.with(|st| {
        let at = pd_entry(va, st)?;
        // __change_page_attr_set_clr, then cpa_flush.
        write_entry(at, read_entry(at) | bit);
        flush_tlb();
        // enc_status_change_finish: MapGPA(shared); nr_shared on success.
        map_gpa(va, CHUNK, Some(bit))?;
        NR_SHARED.fetch_add(CHUNK / PAGE, Ordering::SeqCst);
        Ok(())
    })
}

/// `set_memory_encrypted` of the 2 MiB at `va`: MapGPA to private and the
/// pages accepted again (fresh, zeroed) before the mapping becomes
/// private, so no private mapping ever points at shared memory.
pub fn set_memory_encrypted(va: u64) -> Result<(), ConvertError> {
    if STOPPED.load(Ordering::SeqCst) {
        return Err(ConvertError::Stopped);
    }
    let bit = shared_bit();
    STATE.with(|st| {
        let at = pd_entry(va, st)?;
        // enc_status_change_prepare: MapGPA(private) + accept.
        to_private(va, CHUNK)?;
        write_entry(at, read_entry(at) & !bit);
        flush_tlb();
        NR_SHARED.fetch_sub(CHUNK / PAGE, Ordering::SeqCst);
        merge_splits(st, bit);
        Ok(())
    })
}

/// `bounce_pool=SIZE`: allocates the pool (2 MiB chunks), converts it to
/// shared and sends the console through its first bytes. Returns the
/// pool's chunks converted.
pub fn init_bounce_pool(size: u64) -> usize {
    let chunks = abi::to_usize(size.div_ceil(CHUNK).min(MAX_CHUNKS as u64));
    let bit = shared_bit();
    let mut done = 0;
    for _ in 0..chunks {
        let Some(va) = mm::alloc(9) else {
            println!("kernel: bounce pool: out of memory after {done} chunks");
            break;
        };
        // Cleared while still private, as Linux's memblock_alloc clears
        // the pool it hands swiotlb (its first page, where the console
        // buffer is). Memory a previous kernel left shared stops the TD
        // here: a private access to shared memory.
        // SAFETY: `va` is a fresh 2 MiB allocation of identity-mapped
        // memory owned by the pool.
        unsafe { core::ptr::write_bytes(va as *mut u8, 0, abi::to_usize(PAGE)) };
        if let Err(e) = set_memory_decrypted(va) {
            println!("kernel: bounce pool: {va:#x} not shared: {e}");
            mm::free(va, 9);
            break;
        }
        STATE.with(|st| {
            st.chunks[st.len] = va;
            st.len += 1;
        });
        done += 1;
    }
    if let Some(first) = pool_chunk(0) {
        tdcall::counter(abi::report::Counter::BouncePool, first);
        guest_rt::console::use_shared_buffer(first, first | bit);
        println!(
            "kernel: bounce pool of {} MiB at {first:#x}, shared (MapGPA); the console goes through it",
            done * 2
        );
    }
    done
}

/// Chunk `i` of the pool, if there is one.
pub fn pool_chunk(i: usize) -> Option<u64> {
    STATE.with(|st| (i < st.len).then(|| st.chunks[i]))
}

/// Linux's `nr_shared`, in 4 KiB pages.
pub fn nr_shared() -> u64 {
    NR_SHARED.load(Ordering::SeqCst)
}

/// `tdx_kexec_begin`: no new conversion from now on (the other CPUs still
/// run, so conversions in flight finish first: they hold `STATE`).
pub fn kexec_begin() {
    STATE.with(|_| STOPPED.store(true, Ordering::SeqCst));
}

/// The shared leaves of the page tables (at most 64) and how many more.
fn shared_leaves(bit: u64) -> ([Leaf; 64], usize, u64) {
    // get_max_mapped(): the end of the highest RAM the kernel was booted with.
    let top =
        crate::stub::BOOTED.with(|m| m.descs[..m.len].iter().map(|d| d.end()).max().unwrap_or(0));
    let mut leaves = [Leaf {
        va: 0,
        size: 0,
        entry_at: 0,
        entry: 0,
    }; 64];
    let mut n = 0;
    let mut more = 0u64;
    shared_memory::walk_leaves(
        guest_rt::paging::root(),
        top,
        &mut |table, i| read_entry(table + i * 8),
        &mut |leaf: Leaf| {
            if shared_memory::is_shared(leaf.entry, bit) {
                if n < leaves.len() {
                    leaves[n] = leaf;
                    n += 1;
                } else {
                    more += 1;
                }
            }
        },
    );
    (leaves, n, more)
}

/// `tdx_kexec_finish`, on the last CPU: every shared leaf of the page
/// tables is emptied, converted back (MapGPA to private, accepted again)
/// and mapped private; returns the 4 KiB pages found, which must equal
/// `nr_shared`.
pub fn kexec_finish() -> u64 {
    // The console leaves the pool before the pool leaves shared memory.
    guest_rt::console::use_shared_buffer(0, 0);
    let bit = shared_bit();
    let (leaves, n, more) = shared_leaves(bit);
    let mut found = 0;
    for leaf in &leaves[..n] {
        // Nobody touches the range as shared from now on.
        write_entry(leaf.entry_at, 0);
        flush_tlb();
        if let Err(e) = to_private(leaf.va, leaf.size) {
            println!(
                "kexec: failed to unshare {:#x}-{:#x}: {e}",
                leaf.va,
                leaf.va + leaf.size
            );
        }
        write_entry(leaf.entry_at, leaf.entry & !bit);
        found += leaf.size / PAGE;
    }
    flush_tlb();
    STATE.with(|st| merge_splits(st, bit));
    if more > 0 {
        println!("kexec: {more} shared leaves beyond the first 64 left shared");
    }
    let shared = nr_shared();
    if shared != found {
        println!("kexec: shared page accounting is off: nr_shared = {shared}, found = {found}");
    }
    NR_SHARED.store(shared.saturating_sub(found), Ordering::SeqCst);
    found
}

/// kexec without `tdx_kexec_finish` (`kexec_unshare=off`): the memory
/// stays shared, but the next kernel maps all of its memory private, as
/// Linux's next kernel builds its own page tables: the leaves lose their
/// shared bit here, with no MapGPA. Returns the 4 KiB pages left shared.
pub fn kexec_leave_shared() -> u64 {
    guest_rt::console::use_shared_buffer(0, 0);
    let bit = shared_bit();
    let (leaves, n, _) = shared_leaves(bit);
    for leaf in &leaves[..n] {
        write_entry(leaf.entry_at, leaf.entry & !bit);
    }
    flush_tlb();
    STATE.with(|st| merge_splits(st, bit));
    leaves[..n].iter().map(|l| l.size / PAGE).sum()
}

/// `kernel.selftest=shared-roundtrip`: the pool's first chunk goes back to
/// private (accepted again: it reads as zeros, whatever the host wrote in
/// it while shared) and then to shared again, with the console on it, as
/// a driver frees and reallocates a bounce buffer. `nr_shared` follows.
pub fn roundtrip_selftest() {
    let Some(va) = pool_chunk(0) else {
        guest_rt::fatal!(
            guest_rt::fatal::code::PANIC,
            "shared-roundtrip: no bounce pool (bounce_pool=0?)"
        );
    };
    let before = nr_shared();
    guest_rt::console::use_shared_buffer(0, 0);
    if let Err(e) = set_memory_encrypted(va) {
        guest_rt::fatal!(
            guest_rt::fatal::code::PANIC,
            "shared-roundtrip: to private: {e}"
        );
    }
    // SAFETY: the chunk is private and accepted again, identity-mapped,
    // owned by the pool.
    let nonzero =
        (0..CHUNK / 8).find(|i| unsafe { ((va + i * 8) as *const u64).read_volatile() } != 0);
    if let Some(i) = nonzero {
        guest_rt::fatal!(
            guest_rt::fatal::code::PANIC,
            "shared-roundtrip: {:#x} reads non-zero after it was accepted again",
            va + i * 8
        );
    }
    let private = nr_shared();
    if let Err(e) = set_memory_decrypted(va) {
        guest_rt::fatal!(
            guest_rt::fatal::code::PANIC,
            "shared-roundtrip: to shared: {e}"
        );
    }
    guest_rt::console::use_shared_buffer(va, va | shared_bit());
    println!(
        "kernel: shared-roundtrip: {va:#x} private (accepted again, zeros) and shared again; nr_shared {before} -> {private} -> {}",
        nr_shared()
    );
}
