//! The emulated TDCALL: leaf numbers, completion statuses, page levels, the
//! `TDG.MEM.PAGE.ACCEPT` operand, and the doorbell that carries a TDCALL to
//! the VMM.
//!
//! A guest issues a TDCALL as on TDX: RAX (leaf in bits 15:0, version in
//! bits 23:16) and the TDX input registers, then the TDCALL instruction
//! (`66 0F 01 CC`). KVM makes that #UD on a guest that is not a real TD, so
//! before the TD starts the VMM's loader writes [`TDCALL_PATCH`] over every
//! TDCALL in the guest's executable code: `out DOORBELL_PORT, al` and a
//! 2-byte NOP. The immediate port form keeps RDX free for TDX inputs. The
//! VMM reads and writes the vCPU's registers at that I/O exit and resumes
//! the guest after the `out`, with the status in RAX and outputs in the TDX
//! output registers; the NOP then runs and the code after it is unchanged.

/// I/O port of the TDCALL doorbell (immediate form, so it must fit in 8 bits).
pub const DOORBELL_PORT: u8 = 0xdc;

/// The TDCALL instruction's encoding (`66 0F 01 CC`).
pub const TDCALL_INSN: [u8; 4] = [0x66, 0x0f, 0x01, 0xcc];
/// Opcode of `out imm8, al`.
pub const OUT_IMM8_AL: u8 = 0xe6;
/// A 2-byte NOP (`66 90`, `xchg ax, ax`).
pub const NOP2: [u8; 2] = [0x66, 0x90];
/// What the loader writes over each TDCALL: `out DOORBELL_PORT, al` then a
/// 2-byte NOP, the same length, so the doorbell exit's RIP lands on the
/// NOP and the code after it is unchanged.
pub const TDCALL_PATCH: [u8; 4] = [OUT_IMM8_AL, DOORBELL_PORT, NOP2[0], NOP2[1]];
const _: () = assert!(TDCALL_PATCH.len() == TDCALL_INSN.len());

/// Leaf numbers (RAX bits 15:0).
pub mod leaf {
    pub const VP_VMCALL: u16 = 0;
    pub const VP_INFO: u16 = 1;
    pub const MR_RTMR_EXTEND: u16 = 2;
    pub const VP_VEINFO_GET: u16 = 3;
    pub const MR_REPORT: u16 = 4;
    pub const MEM_PAGE_ACCEPT: u16 = 6;
    pub const VM_RD: u16 = 7;
    pub const VM_WR: u16 = 8;
    pub const VP_RD: u16 = 9;
    pub const VP_WR: u16 = 10;
    pub const SYS_RD: u16 = 11;
    pub const MR_VERIFYREPORT: u16 = 22;
    pub const MEM_PAGE_ATTR_WR: u16 = 24;

    /// Human-readable leaf name for logs and reports.
    pub const fn name(leaf: u16) -> &'static str {
        match leaf {
            VP_VMCALL => "TDG.VP.VMCALL",
            VP_INFO => "TDG.VP.INFO",
            MR_RTMR_EXTEND => "TDG.MR.RTMR.EXTEND",
            VP_VEINFO_GET => "TDG.VP.VEINFO.GET",
            MR_REPORT => "TDG.MR.REPORT",
            MEM_PAGE_ACCEPT => "TDG.MEM.PAGE.ACCEPT",
            VM_RD => "TDG.VM.RD",
            VM_WR => "TDG.VM.WR",
            VP_RD => "TDG.VP.RD",
            VP_WR => "TDG.VP.WR",
            SYS_RD => "TDG.SYS.RD",
            MR_VERIFYREPORT => "TDG.MR.VERIFYREPORT",
            MEM_PAGE_ATTR_WR => "TDG.MEM.PAGE.ATTR.WR",
            _ => "unknown",
        }
    }
}

/// Splits RAX into (leaf, version); bits 63:24 must be zero.
pub const fn decode_rax(rax: u64) -> (u16, u8, u64) {
    ((rax & 0xffff) as u16, ((rax >> 16) & 0xff) as u8, rax >> 24)
}

