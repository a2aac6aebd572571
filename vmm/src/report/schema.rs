//! The report's schema: every type the JSON run report is made of (`Report`
//! and its parts, the capped lists' `Truncated`) but what produced the run
//! (`inputs`), with the measurement only the report takes (peak RSS). The
//! files that fill the report import these from here; this file imports
//! none of them.

use crate::boot::cpu::CpuProfile;
use crate::memory::guest_ram::Backing;
use crate::memory::pending_mechanism::PendingMechanism;
use crate::report::inputs::Inputs;
use crate::report::outcome::{BitmapState, Outcome};
use crate::report::trace::TraceSummary;
use crate::stop::Fatal;
use crate::tdx::counters::AcceptStats;
use abi::tdcall::SeptLevel;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Report format version.
pub const REPORT_VERSION: u32 = 1;

/// The most accepted GPA ranges a report lists (`pages.accepted_ranges`).
pub const MAX_ACCEPTED_RANGES: usize = 4096;

/// Page-state totals, and where the accepted memory is.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PageStats {
    /// Guest RAM still pending (never accepted) at the end.
    pub pending_bytes: u64,
    /// Guest RAM accepted at the end (initial memory included).
    pub accepted_bytes: u64,
    /// Initial memory (firmware, HOB, page tables, scratch, payload),
    /// accepted by construction.
    pub initial_bytes: u64,
    /// The accepted RAM at the end (initial memory included) as coalesced
    /// `[start, end)` GPA ranges in ascending order; everything else in
    /// RAM is pending. At most `MAX_ACCEPTED_RANGES`, the rest counted in
    /// `truncated.accepted_ranges`.
    #[serde(default)]
    pub accepted_ranges: Vec<[u64; 2]>,
    /// RAM the guest holds shared (converted with MapGPA and not back) at
    /// the end, without the shared bit.
    #[serde(default)]
    pub shared_bytes: u64,
    /// The same as coalesced `[start, end)` GPA ranges (without the shared
    /// bit), at most `MAX_ACCEPTED_RANGES`, the rest counted in
    /// `truncated.shared_ranges`.
    #[serde(default)]
    pub shared_ranges: Vec<[u64; 2]>,
    /// How initial memory falls on RAM's 2 MiB units at the start.
    #[serde(default)]
    pub units: UnitAccounting,
}

/// RAM's 2 MiB units (the largest page a TD accepts here) as the TD starts:
/// wholly initial, wholly pending, or partly pending. A partly pending
/// unit can only be accepted 4 KiB at a time (up to 512 TDCALLs instead
/// of one), so each is listed with the reason it is there.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitAccounting {
    /// Units of RAM that are initial memory as a whole (those RAM cuts
    /// short included).
    pub initial_units: u64,
    /// Whole 2 MiB units of RAM with no initial memory.
    pub pending_units: u64,
    /// Units with pending RAM that a 2 MiB accept cannot take.
    pub partial: Vec<PartialUnit>,
}

/// A 2 MiB unit whose pending RAM must be accepted page by page.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialUnit {
    /// First GPA of the unit (2 MiB aligned).
    pub gpa: u64,
    /// Bytes of RAM in the unit.
    pub ram_bytes: u64,
    /// Bytes of initial memory in the unit.
    pub initial_bytes: u64,
    /// Why the unit is partly pending.
    pub why: String,
}

