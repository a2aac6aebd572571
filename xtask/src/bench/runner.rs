//! How the bench runs the VMM and keeps what it measures: one `vmm run`
//! with the built guests and its report (`run_vmm`, `run_vmm_any`), the
//! host's RAM and cores written next to results, the progress bar, and
//! the output files (JSON, text, traces). Every axis of the bench uses
//! these.

use crate::error::{Result, RunError, XtaskError};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::Path;
use std::process::Command;
use vmm::trace::Record;
use vmm::Report;

/// The host's RAM (MemTotal).
pub fn host_ram() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(u64::MAX, |kb| kb * 1024)
}

/// Cores this host offers the runs (written next to every vCPU result).
pub fn host_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A progress bar with an ETA on stderr.
pub(crate) fn progress_bar(total: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} eta {eta} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    bar
}

/// Runs `vmm run` with the built firmware (and the kernel when
/// `with_kernel`), `--quiet`, a 10-minute timeout and `args`, writing its
/// report to `report`. Returns the report, which must say outcome ok; `what`
/// names the run in errors.
pub(crate) fn run_vmm<S: AsRef<std::ffi::OsStr>>(
    vmm: &Path,
    images: &crate::GuestImages,
    with_kernel: bool,
    args: impl IntoIterator<Item = S>,
    report: &Path,
    what: &str,
) -> Result<Report> {
    let r = run_vmm_any(vmm, images, with_kernel, args, report, what)?;
    if r.outcome != vmm::Outcome::Ok {
        return Err(RunError::Outcome {
            outcome: r.outcome,
            fatal: r.fatal.as_ref().map(fatal_text),
        }
        .of(what));
    }
    Ok(r)
}

/// A report's fatal stop in words: its message, and where when known.
fn fatal_text(f: &vmm::report::Fatal) -> String {
    let mut s = f.message.clone();
    let mut at = Vec::new();
    if let Some(v) = f.vcpu {
        at.push(format!("vCPU {v}"));
    }
    if let Some(gpa) = f.gpa {
        at.push(format!("gpa {gpa:#x}"));
    }
    if let Some(rip) = f.rip {
        at.push(format!("rip {rip:#x}"));
    }
    if !at.is_empty() {
        s.push_str(&format!(" ({})", at.join(", ")));
    }
    s
}

/// The same, returning the report whatever its outcome (an error only
/// when the VMM wrote none, or one that does not parse). A report left
/// by an earlier run is removed first, so it can never be read as this
/// run's.
pub(crate) fn run_vmm_any<S: AsRef<std::ffi::OsStr>>(
    vmm: &Path,
    images: &crate::GuestImages,
    with_kernel: bool,
    args: impl IntoIterator<Item = S>,
    report: &Path,
    what: &str,
) -> Result<Report> {
    let _ = std::fs::remove_file(report);
    let mut cmd = Command::new(vmm);
    cmd.arg("run").arg("--firmware").arg(&images.firmware);
    if with_kernel {
        cmd.arg("--kernel").arg(&images.kernel);
    }
    cmd.args(["--quiet", "--timeout", "600", "--report"])
        .arg(report)
        .args(args);
    let out = cmd.output().map_err(|source| XtaskError::Spawn {
        program: vmm.to_path_buf(),
        source,
    })?;
    let text = std::fs::read_to_string(report).map_err(|source| {
        RunError::NoReport {
            path: report.to_path_buf(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            source,
        }
        .of(what)
    })?;
    serde_json::from_str(&text).map_err(|source| {
        RunError::BadReport {
            path: report.to_path_buf(),
            source,
        }
        .of(what)
    })
}

/// Writes `text` to `path`.
pub(crate) fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|source| XtaskError::File {
        action: "write",
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `value` to `path` as pretty JSON.
pub(crate) fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|source| XtaskError::Json {
        action: "encode",
        path: path.to_path_buf(),
        source,
    })?;
    write(path, &text)
}

/// Creates `dir` and its parents.
pub(crate) fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| XtaskError::File {
        action: "create",
        path: dir.to_path_buf(),
        source,
    })
}

/// Reads the accept trace at `path`.
pub(crate) fn read_trace(path: &Path) -> Result<Vec<Record>> {
    let f = std::fs::File::open(path).map_err(|source| XtaskError::File {
        action: "open",
        path: path.to_path_buf(),
        source,
    })?;
    vmm::trace::read(f).map_err(|source| XtaskError::Trace {
        path: path.to_path_buf(),
        source,
    })
}
