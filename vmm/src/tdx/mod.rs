//! The emulated TDX module: what a TDCALL does. `tdcall` decodes the
//! doorbell's registers once into a typed `Tdcall`; `accept` runs
//! `TDG.MEM.PAGE.ACCEPT` with the TDX module's statuses and locking (the
//! Secure-EPT entry lock, then the TD's state lock to begin and to
//! finish, where it also records its statistics, trace and invariant
//! checks); `dispatch` answers every other leaf under the state lock
//! (`measure` the RTMR, report and verify-report leaves, `vmcall` the
//! GHCI and vendor VMCALLs, with the CPUID table of `cpuid` and the CMOS
//! device of `cmos`); `inject` injects faults. Its state (`module`) holds
//! the accept statistics and TDCALL counters (`counters`), the TD's
//! attributes and measurements; requests, results, events and the typed answer are
//! `event`. It reads and writes the guest's registers in KVM's layout
//! (`kvm_regs`, as the vCPU hands them over) but never calls KVM, touches
//! guest memory only through `memory::PrivateMemory`, and never the vCPU:
//! a handler returns a typed status and what happened (an event, or a
//! stop), and the doorbell (`vcpu::doorbell`) writes RAX once and applies
//! the rest.

pub mod accept;
pub mod cmos;
pub mod counters;
pub mod cpuid;
pub mod dispatch;
pub mod event;
pub mod inject;
pub mod measure;
pub mod module;
pub mod tdcall;
pub mod vmcall;
