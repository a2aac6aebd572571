//! td-shim, a TD firmware written elsewhere, on this VMM: its TDVF image
//! is parsed, measured and patched, and it boots at the reset vector in
//! the TDX module's initial state, accepts every byte of RAM itself and
//! starts its payload, which converts its shared pool with MapGPA, writes
//! through the shared alias, asks for a TD report and ends as it is
//! written to: a panic reported with ReportFatalError, code 0. The images
//! are shared test data; without them the tests skip visibly, and fail
//! under `REQUIRE_TDSHIM=1`.

use tests::{require_kvm, tdshim_image};
use vmm::{Outcome, ProfileChoice, Td, TdConfig, TdError};

const GIB: u64 = 1 << 30;

#[test]
fn td_shim_boots_and_its_example_payload_runs_to_its_end() {
    let test = "td_shim_boots_and_its_example_payload_runs_to_its_end";
    if !require_kvm(test) {
        return;
    }
    let Some(image) = tdshim_image(test, "example-2m-quiet.bin") else {
        return;
    };
    let config = TdConfig::new(image)
        .mem_bytes(GIB)
        .cpu_profile(ProfileChoice::Standard)
        // What td-shim's own tests expect (no SEPT_VE_DISABLE).
        .td_attributes(0)
        .timeout(std::time::Duration::from_secs(600));
    let r = Td::build(config).expect("building the td-shim TD").run();
    assert_eq!(r.inputs.td_attributes, 0);
    // The TD HOB section (128 KiB at 8 MiB) is the only RAM the VMM adds;
    // td-shim accepts every other byte, the reset vector's first 8 MiB in
    // 4 KiB pages, the rest in 2 MiB pages.
    assert_eq!(r.pages.initial_bytes - (16 << 20), 0x20000, "{r:?}");
    assert_eq!(r.accept.bytes_accepted, GIB - 0x20000);
    // The payload's shared pool (1 MiB) is the only memory pending at the
    // end: MapGPA released it to pending when it became shared.
    assert_eq!(r.pages.pending_bytes, 1 << 20);
    assert_eq!(r.tdcalls.get("vmcall.ghci.0x10001"), Some(&1));
    // The reset vector accepts [0, 8 MiB) in 4 KiB pages, statuses
    // ignored; td-shim then asks for those four chunks in 2 MiB pages, gets
    // TDX_PAGE_SIZE_MISMATCH and falls back to 4 KiB accepts, each answered
    // TDX_PAGE_ALREADY_ACCEPTED (the exact values it compares with).
    assert_eq!(
        (
            r.accept.invalid,
            r.accept.size_mismatch,
            r.accept.already_accepted
        ),
        (0, 4, 4 * 512),
        "{:?}",
        r.accept
    );
    // Every TDCALL of td-shim's boot volume patched (2 in the reset
    // vector, 5 in td-shim, 3 in the payload), each at its own GPA in the
    // firmware window below 4 GiB.
    let sites = &r.inputs.tdcall_sites;
    assert_eq!(sites.len(), 10, "{sites:x?}");
    assert!(sites.iter().all(|g| (0xff00_0000..1 << 32).contains(g)));
    // MRTD measured, and td-shim's event log extended RTMR[0] (the HOB).
    let mrtd = r.td.mrtd.as_deref().expect("MRTD of a TDVF image");
    assert_eq!(mrtd.len(), 96);
    assert_ne!(r.td.rtmr[0], "0".repeat(96));
    assert!(r.tdcalls.get("TDG.MR.RTMR.EXTEND").is_some_and(|n| *n >= 1));
    // The payload ran to its end: it printed its HOB and the TD report,
    // then panicked as it always does when done, reported with
    // ReportFatalError code 0 (no message page).
    assert!(
        r.console.contains("Starting td-payload hob - 0x"),
        "{}",
        r.console
    );
    assert!(r.console.contains("Ok(TdxReport {"), "{}", r.console);
    assert!(
        r.console
            .contains("td-payload: all tests finished and enters dead loop"),
        "{}",
        r.console
    );
    assert_eq!(r.tdcalls.get("TDG.MR.REPORT"), Some(&1));
    assert_eq!(r.outcome, Outcome::GuestPanic, "{:?}", r.fatal);
    let fatal = r.fatal.as_ref().expect("the fatal error");
    assert_eq!(fatal.message, "guest fatal error 0x0 (unknown): ");
}

