//! The emulated TDX module: what a TDCALL does. It decodes the doorbell's
//! registers into a typed request, runs the accept state machine with the
//! TDX module's statuses, answers the GHCI and vendor VMCALLs, and injects
//! faults. Its state (`module`) holds the accept statistics and TDCALL
//! counters (`counters`); requests, results and events are `event`. It
//! reads and writes the guest's registers in KVM's layout (`kvm_regs`, as
//! the vCPU hands them over) but never calls KVM, touches guest memory
//! only through `memory::PrivateMemory`, and never the vCPU or the run's
//! bookkeeping: a handler returns what happened (a typed event, or a stop)
//! and the run loop applies it. The accept of a running TD's vCPU
//! (`accept::accept_on_vcpu`) takes the TD's shared state to lock it as
//! the TDX module locks its Secure-EPT entries.

pub mod accept;
pub mod counters;
pub mod dispatch;
pub mod event;
pub mod inject;
pub mod module;
pub mod tdcall;
pub mod vmcall;
