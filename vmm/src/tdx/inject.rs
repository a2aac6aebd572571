//! Fault injection (`--inject busy=P,remove=Q,delay=D,seed=S`): valid
//! accepts answer `TDX_OPERAND_BUSY | RCX` with probability P, as a TDX
//! module does when another vCPU holds the Secure-EPT entry (an injected
//! failure changes no state); and after a successful accept, with
//! probability Q, the host removes one 4 KiB page of what was just accepted
//! (TDH.MEM.PAGE.REMOVE, `memory::host_remove`): at once (D = 0), or, with
//! D > 0, D successful accepts later, when the guest has had time to write
//! it, and only for accepts made once the kernel is ready (the firmware's
//! and the kernel's boot memory is left alone). The sequences are
//! reproducible from the seed.

use models::accept::Rng;
use std::collections::VecDeque;
use thiserror::Error;

/// Why an `--inject` specification was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum InjectError {
    #[error(
        "--inject {spec:?}: expected busy=P and/or remove=Q [,delay=D] [,seed=S] with P and Q between 0 and 1"
    )]
    Syntax { spec: String },
    #[error("--inject: {key} probability {value:?} is not a number between 0 and 1")]
    Probability { key: &'static str, value: String },
    #[error("--inject: {key} {value:?} is not an unsigned 64-bit number")]
    Number { key: &'static str, value: String },
    #[error("--inject {spec:?}: delay needs remove")]
    DelayWithoutRemove { spec: String },
    #[error("--inject {spec:?}: {key} is given more than once")]
    Duplicate { spec: String, key: &'static str },
}

/// A parsed `--inject` specification.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InjectSpec {
    /// Probability that a valid accept answers TDX_OPERAND_BUSY.
    pub busy: f64,
    /// Probability that the host removes a page of a successful accept.
    pub remove: f64,
    /// Successful accepts between a page's accept and its removal (0: at
    /// once; more: only for accepts once the kernel is ready).
    pub delay: u64,
    pub seed: u64,
}

/// An unsigned number from its text.
fn number(key: &'static str, v: &str) -> Result<u64, InjectError> {
    v.parse().map_err(|_| InjectError::Number {
        key,
        value: v.to_string(),
    })
}

/// A probability in 0..=1 from its text.
fn probability(key: &'static str, v: &str) -> Result<f64, InjectError> {
    let p: f64 = v.parse().map_err(|_| InjectError::Probability {
        key,
        value: v.to_string(),
    })?;
    if !(0.0..=1.0).contains(&p) {
        return Err(InjectError::Probability {
            key,
            value: v.to_string(),
        });
    }
    Ok(p)
}

impl std::str::FromStr for InjectSpec {
    type Err = InjectError;

    fn from_str(spec: &str) -> Result<Self, InjectError> {
        let (mut busy, mut remove, mut delay, mut seed) = (None, None, None, None);
        let duplicate = |key| InjectError::Duplicate {
            spec: spec.to_string(),
            key,
        };
        for part in spec.split(',') {
            match part.split_once('=') {
                Some(("busy", _)) if busy.is_some() => return Err(duplicate("busy")),
                Some(("remove", _)) if remove.is_some() => return Err(duplicate("remove")),
                Some(("seed", _)) if seed.is_some() => return Err(duplicate("seed")),
                Some(("delay", _)) if delay.is_some() => return Err(duplicate("delay")),
                Some(("busy", v)) => busy = Some(probability("busy", v)?),
                Some(("remove", v)) => remove = Some(probability("remove", v)?),
                Some(("delay", v)) => delay = Some(number("delay", v)?),
                Some(("seed", v)) => seed = Some(number("seed", v)?),
                _ => {
                    return Err(InjectError::Syntax {
                        spec: spec.to_string(),
                    })
                }
            }
        }
        if busy.is_none() && remove.is_none() {
            return Err(InjectError::Syntax {
                spec: spec.to_string(),
            });
        }
        if delay.is_some() && remove.is_none() {
            return Err(InjectError::DelayWithoutRemove {
                spec: spec.to_string(),
            });
        }
        Ok(InjectSpec {
            busy: busy.unwrap_or(0.0),
            remove: remove.unwrap_or(0.0),
            delay: delay.unwrap_or(0),
            seed: seed.unwrap_or(0),
        })
    }
}

impl std::fmt::Display for InjectSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `remove` only when asked for, so a busy-only spec reads as before.
        write!(f, "busy={}", self.busy)?;
        if self.remove > 0.0 {
            write!(f, ",remove={}", self.remove)?;
        }
        if self.delay > 0 {
            write!(f, ",delay={}", self.delay)?;
        }
        write!(f, ",seed={}", self.seed)
    }
}

