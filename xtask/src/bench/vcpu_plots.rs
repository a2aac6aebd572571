//! The charts of the vCPU axis (`vcpus`): `lock_wait` (the summed accept
//! lock wait and the workload time per `unaccepted_lock` policy) and
//! `vcpu_scaling` (each series' time and the VMM's handling time per
//! accept over the vCPU count), as SVG and PNG.

use super::chart::{err, register_font};
use super::stats::Stat;
use super::vcpus::{Point, VcpuResults, ASTERINAS_8G_SECONDS};
use crate::error::PlotError;
use crate::error::{Result, XtaskError};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// Draws both charts of `r` into `out`.
pub(crate) fn plots(out: &Path, r: &VcpuResults) -> Result<()> {
    register_font()?;
    for ext in ["svg", "png"] {
        let path: PathBuf = out.join(format!("lock_wait.{ext}"));
        if ext == "svg" {
            lock_plot(SVGBackend::new(&path, (1000, 460)).into_drawing_area(), r)
        } else {
            lock_plot(
                BitMapBackend::new(&path, (1000, 460)).into_drawing_area(),
                r,
            )
        }
        .map_err(|source| XtaskError::Plot { path, source })?;
        let path: PathBuf = out.join(format!("vcpu_scaling.{ext}"));
        if ext == "svg" {
            scaling_plot(SVGBackend::new(&path, (900, 460)).into_drawing_area(), r)
        } else {
            scaling_plot(BitMapBackend::new(&path, (900, 460)).into_drawing_area(), r)
        }
        .map_err(|source| XtaskError::Plot { path, source })?;
    }
    Ok(())
}

/// One plotted line: its name, colour and points.
type Line<'a, P> = (&'a str, RGBColor, Vec<P>);
/// What a panel plots of a point.
type Metric = fn(&Point) -> Option<Stat>;

const SERIES_COLORS: [(&str, RGBColor); 3] = [
    ("lock-list", RGBColor(0, 90, 200)),
    ("lock-global", RGBColor(210, 40, 40)),
    ("lock-none", RGBColor(120, 120, 120)),
];

/// Two panels over the vCPU count: the summed accept-lock wait and the
/// workload time, one line per lock policy.
fn lock_plot<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    r: &VcpuResults,
) -> Result<(), PlotError>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(err)?;
    let panels = root.split_evenly((1, 2));
    let metrics: [(&str, Metric); 2] = [
        ("accept lock wait, all CPUs (ms)", |p| p.lock_wait_ms),
        ("1 GiB parallel workload (ms)", |p| p.time_ms),
    ];
    for (panel, (label, metric)) in panels.iter().zip(metrics) {
        let pts: Vec<Line<(u32, Stat)>> = SERIES_COLORS
            .iter()
            .map(|(s, c)| {
                let v = r
                    .points
                    .iter()
                    .filter(|p| p.series == *s)
                    .filter_map(|p| Some((p.vcpus, metric(p)?)))
                    .collect();
                (*s, *c, v)
            })
            .collect();
        let y_max = pts
            .iter()
            .flat_map(|(_, _, v)| v.iter().map(|(_, s)| s.max))
            .fold(1.0, f64::max)
            * 1.15;
        let x_max = r.points.iter().map(|p| p.vcpus).max().unwrap_or(2) as f64 + 0.5;
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!("{label}, {} host cores", r.host_cores),
                ("sans-serif", 16),
            )
            .margin(12)
            .x_label_area_size(35)
            .y_label_area_size(55)
            .build_cartesian_2d(1.5..x_max, 0.0..y_max)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("vCPUs")
            .y_desc("median; bars: min-max")
            .draw()
            .map_err(err)?;
        for (series, color, v) in pts {
            if v.is_empty() {
                continue;
            }
            chart
                .draw_series(LineSeries::new(
                    v.iter().map(|(n, s)| (*n as f64, s.median)),
                    color.stroke_width(2),
                ))
                .map_err(err)?
                .label(series.trim_start_matches("lock-"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
                });
            chart
                .draw_series(v.iter().map(|(n, s)| {
                    PathElement::new(
                        vec![(*n as f64, s.min), (*n as f64, s.max)],
                        color.stroke_width(2),
                    )
                }))
                .map_err(err)?;
            chart
                .draw_series(
                    v.iter()
                        .map(|(n, s)| Circle::new((*n as f64, s.median), 4, color.filled())),
                )
                .map_err(err)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)
}

/// Speed-up over one vCPU of the firmware's accept (ours) next to
/// asterinas's published 8 GiB curve, and lazy boot time relative to one
/// vCPU.
fn scaling_plot<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    r: &VcpuResults,
) -> Result<(), PlotError>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(err)?;
    let time = |s: &str, n: u32| r.point(s, n).and_then(|p| p.time_ms).map(|t| t.median);
    let ours: Vec<(f64, f64)> = [1, 2, 4]
        .iter()
        .filter_map(|n| {
            Some((
                *n as f64,
                time("fw-accept-2m", 1)? / time("fw-accept-2m", *n)?,
            ))
        })
        .collect();
    let lazy: Vec<(f64, f64)> = [1, 2, 4]
        .iter()
        .filter_map(|n| {
            Some((
                *n as f64,
                time("kernel-lazy", 1)? / time("kernel-lazy", *n)?,
            ))
        })
        .collect();
    let theirs: Vec<(f64, f64)> = ASTERINAS_8G_SECONDS
        .iter()
        .map(|(n, s)| (*n as f64, ASTERINAS_8G_SECONDS[0].1 / s))
        .collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "speed-up over 1 vCPU ({}, {} host cores)",
                r.resolved_profile, r.host_cores
            ),
            ("sans-serif", 18),
        )
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(0.5..8.5, 0.0..4.0)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("vCPUs")
        .y_desc("time on 1 vCPU / time on N")
        .draw()
        .map_err(err)?;
    let lines: [Line<(f64, f64)>; 3] = [
        (
            "firmware accept of 3 GiB (this tool)",
            RGBColor(0, 90, 200),
            ours,
        ),
        (
            "asterinas eager 8 GiB (published)",
            RGBColor(120, 120, 120),
            theirs,
        ),
        (
            "lazy boot to kernel_ready (this tool)",
            RGBColor(0, 150, 80),
            lazy,
        ),
    ];
    for (label, color, pts) in lines {
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(err)?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
            });
        chart
            .draw_series(pts.iter().map(|p| Circle::new(*p, 4, color.filled())))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}
