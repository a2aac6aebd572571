//! The `vmm run` command line as a user meets it: exit statuses (0 clean,
//! 1 guest failure, 2 bad input), one-line errors naming the problem, the
//! report file, and the peak RSS of a fresh process.

use std::path::Path;
use std::process::{Command, Output};
use tests::{guests, require_kvm, scratch};

fn vmm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmm-cli"))
        .args(args)
        .output()
        .expect("run the vmm binary")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn fw() -> String {
    guests().firmware.display().to_string()
}

fn expect_usage_error(args: &[&str], needle: &str) {
    let o = vmm(args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    assert!(
        err.contains(needle),
        "{args:?}: expected {needle:?} in: {err}"
    );
}

#[test]
fn bad_sizes_are_refused_with_status_2() {
    let fw = fw();
    expect_usage_error(
        &["run", "--firmware", &fw, "--mem", "0"],
        "must not be zero",
    );
    expect_usage_error(&["run", "--firmware", &fw, "--mem", "12X"], "not a number");
    expect_usage_error(
        &["run", "--firmware", &fw, "--mem", "32M"],
        "below the minimum",
    );
    expect_usage_error(&["run", "--firmware", &fw, "--mem", "100T"], "limit");
    expect_usage_error(
        &["run", "--firmware", &fw, "--mem", "99999999999999T"],
        "does not fit",
    );
    expect_usage_error(
        &["run", "--firmware", &fw, "--mem", "1000001K"],
        "multiple of 4 KiB",
    );
    expect_usage_error(&["run", "--firmware", &fw, "--timeout=-3"], "--timeout");
    expect_usage_error(&["run", "--firmware", &fw, "--timeout", "inf"], "--timeout");
}

fn write_scratch(name: &str, bytes: &[u8]) -> String {
    let path = scratch(name);
    std::fs::write(&path, bytes).unwrap();
    path.display().to_string()
}

#[test]
fn a_missing_firmware_is_named() {
    let missing = scratch("missing.elf");
    expect_usage_error(
        &["run", "--firmware", missing.to_str().unwrap()],
        "missing.elf",
    );
}

#[test]
fn a_non_elf_firmware_is_refused() {
    let garbage = write_scratch("garbage.elf", b"MZ this is not an ELF file");
    expect_usage_error(
        &["run", "--firmware", &garbage],
        "garbage.elf: not an ELF file",
    );
}

#[test]
fn a_truncated_firmware_is_refused() {
    let image = std::fs::read(&guests().firmware).unwrap();
    let truncated = write_scratch("truncated.elf", &image[..200]);
    expect_usage_error(
        &["run", "--firmware", &truncated],
        "truncated.elf: truncated ELF",
    );
}

#[test]
fn a_wrong_architecture_firmware_is_refused() {
    let mut arm = std::fs::read(&guests().firmware).unwrap();
    arm[18] = 183; // EM_AARCH64
    let arm = write_scratch("arm.elf", &arm);
    expect_usage_error(&["run", "--firmware", &arm], "e_machine 183");
}

/// Offsets of the PT_LOAD program headers of an ELF64 image.
#[test]
fn overlapping_segments_are_refused() {
    for (what, path) in [
        ("firmware", &guests().firmware),
        ("kernel", &guests().kernel),
    ] {
        let mut image = std::fs::read(path).unwrap();
        let loads = tests::pt_load_headers(&image);
        assert!(
            loads.len() >= 2,
            "{what} has {} PT_LOAD segments",
            loads.len()
        );
        // Point the second segment at the first one's address.
        let (a, b) = (loads[0], loads[1]);
        let first: [u8; 16] = image[a + 0x10..a + 0x20].try_into().unwrap();
        image[b + 0x10..b + 0x20].copy_from_slice(&first);
        let bad = write_scratch(&format!("overlap-{what}.elf"), &image);
        let args: Vec<&str> = if what == "firmware" {
            vec!["run", "--firmware", &bad]
        } else {
            vec![
                "run",
                "--firmware",
                guests().firmware.to_str().unwrap(),
                "--kernel",
                &bad,
            ]
        };
        // Program-header indexes (the kernel has a non-load header first).
        let o = vmm(&args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{what}: {err}");
        assert!(
            err.contains(&format!("overlap-{what}.elf: segments "))
                && err.trim_end().ends_with("overlap"),
            "{what}: {err}"
        );
    }
}

#[test]
fn a_firmware_outside_its_window_is_refused() {
    // The kernel is linked at 0, outside the firmware window.
    let kernel = guests().kernel.display().to_string();
    expect_usage_error(
        &["run", "--firmware", &kernel],
        "outside the allowed window",
    );
}

#[test]
fn a_non_elf_kernel_is_refused_naming_the_kernel() {
    let garbage = write_scratch("garbage-kernel.elf", b"\x7fELF but not really");
    expect_usage_error(
        &["run", "--firmware", &fw(), "--kernel", &garbage],
        "garbage-kernel.elf",
    );
}

#[test]
fn a_kernel_larger_than_ram_is_refused() {
    // A valid kernel ELF padded to 80 MiB, for a 64 MiB guest.
    let mut image = std::fs::read(&guests().kernel).unwrap();
    image.resize(80 << 20, 0);
    let big = write_scratch("big-kernel.elf", &image);
    expect_usage_error(
        &["run", "--firmware", &fw(), "--kernel", &big, "--mem", "64M"],
        "big-kernel.elf: the kernel is 83886080 bytes, more than fits",
    );
}

#[test]
fn a_failed_build_leaves_no_report_file_behind() {
    let report = scratch("never.json");
    let _ = std::fs::remove_file(&report);
    expect_usage_error(
        &[
            "run",
            "--firmware",
            &fw(),
            "--mem",
            "32M",
            "--report",
            report.to_str().unwrap(),
        ],
        "below the minimum",
    );
    assert!(!report.exists(), "{} was left behind", report.display());
}

#[test]
fn unwritable_trace_path_is_refused_before_boot() {
    if !require_kvm("unwritable_trace_path_is_refused_before_boot") {
        return;
    }
    expect_usage_error(
        &[
            "run",
            "--firmware",
            &fw(),
            "--trace",
            "/nonexistent-dir/t.trace",
        ],
        "cannot write trace /nonexistent-dir/t.trace",
    );
}

#[test]
fn unwritable_report_path_is_refused_before_boot() {
    expect_usage_error(
        &[
            "run",
            "--firmware",
            &fw(),
            "--report",
            "/nonexistent-dir/r.json",
        ],
        "cannot write report /nonexistent-dir/r.json",
    );
}

fn report(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn exit_status_and_report_follow_the_outcome() {
    if !require_kvm("exit_status_and_report_follow_the_outcome") {
        return;
    }
    let fw = fw();
    let ok = scratch("ok.json");
    let o = vmm(&[
        "run",
        "--firmware",
        &fw,
        "--mem",
        "1G",
        "--quiet",
        "--report",
        ok.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r = report(&ok);
    assert_eq!(r["version"], 1);
    assert_eq!(r["outcome"], "ok");
    assert_eq!(r["exit_code"], 0);
    assert!(r["fatal"].is_null());
    for key in ["accept", "pages", "host", "exits", "timing_us", "console"] {
        assert!(!r[key].is_null(), "report lacks {key}");
    }
    for key in [
        "calls",
        "ok_4k",
        "ok_2m",
        "already_accepted",
        "size_mismatch",
        "invalid",
        "bytes_accepted",
    ] {
        assert!(r["accept"][key].is_u64(), "report lacks accept.{key}");
    }
    for key in [
        "rss_peak_bytes",
        "guest_resident_bytes",
        "memslots",
        "memslots_peak",
    ] {
        assert!(r["host"][key].is_u64(), "report lacks host.{key}");
    }

    let bad = scratch("pending.json");
    let o = vmm(&[
        "run",
        "--firmware",
        &fw,
        "--mem",
        "4G",
        "--quiet",
        "--cmdline",
        "fw.selftest=touch-pending",
        "--report",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("pending_access"), "{}", stderr(&o));
    let r = report(&bad);
    assert_eq!(r["outcome"], "pending_access");
    assert_eq!(r["fatal"]["gpa"], 1u64 << 32);
    assert!(r["exit_code"].is_null());
}

#[test]
fn a_terabyte_guest_boots_in_a_small_process() {
    if !require_kvm("a_terabyte_guest_boots_in_a_small_process") {
        return;
    }
    let path = scratch("tib.json");
    let o = vmm(&[
        "run",
        "--firmware",
        &fw(),
        "--mem",
        "1T",
        "--quiet",
        "--cmdline",
        "fw.accept=none",
        "--report",
        path.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r = report(&path);
    let rss = r["host"]["rss_peak_bytes"].as_u64().unwrap();
    assert!(rss > 0 && rss < 256 << 20, "peak RSS {rss} bytes");
    assert_eq!(r["mem_bytes"], 1u64 << 40);
}
