//! Round three of trying `vmm run` as a hostile host and a hostile guest
//! would: per-process limits (`ulimit -i`, `-u`, `-f`, `-t`, `-v`, `-s`),
//! every signal a user can send, output paths that name directories or
//! cannot take a rename, guests that forge the VMM's own lines, kernels
//! with relocations the firmware would refuse, reports whose lists are
//! capped, and absurd flag values. Each test is bounded: the bugs they
//! guard against are hangs and silent deaths.

use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tests::process::{
    err_text, expect_refused, json, run_bounded, run_within, wait_bounded, with_rlimit,
};
use tests::{guests, host_is_pvm, require_kvm, scratch};

fn vmm() -> Command {
    Command::new(tests::process::vmm_binary(env!("CARGO_BIN_EXE_vmm-cli")))
}

fn fw() -> &'static Path {
    &guests().firmware
}

fn kernel() -> &'static Path {
    &guests().kernel
}

/// The CPU profiles of this host, as `--cpu-profile` values.
fn profile_flags() -> Vec<&'static str> {
    let mut v = vec!["standard"];
    if host_is_pvm() {
        v.push("pvm-native");
    }
    v
}

/// A spinning firmware with a report, under `profile`, stopped after
/// `timeout` seconds if given.
fn hanging_guest(report: &Path, profile: &str, timeout: Option<&str>) -> Command {
    let mut cmd = vmm();
    cmd.args(["run", "--quiet", "--mem", "1G", "--cpu-profile", profile])
        .args(["--cmdline", "fw.accept=none fw.selftest=hang"])
        .args(timeout.map(|t| ["--timeout", t]).into_iter().flatten())
        .arg("--report")
        .arg(report)
        .arg("--firmware")
        .arg(fw());
    cmd
}

#[test]
fn the_timeout_holds_with_no_signal_queue_left() {
    if !require_kvm("the_timeout_holds_with_no_signal_queue_left") {
        return;
    }
    // ulimit -i 0: no real-time signal can be queued to any thread.
    for profile in profile_flags() {
        let report = scratch(&format!("sigpending-{profile}.json"));
        let mut cmd = hanging_guest(&report, profile, Some("2"));
        with_rlimit(&mut cmd, libc::RLIMIT_SIGPENDING, 0, 0);
        let o = run_within(&mut cmd, Duration::from_secs(30), profile);
        assert_eq!(o.status.code(), Some(1), "{profile}: {}", err_text(&o));
        let r = json(&report);
        assert_eq!(r["outcome"], "timeout", "{profile}");
        assert_eq!(r["host"]["kick_failures"], 0, "{profile}");
        assert!(
            r["timing_us"]["total"].as_u64().unwrap() < 10_000_000,
            "{profile}: stopped late: {}",
            r["timing_us"]
        );
    }
}

