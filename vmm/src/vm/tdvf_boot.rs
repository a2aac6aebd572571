//! Building a TD from a TDVF image (td-shim, OVMF's TDX build), as a TDX
//! VMM does: the metadata parsed and checked (`models::tdvf`), MRTD
//! measured over the image as given, every TDCALL of the boot firmware
//! volume patched to the doorbell, and the sections placed by type: those
//! above RAM in the firmware window below 4 GiB (initial, accepted,
//! writable), those in RAM as initial 4 KiB-accepted memory (the TD HOB
//! where the TD_HOB section says, built as TDVF builds it), PAGE.AUG
//! memory left pending for the firmware to accept. No boot plan of our
//! own (identity map, GDT, scratch): the firmware starts at the reset
//! vector in the TDX module's initial state.

use super::error::TdError;
use crate::boot::hob::build_tdvf_hob;
use crate::memory::firmware_window::FirmwareWindow;
use crate::memory::layout::RamLayout;
use crate::memory::private::PrivateMemory;
use abi::layout::{MMIO_HOLE_END, MMIO_HOLE_START};
use abi::tdvf::TdvfSectionType;
use models::tdvf::{Section, TdcallSite, TdvfImage};

/// A TDVF image ready to load.
pub struct TdvfBoot {
    image: TdvfImage,
    /// The image with its TDCALLs patched.
    patched: Vec<u8>,
    /// The patched TDCALLs.
    pub sites: Vec<TdcallSite>,
    /// MRTD of the image as given.
    pub mrtd: [u8; 48],
    /// The sections above RAM, filled.
    pub window: FirmwareWindow,
    /// The TD HOB's place.
    hob: (u64, u64),
    /// Initial memory in RAM, ascending: `(gpa, len)`.
    in_ram: Vec<(u64, u64)>,
}

/// Where a section goes.
enum Place {
    Window,
    Ram,
    /// PAGE.AUG memory in RAM: pending until the firmware accepts it.
    Pending,
    /// TD_INFO, TD_PARAMS: no memory.
    Nowhere,
}

fn place(s: &Section, layout: &RamLayout) -> Result<Place, TdError> {
    let r = s.memory_range();
    if s.mem_size == 0 {
        return Ok(Place::Nowhere);
    }
    if r.start >= MMIO_HOLE_START && r.end <= MMIO_HOLE_END {
        return Ok(Place::Window);
    }
    if layout.ram_offset(r.start, s.mem_size).is_some() {
        return Ok(if s.page_aug() {
            Place::Pending
        } else {
            Place::Ram
        });
    }
    Err(TdError::TdvfSection {
        kind: s.kind.as_str(),
        gpa: r.start,
        len: s.mem_size,
        why: "it is neither RAM of this TD nor inside the firmware window below 4 GiB",
    })
}

impl TdvfBoot {
    /// Parses `bytes` (a whole TDVF image), measures it, patches it and
    /// lays its sections out for a TD whose RAM is `layout`.
    pub fn prepare(
        path: &std::path::Path,
        bytes: Vec<u8>,
        layout: &RamLayout,
    ) -> Result<Self, TdError> {
        let image = TdvfImage::parse(&bytes).map_err(|e| TdError::FirmwareFormat {
            path: path.display().to_string(),
            elf: "no \\x7fELF magic".into(),
            tdvf: e.to_string(),
        })?;
        // Every section is placed (and so bounded by RAM or the window)
        // before the measurement, whose cost follows the sections' sizes.
        for s in image.sections() {
            place(s, layout)?;
        }
        let mrtd = crate::boot::mrtd::mrtd(&image, &bytes)?;
        let mut patched = bytes;
        let mut sites = Vec::new();
        models::tdvf::patch_tdcalls(&image, &mut patched, |s| sites.push(s))?;

        let mut window_span: Option<(u64, u64)> = None;
        let mut in_ram = Vec::new();
        for s in image.sections() {
            match place(s, layout)? {
                Place::Window => {
                    let r = s.memory_range();
                    window_span = Some(match window_span {
                        Some((lo, hi)) => (lo.min(r.start), hi.max(r.end)),
                        None => (r.start, r.end),
                    });
                }
                Place::Ram => in_ram.push((s.gpa, s.mem_size)),
                Place::Pending | Place::Nowhere => {}
            }
        }
        in_ram.sort_unstable();
        if let Some(w) = in_ram.windows(2).find(|w| w[0].0 + w[0].1 > w[1].0) {
            return Err(TdError::TdvfSection {
                kind: "RAM",
                gpa: w[1].0,
                len: w[1].1,
                why: "two sections overlap in RAM",
            });
        }
        let hob = image
            .td_hob()
            .filter(|h| h.mem_size > 0)
            .map(|h| (h.gpa, h.mem_size))
            .ok_or(TdError::TdvfNoHob)?;
        if !in_ram.contains(&hob) {
            return Err(TdError::TdvfSection {
                kind: "TD_HOB",
                gpa: hob.0,
                len: hob.1,
                why: "the TD HOB must lie in RAM",
            });
        }
        let (lo, hi) = window_span.ok_or(TdError::TdvfNoWindow)?;
        let mut window = FirmwareWindow::new(lo, hi - lo)?;
        for s in image.sections() {
            if matches!(place(s, layout)?, Place::Window) && s.raw_size > 0 {
                let r = s.file_range();
                let data = &patched[abi::to_usize(r.start)..abi::to_usize(r.end)];
                window.write(s.kind.as_str(), s.gpa, data)?;
            }
        }
        Ok(TdvfBoot {
            image,
            patched,
            sites,
            mrtd,
            window,
            hob,
            in_ram,
        })
    }

