//! Turning reports into numbers: typed per-scenario rows (median and
//! min-max of each measure), the flatness rows, the CSV, and the summary
//! table docs/lazy-vs-eager.md quotes. Reports are read as the VMM's typed `Report`,
//! so a missing field or mark is an error, never a zero.

use super::{host_ram, BenchConfig, Scenario, GIB};
use crate::error::{Result, RunError, XtaskError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use vmm::Report;

/// Median and range of one measure over a scenario's runs.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Stat {
    /// The statistic of `v` (at least one value).
    pub fn of(mut v: Vec<f64>) -> Result<Stat> {
        if v.is_empty() {
            return Err(XtaskError::NoRuns);
        }
        v.sort_by(f64::total_cmp);
        Ok(Stat {
            median: v[v.len() / 2],
            min: v[0],
            max: v[v.len() - 1],
        })
    }
}

/// One scenario of the matrix, aggregated.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScenarioRow {
    pub scenario: String,
    pub mem_gib: u64,
    pub accept_memory: String,
    pub fw_accept: String,
    /// The profile asked for (`auto`, `standard`...).
    pub profile: String,
    pub backing: String,
    pub runs: usize,
    pub kernel_ready_ms: Stat,
    pub rss_mib: Stat,
    pub bytes_accepted: Stat,
    /// Most mismatching units over the runs; null when no run's bitmap
    /// could be checked (no table, or not filled).
    pub bitmap_mismatches_max: Option<u64>,
    /// The profile the runs resolved to.
    pub cpu_profile: String,
}

/// One size of the flatness series.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FlatRow {
    pub profile: String,
    pub mem_gib: u64,
    pub runs: usize,
    pub kernel_ready_ms: Stat,
    pub rss_mib: Stat,
}

/// One run of the matrix, as written to `results.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunEntry {
    pub scenario: String,
    pub report: Report,
}

/// `results.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Results {
    pub host_ram_bytes: u64,
    pub repeats: usize,
    pub scenarios: Vec<ScenarioRow>,
    pub flatness: Vec<FlatRow>,
    pub runs: Vec<RunEntry>,
}

/// Milliseconds from VMM start to the kernel's `kernel_ready` mark.
pub fn kernel_ready_ms(r: &Report) -> Result<f64, RunError> {
    r.timing_us
        .get("kernel_ready")
        .map(|us| *us as f64 / 1e3)
        .ok_or(RunError::NoMark {
            mark: "kernel_ready",
            outcome: r.outcome,
        })
}

/// Peak RSS in MiB.
pub fn rss_mib(r: &Report) -> f64 {
    r.host.rss_peak_bytes as f64 / (1u64 << 20) as f64
}

/// Aggregates the runs of each scenario.
pub fn aggregate(runs: &[(Scenario, Report)]) -> Result<Vec<ScenarioRow>> {
    let mut groups: BTreeMap<String, Vec<&(Scenario, Report)>> = BTreeMap::new();
    for r in runs {
        groups.entry(r.0.key()).or_default().push(r);
    }
    let mut rows = Vec::new();
    for (key, rs) in groups {
        let s = &rs[0].0;
        let ready = rs
            .iter()
            .map(|r| kernel_ready_ms(&r.1))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.of(key.clone()))?;
        rows.push(ScenarioRow {
            scenario: key.clone(),
            mem_gib: s.mem_gib,
            accept_memory: s.mode.into(),
            fw_accept: s.fw.into(),
            profile: s.profile.clone(),
            backing: s.backing.into(),
            runs: rs.len(),
            kernel_ready_ms: Stat::of(ready)?,
            rss_mib: Stat::of(rs.iter().map(|r| rss_mib(&r.1)).collect())?,
            bytes_accepted: Stat::of(
                rs.iter()
                    .map(|r| r.1.accept.bytes_accepted as f64)
                    .collect(),
            )?,
            bitmap_mismatches_max: rs.iter().filter_map(|r| r.1.bitmap_mismatches).max(),
            cpu_profile: rs[0].1.cpu_profile_name().to_string(),
        });
    }
    Ok(rows)
}

/// `results.csv`.
pub fn csv(rows: &[ScenarioRow]) -> String {
    let mut csv = String::from("scenario,mem_gib,accept_memory,fw_accept,profile,backing,runs,kernel_ready_ms_median,kernel_ready_ms_min,kernel_ready_ms_max,rss_mib_median,bytes_accepted_median,bitmap_mismatches_max\n");
    for r in rows {
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{:.1},{:.1},{:.1},{:.0},{:.0},{}\n",
            r.scenario,
            r.mem_gib,
            r.accept_memory,
            r.fw_accept,
            r.profile,
            r.backing,
            r.runs,
            r.kernel_ready_ms.median,
            r.kernel_ready_ms.min,
            r.kernel_ready_ms.max,
            r.rss_mib.median,
            r.bytes_accepted.median,
            r.bitmap_mismatches_max
                .map_or("-".to_string(), |n| n.to_string())
        ));
    }
    csv
}

