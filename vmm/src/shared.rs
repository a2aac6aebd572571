//! The state every vCPU of a TD shares, visibly apart from each vCPU's
//! own (`vcpu::VcpuState`). `Shared` (private memory's bookkeeping, the
//! emulated TDX module, the console, the run's log) sits behind one lock
//! that is held only for bookkeeping: a few hundred nanoseconds per exit.
//! `TdShared` adds what the vCPUs reach without that lock: the host
//! mapping of guest RAM (an accept zeroes its page through it), the
//! Secure-EPT entry locks that make concurrent accepts of one entry answer
//! BUSY, and the stop board.

use crate::host::console::Console;
use crate::memory::guest_ram::{Backing, GuestRam};
use crate::memory::memslots::{KvmSlots, SlotBackend};
use crate::memory::private::PrivateMemory;
use crate::memory::sept_locks::SeptLocks;
use crate::report::run_log::RunLog;
use crate::tdx::module::TdxModule;
use crate::vcpu::stop_board::StopBoard;
use std::sync::{Arc, Mutex, MutexGuard};

/// The state every vCPU of the TD shares, behind the TD's state lock.
pub struct Shared<B: SlotBackend = KvmSlots> {
    pub memory: PrivateMemory<B>,
    pub tdx: TdxModule,
    pub console: Console,
    pub log: RunLog,
    /// Invariant checks, when enabled: how many ran.
    pub invariant_checks: Option<u64>,
    /// Acquisitions of the state lock (`TdShared::lock`) over the run: a
    /// guest accept takes it twice at most, every other exit once.
    pub lock_acquisitions: u64,
}

impl<B: SlotBackend> Shared<B> {
    /// Runs the private-memory invariant checks over `[gpa, gpa + len)`
    /// when they are enabled; `zeroed` also checks that the range reads
    /// zero (just accepted).
    pub fn check_invariants(
        &mut self,
        gpa: u64,
        len: u64,
        zeroed: bool,
    ) -> Result<(), crate::memory::invariants::InvariantError> {
        use crate::memory::invariants::{check_range, check_zeroed};
        let Some(n) = self.invariant_checks.as_mut() else {
            return Ok(());
        };
        *n += 1;
        check_range(&self.memory, gpa, len)?;
        if zeroed {
            check_zeroed(&self.memory, gpa, len)?;
        }
        Ok(())
    }
}

/// What the vCPU threads of a running TD share.
pub struct TdShared<B: SlotBackend = KvmSlots> {
    state: Mutex<Shared<B>>,
    /// The host mapping of guest RAM (also inside `state.memory`).
    pub ram: Arc<GuestRam>,
    pub backing: Backing,
    pub layout: crate::memory::layout::RamLayout,
    /// One guest-side lock per 2 MiB Secure-EPT entry.
    pub sept: SeptLocks,
    pub board: Arc<StopBoard>,
    /// How many vCPUs the TD has.
    pub vcpus: u32,
}

impl<B: SlotBackend> TdShared<B> {
    /// Shares `state` between the vCPUs `board` stops.
    pub fn new(
        state: Shared<B>,
        board: Arc<StopBoard>,
    ) -> Result<Self, crate::memory::host_alloc::ReserveError> {
        let entries = state.memory.layout().mem_bytes().div_ceil(abi::PAGE_2M);
        Ok(TdShared {
            ram: state.memory.ram_shared(),
            backing: state.memory.backing(),
            layout: *state.memory.layout(),
            sept: SeptLocks::new(entries)?,
            vcpus: state.tdx.vcpus,
            board,
            state: Mutex::new(state),
        })
    }

    /// Takes the TD's state lock. A vCPU thread that panicked while
    /// holding it cannot leave it half-updated in a way the others could
    /// make worse than stopping, so a poisoned lock is still used: the
    /// panic itself stops the TD.
    pub fn lock(&self) -> MutexGuard<'_, Shared<B>> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.lock_acquisitions += 1;
        s
    }

    /// The state, once every vCPU has stopped.
    pub fn into_state(self) -> Shared<B> {
        self.state.into_inner().unwrap_or_else(|e| e.into_inner())
    }
}
