//! The doorbell: one TDCALL exit, as it runs, without KVM (the vCPU loop
//! moves the registers in and out). The registers are decoded once into a
//! typed `tdx::tdcall::Tdcall`; an accept runs its own path
//! (`tdx::accept::accept_on_vcpu`: the entry lock, the state lock twice at
//! most), every other leaf is answered and recorded in one acquisition of
//! the state lock; the vCPU's own counts follow without a lock, and the
//! status goes into RAX once.

use crate::memory::memslots::SlotBackend;
use crate::shared::TdShared;
use crate::stop::Stop;
use crate::tdx::dispatch::dispatch;
use crate::tdx::event::Event;
use crate::tdx::tdcall::Tdcall;
use crate::vcpu::events::{apply_own, apply_shared};
use crate::vcpu::VcpuState;
use kvm_bindings::kvm_regs;

/// What the vCPU loop does after a TDCALL, beyond resuming the guest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rung {
    /// The TD stops (no register is written back).
    pub stop: Option<Stop>,
    /// TDG.VP.VMCALL<Instruction.HLT>: idle until an IPI.
    pub halt: bool,
    /// An IPI to send (the x2APIC ICR value).
    pub ipi: Option<u64>,
}

/// Handles the TDCALL in `regs` from `vcpu` and writes its outputs back
/// into `regs` (RAX last, once).
pub fn ring<B: SlotBackend>(td: &TdShared<B>, vcpu: &mut VcpuState, regs: &mut kvm_regs) -> Rung {
    let handled = match Tdcall::decode(regs, &td.layout) {
        Tdcall::Accept(req) => crate::tdx::accept::accept_on_vcpu(td, &req, vcpu.index, regs.rip),
        Tdcall::Leaf(leaf) => {
            let s = &mut *td.lock();
            let handled = dispatch(
                &mut s.tdx,
                &mut s.memory,
                &mut s.console,
                vcpu.index,
                &leaf,
                regs,
            );
            if let Some(event) = &handled.event {
                apply_shared(s, event);
            }
            handled
        }
    };
    if let Some(stop) = handled.stop {
        return Rung {
            stop: Some(stop),
            ..Rung::default()
        };
    }
    regs.rax = handled.status.raw();
    let Some(event) = handled.event else {
        return Rung::default();
    };
    apply_own(vcpu, &event);
    Rung {
        stop: None,
        halt: event == Event::Halt,
        ipi: match event {
            Event::Ipi(icr) => Some(icr),
            _ => None,
        },
    }
}

