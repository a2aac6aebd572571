//! The emulated TDX module's state, one per TD and shared by its vCPUs:
//! the accept statistics, the TDCALL counters, fault injection, and what
//! TDG.VP.INFO reports (GPAW, the vCPU count).

use crate::tdx::counters::{AcceptStats, HandleHistogram, TdcallCounters};
use crate::tdx::inject::Injector;

/// The emulated TDX module's state, shared by every vCPU of the TD.
#[derive(Debug)]
pub struct TdxModule {
    pub stats: AcceptStats,
    pub hist: HandleHistogram,
    pub counters: TdcallCounters,
    pub inject: Option<Injector>,
    /// Guest-physical address width (TDG.VP.INFO).
    pub gpaw: u32,
    /// vCPUs of the TD (TDG.VP.INFO).
    pub vcpus: u32,
}

impl TdxModule {
    pub fn new(gpaw: u32, vcpus: u32, inject: Option<Injector>) -> Self {
        TdxModule {
            vcpus,
            stats: AcceptStats::default(),
            hist: HandleHistogram::default(),
            counters: TdcallCounters::default(),
            inject,
            gpaw,
        }
    }
}