#[test]
fn kvm_run_refused_for_a_process_limit_stops_with_the_cause() {
    if !require_kvm("kvm_run_refused_for_a_process_limit_stops_with_the_cause") {
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        // The limit binds only a non-root user, and only root can hand
        // such a user a /dev/kvm of its own (below).
        tests::skip(format_args!("kvm_run_refused_for_a_process_limit_stops_with_the_cause: needs root to drop to an unprivileged user"));
        return;
    }
    // An unprivileged user with `ulimit -u 2`: a uid no process has (so
    // the limit is not already used up by others), its own /dev/kvm node
    // (bind-mounted over /dev/kvm in a private mount namespace), files it
    // can read, and a directory it can write.
    const UID: u32 = 61_234;
    let dir = scratch("nproc");
    std::fs::create_dir_all(&dir).unwrap();
    let chmod = |p: &Path, mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    chmod(&dir, 0o777);
    let exe = dir.join("vmm");
    let firmware = dir.join("fw.elf");
    std::fs::copy(
        tests::process::vmm_binary(env!("CARGO_BIN_EXE_vmm-cli")),
        &exe,
    )
    .unwrap();
    std::fs::copy(fw(), &firmware).unwrap();
    chmod(&exe, 0o755);
    chmod(&firmware, 0o644);
    // Every directory above must be searchable by that user.
    for a in dir.ancestors().skip(1) {
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(a).unwrap().permissions().mode();
        assert!(
            m & 0o001 != 0,
            "{} is not searchable by others",
            a.display()
        );
    }
    let node = dir.join("kvm");
    let _ = std::fs::remove_file(&node);
    let cpath = |p: &Path| std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let (node_c, devkvm) = (cpath(&node), cpath(Path::new("/dev/kvm")));
    // SAFETY: valid NUL-terminated paths; 10:232 is /dev/kvm.
    unsafe {
        assert_eq!(
            libc::mknod(
                node_c.as_ptr(),
                libc::S_IFCHR | 0o600,
                libc::makedev(10, 232)
            ),
            0,
            "mknod"
        );
        assert_eq!(libc::chown(node_c.as_ptr(), UID, UID), 0, "chown");
    }
    let report = dir.join("r.json");
    let mut cmd = Command::new(&exe);
    cmd.args([
        "run",
        "--quiet",
        "--mem",
        "1G",
        "--timeout",
        "20",
        "--report",
    ])
    .arg(&report)
    .arg("--firmware")
    .arg(&firmware);
    use std::os::unix::process::CommandExt;
    // SAFETY: only async-signal-safe calls (unshare, mount, setrlimit,
    // setgroups, setgid, setuid) on values prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let fail = || Err(std::io::Error::last_os_error());
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return fail();
            }
            let root = c"/";
            if libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
                || libc::mount(
                    node_c.as_ptr(),
                    devkvm.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ) != 0
            {
                return fail();
            }
            let nproc = libc::rlimit {
                rlim_cur: 2,
                rlim_max: 2,
            };
            if libc::setrlimit(libc::RLIMIT_NPROC, &nproc) != 0
                || libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(UID) != 0
                || libc::setuid(UID) != 0
            {
                return fail();
            }
            Ok(())
        });
    }
    let o = run_within(&mut cmd, Duration::from_secs(30), "ulimit -u 2");
    let err = err_text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let r = json(&report);
    assert_eq!(r["outcome"], "error", "{err}");
    let message = r["fatal"]["message"].as_str().unwrap();
    assert!(
        message.contains("EAGAIN") && message.contains("ulimit -u") && message.contains("= 2"),
        "{message}"
    );
    assert!(message.contains("no guest instruction ran"), "{message}");
    assert_eq!(r["exits"]["total"], 0);
}

#[test]
fn file_size_and_cpu_time_limits_end_the_run_cleanly() {
    if !require_kvm("file_size_and_cpu_time_limits_end_the_run_cleanly") {
        return;
    }
    // ulimit -f 4 (4 KiB): the report and the trace cannot be written.
    let dir = scratch("fsize");
    std::fs::create_dir_all(&dir).unwrap();
    let (report, trace) = (dir.join("r.json"), dir.join("t.bin"));
    let mut cmd = vmm();
    cmd.args(["run", "--quiet", "--mem", "1G", "--report"])
        .arg(&report)
        .arg("--trace")
        .arg(&trace)
        .arg("--firmware")
        .arg(fw());
    with_rlimit(&mut cmd, libc::RLIMIT_FSIZE, 4096, 4096);
    let o = run_bounded(&mut cmd, "ulimit -f 4");
    let err = err_text(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("File too large"), "{err}");
    assert!(err.contains("vmm: outcome ok"), "{err}");
    // No temporary file is left; the trace keeps whole records.
    for e in std::fs::read_dir(&dir).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        assert!(!name.ends_with(".tmp"), "left behind: {name}");
    }
    if let Ok(m) = std::fs::metadata(&trace) {
        use vmm::trace::{HEADER_BYTES, RECORD_BYTES};
        assert!(m.len() <= 4096, "{}", m.len());
        assert_eq!(
            (m.len() - HEADER_BYTES as u64) % RECORD_BYTES as u64,
            0,
            "whole records only: {} bytes",
            m.len()
        );
    }
    // ulimit -t 1 (soft; hard 30): SIGXCPU after a second of CPU.
    let report = scratch("xcpu.json");
    let mut cmd = hanging_guest(&report, "auto", None);
    with_rlimit(&mut cmd, libc::RLIMIT_CPU, 1, 30);
    let o = run_within(&mut cmd, Duration::from_secs(30), "ulimit -t 1");
    assert_eq!(
        o.status.code(),
        Some(128 + libc::SIGXCPU),
        "{}",
        err_text(&o)
    );
    let r = json(&report);
    assert_eq!(r["outcome"], "interrupted");
    assert_eq!(r["signal"], "SIGXCPU");
}

