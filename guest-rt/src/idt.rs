//! Exception handling: an IDT whose 32 exception gates all report the vector,
//! error code, RIP and CR2 as a fatal error; a #VE (vector 20) first reads
//! its VE info and reports an EPT violation on private memory with its GPA,
//! as Linux's `virt_exception_kernel` panics on one. Gates are DPL 3 with IST 0 and
//! the selector of the live `%cs`, so the same table works in ring 0
//! (standard profile) and ring 3 (pvm-native profile) without a stack switch.

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicBool, Ordering};

const PAGE_FAULT: u64 = 14;

#[repr(C, align(16))]
struct Idt([u64; 512]);

static mut IDT: Idt = Idt([0; 512]);

// 32 stubs of 16 bytes each; vectors with a CPU error code skip the dummy push.
global_asm!(
    ".pushsection .text",
    ".balign 16",
    ".global exception_stubs",
    "exception_stubs:",
    ".set v, 0",
    ".rept 32",
    ".balign 16",
    ".if (v == 8) || (v == 10) || (v == 11) || (v == 12) || (v == 13) || (v == 14) || (v == 17) || (v == 21) || (v == 29) || (v == 30)",
    ".else",
    "pushq $0",
    ".endif",
    "pushq $v",
    "jmp exception_common",
    ".set v, v + 1",
    ".endr",
    "exception_common:",
    // [rsp] = vector, [rsp+8] = error code, [rsp+16] = RIP.
    "mov (%rsp), %rdi",
    "mov 8(%rsp), %rsi",
    "mov 16(%rsp), %rdx",
    "and $-16, %rsp",
    "call {handler}",
    "ud2",
    ".popsection",
    handler = sym exception,
    options(att_syntax),
);

extern "C" {
    static exception_stubs: u8;
}

static IN_HANDLER: AtomicBool = AtomicBool::new(false);

extern "C" fn exception(vector: u64, error: u64, rip: u64) -> ! {
    if IN_HANDLER.swap(true, Ordering::SeqCst) {
        // A fault while reporting a fault: stop without touching more state.
        crate::tdcall::shutdown(254);
    }
    if vector == u64::from(abi::tdcall::ve::VECTOR) {
        virt_exception(rip);
    }
    let mut cr2: u64 = 0;
    if vector == PAGE_FAULT {
        // SAFETY: reading CR2 has no side effects (trapped and emulated in
        // the pvm-native profile).
        unsafe { asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack)) };
    }
    crate::fatal::fatal_at(
        crate::fatal::code::EXCEPTION,
        Some(rip),
        format_args!("exception {vector} error {error:#x} at RIP {rip:#x} (CR2 {cr2:#x})"),
    )
}

/// A #VE: its VE info (TDG.VP.VEINFO.GET, which clears it) says what
/// happened. An EPT violation on private memory is fatal with its GPA
/// (Linux: arch/x86/coco/tdx/tdx.c, `virt_exception_kernel`, "Unexpected
/// EPT-violation on private memory"); our guests have no shared MMIO to
/// emulate, so any other #VE is fatal too.
fn virt_exception(rip: u64) -> ! {
    use abi::tdcall::ve;
    use abi::vmcall::fatal_code::VIRT_EXCEPTION;
    let info = crate::tdcall::ve_info();
    if info.rax != abi::tdcall::status::SUCCESS {
        crate::fatal::fatal_at(
            VIRT_EXCEPTION,
            Some(rip),
            format_args!(
                "#VE at RIP {rip:#x}, but TDG.VP.VEINFO.GET answered {:#x}",
                info.rax
            ),
        );
    }
    if info.rcx != ve::EXIT_REASON_EPT_VIOLATION {
        crate::fatal::fatal_at(
            VIRT_EXCEPTION,
            Some(rip),
            format_args!("#VE at RIP {rip:#x}: exit reason {}", info.rcx),
        );
    }
    let access = if info.rdx & ve::QUAL_FETCH != 0 {
        "fetch"
    } else if info.rdx & ve::QUAL_WRITE != 0 {
        "write"
    } else {
        "read"
    };
    crate::fatal::fatal_at(
        VIRT_EXCEPTION,
        Some(rip),
        format_args!(
            "#VE: EPT violation on private memory: {access} of GPA {:#x} at RIP {rip:#x}",
            info.r9
        ),
    )
}

/// Set once the table is built (by the first vCPU to call `init`).
static BUILT: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Builds the IDT (the first time) and loads it on this vCPU. The boot
/// vCPU calls it before it starts any other, so the others only load it.
pub fn init() {
    if !BUILT.swap(true, core::sync::atomic::Ordering::AcqRel) {
        build();
    }
    load();
}

fn build() {
    let cs: u16;
    // SAFETY: reading a segment register has no side effects.
    unsafe { asm!("mov {:x}, cs", out(reg) cs, options(nomem, nostack)) };
    // Only the address of the stubs label is taken.
    let stubs = core::ptr::addr_of!(exception_stubs) as u64;
    // SAFETY: called once (guarded by BUILT), by the boot vCPU before any
    // other vCPU runs, and before anything can raise an exception.
    let idt = unsafe { &mut *core::ptr::addr_of_mut!(IDT) };
    for v in 0..32u64 {
        let handler = stubs + v * 16;
        let low = (handler & 0xffff)
            | ((cs as u64) << 16)
            | (0xee00u64 << 32) // present, DPL 3, 64-bit interrupt gate, IST 0
            | ((handler >> 16 & 0xffff) << 48);
        idt.0[abi::to_usize(v * 2)] = low;
        idt.0[abi::to_usize(v * 2 + 1)] = handler >> 32;
    }
}

fn load() {
    #[repr(C, packed)]
    struct Idtr {
        limit: u16,
        base: u64,
    }
    let idtr = Idtr {
        limit: 32 * 16 - 1,
        base: core::ptr::addr_of!(IDT) as u64,
    };
    // SAFETY: the IDT is static and its gates point at the stubs above.
    unsafe { asm!("lidt [{}]", in(reg) &idtr, options(readonly, nostack)) };
}
