//! A vCPU's run loop. Each KVM exit is first turned into an `Exit` (what
//! happened, no state), then `on_exit` decides the `Action` (a plain
//! function, unit-tested with fake exits, as Firecracker's
//! `handle_kvm_exit` is), and the loop applies it: a TDCALL goes to the
//! emulated TDX module and its event is recorded, a memory exit becomes a
//! first-touch mapping or a precise stop (`memory_exit`), anything else
//! resumes or stops the TD. The loop also honours the watchdog, stop signals and the stop
//! board: each vCPU runs this loop on its own thread, and the first stop
//! of any of them stops them all.

pub mod doorbell;
pub mod events;
pub mod exit;
pub mod memory_exit;
pub mod retired_write;
pub mod run_again;
pub mod stop_board;
pub mod timing;
pub mod triple_fault;
pub mod unpatched_tdcall;
pub mod virt_exception;

pub use exit::{on_exit, on_memory_smp, Action, Exit, MemoryAction};

use crate::host::watchdog::Watchdog;
use crate::report::ExitStats;
use crate::shared::TdShared;
use crate::stop::{Access, Fatal, Stop};
use abi::report::Outcome;
use abi::tdcall::TDCALL_INSN;
use kvm_ioctls::{SyncReg, VcpuFd};
use std::time::Duration;

/// What belongs to one vCPU alone.
#[derive(Clone, Debug, Default)]
pub struct VcpuState {
    pub index: u32,
    pub exits: ExitStats,
    /// Accepts this vCPU asked for, and how many were answered BUSY.
    pub accepts: u64,
    pub busy: u64,
    /// Time the guest spent waiting for its accept lock on this vCPU, as
    /// the guest reports it (`Counter::LockWaitTsc`, converted).
    pub lock_wait_ns: u64,
    /// The vCPU's TSC frequency (KVM_GET_TSC_KHZ), when KVM tells it.
    pub tsc_khz: Option<u32>,
    /// The GPA of a poisoned-page SIGBUS that found the page accepted
    /// (another vCPU accepted it after the access): a second one there,
    /// with no other exit between, is not a race.
    pub last_poisoned: Option<u64>,
    /// KVM_RUN calls in a row that answered EAGAIN.
    pub again: run_again::AgainStreak,
    /// Where its time went, and each TDCALL kind's handling time.
    pub time: timing::VcpuTime,
}

impl VcpuState {
    pub fn new(index: u32) -> Self {
        VcpuState {
            index,
            ..VcpuState::default()
        }
    }
}

impl VcpuState {
    /// TSC ticks of this vCPU in nanoseconds (0 without a known frequency).
    pub fn tsc_to_ns(&self, ticks: u64) -> u64 {
        match self.tsc_khz {
            Some(khz) if khz > 0 => {
                u64::try_from(u128::from(ticks) * 1_000_000 / u128::from(khz)).unwrap_or(u64::MAX)
            }
            _ => 0,
        }
    }
}

/// The longest an emulated HLT parks a vCPU.
pub const HLT_PARK: Duration = Duration::from_millis(1);

/// The vCPUs (a bit per index) an IPI with interrupt command `icr`, sent
/// by vCPU `me` of `vcpus`, reaches: the x2APIC destination (0xffff_ffff
/// is the broadcast ID: all of them), or a shorthand (self, all, all but
/// self). A destination with no vCPU reaches nobody. Delivery and
/// destination modes are not decoded: any IPI only ends a halt.
pub fn ipi_targets(icr: u64, me: u32, vcpus: u32) -> u64 {
    use abi::vmcall::ghci;
    let all = if vcpus >= 64 {
        u64::MAX
    } else {
        (1u64 << vcpus) - 1
    };
    let me = 1u64 << (me % 64);
    match (icr >> ghci::ICR_SHORTHAND_SHIFT) & 3 {
        ghci::ICR_SHORTHAND_SELF => me,
        ghci::ICR_SHORTHAND_ALL => all,
        ghci::ICR_SHORTHAND_ALL_BUT_SELF => all & !me,
        _ => {
            let dest = icr >> ghci::ICR_DEST_SHIFT;
            if dest == u64::from(u32::MAX) {
                all
            } else if dest < u64::from(vcpus) && dest < 64 {
                1 << dest
            } else {
                0
            }
        }
    }
}

