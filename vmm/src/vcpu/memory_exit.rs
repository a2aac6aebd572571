//! A vCPU's memory exits: the first touch of accepted memory (mapped and
//! the access completed), an access to pending or non-RAM memory (a
//! precise stop with GPA, RIP and access), a poisoned page's SIGBUS
//! (`uffd-poison`: replayed without a slot for the exact GPA), and KVM's
//! internal error on an instruction fetch from memory without a slot.

use crate::memory::private::GpaKind;
use crate::report::trace::Kind;
use crate::shared::{Shared, TdShared};
use crate::stop::{Access, Fatal, Stop};
use crate::vcpu::exit::{on_memory, on_memory_smp, MemoryAction};
use crate::vcpu::retired_write::Write;
use crate::vcpu::Vcpu;
use abi::report::Outcome;

impl Vcpu {
    /// The first access to accepted memory exited like MMIO: map the run
    /// around it, and complete the access KVM handed us (copy the data in
    /// or out), so the instruction retires normally.
    pub(super) fn complete_first_touch(
        &mut self,
        shared: &mut Shared,
        gpa: u64,
        access: Access,
        len: usize,
        data: [u8; 8],
    ) -> Option<Stop> {
        if let Some(stop) = self.map_first_touch(shared, gpa) {
            return Some(stop);
        }
        let mem = &mut shared.memory;
        let done = match access {
            Access::Write => mem.write_accepted(gpa, &data[..len]),
            _ => {
                let mut buf = [0u8; 8];
                let ok = mem.read_accepted(gpa, &mut buf[..len]);
                if ok {
                    let run = self.fd.get_kvm_run();
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
        // The access runs past the accepted page into memory that is not:
        // the first byte of the next page is where it faults.
        let end = gpa.max((gpa + len.max(1) as u64 - 1) & !0xfff);
        match on_memory(&shared.memory, end) {
            MemoryAction::Fault(outcome, what) => {
                let written = Write {
                    gpa,
                    bytes: &data[..len],
                };
                let written = (access == Access::Write).then_some(&written);
                self.memory_fault(shared, end, access, written, outcome, what)
            }
            _ => Some(Stop::error(
                format!("completing the {len}-byte access at {gpa:#x} failed"),
                self.rip(),
            )),
        }
    }

    /// Maps accepted memory at its first touch (a data access or an
    /// instruction fetch) and checks the invariants around it.
    pub(super) fn map_first_touch(&mut self, shared: &mut Shared, gpa: u64) -> Option<Stop> {
        match shared.memory.map_touched(gpa) {
            Ok(true) => self.state.exits.first_touch_maps += 1,
            // Another vCPU mapped the run since this access exited.
            Ok(false) => {}
            Err(e) => {
                return Some(Stop::error(
                    format!("mapping accepted GPA {gpa:#x} on first touch failed: {e}"),
                    self.rip(),
                ))
            }
        }
        shared
            .check_invariants(gpa & !0xfff, abi::PAGE_4K, false)
            .err()
            .map(|e| Stop::error(format!("private-memory invariant broken: {e}"), self.rip()))
    }

    /// A guest access hit a poisoned page (`uffd-poison`, pvm-native: a
    /// SIGBUS naming the page's host address). If the page is still
    /// pending, it is taken out of its memslot and the instruction runs
    /// again: it then exits like any access to memory without a slot, with
    /// its exact GPA and access type, and stops the TD there. A page that
    /// another vCPU accepted meanwhile needs nothing.
    pub(super) fn poisoned_access(&mut self, td: &TdShared, host: u64) -> Option<Stop> {
        self.state.exits.total += 1;
        self.state.exits.poisoned += 1;
        let shared = &mut *td.lock();
        let mem = &mut shared.memory;
        let Some(offset) = mem.ram().offset_of_host(host) else {
            return Some(Stop::error(
                format!("SIGBUS in KVM_RUN at host address {host:#x}, outside guest RAM"),
                self.rip(),
            ));
        };
        let gpa = mem.layout().gpa_of_offset(offset & !(abi::PAGE_4K - 1));
        if mem.classify(gpa) != GpaKind::Pending {
            // Accepted since the access; if it hits again, it is no race.
            if self.state.last_poisoned.replace(gpa) == Some(gpa) {
                return Some(Stop::error(
                    format!("SIGBUS in KVM_RUN again at accepted GPA {gpa:#x}"),
                    self.rip(),
                ));
            }
            return None;
        }
        self.state.last_poisoned = None;
        match mem.take_out_of_slot(gpa) {
            Ok(true) => None,
            Ok(false) => Some(Stop::error(
                format!("SIGBUS in KVM_RUN at pending GPA {gpa:#x}, which no memslot covers"),
                self.rip(),
            )),
            // The page is pending all the same: stop there, without the
            // exact offset and access a replay would have given.
            Err(e) => {
                let message = format!(
                    "guest access of memory that was never accepted in the page at GPA {gpa:#x} \
                     (poisoned; replaying it for the exact address failed: {e})"
                );
                Some(Stop::fatal(
                    Outcome::PendingAccess,
                    Fatal::new(message).gpa(Some(gpa)).rip(self.rip()),
                ))
            }
        }
    }

    /// A guest access reached a GPA without a memslot that is not
    /// accepted memory: stop with the exact GPA, RIP and access; or, for
    /// private memory that is not accepted in a TD without SEPT_VE_DISABLE,
    /// raise #VE in the guest (`virt_exception`) and go on. `written` is
    /// what KVM handed over for a write (it retired the instruction).
    pub(super) fn memory_fault(
        &mut self,
        shared: &mut Shared,
        gpa: u64,
        access: Access,
        written: Option<&Write<'_>>,
        outcome: Outcome,
        what: &str,
    ) -> Option<Stop> {
        let ve_enabled = shared.tdx.attributes & abi::tdcall::vp_info::ATTR_SEPT_VE_DISABLE == 0;
        if outcome == Outcome::PendingAccess && ve_enabled {
            return self.raise_ve(shared, gpa, access, written).err();
        }
        // KVM retired a write before it exited: find its instruction.
        let (rip, note) = match written {
            Some(w) => self.write_rip(&shared.memory, w),
            None => (self.rip(), String::new()),
        };
        if outcome == Outcome::PendingAccess {
            shared
                .log
                .trace(Kind::PendingAccess, gpa, 0, 0, self.state.index);
        }
        let message = format!(
            "guest {} of {what} at GPA {gpa:#x} (RIP {}{note})",
            access.as_str(),
            rip.map_or("unknown".into(), |r| format!("{r:#x}"))
        );
        log::debug!("{message}");
        Some(Stop::fatal(
            outcome,
            Fatal::new(message).gpa(Some(gpa)).rip(rip).access(access),
        ))
    }

    /// KVM could not emulate an instruction. If it was fetched from memory
    /// with no memslot, that is a first touch of accepted memory (map it
    /// and fetch again), or a fetch from pending memory or a non-RAM GPA
    /// (the identity map makes RIP a GPA).
    pub(super) fn internal_error(&mut self, shared: &mut Shared, others: bool) -> Option<Stop> {
        let rip = self.rip();
        if let Some(rip) = rip {
            match on_memory_smp(&shared.memory, rip, others) {
                MemoryAction::FirstTouch => return self.map_first_touch(shared, rip),
                MemoryAction::Fault(outcome, what) => {
                    self.state.exits.mmio += 1;
                    return self.memory_fault(shared, rip, Access::Execute, None, outcome, what);
                }
                MemoryAction::Bug => {}
            }
        }
        let suberror = {
            let run = self.fd.get_kvm_run();
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
