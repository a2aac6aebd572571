//! Why a task failed: `XtaskError`, the one error of the xtask crate, and
//! `RunError`, what was wrong with one VMM run the bench needed (its
//! outcome, its report, a mark or benchmark missing from it). Messages say
//! what failed and with which value; the underlying error is the
//! `source()`, which `cargo xtask` prints after the message.

use std::io;
use std::path::PathBuf;
use thiserror::Error;

/// The xtask crate's results.
pub type Result<T, E = XtaskError> = std::result::Result<T, E>;

/// A boxed error of another crate whose type cannot be named here (the
/// VMM's size parser's), kept as the source.
pub type BoxedError = Box<dyn std::error::Error + Send + Sync>;

/// Why a task failed.
#[derive(Debug, Error)]
pub enum XtaskError {
    /// Building the guests or the VMM failed.
    #[error(transparent)]
    Build(#[from] guest_build::BuildError),
    /// A command-line mistake (`cargo xtask` prints the usage after it).
    #[error("{0}")]
    Usage(String),
    /// A command-line value that does not parse.
    #[error("{flag}: bad value `{value}`")]
    BadValue {
        flag: &'static str,
        value: String,
        source: BoxedError,
    },
    /// A file or directory could not be read, written, opened or created.
    #[error("cannot {action} {}", path.display())]
    File {
        /// `read`, `write`, `open`, `create`.
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// A program could not be started.
    #[error("cannot start {}", program.display())]
    Spawn { program: PathBuf, source: io::Error },
    /// Waiting for a started program failed.
    #[error("cannot wait for {}", program.display())]
    Wait { program: PathBuf, source: io::Error },
    /// A JSON file that does not parse as what it should hold, or a value
    /// that cannot be encoded for it.
    #[error("cannot {action} {}", path.display())]
    Json {
        /// `parse` or `encode`.
        action: &'static str,
        path: PathBuf,
        source: serde_json::Error,
    },
    /// An accept trace that cannot be read.
    #[error("cannot read the trace {}", path.display())]
    Trace {
        path: PathBuf,
        source: vmm::trace::TraceError,
    },
    /// A bench results file without the rows it needs.
    #[error("{} has no scenarios", path.display())]
    NoScenarios { path: PathBuf },
    /// A VMM run that did not end as the task needs; `what` names the run.
    #[error("{what}")]
    Run {
        what: String,
        #[source]
        problem: RunError,
    },
    /// A statistic over no values (every run of a point failed).
    #[error("no runs to summarise")]
    NoRuns,
    /// plotters failed to draw `path`.
    #[error("cannot draw {}", path.display())]
    Plot {
        path: PathBuf,
        #[source]
        source: PlotError,
    },
    /// The plots' embedded font.
    #[error("plotting: the embedded DejaVu Sans font does not parse")]
    Font,
    /// `cargo xtask limits`: a configuration that fails even under the
    /// largest limit tried, so there is nothing to bisect.
    #[error("{mem} x{cpus}: fails even under a limit of {limit} bytes (exit {code}): {stderr}")]
    LimitTooLow {
        mem: String,
        cpus: u32,
        limit: u64,
        code: i32,
        stderr: String,
    },
    /// `cargo xtask limits`: runs below a minimum that did not end in the
    /// clean refusal (exit 2, the limit named); the table lists them.
    #[error("{count} runs below the limits did not end in a clean refusal (see the table's last column)")]
    NotCleanRefusal { count: usize },
}

impl XtaskError {
    /// Whether this is a command-line mistake, after which the usage helps.
    pub fn is_usage(&self) -> bool {
        matches!(self, XtaskError::Usage(_) | XtaskError::BadValue { .. })
    }

    /// The message followed by its sources, `: `-separated; a source whose
    /// text the message already holds (some errors quote theirs) is not
    /// repeated.
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(e) = source {
            let s = e.to_string();
            if !text.contains(&s) {
                text.push_str(": ");
                text.push_str(&s);
            }
            source = e.source();
        }
        text
    }
}

/// What was wrong with one VMM run.
#[derive(Debug, Error)]
pub enum RunError {
    /// The run ended with another outcome than ok.
    #[error("outcome {outcome}{}", fatal.as_deref().map_or(String::new(), |f| format!(": {f}")))]
    Outcome {
        outcome: vmm::Outcome,
        /// The report's fatal stop, in words.
        fatal: Option<String>,
    },
    /// The VMM wrote no report (it may have been refused, or crashed).
    /// The message quotes the io error before the VMM's stderr, which
    /// may be several lines, so it reads first.
    #[error("no report at {} ({source}); the VMM's stderr: {}", path.display(), stderr_text(stderr))]
    NoReport {
        path: PathBuf,
        stderr: String,
        source: io::Error,
    },
    /// The report does not parse as the VMM's `Report`.
    #[error("bad report {}", path.display())]
    BadReport {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// The report lacks a timing mark the task reads.
    #[error("report (outcome {outcome}) has no {mark} mark")]
    NoMark {
        mark: &'static str,
        outcome: vmm::Outcome,
    },
    /// A guest benchmark the run was for did not report.
    #[error("the {0} benchmark did not report")]
    NoBench(&'static str),
    /// Every repeat of a point failed; their outcomes.
    #[error("no run ended ok ({})", failed.join("; "))]
    NoneOk { failed: Vec<String> },
}

impl RunError {
    /// This problem as the error of the run named `what`.
    pub fn of(self, what: impl Into<String>) -> XtaskError {
        XtaskError::Run {
            what: what.into(),
            problem: self,
        }
    }
}

/// The VMM's stderr for a message: trimmed, or a word when empty.
fn stderr_text(stderr: &str) -> &str {
    match stderr.trim() {
        "" => "empty",
        s => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_names_the_file_then_the_cause() {
        let e = XtaskError::File {
            action: "read",
            path: "/nonexistent/results.json".into(),
            source: io::Error::from(io::ErrorKind::NotFound),
        };
        assert_eq!(
            e.chain(),
            "cannot read /nonexistent/results.json: entity not found"
        );
        assert!(!e.is_usage());
    }

    #[test]
    fn a_run_error_names_the_run_and_a_quoted_source_is_not_repeated() {
        let e = RunError::NoMark {
            mark: "kernel_ready",
            outcome: vmm::Outcome::Ok,
        }
        .of("1G lazy");
        assert_eq!(
            e.chain(),
            "1G lazy: report (outcome ok) has no kernel_ready mark"
        );
        let bad = "x".parse::<u64>().unwrap_err();
        let e = XtaskError::BadValue {
            flag: "--sizes",
            value: "x".into(),
            source: Box::new(bad.clone()),
        };
        assert_eq!(e.chain(), format!("--sizes: bad value `x`: {bad}"));
        assert!(e.is_usage());
        let e = RunError::NoReport {
            path: "r.json".into(),
            stderr: "error: refused\n".into(),
            source: io::Error::from(io::ErrorKind::NotFound),
        }
        .of("warm-up");
        assert_eq!(
            e.chain(),
            "warm-up: no report at r.json (entity not found); the VMM's stderr: error: refused"
        );
    }
}

/// A plotters error, whatever the drawing backend (SVG or bitmap) it
/// came from; `XtaskError::Plot` says which file was being drawn.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct PlotError(pub(crate) Box<dyn std::error::Error + Send + Sync>);
