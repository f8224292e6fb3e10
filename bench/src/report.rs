//! Summaries of the measured runs: min/median/max per contender and
//! metric, ratios to the QEMU baselines, the printed table and the JSON
//! record. No vmd counterpart.

use crate::measure::Sample;

/// One contender's results.
#[derive(Debug, Clone, Default)]
pub struct Series {
    /// Its name in the table (`vm-run`, `qemu-q35` ...).
    pub name: String,
    /// The command line it ran.
    pub command: String,
    /// The successful runs.
    pub samples: Vec<Sample>,
    /// One line per failed run.
    pub failures: Vec<String>,
    /// Why it did not run at all (its program is missing), if so.
    pub missing: Option<String>,
}

/// The console markers the figures are measured from.
#[derive(Debug, Clone)]
pub struct Markers {
    /// Ends the boot measurement.
    pub ready: String,
    /// Starts the poweroff measurement.
    pub poweroff: String,
}

/// What a table row measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Process start to the ready marker.
    Boot,
    /// Poweroff marker to process exit.
    PoweroffToExit,
    /// Peak RSS.
    PeakRss,
    /// Peak RSS minus the guest's memory size.
    RssOverGuest,
    /// RSS outside the guest RAM mapping at poweroff.
    VmmRss,
}

impl Metric {
    /// Every metric, in table order.
    pub const ALL: [Metric; 5] = [
        Metric::Boot,
        Metric::PoweroffToExit,
        Metric::PeakRss,
        Metric::RssOverGuest,
        Metric::VmmRss,
    ];

    fn title(self, m: &Markers) -> String {
        match self {
            Metric::Boot => format!("boot: process start -> {} (ms)", m.ready),
            Metric::PoweroffToExit => format!("poweroff: {} -> process exit (ms)", m.poweroff),
            Metric::PeakRss => "peak RSS (MiB)".to_string(),
            Metric::RssOverGuest => "peak RSS minus guest memory (MiB)".to_string(),
            Metric::VmmRss => format!("VMM RSS outside guest RAM, at {} (MiB)", m.poweroff),
        }
    }

    fn key(self) -> &'static str {
        match self {
            Metric::Boot => "boot_ms",
            Metric::PoweroffToExit => "poweroff_to_exit_ms",
            Metric::PeakRss => "peak_rss_mib",
            Metric::RssOverGuest => "rss_over_guest_mib",
            Metric::VmmRss => "vmm_rss_mib",
        }
    }

    /// This metric's value in a sample, in the unit of its title; `None`
    /// when the sample lacks it.
    pub fn value(self, s: &Sample, guest_mem_mib: u64) -> Option<f64> {
        let rss_mib = s.max_rss_kib as f64 / 1024.0;
        Some(match self {
            Metric::Boot => s.boot.as_secs_f64() * 1000.0,
            Metric::PoweroffToExit => s.poweroff_to_exit.as_secs_f64() * 1000.0,
            Metric::PeakRss => rss_mib,
            Metric::RssOverGuest => rss_mib - guest_mem_mib as f64,
            Metric::VmmRss => s.vmm_rss_kib? as f64 / 1024.0,
        })
    }
}

/// Minimum, median and maximum of a set of values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

/// The statistics of `values`; `None` when empty. The median of an even
/// count is the mean of the middle two.
pub fn stats(values: &[f64]) -> Option<Stats> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Stats {
        min: v[0],
        median,
        max: v[n - 1],
    })
}

/// `a / b` when both are positive (a ratio of overheads that can be
/// negative or zero means nothing).
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (a > 0.0 && b > 0.0).then(|| a / b)
}

/// The statistics of one metric over a series and how many samples had it.
fn series_stats(s: &Series, m: Metric, guest_mem_mib: u64) -> Option<(Stats, usize)> {
    let values: Vec<f64> = s
        .samples
        .iter()
        .filter_map(|x| m.value(x, guest_mem_mib))
        .collect();
    stats(&values).map(|st| (st, values.len()))
}