/// A `vmm run` of `mem` RAM and `cpus` vCPUs with a lazy firmware, under
/// an address-space limit of `limit` bytes.
fn under_address_limit(mem: &str, cpus: &str, limit: u64, report: &Path) -> std::process::Output {
    let mut cmd = vmm();
    cmd.args([
        "run",
        "--quiet",
        "--mem",
        mem,
        "--cpus",
        cpus,
        "--cmdline",
        "fw.accept=none",
        "--report",
    ])
    .arg(report)
    .arg("--firmware")
    .arg(fw())
    .arg("--kernel")
    .arg(kernel());
    with_rlimit(&mut cmd, libc::RLIMIT_AS, limit, limit);
    run_within(
        &mut cmd,
        Duration::from_secs(120),
        &format!("{mem} x{cpus} under ulimit -v"),
    )
}

#[test]
fn address_space_and_stack_limits_never_abort() {
    if !require_kvm("address_space_and_stack_limits_never_abort") {
        return;
    }
    const MIB: u64 = 1 << 20;
    // Every limit from far too small to just too small: a clean refusal
    // naming the limit, never an abort (134) or a crash.
    for (mem, ram, cpus) in [
        ("1G", 1u64 << 30, "1"),
        ("64T", 64u64 << 40, "4"),
        ("1G", 1 << 30, "64"),
    ] {
        for limit in [64 * MIB, ram / 2, ram + 32 * MIB] {
            let report = scratch("as-limit.json");
            let o = under_address_limit(mem, cpus, limit, &report);
            let err = err_text(&o);
            assert_eq!(
                o.status.code(),
                Some(2),
                "{mem} x{cpus} under {} MiB: {err}",
                limit / MIB
            );
            assert!(
                err.contains("ulimit -v") || err.contains("cannot reserve"),
                "{mem} x{cpus} under {} MiB: {err}",
                limit / MIB
            );
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(!report.exists());
        }
    }
    // With the room the message asks for, the same run works.
    let report = scratch("as-limit-ok.json");
    let o = under_address_limit("1G", "64", 1 << 40, &report);
    let err = err_text(&o);
    let wanted: u64 = {
        let o = under_address_limit("1G", "64", (1 << 30) + 128 * MIB, &scratch("as-ask.json"));
        let e = err_text(&o);
        let n = e.split("at least ").nth(1).unwrap_or_else(|| panic!("{e}"));
        n.split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(o.status.code(), Some(0), "{err}");
    let o = under_address_limit("1G", "64", wanted * 1024, &report);
    assert_eq!(
        o.status.code(),
        Some(0),
        "asked for {wanted} KiB: {}",
        err_text(&o)
    );
    assert_eq!(json(&report)["outcome"], "ok");
    // ulimit -s 32 (the size that overflowed before): the main thread's
    // stack is 32 KiB; the work runs on threads whose stacks the VMM sizes.
    // (Far lower, near 16 KiB, any program may die at exec on this host.)
    let report = scratch("stack-limit.json");
    let mut cmd = vmm();
    cmd.args(["run", "--quiet", "--mem", "1G", "--cpus", "2", "--report"])
        .arg(&report)
        .arg("--firmware")
        .arg(fw())
        .arg("--kernel")
        .arg(kernel());
    with_rlimit(&mut cmd, libc::RLIMIT_STACK, 32 << 10, 32 << 10);
    let o = run_bounded(&mut cmd, "ulimit -s 32");
    assert_eq!(o.status.code(), Some(0), "{}", err_text(&o));
    assert_eq!(json(&report)["outcome"], "ok");
}

#[test]
fn outputs_that_name_directories_or_cannot_be_renamed_are_refused_up_front() {
    let dir = scratch("slash");
    std::fs::create_dir_all(&dir).unwrap();
    for (flag, path) in [
        ("--report", format!("{}/r.json/", dir.display())),
        ("--trace", format!("{}/t/", dir.display())),
        ("--report", format!("{}/r.json/.", dir.display())),
    ] {
        let o = run_bounded(
            vmm()
                .args(["run", "--mem", "1G", flag, &path, "--firmware"])
                .arg(fw()),
            &path,
        );
        expect_refused(&o, &["names a directory", &path]);
        let err = err_text(&o);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert_eq!(err.matches("cannot write").count(), 0, "{err}");
    }
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "nothing created"
    );
    // An append-only directory (chattr +a) takes a new file but never a
    // rename or a removal: refused before anything is created there.
    let ro = scratch("append-only");
    std::fs::create_dir_all(&ro).unwrap();
    let set = |flag: &str| {
        Command::new("chattr")
            .arg(flag)
            .arg(&ro)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !set("+a") {
        tests::skip(format_args!(
            "the append-only case: chattr +a is not available here"
        ));
        return;
    }
    // Whatever happens below, the directory is made removable again.
    struct Unset<'a>(&'a dyn Fn(&str) -> bool);
    impl Drop for Unset<'_> {
        fn drop(&mut self) {
            (self.0)("-a");
        }
    }
    let _unset = Unset(&set);
    // Also through a symbolic link to it, the report not there yet.
    let link = scratch("append-only-link");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&ro, &link).unwrap();
    for report in [ro.join("r.json"), link.join("r.json")] {
        let o = run_bounded(
            vmm()
                .args(["run", "--mem", "1G", "--report"])
                .arg(&report)
                .arg("--firmware")
                .arg(fw()),
            "chattr +a",
        );
        expect_refused(&o, &["append-only", "r.json"]);
        let entries = std::fs::read_dir(&ro).unwrap().count();
        assert_eq!(entries, 0, "nothing created in the append-only directory");
    }
}

