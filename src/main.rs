//! The `cloudwatch-publisher` command: parses the command line, validates the environment,
//! wires source, transform and sink together and hands them to the scheduler.

use std::process::ExitCode;

use anyhow::Context;
use aws_config::BehaviorVersion;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tracing::{error, info, warn};

use cloudwatch_publisher::config::{self, Config};
use cloudwatch_publisher::cycle::Agent;
use cloudwatch_publisher::exit::Exit;
use cloudwatch_publisher::health;
use cloudwatch_publisher::logging;
use cloudwatch_publisher::scheduler;
use cloudwatch_publisher::shutdown::Shutdown;
use cloudwatch_publisher::sink::{CloudWatchSink, DryRunSink, Sink};

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
}

fn after_help() -> String {
    let mut text = String::from("Environment:\n");
    for v in config::VARIABLES {
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

fn main() -> ExitCode {
    let matches = Cli::command().after_help(after_help()).get_matches();
    // The soft open-file limit is often 1024 while the hard one is far higher; every probe,
    // health connection and PutMetricData needs a descriptor.
    let open_files = rlimit::increase_nofile_limit(u64::MAX).ok();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
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
    if let Some(Command::Healthcheck) = cli.command {
        return runtime.block_on(healthcheck());
    }
    match runtime.block_on(run(cli, open_files)) {
        Ok(exit) => exit.into(),
        Err(e) => {
            // The log is closed once run returns; stderr still works.
            eprintln!("cloudwatch-publisher: agent failed: {e:#}");
            Exit::Failed.into()
        }
    }
}

/// The SDK's HTTPS client on rustls with ring; trust roots come from the system store
/// (Alpine's ca-certificates in the image, or SSL_CERT_FILE).
fn https_client() -> aws_sdk_cloudwatch::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// Prints the agent's answer; Docker keeps the output of the last few checks.
async fn healthcheck() -> ExitCode {
    let addr = match config::parse_health_addr(std::env::var("HEALTH_ADDR").ok().as_deref()) {
        Ok(addr) => addr,
        Err(why) => {
            eprintln!("invalid configuration: HEALTH_ADDR: {why}");
            return Exit::Failed.into();
        }
    };
    match health::check(addr).await {
        Ok(body) => {
            println!("{body}");
            Exit::Ok.into()
        }
        Err(e) => {
            eprintln!("{e}");
            Exit::Failed.into()
        }
    }
}

async fn run(cli: Cli, open_files: Option<u64>) -> anyhow::Result<Exit> {
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            // Logged at info whatever LOG_LEVEL says (it may be the bad one).
            let _log = logging::init(e.log_format, "info", cli.dry_run);
            error!(variables = %e.variables().join(","), "{e}");
            return Ok(Exit::Config);
        }
    };
    // Dropped last, when run returns: the log's final lines are written out then.
    let _log = logging::init(config.log_format, &config.log_filter, cli.dry_run);
    for name in &config.ignored {
        warn!(
            variable = %name,
            "{name} is not read: variable names are upper case. Fix: set {} instead",
            name.to_ascii_uppercase()
        );
    }

    let sink = if cli.dry_run {
        Sink::DryRun(DryRunSink::stdout())
    } else {
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .http_client(https_client())
            .load()
            .await;
        let Some(region) = sdk.region() else {
            error!(
                variables = "AWS_REGION",
                "invalid configuration: AWS_REGION is unset and no region was found in the profile, ECS or IMDS: set AWS_REGION, e.g. AWS_REGION=us-east-1"
            );
            return Ok(Exit::Config);
        };
        info!(
            region = %region,
            endpoint = sdk.endpoint_url().unwrap_or("default"),
            "CloudWatch client ready"
        );
        Sink::CloudWatch(CloudWatchSink::new(aws_sdk_cloudwatch::Client::new(&sdk)))
    };

    // Installed before the `starting` line, so whoever waits for that line may signal.
    let mut shutdown = Shutdown::install().context("installing signal handlers")?;
    info!(
        version = env!("CARGO_PKG_VERSION"),
        namespace = %config.namespace,
        schedule = %config.schedule.expr,
        targets = config.targets.len(),
        basket = config.basket.len(),
        target_timeout_ms = config.target_timeout.as_millis() as u64,
        dry_run = cli.dry_run,
        once = cli.once,
        health_addr = config.health_addr.map(|a| a.to_string()).unwrap_or_else(|| "disabled".into()),
        self_metrics = config.self_metrics.as_deref().unwrap_or("off"),
        open_files_limit = open_files,
        "starting"
    );
    if let Some(interval) = config
        .schedule
        .interval_after(std::time::SystemTime::now())
        .filter(|i| *i <= config.target_timeout)
    {
        warn!(
            interval_ms = interval.as_millis() as u64,
            target_timeout_ms = config.target_timeout.as_millis() as u64,
            "TARGET_TIMEOUT is not shorter than the schedule interval: a hung plugin makes cycles skip ticks"
        );
    }

    let mut agent = Agent::new(&config, sink);
    // One-shot runs end before any probe would ask; they get no listener.
    if let (Some(addr), false) = (config.health_addr, cli.once) {
        match health::bind(addr).await {
            Ok(listener) => health::serve(listener, agent.stats(), config.schedule.clone()),
            Err(e) => {
                error!(variables = "HEALTH_ADDR", "{e}");
                return Ok(Exit::Config);
            }
        }
    }
    let code = if cli.once {
        scheduler::run_once(
            &mut agent,
            &config.schedule,
            &mut shutdown,
            config.shutdown_timeout,
        )
        .await
    } else {
        scheduler::run_scheduled(
            agent,
            config.schedule.clone(),
            &mut shutdown,
            config.shutdown_timeout,
        )
        .await?
    };
    // The last word on a stalled output, if it gets through now.
    logging::report_dropped();
    Ok(code)
}
