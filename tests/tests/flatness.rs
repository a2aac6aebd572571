//! The lazy boot from 1 GiB to 64 TiB: no RAM size leaves a 2 MiB unit part
//! initial, part pending (`pages.units`), every size makes the same accepts,
//! the host builds page directories for the first 4 GiB only, and a 64 TiB
//! TD stays small in host memory. Each boot is its own `vmm` process, so
//! its peak RSS is its own.

use std::process::Command;
use tests::process::{json, run_within};
use tests::{guests, profiles, require_kvm, scratch};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
const UNIT: u64 = 2 * MIB;

/// Page-table pages the host builds with 2 MiB leaves: the PML4, a PDPT
/// per 512 GiB of the map (RAM and the hole, at least 4 GiB), a page
/// directory per GiB below 4 GiB.
fn host_table_pages(mem: u64) -> u64 {
    let top = if mem > 3 * GIB { mem + GIB } else { 4 * GIB };
    let gibs = top.div_ceil(GIB);
    1 + gibs.div_ceil(512) + 4
}

fn lazy_boot(profile: &str, mem: u64) -> serde_json::Value {
    let report = scratch("flat.json");
    let mut cmd = Command::new(tests::process::vmm_binary(env!("CARGO_BIN_EXE_vmm-cli")));
    cmd.args(["run", "--quiet", "--cpu-profile", profile, "--mem"])
        .arg(format!("{}M", mem / MIB))
        .arg("--firmware")
        .arg(&guests().firmware)
        .arg("--kernel")
        .arg(&guests().kernel)
        .args(["--cmdline", "fw.accept=none accept_memory=lazy", "--report"])
        .arg(&report);
    let what = format!("{profile} lazy boot of {} MiB", mem / MIB);
    let o = run_within(&mut cmd, std::time::Duration::from_secs(600), &what);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{what}: {}",
        tests::process::err_text(&o)
    );
    json(&report)
}

#[test]
fn the_lazy_boot_is_flat_from_1_gib_to_64_tib() {
    let test = "the_lazy_boot_is_flat_from_1_gib_to_64_tib";
    if !require_kvm(test) {
        return;
    }
    for p in profiles(test) {
        let profile = tests::name(p);
        // The standard profile on a kvm_pvm host emulates ring 0: its line
        // stops at 1 TiB to keep the test short (the pvm-native one runs
        // to 64 TiB; both run the same guest code).
        let sizes: &[u64] = if profile == "standard" {
            &[64 * MIB, GIB, 64 * GIB + 2 * MIB, 1 << 40]
        } else {
            &[64 * MIB, GIB, 64 * GIB + 2 * MIB, 1 << 40, 64 << 40]
        };
        let mut accepts = None;
        for &mem in sizes {
            let r = lazy_boot(profile, mem);
            let ctx = format!("{profile} {} MiB", mem / MIB);
            assert_eq!(r["outcome"], "ok", "{ctx}: {}", r["fatal"]);
            assert_eq!(r["bitmap_mismatches"], 0, "{ctx}");
            // Initial memory is whole units from 0; every other unit of RAM
            // is wholly pending.
            let units = &r["pages"]["units"];
            assert_eq!(units["partial"], serde_json::json!([]), "{ctx}");
            let initial = r["pages"]["initial_bytes"].as_u64().unwrap();
            assert_eq!(initial % UNIT, 0, "{ctx}");
            assert_eq!(
                units["initial_units"].as_u64(),
                Some(initial / UNIT),
                "{ctx}"
            );
            assert_eq!(
                units["pending_units"].as_u64(),
                Some((mem - initial) / UNIT),
                "{ctx}"
            );
            // The same accepts at every size: none of them page by page.
            let a = &r["accept"];
            assert_eq!(a["ok_4k"], 0, "{ctx}: {a}");
            let calls = a["calls"].as_u64().unwrap();
            assert_eq!(*accepts.get_or_insert(calls), calls, "{ctx}: {a}");
            // The host built directories below 4 GiB only, and this boot
            // used no memory above 4 GiB that needed one.
            assert_eq!(
                r["host"]["guest_page_table_bytes"].as_u64(),
                Some(host_table_pages(mem) * 4096),
                "{ctx}"
            );
            let dir = r["guest"]["allocator_directory_bytes"].as_u64().unwrap();
            // The top array (a word per 2 GiB) and a few section pages.
            assert!(
                dir <= (mem + GIB).div_ceil(2 * GIB) * 8 + 8 * 4096,
                "{ctx}: directory {dir} bytes"
            );
            if mem == 64 << 40 {
                let rss = r["host"]["rss_peak_bytes"].as_u64().unwrap();
                assert!(rss < 160 * MIB, "{ctx}: peak RSS {} MiB", rss / MIB);
            }
        }
    }
}
