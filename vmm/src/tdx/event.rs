//! What a TDCALL did, as data the run loop applies: an `Event` to record
//! (an accept and its status, a mark, a counter, the system table, a port
//! access with no device, a halt, an IPI) or a `Stop`.

use crate::stop::Stop;
use crate::tdx::accept::{AcceptRequest, AcceptResult};
use abi::report::{Counter, Mark};

/// Something a TDCALL did that the run loop records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// An accept was answered with `status`; `result` is None when the
    /// answer was an injected TDX_OPERAND_BUSY.
    Accept {
        req: AcceptRequest,
        status: u64,
        result: Option<AcceptResult>,
    },
    /// A guest phase mark.
    Mark(Mark, u64),
    /// A guest counter.
    Counter(Counter, u64),
    /// The GPA of the guest's EFI system table.
    SystemTable(u64),
    /// Instruction.IO to a port with no device.
    UnassignedIo,
    /// Instruction.HLT: the vCPU idles until an IPI reaches it (or at most
    /// `vcpu::HLT_PARK`).
    Halt,
    /// Instruction.WRMSR to the x2APIC ICR: an IPI (the ICR value), which
    /// wakes the vCPUs it names from HLT.
    Ipi(u64),
}

/// What a TDCALL did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Handled {
    pub event: Option<Event>,
    pub stop: Option<Stop>,
}

impl Handled {
    pub(crate) fn event(e: Event) -> Self {
        Handled {
            event: Some(e),
            stop: None,
        }
    }

    pub(crate) fn stop(s: Stop) -> Self {
        Handled {
            event: None,
            stop: Some(s),
        }
    }
}
