//! The CLI's side of file transfers: progress on stdout, sizes and rates
//! for people. The transfer itself (the core's machines and the std file
//! layer) is `tryst_std::transfer`.

/// A transfer's progress on stdout: an indicatif bar on a terminal, plain
/// lines at every tenth otherwise (logs and pipes stay readable).
#[derive(Debug)]
pub enum Progress {
    /// Stdout is a terminal.
    Bar(indicatif::ProgressBar),
    /// Stdout is a file or a pipe.
    Plain {
        /// What moves.
        label: String,
        /// Its size.
        size: u64,
        /// The last tenth printed.
        tenths: u64,
    },
}

impl Progress {
    /// Progress of `size` bytes called `label`.
    pub fn new(label: &str, size: u64) -> Progress {
        use std::io::IsTerminal;
        if std::io::stdout().is_terminal() {
            let bar = indicatif::ProgressBar::new(size);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{msg} [{bar:32}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(label.to_owned());
            Progress::Bar(bar)
        } else {
            Progress::Plain {
                label: label.to_owned(),
                size,
                tenths: 0,
            }
        }
    }

    /// `done` bytes have moved.
    pub fn set(&mut self, done: u64) {
        match self {
            Progress::Bar(bar) => bar.set_position(done),
            Progress::Plain {
                label,
                size,
                tenths,
            } => {
                let now = if *size == 0 {
                    10
                } else {
                    (u128::from(done) * 10 / u128::from(*size)).min(10) as u64
                };
                if now > *tenths {
                    *tenths = now;
                    println!(
                        "{label}: {}% ({} of {})",
                        now * 10,
                        human_bytes(done.min(*size)),
                        human_bytes(*size)
                    );
                }
            }
        }
    }

    /// Prints a line without breaking the bar.
    pub fn println(&self, line: &str) {
        match self {
            Progress::Bar(bar) => bar.println(line),
            Progress::Plain { .. } => println!("{line}"),
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

/// Bytes for people: `512 B`, `3.2 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Parses a rate in bytes a second: `500000`, `500K`, `2M`, `1G` (binary units).
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, scale) = match text.char_indices().last() {
        Some((i, 'k' | 'K')) => (&text[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&text[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&text[..i], 1 << 30),
        _ => (text, 1),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("not a rate: {text:?} (e.g. 500K, 2M)"))?;
    match n.checked_mul(scale) {
        Some(0) | None => Err(format!("not a usable rate: {text:?}")),
        Some(rate) => Ok(rate),
    }
}

/// Parses a size in bytes: `500000`, `500K`, `2M`, `4G` (binary units);
/// 0 is a size (nothing is kept).
pub fn parse_size(text: &str) -> Result<u64, String> {
    if text.trim() == "0" {
        return Ok(0);
    }
    parse_rate(text).map_err(|_| format!("not a size: {text:?} (e.g. 500M, 4G)"))
}

/// Hex of a digest, for output.
pub fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
