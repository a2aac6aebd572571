//! The vCPU axis of `cargo xtask bench` (`--vcpus` runs it alone): the
//! firmware's parallel acceptance of all RAM below 4 GiB with
//! `fw.accept_cpus` = vCPUs = 1, 2, 4; the kernel's lazy and eager boots on
//! 1, 2 and 4 vCPUs; the three `unaccepted_lock` policies under a parallel
//! workload (time and lock wait); and the VMM's handling time per accept
//! while 2 vCPUs accept disjoint memory. Runs are interleaved, each point
//! is a median, and every result carries the host's core count (more
//! vCPUs than cores time-share). Writes `vcpus.json`, `vcpus.csv` and the
//! `lock_wait` and `vcpu_scaling` plots (`vcpu_plots`, drawn by `bench::vcpu_axis`);
//! `targets.md` reads `vcpus.json`.

use super::stats::Stat;
use super::{create_dir, progress_bar, run_vmm_any, write, write_json};
use crate::error::{Result, RunError};
use serde::{Deserialize, Serialize};
use std::path::Path;
use vmm::Report;

/// asterinas's published eager acceptance of 8 GiB: seconds on 1, 4 and
/// 8 vCPUs (the curve people compare against).
pub const ASTERINAS_8G_SECONDS: [(u32, f64); 3] = [(1, 25.0), (4, 12.0), (8, 9.0)];

/// One measured point: a series at a vCPU count.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Point {
    /// `fw-accept-2m`, `fw-accept-4k`, `kernel-lazy`, `kernel-eager`,
    /// `lock-list`, `lock-global`, `lock-none`.
    pub series: String,
    pub vcpus: u32,
    pub runs: usize,
    /// What the series times: the firmware's accept phase, the boot to
    /// `kernel_ready`, or the parallel workload.
    pub time_ms: Option<Stat>,
    /// Sum over the vCPUs of the time spent waiting on the kernel's accept
    /// lock (lock series).
    pub lock_wait_ms: Option<Stat>,
    /// The VMM's handling time per accept, p50 of each run.
    pub accept_p50_ns: Stat,
    /// TDX_OPERAND_BUSY answers per run.
    pub busy: Stat,
    /// Host time spent zeroing accepted memory, summed over the vCPUs.
    pub zero_ms: Stat,
    /// Outcomes of the runs that did not end `ok` (`lock-none` may panic:
    /// that is the race it exists to show).
    pub failed: Vec<String>,
}

/// `vcpus.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VcpuResults {
    /// Cores this host offered the runs.
    pub host_cores: usize,
    pub profile: String,
    pub resolved_profile: String,
    pub repeats: usize,
    pub points: Vec<Point>,
}

impl VcpuResults {
    pub fn point(&self, series: &str, vcpus: u32) -> Option<&Point> {
        self.points
            .iter()
            .find(|p| p.series == series && p.vcpus == vcpus)
    }
}

/// One configuration to run.
struct Case {
    series: &'static str,
    vcpus: u32,
    mem: &'static str,
    kernel: bool,
    cmdline: String,
}

fn cases(counts: &[u32]) -> Vec<Case> {
    let mut v = Vec::new();
    for &n in counts {
        v.push(Case {
            series: "fw-accept-2m",
            vcpus: n,
            mem: "4G",
            kernel: false,
            cmdline: format!("fw.accept=all fw.accept_cpus={n}"),
        });
        for mode in ["lazy", "eager"] {
            v.push(Case {
                series: if mode == "lazy" {
                    "kernel-lazy"
                } else {
                    "kernel-eager"
                },
                vcpus: n,
                mem: "8G",
                kernel: true,
                cmdline: format!("fw.accept=none accept_memory={mode} workload=256M"),
            });
        }
    }
    for &n in counts.iter().filter(|n| **n <= 2) {
        v.push(Case {
            series: "fw-accept-4k",
            vcpus: n,
            mem: "1G",
            kernel: false,
            cmdline: format!("fw.accept=64M fw.accept_page=4k fw.accept_cpus={n}"),
        });
    }
    for &n in counts.iter().filter(|n| **n >= 2) {
        for policy in ["list", "global", "none"] {
            v.push(Case {
                series: match policy {
                    "list" => "lock-list",
                    "global" => "lock-global",
                    _ => "lock-none",
                },
                vcpus: n,
                mem: "8G",
                kernel: true,
                cmdline: format!(
                    "fw.accept=none accept_memory=lazy unaccepted_lock={policy} workload=1G"
                ),
            });
        }
    }
    v
}

