//! A TDCALL decoded once, at its doorbell exit: the leaf as an enum with
//! typed operands. RAX (leaf, version, reserved bits), an accept's RCX,
//! the measurement leaves' RCX, RDX and R8 and a VMCALL's exposed
//! registers are read here and nowhere else; every later step matches on
//! `Tdcall`. An operand check the TDX module makes only after it has
//! touched guest memory stays in the typed operand as a `Result`, so the
//! handler answers in the module's order.
//!
//! `TDG.MEM.PAGE.ACCEPT` is apart from the other leaves because it runs
//! its own locking (`accept::accept_on_vcpu`: the Secure-EPT entry lock,
//! then the state lock twice at most); every other leaf is a `Leaf`,
//! answered under one acquisition of the TD's state lock (`dispatch`).

use crate::memory::layout::RamLayout;
use crate::tdx::event::AcceptRequest;
use abi::tdcall::{decode_rax, leaf, Operand};
use abi::tdreport::{
    EXTEND_ALIGN, NUM_RTMRS, REPORTDATA_LEN, REPORTMACSTRUCT_LEN, SUBTYPE_TDX, TDREPORT_LEN,
};
use abi::vmcall::{gpr, reg_bit, EXPOSABLE_MASK};
use kvm_bindings::kvm_regs;

/// One TDCALL, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tdcall {
    /// `TDG.MEM.PAGE.ACCEPT` and its RCX operand, checked against RAM.
    Accept(AcceptRequest),
    /// Any other leaf.
    Leaf(Leaf),
}

/// A TDCALL other than an accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leaf {
    /// `TDG.VP.INFO`.
    VpInfo,
    /// `TDG.VP.VEINFO.GET`.
    VeInfoGet,
    /// `TDG.VP.VMCALL` with the registers RCX exposes to the host.
    VpVmcall(VmcallInputs),
    /// `TDG.MR.RTMR.EXTEND`.
    RtmrExtend(RtmrExtend),
    /// `TDG.MR.REPORT`.
    Report(ReportRequest),
    /// `TDG.MR.VERIFYREPORT`: RCX, the REPORTMACSTRUCT (256-aligned,
    /// private).
    VerifyReport(GuestGpa),
    /// A leaf this module does not emulate (a TDX leaf or not).
    NotEmulated(u16),
    /// An operand the leaf cannot take: RAX with version or reserved
    /// bits set, or a VMCALL exposing registers GHCI does not allow.
    BadOperand { leaf: u16, operand: Operand },
}

/// A memory operand that passed the TDX module's checks on the number
/// (`check_gpa_validity` and the leaf's alignment): aligned, below 2^GPAW,
/// and private if the leaf takes only private memory. `gpa` is without
/// the shared bit, which `shared` says was set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestGpa {
    pub gpa: u64,
    pub shared: bool,
}

/// An RTMR index, 0 to 3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtmrIndex(u8);

impl RtmrIndex {
    /// The index, for `rtmr[..]`.
    pub fn get(self) -> usize {
        usize::from(self.0)
    }
}

/// `TDG.MR.RTMR.EXTEND`: RCX = the 48-byte digest (64-aligned, private);
/// RDX = the RTMR, checked by the module after it has read the digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtmrExtend {
    pub digest: GuestGpa,
    pub index: Result<RtmrIndex, Operand>,
}

/// `TDG.MR.REPORT`: RDX = the 64-byte REPORTDATA (64-aligned, private or
/// shared); then, checked after REPORTDATA's memory, R8 = the subtype
/// (0) and RCX = the 1024-byte TDREPORT_STRUCT output (1024-aligned,
/// private or shared; its alignment is checked first of all).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReportRequest {
    pub data: GuestGpa,
    pub report: Result<GuestGpa, Operand>,
}

/// The inputs of a `TDG.VP.VMCALL`: the RCX bitmap of exposed registers
/// (checked against what GHCI allows), and R10-R15 as the host sees them
/// (zero where not exposed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmcallInputs {
    pub exposed: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
}

impl VmcallInputs {
    /// Whether register `n` (a `abi::vmcall::gpr` number) is exposed.
    pub fn exposes(&self, n: u32) -> bool {
        self.exposed & reg_bit(n) != 0
    }

