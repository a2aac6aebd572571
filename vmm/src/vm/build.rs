//! Building a TD once, before any guest code runs, step by step: the
//! inputs checked (`Images`), initial memory laid out and the HOB built
//! (`plan_boot`), the VM and its vCPUs created (`create_vm`), memory set
//! up with its pending mechanism (`choose_pending`) and loaded
//! (`load_initial`), the vCPUs set up (`make_vcpus`). Why a build fails is
//! `error.rs`.

use super::{Td, TdConfig, MAX_VCPUS};
use crate::boot::cpu;
use crate::boot::hob::{build_td_hob, HobBuildError, TdHobSpec};
use crate::boot::image::{ElfError, ElfImage};
use crate::boot::plan::{self as boot, BootPlan};
use crate::host::console::Console;
use crate::memory::layout::RamLayout;
use crate::memory::pending_mechanism::{PendingMechanism, PoisonedChunks};
use crate::memory::private::PrivateMemory;
use crate::report::{self, run_log::RunLog};
use crate::shared::{Shared, TdShared};
use crate::tdx::module::TdxModule;
use crate::vcpu::stop_board::StopBoard;
use crate::vcpu::{Vcpu, VcpuState};
use abi::layout::{FIRMWARE_BASE, FIRMWARE_MAX_SIZE};
use kvm_ioctls::{Cap, Kvm, SyncReg, VcpuFd, VmFd};
use std::sync::Arc;
use std::time::Instant;

use super::error::TdError;

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

/// A TD's private memory and the stop board its vCPUs share
/// (`td_memory`).
pub(super) struct TdMemory {
    pub memory: PrivateMemory,
    pub board: Arc<StopBoard>,
    /// The memslot ids the memory may use; the ids above stay free for
    /// short-lived VMM mappings and a firmware window.
    pub slot_limit: usize,
    /// Why `uffd-poison` is not used, when it is not.
    pub pending_fallback: Option<String>,
}

/// The private memory of a TD on `vm` (both firmware formats): a stop
/// asked for while the TD was being built is posted to the new board now,
/// so the run ends before any guest code runs; one vCPU needs no pause
/// around memslot merges (it is the one merging); under `ulimit -v` the
/// reservation is refused with the limit named rather than aborted at
/// whichever allocation comes too late.
pub(super) fn td_memory(
    config: &TdConfig,
    kvm: &Kvm,
    vm: VmFd,
    layout: RamLayout,
) -> Result<TdMemory, TdError> {
    let slot_limit = kvm.get_nr_memslots().saturating_sub(4).max(16);
    let board = Arc::new(StopBoard::new(config.cpus));
    config.stop.attach(&board);
    let pauser =
        (config.cpus > 1).then(|| board.clone() as Arc<dyn crate::memory::memslots::GuestPause>);
    crate::host::limits::ensure_room_for_td(config.mem_bytes, config.cpus)?;
    let mut memory = PrivateMemory::new(vm, layout, config.backing, slot_limit, pauser)?;
    crate::host::limits::ensure_room_for_run(config.cpus, config.mem_bytes)?;
    memory.set_map_on_touch(config.map_on_touch);
    memory.set_sept_level(config.sept_level);
    let pending_fallback = choose_pending(&mut memory, config.pending)?;
    Ok(TdMemory {
        memory,
        board,
        slot_limit,
        pending_fallback,
    })
}

/// The images a TD boots, read and checked, and what the report says of
/// them.
struct Images {
    firmware: ElfImage,
    /// The kernel file, opened (its size known) but read only once it is
    /// known to fit.
    kernel_file: Option<(std::fs::File, u64)>,
    inputs: report::Inputs,
}

/// The firmware, by format.
enum Firmware {
    /// Our ELF firmware, entered in 64-bit mode.
    Elf(Images),
    /// A TDVF image (the whole file), entered at the reset vector.
    Tdvf {
        bytes: Vec<u8>,
        inputs: report::Inputs,
    },
}

/// Reads the firmware file: an ELF image (by its magic) or, otherwise, a
/// TDVF image, whose metadata `tdvf_boot` checks.
fn read_firmware(path: &std::path::Path) -> Result<(bool, Vec<u8>), TdError> {
    use std::io::Read;
    let (mut file, size) = crate::host::files::open_input("firmware", path)?;
    if size > crate::boot::image::MAX_IMAGE_BYTES {
        return Err(ElfError::TooBig {
            path: path.to_owned(),
            size,
        }
        .into());
    }
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(abi::to_usize(size))
        .map_err(|_| TdError::FirmwareFormat {
            path: path.display().to_string(),
            elf: format!("no host memory to read its {size} bytes"),
            tdvf: "not read either".into(),
        })?;
    file.read_to_end(&mut bytes)
        .map_err(|source| ElfError::Read {
            path: path.to_owned(),
            source,
        })?;
    Ok((bytes.starts_with(b"\x7fELF"), bytes))
}

