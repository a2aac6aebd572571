//! The CPUID table TDG.VP.VMCALL<Instruction.CPUID> answers from: the
//! entries the VMM provides (what the host's KVM supports), with the
//! per-vCPU and TD-wide edits a TDX module makes: the topology leaves'
//! EDX and leaf 1's initial APIC ID are the asking vCPU's x2APIC ID (its
//! index), and CET is hidden. The vCPU's own CPUID (KVM_SET_CPUID2) is
//! built from the same table (`boot::cpu`), so both agree.

use abi::vmcall::ghci::{CPUID_LEAF_TOPOLOGY, CPUID_LEAF_TOPOLOGY_V2};

/// Leaf 1: EBX[31:24] is the initial APIC ID.
const LEAF_FEATURES_1: u32 = 1;
/// Leaf 7 subleaf 0: ECX bit 7 is CET_SS (shadow stacks), EDX bit 20
/// CET_IBT (indirect-branch tracking).
const LEAF_FEATURES_7: u32 = 7;
const CET_SS_ECX: u32 = 1 << 7;
const CET_IBT_EDX: u32 = 1 << 20;
/// Leaf 0xD subleaf 1: ECX bits 11 and 12 are the CET_U and CET_S state
/// components XSS may enable.
const LEAF_XSAVE: u32 = 0xd;
const CET_XSS_ECX: u32 = 1 << 11 | 1 << 12;

/// One entry: the leaf, the subleaf when the leaf has them (`None`: any
/// subleaf), and EAX, EBX, ECX, EDX.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuidEntry {
    pub leaf: u32,
    pub subleaf: Option<u32>,
    pub regs: [u32; 4],
}

/// The table; empty until the VMM fills it, when every leaf but the
/// topology leaves' EDX reads as zero.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuidTable {
    entries: Vec<CpuidEntry>,
}

impl CpuidTable {
    /// A table of `entries`.
    #[cfg_attr(not(test), allow(dead_code))] // for the TDVF boot integration
    pub fn new(entries: Vec<CpuidEntry>) -> Self {
        CpuidTable { entries }
    }

    /// The table of KVM's entries (`KVM_GET_SUPPORTED_CPUID`): an entry
    /// with `KVM_CPUID_FLAG_SIGNIFCANT_INDEX` has a subleaf.
    pub fn from_kvm(entries: &[kvm_bindings::kvm_cpuid_entry2]) -> Self {
        let entries = entries
            .iter()
            .map(|e| CpuidEntry {
                leaf: e.function,
                subleaf: (e.flags & kvm_bindings::KVM_CPUID_FLAG_SIGNIFCANT_INDEX != 0)
                    .then_some(e.index),
                regs: [e.eax, e.ebx, e.ecx, e.edx],
            })
            .collect();
        CpuidTable { entries }
    }

    /// EAX, EBX, ECX, EDX of CPUID(`leaf`, `subleaf`) on the vCPU whose
    /// x2APIC ID is `x2apic_id`. A leaf or subleaf the table lacks reads
    /// as zero.
    pub fn answer(&self, leaf: u32, subleaf: u32, x2apic_id: u32) -> [u32; 4] {
        let mut regs = self
            .entries
            .iter()
            .find(|e| e.leaf == leaf && e.subleaf.is_none_or(|s| s == subleaf))
            .map_or([0; 4], |e| e.regs);
        match (leaf, subleaf) {
            (CPUID_LEAF_TOPOLOGY | CPUID_LEAF_TOPOLOGY_V2, _) => regs[3] = x2apic_id,
            // EBX[31:24]: the initial APIC ID (its low 8 bits).
            (LEAF_FEATURES_1, _) => regs[1] = (regs[1] & 0x00ff_ffff) | ((x2apic_id & 0xff) << 24),
            (LEAF_FEATURES_7, 0) => {
                regs[2] &= !CET_SS_ECX;
                regs[3] &= !CET_IBT_EDX;
            }
            (LEAF_XSAVE, 1) => regs[2] &= !CET_XSS_ECX,
            _ => {}
        }
        regs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> CpuidTable {
        CpuidTable::new(vec![
            CpuidEntry {
                leaf: 0,
                subleaf: None,
                regs: [0x1f, 0x756e_6547, 0x6c65_746e, 0x4965_6e69],
            },
            CpuidEntry {
                leaf: 7,
                subleaf: Some(0),
                regs: [0, 1, CET_SS_ECX | 1, CET_IBT_EDX | 2],
            },
            CpuidEntry {
                leaf: 7,
                subleaf: Some(1),
                regs: [5, 0, CET_SS_ECX, CET_IBT_EDX],
            },
            CpuidEntry {
                leaf: 0xb,
                subleaf: Some(0),
                regs: [1, 1, 0x100, 0],
            },
            CpuidEntry {
                leaf: 0xd,
                subleaf: Some(1),
                regs: [0xf, 0, CET_XSS_ECX | 1 << 8, 0],
            },
        ])
    }

    #[test]
    fn entries_answer_by_leaf_and_subleaf() {
        let t = table();
        // No subleaf: any ECX.
        assert_eq!(
            t.answer(0, 9, 0),
            [0x1f, 0x756e_6547, 0x6c65_746e, 0x4965_6e69]
        );
        assert_eq!(t.answer(7, 1, 0)[0], 5);
        // Missing leaf or subleaf: zero.
        assert_eq!(t.answer(0x4000_0000, 0, 0), [0; 4]);
        assert_eq!(t.answer(7, 2, 0), [0; 4]);
        assert_eq!(CpuidTable::default().answer(2, 0, 3), [0; 4]);
        // Leaf 1's initial APIC ID is the vCPU's, like the topology EDX.
        assert_eq!(CpuidTable::default().answer(1, 0, 3), [0, 3 << 24, 0, 0]);
    }

    #[test]
    fn topology_edx_is_the_vcpus_index_on_every_subleaf() {
        let t = table();
        assert_eq!(t.answer(0xb, 0, 5), [1, 1, 0x100, 5]);
        assert_eq!(t.answer(0xb, 1, 2)[3], 2, "missing subleaf");
        assert_eq!(t.answer(0x1f, 0, 7), [0, 0, 0, 7]);
        assert_eq!(CpuidTable::default().answer(0xb, 0, 1)[3], 1);
    }

    #[test]
    fn cet_is_hidden_in_leaf_7_0_and_xsave_1_only() {
        let t = table();
        assert_eq!(t.answer(7, 0, 0), [0, 1, 1, 2]);
        // Subleaf 1 of leaf 7 has other meanings for those bits.
        assert_eq!(t.answer(7, 1, 0), [5, 0, CET_SS_ECX, CET_IBT_EDX]);
        assert_eq!(t.answer(0xd, 1, 0), [0xf, 0, 1 << 8, 0]);
    }

    #[test]
    fn kvm_entries_keep_their_subleaf_only_when_significant() {
        let e = |function, index, flags, eax| kvm_bindings::kvm_cpuid_entry2 {
            function,
            index,
            flags,
            eax,
            ..Default::default()
        };
        let t = CpuidTable::from_kvm(&[
            e(1, 0, 0, 0x806f8),
            e(4, 1, kvm_bindings::KVM_CPUID_FLAG_SIGNIFCANT_INDEX, 0x21),
        ]);
        assert_eq!(t.answer(1, 3, 0)[0], 0x806f8);
        assert_eq!(t.answer(4, 1, 0)[0], 0x21);
        assert_eq!(t.answer(4, 0, 0)[0], 0);
    }
}
