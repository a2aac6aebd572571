//! Boots a TD whose kernel accepts memory lazily, through the library's
//! public front only, and checks its report: what a CI job embedding the
//! VMM does. The guest images come from the arguments or the environment:
//!
//! ```text
//! cargo xtask build   # the guests, in target/guests/x86_64-unknown-none/release/
//! G=target/guests/x86_64-unknown-none/release
//! cargo run --release -p vmm --example boot_lazy -- $G/guest-fw $G/guest-kernel [REPORT.json]
//! VMM_FIRMWARE=$G/guest-fw VMM_KERNEL=$G/guest-kernel cargo run -p vmm --example boot_lazy
//! ```
//!
//! Exits 0 when the TD shut down cleanly with memory left pending, 1 when
//! the report says otherwise, 2 when the TD could not be built.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use vmm::{Outcome, Td, TdConfig};

/// Argument `index`, else the environment variable `var`.
fn input(index: usize, var: &str) -> Option<PathBuf> {
    std::env::args_os()
        .nth(index)
        .or_else(|| std::env::var_os(var))
        .map(PathBuf::from)
}

fn main() -> ExitCode {
    let (Some(firmware), Some(kernel)) = (input(1, "VMM_FIRMWARE"), input(2, "VMM_KERNEL")) else {
        eprintln!("usage: boot_lazy FIRMWARE KERNEL [REPORT.json] (or VMM_FIRMWARE, VMM_KERNEL)");
        return ExitCode::from(2);
    };
    let config = TdConfig::new(firmware)
        .kernel(kernel)
        .mem_bytes(4 << 30)
        // The firmware accepts nothing; the kernel accepts what its 64 MiB
        // workload needs, when it needs it.
        .cmdline("fw.accept=none workload=64M")
        .timeout(Duration::from_secs(120));
    let td = match Td::build(config) {
        Ok(td) => td,
        Err(e) => {
            eprintln!("boot_lazy: cannot build the TD: {e}");
            return ExitCode::from(2);
        }
    };
    let report = td.run();
    println!(
        "outcome {} exit_code {:?}: accepted {} bytes in {} calls, {} bytes still pending, bitmap {} ({:?} mismatches)",
        report.outcome,
        report.exit_code,
        report.accept.bytes_accepted,
        report.accept.calls,
        report.pages.pending_bytes,
        report.bitmap_state,
        report.bitmap_mismatches,
    );
    if let Some(path) = std::env::args_os().nth(3) {
        let json = serde_json::to_vec_pretty(&report).expect("a report serialises");
        if let Err(e) = std::fs::write(&path, json) {
            eprintln!(
                "boot_lazy: cannot write {}: {e}",
                PathBuf::from(path).display()
            );
            return ExitCode::from(2);
        }
    }
    let lazy = report.outcome == Outcome::Ok
        && report.exit_code == Some(0)
        && report.pages.pending_bytes > 0
        && report.bitmap_mismatches == Some(0);
    if !lazy {
        eprintln!("boot_lazy: not a clean lazy boot: {:?}", report.fatal);
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
