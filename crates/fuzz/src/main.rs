//! `raftkv-fuzz`: list the targets, run one with the stable mutation driver, or write its
//! seeds out (the corpus `scripts/fuzz` gives libFuzzer).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

fn usage() -> ExitCode {
    eprintln!(
        "usage: raftkv-fuzz list\n       raftkv-fuzz run <target> [--seconds N] [--seed S]\n       raftkv-fuzz seeds <target> <dir>"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<f64>().ok())
    };
    match args.first().map(String::as_str) {
        Some("list") => {
            for t in raftkv_fuzz::targets() {
                println!("{:16} {}", t.name, t.about);
            }
            ExitCode::SUCCESS
        }
        Some("run") => {
            let Some(target) = args.get(1).and_then(|n| raftkv_fuzz::find(n)) else {
                return usage();
            };
            let seconds = flag("--seconds").unwrap_or(60.0);
            let seed = flag("--seed").map_or(0x5eed, |s| s as u64);
            let report = raftkv_fuzz::driver::run(
                target,
                Duration::from_secs_f64(seconds),
                seed,
                &PathBuf::from("fuzz-artifacts"),
            );
            println!(
                "{}: {} inputs, {} crashes",
                target.name,
                report.execs,
                report.crashes.len()
            );
            for (path, message) in &report.crashes {
                println!("  {}: {message}", path.display());
            }
            if report.crashes.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Some("seeds") => {
            let (Some(target), Some(dir)) =
                (args.get(1).and_then(|n| raftkv_fuzz::find(n)), args.get(2))
            else {
                return usage();
            };
            if let Err(e) = std::fs::create_dir_all(dir) {
                eprintln!("{dir}: {e}");
                return ExitCode::FAILURE;
            }
            for (i, seed) in (target.seeds)().iter().enumerate() {
                if let Err(e) = std::fs::write(PathBuf::from(dir).join(format!("seed-{i}")), seed) {
                    eprintln!("{dir}: {e}");
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        _ => usage(),
    }
}
