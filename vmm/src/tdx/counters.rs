//! TDCALL and VMCALL counters for the report: by leaf, and by (R10, R11)
//! for VMCALLs, bounded because the keys are guest-chosen.

use abi::tdcall::leaf;
use abi::vmcall::{ghci, GHCI_STANDARD, VENDOR_EMU};
use std::collections::{BTreeMap, HashMap};

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
