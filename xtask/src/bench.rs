//! `cargo xtask bench`: the lazy-versus-eager experiment. Runs a matrix of
//! TDs (RAM size x `accept_memory` x firmware policy x CPU profile, each
//! repeated), writes `results.json` and `results.csv` (every run plus the
//! median and min-max per scenario) and plots (SVG and PNG): boot time to
//! `kernel_ready` vs RAM, host RSS vs RAM, bytes accepted over time for one
//! lazy and one eager run (from their accept traces), and a map of which
//! ranges the firmware, the kernel and kexec accepted.

use plotters::coord::Shift;
use plotters::prelude::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use vmm::report::trace::{Kind, Record, Who};

const GIB: u64 = 1 << 30;

/// Draws one plot twice: `STEM.svg` and `STEM.png`.
macro_rules! plot {
    ($stem:expr, $size:expr, $f:ident($($arg:expr),*)) => {{
        let stem: PathBuf = $stem;
        $f(SVGBackend::new(&stem.with_extension("svg"), $size).into_drawing_area(), $($arg),*)?;
        $f(BitMapBackend::new(&stem.with_extension("png"), $size).into_drawing_area(), $($arg),*)?;
    }};
}

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
}

impl BenchConfig {
    /// The full matrix of the README.
    pub fn full(out: PathBuf) -> Self {
        BenchConfig {
            sizes_gib: vec![1, 4, 16, 64],
            repeats: 3,
            profiles: vec!["auto".into(), "standard".into()],
            out,
            micro: true,
            flat_sizes_gib: vec![1, 64, 1024],
            flat_repeats: 11,
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
        }
    }
}

#[derive(Clone, Debug)]
struct Scenario {
    mem_gib: u64,
    mode: &'static str,
    fw: &'static str,
    profile: String,
    backing: &'static str,
}

impl Scenario {
    fn key(&self) -> String {
        format!(
            "{}G {} fw={} {} {}",
            self.mem_gib, self.mode, self.fw, self.profile, self.backing
        )
    }
}

fn host_ram() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(u64::MAX, |kb| kb * 1024)
}

fn progress(done: usize, total: usize, what: &str) {
    let width = 30;
    let filled = width * done / total.max(1);
    eprint!(
        "\r[{}{}] {done}/{total} {what:<40}",
        "=".repeat(filled),
        " ".repeat(width - filled)
    );
    let _ = std::io::stderr().flush();
}

