//! `TDG.VP.VMCALL` (TDCALL leaf 0): the services a TD asks of its host, in the
//! GHCI register convention, plus this emulator's vendor-specific calls.
//!
//! RCX is the bitmap of GPRs the guest exposes to the host (bit n = GPR n in
//! the order RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8..R15). R10 = 0 selects
//! a GHCI-standard call whose sub-function is in R11; a non-zero R10 selects a
//! vendor-specific call. The call's own status comes back in R10 (RAX only
//! says whether the TDCALL itself was well formed).

/// GPR numbers as used by the RCX bitmap.
pub mod gpr {
    pub const RAX: u32 = 0;
    pub const RCX: u32 = 1;
    pub const RDX: u32 = 2;
    pub const RBX: u32 = 3;
    pub const RSP: u32 = 4;
    pub const RBP: u32 = 5;
    pub const RSI: u32 = 6;
    pub const RDI: u32 = 7;
    pub const R8: u32 = 8;
    pub const R9: u32 = 9;
    pub const R10: u32 = 10;
    pub const R11: u32 = 11;
    pub const R12: u32 = 12;
    pub const R13: u32 = 13;
    pub const R14: u32 = 14;
    pub const R15: u32 = 15;
}

/// The bitmap bit of one GPR.
pub const fn reg_bit(gpr: u32) -> u64 {
    1 << gpr
}

/// Bits a guest may set in RCX: every GPR but RAX, RCX and RSP. Any other bit
/// set makes the TDCALL fail with `TDX_OPERAND_INVALID | RCX`.
pub const EXPOSABLE_MASK: u64 = 0xffec;

/// R10..R15: what every call in this file needs exposed.
pub const EXPOSE_R10_R15: u64 = 0xfc00;

/// R10 value selecting a GHCI-standard call.
pub const GHCI_STANDARD: u64 = 0;

/// GHCI sub-functions (R11 when R10 = 0).
pub mod ghci {
    pub const INSTRUCTION_CPUID: u64 = 10;
    pub const INSTRUCTION_HLT: u64 = 12;
    pub const INSTRUCTION_IO: u64 = 30;
    pub const INSTRUCTION_RDMSR: u64 = 31;
    pub const INSTRUCTION_WRMSR: u64 = 32;
    pub const VE_REQUEST_MMIO: u64 = 48;
    pub const GET_TD_VM_CALL_INFO: u64 = 0x10000;
    /// MapGPA: R12 = start GPA (shared bit set: convert to shared; clear:
    /// to private), R13 = length, both 4 KiB aligned. RETRY comes back
    /// with R11 = the GPA (shared bit as in R12) to call again from.
    pub const MAP_GPA: u64 = 0x10001;
    pub const GET_QUOTE: u64 = 0x10002;
    pub const REPORT_FATAL_ERROR: u64 = 0x10003;
    pub const SETUP_EVENT_NOTIFY_INTERRUPT: u64 = 0x10004;

    /// Instruction.WRMSR: R12 = MSR index, R13 = value. The host provides
    /// one MSR, the x2APIC interrupt command register (`X2APIC_ICR`): a
    /// write sends an IPI, which ends the target's Instruction.HLT (the
    /// only interrupt this host emulates). Any other MSR is refused.
    pub const X2APIC_ICR: u64 = 0x830;
    /// ICR bits 63:32: the destination x2APIC ID (the vCPU index).
    pub const ICR_DEST_SHIFT: u32 = 32;
    /// ICR bits 19:18: destination shorthand.
    pub const ICR_SHORTHAND_SHIFT: u32 = 18;
    pub const ICR_SHORTHAND_NONE: u64 = 0;
    pub const ICR_SHORTHAND_SELF: u64 = 1;
    pub const ICR_SHORTHAND_ALL: u64 = 2;
    pub const ICR_SHORTHAND_ALL_BUT_SELF: u64 = 3;
    /// The vector our guests' IPIs carry (they take no interrupts: an IPI
    /// only ends a halt).
    pub const WAKE_VECTOR: u64 = 0xf0;

    /// Instruction.IO: R12 = access size (1, 2 or 4), R13 = direction, R14 =
    /// port, R15 = data to write; a read returns its data in R11.
    pub const IO_DIRECTION_READ: u64 = 0;
    pub const IO_DIRECTION_WRITE: u64 = 1;

    /// ReportFatalError: R12 bits 31:0 = error code, bit 63 = R13 holds the
    /// 4 KiB-aligned GPA of a NUL-terminated message page.
    pub const FATAL_GPA_VALID: u64 = 1 << 63;
    /// This emulator's extension of ReportFatalError (bits 62:32 are
    /// reserved in the GHCI): R12 bit 62 set means R14 holds the RIP of
    /// the faulting instruction, for fatal errors raised by an exception
    /// handler. A guest that leaves the bit clear is unaffected.
    pub const FATAL_RIP_VALID: u64 = 1 << 62;
    /// Largest message the host reads from a fatal-error page.
    pub const FATAL_MESSAGE_MAX: usize = 4096;

