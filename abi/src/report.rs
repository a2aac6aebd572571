//! Run-report vocabulary shared by the VMM and the guests: the outcome names
//! of a run and the phase marks a guest can record.

/// How a run ended. The VMM's JSON report spells these with `as_str`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The guest shut down cleanly (its exit code is reported separately).
    Ok,
    /// The guest reported a fatal error (`ReportFatalError`).
    GuestPanic,
    /// The guest touched memory that was never accepted.
    PendingAccess,
    /// The guest touched a GPA that is neither RAM nor a device.
    BadGpa,
    /// The vCPU triple-faulted (KVM shutdown exit).
    TripleFault,
    /// The VMM stopped the TD for any other reason (see the message).
    Error,
    /// The guest ran past the VMM's `--timeout`.
    Timeout,
    /// The VMM was asked to stop (SIGINT or SIGTERM).
    Interrupted,
}

impl Outcome {
    /// Every outcome, in report order.
    pub const ALL: [Outcome; 8] = [
        Outcome::Ok,
        Outcome::GuestPanic,
        Outcome::PendingAccess,
        Outcome::BadGpa,
        Outcome::TripleFault,
        Outcome::Error,
        Outcome::Timeout,
        Outcome::Interrupted,
    ];

    /// The name used in reports.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::GuestPanic => "guest_panic",
            Outcome::PendingAccess => "pending_access",
            Outcome::BadGpa => "bad_gpa",
            Outcome::TripleFault => "triple_fault",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
            Outcome::Interrupted => "interrupted",
        }
    }
}

/// Counters a kernel reports with the `emu::COUNTER` vendor call; they
/// appear under `guest` in the run report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u64)]
pub enum Counter {
    /// 2 MiB units the kernel accepted through the bitmap.
    UnitsAccepted = 1,
    /// Bytes the kernel accepted outside the bitmap (unaligned heads and
    /// tails, small ranges) while filling it.
    BytesAcceptedImmediately = 2,
    /// 4 MiB blocks parked on the unaccepted list.
    BlocksParked = 3,
    /// Parked blocks accepted because free memory ran low.
    BlocksAcceptedLazily = 4,
    /// Free pages when the allocator became ready.
    FreePagesAtReady = 5,
    /// Pages the allocator uses for its own maps.
    MetaPages = 6,
    /// Bytes the workload allocated, wrote, verified and freed.
    WorkloadBytes = 7,
    /// 1 for lazy acceptance, 0 for eager.
    LazyAccept = 8,
    /// Bytes accepted for the current kexec's destinations.
    KexecDestAccepted = 9,
    /// GPA of the current kexec's first destination.
    KexecDest = 10,
    /// Operations a chaos self-test issued.
    ChaosOps = 11,
    /// Chaos operations whose answer disagreed with the guest's model.
    ChaosDisagreements = 12,
    /// Port accesses to unassigned ports the chaos self-test made.
    ChaosUnassignedIo = 13,
    /// Accepts the kernel retried after TDX_OPERAND_BUSY (`accept_retry=N`).
    AcceptRetries = 14,
    /// The same for the firmware.
    FwAcceptRetries = 15,
    /// TSC ticks this CPU spent waiting for the kernel's accept lock
    /// (`unaccepted_memory_lock` and the `accepting_list` retry). Each CPU
    /// reports its own; the host keeps it per vCPU and converts it to
    /// nanoseconds with the vCPU's TSC frequency.
    LockWaitTsc = 16,
    /// Chaos accepts that raced another CPU's on one Secure-EPT entry.
    ChaosRaced = 17,
    /// TDX_OPERAND_BUSY answers the chaos self-test got (on several CPUs
    /// each is one the model explained, or a disagreement).
    ChaosBusy = 18,
    /// Descriptors in the memory map the kernel was booted with (the
    /// firmware's at ExitBootServices, or the one the previous kernel
    /// handed over with kexec).
    MemoryMapEntries = 19,
}

impl Counter {
    pub const ALL: [Counter; 19] = [
        Counter::UnitsAccepted,
        Counter::BytesAcceptedImmediately,
        Counter::BlocksParked,
        Counter::BlocksAcceptedLazily,
        Counter::FreePagesAtReady,
        Counter::MetaPages,
        Counter::WorkloadBytes,
        Counter::LazyAccept,
        Counter::KexecDestAccepted,
        Counter::KexecDest,
        Counter::ChaosOps,
        Counter::ChaosDisagreements,
        Counter::ChaosUnassignedIo,
        Counter::AcceptRetries,
        Counter::FwAcceptRetries,
        Counter::LockWaitTsc,
        Counter::ChaosRaced,
        Counter::ChaosBusy,
        Counter::MemoryMapEntries,
    ];

