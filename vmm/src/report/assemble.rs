//! Turning a finished run into its report: the stop, the run's log, the
//! TDX module's statistics, page states, host cost, and the cross-check of
//! the guest's unaccepted bitmap against the page states.

use crate::host::console::Console;
use crate::memory::memslots::SlotBackend;
use crate::memory::private::PrivateMemory;
use crate::report::bitmap_check::{self, CheckError, Checked};
use crate::report::outcome::BitmapState;
use crate::report::run_log::RunLog;
use crate::report::schema::{
    self, ExitStats, HostStats, PageStats, Report, Truncated, REPORT_VERSION,
};
use crate::stop::Stop;
use crate::tdx::module::TdxModule;
use crate::vcpu::VcpuState;
use std::collections::BTreeMap;

/// Where the bitmap cross-check stands (the report's `bitmap_state`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BitmapCheck {
    /// No kernel stub registered a system table.
    NoSystemTable,
    /// No unaccepted table is installed: nothing was left unaccepted.
    NoTable,
    /// Installed, but the kernel had not filled it when the run stopped.
    NotFilled(Checked),
    Checked(Checked),
    Error(String),
}

impl BitmapCheck {
    /// Compares the guest's table (found through its system table) with the
    /// page states; only a table the kernel has filled is compared, since
    /// an unfilled one would read as all "accepted".
    pub fn run(memory: &PrivateMemory<impl SlotBackend>, log: &RunLog) -> Self {
        let Some(st) = log.system_table else {
            return BitmapCheck::NoSystemTable;
        };
        match bitmap_check::check(memory, st) {
            Err(CheckError::NoTable) => BitmapCheck::NoTable,
            Err(e) => BitmapCheck::Error(e.to_string()),
            Ok(c) if !log.table_filled => BitmapCheck::NotFilled(c),
            Ok(c) => {
                if c.mismatches > 0 {
                    log::warn!(
                        "{} units of the guest's unaccepted bitmap disagree with the page states",
                        c.mismatches
                    );
                }
                BitmapCheck::Checked(c)
            }
        }
    }

    /// Where the check stands, as the report says it.
    pub fn state(&self) -> BitmapState {
        match self {
            BitmapCheck::NoSystemTable => BitmapState::NoSystemTable,
            BitmapCheck::NoTable => BitmapState::NoTable,
            BitmapCheck::NotFilled(_) => BitmapState::NotFilled,
            BitmapCheck::Checked(_) => BitmapState::Checked,
            BitmapCheck::Error(_) => BitmapState::Error,
        }
    }
}

/// What the report says about the run besides the shared state.
pub struct RunFacts {
    pub mem_bytes: u64,
    pub cpu_profile: crate::boot::cpu::CpuProfile,
    pub initial_bytes: u64,
    pub initial_units: schema::UnitAccounting,
    /// vCPU 0's PML4 at the end, if it had 4-level paging on.
    pub page_table_root: Option<u64>,
    /// Why `uffd-poison` did not run, when `--pending auto` fell back.
    pub pending_fallback: Option<String>,
    pub inputs: crate::report::inputs::Inputs,
}

/// The state the report reads from.
pub struct Parts<'a, B: SlotBackend> {
    pub memory: &'a PrivateMemory<B>,
    pub tdx: &'a TdxModule,
    pub invariant_checks: Option<u64>,
    pub state_lock_acquisitions: u64,
}