impl Firmware {
    /// Reads the firmware and, for an ELF firmware, checks it lies in its
    /// window and opens the kernel.
    fn open(config: &TdConfig) -> Result<Self, TdError> {
        let mut inputs = config.inputs();
        let (elf, bytes) = read_firmware(&config.firmware)?;
        inputs.firmware = Some(report::InputFile::new(&config.firmware, &bytes));
        if !elf {
            return Ok(Firmware::Tdvf { bytes, inputs });
        }
        let mut firmware = ElfImage::parse(&config.firmware, bytes)?;
        firmware.check_window(FIRMWARE_BASE, FIRMWARE_BASE + FIRMWARE_MAX_SIZE)?;
        inputs.tdcall_sites = firmware.patch_tdcalls()?;
        // The kernel file is copied whole into initial memory: one that
        // cannot fit is refused from its size, before it is read.
        let kernel_file = config
            .kernel
            .as_deref()
            .map(|p| crate::host::files::open_input("kernel", p))
            .transpose()?;
        Ok(Firmware::Elf(Images {
            firmware,
            kernel_file,
            inputs,
        }))
    }
}

impl Images {
    fn payload_len(&self) -> u64 {
        self.kernel_file.as_ref().map_or(0, |(_, size)| *size)
    }

    /// Reads the kernel, now that `plan` has room for it.
    fn read_kernel(
        &mut self,
        config: &TdConfig,
        plan: &BootPlan,
    ) -> Result<Option<ElfImage>, TdError> {
        let (Some((file, size)), Some(path)) = (self.kernel_file.take(), &config.kernel) else {
            return Ok(None);
        };
        let mut image = ElfImage::read_file(path, file, size)?;
        image.check_kernel(config.mem_bytes.saturating_sub(plan.initial_len()))?;
        self.inputs.kernel = Some(report::InputFile::new(path, &image.bytes));
        self.inputs.kernel_tdcall_sites = image.patch_tdcalls()?;
        Ok(Some(image))
    }
}

/// Lays out initial memory (firmware, HOB, page tables, payload) and
/// builds the TD HOB for it. A first HOB sizes the list: initial memory
/// starts at 0, so it splits RAM exactly as the final list will.
fn plan_boot<'a>(
    config: &'a TdConfig,
    layout: &RamLayout,
    images: &Images,
    leaf: boot::MapLeaf,
) -> Result<(BootPlan, TdHobSpec<'a>), TdError> {
    let firmware = &images.firmware;
    let payload_len = images.payload_len();
    let spec = TdHobSpec {
        base: 0,
        ram: layout.regions().map(|r| (r.gpa, r.size)).collect(),
        initial: (0, abi::PAGE_4K),
        free: (0, 0),
        payload: (0, 0),
        cmdline: &config.cmdline,
    };
    let hob_len = u64::try_from(build_td_hob(&spec)?.len()).unwrap_or(u64::MAX);
    let plan = |payload| {
        BootPlan::new(
            layout,
            firmware.start(),
            firmware.end(),
            hob_len,
            payload,
            leaf,
        )
    };
    let plan = plan(payload_len).map_err(|e| match (&config.kernel, &e) {
        // Name the kernel when it is what does not fit.
        (Some(path), boot::BootError::DoesNotFit { have, .. }) if plan(0).is_ok() => {
            TdError::KernelTooLarge {
                path: path.display().to_string(),
                size: payload_len,
                low_end: *have,
            }
        }
        _ => TdError::Boot(e),
    })?;
    let spec = TdHobSpec {
        base: plan.hob,
        initial: (plan.initial.0, plan.initial_len()),
        free: plan.scratch,
        payload: plan.payload,
        ..spec
    };
    Ok((plan, spec))
}

