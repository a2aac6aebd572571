//! Fault injection (`--inject busy=P,seed=S`): valid accepts answer
//! `TDX_OPERAND_BUSY | RCX` with probability P, as a TDX module does when
//! another vCPU holds the Secure-EPT entry. An injected failure changes no
//! state. The sequence is reproducible from the seed.

use models::accept::Rng;
use thiserror::Error;

/// Why an `--inject` specification was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum InjectError {
    #[error("--inject {spec:?}: expected busy=P[,seed=S] with P between 0 and 1")]
    Syntax { spec: String },
    #[error("--inject: busy probability {value:?} is not a number between 0 and 1")]
    Probability { value: String },
    #[error("--inject: seed {value:?} is not an unsigned 64-bit number")]
    Seed { value: String },
    #[error("--inject {spec:?}: {key} is given more than once")]
    Duplicate { spec: String, key: &'static str },
}

/// A parsed `--inject` specification.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InjectSpec {
    /// Probability that a valid accept answers TDX_OPERAND_BUSY.
    pub busy: f64,
    pub seed: u64,
}

impl std::str::FromStr for InjectSpec {
    type Err = InjectError;

    fn from_str(spec: &str) -> Result<Self, InjectError> {
        let mut busy = None;
        let mut seed = None;
        let duplicate = |key| InjectError::Duplicate {
            spec: spec.to_string(),
            key,
        };
        for part in spec.split(',') {
            match part.split_once('=') {
                Some(("busy", _)) if busy.is_some() => return Err(duplicate("busy")),
                Some(("seed", _)) if seed.is_some() => return Err(duplicate("seed")),
                Some(("busy", v)) => {
                    let p: f64 = v.parse().map_err(|_| InjectError::Probability {
                        value: v.to_string(),
                    })?;
                    if !(0.0..=1.0).contains(&p) {
                        return Err(InjectError::Probability {
                            value: v.to_string(),
                        });
                    }
                    busy = Some(p);
                }
                Some(("seed", v)) => {
                    seed = Some(v.parse().map_err(|_| InjectError::Seed {
                        value: v.to_string(),
                    })?);
                }
                _ => {
                    return Err(InjectError::Syntax {
                        spec: spec.to_string(),
                    })
                }
            }
        }
        let busy = busy.ok_or_else(|| InjectError::Syntax {
            spec: spec.to_string(),
        })?;
        Ok(InjectSpec {
            busy,
            seed: seed.unwrap_or(0),
        })
    }
}

impl std::fmt::Display for InjectSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "busy={},seed={}", self.busy, self.seed)
    }
}

/// The injector of one run.
#[derive(Clone, Debug)]
pub struct Injector {
    threshold: u64,
    always: bool,
    rng: Rng,
    /// Busy answers given so far.
    pub busy_injected: u64,
}

impl Injector {
    pub fn new(spec: InjectSpec) -> Self {
        Injector {
            // P scaled to the generator's range; P = 1 always fires.
            // A float-to-integer `as` saturates, which is the scaling wanted.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            threshold: (spec.busy * u64::MAX as f64) as u64,
            always: spec.busy >= 1.0,
            rng: Rng::new(spec.seed),
            busy_injected: 0,
        }
    }

    /// True when this (valid) accept must answer TDX_OPERAND_BUSY.
    pub fn busy(&mut self) -> bool {
        let fire = self.always || self.rng.next_u64() < self.threshold;
        self.busy_injected += u64::from(fire);
        fire
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
                seed: 7
            })
        );
        assert_eq!(
            "seed=3,busy=1".parse::<InjectSpec>(),
            Ok(InjectSpec { busy: 1.0, seed: 3 })
        );
        for (bad, needle) in [
            ("", "expected busy=P"),
            ("seed=3", "expected busy=P"),
            ("busy", "expected busy=P"),
            ("busy=2", "between 0 and 1"),
            ("busy=-0.1", "between 0 and 1"),
            ("busy=NaN", "between 0 and 1"),
            ("busy=x", "between 0 and 1"),
            ("busy=0.5,seed=-1", "seed"),
            ("busy=0.5,drop=1", "expected busy=P"),
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
        ] {
            assert_eq!(
                spec.parse::<InjectSpec>(),
                Err(InjectError::Duplicate {
                    spec: spec.into(),
                    key
                })
            );
        }
        let s: InjectSpec = "busy=0.25,seed=7".parse().unwrap();
        assert_eq!(s.to_string().parse::<InjectSpec>(), Ok(s));
    }

    #[test]
    fn rate_follows_the_probability_and_the_seed() {
        let count = |p: f64, seed: u64| {
            let mut i = Injector::new(InjectSpec { busy: p, seed });
            (0..100_000).filter(|_| i.busy()).count()
        };
        assert_eq!(count(0.0, 1), 0);
        assert_eq!(count(1.0, 1), 100_000);
        let n = count(0.1, 1);
        assert!((9_000..11_000).contains(&n), "{n}");
        assert_eq!(count(0.1, 1), n, "same seed, same sequence");
        assert_ne!(count(0.1, 2), n);
    }
}
