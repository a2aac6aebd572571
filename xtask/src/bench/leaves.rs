//! Where a boot's time goes in the VMM: each TDCALL kind's handling time
//! (p50/p99, from the report's `tdcall_time`) and the boot's VMM share
//! (time in the VMM handling exits against time inside KVM_RUN, from
//! `per_vcpu`), for our lazy boot in each profile and, where td-shim's
//! images are (`$TDSHIM_DIR`, default `../shared/tdshim`), for td-shim on
//! one vCPU and on two. Writes `leaves.json` and `leaves.md`.

use super::{create_dir, run_vmm_any, write, write_json};
use crate::error::{Result, RunError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use vmm::report::TdcallTime;
use vmm::{Outcome, Report};

/// One boot's costs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BootCost {
    pub scenario: String,
    pub profile: String,
    pub vcpus: usize,
    /// Wall time of the run (the report's `timing_us.total`).
    pub total_us: u64,
    /// All vCPUs: time inside KVM_RUN, in the VMM, parked in HLT.
    pub kvm_run_ns: u64,
    pub vmm_ns: u64,
    pub idle_ns: u64,
    /// `vmm_ns / (vmm_ns + kvm_run_ns)`.
    pub vmm_share: f64,
    /// Per vCPU: the same share.
    pub vmm_share_per_vcpu: Vec<f64>,
    pub tdcall_time: BTreeMap<String, TdcallTime>,
}

fn share(vmm: u64, run: u64) -> f64 {
    if vmm + run == 0 {
        0.0
    } else {
        vmm as f64 / (vmm + run) as f64
    }
}

impl BootCost {
    fn of(scenario: &str, r: &Report) -> Self {
        let sum = |f: fn(&vmm::report::VcpuReport) -> u64| r.per_vcpu.iter().map(f).sum::<u64>();
        let (kvm_run_ns, vmm_ns, idle_ns) =
            (sum(|v| v.kvm_run_ns), sum(|v| v.vmm_ns), sum(|v| v.idle_ns));
        BootCost {
            scenario: scenario.to_string(),
            profile: r.cpu_profile_name().to_string(),
            vcpus: r.per_vcpu.len(),
            total_us: r.timing_us.get("total").copied().unwrap_or(0),
            kvm_run_ns,
            vmm_ns,
            idle_ns,
            vmm_share: share(vmm_ns, kvm_run_ns),
            vmm_share_per_vcpu: r
                .per_vcpu
                .iter()
                .map(|v| share(v.vmm_ns, v.kvm_run_ns))
                .collect(),
            tdcall_time: r.tdcall_time.clone(),
        }
    }
}

/// Where td-shim's images are, if anywhere.
fn tdshim_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("TDSHIM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("../shared/tdshim"));
    dir.join("example-2m-quiet.bin").is_file().then_some(dir)
}