/// TDX completion statuses (RAX on return). Only bits 63:32 identify the
/// status; bits 31:0 carry detail (an operand id or a page level).
pub mod status {
    pub const SUCCESS: u64 = 0;
    pub const OPERAND_INVALID: u64 = 0xC000_0100_0000_0000;
    pub const OPERAND_BUSY: u64 = 0x8000_0200_0000_0000;
    pub const PAGE_ALREADY_ACCEPTED: u64 = 0x0000_0B0A_0000_0000;
    pub const PAGE_SIZE_MISMATCH: u64 = 0xC000_0B0B_0000_0000;
    pub const NO_VALID_VE_INFO: u64 = 0xC000_0704_0000_0000;
    pub const EPT_WALK_FAILED: u64 = 0xC000_0B00_0000_0000;
    /// `TDG.MR.VERIFYREPORT`: the REPORTMACSTRUCT's MAC does not verify.
    pub const INVALID_REPORTMACSTRUCT: u64 = 0xC000_1001_0000_0000;

    /// Mask selecting the class and code (the part callers compare).
    pub const CODE_MASK: u64 = 0xFFFF_FFFF_0000_0000;
    /// Bit 63: the status is an error (clear for success and warnings).
    pub const ERROR_BIT: u64 = 1 << 63;

    /// Operand ids placed in the detail bits.
    pub const OPERAND_RAX: u64 = 0;
    pub const OPERAND_RCX: u64 = 1;
    pub const OPERAND_RDX: u64 = 2;
    pub const OPERAND_R8: u64 = 8;

    /// The class and code of a status, without its detail bits.
    pub const fn code(status: u64) -> u64 {
        status & CODE_MASK
    }

    /// The detail bits (operand id or level) of a status.
    pub const fn detail(status: u64) -> u64 {
        status & !CODE_MASK
    }

    /// Name of a status code (detail bits ignored).
    pub const fn name(status: u64) -> &'static str {
        match code(status) {
            SUCCESS => "TDX_SUCCESS",
            OPERAND_INVALID => "TDX_OPERAND_INVALID",
            OPERAND_BUSY => "TDX_OPERAND_BUSY",
            PAGE_ALREADY_ACCEPTED => "TDX_PAGE_ALREADY_ACCEPTED",
            PAGE_SIZE_MISMATCH => "TDX_PAGE_SIZE_MISMATCH",
            NO_VALID_VE_INFO => "TDX_NO_VALID_VE_INFO",
            EPT_WALK_FAILED => "TDX_EPT_WALK_FAILED",
            INVALID_REPORTMACSTRUCT => "TDX_INVALID_REPORTMACSTRUCT",
            _ => "unknown",
        }
    }
}

/// Secure-EPT page levels as TDX encodes them (RCX bits 2:0 of an accept).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PageLevel {
    /// 4 KiB.
    L4K = 0,
    /// 2 MiB.
    L2M = 1,
    /// 1 GiB (rejected by the accept leaf of TDX module 1.5).
    L1G = 2,
}

impl PageLevel {
    /// Bytes covered by one page of this level.
    pub const fn size(self) -> u64 {
        4096u64 << (9 * self as u32)
    }

    /// Decodes a level number; `None` for values above 1 GiB.
    pub const fn from_bits(bits: u64) -> Option<Self> {
        match bits {
            0 => Some(PageLevel::L4K),
            1 => Some(PageLevel::L2M),
            2 => Some(PageLevel::L1G),
            _ => None,
        }
    }

    /// Name for logs and reports.
    pub const fn name(self) -> &'static str {
        match self {
            PageLevel::L4K => "4k",
            PageLevel::L2M => "2m",
            PageLevel::L1G => "1g",
        }
    }
}

/// The page sizes an accept can succeed at: 4 KiB and 2 MiB (TDX module
/// 1.5 rejects a 1 GiB accept as an invalid operand). This is what a page
/// state, a status's level detail and the host's zeroing mean by a level;
/// `PageLevel` is what a guest may write in RCX.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum AcceptLevel {
    /// 4 KiB.
    L4K = 0,
    /// 2 MiB.
    L2M = 1,
}