    /// `TDG.VP.VMCALL<MapGPA>`'s operands (R12 = start, with the shared
    /// bit for a conversion to shared; R13 = length), checked as the GHCI
    /// and KVM check them: no wrap, nothing at or above GPAW, no zero
    /// length (`INVALID_OPERAND`); start and length 4 KiB aligned
    /// (`ALIGN_ERROR`); and, this host's own rule, the range without the
    /// shared bit inside one RAM region (`INVALID_OPERAND`). The error is
    /// the VMCALL status.
    pub fn map_gpa(&self, layout: &RamLayout) -> Result<MapGpa, u64> {
        use abi::vmcall::vmcall_status::{ALIGN_ERROR, OPERAND_INVALID};
        let (raw, len) = (self.r12, self.r13);
        let shared_bit = layout.shared_bit();
        let gpa_end = shared_bit << 1;
        let Some(end) = raw.checked_add(len).filter(|e| *e > raw && *e <= gpa_end) else {
            return Err(OPERAND_INVALID);
        };
        let shared = raw & shared_bit != 0;
        // The whole range on one side of the shared bit.
        if ((end - 1) & shared_bit != 0) != shared {
            return Err(OPERAND_INVALID);
        }
        if !raw.is_multiple_of(abi::PAGE_4K) || !len.is_multiple_of(abi::PAGE_4K) {
            return Err(ALIGN_ERROR);
        }
        let gpa = raw & !shared_bit;
        layout.ram_offset(gpa, len).ok_or(OPERAND_INVALID)?;
        Ok(MapGpa { gpa, len, shared })
    }
}

/// `TDG.VP.VMCALL<MapGPA>`, checked (`VmcallInputs::map_gpa`): the
/// 4 KiB-aligned RAM range `[gpa, gpa + len)` (without the shared bit)
/// becomes shared (`shared`: R12 had the shared bit set) or private.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapGpa {
    pub gpa: u64,
    pub len: u64,
    pub shared: bool,
}

impl Tdcall {
    /// Decodes the TDCALL in `regs` for a TD whose RAM is `layout`.
    pub fn decode(regs: &kvm_regs, layout: &RamLayout) -> Self {
        let (leaf_no, version, reserved) = decode_rax(regs.rax);
        if version != 0 || reserved != 0 {
            log::debug!("TDCALL with RAX {:#x}: version/reserved bits set", regs.rax);
            return Tdcall::Leaf(Leaf::BadOperand {
                leaf: leaf_no,
                operand: Operand::Rax,
            });
        }
        Tdcall::Leaf(match leaf_no {
            leaf::MEM_PAGE_ACCEPT => {
                return Tdcall::Accept(AcceptRequest::decode(layout, regs.rcx))
            }
            leaf::VP_INFO => Leaf::VpInfo,
            leaf::VP_VEINFO_GET => Leaf::VeInfoGet,
            leaf::VP_VMCALL if regs.rcx & !EXPOSABLE_MASK != 0 => Leaf::BadOperand {
                leaf: leaf_no,
                operand: Operand::Rcx,
            },
            leaf::VP_VMCALL => Leaf::VpVmcall(vmcall_inputs(regs)),
            leaf::MR_RTMR_EXTEND => rtmr_extend(regs, layout),
            leaf::MR_REPORT => report(regs, layout),
            leaf::MR_VERIFYREPORT => {
                let mac = gpa_operand(layout, regs.rcx, REPORTMACSTRUCT_LEN as u64, true);
                mac.map_or(bad(leaf_no, Operand::Rcx), Leaf::VerifyReport)
            }
            other => Leaf::NotEmulated(other),
        })
    }
}

fn bad(leaf: u16, operand: Operand) -> Leaf {
    Leaf::BadOperand { leaf, operand }
}

/// A memory operand as the TDX module checks the number (alignment to
/// `align`, then `check_gpa_validity`: no bit at or above GPAW, and the
/// shared bit clear when `private_only`); `None` answers
/// `TDX_OPERAND_INVALID` naming the register.
fn gpa_operand(layout: &RamLayout, gpa: u64, align: u64, private_only: bool) -> Option<GuestGpa> {
    let shared_bit = layout.shared_bit();
    let shared = gpa & shared_bit != 0;
    let valid = gpa.is_multiple_of(align) && gpa >> 1 < shared_bit && !(shared && private_only);
    valid.then_some(GuestGpa {
        gpa: gpa & !shared_bit,
        shared,
    })
}

/// Leaf 2, in the order of the module's `tdg_mr_rtmr_extend`: RCX's
/// alignment and validity; (the digest's memory, at the handler;) RDX.
fn rtmr_extend(regs: &kvm_regs, layout: &RamLayout) -> Leaf {
    let Some(digest) = gpa_operand(layout, regs.rcx, EXTEND_ALIGN, true) else {
        return bad(leaf::MR_RTMR_EXTEND, Operand::Rcx);
    };
    let index = match u8::try_from(regs.rdx) {
        Ok(i) if u64::from(i) < NUM_RTMRS => Ok(RtmrIndex(i)),
        _ => Err(Operand::Rdx),
    };
    Leaf::RtmrExtend(RtmrExtend { digest, index })
}

