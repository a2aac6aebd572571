//! The kernel's unaccepted-memory state: the table (header + bitmap in
//! ACPI-reclaim memory) behind `unaccepted_memory_lock`, and
//! `accept_memory`, with Linux's contract: only units the bitmap marks are
//! accepted, bits are cleared after success, and any failure is a panic
//! reported to the host. With several CPUs, `accept_memory` follows
//! `unaccepted_lock=`: `list` (Linux since 50e782a86c98: ranges being
//! accepted sit on `accepting_list`, an overlapping caller unlocks and
//! retries, the lock is dropped around each accept), `global` (Linux
//! before it: the lock is held across the accept) or `none` (no
//! `accepting_list`: the race Linux's protocol prevents).

use abi::report::Counter;
use abi::unaccepted::Header;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use guest_rt::fatal::code;
use guest_rt::spin::SpinLock;
use models::unaccepted::{accept_range, accept_range_stub, contains_range, kernel_units, Bitmap};

/// Where the table is, and what the kernel accepted so far.
pub struct Table {
    pub gpa: u64,
    pub header: Header,
    pub units_accepted: u64,
    pub bytes_immediate: u64,
}

/// The table, behind `unaccepted_memory_lock`.
pub static TABLE: SpinLock<Option<Table>> = SpinLock::new(None);

/// `unaccepted_lock=` policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum LockPolicy {
    List = 0,
    Global = 1,
    None = 2,
}

static POLICY: AtomicU8 = AtomicU8::new(LockPolicy::List as u8);

/// Sets the policy (`unaccepted_lock=list|global|none`).
pub fn set_policy(p: LockPolicy) {
    POLICY.store(p as u8, Ordering::Relaxed);
}

fn policy() -> LockPolicy {
    match POLICY.load(Ordering::Relaxed) {
        1 => LockPolicy::Global,
        2 => LockPolicy::None,
        _ => LockPolicy::List,
    }
}

/// `accepting_list`: the unit range each CPU is accepting (end 0 = none).
/// A fixed slot per CPU stands in for Linux's on-stack list entries.
struct Accepting {
    ranges: [(u64, u64); crate::cpu::MAX_CPUS],
}

/// Lives inside the lock's critical section with the table.
static ACCEPTING: SpinLock<Accepting> = SpinLock::new(Accepting {
    ranges: [(0, 0); crate::cpu::MAX_CPUS],
});

/// TSC ticks each CPU waited for the accept lock (and for overlapping
/// ranges on `accepting_list`).
static LOCK_WAIT: [AtomicU64; crate::cpu::MAX_CPUS] =
    [const { AtomicU64::new(0) }; crate::cpu::MAX_CPUS];

/// The calling CPU's lock wait so far, in TSC ticks.
pub fn lock_wait_ticks(cpu: usize) -> u64 {
    LOCK_WAIT[cpu].load(Ordering::Relaxed)
}

impl Table {
    /// The bitmap.
    pub fn bitmap(&self) -> Bitmap<'static> {
        // SAFETY: the bitmap follows the header in the table's allocation
        // (ACPI-reclaim memory the kernel owns), `size` bytes long; it is
        // only used through `TABLE`, one borrow at a time.
        Bitmap::new(unsafe {
            core::slice::from_raw_parts_mut(
                (self.gpa + 24) as *mut u8,
                abi::to_usize(self.header.size),
            )
        })
    }
}

/// Accepts `[start, end)` page by page, panicking (to the host) on failure.
pub fn accept_now(start: u64, end: u64) {
    if let Err((gpa, status)) = guest_rt::tdcall::accept_memory_pages(start, end) {
        guest_rt::fatal!(
            code::ACCEPT_FAILED,
            "TDX: Failed to accept memory at {gpa:#x} (status {status:#x} {})",
            abi::tdcall::status::name(status)
        );
    }
}

