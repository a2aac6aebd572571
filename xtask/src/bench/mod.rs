//! `cargo xtask bench`: the lazy-vs-eager matrix and the flatness series
//! (this file: what runs, and in which order), their statistics
//! (`stats`), the plots (`plots`, `trace_plots`, sharing `chart`), the micro-benchmarks
//! (`micro`), the vCPU axis (`vcpus`, charts in `vcpu_plots`), the host
//! page-size axis (`sept`)
//! and the targets they are held to
//! (`targets`). Every report is read as the VMM's typed `Report`.

pub mod chart;
pub mod micro;
pub mod plots;
pub mod sept;
pub mod stats;
pub mod targets;
pub mod trace_plots;
pub mod vcpu_plots;
pub mod vcpus;

pub use micro::micro;
pub use plots::replot;

use crate::error::{Result, RunError, XtaskError};
use indicatif::{ProgressBar, ProgressStyle};
use stats::{FlatRow, Results, RunEntry, Stat};
use std::path::{Path, PathBuf};
use std::process::Command;
use vmm::trace::Record;
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
            flat_sizes_gib: vec![1, 64, 1024],
            flat_repeats: 11,
            vcpu_counts: vec![1, 2, 4],
            vcpu_repeats: 5,
            sept_counts: vec![1, 2, 4],
            sept_repeats: 3,
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

/// The host's RAM (MemTotal).
pub fn host_ram() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(u64::MAX, |kb| kb * 1024)
}

/// Cores this host offers the runs (written next to every vCPU result).
pub fn host_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A progress bar with an ETA on stderr.
fn progress_bar(total: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} eta {eta} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    bar
}

/// Runs `vmm run` with the built firmware (and the kernel when
/// `with_kernel`), `--quiet`, a 10-minute timeout and `args`, writing its
/// report to `report`. Returns the report, which must say outcome ok; `what`
/// names the run in errors.
pub(crate) fn run_vmm<S: AsRef<std::ffi::OsStr>>(
    vmm: &Path,
    images: &crate::GuestImages,
    with_kernel: bool,
    args: impl IntoIterator<Item = S>,
    report: &Path,
    what: &str,
) -> Result<Report> {
    let r = run_vmm_any(vmm, images, with_kernel, args, report, what)?;
    if r.outcome != vmm::Outcome::Ok {
        return Err(RunError::Outcome {
            outcome: r.outcome,
            fatal: r.fatal.as_ref().map(fatal_text),
        }
        .of(what));
    }
    Ok(r)
}

/// A report's fatal stop in words: its message, and where when known.
fn fatal_text(f: &vmm::report::Fatal) -> String {
    let mut s = f.message.clone();
    let mut at = Vec::new();
    if let Some(v) = f.vcpu {
        at.push(format!("vCPU {v}"));
    }
    if let Some(gpa) = f.gpa {
        at.push(format!("gpa {gpa:#x}"));
    }
    if let Some(rip) = f.rip {
        at.push(format!("rip {rip:#x}"));
    }
    if !at.is_empty() {
        s.push_str(&format!(" ({})", at.join(", ")));
    }
    s
}

/// The same, returning the report whatever its outcome (an error only
/// when the VMM wrote none, or one that does not parse). A report left
/// by an earlier run is removed first, so it can never be read as this
/// run's.
pub(crate) fn run_vmm_any<S: AsRef<std::ffi::OsStr>>(
    vmm: &Path,
    images: &crate::GuestImages,
    with_kernel: bool,
    args: impl IntoIterator<Item = S>,
    report: &Path,
    what: &str,
) -> Result<Report> {
    let _ = std::fs::remove_file(report);
    let mut cmd = Command::new(vmm);
    cmd.arg("run").arg("--firmware").arg(&images.firmware);
    if with_kernel {
        cmd.arg("--kernel").arg(&images.kernel);
    }
    cmd.args(["--quiet", "--timeout", "600", "--report"])
        .arg(report)
        .args(args);
    let out = cmd.output().map_err(|source| XtaskError::Spawn {
        program: vmm.to_path_buf(),
        source,
    })?;
    let text = std::fs::read_to_string(report).map_err(|source| {
        RunError::NoReport {
            path: report.to_path_buf(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            source,
        }
        .of(what)
    })?;
    serde_json::from_str(&text).map_err(|source| {
        RunError::BadReport {
            path: report.to_path_buf(),
            source,
        }
        .of(what)
    })
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

/// Writes `text` to `path`.
pub(crate) fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|source| XtaskError::File {
        action: "write",
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `value` to `path` as pretty JSON.
pub(crate) fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|source| XtaskError::Json {
        action: "encode",
        path: path.to_path_buf(),
        source,
    })?;
    write(path, &text)
}

/// Creates `dir` and its parents.
pub(crate) fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| XtaskError::File {
        action: "create",
        path: dir.to_path_buf(),
        source,
    })
}

/// Reads the accept trace at `path`.
pub(crate) fn read_trace(path: &Path) -> Result<Vec<Record>> {
    let f = std::fs::File::open(path).map_err(|source| XtaskError::File {
        action: "open",
        path: path.to_path_buf(),
        source,
    })?;
    vmm::trace::read(f).map_err(|source| XtaskError::Trace {
        path: path.to_path_buf(),
        source,
    })
}