/// Host-side cost.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HostStats {
    /// Peak RSS of the VMM process (VmHWM).
    pub rss_peak_bytes: u64,
    /// Guest RAM resident in host memory at the end of the run.
    pub guest_resident_bytes: u64,
    /// The guest's page tables at the end: every table page reachable
    /// from vCPU 0's CR3, walked in guest memory (the host-built identity
    /// map and what the guest added). 0 when vCPU 0 had paging off.
    #[serde(default)]
    pub guest_page_table_bytes: u64,
    /// Memory used by the page-state table.
    pub page_state_bytes: u64,
    /// KVM memslots over guest RAM at the end.
    pub memslots: usize,
    /// The most memslots at any time.
    pub memslots_peak: usize,
    /// Memslots installed during the run.
    pub memslots_installed: u64,
    /// Memslots removed during the run (merges, releases).
    pub memslots_removed: u64,
    /// How pending memory was kept out of the guest's reach (`memslots`
    /// or `uffd-poison`; reports from before it read as `memslots`).
    #[serde(default)]
    pub pending_mechanism: PendingMechanism,
    /// Why `--pending auto` did not pick `uffd-poison`, if it did not.
    #[serde(default)]
    pub pending_fallback: Option<String>,
    /// With `uffd-poison`: 2 MiB chunks registered, pages poisoned
    /// (pending) and pages filled by UFFDIO_COPY (accepted).
    #[serde(default)]
    pub poisoned_chunks: u64,
    /// Pending 4 KiB pages poisoned (`uffd-poison`).
    #[serde(default)]
    pub pages_poisoned: u64,
    /// Accepted 4 KiB pages filled by UFFDIO_COPY (`uffd-poison`).
    #[serde(default)]
    pub pages_filled: u64,
    /// vCPU kicks (the signal that takes a vCPU out of KVM_RUN for a
    /// stop or the timeout) that could not be sent; the watchdog retries
    /// them, so a stop is late, never lost.
    #[serde(default)]
    pub kick_failures: u64,
    /// Acquisitions of the TD's state lock over the run: an accept takes
    /// it twice when it succeeds and once otherwise, every other TDCALL
    /// and memory exit once (reports from before it read 0).
    #[serde(default)]
    pub state_lock_acquisitions: u64,
    /// Accepted pages the host took back (`--inject remove=Q`,
    /// TDH.MEM.PAGE.REMOVE).
    #[serde(default)]
    pub pages_removed: u64,
    /// Of those, pages the guest accepted again: their content is zeros
    /// (with `ve_accept=on`, silently).
    #[serde(default)]
    pub removed_pages_reaccepted: u64,
    /// RAM converted to shared with MapGPA over the run (what was already
    /// shared not counted again).
    #[serde(default)]
    pub converted_to_shared_bytes: u64,
    /// Shared RAM converted back to private with MapGPA over the run.
    #[serde(default)]
    pub converted_to_private_bytes: u64,
    /// Console bytes the host read from shared memory (`CONSOLE_WRITE`
    /// with the shared bit), as a TD's I/O goes through bounce buffers.
    #[serde(default)]
    pub console_shared_bytes: u64,
}

/// vCPU exits by kind.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct ExitStats {
    /// Port I/O exits.
    pub io: u64,
    /// MMIO exits.
    pub mmio: u64,
    /// I/O exits that were TDCALLs.
    pub doorbell: u64,
    /// TDCALLs the loader had not patched (code written at run time),
    /// reported by KVM as emulation failures with the instruction's bytes
    /// and run as TDCALLs.
    #[serde(default)]
    pub unpatched_tdcalls: u64,
    /// Accesses to private memory that is not accepted which raised #VE in
    /// the guest (SEPT_VE_DISABLE clear) instead of stopping the TD.
    #[serde(default)]
    pub ve_injected: u64,
    /// Port I/O to ports with no device (reads all-ones, writes dropped).
    pub unassigned_io: u64,
    /// Guest accesses to poisoned pending pages (`uffd-poison`,
    /// pvm-native: a SIGBUS during KVM_RUN).
    #[serde(default)]
    pub poisoned: u64,
    /// First touches of accepted memory that installed a memslot
    /// (`--map on-touch`).
    pub first_touch_maps: u64,
    /// Every exit.
    pub total: u64,
}

impl ExitStats {
    /// Adds another vCPU's exits.
    pub(crate) fn add(&mut self, o: &ExitStats) {
        self.io += o.io;
        self.mmio += o.mmio;
        self.doorbell += o.doorbell;
        self.unpatched_tdcalls += o.unpatched_tdcalls;
        self.ve_injected += o.ve_injected;
        self.unassigned_io += o.unassigned_io;
        self.first_touch_maps += o.first_touch_maps;
        self.poisoned += o.poisoned;
        self.total += o.total;
    }
}

