//! The figures a bench run produces: a table for people, JSON for comparing commits.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::{Value, json};

/// One measured quantity: its samples (one per run), and what it is compared with.
pub struct Figure {
    pub section: &'static str,
    pub name: String,
    pub unit: &'static str,
    pub samples: Vec<f64>,
    /// The figure (by name, in the same report) this one is divided by for its ratio.
    pub compared_with: Option<String>,
    /// A target the figure must meet, e.g. `("ratio", 1.4)`: ratio at most 1.4;
    /// `("median", 2.0)`: median at most 2.0 units.
    pub target: Option<(&'static str, f64)>,
}

impl Figure {
    pub fn median(&self) -> f64 {
        let mut sorted = self.samples.clone();
        sorted.sort_by(f64::total_cmp);
        match sorted.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => sorted[n / 2],
            n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        }
    }

    pub fn min(&self) -> f64 {
        self.samples.iter().copied().fold(f64::INFINITY, f64::min)
    }

    pub fn max(&self) -> f64 {
        self.samples.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    }
}

#[derive(Default)]
pub struct Report {
    pub figures: Vec<Figure>,
}

impl Report {
    pub fn add(&mut self, figure: Figure) {
        self.figures.push(figure);
    }

    fn ratio(&self, figure: &Figure) -> Option<f64> {
        let other = figure.compared_with.as_ref()?;
        let other = self.figures.iter().find(|f| &f.name == other)?;
        Some(figure.median() / other.median())
    }

    /// Whether the figure meets its target: `None` if it has none.
    fn verdict(&self, figure: &Figure) -> Option<bool> {
        let (what, limit) = figure.target?;
        let value = match what {
            "ratio" => self.ratio(figure)?,
            "ratio_at_least" => return Some(self.ratio(figure)? >= limit),
            _ => figure.median(),
        };
        Some(value <= limit)
    }

    pub fn print(&self) {
        let mut section = "";
        for figure in &self.figures {
            if figure.section != section {
                section = figure.section;
                println!("\n{section}");
                println!(
                    "  {:<52} {:>10} {:>10} {:>10} {:>6}  {:>7}  target",
                    "", "median", "min", "max", "runs", "ratio"
                );
            }
            let ratio = self.ratio(figure).map_or(String::new(), |r| format!("{r:.2}"));
            let target = match (figure.target, self.verdict(figure)) {
                (Some((what, limit)), Some(met)) => {
                    format!("{} {what} {limit}", if met { "met:" } else { "MISSED:" })
                }
                _ => String::new(),
            };
            println!(
                "  {:<52} {:>10.3} {:>10.3} {:>10.3} {:>6}  {:>7}  {target}",
                format!("{} ({})", figure.name, figure.unit),
                figure.median(),
                figure.min(),
                figure.max(),
                figure.samples.len(),
                ratio
            );
        }
    }

    pub fn to_json(&self) -> Value {
        let figures: Vec<Value> = self
            .figures
            .iter()
            .map(|f| {
                json!({
                    "section": f.section,
                    "name": f.name,
                    "unit": f.unit,
                    "median": f.median(),
                    "min": f.min(),
                    "max": f.max(),
                    "samples": f.samples,
                    "compared_with": f.compared_with,
                    "ratio": self.ratio(f),
                    "target": f.target.map(|(what, limit)| json!({"what": what, "limit": limit})),
                    "target_met": self.verdict(f),
                })
            })
            .collect();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        json!({
            "unix_time": std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            "kernel": kernel.trim(),
            "cpus": cpus,
            "figures": figures,
        })
    }

    /// Writes `latest.json` and a copy named by the time, under `dir`.
    pub fn save(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let json = self.to_json();
        let text = serde_json::to_string_pretty(&json)?;
        let stamped = dir.join(format!("bench-{}.json", json["unix_time"]));
        std::fs::write(&stamped, &text)?;
        let latest = dir.join("latest.json");
        std::fs::write(&latest, &text)?;
        Ok(latest)
    }
}
