//! Who a CPU is and how many are online: the leaf every other module may
//! ask (`this_cpu`, `online`, `MAX_CPUS`) without reaching into the SMP
//! bring-up (`smp`), which is the only writer.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Most CPUs the kernel runs (the VMM's limit too).
pub const MAX_CPUS: usize = abi::tdcall::vp_info::MAX_VCPUS as usize;
/// Stack of each AP: 16 KiB from the allocator (order 2), taken when the
/// AP is woken (a static array for 64 CPUs would grow the image by 1 MiB).
pub(crate) const AP_STACK_ORDER: u32 = 2;
pub(crate) const AP_STACK: u64 = 4096 << AP_STACK_ORDER;

/// Top of each CPU's stack (0 = none: the boot CPU runs on the image's).
/// Written by `smp` before it wakes the AP; its entry code loads it.
pub(crate) static STACK_TOPS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// CPUs running this kernel (the boot CPU included).
pub(crate) static ONLINE: AtomicU32 = AtomicU32::new(1);

/// The calling CPU's index (0 = the boot CPU), from its stack pointer.
pub fn this_cpu() -> usize {
    let rsp: u64;
    // SAFETY: reading RSP has no side effects.
    unsafe { core::arch::asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack)) };
    (1..MAX_CPUS)
        .find(|i| {
            let top = STACK_TOPS[*i].load(Ordering::Relaxed);
            top != 0 && rsp <= top && rsp > top - AP_STACK
        })
        .unwrap_or(0)
}

/// CPUs online.
pub fn online() -> u32 {
    ONLINE.load(Ordering::Acquire)
}
