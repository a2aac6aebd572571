//! A TDCALL decoded once, at its doorbell exit: the leaf as an enum with
//! typed operands. RAX (leaf, version, reserved bits), an accept's RCX and
//! a VMCALL's exposed registers are read here and nowhere else; every
//! later step matches on `Tdcall`.
//!
//! `TDG.MEM.PAGE.ACCEPT` is apart from the other leaves because it runs
//! its own locking (`accept::accept_on_vcpu`: the Secure-EPT entry lock,
//! then the state lock twice at most); every other leaf is a `Leaf`,
//! answered under one acquisition of the TD's state lock (`dispatch`).

use crate::memory::layout::RamLayout;
use crate::tdx::event::AcceptRequest;
use abi::tdcall::{decode_rax, leaf, Operand};
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
    /// A leaf this module does not emulate (a TDX leaf or not).
    NotEmulated(u16),
    /// An operand the leaf cannot take: RAX with version or reserved
    /// bits set, or a VMCALL exposing registers GHCI does not allow.
    BadOperand { leaf: u16, operand: Operand },
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
            other => Leaf::NotEmulated(other),
        })
    }
}

impl Leaf {
    /// The leaf number (RAX bits 15:0).
    pub fn number(&self) -> u16 {
        match self {
            Leaf::VpInfo => leaf::VP_INFO,
            Leaf::VeInfoGet => leaf::VP_VEINFO_GET,
            Leaf::VpVmcall(_) => leaf::VP_VMCALL,
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
        assert_eq!(decode(2, 0), Tdcall::Leaf(Leaf::NotEmulated(2)));
        assert_eq!(decode(0xffff, 0), Tdcall::Leaf(Leaf::NotEmulated(0xffff)));
        assert_eq!(Leaf::NotEmulated(0xffff).number(), 0xffff);
        assert_eq!(Leaf::VpInfo.number(), leaf::VP_INFO);
        // An invalid accept operand is still an accept.
        assert!(matches!(decode(6, 1 << 3), Tdcall::Accept(r) if r.page.is_err()));
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