/// The results table: one block per metric, one row per contender with
/// min/median/max over its successful runs and the ratio of its median to
/// each baseline's median. Contenders that failed or are missing say so.
pub fn render(
    series: &[Series],
    runs: usize,
    guest_mem_mib: u64,
    markers: &Markers,
    baselines: &[&str],
) -> String {
    let mut out = String::new();
    let width = series
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(0)
        .max(8);
    for m in Metric::ALL {
        out.push_str(&format!("{}\n", m.title(markers)));
        out.push_str(&format!(
            "  {:width$}  {:>5}  {:>9}  {:>9}  {:>9}",
            "", "runs", "min", "median", "max"
        ));
        for b in baselines {
            out.push_str(&format!("  {:>14}", format!("/{b}")));
        }
        out.push('\n');
        for s in series {
            let Some((st, n)) = series_stats(s, m, guest_mem_mib) else {
                continue;
            };
            out.push_str(&format!(
                "  {:width$}  {:>5}  {:>9.1}  {:>9.1}  {:>9.1}",
                s.name,
                format!("{n}/{runs}"),
                st.min,
                st.median,
                st.max
            ));
            for b in baselines {
                let base = series
                    .iter()
                    .find(|x| x.name == *b)
                    .and_then(|x| series_stats(x, m, guest_mem_mib));
                let cell = match base.and_then(|(bs, _)| ratio(st.median, bs.median)) {
                    Some(r) => format!("{r:.2}x"),
                    None => "-".to_string(),
                };
                out.push_str(&format!("  {cell:>14}"));
            }
            out.push('\n');
        }
    }
    for s in series {
        if let Some(why) = &s.missing {
            out.push_str(&format!("{}: not run: {why}\n", s.name));
        } else if s.samples.is_empty() {
            let why = s.failures.first().map(String::as_str).unwrap_or("no runs");
            out.push_str(&format!(
                "{}: no successful run ({} failed): {why}\n",
                s.name,
                s.failures.len()
            ));
        } else if !s.failures.is_empty() {
            out.push_str(&format!(
                "{}: {} run(s) failed, first: {}\n",
                s.name,
                s.failures.len(),
                s.failures[0]
            ));
        }
    }
    out
}

