//! A vCPU's run loop. Each KVM exit is first turned into an `Exit` (what
//! happened, no state), then `on_exit` decides the `Action` (a plain
//! function, unit-tested with fake exits, as Firecracker's
//! `handle_kvm_exit` is), and the loop applies it: a TDCALL goes to the
//! emulated TDX module and its event is recorded, a memory exit becomes a
//! first-touch mapping or a precise stop, anything else resumes or stops
//! the TD. The loop also honours the watchdog and stop signals.

pub mod events;
pub mod exit;

pub use events::{apply, check_invariants};
pub use exit::{on_exit, on_memory, Action, Exit, MemoryAction};

use crate::host::watchdog::Watchdog;
use crate::report::assemble::{assemble, RunFacts};
use crate::report::trace::Kind;
use crate::report::{Access, ExitStats, Fatal, Report, Stop};
use crate::vm::Td;
use abi::report::Outcome;
use kvm_ioctls::SyncReg;

/// What belongs to one vCPU alone.
#[derive(Clone, Debug, Default)]
pub struct VcpuState {
    pub index: u32,
    pub exits: ExitStats,
}

impl VcpuState {
    pub fn new(index: u32) -> Self {
        VcpuState {
            index,
            exits: ExitStats::default(),
        }
    }
}

impl Td {
    /// Runs the vCPU until the TD stops, then reports.
    pub fn run(mut self) -> Report {
        let watchdog = self.config.timeout.map(Watchdog::arm);
        crate::host::signals::attach(&mut self.vcpu.get_kvm_run().immediate_exit);
        let mut stop = loop {
            if let Some(stop) = self.step(watchdog.as_ref()) {
                break stop;
            }
        };
        crate::host::signals::detach();
        drop(watchdog);
        if let Some(n) = self.shared.invariant_checks.as_mut() {
            *n += 1;
            if let Err(e) = crate::memory::invariants::check_all(&self.shared.memory) {
                stop = Stop::error(
                    format!("private-memory invariant broken at the end: {e}"),
                    None,
                );
            }
        }
        if let Some(why) = self.shared.log.guest_counters.chaos_failure() {
            // A kernel that kexecs carries on after its chaos run: a
            // disagreement in any generation fails the run.
            if stop.outcome == Outcome::Ok && stop.exit_code == Some(0) {
                stop = Stop::fatal(
                    Outcome::GuestPanic,
                    Fatal::new(format!("{why} (the guest exited 0)")),
                );
            }
        }
        if let Some(f) = stop.fatal.as_mut() {
            f.rip = f.rip.or_else(|| self.vcpu.get_regs().ok().map(|r| r.rip));
            f.generation = self.shared.log.generation;
            f.phase = Some(self.shared.log.phase.as_str());
        }
        let facts = RunFacts {
            mem_bytes: self.config.mem_bytes,
            cpu_profile: self.profile.as_str(),
            initial_bytes: self.initial_bytes,
            inputs: std::mem::take(&mut self.inputs),
        };
        assemble(
            self.shared,
            std::slice::from_ref(&self.vcpu_state),
            stop,
            facts,
        )
    }

    fn rip(&self) -> Option<u64> {
        self.vcpu.get_regs().ok().map(|r| r.rip)
    }