/// Runs the boots and writes `leaves.json` and `leaves.md` into `out`.
/// `quick`: our boot in the first profile only.
pub fn leaves(out: &Path, profiles: &[String], quick: bool) -> Result<Vec<BootCost>> {
    let images = crate::build_guests()?;
    let vmm = crate::build_vmm()?;
    let scratch = out.join("reports");
    create_dir(&scratch)?;
    let mut rows = Vec::new();
    // Warm-up (discarded): on nested hosts the first touch of idle host
    // memory is several times slower than later ones, and accepts pay it.
    run_vmm_any(
        &vmm,
        &images,
        true,
        ["--mem", "4G"],
        &scratch.join("leaves-warm-up.json"),
        "warm-up",
    )?;
    let ours = if quick { &profiles[..1] } else { profiles };
    for profile in ours {
        let what = format!("our lazy boot, 4 GiB, {profile}");
        eprintln!("bench: {what}");
        let r = run_vmm_any(
            &vmm,
            &images,
            true,
            ["--mem", "4G", "--cpu-profile", profile],
            &scratch.join(format!("leaves-ours-{profile}.json")),
            &what,
        )?;
        expect(&r, Outcome::Ok, &what)?;
        rows.push(BootCost::of(&what, &r));
    }
    match (quick, tdshim_dir()) {
        (false, Some(dir)) => {
            for (image, mem, cpus) in [
                ("example-2m-quiet.bin", "1G", "1"),
                ("test3-2m-quiet.bin", "4G", "2"),
            ] {
                let what = format!("td-shim {image}, {mem}, {cpus} vCPU(s)");
                eprintln!("bench: {what}");
                let tdshim = crate::GuestImages {
                    firmware: dir.join(image),
                    kernel: images.kernel.clone(),
                };
                let r = run_vmm_any(
                    &vmm,
                    &tdshim,
                    false,
                    ["--mem", mem, "--cpus", cpus, "--td-attributes", "0"],
                    &scratch.join(format!("leaves-{image}.json")),
                    &what,
                )?;
                // td-shim's payloads end with a panic reported as
                // ReportFatalError code 0.
                expect(&r, Outcome::GuestPanic, &what)?;
                rows.push(BootCost::of(&what, &r));
            }
        }
        (false, None) => eprintln!("bench: no td-shim images (TDSHIM_DIR): td-shim rows left out"),
        (true, _) => {}
    }
    write_json(&out.join("leaves.json"), &rows)?;
    write(&out.join("leaves.md"), &markdown(&rows))?;
    Ok(rows)
}

fn expect(r: &Report, want: Outcome, what: &str) -> Result<()> {
    if r.outcome == want {
        return Ok(());
    }
    Err(RunError::Outcome {
        outcome: r.outcome,
        fatal: r.fatal.as_ref().map(|f| f.message.clone()),
    }
    .of(what))
}

/// The table: one section per boot.
pub fn markdown(rows: &[BootCost]) -> String {
    let mut s = String::from(
        "# Where a boot's time goes in the VMM\n\n\
         `cargo xtask bench --leaves` (`leaves.rs`), after one warm-up boot. *VMM share*: time the vCPU threads spent in the VMM \
         handling exits, against time inside KVM_RUN (guest code, and KVM's own work: on kvm_pvm \
         the emulation of every ring-0 instruction). Handling times are per TDCALL kind, from the \
         exit's registers read to the outputs written back (an accept's zeroing and backing \
         included), as log-scale bucket edges (within 19%). td-shim's APs spin on their mailbox \
         inside KVM_RUN, so each AP occupies a host core for the whole boot and counts as guest \
         time.\n",
    );
    for r in rows {
        s.push_str(&format!(
            "\n## {}\n\n{} vCPU(s), {} profile, {:.2} s wall; VMM {:.3} s, KVM_RUN {:.3} s, idle {:.3} s: \
             **VMM share {:.1}%** (per vCPU: {})\n\n\
             | TDCALL | calls | p50 | p99 | total |\n|---|---|---|---|---|\n",
            r.scenario,
            r.vcpus,
            r.profile,
            r.total_us as f64 / 1e6,
            r.vmm_ns as f64 / 1e9,
            r.kvm_run_ns as f64 / 1e9,
            r.idle_ns as f64 / 1e9,
            100.0 * r.vmm_share,
            r.vmm_share_per_vcpu
                .iter()
                .map(|x| format!("{:.1}%", 100.0 * x))
                .collect::<Vec<_>>()
                .join(", "),
        ));
        let mut kinds: Vec<_> = r.tdcall_time.iter().collect();
        kinds.sort_by_key(|(_, t)| std::cmp::Reverse(t.total_ns));
        for (name, t) in kinds {
            s.push_str(&format!(
                "| {name} | {} | {} | {} | {:.3} ms |\n",
                t.count,
                ns(t.p50_ns),
                ns(t.p99_ns),
                t.total_ns as f64 / 1e6
            ));
        }
    }
    s
}

fn ns(v: u64) -> String {
    match v {
        0..1_000 => format!("{v} ns"),
        1_000..1_000_000 => format!("{:.1} us", v as f64 / 1e3),
        _ => format!("{:.2} ms", v as f64 / 1e6),
    }
}
