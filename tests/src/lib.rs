//! Shared helpers of the integration tests: KVM availability (skip with a
//! visible message, or fail when `REQUIRE_KVM=1`), CPU profiles to cover,
//! guests built once per test process, booting a TD in-process, and
//! scratch files.

use std::sync::OnceLock;
use vmm::cpu::ProfileChoice;
use vmm::{Report, Td, TdConfig};

pub use xtask::GuestImages;

/// True when /dev/kvm can be opened read-write.
pub fn kvm_available() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
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
    eprintln!(
        "SKIPPED {test}: /dev/kvm is not available (set REQUIRE_KVM=1 to make this a failure)"
    );
    false
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
        eprintln!("SKIPPED {test} [pvm-native]: host KVM is not kvm_pvm");
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
    GUESTS.get_or_init(|| xtask::build_guests().unwrap_or_else(|e| panic!("building guests: {e}")))
}

/// A configuration for the built firmware alone: it shuts the TD down
/// after its own work, so firmware behaviour is measured in isolation.
pub fn config(profile: ProfileChoice, mem: u64, cmdline: &str) -> TdConfig {
    let g = guests();
    let mut c = TdConfig::new(g.firmware.clone());
    c.profile = profile;
    c.mem_bytes = mem;
    c.cmdline = cmdline.to_string();
    c.timeout = Some(std::time::Duration::from_secs(120));
    c
}

/// The same with the built kernel as payload: the firmware hands over.
pub fn config_with_kernel(profile: ProfileChoice, mem: u64, cmdline: &str) -> TdConfig {
    let mut c = config(profile, mem, cmdline);
    c.kernel = Some(guests().kernel.clone());
    c
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
    match p {
        ProfileChoice::Auto => "auto",
        ProfileChoice::Standard => "standard",
        ProfileChoice::PvmNative => "pvm-native",
    }
}
