//! What every chart of the bench shares: the embedded font, and plotters'
//! errors made one typed `error::PlotError`. The charts themselves are `plots`
//! (time and RSS against RAM), `trace_plots` (from the accept traces) and
//! `vcpu_plots` (lock wait and scaling).

use crate::error::{PlotError, Result, XtaskError};
use plotters::style::FontStyle;

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