/// The whole report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// The report format's version (`REPORT_VERSION`).
    pub version: u32,
    /// How the run ended.
    pub outcome: Outcome,
    /// The guest's exit code, for a clean shutdown.
    pub exit_code: Option<i64>,
    /// The exact diagnostic, when the run did not end in a clean shutdown.
    pub fatal: Option<Fatal>,
    /// Guest RAM in bytes.
    pub mem_bytes: u64,
    /// The CPU profile that ran (`standard` or `pvm-native`; `none`, read
    /// as `None`, when the run was refused before one was chosen).
    #[serde(with = "crate::named::none_or")]
    pub cpu_profile: Option<CpuProfile>,
    /// When accepted memory got host pages (`populate` or `on-touch`).
    pub backing: Backing,
    /// The host's Secure-EPT leaf size (`2m` or `4k`); with `4k` every 2 MiB
    /// accept of pending memory is counted in `accept.size_mismatch`.
    /// Reports from before it read as `2m`.
    #[serde(default)]
    pub sept_level: SeptLevel,
    /// What the emulated `TDG.MEM.PAGE.ACCEPT` did.
    pub accept: AcceptStats,
    /// Page-state totals at the end.
    pub pages: PageStats,
    /// What the run cost the host.
    pub host: HostStats,
    /// vCPU exits of every vCPU, by kind.
    pub exits: ExitStats,
    /// The TD's vCPUs, and what each did. Reports written before several
    /// vCPUs existed have neither field: they read as one vCPU with no
    /// per-vCPU entries.
    #[serde(default = "one_vcpu")]
    pub vcpus: u32,
    /// What each vCPU did, by index.
    #[serde(default)]
    pub per_vcpu: Vec<VcpuReport>,
    /// TDCALLs by leaf (and VMCALL sub-function) name.
    pub tdcalls: BTreeMap<String, u64>,
    /// The VMM's handling time of each TDCALL kind (names as in
    /// `tdcalls`), all vCPUs together: from the exit's registers read to
    /// the outputs written back, an accept's zeroing included, a HLT's
    /// park not. A TDCALL that stopped the TD is not timed.
    #[serde(default)]
    pub tdcall_time: BTreeMap<String, TdcallTime>,
    /// The emulated TDX module's measurement state at the end.
    #[serde(default)]
    pub td: TdState,
    /// Microseconds since the VMM started: `total`, plus each guest phase mark.
    pub timing_us: BTreeMap<String, u64>,
    /// The guest's doorbell micro-benchmark (`fw.bench=N`), if it ran.
    pub bench: Option<Bench>,
    /// The accept trace, if one was written.
    pub trace: Option<TraceSummary>,
    /// Counters the guest kernel reported.
    pub guest: BTreeMap<String, u64>,
    /// Completed kexecs (the new kernel reached its entry), all of them.
    pub kexecs: u64,
    /// One record per kexec started, the first `MAX_KEXEC_RECORDS` of
    /// them (`truncated.kexec` counts the rest).
    pub kexec: Vec<KexecRecord>,
    /// Counters per reporting generation (null = the firmware), each as
    /// its last value; `guest` holds their sums.
    pub guest_per_generation: Vec<GenerationCounters>,
    /// The guest's unaccepted-memory table, found through its system table.
    pub unaccepted_table: Option<UnacceptedTable>,
    /// Whether the table could be compared with the page states:
    /// `no_system_table` (no kernel stub ran), `no_table` (none installed:
    /// nothing was left unaccepted), `not_filled` (installed, but the run
    /// stopped before the kernel filled it), `checked`, or `error`.
    pub bitmap_state: BitmapState,
    /// Units whose bitmap bit disagrees with the VMM's page states (null
    /// unless `bitmap_state` is `checked`).
    pub bitmap_mismatches: Option<u64>,
    /// Why the table could not be checked, if it could not.
    pub bitmap_error: Option<String>,
    /// The guest console's output (capped; `truncated.console_bytes` counts the rest).
    pub console: String,
    /// The stop signal that ended the run ("SIGINT", "SIGTERM"), if any.
    pub signal: Option<String>,
    /// Its number (the `vmm` command exits with 128 + it).
    #[serde(skip)]
    pub signal_number: Option<i32>,
    /// Private-memory invariant checks run (null when checking is off).
    pub invariant_checks: Option<u64>,
    /// Phase marks, kexec records and per-generation counters the guest
    /// sent past the report's caps (`truncated` without its console bytes).
    pub records_dropped: u64,
    /// What each capped list left out.
    #[serde(default)]
    pub truncated: Truncated,
    /// What produced this report.
    pub inputs: Inputs,
}

/// The emulated TDX module's measurement state at the end of the run.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TdState {
    /// RTMR[0..4] as 96 lower-case hex digits each (empty for a refused
    /// run and in reports from before the RTMRs were emulated).
    pub rtmr: Vec<String>,
    /// MRTD, the build-time measurement of a TDVF firmware's initial
    /// pages as the TDX module takes it (TDH.MEM.PAGE.ADD and
    /// TDH.MR.EXTEND, SHA-384) as 96 lower-case hex digits; absent for our
    /// ELF firmware, which the VMM does not measure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mrtd: Option<String>,
}

