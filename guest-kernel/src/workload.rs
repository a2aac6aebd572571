//! `workload=SIZE`: allocate SIZE through the buddy allocator (2 MiB
//! pieces, then 4 KiB pages), write and verify every page, free it all;
//! with several CPUs, every CPU does its share at once.

use crate::mm;
use core::sync::atomic::{AtomicU64, Ordering};
use guest_rt::fatal;
use guest_rt::fatal::code;

const MAGIC: u64 = 0x5bd1_e995_c0de_f00d;
const PAGE: u64 = 4096;

fn pattern(page: u64) -> u64 {
    page ^ MAGIC
}

static SHARE: AtomicU64 = AtomicU64::new(0);
static REST: AtomicU64 = AtomicU64::new(0);
static DONE: AtomicU64 = AtomicU64::new(0);

/// Runs `size` bytes of workload split over every online CPU at once
/// (each CPU a share of whole pages, the boot CPU also the remainder);
/// returns the bytes handled.
pub fn run_parallel(size: u64) -> u64 {
    let cpus = u64::from(crate::cpu::online());
    if cpus == 1 {
        return run(size);
    }
    let share = size / cpus / PAGE * PAGE;
    SHARE.store(share, Ordering::Relaxed);
    REST.store(size - share * (cpus - 1), Ordering::Relaxed);
    DONE.store(0, Ordering::Relaxed);
    crate::smp::run_on_all(|cpu| {
        let mine = if cpu == 0 {
            REST.load(Ordering::Relaxed)
        } else {
            SHARE.load(Ordering::Relaxed)
        };
        DONE.fetch_add(run(mine), Ordering::Relaxed);
    });
    DONE.load(Ordering::Relaxed)
}

/// Runs the workload; returns the bytes it handled.
pub fn run(size: u64) -> u64 {
    // Allocated pieces are chained through their first word: (next, order).
    let mut head = u64::MAX;
    let mut done = 0;
    while done < size {
        let order = if size - done >= 2 << 20 { 9 } else { 0 };
        let Some(at) = mm::alloc(order) else {
            fatal!(
                code::PANIC,
                "workload: out of memory after {done} of {size} bytes"
            );
        };
        let len = PAGE << order;
        // SAFETY: `at` is a fresh allocation of `len` bytes of accepted,
        // identity-mapped memory owned by the workload until freed below.
        unsafe {
            (at as *mut u64).write_volatile(head);
            ((at + 8) as *mut u64).write_volatile(order as u64);
            for page in (at..at + len).step_by(abi::to_usize(PAGE)) {
                ((page + 16) as *mut u64).write_volatile(pattern(page));
                ((page + PAGE - 8) as *mut u64).write_volatile(!pattern(page));
            }
        }
        head = at;
        done += len;
    }
    let mut at = head;
    while at != u64::MAX {
        // SAFETY: walking the chain written above, over live allocations.
        let (next, order) = unsafe {
            (
                (at as *const u64).read_volatile(),
                ((at + 8) as *const u64).read_volatile(),
            )
        };
        let Ok(order) = u32::try_from(order) else {
            fatal!(code::PANIC, "workload: piece at {at:#x} has order {order}");
        };
        let len = PAGE << order;
        for page in (at..at + len).step_by(abi::to_usize(PAGE)) {
            // SAFETY: as above.
            let (a, b) = unsafe {
                (
                    ((page + 16) as *const u64).read_volatile(),
                    ((page + PAGE - 8) as *const u64).read_volatile(),
                )
            };
            if a != pattern(page) || b != !pattern(page) {
                fatal!(
                    code::PANIC,
                    "workload: page {page:#x} lost its contents ({a:#x}, {b:#x})"
                );
            }
        }
        mm::free(at, order);
        at = next;
    }
    done
}
