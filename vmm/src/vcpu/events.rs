//! Applying what a TDCALL did (`tdx::dispatch::Event`) to the state the
//! vCPUs share: the run log (marks, counters, trace, kexec records), the
//! per-vCPU exit counts, and the private-memory invariant checks after
//! every accept.

use crate::memory::invariants::InvariantError;
use crate::memory::memslots::SlotBackend;
use crate::shared::Shared;
use crate::stop::Stop;
use crate::tdx::event::{Event, Handled};
use crate::vcpu::VcpuState;

/// Applies a TDCALL's event to the shared state; a failed invariant
/// check stops the TD.
pub fn apply<B: SlotBackend>(
    shared: &mut Shared<B>,
    vcpu: &mut VcpuState,
    handled: Handled,
    rip: u64,
) -> Option<Stop> {
    if let Some(stop) = handled.stop {
        return Some(stop);
    }
    match handled.event? {
        Event::Accept {
            req,
            status,
            result,
        } => {
            shared.log.accept(&req, status, result, vcpu.index);
            vcpu.accepts += 1;
            if status == abi::tdcall::status::OPERAND_BUSY | abi::tdcall::status::OPERAND_RCX {
                vcpu.busy += 1;
            }
            use crate::tdx::event::AcceptResult as R;
            let checked = match result {
                Some(R::Accepted { gpa, level }) => {
                    check_invariants(shared, gpa, level.size(), true)
                }
                Some(R::AlreadyAccepted { gpa, .. } | R::SizeMismatch { gpa }) => {
                    check_invariants(shared, gpa, abi::PAGE_4K, false)
                }
                _ => Ok(()),
            };
            checked.err().map(|e| {
                Stop::error(
                    format!(
                        "after accept {:#x}: private-memory invariant broken: {e}",
                        req.rcx
                    ),
                    Some(rip),
                )
            })
        }
        Event::Mark(mark, arg) => {
            shared.log.mark(mark, arg);
            None
        }
        Event::Counter(abi::report::Counter::LockWaitTsc, ticks) => {
            // Each CPU reports its own wait: kept per vCPU, in ns.
            vcpu.lock_wait_ns += vcpu.tsc_to_ns(ticks);
            None
        }
        Event::Counter(c, v) => {
            shared.log.counter(c, v);
            None
        }
        Event::SystemTable(gpa) => {
            shared.log.system_table = Some(gpa);
            None
        }
        Event::UnassignedIo => {
            vcpu.exits.unassigned_io += 1;
            None
        }
        Event::Halt | Event::Ipi(_) => None,
    }
}

