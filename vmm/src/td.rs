//! The TD: builds the VM (RAM layout, initial memory, HOB, vCPU state), runs
//! its vCPU, turns every exit into either a resumed guest or a precise stop,
//! and produces the run report.

use crate::boot::cpu::{self, CpuProfile, ProfileChoice};
use crate::boot::hob::{build_td_hob, HobBuildError, TdHobSpec};
use crate::boot::image::{ElfError, ElfImage};
use crate::boot::plan::{self as boot, BootPlan};
use crate::host::console::Console;
use crate::host::watchdog::Watchdog;
use crate::memory::guest_ram::Backing;
use crate::memory::layout::{LayoutError, RamLayout};
use crate::memory::private::{GpaKind, MemoryError, PrivateMemory};
use crate::report::{
    self, Access, ExitStats, Fatal, HostStats, PageStats, Report, Stop, REPORT_VERSION,
};
use crate::tdx::accept::AcceptStats;
use abi::layout::{FIRMWARE_BASE, FIRMWARE_MAX_SIZE};
use abi::report::{Mark, Outcome};
use abi::tdcall::{leaf, DOORBELL_PORT};
use abi::vmcall::{ghci, GHCI_STANDARD, VENDOR_EMU};
use kvm_ioctls::{Cap, Kvm, SyncReg, VcpuExit, VcpuFd};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use thiserror::Error;

/// What to run.
#[derive(Clone, Debug)]
pub struct TdConfig {
    pub firmware: PathBuf,
    pub kernel: Option<PathBuf>,
    pub mem_bytes: u64,
    pub cmdline: String,
    pub profile: ProfileChoice,
    pub backing: Backing,
    pub gpaw: u32,
    /// Echo the guest console to stdout.
    pub echo_console: bool,
    pub timeout: Option<Duration>,
    /// Write an accept trace here.
    pub trace: Option<PathBuf>,
    /// Largest trace file.
    pub trace_cap_bytes: u64,
    /// Install memslots at first touch instead of at accept.
    pub map_on_touch: bool,
    /// Check the private-memory invariants after every accept and mapping
    /// (`invariants.rs`); on by default in debug builds.
    pub check_invariants: bool,
    /// `--inject busy=P,seed=S`.
    pub inject: Option<crate::tdx::inject::InjectSpec>,
    /// The command line that asked for this run, for the report (empty
    /// for library users).
    pub command_line: Vec<String>,
}

impl TdConfig {
    /// Defaults for everything but the firmware path.
    pub fn new(firmware: PathBuf) -> Self {
        TdConfig {
            firmware,
            kernel: None,
            mem_bytes: 1 << 30,
            cmdline: String::new(),
            profile: ProfileChoice::Auto,
            backing: Backing::Populate,
            gpaw: abi::tdcall::vp_info::GPAW_48,
            echo_console: false,
            timeout: None,
            trace: None,
            trace_cap_bytes: crate::report::trace::DEFAULT_CAP_BYTES,
            map_on_touch: true,
            check_invariants: cfg!(debug_assertions),
            inject: None,
            command_line: Vec::new(),
        }
    }

    /// What the report records of this configuration (the input digests
    /// are added when the files are read).
    pub fn inputs(&self) -> report::Inputs {
        let (vmm_version, vmm_git_commit) = report::vmm_version();
        report::Inputs {
            command_line: self.command_line.clone(),
            vmm_version,
            vmm_git_commit,
            firmware: None,
            kernel: None,
            mem_bytes: self.mem_bytes,
            cmdline: self.cmdline.clone(),
            cpu_profile_requested: self.profile.as_str(),
            backing: self.backing.as_str(),
            map: if self.map_on_touch {
                "on-touch"
            } else {
                "on-accept"
            },
            inject: self.inject.map(|i| i.to_string()),
            timeout_s: self.timeout.map(|t| t.as_secs_f64()),
            trace: self.trace.as_ref().map(|p| p.display().to_string()),
            check_invariants: self.check_invariants,
            pid: std::process::id(),
            started_unix_ms: report::unix_ms(),
        }
    }
}

