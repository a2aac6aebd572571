//! Where a vCPU's time goes, measured by the VMM: inside KVM_RUN (guest
//! code, and KVM's own handling of what it does not exit for: on kvm_pvm,
//! the emulation of every ring-0 instruction), in the VMM handling exits,
//! and parked in an emulated HLT; and each TDCALL kind's handling time
//! (from the exit's registers read to the outputs written back), in a
//! log-scale histogram per vCPU, merged for the report. No lock: each vCPU
//! keeps its own.

use std::time::Instant;

/// Sub-buckets per power of two (quantiles within 1/4 of an octave).
const SUB: u32 = 4;
const BUCKETS: usize = 64 * SUB as usize;

/// Nanosecond durations in log-scale buckets (4 per power of two, up to
/// 2^64 ns): 2 KiB, exact below 8 ns, within 19% above.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogHistogram {
    buckets: Box<[u64; BUCKETS]>,
    count: u64,
    total_ns: u64,
}

impl Default for LogHistogram {
    fn default() -> Self {
        LogHistogram {
            buckets: Box::new([0; BUCKETS]),
            count: 0,
            total_ns: 0,
        }
    }
}

/// The bucket of `ns`: values below 8 get their own bucket; above, the
/// octave (position of the top bit) and the next two bits.
fn bucket(ns: u64) -> usize {
    if ns < 8 {
        return abi::to_usize(ns);
    }
    let top = 63 - ns.leading_zeros();
    let sub = (ns >> (top - 2)) & u64::from(SUB - 1);
    abi::to_usize(u64::from((top - 1) * SUB) + sub)
}

/// The largest value of bucket `i` (the inverse of `bucket`).
fn upper_edge(i: usize) -> u64 {
    if i < 8 {
        return i as u64;
    }
    let i = i as u64;
    let top = i / u64::from(SUB) + 1;
    let sub = i % u64::from(SUB);
    let low = (4 | sub) << (top - 2);
    low.saturating_add((1u64 << (top - 2)) - 1)
}

impl LogHistogram {
    pub fn record(&mut self, ns: u64) {
        self.buckets[bucket(ns)] += 1;
        self.count += 1;
        self.total_ns = self.total_ns.saturating_add(ns);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn total_ns(&self) -> u64 {
        self.total_ns
    }

    /// Adds another histogram's samples.
    pub fn merge(&mut self, o: &LogHistogram) {
        for (a, b) in self.buckets.iter_mut().zip(o.buckets.iter()) {
            *a += b;
        }
        self.count += o.count;
        self.total_ns = self.total_ns.saturating_add(o.total_ns);
    }

    /// The `q` quantile (0..=1) as its bucket's upper edge; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        // A float-to-integer `as` saturates: `want` is in 1..=count.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let want = ((self.count as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= want {
                return upper_edge(i);
            }
        }
        u64::MAX
    }
}

/// A TDCALL's kind for timing: its leaf, or for TDG.VP.VMCALL its (R10,
/// R11), as the report's `tdcalls` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TdcallKind {
    Leaf(u16),
    Vmcall {
        r10: u64,
        r11: u64,
    },
    /// Guest-chosen kinds past `MAX_KINDS`.
    Other,
}

impl TdcallKind {
    /// The kind of the TDCALL in these input registers (leaves past 62
    /// together, as `tdcalls` counts them).
    pub fn of(rax: u64, r10: u64, r11: u64) -> Self {
        match rax & 0xffff {
            0 => TdcallKind::Vmcall { r10, r11 },
            leaf => TdcallKind::Leaf(u16::try_from(leaf.min(63)).unwrap_or(63)),
        }
    }

    /// Its name in the report (`tdcalls`' names).
    pub fn name(&self) -> String {
        match *self {
            TdcallKind::Leaf(l) => crate::tdx::counters::leaf_name(l),
            TdcallKind::Vmcall { r10, r11 } => crate::tdx::counters::vmcall_name(r10, r11),
            TdcallKind::Other => "other".into(),
        }
    }
}

/// Kinds a vCPU times separately; the guest chooses them, so past this
/// many the rest are timed together as `Other`.
const MAX_KINDS: usize = 32;

