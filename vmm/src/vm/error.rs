//! Why a TD could not be built, before any guest code ran: one variant per
//! failing step, each message saying what failed and with which value.

use crate::boot::cpu;
use crate::boot::hob::HobBuildError;
use crate::boot::image::ElfError;
use crate::boot::plan as boot;
use crate::memory::layout::LayoutError;
use crate::memory::private::MemoryError;
use thiserror::Error;

/// Why a TD could not be built (before any guest code ran). The message
/// says what failed and with which value.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TdError {
    /// The memory size cannot be laid out.
    #[error("invalid memory size: {0}")]
    Layout(#[from] LayoutError),
    /// The firmware or the kernel is not a usable ELF image.
    #[error(transparent)]
    Elf(#[from] ElfError),
    /// The TD HOB cannot be built.
    #[error(transparent)]
    Hob(#[from] HobBuildError),
    /// Initial memory does not fit.
    #[error(transparent)]
    Boot(#[from] boot::BootError),
    /// The kernel does not fit in initial memory.
    #[error("{path}: the kernel is {size} bytes, more than fits in initial memory below {low_end:#x}; give the guest more RAM")]
    KernelTooLarge {
        /// The kernel file.
        path: String,
        /// Its size.
        size: u64,
        /// Where initial memory must end.
        low_end: u64,
    },
    /// /dev/kvm cannot be opened.
    #[error("cannot open /dev/kvm: {0}")]
    NoKvm(vmm_sys_util::errno::Error),
    /// A KVM call failed.
    #[error("{what} failed: {source}")]
    Kvm {
        /// The call.
        what: &'static str,
        /// Its error.
        source: vmm_sys_util::errno::Error,
    },
    /// Guest memory cannot be set up.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// The pending mechanism asked for is not available.
    #[error("--pending uffd-poison: {0}")]
    Pending(crate::memory::pending_mechanism::PendingError),
    /// A vCPU cannot be set up.
    #[error(transparent)]
    Cpu(#[from] cpu::CpuError),
    /// The trace file cannot be created.
    #[error(transparent)]
    Trace(#[from] crate::report::trace::TraceError),
    /// An input file cannot be read.
    #[error(transparent)]
    File(#[from] crate::host::files::FileError),
    /// The number of vCPUs is out of range (`asked`; `why` says the range).
    #[error("{asked} vCPUs asked for: {why}")]
    Cpus {
        /// vCPUs asked for.
        asked: u32,
        /// The range allowed, and why.
        why: String,
    },
    /// Host memory for the bookkeeping cannot be reserved.
    #[error(transparent)]
    Reserve(#[from] crate::memory::host_alloc::ReserveError),
    /// A process limit (`ulimit`) leaves no room for the TD.
    #[error(transparent)]
    Limit(#[from] crate::host::limits::LimitError),
    /// The firmware is neither an ELF image nor a TDVF image.
    #[error("{path}: not an ELF file ({elf}), nor a TDVF image ({tdvf})")]
    FirmwareFormat {
        /// The firmware file.
        path: String,
        /// Why it is not an ELF image.
        elf: String,
        /// Why it is not a usable TDVF image.
        tdvf: String,
    },
    /// The TDVF image's metadata is malformed.
    #[error("TDVF image: {0}")]
    Tdvf(#[from] models::tdvf::TdvfError),
    /// A TDVF section cannot be placed.
    #[error("TDVF {kind} section at {gpa:#x} (+{len:#x}): {why}")]
    TdvfSection {
        /// The section's type.
        kind: &'static str,
        /// Its GPA.
        gpa: u64,
        /// Its size.
        len: u64,
        /// Why.
        why: &'static str,
    },
    /// The TDVF image has no TD_HOB section.
    #[error("TDVF image: no TD_HOB section, so nowhere to put the TD HOB")]
    TdvfNoHob,
    /// The TDVF image has no section in the firmware window.
    #[error("TDVF image: no section below 4 GiB above RAM, so no reset vector")]
    TdvfNoWindow,
    /// The TD HOB does not fit its section.
    #[error("TDVF image: the TD HOB is {built} bytes, more than its section's {room}")]
    TdvfHobTooLarge {
        /// Its size.
        built: u64,
        /// The section's size.
        room: u64,
    },
    /// TDVF firmware asked for with something it cannot have.
    #[error("TDVF firmware: {0}")]
    TdvfUnsupported(&'static str),
    /// The firmware window cannot be set up.
    #[error(transparent)]
    Window(#[from] crate::memory::firmware_window::WindowError),
    /// An injection probability is not between 0 and 1.
    #[error("{what} injection probability {probability} is not between 0 and 1")]
    InjectProbability {
        /// Which injection (`busy`, `remove`).
        what: &'static str,
        /// The probability given.
        probability: f64,
    },
}