#[test]
fn a_tdvf_image_is_refused_where_it_cannot_run() {
    let test = "a_tdvf_image_is_refused_where_it_cannot_run";
    let Some(image) = tdshim_image(test, "example-2m-quiet.bin") else {
        return;
    };
    // pvm-native runs ring-3 code only: refused before /dev/kvm is used.
    let err = Td::build(
        TdConfig::new(&image)
            .mem_bytes(GIB)
            .cpu_profile(ProfileChoice::PvmNative),
    )
    .err()
    .expect("pvm-native refused");
    assert!(matches!(err, TdError::TdvfUnsupported(_)), "{err}");
    assert!(err.to_string().contains("pvm-native"), "{err}");
    // A payload of our own is refused: the image carries its payload.
    let err = Td::build(TdConfig::new(&image).mem_bytes(GIB).kernel(&image))
        .err()
        .expect("--kernel refused");
    assert!(err.to_string().contains("--kernel"), "{err}");
    // A damaged image: the descriptor the metadata pointer at the end of
    // the image names no longer reads TDVF.
    let mut bytes = std::fs::read(&image).unwrap();
    let end = bytes.len();
    let at = u32::from_le_bytes(bytes[end - 0x20..end - 0x1c].try_into().unwrap());
    let at = usize::try_from(at).unwrap();
    assert_eq!(&bytes[at..at + 4], b"TDVF");
    bytes[at] ^= 0xff;
    let bad = tests::scratch("tdvf-bad-signature.bin");
    std::fs::write(&bad, &bytes).unwrap();
    let err = Td::build(TdConfig::new(&bad).mem_bytes(GIB))
        .err()
        .expect("a bad signature refused");
    assert!(matches!(err, TdError::FirmwareFormat { .. }), "{err}");
    assert!(err.to_string().contains("signature"), "{err}");
    let _ = std::fs::remove_file(bad);
}

#[test]
fn upstream_td_shim_on_a_host_without_gib_pages_is_diagnosed_by_name() {
    let test = "upstream_td_shim_on_a_host_without_gib_pages_is_diagnosed_by_name";
    if !require_kvm(test) {
        return;
    }
    let Some(image) = tdshim_image(test, "example-upstream.bin") else {
        return;
    };
    let config = TdConfig::new(image)
        .mem_bytes(GIB)
        .td_attributes(0)
        .echo_console(false)
        .timeout(std::time::Duration::from_secs(600));
    let r = Td::build(config).expect("building the td-shim TD").run();
    match r.outcome {
        // This host's KVM offers no 1 GiB pages: td-shim's 1 GiB leaves
        // fault at its first fetch after loading CR3, and the VMM says so.
        Outcome::TripleFault => {
            let m = &r.fatal.as_ref().expect("a diagnostic").message;
            assert!(
                m.contains("maps 1 GiB pages") && m.contains("no Page1GB"),
                "{m}"
            );
        }
        // A host with 1 GiB guest pages runs it as far as the 2 MiB build.
        Outcome::GuestPanic => {
            eprintln!("{test}: this host offers 1 GiB guest pages; td-shim ran to its payload");
        }
        other => panic!("{test}: outcome {other}: {:?}", r.fatal),
    }
}

#[test]
fn lazy_td_shim_accepts_256_mib_and_its_payload_never_touches_the_rest() {
    let test = "lazy_td_shim_accepts_256_mib_and_its_payload_never_touches_the_rest";
    if !require_kvm(test) {
        return;
    }
    let Some(image) = tdshim_image(test, "example-lazy-2m.bin") else {
        return;
    };
    let config = TdConfig::new(image)
        .mem_bytes(GIB)
        .td_attributes(0)
        .echo_console(false)
        .timeout(std::time::Duration::from_secs(900));
    let r = Td::build(config).expect("building the td-shim TD").run();
    // The payload ran to its end: no access to memory never accepted
    // stopped it (that would be outcome pending_access, with the GPA).
    assert_eq!(r.outcome, Outcome::GuestPanic, "{:?}", r.fatal);
    assert!(
        r.console
            .contains("td-payload: all tests finished and enters dead loop"),
        "{}",
        tail(&r.console)
    );
    // td-shim's lazy-accept build accepts exactly 0x10000000 bytes of the
    // unaccepted resources (td-layout's TD_PAYLOAD_PARTIAL_ACCEPT_MEMORY_SIZE),
    // from 0 up: past the TD HOB's 128 KiB of initial memory at 8 MiB, its
    // accepted memory ends at 0x1002_0000.
    const LAZY: u64 = 0x1000_0000;
    const HOB: u64 = 0x20000;
    let top = LAZY + HOB;
    assert_eq!(r.accept.bytes_accepted, LAZY, "{:?}", r.accept);
    // It hands the rest to its payload as RAM: the E820 it prints.
    let e820 = format!(
        "E820Entry {{ addr: {top:x}, size: {:x}, type: 1 }}",
        GIB - top
    );
    assert!(r.console.contains(&e820), "no {e820} in the console");
    // The page states at the end: everything below `top` accepted but the
    // payload's 1 MiB shared pool (pending again since MapGPA shared it),
    // everything from `top` to the end of RAM pending, never touched.
    let ranges = &r.pages.accepted_ranges;
    assert_eq!(ranges.len(), 2, "{ranges:x?}");
    assert_eq!((ranges[0][0], ranges[1][1]), (0, top), "{ranges:x?}");
    assert_eq!(ranges[1][0] - ranges[0][1], 1 << 20, "{ranges:x?}");
    assert_eq!(r.pages.pending_bytes, GIB - top + (1 << 20));
    assert_eq!(r.tdcalls.get("vmcall.ghci.0x10001"), Some(&1));
}