fn span_ms(r: &Report, from: &str, to: &str) -> Option<f64> {
    let (a, b) = (r.timing_us.get(from)?, r.timing_us.get(to)?);
    Some(b.saturating_sub(*a) as f64 / 1e3)
}

/// What a case measures in one run (None when the run did not get there).
fn time_of(series: &str, r: &Report) -> Option<f64> {
    match series {
        s if s.starts_with("fw-") => span_ms(r, "fw_start", "fw_accept_done"),
        "kernel-lazy" | "kernel-eager" => {
            r.timing_us.get("kernel_ready").map(|us| *us as f64 / 1e3)
        }
        _ => span_ms(r, "kernel_ready", "workload_done"),
    }
}

/// Runs the vCPU axis in `profile`, `repeats` interleaved times, over
/// `counts` vCPUs, writing into `out`.
pub fn vcpus(out: &Path, profile: &str, repeats: usize, counts: &[u32]) -> Result<VcpuResults> {
    let images = crate::build_guests()?;
    let vmm = crate::build_vmm()?;
    create_dir(out)?;
    let host_cores = super::host_cores();
    let cases = cases(counts);
    let report = out.join("vcpus-report.json");
    let run = |c: &Case| {
        let cpus = c.vcpus.to_string();
        run_vmm_any(
            &vmm,
            &images,
            c.kernel,
            [
                "--mem",
                c.mem,
                "--cpus",
                &cpus,
                "--cpu-profile",
                profile,
                "--cmdline",
                &c.cmdline,
            ],
            &report,
            &format!("{} on {} vCPUs", c.series, c.vcpus),
        )
    };
    // Warm the host's memory first with the run that touches the most of
    // it (see docs/lazy-vs-eager.md on nested hosts: idle host memory is several
    // times slower at its first touch).
    if let Some(warm) = cases.iter().find(|c| c.series == "kernel-eager") {
        run(warm)?;
    }
    let mut reports: Vec<Vec<Report>> = cases.iter().map(|_| Vec::new()).collect();
    let bar = progress_bar(cases.len() * repeats, "vcpus");
    for _ in 0..repeats {
        for (i, c) in cases.iter().enumerate() {
            bar.set_message(format!("{} x{}", c.series, c.vcpus));
            reports[i].push(run(c)?);
            bar.inc(1);
        }
    }
    bar.finish_with_message("done");
    let _ = std::fs::remove_file(&report);
    let resolved_profile = reports
        .first()
        .and_then(|r| r.first())
        .map_or_else(|| profile.to_string(), |r| r.cpu_profile_name().to_string());
    let mut points = Vec::new();
    for (c, runs) in cases.iter().zip(reports) {
        let ok: Vec<&Report> = runs
            .iter()
            .filter(|r| r.outcome == vmm::Outcome::Ok)
            .collect();
        let failed: Vec<String> = runs
            .iter()
            .filter(|r| r.outcome != vmm::Outcome::Ok)
            .map(|r| {
                format!(
                    "{}: {}",
                    r.outcome,
                    r.fatal.as_ref().map_or("", |f| f.message.as_str())
                )
            })
            .collect();
        if ok.is_empty() && c.series != "lock-none" {
            return Err(
                RunError::NoneOk { failed }.of(format!("{} on {} vCPUs", c.series, c.vcpus))
            );
        }
        let times: Vec<f64> = ok.iter().filter_map(|r| time_of(c.series, r)).collect();
        let lock: Vec<f64> = ok
            .iter()
            .map(|r| r.per_vcpu.iter().map(|v| v.lock_wait_ns).sum::<u64>() as f64 / 1e6)
            .collect();
        points.push(Point {
            series: c.series.into(),
            vcpus: c.vcpus,
            runs: runs.len(),
            time_ms: Stat::of(times).ok(),
            lock_wait_ms: if c.series.starts_with("lock-") {
                Stat::of(lock).ok()
            } else {
                None
            },
            accept_p50_ns: Stat::of(runs.iter().map(|r| r.accept.handle_p50_ns as f64).collect())?,
            busy: Stat::of(runs.iter().map(|r| r.accept.busy as f64).collect())?,
            zero_ms: Stat::of(runs.iter().map(|r| r.accept.zero_ns as f64 / 1e6).collect())?,
            failed,
        });
    }
    let results = VcpuResults {
        host_cores,
        profile: profile.into(),
        resolved_profile,
        repeats,
        points,
    };
    write_json(&out.join("vcpus.json"), &results)?;
    write(&out.join("vcpus.csv"), &csv(&results))?;
    Ok(results)
}

