//! Samples, medians and the printed table.

use std::fmt::Write as _;

/// One measured transfer.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Payload bytes delivered to the receiving application.
    pub bytes: u64,
    /// Seconds the receiver saw the transfer take (first byte to last byte,
    /// or the tool's own receiver interval for iperf3).
    pub secs: f64,
    /// CPU seconds (user + system) of the sending side.
    pub snd_cpu: f64,
    /// CPU seconds (user + system) of the receiving side.
    pub rcv_cpu: f64,
    /// Anything worth a glance (loss, retransmissions).
    pub note: String,
}

impl Sample {
    /// Goodput in bytes per second.
    pub fn goodput(&self) -> f64 {
        if self.secs > 0.0 {
            self.bytes as f64 / self.secs
        } else {
            0.0
        }
    }
}

/// The outcome of one benchmark row: its samples, or why it could not run.
#[derive(Debug, Clone)]
pub struct Row {
    /// Short name shown in the first column.
    pub name: &'static str,
    /// One sample per successful run.
    pub samples: Vec<Sample>,
    /// Runs that failed, with the reason (a row with no samples shows the first).
    pub failures: Vec<String>,
}

impl Row {
    /// An empty row for `name`.
    pub fn new(name: &'static str) -> Row {
        Row {
            name,
            samples: Vec::new(),
            failures: Vec::new(),
        }
    }

    /// The median goodput (bytes/s) of the samples, if any.
    pub fn median_goodput(&self) -> Option<f64> {
        median(self.samples.iter().map(Sample::goodput).collect())
    }
}

/// Median of a list (mean of the two middle values for an even count).
pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

const GIB: f64 = (1u64 << 30) as f64;

/// The table: medians, spread, ratios to the two baselines and CPU per side.
pub fn table(rows: &[Row]) -> String {
    let base = |name: &str| {
        rows.iter()
            .find(|r| r.name == name)
            .and_then(Row::median_goodput)
    };
    let iperf = base("iperf3-udp");
    let quinn = base("quinn");
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<15} {:>4} {:>9} {:>8} {:>15} {:>8} {:>8} {:>7} {:>7} {:>9} {:>9}",
        "path",
        "runs",
        "MB/s",
        "Gbit/s",
        "min..max MB/s",
        "x iperf3",
        "x quinn",
        "snd CPU",
        "rcv CPU",
        "snd s/GiB",
        "rcv s/GiB"
    );
    for row in rows {
        let Some(g) = row.median_goodput() else {
            let why = row
                .failures
                .first()
                .map(String::as_str)
                .unwrap_or("not run");
            let _ = writeln!(out, "{:<15} {:>4} not available: {why}", row.name, 0);
            continue;
        };
        let goodputs: Vec<f64> = row.samples.iter().map(Sample::goodput).collect();
        let lo = goodputs.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = goodputs.iter().copied().fold(0.0, f64::max);
        let pct = |f: fn(&Sample) -> f64| {
            median(row.samples.iter().map(|s| 100.0 * f(s) / s.secs).collect()).unwrap_or(0.0)
        };
        let per_gib = |f: fn(&Sample) -> f64| {
            median(
                row.samples
                    .iter()
                    .map(|s| f(s) / (s.bytes as f64 / GIB))
                    .collect(),
            )
            .unwrap_or(0.0)
        };
        let ratio = |b: Option<f64>| match b {
            Some(b) if b > 0.0 => format!("{:.2}", g / b),
            _ => "-".to_string(),
        };
        let _ = writeln!(
            out,
            "{:<15} {:>4} {:>9.1} {:>8.2} {:>15} {:>8} {:>8} {:>6.0}% {:>6.0}% {:>9.2} {:>9.2}",
            row.name,
            row.samples.len(),
            g / 1e6,
            g * 8.0 / 1e9,
            format!("{:.0}..{:.0}", lo / 1e6, hi / 1e6),
            ratio(iperf),
            ratio(quinn),
            pct(|s| s.snd_cpu),
            pct(|s| s.rcv_cpu),
            per_gib(|s| s.snd_cpu),
            per_gib(|s| s.rcv_cpu),
        );
        if !row.failures.is_empty() {
            let _ = writeln!(
                out,
                "{:<15} ({} failed run(s): {})",
                "",
                row.failures.len(),
                row.failures[0]
            );
        }
    }
    out
}

/// One line per sample, for the log above the table.
pub fn sample_line(name: &str, run: usize, s: &Sample) -> String {
    format!(
        "  {name:<15} run {run}: {:>10} B in {:>7.3} s = {:>8.1} MB/s  snd CPU {:.2} s  rcv CPU {:.2} s  {}",
        s.bytes,
        s.secs,
        s.goodput() / 1e6,
        s.snd_cpu,
        s.rcv_cpu,
        s.note
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }
}
