//! Shared helpers of the integration tests: KVM availability (skip with a
//! visible message, or fail when `REQUIRE_KVM=1`), CPU profiles to cover,
//! guests built once per test process, booting a TD in-process, scratch
//! files, the PT_LOAD headers of an ELF image, and a `vmm run` process
//! whose guest spins forever (for signal tests); `process` has the rest of
//! what process-level tests share.

use std::sync::OnceLock;
use vmm::ProfileChoice;
use vmm::{Report, Td, TdConfig};

pub mod process;

pub use guest_build::GuestImages;

/// True when /dev/kvm can be opened read-write.
pub fn kvm_available() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// Says a test (or part of one) was skipped, with `SKIPPED` and why, on
/// the process's stderr itself: the test harness captures `eprintln!`
/// and shows it only for failures, so a skip printed that way is not
/// visible. CI's summary fails on any `SKIPPED` line it did not allow.
pub fn skip(message: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let line = format!("SKIPPED {message}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "1")
}

/// Returns false (and says so on stderr) when KVM is missing; panics
/// instead when `REQUIRE_KVM=1`.
pub fn require_kvm(test: &str) -> bool {
    if kvm_available() {
        return true;
    }
    assert!(
        !env_flag("REQUIRE_KVM"),
        "{test}: /dev/kvm is not usable and REQUIRE_KVM=1"
    );
    skip(format_args!(
        "{test}: /dev/kvm is not available (set REQUIRE_KVM=1 to make this a failure)"
    ));
    false
}

/// The td-shim image `name` from the shared test data (`$TDSHIM_DIR`, by
/// default `../shared/tdshim/` beside the repository), or `None` with a
/// visible message when it is absent; absent is a failure when
/// `REQUIRE_TDSHIM=1`.
pub fn tdshim_image(test: &str, name: &str) -> Option<std::path::PathBuf> {
    let dir = match std::env::var_os("TDSHIM_DIR") {
        Some(dir) => std::path::PathBuf::from(dir),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/tdshim"),
    };
    let path = dir.join(name);
    if path.is_file() {
        return Some(path);
    }
    assert!(
        !env_flag("REQUIRE_TDSHIM"),
        "{test}: {} is missing and REQUIRE_TDSHIM=1",
        path.display()
    );
    skip(format_args!(
        "{test}: no td-shim image at {} (set TDSHIM_DIR, or REQUIRE_TDSHIM=1 to make this a failure)",
        path.display()
    ));
    None
}

/// True when this host's KVM is kvm_pvm (the pvm-native profile exists).
pub fn host_is_pvm() -> bool {
    std::path::Path::new("/sys/module/kvm_pvm").exists()
}

/// The CPU profiles to run a scenario in: always the standard one; the
/// pvm-native one on a kvm_pvm host (skipped with a message elsewhere,
/// a failure when `REQUIRE_PVM=1`).
pub fn profiles(test: &str) -> Vec<ProfileChoice> {
    let mut v = vec![ProfileChoice::Standard];
    if host_is_pvm() {
        v.push(ProfileChoice::PvmNative);
    } else {
        assert!(
            !env_flag("REQUIRE_PVM"),
            "{test}: host is not kvm_pvm and REQUIRE_PVM=1"
        );
        skip(format_args!("{test} [pvm-native]: host KVM is not kvm_pvm"));
    }
    v
}

/// Runs `f` once per CPU profile (see `profiles`), if KVM is usable.
pub fn in_each_profile(test: &str, mut f: impl FnMut(ProfileChoice)) {
    if !require_kvm(test) {
        return;
    }
    for p in profiles(test) {
        eprintln!("{test}: profile {}", name(p));
        f(p);
    }
}

/// The guests, built once per test process.
pub fn guests() -> &'static GuestImages {
    static GUESTS: OnceLock<GuestImages> = OnceLock::new();
    GUESTS.get_or_init(|| {
        guest_build::build_guests().unwrap_or_else(|e| panic!("building guests: {e}"))
    })
}

/// A configuration for the built firmware alone: it shuts the TD down
/// after its own work, so firmware behaviour is measured in isolation.
pub fn config(profile: ProfileChoice, mem: u64, cmdline: &str) -> TdConfig {
    TdConfig::new(guests().firmware.clone())
        .cpu_profile(profile)
        .mem_bytes(mem)
        .cmdline(cmdline)
        .timeout(std::time::Duration::from_secs(120))
        .pending(pending_from_env())
}

/// `TEST_PENDING=memslots|uffd-poison` runs every test with that pending
/// mechanism (CI runs the core scenarios again with `memslots`, the
/// fallback of hosts without UFFDIO_POISON); unset: the VMM's `auto`.
pub fn pending_from_env() -> Option<vmm::PendingMechanism> {
    use vmm::PendingMechanism;
    match std::env::var("TEST_PENDING").ok()?.as_str() {
        "memslots" => Some(PendingMechanism::Memslots),
        "uffd-poison" => Some(PendingMechanism::UffdPoison),
        "" | "auto" => None,
        other => panic!("TEST_PENDING={other}: expected memslots, uffd-poison or auto"),
    }
}

/// The same with the built kernel as payload: the firmware hands over.
pub fn config_with_kernel(profile: ProfileChoice, mem: u64, cmdline: &str) -> TdConfig {
    config(profile, mem, cmdline).kernel(guests().kernel.clone())
}

/// Builds and runs a TD in-process.
pub fn boot(config: TdConfig) -> Report {
    let td = Td::build(config).unwrap_or_else(|e| panic!("building the TD: {e}"));
    td.run()
}

/// A path for a test's scratch file, in a directory private to this test
/// process.
pub fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tdx-accept-emu-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir.join(name)
}

/// Name of a profile for messages.
pub fn name(p: ProfileChoice) -> &'static str {
    p.as_str()
}

/// Offsets of the PT_LOAD program headers of a 64-bit ELF image.
pub fn pt_load_headers(image: &[u8]) -> Vec<usize> {
    let u16_at = |o: usize| u16::from_le_bytes(image[o..o + 2].try_into().unwrap()) as usize;
    let phoff = abi::to_usize(u64::from_le_bytes(image[0x20..0x28].try_into().unwrap()));
    let (size, count) = (u16_at(0x36), u16_at(0x38));
    (0..count)
        .map(|i| phoff + i * size)
        .filter(|&h| u32::from_le_bytes(image[h..h + 4].try_into().unwrap()) == 1)
        .collect()
}

/// Starts `vmm` (the binary at `exe`) with the firmware's `hang` self-test
/// and `--report report`, and returns the child once the guest says (on
/// the console echo) that it spins.
pub fn spawn_spinning_guest(exe: &str, report: &std::path::Path) -> std::process::Child {
    use std::io::BufRead;
    let mut child = std::process::Command::new(exe)
        .args([
            "run",
            "--mem",
            "1G",
            "--cmdline",
            "fw.accept=none fw.selftest=hang",
            "--report",
        ])
        .arg(report)
        .arg("--firmware")
        .arg(&guests().firmware)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the vmm");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("selftest hang") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(std::time::Duration::from_secs(60))
        .expect("the guest reached its spin loop");
    child
}
