//! What to run: the TD's configuration and what the report records of it.

use super::StopHandle;
use crate::boot::cpu::ProfileChoice;
use crate::memory::guest_ram::Backing;
use crate::memory::memslots::Mapping;
use crate::memory::pending_mechanism::PendingMechanism;
use crate::report;
use abi::tdcall::SeptLevel;
use std::path::PathBuf;
use std::time::Duration;

/// What to run: the firmware, an optional kernel, and how the TD and the
/// VMM behave. Start from [`TdConfig::new`] (defaults for everything but
/// the firmware) and change what you need with the setters, which chain:
///
/// ```
/// use std::time::Duration;
/// let config = vmm::TdConfig::new("guest-fw.elf")
///     .kernel("guest-kernel.elf")
///     .mem_bytes(2 << 30)
///     .cmdline("accept=lazy")
///     .timeout(Duration::from_secs(60));
/// # let _ = config;
/// ```
///
/// Fields are private and more settings may come in a minor version
/// (hence `#[non_exhaustive]`): a configuration is always built this way.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TdConfig {
    pub(crate) firmware: PathBuf,
    pub(crate) kernel: Option<PathBuf>,
    pub(crate) mem_bytes: u64,
    /// vCPUs (`--cpus`, 1..=`MAX_VCPUS`).
    pub(crate) cpus: u32,
    pub(crate) cmdline: String,
    pub(crate) profile: ProfileChoice,
    pub(crate) backing: Backing,
    pub(crate) gpaw: u32,
    /// Echo the guest console to stdout.
    pub(crate) echo_console: bool,
    pub(crate) timeout: Option<Duration>,
    /// Write an accept trace here.
    pub(crate) trace: Option<PathBuf>,
    /// Largest trace file.
    pub(crate) trace_cap_bytes: u64,
    /// Install memslots at first touch instead of at accept.
    pub(crate) map_on_touch: bool,
    /// The host's Secure-EPT leaf size (`--sept-level`).
    pub(crate) sept_level: abi::tdcall::SeptLevel,
    /// `--pending`: the mechanism asked for, or `None` to pick the best
    /// this host offers.
    pub(crate) pending: Option<PendingMechanism>,
    /// Check the private-memory invariants after every accept and mapping
    /// (`invariants.rs`); on by default in debug builds.
    pub(crate) check_invariants: bool,
    /// `--inject busy=P,remove=Q,seed=S`.
    pub(crate) inject: Option<crate::tdx::inject::InjectSpec>,
    /// TD ATTRIBUTES (`--td-attributes`).
    pub(crate) td_attributes: u64,
    /// The command line that asked for this run, for the report (empty
    /// for library users).
    pub(crate) command_line: Vec<String>,
    /// Stop signals end the run (outcome `interrupted`): the signal
    /// handlers are installed when it starts.
    pub(crate) stop_on_signals: bool,
    /// The handle whose `stop` ends the TD built from this configuration.
    pub(crate) stop: StopHandle,
}

impl TdConfig {
    /// Defaults for everything but the firmware path: 1 GiB of RAM, one
    /// vCPU, an empty guest command line, the CPU profile that suits the
    /// host, memory backed at accept and mapped at first touch, 2 MiB
    /// Secure-EPT leaves, the best pending mechanism the host offers, no
    /// console echo, no timeout, no trace, no stop signals handled.
    pub fn new(firmware: impl Into<PathBuf>) -> Self {
        TdConfig {
            firmware: firmware.into(),
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
            td_attributes: abi::tdcall::vp_info::DEFAULT_ATTRIBUTES,
            command_line: Vec::new(),
            stop_on_signals: false,
            stop: StopHandle::new(),
        }
    }

    /// The kernel ELF the firmware hands over to (its payload).
    pub fn kernel(mut self, path: impl Into<PathBuf>) -> Self {
        self.kernel = Some(path.into());
        self
    }

    /// Guest RAM in bytes: a multiple of 4 KiB, at least 64 MiB (checked
    /// by [`Td::build`](crate::Td::build)).
    pub fn mem_bytes(mut self, bytes: u64) -> Self {
        self.mem_bytes = bytes;
        self
    }

    /// vCPUs: 1 to [`MAX_VCPUS`](crate::MAX_VCPUS), and at most what KVM
    /// allows (checked by [`Td::build`](crate::Td::build)).
    pub fn cpus(mut self, cpus: u32) -> Self {
        self.cpus = cpus;
        self
    }

    /// The command line the firmware and the kernel read (see
    /// `docs/guest-cmdline.md`).
    pub fn cmdline(mut self, cmdline: impl Into<String>) -> Self {
        self.cmdline = cmdline.into();
        self
    }

    /// How guest code runs (default: [`ProfileChoice::Auto`]).
    pub fn cpu_profile(mut self, profile: ProfileChoice) -> Self {
        self.profile = profile;
        self
    }

    /// When accepted memory gets host pages (default: at accept).
    pub fn backing(mut self, backing: Backing) -> Self {
        self.backing = backing;
        self
    }

    /// Whether accepted memory gets its KVM memslot at the guest's first
    /// touch (`true`, the default) or at accept.
    pub fn map_on_touch(mut self, on_touch: bool) -> Self {
        self.map_on_touch = on_touch;
        self
    }

