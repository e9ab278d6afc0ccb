//! Latency histograms, the numbers each run produces, and the comparison table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::path::Path;

use hdrhistogram::Histogram;

/// A histogram of nanoseconds from 1 µs to 10 minutes at three significant digits.
pub(crate) fn histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1_000, 600_000_000_000, 3) {
        Ok(h) => h,
        Err(error) => panic!("fixed histogram bounds are valid: {error}"),
    }
}

/// Merges `from` into `into`; both come from [`histogram`], so the bounds always agree.
pub(crate) fn merge(into: &mut Histogram<u64>, from: &Histogram<u64>) {
    if let Err(error) = into.add(from) {
        panic!("histograms with the same bounds always merge: {error}");
    }
}

/// Milliseconds at quantile `q`, or NaN when nothing was recorded.
pub(crate) fn quantile_ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        f64::NAN
    } else {
        h.value_at_quantile(q) as f64 / 1e6
    }
}

/// Every number, by workload, then metric name, then target name; kept in insertion order of
/// metrics so the table reads like the runs.
#[derive(Default)]
pub(crate) struct Results {
    rows: Vec<(String, String)>,
    values: BTreeMap<(String, String, String), f64>,
    targets: Vec<String>,
}

impl Results {
    /// Records `metric` of `target` in `workload`; a repeated measurement keeps the better value
    /// (see [`best`]).
    pub(crate) fn put(&mut self, workload: &str, metric: &str, target: &str, value: f64) {
        let row = (workload.to_owned(), metric.to_owned());
        if !self.rows.contains(&row) {
            self.rows.push(row);
        }
        if !self.targets.iter().any(|t| t == target) {
            self.targets.push(target.to_owned());
        }
        let key = (workload.to_owned(), metric.to_owned(), target.to_owned());
        let kept = match self.values.get(&key) {
            None => value,
            Some(&old) => best(metric, old, value),
        };
        self.values.insert(key, kept);
    }

    /// Appends every number to `path`, one `workload<TAB>metric<TAB>target<TAB>value` line each,
    /// so that several runs make one table ([`Results::load`]).
    pub(crate) fn save(&self, path: &Path) -> io::Result<()> {
        let mut text = String::new();
        for (workload, metric) in &self.rows {
            for target in &self.targets {
                let key = (workload.clone(), metric.clone(), target.clone());
                if let Some(value) = self.values.get(&key) {
                    let _ = writeln!(text, "{workload}\t{metric}\t{target}\t{value}");
                }
            }
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?
            .write_all(text.as_bytes())
    }

    /// The numbers [`Results::save`] wrote to `path`, in the order they were saved.
    pub(crate) fn load(path: &Path) -> io::Result<Results> {
        let mut results = Results::default();
        for line in std::fs::read_to_string(path)?.lines() {
            let fields: Vec<&str> = line.split('\t').collect();
            let value = fields.get(3).and_then(|v| v.parse::<f64>().ok());
            match (fields.as_slice(), value) {
                ([workload, metric, target, _], Some(value)) => {
                    results.put(workload, metric, target, value);
                }
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("not a saved number: {line:?}"),
                    ));
                }
            }
        }
        Ok(results)
    }

    /// The comparison table: every target's value, then each herald target's ratio to NATS,
    /// and the cluster's ratio to each single herald server.
    pub(crate) fn table(&self) -> String {
        let herald: Vec<&String> = self
            .targets
            .iter()
            .filter(|t| t.starts_with("herald"))
            .collect();
        let mut ratios: Vec<(String, &String, &String)> = Vec::new();
        if let Some(nats) = self.targets.iter().find(|t| t.starts_with("nats")) {
            for &h in &herald {
                ratios.push((format!("{}/nats", t_short(h)), h, nats));
            }
        }
        if let Some(cluster) = self.targets.iter().find(|t| *t == "herald-cluster") {
            for &h in herald.iter().filter(|t| **t != cluster) {
                ratios.push((format!("cluster/{}", t_short(h)), cluster, h));
            }
        }
        let mut header = vec!["workload".to_owned(), "metric".to_owned()];
        header.extend(self.targets.iter().cloned());
        header.extend(ratios.iter().map(|(name, _, _)| name.clone()));
        let mut lines = vec![header];
        for (workload, metric) in &self.rows {
            let get = |t: &str| {
                self.values
                    .get(&(workload.clone(), metric.clone(), t.to_owned()))
            };
            let mut line = vec![workload.clone(), metric.clone()];
            line.extend(
                self.targets
                    .iter()
                    .map(|t| get(t).map_or("-".to_owned(), |v| number(*v))),
            );
            for (_, a, b) in &ratios {
                line.push(match (get(a), get(b)) {
                    (Some(a), Some(b)) if *b > 0.0 && a.is_finite() && b.is_finite() => {
                        format!("{:.2}x", a / b)
                    }
                    _ => "-".to_owned(),
                });
            }
            lines.push(line);
        }
        let widths: Vec<usize> = (0..lines[0].len())
            .map(|c| {
                lines
                    .iter()
                    .map(|l| l.get(c).map_or(0, |s| s.len()))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for (i, line) in lines.iter().enumerate() {
            let cells: Vec<String> = line
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(c, (cell, w))| {
                    if c < 2 {
                        format!("{cell:<w$}")
                    } else {
                        format!("{cell:>w$}")
                    }
                })
                .collect();
            let _ = writeln!(out, "| {} |", cells.join(" | "));
            if i == 0 {
                let rule: Vec<String> = widths
                    .iter()
                    .enumerate()
                    .map(|(c, w)| {
                        if c < 2 {
                            "-".repeat(*w)
                        } else {
                            format!("{}:", "-".repeat(w.saturating_sub(1)))
                        }
                    })
                    .collect();
                let _ = writeln!(out, "| {} |", rule.join(" | "));
            }
        }
        out
    }
}

/// A target's name without `herald-`, for a ratio column's header.
fn t_short(target: &str) -> &str {
    target.trim_start_matches("herald-")
}

/// Of two rounds' values, the one of the least disturbed round: the higher rate, the lower
/// latency or memory; but the larger loss, which no round may hide.
fn best(metric: &str, old: f64, new: f64) -> f64 {
    // Latency rows name their load ("p99 ms (2000 ev/s)"), so they are told apart by their unit
    // before rates are.
    let lower_is_better = metric.contains(" ms") || metric.contains("RSS") || metric.contains('%');
    let higher_is_better = metric.contains("/s") || metric.contains("per server CPU");
    if metric.starts_with("lost") || (higher_is_better && !lower_is_better) {
        old.max(new)
    } else {
        old.min(new)
    }
}

/// A number in a table cell: integers for big values, three significant digits for small ones.
pub(crate) fn number(v: f64) -> String {
    if !v.is_finite() {
        "-".to_owned()
    } else if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}
