//! Recording what a TDCALL did (`tdx::event::Event`): the part that lives
//! in the state the vCPUs share (the run log: marks, counters, the system
//! table), applied under the state lock the leaf was answered in, and the
//! part that is the vCPU's own (its accept and BUSY counts, its lock wait,
//! port accesses with no device), applied without any lock. An accept
//! records its trace, statistics and invariant checks itself, in the state
//! lock that finishes it (`tdx::accept`).

use crate::memory::memslots::SlotBackend;
use crate::shared::Shared;
use crate::tdx::event::Event;
use crate::vcpu::VcpuState;
use abi::report::{Counter, Mark};

/// Applies the shared part of `event` (under the state lock).
pub fn apply_shared<B: SlotBackend>(shared: &mut Shared<B>, event: &Event) {
    match *event {
        Event::Mark(mark, arg) => {
            if mark == Mark::KexecJump {
                shared.log.shared_at_jump(shared.memory.shared().bytes());
            }
            if mark == Mark::KernelReady {
                // A host that removes pages later starts once the kernel runs.
                if let Some(i) = shared.tdx.inject.as_mut() {
                    i.kernel_ready();
                }
            }
            shared.log.mark(mark, arg);
        }
        // Each CPU reports its own wait: kept per vCPU (`apply_own`).
        Event::Counter(Counter::LockWaitTsc, _) => {}
        Event::Counter(c, v) => shared.log.counter(c, v),
        Event::SystemTable(gpa) => shared.log.system_table = Some(gpa),
        Event::Accept { .. } | Event::UnassignedIo | Event::Halt | Event::Ipi(_) => {}
    }
}

/// Applies the vCPU's own part of `event` (no lock).
pub fn apply_own(vcpu: &mut VcpuState, event: &Event) {
    match *event {
        Event::Accept { status, .. } => {
            vcpu.accepts += 1;
            if status.is_busy() {
                vcpu.busy += 1;
            }
        }
        Event::Counter(Counter::LockWaitTsc, ticks) => {
            vcpu.lock_wait_ns += vcpu.tsc_to_ns(ticks);
        }
        Event::UnassignedIo => vcpu.exits.unassigned_io += 1,
        Event::Mark(..)
        | Event::Counter(..)
        | Event::SystemTable(_)
        | Event::Halt
        | Event::Ipi(_) => {}
    }
}
