//! Exception handling: an IDT whose 32 exception gates all report the vector,
//! error code, RIP and CR2 as a fatal error, but #VE (vector 20). A #VE has
//! its own entry that saves the caller-saved registers: its handler reads
//! the VE info and either accepts the page and returns to the faulting
//! instruction (`ve_accept=on`: "access first", order (a)) or reports an
//! EPT violation on private memory with its GPA, as Linux's
//! `virt_exception_kernel` panics on one. Gates are DPL 3 with IST 0 and
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
    // #VE: the caller-saved registers (the handler's TDCALLs clobber
    // RAX, RCX, RDX, R8-R11) around a call that returns only when the
    // page was accepted, then back to the faulting instruction.
    ".balign 16",
    ".global ve_entry",
    "ve_entry:",
    "push %rax",
    "push %rcx",
    "push %rdx",
    "push %rsi",
    "push %rdi",
    "push %r8",
    "push %r9",
    "push %r10",
    "push %r11",
    "mov 72(%rsp), %rdi", // the faulting RIP
    "push %rbp",
    "mov %rsp, %rbp",
    "and $-16, %rsp",
    "cld",
    "call {ve_handler}",
    "mov %rbp, %rsp",
    "pop %rbp",
    "pop %r11",
    "pop %r10",
    "pop %r9",
    "pop %r8",
    "pop %rdi",
    "pop %rsi",
    "pop %rdx",
    "pop %rcx",
    "pop %rax",
    "iretq",
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
    ve_handler = sym ve_handler,
    options(att_syntax),
);

extern "C" {
    static exception_stubs: u8;
    static ve_entry: u8;
}

/// `ve_accept=on`: a #VE on private memory accepts its 4 KiB page and
/// retries the access ("access first"), instead of being fatal.
static VE_ACCEPT: AtomicBool = AtomicBool::new(false);
/// Pages accepted by the #VE handler.
static VE_ACCEPTS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Sets the `ve_accept` policy (see `VE_ACCEPT`).
pub fn set_ve_accept(on: bool) {
    VE_ACCEPT.store(on, Ordering::Relaxed);
}

/// True under `ve_accept=on`.
pub fn ve_accept() -> bool {
    VE_ACCEPT.load(Ordering::Relaxed)
}

/// Pages the #VE handler has accepted so far.
pub fn ve_accepts() -> u64 {
    VE_ACCEPTS.load(Ordering::Relaxed)
}

/// The #VE handler (from `ve_entry`, the faulting instruction's `rip`):
/// returns when the page was accepted, so the access runs again.
extern "C" fn ve_handler(rip: u64) {
    use abi::tdcall::{status, ve, PageLevel};
    let info = crate::tdcall::ve_info();
    let accept = VE_ACCEPT.load(Ordering::Relaxed)
        && info.rax == status::SUCCESS
        && info.rcx == ve::EXIT_REASON_EPT_VIOLATION;
    if !accept {
        virt_exception(rip, info);
    }
    let page = info.r9 & !(abi::PAGE_4K - 1);
    let st = crate::tdcall::accept_page(page, PageLevel::L4K);
    // ALREADY_ACCEPTED: another CPU's #VE accepted it first.
    if st != status::SUCCESS && status::code(st) != status::PAGE_ALREADY_ACCEPTED {
        crate::fatal::fatal_at(
            crate::fatal::code::ACCEPT_FAILED,
            Some(rip),
            format_args!("#VE accept of GPA {page:#x} (ve_accept=on) answered {st:#x}"),
        );
    }
    VE_ACCEPTS.fetch_add(1, Ordering::Relaxed);
}

static IN_HANDLER: AtomicBool = AtomicBool::new(false);

extern "C" fn exception(vector: u64, error: u64, rip: u64) -> ! {
    if IN_HANDLER.swap(true, Ordering::SeqCst) {
        // A fault while reporting a fault: stop without touching more state.
        crate::tdcall::shutdown(254);
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
fn virt_exception(rip: u64, info: crate::tdcall::Regs) -> ! {
    use abi::tdcall::ve;
    use abi::vmcall::fatal_code::VIRT_EXCEPTION;
    if IN_HANDLER.swap(true, Ordering::SeqCst) {
        crate::tdcall::shutdown(254);
    }
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
    let ve = core::ptr::addr_of!(ve_entry) as u64;
    for v in 0..32u64 {
        let handler = if v == u64::from(abi::tdcall::ve::VECTOR) {
            ve
        } else {
            stubs + v * 16
        };
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
