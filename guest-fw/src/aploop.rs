//! The AP loop the OS sees: position-independent assembly that the BSP
//! copies into the page right after the published wakeup mailbox (both
//! in memory the OS never reuses), so the APs can wait there after the
//! firmware's own code and stacks are handed to the kernel. It implements
//! the contract documented in `abi::acpi`: WAKEUP and TEST for the AP's
//! APIC ID (= its vCPU index), the reset vector (offset 0 of the code
//! page), idling with GHCI Instruction.HLT between polls. It uses no stack
//! and no memory but the mailbox.

use crate::mp::SPIN_POLLS;
use abi::acpi::{command, firmware_area as fw, mailbox_offset, MAILBOX_SIZE};
use abi::tdcall::leaf;
use abi::vmcall::{ghci, EXPOSE_R10_R15, GHCI_STANDARD};

// Register use: RBX = mailbox, RDI = this AP's index (its APIC ID), EBP =
// polls left before the next HLT. The doorbell (`out`) preserves RBX, RBP,
// RSI and RDI; TDG.VP.INFO writes RCX, RDX and R8-R11, a VMCALL R10-R15.
core::arch::global_asm!(
    ".pushsection .text.fw_ap_loop, \"ax\"",
    ".balign 16",
    ".global fw_ap_loop_start",
    "fw_ap_loop_start:",
    // Reset vector: learn the index again (TDG.VP.INFO R9). If the call
    // fails, use an index no command can address and stay parked.
    "mov eax, {vp_info}",
    "tdcall",
    "mov rdi, r9",
    "test rax, rax",
    "jz 1f",
    "mov rdi, -1",
    "1:",
    // Entry from the firmware, RDI = index.
    ".global fw_ap_loop_park",
    "fw_ap_loop_park:",
    "lea rbx, [rip + fw_ap_loop_start]",
    "sub rbx, {page}",
    "lock inc qword ptr [rbx + {arrived}]",
    // The BSP may be halted waiting for the arrival: IPI vCPU 0 (GHCI
    // Instruction.WRMSR, R12 = the x2APIC ICR, R13 = destination 0).
    guest_rt::ghci_vmcall_asm!("{wrmsr}", "{icr}", "{ipi_vector}"),
    "2:",
    "mov ebp, {polls}",
    "3:",
    "movzx eax, word ptr [rbx + {cmd}]",
    "test eax, eax",
    "jz 4f",
    "cmp dword ptr [rbx + {apic_id}], edi",
    "je 5f",
    "4:",
    "pause",
    "dec ebp",
    "jnz 3b",
    // GHCI Instruction.HLT: TDG.VP.VMCALL, R10 = 0, R11 = HLT, R12 = 0.
    guest_rt::ghci_vmcall_asm!("{hlt}", "0", "0"),
    "jmp 2b",
    // A command for this AP (EAX).
    "5:",
    "cmp eax, {wakeup}",
    "je 6f",
    "cmp eax, {test}",
    "jne 4b",
    "mov word ptr [rbx + {cmd}], 0",
    "jmp 4b",
    // WAKEUP: read the vector, then acknowledge (x86 stores are not
    // reordered before earlier loads: this is a store-release), then jump
    // with RDI = APIC ID.
    "6:",
    "mov rax, qword ptr [rbx + {vector}]",
    "mov word ptr [rbx + {cmd}], 0",
    "jmp rax",
    ".global fw_ap_loop_end",
    "fw_ap_loop_end:",
    ".popsection",
    vp_info = const leaf::VP_INFO,
    page = const MAILBOX_SIZE,
    arrived = const fw::ARRIVED,
    polls = const SPIN_POLLS,
    cmd = const mailbox_offset::COMMAND,
    apic_id = const mailbox_offset::APIC_ID,
    vector = const mailbox_offset::WAKEUP_VECTOR,
    expose = const EXPOSE_R10_R15,
    standard = const GHCI_STANDARD,
    hlt = const ghci::INSTRUCTION_HLT,
    wrmsr = const ghci::INSTRUCTION_WRMSR,
    icr = const ghci::X2APIC_ICR,
    ipi_vector = const ghci::WAKE_VECTOR,
    wakeup = const command::WAKEUP,
    test = const command::TEST,
);

extern "C" {
    static fw_ap_loop_start: u8;
    static fw_ap_loop_park: u8;
    static fw_ap_loop_end: u8;
}

/// Where the loop's entries are once installed.
#[derive(Clone, Copy, Debug)]
pub struct Installed {
    pub mailbox: u64,
    /// The reset vector (offset 0 of the code page).
    pub reset_vector: u64,
    /// Where the firmware sends its APs (RDI = index).
    pub park: u64,
}

/// Zeroes the mailbox page at `mailbox` and copies the loop into the page
/// after it. Both pages must be the caller's, accepted and identity-mapped.
pub fn install(mailbox: u64) -> Installed {
    // Labels of the assembly above; only their addresses are taken.
    let start = core::ptr::addr_of!(fw_ap_loop_start) as u64;
    let park = core::ptr::addr_of!(fw_ap_loop_park) as u64;
    let end = core::ptr::addr_of!(fw_ap_loop_end) as u64;
    let len = end - start;
    assert!(len <= MAILBOX_SIZE, "the AP loop does not fit in a page");
    let code = mailbox + MAILBOX_SIZE;
    // SAFETY: the caller owns both pages (fresh firmware allocations); the
    // source is the firmware's own code, `len` bytes long.
    unsafe {
        core::ptr::write_bytes(mailbox as *mut u8, 0, 2 * abi::to_usize(MAILBOX_SIZE));
        core::ptr::copy_nonoverlapping(start as *const u8, code as *mut u8, abi::to_usize(len));
    }
    Installed {
        mailbox,
        reset_vector: code,
        park: code + (park - start),
    }
}