/// One vCPU's share of the run.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct VcpuReport {
    /// The vCPU's index (0 = the bootstrap vCPU).
    pub index: u32,
    /// KVM exits of this vCPU.
    pub exits: u64,
    /// Accepts it asked for.
    pub accepts: u64,
    /// How many of them were answered TDX_OPERAND_BUSY.
    pub busy: u64,
    /// Time its guest code spent waiting for the kernel's accept lock.
    pub lock_wait_ns: u64,
    /// Time inside KVM_RUN: guest code, and what KVM handles without an
    /// exit to the VMM (on kvm_pvm, emulating each ring-0 instruction).
    #[serde(default)]
    pub kvm_run_ns: u64,
    /// Time in the VMM handling its exits (parked time excluded).
    #[serde(default)]
    pub vmm_ns: u64,
    /// Time parked in an emulated HLT (TDG.VP.VMCALL<Instruction.HLT>).
    #[serde(default)]
    pub idle_ns: u64,
}

/// One TDCALL kind's handling time in the VMM.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TdcallTime {
    /// Calls timed.
    pub count: u64,
    /// Median, as the upper edge of its log-scale bucket (within 19%).
    pub p50_ns: u64,
    /// 99th percentile, likewise.
    pub p99_ns: u64,
    /// All of them.
    pub total_ns: u64,
}

fn one_vcpu() -> u32 {
    1
}

/// The guest counters one generation reported.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GenerationCounters {
    /// Kernel generation (0 = first kernel), null for the firmware.
    pub generation: Option<u64>,
    /// Each counter's last value.
    pub counters: BTreeMap<String, u64>,
}

/// Where the guest's unaccepted-memory table is and what it says.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct UnacceptedTable {
    /// Its guest physical address.
    pub gpa: u64,
    /// The table's version.
    pub version: u32,
    /// Bytes one bit stands for.
    pub unit_size: u32,
    /// The GPA of the first unit.
    pub phys_base: u64,
    /// Bytes of bitmap.
    pub size: u64,
    /// Units still marked unaccepted (in the part that describes RAM).
    pub bits_set: u64,
}

/// One kexec, from the loading kernel's `kexec_load` to the new kernel's
/// entry.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct KexecRecord {
    /// The generation of the kernel that loaded it.
    pub from_generation: u64,
    /// When `kexec_load` started (microseconds since the VMM started).
    pub load_us: u64,
    /// When the loading kernel jumped to the relocation routine.
    pub jump_us: Option<u64>,
    /// When the new kernel reached its entry.
    pub next_entry_us: Option<u64>,
    /// First destination GPA, as the guest reported it.
    pub dest_gpa: Option<u64>,
    /// Bytes the guest says it accepted for the destinations.
    pub dest_bytes_accepted: u64,
    /// What the VMM saw accepted between kexec_load and kexec_jump.
    pub vmm_bytes_accepted: u64,
    /// The lowest GPA the VMM saw accepted in that time.
    pub vmm_lowest_gpa_accepted: Option<u64>,
    /// RAM still shared when the loading kernel jumped (0 when it
    /// converted all of it back first, as `tdx_kexec_finish` does).
    #[serde(default)]
    pub shared_bytes_at_jump: u64,
}

/// Result of a doorbell micro-benchmark: N TDCALL round trips timed by the
/// host between the guest's two marks.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Bench {
    /// TDCALL round trips timed.
    pub round_trips: u64,
    /// Nanoseconds per round trip.
    pub doorbell_rtt_ns: u64,
    /// `fw.bench_accept=N`: pending 4 KiB pages accepted and then written
    /// once each.
    #[serde(default)]
    pub accept_pages: u64,
    /// The time per page (doorbell, VMM handling and the guest's first
    /// write).
    #[serde(default)]
    pub accept_4k_ns: u64,
}

impl Report {
    /// True when the process should exit 0: clean shutdown with code 0.
    pub fn success(&self) -> bool {
        self.outcome == Outcome::Ok && self.exit_code == Some(0)
    }

