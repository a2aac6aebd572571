//! The run's log, built from what the guest tells the host: phase marks
//! (timed on arrival), the phase and kernel generation they imply, one
//! record per kexec, the guest's counters, the system table's GPA, the
//! doorbell micro-benchmark, and the accept trace attributed to who was
//! running. Bounded: a guest cannot grow it without limit.

use crate::report::guest_counters::GuestCounters;
use crate::report::outcome::Phase;
use crate::report::schema::{Bench, KexecRecord, Truncated};
use crate::report::trace::{Kind, Record, Trace};
use crate::tdx::event::{AcceptRequest, AcceptResult};
use abi::report::{Counter, Mark};
use std::collections::BTreeMap;
use std::time::Instant;

/// Most distinct phase-mark keys a report keeps.
pub const MAX_MARKS: usize = 256;
/// Most kexec records a report keeps.
pub const MAX_KEXEC_RECORDS: usize = 64;

/// The log of one run.
pub struct RunLog {
    started: Instant,
    /// `timing_us` of the report: microseconds since start per mark key.
    pub marks: BTreeMap<String, u64>,
    pub phase: Phase,
    /// The running kernel's generation, once a kernel is running.
    pub generation: Option<u64>,
    /// One record per kexec started.
    pub kexecs: Vec<KexecRecord>,
    pub guest_counters: GuestCounters,
    /// GPA of the guest's EFI system table, once registered.
    pub system_table: Option<u64>,
    /// The running kernel filled its unaccepted bitmap (Mark::TableFilled).
    pub table_filled: bool,
    bench_start: Option<(Instant, u64)>,
    pub bench: Option<Bench>,
    /// The accept trace, when asked for.
    pub trace: Option<Trace>,
    /// kexecs whose next kernel reached its entry, every one counted
    /// (the records above stop at `MAX_KEXEC_RECORDS`).
    pub kexecs_completed: u64,
    /// The last record in `kexecs` is the kexec in progress (false when
    /// the one in progress came past the cap and has no record).
    kexec_open: bool,
    /// The generation a kexec in progress started from (its kexec_load
    /// mark), record or not: only that generation's successor's entry
    /// completes it.
    kexec_from: Option<u64>,
    /// What the capped lists left out.
    pub truncated: Truncated,
}

impl RunLog {
    /// An empty log whose clock started at `started`.
    pub fn new(started: Instant, trace: Option<Trace>) -> Self {
        RunLog {
            started,
            marks: BTreeMap::new(),
            phase: Phase::Boot,
            generation: None,
            kexecs: Vec::new(),
            guest_counters: GuestCounters::default(),
            system_table: None,
            table_filled: false,
            bench_start: None,
            bench: None,
            trace,
            kexecs_completed: 0,
            kexec_open: false,
            kexec_from: None,
            truncated: Truncated::default(),
        }
    }

    /// The record of the kexec in progress, if it has one.
    /// Records the RAM still shared as the open kexec jumps (call before
    /// its `KexecJump` mark).
    pub fn shared_at_jump(&mut self, bytes: u64) {
        if let Some(k) = self.open_kexec() {
            k.shared_bytes_at_jump = bytes;
        }
    }

    fn open_kexec(&mut self) -> Option<&mut KexecRecord> {
        if self.kexec_open {
            self.kexecs.last_mut()
        } else {
            None
        }
    }

