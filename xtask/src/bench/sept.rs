//! The host's page size as an axis of `cargo xtask bench` (`--sept` runs it
//! alone): lazy and eager kernel boots with `--sept-level 2m` and `4k` on 1,
//! 2 and 4 vCPUs (the shape of a TD whose host maps private memory in
//! 4 KiB pages, as KVM's TDX support does today), and the firmware's
//! acceptance of 2 GiB in 4 KiB pages only (`fw.accept_page=4k`, OVMF's
//! worst case) against 2 MiB pages and against its floor (one doorbell
//! round trip per accept, measured in the same run), and the firmware's
//! acceptance of 3 GiB over 4 KiB leaves (the memslot count). The first
//! profile gets every vCPU count; the others (the emulated ring-0 profile,
//! where every guest instruction costs) one vCPU. Interleaved repeats,
//! medians. Writes `sept.json` and `sept.csv`; `targets.md` reads them.

use super::stats::Stat;
use super::{create_dir, progress_bar, run_vmm, write, write_json};
use crate::error::{Result, RunError};
use serde::{Deserialize, Serialize};
use std::path::Path;
use vmm::Report;

/// One measured point.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SeptPoint {
    /// `kernel-lazy`, `kernel-eager`, `fw-4k-only`, `fw-2m`.
    pub series: String,
    /// `2m` or `4k`.
    pub sept_level: String,
    pub vcpus: u32,
    pub runs: usize,
    /// Boot to `kernel_ready`, or the firmware's accept phase.
    pub time_ms: Stat,
    pub accepts: Stat,
    pub size_mismatches: Stat,
    /// Most memslots installed at once.
    #[serde(default)]
    pub memslots_peak: Option<Stat>,
}

/// `sept.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SeptResults {
    pub host_cores: usize,
    pub resolved_profile: String,
    pub repeats: usize,
    /// The doorbell round trip measured in this run (median of the runs).
    pub doorbell_rtt_ns: f64,
    /// The pending mechanism the runs used (`--pending auto`).
    #[serde(default)]
    pub pending_mechanism: String,
    pub points: Vec<SeptPoint>,
}

/// `sept.json`: one entry per profile.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SeptAxis {
    pub profiles: Vec<SeptResults>,
}

impl SeptResults {
    pub fn point(&self, series: &str, sept: &str, vcpus: u32) -> Option<&SeptPoint> {
        self.points
            .iter()
            .find(|p| p.series == series && p.sept_level == sept && p.vcpus == vcpus)
    }
}

struct Case {
    series: &'static str,
    sept: &'static str,
    vcpus: u32,
    mem: &'static str,
    kernel: bool,
    cmdline: &'static str,
}

/// The firmware's 4 KiB-only acceptance covers this many bytes.
pub const FW_4K_BYTES: u64 = 2 << 30;

fn cases(counts: &[u32]) -> Vec<Case> {
    let mut v = Vec::new();
    for &n in counts {
        for sept in ["2m", "4k"] {
            v.push(Case {
                series: "kernel-lazy",
                sept,
                vcpus: n,
                mem: "8G",
                kernel: true,
                cmdline: "fw.accept=none accept_memory=lazy workload=256M",
            });
            v.push(Case {
                series: "kernel-eager",
                sept,
                vcpus: n,
                mem: "2G",
                kernel: true,
                cmdline: "fw.accept=none accept_memory=eager",
            });
        }
    }
    for (series, sept, mem, cmdline) in [
        ("fw-2m", "2m", "3G", "fw.accept=2G"),
        ("fw-4k-only", "2m", "3G", "fw.accept=2G fw.accept_page=4k"),
        // All 3 GiB below 4 GiB over 4 KiB leaves: the memslot count.
        ("fw-3g", "4k", "4G", "fw.accept=all"),
    ] {
        v.push(Case {
            series,
            sept,
            vcpus: 1,
            mem,
            kernel: false,
            cmdline,
        });
    }
    v
}

fn time_of(series: &str, r: &Report) -> Option<f64> {
    if series.starts_with("fw-") {
        let (a, b) = (
            r.timing_us.get("fw_start")?,
            r.timing_us.get("fw_accept_done")?,
        );
        Some(b.saturating_sub(*a) as f64 / 1e3)
    } else {
        r.timing_us.get("kernel_ready").map(|us| *us as f64 / 1e3)
    }
}

