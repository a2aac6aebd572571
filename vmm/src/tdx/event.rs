//! What a TDCALL did, as data the run loop applies: an `Event` to record
//! (an accept and its status, a mark, a counter, the system table, a port
//! access with no device, a halt, an IPI) or a `Stop`; with the accept's
//! request and result types, which the events carry.

use crate::memory::layout::RamLayout;
use crate::stop::Stop;
use abi::report::{Counter, Mark};
use abi::tdcall::{AcceptLevel, Operand, Status};

/// Something a TDCALL did that the run loop records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// An accept was answered with `status`; `result` is None when the
    /// answer was an injected TDX_OPERAND_BUSY.
    Accept {
        req: AcceptRequest,
        status: Status,
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

/// What a TDCALL did: the completion status the guest sees in RAX
/// (written back once, by the doorbell), and an event to record or a stop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handled {
    pub status: Status,
    pub event: Option<Event>,
    pub stop: Option<Stop>,
}

impl Handled {
    /// Answered `status`, nothing else to record.
    pub(crate) fn answer(status: Status) -> Self {
        Handled {
            status,
            event: None,
            stop: None,
        }
    }

    /// Answered `TDX_SUCCESS`, with an event to record.
    pub(crate) fn event(e: Event) -> Self {
        Handled {
            status: Status::Success,
            event: Some(e),
            stop: None,
        }
    }

    /// The TD stops; no register is written back.
    pub(crate) fn stop(s: Stop) -> Self {
        Handled {
            status: Status::Success,
            event: None,
            stop: Some(s),
        }
    }
}

/// Why an accept request is invalid (all map to `TDX_OPERAND_INVALID | RCX`).
pub use abi::tdcall::accept::Invalid as InvalidAccept;

/// The result of one accept, for logs and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcceptResult {
    Accepted { gpa: u64, level: AcceptLevel },
    AlreadyAccepted { gpa: u64, level: AcceptLevel },
    SizeMismatch { gpa: u64 },
    Invalid(InvalidAccept),
}

impl AcceptResult {
    /// The TDX status the guest sees in RAX.
    pub fn status(self) -> Status {
        match self {
            AcceptResult::Accepted { .. } => Status::Success,
            AcceptResult::AlreadyAccepted { level, .. } => Status::PageAlreadyAccepted(level),
            AcceptResult::SizeMismatch { .. } => Status::PageSizeMismatch(AcceptLevel::L2M),
            AcceptResult::Invalid(_) => Status::OperandInvalid(Operand::Rcx),
        }
    }
}

/// The page a valid accept names: its GPA, its level, and where it lies
/// in guest RAM (`offset`, whole inside RAM).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcceptPage {
    pub gpa: u64,
    pub level: AcceptLevel,
    pub offset: u64,
}

impl AcceptPage {
    /// The page-state table's index of its first 4 KiB page.
    pub fn first_page(&self) -> u64 {
        self.offset / abi::PAGE_4K
    }

    /// The 2 MiB Secure-EPT entry (its lock) holding it.
    pub fn entry(&self) -> u64 {
        self.offset / abi::PAGE_2M
    }
}

/// A `TDG.MEM.PAGE.ACCEPT` operand, decoded once: RCX as the guest gave
/// it, and the page it names or why it is invalid (the rules of
/// `abi::tdcall::accept::decode`, then "inside RAM").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcceptRequest {
    pub rcx: u64,
    pub page: Result<AcceptPage, InvalidAccept>,
}

impl AcceptRequest {
    /// Decodes `rcx` against `layout`.
    pub fn decode(layout: &RamLayout, rcx: u64) -> Self {
        let page = abi::tdcall::accept::decode(layout, rcx).and_then(|(gpa, level)| {
            let offset = layout
                .ram_offset(gpa, level.size())
                .ok_or(InvalidAccept::NotRam)?;
            Ok(AcceptPage { gpa, level, offset })
        });
        AcceptRequest { rcx, page }
    }

    /// The level bits of RCX as the guest wrote them (for the trace).
    pub fn level_bits(&self) -> u8 {
        (self.rcx & abi::tdcall::accept::LEVEL_MASK) as u8
    }

    /// The GPA bits of RCX (for the trace).
    pub fn gpa_bits(&self) -> u64 {
        self.rcx & !0xfff
    }
}
