//! TDCALL dispatch: decodes RAX (and, for an accept, RCX) once at a
//! doorbell exit and runs the leaf. `TDG.MEM.PAGE.ACCEPT` goes to the
//! accept path, `TDG.VP.VMCALL` to `vmcall.rs`. Every other leaf, known or
//! not, and any malformed RAX return `TDX_OPERAND_INVALID | RAX` without
//! side effects. What happened is returned as a typed `Event` (or a
//! `Stop`) for the run loop to apply; nothing here reaches back into it.

use crate::host::console::Console;
use crate::memory::memslots::SlotBackend;
use crate::memory::private::PrivateMemory;
use crate::tdx::accept::{answered, host_failed, injected_busy};
pub use crate::tdx::event::{AcceptRequest, Event, Handled};
pub use crate::tdx::module::TdxModule;
use abi::tdcall::{decode_rax, leaf, status, vp_info};
use kvm_bindings::kvm_regs;

/// Runs the TDCALL in `regs` (the registers at the doorbell exit of vCPU
/// `vcpu_index`) and writes its outputs back into `regs`.
pub fn dispatch<B: SlotBackend>(
    tdx: &mut TdxModule,
    mem: &mut PrivateMemory<B>,
    console: &mut Console,
    vcpu_index: u32,
    regs: &mut kvm_regs,
) -> Handled {
    let (leaf_no, version, rest) = decode_rax(regs.rax);
    tdx.counters.leaf(leaf_no);
    if rest != 0 || version != 0 {
        log::debug!("TDCALL with RAX {:#x}: version/reserved bits set", regs.rax);
        regs.rax = status::OPERAND_INVALID | status::OPERAND_RAX;
        return Handled::default();
    }
    match leaf_no {
        leaf::MEM_PAGE_ACCEPT => {
            let req = AcceptRequest::decode(mem.layout(), regs.rcx);
            accept(tdx, mem, &req, regs)
        }
        leaf::VP_INFO => {
            regs.rax = status::SUCCESS;
            regs.rcx = tdx.gpaw as u64;
            regs.rdx = vp_info::ATTR_SEPT_VE_DISABLE;
            // NUM_VCPUS in bits 31:0, MAX_VCPUS in 63:32.
            regs.r8 = tdx.vcpus as u64 | ((tdx.vcpus as u64) << 32);
            regs.r9 = vcpu_index as u64;
            regs.r10 = 0;
            regs.r11 = 0;
            Handled::default()
        }
        leaf::VP_VEINFO_GET => {
            // SEPT_VE_DISABLE is set: no #VE is ever pending.
            regs.rax = status::NO_VALID_VE_INFO;
            Handled::default()
        }
        leaf::VP_VMCALL => crate::tdx::vmcall::handle(&mut tdx.counters, mem, console, regs),
        other => {
            log::debug!(
                "TDCALL leaf {other} ({}) is not emulated: returning TDX_OPERAND_INVALID",
                leaf::name(other)
            );
            regs.rax = status::OPERAND_INVALID | status::OPERAND_RAX;
            Handled::default()
        }
    }
}

fn accept<B: SlotBackend>(
    tdx: &mut TdxModule,
    mem: &mut PrivateMemory<B>,
    req: &AcceptRequest,
    regs: &mut kvm_regs,
) -> Handled {
    let handled = match injected_busy(tdx, req) {
        Some(h) => h,
        None => match crate::tdx::accept::accept(mem, req, &mut tdx.stats, &mut tdx.hist) {
            Ok(result) => answered(req, result),
            Err(e) => host_failed(req, regs.rip, e),
        },
    };
    if let Some(Event::Accept { status, .. }) = handled.event {
        regs.rax = status;
    }
    handled
}
