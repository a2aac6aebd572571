//! Self-tests that end the TD on purpose, so the host's diagnostics can be
//! checked (`fw.selftest=hang|ud2|triple-fault|touch-hole|touch-pending|
//! touch-poisoned`): each names what it does, and returns (a failure) only
//! if the host let it survive.

use super::read;
use abi::hob::{resource_type, HobList};
use abi::layout::FOUR_GIB;
use abi::tdcall::{status, PageLevel};
use abi::PAGE_4K;
use guest_rt::println;
use guest_rt::tdcall::accept_page;

/// Reads the start of the MMIO hole, where no device is mapped. The host
/// stops the TD with `bad_gpa`.
pub fn touch_hole() -> u32 {
    let gpa = abi::layout::MMIO_HOLE_START;
    println!("selftest touch-hole: reading GPA {gpa:#x}");
    let v = read(gpa);
    println!("selftest touch-hole: read {v:#x} and survived: FAIL");
    1
}

/// Spins forever without exiting to the host: only `--timeout` or a stop
/// signal ends the TD.
pub fn hang() -> ! {
    println!("selftest hang: spinning until the host stops the TD");
    loop {
        core::hint::spin_loop();
    }
}

/// Executes `ud2`: the firmware's own #UD handler must report it.
pub fn invalid_opcode() -> u32 {
    println!("selftest ud2: raising #UD");
    // SAFETY: deliberately faulting; the exception handler never returns.
    unsafe { core::arch::asm!("ud2", options(nostack)) };
    1
}

/// Loads an empty IDT and raises #UD: with no handler, the CPU escalates
/// to a double and then a triple fault.
pub fn triple_fault() -> u32 {
    println!("selftest triple-fault: loading an empty IDT and raising #UD");
    #[repr(C, packed)]
    struct Idtr {
        limit: u16,
        base: u64,
    }
    let empty = Idtr { limit: 0, base: 0 };
    // SAFETY: deliberately fatal: the next exception cannot be delivered.
    unsafe {
        core::arch::asm!("lidt [{}]", "ud2", in(reg) &empty, options(nostack));
    }
    1
}

/// The first pending RAM above 4 GiB, as (GPA, length), if any.
pub(super) fn pending_above_4g(hobs: &HobList<'_>) -> Option<(u64, u64)> {
    hobs.memory_resources()
        .filter(|r| {
            r.resource_type == resource_type::MEMORY_UNACCEPTED && r.physical_start >= FOUR_GIB
        })
        .map(|r| (r.physical_start, r.resource_length))
        .next()
}

/// Reads the first pending page above 4 GiB. The host stops the TD.
pub fn touch_pending(hobs: &HobList<'_>) -> u32 {
    let Some((gpa, _)) = pending_above_4g(hobs) else {
        println!(
            "selftest touch-pending: no pending RAM above 4 GiB (give the guest more than 3G)"
        );
        return 1;
    };
    super::map_for_selftest(gpa, gpa + PAGE_4K);
    println!("selftest touch-pending: reading pending GPA {gpa:#x}");
    let v = read(gpa);
    println!("selftest touch-pending: read {v:#x} and survived: FAIL");
    1
}

/// `fw.selftest=touch-poisoned`: accepts the first 4 KiB page of the
/// pending RAM above 4 GiB (with `--pending uffd-poison` its 2 MiB chunk
/// now sits in a memslot with its pending pages poisoned) and writes 8
/// bytes at offset 8 of the next, pending page. The TD must stop there
/// with that exact GPA, as a write.
pub fn touch_poisoned(hobs: &HobList<'_>) -> u32 {
    let Some((gpa, _)) = pending_above_4g(hobs) else {
        println!(
            "selftest touch-poisoned: no pending RAM above 4 GiB (give the guest more than 3G)"
        );
        return 1;
    };
    super::map_for_selftest(gpa, gpa + 2 * PAGE_4K);
    let st = accept_page(gpa, PageLevel::L4K);
    if st != status::SUCCESS {
        println!("selftest touch-poisoned: 4K accept at {gpa:#x} failed: {st:#x}");
        return 1;
    }
    // SAFETY: the page was just accepted and is identity-mapped.
    unsafe { core::ptr::write_volatile((gpa + 8) as *mut u64, 1) };
    let pending = gpa + PAGE_4K + 8;
    println!("selftest touch-poisoned: writing pending GPA {pending:#x}");
    // SAFETY: deliberately a pending page: the VMM must stop the TD here.
    unsafe { core::ptr::write_volatile(pending as *mut u64, 2) };
    println!("selftest touch-poisoned: wrote {pending:#x} and survived: FAIL");
    1
}
