//! What every chart of the bench shares: the embedded font, and plotters'
//! errors made one typed `error::PlotError`. The charts themselves are `plots`
//! (time and RSS against RAM), `trace_plots` (from the accept traces) and
//! `vcpu_plots` (lock wait and scaling).

use crate::error::{PlotError, Result, XtaskError};
use plotters::style::{FontStyle, RGBColor, BLACK, BLUE, GREEN, MAGENTA, RED};

/// The line colours of the charts, in the order series take them.
pub(crate) const COLORS: [RGBColor; 8] = [
    RED,
    BLUE,
    GREEN,
    MAGENTA,
    RGBColor(255, 140, 0),
    RGBColor(0, 150, 150),
    RGBColor(120, 80, 0),
    BLACK,
];

/// A plotters error as a `PlotError` (for `map_err`).
pub(crate) fn err(e: impl std::error::Error + Send + Sync + 'static) -> PlotError {
    PlotError(Box::new(e))
}

/// Makes the embedded DejaVu Sans the plots' "sans-serif" (once per process).
pub(crate) fn register_font() -> Result<()> {
    static ONCE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let parsed = ONCE.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .is_ok()
    });
    if *parsed {
        Ok(())
    } else {
        Err(XtaskError::Font)
    }
}
