//! What a finished run's outcome is: the board's first stop (with the
//! vCPU that posted it), overridden by a private-memory invariant broken
//! at the end or by a chaos self-test that disagreed although the guest
//! exited 0; the fatal diagnostic completed with the guest's phase; then
//! the report assembled.

use crate::boot::cpu::CpuProfile;
use crate::report::assemble::{assemble, Parts, RunFacts};
use crate::report::{Inputs, Report};
use crate::shared::TdShared;
use crate::stop::{Fatal, Stop};
use crate::vcpu::{Vcpu, VcpuState};
use abi::report::Outcome;

/// A run whose vCPUs have all stopped.
pub(super) struct Finished<'a> {
    pub vcpus: &'a [Vcpu],
    pub shared: TdShared,
    pub profile: CpuProfile,
    pub mem_bytes: u64,
    pub initial_bytes: u64,
    pub initial_units: crate::report::UnitAccounting,
    pub pending_fallback: Option<String>,
    pub inputs: Inputs,
}

/// Decides the run's outcome and assembles its report.
pub(super) fn report(done: Finished<'_>) -> Report {
    let Finished {
        vcpus,
        shared,
        profile,
        mem_bytes,
        initial_bytes,
        initial_units,
        pending_fallback,
        inputs,
    } = done;
    let mut stop = match shared.board.take() {
        Some((index, mut stop)) => {
            if let Some(f) = stop.fatal.as_mut() {
                f.vcpu = Some(index).filter(|i| (*i as usize) < vcpus.len());
            }
            stop
        }
        None => Stop::error("the vCPUs stopped without a reason".into(), None),
    };
    let mut s = shared.into_state();
    if let Some(n) = s.invariant_checks.as_mut() {
        *n += 1;
        if let Err(e) = crate::memory::invariants::check_all(&s.memory) {
            stop = Stop::error(
                format!("private-memory invariant broken at the end: {e}"),
                None,
            );
        }
    }
    if let Some(why) = s.log.guest_counters.chaos_failure() {
        // A kernel that kexecs carries on after its chaos run: a
        // disagreement in any generation fails the run.
        if stop.outcome == Outcome::Ok && stop.exit_code == Some(0) {
            let message = format!("{why} (the guest exited 0)");
            stop = Stop::fatal(Outcome::GuestPanic, Fatal::new(message));
        }
    }
    if let Some(f) = stop.fatal.as_mut() {
        f.generation = s.log.generation;
        f.phase = Some(s.log.phase);
    }
    let facts = RunFacts {
        mem_bytes,
        cpu_profile: profile,
        initial_bytes,
        initial_units,
        page_table_root: page_table_root(vcpus),
        pending_fallback,
        inputs,
    };
    let parts = Parts {
        memory: &s.memory,
        tdx: &s.tdx,
        invariant_checks: s.invariant_checks,
        state_lock_acquisitions: s.lock_acquisitions,
    };
    let states: Vec<VcpuState> = vcpus.iter().map(|v| v.state.clone()).collect();
    assemble(parts, s.console, s.log, &states, stop, facts)
}

/// vCPU 0's PML4 (CR3) when it ended with long-mode paging on.
fn page_table_root(vcpus: &[Vcpu]) -> Option<u64> {
    const CR0_PG: u64 = 1 << 31;
    const EFER_LMA: u64 = 1 << 10;
    let sregs = vcpus.first()?.fd.get_sregs().ok()?;
    (sregs.cr0 & CR0_PG != 0 && sregs.efer & EFER_LMA != 0).then_some(sregs.cr3)
}
