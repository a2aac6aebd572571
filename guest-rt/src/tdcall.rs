//! The guest's TDCALL: the real instruction (`66 0F 01 CC`), which the
//! VMM's loader patches to its doorbell before the TD starts (see
//! `abi::tdcall`), and typed wrappers for the leaves and VMCALLs the
//! guests use.

use abi::report::Mark;
use abi::tdcall::{accept, leaf, PageLevel};
use abi::vmcall::{emu, ghci, EXPOSE_R10_R15, GHCI_STANDARD, VENDOR_EMU};
use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};

static ACCEPT_RETRY: AtomicU64 = AtomicU64::new(0);
static ACCEPT_RETRIES: AtomicU64 = AtomicU64::new(0);

/// `accept_retry=N`: how many times `accept_page` retries an accept that
/// answered TDX_OPERAND_BUSY before returning that status (0, the default,
/// is Linux's behaviour: the caller sees the failure).
pub fn set_accept_retry(n: u64) {
    ACCEPT_RETRY.store(n, Ordering::Relaxed);
}

/// Accepts retried after TDX_OPERAND_BUSY so far.
pub fn accept_retries() -> u64 {
    ACCEPT_RETRIES.load(Ordering::Relaxed)
}

/// TDCALL input and output registers.
#[derive(Clone, Copy, Debug, Default)]
pub struct Regs {
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
}

/// Issues a TDCALL with `regs`, returning the output registers.
pub fn tdcall(mut regs: Regs) -> Regs {
    // SAFETY: the TDCALL (patched to the doorbell) traps to the VMM, which
    // only reads and writes the registers listed here; no memory is
    // touched and the stack is not used.
    unsafe {
        asm!(
            "tdcall",
            inout("rax") regs.rax,
            inout("rcx") regs.rcx,
            inout("rdx") regs.rdx,
            inout("r8") regs.r8,
            inout("r9") regs.r9,
            inout("r10") regs.r10,
            inout("r11") regs.r11,
            inout("r12") regs.r12,
            inout("r13") regs.r13,
            inout("r14") regs.r14,
            inout("r15") regs.r15,
            options(nostack),
        );
    }
    regs
}

/// `TDG.MEM.PAGE.ACCEPT` of the page at `gpa` at `level`; returns RAX.
/// A TDX_OPERAND_BUSY answer is retried up to `accept_retry` times.
pub fn accept_page(gpa: u64, level: PageLevel) -> u64 {
    let rcx = accept::encode(gpa, level);
    finish_accept(rcx, accept_raw(rcx))
}

/// The rest of `accept_page` after a first answer `st` to operand `rcx`:
/// a TDX_OPERAND_BUSY answer is retried up to `accept_retry` times.
pub fn finish_accept(rcx: u64, mut st: u64) -> u64 {
    let budget = ACCEPT_RETRY.load(Ordering::Relaxed);
    let mut tries = 0;
    while abi::tdcall::status::code(st) == abi::tdcall::status::OPERAND_BUSY && tries < budget {
        tries += 1;
        ACCEPT_RETRIES.fetch_add(1, Ordering::Relaxed);
        st = accept_raw(rcx);
    }
    st
}

