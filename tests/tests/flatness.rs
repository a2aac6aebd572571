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
        let mut accepts = None;
        for mem in [64 * MIB, GIB, 64 * GIB + 2 * MIB, 1 << 40, 64 << 40] {
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
            // None of the accepts is page by page, and their number does
            // not grow with RAM but for what grows in Linux too: RAM that
            // ends inside a 4 MiB block adds one (the kernel accepts a part
            // block at once, `__free_pages_core`), and the unaccepted
            // bitmap (a bit per 2 MiB: 4 MiB at 64 TiB) is memory the
            // firmware accepts to allocate it. (Whether the free memory
            // the kernel starts with just reaches its watermark can add
            // one block either way.)
            let a = &r["accept"];
            assert_eq!(a["ok_4k"], 0, "{ctx}: {a}");
            let calls = a["calls"].as_u64().unwrap();
            let part_block = u64::from(mem % (4 * MIB) != 0);
            let bitmap_accepts = (mem / UNIT / 8).div_ceil(UNIT);
            let base = *accepts.get_or_insert(calls);
            assert!(
                calls + 1 >= base && calls <= base + 1 + part_block + bitmap_accepts,
                "{ctx}: {calls} accepts, {base} at 64 MiB: {a}"
            );
            // The host built directories below 4 GiB only; the kernel
            // mapped the GiB of that part block (free memory from boot on)
            // and nothing else.
            let mapped_by_guest = u64::from(part_block == 1 && mem > 3 * GIB);
            assert_eq!(
                r["host"]["guest_page_table_bytes"].as_u64(),
                Some((host_table_pages(mem) + mapped_by_guest) * 4096),
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
