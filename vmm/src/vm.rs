//! The TD as a VM, built once: checks the inputs, lays out initial memory,
//! loads the images and the HOB, creates the VM and its vCPU, and holds
//! the state every vCPU shares (`Shared`: private memory, the emulated TDX
//! module, the console, the run's log) apart from each vCPU's own
//! (`vcpu::VcpuState`). Running it is `vcpu.rs`; its report,
//! `report::assemble`.

use crate::boot::cpu::{self, CpuProfile, ProfileChoice};
use crate::boot::hob::{build_td_hob, HobBuildError, TdHobSpec};
use crate::boot::image::{ElfError, ElfImage};
use crate::boot::plan::{self as boot, BootPlan};
use crate::host::console::Console;
use crate::memory::guest_ram::Backing;
use crate::memory::layout::{LayoutError, RamLayout};
use crate::memory::pending_mechanism::{PendingMechanism, PoisonedChunks};
use crate::memory::private::{MemoryError, PrivateMemory};
use crate::report::assemble::{assemble, Parts, RunFacts};
use crate::report::run_log::RunLog;
use crate::report::{self, Report};
use crate::shared::{Shared, TdShared};
use crate::stop::{Fatal, Stop};
use crate::tdx::module::TdxModule;
use crate::vcpu::stop_board::StopBoard;
use crate::vcpu::{Vcpu, VcpuState};
use abi::layout::{FIRMWARE_BASE, FIRMWARE_MAX_SIZE};
use abi::report::Outcome;
use kvm_ioctls::{Cap, Kvm, SyncReg};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;

