//! `cargo xtask bench --micro`: accept throughput per level through the
//! real vCPU exit path against memset of the same bytes in this process,
//! the VMM's handling time per accept (p50/p99), and one doorbell round
//! trip, in each CPU profile (medians of 3 runs); and a 4 KiB accept as an
//! OS pays it on demand (accept, then the first write) against a doorbell
//! round trip with the same guest code around it (`fw.bench_accept`), with
//! each pending mechanism, interleaved. Writes `micro.json` (`targets`
//! turns it into `targets.md`).

use super::{create_dir, run_vmm, write_json, GIB};
use crate::error::{Result, RunError};
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

/// A 4 KiB accept and first write against a doorbell round trip with the
/// same guest code, with one pending mechanism (medians of interleaved
/// runs).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Accept4k {
    /// `memslots` or `uffd-poison`.
    pub mechanism: String,
    pub pages: u64,
    pub runs: usize,
    pub doorbell_rtt_ns: f64,
    pub accept_4k_ns: f64,
    /// `accept_4k_ns / doorbell_rtt_ns`, the median of the runs' ratios.
    pub ratio: f64,
    pub memslots_installed: f64,
}

/// One profile's micro-benchmarks.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProfileMicro {
    pub profile: String,
    pub resolved_profile: String,
    pub levels: Vec<Level>,
    pub doorbell_rtt_ns: u64,
    /// Reports from before it have none.
    #[serde(default)]
    pub accept_4k: Vec<Accept4k>,
}

/// Pages of the 4 KiB accept benchmark (above 4 GiB, so `--mem 4G`).
const ACCEPT_PAGES: u64 = 8192;

/// `micro.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Micro {
    pub micro: Vec<ProfileMicro>,
}

/// Runs per measurement (the median is kept).
const RUNS: usize = 3;

/// Runs the micro-benchmarks in `profiles`, writing into `out`.
pub fn micro(out: &Path, profiles: &[String]) -> Result<()> {
    let images = crate::build_guests()?;
    let vmm = crate::build_vmm()?;
    create_dir(out)?;
    let report = out.join("micro-report.json");
    let run = |profile: &str, mem: &str, cmdline: &str| {
        run_vmm(
            &vmm,
            &images,
            false,
            ["--mem", mem, "--cpu-profile", profile, "--cmdline", cmdline],
            &report,
            format!("{profile} {cmdline}").trim_end(),
        )
    };
    let mut results = Vec::new();
    for profile in profiles {
        // Warm the host's memory first (see docs/lazy-vs-eager.md on nested hosts).
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
                let mark = |m: &'static str| {
                    r.timing_us.get(m).copied().ok_or_else(|| {
                        RunError::NoMark {
                            mark: m,
                            outcome: r.outcome,
                        }
                        .of(format!("{profile} {cmdline}"))
                    })
                };
                let secs = mark("fw_accept_done")?.saturating_sub(mark("fw_start")?) as f64 / 1e6;
                runs.push((secs, r));
            }
            runs.sort_by(|a, b| a.0.total_cmp(&b.0));
            let (secs, r) = runs.swap_remove(RUNS / 2);
            let bytes = r.accept.bytes_accepted;
            let mut memsets: Vec<f64> = (0..RUNS).map(|_| memset_rate(bytes)).collect();
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
            .ok_or_else(|| RunError::NoBench("doorbell").of(format!("{profile} doorbell")))?
            .doorbell_rtt_ns;
        eprintln!("micro [{profile}] doorbell round trip {rtt} ns");
        let accept_4k = accept_4k(&|mechanism: &str| {
            run_vmm(
                &vmm,
                &images,
                false,
                [
                    "--mem",
                    "4G",
                    "--cpu-profile",
                    profile,
                    "--pending",
                    mechanism,
                    "--cmdline",
                    &format!("fw.accept=none fw.bench_accept={ACCEPT_PAGES}"),
                ],
                &report,
                &format!("{profile} 4 KiB accept bench, {mechanism}"),
            )
        })?;
        for a in &accept_4k {
            eprintln!(
                "micro [{profile}] 4 KiB accept + first write, {}: {:.0} ns vs round trip {:.0} ns = x{:.2}",
                a.mechanism, a.accept_4k_ns, a.doorbell_rtt_ns, a.ratio
            );
        }
        results.push(ProfileMicro {
            profile: profile.clone(),
            resolved_profile: r.cpu_profile_name().to_string(),
            levels,
            doorbell_rtt_ns: rtt,
            accept_4k,
        });
    }
    let _ = std::fs::remove_file(&report);
    let micro = Micro { micro: results };
    write_json(&out.join("micro.json"), &micro)
}

/// The 4 KiB accept benchmark with each mechanism, `RUNS` interleaved
/// rounds; a mechanism this host lacks (the run is refused) is left out.
fn accept_4k(run: &dyn Fn(&str) -> Result<vmm::Report>) -> Result<Vec<Accept4k>> {
    let mechanisms = ["memslots", "uffd-poison"];
    let mut samples: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); mechanisms.len()];
    for _ in 0..RUNS {
        for (i, m) in mechanisms.iter().enumerate() {
            let r = match run(m) {
                Ok(r) => r,
                Err(e) if *m != "memslots" => {
                    eprintln!("micro: {m} unavailable here, left out: {}", e.chain());
                    continue;
                }
                Err(e) => return Err(e),
            };
            let b = r
                .bench
                .ok_or_else(|| RunError::NoBench("4 KiB accept").of(format!("{m} 4 KiB accept")))?;
            samples[i].push((
                b.doorbell_rtt_ns as f64,
                b.accept_4k_ns as f64,
                r.host.memslots_installed as f64,
            ));
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Ok(mechanisms
        .iter()
        .zip(samples)
        .filter(|(_, s)| !s.is_empty())
        .map(|(m, s)| Accept4k {
            mechanism: m.to_string(),
            pages: ACCEPT_PAGES,
            runs: s.len(),
            doorbell_rtt_ns: median(s.iter().map(|x| x.0).collect()),
            accept_4k_ns: median(s.iter().map(|x| x.1).collect()),
            ratio: median(s.iter().map(|x| x.1 / x.0).collect()),
            memslots_installed: median(s.iter().map(|x| x.2).collect()),
        })
        .collect())
}

/// Zero-fill rate of fresh memory set up like guest RAM (anonymous,
/// 2 MiB aligned, THP-advised): what an accept's zeroing competes with.
/// The first pass warms the host's backing and is discarded. 0 when the
/// memory cannot be mapped (or `bytes` exceeds the address space).
fn memset_rate(bytes: u64) -> f64 {
    let Ok(bytes) = usize::try_from(bytes) else {
        return 0.0;
    };
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
