//! `cargo xtask bench --micro`: accept throughput per level through the
//! real vCPU exit path against memset of the same bytes in this process,
//! the VMM's handling time per accept (p50/p99), and one doorbell round
//! trip, in each CPU profile (medians of 3 runs). Writes `micro.json` and
//! `targets.md`.

use super::{run_vmm, write, GIB};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One accept level's measurements.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Level {
    pub level: String,
    pub bytes: u64,
    pub seconds: f64,
    pub accept_gib_s: f64,
    pub memset_gib_s: f64,
    pub ratio: f64,
    pub handle_p50_ns: u64,
    pub handle_p99_ns: u64,
    pub calls: u64,
}

/// One profile's micro-benchmarks.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProfileMicro {
    pub profile: String,
    pub resolved_profile: String,
    pub levels: Vec<Level>,
    pub doorbell_rtt_ns: u64,
}

/// `micro.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Micro {
    pub micro: Vec<ProfileMicro>,
}

/// Runs per measurement (the median is kept).
const RUNS: usize = 3;

/// Runs the micro-benchmarks in `profiles`, writing into `out`.
pub fn micro(out: &Path, profiles: &[String]) -> Result<(), String> {
    let images = crate::build_guests()?;
    let vmm = crate::build_vmm()?;
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let report = out.join("micro-report.json");
    let run = |profile: &str, mem: &str, cmdline: &str| {
        run_vmm(
            &vmm,
            &images,
            false,
            ["--mem", mem, "--cpu-profile", profile, "--cmdline", cmdline],
            &report,
            &format!("{profile} {cmdline}"),
        )
    };
    let mut results = Vec::new();
    for profile in profiles {
        // Warm the host's memory first (see the README on nested hosts).
        run(profile, "4G", "")?;
        let mut levels = Vec::new();
        for (level, mem, cmdline) in [
            ("2m", "4G", "fw.accept=all"),
            ("4k", "1G", "fw.accept=64M fw.accept_page=4k"),
        ] {
            // The median of RUNS runs (by accept time), and of as many
            // memsets: single runs on a nested host swing several-fold.
            let mut runs = Vec::new();
            for _ in 0..RUNS {
                let r = run(profile, mem, cmdline)?;
                let mark = |m: &str| {
                    r.timing_us
                        .get(m)
                        .copied()
                        .ok_or_else(|| format!("{profile} {cmdline}: no {m} mark"))
                };
                let secs = mark("fw_accept_done")?.saturating_sub(mark("fw_start")?) as f64 / 1e6;
                runs.push((secs, r));
            }
            runs.sort_by(|a, b| a.0.total_cmp(&b.0));
            let (secs, r) = runs.swap_remove(RUNS / 2);
            let bytes = r.accept.bytes_accepted;
            let mut memsets: Vec<f64> = (0..RUNS).map(|_| memset_rate(bytes as usize)).collect();
            memsets.sort_by(f64::total_cmp);
            let memset = memsets[RUNS / 2];
            let rate = bytes as f64 / GIB as f64 / secs.max(1e-9);
            eprintln!(
                "micro [{profile}] {level}: {rate:.2} GiB/s vs memset {memset:.2} GiB/s, handling p50 {} ns",
                r.accept.handle_p50_ns
            );
            levels.push(Level {
                level: level.into(),
                bytes,
                seconds: secs,
                accept_gib_s: rate,
                memset_gib_s: memset,
                ratio: rate / memset,
                handle_p50_ns: r.accept.handle_p50_ns,
                handle_p99_ns: r.accept.handle_p99_ns,
                calls: r.accept.calls,
            });
        }
        let r = run(profile, "1G", "fw.accept=none fw.bench=20000")?;
        let rtt = r
            .bench
            .ok_or_else(|| format!("{profile}: the doorbell benchmark did not report"))?
            .doorbell_rtt_ns;
        eprintln!("micro [{profile}] doorbell round trip {rtt} ns");
        results.push(ProfileMicro {
            profile: profile.clone(),
            resolved_profile: r.cpu_profile.clone(),
            levels,
            doorbell_rtt_ns: rtt,
        });
    }
    let _ = std::fs::remove_file(&report);
    let micro = Micro { micro: results };
    write(
        &out.join("micro.json"),
        &serde_json::to_string_pretty(&micro).map_err(|e| e.to_string())?,
    )?;
    write(
        &out.join("targets.md"),
        &super::targets::targets(out, &micro),
    )?;
    eprintln!("bench: wrote {}", out.join("targets.md").display());
    Ok(())
}

/// Zero-fill rate of fresh memory set up like guest RAM (anonymous,
/// 2 MiB aligned, THP-advised): what an accept's zeroing competes with.
/// The first pass warms the host's backing and is discarded.
fn memset_rate(bytes: usize) -> f64 {
    let once = || {
        let len = bytes + (2 << 20);
        // SAFETY: a fresh private anonymous mapping, used only here and
        // unmapped before returning; the filled range lies inside it.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            );
            if p == libc::MAP_FAILED {
                return 0.0;
            }
            let aligned = (p as usize).next_multiple_of(2 << 20) as *mut u8;
            libc::madvise(aligned as *mut _, bytes, libc::MADV_HUGEPAGE);
            let t = std::time::Instant::now();
            std::ptr::write_bytes(aligned, 0, bytes);
            let secs = t.elapsed().as_secs_f64();
            libc::munmap(p, len);
            bytes as f64 / GIB as f64 / secs.max(1e-9)
        }
    };
    once();
    once()
}

/// Rewrites `targets.md` in `out` from what is there (`micro.json`,
/// `results.json`, `vcpus.json`), after a run of one part alone.
pub fn rewrite_targets(out: &Path) -> Result<(), String> {
    let micro = std::fs::read_to_string(out.join("micro.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Micro>(&t).ok())
        .unwrap_or(Micro { micro: Vec::new() });
    write(
        &out.join("targets.md"),
        &super::targets::targets(out, &micro),
    )?;
    eprintln!("bench: wrote {}", out.join("targets.md").display());
    Ok(())
}