    /// Time since the VMM started.
    pub fn elapsed(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// Records a guest counter for the running generation.
    pub fn counter(&mut self, counter: Counter, value: u64) {
        if !self.guest_counters.record(self.generation, counter, value) {
            self.truncated.guest_per_generation += 1;
        }
        if let Some(k) = self.open_kexec() {
            match counter {
                Counter::KexecDest => k.dest_gpa = Some(value),
                Counter::KexecDestAccepted => k.dest_bytes_accepted = value,
                _ => {}
            }
        }
    }

    /// Records an answered accept: the trace, and the accept log of a
    /// kexec (what was accepted between its kexec_load and kexec_jump).
    pub fn accept(
        &mut self,
        req: &AcceptRequest,
        status: u64,
        result: Option<AcceptResult>,
        vcpu: u32,
    ) {
        self.trace(Kind::Accept, req.gpa_bits(), req.level_bits(), status, vcpu);
        if let Some(AcceptResult::Accepted { gpa, level }) = result {
            if let Some(k) = self.open_kexec().filter(|k| k.jump_us.is_none()) {
                k.vmm_bytes_accepted += level.size();
                k.vmm_lowest_gpa_accepted =
                    Some(k.vmm_lowest_gpa_accepted.map_or(gpa, |g| g.min(gpa)));
            }
        }
    }

    /// Adds a record to the accept trace, if one is being written.
    pub fn trace(&mut self, kind: Kind, gpa: u64, level: u8, status: u64, vcpu: u32) {
        if self.trace.is_none() {
            return;
        }
        let t_ns = crate::host::clock::ns_since(self.started);
        let (who, generation) = (
            self.phase.who(),
            self.generation.unwrap_or(0).min(255) as u8,
        );
        if let Some(t) = self.trace.as_mut() {
            t.record(Record {
                t_ns,
                gpa,
                status,
                kind,
                level,
                who,
                generation,
                vcpu: u16::try_from(vcpu).unwrap_or(u16::MAX),
            });
        }
    }

    /// Records a guest phase mark (host time of arrival).
    pub fn mark(&mut self, mark: Mark, arg: u64) {
        let now = crate::host::clock::us(self.started.elapsed());
        let per_generation = matches!(
            mark,
            Mark::KernelEntry
                | Mark::KernelReady
                | Mark::WorkloadDone
                | Mark::KexecLoad
                | Mark::KexecJump
        );
        let key = if per_generation && arg > 0 {
            format!("gen{arg}.{}", mark.as_str())
        } else {
            mark.as_str().to_string()
        };
        if self.marks.len() < MAX_MARKS || self.marks.contains_key(&key) {
            self.marks.insert(key, now);
        } else {
            self.truncated.timing_us += 1;
        }
        match mark {
            Mark::FwStart => self.phase = Phase::Firmware,
            Mark::TableFilled => self.table_filled = true,
            Mark::KernelEntry => {
                self.generation = Some(arg);
                self.phase = Phase::Kernel;
                self.table_filled = false;
                if self.kexec_from.take().is_some_and(|from| from + 1 == arg) {
                    self.kexecs_completed += 1;
                }
                if let Some(k) = self.open_kexec().filter(|k| k.from_generation + 1 == arg) {
                    k.next_entry_us = Some(now);
                }
                self.kexec_open = false;
            }
            Mark::KexecLoad => {
                self.phase = Phase::KexecLoad;
                self.kexec_from = Some(arg);
                self.kexec_open = self.kexecs.len() < MAX_KEXEC_RECORDS;
                if self.kexec_open {
                    self.kexecs.push(KexecRecord {
                        from_generation: arg,
                        load_us: now,
                        ..Default::default()
                    });
                } else {
                    self.truncated.kexec += 1;
                }
            }
            Mark::KexecJump => {
                self.phase = Phase::KexecCopy;
                if let Some(k) = self.open_kexec() {
                    k.jump_us = Some(now);
                }
            }
            Mark::BenchStart | Mark::AcceptBenchStart => {
                self.bench_start = Some((Instant::now(), arg))
            }
            Mark::BenchEnd | Mark::AcceptBenchEnd => {
                if let Some((t0, n)) = self.bench_start.take() {
                    let ns = crate::host::clock::ns_since(t0) / n.max(1);
                    let bench = self.bench.get_or_insert_with(Bench::default);
                    if mark == Mark::BenchEnd {
                        log::info!("doorbell round trip: {ns} ns over {n} TDCALLs");
                        (bench.round_trips, bench.doorbell_rtt_ns) = (n, ns);
                    } else {
                        log::info!("4 KiB accept and first write: {ns} ns per page over {n} pages");
                        (bench.accept_pages, bench.accept_4k_ns) = (n, ns);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::trace::Who;

    #[test]
    fn marks_drive_the_phase_and_the_kexec_records() {
        let mut log = RunLog::new(Instant::now(), None);
        assert_eq!(log.phase, Phase::Boot);
        log.mark(Mark::FwStart, 0);
        assert_eq!(
            (log.phase, log.phase.who()),
            (Phase::Firmware, Who::Firmware)
        );
        log.mark(Mark::KernelEntry, 0);
        log.counter(Counter::ChaosOps, 5);
        log.mark(Mark::KexecLoad, 0);
        assert_eq!(log.phase.who(), Who::Kexec);
        log.counter(Counter::KexecDest, 0x1_0000_0000);
        log.mark(Mark::KexecJump, 0);
        assert_eq!(log.phase.as_str(), "kexec relocation copy");
        assert_eq!(
            serde_json::to_string(&log.phase).unwrap(),
            "\"kexec relocation copy\""
        );
        log.mark(Mark::KernelEntry, 1);
        assert_eq!((log.phase, log.generation), (Phase::Kernel, Some(1)));
        let k = log.kexecs[0];
        assert_eq!(k.dest_gpa, Some(0x1_0000_0000));
        assert!(k.jump_us.is_some() && k.next_entry_us.is_some());
        assert!(
            log.marks.contains_key("kernel_entry") && log.marks.contains_key("gen1.kernel_entry")
        );
    }

    #[test]
    fn marks_are_capped() {
        let mut log = RunLog::new(Instant::now(), None);
        for g in 0..(MAX_MARKS as u64 + 10) {
            log.mark(Mark::KernelEntry, g + 1);
        }
        assert_eq!(log.marks.len(), MAX_MARKS);
        assert_eq!(log.truncated.timing_us, 10);
    }

    #[test]
    fn kexecs_past_the_record_cap_are_counted_and_leave_the_last_record_alone() {
        let mut log = RunLog::new(Instant::now(), None);
        log.mark(Mark::KernelEntry, 0);
        let chain = MAX_KEXEC_RECORDS as u64 + 36;
        for g in 0..chain {
            log.mark(Mark::KexecLoad, g);
            log.counter(Counter::KexecDest, 0x1000 * (g + 1));
            log.mark(Mark::KexecJump, g);
            log.mark(Mark::KernelEntry, g + 1);
        }
        assert_eq!(log.kexecs_completed, chain);
        assert_eq!(log.kexecs.len(), MAX_KEXEC_RECORDS);
        assert_eq!(log.truncated.kexec, 36);
        // The last kept record is its own kexec's, not overwritten by
        // the ones past the cap.
        let last = log.kexecs[MAX_KEXEC_RECORDS - 1];
        assert_eq!(last.from_generation, MAX_KEXEC_RECORDS as u64 - 1);
        assert_eq!(last.dest_gpa, Some(0x1000 * MAX_KEXEC_RECORDS as u64));
        assert_eq!(log.generation, Some(chain));
        // A kernel entry no kexec led to counts nothing.
        log.mark(Mark::KernelEntry, chain + 1);
        log.mark(Mark::KernelEntry, 7);
        assert_eq!(log.kexecs_completed, chain);
    }
}