/// A firmware that writes `console` to the console, then reports a fatal
/// error whose message (in registers, as Linux sends it) is `message`.
fn forging_firmware(console: &[u8], message: &[u8; 64]) -> std::path::PathBuf {
    use abi::vmcall::{emu, ghci, GHCI_STANDARD, VENDOR_EMU};
    let (rcx, r10, r11, r12, r13) = (1, 10, 11, 12, 13);
    let base = abi::layout::FIRMWARE_BASE;
    // The code with its data's address: the data lands right after the
    // code, whose length does not depend on that address.
    let code = |data_gpa: u64| {
        let mut c = tests::process::Code::default();
        c.zero_rax()
            .mov32(rcx, u32::try_from(abi::vmcall::EXPOSE_R10_R15).unwrap())
            .mov32(r10, u32::try_from(VENDOR_EMU).unwrap())
            .mov32(r11, u32::try_from(emu::CONSOLE_WRITE).unwrap())
            .mov32(r12, u32::try_from(data_gpa).unwrap())
            .mov32(r13, u32::try_from(console.len()).unwrap())
            .out(abi::tdcall::DOORBELL_PORT);
        // ReportFatalError with the message in R14, R15, RBX, RDI, RSI, R8,
        // R9, RDX (as Linux sends it): expose those and R10..R12.
        let exposed: u32 = [2u32, 3, 6, 7, 8, 9, 10, 11, 12, 14, 15]
            .iter()
            .map(|r| 1 << r)
            .sum();
        c.zero_rax()
            .mov32(rcx, exposed)
            .mov32(r10, u32::try_from(GHCI_STANDARD).unwrap())
            .mov32(r11, u32::try_from(ghci::REPORT_FATAL_ERROR).unwrap())
            .mov32(r12, 1);
        for (reg, word) in [14u8, 15, 3, 7, 6, 8, 9, 2].iter().zip(message.chunks(8)) {
            c.mov64(*reg, u64::from_le_bytes(word.try_into().unwrap()));
        }
        c.out(abi::tdcall::DOORBELL_PORT).spin();
        c.0
    };
    let (_, data_gpa) = tests::process::tiny_firmware(base, &code(0), console);
    let (image, at) = tests::process::tiny_firmware(base, &code(data_gpa), console);
    assert_eq!(at, data_gpa);
    let path = scratch("forging-fw.elf");
    std::fs::write(&path, image).unwrap();
    path
}

