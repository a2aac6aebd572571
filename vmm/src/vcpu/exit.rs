//! A vCPU exit and what to do about it, as plain data and plain functions:
//! `Exit` is what KVM reported, `on_exit` the action, `on_memory` what an
//! access without a memslot means. No KVM, no state: unit-tested with fake
//! exits.

use crate::memory::memslots::SlotBackend;
use crate::memory::private::{GpaKind, PrivateMemory};
use crate::report::ExitStats;
use crate::stop::{Access, Stop};
use abi::report::Outcome;
use abi::tdcall::DOORBELL_PORT;
use kvm_ioctls::VcpuExit;

/// A vCPU exit as the VMM sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    /// `out` to the doorbell port: a TDCALL.
    Doorbell,
    PortOut {
        port: u16,
    },
    PortIn {
        port: u16,
    },
    /// A guest access to a GPA without a memslot (KVM's MMIO exit).
    Memory {
        gpa: u64,
        access: Access,
        len: usize,
        data: [u8; 8],
    },
    /// Triple fault.
    Shutdown,
    /// KVM could not emulate an instruction.
    InternalError,
    Hlt,
    FailEntry {
        reason: u64,
        cpu: u32,
    },
    /// KVM_RUN returned EINTR (a kick): check stops, run again.
    Kicked,
    /// KVM_RUN returned EAGAIN: the host could not get the vCPU running
    /// this time (a resource KVM needs is short); retried a bounded number
    /// of times.
    Again,
    /// KVM_RUN failed.
    RunFailed(String),
    Unexpected(String),
}

impl Exit {
    /// Reads KVM's exit (or KVM_RUN's error).
    pub fn from_kvm(run: Result<VcpuExit<'_>, vmm_sys_util::errno::Error>) -> Self {
        match run {
            Ok(VcpuExit::IoOut(port, _)) if port == DOORBELL_PORT as u16 => Exit::Doorbell,
            Ok(VcpuExit::IoOut(port, _)) => Exit::PortOut { port },
            Ok(VcpuExit::IoIn(port, data)) => {
                // No device reads all-ones.
                data.fill(0xff);
                Exit::PortIn { port }
            }
            Ok(VcpuExit::MmioRead(gpa, data)) => Exit::Memory {
                gpa,
                access: Access::Read,
                len: data.len().min(8),
                data: [0; 8],
            },
            Ok(VcpuExit::MmioWrite(gpa, data)) => {
                let mut bytes = [0u8; 8];
                let n = data.len().min(8);
                bytes[..n].copy_from_slice(&data[..n]);
                Exit::Memory {
                    gpa,
                    access: Access::Write,
                    len: n,
                    data: bytes,
                }
            }
            Ok(VcpuExit::Shutdown) => Exit::Shutdown,
            Ok(VcpuExit::InternalError) => Exit::InternalError,
            Ok(VcpuExit::Hlt) => Exit::Hlt,
            Ok(VcpuExit::FailEntry(reason, cpu)) => Exit::FailEntry { reason, cpu },
            Ok(other) => Exit::Unexpected(format!("{other:?}")),
            Err(e) if e.errno() == libc::EINTR => Exit::Kicked,
            Err(e) if e.errno() == libc::EAGAIN => Exit::Again,
            Err(e) => Exit::RunFailed(e.to_string()),
        }
    }
}

/// What the run loop does about an exit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Resume,
    Tdcall,
    Memory {
        gpa: u64,
        access: Access,
        len: usize,
        data: [u8; 8],
    },
    TripleFault,
    /// Was the instruction fetched from memory without a slot?
    CheckFetch,
    /// KVM_RUN answered EAGAIN: run again, a bounded number of times.
    RunAgain,
    Stop(Stop),
}

