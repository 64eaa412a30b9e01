//! The `cloudwatch-publisher` command: parses the command line and hands the run to the
//! library (`run::agent`, `run::healthcheck`); the environment is the configuration.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use cloudwatch_publisher::run::{self, Mode};
use cloudwatch_publisher::{Exit, MonitoringOutput, MonitoringSettings, VARIABLES};

/// Publishes FinFocus cost-plugin health and projected cost to Amazon CloudWatch on a cron
/// schedule. Configuration comes from the environment (see below).
#[derive(Debug, Parser)]
#[command(name = "cloudwatch-publisher", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Run one cycle and exit: 0 when publishing succeeded, 1 when it failed, 78 on bad
    /// configuration.
    #[arg(long)]
    once: bool,
    /// Print the datums as JSON lines on stdout instead of calling AWS (logs go to stderr);
    /// needs no credentials or region.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Ask the running agent's /healthz on HEALTH_ADDR: exit 0 when it is healthy, 1 when not
    /// (the container image's HEALTHCHECK runs this).
    Healthcheck,
    /// Print CloudWatch alarms, a dashboard body or a CloudFormation template for what this
    /// agent publishes, for its configured namespace and the plugin regions it finds (the
    /// environment is read as the agent reads it; docs/operations.md)
    #[command(
        after_help = "Exit codes:\n  0   printed\n  1   plugins are configured but none named its region (pass --regions)\n  78  invalid configuration or flag"
    )]
    Monitoring {
        #[arg(value_enum)]
        output: MonitoringOutput,
        #[command(flatten)]
        settings: MonitoringSettings,
    },
}

fn after_help() -> String {
    let mut text = String::from("Environment:\n");
    for v in VARIABLES {
        let default = if v.default.is_empty() {
            "unset".to_string()
        } else {
            v.default.to_string()
        };
        text.push_str(&format!(
            "  {:<22} {}\n  {:<22} default: {}\n",
            v.name, v.meaning, "", default
        ));
    }
    text.push_str(
        "  AWS_* SDK variables    credentials chain, AWS_PROFILE, AWS_ENDPOINT_URL, AWS_MAX_ATTEMPTS

",
    );
    text.push_str(Exit::HELP);
    text
}

/// `--help` and `--version` print and exit 0 as clap has them; a bad flag or argument is
/// bad configuration: clap's message, and exit 78 as `--help` and the README say (clap's
/// own code is 2).
fn command_line_error(e: &clap::Error) -> ExitCode {
    let _ = e.print();
    if e.use_stderr() {
        Exit::Config.into()
    } else {
        ExitCode::SUCCESS
    }
}

fn main() -> ExitCode {
    let matches = match Cli::command().after_help(after_help()).try_get_matches() {
        Ok(matches) => matches,
        Err(e) => return command_line_error(&e),
    };
    // The soft open-file limit is often 1024 while the hard one is far higher; every probe,
    // health connection and PutMetricData needs a descriptor.
    let open_files = rlimit::increase_nofile_limit(u64::MAX).ok();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => return command_line_error(&e),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return Exit::Failed.into();
        }
    };
    match cli.command {
        Some(Command::Healthcheck) => return runtime.block_on(run::healthcheck()).into(),
        Some(Command::Monitoring { output, settings }) => {
            return runtime.block_on(run::monitoring(output, settings)).into();
        }
        None => {}
    }
    let mode = Mode {
        once: cli.once,
        dry_run: cli.dry_run,
    };
    match runtime.block_on(run::agent(mode, open_files)) {
        Ok(exit) => exit.into(),
        Err(e) => {
            // The log is closed once run returns; stderr still works.
            eprintln!("cloudwatch-publisher: agent failed: {e:#}");
            Exit::Failed.into()
        }
    }
}
