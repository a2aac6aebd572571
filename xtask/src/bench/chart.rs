//! What every chart of the bench shares: the embedded font, and plotting
//! errors as the bench's messages. The charts themselves are `plots`
//! (time and RSS against RAM), `trace_plots` (from the accept traces) and
//! `vcpu_plots` (lock wait and scaling).

use plotters::style::FontStyle;

/// A plotting error as the bench's message.
pub(crate) fn err(e: impl std::fmt::Display) -> String {
    format!("plotting: {e}")
}

/// Makes the embedded DejaVu Sans the plots' "sans-serif" (once per process).
pub(crate) fn register_font() -> Result<(), String> {
    static ONCE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .map_err(|_| "plotting: the embedded DejaVu Sans font does not parse".to_string())
    })
    .clone()
}
