//! The accept path: `TDG.MEM.PAGE.ACCEPT` (leaf 6) with the TDX module's
//! status semantics, and what accepting does to the host (zero and back the
//! range, map it into the guest, keep memslots merged).
//!
//! Checks, in order, each failing with `TDX_OPERAND_INVALID | RCX`:
//! reserved bits 11:3, level (only 4 KiB and 2 MiB; 1 GiB is rejected as TDX
//! module 1.5 does), alignment to the level, the shared bit and any bit at
//! or above GPAW, and the whole page lying in RAM. Then the page-state table
//! decides: success (zeroed, backed, mapped), `TDX_PAGE_ALREADY_ACCEPTED |
//! level` (nothing touched, nothing zeroed), or `TDX_PAGE_SIZE_MISMATCH | 1`.

use crate::page_state::{AcceptOutcome, PAGES_PER_CHUNK, PAGES_PER_GIB};
use crate::private_memory::{MemoryError, PrivateMemory};
use abi::tdcall::{accept, status, PageLevel};
use abi::PAGE_4K;
use serde::Serialize;
use std::time::Instant;

/// Accept statistics for the run report.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct AcceptStats {
    pub calls: u64,
    pub ok_4k: u64,
    pub ok_2m: u64,
    pub already_accepted: u64,
    pub size_mismatch: u64,
    pub invalid: u64,
    pub bytes_accepted: u64,
    /// Host time spent zeroing and backing accepted ranges.
    pub zero_ns: u64,
    /// Host time spent in the accept path, zeroing excluded.
    pub handle_ns: u64,
    /// Median and 99th percentile of that time per accept (100 ns buckets).
    pub handle_p50_ns: u64,
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

/// Why an accept request is invalid (all map to `TDX_OPERAND_INVALID | RCX`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvalidAccept {
    ReservedBits,
    Level,
    Misaligned,
    SharedOrBeyondGpaw,
    NotRam,
}

/// The result of one accept, for logs and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcceptResult {
    Accepted { gpa: u64, level: PageLevel },
    AlreadyAccepted { gpa: u64, level: PageLevel },
    SizeMismatch { gpa: u64 },
    Invalid(InvalidAccept),
}

impl AcceptResult {
    /// The TDX status the guest sees in RAX.
    pub fn status(self) -> u64 {
        match self {
            AcceptResult::Accepted { .. } => status::SUCCESS,
            AcceptResult::AlreadyAccepted { level, .. } => {
                status::PAGE_ALREADY_ACCEPTED | level as u64
            }
            AcceptResult::SizeMismatch { .. } => status::PAGE_SIZE_MISMATCH | PageLevel::L2M as u64,
            AcceptResult::Invalid(_) => status::OPERAND_INVALID | status::OPERAND_RCX,
        }
    }
}

/// Decodes and validates an accept operand against the TD's layout.
pub fn decode(mem: &PrivateMemory, rcx: u64) -> Result<(u64, PageLevel, u64), InvalidAccept> {
    if rcx & accept::RESERVED_MASK != 0 {
        return Err(InvalidAccept::ReservedBits);
    }
    let level = match PageLevel::from_bits(rcx & accept::LEVEL_MASK) {
        Some(l @ (PageLevel::L4K | PageLevel::L2M)) => l,
        _ => return Err(InvalidAccept::Level),
    };
    let gpa = rcx & !(PAGE_4K - 1);
    if !gpa.is_multiple_of(level.size()) {
        return Err(InvalidAccept::Misaligned);
    }
    let layout = mem.layout();
    if gpa >= layout.shared_bit() {
        return Err(InvalidAccept::SharedOrBeyondGpaw);
    }
    let offset = layout
        .ram_offset(gpa, level.size())
        .ok_or(InvalidAccept::NotRam)?;
    Ok((gpa, level, offset))
}

impl PrivateMemory {
    /// Handles `TDG.MEM.PAGE.ACCEPT` with operand `rcx`. `Err` is a VMM-side
    /// failure (the host could not back or map memory): the TD must stop.
    pub fn accept(
        &mut self,
        rcx: u64,
        stats: &mut AcceptStats,
    ) -> Result<AcceptResult, MemoryError> {
        let started = Instant::now();
        stats.calls += 1;
        let (gpa, level, offset) = match decode(self, rcx) {
            Ok(v) => v,
            Err(why) => {
                stats.invalid += 1;
                let ns = started.elapsed().as_nanos() as u64;
                stats.handle_ns += ns;
                self.handle_hist.record(ns);
                return Ok(AcceptResult::Invalid(why));
            }
        };
        let page = offset / PAGE_4K;
        let mut zero_ns = 0;
        let result = match self.pages.accept(page, level) {
            AcceptOutcome::AlreadyAccepted(reached) => {
                stats.already_accepted += 1;
                AcceptResult::AlreadyAccepted {
                    gpa,
                    level: reached,
                }
            }
            AcceptOutcome::SizeMismatch => {
                stats.size_mismatch += 1;
                AcceptResult::SizeMismatch { gpa }
            }
            AcceptOutcome::Accepted => {
                let size = level.size();
                let zero_start = Instant::now();
                self.ram.zero_and_back(offset, size, self.backing)?;
                zero_ns = zero_start.elapsed().as_nanos() as u64;
                stats.zero_ns += zero_ns;
                let host = self.ram.host_addr(offset);
                if !self.map_on_touch {
                    self.slots.map(gpa, size, host)?;
                    self.merge_completed(gpa, page, level)?;
                }
                match level {
                    PageLevel::L4K => stats.ok_4k += 1,
                    _ => stats.ok_2m += 1,
                }
                stats.bytes_accepted += size;
                AcceptResult::Accepted { gpa, level }
            }
        };
        let ns = (started.elapsed().as_nanos() as u64).saturating_sub(zero_ns);
        stats.handle_ns += ns;
        self.handle_hist.record(ns);
        Ok(result)
    }

    /// Merges the slots of a 2 MiB chunk or 1 GiB block that the last accept
    /// completed.
    fn merge_completed(
        &mut self,
        gpa: u64,
        page: u64,
        level: PageLevel,
    ) -> Result<(), MemoryError> {
        let chunk = page / PAGES_PER_CHUNK;
        if level == PageLevel::L4K && self.pages.chunk_full(chunk) {
            let lo = gpa & !(abi::PAGE_2M - 1);
            self.slots.merge_range(lo, lo + abi::PAGE_2M)?;
        }
        let gib = page / PAGES_PER_GIB;
        if self.pages.gib_full(gib) {
            let lo = gpa & !(abi::GIB - 1);
            self.slots.merge_range(lo, lo + abi::GIB)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::HandleHistogram;

    #[test]
    fn quantiles_come_from_the_buckets() {
        let mut h = HandleHistogram::default();
        assert_eq!(h.quantile(0.5), 0);
        for ns in 1..=100u64 {
            h.record(ns * 1000);
        }
        assert_eq!(h.quantile(0.5), 50_100);
        assert_eq!(h.quantile(0.99), 99_100);
        h.record(10_000_000);
        assert_eq!(h.quantile(1.0), 200_100);
    }
}