/// `flatness.csv`.
pub fn flat_csv(rows: &[FlatRow]) -> String {
    let mut csv = String::from("profile,mem_gib,runs,kernel_ready_ms_median,kernel_ready_ms_min,kernel_ready_ms_max,rss_mib_median\n");
    for r in rows {
        csv.push_str(&format!(
            "{},{},{},{:.1},{:.1},{:.1},{:.0}\n",
            r.profile,
            r.mem_gib,
            r.runs,
            r.kernel_ready_ms.median,
            r.kernel_ready_ms.min,
            r.kernel_ready_ms.max,
            r.rss_mib.median
        ));
    }
    csv
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

/// The table docs/lazy-vs-eager.md quotes. lazy vs eager with `fw.accept=none` in
/// the first profile, medians with min-max, plus the flatness series'
/// largest row, headed by what produced it.
pub fn summary(
    cfg: &BenchConfig,
    rows: &[ScenarioRow],
    flatness: &[FlatRow],
    report: Option<&Report>,
) -> String {
    let profile = &cfg.profiles[0];
    let resolved = rows
        .iter()
        .find(|r| &r.profile == profile)
        .map_or(profile.as_str(), |r| r.cpu_profile.as_str());
    let inputs = report.map(|r| &r.inputs);
    let commit = inputs
        .and_then(|i| i.vmm_git_commit.as_deref())
        .unwrap_or("unknown commit");
    let version = inputs.map_or("?", |i| i.vmm_version.as_str());
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
    let cell = |k: &Stat, rss: &Stat, on_touch: bool| {
        format!(
            "{:.0} ms ({:.0}-{:.0}), {:.0} MiB{}",
            k.median,
            k.min,
            k.max,
            rss.median,
            if on_touch { " *" } else { "" }
        )
    };
    for &gib in &cfg.sizes_gib {
        let find = |mode: &str| {
            rows.iter().find(|r| {
                &r.profile == profile
                    && r.mem_gib == gib
                    && r.accept_memory == mode
                    && r.fw_accept == "none"
            })
        };
        if let (Some(l), Some(e)) = (find("lazy"), find("eager")) {
            let ratio = e.kernel_ready_ms.median / l.kernel_ready_ms.median.max(1e-9);
            md.push_str(&format!(
                "| {gib} GiB | {} | {} | {ratio:.1}x |\n",
                cell(&l.kernel_ready_ms, &l.rss_mib, l.backing == "on-touch"),
                cell(&e.kernel_ready_ms, &e.rss_mib, e.backing == "on-touch")
            ));
        }
    }
    if let Some(t) = flatness
        .iter()
        .filter(|r| &r.profile == profile)
        .max_by_key(|r| r.mem_gib)
    {
        md.push_str(&format!(
            "| {} GiB | {} (flatness series, {} runs) | - | - |\n",
            t.mem_gib,
            cell(&t.kernel_ready_ms, &t.rss_mib, false),
            t.runs
        ));
    }
    md.push_str(
        "\n\\* `--backing on-touch`: eager runs larger than half the host's RAM get host \
         pages at first touch, so they measure TDCALLs and bookkeeping, not zeroing.\n",
    );
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_are_median_and_range() {
        let s = Stat::of(vec![5.0, 1.0, 3.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (3.0, 1.0, 5.0));
        assert!(Stat::of(Vec::new()).is_err());
    }

    #[test]
    fn a_report_without_its_mark_is_an_error_not_a_zero() {
        let mut report = vmm::internals::refused_report("no run".into(), Default::default());
        report.timing_us.insert("kernel_ready".into(), 31_000);
        let text = serde_json::to_string(&report).unwrap();
        let mut r: Report = serde_json::from_str(&text).expect("a report parses back");
        assert_eq!(kernel_ready_ms(&r).unwrap(), 31.0);
        r.timing_us.remove("kernel_ready");
        assert!(kernel_ready_ms(&r)
            .unwrap_err()
            .to_string()
            .contains("no kernel_ready mark"));
        // A renamed or missing field fails to parse instead of reading as 0.
        let renamed = text.replacen("\"rss_peak_bytes\"", "\"rss_peak\"", 1);
        assert!(serde_json::from_str::<Report>(&renamed).is_err());
    }

    #[test]
    fn the_committed_results_parse_as_typed_results() {
        let text = include_str!("../../../docs/bench/results.json");
        let r: Results = serde_json::from_str(text).expect("docs/bench/results.json");
        assert!(!r.scenarios.is_empty() && !r.runs.is_empty());
    }
}