/// Runs td-shim's own in-TD test suite (`test-td-payload`) from `image`
/// with the memory and vCPUs its configuration names, TD attributes 0,
/// and judges it as td-shim's CI does: the whole summary line (the
/// payload then ends on purpose with a panic reported as
/// ReportFatalError code 0). Returns how many tests ran.
fn suite_passes(test: &str, image: &str, mem: u64, cpus: u32) -> Option<u32> {
    if !require_kvm(test) {
        return None;
    }
    let image = tdshim_image(test, image)?;
    let config = TdConfig::new(image)
        .mem_bytes(mem)
        .cpus(cpus)
        .td_attributes(0)
        .echo_console(false)
        .timeout(std::time::Duration::from_secs(900));
    let r = Td::build(config).expect("building the td-shim TD").run();
    let summary = r
        .console
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .find(|l| l.starts_with("Test Result: "))
        .unwrap_or_else(|| panic!("no summary line; console ends {:?}", tail(&r.console)));
    let n: u32 = summary
        .strip_prefix("Test Result: Total run ")
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{summary:?}"));
    assert_eq!(
        summary,
        format!("Test Result: Total run {n} tests; {n} passed; 0 failed"),
        "console ends {:?}",
        tail(&r.console)
    );
    assert_eq!(r.outcome, Outcome::GuestPanic, "{:?}", r.fatal);
    // td-shim accepted every byte of RAM but its HOB (the payload's
    // shared pool went back to pending when it was shared).
    assert_eq!(r.accept.bytes_accepted, mem - 0x20000);
    let accepted: u64 = r.pages.accepted_ranges.iter().map(|[s, e]| e - s).sum();
    assert_eq!(accepted + r.pages.pending_bytes, mem);
    // On several vCPUs, td-shim's APs accepted their share in parallel.
    assert_eq!(r.per_vcpu.len(), abi::to_usize(u64::from(cpus)));
    for v in &r.per_vcpu {
        assert!(
            v.accepts > 0,
            "vCPU {} accepted nothing: {:?}",
            v.index,
            r.per_vcpu
        );
    }
    Some(n)
}

#[test]
fn td_shims_own_test_suite_passes() {
    // Config 1: 1 vCPU, 1 GiB.
    let n = suite_passes(
        "td_shims_own_test_suite_passes",
        "test1-2m-quiet.bin",
        GIB,
        1,
    );
    assert!(n.is_none_or(|n| n >= 9), "{n:?}");
}

#[test]
fn td_shims_own_test_suite_passes_with_2_gib() {
    // Config 2: 1 vCPU, 2 GiB.
    let test = "td_shims_own_test_suite_passes_with_2_gib";
    let n = suite_passes(test, "test2-2m-quiet.bin", 2 * GIB, 1);
    assert!(n.is_none_or(|n| n >= 8), "{n:?}");
}

#[test]
fn td_shims_own_test_suite_passes_on_2_vcpus_with_4_gib() {
    // Config 3: 2 vCPUs, 4 GiB: td-shim's AP accepts in parallel and is
    // woken through the mailbox (it spins, so it takes a host core).
    let test = "td_shims_own_test_suite_passes_on_2_vcpus_with_4_gib";
    let n = suite_passes(test, "test3-2m-quiet.bin", 4 * GIB, 2);
    assert!(n.is_none_or(|n| n >= 8), "{n:?}");
}

fn tail(console: &str) -> &str {
    let from = console.len().saturating_sub(600);
    let from = (from..=console.len())
        .find(|i| console.is_char_boundary(*i))
        .unwrap_or(0);
    &console[from..]
}
