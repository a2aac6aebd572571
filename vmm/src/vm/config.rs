//! What to run: the TD's configuration and what the report records of it.

use crate::boot::cpu::ProfileChoice;
use crate::memory::guest_ram::Backing;
use crate::memory::pending_mechanism::PendingMechanism;
use crate::report;
use std::path::PathBuf;
use std::time::Duration;

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
    pub sept_level: abi::accept_model::SeptLevel,
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
            sept_level: abi::accept_model::SeptLevel::L2M,
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
