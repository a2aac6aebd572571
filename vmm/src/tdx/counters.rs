//! The emulated TDX module's statistics for the report: the accept
//! statistics and their handling-time histogram, and TDCALL and VMCALL
//! counters by leaf and by (R10, R11) for VMCALLs, bounded because the
//! keys are guest-chosen.

use abi::tdcall::leaf;
use abi::vmcall::{ghci, GHCI_STANDARD, VENDOR_EMU};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// Accept statistics for the run report.
#[derive(Clone, Copy, Debug, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct AcceptStats {
    /// Accept calls.
    pub calls: u64,
    /// Successful 4 KiB accepts.
    pub ok_4k: u64,
    /// Successful 2 MiB accepts.
    pub ok_2m: u64,
    /// Answers `TDX_PAGE_ALREADY_ACCEPTED`.
    pub already_accepted: u64,
    /// Answers `TDX_PAGE_SIZE_MISMATCH`.
    pub size_mismatch: u64,
    /// Invalid operands (`TDX_OPERAND_INVALID`).
    pub invalid: u64,
    /// TDX_OPERAND_BUSY answers: another vCPU held the Secure-EPT entry.
    #[serde(default)]
    pub busy: u64,
    /// TDX_OPERAND_BUSY answers from `--inject busy=P`.
    pub busy_injected: u64,
    /// Bytes accepted by successful calls.
    pub bytes_accepted: u64,
    /// Host time spent zeroing and backing accepted ranges.
    pub zero_ns: u64,
    /// Host time spent in the accept path, zeroing excluded.
    pub handle_ns: u64,
    /// Median of that time per accept (100 ns buckets).
    pub handle_p50_ns: u64,
    /// Its 99th percentile.
    pub handle_p99_ns: u64,
}

/// Per-accept handling times, in 100 ns buckets up to 200 us (fixed size).
#[derive(Clone, Debug)]
pub struct HandleHistogram {
    buckets: Vec<u64>,
}

const BUCKET_NS: u64 = 100;
const BUCKETS: usize = 2000;

impl Default for HandleHistogram {
    fn default() -> Self {
        HandleHistogram {
            buckets: vec![0; BUCKETS + 1],
        }
    }
}

impl HandleHistogram {
    pub fn record(&mut self, ns: u64) {
        let i = ((ns / BUCKET_NS) as usize).min(BUCKETS);
        self.buckets[i] += 1;
    }

    /// The `q` quantile (0..=1), as the upper edge of its bucket.
    pub fn quantile(&self, q: f64) -> u64 {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return 0;
        }
        // A float-to-integer `as` saturates: `want` is in 1..=total.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let want = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= want {
                return (i as u64 + 1) * BUCKET_NS;
            }
        }
        (BUCKETS as u64 + 1) * BUCKET_NS
    }
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

    /// The counts by name, for the report.
    pub fn to_map(&self) -> BTreeMap<String, u64> {
        let mut map = BTreeMap::new();
        for (l, n) in self.by_leaf.iter().enumerate().filter(|(_, n)| **n > 0) {
            map.insert(leaf_name(u16::try_from(l).unwrap_or(u16::MAX)), *n);
        }
        for ((r10, r11), n) in &self.vmcalls {
            map.insert(vmcall_name(*r10, *r11), *n);
        }
        map
    }
}

/// A leaf's name in the report (`leaf>=63` for the ones counted together).
pub fn leaf_name(l: u16) -> String {
    match leaf::name(l) {
        "unknown" if l >= 63 => "leaf>=63".to_string(),
        "unknown" => format!("leaf{l}"),
        known => known.to_string(),
    }
}

/// A TDG.VP.VMCALL's name in the report, by its (R10, R11).
pub fn vmcall_name(r10: u64, r11: u64) -> String {
    match (r10, r11) {
        (GHCI_STANDARD, ghci::INSTRUCTION_IO) => "vmcall.instruction_io".to_string(),
        (GHCI_STANDARD, ghci::REPORT_FATAL_ERROR) => "vmcall.report_fatal_error".to_string(),
        (u64::MAX, u64::MAX) => "vmcall.other".to_string(),
        (GHCI_STANDARD, f) => format!("vmcall.ghci.{f:#x}"),
        (VENDOR_EMU, f) => format!("vmcall.emu.{f}"),
        (v, f) => format!("vmcall.vendor{v:#x}.{f:#x}"),
    }
}