/// A vCPU: its KVM file descriptor and its own state.
pub struct Vcpu {
    pub fd: VcpuFd,
    pub state: VcpuState,
    /// Registers travel through kvm_run (KVM_CAP_SYNC_REGS) at exits.
    pub sync_regs: bool,
    /// KVM offers the guest 1 GiB pages (CPUID 0x80000001 EDX bit 26).
    pub gib_pages: bool,
}

impl Vcpu {
    /// Runs until the TD stops (this vCPU's stop, another vCPU's, the
    /// watchdog's or a stop signal's). Returns the stop this vCPU saw
    /// first, with its RIP; the TD's stop is the board's.
    pub fn run(
        &mut self,
        td: &TdShared,
        watchdog: Option<&Watchdog>,
        timeout: Option<Duration>,
    ) -> Stop {
        let index = self.state.index;
        let immediate_exit: *mut u8 = &mut self.fd.get_kvm_run().immediate_exit;
        td.board.attach(index, immediate_exit);
        let mut stop = loop {
            if let Some(stop) = self.step(td, watchdog, timeout) {
                break stop;
            }
        };
        td.board.detach(index);
        if let Some(f) = stop.fatal.as_mut() {
            f.rip = f.rip.or_else(|| self.rip());
        }
        td.board.stop(index, stop.clone());
        stop
    }

    /// A triple fault, explained when the VMM can tell why
    /// (`triple_fault.rs`: 1 GiB pages on a host without them).
    fn triple_fault(&self, td: &TdShared) -> Stop {
        let mut message = "vCPU triple-faulted (KVM shutdown exit)".to_string();
        if let Ok(sregs) = self.fd.get_sregs() {
            let paging = sregs.cr0 & (1 << 31) != 0;
            let s = td.lock();
            if let Some(why) = triple_fault::explain(&s.memory, paging, sregs.cr3, self.gib_pages) {
                message = format!("{message}: {why}");
            }
        }
        Stop::fatal(Outcome::TripleFault, Fatal::new(message).rip(self.rip()))
    }

    /// The vCPU's RIP, if KVM tells it.
    pub fn rip(&self) -> Option<u64> {
        self.fd.get_regs().ok().map(|r| r.rip)
    }

    /// One KVM_RUN and the handling of its exit.
    fn step(
        &mut self,
        td: &TdShared,
        watchdog: Option<&Watchdog>,
        timeout: Option<Duration>,
    ) -> Option<Stop> {
        if td.board.stopped() {
            return Some(Stop::error("stopped with the TD".into(), None));
        }
        if watchdog.is_some_and(|w| w.fired()) {
            // KVM_RUN never got the vCPU running: that, not the timeout
            // that came first, is what the report says.
            let ran = self.state.exits.total > 0;
            if let Some(stop) = self.state.again.stop_instead(self.state.index, ran) {
                return Some(stop);
            }
            let secs = timeout.unwrap_or_default().as_secs_f64();
            let message = format!("guest still running after the {secs} s timeout");
            return Some(Stop::fatal(
                Outcome::Timeout,
                Fatal::new(message).rip(self.rip()),
            ));
        }
        if let Some(sig) = crate::host::signals::pending() {
            let message = format!("stopped by {}", crate::host::signals::name(sig));
            let mut stop = Stop::fatal(Outcome::Interrupted, Fatal::new(message).rip(self.rip()));
            stop.signal = Some(sig);
            return Some(stop);
        }
        // Clear a pause's or watchdog's immediate_exit, then check the
        // stops again: a stop sets it after this point and KVM_RUN
        // returns at once.
        self.fd.get_kvm_run().immediate_exit = 0;
        td.board.enter_guest();
        if td.board.stopped() || crate::host::signals::pending().is_some() {
            td.board.leave_guest();
            return None;
        }
        let entered = std::time::Instant::now();
        self.state.time.enter(entered);
        let (run, poisoned) = crate::host::poison_signal::around_run(|| self.fd.run());
        self.state.time.exit(entered, std::time::Instant::now());
        td.board.leave_guest();
        let exit = Exit::from_kvm(run);
        if let Some(host) = poisoned {
            return self.poisoned_access(td, host);
        }
        self.state.last_poisoned = None;
        if exit != Exit::Again {
            self.state.again.reset();
        }
        match on_exit(exit, &mut self.state.exits) {
            Action::Resume => None,
            Action::RunAgain => {
                let ran = self.state.exits.total > 0;
                self.state.again.again(self.state.index, ran)
            }
            Action::Stop(stop) => Some(stop),
            Action::Tdcall => self.doorbell(td, 0),
            Action::Memory {
                gpa,
                access,
                len,
                data,
            } => {
                let shared = &mut *td.lock();
                match on_memory_smp(&shared.memory, gpa, td.vcpus > 1) {
                    MemoryAction::FirstTouch => {
                        self.complete_first_touch(shared, gpa, access, len, data)
                    }
                    MemoryAction::Fault(outcome, what) => {
                        let written = retired_write::Write {
                            gpa,
                            bytes: &data[..len],
                        };
                        let written = (access == Access::Write).then_some(&written);
                        self.memory_fault(shared, gpa, access, written, outcome, what)
                    }
                    MemoryAction::Bug => Some(Stop::error(
                        format!(
                            "{} of accepted GPA {gpa:#x} exited without a memslot (memslot bookkeeping bug)",
                            access.as_str()
                        ),
                        self.rip(),
                    )),
                }
            }
            Action::TripleFault => Some(self.triple_fault(td)),
            Action::CheckFetch if self.at_unpatched_tdcall() => {
                self.state.exits.unpatched_tdcalls += 1;
                self.doorbell(td, TDCALL_INSN.len() as u64)
            }
            Action::CheckFetch => self.internal_error(&mut td.lock(), td.vcpus > 1),
        }
    }

