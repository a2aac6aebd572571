//! The host-side promises of `vmm run`, tried as a careless or hostile user
//! would: FIFOs and devices as inputs and outputs, an output that is an
//! input, a stderr that cannot be written, a trace that fails mid-run,
//! huge or non-PIE kernels, host allocation failure, stop signals at every
//! moment (SIGHUP and SIGQUIT too), stale reports, escape sequences from
//! the guest, and what a report records of its inputs.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tests::process::{err_text, expect_refused, json, run_bounded, wait_bounded};
use tests::{guests, require_kvm, scratch};

fn vmm() -> Command {
    Command::new(tests::process::vmm_binary(env!("CARGO_BIN_EXE_vmm-cli")))
}

fn fw() -> &'static Path {
    &guests().firmware
}

fn kernel() -> &'static Path {
    &guests().kernel
}

fn mkfifo(name: &str) -> PathBuf {
    let p = scratch(name);
    let _ = std::fs::remove_file(&p);
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    p
}

#[test]
fn a_fifo_without_peer_is_refused_for_every_path() {
    let fifo = mkfifo("peerless.fifo");
    let f = fifo.to_str().unwrap();
    let fw = fw().to_str().unwrap();
    let k = kernel().to_str().unwrap();
    for (args, needle) in [
        (vec!["--firmware", f], "firmware"),
        (vec!["--firmware", fw, "--kernel", f], "kernel"),
        (vec!["--firmware", fw, "--report", f], "report"),
        (vec!["--firmware", fw, "--kernel", k, "--trace", f], "trace"),
    ] {
        let o = run_bounded(
            vmm().arg("run").args(&args).args(["--timeout", "3"]),
            &format!("{args:?}"),
        );
        expect_refused(&o, &[needle, f]);
    }
}