/// Runs `vmm run` with the built firmware (and the kernel when
/// `with_kernel`), `--quiet`, a 10-minute timeout and `args`, writing its
/// report to `report`. Returns the report, which must say outcome ok; `what`
/// names the run in errors.
fn run_vmm<S: AsRef<std::ffi::OsStr>>(
    vmm: &Path,
    images: &crate::GuestImages,
    with_kernel: bool,
    args: impl IntoIterator<Item = S>,
    report: &Path,
    what: &str,
) -> Result<Value, String> {
    let mut cmd = Command::new(vmm);
    cmd.arg("run").arg("--firmware").arg(&images.firmware);
    if with_kernel {
        cmd.arg("--kernel").arg(&images.kernel);
    }
    cmd.args(["--quiet", "--timeout", "600", "--report"])
        .arg(report)
        .args(args);
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {}: {e}", vmm.display()))?;
    let text = std::fs::read_to_string(report).map_err(|e| {
        format!(
            "{what}: no report ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let r: Value = serde_json::from_str(&text).map_err(|e| format!("{what}: bad report: {e}"))?;
    if r["outcome"] != "ok" {
        return Err(format!("{what}: outcome {} {}", r["outcome"], r["fatal"]));
    }
    Ok(r)
}

/// One run of a matrix scenario (with a trace when `trace` is given).
fn run_one(
    vmm: &Path,
    images: &crate::GuestImages,
    s: &Scenario,
    report: &Path,
    trace: Option<&Path>,
) -> Result<Value, String> {
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

fn median_min_max(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// Runs the matrix and writes results and plots into `cfg.out`.
pub fn run(cfg: &BenchConfig) -> Result<(), String> {
    let images = crate::build_guests()?;
    let vmm = crate::build_vmm()?;
    std::fs::create_dir_all(&cfg.out)
        .map_err(|e| format!("cannot create {}: {e}", cfg.out.display()))?;
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
    let mut runs: Vec<(Scenario, Value)> = Vec::new();
    let scratch = cfg.out.join("reports");
    std::fs::create_dir_all(&scratch).map_err(|e| e.to_string())?;
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
    for rep in 0..cfg.repeats {
        for (i, s) in scenarios.iter().enumerate() {
            progress(rep * scenarios.len() + i, total, &s.key());
            let report = scratch.join(format!("run-{rep}-{i}.json"));
            runs.push((s.clone(), run_one(&vmm, &images, s, &report, None)?));
        }
    }
    progress(total, total, "done");
    eprintln!();

    // Aggregates.
    let mut groups: BTreeMap<String, Vec<&(Scenario, Value)>> = BTreeMap::new();
    for r in &runs {
        groups.entry(r.0.key()).or_default().push(r);
    }
    let mut rows = Vec::new();
    let mut csv = String::from("scenario,mem_gib,accept_memory,fw_accept,profile,backing,runs,kernel_ready_ms_median,kernel_ready_ms_min,kernel_ready_ms_max,rss_mib_median,bytes_accepted_median,bitmap_mismatches_max\n");
    for (key, rs) in &groups {
        let s = &rs[0].0;
        let kr = median_min_max(
            rs.iter()
                .map(|r| r.1["timing_us"]["kernel_ready"].as_f64().unwrap_or(0.0) / 1e3)
                .collect(),
        );
        let rss = median_min_max(
            rs.iter()
                .map(|r| r.1["host"]["rss_peak_bytes"].as_f64().unwrap_or(0.0) / (1 << 20) as f64)
                .collect(),
        );
        let acc = median_min_max(
            rs.iter()
                .map(|r| r.1["accept"]["bytes_accepted"].as_f64().unwrap_or(0.0))
                .collect(),
        );
        let mism = rs
            .iter()
            .filter_map(|r| r.1["bitmap_mismatches"].as_u64())
            .max()
            .unwrap_or(0);
        csv.push_str(&format!(
            "{key},{},{},{},{},{},{},{:.1},{:.1},{:.1},{:.0},{:.0},{mism}\n",
            s.mem_gib,
            s.mode,
            s.fw,
            s.profile,
            s.backing,
            rs.len(),
            kr.0,
            kr.1,
            kr.2,
            rss.0,
            acc.0
        ));
        rows.push(json!({
            "scenario": key, "mem_gib": s.mem_gib, "accept_memory": s.mode, "fw_accept": s.fw,
            "profile": s.profile, "backing": s.backing, "runs": rs.len(),
            "kernel_ready_ms": {"median": kr.0, "min": kr.1, "max": kr.2},
            "rss_mib": {"median": rss.0, "min": rss.1, "max": rss.2},
            "bytes_accepted": {"median": acc.0, "min": acc.1, "max": acc.2},
            "bitmap_mismatches_max": mism,
            "cpu_profile": rs[0].1["cpu_profile"],
        }));
    }
    let all: Vec<Value> = runs
        .iter()
        .map(|(s, r)| json!({"scenario": s.key(), "report": r}))
        .collect();
    let flatness = flatness(cfg, &vmm, &images, &scratch)?;
    let results = json!({
        "host_ram_bytes": host, "repeats": cfg.repeats, "scenarios": rows,
        "flatness": flatness, "runs": all,
    });
    write(
        &cfg.out.join("results.json"),
        &serde_json::to_string_pretty(&results).unwrap_or_default(),
    )?;
    write(&cfg.out.join("results.csv"), &csv)?;
    write(
        &cfg.out.join("summary.md"),
        &summary(cfg, &rows, &flatness, runs.first().map(|r| &r.1)),
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
    plots(&cfg.out, &rows, &cfg.profiles[0])?;
    eprintln!("bench: wrote {}", cfg.out.display());
    if cfg.micro {
        // The micro-benchmarks cover both profiles where the host has them.
        let mut profiles = cfg.profiles.clone();
        if !profiles.iter().any(|p| p == "standard") {
            profiles.push("standard".into());
        }
        micro(&cfg.out, &profiles)?;
    }
    Ok(())
}

/// Draws every plot of `out` from its rows (`results.json`'s scenarios)
/// and its traces (`trace-lazy.bin`, `trace-eager.bin`, `trace-kexec.bin`).
fn plots(out: &Path, rows: &[Value], first_profile: &str) -> Result<(), String> {
    register_font()?;
    plot!(
        out.join("boot_time_vs_ram"),
        (1150, 560),
        line_plot("time to kernel_ready (ms)", rows, "kernel_ready_ms")
    );
    // Host memory does not depend on the CPU profile: one profile's lines
    // (the others would be drawn exactly on top of them).
    let one_profile: Vec<Value> = rows
        .iter()
        .filter(|r| r["profile"] == first_profile)
        .cloned()
        .collect();
    plot!(
        out.join("rss_vs_ram"),
        (1150, 560),
        line_plot("host peak RSS (MiB)", &one_profile, "rss_mib")
    );
    let traces = ["lazy", "eager"]
        .into_iter()
        .map(|mode| Ok((mode, read_trace(&out.join(format!("trace-{mode}.bin")))?)))
        .collect::<Result<Vec<_>, String>>()?;
    plot!(
        out.join("accepted_over_time"),
        (900, 500),
        accepted_over_time(&traces)
    );
    let kexec_records = read_trace(&out.join("trace-kexec.bin"))?;
    plot!(
        out.join("accepted_memory_map"),
        (1100, 460),
        memory_map(&kexec_records, 8 * GIB)
    );
    Ok(())
}

/// `cargo xtask bench --replot DIR`: redraws the plots of a finished run
/// from its `results.json` and traces, without running anything.
pub fn replot(out: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(out.join("results.json"))
        .map_err(|e| format!("{}: {e}", out.join("results.json").display()))?;
    let results: Value = serde_json::from_str(&text).map_err(|e| format!("results.json: {e}"))?;
    let rows = results["scenarios"]
        .as_array()
        .ok_or("results.json has no scenarios")?
        .clone();
    let first = rows
        .first()
        .and_then(|r| r["profile"].as_str())
        .ok_or("results.json: no scenario names its profile")?
        .to_string();
    plots(out, &rows, &first)?;
    eprintln!("bench: redrew the plots in {}", out.display());
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
) -> Result<Vec<Value>, String> {
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
        for rep in 0..cfg.flat_repeats {
            for (i, s) in scenarios.iter().enumerate() {
                progress(
                    rep * scenarios.len() + i,
                    total,
                    &format!("flatness {}", s.key()),
                );
                let r = run_one(vmm, images, s, &scratch.join("flat.json"), None)?;
                times[i].push(r["timing_us"]["kernel_ready"].as_f64().unwrap_or(0.0) / 1e3);
                rss[i].push(r["host"]["rss_peak_bytes"].as_f64().unwrap_or(0.0) / (1 << 20) as f64);
            }
        }
        progress(total, total, "flatness done");
        eprintln!();
        for (i, s) in scenarios.iter().enumerate() {
            let kr = median_min_max(std::mem::take(&mut times[i]));
            let m = median_min_max(std::mem::take(&mut rss[i]));
            rows.push(json!({
                "profile": profile, "mem_gib": s.mem_gib, "runs": cfg.flat_repeats,
                "kernel_ready_ms": {"median": kr.0, "min": kr.1, "max": kr.2},
                "rss_mib": {"median": m.0, "min": m.1, "max": m.2},
            }));
        }
    }
    let mut csv = String::from("profile,mem_gib,runs,kernel_ready_ms_median,kernel_ready_ms_min,kernel_ready_ms_max,rss_mib_median\n");
    for r in &rows {
        csv.push_str(&format!(
            "{},{},{},{:.1},{:.1},{:.1},{:.0}\n",
            r["profile"].as_str().unwrap_or("?"),
            r["mem_gib"],
            r["runs"],
            r["kernel_ready_ms"]["median"].as_f64().unwrap_or(0.0),
            r["kernel_ready_ms"]["min"].as_f64().unwrap_or(0.0),
            r["kernel_ready_ms"]["max"].as_f64().unwrap_or(0.0),
            r["rss_mib"]["median"].as_f64().unwrap_or(0.0),
        ));
    }
    write(&cfg.out.join("flatness.csv"), &csv)?;
    Ok(rows)
}

/// Today's date (UTC) as YYYY-MM-DD, from the system clock.
fn utc_date() -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The table the README quotes: lazy vs eager with `fw.accept=none` in
/// the first profile, medians with min-max, plus the flatness series'
/// 1 TiB row, headed by what produced it.
fn summary(
    cfg: &BenchConfig,
    rows: &[Value],
    flatness: &[Value],
    report: Option<&Value>,
) -> String {
    let profile = &cfg.profiles[0];
    let resolved = rows
        .iter()
        .find(|r| r["profile"] == profile.as_str())
        .and_then(|r| r["cpu_profile"].as_str())
        .unwrap_or(profile);
    let inputs = report.map(|r| &r["inputs"]);
    let commit = inputs
        .and_then(|i| i["vmm_git_commit"].as_str())
        .unwrap_or("unknown commit");
    let version = inputs
        .and_then(|i| i["vmm_version"].as_str())
        .unwrap_or("?");
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut md = format!(
        "Run of {} (UTC): `cargo xtask bench --out {}`, vmm {version} ({commit}), \
         profile {resolved}, {} interleaved repeats after a warm-up, `workload=64M`, \
         host with {cores} cores and {} GiB of RAM. Median time to `kernel_ready` \
         (min-max) and median peak RSS of the VMM process.\n\n\
         | RAM | lazy, `fw.accept=none` | eager, `fw.accept=none` | eager / lazy |\n\
         |---|---|---|---|\n",
        utc_date(),
        cfg.out
            .strip_prefix(crate::workspace_root())
            .unwrap_or(&cfg.out)
            .display(),
        cfg.repeats,
        host_ram() / GIB,
    );
    let cell = |r: &Value| {
        format!(
            "{:.0} ms ({:.0}-{:.0}), {:.0} MiB{}",
            r["kernel_ready_ms"]["median"].as_f64().unwrap_or(0.0),
            r["kernel_ready_ms"]["min"].as_f64().unwrap_or(0.0),
            r["kernel_ready_ms"]["max"].as_f64().unwrap_or(0.0),
            r["rss_mib"]["median"].as_f64().unwrap_or(0.0),
            if r["backing"] == "on-touch" { " *" } else { "" }
        )
    };
    for &gib in &cfg.sizes_gib {
        let find = |mode: &str| {
            rows.iter().find(|r| {
                r["profile"] == profile.as_str()
                    && r["mem_gib"] == gib
                    && r["accept_memory"] == mode
                    && r["fw_accept"] == "none"
            })
        };
        if let (Some(l), Some(e)) = (find("lazy"), find("eager")) {
            let ratio = e["kernel_ready_ms"]["median"].as_f64().unwrap_or(0.0)
                / l["kernel_ready_ms"]["median"]
                    .as_f64()
                    .unwrap_or(1.0)
                    .max(1e-9);
            md.push_str(&format!(
                "| {gib} GiB | {} | {} | {ratio:.1}x |\n",
                cell(l),
                cell(e)
            ));
        }
    }
    if let Some(t) = flatness
        .iter()
        .filter(|r| r["profile"] == profile.as_str())
        .max_by_key(|r| r["mem_gib"].as_u64().unwrap_or(0))
    {
        md.push_str(&format!(
            "| {} GiB | {:.0} ms ({:.0}-{:.0}), {:.0} MiB (flatness series, {} runs) | - | - |\n",
            t["mem_gib"],
            t["kernel_ready_ms"]["median"].as_f64().unwrap_or(0.0),
            t["kernel_ready_ms"]["min"].as_f64().unwrap_or(0.0),
            t["kernel_ready_ms"]["max"].as_f64().unwrap_or(0.0),
            t["rss_mib"]["median"].as_f64().unwrap_or(0.0),
            t["runs"]
        ));
    }
    md.push_str(
        "\n\\* `--backing on-touch`: eager runs larger than half the host's RAM get host \
         pages at first touch, so they measure TDCALLs and bookkeeping, not zeroing.\n",
    );
    md
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn read_trace(path: &Path) -> Result<Vec<Record>, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    vmm::report::trace::read(f).map_err(|e| format!("{}: {e}", path.display()))
}

fn err(e: impl std::fmt::Display) -> String {
    format!("plotting: {e}")
}

/// Makes the embedded DejaVu Sans the plots' "sans-serif" (once per process).
fn register_font() -> Result<(), String> {
    static ONCE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .map_err(|_| "plotting: the embedded DejaVu Sans font does not parse".to_string())
    })
    .clone()
}

/// One line per (profile, accept_memory, fw policy, backing) over RAM
/// size: the median of each point, with a bar from its fastest to its
/// slowest run so host noise shows as noise. Points measured with
/// `--backing on-touch` (eager runs too large to populate) are their own
/// dashed series with hollow markers, never joined to populated ones.
fn line_plot<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    y_label: &str,
    rows: &[Value],
    metric: &str,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let stat = |r: &Value, which: &str| r[metric][which].as_f64().filter(|v| *v > 0.0);
    root.fill(&WHITE).map_err(err)?;
    // The legend gets its own column so it never hides a line.
    let width = root.dim_in_pixel().0 as i32;
    let (plot_area, legend_area) = root.split_horizontally(width - 330);
    // Log-log: sizes grow by 4x steps and times span four decades.
    let xs: Vec<f64> = rows.iter().filter_map(|r| r["mem_gib"].as_f64()).collect();
    let ys: Vec<f64> = rows
        .iter()
        .flat_map(|r| [stat(r, "min"), stat(r, "max")])
        .flatten()
        .collect();
    let x_max = xs.iter().cloned().fold(1.0, f64::max) * 1.5;
    let x_min = xs.iter().cloned().fold(f64::MAX, f64::min).min(x_max) / 1.5;
    let y_max = ys.iter().cloned().fold(1.0, f64::max) * 1.5;
    let y_min = ys.iter().cloned().fold(f64::MAX, f64::min).min(y_max) / 1.5;
    let mut chart = ChartBuilder::on(&plot_area)
        .caption(format!("{y_label} vs guest RAM"), ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((x_min..x_max).log_scale(), (y_min..y_max).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("guest RAM (GiB, log scale)")
        .y_desc(format!("{y_label}, log scale; bars: min-max"))
        .draw()
        .map_err(err)?;
    let colors = [
        RED,
        BLUE,
        GREEN,
        MAGENTA,
        RGBColor(255, 140, 0),
        RGBColor(0, 150, 150),
        RGBColor(120, 80, 0),
        BLACK,
    ];
    let mut profiles: Vec<&str> = Vec::new();
    for r in rows {
        if let Some(p) = r["cpu_profile"].as_str() {
            if !profiles.contains(&p) {
                profiles.push(p);
            }
        }
    }
    let mut i = 0;
    let mut legend_row = 0;
    for profile in &profiles {
        for mode in ["lazy", "eager"] {
            for fw in ["all", "none"] {
                let c = colors[i % colors.len()];
                i += 1;
                for backing in ["populate", "on-touch"] {
                    let mut pts: Vec<(f64, f64, f64, f64)> = rows
                        .iter()
                        .filter(|r| {
                            r["cpu_profile"] == *profile
                                && r["accept_memory"] == mode
                                && r["fw_accept"] == fw
                                && r["backing"] == backing
                        })
                        .filter_map(|r| {
                            Some((
                                r["mem_gib"].as_f64()?,
                                stat(r, "median")?,
                                stat(r, "min")?,
                                stat(r, "max")?,
                            ))
                        })
                        .collect();
                    if pts.is_empty() {
                        continue;
                    }
                    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                    let on_touch = backing == "on-touch";
                    let mut label = if profiles.len() > 1 {
                        format!("{profile}: {mode}, fw.accept={fw}")
                    } else {
                        format!("{mode}, fw.accept={fw}")
                    };
                    if on_touch {
                        label.push_str(" (on-touch)");
                    }
                    let line: Vec<(f64, f64)> = pts.iter().map(|p| (p.0, p.1)).collect();
                    if on_touch {
                        chart
                            .draw_series(DashedLineSeries::new(line, 6, 4, c.stroke_width(2)))
                            .map_err(err)?;
                    } else {
                        chart
                            .draw_series(LineSeries::new(line, c.stroke_width(2)))
                            .map_err(err)?;
                    }
                    chart
                        .draw_series(pts.iter().map(|p| {
                            PathElement::new(vec![(p.0, p.2), (p.0, p.3)], c.stroke_width(2))
                        }))
                        .map_err(err)?;
                    for (x, lo, hi) in pts.iter().map(|p| (p.0, p.2, p.3)) {
                        for v in [lo, hi] {
                            chart
                                .draw_series(std::iter::once(PathElement::new(
                                    vec![(x / 1.04, v), (x * 1.04, v)],
                                    c.stroke_width(2),
                                )))
                                .map_err(err)?;
                        }
                    }
                    let marker = if on_touch {
                        c.stroke_width(2)
                    } else {
                        c.filled()
                    };
                    chart
                        .draw_series(pts.iter().map(|p| Circle::new((p.0, p.1), 4, marker)))
                        .map_err(err)?;
                    let y0 = 50 + 21 * legend_row;
                    legend_row += 1;
                    let seg = if on_touch {
                        vec![(10, y0), (18, y0), (22, y0), (30, y0)]
                    } else {
                        vec![(10, y0), (35, y0)]
                    };
                    if on_touch {
                        legend_area
                            .draw(&PathElement::new(
                                vec![(10, y0), (18, y0)],
                                c.stroke_width(3),
                            ))
                            .map_err(err)?;
                        legend_area
                            .draw(&PathElement::new(
                                vec![(24, y0), (35, y0)],
                                c.stroke_width(3),
                            ))
                            .map_err(err)?;
                    } else {
                        legend_area
                            .draw(&PathElement::new(seg, c.stroke_width(3)))
                            .map_err(err)?;
                    }
                    legend_area
                        .draw(&Text::new(label, (42, y0 - 7), ("sans-serif", 13)))
                        .map_err(err)?;
                }
            }
        }
    }
    legend_area
        .draw(&Text::new(
            "dashed, hollow: --backing on-touch",
            (10, 50 + 21 * legend_row + 10),
            ("sans-serif", 12),
        ))
        .map_err(err)?;
    root.present().map_err(err)
}

/// Cumulative bytes accepted over time, from traces, on a log scale so a
/// lazy run's few MiB show beside an eager run's GiB; each legend entry
/// says the run's total and when it finished.
fn accepted_over_time<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    traces: &[(&str, Vec<Record>)],
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    const MIB_F: f64 = (1u64 << 20) as f64;
    let series: Vec<(&str, Vec<(f64, f64)>)> = traces
        .iter()
        .map(|(name, recs)| {
            let mut total = 0u64;
            let pts = recs
                .iter()
                .filter(|r| r.kind == Kind::Accept && r.status == 0)
                .map(|r| {
                    total += 4096u64 << (9 * r.level as u64);
                    (r.t_ns as f64 / 1e6, total as f64 / MIB_F)
                })
                .collect();
            (*name, pts)
        })
        .collect();
    let x_max = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.0))
        .fold(1.0, f64::max)
        * 1.05;
    let y_max = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .fold(1.0, f64::max)
        * 2.0;
    let y_min = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .fold(f64::MAX, f64::min)
        .min(y_max / 4.0)
        / 2.0;
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "bytes accepted over time (fw.accept=none)",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, (y_min..y_max).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("time since VMM start (ms)")
        .y_desc("accepted (MiB, log scale)")
        .draw()
        .map_err(err)?;
    for ((name, pts), c) in series.into_iter().zip([RED, BLUE]) {
        let last = pts.last().copied().unwrap_or((0.0, 0.0));
        chart
            .draw_series(LineSeries::new(pts, c.stroke_width(2)))
            .map_err(err)?
            .label(format!(
                "accept_memory={name}: {:.0} MiB, last accept at {:.0} ms",
                last.1, last.0
            ))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart
            .draw_series(std::iter::once(Circle::new(last, 4, c.filled())))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// Which ranges of guest-physical memory were accepted by whom: one row
/// per actor (firmware, kernel, kexec) with the bytes each accepted in
/// the legend, every accept at least 2 px wide, and below it a zoom on
/// the memory above 4 GiB where the kernel and kexec work.
fn memory_map<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    recs: &[Record],
    mem: u64,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let top = 4 * GIB + mem.saturating_sub(3 * GIB);
    root.fill(&WHITE).map_err(err)?;
    let actors = [
        (Who::Firmware, "firmware", RGBColor(70, 130, 180)),
        (Who::Kernel, "kernel", RGBColor(60, 170, 60)),
        (Who::Kexec, "kexec", RGBColor(220, 50, 50)),
    ];
    let accepts: Vec<(Who, u64, u64)> = recs
        .iter()
        .filter(|r| r.kind == Kind::Accept && r.status == 0)
        .map(|r| (r.who, r.gpa, r.gpa + (4096u64 << (9 * r.level as u64))))
        .collect();
    let bytes = |who: Who| -> u64 {
        accepts
            .iter()
            .filter(|a| a.0 == who)
            .map(|a| a.2 - a.1)
            .sum()
    };
    // The zoom covers what the kernel and kexec accepted above 4 GiB.
    let high: Vec<&(Who, u64, u64)> = accepts
        .iter()
        .filter(|a| a.0 != Who::Firmware && a.1 >= 4 * GIB)
        .collect();
    let zoom = match (
        high.iter().map(|a| a.1).min(),
        high.iter().map(|a| a.2).max(),
    ) {
        (Some(lo), Some(hi)) => {
            let pad = ((hi - lo) / 10).max(2 << 20);
            (lo.saturating_sub(pad).max(4 * GIB), (hi + pad).min(top))
        }
        _ => (4 * GIB, top),
    };
    let (upper, lower) = root.split_vertically(root.dim_in_pixel().1 / 2);
    let panel = |area: &DrawingArea<DB, Shift>,
                 title: String,
                 lo: u64,
                 hi: u64,
                 unit: (f64, &str),
                 legend: bool|
     -> Result<(), String> {
        let (scale, unit_name) = unit;
        let width_px = area.dim_in_pixel().0.saturating_sub(60).max(1) as f64;
        let min_width = (hi - lo) as f64 / scale * 2.0 / width_px;
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(10)
            .build_cartesian_2d(lo as f64 / scale..hi as f64 / scale, -0.5..2.6)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(format!("guest-physical address ({unit_name})"))
            .disable_y_mesh()
            .disable_y_axis()
            .draw()
            .map_err(err)?;
        // The MMIO hole, where it is in view.
        let (h0, h1) = (3 * GIB, 4 * GIB);
        if h1 > lo && h0 < hi {
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [
                        (h0.max(lo) as f64 / scale, -0.5),
                        (h1.min(hi) as f64 / scale, 2.5),
                    ],
                    RGBColor(215, 215, 215).filled(),
                )))
                .map_err(err)?;
        }
        for (row, (who, name, c)) in actors.iter().rev().enumerate() {
            let y = row as f64;
            let visible = accepts
                .iter()
                .filter(|a| a.0 == *who && a.2 > lo && a.1 < hi)
                .map(|a| {
                    let x0 = a.1.max(lo) as f64 / scale;
                    let x1 = (a.2.min(hi) as f64 / scale).max(x0 + min_width);
                    Rectangle::new([(x0, y - 0.35), (x1, y + 0.35)], c.filled())
                });
            chart
                .draw_series(std::iter::once(Text::new(
                    name.to_string(),
                    (lo as f64 / scale, y + 0.55),
                    ("sans-serif", 13).into_font().color(c),
                )))
                .map_err(err)?;
            let series = chart.draw_series(visible).map_err(err)?;
            if legend {
                let b = bytes(*who);
                let label = format!("{name}: {}", human(b));
                let c = *c;
                series.label(label).legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 15, y + 5)], c.filled())
                });
            }
        }
        if legend {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.9))
                .border_style(BLACK)
                .draw()
                .map_err(err)?;
        }
        Ok(())
    };
    panel(
        &upper,
        format!(
            "who accepted which memory ({} GiB, fw.accept=all, kexec=2, workload=256M; grey: MMIO hole)",
            mem / GIB
        ),
        0,
        top,
        (GIB as f64, "GiB"),
        true,
    )?;
    panel(
        &lower,
        format!(
            "zoom: {:#x}..{:#x}, where the kernel and kexec accepted",
            zoom.0, zoom.1
        ),
        zoom.0,
        zoom.1,
        ((1u64 << 20) as f64, "MiB"),
        false,
    )?;
    root.present().map_err(err)
}