impl AcceptLevel {
    /// Bytes covered by one page of this level.
    pub const fn size(self) -> u64 {
        self.page_level().size()
    }

    /// The level number as TDX encodes it (RCX bits 2:0, status detail).
    pub const fn bits(self) -> u64 {
        self as u64
    }

    /// The same level as a Secure-EPT `PageLevel`.
    pub const fn page_level(self) -> PageLevel {
        match self {
            AcceptLevel::L4K => PageLevel::L4K,
            AcceptLevel::L2M => PageLevel::L2M,
        }
    }

    /// The accept level of `level`; `None` for 1 GiB.
    pub const fn of(level: PageLevel) -> Option<Self> {
        match level {
            PageLevel::L4K => Some(AcceptLevel::L4K),
            PageLevel::L2M => Some(AcceptLevel::L2M),
            PageLevel::L1G => None,
        }
    }

    /// Name for logs and reports.
    pub const fn name(self) -> &'static str {
        self.page_level().name()
    }
}

impl From<AcceptLevel> for PageLevel {
    fn from(level: AcceptLevel) -> Self {
        level.page_level()
    }
}

crate::named_enum! {
    /// The host's mapping granularity for private memory: the leaf size of
    /// the Secure EPT. With 4 KiB leaves (KVM's TDX support today) a 2 MiB
    /// accept of a pending range answers `TDX_PAGE_SIZE_MISMATCH | 2M`, and
    /// only 4 KiB accepts succeed. Named `2m` and `4k` (`--sept-level`, the
    /// report), as `PageLevel` names its levels.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub enum SeptLevel {
        /// 2 MiB leaves: accepts of either size succeed.
        #[default]
        L2M => PageLevel::L2M.name(),
        /// 4 KiB leaves (KVM's TDX support today).
        L4K => PageLevel::L4K.name(),
    }
}

/// The register a TDX status's operand detail names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operand {
    /// RAX (the leaf and version).
    Rax,
    /// RCX.
    Rcx,
    /// RDX.
    Rdx,
    /// R8.
    R8,
}

impl Operand {
    /// The operand id TDX puts in a status's detail bits.
    pub const fn id(self) -> u64 {
        match self {
            Operand::Rax => status::OPERAND_RAX,
            Operand::Rcx => status::OPERAND_RCX,
            Operand::Rdx => status::OPERAND_RDX,
            Operand::R8 => status::OPERAND_R8,
        }
    }
}

/// A TDCALL's completion status as the emulated TDX module answers it,
/// typed; `raw` is the RAX value the guest sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// `TDX_SUCCESS`.
    Success,
    /// `TDX_OPERAND_INVALID` naming the operand.
    OperandInvalid(Operand),
    /// `TDX_OPERAND_BUSY` naming the operand (nothing changed).
    OperandBusy(Operand),
    /// `TDX_PAGE_ALREADY_ACCEPTED` (a warning) with the level it was
    /// accepted at.
    PageAlreadyAccepted(AcceptLevel),
    /// `TDX_PAGE_SIZE_MISMATCH` with the level asked for.
    PageSizeMismatch(AcceptLevel),
    /// `TDX_NO_VALID_VE_INFO`.
    NoValidVeInfo,
    /// `TDX_INVALID_REPORTMACSTRUCT` (no detail).
    InvalidReportMacStruct,
}

impl Status {
    /// The RAX value: the status code with its detail bits.
    pub const fn raw(self) -> u64 {
        match self {
            Status::Success => status::SUCCESS,
            Status::OperandInvalid(op) => status::OPERAND_INVALID | op.id(),
            Status::OperandBusy(op) => status::OPERAND_BUSY | op.id(),
            Status::PageAlreadyAccepted(level) => status::PAGE_ALREADY_ACCEPTED | level.bits(),
            Status::PageSizeMismatch(level) => status::PAGE_SIZE_MISMATCH | level.bits(),
            Status::NoValidVeInfo => status::NO_VALID_VE_INFO,
            Status::InvalidReportMacStruct => status::INVALID_REPORTMACSTRUCT,
        }
    }