#[test]
fn a_report_to_a_pipe_keeps_working() {
    if !require_kvm("a_report_to_a_pipe_keeps_working") {
        return;
    }
    let o = run_bounded(
        vmm()
            .args([
                "run",
                "--quiet",
                "--mem",
                "1G",
                "--report",
                "/dev/stdout",
                "--firmware",
            ])
            .arg(fw()),
        "report to /dev/stdout",
    );
    assert_eq!(o.status.code(), Some(0), "{}", err_text(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stdout is the report");
    assert_eq!(r["outcome"], "ok");
}

#[test]
fn an_unwritable_stderr_never_panics() {
    if !require_kvm("an_unwritable_stderr_never_panics") {
        return;
    }
    // /dev/full: every write fails with ENOSPC.
    let report = scratch("stderr-full.json");
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let o = run_bounded(
        vmm()
            .args(["run", "--quiet", "--mem", "1G", "--report"])
            .arg(&report)
            .arg("--firmware")
            .arg(fw())
            .stderr(full),
        "stderr /dev/full",
    );
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(json(&report)["outcome"], "ok");
    // A closed pipe (`| head -1` that has exited): EPIPE on every write.
    let report = scratch("stderr-closed.json");
    let mut child = vmm()
        .args(["run", "--quiet", "--mem", "1G", "--report"])
        .arg(&report)
        .arg("--firmware")
        .arg(fw())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    let o = wait_bounded(child, Duration::from_secs(60), "stderr closed");
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(json(&report)["outcome"], "ok");
    // Bad input with a full stderr is still bad input, not a crash.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let o = run_bounded(
        vmm()
            .args(["run", "--mem", "0", "--firmware"])
            .arg(fw())
            .stderr(full),
        "bad input, stderr /dev/full",
    );
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn outputs_never_overwrite_inputs_or_each_other() {
    let dir = scratch("same-file");
    std::fs::create_dir_all(&dir).unwrap();
    let fw_copy = dir.join("fw2");
    std::fs::copy(fw(), &fw_copy).unwrap();
    let k_copy = dir.join("k2");
    std::fs::copy(kernel(), &k_copy).unwrap();
    let fw_bytes = std::fs::read(&fw_copy).unwrap();
    let k_bytes = std::fs::read(&k_copy).unwrap();
    let link = dir.join("fw-hardlink");
    let _ = std::fs::remove_file(&link);
    std::fs::hard_link(&fw_copy, &link).unwrap();
    let out = dir.join("out");
    let (f, k, l, o) = (
        fw_copy.to_str().unwrap(),
        k_copy.to_str().unwrap(),
        link.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    for args in [
        vec!["--firmware", f, "--report", f],
        vec!["--firmware", f, "--report", l],
        vec!["--firmware", f, "--kernel", k, "--report", k],
        vec!["--firmware", f, "--trace", f],
        vec!["--firmware", f, "--kernel", k, "--trace", k],
        vec!["--firmware", f, "--report", o, "--trace", o],
    ] {
        let r = run_bounded(vmm().arg("run").args(&args), &format!("{args:?}"));
        expect_refused(&r, &["is the same file as"]);
    }
    assert_eq!(
        std::fs::read(&fw_copy).unwrap(),
        fw_bytes,
        "firmware intact"
    );
    assert_eq!(std::fs::read(&k_copy).unwrap(), k_bytes, "kernel intact");
}

#[test]
fn full_devices_are_refused_before_the_guest_runs() {
    for flag in ["--report", "--trace"] {
        let o = run_bounded(
            vmm()
                .args(["run", "--mem", "1G", flag, "/dev/full", "--firmware"])
                .arg(fw()),
            flag,
        );
        expect_refused(&o, &["/dev/full", "No space left on device"]);
    }
}

#[test]
fn a_trace_that_fails_mid_run_is_reported_and_fails_the_run() {
    if !require_kvm("a_trace_that_fails_mid_run_is_reported_and_fails_the_run") {
        return;
    }
    // The reader takes the header and hangs up: the next write fails.
    let fifo = mkfifo("hangup.trace");
    let reader_path = fifo.clone();
    let reader = std::thread::spawn(move || {
        let mut f = std::fs::File::open(&reader_path).unwrap();
        let mut header = [0u8; 16];
        f.read_exact(&mut header).unwrap();
        header
    });
    let report = scratch("hangup.json");
    let o = run_bounded(
        vmm()
            .args(["run", "--quiet", "--mem", "2G", "--trace"])
            .arg(&fifo)
            .arg("--report")
            .arg(&report)
            .arg("--firmware")
            .arg(fw()),
        "trace reader hangs up",
    );
    assert_eq!(&reader.join().unwrap()[..8], b"TDXTRACE");
    let err = err_text(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("trace incomplete"), "{err}");
    let r = json(&report);
    assert_eq!(r["outcome"], "ok", "the guest itself was fine");
    let t = &r["trace"];
    assert_eq!(t["records"], 0, "nothing reached the reader: {t}");
    assert!(t["dropped"].as_u64().unwrap() > 0, "{t}");
    assert!(t["error"].as_str().unwrap().contains("Broken pipe"), "{t}");
}

/// A copy of the kernel with `edit` applied to its bytes.
fn edited_kernel(name: &str, edit: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut image = std::fs::read(kernel()).unwrap();
    edit(&mut image);
    let p = scratch(name);
    std::fs::write(&p, image).unwrap();
    p
}

#[test]
fn bad_kernels_are_bad_input() {
    // The last PT_LOAD grows to 3 GiB in memory: the file is small, the
    // image cannot fit in 128 MiB of RAM.
    let huge = edited_kernel("huge-memsz.elf", |img| {
        let last = *tests::pt_load_headers(img).last().unwrap();
        img[last + 40..last + 48].copy_from_slice(&(3u64 << 30).to_le_bytes());
    });
    // ET_EXEC: linked at a fixed address, not relocatable.
    let exec = edited_kernel("fixed.elf", |img| {
        img[16..18].copy_from_slice(&2u16.to_le_bytes())
    });
    for (path, mem, needles) in [
        (&huge, "128M", ["huge-memsz.elf", "memory image"]),
        (&exec, "1G", ["fixed.elf", "static PIE"]),
    ] {
        let o = run_bounded(
            vmm()
                .args(["run", "--mem", mem, "--firmware"])
                .arg(fw())
                .arg("--kernel")
                .arg(path),
            needles[1],
        );
        expect_refused(&o, &needles);
        assert_eq!(
            err_text(&o).lines().count(),
            1,
            "one line: {}",
            err_text(&o)
        );
    }
}

#[test]
fn huge_files_are_refused_from_their_size() {
    // Sparse files: reading them would take minutes and all host memory.
    let big = scratch("sparse-1t.elf");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(1 << 40)
        .unwrap();
    let o = run_bounded(
        vmm().args(["run", "--firmware"]).arg(&big),
        "1 TiB firmware",
    );
    expect_refused(
        &o,
        &["sparse-1t.elf", "more than the 1073741824-byte limit"],
    );
    let o = run_bounded(
        vmm()
            .args(["run", "--mem", "2G", "--firmware"])
            .arg(fw())
            .arg("--kernel")
            .arg(&big),
        "1 TiB kernel",
    );
    expect_refused(&o, &["sparse-1t.elf", "the kernel is 1099511627776 bytes"]);
}

#[test]
fn host_allocation_failure_is_a_clean_refusal() {
    if !require_kvm("host_allocation_failure_is_a_clean_refusal") {
        return;
    }
    // Address space for 64 TiB of guest RAM and little more: the tables
    // sized from --mem cannot be reserved.
    let limit = (64u64 << 40) + (96 << 20);
    let report = scratch("alloc-fail.json");
    let mut cmd = vmm();
    cmd.args([
        "run",
        "--mem",
        "64T",
        "--cmdline",
        "fw.accept=none",
        "--report",
    ])
    .arg(&report)
    .arg("--firmware")
    .arg(fw());
    // SAFETY: setrlimit is async-signal-safe; the closure touches nothing else.
    unsafe {
        cmd.pre_exec(move || {
            let r = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &r) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let o = run_bounded(&mut cmd, "64 TiB under RLIMIT_AS");
    expect_refused(&o, &["ulimit -v"]);
    assert!(!report.exists(), "a refused run leaves no report");
}

/// A `vmm run` whose guest spins forever, with no report at `report`.
fn spinning_guest(report: &Path) -> Child {
    let _ = std::fs::remove_file(report);
    spinning_guest_keeping(report)
}

/// The same, leaving a report already at the path where it is.
fn spinning_guest_keeping(report: &Path) -> Child {
    tests::spawn_spinning_guest(
        &tests::process::vmm_binary(env!("CARGO_BIN_EXE_vmm-cli")),
        report,
    )
}

#[test]
fn sighup_and_sigquit_stop_like_sigterm() {
    if !require_kvm("sighup_and_sigquit_stop_like_sigterm") {
        return;
    }
    for (sig, code, label) in [
        (libc::SIGHUP, 129, "SIGHUP"),
        (libc::SIGQUIT, 131, "SIGQUIT"),
    ] {
        let report = scratch(&format!("stop-{label}.json"));
        let child = spinning_guest(&report);
        // SAFETY: kill(2) on our own child.
        assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
        let o = wait_bounded(child, Duration::from_secs(30), label);
        assert_eq!(o.status.code(), Some(code), "{label}");
        let r = json(&report);
        assert_eq!(r["outcome"], "interrupted", "{label}");
        assert_eq!(r["signal"], label);
    }
}

#[test]
fn a_signal_before_the_guest_runs_stops_the_run() {
    if !require_kvm("a_signal_before_the_guest_runs_stops_the_run") {
        return;
    }
    // SIGTERM is raised while blocked in the child before exec, so it is
    // pending from the VMM's first instruction.
    let report = scratch("early-signal.json");
    let _ = std::fs::remove_file(&report);
    let mut cmd = vmm();
    cmd.args(["run", "--mem", "1G", "--report"])
        .arg(&report)
        .arg("--firmware")
        .arg(fw());
    // SAFETY: sigprocmask and raise are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            libc::raise(libc::SIGTERM);
            Ok(())
        });
    }
    let o = run_bounded(&mut cmd, "pending SIGTERM");
    assert_eq!(o.status.code(), Some(143), "{}", err_text(&o));
    let r = json(&report);
    assert_eq!(r["outcome"], "interrupted");
    assert!(
        r["timing_us"].get("fw_start").is_none(),
        "no guest code ran: {r}"
    );
    assert_eq!(r["exits"]["doorbell"], 0);
}

#[test]
fn a_refused_or_killed_run_leaves_no_stale_report() {
    if !require_kvm("a_refused_or_killed_run_leaves_no_stale_report") {
        return;
    }
    let report = scratch("stale.json");
    let ok = run_bounded(
        vmm()
            .args(["run", "--quiet", "--mem", "1G", "--report"])
            .arg(&report)
            .arg("--firmware")
            .arg(fw()),
        "good run",
    );
    assert_eq!(ok.status.code(), Some(0));
    assert_eq!(json(&report)["outcome"], "ok");
    let keep = scratch("stale-keep.json");
    std::fs::copy(&report, &keep).unwrap();
    // Refused after parsing, and refused by the parser itself.
    for bad in [["--mem", "32M"], ["--mem", "0"]] {
        std::fs::copy(&keep, &report).unwrap();
        let o = run_bounded(
            vmm()
                .arg("run")
                .args(bad)
                .arg("--report")
                .arg(&report)
                .arg("--firmware")
                .arg(fw()),
            "refused",
        );
        assert_eq!(o.status.code(), Some(2));
        assert!(!report.exists(), "{bad:?}: the previous ok report is gone");
    }
    // Killed outright (SIGKILL cannot be caught): no report, neither stale
    // nor empty.
    std::fs::copy(&keep, &report).unwrap();
    let child = spinning_guest_keeping(&report);
    assert!(!report.exists(), "the previous report is removed at start");
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGKILL) }, 0);
    let _ = wait_bounded(child, Duration::from_secs(30), "SIGKILL");
    assert!(!report.exists(), "no report after SIGKILL");
}