fn csv(r: &VcpuResults) -> String {
    let mut s = String::from(
        "series,vcpus,host_cores,profile,runs,time_ms_median,time_ms_min,time_ms_max,lock_wait_ms_median,accept_p50_ns_median,busy_median,zero_ms_median,failed_runs\n",
    );
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
    for p in &r.points {
        s.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{:.1},{}\n",
            p.series,
            p.vcpus,
            r.host_cores,
            r.resolved_profile,
            p.runs,
            opt(p.time_ms.map(|t| t.median)),
            opt(p.time_ms.map(|t| t.min)),
            opt(p.time_ms.map(|t| t.max)),
            opt(p.lock_wait_ms.map(|t| t.median)),
            p.accept_p50_ns.median,
            p.busy.median,
            p.zero_ms.median,
            p.failed.len()
        ));
    }
    s
}

/// The rows `targets.md` gets from `vcpus.json` in `out` (none without it).
pub fn target_rows(out: &Path) -> Vec<(String, String, Option<bool>)> {
    let Some(r) = std::fs::read_to_string(out.join("vcpus.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<VcpuResults>(&t).ok())
    else {
        return Vec::new();
    };
    let tag = format!("[{}, {} host cores] ", r.resolved_profile, r.host_cores);
    let time = |s: &str, n: u32| r.point(s, n).and_then(|p| p.time_ms).map(|t| t.median);
    let mut rows = Vec::new();
    if let (Some(a), Some(b)) = (time("fw-accept-2m", 1), time("fw-accept-2m", 2)) {
        let curve: Vec<String> = [1, 2, 4]
            .iter()
            .filter_map(|n| Some(format!("{n}: {:.0} ms", time("fw-accept-2m", *n)?)))
            .collect();
        let theirs: Vec<String> = ASTERINAS_8G_SECONDS
            .iter()
            .map(|(n, s)| format!("{n}: {s} s"))
            .collect();
        rows.push((
            format!("{tag}firmware accept of 3 GiB: 2 vCPUs >= 1.6 x faster than 1"),
            format!(
                "x{:.2} ({}; asterinas 8 GiB {})",
                a / b,
                curve.join(", "),
                theirs.join(", ")
            ),
            Some(a / b >= 1.6),
        ));
    }
    if let (Some(a), Some(b)) = (time("kernel-lazy", 1), time("kernel-lazy", 2)) {
        rows.push((
            format!("{tag}lazy kernel_ready: 2 vCPUs <= 1.2 x 1 vCPU"),
            format!("{b:.1} / {a:.1} ms = x{:.2}", b / a),
            Some(b <= 1.2 * a),
        ));
    }
    for series in ["fw-accept-2m", "fw-accept-4k"] {
        if let Some(p) = r.point(series, 2) {
            let level = &series["fw-accept-".len()..];
            rows.push((
                format!("{tag}VMM handling per {level} accept p50 <= 5 us, 2 vCPUs accepting disjoint memory"),
                format!(
                    "p50 {:.0} ns ({} BUSY answers)",
                    p.accept_p50_ns.median, p.busy.median
                ),
                Some(p.accept_p50_ns.median <= 5000.0),
            ));
        }
    }
    for n in [2, 4] {
        let wait = |s: &str| r.point(s, n).and_then(|p| p.lock_wait_ms).map(|t| t.median);
        if let (Some(l), Some(g)) = (wait("lock-list"), wait("lock-global")) {
            rows.push((
                format!("{tag}accept lock wait, unaccepted_lock=list vs global, {n} CPUs, 1 GiB parallel workload (plotted: lock_wait.svg)"),
                format!(
                    "list {l:.1} ms, global {g:.1} ms; workload list {} / global {} ms",
                    time("lock-list", n).map_or("-".into(), |t| format!("{t:.0}")),
                    time("lock-global", n).map_or("-".into(), |t| format!("{t:.0}"))
                ),
                None,
            ));
        }
    }
    rows
}
