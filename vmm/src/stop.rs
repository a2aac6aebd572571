//! How a TD stops: the outcome, the guest's exit code or the exact
//! diagnostic (`Fatal`: GPA, RIP, access, message), and the signal that
//! ended the run. Every mechanism that can end a run returns one of these;
//! the report carries it.

use abi::report::Outcome;
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

    /// A fatal stop; `fatal.kind` is the outcome's name (set here, the one
    /// place it is derived).
    pub fn fatal(outcome: Outcome, mut fatal: Fatal) -> Self {
        fatal.kind = outcome.as_str().to_string();
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

/// Kind of a guest memory access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    Execute,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::Execute => "execute",
        }
    }
}

/// The diagnostic of a fatal stop.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Fatal {
    pub kind: String,
    pub gpa: Option<u64>,
    pub rip: Option<u64>,
    pub access: Option<String>,
    pub message: String,
    /// Generation of the kernel that was running (0 = first), if any.
    pub generation: Option<u64>,
    /// What the guest was doing (firmware, kernel, kexec_load, kexec
    /// relocation copy).
    pub phase: Option<String>,
    /// The vCPU whose stop stopped the TD.
    #[serde(default)]
    pub vcpu: Option<u32>,
}

impl Fatal {
    /// A diagnostic with `message` and nothing else known yet (`kind` is
    /// filled in by `Stop::fatal`).
    pub fn new(message: String) -> Self {
        Fatal {
            kind: String::new(),
            gpa: None,
            rip: None,
            access: None,
            message,
            generation: None,
            phase: None,
            vcpu: None,
        }
    }

    pub fn gpa(mut self, gpa: Option<u64>) -> Self {
        self.gpa = gpa;
        self
    }

    pub fn rip(mut self, rip: Option<u64>) -> Self {
        self.rip = rip;
        self
    }

    pub fn access(mut self, access: Access) -> Self {
        self.access = Some(access.as_str().to_string());
        self
    }
}
