//! Lazy acceptance against RAM (`cargo xtask bench --flat`): our lazy boot
//! (`fw.accept=none accept_memory=lazy`) from 1 GiB to 64 TiB, each
//! measure on one line: time to `kernel_ready`, peak RSS, the guest's page
//! tables (`host.guest_page_table_bytes`), the kernel allocator's
//! directory, accepts, and the 2 MiB units initial memory leaves part
//! pending. Medians (min-max) of interleaved repeats after a warm-up at
//! every size. With `--baseline DIR` (a `vmm`, `guest-fw` and
//! `guest-kernel` built from another commit) that build's runs are
//! interleaved with this one's, and the table gives both and their ratio.
//! Writes `flat.json`, `flat.md` and `flat_vs_ram.svg`/`.png`.

use super::chart::{err, register_font, COLORS};
use super::stats::Stat;
use super::{create_dir, progress_bar, run_vmm, write, write_json};
use crate::error::{PlotError, Result, XtaskError};
use plotters::coord::Shift;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use vmm::Report;

/// The sizes of the line, in GiB: 1 GiB to 64 TiB.
pub const SIZES_GIB: [u64; 8] = [1, 4, 16, 64, 256, 1024, 16384, 65536];

/// One build: its name and binaries.
struct Build {
    name: String,
    vmm: PathBuf,
    images: crate::GuestImages,
}

/// One (build, profile, size) point.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FlatPoint {
    pub build: String,
    pub profile: String,
    pub mem_gib: u64,
    pub runs: usize,
    pub kernel_ready_ms: Stat,
    pub rss_peak_mib: Stat,
    /// The next three are `None` for a build whose reports lack them (a
    /// baseline from before they existed): not measured, never zero.
    pub page_table_kib: Option<Stat>,
    pub directory_kib: Option<Stat>,
    pub accepts: Stat,
    /// 2 MiB units part initial, part pending (`pages.units.partial`).
    pub partial_units: Option<Stat>,
}

/// Which of the newer report fields a run's report has.
#[derive(Clone, Copy, Default)]
struct Has {
    page_tables: bool,
    directory: bool,
    units: bool,
}

impl Has {
    fn of(report: &Path) -> Has {
        let v: serde_json::Value = std::fs::read_to_string(report)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        Has {
            page_tables: v["host"].get("guest_page_table_bytes").is_some(),
            directory: v["guest"].get("allocator_directory_bytes").is_some(),
            units: v["pages"].get("units").is_some(),
        }
    }
}

/// `flat.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FlatResults {
    pub host_cores: usize,
    pub repeats: usize,
    pub cmdline: String,
    pub points: Vec<FlatPoint>,
}

const CMDLINE: &str = "fw.accept=none accept_memory=lazy";

fn kib(bytes: u64) -> f64 {
    bytes as f64 / 1024.0
}