/// The VM and its vCPUs, `cpus` of them if KVM allows that many.
pub(super) fn create_vm(kvm: &Kvm, cpus: u32) -> Result<(VmFd, Vec<VcpuFd>), TdError> {
    let max_vcpus = u32::try_from(kvm.get_max_vcpus()).unwrap_or(u32::MAX);
    if cpus == 0 || cpus > MAX_VCPUS || cpus > max_vcpus {
        return Err(TdError::Cpus {
            asked: cpus,
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
    let fds = (0..cpus)
        .map(|i| {
            vm.create_vcpu(u64::from(i)).map_err(|source| TdError::Kvm {
                what: "KVM_CREATE_VCPU",
                source,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((vm, fds))
}

/// Writes initial memory: the firmware, the HOB, the GDT, the identity
/// map's page tables and the payload.
fn load_initial(
    memory: &mut PrivateMemory,
    layout: &RamLayout,
    plan: &BootPlan,
    firmware: &ElfImage,
    hob: &[u8],
    payload: Option<&ElfImage>,
) -> Result<(), TdError> {
    memory.add_initial(plan.initial.0, plan.initial_len())?;
    firmware.load(memory.ram().memory())?;
    memory.write("TD HOB", plan.hob, hob)?;
    memory.write("GDT", plan.gdt, &boot::gdt_bytes())?;
    for i in 0..plan.page_table_pages {
        let page = boot::page_table_page(layout, plan.page_tables, plan.map_leaf, i);
        let mut bytes = [0u8; abi::to_usize(abi::PAGE_4K)];
        for (chunk, e) in bytes.chunks_exact_mut(8).zip(page) {
            chunk.copy_from_slice(&e.to_le_bytes());
        }
        memory.write("page tables", plan.page_tables + i * abi::PAGE_4K, &bytes)?;
    }
    if let Some(p) = payload {
        memory.write("payload", plan.payload.0, &p.bytes)?;
    }
    Ok(())
}

/// The TDX module's state for `config` (its TD ATTRIBUTES set).
pub(super) fn module(config: &TdConfig) -> TdxModule {
    let mut tdx = TdxModule::new(
        config.gpaw,
        config.cpus,
        config.inject.map(crate::tdx::inject::Injector::new),
    );
    tdx.set_attributes(config.td_attributes);
    tdx
}

/// The state the vCPUs share, with the trace file `config` asks for.
pub(super) fn shared_state(
    config: &TdConfig,
    memory: PrivateMemory,
    tdx: TdxModule,
    started: Instant,
) -> Result<Shared, TdError> {
    let trace = config
        .trace
        .as_deref()
        .map(|p| crate::report::trace::Trace::create(p, config.trace_cap_bytes))
        .transpose()?;
    Ok(Shared {
        memory,
        tdx,
        console: Console::new(config.echo_console),
        log: RunLog::new(started, trace),
        invariant_checks: config.check_invariants.then_some(0),
        lock_acquisitions: 0,
    })
}

/// The vCPUs' run-loop halves: their file descriptors with registers
/// through kvm_run where KVM offers it, and each one's own state.
pub(super) fn make_vcpus(kvm: &Kvm, fds: Vec<VcpuFd>) -> Vec<Vcpu> {
    let sync_regs = kvm.check_extension(Cap::SyncRegs);
    let gib_pages = crate::boot::cpu::gib_pages_supported(kvm);
    if !sync_regs {
        log::info!("KVM_CAP_SYNC_REGS missing: TDCALLs use KVM_GET/SET_REGS");
    }
    (0u32..)
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
                gib_pages,
            }
        })
        .collect()
}

impl Td {
    /// Validates the inputs and builds the TD: every input is checked
    /// before /dev/kvm is touched, then the VM, its memory and its vCPUs.
    pub fn build(config: TdConfig) -> Result<Self, TdError> {
        let started = Instant::now();
        if let Some(spec) = config.inject {
            for (what, p) in [("busy", spec.busy), ("remove", spec.remove)] {
                if !(0.0..=1.0).contains(&p) {
                    return Err(TdError::InjectProbability {
                        what,
                        probability: p,
                    });
                }
            }
        }
        let layout = crate::memory::layout::checked(config.mem_bytes, config.gpaw)?;
        let mut images = match Firmware::open(&config)? {
            Firmware::Elf(images) => images,
            Firmware::Tdvf { bytes, inputs } => {
                return super::tdvf_boot::build(config, layout, bytes, inputs, started)
            }
        };
        // The identity map uses 1 GiB leaves where the vCPU will offer them
        // (without /dev/kvm the build fails below, after the inputs are
        // checked).
        let kvm = Kvm::new();
        let leaf = match &kvm {
            Ok(k) if cpu::gib_pages_supported(k) => boot::MapLeaf::Gib1,
            _ => boot::MapLeaf::Mib2,
        };
        let (plan, hob_spec) = plan_boot(&config, &layout, &images, leaf)?;
        let payload = images.read_kernel(&config, &plan)?;
        let hob = build_td_hob(&hob_spec)?;
        let built = u64::try_from(hob.len()).unwrap_or(u64::MAX);
        if built > plan.hob_len {
            return Err(TdError::Hob(HobBuildError::Grew {
                planned: plan.hob_len,
                built,
            }));
        }

        let kvm = kvm.map_err(TdError::NoKvm)?;
        let (vm, fds) = create_vm(&kvm, config.cpus)?;
        let TdMemory {
            mut memory,
            board,
            slot_limit: _,
            pending_fallback,
        } = td_memory(&config, &kvm, vm, layout)?;
        let firmware = &images.firmware;
        load_initial(
            &mut memory,
            &layout,
            &plan,
            firmware,
            &hob,
            payload.as_ref(),
        )?;

        let profile = cpu::resolve_profile(config.profile, &fds[0])?;
        for (i, fd) in (0u32..).zip(&fds) {
            cpu::setup_vcpu(&kvm, fd, profile, &plan, firmware.entry, config.gpaw, i)?;
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
        let vcpus = make_vcpus(&kvm, fds);
        let shared = shared_state(&config, memory, module(&config), started)?;
        Ok(Td {
            shared: TdShared::new(shared, board)?,
            vcpus,
            profile,
            config,
            initial_bytes: plan.initial_len(),
            initial_units: report::units::account(&layout, &[(plan.initial.0, plan.initial_len())]),
            pending_fallback,
            inputs: images.inputs,
            _kvm: kvm,
        })
    }
}
