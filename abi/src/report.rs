//! Run-report vocabulary shared by the VMM and the guests: the outcome names
//! of a run and the phase marks a guest can record.

crate::named_enum! {
    /// How a run ended. The VMM's JSON report spells these with `as_str`
    /// (and the VMM re-exports this enum as `vmm::Outcome`). Guests never
    /// send an outcome; `Refused` is the report's own, for a run refused
    /// before any guest code ran. More outcomes may come: matches need a
    /// wildcard arm outside this crate.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    #[non_exhaustive]
    pub enum Outcome {
        /// The guest shut down cleanly (its exit code is reported separately).
        Ok => "ok",
        /// The guest reported a fatal error (`ReportFatalError`).
        GuestPanic => "guest_panic",
        /// The guest touched memory that was never accepted.
        PendingAccess => "pending_access",
        /// The guest touched a GPA that is neither RAM nor a device.
        BadGpa => "bad_gpa",
        /// The vCPU triple-faulted (KVM shutdown exit).
        TripleFault => "triple_fault",
        /// The VMM stopped the TD for any other reason (see the message).
        Error => "error",
        /// The guest ran past the VMM's `--timeout`.
        Timeout => "timeout",
        /// The VMM was asked to stop (a stop signal, or the library's
        /// `StopHandle::stop`).
        Interrupted => "interrupted",
        /// The run was refused before any guest code ran (bad input).
        Refused => "refused",
    }
}

crate::named_enum! {
    /// Counters a kernel reports with the `emu::COUNTER` vendor call; they
    /// appear under `guest` in the run report.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum Counter: u64 {
        /// 2 MiB units the kernel accepted through the bitmap.
        UnitsAccepted = 1 => "units_accepted",
        /// Bytes the kernel accepted outside the bitmap (unaligned heads and
        /// tails, small ranges) while filling it.
        BytesAcceptedImmediately = 2 => "bytes_accepted_immediately",
        /// 4 MiB blocks parked on the unaccepted list.
        BlocksParked = 3 => "blocks_parked",
        /// Parked blocks accepted because free memory ran low.
        BlocksAcceptedLazily = 4 => "blocks_accepted_lazily",
        /// Free pages when the allocator became ready.
        FreePagesAtReady = 5 => "free_pages_at_ready",
        /// Pages the allocator uses for its own maps.
        MetaPages = 6 => "meta_pages",
        /// Bytes the workload allocated, wrote, verified and freed.
        WorkloadBytes = 7 => "workload_bytes",
        /// 1 for lazy acceptance, 0 for eager.
        LazyAccept = 8 => "lazy_accept",
        /// Bytes accepted for the current kexec's destinations.
        KexecDestAccepted = 9 => "kexec_dest_accepted",
        /// GPA of the current kexec's first destination.
        KexecDest = 10 => "kexec_dest",
        /// Operations a chaos self-test issued.
        ChaosOps = 11 => "chaos_ops",
        /// Chaos operations whose answer disagreed with the guest's model.
        ChaosDisagreements = 12 => "chaos_disagreements",
        /// Port accesses to unassigned ports the chaos self-test made.
        ChaosUnassignedIo = 13 => "chaos_unassigned_io",
        /// Accepts the kernel retried after TDX_OPERAND_BUSY (`accept_retry=N`).
        AcceptRetries = 14 => "accept_retries",
        /// The same for the firmware.
        FwAcceptRetries = 15 => "fw_accept_retries",
        /// TSC ticks this CPU spent waiting for the kernel's accept lock
        /// (`unaccepted_memory_lock` and the `accepting_list` retry). Each CPU
        /// reports its own; the host keeps it per vCPU and converts it to
        /// nanoseconds with the vCPU's TSC frequency.
        LockWaitTsc = 16 => "lock_wait_tsc",
        /// Chaos accepts that raced another CPU's on one Secure-EPT entry.
        ChaosRaced = 17 => "chaos_raced",
        /// TDX_OPERAND_BUSY answers the chaos self-test got (on several CPUs
        /// each is one the model explained, or a disagreement).
        ChaosBusy = 18 => "chaos_busy",
        /// Descriptors in the memory map the kernel was booted with (the
        /// firmware's at ExitBootServices, or the one the previous kernel
        /// handed over with kexec).
        MemoryMapEntries = 19 => "memory_map_entries",
        /// Pages the kernel's #VE handler accepted (`ve_accept=on`).
        VeAccepts = 20 => "ve_accepts",
        /// Workload pages whose pattern read back as zeros (`ve_accept=on`
        /// only: the host removed them after they were written, and the #VE
        /// handler accepted them again, fresh and zeroed, without a word).
        WorkloadZeroPages = 21 => "workload_zero_pages",
        /// GPA of the kernel's bounce pool (its first 2 MiB chunk), shared
        /// with the host (`bounce_pool=SIZE`).
        BouncePool = 22 => "bounce_pool",
        /// 4 KiB pages the kernel holds shared (Linux's `nr_shared`) when it
        /// reports.
        SharedPages = 23 => "shared_pages",
        /// 4 KiB pages the kexec step converted back to private
        /// (`tdx_kexec_finish`'s `found`), for the last kexec.
        KexecUnsharedPages = 24 => "kexec_unshared_pages",
        /// MapGPA conversions (to shared or private) the chaos self-test made.
        ChaosConversions = 25 => "chaos_conversions",
        /// Pages the chaos self-test had the host remove (`REMOVE_PAGE`).
        ChaosRemovals = 26 => "chaos_removals",
        /// Removed pages the chaos self-test accepted again (its model's
        /// count; the host's is `host.removed_pages_reaccepted`).
        ChaosReaccepted = 27 => "chaos_reaccepted",
        /// Bytes of the kernel allocator's sparse directory (top array,
        /// section pages and spares) when the kernel is ready.
        AllocatorDirectoryBytes = 28 => "allocator_directory_bytes",
    }
}

crate::named_enum! {
    /// Phase marks a guest records with the `emu::MARK` vendor call. The VMM
    /// timestamps each on arrival and reports it under `timing_us`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum Mark: u64 {
        /// Firmware reached its main function.
        FwStart = 1 => "fw_start",
        /// Firmware finished accepting memory.
        FwAcceptDone = 2 => "fw_accept_done",
        /// Firmware hands over (to the kernel, or shuts down).
        FwDone = 3 => "fw_done",
        /// A kernel reached its entry point (argument: generation).
        KernelEntry = 4 => "kernel_entry",
        /// The kernel's page allocator is ready (argument: generation).
        KernelReady = 5 => "kernel_ready",
        /// The kernel's workload finished (argument: generation).
        WorkloadDone = 6 => "workload_done",
        /// kexec_load starts (argument: the loading kernel's generation).
        KexecLoad = 7 => "kexec_load",
        /// The loading kernel jumps to the relocation routine (argument:
        /// generation); the next mark is the new kernel's `KernelEntry`.
        KexecJump = 8 => "kexec_jump",
        /// The kernel filled (or reused) its unaccepted-memory bitmap: from
        /// here the VMM can compare it with the page states.
        TableFilled = 9 => "unaccepted_table_filled",
        /// A doorbell micro-benchmark starts (argument: number of round trips).
        BenchStart = 16 => "bench_start",
        /// The doorbell micro-benchmark ended.
        BenchEnd = 17 => "bench_end",
        /// A 4 KiB accept micro-benchmark starts (argument: number of pages,
        /// each accepted and then written once).
        AcceptBenchStart = 18 => "accept_bench_start",
        /// The 4 KiB accept micro-benchmark ended.
        AcceptBenchEnd = 19 => "accept_bench_end",
    }
}