/// Linux's kernel-proper `accept_memory(start, size)` (page aligned, with
/// the guard unit; see `models::unaccepted::accept_range`), SMP-safe under
/// the `unaccepted_lock=` policy.
pub fn accept_memory(start: u64, size: u64) {
    let cpu = crate::cpu::this_cpu();
    let (mut table, waited) = TABLE.lock_timed();
    let mut wait = waited;
    let Some(t) = table.as_mut() else { return };
    let header = t.header;
    let Some((first, last)) = kernel_units(&header, start, size) else {
        return;
    };
    let policy = policy();
    if policy == LockPolicy::Global {
        // Before 50e782a86c98: the lock is held across every accept.
        let units = accept_range::<()>(&header, &mut t.bitmap(), start, size, |s, e| {
            accept_now(s, e);
            Ok(())
        })
        .unwrap_or(0);
        t.units_accepted += units;
        drop(table);
        LOCK_WAIT[cpu].fetch_add(wait, Ordering::Relaxed);
        return;
    }
    if policy == LockPolicy::List {
        // retry: walk accepting_list; on overlap unlock and start again.
        let mut retry_started = None;
        loop {
            let overlap = ACCEPTING
                .lock()
                .ranges
                .iter()
                .any(|&(s, e)| e != 0 && !(e <= first || last <= s));
            if !overlap {
                break;
            }
            retry_started.get_or_insert_with(guest_rt::spin::rdtsc);
            drop(table);
            core::hint::spin_loop();
            let (again, w) = TABLE.lock_timed();
            table = again;
            if retry_started.is_none() {
                wait += w;
            }
        }
        if let Some(t0) = retry_started {
            wait += guest_rt::spin::rdtsc().wrapping_sub(t0);
        }
        ACCEPTING.lock().ranges[cpu] = (first, last);
    }
    let unit = header.unit_size as u64;
    let mut from = first;
    while let Some((a, b)) = table
        .as_mut()
        .and_then(|t| t.bitmap().next_set_run(from, last))
    {
        // Unlock around the accept; the list keeps others off the range.
        drop(table);
        accept_now(header.phys_base + a * unit, header.phys_base + b * unit);
        let (again, w) = TABLE.lock_timed();
        table = again;
        wait += w;
        if let Some(t) = table.as_mut() {
            t.bitmap().clear_range(a, b);
            t.units_accepted += b - a;
        }
        from = b;
    }
    if policy == LockPolicy::List {
        ACCEPTING.lock().ranges[cpu] = (0, 0);
    }
    drop(table);
    LOCK_WAIT[cpu].fetch_add(wait, Ordering::Relaxed);
}

/// The EFI stub's `accept_memory(start, size)`, which Linux's
/// decompressor uses for the kernel image: no page alignment, no guard.
pub fn accept_memory_stub(start: u64, size: u64) {
    TABLE.with(|t| {
        let Some(t) = t.as_mut() else { return };
        let header = t.header;
        let units = accept_range_stub::<()>(&header, &mut t.bitmap(), start, size, |s, e| {
            accept_now(s, e);
            Ok(())
        })
        .unwrap_or(0);
        t.units_accepted += units;
    });
}

/// Clears the bitmap bits of the units entirely inside `[start, start +
/// size)` after their memory was accepted some other way (the chaos
/// self-test). Unlike `accept_memory` there is no guard unit: only units
/// this range covers change.
pub fn mark_accepted(start: u64, size: u64) {
    TABLE.with(|t| {
        let Some(t) = t.as_mut() else { return };
        let (base, unit) = (t.header.phys_base, t.header.unit_size as u64);
        let end = start.saturating_add(size);
        if end <= base {
            return;
        }
        let mut bits = t.bitmap();
        let first = (start.max(base) - base).div_ceil(unit);
        let last = ((end - base) / unit).min(bits.bits());
        let mut cleared = 0;
        let mut from = first;
        while let Some((a, b)) = bits.next_set_run(from, last) {
            bits.clear_range(a, b);
            cleared += b - a;
            from = b;
        }
        t.units_accepted += cleared;
    });
}

