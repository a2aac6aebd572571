//! #VE: in a TD without SEPT_VE_DISABLE, an access to private memory that
//! is not accepted (pending, removed by the host, or converted to shared)
//! raises a virtualization exception in the guest instead of stopping the
//! TD, with the VE info TDG.VP.VEINFO.GET returns (exit reason EPT
//! violation, the access in the qualification, the GPA). KVM's pending
//! MMIO is completed without running guest code (`immediate_exit`), the
//! registers and extended state from the exit are put back, and vector 20
//! is injected at the exit's RIP. For a read or a fetch that is the
//! faulting instruction, which has not run. For a write it is not: KVM
//! retires an emulated MMIO write (RIP past it) before it exits, and the
//! exit does not say how long the instruction was, so the #VE comes at the
//! next instruction and the write is dropped. A guest that makes the #VE
//! fatal (Linux, ours) sees only a RIP one instruction late; one that
//! accepts the page and returns would lose the write.

use super::Vcpu;
use crate::shared::Shared;
use crate::stop::{Access, Stop};
use crate::tdx::module::VeInfo;
use abi::tdcall::ve;
use kvm_ioctls::SyncReg;

/// The EPT-violation exit qualification of `access`.
pub fn qualification(access: Access) -> u64 {
    match access {
        Access::Read => ve::QUAL_READ,
        Access::Write => ve::QUAL_WRITE,
        Access::Execute => ve::QUAL_FETCH,
    }
}

impl Vcpu {
    /// Raises #VE for an access of `access` type to `gpa`; an error stops
    /// the TD with its reason.
    pub(super) fn raise_ve(
        &mut self,
        shared: &mut Shared,
        gpa: u64,
        access: Access,
    ) -> Result<(), Stop> {
        let index = abi::to_usize(u64::from(self.state.index));
        let fail = |what: String, rip: Option<u64>| {
            Stop::error(
                format!(
                    "raising #VE for the {} of GPA {gpa:#x}: {what}",
                    access.as_str()
                ),
                rip,
            )
        };
        let slot = shared
            .tdx
            .ve_info
            .get_mut(index)
            .ok_or_else(|| fail(format!("no VE info for vCPU {index}"), None))?;
        let before = self
            .fd
            .get_regs()
            .map_err(|e| fail(format!("KVM_GET_REGS: {e}"), None))?;
        if slot.is_some() {
            // The guest took a #VE and touched such memory again before
            // reading the first one's info (in its #VE handler, say).
            return Err(fail(
                "the previous #VE's info was never read (TDG.VP.VEINFO.GET): a #VE inside the #VE handler".into(),
                Some(before.rip),
            ));
        }
        let xsave = self
            .fd
            .get_xsave()
            .map_err(|e| fail(format!("KVM_GET_XSAVE: {e}"), Some(before.rip)))?;
        // Complete KVM's pending MMIO without running guest code, then
        // undo it: the access must not have happened.
        self.fd.get_kvm_run().immediate_exit = 1;
        let run = self.fd.run().map(|exit| format!("{exit:?}"));
        self.fd.get_kvm_run().immediate_exit = 0;
        match run {
            Err(e) if e.errno() == libc::EINTR => {}
            other => {
                return Err(fail(
                    format!("KVM_RUN with immediate_exit answered {other:?}, not EINTR"),
                    Some(before.rip),
                ))
            }
        }
        if self.sync_regs {
            self.fd.sync_regs_mut().regs = before;
            self.fd.set_sync_dirty_reg(SyncReg::Register);
        } else {
            self.fd
                .set_regs(&before)
                .map_err(|e| fail(format!("KVM_SET_REGS: {e}"), Some(before.rip)))?;
        }
        // SAFETY: `xsave` is what KVM_GET_XSAVE returned for this vCPU just
        // above, so its size and layout are the ones KVM expects.
        unsafe { self.fd.set_xsave(&xsave) }
            .map_err(|e| fail(format!("KVM_SET_XSAVE: {e}"), Some(before.rip)))?;
        let mut events = self
            .fd
            .get_vcpu_events()
            .map_err(|e| fail(format!("KVM_GET_VCPU_EVENTS: {e}"), Some(before.rip)))?;
        events.exception.injected = 1;
        events.exception.pending = 0;
        events.exception.nr = ve::VECTOR;
        events.exception.has_error_code = 0;
        events.exception.error_code = 0;
        self.fd
            .set_vcpu_events(&events)
            .map_err(|e| fail(format!("KVM_SET_VCPU_EVENTS: {e}"), Some(before.rip)))?;
        *slot = Some(VeInfo {
            qualification: qualification(access),
            gpa,
        });
        self.state.exits.ve_injected += 1;
        log::debug!(
            "#VE on vCPU {index}: {} of GPA {gpa:#x} at RIP {:#x}",
            access.as_str(),
            before.rip
        );
        Ok(())
    }
}
