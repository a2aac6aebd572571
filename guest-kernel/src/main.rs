//! guest-kernel: the Linux role. Entered with RDI = boot info (from the
//! firmware, or from a previous kernel through kexec); so far it validates
//! the hand-off, finds the system table, records its entry and shuts down.
//! The EFI stub phase, the unaccepted bitmap and the page allocator follow.
#![no_std]
#![no_main]

use abi::boot::{BootInfo, SystemTable, BOOT_INFO_MAGIC, SYSTEM_TABLE_SIGNATURE};
use abi::report::Mark;
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
    tdcall::mark(Mark::KernelEntry, info.generation as u64);
    // SAFETY: the firmware wrote the system table in runtime-services memory.
    let st = unsafe { (info.system_table as *const SystemTable).read() };
    if st.signature != SYSTEM_TABLE_SIGNATURE {
        fatal!(
            code::PANIC,
            "bad system table signature {:#x}",
            st.signature
        );
    }
    println!(
        "kernel: generation {} loaded at {:#x}, system table at {:#x} with {} configuration tables",
        info.generation, info.load_base, info.system_table, st.number_of_table_entries
    );
    tdcall::shutdown(0)
}
