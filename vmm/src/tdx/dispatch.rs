//! Every TDCALL leaf but the accept, answered under the TD's state lock:
//! `TDG.VP.INFO`, `TDG.VP.VEINFO.GET`, `TDG.VP.VMCALL` (to `vmcall.rs`),
//! the measurement leaves (to `measure.rs`);
//! any other leaf, known or not, and any operand a leaf cannot take answer
//! `TDX_OPERAND_INVALID` naming the operand, with no side effects. The
//! leaf comes decoded (`tdcall::Leaf`); outputs other than RAX go into
//! `regs`, the status and what happened (a typed `Event` or a `Stop`) are
//! returned for the doorbell to write back and the run loop to apply.

use crate::host::console::Console;
use crate::memory::memslots::SlotBackend;
use crate::memory::private::PrivateMemory;
use crate::tdx::event::Handled;
use crate::tdx::measure;
use crate::tdx::module::TdxModule;
use crate::tdx::tdcall::Leaf;
use abi::tdcall::{leaf, Operand, Status};
use kvm_bindings::kvm_regs;

/// Answers `call` from vCPU `vcpu_index`; its output registers but RAX go
/// into `regs`.
pub fn dispatch<B: SlotBackend>(
    tdx: &mut TdxModule,
    mem: &mut PrivateMemory<B>,
    console: &mut Console,
    vcpu_index: u32,
    call: &Leaf,
    regs: &mut kvm_regs,
) -> Handled {
    tdx.counters.leaf(call.number());
    match call {
        Leaf::VpInfo => {
            regs.rcx = u64::from(tdx.gpaw);
            regs.rdx = tdx.attributes;
            // NUM_VCPUS in bits 31:0, MAX_VCPUS in 63:32.
            regs.r8 = u64::from(tdx.vcpus) | (u64::from(tdx.vcpus) << 32);
            regs.r9 = u64::from(vcpu_index);
            regs.r10 = 0;
            regs.r11 = 0;
            Handled::answer(Status::Success)
        }
        Leaf::VeInfoGet => {
            // The VE info of the last #VE raised on this vCPU, cleared by
            // the read; none raised (or already read): no valid info.
            let slot = tdx.ve_info.get_mut(abi::to_usize(u64::from(vcpu_index)));
            match slot.and_then(Option::take) {
                Some(ve) => {
                    regs.rcx = abi::tdcall::ve::EXIT_REASON_EPT_VIOLATION;
                    regs.rdx = ve.qualification;
                    regs.r8 = 0;
                    regs.r9 = ve.gpa;
                    regs.r10 = 0;
                    Handled::answer(Status::Success)
                }
                None => Handled::answer(Status::NoValidVeInfo),
            }
        }
        Leaf::VpVmcall(inputs) => {
            crate::tdx::vmcall::handle(tdx, mem, console, vcpu_index, inputs, regs)
        }
        Leaf::RtmrExtend(req) => measure::rtmr_extend(tdx, mem, req, regs.rip),
        Leaf::Report(req) => measure::report(tdx, mem, req, regs.rip),
        Leaf::VerifyReport(mac) => measure::verify_report(tdx, mem, *mac, regs.rip),
        Leaf::NotEmulated(n) => {
            log::debug!(
                "TDCALL leaf {n} ({}) is not emulated: returning TDX_OPERAND_INVALID",
                leaf::name(*n)
            );
            Handled::answer(Status::OperandInvalid(Operand::Rax))
        }
        Leaf::BadOperand { operand, .. } => Handled::answer(Status::OperandInvalid(*operand)),
    }
}
