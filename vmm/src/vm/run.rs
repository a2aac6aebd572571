//! Running a built TD: vCPU 0 on the calling thread, every other vCPU on
//! a thread of its own, the watchdog armed for the timeout, until the
//! first stop of any vCPU stops them all; then the verdict and the report.

use super::verdict::{self, Finished};
use super::Td;
use crate::report::Report;
use crate::stop::Stop;

impl Td {
    /// Runs the TD until it stops, then reports. vCPU 0 runs on the
    /// calling thread, every other vCPU on a thread of its own; the first
    /// stop of any vCPU stops them all.
    pub fn run(self) -> Report {
        let Td {
            mut vcpus,
            shared,
            profile,
            config,
            initial_bytes,
            initial_units,
            pending_fallback,
            inputs,
            _kvm,
        } = self;
        if config.stop_on_signals && !crate::host::signals::installed() {
            if let Err(e) = crate::host::signals::install() {
                log::warn!("cannot install every stop-signal handler ({e}): such a signal kills the process without a report");
            }
        }
        crate::host::watchdog::install_kick_handler();
        let kicks_failed_before = crate::host::watchdog::kick_failures().0;
        let board = shared.board.clone();
        let watchdog = config
            .timeout
            .map(|t| crate::host::watchdog::Watchdog::arm(t, move || board.kick(false)));
        let timeout = config.timeout;
        let watch = crate::host::signals::watch(shared.board.threads());
        std::thread::scope(|scope| {
            let (first, others) = vcpus.split_first_mut().expect("a TD has at least one vCPU");
            let mut threads = Vec::new();
            for vcpu in others {
                let index = vcpu.state.index;
                let (td, wd) = (&shared, watchdog.as_ref());
                let spawned = std::thread::Builder::new()
                    .name(format!("vcpu{index}"))
                    .stack_size(crate::host::limits::VCPU_STACK_BYTES)
                    .spawn_scoped(scope, move || {
                        vcpu.run(td, wd, timeout);
                    });
                match spawned {
                    Ok(t) => threads.push(t),
                    Err(e) => {
                        shared.board.stop(
                            index,
                            Stop::error(
                                format!("cannot start the thread of vCPU {index}: {e}"),
                                None,
                            ),
                        );
                        break;
                    }
                }
            }
            first.run(&shared, watchdog.as_ref(), timeout);
            for t in threads {
                if t.join().is_err() {
                    shared
                        .board
                        .stop(u32::MAX, Stop::error("a vCPU thread panicked".into(), None));
                }
            }
        });
        drop(watch);
        drop(watchdog);
        crate::host::signals::clear();
        let mut report = verdict::report(Finished {
            vcpus: &vcpus,
            shared,
            profile,
            mem_bytes: config.mem_bytes,
            initial_bytes,
            initial_units,
            pending_fallback,
            inputs,
        });
        report.host.kick_failures = crate::host::watchdog::kick_failures().0 - kicks_failed_before;
        report
    }
}
