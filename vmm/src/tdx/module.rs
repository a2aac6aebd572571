//! The emulated TDX module's state, one per TD and shared by its vCPUs:
//! the accept statistics, the TDCALL counters, fault injection, what
//! TDG.VP.INFO reports (GPAW, the vCPU count, the TD ATTRIBUTES), the
//! measurement registers (`measure`), and the state the GHCI instruction
//! services keep: the CPUID table (`cpuid`), the CMOS device (`cmos`),
//! each vCPU's x2APIC SVR and the event-notify vector.

use crate::tdx::cmos::Cmos;
use crate::tdx::counters::{AcceptStats, HandleHistogram, TdcallCounters};
use crate::tdx::cpuid::CpuidTable;
use crate::tdx::inject::Injector;
use crate::tdx::measure::Measurements;
use abi::tdreport::SHA384_LEN;
use abi::vmcall::ghci;

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
    /// TD ATTRIBUTES: RDX of TDG.VP.INFO and TDINFO.ATTRIBUTES of a
    /// report (`set_attributes`). With SEPT_VE_DISABLE clear, an access
    /// to private memory that is not accepted raises #VE instead of
    /// stopping the TD (`vcpu/virt_exception.rs`); DEBUG opens nothing to
    /// the host here.
    pub attributes: u64,
    /// MRTD, the RTMRs, XFAM and the report key.
    pub measure: Measurements,
    /// What Instruction.CPUID answers from (`set_cpuid`).
    pub cpuid: CpuidTable,
    /// The CMOS RAM behind ports 0x70/0x71 (Instruction.IO).
    pub cmos: Cmos,
    /// Each vCPU's x2APIC spurious-interrupt vector register, by index.
    pub svr: Vec<u64>,
    /// The vector SetupEventNotifyInterrupt registered (never raised:
    /// no host event of this VMM notifies).
    pub event_notify_vector: Option<u8>,
    /// Each vCPU's VE info, by index: set when a #VE is raised, taken
    /// (and so cleared) by TDG.VP.VEINFO.GET.
    pub ve_info: Vec<Option<VeInfo>>,
}

/// The VE info of an EPT violation (`abi::tdcall::ve`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VeInfo {
    pub qualification: u64,
    pub gpa: u64,
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
            attributes: abi::tdcall::vp_info::DEFAULT_ATTRIBUTES,
            ve_info: vec![None; abi::to_usize(u64::from(vcpus))],
            measure: Measurements::new(),
            cpuid: CpuidTable::default(),
            cmos: Cmos::default(),
            svr: vec![ghci::X2APIC_SVR_RESET; abi::to_usize(u64::from(vcpus))],
            event_notify_vector: None,
        }
    }

    /// Sets the TD ATTRIBUTES the TD sees (`--td-attributes`); the
    /// default is `vp_info::DEFAULT_ATTRIBUTES` (SEPT_VE_DISABLE).
    pub fn set_attributes(&mut self, attributes: u64) {
        self.attributes = attributes;
    }

    /// Sets MRTD, the build-time measurement, once the VMM has measured
    /// the TD's initial image (zero until then).
    pub fn set_mrtd(&mut self, mrtd: [u8; SHA384_LEN]) {
        self.measure.mrtd = mrtd;
    }

    /// Sets the table Instruction.CPUID answers from (what the host's
    /// KVM supports, `CpuidTable::from_kvm`).
    pub fn set_cpuid(&mut self, table: CpuidTable) {
        self.cpuid = table;
    }
}
