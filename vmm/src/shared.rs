//! The state every vCPU of a TD shares, visibly apart from each vCPU's
//! own (`vcpu::VcpuState`): private memory, the emulated TDX module, the
//! console and the run's log.

use crate::host::console::Console;
use crate::memory::memslots::{KvmSlots, SlotBackend};
use crate::memory::private::PrivateMemory;
use crate::report::run_log::RunLog;
use crate::tdx::dispatch::TdxModule;

/// The state every vCPU of the TD shares.
pub struct Shared<B: SlotBackend = KvmSlots> {
    pub memory: PrivateMemory<B>,
    pub tdx: TdxModule,
    pub console: Console,
    pub log: RunLog,
    /// Invariant checks, when enabled: how many ran.
    pub invariant_checks: Option<u64>,
}