/// What to run.
#[derive(Clone, Debug)]
pub struct TdConfig {
    pub firmware: PathBuf,
    pub kernel: Option<PathBuf>,
    pub mem_bytes: u64,
    /// vCPUs (`--cpus`, 1..=`MAX_VCPUS`).
    pub cpus: u32,
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
    /// The host's Secure-EPT leaf size (`--sept-level`).
    pub sept_level: abi::tdcall::SeptLevel,
    /// `--pending`: the mechanism asked for, or `None` to pick the best
    /// this host offers.
    pub pending: Option<PendingMechanism>,
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
            cpus: 1,
            cmdline: String::new(),
            profile: ProfileChoice::Auto,
            backing: Backing::Populate,
            gpaw: abi::tdcall::vp_info::GPAW_48,
            echo_console: false,
            timeout: None,
            trace: None,
            trace_cap_bytes: crate::report::trace::DEFAULT_CAP_BYTES,
            map_on_touch: true,
            sept_level: abi::tdcall::SeptLevel::L2M,
            pending: None,
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
            vmm_version: vmm_version.to_string(),
            vmm_git_commit: vmm_git_commit.map(str::to_string),
            firmware: None,
            kernel: None,
            mem_bytes: self.mem_bytes,
            cpus: self.cpus,
            cmdline: self.cmdline.clone(),
            cpu_profile_requested: self.profile.as_str().to_string(),
            backing: self.backing.as_str().to_string(),
            map: if self.map_on_touch {
                "on-touch"
            } else {
                "on-accept"
            }
            .to_string(),
            sept_level: self.sept_level.as_str().to_string(),
            pending: self
                .pending
                .map_or("auto", PendingMechanism::as_str)
                .to_string(),
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
    #[error("{what} failed: {source}")]
    Kvm {
        what: &'static str,
        source: vmm_sys_util::errno::Error,
    },
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error("--pending uffd-poison: {0}")]
    Pending(crate::memory::pending_mechanism::PendingError),
    #[error(transparent)]
    Cpu(#[from] cpu::CpuError),
    #[error(transparent)]
    Trace(#[from] crate::report::trace::TraceError),
    #[error(transparent)]
    File(#[from] crate::host::files::FileError),
    #[error("{asked} vCPUs asked for: {why}")]
    Cpus { asked: u32, why: String },
    #[error(transparent)]
    Reserve(#[from] crate::memory::host_alloc::ReserveError),
    #[error(transparent)]
    Limit(#[from] crate::host::limits::LimitError),
}

/// Sets up the pending mechanism `asked` for (`None`: the best this host
/// offers). Returns why `uffd-poison` is not used when it was not asked
/// for by name; asking for it by name on a host without it is an error.
fn choose_pending(
    memory: &mut PrivateMemory,
    asked: Option<PendingMechanism>,
) -> Result<Option<String>, TdError> {
    if asked == Some(PendingMechanism::Memslots) {
        return Ok(Some("--pending memslots".into()));
    }
    let chunks = memory
        .pages()
        .pages()
        .div_ceil(crate::memory::page_state::PAGES_PER_CHUNK);
    // A poisoned page hit in pvm-native arrives as a SIGBUS.
    let opened = crate::host::poison_signal::install()
        .map_err(crate::memory::pending_mechanism::PendingError::Handler)
        .and_then(|()| PoisonedChunks::open(chunks));
    match opened {
        Ok(p) => {
            memory.use_poison(p);
            Ok(None)
        }
        Err(e) if asked.is_none() => {
            log::info!("pending memory: memslots ({e})");
            Ok(Some(e.to_string()))
        }
        Err(e) => Err(TdError::Pending(e)),
    }
}

/// Most vCPUs a TD may have (`--cpus`).
pub const MAX_VCPUS: u32 = crate::host::signals::MAX_VCPUS as u32;

/// A built TD, ready to run.
pub struct Td {
    pub(crate) vcpus: Vec<Vcpu>,
    pub(crate) shared: TdShared,
    pub(crate) profile: CpuProfile,
    pub(crate) config: TdConfig,
    pub(crate) initial_bytes: u64,
    /// Why `uffd-poison` was not chosen by `--pending auto`, if it was not.
    pub(crate) pending_fallback: Option<String>,
    /// What the report records of the inputs.
    pub(crate) inputs: report::Inputs,
    pub(crate) _kvm: Kvm,
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
        let max_vcpus = kvm.get_max_vcpus() as u32;
        if config.cpus == 0 || config.cpus > MAX_VCPUS || config.cpus > max_vcpus {
            return Err(TdError::Cpus {
                asked: config.cpus,
                why: format!(
                    "a TD has 1 to {} vCPUs here (this VMM allows {MAX_VCPUS}, KVM_CAP_MAX_VCPUS is {max_vcpus})",
                    MAX_VCPUS.min(max_vcpus)
                ),
            });
        }
        let vm = kvm.create_vm().map_err(|source| TdError::Kvm {
            what: "KVM_CREATE_VM",
            source,
        })?;
        let mut fds = Vec::with_capacity(config.cpus as usize);
        for i in 0..config.cpus {
            fds.push(
                vm.create_vcpu(u64::from(i))
                    .map_err(|source| TdError::Kvm {
                        what: "KVM_CREATE_VCPU",
                        source,
                    })?,
            );
        }
        // The top slot ids stay free for short-lived VMM mappings (see cpu.rs).
        let slot_limit = kvm.get_nr_memslots().saturating_sub(4).max(16);
        let board = Arc::new(StopBoard::new(config.cpus));
        // One vCPU needs no pause around memslot merges: it is the one merging.
        let pauser = (config.cpus > 1)
            .then(|| board.clone() as Arc<dyn crate::memory::memslots::GuestPause>);
        // Under `ulimit -v`: refused now, with the limit named, rather
        // than aborted at whichever allocation comes too late.
        crate::host::limits::ensure_room_for_td(config.mem_bytes, config.cpus)?;
        let mut memory = PrivateMemory::new(vm, layout, config.backing, slot_limit, pauser)?;
        crate::host::limits::ensure_room_for_run(config.cpus)?;
        memory.set_map_on_touch(config.map_on_touch);
        memory.set_sept_level(config.sept_level);
        let pending_fallback = choose_pending(&mut memory, config.pending)?;
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
        let profile = cpu::resolve_profile(config.profile, &fds[0])?;
        for (i, fd) in (0u32..).zip(&fds) {
            cpu::setup_vcpu(
                &kvm,
                memory.vm(),
                fd,
                slot_limit as u32,
                profile,
                &plan,
                firmware.entry,
                config.gpaw,
                i,
            )?;
        }
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
        if !sync_regs {
            log::info!("KVM_CAP_SYNC_REGS missing: TDCALLs use KVM_GET/SET_REGS");
        }
        let vcpus = (0u32..)
            .zip(fds)
            .map(|(i, mut fd)| {
                if sync_regs {
                    fd.set_sync_valid_reg(SyncReg::Register);
                }
                let mut state = VcpuState::new(i);
                state.tsc_khz = fd.get_tsc_khz().ok();
                Vcpu {
                    fd,
                    state,
                    sync_regs,
                }
            })
            .collect();
        let trace = config
            .trace
            .as_deref()
            .map(|p| crate::report::trace::Trace::create(p, config.trace_cap_bytes))
            .transpose()?;
        let shared = Shared {
            memory,
            tdx: TdxModule::new(
                config.gpaw,
                config.cpus,
                config.inject.map(crate::tdx::inject::Injector::new),
            ),
            console: Console::new(config.echo_console),
            log: RunLog::new(started, trace),
            invariant_checks: config.check_invariants.then_some(0),
            lock_acquisitions: 0,
        };
        Ok(Td {
            shared: TdShared::new(shared, board)?,
            vcpus,
            profile,
            config,
            initial_bytes: plan.initial_len(),
            pending_fallback,
            inputs,
            _kvm: kvm,
        })
    }

    /// The resolved CPU profile.
    pub fn profile(&self) -> CpuProfile {
        self.profile
    }

    /// Runs the TD until it stops, then reports. vCPU 0 runs on the
    /// calling thread, every other vCPU on a thread of its own; the first
    /// stop of any vCPU stops them all.
    pub fn run(self) -> Report {
        let Td {
            mut vcpus,
            shared,
            profile,
            config,
            initial_bytes,
            pending_fallback,
            inputs,
            _kvm,
        } = self;
        crate::host::watchdog::install_kick_handler();
        let kicks_failed_before = crate::host::watchdog::kick_failures().0;
        let board = shared.board.clone();
        let watchdog = config
            .timeout
            .map(|t| crate::host::watchdog::Watchdog::arm(t, move || board.kick(false)));
        let timeout = config.timeout;
        std::thread::scope(|scope| {
            let (first, others) = vcpus.split_first_mut().expect("a TD has at least one vCPU");
            let mut threads = Vec::new();
            for vcpu in others {
                let index = vcpu.state.index;
                let (td, wd) = (&shared, watchdog.as_ref());
                let spawned = std::thread::Builder::new()
                    .name(format!("vcpu{index}"))
                    .stack_size(crate::host::limits::VCPU_STACK_BYTES)
                    .spawn_scoped(scope, move || {
                        vcpu.run(td, wd, timeout);
                    });
                match spawned {
                    Ok(t) => threads.push(t),
                    Err(e) => {
                        shared.board.stop(
                            index,
                            Stop::error(
                                format!("cannot start the thread of vCPU {index}: {e}"),
                                None,
                            ),
                        );
                        break;
                    }
                }
            }
            first.run(&shared, watchdog.as_ref(), timeout);
            for t in threads {
                if t.join().is_err() {
                    shared
                        .board
                        .stop(u32::MAX, Stop::error("a vCPU thread panicked".into(), None));
                }
            }
        });
        drop(watchdog);
        crate::host::signals::clear();
        let mut stop = match shared.board.take() {
            Some((index, mut stop)) => {
                if let Some(f) = stop.fatal.as_mut() {
                    f.vcpu = Some(index).filter(|i| (*i as usize) < vcpus.len());
                }
                stop
            }
            None => Stop::error("the vCPUs stopped without a reason".into(), None),
        };
        let mut s = shared.into_state();
        if let Some(n) = s.invariant_checks.as_mut() {
            *n += 1;
            if let Err(e) = crate::memory::invariants::check_all(&s.memory) {
                stop = Stop::error(
                    format!("private-memory invariant broken at the end: {e}"),
                    None,
                );
            }
        }
        if let Some(why) = s.log.guest_counters.chaos_failure() {
            // A kernel that kexecs carries on after its chaos run: a
            // disagreement in any generation fails the run.
            if stop.outcome == Outcome::Ok && stop.exit_code == Some(0) {
                let message = format!("{why} (the guest exited 0)");
                stop = Stop::fatal(Outcome::GuestPanic, Fatal::new(message));
            }
        }
        if let Some(f) = stop.fatal.as_mut() {
            f.generation = s.log.generation;
            f.phase = Some(s.log.phase.as_str().to_string());
        }
        let facts = RunFacts {
            mem_bytes: config.mem_bytes,
            cpu_profile: profile.as_str(),
            initial_bytes,
            pending_fallback,
            inputs,
        };
        let parts = Parts {
            memory: &s.memory,
            tdx: &s.tdx,
            invariant_checks: s.invariant_checks,
            state_lock_acquisitions: s.lock_acquisitions,
        };
        let states: Vec<VcpuState> = vcpus.iter().map(|v| v.state.clone()).collect();
        let mut report = assemble(parts, s.console, s.log, &states, stop, facts);
        report.host.kick_failures = crate::host::watchdog::kick_failures().0 - kicks_failed_before;
        report
    }
}