#[test]
fn guest_escape_sequences_do_not_reach_the_terminal() {
    if !require_kvm("guest_escape_sequences_do_not_reach_the_terminal") {
        return;
    }
    let report = scratch("escape.json");
    let o = run_bounded(
        vmm()
            .args([
                "run",
                "--mem",
                "1G",
                "--cmdline",
                "x=\u{1b}]0;owned\u{7}\u{1b}[2J",
                "--report",
            ])
            .arg(&report)
            .arg("--firmware")
            .arg(fw()),
        "escapes",
    );
    assert_eq!(o.status.code(), Some(0), "{}", err_text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(!out.contains('\u{1b}') && !out.contains('\u{7}'), "{out:?}");
    assert!(out.contains("\\x1b]0;owned\\x07\\x1b[2J"), "{out}");
    // The report keeps the guest's bytes, JSON-escaped.
    assert!(json(&report)["console"]
        .as_str()
        .unwrap()
        .contains("\u{1b}]0;owned"));
}

#[test]
fn a_report_records_what_produced_it() {
    if !require_kvm("a_report_records_what_produced_it") {
        return;
    }
    use sha2::Digest;
    let report = scratch("inputs.json");
    let o = run_bounded(
        vmm()
            .args([
                "run",
                "--quiet",
                "--mem",
                "1G",
                "--map",
                "on-accept",
                "--backing",
                "on-touch",
                "--inject",
                "busy=0,seed=4",
                "--cpu-profile",
                "standard",
                "--report",
            ])
            .arg(&report)
            .arg("--firmware")
            .arg(fw())
            .arg("--kernel")
            .arg(kernel()),
        "inputs",
    );
    assert_eq!(o.status.code(), Some(0), "{}", err_text(&o));
    let r = json(&report);
    let i = &r["inputs"];
    let words: Vec<&str> = i["command_line"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert!(
        words.windows(2).any(|w| w == ["--map", "on-accept"]),
        "{words:?}"
    );
    assert_eq!(i["map"], "on-accept");
    assert_eq!(i["backing"], "on-touch");
    assert_eq!(i["inject"], "busy=0,seed=4");
    assert_eq!(i["cpu_profile_requested"], "standard");
    assert_eq!(r["cpu_profile"], "standard");
    for (key, path) in [("firmware", fw()), ("kernel", kernel())] {
        let want: String = sha2::Sha256::digest(std::fs::read(path).unwrap())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(i[key]["sha256"], want.as_str(), "{key}");
        assert_eq!(i[key]["path"], path.to_str().unwrap());
    }
    assert_eq!(i["vmm_version"], vmm::VERSION);
    // Built from this checkout: the commit is known.
    assert!(
        i["vmm_git_commit"].as_str().is_some_and(|c| c.len() >= 40),
        "{i}"
    );
    assert!(i["pid"].as_u64().unwrap() > 0 && i["started_unix_ms"].as_u64().unwrap() > 0);
}

#[test]
fn duplicate_inject_keys_are_refused() {
    let o = run_bounded(
        vmm()
            .args(["run", "--inject", "busy=0.5,busy=0.1", "--firmware"])
            .arg(fw()),
        "inject",
    );
    expect_refused(&o, &["busy is given more than once"]);
}

#[test]
fn a_pending_access_prints_one_diagnostic_line() {
    if !require_kvm("a_pending_access_prints_one_diagnostic_line") {
        return;
    }
    let o = run_bounded(
        vmm()
            .args([
                "run",
                "--quiet",
                "--mem",
                "5G",
                "--cmdline",
                "fw.selftest=touch-pending",
                "--firmware",
            ])
            .arg(fw()),
        "touch-pending",
    );
    let err = err_text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "the diagnostic and the summary: {err}");
    assert!(
        lines[0].starts_with("vmm: TD stopped: pending_access") && lines[0].contains("0x100000000"),
        "{err}"
    );
    assert!(lines[1].starts_with("vmm: outcome pending_access"), "{err}");
}

#[test]
fn a_refused_run_keeps_a_file_that_is_not_a_report() {
    let notes = scratch("notes.txt");
    std::fs::write(&notes, "my notes\n").unwrap();
    let exec = edited_kernel("refuse-exec.elf", |img| {
        img[16..18].copy_from_slice(&2u16.to_le_bytes())
    });
    let o = run_bounded(
        vmm()
            .args(["run", "--mem", "1G", "--report"])
            .arg(&notes)
            .arg("--firmware")
            .arg(fw())
            .arg("--kernel")
            .arg(&exec),
        "refused with a non-report at the report path",
    );
    expect_refused(&o, &["static PIE"]);
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "my notes\n");
}

