//! The counters a guest reports (vendor VMCALL COUNTER), kept per kernel
//! generation so that nothing is lost across kexec: the report shows each
//! generation's last values and their sums, and a chaos disagreement in
//! any generation fails the run. Bounded: a guest cannot grow it without
//! limit by claiming ever new generations.

use crate::report::GenerationCounters;
use abi::report::Counter;
use std::collections::BTreeMap;

/// Most generations kept (the firmware counts as one).
pub const MAX_GENERATIONS: usize = 66;

/// Counters by generation (`None` = the firmware, before any kernel).
#[derive(Clone, Debug, Default)]
pub struct GuestCounters {
    by_generation: BTreeMap<Option<u64>, BTreeMap<&'static str, u64>>,
}

impl GuestCounters {
    /// Records `counter = value` for `generation`; false (not kept) past
    /// `MAX_GENERATIONS` generations.
    pub fn record(&mut self, generation: Option<u64>, counter: Counter, value: u64) -> bool {
        if self.by_generation.len() >= MAX_GENERATIONS
            && !self.by_generation.contains_key(&generation)
        {
            return false;
        }
        self.by_generation
            .entry(generation)
            .or_default()
            .insert(counter.as_str(), value);
        true
    }

    /// Each counter summed over the generations (saturating).
    pub fn totals(&self) -> BTreeMap<String, u64> {
        let mut totals = BTreeMap::new();
        for counters in self.by_generation.values() {
            for (name, v) in counters {
                let t: &mut u64 = totals.entry(name.to_string()).or_default();
                *t = t.saturating_add(*v);
            }
        }
        totals
    }

    /// Each generation's counters, firmware first, then by generation.
    pub fn per_generation(&self) -> Vec<GenerationCounters> {
        self.by_generation
            .iter()
            .map(|(g, c)| GenerationCounters {
                generation: *g,
                counters: c.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            })
            .collect()
    }

    /// Why the run fails although the guest may have exited 0: the
    /// generations that reported chaos disagreements.
    pub fn chaos_failure(&self) -> Option<String> {
        let key = Counter::ChaosDisagreements.as_str();
        let list: Vec<String> = self
            .by_generation
            .iter()
            .filter_map(|(g, c)| c.get(key).filter(|n| **n > 0).map(|n| (*g, *n)))
            .map(|(g, n)| match g {
                Some(g) => format!("{n} in kernel generation {g}"),
                None => format!("{n} in the firmware"),
            })
            .collect();
        (!list.is_empty()).then(|| format!("chaos disagreements: {}", list.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_are_kept_apart_and_summed() {
        let mut c = GuestCounters::default();
        c.record(None, Counter::FwAcceptRetries, 2);
        for g in 0..3 {
            c.record(Some(g), Counter::ChaosOps, 20_000);
            c.record(Some(g), Counter::ChaosOps, 20_000); // last value wins within one
        }
        assert_eq!(c.totals()["chaos_ops"], 60_000);
        let per = c.per_generation();
        assert_eq!(per.len(), 4);
        assert_eq!(per[0].generation, None);
        assert_eq!(per[3].generation, Some(2));
        assert_eq!(per[3].counters["chaos_ops"], 20_000);
    }

    #[test]
    fn a_disagreement_in_an_early_generation_is_not_overwritten() {
        let mut c = GuestCounters::default();
        c.record(Some(0), Counter::ChaosDisagreements, 3);
        c.record(Some(1), Counter::ChaosDisagreements, 0);
        assert_eq!(
            c.chaos_failure().as_deref(),
            Some("chaos disagreements: 3 in kernel generation 0")
        );
        assert_eq!(GuestCounters::default().chaos_failure(), None);
    }

    #[test]
    fn generations_are_bounded() {
        let mut c = GuestCounters::default();
        for g in 0..MAX_GENERATIONS as u64 {
            assert!(c.record(Some(g), Counter::ChaosOps, 1));
        }
        assert!(!c.record(Some(u64::MAX), Counter::ChaosOps, 1));
        assert!(
            c.record(Some(0), Counter::ChaosOps, 5),
            "a known generation still updates"
        );
        assert_eq!(c.totals()["chaos_ops"], MAX_GENERATIONS as u64 + 4);
    }
}
