//! Building a TD once, before any guest code runs: the inputs checked, the
//! initial memory laid out, the images and the HOB loaded, the VM and its
//! vCPUs created, the pending mechanism chosen; and why a build fails.

use super::{Td, TdConfig, MAX_VCPUS};
use crate::boot::cpu;
use crate::boot::hob::{build_td_hob, HobBuildError, TdHobSpec};
use crate::boot::image::{ElfError, ElfImage};
use crate::boot::plan::{self as boot, BootPlan};
use crate::host::console::Console;
use crate::memory::layout::LayoutError;
use crate::memory::pending_mechanism::{PendingMechanism, PoisonedChunks};
use crate::memory::private::{MemoryError, PrivateMemory};
use crate::report::{self, run_log::RunLog};
use crate::shared::{Shared, TdShared};
use crate::tdx::module::TdxModule;
use crate::vcpu::stop_board::StopBoard;
use crate::vcpu::{Vcpu, VcpuState};
use abi::layout::{FIRMWARE_BASE, FIRMWARE_MAX_SIZE};
use kvm_ioctls::{Cap, Kvm, SyncReg};
use std::sync::Arc;
use std::time::Instant;
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
    /// The busy-injection probability is not between 0 and 1.
    #[error("busy injection probability {probability} is not between 0 and 1")]
    InjectProbability {
        /// The probability given.
        probability: f64,
    },
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

impl Td {
    /// Validates the inputs and builds the TD.
    pub fn build(config: TdConfig) -> Result<Self, TdError> {
        let started = Instant::now();
        if let Some(spec) = config.inject {
            if !(0.0..=1.0).contains(&spec.busy) {
                return Err(TdError::InjectProbability {
                    probability: spec.busy,
                });
            }
        }
        let layout = crate::memory::layout::checked(config.mem_bytes, config.gpaw)?;
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
        // A stop asked for while the TD was being built is posted now: the
        // run then ends before any guest code runs.
        config.stop.attach(&board);
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
}