    /// The CPU profile that ran, as the JSON report spells it (`none` for
    /// a run refused before one was chosen).
    pub fn cpu_profile_name(&self) -> &'static str {
        self.cpu_profile
            .map_or(crate::named::NONE, CpuProfile::as_str)
    }

    /// The report of a run refused before any guest ran: outcome
    /// `refused`, the reason in `fatal.message`, everything else empty.
    pub(crate) fn refused(message: String, inputs: Inputs) -> Self {
        Report {
            version: REPORT_VERSION,
            outcome: Outcome::Refused,
            exit_code: None,
            fatal: Some(Fatal {
                kind: Outcome::Refused,
                ..Fatal::new(message)
            }),
            mem_bytes: inputs.mem_bytes,
            cpu_profile: None,
            backing: inputs.backing,
            sept_level: inputs.sept_level,
            accept: AcceptStats::default(),
            pages: PageStats::default(),
            host: HostStats {
                rss_peak_bytes: rss_peak_bytes(),
                ..HostStats::default()
            },
            exits: ExitStats::default(),
            vcpus: 0,
            per_vcpu: Vec::new(),
            tdcalls: BTreeMap::new(),
            tdcall_time: BTreeMap::new(),
            td: TdState::default(),
            timing_us: BTreeMap::new(),
            bench: None,
            trace: None,
            guest: BTreeMap::new(),
            kexecs: 0,
            kexec: Vec::new(),
            guest_per_generation: Vec::new(),
            unaccepted_table: None,
            bitmap_state: BitmapState::NoSystemTable,
            bitmap_mismatches: None,
            bitmap_error: None,
            console: String::new(),
            signal: None,
            signal_number: None,
            invariant_checks: None,
            records_dropped: 0,
            truncated: Default::default(),
            inputs,
        }
    }
}

/// Peak resident set of this process, from /proc/self/status (VmHWM).
pub(crate) fn rss_peak_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Entries each capped list of the report left out (all zero when
/// nothing was capped).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Truncated {
    /// Phase marks past `run_log::MAX_MARKS` (not in `timing_us`).
    pub timing_us: u64,
    /// kexec records past `run_log::MAX_KEXEC_RECORDS` (not in `kexec`).
    pub kexec: u64,
    /// Counter updates of generations past the per-generation cap (not in
    /// `guest_per_generation`; still in the `guest` totals).
    pub guest_per_generation: u64,
    /// Console bytes past the capture's cap (not in `console`).
    #[serde(default)]
    pub console_bytes: u64,
    /// Accepted GPA ranges past `MAX_ACCEPTED_RANGES` (not in
    /// `pages.accepted_ranges`).
    #[serde(default)]
    pub accepted_ranges: u64,
    /// Shared ranges past `MAX_ACCEPTED_RANGES` (not in
    /// `pages.shared_ranges`).
    #[serde(default)]
    pub shared_ranges: u64,
}

impl Truncated {
    /// Run-log records left out of the lists (the console bytes and the
    /// accepted ranges apart).
    pub fn total(&self) -> u64 {
        self.timing_us + self.kexec + self.guest_per_generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_settings_keep_the_report_text() {
        let r = Report::refused("bad".into(), Inputs::default());
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["outcome"], "refused");
        assert_eq!(v["fatal"]["kind"], "refused");
        assert_eq!(v["cpu_profile"], "none");
        assert_eq!(r.cpu_profile_name(), "none");
        assert_eq!(v["backing"], "populate");
        assert_eq!(v["sept_level"], "2m");
        let i = &v["inputs"];
        assert_eq!(i["cpu_profile_requested"], "auto");
        assert_eq!(i["map"], "on-touch");
        assert_eq!(i["pending"], "auto");
        let back: Report = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&back).unwrap(), v);
    }

    #[test]
    fn older_reports_read_with_their_defaults() {
        let mut v = serde_json::to_value(Report::refused("x".into(), Inputs::default())).unwrap();
        v["cpu_profile"] = "pvm-native".into();
        let o = v.as_object_mut().unwrap();
        o.remove("sept_level");
        let i = o["inputs"].as_object_mut().unwrap();
        i.remove("sept_level");
        i.remove("pending");
        let r: Report = serde_json::from_value(v).unwrap();
        assert_eq!(r.cpu_profile, Some(CpuProfile::PvmNative));
        assert_eq!(
            (r.sept_level, r.inputs.sept_level),
            (SeptLevel::L2M, SeptLevel::L2M)
        );
        assert_eq!(r.inputs.pending, Some(PendingMechanism::Memslots));
    }
}