/// One vCPU's time.
#[derive(Clone, Debug, Default)]
pub struct VcpuTime {
    /// Inside KVM_RUN.
    pub kvm_run_ns: u64,
    /// In the VMM between KVM_RUNs, parked time excluded.
    pub vmm_ns: u64,
    /// Parked in an emulated HLT.
    pub idle_ns: u64,
    /// Handling time per TDCALL kind.
    pub tdcalls: Vec<(TdcallKind, LogHistogram)>,
    /// When the last KVM_RUN returned (the VMM's time runs from there).
    pub out_since: Option<Instant>,
}

impl VcpuTime {
    /// Records one TDCALL's handling time.
    pub fn tdcall(&mut self, kind: TdcallKind, ns: u64) {
        let kind = if self.tdcalls.len() < MAX_KINDS || self.tdcalls.iter().any(|(k, _)| *k == kind)
        {
            kind
        } else {
            TdcallKind::Other
        };
        match self.tdcalls.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, h)) => h.record(ns),
            None => {
                let mut h = LogHistogram::default();
                h.record(ns);
                self.tdcalls.push((kind, h));
            }
        }
    }

    /// KVM_RUN is about to be called: the VMM's time since the last exit
    /// ends.
    pub fn enter(&mut self, now: Instant) {
        if let Some(since) = self.out_since.take() {
            self.vmm_ns = self
                .vmm_ns
                .saturating_add(crate::host::clock::ns(now.saturating_duration_since(since)));
        }
    }

    /// KVM_RUN returned after running since `entered`.
    pub fn exit(&mut self, entered: Instant, now: Instant) {
        self.kvm_run_ns = self.kvm_run_ns.saturating_add(crate::host::clock::ns(
            now.saturating_duration_since(entered),
        ));
        self.out_since = Some(now);
    }

    /// A park in HLT took `ns`: it is idle time, not the VMM's.
    pub fn parked(&mut self, ns: u64) {
        self.idle_ns = self.idle_ns.saturating_add(ns);
        if let Some(since) = self.out_since.as_mut() {
            *since += std::time::Duration::from_nanos(ns);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn buckets_and_edges_agree() {
        // The top octave (2^63 and up) ends the used buckets.
        let last = bucket(u64::MAX);
        assert!(last < BUCKETS);
        assert_eq!(upper_edge(last), u64::MAX);
        for i in 0..last {
            let edge = upper_edge(i);
            assert_eq!(bucket(edge), i, "edge {edge} of bucket {i}");
            assert_eq!(bucket(edge + 1), i + 1, "past the edge of bucket {i}");
        }
    }

    #[test]
    fn quantiles_of_known_samples() {
        let mut h = LogHistogram::default();
        assert_eq!(h.quantile(0.5), 0);
        for ns in [100u64; 98] {
            h.record(ns);
        }
        h.record(10_000);
        h.record(1_000_000);
        // 100 is in [96, 111]; 10 000 in [8192, 10239].
        assert_eq!(h.quantile(0.5), 111);
        assert_eq!(h.quantile(0.99), 10_239);
        assert_eq!(h.quantile(1.0), upper_edge(bucket(1_000_000)));
        assert_eq!((h.count(), h.total_ns()), (100, 9_800 + 10_000 + 1_000_000));
        let mut m = LogHistogram::default();
        m.merge(&h);
        m.merge(&h);
        assert_eq!((m.count(), m.quantile(0.5)), (200, 111));
    }

    #[test]
    fn guest_chosen_kinds_are_bounded() {
        let mut t = VcpuTime::default();
        for r11 in 0..100 {
            t.tdcall(TdcallKind::of(0, 0, r11), 5);
        }
        t.tdcall(TdcallKind::of(0, 0, 3), 5);
        assert_eq!(t.tdcalls.len(), MAX_KINDS + 1);
        let other = t
            .tdcalls
            .iter()
            .find(|(k, _)| *k == TdcallKind::Other)
            .unwrap();
        assert_eq!(other.1.count(), 100 - MAX_KINDS as u64);
        assert_eq!(TdcallKind::of(6, 1, 2), TdcallKind::Leaf(6));
    }

    proptest! {
        #[test]
        fn every_value_lies_in_its_bucket(ns in any::<u64>()) {
            let i = bucket(ns);
            prop_assert!(ns <= upper_edge(i));
            prop_assert!(i == 0 || ns > upper_edge(i - 1));
            // Within a quarter octave above 8 ns.
            if ns >= 8 {
                prop_assert!((upper_edge(i) - ns) as f64 <= ns as f64 / 4.0);
            }
        }
    }
}