/// Runs the axis in each of `profiles` (`counts` vCPU counts in the
/// first, one vCPU in the others), `repeats` interleaved times, and writes
/// `sept.json` and `sept.csv`.
pub fn sept(out: &Path, profiles: &[String], repeats: usize, counts: &[u32]) -> Result<SeptAxis> {
    create_dir(out)?;
    let mut axis = SeptAxis {
        profiles: Vec::new(),
    };
    for (i, profile) in profiles.iter().enumerate() {
        let counts = if i == 0 {
            counts
        } else {
            &counts[..1.min(counts.len())]
        };
        axis.profiles.push(sept_in(out, profile, repeats, counts)?);
    }
    write_json(&out.join("sept.json"), &axis)?;
    let mut csv = String::from(
        "series,sept_level,vcpus,host_cores,profile,pending_mechanism,runs,time_ms_median,time_ms_min,time_ms_max,accepts_median,size_mismatches_median,memslots_peak_median\n",
    );
    for results in &axis.profiles {
        for p in &results.points {
            csv.push_str(&format!(
                "{},{},{},{},{},{},{},{:.3},{:.3},{:.3},{},{},{}\n",
                p.series,
                p.sept_level,
                p.vcpus,
                results.host_cores,
                results.resolved_profile,
                results.pending_mechanism,
                p.runs,
                p.time_ms.median,
                p.time_ms.min,
                p.time_ms.max,
                p.accepts.median,
                p.size_mismatches.median,
                p.memslots_peak.as_ref().map_or(0.0, |s| s.median)
            ));
        }
    }
    write(&out.join("sept.csv"), &csv)?;
    Ok(axis)
}

/// The axis in one profile.
fn sept_in(out: &Path, profile: &str, repeats: usize, counts: &[u32]) -> Result<SeptResults> {
    let images = crate::build_guests()?;
    let vmm = crate::build_vmm()?;
    let report = out.join("sept-report.json");
    let run = |mem: &str, cpus: u32, sept: &str, kernel: bool, cmdline: &str, what: &str| {
        let cpus = cpus.to_string();
        run_vmm(
            &vmm,
            &images,
            kernel,
            [
                "--mem",
                mem,
                "--cpus",
                &cpus,
                "--sept-level",
                sept,
                "--cpu-profile",
                profile,
                "--cmdline",
                cmdline,
            ],
            &report,
            what,
        )
    };
    let cases = cases(counts);
    // Warm the host's memory with the largest eager run.
    run(
        "8G",
        1,
        "2m",
        true,
        "fw.accept=none accept_memory=eager",
        "warm-up",
    )?;
    let mut reports: Vec<Vec<Report>> = cases.iter().map(|_| Vec::new()).collect();
    let mut rtts = Vec::new();
    let bar = progress_bar(cases.len() * repeats, "sept");
    for _ in 0..repeats {
        for (i, c) in cases.iter().enumerate() {
            bar.set_message(format!("{} {} x{}", c.series, c.sept, c.vcpus));
            let what = format!("{} sept {} on {} vCPUs", c.series, c.sept, c.vcpus);
            reports[i].push(run(c.mem, c.vcpus, c.sept, c.kernel, c.cmdline, &what)?);
            bar.inc(1);
            // After gigabytes accepted in 4 KiB pages (backed by 4 KiB host
            // pages with uffd-poison), the next run's first population of
            // huge pages on this nested host is several times slower once
            // (2 GiB: 4.4 s instead of 0.15 s, measured): a warm-up run
            // absorbs it so the 2 MiB rows measure acceptance.
            if c.sept == "4k" || c.series == "fw-4k-only" {
                run(
                    "4G",
                    1,
                    "2m",
                    false,
                    "fw.accept=all",
                    "warm-up after 4 KiB pages",
                )?;
            }
        }
        // The floor, in the same sitting.
        let r = run(
            "1G",
            1,
            "2m",
            false,
            "fw.accept=none fw.bench=20000",
            "doorbell",
        )?;
        let rtt = r
            .bench
            .ok_or_else(|| RunError::NoBench("doorbell").of("doorbell"))?
            .doorbell_rtt_ns;
        rtts.push(rtt as f64);
    }
    bar.finish_with_message("done");
    let _ = std::fs::remove_file(&report);
    let first = reports.first().and_then(|r| r.first());
    let resolved_profile =
        first.map_or_else(|| profile.to_string(), |r| r.cpu_profile_name().to_string());
    let pending_mechanism = first.map_or_else(String::new, |r| {
        r.host.pending_mechanism.as_str().to_string()
    });
    let mut points = Vec::new();
    for (c, runs) in cases.iter().zip(reports) {
        let times: Vec<f64> = runs.iter().filter_map(|r| time_of(c.series, r)).collect();
        points.push(SeptPoint {
            series: c.series.into(),
            sept_level: c.sept.into(),
            vcpus: c.vcpus,
            runs: runs.len(),
            time_ms: Stat::of(times)?,
            accepts: Stat::of(runs.iter().map(|r| r.accept.calls as f64).collect())?,
            size_mismatches: Stat::of(
                runs.iter().map(|r| r.accept.size_mismatch as f64).collect(),
            )?,
            memslots_peak: Some(Stat::of(
                runs.iter().map(|r| r.host.memslots_peak as f64).collect(),
            )?),
        });
    }
    Ok(SeptResults {
        host_cores: super::host_cores(),
        resolved_profile,
        repeats,
        doorbell_rtt_ns: Stat::of(rtts)?.median,
        pending_mechanism,
        points,
    })
}

