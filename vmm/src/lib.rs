//! tdx-accept-emu's VMM: a KVM hypervisor that plays the TDX module's
//! memory-acceptance role. It traps an emulated `TDG.MEM.PAGE.ACCEPT`, backs
//! and zeroes pages lazily, and stops any guest access to memory that was
//! never accepted.
//!
//! Where things are: `accept` (the accept leaf), `page_state` (ground truth
//! per 4 KiB page), `memslots` (KVM slots = accepted RAM), `private_memory`
//! (the three kept in step), `tdcall`/`vmcall` (the doorbell's leaves),
//! `hob_builder` and `boot` (what the firmware is given), `invariants`
//! (what must hold after every accept), `inject` (fault injection), `cpu` (profiles and
//! start state), `td` (build, run loop, report).
#![deny(unsafe_op_in_unsafe_fn)]

pub mod accept;
pub mod bitmap_check;
pub mod boot;
pub mod cli;
pub mod console;
pub mod cpu;
pub mod elf;
pub mod guest_counters;
pub mod guest_ram;
pub mod hob_builder;
pub mod host_files;
pub mod inject;
pub mod invariants;
pub mod layout;
pub mod memslots;
pub mod page_state;
pub mod private_memory;
pub mod report;
pub mod signals;
pub mod size;
pub mod td;
pub mod tdcall;
pub mod trace;
pub mod vmcall;
pub mod watchdog;

pub use report::Report;
pub use td::{Td, TdConfig, TdError};