    /// A TDCALL: the registers (through kvm_run with KVM_CAP_SYNC_REGS, no
    /// ioctl), the doorbell (`doorbell::ring`: decoded once, answered,
    /// recorded), the registers back with RIP moved `step` bytes on (0 at
    /// the doorbell's I/O exit, where KVM completes the `out`; the
    /// instruction's length at an unpatched TDCALL, which did not run).
    fn doorbell(&mut self, td: &TdShared, step: u64) -> Option<Stop> {
        let started = std::time::Instant::now();
        let mut regs = if self.sync_regs {
            self.fd.sync_regs().regs
        } else {
            match self.fd.get_regs() {
                Ok(r) => r,
                Err(e) => {
                    return Some(Stop::error(
                        format!("KVM_GET_REGS at a TDCALL failed: {e}"),
                        None,
                    ))
                }
            }
        };
        let kind = timing::TdcallKind::of(regs.rax, regs.r10, regs.r11);
        let rung = doorbell::ring(td, &mut self.state, &mut regs);
        if rung.stop.is_some() {
            return rung.stop;
        }
        regs.rip = regs.rip.wrapping_add(step);
        if self.sync_regs {
            self.fd.sync_regs_mut().regs = regs;
            self.fd.set_sync_dirty_reg(SyncReg::Register);
        } else if let Err(e) = self.fd.set_regs(&regs) {
            return Some(Stop::error(
                format!("KVM_SET_REGS after a TDCALL failed: {e}"),
                Some(regs.rip),
            ));
        }
        let index = self.state.index;
        if let Some(icr) = rung.ipi {
            td.board.wake(ipi_targets(icr, index, td.vcpus));
        }
        let handled = std::time::Instant::now();
        self.state
            .time
            .tdcall(kind, crate::host::clock::ns(handled - started));
        if rung.halt {
            td.board.idle(index, HLT_PARK);
            self.state
                .time
                .parked(crate::host::clock::ns_since(handled));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::ipi_targets;

    #[test]
    fn ipi_destinations_and_shorthands() {
        let icr = |dest: u64, shorthand: u64| dest << 32 | shorthand << 18 | 0xf0;
        assert_eq!(ipi_targets(icr(2, 0), 0, 4), 0b0100);
        // A destination with no vCPU reaches nobody.
        assert_eq!(ipi_targets(icr(4, 0), 0, 4), 0);
        assert_eq!(ipi_targets(icr(u64::from(u32::MAX), 0), 0, 4), 0b1111);
        assert_eq!(ipi_targets(icr(64, 0), 0, 64), 0);
        assert_eq!(ipi_targets(icr(3, 1), 1, 4), 0b0010);
        assert_eq!(ipi_targets(icr(0, 2), 1, 4), 0b1111);
        assert_eq!(ipi_targets(icr(0, 3), 1, 4), 0b1101);
        assert_eq!(ipi_targets(icr(0, 3), 63, 64), u64::MAX >> 1);
    }
}
