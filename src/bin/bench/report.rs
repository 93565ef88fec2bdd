//! What a run found: figures (each the median of its repetitions, the runs
//! kept beside it) and targets (a measured value against a bound), printed as
//! one table and written as JSON.

use serde_json::{Value, json};

pub struct Figure {
    pub key: String,
    pub label: String,
    pub unit: &'static str,
    pub runs: Vec<f64>,
}

impl Figure {
    pub fn median(&self) -> f64 {
        median(&self.runs)
    }
}

pub fn median(runs: &[f64]) -> f64 {
    let mut sorted: Vec<f64> = runs.iter().copied().filter(|v| !v.is_nan()).collect();
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

pub struct Target {
    pub key: String,
    pub label: String,
    pub value: f64,
    /// `(">=", 0.8)` or `("<=", 100.0)`.
    pub bound: (&'static str, f64),
    pub unit: &'static str,
}

impl Target {
    pub fn met(&self) -> bool {
        match self.bound.0 {
            ">=" => self.value >= self.bound.1,
            _ => self.value <= self.bound.1,
        }
    }
}

#[derive(Default)]
pub struct Report {
    pub figures: Vec<Figure>,
    pub targets: Vec<Target>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn add(&mut self, key: impl Into<String>, label: impl Into<String>, unit: &'static str, runs: Vec<f64>) {
        self.figures.push(Figure {
            key: key.into(),
            label: label.into(),
            unit,
            runs,
        });
    }

    pub fn median(&self, key: &str) -> Option<f64> {
        self.figures
            .iter()
            .find(|f| f.key == key)
            .map(Figure::median)
            .filter(|m| m.is_finite())
    }

    pub fn target(&mut self, target: Target) {
        self.targets.push(target);
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        let line = |out: &mut String, figure: &str, median: &str, unit: &str, runs: &str, target: &str| {
            out.push_str(&format!("{figure:<70} {median:>11} {unit:<9} {runs:<32} {target}\n"));
        };
        line(&mut out, "figure", "median", "unit", "runs", "target");
        line(
            &mut out,
            &"-".repeat(70),
            &"-".repeat(11),
            "---------",
            &"-".repeat(32),
            "------",
        );
        for f in &self.figures {
            let runs = f.runs.iter().map(|&v| number(v)).collect::<Vec<_>>().join(" ");
            line(&mut out, &f.label, &number(f.median()), f.unit, &runs, "");
        }
        for t in &self.targets {
            let verdict = format!(
                "{} {} {}: {}",
                t.bound.0,
                number(t.bound.1),
                t.unit,
                if t.met() { "MET" } else { "MISSED" }
            );
            line(&mut out, &t.label, &number(t.value), t.unit, "", &verdict);
        }
        out
    }

    pub fn json(&self, context: Value) -> Value {
        let figures: serde_json::Map<String, Value> = self
            .figures
            .iter()
            .map(|f| {
                (
                    f.key.clone(),
                    json!({"label": f.label, "unit": f.unit, "median": finite(f.median()), "runs": f.runs.iter().map(|&v| finite(v)).collect::<Vec<_>>()}),
                )
            })
            .collect();
        let targets: serde_json::Map<String, Value> = self
            .targets
            .iter()
            .map(|t| {
                (
                    t.key.clone(),
                    json!({"label": t.label, "value": finite(t.value), "unit": t.unit, "bound": format!("{} {}", t.bound.0, t.bound.1), "met": t.met()}),
                )
            })
            .collect();
        json!({"context": context, "figures": figures, "targets": targets, "notes": self.notes})
    }
}

fn finite(v: f64) -> Value {
    if v.is_finite() { json!(v) } else { Value::Null }
}

/// Thousands separated above 100, two decimals below 10, one below 100.
pub fn number(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    if v.abs() >= 100.0 {
        let digits = format!("{:.0}", v.abs());
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(c);
        }
        if v < 0.0 { format!("-{grouped}") } else { grouped }
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_an_odd_and_an_even_number_of_runs() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(number(1_234_567.4), "1,234,567");
        assert_eq!(number(123.0), "123");
        assert_eq!(number(12.34), "12.3");
        assert_eq!(number(0.834), "0.83");
    }
}