    /// The host's Secure-EPT leaf size (default: 2 MiB). With 4 KiB
    /// leaves a 2 MiB accept of pending memory answers
    /// `TDX_PAGE_SIZE_MISMATCH`.
    pub fn sept_level(mut self, level: SeptLevel) -> Self {
        self.sept_level = level;
        self
    }

    /// How pending memory is kept out of the guest's reach: `Some` asks
    /// for that mechanism (the build fails if the host lacks it), `None`
    /// (the default) picks the best the host offers.
    pub fn pending(mut self, mechanism: Option<PendingMechanism>) -> Self {
        self.pending = mechanism;
        self
    }

    /// Echo the guest console to stdout as it runs (default: off; the
    /// report has the console either way).
    pub fn echo_console(mut self, echo: bool) -> Self {
        self.echo_console = echo;
        self
    }

    /// Stop the guest after `after` (outcome `timeout`).
    pub fn timeout(mut self, after: Duration) -> Self {
        self.timeout = Some(after);
        self
    }

    /// Write a trace of every accept and pending access to `path` (read
    /// it back with [`trace::read`](crate::trace::read)).
    pub fn trace(mut self, path: impl Into<PathBuf>) -> Self {
        self.trace = Some(path.into());
        self
    }

    /// The largest trace file; records past it are counted, not written
    /// (default: 64 MiB).
    pub fn trace_cap_bytes(mut self, bytes: u64) -> Self {
        self.trace_cap_bytes = bytes;
        self
    }

    /// Check the private-memory invariants after every accept and
    /// mapping (default: on in debug builds of the VMM, off otherwise).
    pub fn check_invariants(mut self, check: bool) -> Self {
        self.check_invariants = check;
        self
    }

    /// Fault injection: each valid accept answers `TDX_OPERAND_BUSY`
    /// with probability `probability` (0 to 1, checked by
    /// [`Td::build`](crate::Td::build)), drawn from a generator seeded
    /// with `seed`.
    pub fn inject_busy(mut self, probability: f64, seed: u64) -> Self {
        let (remove, delay) = self.inject.map_or((0.0, 0), |i| (i.remove, i.delay));
        self.inject = Some(crate::tdx::inject::InjectSpec {
            busy: probability,
            remove,
            delay,
            seed,
        });
        self
    }

    /// A host that removes pages: after each successful accept, with
    /// probability `probability` (0 to 1, checked by
    /// [`Td::build`](crate::Td::build)), one random 4 KiB page of it is
    /// taken back (TDH.MEM.PAGE.REMOVE); the guest's next access to it
    /// stops the TD. Drawn from a generator seeded with `seed` (shared with
    /// [`inject_busy`](Self::inject_busy)).
    pub fn inject_remove(self, probability: f64, seed: u64) -> Self {
        self.inject_remove_later(probability, 0, seed)
    }

    /// A host that removes pages at random times: as
    /// [`inject_remove`](Self::inject_remove), but only for accepts made
    /// once the kernel is ready, and the chosen page is taken back `delay`
    /// successful accepts later, when the guest has had time to write it
    /// (`delay` 0 is `inject_remove`).
    pub fn inject_remove_later(mut self, probability: f64, delay: u64, seed: u64) -> Self {
        let busy = self.inject.map_or(0.0, |i| i.busy);
        self.inject = Some(crate::tdx::inject::InjectSpec {
            busy,
            remove: probability,
            delay,
            seed,
        });
        self
    }

    /// The TD ATTRIBUTES TDG.VP.INFO and the TD report give the guest
    /// (default: SEPT_VE_DISABLE only, which Linux requires; td-shim's
    /// tests expect 0). What each bit changes is in `docs/guest-abi.md`.
    pub fn td_attributes(mut self, attributes: u64) -> Self {
        self.td_attributes = attributes;
        self
    }

    /// Let stop signals (SIGINT, SIGTERM, SIGHUP and the others listed in
    /// `docs/failure-modes.md`) end the run with outcome `interrupted`
    /// (default: off). This installs process-wide signal handlers when
    /// the run starts and they stay installed: only a program that runs
    /// one TD at a time and owns its signals should ask for it (the `vmm`
    /// command does). Without it, end a run with a [`StopHandle`].
    pub fn stop_on_signals(mut self, stop: bool) -> Self {
        self.stop_on_signals = stop;
        self
    }

    /// Use `handle` to stop the TD built from this configuration (for a
    /// stop that may come before [`Td::build`](crate::Td::build) returns;
    /// otherwise [`Td::stop_handle`](crate::Td::stop_handle) is simpler).
    pub fn stop_handle(mut self, handle: &StopHandle) -> Self {
        self.stop = handle.clone();
        self
    }

    /// What the report records of this configuration (the input digests
    /// are added when the files are read).
    pub(crate) fn inputs(&self) -> report::Inputs {
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
            cpu_profile_requested: self.profile,
            backing: self.backing,
            map: if self.map_on_touch {
                Mapping::OnTouch
            } else {
                Mapping::OnAccept
            },
            sept_level: self.sept_level,
            pending: self.pending,
            inject: self.inject.map(|i| i.to_string()),
            td_attributes: self.td_attributes,
            timeout_s: self.timeout.map(|t| t.as_secs_f64()),
            trace: self.trace.as_ref().map(|p| p.display().to_string()),
            check_invariants: self.check_invariants,
            pid: std::process::id(),
            started_unix_ms: report::unix_ms(),
            tdcall_sites: Vec::new(),
            kernel_tdcall_sites: Vec::new(),
        }
    }
}
