//! `cargo xtask bench`: the lazy-vs-eager matrix and the flatness series
//! (this file: what runs, and in which order), how a run is made and its
//! outputs written (`runner`), their statistics (`stats`), the plots
//! (`plots`, `trace_plots`, sharing `chart`), the micro-benchmarks
//! (`micro`), the vCPU axis (`vcpus`, charts in `vcpu_plots`), the host
//! page-size axis (`sept`), where a boot's time goes in the VMM
//! (`leaves`) and the targets they are held to (`targets`).
//! Every report is read as the VMM's typed `Report`.

pub mod chart;
pub mod flat;
pub mod leaves;
pub mod micro;
pub mod orders;
pub mod plots;
pub mod runner;
pub mod sept;
pub mod stats;
pub mod targets;
pub mod trace_plots;
pub mod vcpu_plots;
pub mod vcpus;

pub use micro::micro;
pub use plots::replot;
pub(crate) use runner::{
    create_dir, progress_bar, read_trace, run_vmm, run_vmm_any, write, write_json,
};
pub use runner::{host_cores, host_ram};

use crate::error::Result;
use stats::{FlatRow, Results, RunEntry, Stat};
use std::path::{Path, PathBuf};
use vmm::Report;

const GIB: u64 = 1 << 30;

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    pub sizes_gib: Vec<u64>,
    pub repeats: usize,
    pub profiles: Vec<String>,
    pub out: PathBuf,
    /// Also run the micro-benchmarks and write `targets.md`.
    pub micro: bool,
    /// The flatness series: lazy, `fw.accept=none` boots at these sizes,
    /// interleaved `flat_repeats` times (cheap runs, so many repeats: the
    /// lazy-boot targets compare medians of tens of milliseconds).
    pub flat_sizes_gib: Vec<u64>,
    pub flat_repeats: usize,
    /// The vCPU axis: vCPU counts and interleaved repeats (0: skipped).
    pub vcpu_counts: Vec<u32>,
    pub vcpu_repeats: usize,
    /// The host page-size axis: vCPU counts and repeats (0: skipped).
    pub sept_counts: Vec<u32>,
    pub sept_repeats: usize,
    /// Where a boot's time goes in the VMM (`leaves`): our boot in every
    /// profile and td-shim's (true), or our boot in the first only.
    pub leaves_full: bool,
}

impl BenchConfig {
    /// The full matrix of docs/lazy-vs-eager.md.
    pub fn full(out: PathBuf) -> Self {
        BenchConfig {
            sizes_gib: vec![1, 4, 16, 64],
            repeats: 3,
            profiles: vec!["auto".into(), "standard".into()],
            out,
            micro: true,
            flat_sizes_gib: flat::SIZES_GIB.to_vec(),
            flat_repeats: 11,
            vcpu_counts: vec![1, 2, 4],
            vcpu_repeats: 5,
            sept_counts: vec![1, 2, 4],
            sept_repeats: 3,
            leaves_full: true,
        }
    }

    /// A tiny matrix that runs in well under a minute.
    pub fn quick(out: PathBuf) -> Self {
        BenchConfig {
            sizes_gib: vec![1, 2],
            repeats: 1,
            profiles: vec!["auto".into()],
            out,
            micro: false,
            flat_sizes_gib: vec![1, 2],
            flat_repeats: 2,
            vcpu_counts: vec![1, 2],
            vcpu_repeats: 1,
            sept_counts: vec![1],
            sept_repeats: 1,
            leaves_full: false,
        }
    }
}

/// One cell of the matrix.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub mem_gib: u64,
    pub mode: &'static str,
    pub fw: &'static str,
    pub profile: String,
    pub backing: &'static str,
}

impl Scenario {
    /// Its name in tables and file names.
    pub fn key(&self) -> String {
        format!(
            "{}G {} fw={} {} {}",
            self.mem_gib, self.mode, self.fw, self.profile, self.backing
        )
    }
}

