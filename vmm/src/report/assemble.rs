//! Turning a finished run into its report: the stop, the run's log, the
//! TDX module's statistics, page states, host cost, and the cross-check of
//! the guest's unaccepted bitmap against the page states.

use crate::report::bitmap_check::{self, CheckError, Checked};
use crate::report::{self, HostStats, PageStats, Report, Stop, REPORT_VERSION};
use crate::vcpu::VcpuState;
use crate::vm::Shared;

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
    pub fn run(shared: &Shared) -> Self {
        let Some(st) = shared.log.system_table else {
            return BitmapCheck::NoSystemTable;
        };
        match bitmap_check::check(&shared.memory, st) {
            Err(CheckError::NoTable) => BitmapCheck::NoTable,
            Err(e) => BitmapCheck::Error(e.to_string()),
            Ok(c) if !shared.log.table_filled => BitmapCheck::NotFilled(c),
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

    pub fn state(&self) -> &'static str {
        match self {
            BitmapCheck::NoSystemTable => "no_system_table",
            BitmapCheck::NoTable => "no_table",
            BitmapCheck::NotFilled(_) => "not_filled",
            BitmapCheck::Checked(_) => "checked",
            BitmapCheck::Error(_) => "error",
        }
    }
}

/// What the report says about the run besides the shared state.
pub struct RunFacts {
    pub mem_bytes: u64,
    pub cpu_profile: &'static str,
    pub initial_bytes: u64,
    pub inputs: report::Inputs,
}

/// Builds the report of a run that ended with `stop`.
pub fn assemble(mut shared: Shared, vcpus: &[VcpuState], stop: Stop, facts: RunFacts) -> Report {
    let bitmap = BitmapCheck::run(&shared);
    let log = &mut shared.log;
    let mut timing_us = std::mem::take(&mut log.marks);
    timing_us.insert("total".into(), log.elapsed().as_micros() as u64);
    let memory = &shared.memory;
    let pages = memory.pages();
    let slot_stats = memory.slots().stats();
    let mut exits = report::ExitStats::default();
    for v in vcpus {
        exits.add(&v.exits);
    }
    let tdx = &shared.tdx;
    let table = match &bitmap {
        BitmapCheck::NotFilled(c) | BitmapCheck::Checked(c) => Some(c.table),
        _ => None,
    };
    Report {
        version: REPORT_VERSION,
        outcome: stop.outcome.as_str(),
        exit_code: stop.exit_code,
        fatal: stop.fatal,
        mem_bytes: facts.mem_bytes,
        cpu_profile: facts.cpu_profile,
        backing: memory.backing().as_str(),
        accept: crate::tdx::accept::AcceptStats {
            handle_p50_ns: tdx.hist.quantile(0.5),
            handle_p99_ns: tdx.hist.quantile(0.99),
            ..tdx.stats
        },
        pages: PageStats {
            pending_bytes: pages.pending_pages() * abi::PAGE_4K,
            accepted_bytes: pages.accepted_pages() * abi::PAGE_4K,
            initial_bytes: facts.initial_bytes,
        },
        host: HostStats {
            rss_peak_bytes: report::rss_peak_bytes(),
            guest_resident_bytes: memory.ram().resident_bytes().unwrap_or(0),
            page_state_bytes: pages.footprint_bytes(),
            memslots: memory.slots().len(),
            memslots_peak: slot_stats.peak,
            memslots_installed: slot_stats.installed,
            memslots_removed: slot_stats.removed,
        },
        exits,
        tdcalls: tdx.counters.to_map(),
        timing_us,
        bench: log.bench,
        trace: log.trace.take().map(|t| t.finish()),
        guest: log.guest_counters.totals(),
        guest_per_generation: log.guest_counters.per_generation(),
        kexecs: log
            .kexecs
            .iter()
            .filter(|k| k.next_entry_us.is_some())
            .count(),
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
        console: shared.console.text(),
        signal: stop.signal.map(crate::host::signals::name),
        signal_number: stop.signal,
        invariant_checks: shared.invariant_checks,
        records_dropped: log.records_dropped,
        inputs: facts.inputs,
    }
}
