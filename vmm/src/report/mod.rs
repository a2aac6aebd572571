//! The JSON run report: how the run ended, with the exact diagnostic, and
//! what it cost (accepts, page states, host memory, memslots, exits, time),
//! with what feeds it: the accept trace (`trace`), the cross-check of the
//! guest's unaccepted bitmap (`bitmap_check`) and the guest's counters per
//! generation (`guest_counters`). The types the report is made of are in
//! `schema` (what produced the run in `inputs`), its names (`Outcome`, `Phase`, `BitmapState`) in `outcome`;
//! this file only re-exports them: the files under it import each other,
//! never this one, so no import goes round in a circle.

pub(crate) mod assemble;
pub(crate) mod bitmap_check;
pub(crate) mod guest_counters;
pub(crate) mod inputs;
pub(crate) mod outcome;
pub(crate) mod page_tables;
pub(crate) mod run_log;
pub(crate) mod schema;
pub(crate) mod trace;
pub(crate) mod units;

pub use crate::stop::{Access, Fatal};
pub use crate::tdx::counters::AcceptStats;
pub(crate) use inputs::{unix_ms, vmm_version};
pub use inputs::{InputFile, Inputs};
pub use outcome::{BitmapState, Outcome, Phase};
pub use schema::{
    Bench, ExitStats, GenerationCounters, HostStats, KexecRecord, PageStats, PartialUnit, Report,
    TdState, TdcallTime, Truncated, UnacceptedTable, UnitAccounting, VcpuReport, REPORT_VERSION,
};
pub use trace::TraceSummary;
