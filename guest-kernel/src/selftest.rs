//! The kernel's self-tests that need every CPU and the unaccepted table at
//! once (`kernel.selftest=accept-race|ap-touch-pending`): they sit above
//! both, so neither reaches into the other.

use crate::cpu::online;
use crate::smp::run_on_all;
use crate::unaccepted::{accept_memory, next_unaccepted};
use core::sync::atomic::{AtomicU64, Ordering};
use guest_rt::fatal::code;
use guest_rt::{fatal, println};

static RACE: AtomicU64 = AtomicU64::new(0);
static RACE_SIZE: AtomicU64 = AtomicU64::new(0);

/// `kernel.selftest=accept-race`: every CPU calls `accept_memory` on the
/// same unaccepted range (`race_size=`, default 256 MiB, from the first
/// unaccepted unit) at once. Under `unaccepted_lock=list` or `global`
/// each unit is accepted once and the kernel goes on; under `none` two
/// CPUs accept the same unit and one of them panics on BUSY or
/// ALREADY_ACCEPTED, as Linux would.
pub fn accept_race_selftest(cmdline: &str) {
    let Some((gpa, _)) = next_unaccepted(0) else {
        fatal!(code::PANIC, "accept-race: nothing is unaccepted");
    };
    let size = guest_rt::param::number(cmdline, "race_size", 256 << 20);
    RACE.store(gpa, Ordering::Relaxed);
    RACE_SIZE.store(size, Ordering::Relaxed);
    println!(
        "kernel: selftest accept-race: {} CPUs accept {gpa:#x} (+{size:#x}) at once",
        crate::cpu::online()
    );
    run_on_all(|_| {
        accept_memory(
            RACE.load(Ordering::Relaxed),
            RACE_SIZE.load(Ordering::Relaxed),
        );
    });
    println!("kernel: accept-race: every CPU returned");
}

/// `kernel.selftest=ap-touch-pending`: the last CPU reads the first
/// unaccepted unit (the TD stops with that vCPU, GPA and RIP). Does not
/// return.
pub fn touch_pending_from_last_cpu() -> ! {
    let Some((gpa, _)) = next_unaccepted(0) else {
        fatal!(code::PANIC, "ap-touch-pending: nothing is unaccepted");
    };
    crate::mm::map_range(gpa, 8);
    TARGET.store(gpa, Ordering::Relaxed);
    println!(
        "kernel: selftest ap-touch-pending: CPU {} reads {gpa:#x}",
        online() - 1
    );
    run_on_all(|cpu| {
        if u32::try_from(cpu) == Ok(online() - 1) {
            let at = TARGET.load(Ordering::Relaxed);
            // SAFETY: deliberately reads pending memory: the host stops
            // the TD at this access (that is the test).
            let v = unsafe { (at as *const u64).read_volatile() };
            fatal!(code::PANIC, "read pending memory at {at:#x}: {v:#x}");
        }
    });
    fatal!(
        code::PANIC,
        "ap-touch-pending: the read on CPU {} returned",
        online() - 1
    )
}

static TARGET: AtomicU64 = AtomicU64::new(0);
