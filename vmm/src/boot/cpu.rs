//! vCPU setup: host-profile detection (standard VMX/SVM-style ring 0, or the
//! pvm-native ring-3 profile of a kvm_pvm host), the 64-bit start state our
//! ELF firmware gets, and the TDX module's own initial state (TDH.VP.INIT:
//! 32-bit flat protected mode at the reset vector) that TDVF firmware gets;
//! both with TDX's register contract (RCX = R8 = TD HOB, RBX = GPAW, RSI =
//! vCPU index, RDX = CPUID(1).EAX), and the CPUID a vCPU sees.

use crate::boot::plan::BootPlan;
use abi::layout::selector;
use kvm_bindings::{kvm_msr_entry, kvm_regs, kvm_segment, CpuId, Msrs, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuFd};
use thiserror::Error;

/// kvm_pvm: MSR whose bit 0 lets the hypervisor emulate privileged
/// instructions of a ring-3 guest.
const MSR_PVM_CTL: u32 = 0x4b56_4d10;
/// kvm_pvm: signature MSR, reads "PVM".
const MSR_PVM_SIGNATURE: u32 = 0x4b56_4d11;
const PVM_SIGNATURE: u64 = 0x4d_5650;

const CR0_PE: u64 = 1;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_PGE: u64 = 1 << 7;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const CR4_MCE: u64 = 1 << 6;
const EFER_SCE: u64 = 1;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;

/// Why vCPU setup failed.
#[derive(Debug, Error)]
pub enum CpuError {
    #[error("KVM ioctl {what} failed: {source}")]
    Kvm {
        what: &'static str,
        source: vmm_sys_util::errno::Error,
    },
    #[error("the pvm-native profile was requested but this host's KVM is not kvm_pvm")]
    NotPvm,
    #[error("cannot build the MSR list for KVM_SET_MSRS")]
    Msrs,
    #[error("KVM refused to set MSR {msr:#x}")]
    MsrRefused { msr: u32 },
    #[error(
        "kvm_pvm refused its control MSR (it takes it only while GPA 0 is backed by a memslot)"
    )]
    PvmControlRefused,
}

/// Gives `vcpu` its CPUID table; returns leaf 1's EAX (family, model,
/// stepping), which RDX holds at reset.
fn set_cpuid(vcpu: &VcpuFd, cpuid: &CpuId) -> Result<u32, CpuError> {
    let leaf1_eax = cpuid
        .as_slice()
        .iter()
        .find(|e| e.function == 1)
        .map_or(0, |e| e.eax);
    vcpu.set_cpuid2(cpuid).map_err(kvm_err("KVM_SET_CPUID2"))?;
    Ok(leaf1_eax)
}

fn kvm_err(what: &'static str) -> impl FnOnce(vmm_sys_util::errno::Error) -> CpuError {
    move |source| CpuError::Kvm { what, source }
}

abi::named_enum! {
    /// How the guest's code runs on this host (the report's `cpu_profile`,
    /// by these names).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum CpuProfile {
        /// Ring 0, as on any VMX/SVM KVM (emulated, and slow, under kvm_pvm).
        Standard => "standard",
        /// Ring 3 with DPL-3 selectors on a kvm_pvm host: runs natively.
        PvmNative => "pvm-native",
    }
}

abi::named_enum! {
    /// The `--cpu-profile` choice: `auto` (the default), or a profile by
    /// its name.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub enum ProfileChoice {
        /// The pvm-native profile on a kvm_pvm host, the standard one elsewhere.
        #[default]
        Auto => crate::named::AUTO,
        /// Guest code runs as on any KVM host (hardware virtualisation).
        Standard => CpuProfile::Standard.as_str(),
        /// The kvm_pvm host's native profile (guest code in user mode).
        PvmNative => CpuProfile::PvmNative.as_str(),
    }
}

/// True when KVM offers 1 GiB pages to guests (CPUID.80000001H:EDX bit 26,
/// Page1GB); `setup_vcpu` hands the supported CPUID to the vCPU as it is.
pub fn gib_pages_supported(kvm: &Kvm) -> bool {
    kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .is_ok_and(|c| {
            c.as_slice()
                .iter()
                .any(|e| e.function == 0x8000_0001 && e.edx & (1 << 26) != 0)
        })
}