    /// Instruction.RDMSR (R12 = MSR; R11 = value) and Instruction.WRMSR
    /// also reach each vCPU's x2APIC spurious-interrupt vector register.
    pub const X2APIC_SVR: u64 = 0x80f;
    /// Its value at reset (vector 0xff, APIC software-disabled).
    pub const X2APIC_SVR_RESET: u64 = 0xff;
    /// The SVR bits a write may set: vector (7:0), APIC enable (8),
    /// focus checking (9), EOI-broadcast suppression (12). Any other bit
    /// set is a #GP on hardware, `OPERAND_INVALID` here.
    pub const X2APIC_SVR_WRITABLE: u64 = 0x13ff;

    /// Instruction.CPUID: R12 = leaf (EAX), R13 = subleaf (ECX), both
    /// 32-bit; R12-R15 return EAX, EBX, ECX, EDX. In the topology leaves
    /// EDX is the vCPU's x2APIC ID, which is its index.
    pub const CPUID_LEAF_TOPOLOGY: u32 = 0xb;
    pub const CPUID_LEAF_TOPOLOGY_V2: u32 = 0x1f;

    /// SetupEventNotifyInterrupt: R12 = the vector, 32 to 255.
    pub const EVENT_NOTIFY_VECTOR_MIN: u64 = 32;
    pub const EVENT_NOTIFY_VECTOR_MAX: u64 = 255;
}

/// Error codes the guests put in ReportFatalError's R12 (bits 31:0).
pub mod fatal_code {
    pub const PANIC: u32 = 1;
    pub const EXCEPTION: u32 = 2;
    pub const BAD_HOB: u32 = 3;
    pub const ACCEPT_FAILED: u32 = 4;
    pub const NOT_ZERO: u32 = 5;
    pub const BAD_CMDLINE: u32 = 6;
    /// The host's ABI version (`emu::ABI_VERSION`) is not one the guest
    /// was built for.
    pub const ABI_VERSION: u32 = 7;
    /// A #VE reported an EPT violation on private memory (an access to
    /// memory that is not accepted in a TD without SEPT_VE_DISABLE): fatal,
    /// as Linux's `virt_exception_kernel` makes it.
    pub const VIRT_EXCEPTION: u32 = 8;

    /// Name of a code for reports.
    pub const fn name(code: u32) -> &'static str {
        match code {
            PANIC => "panic",
            EXCEPTION => "exception",
            BAD_HOB => "bad TD HOB",
            ACCEPT_FAILED => "accept failed",
            NOT_ZERO => "accepted memory not zero",
            BAD_CMDLINE => "bad command line",
            ABI_VERSION => "ABI version mismatch",
            VIRT_EXCEPTION => "#VE on private memory",
            _ => "unknown",
        }
    }
}

/// VMCALL completion statuses (R10 on return).
pub mod vmcall_status {
    pub const SUCCESS: u64 = 0;
    pub const RETRY: u64 = 1;
    pub const OPERAND_INVALID: u64 = 0x8000_0000_0000_0000;
    pub const GPA_INUSE: u64 = 0x8000_0000_0000_0001;
    pub const ALIGN_ERROR: u64 = 0x8000_0000_0000_0002;
    /// The host does not provide this sub-function (GHCI 1.5: tells it
    /// apart from a bad operand of one it provides).
    pub const SUBFUNC_UNSUPPORTED: u64 = 0x8000_0000_0000_0003;
}

/// R10 value selecting this emulator's vendor-specific calls ("EMU").
pub const VENDOR_EMU: u64 = 0x0055_4d45;

