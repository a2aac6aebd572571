//! The plots of a bench run, each as SVG and PNG (with an embedded DejaVu
//! Sans, so they render the same everywhere): time to `kernel_ready` and
//! peak RSS against guest RAM, from the typed scenario rows. The trace
//! plots are in `trace_plots.rs`.

use super::chart::{err, register_font, COLORS};
use super::stats::{Results, ScenarioRow, Stat};
use super::trace_plots::{accepted_over_time, memory_map};
use super::{read_trace, GIB};
use crate::error::PlotError;
use crate::error::{Result, XtaskError};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// Draws one plot twice: `STEM.svg` and `STEM.png`.
macro_rules! plot {
    ($stem:expr, $size:expr, $f:ident($($arg:expr),*)) => {{
        let stem: PathBuf = $stem;
        let svg = stem.with_extension("svg");
        $f(SVGBackend::new(&svg, $size).into_drawing_area(), $($arg),*)
            .map_err(|source| XtaskError::Plot { path: svg, source })?;
        let png = stem.with_extension("png");
        $f(BitMapBackend::new(&png, $size).into_drawing_area(), $($arg),*)
            .map_err(|source| XtaskError::Plot { path: png, source })?;
    }};
}

/// Draws every plot of `out` from its rows (`results.json`'s scenarios)
/// and its traces (`trace-lazy.bin`, `trace-eager.bin`, `trace-kexec.bin`).
pub fn plots(out: &Path, rows: &[ScenarioRow], first_profile: &str) -> Result<()> {
    register_font()?;
    plot!(
        out.join("boot_time_vs_ram"),
        (1150, 560),
        line_plot("time to kernel_ready (ms)", rows, |r: &ScenarioRow| r
            .kernel_ready_ms)
    );
    // Host memory does not depend on the CPU profile: one profile's lines
    // (the others would be drawn exactly on top of them).
    let one_profile: Vec<ScenarioRow> = rows
        .iter()
        .filter(|r| r.profile == first_profile)
        .cloned()
        .collect();
    plot!(
        out.join("rss_vs_ram"),
        (1150, 560),
        line_plot("host peak RSS (MiB)", &one_profile, |r: &ScenarioRow| r
            .rss_mib)
    );
    let traces = ["lazy", "eager"]
        .into_iter()
        .map(|mode| Ok((mode, read_trace(&out.join(format!("trace-{mode}.bin")))?)))
        .collect::<Result<Vec<_>>>()?;
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
pub fn replot(out: &Path) -> Result<()> {
    // The lazy boot against RAM (`bench --flat`), when it ran here.
    if let Ok(text) = std::fs::read_to_string(out.join("flat.json")) {
        let flat: super::flat::FlatResults =
            serde_json::from_str(&text).map_err(|source| XtaskError::Json {
                action: "parse",
                path: out.join("flat.json"),
                source,
            })?;
        super::flat::draw(out, &flat)?;
    }
    let path = out.join("results.json");
    let text = std::fs::read_to_string(&path).map_err(|source| XtaskError::File {
        action: "read",
        path: path.clone(),
        source,
    })?;
    let results: Results = serde_json::from_str(&text).map_err(|source| XtaskError::Json {
        action: "parse",
        path: path.clone(),
        source,
    })?;
    let Some(first) = results.scenarios.first().map(|r| r.profile.clone()) else {
        return Err(XtaskError::NoScenarios { path });
    };
    plots(out, &results.scenarios, &first)?;
    eprintln!("bench: redrew the plots in {}", out.display());
    Ok(())
}

/// One line per (profile, accept_memory, fw policy, backing) over RAM
/// size: the median of each point, with a bar from its fastest to its
/// slowest run so host noise shows as noise. Points measured with
/// `--backing on-touch` (eager runs too large to populate) are their own
/// dashed series with hollow markers, never joined to populated ones.
fn line_plot<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    y_label: &str,
    rows: &[ScenarioRow],
    metric: impl Fn(&ScenarioRow) -> Stat,
) -> Result<(), PlotError>
where
    DB::ErrorType: 'static,
{
    let stat = |r: &ScenarioRow, which: &str| {
        let s = metric(r);
        Some(match which {
            "median" => s.median,
            "min" => s.min,
            _ => s.max,
        })
        .filter(|v| *v > 0.0)
    };
    root.fill(&WHITE).map_err(err)?;
    // The legend gets its own column so it never hides a line.
    let width = root.dim_in_pixel().0 as i32;
    let (plot_area, legend_area) = root.split_horizontally(width - 330);
    // Log-log: sizes grow by 4x steps and times span four decades.
    let xs: Vec<f64> = rows.iter().map(|r| r.mem_gib as f64).collect();
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
    let colors = COLORS;
    let mut profiles: Vec<&str> = Vec::new();
    for r in rows {
        if !profiles.contains(&r.cpu_profile.as_str()) {
            profiles.push(&r.cpu_profile);
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
                            r.cpu_profile == *profile
                                && r.accept_memory == mode
                                && r.fw_accept == fw
                                && r.backing == backing
                        })
                        .filter_map(|r| {
                            Some((
                                r.mem_gib as f64,
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