/// Decides what to do about `exit`, counting it.
pub fn on_exit(exit: Exit, exits: &mut ExitStats) -> Action {
    if !matches!(exit, Exit::Kicked | Exit::Again | Exit::RunFailed(_)) {
        exits.total += 1;
    }
    match exit {
        Exit::Doorbell => {
            exits.io += 1;
            exits.doorbell += 1;
            Action::Tdcall
        }
        Exit::PortOut { port } | Exit::PortIn { port } => {
            exits.io += 1;
            exits.unassigned_io += 1;
            log::debug!("port {port:#x}: no device (reads all-ones, writes dropped)");
            Action::Resume
        }
        Exit::Memory {
            gpa,
            access,
            len,
            data,
        } => {
            exits.mmio += 1;
            Action::Memory {
                gpa,
                access,
                len,
                data,
            }
        }
        Exit::Shutdown => Action::TripleFault,
        Exit::InternalError => Action::CheckFetch,
        Exit::Hlt => Action::Stop(Stop::error(
            "guest executed HLT with no interrupt source (a TD idles through TDG.VP.VMCALL)".into(),
            None,
        )),
        Exit::FailEntry { reason, cpu } => Action::Stop(Stop::error(
            format!("KVM_RUN entry failure, hardware reason {reason:#x} on cpu {cpu}"),
            None,
        )),
        Exit::Kicked => Action::Resume,
        Exit::Again => Action::RunAgain,
        Exit::RunFailed(e) => Action::Stop(Stop::error(format!("KVM_RUN failed: {e}"), None)),
        Exit::Unexpected(e) => Action::Stop(Stop::error(format!("unexpected vCPU exit {e}"), None)),
    }
}

/// What a guest access without a memslot means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryAction {
    /// Accepted memory touched for the first time: map it, complete it.
    FirstTouch,
    /// Pending memory, the hole, or beyond RAM: stop the TD.
    Fault(Outcome, &'static str),
    /// Accepted and mapped memory exited: a memslot bookkeeping bug.
    Bug,
}

/// Classifies an access to `gpa` from its page state.
pub fn on_memory<B: SlotBackend>(mem: &PrivateMemory<B>, gpa: u64) -> MemoryAction {
    on_memory_smp(mem, gpa, false)
}