/// The rows `targets.md` gets from `sept.json` in `out`.
pub fn target_rows(out: &Path) -> Vec<(String, String, Option<bool>)> {
    let Some(axis) = std::fs::read_to_string(out.join("sept.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<SeptAxis>(&t).ok())
    else {
        return Vec::new();
    };
    axis.profiles.iter().flat_map(profile_rows).collect()
}

fn profile_rows(r: &SeptResults) -> Vec<(String, String, Option<bool>)> {
    let tag = format!(
        "[{}, {} host cores, --pending {}] ",
        r.resolved_profile, r.host_cores, r.pending_mechanism
    );
    let mut rows = Vec::new();
    if let Some(p) = r.point("fw-3g", "4k", 1) {
        let peak = p.memslots_peak.as_ref().map_or(f64::NAN, |s| s.median);
        rows.push((
            format!("{tag}memslots with --sept-level 4k, 4 KiB accepts over 3 GiB < 64"),
            format!(
                "peak {peak:.0} slots ({:.0} accepts in {:.1} s)",
                p.accepts.median,
                p.time_ms.median / 1e3
            ),
            Some(peak < 64.0),
        ));
    }
    if let Some(p) = r.point("fw-4k-only", "2m", 1) {
        let pages = FW_4K_BYTES / abi::PAGE_4K;
        let floor_ms = pages as f64 * r.doorbell_rtt_ns / 1e6;
        rows.push((
            format!("{tag}fw.accept_page=4k over 2 GiB <= 1.6 x the doorbell floor ({pages} round trips)"),
            format!(
                "{:.0} / {floor_ms:.0} ms = x{:.2} (round trip {:.0} ns, same run)",
                p.time_ms.median,
                p.time_ms.median / floor_ms,
                r.doorbell_rtt_ns
            ),
            Some(p.time_ms.median <= 1.6 * floor_ms),
        ));
    }
    for series in ["kernel-lazy", "kernel-eager"] {
        let cells: Vec<String> = [1, 2, 4]
            .iter()
            .filter_map(|n| {
                let a = r.point(series, "2m", *n)?.time_ms.median;
                let b = r.point(series, "4k", *n)?.time_ms.median;
                Some(format!("{n} vCPU: {b:.0} / {a:.0} ms = x{:.1}", b / a))
            })
            .collect();
        if !cells.is_empty() {
            rows.push((
                format!("{tag}{series} boot, --sept-level 4k vs 2m (measured, no target)"),
                cells.join("; "),
                None,
            ));
        }
    }
    rows
}
