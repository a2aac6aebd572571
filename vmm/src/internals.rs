//! Unstable access to internals, for this repository's own fuzz targets,
//! tests of internals and project tasks. Not part of the public API:
//! anything here may change or go in any release, semantic versioning
//! does not cover it, and it is hidden from the documentation. Embed the
//! VMM through the crate's root (`TdConfig`, `Td`, `StopHandle`,
//! `Report`) instead.

pub use crate::boot::hob::{build_td_hob, TdHobSpec};
pub use crate::boot::image::ElfImage;
pub use crate::host::signals::stop_signals;
pub use crate::host::size::parse_size;
pub use crate::memory::layout::{checked as ram_layout, RamLayout};
pub use crate::memory::memslots::DEFAULT_SOFT_CAP;
pub use crate::memory::page_state::{PageState, PageStateTable};
pub use crate::memory::pending_mechanism::PoisonedChunks;
pub use crate::report::run_log::MAX_KEXEC_RECORDS;

#[cfg(feature = "cli")]
pub use crate::cli::parse_run_args;

/// The report of a run refused before any guest ran: outcome `refused`,
/// `message` in `fatal.message`, everything else empty (a fixture for
/// tests of report readers).
pub fn refused_report(message: String, inputs: crate::report::Inputs) -> crate::Report {
    crate::Report::refused(message, inputs)
}

/// Decodes `rcx` as a `TDG.MEM.PAGE.ACCEPT` operand over `layout` and
/// applies it to `pages` with the VMM's accept state machine; returns the
/// TDCALL status it answers.
pub fn accept_transition(layout: &RamLayout, pages: &mut PageStateTable, rcx: u64) -> u64 {
    let req = crate::tdx::event::AcceptRequest::decode(layout, rcx);
    crate::tdx::accept::transition(pages, &req).status().raw()
}