/// Leaf 4, in the order of the module's `tdg_mr_report`: RCX's and RDX's
/// alignment; RDX's validity; (REPORTDATA's memory, at the handler;) R8;
/// RCX's validity; (the output's memory, at the handler).
fn report(regs: &kvm_regs, layout: &RamLayout) -> Leaf {
    let len = |n: usize| n as u64;
    if !regs.rcx.is_multiple_of(len(TDREPORT_LEN)) {
        return bad(leaf::MR_REPORT, Operand::Rcx);
    }
    let Some(data) = gpa_operand(layout, regs.rdx, len(REPORTDATA_LEN), false) else {
        return bad(leaf::MR_REPORT, Operand::Rdx);
    };
    let report = if regs.r8 != u64::from(SUBTYPE_TDX) {
        Err(Operand::R8)
    } else {
        gpa_operand(layout, regs.rcx, len(TDREPORT_LEN), false).ok_or(Operand::Rcx)
    };
    Leaf::Report(ReportRequest { data, report })
}

impl Leaf {
    /// The leaf number (RAX bits 15:0).
    pub fn number(&self) -> u16 {
        match self {
            Leaf::VpInfo => leaf::VP_INFO,
            Leaf::VeInfoGet => leaf::VP_VEINFO_GET,
            Leaf::VpVmcall(_) => leaf::VP_VMCALL,
            Leaf::RtmrExtend(_) => leaf::MR_RTMR_EXTEND,
            Leaf::Report(_) => leaf::MR_REPORT,
            Leaf::VerifyReport(_) => leaf::MR_VERIFYREPORT,
            Leaf::NotEmulated(n) | Leaf::BadOperand { leaf: n, .. } => *n,
        }
    }
}

/// Register `n` of `regs` (a `abi::vmcall::gpr` number; 0 for RAX, RCX,
/// RSP and numbers past R15, which a VMCALL cannot expose).
pub fn gpr_value(regs: &kvm_regs, n: u32) -> u64 {
    match n {
        gpr::RDX => regs.rdx,
        gpr::RBX => regs.rbx,
        gpr::RBP => regs.rbp,
        gpr::RSI => regs.rsi,
        gpr::RDI => regs.rdi,
        gpr::R8 => regs.r8,
        gpr::R9 => regs.r9,
        gpr::R10 => regs.r10,
        gpr::R11 => regs.r11,
        gpr::R12 => regs.r12,
        gpr::R13 => regs.r13,
        gpr::R14 => regs.r14,
        gpr::R15 => regs.r15,
        _ => 0,
    }
}

