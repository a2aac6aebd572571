//! tdx-accept-emu's VMM: a KVM hypervisor that plays the TDX module's
//! memory-acceptance role. It traps an emulated `TDG.MEM.PAGE.ACCEPT`, backs
//! and zeroes pages lazily, and stops any guest access to memory that was
//! never accepted.
//!
//! # Embedding
//!
//! A program (a CI test, say) boots a TD in-process through this front:
//! [`TdConfig`] says what to run, [`Td::build`] checks it and builds the
//! TD, [`Td::run`] runs it to its end and returns the [`Report`] (the
//! `vmm` command's JSON report, typed), a [`StopHandle`] ends it early
//! from another thread, and [`trace`] reads an accept trace back.
//!
//! ```no_run
//! use vmm::{Outcome, Td, TdConfig};
//!
//! let config = TdConfig::new("guest-fw.elf")
//!     .kernel("guest-kernel.elf")
//!     .mem_bytes(4 << 30)
//!     .cmdline("fw.accept=none workload=64M")
//!     .timeout(std::time::Duration::from_secs(120));
//! let report = Td::build(config)?.run();
//! assert_eq!(report.outcome, Outcome::Ok, "{:?}", report.fatal);
//! assert!(report.pages.pending_bytes > 0, "memory was accepted lazily");
//! println!("{}", serde_json::to_string_pretty(&report).unwrap());
//! # Ok::<(), vmm::TdError>(())
//! ```
//!
//! The library installs no stop-signal handlers unless asked
//! ([`TdConfig::stop_on_signals`]). It does install, once per process and
//! chained to whatever was there before, a SIGURG handler that only
//! interrupts (to take vCPU threads out of `KVM_RUN`) and, with the
//! `uffd-poison` pending mechanism, a SIGBUS handler for poisoned guest
//! pages. The `cli` feature (on by default) adds the `vmm` command
//! ([`cli::main_with`]) with clap and env_logger; embedders can turn it off
//! with `default-features = false`. `docs/embedding.md` has the rest.
//!
//! # Inside
//!
//! Where things are, by mechanism (all private):
//! - `tdx`: the emulated TDX module (TDCALL decoding, the accept state
//!   machine, VMCALLs, fault injection);
//! - `memory`: page states, memslots, host RAM and the facade keeping them
//!   in step, first-touch mapping, invariants;
//! - `boot`: initial memory layout, HOB, images, initial vCPU state;
//! - `vm` (the configuration, the TD built once, its run, the verdict) and
//!   `vcpu` (the run loop: an exit becomes an action, the action is
//!   applied);
//! - `report`: the report, the trace, the bitmap cross-check, the guest's
//!   counters and marks;
//! - `host` and `cli`: files, signals, console, sizes, the command line.

#![deny(missing_docs)]
// Without the command line, the host helpers only it uses (output checks,
// stale-report removal, stack and arena limits) are unused; the default
// build, with the `cli` feature, still reports dead code.
#![cfg_attr(not(feature = "cli"), allow(dead_code))]

mod boot;
#[cfg(feature = "cli")]
pub mod cli;
mod host;
#[doc(hidden)]
pub mod internals;
mod memory;
mod named;
pub mod report;
mod shared;
mod stop;
mod tdx;
mod vcpu;
mod vm;

pub use abi::tdcall::SeptLevel;
pub use boot::cpu::{CpuProfile, ProfileChoice};
pub use memory::guest_ram::Backing;
pub use memory::memslots::Mapping;
pub use memory::pending_mechanism::PendingMechanism;
pub use report::{Outcome, Report};
pub use vm::{StopHandle, Td, TdConfig, TdError, MAX_VCPUS};

/// This crate's version, as reports record it (`inputs.vmm_version`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Reading an accept trace back (the file [`TdConfig::trace`] asks for):
/// a header, then one fixed-size record per accept or pending access,
/// as `docs/report.md` describes.
pub mod trace {
    pub use crate::report::trace::{read, Kind, Record, TraceError, Who};
    pub use crate::report::trace::{HEADER_BYTES, RECORD_BYTES};
}
