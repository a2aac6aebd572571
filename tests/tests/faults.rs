//! Faults the VMM must survive and report precisely: injected
//! TDX_OPERAND_BUSY (with and without retries in the guests), a guest that
//! never stops (`--timeout`, SIGINT, SIGTERM), and a guest that accepts
//! everything twice at every level (bounded host memory, capped files).

use abi::GIB;
use std::process::Command;
use std::time::{Duration, Instant};
use tests::{
    boot, config, config_with_kernel, guests, in_each_profile, name, require_kvm, scratch,
};

#[test]
fn busy_accepts_panic_the_kernel_without_retries() {
    in_each_profile("busy_accepts_panic_the_kernel_without_retries", |p| {
        let mut c = config_with_kernel(
            p,
            2 * GIB,
            "fw.accept=none fw.accept_retry=1000 accept_memory=lazy workload=64M",
        );
        c = c.inject_busy(0.2, 1);
        let r = boot(c);
        let ctx = name(p);
        assert_eq!(r.outcome, vmm::Outcome::GuestPanic, "{ctx}: {:?}", r.fatal);
        let f = r.fatal.expect("fatal");
        assert!(
            f.message.contains("TDX_OPERAND_BUSY"),
            "{ctx}: {}",
            f.message
        );
        assert_eq!(f.generation, Some(0), "{ctx}: the kernel, not the firmware");
        assert!(r.accept.busy_injected > 0);
        // The kernel filled its table (no unit is part initial, so its stub
        // accepts nothing) and panicked in its first lazy accepts: a BUSY
        // 2 MiB accept falls back to 4 KiB pages (Linux's try_accept_one),
        // and a BUSY 4 KiB one panics. The units of the block it was
        // accepting are part accepted, their bits still set, as in Linux.
        assert_eq!(r.bitmap_state, vmm::report::BitmapState::Checked, "{ctx}");
        let mismatches = r.bitmap_mismatches.expect("checked");
        assert!((1..=2).contains(&mismatches), "{ctx}: {mismatches}");
        assert!(r.unaccepted_table.map(|t| t.bits_set) > Some(0), "{ctx}");
        // The firmware got past its own busy accepts (td-shim style retries).
        assert!(r.timing_us.contains_key("kernel_entry"), "{ctx}");
        let a = r.accept;
        assert_eq!(
            a.calls,
            a.ok_4k + a.ok_2m + a.already_accepted + a.size_mismatch + a.invalid + a.busy_injected,
            "{ctx}: every accept answered exactly once"
        );
    });
}

#[test]
fn busy_accepts_are_retried_with_accept_retry() {
    in_each_profile("busy_accepts_are_retried_with_accept_retry", |p| {
        let mut c = config_with_kernel(
            p,
            6 * GIB,
            "fw.accept=none fw.accept_retry=64 accept_memory=lazy accept_retry=64 workload=256M",
        );
        c = c.inject_busy(0.2, 2);
        let r = boot(c);
        let ctx = name(p);
        assert_eq!(r.outcome, vmm::Outcome::Ok, "{ctx}: {:?}", r.fatal);
        assert_eq!(r.exit_code, Some(0));
        assert_eq!(r.bitmap_mismatches, Some(0), "{ctx}");
        let retries = r.guest["accept_retries"] + r.guest["fw_accept_retries"];
        assert!(r.guest["accept_retries"] > 0, "{ctx}");
        assert_eq!(
            retries, r.accept.busy_injected,
            "{ctx}: each busy answer was retried once"
        );
        // Busy answers changed nothing: nothing was accepted twice.
        assert_eq!(r.accept.already_accepted, 0, "{ctx}");
        assert_eq!(r.guest["workload_bytes"], 256 << 20);
    });
}

#[test]
fn a_guest_that_never_stops_times_out_with_its_rip() {
    in_each_profile("a_guest_that_never_stops_times_out_with_its_rip", |p| {
        let mut c = config(p, GIB, "fw.accept=none fw.selftest=hang");
        c = c.timeout(Duration::from_millis(500));
        let started = Instant::now();
        let r = boot(c);
        assert_eq!(r.outcome, vmm::Outcome::Timeout, "{:?}", r.fatal);
        let f = r.fatal.expect("fatal");
        let rip = f.rip.expect("RIP");
        assert!(rip >= abi::layout::FIRMWARE_BASE, "{rip:#x}");
        assert!(f.message.contains("timeout"), "{}", f.message);
        assert!(r.console.contains("selftest hang"));
        // Generous: only checks that the watchdog fired rather than hung.
        assert!(started.elapsed() < Duration::from_secs(60));
    });
}