/// True when the vCPU belongs to a kvm_pvm host (signature MSR reads "PVM").
pub fn host_is_pvm(vcpu: &VcpuFd) -> bool {
    let Ok(mut msrs) = Msrs::from_entries(&[kvm_msr_entry {
        index: MSR_PVM_SIGNATURE,
        ..Default::default()
    }]) else {
        return false;
    };
    matches!(vcpu.get_msrs(&mut msrs), Ok(1)) && msrs.as_slice()[0].data == PVM_SIGNATURE
}

/// Resolves the profile choice against the host.
pub fn resolve_profile(choice: ProfileChoice, vcpu: &VcpuFd) -> Result<CpuProfile, CpuError> {
    let pvm = host_is_pvm(vcpu);
    match choice {
        ProfileChoice::Auto if pvm => Ok(CpuProfile::PvmNative),
        ProfileChoice::Auto | ProfileChoice::Standard => Ok(CpuProfile::Standard),
        ProfileChoice::PvmNative if pvm => Ok(CpuProfile::PvmNative),
        ProfileChoice::PvmNative => Err(CpuError::NotPvm),
    }
}

fn segment(sel: u16, code: bool, dpl: u8) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: sel,
        type_: if code { 0xb } else { 0x3 },
        present: 1,
        dpl,
        db: u8::from(!code),
        s: 1,
        l: u8::from(code),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Puts the vCPU in 64-bit mode at `entry` with TDX's initial registers.
pub fn setup_vcpu(
    kvm: &Kvm,
    vcpu: &VcpuFd,
    profile: CpuProfile,
    plan: &BootPlan,
    entry: u64,
    gpaw: u32,
    vcpu_index: u32,
) -> Result<(), CpuError> {
    let cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
    let leaf1_eax = set_cpuid(vcpu, &cpuid)?;

    let mut sregs = vcpu.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?;
    sregs.cr0 = CR0_PG | CR0_WP | CR0_NE | CR0_ET | CR0_MP | CR0_PE;
    sregs.cr3 = plan.page_tables;
    sregs.cr4 = CR4_PAE | CR4_PGE | CR4_OSFXSR | CR4_OSXMMEXCPT;
    sregs.efer = EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE;
    let (cs, ss, dpl) = match profile {
        CpuProfile::Standard => (selector::CODE64_RING0, selector::DATA_RING0, 0),
        CpuProfile::PvmNative => (selector::CODE64_RING3, selector::DATA_RING3, 3),
    };
    sregs.cs = segment(cs, true, dpl);
    sregs.ss = segment(ss, false, dpl);
    let mut unusable = segment(0, false, 0);
    unusable.present = 0;
    unusable.unusable = 1;
    sregs.ds = unusable;
    sregs.es = unusable;
    sregs.fs = unusable;
    sregs.gs = unusable;
    sregs.ldt = kvm_segment {
        unusable: 1,
        ..Default::default()
    };
    sregs.tr = kvm_segment {
        base: plan.tss,
        limit: 0x67,
        type_: 11,
        present: 1,
        ..Default::default()
    };
    sregs.gdt.base = plan.gdt;
    sregs.gdt.limit = 8 * 8 - 1;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    vcpu.set_sregs(&sregs).map_err(kvm_err("KVM_SET_SREGS"))?;

    let regs = kvm_regs {
        rip: entry,
        rflags: 0x2,
        rcx: plan.hob,
        r8: plan.hob,
        rbx: gpaw as u64,
        rsi: vcpu_index as u64,
        rdx: leaf1_eax as u64,
        ..Default::default()
    };
    vcpu.set_regs(&regs).map_err(kvm_err("KVM_SET_REGS"))?;
    if profile == CpuProfile::PvmNative {
        enable_pvm_native(vcpu)?;
    }
    Ok(())
}

/// The TDX reset vector: where TDH.VP.INIT starts every vCPU.
pub const RESET_VECTOR: u64 = 0xFFFF_FFF0;
/// IA32_PAT as the TDX module initialises it.
const TDX_INITIAL_PAT: u64 = 0x0007_0406_0007_0406;
const MSR_IA32_PAT: u32 = 0x277;

/// The CPUID vCPU `index` of a TD sees when it executes CPUID itself: KVM's
/// supported CPUID with the TDX module's edits, the same `table` that
/// answers TDG.VP.VMCALL<Instruction.CPUID> (the topology leaves' x2APIC
/// ID, CET hidden).
fn tdx_cpuid(
    kvm: &Kvm,
    table: &crate::tdx::cpuid::CpuidTable,
    index: u32,
) -> Result<kvm_bindings::CpuId, CpuError> {
    let mut cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
    for e in cpuid.as_mut_slice() {
        [e.eax, e.ebx, e.ecx, e.edx] = table.answer(e.function, e.index, index);
    }
    Ok(cpuid)
}