/// Builds the report of a run that ended with `stop`; `vcpus` has each
/// vCPU's own state (exits, accepts, lock wait).
pub fn assemble<B: SlotBackend>(
    parts: Parts<'_, B>,
    mut console: Console,
    mut log: RunLog,
    vcpus: &[VcpuState],
    stop: Stop,
    facts: RunFacts,
) -> Report {
    let Parts {
        memory,
        tdx,
        invariant_checks,
        state_lock_acquisitions,
    } = parts;
    let bitmap = BitmapCheck::run(memory, &log);
    let mut timing_us = std::mem::take(&mut log.marks);
    timing_us.insert("total".into(), crate::host::clock::us(log.elapsed()));
    let pages = memory.pages();
    let (accepted_ranges, ranges_left_out) =
        pages.accepted_gpa_ranges(memory.layout(), schema::MAX_ACCEPTED_RANGES);
    let (shared_ranges, shared_left_out) = memory.shared().listed(schema::MAX_ACCEPTED_RANGES);
    let (converted_to_shared_bytes, converted_to_private_bytes) = memory.shared().converted();
    let slot_stats = memory.slots().stats();
    let mut exits = ExitStats::default();
    for v in vcpus {
        exits.add(&v.exits);
    }
    let per_vcpu = vcpus
        .iter()
        .map(|v| schema::VcpuReport {
            index: v.index,
            exits: v.exits.total,
            accepts: v.accepts,
            busy: v.busy,
            lock_wait_ns: v.lock_wait_ns,
            kvm_run_ns: v.time.kvm_run_ns,
            vmm_ns: v.time.vmm_ns,
            idle_ns: v.time.idle_ns,
        })
        .collect();
    let tdcall_time = tdcall_time(vcpus);
    let table = match &bitmap {
        BitmapCheck::NotFilled(c) | BitmapCheck::Checked(c) => Some(c.table),
        _ => None,
    };
    let poison = memory
        .poisoned_chunks()
        .map(|p| p.stats())
        .unwrap_or_default();
    Report {
        version: REPORT_VERSION,
        outcome: stop.outcome,
        exit_code: stop.exit_code,
        fatal: stop.fatal,
        mem_bytes: facts.mem_bytes,
        cpu_profile: Some(facts.cpu_profile),
        backing: memory.backing(),
        sept_level: memory.sept_level(),
        accept: crate::tdx::counters::AcceptStats {
            handle_p50_ns: tdx.hist.quantile(0.5),
            handle_p99_ns: tdx.hist.quantile(0.99),
            ..tdx.stats
        },
        pages: PageStats {
            pending_bytes: pages.pending_pages() * abi::PAGE_4K,
            accepted_bytes: pages.accepted_pages() * abi::PAGE_4K,
            initial_bytes: facts.initial_bytes,
            accepted_ranges,
            shared_bytes: memory.shared().bytes(),
            shared_ranges,
            units: facts.initial_units.clone(),
        },
        host: HostStats {
            rss_peak_bytes: schema::rss_peak_bytes(),
            guest_resident_bytes: memory.ram().resident_bytes().unwrap_or(0),
            guest_page_table_bytes: facts.page_table_root.map_or(0, |root| {
                crate::report::page_tables::table_bytes(memory, root)
            }),
            page_state_bytes: pages.footprint_bytes(),
            memslots: memory.slots().len(),
            memslots_peak: slot_stats.peak,
            memslots_installed: slot_stats.installed,
            memslots_removed: slot_stats.removed,
            pending_mechanism: memory.pending_mechanism(),
            pending_fallback: facts.pending_fallback.clone(),
            poisoned_chunks: poison.chunks,
            pages_poisoned: poison.pages_poisoned,
            pages_filled: poison.pages_filled,
            // The run adds the kicks that failed while it ran.
            kick_failures: 0,
            state_lock_acquisitions,
            pages_removed: memory.pages_removed(),
            removed_pages_reaccepted: memory.removed_pages_reaccepted(),
            converted_to_shared_bytes,
            converted_to_private_bytes,
            console_shared_bytes: memory.shared().console_bytes,
        },
        exits,
        vcpus: u32::try_from(vcpus.len()).unwrap_or(u32::MAX),
        per_vcpu,
        tdcalls: tdx.counters.to_map(),
        tdcall_time,
        td: schema::TdState {
            rtmr: tdx.measure.rtmr_hex(),
            mrtd: tdx.measure.mrtd_hex(),
        },
        timing_us,
        bench: log.bench,
        trace: log.trace.take().map(|t| t.finish()),
        guest: log.guest_counters.totals(),
        guest_per_generation: log.guest_counters.per_generation(),
        kexecs: log.kexecs_completed,
        kexec: log.kexecs.clone(),
        unaccepted_table: table,
        bitmap_state: bitmap.state(),
        bitmap_mismatches: match &bitmap {
            BitmapCheck::Checked(c) => Some(c.mismatches),
            _ => None,
        },
        bitmap_error: match bitmap {
            BitmapCheck::Error(e) => Some(e),
            _ => None,
        },
        console: console.text(),
        signal: stop
            .signal
            .map(|s| crate::host::signals::name(s).to_string()),
        signal_number: stop.signal,
        invariant_checks,
        records_dropped: log.truncated.total(),
        truncated: Truncated {
            console_bytes: console.dropped(),
            accepted_ranges: ranges_left_out,
            shared_ranges: shared_left_out,
            ..log.truncated
        },
        inputs: facts.inputs,
    }
}

/// Each TDCALL kind's handling time, the vCPUs' histograms merged.
fn tdcall_time(vcpus: &[VcpuState]) -> BTreeMap<String, schema::TdcallTime> {
    let mut merged: BTreeMap<String, crate::vcpu::timing::LogHistogram> = BTreeMap::new();
    for v in vcpus {
        for (kind, h) in &v.time.tdcalls {
            merged.entry(kind.name()).or_default().merge(h);
        }
    }
    merged
        .into_iter()
        .map(|(name, h)| {
            let t = schema::TdcallTime {
                count: h.count(),
                p50_ns: h.quantile(0.5),
                p99_ns: h.quantile(0.99),
                total_ns: h.total_ns(),
            };
            (name, t)
        })
        .collect()
}
