//! The TD as a VM: what to run (`config`), building it once (`build`:
//! checks the inputs, lays out initial memory, loads the images and the
//! HOB, creates the VM and its vCPUs), running it (`run`: one thread per
//! vCPU until the first stop) and deciding what the run's outcome is
//! (`verdict`); why a build fails is `error`. The state every vCPU shares is `shared::Shared`, each
//! vCPU's own `vcpu::VcpuState`; the report is `report::assemble`'s.

mod build;
mod config;
mod error;
mod run;
mod stop_handle;
mod tdvf_boot;
mod verdict;

pub use config::TdConfig;
pub use error::TdError;
pub use stop_handle::StopHandle;

use crate::boot::cpu::CpuProfile;
use crate::report;
use crate::shared::TdShared;
use crate::vcpu::Vcpu;
use kvm_ioctls::Kvm;

/// Most vCPUs a TD may have (`--cpus`).
pub const MAX_VCPUS: u32 = abi::tdcall::vp_info::MAX_VCPUS;

/// A built TD, ready to run.
pub struct Td {
    pub(crate) vcpus: Vec<Vcpu>,
    pub(crate) shared: TdShared,
    pub(crate) profile: CpuProfile,
    pub(crate) config: TdConfig,
    pub(crate) initial_bytes: u64,
    /// How initial memory falls on RAM's 2 MiB units.
    pub(crate) initial_units: report::UnitAccounting,
    /// Why `uffd-poison` was not chosen by `--pending auto`, if it was not.
    pub(crate) pending_fallback: Option<String>,
    /// What the report records of the inputs.
    pub(crate) inputs: report::Inputs,
    pub(crate) _kvm: Kvm,
}

impl Td {
    /// The CPU profile the TD runs with (`Auto` resolved for this host).
    pub fn profile(&self) -> CpuProfile {
        self.profile
    }

    /// A handle that ends this TD from another thread (see
    /// [`StopHandle`]); take it before [`run`](Td::run).
    pub fn stop_handle(&self) -> StopHandle {
        self.config.stop.clone()
    }
}
