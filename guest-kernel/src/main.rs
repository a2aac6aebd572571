//! guest-kernel: the Linux role. Entered with RDI = boot info by the
//! firmware: runs the EFI stub phase (unaccepted-memory table, exit boot
//! services, bitmap), builds its page allocator with lazy or eager
//! acceptance (`accept_memory=lazy|eager`), runs `workload=SIZE`, reports
//! its phases and counters to the host and shuts down.
#![no_std]
#![no_main]

mod chaos;
mod cpu;
mod kexec;
mod mm;
mod selftest;
mod shared;
mod smp;
mod stack;
mod stub;
mod unaccepted;
mod ve_stores;
mod workload;

use abi::boot::{BootInfo, BootServices, SystemTable, BOOT_INFO_MAGIC, SYSTEM_TABLE_SIGNATURE};
use abi::cmdline;
use abi::report::{Counter, Mark};
use guest_rt::fatal::code;
use guest_rt::{fatal, println, tdcall};

extern "C" fn kernel_main(info: *const BootInfo) -> ! {
    guest_rt::idt::init();
    guest_rt::abi_check::check("kernel");
    // SAFETY: the boot-info contract: RDI holds the GPA of a BootInfo in
    // accepted, identity-mapped memory (checked for its magic below).
    let info = unsafe { info.read() };
    if info.magic != BOOT_INFO_MAGIC {
        fatal!(code::PANIC, "bad boot info magic {:#x}", info.magic);
    }
    let generation = info.generation as u64;
    tdcall::mark(Mark::KernelEntry, generation);
    // SAFETY: the command line lies after the boot info in loader memory.
    let bytes = unsafe {
        core::slice::from_raw_parts(info.cmdline as *const u8, abi::to_usize(info.cmdline_len))
    };
    let Ok(cmdline) = core::str::from_utf8(bytes) else {
        fatal!(code::BAD_CMDLINE, "command line is not UTF-8");
    };
    if cmdline::get(cmdline, "kexec_generation").is_some() {
        let g = guest_rt::param::number(cmdline, "kexec_generation", 0);
        if g != generation {
            fatal!(
                code::BAD_CMDLINE,
                "kexec_generation={g} but the boot info says {generation}"
            );
        }
    }
    tdcall::set_accept_retry(guest_rt::param::number(cmdline, "accept_retry", 0));
    let lazy = match cmdline::get(cmdline, "accept_memory") {
        None | Some("lazy") => true,
        Some("eager") => false,
        Some(other) => fatal!(
            code::BAD_CMDLINE,
            "accept_memory={other}: expected lazy or eager"
        ),
    };
    // `ve_accept=on`: "access first" (order (a)): the allocator hands out
    // unaccepted memory as it is, and a #VE accepts each page at its first
    // touch. It needs a TD without SEPT_VE_DISABLE (else the first touch
    // stops the TD) and keeps no unaccepted table true, so no kexec.
    let ve_accept = match cmdline::get(cmdline, "ve_accept") {
        None | Some("off") => false,
        Some("on") => true,
        Some(other) => fatal!(code::BAD_CMDLINE, "ve_accept={other}: expected on or off"),
    };
    if ve_accept {
        let attributes = tdcall::vp_info().rdx;
        if attributes & abi::tdcall::vp_info::ATTR_SEPT_VE_DISABLE != 0 {
            fatal!(
                code::BAD_CMDLINE,
                "ve_accept=on needs #VE on pending memory, but the TD attributes {attributes:#x} set SEPT_VE_DISABLE"
            );
        }
        if guest_rt::param::number(cmdline, "kexec", 0) > 0 {
            fatal!(
                code::BAD_CMDLINE,
                "ve_accept=on keeps no unaccepted table true: kexec is refused"
            );
        }
        guest_rt::idt::set_ve_accept(true);
    }
    let workload = guest_rt::param::number(cmdline, "workload", 0);
    unaccepted::set_policy(match cmdline::get(cmdline, "unaccepted_lock") {
        None | Some("list") => unaccepted::LockPolicy::List,
        Some("global") => unaccepted::LockPolicy::Global,
        Some("none") => unaccepted::LockPolicy::None,
        Some(other) => fatal!(
            code::BAD_CMDLINE,
            "unaccepted_lock={other}: expected list, global or none"
        ),
    });
    // SAFETY: the firmware wrote the system table in runtime-services memory.
    let st = unsafe { &*(info.system_table as *const SystemTable) };
    if st.signature != SYSTEM_TABLE_SIGNATURE {
        fatal!(
            code::PANIC,
            "bad system table signature {:#x}",
            st.signature
        );
    }
    println!(
        "kernel: generation {generation} at {:#x}, accept_memory={}{}",
        info.load_base,
        if lazy { "lazy" } else { "eager" },
        if ve_accept { ", ve_accept=on" } else { "" }
    );
    let on = |key: &str| match cmdline::get(cmdline, key) {
        None | Some("on") => true,
        Some("off") => false,
        Some(other) => fatal!(code::BAD_CMDLINE, "{key}={other}: expected on or off"),
    };
    let stub = if st.boot_services == 0 {
        // Entered by kexec: no boot services, a memory map in the boot info.
        let stub = stub::run_kexec(&info, on("kexec_reuse_bitmap"));
        // Like Linux's decompressor: accept our own image's memory first,
        // with the EFI stub's accept_memory (no guard unit). With the
        // reused bitmap this is a no-op (the previous kernel accepted it);
        // with a rebuilt one it is a second accept.
        unaccepted::accept_memory_stub(info.load_base, info.load_size);
        stub
    } else {
        // SAFETY: non-zero, so it points at the firmware's live boot services.
        let bs = unsafe { &*(st.boot_services as *const BootServices) };
        stub::run(info.system_table, bs)
    };
    if unaccepted::TABLE.with(|t| t.is_some()) {
        // The bitmap now says what is accepted: the host may compare.
        tdcall::mark(Mark::TableFilled, generation);
    }
    mm::init(stub.dir, stub.dir_blocks, lazy, ve_accept);
    // Linux's mem_encrypt_init -> swiotlb_update_mem_attributes: the
    // bounce pool becomes shared before the other CPUs come up.
    let pool = guest_rt::param::number(cmdline, "bounce_pool", 2 << 20);
    if pool > shared::MAX_POOL_BYTES {
        fatal!(
            code::BAD_CMDLINE,
            "bounce_pool={pool:#x}: at most {:#x} (32 MiB)",
            shared::MAX_POOL_BYTES
        );
    }
    shared::init_bounce_pool(pool);
    smp::bring_up(st, cmdline);
    let mut failures = 0;
    match cmdline::get(cmdline, "kernel.selftest") {
        None => {}
        Some("reaccept") => unaccepted::reaccept_selftest(),
        Some("ap-touch-pending") => selftest::touch_pending_from_last_cpu(),
        Some("accept-race") => selftest::accept_race_selftest(cmdline),
        Some("ve-stores") => ve_stores::run(),
        Some("shared-roundtrip") => shared::roundtrip_selftest(),
        Some("chaos") => {
            let (seed, count) = guest_chaos::params(cmdline);
            failures += chaos::run(seed, count);
        }
        Some(other) => fatal!(code::BAD_CMDLINE, "unknown kernel.selftest={other}"),
    }
    let ready = mm::stats();
    tdcall::mark(Mark::KernelReady, generation);
    println!(
        "kernel: allocator ready: {} MiB free, {} blocks parked",
        ready.free_pages / 256,
        ready.parked_blocks
    );
    let done = workload::run_parallel(workload);
    tdcall::mark(Mark::WorkloadDone, generation);
    let s = mm::stats();
    println!(
        "kernel: workload of {done} bytes verified; {} blocks accepted lazily, {} still parked",
        s.blocks_accepted_lazily, s.parked_blocks
    );
    let kexecs = guest_rt::param::number(cmdline, "kexec", 0);
    if generation < kexecs {
        let corrupt = match cmdline::get(cmdline, "kexec_test") {
            None => None,
            Some("overlap") => Some(kexec::Corruption::Overlap),
            Some("outside") => Some(kexec::Corruption::Outside),
            Some(other) => fatal!(
                code::BAD_CMDLINE,
                "kexec_test={other}: expected overlap or outside"
            ),
        };
        let why = kexec::load_and_execute(
            &info,
            cmdline,
            kexec::Options {
                accept: on("kexec_accept"),
                unshare: on("kexec_unshare"),
                corrupt,
            },
        );
        println!("kernel: kexec refused: {why}; carrying on");
    }
    unaccepted::report();
    // Each CPU reports its own lock wait (the host keeps it per vCPU).
    smp::run_on_all(|cpu| {
        tdcall::counter(Counter::LockWaitTsc, unaccepted::lock_wait_ticks(cpu));
    });
    tdcall::counter(Counter::BlocksParked, s.blocks_parked);
    tdcall::counter(Counter::BlocksAcceptedLazily, s.blocks_accepted_lazily);
    tdcall::counter(Counter::FreePagesAtReady, ready.free_pages);
    tdcall::counter(Counter::MetaPages, s.meta_pages);
    tdcall::counter(Counter::AllocatorDirectoryBytes, mm::dir_bytes());
    tdcall::counter(Counter::WorkloadBytes, done);
    tdcall::counter(Counter::LazyAccept, u64::from(lazy));
    tdcall::counter(Counter::AcceptRetries, tdcall::accept_retries());
    tdcall::counter(Counter::VeAccepts, guest_rt::idt::ve_accepts());
    tdcall::counter(Counter::WorkloadZeroPages, workload::zero_pages());
    tdcall::counter(Counter::SharedPages, shared::nr_shared());
    stack::check("shutdown");
    println!(
        "kernel: boot stack high-water {} of {} bytes",
        stack::high_water(),
        stack::STACK_BYTES
    );
    tdcall::shutdown(u32::from(failures > 0))
}
