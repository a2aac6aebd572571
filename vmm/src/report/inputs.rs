//! What produced a report (`Inputs`): the command line, every setting, the
//! input files with their sizes and hashes, the VMM's version and the
//! start time; enough to run it again and to tell it apart from any other
//! run's.

use crate::boot::cpu::ProfileChoice;
use crate::memory::guest_ram::Backing;
use crate::memory::memslots::Mapping;
use crate::memory::pending_mechanism::PendingMechanism;
use abi::tdcall::SeptLevel;
use serde::{Deserialize, Serialize};

/// What produced a report: enough to run it again and to tell it apart
/// from any other run's.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Inputs {
    /// The full command line, one word per element (lossy UTF-8).
    pub command_line: Vec<String>,
    /// The VMM's version.
    pub vmm_version: String,
    /// The commit the VMM was built from (with `-dirty` for uncommitted
    /// changes), when built from a git checkout.
    pub vmm_git_commit: Option<String>,
    /// The firmware file read.
    pub firmware: Option<InputFile>,
    /// The kernel file read, if one was given.
    pub kernel: Option<InputFile>,
    /// Guest RAM in bytes.
    pub mem_bytes: u64,
    /// vCPUs asked for (`--cpus`).
    #[serde(default)]
    pub cpus: u32,
    /// The guest command line.
    pub cmdline: String,
    /// The profile asked for (`cpu_profile` is the one chosen).
    pub cpu_profile_requested: ProfileChoice,
    /// When accepted memory got host pages (`populate` or `on-touch`).
    pub backing: Backing,
    /// When accepted memory got its memslot (`on-touch` or `on-accept`).
    pub map: Mapping,
    /// `--sept-level` (reports from before it read as `2m`).
    #[serde(default)]
    pub sept_level: SeptLevel,
    /// `--pending`: the mechanism asked for, or `auto` (`None`) for the
    /// best the host offers (reports from before it read as `memslots`).
    #[serde(default = "pending_memslots", with = "crate::named::auto_or")]
    pub pending: Option<PendingMechanism>,
    /// Fault injection asked for (`busy=P,seed=S`).
    pub inject: Option<String>,
    /// The timeout in seconds, if one was set.
    pub timeout_s: Option<f64>,
    /// The trace file asked for.
    pub trace: Option<String>,
    /// Whether the private-memory invariants were checked.
    pub check_invariants: bool,
    /// Process id of this run.
    pub pid: u32,
    /// Start time of this run (ms since the Unix epoch).
    pub started_unix_ms: u64,
    /// The TD ATTRIBUTES the guest was given (reports from before the
    /// setting read as the default, SEPT_VE_DISABLE).
    #[serde(default = "default_attributes")]
    pub td_attributes: u64,
    /// GPAs of the TDCALL instructions the VMM patched to the doorbell in
    /// the firmware: a TDVF image's boot volumes, or an ELF firmware's
    /// executable segments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tdcall_sites: Vec<u64>,
    /// Link-time addresses of the TDCALLs patched in the kernel's
    /// executable segments (a PIE: add the offset the firmware loads it
    /// at; every kexec'd copy is made from these patched bytes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernel_tdcall_sites: Vec<u64>,
}

/// An input file as the VMM read it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InputFile {
    /// The path as given.
    pub path: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// SHA-256 of the bytes read, lowercase hex.
    pub sha256: String,
}

impl InputFile {
    /// Describes `bytes` read from `path`.
    pub(crate) fn new(path: &std::path::Path, bytes: &[u8]) -> Self {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(bytes);
        InputFile {
            path: path.display().to_string(),
            bytes: bytes.len() as u64,
            sha256: digest.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }
}

/// The VMM's version and commit.
pub(crate) fn vmm_version() -> (&'static str, Option<&'static str>) {
    (crate::VERSION, option_env!("VMM_GIT_COMMIT"))
}

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, crate::host::clock::ms)
}

fn pending_memslots() -> Option<PendingMechanism> {
    Some(PendingMechanism::Memslots)
}

fn default_attributes() -> u64 {
    abi::tdcall::vp_info::DEFAULT_ATTRIBUTES
}