/// The end of the longest prefix of `[start, end)` whose units are all
/// unaccepted (`start` when the first unit is accepted or not covered).
pub fn unaccepted_prefix(start: u64, end: u64) -> u64 {
    TABLE.with(|t| {
        let Some(t) = t.as_ref() else { return start };
        let (base, unit) = (t.header.phys_base, t.header.unit_size as u64);
        if start < base || end <= start {
            return start;
        }
        let first = (start - base) / unit;
        let last = (end - base).div_ceil(unit);
        let bits = t.bitmap();
        // Cheap exit for an accepted first unit (no scan ahead).
        if first >= bits.bits() || !bits.test(first) {
            return start;
        }
        match bits.next_set_run(first, last) {
            Some((a, b)) if a == first => (base + b * unit).min(end),
            _ => start,
        }
    })
}

/// Linux's `range_contains_unaccepted_memory(start, size)`, guard unit
/// and unit-stride walk included (see `models::unaccepted::contains_range`).
pub fn contains_unaccepted(start: u64, size: u64) -> bool {
    TABLE.with(|t| {
        let Some(t) = t.as_mut() else { return false };
        let header = t.header;
        contains_range(&header, &t.bitmap(), start, size)
    })
}

/// `kernel.selftest=reaccept`: marks the first accepted unit as unaccepted
/// again and accepts it, as a kernel that lost track of its bitmap would.
/// The TDX module answers TDX_PAGE_ALREADY_ACCEPTED and, as in Linux, the
/// kernel panics. Does not return. (A unit of the bounce pool is clear in
/// the bitmap too, but shared: accepting it converts it back to private,
/// so it is not the unit to try.)
pub fn reaccept_selftest() -> ! {
    let mut pool = [u64::MAX; crate::shared::MAX_CHUNKS];
    for (i, chunk) in pool.iter_mut().enumerate() {
        *chunk = crate::shared::pool_chunk(i).unwrap_or(u64::MAX);
    }
    let unit = TABLE.with(|t| {
        let t = t.as_mut()?;
        let (base, size) = (t.header.phys_base, t.header.unit_size as u64);
        let mut bits = t.bitmap();
        let shared = |b: u64| {
            let at = base + b * size;
            pool.iter()
                .any(|c| *c != u64::MAX && at < c + abi::PAGE_2M && *c < at + size)
        };
        let clear = (0..bits.bits()).find(|b| !bits.test(*b) && !shared(*b))?;
        bits.set_range(clear, clear + 1);
        Some(t.header.phys_base + clear * t.header.unit_size as u64)
    });
    let Some(unit) = unit else {
        guest_rt::fatal!(
            code::PANIC,
            "reaccept self-test: no accepted unit in the bitmap"
        );
    };
    guest_rt::println!("kernel: selftest reaccept: accepting unit {unit:#x} again");
    accept_memory(unit, 4096);
    guest_rt::fatal!(
        code::PANIC,
        "reaccept self-test: the second accept of {unit:#x} succeeded"
    )
}

/// The first run of unaccepted units at or above `from`, as addresses.
pub fn next_unaccepted(from: u64) -> Option<(u64, u64)> {
    TABLE.with(|t| {
        let t = t.as_ref()?;
        let unit = t.header.unit_size as u64;
        let first = from.saturating_sub(t.header.phys_base).div_ceil(unit);
        let bits = t.bitmap();
        let (a, b) = bits.next_set_run(first, bits.bits())?;
        Some((t.header.phys_base + a * unit, t.header.phys_base + b * unit))
    })
}

/// Units the kernel has accepted through the bitmap so far.
pub fn units_accepted() -> u64 {
    TABLE.with(|t| t.as_ref().map_or(0, |t| t.units_accepted))
}

/// Reports the table's counters.
pub fn report() {
    TABLE.with(|t| {
        if let Some(t) = t.as_ref() {
            guest_rt::tdcall::counter(Counter::UnitsAccepted, t.units_accepted);
            guest_rt::tdcall::counter(Counter::BytesAcceptedImmediately, t.bytes_immediate);
        }
    });
}