    /// One KVM_RUN and the handling of its exit.
    fn step(&mut self, watchdog: Option<&Watchdog>) -> Option<Stop> {
        if watchdog.is_some_and(|w| w.fired()) {
            let secs = self.config.timeout.unwrap_or_default().as_secs_f64();
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
        let exit = Exit::from_kvm(self.vcpu.run());
        match on_exit(exit, &mut self.vcpu_state.exits) {
            Action::Resume => None,
            Action::Stop(stop) => Some(stop),
            Action::Tdcall => self.doorbell(),
            Action::Memory {
                gpa,
                access,
                len,
                data,
            } => match on_memory(&self.shared.memory, gpa) {
                MemoryAction::FirstTouch => self.complete_first_touch(gpa, access, len, data),
                MemoryAction::Fault(outcome, what) => Some(self.memory_fault(gpa, access, outcome, what)),
                MemoryAction::Bug => Some(Stop::error(
                    format!(
                        "{} of accepted GPA {gpa:#x} exited without a memslot (memslot bookkeeping bug)",
                        access.as_str()
                    ),
                    self.rip(),
                )),
            },
            Action::TripleFault => Some(Stop::fatal(
                Outcome::TripleFault,
                Fatal::new("vCPU triple-faulted (KVM shutdown exit)".into()).rip(self.rip()),
            )),
            Action::CheckFetch => self.internal_error(),
        }
    }

    fn doorbell(&mut self) -> Option<Stop> {
        let index = self.vcpu_state.index;
        let s = &mut self.shared;
        if self.sync_regs {
            // KVM stored the registers in kvm_run at the exit: no ioctl.
            let mut regs = self.vcpu.sync_regs().regs;
            let handled = crate::tdx::dispatch::dispatch(
                &mut s.tdx,
                &mut s.memory,
                &mut s.console,
                index,
                &mut regs,
            );
            let stop = apply(s, &mut self.vcpu_state, handled, regs.rip);
            if stop.is_none() {
                self.vcpu.sync_regs_mut().regs = regs;
                self.vcpu.set_sync_dirty_reg(SyncReg::Register);
            }
            return stop;
        }
        let mut regs = match self.vcpu.get_regs() {
            Ok(r) => r,
            Err(e) => {
                return Some(Stop::error(
                    format!("KVM_GET_REGS at a TDCALL failed: {e}"),
                    None,
                ))
            }
        };
        let handled = crate::tdx::dispatch::dispatch(
            &mut s.tdx,
            &mut s.memory,
            &mut s.console,
            index,
            &mut regs,
        );
        let stop = apply(s, &mut self.vcpu_state, handled, regs.rip);
        if stop.is_none() {
            if let Err(e) = self.vcpu.set_regs(&regs) {
                return Some(Stop::error(
                    format!("KVM_SET_REGS after a TDCALL failed: {e}"),
                    Some(regs.rip),
                ));
            }
        }
        stop
    }

    /// The first access to accepted memory exited like MMIO: map the run
    /// around it, and complete the access KVM handed us (copy the data in
    /// or out), so the instruction retires normally.
    fn complete_first_touch(
        &mut self,
        gpa: u64,
        access: Access,
        len: usize,
        data: [u8; 8],
    ) -> Option<Stop> {
        if let Some(stop) = self.map_first_touch(gpa) {
            return Some(stop);
        }
        let mem = &mut self.shared.memory;
        let done = match access {
            Access::Write => mem.write_accepted(gpa, &data[..len]),
            _ => {
                let mut buf = [0u8; 8];
                let ok = mem.read_accepted(gpa, &mut buf[..len]);
                if ok {
                    let run = self.vcpu.get_kvm_run();
                    // SAFETY: the exit was KVM_EXIT_MMIO (a read), so `mmio`
                    // is the live member of the exit union; `len` <= 8, the
                    // size of its data.
                    unsafe { run.__bindgen_anon_1.mmio.data[..len].copy_from_slice(&buf[..len]) };
                }
                ok
            }
        };
        if done {
            return None;
        }
        // The access runs past the accepted page into memory that is not.
        let end = gpa + len.max(1) as u64 - 1;
        Some(match on_memory(&self.shared.memory, end) {
            MemoryAction::Fault(outcome, what) => self.memory_fault(end, access, outcome, what),
            _ => Stop::error(
                format!("completing the {len}-byte access at {gpa:#x} failed"),
                self.rip(),
            ),
        })
    }

    /// Maps accepted memory at its first touch (a data access or an
    /// instruction fetch) and checks the invariants around it.
    fn map_first_touch(&mut self, gpa: u64) -> Option<Stop> {
        if let Err(e) = self.shared.memory.map_touched(gpa) {
            return Some(Stop::error(
                format!("mapping accepted GPA {gpa:#x} on first touch failed: {e}"),
                self.rip(),
            ));
        }
        self.vcpu_state.exits.first_touch_maps += 1;
        check_invariants(&mut self.shared, gpa & !0xfff, abi::PAGE_4K, false)
            .err()
            .map(|e| Stop::error(e, Some(gpa)))
    }

    /// A guest access reached a GPA without a memslot that is not
    /// accepted memory: stop with the exact GPA, RIP and access.
    fn memory_fault(&mut self, gpa: u64, access: Access, outcome: Outcome, what: &str) -> Stop {
        let rip = self.rip();
        if outcome == Outcome::PendingAccess {
            self.shared.log.trace(Kind::PendingAccess, gpa, 0, 0);
        }
        let message = format!(
            "guest {} of {what} at GPA {gpa:#x} (RIP {})",
            access.as_str(),
            rip.map_or("unknown".into(), |r| format!("{r:#x}"))
        );
        log::debug!("{message}");
        Stop::fatal(
            outcome,
            Fatal::new(message).gpa(Some(gpa)).rip(rip).access(access),
        )
    }

    /// KVM could not emulate an instruction. If it was fetched from memory
    /// with no memslot, that is a first touch of accepted memory (map it
    /// and fetch again), or a fetch from pending memory or a non-RAM GPA
    /// (the identity map makes RIP a GPA).
    fn internal_error(&mut self) -> Option<Stop> {
        let rip = self.rip();
        if let Some(rip) = rip {
            match on_memory(&self.shared.memory, rip) {
                MemoryAction::FirstTouch => return self.map_first_touch(rip),
                MemoryAction::Fault(outcome, what) => {
                    self.vcpu_state.exits.mmio += 1;
                    return Some(self.memory_fault(rip, Access::Execute, outcome, what));
                }
                MemoryAction::Bug => {}
            }
        }
        let suberror = {
            let run = self.vcpu.get_kvm_run();
            // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so the
            // `internal` member of the exit union is the one KVM filled.
            unsafe { run.__bindgen_anon_1.internal.suberror }
        };
        Some(Stop::error(
            format!("KVM internal error, suberror {suberror}"),
            rip,
        ))
    }
}