    /// Whether this is `TDX_OPERAND_BUSY` (the guest retries).
    pub const fn is_busy(self) -> bool {
        matches!(self, Status::OperandBusy(_))
    }
}

/// The RCX operand of `TDG.MEM.PAGE.ACCEPT`: GPA in bits 51:12, level in bits
/// 2:0, bits 11:3 reserved (must be zero).
pub mod accept {
    use super::{AcceptLevel, PageLevel};
    use crate::layout::RamLayout;
    use crate::PAGE_4K;

    /// Level field.
    pub const LEVEL_MASK: u64 = 0x7;
    /// Reserved bits 11:3.
    pub const RESERVED_MASK: u64 = 0xff8;

    /// Encodes an accept operand.
    pub const fn encode(gpa: u64, level: PageLevel) -> u64 {
        gpa | level as u64
    }

    /// Why an operand is invalid.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Invalid {
        ReservedBits,
        Level,
        Misaligned,
        SharedOrBeyondGpaw,
        NotRam,
    }

    /// Validates an accept operand against the TD's RAM: `(gpa, level)`,
    /// or why it is invalid. The checks, in the order the emulated module
    /// makes them (every failure answers `TDX_OPERAND_INVALID | RCX`):
    /// reserved bits 11:3 zero; level 4 KiB or 2 MiB; the GPA aligned to
    /// the level; below the shared bit; the whole page in RAM.
    pub fn decode(layout: &RamLayout, rcx: u64) -> Result<(u64, AcceptLevel), Invalid> {
        if rcx & RESERVED_MASK != 0 {
            return Err(Invalid::ReservedBits);
        }
        let Some(level) = PageLevel::from_bits(rcx & LEVEL_MASK).and_then(AcceptLevel::of) else {
            return Err(Invalid::Level);
        };
        let gpa = rcx & !(PAGE_4K - 1);
        if !gpa.is_multiple_of(level.size()) {
            return Err(Invalid::Misaligned);
        }
        if gpa >= layout.shared_bit() {
            return Err(Invalid::SharedOrBeyondGpaw);
        }
        if !layout.is_ram(gpa, level.size()) {
            return Err(Invalid::NotRam);
        }
        Ok((gpa, level))
    }
}

/// The virtualization exception (#VE) a TD without SEPT_VE_DISABLE takes
/// on an access to private memory that is not accepted, and the VE info
/// `TDG.VP.VEINFO.GET` returns for it: RCX = exit reason, RDX = exit
/// qualification, R8 = guest linear address, R9 = GPA, R10 = instruction
/// length (bits 31:0) and information (bits 63:32). Reading it clears it.
pub mod ve {
    /// The #VE exception vector.
    pub const VECTOR: u8 = 20;
    /// VE info exit reason of an EPT violation.
    pub const EXIT_REASON_EPT_VIOLATION: u64 = 48;
    /// EPT-violation exit qualification: the access was a data read.
    pub const QUAL_READ: u64 = 1 << 0;
    /// The access was a data write.
    pub const QUAL_WRITE: u64 = 1 << 1;
    /// The access was an instruction fetch.
    pub const QUAL_FETCH: u64 = 1 << 2;
    /// The guest linear address field is valid (never set by this VMM:
    /// KVM's exit gives it only the GPA; R8 reads 0).
    pub const QUAL_GLA_VALID: u64 = 1 << 7;
}

