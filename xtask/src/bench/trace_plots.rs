//! The plots drawn from accept traces: bytes accepted over time (lazy vs
//! eager), and which memory each actor (firmware, kernel, kexec)
//! accepted, with a zoom where the kernel and kexec work.

use super::chart::err;
use super::GIB;
use crate::error::PlotError;
use plotters::coord::Shift;
use plotters::prelude::*;
use vmm::trace::{Kind, Record, Who};

/// Cumulative bytes accepted over time, from traces, on a log scale so a
/// lazy run's few MiB show beside an eager run's GiB; each legend entry
/// says the run's total and when it finished.
pub fn accepted_over_time<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    traces: &[(&str, Vec<Record>)],
) -> Result<(), PlotError>
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
pub fn memory_map<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    recs: &[Record],
    mem: u64,
) -> Result<(), PlotError>
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
     -> Result<(), PlotError> {
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
