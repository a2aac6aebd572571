//! The report's typed vocabulary: how a run ended (`Outcome`, the ABI's
//! run-report enum), what the guest was doing (`Phase`) and where the
//! cross-check of the guest's unaccepted bitmap stands (`BitmapState`).
//! Each is a named enum: it serialises to the same text the JSON report
//! has always used, from the one table that declares it.

use crate::report::trace::Who;

/// How a run ended, as the report says it: every run outcome the guest
/// ABI names, and `refused` for a run refused before any guest code ran.
/// This is `abi::report::Outcome` itself, so its names exist once; it is
/// `#[non_exhaustive]` (a `match` needs a wildcard arm).
pub use abi::report::Outcome;

abi::named_enum! {
    /// What the guest is doing, from its marks (`fatal.phase` in the
    /// report, by these names).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    #[non_exhaustive]
    pub enum Phase {
        /// Before the firmware's first mark.
        Boot => "boot",
        /// The firmware runs.
        Firmware => "firmware",
        /// A kernel runs.
        Kernel => "kernel",
        /// Between a kernel's kexec_load and kexec_jump marks.
        KexecLoad => "kexec_load",
        /// After kexec_jump: the relocation routine copies the new kernel.
        KexecCopy => "kexec relocation copy",
    }
}

impl Phase {
    /// Who a trace record made in this phase is attributed to.
    pub const fn who(self) -> Who {
        match self {
            Phase::Boot | Phase::Firmware => Who::Firmware,
            Phase::KexecLoad | Phase::KexecCopy => Who::Kexec,
            Phase::Kernel => Who::Kernel,
        }
    }
}

abi::named_enum! {
    /// Whether the guest's unaccepted-memory table could be compared with
    /// the VMM's page states (`Report::bitmap_state`, by these names).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    #[non_exhaustive]
    pub enum BitmapState {
        /// No kernel stub registered a system table.
        NoSystemTable => "no_system_table",
        /// No table is installed: nothing was left unaccepted.
        NoTable => "no_table",
        /// Installed, but the run stopped before the kernel filled it.
        NotFilled => "not_filled",
        /// Compared: `Report::bitmap_mismatches` says how many units disagree.
        Checked => "checked",
        /// The table could not be read (`Report::bitmap_error` says why).
        Error => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

    fn json<T: Serialize>(v: T) -> String {
        serde_json::to_string(&v).unwrap()
    }

    #[test]
    fn outcomes_read_and_write_as_their_names() {
        for o in Outcome::ALL {
            assert_eq!(json(o), format!("\"{}\"", o.as_str()));
            let back: Outcome = serde_json::from_str(&json(o)).unwrap();
            assert_eq!(back, o);
        }
        assert_eq!(json(Outcome::Refused), "\"refused\"");
        assert_eq!(json(Outcome::PendingAccess), "\"pending_access\"");
        assert!(serde_json::from_str::<Outcome>("\"fine\"").is_err());
    }

    #[test]
    fn bitmap_states_and_phases_serialise_as_their_names() {
        for s in BitmapState::ALL {
            assert_eq!(json(s), format!("\"{}\"", s.as_str()));
        }
        assert_eq!(json(BitmapState::NoSystemTable), "\"no_system_table\"");
        for p in Phase::ALL {
            assert_eq!(json(p), format!("\"{}\"", p.as_str()));
        }
        assert_eq!(json(Phase::KexecCopy), "\"kexec relocation copy\"");
    }
}