/// One run of a matrix scenario (with a trace when `trace` is given).
fn run_one(
    vmm: &Path,
    images: &crate::GuestImages,
    s: &Scenario,
    report: &Path,
    trace: Option<&Path>,
) -> Result<Report> {
    let mut args: Vec<std::ffi::OsString> = [
        "--mem".to_string(),
        format!("{}G", s.mem_gib),
        "--cpu-profile".into(),
        s.profile.clone(),
        "--backing".into(),
        s.backing.into(),
        "--cmdline".into(),
        format!("fw.accept={} accept_memory={} workload=64M", s.fw, s.mode),
    ]
    .into_iter()
    .map(Into::into)
    .collect();
    if let Some(t) = trace {
        args.push("--trace".into());
        args.push(t.into());
    }
    run_vmm(vmm, images, true, args, report, &s.key())
}

/// Runs the matrix and writes results and plots into `cfg.out`.
pub fn run(cfg: &BenchConfig) -> Result<()> {
    let images = crate::build_guests()?;
    let vmm = crate::build_vmm()?;
    create_dir(&cfg.out)?;
    let host = host_ram();
    let mut scenarios = Vec::new();
    for profile in &cfg.profiles {
        for &mem_gib in &cfg.sizes_gib {
            for fw in ["all", "none"] {
                for mode in ["lazy", "eager"] {
                    // Eager runs touch all RAM: beyond host RAM they cannot
                    // be populated, so their pages come on first touch.
                    let backing = if mode == "eager" && mem_gib * GIB > host / 2 {
                        "on-touch"
                    } else {
                        "populate"
                    };
                    if backing == "on-touch" {
                        eprintln!("bench: {mem_gib}G eager exceeds half the host's RAM: using --backing on-touch");
                    }
                    scenarios.push(Scenario {
                        mem_gib,
                        mode,
                        fw,
                        profile: profile.clone(),
                        backing,
                    });
                }
            }
        }
    }
    let total = scenarios.len() * cfg.repeats;
    let mut runs: Vec<(Scenario, Report)> = Vec::new();
    let scratch = cfg.out.join("reports");
    create_dir(&scratch)?;
    // Warm-up (discarded): on nested hosts the first touch of idle host
    // memory is several times slower than later ones.
    if let Some(warm) = scenarios
        .iter()
        .filter(|s| s.mode == "eager" && s.backing == "populate")
        .max_by_key(|s| s.mem_gib)
    {
        eprintln!("bench: warm-up run ({})", warm.key());
        run_one(&vmm, &images, warm, &scratch.join("warm-up.json"), None)?;
    }
    // Interleave repeats so slow phases of the host spread over scenarios.
    let bar = progress_bar(total, "matrix");
    for rep in 0..cfg.repeats {
        for (i, s) in scenarios.iter().enumerate() {
            bar.set_message(s.key());
            let report = scratch.join(format!("run-{rep}-{i}.json"));
            runs.push((s.clone(), run_one(&vmm, &images, s, &report, None)?));
            bar.inc(1);
        }
    }
    bar.finish_with_message("done");

    let rows = stats::aggregate(&runs)?;
    let flatness = flatness(cfg, &vmm, &images, &scratch)?;
    let results = Results {
        host_ram_bytes: host,
        repeats: cfg.repeats,
        scenarios: rows,
        flatness,
        runs: runs
            .iter()
            .map(|(s, r)| RunEntry {
                scenario: s.key(),
                report: r.clone(),
            })
            .collect(),
    };
    write_json(&cfg.out.join("results.json"), &results)?;
    write(
        &cfg.out.join("results.csv"),
        &stats::csv(&results.scenarios),
    )?;
    write(
        &cfg.out.join("flatness.csv"),
        &stats::flat_csv(&results.flatness),
    )?;
    write(
        &cfg.out.join("summary.md"),
        &stats::summary(
            cfg,
            &results.scenarios,
            &results.flatness,
            runs.first().map(|r| &r.1),
        ),
    )?;

    // Traces: one lazy and one eager run at the largest size, and a kexec run.
    let mem_gib = *cfg.sizes_gib.iter().max().unwrap_or(&1);
    let mut traces: Vec<PathBuf> = Vec::new();
    for mode in ["lazy", "eager"] {
        let s = Scenario {
            mem_gib,
            mode,
            fw: "none",
            profile: cfg.profiles[0].clone(),
            backing: if mode == "eager" && mem_gib * GIB > host / 2 {
                "on-touch"
            } else {
                "populate"
            },
        };
        let t = cfg.out.join(format!("trace-{mode}.bin"));
        traces.push(t.clone());
        run_one(
            &vmm,
            &images,
            &s,
            &scratch.join(format!("trace-{mode}.json")),
            Some(&t),
        )?;
    }
    let kexec_trace = cfg.out.join("trace-kexec.bin");
    run_vmm(
        &vmm,
        &images,
        true,
        [
            "--mem".as_ref(),
            "8G".as_ref(),
            "--cmdline".as_ref(),
            "fw.accept=all kexec=2 workload=256M".as_ref(),
            "--trace".as_ref(),
            kexec_trace.as_os_str(),
        ],
        &scratch.join("trace-kexec.json"),
        "kexec trace run",
    )?;
    plots::plots(&cfg.out, &results.scenarios, &cfg.profiles[0])?;
    if cfg.vcpu_repeats > 0 && !cfg.vcpu_counts.is_empty() {
        vcpu_axis(
            &cfg.out,
            &cfg.profiles[0],
            cfg.vcpu_repeats,
            &cfg.vcpu_counts,
        )?;
    }
    if cfg.sept_repeats > 0 && !cfg.sept_counts.is_empty() {
        sept::sept(&cfg.out, &cfg.profiles, cfg.sept_repeats, &cfg.sept_counts)?;
    }
    leaves::leaves(&cfg.out, &cfg.profiles, !cfg.leaves_full)?;
    eprintln!("bench: wrote {}", cfg.out.display());
    if cfg.micro {
        // The micro-benchmarks cover both profiles where the host has them.
        let mut profiles = cfg.profiles.clone();
        if !profiles.iter().any(|p| p == "standard") {
            profiles.push("standard".into());
        }
        micro(&cfg.out, &profiles)?;
        targets::write(&cfg.out)?;
    }
    Ok(())
}

