//! The emulated TDX module: what a TDCALL does. It decodes the doorbell's
//! registers into a typed request, runs the accept state machine with the
//! TDX module's statuses, answers the GHCI and vendor VMCALLs, and injects
//! faults. It owns the accept statistics and TDCALL counters; it touches
//! guest memory only through `memory::PrivateMemory`, and never the vCPU,
//! KVM or the run's bookkeeping: a handler returns what happened (a typed
//! event, or a stop) and the run loop applies it.

pub mod accept;
pub mod counters;
pub mod dispatch;
pub mod event;
pub mod inject;
pub mod vmcall;
