//! `exacta-verify` (also `exacta verify`): proves exactly-once end to end against any
//! Kafka-compatible broker, with librdkafka as the client. See `docs/reliability.md`.
//!
//! - `exacta-verify [OPTIONS]`: seed an input topic, copy it with transactional copiers
//!   (aborting some on purpose, optionally SIGKILLing them), read the output live and at
//!   the end, and print a one-line verdict; exit 1 on any violation.
//! - `exacta-verify check DIR`: judge a recorded history again.

mod check;
mod copier;
mod history;
mod run;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "exacta-verify",
    version,
    about = "Exactly-once verifier: transactional copiers under faults, checked end to end",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    run: run::RunArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Judge a recorded history directory again.
    Check {
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// One copier process (started by the verifier).
    #[command(hide = true)]
    Copy(Box<copier::CopyArgs>),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let code = match cli.command {
        Some(Cmd::Copy(args)) => copier::run(&args)?,
        Some(Cmd::Check { dir, json }) => {
            let report = check::check(&history::load(&dir)?);
            print(&report, &dir, json)
        }
        None => {
            let started = std::time::Instant::now();
            let (report, dir) = run::run(&cli.run)?;
            let code = print(&report, &dir, cli.run.json);
            eprintln!("took {:.1} s", started.elapsed().as_secs_f64());
            if report.passed() && cli.run.history.is_none() {
                let _ = std::fs::remove_dir_all(&dir);
            }
            code
        }
    };
    std::process::exit(code)
}

/// Prints the verdict line (stdout) and the examples of each finding (stderr).
fn print(report: &check::Report, dir: &std::path::Path, json: bool) -> i32 {
    println!("exacta verify: {report}");
    for (name, finding) in report.findings() {
        for example in &finding.examples {
            eprintln!("  {name}: {example}");
        }
    }
    if json {
        println!("{}", report.to_json());
    }
    if report.passed() {
        0
    } else {
        eprintln!("history kept in {}", dir.display());
        1
    }
}