/// Outputs of `TDG.VP.INFO`.
pub mod vp_info {
    /// TD attribute bit 28: SEPT_VE_DISABLE (an access to a pending page
    /// terminates the TD instead of raising #VE).
    pub const ATTR_SEPT_VE_DISABLE: u64 = 1 << 28;
    /// TD attribute bit 0: DEBUG.
    pub const ATTR_DEBUG: u64 = 1 << 0;
    /// The attributes a TD has unless its VMM says otherwise (RDX of
    /// TDG.VP.INFO, TDINFO.ATTRIBUTES of a report).
    pub const DEFAULT_ATTRIBUTES: u64 = ATTR_SEPT_VE_DISABLE;
    /// GPAW values TDX reports in RCX bits 5:0.
    pub const GPAW_48: u32 = 48;
    pub const GPAW_52: u32 = 52;
    /// RCX bits holding the GPAW.
    pub const GPAW_MASK: u64 = 0x3f;
    /// Most vCPUs a TD of this VMM has (R8's MAX_VCPUS is at most this):
    /// the firmware's AP stacks, the kernel's per-CPU arrays and the
    /// VMM's per-vCPU bit masks (one `u64`) are sized by it.
    pub const MAX_VCPUS: u32 = 64;
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // small test values
mod tests {
    use super::*;

    #[test]
    fn status_values_are_the_tdx_module_ones() {
        assert_eq!(status::OPERAND_INVALID, 0xC000010000000000);
        assert_eq!(status::PAGE_ALREADY_ACCEPTED, 0x00000B0A00000000);
        assert_eq!(status::PAGE_SIZE_MISMATCH, 0xC0000B0B00000000);
        assert_eq!(status::OPERAND_BUSY, 0x8000020000000000);
        assert_eq!(status::NO_VALID_VE_INFO, 0xC000070400000000);
        // ALREADY_ACCEPTED is a warning: bit 63 clear.
        assert_eq!(status::PAGE_ALREADY_ACCEPTED & status::ERROR_BIT, 0);
        assert_ne!(status::PAGE_SIZE_MISMATCH & status::ERROR_BIT, 0);
    }

    #[test]
    fn detail_bits_do_not_change_the_code() {
        let s = status::OPERAND_INVALID | status::OPERAND_RCX;
        assert_eq!(s, 0xC000010000000001);
        assert_eq!(status::code(s), status::OPERAND_INVALID);
        assert_eq!(status::detail(s), 1);
        assert_eq!(
            status::name(status::PAGE_SIZE_MISMATCH | 1),
            "TDX_PAGE_SIZE_MISMATCH"
        );
    }

    #[test]
    fn levels_and_operands() {
        assert_eq!(PageLevel::L4K.size(), 4096);
        assert_eq!(PageLevel::L2M.size(), 2 << 20);
        assert_eq!(PageLevel::L1G.size(), 1 << 30);
        assert_eq!(PageLevel::from_bits(3), None);
        assert_eq!(accept::encode(0x20_0000, PageLevel::L2M), 0x20_0001);
        assert_eq!(decode_rax(0x0001_0006), (6, 1, 0));
        assert_eq!(decode_rax(1 << 24), (0, 0, 1));
    }

    #[test]
    fn typed_statuses_are_the_raw_ones() {
        assert_eq!(Status::Success.raw(), status::SUCCESS);
        assert_eq!(
            Status::OperandInvalid(Operand::Rcx).raw(),
            status::OPERAND_INVALID | status::OPERAND_RCX
        );
        assert_eq!(
            Status::OperandBusy(Operand::Rcx).raw(),
            status::OPERAND_BUSY | status::OPERAND_RCX
        );
        assert_eq!(
            Status::OperandInvalid(Operand::Rax).raw(),
            status::OPERAND_INVALID
        );
        for level in [AcceptLevel::L4K, AcceptLevel::L2M] {
            let page = PageLevel::from(level);
            assert_eq!(level.size(), page.size());
            assert_eq!(AcceptLevel::of(page), Some(level));
            assert_eq!(
                Status::PageAlreadyAccepted(level).raw(),
                status::PAGE_ALREADY_ACCEPTED | page as u64
            );
            assert_eq!(
                Status::PageSizeMismatch(level).raw(),
                status::PAGE_SIZE_MISMATCH | page as u64
            );
        }
        assert_eq!(AcceptLevel::of(PageLevel::L1G), None);
        assert_eq!(Status::NoValidVeInfo.raw(), status::NO_VALID_VE_INFO);
        assert_eq!(
            Status::InvalidReportMacStruct.raw(),
            0xC000100100000000,
            "tdx_error_codes_defs.h"
        );
    }
}
