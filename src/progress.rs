//! Progress of a long loop: a bar on a terminal, and plain lines (every 5% of the run) when
//! stderr is not one, so a CI log shows a training run as it goes instead of nothing until the end.

use std::io::IsTerminal;
use std::time::Instant;

pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    lines: bool,
    what: &'static str,
    total: u64,
    every: u64,
    done: u64,
    start: Instant,
}

impl Progress {
    /// `what` names the unit counted (`iter`, `shard`); `enabled` false shows nothing.
    pub fn new(what: &'static str, total: usize, enabled: bool) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        let total = total as u64;
        let bar = (enabled && terminal).then(|| {
            let pb = indicatif::ProgressBar::new(total);
            pb.set_style(
                indicatif::ProgressStyle::with_template(&format!(
                    "{{msg}} [{{bar:30}}] {{pos}}/{{len}} {what}s {{elapsed}}<{{eta}}"
                ))
                .unwrap(),
            );
            pb
        });
        Progress {
            bar,
            lines: enabled && !terminal,
            what,
            total,
            every: total.div_ceil(20).max(1),
            done: 0,
            start: Instant::now(),
        }
    }

    /// Continue from `done` units already finished (a resumed run).
    pub fn resume_at(&mut self, done: usize) {
        self.done = done as u64;
        if let Some(b) = &self.bar {
            b.set_position(self.done);
        }
    }

    /// One more unit done; `status` (e.g. `loss 0.1234`) goes beside the count.
    pub fn inc(&mut self, status: &str) {
        self.done += 1;
        if let Some(b) = &self.bar {
            b.set_message(status.to_string());
            b.inc(1);
        }
        if self.lines && (self.done.is_multiple_of(self.every) || self.done == self.total) {
            // stdout: stderr carries only the one-line error of a failed command
            let status = if status.is_empty() {
                String::new()
            } else {
                format!(" {status}")
            };
            println!(
                "{} {}/{}{status} ({:.1} s)",
                self.what,
                self.done,
                self.total,
                self.start.elapsed().as_secs_f64()
            );
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
