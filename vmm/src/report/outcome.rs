//! The report's typed vocabulary: how a run ended (`Outcome`) and where
//! the cross-check of the guest's unaccepted bitmap stands
//! (`BitmapState`). Each serialises to the same text the JSON report has
//! always used.

use serde::{Deserialize, Serialize};

/// How a run ended, as the report says it: every run outcome the guest
/// ABI names (`abi::report::Outcome`, spelt the same), and `refused` for a
/// run refused before any guest code ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Outcome {
    /// The guest shut down cleanly (its exit code is `Report::exit_code`).
    Ok,
    /// The guest reported a fatal error.
    GuestPanic,
    /// The guest touched memory that was never accepted.
    PendingAccess,
    /// The guest touched a GPA that is neither RAM nor a device.
    BadGpa,
    /// A vCPU triple-faulted.
    TripleFault,
    /// The VMM stopped the TD for any other reason (see the message).
    Error,
    /// The guest ran past the configured timeout.
    Timeout,
    /// The run was asked to stop: a stop signal, or `StopHandle::stop`.
    Interrupted,
    /// The run was refused before any guest code ran (bad input).
    Refused,
}

impl Outcome {
    /// The name the JSON report uses (`ok`, `pending_access`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Refused => "refused",
            Outcome::Ok => abi::report::Outcome::Ok.as_str(),
            Outcome::GuestPanic => abi::report::Outcome::GuestPanic.as_str(),
            Outcome::PendingAccess => abi::report::Outcome::PendingAccess.as_str(),
            Outcome::BadGpa => abi::report::Outcome::BadGpa.as_str(),
            Outcome::TripleFault => abi::report::Outcome::TripleFault.as_str(),
            Outcome::Error => abi::report::Outcome::Error.as_str(),
            Outcome::Timeout => abi::report::Outcome::Timeout.as_str(),
            Outcome::Interrupted => abi::report::Outcome::Interrupted.as_str(),
        }
    }
}

impl From<abi::report::Outcome> for Outcome {
    fn from(o: abi::report::Outcome) -> Self {
        use abi::report::Outcome as Run;
        match o {
            Run::Ok => Outcome::Ok,
            Run::GuestPanic => Outcome::GuestPanic,
            Run::PendingAccess => Outcome::PendingAccess,
            Run::BadGpa => Outcome::BadGpa,
            Run::TripleFault => Outcome::TripleFault,
            Run::Error => Outcome::Error,
            Run::Timeout => Outcome::Timeout,
            Run::Interrupted => Outcome::Interrupted,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the guest's unaccepted-memory table could be compared with the
/// VMM's page states (`Report::bitmap_state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BitmapState {
    /// No kernel stub registered a system table.
    NoSystemTable,
    /// No table is installed: nothing was left unaccepted.
    NoTable,
    /// Installed, but the run stopped before the kernel filled it.
    NotFilled,
    /// Compared: `Report::bitmap_mismatches` says how many units disagree.
    Checked,
    /// The table could not be read (`Report::bitmap_error` says why).
    Error,
}

impl BitmapState {
    /// The name the JSON report uses.
    pub const fn as_str(self) -> &'static str {
        match self {
            BitmapState::NoSystemTable => "no_system_table",
            BitmapState::NoTable => "no_table",
            BitmapState::NotFilled => "not_filled",
            BitmapState::Checked => "checked",
            BitmapState::Error => "error",
        }
    }
}

impl std::fmt::Display for BitmapState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json<T: Serialize>(v: T) -> String {
        serde_json::to_string(&v).unwrap()
    }

    #[test]
    fn every_run_outcome_reads_and_writes_as_the_abi_names_it() {
        for o in abi::report::Outcome::ALL {
            let ours = Outcome::from(o);
            assert_eq!(ours.as_str(), o.as_str());
            assert_eq!(json(ours), format!("\"{}\"", o.as_str()));
            let back: Outcome = serde_json::from_str(&json(ours)).unwrap();
            assert_eq!(back, ours);
        }
        assert_eq!(json(Outcome::Refused), "\"refused\"");
        assert!(serde_json::from_str::<Outcome>("\"fine\"").is_err());
    }

    #[test]
    fn bitmap_states_serialise_as_their_names() {
        for s in [
            BitmapState::NoSystemTable,
            BitmapState::NoTable,
            BitmapState::NotFilled,
            BitmapState::Checked,
            BitmapState::Error,
        ] {
            assert_eq!(json(s), format!("\"{}\"", s.as_str()));
        }
    }
}