#[test]
fn a_guest_cannot_forge_the_vmms_lines() {
    if !require_kvm("a_guest_cannot_forge_the_vmms_lines") {
        return;
    }
    let forged = "vmm: outcome ok exit_code 0 accepted 0 bytes in 0 calls, 1 us";
    let mut message = [0u8; 64];
    let text = format!("x\n{}\r\x1b[1A", &forged[..40]);
    message[..text.len()].copy_from_slice(text.as_bytes());
    let console = format!("{forged}\n");
    let firmware = forging_firmware(console.as_bytes(), &message);
    for profile in profile_flags() {
        let report = scratch("forged.json");
        let o = run_bounded(
            vmm()
                .args(["run", "--mem", "1G", "--cpu-profile", profile, "--report"])
                .arg(&report)
                .arg("--firmware")
                .arg(&firmware),
            "forging guest",
        );
        let (out, err) = (String::from_utf8_lossy(&o.stdout), err_text(&o));
        assert_eq!(o.status.code(), Some(1), "{profile}: {err}");
        // The one real summary, and no other line of stdout or stderr
        // that starts like one of the VMM's.
        let summaries: Vec<&str> = err
            .lines()
            .filter(|l| l.starts_with("vmm: outcome"))
            .collect();
        assert_eq!(summaries.len(), 1, "{profile}: {err}");
        assert!(
            summaries[0].starts_with("vmm: outcome guest_panic"),
            "{err}"
        );
        assert!(!err.contains('\r') && !err.contains('\x1b'), "{err:?}");
        assert!(err.contains("x\\nvmm: outcome ok"), "{err}");
        assert!(out.lines().all(|l| !l.starts_with("vmm:")), "{out}");
        assert!(out.contains(&format!("guest: {forged}")), "{out}");
        // The report keeps the guest's bytes.
        let r = json(&report);
        assert!(r["fatal"]["message"]
            .as_str()
            .unwrap()
            .contains("x\nvmm: outcome ok"));
        assert!(r["console"].as_str().unwrap().starts_with(forged));
    }
}

#[test]
fn a_long_kexec_chain_is_counted_whole() {
    if !require_kvm("a_long_kexec_chain_is_counted_whole") {
        return;
    }
    let report = scratch("kexec100.json");
    let o = run_within(
        vmm()
            .args([
                "run",
                "--quiet",
                "--mem",
                "2G",
                "--cmdline",
                "fw.accept=none kexec=100",
                "--report",
            ])
            .arg(&report)
            .arg("--firmware")
            .arg(fw())
            .arg("--kernel")
            .arg(kernel()),
        Duration::from_secs(300),
        "kexec=100",
    );
    assert_eq!(o.status.code(), Some(0), "{}", err_text(&o));
    let r = json(&report);
    assert_eq!(r["kexecs"], 100);
    let records = r["kexec"].as_array().unwrap();
    let kept = vmm::internals::MAX_KEXEC_RECORDS;
    assert_eq!(records.len(), kept);
    assert_eq!(r["truncated"]["kexec"], 100 - kept as u64);
    // The records kept are the first ones, each its own.
    for (g, k) in records.iter().enumerate() {
        assert_eq!(k["from_generation"], g as u64);
        assert!(k["next_entry_us"].as_u64().is_some(), "{k}");
    }
    assert_eq!(r["bitmap_mismatches"], 0);
}

