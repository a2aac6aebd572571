//! guest-kernel: the Linux role. Entered with RDI = boot info by the
//! firmware: runs the EFI stub phase (unaccepted-memory table, exit boot
//! services, bitmap), builds its page allocator with lazy or eager
//! acceptance (`accept_memory=lazy|eager`), runs `workload=SIZE`, reports
//! its phases and counters to the host and shuts down.
#![no_std]
#![no_main]

mod mm;
mod stub;
mod unaccepted;
mod workload;

use abi::boot::{BootInfo, BootServices, SystemTable, BOOT_INFO_MAGIC, SYSTEM_TABLE_SIGNATURE};
use abi::cmdline;
use abi::report::{Counter, Mark};
use guest_rt::fatal::code;
use guest_rt::{fatal, println, tdcall};

core::arch::global_asm!(
    ".pushsection .text._start, \"ax\"",
    ".global _start",
    "_start:",
    "lea rsp, [rip + kernel_stack_top]",
    "call {main}",
    "ud2",
    ".popsection",
    ".pushsection .bss.stack, \"aw\", @nobits",
    ".balign 16",
    ".space 65536",
    "kernel_stack_top:",
    ".popsection",
    main = sym kernel_main,
);

extern "C" fn kernel_main(info: *const BootInfo) -> ! {
    guest_rt::idt::init();
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
        core::slice::from_raw_parts(info.cmdline as *const u8, info.cmdline_len as usize)
    };
    let Ok(cmdline) = core::str::from_utf8(bytes) else {
        fatal!(code::BAD_CMDLINE, "command line is not UTF-8");
    };
    let lazy = match cmdline::get(cmdline, "accept_memory") {
        None | Some("lazy") => true,
        Some("eager") => false,
        Some(other) => fatal!(
            code::BAD_CMDLINE,
            "accept_memory={other}: expected lazy or eager"
        ),
    };
    let workload = match cmdline::get(cmdline, "workload").map(cmdline::parse_size) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => fatal!(code::BAD_CMDLINE, "workload= expects a size"),
    };
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
        "kernel: generation {generation} at {:#x}, accept_memory={}",
        info.load_base,
        if lazy { "lazy" } else { "eager" }
    );
    if st.boot_services == 0 {
        fatal!(
            code::PANIC,
            "entered without boot services: kexec boot is not implemented yet"
        );
    }
    // SAFETY: non-zero, so it points at the firmware's live boot services.
    let bs = unsafe { &*(st.boot_services as *const BootServices) };
    let stub = stub::run(info.system_table, bs);
    mm::init(stub.dir, stub.dir_blocks, lazy);
    if cmdline::get(cmdline, "kernel.selftest") == Some("reaccept") {
        unaccepted::reaccept_selftest();
    }
    let ready = mm::stats();
    tdcall::mark(Mark::KernelReady, generation);
    println!(
        "kernel: allocator ready: {} MiB free, {} blocks parked",
        ready.free_pages / 256,
        ready.parked_blocks
    );
    let done = workload::run(workload);
    tdcall::mark(Mark::WorkloadDone, generation);
    let s = mm::stats();
    println!(
        "kernel: workload of {done} bytes verified; {} blocks accepted lazily, {} still parked",
        s.blocks_accepted_lazily, s.parked_blocks
    );
    unaccepted::report();
    tdcall::counter(Counter::BlocksParked, s.blocks_parked);
    tdcall::counter(Counter::BlocksAcceptedLazily, s.blocks_accepted_lazily);
    tdcall::counter(Counter::FreePagesAtReady, ready.free_pages);
    tdcall::counter(Counter::MetaPages, s.meta_pages);
    tdcall::counter(Counter::WorkloadBytes, done);
    tdcall::counter(Counter::LazyAccept, u64::from(lazy));
    tdcall::shutdown(0)
}