/// Runs the line for every build and profile, `repeats` interleaved times
/// after one warm-up run per point, and writes the results into `out`.
pub fn flat(
    out: &Path,
    profiles: &[String],
    repeats: usize,
    sizes_gib: &[u64],
    baseline: Option<&Path>,
) -> Result<FlatResults> {
    create_dir(out)?;
    let mut builds = vec![Build {
        name: "this build".into(),
        images: crate::build_guests()?,
        vmm: crate::build_vmm()?,
    }];
    if let Some(dir) = baseline {
        let file = |name: &str| {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                Err(XtaskError::Usage(format!(
                    "--baseline {}: no {name} there (it needs vmm, guest-fw and guest-kernel)",
                    dir.display()
                )))
            }
        };
        builds.insert(
            0,
            Build {
                name: "baseline".into(),
                vmm: file("vmm")?,
                images: crate::GuestImages {
                    firmware: file("guest-fw")?,
                    kernel: file("guest-kernel")?,
                },
            },
        );
    }
    let report = out.join("flat-report.json");
    let n_builds = builds.len();
    let cases: Vec<(usize, &String, u64)> = profiles
        .iter()
        .flat_map(|p| {
            sizes_gib
                .iter()
                .flat_map(move |&g| (0..n_builds).map(move |b| (b, p, g)))
        })
        .collect();
    let run = |(b, profile, gib): (usize, &String, u64)| {
        let build = &builds[b];
        let mem = format!("{gib}G");
        let what = format!("{} {profile} {gib} GiB", build.name);
        let args = [
            "--mem",
            &mem,
            "--cpu-profile",
            profile,
            "--cmdline",
            CMDLINE,
        ];
        let r = run_vmm(&build.vmm, &build.images, true, args, &report, &what)?;
        Ok::<_, XtaskError>((r, Has::of(&report)))
    };
    // Warm-up: the first touch of cold host memory is slow on nested hosts.
    for &case in &cases {
        run(case)?;
    }
    let mut reports: Vec<Vec<Report>> = cases.iter().map(|_| Vec::new()).collect();
    let mut has = vec![Has::default(); cases.len()];
    let bar = progress_bar(cases.len() * repeats, "flat");
    for _ in 0..repeats {
        for (i, &case) in cases.iter().enumerate() {
            bar.set_message(format!("{} {} {}G", builds[case.0].name, case.1, case.2));
            let (r, h) = run(case)?;
            reports[i].push(r);
            has[i] = h;
            bar.inc(1);
        }
    }
    bar.finish_with_message("done");
    let _ = std::fs::remove_file(&report);
    let stat = |runs: &[Report], f: &dyn Fn(&Report) -> f64| Stat::of(runs.iter().map(f).collect());
    let mut points = Vec::new();
    for (((b, _, gib), runs), has) in cases.iter().zip(&reports).zip(&has) {
        let directory = |r: &Report| {
            kib(r
                .guest
                .get("allocator_directory_bytes")
                .copied()
                .unwrap_or(0))
        };
        points.push(FlatPoint {
            build: builds[*b].name.clone(),
            profile: runs
                .first()
                .map_or_else(String::new, |r| r.cpu_profile_name().to_string()),
            mem_gib: *gib,
            runs: runs.len(),
            kernel_ready_ms: stat(runs, &|r| {
                r.timing_us
                    .get("kernel_ready")
                    .map_or(f64::NAN, |us| *us as f64 / 1e3)
            })?,
            rss_peak_mib: stat(runs, &|r| r.host.rss_peak_bytes as f64 / (1 << 20) as f64)?,
            page_table_kib: has
                .page_tables
                .then(|| stat(runs, &|r| kib(r.host.guest_page_table_bytes)))
                .transpose()?,
            directory_kib: has.directory.then(|| stat(runs, &directory)).transpose()?,
            accepts: stat(runs, &|r| r.accept.calls as f64)?,
            partial_units: has
                .units
                .then(|| stat(runs, &|r| r.pages.units.partial.len() as f64))
                .transpose()?,
        });
    }
    let results = FlatResults {
        host_cores: super::host_cores(),
        repeats,
        cmdline: CMDLINE.into(),
        points,
    };
    write_json(&out.join("flat.json"), &results)?;
    write(&out.join("flat.md"), &markdown(&results))?;
    draw(out, &results)?;
    Ok(results)
}

/// Draws `flat_vs_ram.svg` and `.png` in `out` from `results`.
pub fn draw(out: &Path, results: &FlatResults) -> Result<()> {
    register_font()?;
    for (path, png) in [
        (out.join("flat_vs_ram.svg"), false),
        (out.join("flat_vs_ram.png"), true),
    ] {
        let size = (1150, 900);
        let drawn = if png {
            plot(BitMapBackend::new(&path, size).into_drawing_area(), results)
        } else {
            plot(SVGBackend::new(&path, size).into_drawing_area(), results)
        };
        drawn.map_err(|source| XtaskError::Plot { path, source })?;
    }
    Ok(())
}

fn size_name(gib: u64) -> String {
    if gib >= 1024 {
        format!("{} TiB", gib / 1024)
    } else {
        format!("{gib} GiB")
    }
}

/// `flat.md`: per profile, one row per measure and build, one column per
/// size; with a baseline, a row of ratios (this build / baseline).
pub fn markdown(r: &FlatResults) -> String {
    let mut sizes: Vec<u64> = r.points.iter().map(|p| p.mem_gib).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let mut builds: Vec<&str> = Vec::new();
    let mut profiles: Vec<&str> = Vec::new();
    for p in &r.points {
        if !builds.contains(&p.build.as_str()) {
            builds.push(&p.build);
        }
        if !profiles.contains(&p.profile.as_str()) {
            profiles.push(&p.profile);
        }
    }
    let mut s = format!(
        "Lazy boot, `{}`, {} host cores, medians of {} interleaved repeats after a warm-up at every point (min-max).\n",
        r.cmdline, r.host_cores, r.repeats
    );
    type Measure = (&'static str, fn(&FlatPoint) -> Option<Stat>, &'static str);
    let measures: [Measure; 6] = [
        ("kernel_ready", |p| Some(p.kernel_ready_ms), "ms"),
        ("peak RSS", |p| Some(p.rss_peak_mib), "MiB"),
        ("guest page tables", |p| p.page_table_kib, "KiB"),
        ("allocator directory", |p| p.directory_kib, "KiB"),
        ("accepts", |p| Some(p.accepts), ""),
        ("part-pending 2 MiB units", |p| p.partial_units, ""),
    ];
    for profile in &profiles {
        s.push_str(&format!("\n**{profile}**\n\n| measure | build |"));
        for g in &sizes {
            s.push_str(&format!(" {} |", size_name(*g)));
        }
        s.push_str("\n|---|---|");
        s.push_str(&"---|".repeat(sizes.len()));
        s.push('\n');
        let point = |b: &str, g: u64| {
            r.points
                .iter()
                .find(|p| p.build == b && p.profile == *profile && p.mem_gib == g)
        };
        for (name, get, unit) in &measures {
            for b in &builds {
                s.push_str(&format!(
                    "| {name}{} | {b} |",
                    if unit.is_empty() {
                        String::new()
                    } else {
                        format!(" ({unit})")
                    }
                ));
                for g in &sizes {
                    let cell = point(b, *g).map_or("-".to_string(), |p| {
                        let Some(st) = get(p) else {
                            return "not reported".to_string();
                        };
                        if st.min == st.max {
                            format!("{:.1}", st.median)
                        } else {
                            format!("{:.1} ({:.1}-{:.1})", st.median, st.min, st.max)
                        }
                    });
                    s.push_str(&format!(" {cell} |"));
                }
                s.push('\n');
            }
            if builds.len() == 2 {
                s.push_str(&format!("| {name} | ratio |"));
                for g in &sizes {
                    let cell = match (
                        point(builds[1], *g).and_then(get),
                        point(builds[0], *g).and_then(get),
                    ) {
                        (Some(new), Some(old)) if old.median > 0.0 => {
                            format!("x{:.2}", new.median / old.median)
                        }
                        _ => "-".into(),
                    };
                    s.push_str(&format!(" {cell} |"));
                }
                s.push('\n');
            }
        }
        // Flatness: each size's kernel_ready against 1 GiB's, this build.
        if let Some(base) = point(builds[builds.len() - 1], sizes[0]) {
            s.push_str(&format!(
                "| kernel_ready / {} | {} |",
                size_name(sizes[0]),
                builds[builds.len() - 1]
            ));
            for g in &sizes {
                let cell = point(builds[builds.len() - 1], *g).map_or("-".into(), |p| {
                    format!(
                        "x{:.2}",
                        p.kernel_ready_ms.median / base.kernel_ready_ms.median
                    )
                });
                s.push_str(&format!(" {cell} |"));
            }
            s.push('\n');
        }
    }
    s
}