/// The lazy-boot series behind the flatness targets: `fw.accept=none`,
/// `accept_memory=lazy` at each of `cfg.flat_sizes_gib`, interleaved
/// `cfg.flat_repeats` times per profile. Returns one row per (profile, size)
/// with the median and min-max of `kernel_ready` and peak RSS.
fn flatness(
    cfg: &BenchConfig,
    vmm: &Path,
    images: &crate::GuestImages,
    scratch: &Path,
) -> Result<Vec<FlatRow>> {
    let mut rows = Vec::new();
    for profile in &cfg.profiles {
        let scenarios: Vec<Scenario> = cfg
            .flat_sizes_gib
            .iter()
            .map(|&mem_gib| Scenario {
                mem_gib,
                mode: "lazy",
                fw: "none",
                profile: profile.clone(),
                backing: "populate",
            })
            .collect();
        let mut times = vec![Vec::new(); scenarios.len()];
        let mut rss = vec![Vec::new(); scenarios.len()];
        let total = scenarios.len() * cfg.flat_repeats;
        let bar = progress_bar(total, &format!("flatness {profile}"));
        for _ in 0..cfg.flat_repeats {
            for (i, s) in scenarios.iter().enumerate() {
                bar.set_message(s.key());
                let r = run_one(vmm, images, s, &scratch.join("flat.json"), None)?;
                times[i].push(stats::kernel_ready_ms(&r).map_err(|e| e.of(s.key()))?);
                rss[i].push(stats::rss_mib(&r));
                bar.inc(1);
            }
        }
        bar.finish_with_message("done");
        for (i, s) in scenarios.iter().enumerate() {
            rows.push(FlatRow {
                profile: profile.clone(),
                mem_gib: s.mem_gib,
                runs: cfg.flat_repeats,
                kernel_ready_ms: Stat::of(std::mem::take(&mut times[i]))?,
                rss_mib: Stat::of(std::mem::take(&mut rss[i]))?,
            });
        }
    }
    Ok(rows)
}

/// The vCPU axis (`vcpus`) and its charts (`vcpu_plots`).
pub fn vcpu_axis(
    out: &Path,
    profile: &str,
    repeats: usize,
    counts: &[u32],
) -> Result<vcpus::VcpuResults> {
    let results = vcpus::vcpus(out, profile, repeats, counts)?;
    vcpu_plots::plots(out, &results)?;
    Ok(results)
}