/// Everything measured, as JSON: per contender its command, samples,
/// failures and per-metric statistics.
pub fn to_json(series: &[Series], guest_mem_mib: u64) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = series
        .iter()
        .map(|s| {
            let samples: Vec<serde_json::Value> = s
                .samples
                .iter()
                .map(|x| {
                    serde_json::json!({
                        "boot_s": x.boot.as_secs_f64(),
                        "poweroff_to_exit_s": x.poweroff_to_exit.as_secs_f64(),
                        "max_rss_kib": x.max_rss_kib,
                        "vmm_rss_kib": x.vmm_rss_kib,
                    })
                })
                .collect();
            let mut summary = serde_json::Map::new();
            for m in Metric::ALL {
                if let Some((st, _)) = series_stats(s, m, guest_mem_mib) {
                    summary.insert(
                        m.key().to_string(),
                        serde_json::json!({ "min": st.min, "median": st.median, "max": st.max }),
                    );
                }
            }
            serde_json::json!({
                "name": s.name,
                "command": s.command,
                "missing": s.missing,
                "samples": samples,
                "failures": s.failures,
                "summary": summary,
            })
        })
        .collect();
    serde_json::json!({ "guest_mem_mib": guest_mem_mib, "contenders": rows })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn sample(boot_ms: u64, off_ms: u64, rss_kib: u64) -> Sample {
        Sample {
            boot: Duration::from_millis(boot_ms),
            poweroff_to_exit: Duration::from_millis(off_ms),
            max_rss_kib: rss_kib,
            vmm_rss_kib: Some(rss_kib / 10),
        }
    }

    #[test]
    fn stats_of_odd_count_takes_the_middle() {
        let s = stats(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!(
            s,
            Stats {
                min: 1.0,
                median: 2.0,
                max: 3.0
            }
        );
    }

    #[test]
    fn stats_of_even_count_averages_the_middle_two() {
        let s = stats(&[4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!(s.median, 2.5);
    }

    #[test]
    fn stats_of_nothing_is_none() {
        assert!(stats(&[]).is_none());
    }

    #[test]
    fn ratio_needs_positive_values() {
        assert_eq!(ratio(1.0, 2.0), Some(0.5));
        assert_eq!(ratio(-1.0, 2.0), None);
        assert_eq!(ratio(1.0, 0.0), None);
    }

    #[test]
    fn rss_over_guest_subtracts_the_guest_size() {
        let s = sample(0, 0, 300 * 1024);
        assert_eq!(Metric::RssOverGuest.value(&s, 256), Some(44.0));
        assert_eq!(Metric::PeakRss.value(&s, 256), Some(300.0));
        assert_eq!(Metric::VmmRss.value(&s, 256), Some(30.0));
        let without = Sample {
            vmm_rss_kib: None,
            ..s
        };
        assert_eq!(Metric::VmmRss.value(&without, 256), None);
    }

    fn markers() -> Markers {
        Markers {
            ready: "GUEST-READY".into(),
            poweroff: "GUEST-POWEROFF".into(),
        }
    }

    #[test]
    fn titles_name_the_markers() {
        let out = render(&table(), 2, 256, &markers(), &["qemu-q35"]);
        assert!(
            out.contains("boot: process start -> GUEST-READY (ms)"),
            "{out}"
        );
        assert!(
            out.contains("poweroff: GUEST-POWEROFF -> process exit (ms)"),
            "{out}"
        );
    }

    fn table() -> Vec<Series> {
        vec![
            Series {
                name: "vm-run".into(),
                samples: vec![sample(2000, 10, 270 * 1024), sample(3000, 20, 270 * 1024)],
                ..Default::default()
            },
            Series {
                name: "qemu-q35".into(),
                samples: vec![sample(4000, 100, 300 * 1024), sample(6000, 100, 300 * 1024)],
                failures: vec![
                    "exited (status 1) before GUEST-READY appeared on the console".into(),
                ],
                ..Default::default()
            },
            Series {
                name: "qemu-microvm".into(),
                missing: Some("qemu not found".into()),
                ..Default::default()
            },
        ]
    }

    #[test]
    fn render_prints_medians_and_ratios_to_the_baseline() {
        let out = render(&table(), 2, 256, &markers(), &["qemu-q35"]);
        // vm-run boot median 2.5 s against QEMU's 5.0 s.
        let boot_row = out
            .lines()
            .find(|l| l.trim_start().starts_with("vm-run") && l.contains("2500.0"))
            .unwrap();
        assert!(boot_row.contains("0.50x"), "{out}");
        let q35_row = out
            .lines()
            .find(|l| l.trim_start().starts_with("qemu-q35") && l.contains("5000.0"))
            .unwrap();
        assert!(q35_row.contains("1.00x"), "{out}");
        assert!(
            out.contains("qemu-microvm: not run: qemu not found"),
            "{out}"
        );
        assert!(out.contains("qemu-q35: 1 run(s) failed"), "{out}");
    }

    #[test]
    fn render_says_when_a_contender_never_succeeded() {
        let series = vec![Series {
            name: "vm-run".into(),
            failures: vec!["no GUEST-READY on the console within 180s (killed)".into()],
            ..Default::default()
        }];
        let out = render(&series, 5, 256, &markers(), &["qemu-q35"]);
        assert!(
            out.contains("vm-run: no successful run (1 failed): no GUEST-READY"),
            "{out}"
        );
        assert!(
            !out.lines().any(|l| l.trim_start().starts_with("vm-run ")),
            "{out}"
        );
    }

    #[test]
    fn json_has_samples_and_summaries() {
        let v = to_json(&table(), 256);
        let c = &v["contenders"][0];
        assert_eq!(c["name"], "vm-run");
        assert_eq!(c["samples"].as_array().unwrap().len(), 2);
        assert_eq!(c["summary"]["boot_ms"]["median"], 2500.0);
        assert_eq!(v["contenders"][2]["missing"], "qemu not found");
    }
}
