//! The boot CPU's kernel stack: 64 KiB in .bss with a 4 KiB guard below
//! it, both painted at entry (`guest_rt::stack`). An overflow lands in the guard, not in the
//! kernel's data below, and `check` turns it into a fatal error before the
//! kernel leaves (shutdown or kexec) instead of a silent corruption.

/// Bytes of stack the boot CPU runs on.
pub const STACK_BYTES: u64 = 64 * 1024;
/// Bytes of painted guard below the stack.
pub const GUARD_BYTES: u64 = 4096;
core::arch::global_asm!(
    ".pushsection .text._start, \"ax\"",
    ".global _start",
    "_start:",
    // RDI is the boot info: the paint clobbers only R8-R10.
    guest_rt::paint_stack!("kernel_stack_guard", "kernel_stack_top"),
    "lea rsp, [rip + kernel_stack_top]",
    "call {main}",
    "ud2",
    ".popsection",
    ".pushsection .bss.stack, \"aw\", @nobits",
    ".balign 4096",
    "kernel_stack_guard:",
    ".space {guard}",
    ".space {stack}",
    "kernel_stack_top:",
    ".popsection",
    main = sym crate::kernel_main,
    paint = const guest_rt::stack::PAINT,
    guard = const GUARD_BYTES,
    stack = const STACK_BYTES,
);

extern "C" {
    static kernel_stack_guard: u64;
}

/// The deepest the boot CPU's stack has been, in bytes from its top (the
/// guard included: more than `STACK_BYTES` means it overflowed).
pub fn high_water() -> u64 {
    // SAFETY: the guard and the stack are one static region painted at
    // entry and used only as this CPU's stack.
    unsafe {
        guest_rt::stack::high_water(
            core::ptr::addr_of!(kernel_stack_guard),
            GUARD_BYTES + STACK_BYTES,
        )
    }
}

/// Stops the kernel if its stack ran into the guard.
pub fn check(at: &str) {
    // SAFETY: the guard and the stack are one static region painted at
    // entry and used only as this CPU's stack.
    unsafe {
        guest_rt::stack::check(
            "kernel",
            at,
            core::ptr::addr_of!(kernel_stack_guard),
            GUARD_BYTES,
            STACK_BYTES,
        )
    }
}