/// Puts the vCPU in the TDX module's initial state (TDH.VP.INIT; the TDX
/// facts of the reference, section 4): 32-bit flat protected mode with
/// paging off at `RESET_VECTOR`, EFER = SCE|LME|NXE (long mode is entered
/// by setting CR0.PG alone, which TDVF reset vectors rely on), PAT as the
/// module sets it, and TDX's registers with `hob` in RCX and R8. CR4 is
/// MCE only: the module's VMXE is not for a guest that is not a TD (and
/// the reset vector rewrites CR4). CPUID is `table`'s. The standard
/// profile only.
pub fn setup_vcpu_reset(
    kvm: &Kvm,
    vcpu: &VcpuFd,
    table: &crate::tdx::cpuid::CpuidTable,
    gpaw: u32,
    vcpu_index: u32,
    hob: u64,
) -> Result<(), CpuError> {
    let cpuid = tdx_cpuid(kvm, table, vcpu_index)?;
    let leaf1_eax = set_cpuid(vcpu, &cpuid)?;

    let mut sregs = vcpu.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?;
    sregs.cr0 = CR0_NE | CR0_PE;
    sregs.cr3 = 0;
    sregs.cr4 = CR4_MCE;
    sregs.efer = EFER_SCE | EFER_LME | EFER_NXE;
    // Flat 4 GiB segments, 32-bit (D/B set, L clear): AR 0xC09B for code,
    // 0xC093 for data, as the module sets them.
    let flat = |code: bool| kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: 0,
        type_: if code { 0xb } else { 0x3 },
        present: 1,
        dpl: 0,
        db: 1,
        s: 1,
        l: 0,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    sregs.cs = flat(true);
    sregs.ds = flat(false);
    sregs.es = flat(false);
    sregs.fs = flat(false);
    sregs.gs = flat(false);
    sregs.ss = flat(false);
    sregs.ldt = kvm_segment {
        limit: 0xffff,
        unusable: 1,
        ..Default::default()
    };
    sregs.tr = kvm_segment {
        limit: 0xffff,
        type_: 11,
        present: 1,
        ..Default::default()
    };
    sregs.gdt.base = 0;
    sregs.gdt.limit = 0xffff;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    vcpu.set_sregs(&sregs).map_err(kvm_err("KVM_SET_SREGS"))?;

    let pat = Msrs::from_entries(&[kvm_msr_entry {
        index: MSR_IA32_PAT,
        data: TDX_INITIAL_PAT,
        ..Default::default()
    }])
    .map_err(|_| CpuError::Msrs)?;
    let written = vcpu.set_msrs(&pat).map_err(kvm_err("KVM_SET_MSRS"))?;
    if written != 1 {
        return Err(CpuError::MsrRefused { msr: MSR_IA32_PAT });
    }

    let regs = kvm_regs {
        rip: RESET_VECTOR,
        rflags: 0x2,
        rcx: hob,
        r8: hob,
        rbx: u64::from(gpaw),
        rsi: u64::from(vcpu_index),
        rdx: u64::from(leaf1_eax),
        ..Default::default()
    };
    vcpu.set_regs(&regs).map_err(kvm_err("KVM_SET_REGS"))?;
    Ok(())
}

/// Sets bit 0 of the kvm_pvm control MSR (privileged-instruction emulation
/// for a ring-3 guest).
///
/// Measured on our kvm_pvm hosts: the write is refused (0 MSRs processed)
/// unless GPA 0 is backed by a memslot at that moment. Our initial memory
/// starts at GPA 0 (`BootPlan`) and is mapped before the vCPUs are set up,
/// so it is.
fn enable_pvm_native(vcpu: &VcpuFd) -> Result<(), CpuError> {
    let msrs = Msrs::from_entries(&[kvm_msr_entry {
        index: MSR_PVM_CTL,
        data: 1,
        ..Default::default()
    }])
    .map_err(|_| CpuError::NotPvm)?;
    match vcpu.set_msrs(&msrs) {
        Ok(1) => Ok(()),
        Ok(n) => {
            log::error!("KVM_SET_MSRS(PVM control) processed {n} MSRs");
            Err(CpuError::PvmControlRefused)
        }
        Err(e) => Err(kvm_err("KVM_SET_MSRS")(e)),
    }
}