fn vmcall_inputs(regs: &kvm_regs) -> VmcallInputs {
    let exposed = regs.rcx;
    let get = |n: u32| {
        if exposed & reg_bit(n) != 0 {
            gpr_value(regs, n)
        } else {
            0
        }
    };
    VmcallInputs {
        exposed,
        r10: get(gpr::R10),
        r11: get(gpr::R11),
        r12: get(gpr::R12),
        r13: get(gpr::R13),
        r14: get(gpr::R14),
        r15: get(gpr::R15),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi::tdcall::{accept::encode, PageLevel};
    use abi::vmcall::EXPOSE_R10_R15;
    use abi::GIB;

    fn decode(rax: u64, rcx: u64) -> Tdcall {
        let layout = crate::memory::layout::checked(5 * GIB, 48).unwrap();
        let regs = kvm_regs {
            rax,
            rcx,
            r10: 10,
            r11: 11,
            r12: 12,
            rbx: 99,
            ..Default::default()
        };
        Tdcall::decode(&regs, &layout)
    }

    #[test]
    fn each_leaf_decodes_to_its_variant_once() {
        let accept = decode(6, encode(4 * GIB, PageLevel::L2M));
        match accept {
            Tdcall::Accept(req) => {
                let page = req.page.unwrap();
                assert_eq!((page.gpa, page.offset), (4 * GIB, 3 * GIB));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(decode(1, 0), Tdcall::Leaf(Leaf::VpInfo));
        assert_eq!(decode(3, 0), Tdcall::Leaf(Leaf::VeInfoGet));
        assert_eq!(decode(5, 0), Tdcall::Leaf(Leaf::NotEmulated(5)));
        assert_eq!(decode(0xffff, 0), Tdcall::Leaf(Leaf::NotEmulated(0xffff)));
        assert_eq!(Leaf::NotEmulated(0xffff).number(), 0xffff);
        assert_eq!(Leaf::VpInfo.number(), leaf::VP_INFO);
        // An invalid accept operand is still an accept.
        assert!(matches!(decode(6, 1 << 3), Tdcall::Accept(r) if r.page.is_err()));
    }

    fn decode3(rax: u16, rcx: u64, rdx: u64, r8: u64) -> Leaf {
        let layout = crate::memory::layout::checked(5 * GIB, 48).unwrap();
        let regs = kvm_regs {
            rax: u64::from(rax),
            rcx,
            rdx,
            r8,
            ..Default::default()
        };
        match Tdcall::decode(&regs, &layout) {
            Tdcall::Leaf(l) => l,
            other => panic!("{other:?}"),
        }
    }

    const SHARED: u64 = 1 << 47;

    fn private(gpa: u64) -> GuestGpa {
        GuestGpa { gpa, shared: false }
    }

    #[test]
    fn rtmr_extend_operands() {
        let l = leaf::MR_RTMR_EXTEND;
        assert_eq!(
            decode3(l, 0x1040, 3, 0),
            Leaf::RtmrExtend(RtmrExtend {
                digest: private(0x1040),
                index: Ok(RtmrIndex(3))
            })
        );
        // RCX: misaligned, shared, beyond GPAW.
        for rcx in [0x1020, 0x1001, SHARED | 0x1000, 1 << 48] {
            assert_eq!(decode3(l, rcx, 0, 0), bad(l, Operand::Rcx), "{rcx:#x}");
        }
        // RDX is checked after the digest is read.
        for rdx in [4, 256, u64::MAX] {
            assert_eq!(
                decode3(l, 0x1000, rdx, 0),
                Leaf::RtmrExtend(RtmrExtend {
                    digest: private(0x1000),
                    index: Err(Operand::Rdx)
                })
            );
        }
        assert_eq!(decode3(l, 0x1001, 9, 0), bad(l, Operand::Rcx), "RCX first");
    }

    #[test]
    fn report_operands_in_the_modules_order() {
        let l = leaf::MR_REPORT;
        let ok = |data, report| Leaf::Report(ReportRequest { data, report });
        assert_eq!(
            decode3(l, 0x2000, 0x1040, 0),
            ok(private(0x1040), Ok(private(0x2000)))
        );
        // Both may be shared.
        assert_eq!(
            decode3(l, SHARED | 0x2000, SHARED | 0x1040, 0),
            ok(
                GuestGpa {
                    gpa: 0x1040,
                    shared: true
                },
                Ok(GuestGpa {
                    gpa: 0x2000,
                    shared: true
                })
            )
        );
        // RCX's alignment before all else.
        assert_eq!(decode3(l, 0x2200, 0x1001, 1), bad(l, Operand::Rcx));
        // Then RDX's alignment and validity.
        assert_eq!(decode3(l, 0x2000, 0x1020, 1), bad(l, Operand::Rdx));
        assert_eq!(decode3(l, 0x2000, 1 << 48, 1), bad(l, Operand::Rdx));
        // Then (after REPORTDATA's memory) R8, then RCX's validity.
        assert_eq!(
            decode3(l, 1 << 48, 0x1040, 1),
            ok(private(0x1040), Err(Operand::R8))
        );
        assert_eq!(
            decode3(l, 1 << 48, 0x1040, 0),
            ok(private(0x1040), Err(Operand::Rcx))
        );
    }

    #[test]
    fn verifyreport_takes_an_aligned_private_gpa() {
        let l = leaf::MR_VERIFYREPORT;
        assert_eq!(
            decode3(l, 0x1100, 0, 0),
            Leaf::VerifyReport(private(0x1100))
        );
        for rcx in [0x1080, SHARED | 0x1000, 1 << 48] {
            assert_eq!(decode3(l, rcx, 0, 0), bad(l, Operand::Rcx), "{rcx:#x}");
        }
        assert_eq!(Leaf::VerifyReport(private(0)).number(), 22);
    }

    #[test]
    fn version_or_reserved_rax_bits_are_an_invalid_rax() {
        for rax in [6 | 1 << 16, 1 | 1 << 24, 1 << 63] {
            assert_eq!(
                decode(rax, 0),
                Tdcall::Leaf(Leaf::BadOperand {
                    leaf: (rax & 0xffff) as u16,
                    operand: Operand::Rax
                }),
                "rax {rax:#x}"
            );
        }
    }

    #[test]
    fn a_vmcall_sees_only_exposed_registers() {
        match decode(0, reg_bit(gpr::R10) | reg_bit(gpr::R12)) {
            Tdcall::Leaf(Leaf::VpVmcall(v)) => {
                assert_eq!((v.r10, v.r11, v.r12, v.r13), (10, 0, 12, 0));
                assert!(v.exposes(gpr::R12) && !v.exposes(gpr::R11));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decode(0, EXPOSE_R10_R15),
            Tdcall::Leaf(Leaf::VpVmcall(_))
        ));
        // RCX (bit 1) cannot be exposed.
        assert_eq!(
            decode(0, EXPOSE_R10_R15 | 1 << 1),
            Tdcall::Leaf(Leaf::BadOperand {
                leaf: 0,
                operand: Operand::Rcx
            })
        );
    }
}
