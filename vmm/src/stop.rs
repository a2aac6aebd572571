//! How a TD stops: the outcome, the guest's exit code or the exact
//! diagnostic (`Fatal`: GPA, RIP, access, message), and the signal that
//! ended the run. Every mechanism that can end a run returns one of these;
//! the report carries it.

use crate::report::outcome::{Outcome, Phase};
use serde::{Deserialize, Serialize};

/// How a TD stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stop {
    pub outcome: Outcome,
    /// The guest's exit code, for a clean shutdown.
    pub exit_code: Option<i64>,
    pub fatal: Option<Fatal>,
    /// The stop signal (SIGINT, SIGTERM) that ended the run, if one did.
    pub signal: Option<i32>,
}

impl Stop {
    /// A clean shutdown with `code`.
    pub fn shutdown(code: i64) -> Self {
        Stop {
            outcome: Outcome::Ok,
            exit_code: Some(code),
            signal: None,
            fatal: None,
        }
    }

    /// A fatal stop; `fatal.kind` is the outcome (set here, the one place
    /// it is derived).
    pub fn fatal(outcome: Outcome, mut fatal: Fatal) -> Self {
        fatal.kind = outcome;
        Stop {
            outcome,
            exit_code: None,
            fatal: Some(fatal),
            signal: None,
        }
    }

    /// A VMM-side error that stopped the TD.
    pub fn error(message: String, rip: Option<u64>) -> Self {
        Stop::fatal(Outcome::Error, Fatal::new(message).rip(rip))
    }
}

abi::named_enum! {
    /// Kind of a guest memory access (`read`, `write` or `execute` in the
    /// report).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum Access {
        /// A load.
        Read => "read",
        /// A store.
        Write => "write",
        /// An instruction fetch.
        Execute => "execute",
    }
}

/// The diagnostic of a fatal stop.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Fatal {
    /// The run's outcome (the report's `outcome`, repeated here).
    pub kind: Outcome,
    /// The guest physical address involved, if one was.
    pub gpa: Option<u64>,
    /// The vCPU's instruction pointer when it stopped, if KVM told it.
    pub rip: Option<u64>,
    /// The kind of guest access that stopped the TD, if one did.
    pub access: Option<Access>,
    /// What happened, in words (may quote the guest).
    pub message: String,
    /// Generation of the kernel that was running (0 = first), if any.
    pub generation: Option<u64>,
    /// What the guest was doing when it stopped.
    pub phase: Option<Phase>,
    /// The vCPU whose stop stopped the TD.
    #[serde(default)]
    pub vcpu: Option<u32>,
}

impl Fatal {
    /// A diagnostic with `message` and nothing else known yet (`kind` is
    /// filled in by `Stop::fatal`).
    pub fn new(message: String) -> Self {
        Fatal {
            kind: Outcome::Error,
            gpa: None,
            rip: None,
            access: None,
            message,
            generation: None,
            phase: None,
            vcpu: None,
        }
    }

    /// The same with the GPA involved.
    pub fn gpa(mut self, gpa: Option<u64>) -> Self {
        self.gpa = gpa;
        self
    }

    /// The same with the vCPU's RIP.
    pub fn rip(mut self, rip: Option<u64>) -> Self {
        self.rip = rip;
        self
    }

    /// The same with the kind of access.
    pub fn access(mut self, access: Access) -> Self {
        self.access = Some(access);
        self
    }
}