/// `TDG.MEM.PAGE.ACCEPT` of operand `rcx` through the registers the leaf
/// uses (RAX and RCX in, RAX out), once: for loops of 4 KiB accepts, where
/// in the emulated ring-0 profile every guest instruction costs about 1 us
/// and the full-register wrapper doubles a step. Callers pass any answer
/// but success to `finish_accept`.
#[inline(always)]
pub fn accept_lean(rcx: u64) -> u64 {
    let mut rax = leaf::MEM_PAGE_ACCEPT as u64;
    // SAFETY: the TDCALL (patched to the doorbell) traps to the VMM, which
    // answers in RAX; the other registers a TDCALL may write are declared
    // clobbered. No memory is touched and the stack is not used.
    unsafe {
        asm!(
            "tdcall",
            inout("rax") rax,
            inout("rcx") rcx => _,
            lateout("rdx") _,
            lateout("r8") _,
            lateout("r9") _,
            lateout("r10") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    rax
}

/// `TDG.MEM.PAGE.ACCEPT` with a raw RCX operand (for self-tests).
pub fn accept_raw(rcx: u64) -> u64 {
    tdcall(Regs {
        rax: leaf::MEM_PAGE_ACCEPT as u64,
        rcx,
        ..Default::default()
    })
    .rax
}

/// `TDG.VP.VEINFO.GET`: the VE info of the #VE being handled (RCX exit
/// reason, RDX qualification, R8 GLA, R9 GPA), cleared by the read.
pub fn ve_info() -> Regs {
    tdcall(Regs {
        rax: leaf::VP_VEINFO_GET as u64,
        ..Default::default()
    })
}

/// `TDG.VP.INFO`.
pub fn vp_info() -> Regs {
    tdcall(Regs {
        rax: leaf::VP_INFO as u64,
        ..Default::default()
    })
}

/// A TDCALL of an arbitrary leaf; returns RAX.
pub fn raw_leaf(rax: u64) -> u64 {
    tdcall(Regs {
        rax,
        ..Default::default()
    })
    .rax
}

/// A TDG.VP.VMCALL exposing R10-R15; returns the output registers.
pub fn vmcall(r10: u64, r11: u64, r12: u64, r13: u64, r14: u64, r15: u64) -> Regs {
    tdcall(Regs {
        rax: leaf::VP_VMCALL as u64,
        rcx: EXPOSE_R10_R15,
        r10,
        r11,
        r12,
        r13,
        r14,
        r15,
        ..Default::default()
    })
}

/// GHCI Instruction.IO: writes one byte to `port`.
pub fn io_write8(port: u16, value: u8) {
    vmcall(
        GHCI_STANDARD,
        ghci::INSTRUCTION_IO,
        1,
        ghci::IO_DIRECTION_WRITE,
        port as u64,
        value as u64,
    );
}

/// GHCI ReportFatalError with a message page at `page_gpa` (4 KiB aligned)
/// and, for a fault, the faulting instruction's RIP (this emulator's R12
/// bit 62 extension).
pub fn report_fatal_error(code: u32, page_gpa: u64, fault_rip: Option<u64>) {
    let rip_flag = if fault_rip.is_some() {
        ghci::FATAL_RIP_VALID
    } else {
        0
    };
    vmcall(
        GHCI_STANDARD,
        ghci::REPORT_FATAL_ERROR,
        code as u64 | ghci::FATAL_GPA_VALID | rip_flag,
        page_gpa,
        fault_rip.unwrap_or(0),
        0,
    );
}

/// GHCI Instruction.HLT with R12 (the interrupt-blocked flag) = 0, as this
/// VMM expects: the host parks this vCPU until an IPI reaches it
/// (`send_ipi`), for about 1 ms at most, and returns. The idle
/// loops of several vCPUs use it between polls so that a spinning AP does
/// not take the host CPU the others need (`hlt` itself cannot be used: the
/// guest may run in ring 3). Returns the call's status (R10).
pub fn hlt() -> u64 {
    vmcall(GHCI_STANDARD, ghci::INSTRUCTION_HLT, 0, 0, 0, 0).r10
}

/// Sends an IPI to the vCPU with x2APIC ID `apic_id` (GHCI
/// Instruction.WRMSR to the x2APIC ICR, as a TD's Linux does): it ends that
/// vCPU's `hlt`, or its next one. Returns the call's status (R10).
pub fn send_ipi(apic_id: u32) -> u64 {
    write_icr(u64::from(apic_id) << ghci::ICR_DEST_SHIFT)
}

/// Sends an IPI to every other vCPU (destination shorthand "all but
/// self"), after publishing something they may be halted waiting for.
pub fn send_ipi_all_but_self() -> u64 {
    write_icr(ghci::ICR_SHORTHAND_ALL_BUT_SELF << ghci::ICR_SHORTHAND_SHIFT)
}

/// Writes the x2APIC ICR with `target` (destination or shorthand) and our
/// wake vector.
fn write_icr(target: u64) -> u64 {
    let icr = target | ghci::WAKE_VECTOR;
    vmcall(
        GHCI_STANDARD,
        ghci::INSTRUCTION_WRMSR,
        ghci::X2APIC_ICR,
        icr,
        0,
        0,
    )
    .r10
}

/// The host's Secure-EPT leaf size (vendor call; 2 MiB if the host does
/// not say), for self-tests that predict accept statuses.
pub fn sept_level() -> abi::tdcall::SeptLevel {
    let r = vmcall(VENDOR_EMU, emu::SEPT_LEVEL, 0, 0, 0, 0);
    if r.r10 == 0 && r.r11 == 1 {
        abi::tdcall::SeptLevel::L4K
    } else {
        abi::tdcall::SeptLevel::L2M
    }
}

/// The guest-visible ABI version the host implements (`emu::ABI_VERSION`,
/// decoded with `abi::vmcall::abi_version`), or `None` when the host
/// refuses the call (it predates versioning).
pub fn abi_version() -> Option<u64> {
    let r = vmcall(VENDOR_EMU, emu::ABI_VERSION, 0, 0, 0, 0);
    (r.r10 == 0).then_some(r.r11)
}

/// Records a phase mark with the host.
pub fn mark(mark: Mark, arg: u64) {
    vmcall(VENDOR_EMU, emu::MARK, mark as u64, arg, 0, 0);
}

/// Asks the host to end the TD with `code`. Does not return.
pub fn shutdown(code: u32) -> ! {
    loop {
        vmcall(VENDOR_EMU, emu::SHUTDOWN, code as u64, 0, 0, 0);
    }
}

/// Tells the host where the system table is.
pub fn register_system_table(gpa: u64) {
    vmcall(VENDOR_EMU, emu::SYSTEM_TABLE, gpa, 0, 0, 0);
}

/// Reports a counter to the host.
pub fn counter(counter: abi::report::Counter, value: u64) {
    vmcall(VENDOR_EMU, emu::COUNTER, counter as u64, value, 0, 0);
}

/// Linux's `tdx_accept_memory`: accepts `[start, end)` trying 1 GiB, then
/// 2 MiB, then 4 KiB at each step; any non-zero status at 4 KiB (including
/// TDX_PAGE_ALREADY_ACCEPTED) is a failure, returned as `(gpa, status)`.
pub fn accept_memory_pages(start: u64, end: u64) -> Result<(), (u64, u64)> {
    let mut at = start;
    'outer: while at < end {
        for level in [PageLevel::L1G, PageLevel::L2M, PageLevel::L4K] {
            let size = level.size();
            if !at.is_multiple_of(size) || end - at < size {
                continue;
            }
            let st = accept_page(at, level);
            if st == 0 {
                at += size;
                continue 'outer;
            }
            if level == PageLevel::L4K {
                return Err((at, st));
            }
        }
        return Err((at, u64::MAX));
    }
    Ok(())
}

/// Assembly for a GHCI-standard TDG.VP.VMCALL from code that cannot call
/// `vmcall` (no stack, or before one): R11 = `$r11`, R12 = `$r12`, R13 =
/// `$r13` (operand placeholders or numbers), R14 = R15 = 0, R10-R15
/// exposed. The caller passes the operands `expose = const
/// abi::vmcall::EXPOSE_R10_R15`, `standard = const
/// abi::vmcall::GHCI_STANDARD`. Clobbers RAX, RCX and R10-R15.
#[macro_export]
macro_rules! ghci_vmcall_asm {
    ($r11:literal, $r12:literal, $r13:literal) => {
        concat!(
            "xor eax, eax\n",
            "mov ecx, {expose}\n",
            "mov r10d, {standard}\n",
            "mov r11d, ",
            $r11,
            "\n",
            "mov r12d, ",
            $r12,
            "\n",
            "mov r13d, ",
            $r13,
            "\n",
            "xor r14d, r14d\n",
            "xor r15d, r15d\n",
            "tdcall\n"
        )
    };
}