    /// GPA of the TD HOB (RCX and R8 of every vCPU).
    pub fn hob_gpa(&self) -> u64 {
        self.hob.0
    }

    /// Bytes of initial memory (the window and the sections in RAM).
    pub fn initial_bytes(&self) -> u64 {
        self.window.len() + self.in_ram.iter().map(|r| r.1).sum::<u64>()
    }

    /// Writes the sections in RAM into `memory` as initial (accepted)
    /// memory, 4 KiB at a time as TDH.MEM.PAGE.ADD adds them, and the TD
    /// HOB describing `layout`'s RAM into its section.
    pub fn load(&self, memory: &mut PrivateMemory, layout: &RamLayout) -> Result<(), TdError> {
        for &(gpa, len) in &self.in_ram {
            memory.add_initial(gpa, len)?;
        }
        for s in self.image.sections() {
            if s.kind == TdvfSectionType::TdHob || s.raw_size == 0 {
                continue;
            }
            if matches!(place(s, layout)?, Place::Ram) {
                let r = s.file_range();
                let data = &self.patched[abi::to_usize(r.start)..abi::to_usize(r.end)];
                memory.write(s.kind.as_str(), s.gpa, data)?;
            }
        }
        let ram: Vec<(u64, u64)> = layout.regions().map(|r| (r.gpa, r.size)).collect();
        let hob = build_tdvf_hob(self.hob.0, &ram, &self.in_ram);
        let built = u64::try_from(hob.len()).unwrap_or(u64::MAX);
        if built > self.hob.1 {
            return Err(TdError::TdvfHobTooLarge {
                built,
                room: self.hob.1,
            });
        }
        memory.write("TD HOB", self.hob.0, &hob)?;
        Ok(())
    }
}

/// Builds a TD that boots the TDVF image `bytes` (the rest of `Td::build`
/// for this format): standard profile only, no `--kernel` (the image
/// carries its payload), every vCPU at the reset vector.
pub(super) fn build(
    config: super::TdConfig,
    layout: RamLayout,
    bytes: Vec<u8>,
    mut inputs: crate::report::Inputs,
    started: std::time::Instant,
) -> Result<super::Td, TdError> {
    use super::build::{create_vm, make_vcpus, module, shared_state, td_memory, TdMemory};
    use crate::boot::cpu::{self, ProfileChoice};
    use crate::shared::TdShared;

    if config.kernel.is_some() {
        return Err(TdError::TdvfUnsupported(
            "--kernel: a TDVF image carries its own payload",
        ));
    }
    if config.profile == ProfileChoice::PvmNative {
        return Err(TdError::TdvfUnsupported(
            "the pvm-native profile runs ring-3 code only, and TDVF firmware starts in ring 0 at the reset vector: use --cpu-profile standard (auto picks it)",
        ));
    }
    let boot = TdvfBoot::prepare(&config.firmware, bytes, &layout)?;
    log::info!(
        "TDVF image: {} sections, firmware window {:#x}..{:#x}, TD HOB at {:#x}, {} TDCALLs patched, MRTD {}",
        boot.image.sections().len(),
        boot.window.gpa(),
        boot.window.gpa() + boot.window.len(),
        boot.hob_gpa(),
        boot.sites.len(),
        crate::tdx::measure::hex(&boot.mrtd)
    );
    inputs.tdcall_sites = boot.sites.iter().map(|s| s.addr).collect();

    let kvm = kvm_ioctls::Kvm::new().map_err(TdError::NoKvm)?;
    let (vm, fds) = create_vm(&kvm, config.cpus)?;
    let TdMemory {
        mut memory,
        board,
        slot_limit,
        pending_fallback,
    } = td_memory(&config, &kvm, vm, layout)?;
    // The window takes the last of the slot ids kept free, for the TD's life.
    let window_slot = u32::try_from(slot_limit + 3).unwrap_or(u32::MAX);
    boot.load(&mut memory, &layout)?;
    let initial_bytes = boot.initial_bytes();
    let initial_units = crate::report::units::account(&layout, &boot.in_ram);
    let hob_gpa = boot.hob_gpa();
    let (mrtd, sites) = (boot.mrtd, boot.sites.len());
    memory.add_window(boot.window, window_slot)?;
    let supported = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(|source| TdError::Kvm {
            what: "KVM_GET_SUPPORTED_CPUID",
            source,
        })?;
    let cpuid = crate::tdx::cpuid::CpuidTable::from_kvm(supported.as_slice());
    for (i, fd) in (0u32..).zip(&fds) {
        cpu::setup_vcpu_reset(&kvm, fd, &cpuid, config.gpaw, i, hob_gpa)?;
    }
    let vcpus = make_vcpus(&kvm, fds);
    let mut tdx = module(&config);
    tdx.set_mrtd(mrtd);
    tdx.set_cpuid(cpuid);
    let shared = shared_state(&config, memory, tdx, started)?;
    log::debug!("TDVF TD built with {sites} TDCALL sites patched");
    Ok(super::Td {
        shared: TdShared::new(shared, board)?,
        vcpus,
        profile: cpu::CpuProfile::Standard,
        config,
        initial_bytes,
        initial_units,
        pending_fallback,
        inputs,
        _kvm: kvm,
    })
}