/// A probability as a threshold of the generator's range (P = 1 always
/// fires; a float-to-integer `as` saturates, which is the scaling wanted).
#[derive(Clone, Copy, Debug)]
struct Chance {
    threshold: u64,
    always: bool,
}

impl Chance {
    fn new(p: f64) -> Self {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let threshold = (p * u64::MAX as f64) as u64;
        Chance {
            threshold,
            always: p >= 1.0,
        }
    }

    fn fires(self, rng: &mut Rng) -> bool {
        self.always || (self.threshold > 0 && rng.next_u64() < self.threshold)
    }
}

/// The injector of one run.
#[derive(Clone, Debug)]
pub struct Injector {
    busy: Chance,
    remove: Chance,
    delay: u64,
    rng: Rng,
    /// Removals are drawn (always with no delay; with one, once the kernel
    /// is ready).
    armed: bool,
    /// Successful accepts seen.
    accepts: u64,
    /// Pages to remove: (the accept count when due, GPA), in due order.
    due: VecDeque<(u64, u64)>,
    /// Busy answers given so far.
    pub busy_injected: u64,
}

impl Injector {
    pub fn new(spec: InjectSpec) -> Self {
        Injector {
            busy: Chance::new(spec.busy),
            remove: Chance::new(spec.remove),
            delay: spec.delay,
            rng: Rng::new(spec.seed),
            armed: spec.delay == 0,
            accepts: 0,
            due: VecDeque::new(),
            busy_injected: 0,
        }
    }

    /// True when this (valid) accept must answer TDX_OPERAND_BUSY.
    pub fn busy(&mut self) -> bool {
        let fire = self.busy.fires(&mut self.rng);
        self.busy_injected += u64::from(fire);
        fire
    }

    /// The kernel's allocator is ready: delayed removals start.
    pub fn kernel_ready(&mut self) {
        self.armed = true;
    }

