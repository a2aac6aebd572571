//! KVM_RUN answering EAGAIN: the host is short of something it needs to
//! run the vCPU. Recent Linux starts a per-VM KVM worker thread (NX
//! huge-page recovery) at the first KVM_RUN; it counts against the user's
//! process limit (`ulimit -u`), so with the limit reached every KVM_RUN
//! fails with EAGAIN before any guest instruction. The streak is retried a
//! bounded number of times, then the TD stops with outcome `error` naming
//! the cause and the limit to raise, never a spin, never a `timeout` that
//! blames a guest which never ran.

use crate::stop::Stop;
use std::time::Duration;

/// KVM_RUN calls in a row that may answer EAGAIN before the TD stops.
pub const AGAIN_LIMIT: u32 = 200;
/// The pause between two of them (one second in all).
pub const AGAIN_PAUSE: Duration = Duration::from_millis(5);

/// The EAGAIN answers in a row of one vCPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgainStreak(pub u32);

impl AgainStreak {
    /// Another EAGAIN: pauses and runs again, or, at the limit, the stop.
    pub fn again(&mut self, index: u32, ran: bool) -> Option<Stop> {
        self.0 += 1;
        if self.0 >= AGAIN_LIMIT {
            return Some(Stop::error(message(index, self.0, ran), None));
        }
        std::thread::sleep(AGAIN_PAUSE);
        None
    }

    /// Any other exit ends the streak.
    pub fn reset(&mut self) {
        self.0 = 0;
    }

    /// The timeout came while the vCPU had never run because KVM_RUN
    /// kept answering EAGAIN: the stop that says so. (A stop signal keeps
    /// its own outcome, `interrupted`.)
    pub fn stop_instead(&self, index: u32, ran: bool) -> Option<Stop> {
        (self.0 > 0 && !ran).then(|| Stop::error(message(index, self.0, ran), None))
    }
}

/// Why KVM_RUN keeps answering EAGAIN, and what to change.
fn message(index: u32, times: u32, ran: bool) -> String {
    let nproc =
        crate::host::limits::nproc_limit().map_or("unlimited".to_string(), |n| n.to_string());
    format!(
        "KVM_RUN of vCPU {index} answered EAGAIN {times} times in a row, {} ms apart ({}): \
         the host could not start what KVM needs to run the TD, most likely a per-VM KVM \
         worker thread refused by the user's process limit (ulimit -u, RLIMIT_NPROC = {nproc}): \
         raise ulimit -u or run fewer processes as this user",
        AGAIN_PAUSE.as_millis(),
        if ran {
            "after the guest had run"
        } else {
            "no guest instruction ran"
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi::report::Outcome;

    #[test]
    fn a_streak_stops_at_its_limit_with_the_cause() {
        let mut s = AgainStreak(AGAIN_LIMIT - 2);
        assert!(s.again(3, false).is_none());
        let stop = s.again(3, false).expect("the limit stops the vCPU");
        assert_eq!(stop.outcome, Outcome::Error);
        let m = stop.fatal.unwrap().message;
        assert!(m.contains("vCPU 3") && m.contains("ulimit -u"), "{m}");
        assert!(m.contains(&format!("{AGAIN_LIMIT} times")), "{m}");
        assert!(m.contains("no guest instruction ran"), "{m}");
        s.reset();
        assert_eq!(s, AgainStreak(0));
    }

    #[test]
    fn a_timeout_during_a_streak_before_the_guest_ran_names_the_streak() {
        assert!(AgainStreak(0).stop_instead(0, false).is_none());
        assert!(AgainStreak(5).stop_instead(0, true).is_none());
        let stop = AgainStreak(5).stop_instead(0, false).unwrap();
        assert!(stop.fatal.unwrap().message.contains("EAGAIN 5 times"));
    }
}
