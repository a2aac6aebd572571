//! `workload=SIZE`: allocate SIZE through the buddy allocator (2 MiB
//! pieces, then 4 KiB pages), write and verify every page, free it all;
//! with several CPUs, every CPU does its share at once. A page that lost
//! its pattern is fatal, but under `ve_accept=on` a page that reads as
//! zeros is counted (`workload_zero_pages`) and the run goes on: that is
//! what a host's removal looks like to "access first", silent.

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
/// Pages that read back as zeros (`ve_accept=on`).
static ZERO_PAGES: AtomicU64 = AtomicU64::new(0);

/// Workload pages whose pattern read back as zeros so far.
pub fn zero_pages() -> u64 {
    ZERO_PAGES.load(Ordering::Relaxed)
}

/// A piece's link: (next piece, order), kept in its first page and, for a
/// piece of more than one page, again in its last, so that one lost page
/// does not lose the chain.
fn link(at: u64, order: u32) -> [u64; 2] {
    let last = at + (PAGE << order) - PAGE;
    // SAFETY: `at` is a live workload piece of `PAGE << order` bytes.
    let read = |p: u64| unsafe {
        [
            (p as *const u64).read_volatile(),
            ((p + 8) as *const u64).read_volatile(),
        ]
    };
    let first = read(at);
    if first == [0, 0] && order > 0 {
        return read(last);
    }
    first
}
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
            for copy in [at, at + len - PAGE] {
                (copy as *mut u64).write_volatile(head);
                ((copy + 8) as *mut u64).write_volatile(order as u64);
            }
            for page in (at..at + len).step_by(abi::to_usize(PAGE)) {
                ((page + 16) as *mut u64).write_volatile(pattern(page));
                ((page + PAGE - 8) as *mut u64).write_volatile(!pattern(page));
            }
        }
        head = at;
        done += len;
    }
    let zeros_are_counted = guest_rt::idt::ve_accept();
    // The chain runs from the last piece back: the 4 KiB pieces of the
    // tail first, then the 2 MiB ones (the order of each is known from
    // `size`, so a lost first page still finds its copy).
    let small = (size % (2 << 20)).div_ceil(PAGE);
    let mut at = head;
    let mut walked = 0;
    while at != u64::MAX {
        let order = if walked < small { 0 } else { 9 };
        walked += 1;
        let [next, stored] = link(at, order);
        if u64::from(order) != stored || next == 0 {
            fatal!(
                code::PANIC,
                "workload: piece at {at:#x} of order {order} lost its link ({next:#x}, {stored:#x})"
            );
        }
        let len = PAGE << order;
        for page in (at..at + len).step_by(abi::to_usize(PAGE)) {
            // SAFETY: as above.
            let (a, b) = unsafe {
                (
                    ((page + 16) as *const u64).read_volatile(),
                    ((page + PAGE - 8) as *const u64).read_volatile(),
                )
            };
            if a == 0 && b == 0 && zeros_are_counted {
                ZERO_PAGES.fetch_add(1, Ordering::Relaxed);
            } else if a != pattern(page) || b != !pattern(page) {
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