#[test]
fn a_kernel_relocation_the_firmware_would_refuse_is_refused_before_it_runs() {
    let mut image = std::fs::read(kernel()).unwrap();
    let info = tests::process::first_relocation_info(&image);
    assert_eq!(
        image[info], 8,
        "the kernel's relocations are R_X86_64_RELATIVE"
    );
    image[info] = 99;
    let bad = scratch("reloc99.elf");
    std::fs::write(&bad, &image).unwrap();
    let o = run_bounded(
        vmm()
            .args(["run", "--mem", "1G", "--firmware"])
            .arg(fw())
            .arg("--kernel")
            .arg(&bad),
        "relocation type 99",
    );
    expect_refused(&o, &["reloc99.elf", "relocation type 99 is not supported"]);
    assert_eq!(err_text(&o).lines().count(), 1, "{}", err_text(&o));
}

#[test]
fn every_terminating_signal_stops_with_a_report() {
    if !require_kvm("every_terminating_signal_stops_with_a_report") {
        return;
    }
    let rtmin = libc::SIGRTMIN();
    for (sig, name) in [
        (libc::SIGUSR1, "SIGUSR1".to_string()),
        (libc::SIGUSR2, "SIGUSR2".into()),
        (libc::SIGALRM, "SIGALRM".into()),
        (libc::SIGPROF, "SIGPROF".into()),
        (libc::SIGVTALRM, "SIGVTALRM".into()),
        (libc::SIGPWR, "SIGPWR".into()),
        (rtmin, "SIGRTMIN".into()),
        (rtmin + 1, "SIGRTMIN+1".into()),
        (
            libc::SIGRTMAX(),
            format!("SIGRTMIN+{}", libc::SIGRTMAX() - rtmin),
        ),
    ] {
        let report = scratch(&format!("sig-{sig}.json"));
        let _ = std::fs::remove_file(&report);
        let child = tests::spawn_spinning_guest(
            &tests::process::vmm_binary(env!("CARGO_BIN_EXE_vmm-cli")),
            &report,
        );
        // SAFETY: kill(2) on our own child.
        assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
        let o = wait_bounded(child, Duration::from_secs(30), &name);
        assert_eq!(o.status.code(), Some(128 + sig), "{name}");
        let r = json(&report);
        assert_eq!(r["outcome"], "interrupted", "{name}");
        assert_eq!(r["signal"], name.as_str());
    }
    // SIGURG is the vCPU kick: from outside it changes nothing.
    let report = scratch("sig-urg.json");
    let child = tests::spawn_spinning_guest(
        &tests::process::vmm_binary(env!("CARGO_BIN_EXE_vmm-cli")),
        &report,
    );
    for _ in 0..20 {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGURG) };
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut child = child;
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGURG stopped the run"
    );
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let o = wait_bounded(child, Duration::from_secs(30), "SIGTERM after SIGURG");
    assert_eq!(o.status.code(), Some(143));
}

#[test]
fn absurd_flag_values_get_messages_that_say_what_is_allowed() {
    for (args, needle) in [
        (vec!["--timeout", "1e300"], "at most 2592000 (30 days)"),
        (vec!["--timeout", "-1"], "greater than 0"),
        (vec!["--mem", "-1G"], "sizes are positive"),
        (vec!["--trace-cap", "-4K"], "sizes are positive"),
    ] {
        let o = run_bounded(
            vmm().args(["run", "--firmware"]).arg(fw()).args(&args),
            needle,
        );
        let err = err_text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(err.len() < 400, "{args:?}: {err}");
    }
}