/// Bytes in KiB/MiB/GiB for legends.
fn human(b: u64) -> String {
    if b >= GIB {
        format!("{:.2} GiB", b as f64 / GIB as f64)
    } else if b >= 1 << 20 {
        format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
    } else {
        format!("{} KiB", b / 1024)
    }
}

/// `cargo xtask bench --micro`: accept throughput per level through the
/// real vCPU exit path against memset of the same bytes in this process,
/// the VMM's handling time per accept (p50/p99), and one doorbell round
/// trip, in each CPU profile. Writes `micro.json` and `targets.md` (the
/// issue's targets with their measured ratios, using `results.json` from
/// the same directory when a full run is there).
pub fn micro(out: &Path, profiles: &[String]) -> Result<(), String> {
    let images = crate::build_guests()?;
    let vmm = crate::build_vmm()?;
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let report = out.join("micro-report.json");
    let run = |profile: &str, mem: &str, cmdline: &str| {
        run_vmm(
            &vmm,
            &images,
            false,
            ["--mem", mem, "--cpu-profile", profile, "--cmdline", cmdline],
            &report,
            &format!("{profile} {cmdline}"),
        )
    };
    let mut results = Vec::new();
    for profile in profiles {
        // Warm the host's memory first (see the README on nested hosts).
        run(profile, "4G", "")?;
        let mut levels = Vec::new();
        for (level, mem, cmdline) in [
            ("2m", "4G", "fw.accept=all"),
            ("4k", "1G", "fw.accept=64M fw.accept_page=4k"),
        ] {
            let r = run(profile, mem, cmdline)?;
            let bytes = r["accept"]["bytes_accepted"].as_f64().unwrap_or(0.0);
            let secs = (r["timing_us"]["fw_accept_done"].as_f64().unwrap_or(0.0)
                - r["timing_us"]["fw_start"].as_f64().unwrap_or(0.0))
                / 1e6;
            let memset = memset_rate(bytes as usize);
            let rate = bytes / GIB as f64 / secs.max(1e-9);
            levels.push(json!({
                "level": level, "bytes": bytes, "seconds": secs, "accept_gib_s": rate,
                "memset_gib_s": memset, "ratio": rate / memset,
                "handle_p50_ns": r["accept"]["handle_p50_ns"], "handle_p99_ns": r["accept"]["handle_p99_ns"],
                "calls": r["accept"]["calls"],
            }));
            eprintln!("micro [{profile}] {level}: {rate:.2} GiB/s vs memset {memset:.2} GiB/s, handling p50 {} ns", r["accept"]["handle_p50_ns"]);
        }
        let r = run(profile, "1G", "fw.accept=none fw.bench=20000")?;
        let rtt = r["bench"]["doorbell_rtt_ns"].clone();
        eprintln!("micro [{profile}] doorbell round trip {rtt} ns");
        results.push(json!({"profile": profile, "resolved_profile": r["cpu_profile"], "levels": levels, "doorbell_rtt_ns": rtt}));
    }
    let _ = std::fs::remove_file(&report);
    let micro = json!({ "micro": results });
    write(
        &out.join("micro.json"),
        &serde_json::to_string_pretty(&micro).unwrap_or_default(),
    )?;
    write(&out.join("targets.md"), &targets(out, &micro))?;
    eprintln!("bench: wrote {}", out.join("targets.md").display());
    Ok(())
}

