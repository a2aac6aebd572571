//! #VE: in a TD without SEPT_VE_DISABLE, an access to private memory that
//! is not accepted (pending, removed by the host, or converted to shared)
//! raises a virtualization exception in the guest instead of stopping the
//! TD, with the VE info TDG.VP.VEINFO.GET returns (exit reason EPT
//! violation, the access in the qualification, the GPA). KVM's pending
//! MMIO is completed without running guest code (`immediate_exit`), the
//! registers and extended state from before the access are put back, and
//! vector 20 is injected at the faulting instruction, which has not run:
//! for a read or a fetch that is the exit's RIP. A write KVM has already
//! retired (RIP past it) when it exits, with the write dropped; the
//! instruction and the registers before it are found from the code bytes
//! (`retired_write`), so the #VE comes at the write, as on TDX. A write
//! whose instruction cannot be found stops the TD at the access instead.
use super::retired_write::{self, After, GuestView, Write};
use super::Vcpu;
use crate::memory::private::PrivateMemory;
use crate::shared::Shared;
use crate::stop::{Access, Fatal, Stop};
use crate::tdx::module::VeInfo;
use abi::report::Outcome;
use abi::tdcall::ve;
use kvm_bindings::{kvm_regs, kvm_xsave};
use kvm_ioctls::{SyncReg, VcpuFd};

/// Where the XSAVE legacy area keeps XMM0..XMM15 (16 bytes each).
const XSAVE_XMM: std::ops::Range<usize> = 160..416;

/// The guest's memory through the vCPU's page tables (KVM_TRANSLATE) and
/// the VMM's accepted RAM.
struct VcpuView<'a> {
    fd: &'a VcpuFd,
    memory: &'a PrivateMemory,
}

impl GuestView for VcpuView<'_> {
    fn translate(&self, gva: u64) -> Option<u64> {
        self.fd
            .translate_gva(gva)
            .ok()
            .filter(|t| t.valid != 0)
            .map(|t| t.physical_address)
    }
    fn read(&self, gpa: u64, buf: &mut [u8]) -> bool {
        self.memory.read_accepted(gpa, buf)
    }
}

/// The EPT-violation exit qualification of `access`.
pub fn qualification(access: Access) -> u64 {
    match access {
        Access::Read => ve::QUAL_READ,
        Access::Write => ve::QUAL_WRITE,
        Access::Execute => ve::QUAL_FETCH,
    }
}

impl Vcpu {
    /// The instruction of a write KVM retired before it exited (the exit
    /// left `after`), and the registers before it.
    pub(super) fn retired_write(
        &self,
        memory: &PrivateMemory,
        after: &kvm_regs,
        xsave: &kvm_xsave,
        written: &Write<'_>,
    ) -> Result<retired_write::Found, String> {
        let sregs = self
            .fd
            .get_sregs()
            .map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
        let long = sregs.efer & (1 << 10) != 0 && sregs.cs.l != 0;
        let bitness = match (long, sregs.cs.db != 0) {
            (true, _) => 64,
            (false, true) => 32,
            (false, false) => 16,
        };
        let region: Vec<u8> = xsave.region.iter().flat_map(|w| w.to_le_bytes()).collect();
        let view = VcpuView {
            fd: &self.fd,
            memory,
        };
        let state = After {
            regs: after,
            segment_bases: [
                sregs.es.base,
                sregs.cs.base,
                sregs.ss.base,
                sregs.ds.base,
                sregs.fs.base,
                sregs.gs.base,
            ],
            xmm: region.get(XSAVE_XMM),
            bitness,
        };
        let found =
            retired_write::instruction_before(&view, &state, written).map_err(|e| e.to_string())?;
        log::debug!(
            "retired write: {} at RIP {:#x} ({} bytes) wrote GPA {:#x}",
            found.mnemonic,
            found.regs.rip,
            found.len,
            written.gpa
        );
        Ok(found)
    }

    /// The RIP of the instruction that made `written` (KVM retired it), or
    /// the exit's RIP, past it, with the reason it was not found.
    pub(super) fn write_rip(
        &self,
        memory: &PrivateMemory,
        written: &Write<'_>,
    ) -> (Option<u64>, String) {
        let Ok(after) = self.fd.get_regs() else {
            return (None, String::new());
        };
        let found = self
            .fd
            .get_xsave()
            .map_err(|e| format!("KVM_GET_XSAVE: {e}"))
            .and_then(|xsave| self.retired_write(memory, &after, &xsave, written));
        match found {
            Ok(f) => (Some(f.regs.rip), String::new()),
            Err(why) => (
                Some(after.rip),
                format!("; RIP is past the write, which KVM retired: {why}"),
            ),
        }
    }

    /// Raises #VE for an access of `access` type to `gpa` (`written`: the
    /// bytes KVM handed over for a write); an error stops the TD with its
    /// reason.
    pub(super) fn raise_ve(
        &mut self,
        shared: &mut Shared,
        gpa: u64,
        access: Access,
        written: Option<&Write<'_>>,
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
        let before = match written {
            Some(w) => match self.retired_write(&shared.memory, &before, &xsave, w) {
                Ok(found) => found.regs,
                Err(why) => {
                    let message = format!(
                        "guest write of memory that is not accepted at GPA {gpa:#x} (RIP {:#x}, \
                         past the write, which KVM retired): no precise #VE: {why}",
                        before.rip
                    );
                    return Err(Stop::fatal(
                        Outcome::PendingAccess,
                        Fatal::new(message)
                            .gpa(Some(gpa))
                            .rip(Some(before.rip))
                            .access(Access::Write),
                    ));
                }
            },
            None if access == Access::Write => {
                return Err(fail(
                    "KVM gave no data for the write".into(),
                    Some(before.rip),
                ))
            }
            None => before,
        };
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