    pub fn from_id(id: u64) -> Option<Self> {
        Self::ALL.into_iter().find(|c| *c as u64 == id)
    }

    /// The key under `guest` in reports.
    pub const fn as_str(self) -> &'static str {
        match self {
            Counter::UnitsAccepted => "units_accepted",
            Counter::BytesAcceptedImmediately => "bytes_accepted_immediately",
            Counter::BlocksParked => "blocks_parked",
            Counter::BlocksAcceptedLazily => "blocks_accepted_lazily",
            Counter::FreePagesAtReady => "free_pages_at_ready",
            Counter::MetaPages => "meta_pages",
            Counter::WorkloadBytes => "workload_bytes",
            Counter::LazyAccept => "lazy_accept",
            Counter::KexecDestAccepted => "kexec_dest_accepted",
            Counter::KexecDest => "kexec_dest",
            Counter::ChaosOps => "chaos_ops",
            Counter::ChaosDisagreements => "chaos_disagreements",
            Counter::ChaosUnassignedIo => "chaos_unassigned_io",
            Counter::AcceptRetries => "accept_retries",
            Counter::LockWaitTsc => "lock_wait_tsc",
            Counter::FwAcceptRetries => "fw_accept_retries",
            Counter::ChaosRaced => "chaos_raced",
            Counter::ChaosBusy => "chaos_busy",
            Counter::MemoryMapEntries => "memory_map_entries",
        }
    }
}

/// Phase marks a guest records with the `emu::MARK` vendor call. The VMM
/// timestamps each on arrival and reports it under `timing_us`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u64)]
pub enum Mark {
    /// Firmware reached its main function.
    FwStart = 1,
    /// Firmware finished accepting memory.
    FwAcceptDone = 2,
    /// Firmware hands over (to the kernel, or shuts down).
    FwDone = 3,
    /// A kernel reached its entry point (argument: generation).
    KernelEntry = 4,
    /// The kernel's page allocator is ready (argument: generation).
    KernelReady = 5,
    /// The kernel's workload finished (argument: generation).
    WorkloadDone = 6,
    /// kexec_load starts (argument: the loading kernel's generation).
    KexecLoad = 7,
    /// The loading kernel jumps to the relocation routine (argument:
    /// generation); the next mark is the new kernel's `KernelEntry`.
    KexecJump = 8,
    /// The kernel filled (or reused) its unaccepted-memory bitmap: from
    /// here the VMM can compare it with the page states.
    TableFilled = 9,
    /// A doorbell micro-benchmark starts (argument: number of round trips).
    BenchStart = 16,
    /// The doorbell micro-benchmark ended.
    BenchEnd = 17,
    /// A 4 KiB accept micro-benchmark starts (argument: number of pages,
    /// each accepted and then written once).
    AcceptBenchStart = 18,
    /// The 4 KiB accept micro-benchmark ended.
    AcceptBenchEnd = 19,
}

impl Mark {
    /// Decodes a mark id; `None` for ids this ABI does not define.
    pub const fn from_id(id: u64) -> Option<Self> {
        match id {
            1 => Some(Mark::FwStart),
            2 => Some(Mark::FwAcceptDone),
            3 => Some(Mark::FwDone),
            4 => Some(Mark::KernelEntry),
            5 => Some(Mark::KernelReady),
            6 => Some(Mark::WorkloadDone),
            7 => Some(Mark::KexecLoad),
            8 => Some(Mark::KexecJump),
            9 => Some(Mark::TableFilled),
            16 => Some(Mark::BenchStart),
            17 => Some(Mark::BenchEnd),
            18 => Some(Mark::AcceptBenchStart),
            19 => Some(Mark::AcceptBenchEnd),
            _ => None,
        }
    }

    /// The key used under `timing_us` in reports.
    pub const fn as_str(self) -> &'static str {
        match self {
            Mark::FwStart => "fw_start",
            Mark::FwAcceptDone => "fw_accept_done",
            Mark::FwDone => "fw_done",
            Mark::KernelEntry => "kernel_entry",
            Mark::KernelReady => "kernel_ready",
            Mark::WorkloadDone => "workload_done",
            Mark::KexecLoad => "kexec_load",
            Mark::KexecJump => "kexec_jump",
            Mark::TableFilled => "unaccepted_table_filled",
            Mark::BenchStart => "bench_start",
            Mark::BenchEnd => "bench_end",
            Mark::AcceptBenchStart => "accept_bench_start",
            Mark::AcceptBenchEnd => "accept_bench_end",
        }
    }
}