/// Runs the invariant checks over `[gpa, gpa + len)` when enabled;
/// `zeroed` also checks that the range reads zero (just accepted).
pub fn check_invariants<B: SlotBackend>(
    shared: &mut Shared<B>,
    gpa: u64,
    len: u64,
    zeroed: bool,
) -> Result<(), InvariantError> {
    use crate::memory::invariants::{check_range, check_zeroed};
    let Some(n) = shared.invariant_checks.as_mut() else {
        return Ok(());
    };
    *n += 1;
    check_range(&shared.memory, gpa, len).and_then(|()| {
        if zeroed {
            check_zeroed(&shared.memory, gpa, len)
        } else {
            Ok(())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::console::Console;
    use crate::memory::guest_ram::Backing;
    use crate::memory::layout::RamLayout;
    use crate::memory::memslots::NoKvm;
    use crate::memory::private::PrivateMemory;
    use crate::report::run_log::RunLog;
    use crate::tdx::dispatch::{dispatch, TdxModule};
    use abi::report::Mark;
    use abi::tdcall::{accept::encode, leaf, status, PageLevel};
    use abi::vmcall::{emu, gpr, reg_bit, VENDOR_EMU};
    use abi::GIB;
    use kvm_bindings::kvm_regs;

    fn td() -> Shared<NoKvm> {
        let layout = RamLayout::new(5 * GIB, 48).unwrap();
        let mut memory = PrivateMemory::with_backend(NoKvm, layout, Backing::OnTouch, 64).unwrap();
        memory.set_map_on_touch(true);
        Shared {
            memory,
            tdx: TdxModule::new(48, 1, None),
            console: Console::new(false),
            log: RunLog::new(std::time::Instant::now(), None),
            invariant_checks: Some(0),
        }
    }

    /// A doorbell exit with `regs`, handled and applied as the run loop does.
    fn tdcall(s: &mut Shared<NoKvm>, v: &mut VcpuState, regs: &mut kvm_regs) -> Option<Stop> {
        let handled = dispatch(&mut s.tdx, &mut s.memory, &mut s.console, v.index, regs);
        apply(s, v, handled, regs.rip)
    }

    #[test]
    fn an_accept_exit_updates_pages_stats_and_checks_invariants() {
        let (mut s, mut v) = (td(), VcpuState::new(0));
        let mut regs = kvm_regs {
            rax: leaf::MEM_PAGE_ACCEPT as u64,
            rcx: encode(4 * GIB, PageLevel::L2M),
            ..Default::default()
        };
        assert_eq!(tdcall(&mut s, &mut v, &mut regs), None);
        assert_eq!(regs.rax, status::SUCCESS);
        assert_eq!(s.memory.pages().accepted_pages(), 512);
        assert_eq!((s.tdx.stats.calls, s.tdx.stats.ok_2m), (1, 1));
        assert_eq!(s.invariant_checks, Some(1), "checked after the accept");
        // The same again: TDX_PAGE_ALREADY_ACCEPTED with the level.
        regs.rax = leaf::MEM_PAGE_ACCEPT as u64;
        regs.rcx = encode(4 * GIB + 0x1000, PageLevel::L4K);
        tdcall(&mut s, &mut v, &mut regs);
        assert_eq!(
            regs.rax,
            status::PAGE_ALREADY_ACCEPTED | PageLevel::L2M as u64
        );
        // A GPA in the hole: invalid, nothing changes.
        regs.rax = leaf::MEM_PAGE_ACCEPT as u64;
        regs.rcx = encode(3 * GIB, PageLevel::L4K);
        tdcall(&mut s, &mut v, &mut regs);
        assert_eq!(regs.rax, status::OPERAND_INVALID | status::OPERAND_RCX);
        assert_eq!(s.memory.pages().accepted_pages(), 512);
    }

    #[test]
    fn vendor_calls_become_log_entries_and_shutdown_a_stop() {
        let (mut s, mut v) = (td(), VcpuState::new(0));
        let exposed = reg_bit(gpr::R10) | reg_bit(gpr::R11) | reg_bit(gpr::R12) | reg_bit(gpr::R13);
        let vmcall = |f: u64, r12: u64, r13: u64| kvm_regs {
            rax: leaf::VP_VMCALL as u64,
            rcx: exposed,
            r10: VENDOR_EMU,
            r11: f,
            r12,
            r13,
            ..Default::default()
        };
        tdcall(
            &mut s,
            &mut v,
            &mut vmcall(emu::MARK, Mark::FwStart as u64, 0),
        );
        tdcall(
            &mut s,
            &mut v,
            &mut vmcall(emu::MARK, Mark::KernelEntry as u64, 0),
        );
        assert_eq!(s.log.phase.as_str(), "kernel");
        let mut bad = vmcall(emu::MARK, 999, 0);
        assert_eq!(tdcall(&mut s, &mut v, &mut bad), None);
        assert_ne!(bad.r10, 0, "an undefined mark is refused");
        tdcall(&mut s, &mut v, &mut vmcall(emu::SYSTEM_TABLE, 0x7000, 0));
        assert_eq!(s.log.system_table, Some(0x7000));
        let stop = tdcall(&mut s, &mut v, &mut vmcall(emu::SHUTDOWN, 3, 0)).unwrap();
        assert_eq!(
            (stop.outcome, stop.exit_code),
            (abi::report::Outcome::Ok, Some(3))
        );
    }
}