/// Runs the firmware's `hang` self-test as a process, sends `sig` once the
/// guest says it is spinning, and returns (exit status, report).
fn stop_with_signal(sig: i32, tag: &str) -> (Option<i32>, serde_json::Value) {
    let report = scratch(&format!("signal-{tag}.json"));
    let _ = std::fs::remove_file(&report);
    let mut child = tests::spawn_spinning_guest(env!("CARGO_BIN_EXE_vmm-cli"), &report);
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
    let status = child.wait().expect("wait for the vmm");
    let text = std::fs::read_to_string(&report).expect("report written after the signal");
    (
        status.code(),
        serde_json::from_str(&text).expect("report is JSON"),
    )
}

#[test]
fn sigint_and_sigterm_stop_the_guest_and_keep_the_report() {
    if !require_kvm("sigint_and_sigterm_stop_the_guest_and_keep_the_report") {
        return;
    }
    for (sig, code, label) in [
        (libc::SIGINT, 130, "SIGINT"),
        (libc::SIGTERM, 143, "SIGTERM"),
    ] {
        let (status, r) = stop_with_signal(sig, label);
        assert_eq!(status, Some(code), "{label}");
        assert_eq!(r["outcome"], "interrupted", "{label}");
        assert_eq!(r["signal"], label);
        assert!(r["fatal"]["message"].as_str().unwrap().contains(label));
        assert!(r["fatal"]["rip"].is_u64(), "{label}: the guest's RIP");
        assert!(
            r["timing_us"]["fw_start"].is_u64(),
            "{label}: the guest ran"
        );
    }
}

#[test]
fn accepting_everything_twice_keeps_host_memory_bounded() {
    if !require_kvm("accepting_everything_twice_keeps_host_memory_bounded") {
        return;
    }
    for profile in tests::profiles("accepting_everything_twice_keeps_host_memory_bounded") {
        let report = scratch(&format!("twice-{}.json", name(profile)));
        let trace = scratch(&format!("twice-{}.trace", name(profile)));
        let mem: u64 = 512 << 20;
        let o = Command::new(env!("CARGO_BIN_EXE_vmm-cli"))
            .args(["run", "--firmware"])
            .arg(&guests().firmware)
            .args([
                "--mem",
                "512M",
                "--quiet",
                "--backing",
                "on-touch",
                "--cpu-profile",
                name(profile),
                "--cmdline",
                "fw.accept=none fw.selftest=accept-twice",
                "--trace-cap",
                "1M",
                "--trace",
            ])
            .arg(&trace)
            .arg("--report")
            .arg(&report)
            .output()
            .expect("run the vmm");
        let ctx = name(profile);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{ctx}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let text = std::fs::read_to_string(&report).unwrap();
        let r: serde_json::Value = serde_json::from_str(&text).unwrap();
        let pages = mem / 4096;
        assert_eq!(r["pages"]["pending_bytes"], 0, "{ctx}: all RAM accepted");
        assert!(
            r["accept"]["already_accepted"].as_u64().unwrap() >= pages,
            "{ctx}: every 4 KiB page was asked for again"
        );
        // Host memory: guest RAM + the page-state table + a fixed overhead.
        let rss = r["host"]["rss_peak_bytes"].as_u64().unwrap();
        let table = r["host"]["page_state_bytes"].as_u64().unwrap();
        assert!(
            rss <= mem + table + (64 << 20),
            "{ctx}: peak RSS {rss} for {mem} of RAM"
        );
        let peak = r["host"]["memslots_peak"].as_u64().unwrap();
        assert!(
            peak <= vmm::internals::DEFAULT_SOFT_CAP as u64,
            "{ctx}: {peak} memslots"
        );
        // The trace stopped at its cap and said so; the report stays small.
        let trace_len = std::fs::metadata(&trace).unwrap().len();
        assert!(trace_len <= 1 << 20, "{ctx}: trace {trace_len} bytes");
        assert!(r["trace"]["dropped"].as_u64().unwrap() > 0, "{ctx}");
        assert!(text.len() < 256 << 10, "{ctx}: report {} bytes", text.len());
    }
}
