//! tdx-accept-emu's VMM: a KVM hypervisor that plays the TDX module's
//! memory-acceptance role. It traps an emulated `TDG.MEM.PAGE.ACCEPT`, backs
//! and zeroes pages lazily, and stops any guest access to memory that was
//! never accepted.
//!
//! Where things are, by mechanism:
//! - `tdx`: the emulated TDX module (TDCALL decoding, the accept state
//!   machine, VMCALLs, fault injection);
//! - `memory`: page states, memslots, host RAM and the facade keeping them
//!   in step, first-touch mapping, invariants;
//! - `boot`: initial memory layout, HOB, images, initial vCPU state;
//! - `vm` (the TD built once) and `vcpu` (the run loop: an exit becomes an
//!   action, the action is applied);
//! - `report`: the report, the trace, the bitmap cross-check, the guest's
//!   counters and marks;
//! - `host` and `cli`: files, signals, console, sizes, the command line.

pub mod boot;
pub mod cli;
pub mod host;
pub mod memory;
pub mod report;
pub mod shared;
pub mod stop;
pub mod tdx;
pub mod vcpu;
pub mod vm;

pub use abi::accept_model::SeptLevel;
pub use boot::cpu::{CpuProfile, ProfileChoice};
pub use memory::guest_ram::Backing;
pub use memory::pending_mechanism::PendingMechanism;
pub use report::{Outcome, Report};
pub use vm::{StopHandle, Td, TdConfig, TdError, MAX_VCPUS};
