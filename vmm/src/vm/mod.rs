//! The TD as a VM: what to run (`config`), building it once (`build`:
//! checks the inputs, lays out initial memory, loads the images and the
//! HOB, creates the VM and its vCPUs), running it (`run`: one thread per
//! vCPU until the first stop) and deciding what the run's outcome is
//! (`verdict`). The state every vCPU shares is `shared::Shared`, each
//! vCPU's own `vcpu::VcpuState`; the report is `report::assemble`'s.

mod build;
mod config;
mod run;
mod verdict;

pub use build::TdError;
pub use config::TdConfig;

use crate::boot::cpu::CpuProfile;
use crate::report;
use crate::shared::TdShared;
use crate::vcpu::Vcpu;
use kvm_ioctls::Kvm;

/// Most vCPUs a TD may have (`--cpus`).
pub const MAX_VCPUS: u32 = crate::host::signals::MAX_VCPUS as u32;

/// A built TD, ready to run.
pub struct Td {
    pub(crate) vcpus: Vec<Vcpu>,
    pub(crate) shared: TdShared,
    pub(crate) profile: CpuProfile,
    pub(crate) config: TdConfig,
    pub(crate) initial_bytes: u64,
    /// Why `uffd-poison` was not chosen by `--pending auto`, if it was not.
    pub(crate) pending_fallback: Option<String>,
    /// What the report records of the inputs.
    pub(crate) inputs: report::Inputs,
    pub(crate) _kvm: Kvm,
}

impl Td {
    /// The resolved CPU profile.
    pub fn profile(&self) -> CpuProfile {
        self.profile
    }
}