#[test]
fn a_report_to_redirected_stdout_appends() {
    if !require_kvm("a_report_to_redirected_stdout_appends") {
        return;
    }
    // `vmm run --report /dev/stdout >> log`: the report follows what the
    // log held, and the console echo does not mix into it.
    let log = scratch("appended.log");
    std::fs::write(&log, "earlier line\n").unwrap();
    let out = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    let child = vmm()
        .args([
            "run",
            "--mem",
            "1G",
            "--report",
            "/dev/stdout",
            "--firmware",
        ])
        .arg(fw())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = wait_bounded(child, Duration::from_secs(60), "report >> log");
    assert_eq!(o.status.code(), Some(0), "{}", err_text(&o));
    let text = std::fs::read_to_string(&log).unwrap();
    let rest = text
        .strip_prefix("earlier line\n")
        .expect("the log's start kept");
    let r: serde_json::Value = serde_json::from_str(rest).expect("only the report follows");
    assert_eq!(r["outcome"], "ok");
}

#[test]
fn a_stalled_trace_reader_cannot_hold_a_stop() {
    if !require_kvm("a_stalled_trace_reader_cannot_hold_a_stop") {
        return;
    }
    // The reader opens the FIFO and never reads: the pipe fills, and a
    // SIGTERM must still end the run (with the records that got through).
    let fifo = mkfifo("stalled.trace");
    let reader_path = fifo.clone();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        let f = std::fs::File::open(&reader_path).unwrap();
        let _ = rx.recv_timeout(Duration::from_secs(120));
        drop(f);
    });
    let report = scratch("stalled.json");
    let child = vmm()
        .args([
            "run",
            "--quiet",
            "--mem",
            "2G",
            "--cmdline",
            "fw.accept=all fw.accept_page=4k",
            "--trace",
        ])
        .arg(&fifo)
        .arg("--report")
        .arg(&report)
        .arg("--firmware")
        .arg(fw())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let o = wait_bounded(child, Duration::from_secs(30), "stalled reader");
    let _ = tx.send(());
    reader.join().unwrap();
    assert_eq!(o.status.code(), Some(143), "{}", err_text(&o));
    let r = json(&report);
    assert_eq!(r["outcome"], "interrupted");
    assert!(r["trace"]["error"].as_str().is_some(), "{}", r["trace"]);
}
