//! TDCALL dispatch: decodes RAX at a doorbell exit and runs the leaf.
//! `TDG.MEM.PAGE.ACCEPT` goes to the accept path, `TDG.VP.VMCALL` to the
//! host services in `vmcall.rs`. Every other leaf, known or not, and any
//! malformed RAX return `TDX_OPERAND_INVALID | RAX` without side effects.

use crate::report::Stop;
use crate::td::TdState;
use crate::tdx::accept::AcceptResult;
use abi::tdcall::{decode_rax, leaf, status, vp_info};
use kvm_bindings::kvm_regs;

/// Runs the TDCALL in `regs` (the vCPU's registers at the doorbell exit)
/// and writes its outputs back into `regs`. Returns a `Stop` when the TD
/// must end.
pub fn dispatch(td: &mut TdState, regs: &mut kvm_regs) -> Option<Stop> {
    let (leaf_no, version, rest) = decode_rax(regs.rax);
    td.counters.leaf(leaf_no);
    if rest != 0 || version != 0 {
        log::debug!("TDCALL with RAX {:#x}: version/reserved bits set", regs.rax);
        regs.rax = status::OPERAND_INVALID | status::OPERAND_RAX;
        return None;
    }
    match leaf_no {
        leaf::MEM_PAGE_ACCEPT => accept(td, regs),
        leaf::VP_INFO => {
            regs.rax = status::SUCCESS;
            regs.rcx = td.gpaw as u64;
            regs.rdx = vp_info::ATTR_SEPT_VE_DISABLE;
            regs.r8 = 1 | (1 << 32);
            regs.r9 = td.vcpu_index as u64;
            regs.r10 = 0;
            regs.r11 = 0;
            None
        }
        leaf::VP_VEINFO_GET => {
            // SEPT_VE_DISABLE is set: no #VE is ever pending.
            regs.rax = status::NO_VALID_VE_INFO;
            None
        }
        leaf::VP_VMCALL => crate::tdx::vmcall::handle(td, regs),
        other => {
            log::debug!(
                "TDCALL leaf {other} ({}) is not emulated: returning TDX_OPERAND_INVALID",
                leaf::name(other)
            );
            regs.rax = status::OPERAND_INVALID | status::OPERAND_RAX;
            None
        }
    }
}

fn accept(td: &mut TdState, regs: &mut kvm_regs) -> Option<Stop> {
    let level = (regs.rcx & abi::tdcall::accept::LEVEL_MASK) as u8;
    if let Some(inject) = td.inject.as_mut() {
        // Only a valid request can meet a busy Secure-EPT entry.
        let valid = abi::accept_model::decode(&td.memory.layout().model(), regs.rcx).is_ok();
        if valid && inject.busy() {
            td.accept_stats.calls += 1;
            td.accept_stats.busy_injected += 1;
            regs.rax = status::OPERAND_BUSY | status::OPERAND_RCX;
            td.trace(
                crate::report::trace::Kind::Accept,
                regs.rcx & !0xfff,
                level,
                regs.rax,
            );
            log::trace!("accept {:#x}: TDX_OPERAND_BUSY injected", regs.rcx);
            return None;
        }
    }
    match td.memory.accept(regs.rcx, &mut td.accept_stats) {
        Ok(result) => {
            td.trace(
                crate::report::trace::Kind::Accept,
                regs.rcx & !0xfff,
                level,
                result.status(),
            );
            let checked = match result {
                AcceptResult::Accepted { gpa, level } => {
                    td.check_invariants(gpa, level.size(), true)
                }
                AcceptResult::AlreadyAccepted { gpa, .. } | AcceptResult::SizeMismatch { gpa } => {
                    td.check_invariants(gpa, abi::PAGE_4K, false)
                }
                AcceptResult::Invalid(_) => Ok(()),
            };
            if let Err(e) = checked {
                return Some(Stop::error(
                    format!("after accept {:#x}: {e}", regs.rcx),
                    Some(regs.rip),
                ));
            }
            if let AcceptResult::Invalid(why) = result {
                log::debug!("accept {:#x}: invalid ({why:?})", regs.rcx);
            } else {
                log::trace!("accept {:#x}: {result:?}", regs.rcx);
            }
            if let AcceptResult::Accepted { gpa, level } = result {
                // The accept log of a kexec: what was accepted between the
                // guest's kexec_load and kexec_jump marks.
                if let Some(k) = td.kexecs.last_mut().filter(|k| k.jump_us.is_none()) {
                    k.vmm_bytes_accepted += level.size();
                    k.vmm_lowest_gpa_accepted =
                        Some(k.vmm_lowest_gpa_accepted.map_or(gpa, |g| g.min(gpa)));
                }
            }
            regs.rax = result.status();
            None
        }
        Err(e) => Some(Stop::error(
            format!("host failed to accept operand {:#x}: {e}", regs.rcx),
            Some(regs.rip),
        )),
    }
}