/// Zero-fill rate of fresh memory set up like guest RAM (anonymous,
/// 2 MiB aligned, THP-advised): what an accept's zeroing competes with.
/// The first pass warms the host's backing and is discarded.
fn memset_rate(bytes: usize) -> f64 {
    let once = || {
        let len = bytes + (2 << 20);
        // SAFETY: a fresh private anonymous mapping, used only here and
        // unmapped before returning; the filled range lies inside it.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            );
            if p == libc::MAP_FAILED {
                return 0.0;
            }
            let aligned = (p as usize).next_multiple_of(2 << 20) as *mut u8;
            libc::madvise(aligned as *mut _, bytes, libc::MADV_HUGEPAGE);
            let t = std::time::Instant::now();
            std::ptr::write_bytes(aligned, 0, bytes);
            let secs = t.elapsed().as_secs_f64();
            libc::munmap(p, len);
            bytes as f64 / GIB as f64 / secs.max(1e-9)
        }
    };
    once();
    once()
}

fn targets(out: &Path, micro: &Value) -> String {
    let mut md = String::from("# Targets (generated by `cargo xtask bench`)\n\n| target | measured | verdict |\n|---|---|---|\n");
    let mut row = |what: &str, measured: String, ok: bool| {
        md.push_str(&format!(
            "| {what} | {measured} | {} |\n",
            if ok { "met" } else { "missed" }
        ));
    };
    let full: Option<Value> = std::fs::read_to_string(out.join("results.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    if let Some(full) = &full {
        // Prefer the many-repeat flatness series; fall back to the matrix.
        let flat = |profile: &str, mem: u64, key: &str| {
            full["flatness"].as_array().and_then(|a| {
                a.iter()
                    .find(|s| s["mem_gib"] == mem && s["profile"] == profile)
                    .and_then(|s| s[key]["median"].as_f64())
            })
        };
        let matrix = |profile: &str, mem: u64, key: &str| {
            full["scenarios"].as_array().and_then(|a| {
                a.iter()
                    .find(|s| {
                        s["mem_gib"] == mem
                            && s["profile"] == profile
                            && s["accept_memory"] == "lazy"
                            && s["fw_accept"] == "none"
                    })
                    .and_then(|s| s[key]["median"].as_f64())
            })
        };
        let find = |profile: &str, mem: u64, key: &str| {
            flat(profile, mem, key).or_else(|| matrix(profile, mem, key))
        };
        let profiles: Vec<String> = full["scenarios"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["profile"].as_str().map(String::from))
            .fold(Vec::new(), |mut v, p| {
                if !v.contains(&p) {
                    v.push(p);
                }
                v
            });
        for profile in &profiles {
            // Named by the profile the runs resolved to (auto -> pvm-native
            // on a PVM host).
            let resolved = full["scenarios"]
                .as_array()
                .and_then(|a| a.iter().find(|s| s["profile"] == *profile))
                .and_then(|s| s["cpu_profile"].as_str())
                .unwrap_or(profile);
            let tag = format!("[{resolved}] ");
            let runs = full["flatness"]
                .as_array()
                .and_then(|a| a.iter().find(|s| s["profile"] == *profile))
                .and_then(|s| s["runs"].as_u64())
                .map_or(String::new(), |n| format!(", medians of {n}"));
            let ready = |mem| find(profile, mem, "kernel_ready_ms");
            if let (Some(a), Some(b)) = (ready(1), ready(64)) {
                row(
                    &format!("{tag}lazy kernel_ready at 64 GiB <= 1.2 x 1 GiB (fw.accept=none)"),
                    format!("{b:.1} / {a:.1} ms = x{:.2}{runs}", b / a),
                    b <= 1.2 * a,
                );
            }
            if let (Some(a), Some(b)) = (find(profile, 1, "rss_mib"), find(profile, 64, "rss_mib"))
            {
                row(
                    &format!("{tag}lazy host RSS at 64 GiB <= 1.5 x 1 GiB"),
                    format!("{b:.0} / {a:.0} MiB = x{:.2}", b / a),
                    b <= 1.5 * a,
                );
            }
            if let (Some(a), Some(b)) = (ready(1), ready(1024)) {
                row(
                    &format!("{tag}lazy kernel_ready at 1 TiB <= 2 x 1 GiB (fw.accept=none)"),
                    format!("{b:.1} / {a:.1} ms = x{:.2}{runs}", b / a),
                    b <= 2.0 * a,
                );
            }
        }
    }
    for p in micro["micro"].as_array().into_iter().flatten() {
        let profile = p["resolved_profile"].as_str().unwrap_or("?");
        for l in p["levels"].as_array().into_iter().flatten() {
            let ratio = l["ratio"].as_f64().unwrap_or(0.0);
            if l["level"] == "2m" {
                row(
                    &format!("[{profile}] eager 2 MiB accept >= 50% of memset"),
                    format!(
                        "{:.2} vs {:.2} GiB/s = {ratio:.2}",
                        l["accept_gib_s"].as_f64().unwrap_or(0.0),
                        l["memset_gib_s"].as_f64().unwrap_or(0.0)
                    ),
                    ratio >= 0.5,
                );
            }
            let p50 = l["handle_p50_ns"].as_f64().unwrap_or(f64::MAX);
            row(
                &format!(
                    "[{profile}] VMM handling per {} accept p50 <= 5 us",
                    l["level"].as_str().unwrap_or("?")
                ),
                format!("p50 {p50:.0} ns, p99 {} ns", l["handle_p99_ns"]),
                p50 <= 5000.0,
            );
        }
        row(
            &format!("[{profile}] doorbell round trip (measured, no target)"),
            format!("{} ns", p["doorbell_rtt_ns"]),
            true,
        );
    }
    md
}
