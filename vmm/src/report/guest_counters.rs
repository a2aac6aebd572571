//! The counters a guest reports (vendor VMCALL COUNTER), kept per kernel
//! generation so that nothing is lost across kexec: the report shows each
//! generation's last values and their sums, and a chaos disagreement in
//! any generation fails the run. Bounded: a guest cannot grow it without
//! limit by claiming ever new generations. Generations past the cap are not
//! listed one by one, but still summed and still checked for chaos
//! disagreements.

use crate::report::schema::GenerationCounters;
use abi::report::Counter;
use std::collections::BTreeMap;

/// Most generations kept (the firmware counts as one).
pub const MAX_GENERATIONS: usize = 66;

/// Most chaos disagreements of generations past the cap named one by one
/// (the rest are counted).
const MAX_CHAOS_PAST_CAP: usize = 16;

/// Counters by generation (`None` = the firmware, before any kernel).
#[derive(Clone, Debug, Default)]
pub struct GuestCounters {
    by_generation: BTreeMap<Option<u64>, BTreeMap<&'static str, u64>>,
    past_cap: PastCap,
}

/// What generations past `MAX_GENERATIONS` reported, in a fixed space.
#[derive(Clone, Debug, Default)]
struct PastCap {
    /// Sums of the generations past the cap that have ended.
    done: BTreeMap<&'static str, u64>,
    /// The one reporting now (a generation's last value of each counter
    /// is its value, so it is summed only when the next one starts).
    current: Option<(Option<u64>, BTreeMap<&'static str, u64>)>,
    /// Generations with chaos disagreements, and how many more.
    chaos: Vec<(Option<u64>, u64)>,
    chaos_more: u64,
}

impl PastCap {
    fn record(&mut self, generation: Option<u64>, counter: Counter, value: u64) {
        if self.current.as_ref().is_some_and(|(g, _)| *g != generation) {
            self.end_current();
        }
        self.current
            .get_or_insert_with(|| (generation, BTreeMap::new()))
            .1
            .insert(counter.as_str(), value);
    }

    fn end_current(&mut self) {
        let Some((generation, counters)) = self.current.take() else {
            return;
        };
        for (name, v) in counters {
            let t = self.done.entry(name).or_default();
            *t = t.saturating_add(v);
            if name == Counter::ChaosDisagreements.as_str() && v > 0 {
                if self.chaos.len() < MAX_CHAOS_PAST_CAP {
                    self.chaos.push((generation, v));
                } else {
                    self.chaos_more += 1;
                }
            }
        }
    }

    /// `done` with `current` folded in, without ending it.
    fn ended(&self) -> PastCap {
        let mut all = self.clone();
        all.end_current();
        all
    }
}

impl GuestCounters {
    /// Records `counter = value` for `generation`; false (not listed in
    /// `per_generation`, only summed and checked) past `MAX_GENERATIONS`
    /// generations.
    pub fn record(&mut self, generation: Option<u64>, counter: Counter, value: u64) -> bool {
        if self.by_generation.len() >= MAX_GENERATIONS
            && !self.by_generation.contains_key(&generation)
        {
            self.past_cap.record(generation, counter, value);
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
        let past = self.past_cap.ended();
        for counters in self.by_generation.values().chain([&past.done]) {
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
        let past = self.past_cap.ended();
        let mut list: Vec<String> = self
            .by_generation
            .iter()
            .filter_map(|(g, c)| c.get(key).filter(|n| **n > 0).map(|n| (*g, *n)))
            .chain(past.chaos.iter().copied())
            .map(|(g, n)| match g {
                Some(g) => format!("{n} in kernel generation {g}"),
                None => format!("{n} in the firmware"),
            })
            .collect();
        if past.chaos_more > 0 {
            list.push(format!("and in {} more generations", past.chaos_more));
        }
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
    fn generations_past_the_cap_are_summed_and_checked_not_listed() {
        let mut c = GuestCounters::default();
        let past = MAX_GENERATIONS as u64 + 30;
        for g in 0..past {
            let listed = c.record(Some(g), Counter::ChaosOps, 1);
            c.record(Some(g), Counter::ChaosOps, 10); // the last value counts
            assert_eq!(listed, g < MAX_GENERATIONS as u64, "generation {g}");
        }
        c.record(Some(past - 5), Counter::ChaosDisagreements, 2);
        assert_eq!(c.per_generation().len(), MAX_GENERATIONS);
        assert_eq!(c.totals()["chaos_ops"], 10 * past);
        assert_eq!(
            c.chaos_failure().as_deref(),
            Some("chaos disagreements: 2 in kernel generation 91")
        );
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
        // The generation past the cap is not listed, but summed.
        assert_eq!(c.totals()["chaos_ops"], MAX_GENERATIONS as u64 + 4 + 1);
    }
}
