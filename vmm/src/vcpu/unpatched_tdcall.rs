//! A TDCALL the loader did not patch (code the guest wrote or copied at
//! run time): KVM cannot emulate `66 0F 01 CC` on a non-TD guest. Where it
//! reports the failed instruction's bytes with the emulation failure (as
//! kvm_pvm does for every guest instruction it emulates), the vCPU runs
//! it as a TDCALL and steps past it; elsewhere the guest sees #UD.

use super::Vcpu;
use abi::tdcall::TDCALL_INSN;
use kvm_bindings::{
    KVM_INTERNAL_ERROR_EMULATION, KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES,
};

/// True when the emulation failure KVM reported carries the bytes of a
/// TDCALL at RIP.
pub(super) fn is_tdcall(suberror: u32, flags: u64, insn: &[u8]) -> bool {
    suberror == KVM_INTERNAL_ERROR_EMULATION
        && flags & u64::from(KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES) != 0
        && insn.starts_with(&TDCALL_INSN)
}

impl Vcpu {
    /// Whether the KVM_EXIT_INTERNAL_ERROR just taken is an unpatched
    /// TDCALL (see [`is_tdcall`]).
    pub(super) fn at_unpatched_tdcall(&mut self) -> bool {
        let run = self.fd.get_kvm_run();
        // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, whose union
        // member is `internal`; `emulation_failure` shares its first two
        // fields and is the layout KVM fills for suberror
        // KVM_INTERNAL_ERROR_EMULATION, which `is_tdcall` checks first
        // (for another suberror the bytes read are never used).
        let failure = unsafe { run.__bindgen_anon_1.emulation_failure };
        // SAFETY: the union has one member, the instruction bytes.
        let bytes = unsafe { failure.__bindgen_anon_1.__bindgen_anon_1 };
        let size = usize::from(bytes.insn_size).min(bytes.insn_bytes.len());
        is_tdcall(failure.suberror, failure.flags, &bytes.insn_bytes[..size])
    }
}

#[cfg(test)]
mod tests {
    use super::is_tdcall;

    #[test]
    fn only_an_emulation_failure_with_the_tdcall_bytes_is_a_tdcall() {
        let insn = [0x66, 0x0f, 0x01, 0xcc, 0x90];
        assert!(is_tdcall(1, 1, &insn));
        assert!(is_tdcall(1, 1, &insn[..4]));
        // Another suberror, no bytes, too few bytes, other bytes.
        assert!(!is_tdcall(2, 1, &insn));
        assert!(!is_tdcall(1, 0, &insn));
        assert!(!is_tdcall(1, 1, &insn[..3]));
        assert!(!is_tdcall(1, 1, &[0x0f, 0x01, 0xcc, 0x90]));
        // VMCALL (0F 01 C1) is not a TDCALL.
        assert!(!is_tdcall(1, 1, &[0x66, 0x0f, 0x01, 0xc1]));
    }
}