/// Time to `kernel_ready` (top) and peak RSS with the guest's page
/// tables (bottom) against RAM, one line per build and profile.
fn plot<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, r: &FlatResults) -> Result<(), PlotError>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(err)?;
    let (top, bottom) = root.split_vertically(450);
    type Get = fn(&FlatPoint) -> f64;
    type Panel<'a, DB> = (&'a DrawingArea<DB, Shift>, &'a str, Vec<(&'a str, Get)>);
    let panels: [Panel<'_, DB>; 2] = [
        (
            &top,
            "time to kernel_ready (ms)",
            vec![("", |p| p.kernel_ready_ms.median)],
        ),
        (
            &bottom,
            "host memory (MiB)",
            vec![
                ("peak RSS", |p| p.rss_peak_mib.median),
                ("guest page tables", |p| {
                    p.page_table_kib.map_or(0.0, |s| s.median / 1024.0)
                }),
            ],
        ),
    ];
    let colors = COLORS;
    let mut series: Vec<(String, String)> = Vec::new();
    for p in &r.points {
        let k = (p.build.clone(), p.profile.clone());
        if !series.contains(&k) {
            series.push(k);
        }
    }
    for (panel, (area, label, lines)) in panels.into_iter().enumerate() {
        let ys: Vec<f64> = r
            .points
            .iter()
            .flat_map(|p| lines.iter().map(move |(_, f)| f(p)))
            .filter(|v| *v > 0.0)
            .collect();
        let y_max = ys.iter().cloned().fold(1.0, f64::max) * 2.0;
        let y_min = ys.iter().cloned().fold(f64::MAX, f64::min).min(y_max) / 2.0;
        let x_max = r.points.iter().map(|p| p.mem_gib).max().unwrap_or(1) as f64 * 1.5;
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!("{label} vs guest RAM, lazy boot"),
                ("sans-serif", 20),
            )
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d((0.7..x_max).log_scale(), (y_min..y_max).log_scale())
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("guest RAM (GiB, log scale)")
            .y_desc(format!("{label}, log scale"))
            .draw()
            .map_err(err)?;
        let mut n = 0;
        for (build, profile) in &series {
            // Host memory does not depend on the CPU profile: the memory
            // panel draws the first profile's lines only.
            if panel == 1 && Some(profile) != series.first().map(|s| &s.1) {
                continue;
            }
            for (what, f) in &lines {
                let mut pts: Vec<(f64, f64)> = r
                    .points
                    .iter()
                    .filter(|p| &p.build == build && &p.profile == profile)
                    .map(|p| (p.mem_gib as f64, f(p)))
                    .filter(|(_, y)| *y > 0.0)
                    .collect();
                if pts.is_empty() {
                    // Not reported by this build (a baseline's reports).
                    continue;
                }
                let c = colors[n % colors.len()];
                n += 1;
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                let name = [build.as_str(), profile.as_str(), what]
                    .iter()
                    .filter(|s| !s.is_empty())
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ");
                chart
                    .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                    .map_err(err)?
                    .label(name)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                    });
                chart
                    .draw_series(pts.iter().map(|p| Circle::new(*p, 4, c.filled())))
                    .map_err(err)?;
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}