/// Why a TD could not be built (before any guest code ran).
#[derive(Debug, Error)]
pub enum TdError {
    #[error("invalid memory size: {0}")]
    Layout(#[from] LayoutError),
    #[error(transparent)]
    Elf(#[from] ElfError),
    #[error(transparent)]
    Hob(#[from] HobBuildError),
    #[error(transparent)]
    Boot(#[from] boot::BootError),
    #[error("{path}: the kernel is {size} bytes, more than fits in initial memory below {low_end:#x}; give the guest more RAM")]
    KernelTooLarge {
        path: String,
        size: u64,
        low_end: u64,
    },
    #[error("cannot open /dev/kvm: {0}")]
    NoKvm(vmm_sys_util::errno::Error),
    #[error("KVM {what} failed: {source}")]
    Kvm {
        what: &'static str,
        source: vmm_sys_util::errno::Error,
    },
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(transparent)]
    Cpu(#[from] cpu::CpuError),
    #[error(transparent)]
    Trace(#[from] crate::report::trace::TraceError),
    #[error(transparent)]
    File(#[from] crate::host::files::FileError),
}

/// Counts TDCALLs by leaf and VMCALLs by (R10, R11).
#[derive(Debug)]
pub struct TdcallCounters {
    by_leaf: [u64; 64],
    vmcalls: HashMap<(u64, u64), u64>,
}

impl Default for TdcallCounters {
    fn default() -> Self {
        TdcallCounters {
            by_leaf: [0; 64],
            vmcalls: HashMap::new(),
        }
    }
}

impl TdcallCounters {
    pub fn leaf(&mut self, leaf: u16) {
        self.by_leaf[(leaf as usize).min(63)] += 1;
    }

    pub fn vmcall(&mut self, r10: u64, r11: u64) {
        // Guest-chosen keys: past a few dozen kinds, count the rest together.
        let key = if self.vmcalls.len() < 32 || self.vmcalls.contains_key(&(r10, r11)) {
            (r10, r11)
        } else {
            (u64::MAX, u64::MAX)
        };
        *self.vmcalls.entry(key).or_default() += 1;
    }

    fn to_map(&self) -> BTreeMap<String, u64> {
        let mut map = BTreeMap::new();
        for (l, n) in self.by_leaf.iter().enumerate().filter(|(_, n)| **n > 0) {
            let name = match leaf::name(l as u16) {
                "unknown" if l == 63 => "leaf>=63".to_string(),
                "unknown" => format!("leaf{l}"),
                known => known.to_string(),
            };
            map.insert(name, *n);
        }
        for ((r10, r11), n) in &self.vmcalls {
            let name = match (*r10, *r11) {
                (GHCI_STANDARD, ghci::INSTRUCTION_IO) => "vmcall.instruction_io".to_string(),
                (GHCI_STANDARD, ghci::REPORT_FATAL_ERROR) => {
                    "vmcall.report_fatal_error".to_string()
                }
                (u64::MAX, u64::MAX) => "vmcall.other".to_string(),
                (GHCI_STANDARD, f) => format!("vmcall.ghci.{f:#x}"),
                (VENDOR_EMU, f) => format!("vmcall.emu.{f}"),
                (v, f) => format!("vmcall.vendor{v:#x}.{f:#x}"),
            };
            map.insert(name, *n);
        }
        map
    }
}

/// Everything a TDCALL handler may touch.
pub struct TdState {
    pub memory: PrivateMemory,
    pub console: Console,
    pub accept_stats: AcceptStats,
    pub counters: TdcallCounters,
    pub exits: ExitStats,
    pub gpaw: u32,
    pub vcpu_index: u32,
    started: Instant,
    marks: BTreeMap<String, u64>,
    /// GPA of the guest's EFI system table, once registered.
    pub system_table: Option<u64>,
    /// Counters the guest reported, per generation.
    pub guest_counters: crate::report::guest_counters::GuestCounters,
    /// The running kernel filled its unaccepted bitmap (Mark::TableFilled).
    pub table_filled: bool,
    /// The running kernel's generation, once a kernel is running.
    pub generation: Option<u64>,
    /// What the guest is doing, from its marks.
    pub phase: &'static str,
    /// One record per kexec.
    pub kexecs: Vec<report::KexecRecord>,
    /// The accept trace, when asked for.
    pub trace: Option<crate::report::trace::Trace>,
    bench_start: Option<(Instant, u64)>,
    bench: Option<report::Bench>,
    /// Invariant checks, when enabled: how many ran.
    pub invariant_checks: Option<u64>,
    /// Fault injection, when asked for.
    pub inject: Option<crate::tdx::inject::Injector>,
    /// Marks and kexec records past their caps (a guest cannot grow the
    /// report without bound).
    pub records_dropped: u64,
}

/// Most distinct phase-mark keys a report keeps.
pub const MAX_MARKS: usize = 256;
/// Most kexec records a report keeps.
pub const MAX_KEXEC_RECORDS: usize = 64;

impl TdState {
    /// Runs the invariant checks over `[gpa, gpa + len)` when enabled;
    /// `zeroed` also checks that the range reads zero (just accepted).
    pub fn check_invariants(&mut self, gpa: u64, len: u64, zeroed: bool) -> Result<(), String> {
        let Some(n) = self.invariant_checks.as_mut() else {
            return Ok(());
        };
        *n += 1;
        let r = crate::memory::invariants::check_range(&self.memory, gpa, len).and_then(|()| {
            if zeroed {
                crate::memory::invariants::check_zeroed(&self.memory, gpa, len)
            } else {
                Ok(())
            }
        });
        r.map_err(|e| format!("private-memory invariant broken: {e}"))
    }

    /// Adds a record to the accept trace, if one is being written.
    pub fn trace(&mut self, kind: crate::report::trace::Kind, gpa: u64, level: u8, status: u64) {
        let Some(t) = self.trace.as_mut() else { return };
        use crate::report::trace::Who;
        let who = match self.phase {
            "boot" | "firmware" => Who::Firmware,
            "kexec_load" | "kexec relocation copy" => Who::Kexec,
            _ => Who::Kernel,
        };
        t.record(crate::report::trace::Record {
            t_ns: self.started.elapsed().as_nanos() as u64,
            gpa,
            status,
            kind,
            level,
            who,
            generation: self.generation.unwrap_or(0).min(255) as u8,
        });
    }

    /// Records a guest phase mark (host time of arrival).
    pub fn mark(&mut self, mark: Mark, arg: u64) {
        let now = self.started.elapsed().as_micros() as u64;
        let per_generation = matches!(
            mark,
            Mark::KernelEntry
                | Mark::KernelReady
                | Mark::WorkloadDone
                | Mark::KexecLoad
                | Mark::KexecJump
        );
        let key = if per_generation && arg > 0 {
            format!("gen{arg}.{}", mark.as_str())
        } else {
            mark.as_str().to_string()
        };
        if self.marks.len() < MAX_MARKS || self.marks.contains_key(&key) {
            self.marks.insert(key, now);
        } else {
            self.records_dropped += 1;
        }
        match mark {
            Mark::FwStart => self.phase = "firmware",
            Mark::TableFilled => self.table_filled = true,
            Mark::KernelEntry => {
                self.generation = Some(arg);
                self.phase = "kernel";
                self.table_filled = false;
                if let Some(k) = self
                    .kexecs
                    .last_mut()
                    .filter(|k| k.from_generation + 1 == arg)
                {
                    k.next_entry_us = Some(now);
                }
            }
            Mark::KexecLoad => {
                self.phase = "kexec_load";
                if self.kexecs.len() < MAX_KEXEC_RECORDS {
                    self.kexecs.push(report::KexecRecord {
                        from_generation: arg,
                        load_us: now,
                        ..Default::default()
                    });
                } else {
                    self.records_dropped += 1;
                }
            }
            Mark::KexecJump => {
                self.phase = "kexec relocation copy";
                if let Some(k) = self.kexecs.last_mut() {
                    k.jump_us = Some(now);
                }
            }
            _ => {}
        }
        match mark {
            Mark::BenchStart => self.bench_start = Some((Instant::now(), arg)),
            Mark::BenchEnd => {
                if let Some((t0, n)) = self.bench_start.take() {
                    let ns = t0.elapsed().as_nanos() as u64 / n.max(1);
                    log::info!("doorbell round trip: {ns} ns over {n} TDCALLs");
                    self.bench = Some(report::Bench {
                        round_trips: n,
                        doorbell_rtt_ns: ns,
                    });
                }
            }
            _ => {}
        }
    }
}

/// A built TD, ready to run.
pub struct Td {
    vcpu: VcpuFd,
    state: TdState,
    profile: CpuProfile,
    config: TdConfig,
    initial_bytes: u64,
    /// Registers travel through kvm_run (KVM_CAP_SYNC_REGS) at exits.
    sync_regs: bool,
    /// What the report records of the inputs.
    inputs: report::Inputs,
    _kvm: Kvm,
}

impl Td {
    /// Validates the inputs and builds the TD.
    pub fn build(config: TdConfig) -> Result<Self, TdError> {
        let started = Instant::now();
        let layout = RamLayout::new(config.mem_bytes, config.gpaw)?;
        let mut inputs = config.inputs();
        let firmware = ElfImage::read("firmware", &config.firmware)?;
        firmware.check_window(FIRMWARE_BASE, FIRMWARE_BASE + FIRMWARE_MAX_SIZE)?;
        inputs.firmware = Some(report::InputFile::new(&config.firmware, &firmware.bytes));
        // The kernel file is copied whole into initial memory: one that
        // cannot fit is refused from its size, before it is read.
        let kernel_file = config
            .kernel
            .as_deref()
            .map(|p| crate::host::files::open_input("kernel", p))
            .transpose()?;
        let payload_len = kernel_file.as_ref().map_or(0, |(_, size)| *size);

        let ram: Vec<(u64, u64)> = layout.regions().map(|r| (r.gpa, r.size)).collect();
        // First pass sizes the list: initial memory starts at the firmware,
        // so this splits RAM exactly as the final list will.
        let fw_start = firmware.start() & !(abi::PAGE_4K - 1);
        let mut spec = TdHobSpec {
            base: 0,
            ram,
            initial: (fw_start, abi::PAGE_4K),
            free: (0, 0),
            payload: (0, 0),
            cmdline: &config.cmdline,
        };
        let hob_len = build_td_hob(&spec)?.len() as u64;
        // The identity map uses 1 GiB leaves where the vCPU will offer them
        // (without /dev/kvm the build fails below, at the same point as
        // before).
        let kvm = Kvm::new();
        let leaf = match &kvm {
            Ok(k) if cpu::gib_pages_supported(k) => boot::MapLeaf::Gib1,
            _ => boot::MapLeaf::Mib2,
        };
        let plan = BootPlan::new(
            &layout,
            firmware.start(),
            firmware.end(),
            hob_len,
            payload_len,
            leaf,
        )
        .map_err(|e| match (&config.kernel, &e) {
            // Name the kernel when it is what does not fit.
            (Some(path), boot::BootError::DoesNotFit { have, .. })
                if BootPlan::new(&layout, firmware.start(), firmware.end(), hob_len, 0, leaf)
                    .is_ok() =>
            {
                TdError::KernelTooLarge {
                    path: path.display().to_string(),
                    size: payload_len,
                    low_end: *have,
                }
            }
            _ => TdError::Boot(e),
        })?;
        let payload = match (kernel_file, &config.kernel) {
            (Some((file, size)), Some(path)) => {
                let image = ElfImage::read_file(path, file, size)?;
                image.check_kernel(config.mem_bytes.saturating_sub(plan.initial_len()))?;
                inputs.kernel = Some(report::InputFile::new(path, &image.bytes));
                Some(image)
            }
            _ => None,
        };
        spec.base = plan.hob;
        spec.initial = (plan.initial.0, plan.initial_len());
        spec.free = plan.scratch;
        spec.payload = plan.payload;
        let hob = build_td_hob(&spec)?;
        if hob.len() as u64 > plan.hob_len {
            return Err(TdError::Hob(HobBuildError::Grew {
                planned: plan.hob_len,
                built: hob.len() as u64,
            }));
        }

        let kvm = kvm.map_err(TdError::NoKvm)?;
        let vm = kvm.create_vm().map_err(|source| TdError::Kvm {
            what: "KVM_CREATE_VM",
            source,
        })?;
        let mut vcpu = vm.create_vcpu(0).map_err(|source| TdError::Kvm {
            what: "KVM_CREATE_VCPU",
            source,
        })?;
        // The top slot ids stay free for short-lived VMM mappings (see cpu.rs).
        let slot_limit = kvm.get_nr_memslots().saturating_sub(4).max(16);
        let mut memory = PrivateMemory::new(vm, layout, config.backing, slot_limit)?;
        memory.map_on_touch = config.map_on_touch;
        memory.add_initial(plan.initial.0, plan.initial_len())?;
        firmware.load(memory.ram().memory())?;
        memory.write("TD HOB", plan.hob, &hob)?;
        memory.write("GDT", plan.gdt, &boot::gdt_bytes())?;
        for i in 0..plan.page_table_pages {
            let page = boot::page_table_page(&layout, plan.page_tables, plan.map_leaf, i);
            let mut bytes = [0u8; abi::PAGE_4K as usize];
            for (chunk, e) in bytes.chunks_exact_mut(8).zip(page) {
                chunk.copy_from_slice(&e.to_le_bytes());
            }
            memory.write("page tables", plan.page_tables + i * abi::PAGE_4K, &bytes)?;
        }
        if let Some(p) = &payload {
            memory.write("payload", plan.payload.0, &p.bytes)?;
        }
        let profile = cpu::resolve_profile(config.profile, &vcpu)?;
        cpu::setup_vcpu(
            &kvm,
            memory.vm(),
            &vcpu,
            slot_limit as u32,
            profile,
            &plan,
            firmware.entry,
            config.gpaw,
            0,
        )?;
        log::info!(
            "TD built: {} RAM, profile {}, identity map with {:?} leaves, initial memory {:#x}..{:#x}, HOB at {:#x}, entry {:#x}",
            crate::host::size::format_size(config.mem_bytes),
            profile.as_str(),
            plan.map_leaf,
            plan.initial.0,
            plan.initial.1,
            plan.hob,
            firmware.entry
        );
        let sync_regs = kvm.check_extension(Cap::SyncRegs);
        if sync_regs {
            vcpu.set_sync_valid_reg(SyncReg::Register);
        } else {
            log::info!("KVM_CAP_SYNC_REGS missing: TDCALLs use KVM_GET/SET_REGS");
        }
        let trace = config
            .trace
            .as_deref()
            .map(|p| crate::report::trace::Trace::create(p, config.trace_cap_bytes))
            .transpose()?;
        let state = TdState {
            memory,
            console: Console::new(config.echo_console),
            accept_stats: AcceptStats::default(),
            counters: TdcallCounters::default(),
            exits: ExitStats::default(),
            gpaw: config.gpaw,
            vcpu_index: 0,
            started,
            marks: BTreeMap::new(),
            system_table: None,
            guest_counters: Default::default(),
            table_filled: false,
            generation: None,
            phase: "boot",
            kexecs: Vec::new(),
            trace,
            bench_start: None,
            bench: None,
            invariant_checks: config.check_invariants.then_some(0),
            inject: config.inject.map(crate::tdx::inject::Injector::new),
            records_dropped: 0,
        };
        Ok(Td {
            vcpu,
            state,
            profile,
            config,
            initial_bytes: plan.initial_len(),
            sync_regs,
            inputs,
            _kvm: kvm,
        })
    }

    /// The resolved CPU profile.
    pub fn profile(&self) -> CpuProfile {
        self.profile
    }

    /// Runs the vCPU until the TD stops, then reports.
    pub fn run(mut self) -> Report {
        let watchdog = self.config.timeout.map(Watchdog::arm);
        crate::host::signals::attach(&mut self.vcpu.get_kvm_run().immediate_exit);
        let mut stop = loop {
            if let Some(stop) = self.step(watchdog.as_ref()) {
                break stop;
            }
        };
        crate::host::signals::detach();
        if let Some(n) = self.state.invariant_checks.as_mut() {
            *n += 1;
            if let Err(e) = crate::memory::invariants::check_all(&self.state.memory) {
                stop = Stop::error(
                    format!("private-memory invariant broken at the end: {e}"),
                    None,
                );
            }
        }
        if let Some(why) = self.state.guest_counters.chaos_failure() {
            // A kernel that kexecs carries on after its chaos run: a
            // disagreement in any generation fails the run.
            if stop.outcome == Outcome::Ok && stop.exit_code == Some(0) {
                stop = Stop::fatal(
                    Outcome::GuestPanic,
                    Fatal {
                        kind: Outcome::GuestPanic.as_str(),
                        gpa: None,
                        rip: None,
                        access: None,
                        message: format!("{why} (the guest exited 0)"),
                        generation: None,
                        phase: None,
                    },
                );
            }
        }
        if let Some(f) = stop.fatal.as_mut() {
            f.rip = f.rip.or_else(|| self.vcpu.get_regs().ok().map(|r| r.rip));
            f.generation = self.state.generation;
            f.phase = Some(self.state.phase);
        }
        drop(watchdog);
        self.report(stop)
    }

    /// One KVM_RUN and the handling of its exit.
    fn step(&mut self, watchdog: Option<&Watchdog>) -> Option<Stop> {
        enum Next {
            Resume,
            Doorbell,
            Memory(u64, Access, usize, [u8; 8]),
            Stop(Stop),
            Triple,
            Internal,
        }
        if watchdog.is_some_and(|w| w.fired()) {
            return Some(self.timeout_stop());
        }
        if let Some(sig) = crate::host::signals::pending() {
            return Some(self.signal_stop(sig));
        }
        let exits = &mut self.state.exits;
        let next = match self.vcpu.run() {
            Ok(exit) => {
                exits.total += 1;
                match exit {
                    VcpuExit::IoOut(port, _) if port == DOORBELL_PORT as u16 => {
                        exits.io += 1;
                        exits.doorbell += 1;
                        Next::Doorbell
                    }
                    VcpuExit::IoOut(port, data) => {
                        exits.io += 1;
                        exits.unassigned_io += 1;
                        log::debug!("port write {port:#x} <- {data:?}: no device, dropped");
                        Next::Resume
                    }
                    VcpuExit::IoIn(port, data) => {
                        exits.io += 1;
                        exits.unassigned_io += 1;
                        log::debug!("port read {port:#x}: no device, all-ones");
                        data.fill(0xff);
                        Next::Resume
                    }
                    VcpuExit::MmioRead(gpa, data) => {
                        exits.mmio += 1;
                        Next::Memory(gpa, Access::Read, data.len().min(8), [0; 8])
                    }
                    VcpuExit::MmioWrite(gpa, data) => {
                        exits.mmio += 1;
                        let mut bytes = [0u8; 8];
                        let n = data.len().min(8);
                        bytes[..n].copy_from_slice(&data[..n]);
                        Next::Memory(gpa, Access::Write, n, bytes)
                    }
                    VcpuExit::Shutdown => Next::Triple,
                    VcpuExit::InternalError => Next::Internal,
                    VcpuExit::Hlt => Next::Stop(Stop::error(
                        "guest executed HLT with no interrupt source (a TD idles through TDG.VP.VMCALL)".into(),
                        None,
                    )),
                    VcpuExit::FailEntry(reason, cpu) => Next::Stop(Stop::error(
                        format!("KVM_RUN entry failure, hardware reason {reason:#x} on cpu {cpu}"),
                        None,
                    )),
                    other => Next::Stop(Stop::error(format!("unexpected vCPU exit {other:?}"), None)),
                }
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                // The next step checks the watchdog.
                Next::Resume
            }
            Err(e) => Next::Stop(Stop::error(format!("KVM_RUN failed: {e}"), None)),
        };
        match next {
            Next::Resume => None,
            Next::Stop(stop) => Some(stop),
            Next::Doorbell => self.doorbell(),
            Next::Memory(gpa, access, len, data) => {
                if self.state.memory.map_on_touch
                    && self.state.memory.classify(gpa) == GpaKind::Accepted
                {
                    return self.complete_first_touch(gpa, access, len, data);
                }
                Some(self.memory_fault(gpa, access))
            }
            Next::Triple => {
                let rip = self.vcpu.get_regs().ok().map(|r| r.rip);
                Some(Stop::fatal(
                    Outcome::TripleFault,
                    Fatal {
                        kind: Outcome::TripleFault.as_str(),
                        gpa: None,
                        rip,
                        access: None,
                        message: "vCPU triple-faulted (KVM shutdown exit)".into(),
                        generation: None,
                        phase: None,
                    },
                ))
            }
            Next::Internal => {
                let rip = self.vcpu.get_regs().ok().map(|r| r.rip);
                match rip {
                    Some(rip)
                        if self.state.memory.map_on_touch
                            && self.state.memory.classify(rip) == GpaKind::Accepted
                            && !self.state.memory.slots().covers(rip) =>
                    {
                        // An instruction fetch from accepted, unmapped memory:
                        // map it and let the vCPU fetch again.
                        match self.state.memory.map_touched(rip) {
                            Ok(()) => {
                                self.state.exits.first_touch_maps += 1;
                                self.state
                                    .check_invariants(rip & !0xfff, abi::PAGE_4K, false)
                                    .err()
                                    .map(|e| Stop::error(e, Some(rip)))
                            }
                            Err(e) => Some(Stop::error(
                                format!("mapping {rip:#x} for a fetch failed: {e}"),
                                Some(rip),
                            )),
                        }
                    }
                    _ => Some(self.internal_error()),
                }
            }
        }
    }

    fn signal_stop(&mut self, sig: i32) -> Stop {
        let mut stop = Stop::fatal(
            Outcome::Interrupted,
            Fatal {
                kind: Outcome::Interrupted.as_str(),
                gpa: None,
                rip: self.vcpu.get_regs().ok().map(|r| r.rip),
                access: None,
                message: format!("stopped by {}", crate::host::signals::name(sig)),
                generation: None,
                phase: None,
            },
        );
        stop.signal = Some(sig);
        stop
    }

    fn timeout_stop(&mut self) -> Stop {
        let secs = self.config.timeout.unwrap_or_default().as_secs_f64();
        Stop::fatal(
            Outcome::Timeout,
            Fatal {
                kind: Outcome::Timeout.as_str(),
                gpa: None,
                rip: self.vcpu.get_regs().ok().map(|r| r.rip),
                access: None,
                message: format!("guest still running after the {secs} s timeout"),
                generation: None,
                phase: None,
            },
        )
    }

    fn doorbell(&mut self) -> Option<Stop> {
        if self.sync_regs {
            // KVM stored the registers in kvm_run at the exit: no ioctl.
            let mut regs = self.vcpu.sync_regs().regs;
            let stop = crate::tdx::dispatch::dispatch(&mut self.state, &mut regs);
            if stop.is_none() {
                self.vcpu.sync_regs_mut().regs = regs;
                self.vcpu.set_sync_dirty_reg(SyncReg::Register);
            }
            return stop;
        }
        let mut regs = match self.vcpu.get_regs() {
            Ok(r) => r,
            Err(e) => {
                return Some(Stop::error(
                    format!("KVM_GET_REGS at a TDCALL failed: {e}"),
                    None,
                ))
            }
        };
        let stop = crate::tdx::dispatch::dispatch(&mut self.state, &mut regs);
        if stop.is_none() {
            if let Err(e) = self.vcpu.set_regs(&regs) {
                return Some(Stop::error(
                    format!("KVM_SET_REGS after a TDCALL failed: {e}"),
                    Some(regs.rip),
                ));
            }
        }
        stop
    }

    /// With `map_on_touch`, the first access to accepted memory exits like
    /// MMIO: map the run around it, and complete the access KVM handed us
    /// (copy the data in or out), so the instruction retires normally.
    fn complete_first_touch(
        &mut self,
        gpa: u64,
        access: Access,
        len: usize,
        data: [u8; 8],
    ) -> Option<Stop> {
        if let Err(e) = self.state.memory.map_touched(gpa) {
            return Some(Stop::error(
                format!("mapping accepted GPA {gpa:#x} on first touch failed: {e}"),
                None,
            ));
        }
        self.state.exits.first_touch_maps += 1;
        if let Err(e) = self
            .state
            .check_invariants(gpa & !0xfff, abi::PAGE_4K, false)
        {
            return Some(Stop::error(e, None));
        }
        match access {
            Access::Write => {
                if !self.state.memory.write_accepted(gpa, &data[..len]) {
                    return Some(self.memory_fault(gpa, access));
                }
            }
            _ => {
                let mut buf = [0u8; 8];
                if !self.state.memory.read_accepted(gpa, &mut buf[..len]) {
                    return Some(self.memory_fault(gpa, access));
                }
                let run = self.vcpu.get_kvm_run();
                // SAFETY: the exit was KVM_EXIT_MMIO (a read), so `mmio` is
                // the live member of the exit union; `len` <= 8 = data size.
                unsafe { run.__bindgen_anon_1.mmio.data[..len].copy_from_slice(&buf[..len]) };
            }
        }
        None
    }

    /// A guest access reached a GPA without a memslot.
    fn memory_fault(&mut self, gpa: u64, access: Access) -> Stop {
        let rip = self.vcpu.get_regs().ok().map(|r| r.rip);
        let (outcome, what) = match self.state.memory.classify(gpa) {
            GpaKind::Pending => (Outcome::PendingAccess, "memory that was never accepted"),
            GpaKind::NotRam if self.state.memory.layout().in_hole(gpa) => {
                (Outcome::BadGpa, "the MMIO hole, where no device is mapped")
            }
            GpaKind::NotRam => (Outcome::BadGpa, "a GPA that is not RAM"),
            GpaKind::Accepted => {
                return Stop::error(
                    format!(
                        "{} of accepted GPA {gpa:#x} exited without a memslot (memslot bookkeeping bug)",
                        access.as_str()
                    ),
                    rip,
                )
            }
        };
        if outcome == Outcome::PendingAccess {
            self.state
                .trace(crate::report::trace::Kind::PendingAccess, gpa, 0, 0);
        }
        let message = format!(
            "guest {} of {what} at GPA {gpa:#x} (RIP {})",
            access.as_str(),
            rip.map_or("unknown".into(), |r| format!("{r:#x}"))
        );
        log::debug!("{message}");
        Stop::fatal(
            outcome,
            Fatal {
                kind: outcome.as_str(),
                gpa: Some(gpa),
                rip,
                access: Some(access.as_str()),
                message,
                generation: None,
                phase: None,
            },
        )
    }

    /// KVM could not emulate an instruction. If it was fetched from memory
    /// with no memslot, that is an instruction fetch from pending memory or
    /// from a non-RAM GPA (the identity map makes RIP a GPA).
    fn internal_error(&mut self) -> Stop {
        let suberror = {
            let run = self.vcpu.get_kvm_run();
            // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so the
            // `internal` member of the exit union is the one KVM filled.
            unsafe { run.__bindgen_anon_1.internal.suberror }
        };
        let rip = self.vcpu.get_regs().ok().map(|r| r.rip);
        if let Some(rip) = rip {
            match self.state.memory.classify(rip) {
                GpaKind::Pending | GpaKind::NotRam => {
                    return self.memory_fault_at(rip, Access::Execute)
                }
                GpaKind::Accepted => {}
            }
        }
        Stop::error(format!("KVM internal error, suberror {suberror}"), rip)
    }

    fn memory_fault_at(&mut self, gpa: u64, access: Access) -> Stop {
        self.state.exits.mmio += 1;
        self.memory_fault(gpa, access)
    }

    fn report(mut self, stop: Stop) -> Report {
        let state = &mut self.state;
        let mut timing_us = std::mem::take(&mut state.marks);
        timing_us.insert("total".into(), state.started.elapsed().as_micros() as u64);
        use crate::report::bitmap_check::CheckError;
        // Compare only a table the kernel has filled: an installed but
        // unfilled one would read as all "accepted".
        let (bitmap_state, bitmap) = match state.system_table {
            None => ("no_system_table", None),
            Some(st) => match crate::report::bitmap_check::check(&state.memory, st) {
                Err(CheckError::NoTable) => ("no_table", None),
                Ok(c) if !state.table_filled => ("not_filled", Some(Ok(c))),
                Ok(c) => {
                    if c.mismatches > 0 {
                        log::warn!(
                            "{} units of the guest's unaccepted bitmap disagree with the page states",
                            c.mismatches
                        );
                    }
                    ("checked", Some(Ok(c)))
                }
                Err(e) => ("error", Some(Err(e.to_string()))),
            },
        };
        let pages = state.memory.pages();
        let slot_stats = state.memory.slots().stats();
        let report = Report {
            version: REPORT_VERSION,
            outcome: stop.outcome.as_str(),
            exit_code: stop.exit_code,
            fatal: stop.fatal,
            mem_bytes: self.config.mem_bytes,
            cpu_profile: self.profile.as_str(),
            backing: state.memory.backing.as_str(),
            accept: crate::tdx::accept::AcceptStats {
                handle_p50_ns: state.memory.handle_hist.quantile(0.5),
                handle_p99_ns: state.memory.handle_hist.quantile(0.99),
                ..state.accept_stats
            },
            pages: PageStats {
                pending_bytes: pages.pending_pages() * abi::PAGE_4K,
                accepted_bytes: pages.accepted_pages() * abi::PAGE_4K,
                initial_bytes: self.initial_bytes,
            },
            host: HostStats {
                rss_peak_bytes: report::rss_peak_bytes(),
                guest_resident_bytes: state.memory.ram().resident_bytes().unwrap_or(0),
                page_state_bytes: pages.footprint_bytes(),
                memslots: state.memory.slots().len(),
                memslots_peak: slot_stats.peak,
                memslots_installed: slot_stats.installed,
                memslots_removed: slot_stats.removed,
            },
            exits: state.exits,
            tdcalls: state.counters.to_map(),
            timing_us,
            bench: state.bench,
            trace: state.trace.take().map(|t| t.finish()),
            guest: state.guest_counters.totals(),
            guest_per_generation: state.guest_counters.per_generation(),
            kexecs: state
                .kexecs
                .iter()
                .filter(|k| k.next_entry_us.is_some())
                .count(),
            kexec: state.kexecs.clone(),
            unaccepted_table: bitmap
                .as_ref()
                .and_then(|b| b.as_ref().ok().map(|c| c.table)),
            bitmap_state,
            bitmap_mismatches: bitmap
                .as_ref()
                .filter(|_| bitmap_state == "checked")
                .and_then(|b| b.as_ref().ok().map(|c| c.mismatches)),
            bitmap_error: bitmap.and_then(|b| b.err()),
            console: state.console.text(),
            signal: stop.signal.map(crate::host::signals::name),
            signal_number: stop.signal,
            invariant_checks: state.invariant_checks,
            records_dropped: state.records_dropped,
            inputs: std::mem::take(&mut self.inputs),
        };
        report
    }
}
