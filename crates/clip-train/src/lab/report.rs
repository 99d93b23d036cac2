//! An experiment's report: Markdown for a reader, JSON with every number, written side by side.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{io, Result};

/// What an experiment found, in words and numbers.
#[derive(Debug, Clone)]
pub struct Report {
    /// The experiment's name (`loss`): the files are `<name>.md`, `<name>.json`, `<name>/`.
    pub name: &'static str,
    pub title: String,
    /// What was asked, in the learner's terms.
    pub question: String,
    /// What was trained and measured.
    pub setup: String,
    /// Tables, plots and their explanation, in order (Markdown).
    pub sections: Vec<String>,
    /// What the numbers show.
    pub shows: Vec<String>,
    /// What they do not show.
    pub limits: Vec<String>,
    /// Every number, for plots of one's own.
    pub numbers: Value,
    pub quick: bool,
    /// The command that reproduces it.
    pub command: String,
    /// Wall time of the whole experiment, training included (runs it reused cost nothing).
    pub seconds: f64,
}

impl Report {
    pub fn new(name: &'static str, title: &str, quick: bool) -> Self {
        Self {
            name,
            title: title.to_string(),
            question: String::new(),
            setup: String::new(),
            sections: Vec::new(),
            shows: Vec::new(),
            limits: Vec::new(),
            numbers: Value::Null,
            quick,
            command: format!(
                "clipforge lab {name}{}",
                if quick { " --quick" } else { "" }
            ),
            seconds: 0.0,
        }
    }

    /// The report as Markdown; plots are linked relative to the report.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# {}\n", self.title);
        if self.quick {
            let _ = writeln!(
                md,
                "> **Quick run**: fewer steps and images than the full experiment; read its \
                 figures as a first look, not as the answer.\n"
            );
        }
        let _ = writeln!(md, "## The question\n\n{}\n", self.question);
        let _ = writeln!(md, "## Setup\n\n{}\n", self.setup);
        for s in &self.sections {
            let _ = writeln!(md, "{s}\n");
        }
        let _ = writeln!(md, "## What it shows\n");
        for s in &self.shows {
            let _ = writeln!(md, "- {s}");
        }
        let _ = writeln!(md, "\n## What it does not show\n");
        for s in &self.limits {
            let _ = writeln!(md, "- {s}");
        }
        let _ = writeln!(
            md,
            "\n---\n`{}`: {:.0} s wall time on {} ({} threads). Every number is in `{}.json`.",
            self.command,
            self.seconds,
            super::cpu_name(),
            rayon::current_num_threads(),
            self.name
        );
        md
    }

    /// The numbers with the report's identity around them.
    pub fn json(&self) -> Value {
        serde_json::json!({
            "experiment": self.name,
            "quick": self.quick,
            "command": self.command,
            "seconds": self.seconds,
            "cpu": super::cpu_name(),
            "threads": rayon::current_num_threads(),
            "results": self.numbers,
        })
    }

    /// Write `<out>/<name>.md` and `<out>/<name>.json`; returns their paths.
    pub fn write(&self, out: &Path) -> Result<(PathBuf, PathBuf)> {
        let md = out.join(format!("{}.md", self.name));
        std::fs::write(&md, self.markdown()).map_err(io(&md))?;
        let json = out.join(format!("{}.json", self.name));
        let text = serde_json::to_string_pretty(&self.json()).expect("numbers serialise");
        std::fs::write(&json, text).map_err(io(&json))?;
        Ok((md, json))
    }
}

/// A Markdown table: a header row and rows of cells.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut t = format!("| {} |\n|", header.join(" | "));
    t.push_str(&"---|".repeat(header.len()));
    for r in rows {
        let _ = write!(t, "\n| {} |", r.join(" | "));
    }
    t
}

/// A percentage with one decimal.
pub fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

/// A table cell for a run's training time, marked when the run was reused, not trained now.
pub fn training_cell(seconds: f64, reused: bool) -> String {
    format!("{seconds:.0} s{}", if reused { " (reused)" } else { "" })
}