    /// After a successful accept of `len` bytes at `gpa`: the GPAs of the
    /// 4 KiB pages the host removes now (one of this accept, with no
    /// delay; those chosen `delay` accepts ago, with one).
    pub fn removals_after_accept(&mut self, gpa: u64, len: u64) -> Vec<u64> {
        self.accepts += 1;
        if self.armed && self.remove.fires(&mut self.rng) {
            let page = gpa + self.rng.below((len / abi::PAGE_4K).max(1)) * abi::PAGE_4K;
            self.due.push_back((self.accepts + self.delay, page));
        }
        let mut now = Vec::new();
        while let Some(&(when, page)) = self.due.front() {
            if when > self.accepts {
                break;
            }
            self.due.pop_front();
            now.push(page);
        }
        now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_bad_ones_say_why() {
        assert_eq!(
            "busy=0.25,seed=7".parse::<InjectSpec>(),
            Ok(InjectSpec {
                busy: 0.25,
                remove: 0.0,
                delay: 0,
                seed: 7
            })
        );
        assert_eq!(
            "seed=3,busy=1".parse::<InjectSpec>(),
            Ok(InjectSpec {
                busy: 1.0,
                remove: 0.0,
                delay: 0,
                seed: 3
            })
        );
        assert_eq!(
            "remove=0.5".parse::<InjectSpec>(),
            Ok(InjectSpec {
                busy: 0.0,
                remove: 0.5,
                delay: 0,
                seed: 0
            })
        );
        for (bad, needle) in [
            ("", "expected busy=P"),
            ("seed=3", "expected busy=P"),
            ("busy", "expected busy=P"),
            ("remove=1.5", "remove probability"),
            ("busy=2", "between 0 and 1"),
            ("busy=-0.1", "between 0 and 1"),
            ("busy=NaN", "between 0 and 1"),
            ("busy=x", "between 0 and 1"),
            ("busy=0.5,seed=-1", "seed"),
            ("busy=0.5,drop=1", "expected busy=P"),
            ("remove=0.5,delay=-1", "delay"),
            ("busy=0.5,delay=3", "delay needs remove"),
        ] {
            let e = bad.parse::<InjectSpec>().unwrap_err().to_string();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn duplicate_keys_are_refused() {
        for (spec, key) in [
            ("busy=0.5,busy=0.1", "busy"),
            ("busy=1,seed=1,seed=2", "seed"),
            ("remove=1,remove=0", "remove"),
            ("remove=1,delay=1,delay=2", "delay"),
        ] {
            assert_eq!(
                spec.parse::<InjectSpec>(),
                Err(InjectError::Duplicate {
                    spec: spec.into(),
                    key
                })
            );
        }
        for spec in [
            "busy=0.25,seed=7",
            "remove=0.5,seed=2",
            "busy=1,remove=0.125",
            "remove=0.5,delay=64,seed=1",
        ] {
            let s: InjectSpec = spec.parse().unwrap();
            assert_eq!(s.to_string().parse::<InjectSpec>(), Ok(s), "{spec}");
        }
        assert_eq!(
            "busy=0.25,seed=7"
                .parse::<InjectSpec>()
                .unwrap()
                .to_string(),
            "busy=0.25,seed=7"
        );
    }

    #[test]
    fn rate_follows_the_probability_and_the_seed() {
        let count = |p: f64, seed: u64| {
            let mut i = Injector::new(InjectSpec {
                busy: p,
                remove: 0.0,
                delay: 0,
                seed,
            });
            (0..100_000).filter(|_| i.busy()).count()
        };
        assert_eq!(count(0.0, 1), 0);
        assert_eq!(count(1.0, 1), 100_000);
        let n = count(0.1, 1);
        assert!((9_000..11_000).contains(&n), "{n}");
        assert_eq!(count(0.1, 1), n, "same seed, same sequence");
        assert_ne!(count(0.1, 2), n);
    }

    #[test]
    fn removals_pick_a_page_of_the_accept() {
        let spec = |remove| InjectSpec {
            busy: 0.0,
            remove,
            delay: 0,
            seed: 5,
        };
        const AT: u64 = 0x4000_0000;
        let mut never = Injector::new(spec(0.0));
        assert!((0..1000).all(|_| never.removals_after_accept(AT, abi::PAGE_2M).is_empty()));
        let mut always = Injector::new(spec(1.0));
        assert_eq!(always.removals_after_accept(AT, abi::PAGE_4K), vec![AT]);
        let pages: Vec<u64> = (0..1000)
            .map(|_| always.removals_after_accept(AT, abi::PAGE_2M)[0])
            .collect();
        assert!(pages
            .iter()
            .all(|p| p % abi::PAGE_4K == 0 && (AT..AT + abi::PAGE_2M).contains(p)));
        assert!(
            pages.iter().any(|p| *p != pages[0]),
            "spread over the 2 MiB"
        );
        // Busy and removal draw from one generator, reproducibly.
        let mut again = Injector::new(spec(1.0));
        again.removals_after_accept(AT, abi::PAGE_4K);
        let replay: Vec<u64> = (0..1000)
            .map(|_| again.removals_after_accept(AT, abi::PAGE_2M)[0])
            .collect();
        assert_eq!(pages, replay);
    }

    #[test]
    fn delayed_removals_wait_for_the_kernel_and_then_for_delay_accepts() {
        let mut i = Injector::new(InjectSpec {
            busy: 0.0,
            remove: 1.0,
            delay: 3,
            seed: 1,
        });
        // Before the kernel is ready nothing is chosen, ever.
        for n in 0..10 {
            assert!(i
                .removals_after_accept(n * abi::PAGE_4K, abi::PAGE_4K)
                .is_empty());
        }
        i.kernel_ready();
        let page = |n: u64| 0x1_0000_0000 + n * abi::PAGE_4K;
        // Accept k's page goes 3 accepts later, once each.
        let got: Vec<Vec<u64>> = (0..6)
            .map(|n| i.removals_after_accept(page(n), abi::PAGE_4K))
            .collect();
        assert_eq!(
            got,
            vec![
                vec![],
                vec![],
                vec![],
                vec![page(0)],
                vec![page(1)],
                vec![page(2)]
            ]
        );
    }
}