/// Vendor-specific sub-functions (R11 when R10 = `VENDOR_EMU`).
pub mod emu {
    /// Stop the TD cleanly: R12 = exit code (bits 31:0).
    pub const SHUTDOWN: u64 = 1;
    /// Record a phase mark: R12 = mark id (`report::Mark`), R13 = argument.
    /// The host timestamps it on arrival.
    pub const MARK: u64 = 2;
    /// Tell the host where the EFI system table is: R12 = GPA. The host
    /// finds the unaccepted-memory table through it to cross-check.
    pub const SYSTEM_TABLE: u64 = 3;
    /// Report a guest counter: R12 = counter id (`report::Counter`), R13 =
    /// value (the host keeps the last value).
    pub const COUNTER: u64 = 4;
    /// Write console text in one call: R12 = GPA of the bytes (accepted
    /// memory), R13 = their length (1 to `CONSOLE_WRITE_MAX`). The host
    /// feeds them to COM1's transmit register, exactly as that many
    /// Instruction.IO writes would, in one exit instead of one per byte
    /// (each costs a full TD exit: tens of microseconds on some hosts).
    pub const CONSOLE_WRITE: u64 = 5;
    /// Most bytes one `CONSOLE_WRITE` carries.
    pub const CONSOLE_WRITE_MAX: u64 = 256;
    /// The host's Secure-EPT leaf size (`--sept-level`), for self-tests
    /// that predict accept statuses: R11 = 0 for 2 MiB, 1 for 4 KiB. (A
    /// real TD cannot ask; it learns it from the statuses.)
    pub const SEPT_LEVEL: u64 = 6;
    /// The guest-visible ABI version the host implements: R11 =
    /// `abi_version::CURRENT` (major in bits 31:16, minor in bits 15:0).
    /// A host that answers R10 = `TDG.VP.VMCALL_INVALID_OPERAND` predates
    /// versioning.
    pub const ABI_VERSION: u64 = 7;
    /// A test hook for hostile-host chaos: the host removes the accepted
    /// private 4 KiB page at R12 now (TDH.MEM.PAGE.REMOVE: content and host
    /// memory gone, pending again), as `--inject remove` does at random.
    /// R12 not an accepted private RAM page: `OPERAND_INVALID`, nothing
    /// removed.
    pub const REMOVE_PAGE: u64 = 8;
}

/// The version of the guest-visible ABI (`docs/guest-abi.md`): every leaf,
/// VMCALL, status, register, layout and id a guest relies on. The major
/// number changes when any of them changes meaning or goes away, the minor
/// when something is added (a vendor call, a counter or mark id, a fatal
/// code). A guest runs on a host with its own major number and uses only
/// what the smaller of the two minor numbers includes.
pub mod abi_version {
    /// Major version.
    pub const MAJOR: u16 = 1;
    /// Minor version.
    pub const MINOR: u16 = 5;
    /// `MAJOR.MINOR` as `emu::ABI_VERSION` returns it in R11.
    pub const CURRENT: u64 = encode(MAJOR, MINOR);

    /// Encodes a version: major in bits 31:16, minor in bits 15:0.
    pub const fn encode(major: u16, minor: u16) -> u64 {
        (major as u64) << 16 | minor as u64
    }

    /// The major number of an encoded version.
    pub const fn major(version: u64) -> u16 {
        ((version >> 16) & 0xffff) as u16
    }

    /// The minor number of an encoded version.
    pub const fn minor(version: u64) -> u16 {
        (version & 0xffff) as u16
    }

    /// True when a guest built for `CURRENT` may run on a host reporting
    /// `host`: same major number, and no bits set above bit 31.
    pub const fn compatible(host: u64) -> bool {
        host >> 32 == 0 && major(host) == MAJOR
    }
}

/// The serial port the guests' console writes go to (COM1, a 16550).
pub const COM1_BASE: u16 = 0x3f8;
/// Number of registers of the 16550.
pub const COM1_LEN: u16 = 8;

/// The CMOS/RTC index port (bits 6:0 select a byte of CMOS RAM; bit 7,
/// NMI disable, is ignored).
pub const CMOS_INDEX_PORT: u16 = 0x70;
/// The CMOS/RTC data port: the selected byte.
pub const CMOS_DATA_PORT: u16 = 0x71;
/// Bytes of CMOS RAM.
pub const CMOS_LEN: usize = 128;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abi_version_encoding() {
        assert_eq!(abi_version::encode(1, 0), 0x1_0000);
        assert_eq!(abi_version::encode(0xabcd, 0x1234), 0xabcd_1234);
        let v = abi_version::CURRENT;
        assert_eq!(
            (abi_version::major(v), abi_version::minor(v)),
            (abi_version::MAJOR, abi_version::MINOR)
        );
        assert!(abi_version::compatible(v));
        assert!(abi_version::compatible(abi_version::encode(
            abi_version::MAJOR,
            abi_version::MINOR + 1
        )));
        assert!(!abi_version::compatible(abi_version::encode(
            abi_version::MAJOR + 1,
            0
        )));
        assert!(!abi_version::compatible(v | 1 << 32));
        assert!(!abi_version::compatible(0));
    }

    #[test]
    fn vendor_functions_and_fatal_codes_are_distinct() {
        let f = [
            emu::SHUTDOWN,
            emu::MARK,
            emu::SYSTEM_TABLE,
            emu::COUNTER,
            emu::CONSOLE_WRITE,
            emu::SEPT_LEVEL,
            emu::ABI_VERSION,
        ];
        for (i, n) in f.iter().enumerate() {
            assert_eq!(*n, i as u64 + 1, "vendor functions are numbered from 1");
        }
        assert_eq!(
            fatal_code::name(fatal_code::ABI_VERSION),
            "ABI version mismatch"
        );
    }
}
