//! The library as a user's CI embeds it: only the public front of `vmm`
//! (`TdConfig`, `Td`, `StopHandle`, `Report`, `Outcome`), no internals.
//! Copy this file into your own tests, with your guest images' paths in
//! place of `tests::guests()`.

use std::time::Duration;
use tests::{guests, require_kvm};
use vmm::report::BitmapState;
use vmm::{Outcome, StopHandle, Td, TdConfig};

const GIB: u64 = 1 << 30;

#[test]
fn a_lazy_td_boots_and_reports() {
    if !require_kvm("a_lazy_td_boots_and_reports") {
        return;
    }
    let g = guests();
    // The firmware accepts nothing; the kernel accepts lazily, as its
    // workload needs memory.
    let config = TdConfig::new(&g.firmware)
        .kernel(&g.kernel)
        .mem_bytes(4 * GIB)
        .cmdline("fw.accept=none workload=64M")
        .timeout(Duration::from_secs(120));
    let td = Td::build(config).expect("the TD builds");
    let report = td.run();
    assert_eq!(
        report.outcome,
        Outcome::Ok,
        "{:?}\n{}",
        report.fatal,
        report.console
    );
    assert_eq!(report.exit_code, Some(0));
    assert!(report.success());
    assert!(report.accept.bytes_accepted > 0, "{:?}", report.accept);
    assert!(
        report.pages.pending_bytes > 0,
        "lazy acceptance leaves memory pending: {:?}",
        report.pages
    );
    assert_eq!(report.bitmap_state, BitmapState::Checked);
    assert_eq!(
        report.bitmap_mismatches,
        Some(0),
        "{:?}",
        report.bitmap_error
    );
    // The JSON report is the `vmm` command's, typed values as text.
    let json = serde_json::to_value(&report).expect("the report serialises");
    assert_eq!(json["outcome"], "ok");
    assert_eq!(json["bitmap_state"], "checked");
}

#[test]
fn stop_from_another_thread_interrupts_a_spinning_guest() {
    if !require_kvm("stop_from_another_thread_interrupts_a_spinning_guest") {
        return;
    }
    // The firmware's `hang` self-test spins forever.
    let config = TdConfig::new(&guests().firmware)
        .mem_bytes(GIB)
        .cmdline("fw.accept=none fw.selftest=hang")
        .timeout(Duration::from_secs(120));
    let td = Td::build(config).expect("the TD builds");
    let stop = td.stop_handle();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        stop.stop();
    });
    let started = std::time::Instant::now();
    let report = td.run();
    stopper.join().expect("the stopping thread");
    assert_eq!(report.outcome, Outcome::Interrupted, "{:?}", report.fatal);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the stop came late: {:?}",
        started.elapsed()
    );
    assert!(
        report.console.contains("selftest hang"),
        "{}",
        report.console
    );
    let fatal = report.fatal.expect("a diagnostic");
    assert_eq!(fatal.kind, Outcome::Interrupted);
    assert_eq!(report.signal, None, "no signal was involved");
}

#[test]
fn a_stop_before_the_run_runs_no_guest_code() {
    if !require_kvm("a_stop_before_the_run_runs_no_guest_code") {
        return;
    }
    // A handle given to the configuration: a stop that comes before (or
    // while) the TD is built is honoured when it runs.
    let stop = StopHandle::new();
    stop.stop();
    let config = TdConfig::new(&guests().firmware)
        .mem_bytes(GIB)
        .cmdline("fw.accept=none fw.selftest=hang")
        .stop_handle(&stop);
    let report = Td::build(config).expect("the TD builds").run();
    assert_eq!(report.outcome, Outcome::Interrupted, "{:?}", report.fatal);
    assert_eq!(report.exits.total, 0, "no guest code ran");
    assert!(report.console.is_empty(), "{}", report.console);
}