/// `on_memory` on a TD with `others` vCPUs besides the one that exited: an
/// accepted page that has a slot by now was mapped by another vCPU's first
/// touch between this exit and our look (the access is completed as a
/// first touch whose mapping is already there).
pub fn on_memory_smp<B: SlotBackend>(
    mem: &PrivateMemory<B>,
    gpa: u64,
    others: bool,
) -> MemoryAction {
    match mem.classify(gpa) {
        GpaKind::Accepted if mem.map_on_touch() && (others || !mem.slots().covers(gpa)) => {
            MemoryAction::FirstTouch
        }
        GpaKind::Accepted => MemoryAction::Bug,
        GpaKind::Pending if mem.shared().contains(gpa, 1) => MemoryAction::Fault(
            Outcome::PendingAccess,
            "private memory the guest converted to shared (MapGPA) and not back, reached through a private mapping",
        ),
        GpaKind::Pending if mem.removed_by_host(gpa) => MemoryAction::Fault(
            Outcome::PendingAccess,
            "private memory removed by the host (TDH.MEM.PAGE.REMOVE)",
        ),
        GpaKind::Pending => {
            MemoryAction::Fault(Outcome::PendingAccess, "memory that was never accepted")
        }
        GpaKind::NotRam if mem.layout().in_hole(gpa) => {
            MemoryAction::Fault(Outcome::BadGpa, "the MMIO hole, where no device is mapped")
        }
        GpaKind::NotRam => MemoryAction::Fault(Outcome::BadGpa, "a GPA that is not RAM"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::guest_ram::Backing;
    use crate::memory::memslots::NoKvm;
    use abi::GIB;

    fn exit_counts(exit: Exit) -> (Action, ExitStats) {
        let mut stats = ExitStats::default();
        let action = on_exit(exit, &mut stats);
        (action, stats)
    }

    #[test]
    fn exits_become_actions_and_are_counted() {
        let (a, s) = exit_counts(Exit::Doorbell);
        assert_eq!(a, Action::Tdcall);
        assert_eq!((s.total, s.io, s.doorbell), (1, 1, 1));
        let (a, s) = exit_counts(Exit::PortIn { port: 0x80 });
        assert_eq!(a, Action::Resume);
        assert_eq!((s.io, s.unassigned_io, s.doorbell), (1, 1, 0));
        let data = [1, 2, 3, 4, 0, 0, 0, 0];
        let (a, s) = exit_counts(Exit::Memory {
            gpa: 0x1000,
            access: Access::Write,
            len: 4,
            data,
        });
        assert_eq!(
            a,
            Action::Memory {
                gpa: 0x1000,
                access: Access::Write,
                len: 4,
                data
            }
        );
        assert_eq!(s.mmio, 1);
        assert_eq!(exit_counts(Exit::Shutdown).0, Action::TripleFault);
        assert_eq!(exit_counts(Exit::InternalError).0, Action::CheckFetch);
        // A kick is not an exit of the guest's.
        let (a, s) = exit_counts(Exit::Kicked);
        assert_eq!((a, s.total), (Action::Resume, 0));
        // Neither is an EAGAIN, which is retried a bounded number of times.
        let (a, s) = exit_counts(Exit::Again);
        assert_eq!((a, s.total), (Action::RunAgain, 0));
        assert_eq!(
            Exit::from_kvm(Err(vmm_sys_util::errno::Error::new(libc::EAGAIN))),
            Exit::Again
        );
        assert_eq!(
            Exit::from_kvm(Err(vmm_sys_util::errno::Error::new(libc::EINTR))),
            Exit::Kicked
        );
        for (exit, needle) in [
            (Exit::Hlt, "HLT"),
            (
                Exit::FailEntry {
                    reason: 0x21,
                    cpu: 3,
                },
                "hardware reason 0x21 on cpu 3",
            ),
            (Exit::RunFailed("EFAULT".into()), "KVM_RUN failed: EFAULT"),
            (
                Exit::Unexpected("Debug".into()),
                "unexpected vCPU exit Debug",
            ),
        ] {
            let Action::Stop(stop) = exit_counts(exit).0 else {
                panic!("{needle}: not a stop");
            };
            assert_eq!(stop.outcome, Outcome::Error);
            let f = stop.fatal.unwrap();
            assert_eq!(
                f.kind,
                crate::report::Outcome::Error,
                "kind derived from the outcome"
            );
            assert!(f.message.contains(needle), "{}", f.message);
        }
    }

    fn memory(map_on_touch: bool) -> PrivateMemory<NoKvm> {
        let layout = crate::memory::layout::checked(5 * GIB, 48).unwrap();
        let mut m = PrivateMemory::with_backend(NoKvm, layout, Backing::OnTouch, 64).unwrap();
        m.set_map_on_touch(map_on_touch);
        m
    }

    #[test]
    fn accesses_without_a_slot_are_classified_by_page_state() {
        let mut m = memory(true);
        let pending = 4 * GIB + 0x5000;
        assert_eq!(
            on_memory(&m, pending),
            MemoryAction::Fault(Outcome::PendingAccess, "memory that was never accepted")
        );
        assert!(matches!(
            on_memory(&m, 3 * GIB + 0x1000),
            MemoryAction::Fault(Outcome::BadGpa, w) if w.contains("MMIO hole")
        ));
        assert!(matches!(
            on_memory(&m, 7 * GIB),
            MemoryAction::Fault(Outcome::BadGpa, "a GPA that is not RAM")
        ));
        // Accepted but not mapped yet: a first touch, then mapped.
        m.add_initial(0x10_0000, 0x1000).unwrap();
        let req = crate::tdx::accept::AcceptRequest::decode(
            m.layout(),
            abi::tdcall::accept::encode(4 * GIB, abi::tdcall::PageLevel::L2M),
        );
        crate::tdx::accept::accept_alone(&mut m, &req).unwrap();
        assert_eq!(on_memory(&m, pending), MemoryAction::FirstTouch);
        assert!(m.map_touched(pending).unwrap(), "the first touch maps");
        // A second vCPU's exit on the same run finds it mapped: no-op.
        assert!(!m.map_touched(pending).unwrap());
        assert_eq!(
            on_memory(&m, pending),
            MemoryAction::Bug,
            "mapped memory never exits"
        );
        // Without first-touch mapping, accepted memory is mapped at accept.
        let mut m = memory(false);
        crate::tdx::accept::accept_alone(&mut m, &req).unwrap();
        assert_eq!(on_memory(&m, pending), MemoryAction::Bug);
    }
}