#[cfg(test)]
mod leaf_tests;
#[cfg(test)]
mod map_gpa_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::console::Console;
    use crate::memory::guest_ram::Backing;
    use crate::memory::memslots::NoKvm;
    use crate::memory::private::PrivateMemory;
    use crate::report::run_log::RunLog;
    use crate::shared::Shared;
    use crate::tdx::module::TdxModule;
    use abi::report::{Counter, Mark, Outcome};
    use abi::tdcall::{accept::encode, leaf, status, PageLevel};
    use abi::vmcall::{emu, ghci, gpr, reg_bit, GHCI_STANDARD, VENDOR_EMU};
    use abi::GIB;

    pub(super) fn td(vcpus: u32) -> TdShared<NoKvm> {
        let layout = crate::memory::layout::checked(5 * GIB, 48).unwrap();
        let mut memory = PrivateMemory::with_backend(NoKvm, layout, Backing::OnTouch, 64).unwrap();
        memory.set_map_on_touch(true);
        let state = Shared {
            memory,
            tdx: TdxModule::new(48, vcpus, None),
            console: Console::new(false),
            log: RunLog::new(std::time::Instant::now(), None),
            invariant_checks: Some(0),
            lock_acquisitions: 0,
        };
        let board = std::sync::Arc::new(crate::vcpu::stop_board::StopBoard::new(vcpus));
        TdShared::new(state, board).unwrap()
    }

    pub(super) fn accept(rcx: u64) -> kvm_regs {
        kvm_regs {
            rax: u64::from(leaf::MEM_PAGE_ACCEPT),
            rcx,
            ..Default::default()
        }
    }

    /// The state-lock acquisitions `regs`' TDCALL takes.
    fn locks_of(td: &TdShared<NoKvm>, v: &mut VcpuState, regs: &mut kvm_regs) -> (u64, Rung) {
        let before = td.lock().lock_acquisitions;
        let rung = ring(td, v, regs);
        (td.lock().lock_acquisitions - before - 1, rung)
    }

    #[test]
    fn an_accept_updates_pages_stats_trace_and_invariants_in_two_state_locks() {
        let (td, mut v) = (td(1), VcpuState::new(0));
        let mut regs = accept(encode(4 * GIB, PageLevel::L2M));
        let (locks, rung) = locks_of(&td, &mut v, &mut regs);
        assert_eq!(rung, Rung::default());
        assert_eq!(regs.rax, status::SUCCESS);
        assert_eq!(locks, 2, "begin and finish");
        {
            let s = td.lock();
            assert_eq!(s.memory.pages().accepted_pages(), 512);
            assert_eq!((s.tdx.stats.calls, s.tdx.stats.ok_2m), (1, 1));
            assert_eq!(s.invariant_checks, Some(1), "checked after the accept");
            assert_eq!(s.tdx.counters.to_map()["TDG.MEM.PAGE.ACCEPT"], 1);
        }
        assert_eq!((v.accepts, v.busy), (1, 0));
        // The same again: TDX_PAGE_ALREADY_ACCEPTED with the level, one lock.
        let mut regs = accept(encode(4 * GIB + 0x1000, PageLevel::L4K));
        let (locks, _) = locks_of(&td, &mut v, &mut regs);
        assert_eq!(
            regs.rax,
            status::PAGE_ALREADY_ACCEPTED | PageLevel::L2M as u64
        );
        assert_eq!(locks, 1);
        // A GPA in the hole: invalid, nothing changes, one lock.
        let mut regs = accept(encode(3 * GIB, PageLevel::L4K));
        let (locks, _) = locks_of(&td, &mut v, &mut regs);
        assert_eq!(regs.rax, status::OPERAND_INVALID | status::OPERAND_RCX);
        assert_eq!(locks, 1);
        let s = td.lock();
        assert_eq!(s.memory.pages().accepted_pages(), 512);
        assert_eq!(
            (
                s.tdx.stats.calls,
                s.tdx.stats.already_accepted,
                s.tdx.stats.invalid
            ),
            (3, 1, 1)
        );
        assert_eq!(v.accepts, 3);
    }

    #[test]
    fn a_busy_entry_answers_in_one_state_lock_and_counts_on_the_vcpu() {
        let (td, mut v) = (td(2), VcpuState::new(1));
        let gpa = 4 * GIB + 8 * abi::PAGE_2M;
        let entry = td.layout.ram_offset(gpa, 1).unwrap() / abi::PAGE_2M;
        let held = td.sept.try_lock(entry).unwrap();
        let mut regs = accept(encode(gpa + 0x3000, PageLevel::L4K));
        let (locks, _) = locks_of(&td, &mut v, &mut regs);
        assert_eq!(regs.rax, status::OPERAND_BUSY | status::OPERAND_RCX);
        assert_eq!(locks, 1);
        assert_eq!((v.accepts, v.busy), (1, 1));
        drop(held);
        let mut regs = accept(encode(gpa + 0x3000, PageLevel::L4K));
        ring(&td, &mut v, &mut regs);
        assert_eq!(regs.rax, status::SUCCESS);
        assert_eq!((v.accepts, v.busy), (2, 1));
    }

    #[test]
    fn other_leaves_answer_in_one_state_lock() {
        let (td, mut v) = (td(2), VcpuState::new(1));
        let mut regs = kvm_regs {
            rax: u64::from(leaf::VP_INFO),
            ..Default::default()
        };
        let (locks, _) = locks_of(&td, &mut v, &mut regs);
        assert_eq!(locks, 1);
        assert_eq!(
            (regs.rax, regs.rcx, regs.r8, regs.r9),
            (0, 48, 2 | 2 << 32, 1)
        );
        // A leaf that is not emulated, and RAX with a version: invalid RAX.
        for rax in [u64::from(leaf::VM_RD), 1 | 1 << 16] {
            let mut regs = kvm_regs {
                rax,
                ..Default::default()
            };
            let (locks, rung) = locks_of(&td, &mut v, &mut regs);
            assert_eq!((locks, rung), (1, Rung::default()));
            assert_eq!(regs.rax, status::OPERAND_INVALID | status::OPERAND_RAX);
        }
        let mut regs = kvm_regs {
            rax: u64::from(leaf::VP_VEINFO_GET),
            ..Default::default()
        };
        ring(&td, &mut v, &mut regs);
        assert_eq!(regs.rax, status::NO_VALID_VE_INFO);
    }

    fn vmcall(r10: u64, r11: u64, r12: u64, r13: u64) -> kvm_regs {
        let exposed = reg_bit(gpr::R10) | reg_bit(gpr::R11) | reg_bit(gpr::R12) | reg_bit(gpr::R13);
        kvm_regs {
            rax: u64::from(leaf::VP_VMCALL),
            rcx: exposed,
            r10,
            r11,
            r12,
            r13,
            ..Default::default()
        }
    }

    #[test]
    fn vendor_calls_become_log_entries_and_shutdown_a_stop() {
        let (td, mut v) = (td(1), VcpuState::new(0));
        ring(
            &td,
            &mut v,
            &mut vmcall(VENDOR_EMU, emu::MARK, Mark::FwStart as u64, 0),
        );
        ring(
            &td,
            &mut v,
            &mut vmcall(VENDOR_EMU, emu::MARK, Mark::KernelEntry as u64, 0),
        );
        assert_eq!(td.lock().log.phase.as_str(), "kernel");
        let mut bad = vmcall(VENDOR_EMU, emu::MARK, 999, 0);
        assert_eq!(ring(&td, &mut v, &mut bad), Rung::default());
        assert_ne!(bad.r10, 0, "an undefined mark is refused");
        assert_eq!(bad.rax, status::SUCCESS, "the TDCALL itself succeeds");
        ring(
            &td,
            &mut v,
            &mut vmcall(VENDOR_EMU, emu::SYSTEM_TABLE, 0x7000, 0),
        );
        assert_eq!(td.lock().log.system_table, Some(0x7000));
        // The lock wait is the vCPU's own, in ns of its TSC.
        v.tsc_khz = Some(1_000_000);
        ring(
            &td,
            &mut v,
            &mut vmcall(VENDOR_EMU, emu::COUNTER, Counter::LockWaitTsc as u64, 5000),
        );
        assert_eq!(v.lock_wait_ns, 5000);
        let mut regs = vmcall(VENDOR_EMU, emu::SHUTDOWN, 3, 0);
        let rung = ring(&td, &mut v, &mut regs);
        let stop = rung.stop.unwrap();
        assert_eq!((stop.outcome, stop.exit_code), (Outcome::Ok, Some(3)));
        assert_eq!(regs.rax, u64::from(leaf::VP_VMCALL), "nothing written back");
    }

    #[test]
    fn halt_and_ipi_come_back_to_the_loop() {
        let (td, mut v) = (td(2), VcpuState::new(0));
        let rung = ring(
            &td,
            &mut v,
            &mut vmcall(GHCI_STANDARD, ghci::INSTRUCTION_HLT, 0, 0),
        );
        assert!(rung.halt && rung.ipi.is_none());
        let icr = 1u64 << ghci::ICR_DEST_SHIFT | ghci::WAKE_VECTOR;
        let rung = ring(
            &td,
            &mut v,
            &mut vmcall(
                GHCI_STANDARD,
                ghci::INSTRUCTION_WRMSR,
                ghci::X2APIC_ICR,
                icr,
            ),
        );
        assert_eq!(rung.ipi, Some(icr));
    }
}
