//! `cargo xtask limits`: the smallest `ulimit -v` (address space) and
//! `ulimit -s` (main-thread stack) under which `vmm run` still boots a lazy
//! TD (firmware and kernel, `fw.accept=none`), for each RAM size and vCPU
//! count asked for, found by bisection on the freshly built VMM. Every run
//! below the minimum must be a clean refusal (exit 2, one line naming the
//! limit), never an abort: any other status is reported as a failure. The
//! "Host limits" table of docs/failure-modes.md is this command's output.

use crate::error::{Result, XtaskError};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// One configuration measured.
#[derive(Clone, Debug)]
pub struct LimitRow {
    pub mem: String,
    pub cpus: u32,
    /// Smallest address-space limit (bytes) under which the run is ok.
    pub min_address_space: u64,
    /// The guest RAM part of it.
    pub mem_bytes: u64,
    /// Smallest main-thread stack limit (bytes) under which the run is ok.
    pub min_stack: u64,
    /// Smallest stack limit under which `/bin/true` starts on this host:
    /// below it no program runs (the kernel's argument pages and the
    /// dynamic loader need it), so the VMM's bisection starts there.
    pub host_stack_floor: u64,
    /// Exit statuses seen below the minimums other than 2 (should be none).
    pub bad_statuses: Vec<String>,
}

/// Runs `vmm run` once with `resource` limited to `limit`; returns the
/// exit status (or 128 + the signal that killed it) and stderr.
fn run_under(
    vmm: &Path,
    guests: &crate::GuestImages,
    mem: &str,
    cpus: u32,
    resource: libc::__rlimit_resource_t,
    limit: u64,
) -> Result<(i32, String)> {
    let mut cmd = Command::new(vmm);
    cmd.args(["run", "--quiet", "--mem", mem, "--cpus", &cpus.to_string()])
        .args(["--cmdline", "fw.accept=none", "--timeout", "120"])
        .arg("--firmware")
        .arg(&guests.firmware)
        .arg("--kernel")
        .arg(&guests.kernel)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe; the closure touches only
    // its copied arguments.
    unsafe {
        cmd.pre_exec(move || {
            let r = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(resource, &r) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().map_err(|source| XtaskError::Spawn {
        program: vmm.to_path_buf(),
        source,
    })?;
    use std::os::unix::process::ExitStatusExt;
    let code = out
        .status
        .code()
        .or(out.status.signal().map(|s| 128 + s))
        .unwrap_or(-1);
    Ok((code, String::from_utf8_lossy(&out.stderr).into_owned()))
}

/// Bisects the smallest limit in `[lo, hi]` (multiples of `step`) under
/// which the run exits 0; `hi` must work. Statuses below it other than 2
/// are collected in `bad`.
#[allow(clippy::too_many_arguments)]
fn bisect(
    vmm: &Path,
    guests: &crate::GuestImages,
    mem: &str,
    cpus: u32,
    resource: libc::__rlimit_resource_t,
    mut lo: u64,
    mut hi: u64,
    step: u64,
    bad: &mut Vec<String>,
) -> Result<u64> {
    let (code, err) = run_under(vmm, guests, mem, cpus, resource, hi)?;
    if code != 0 {
        return Err(XtaskError::LimitTooLow {
            mem: mem.to_string(),
            cpus,
            limit: hi,
            code,
            stderr: err.trim().to_string(),
        });
    }
    while hi - lo > step {
        let mid = (lo + (hi - lo) / 2) / step * step;
        let mid = mid.max(lo + step);
        let (code, err) = run_under(vmm, guests, mem, cpus, resource, mid)?;
        match code {
            0 => hi = mid,
            2 => lo = mid,
            other => {
                bad.push(format!(
                    "{mem} x{cpus} limit {mid}: exit {other}: {}",
                    err.trim().lines().last().unwrap_or("")
                ));
                lo = mid;
            }
        }
    }
    Ok(hi)
}

/// The smallest stack limit (a multiple of 4 KiB) under which `/bin/true`
/// always exits 0.
fn host_stack_floor() -> u64 {
    let works = |limit: u64| {
        let mut cmd = Command::new("/bin/true");
        // SAFETY: setrlimit is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                let r = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                libc::setrlimit(libc::RLIMIT_STACK, &r);
                Ok(())
            });
        }
        cmd.status().is_ok_and(|s| s.success())
    };
    // Near the floor a start fails or not with where the kernel placed
    // the stack: the floor is where ten starts in a row work.
    (1..=256u64)
        .map(|k| k * 4096)
        .find(|&l| (0..10).all(|_| works(l)))
        .unwrap_or(1 << 20)
}

/// Measures every (RAM, vCPUs) pair; the sizes are checked before
/// anything is built.
pub fn measure(mems: &[&str], cpus: &[u32]) -> Result<Vec<LimitRow>> {
    let sizes = mems
        .iter()
        .map(|mem| {
            vmm::internals::parse_size(mem).map_err(|e| XtaskError::BadValue {
                flag: "--mems",
                value: mem.to_string(),
                source: Box::new(e),
            })
        })
        .collect::<Result<Vec<u64>>>()?;
    let guests = crate::build_guests()?;
    let vmm = crate::build_vmm()?;
    let floor = host_stack_floor();
    let mut rows = Vec::new();
    for (mem, mem_bytes) in mems.iter().zip(sizes) {
        for &n in cpus {
            let mut bad = Vec::new();
            eprintln!("xtask limits: {mem} with {n} vCPUs");
            let min_address_space = bisect(
                &vmm,
                &guests,
                mem,
                n,
                libc::RLIMIT_AS,
                mem_bytes,
                mem_bytes + (8 << 30),
                1 << 20,
                &mut bad,
            )?;
            let min_stack = bisect(
                &vmm,
                &guests,
                mem,
                n,
                libc::RLIMIT_STACK,
                floor - 4096,
                8 << 20,
                4 << 10,
                &mut bad,
            )?;
            rows.push(LimitRow {
                mem: mem.to_string(),
                cpus: n,
                min_address_space,
                mem_bytes,
                min_stack,
                host_stack_floor: floor,
                bad_statuses: bad,
            });
        }
    }
    Ok(rows)
}

/// The rows as the markdown table of docs/failure-modes.md.
pub fn table(rows: &[LimitRow]) -> String {
    let mut s = String::from(
        "| RAM | vCPUs | smallest `ulimit -v` (KiB) | beyond guest RAM | smallest `ulimit -s` (KiB) | below the `ulimit -v` minimum |\n|---|---|---|---|---|---|\n",
    );
    if let Some(r) = rows.first() {
        s.insert_str(
            0,
            &format!(
                "(`/bin/true` itself needs `ulimit -s` {} here; the stack bisection starts there)\n\n",
                r.host_stack_floor / 1024
            ),
        );
    }
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} MiB | {} | {} |\n",
            r.mem,
            r.cpus,
            r.min_address_space / 1024,
            (r.min_address_space - r.mem_bytes) >> 20,
            r.min_stack / 1024,
            if r.bad_statuses.is_empty() {
                "exit 2, limit named".to_string()
            } else {
                r.bad_statuses.join("; ")
            }
        ));
    }
    s
}
