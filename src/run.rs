//! Runs the agent as the command line asks: reads and checks the configuration, wires the
//! source, the sink and the health listener together, and hands them to the scheduler; or
//! answers the `healthcheck` command. `main.rs` only parses the command line.

use tracing::{error, info, warn};

use crate::agent::Agent;
use crate::buffer::Buffer;
use crate::config::{self, Config};
use crate::exit::Exit;
use crate::health;
use crate::logging;
use crate::scheduler::{self, SchedulerError};
use crate::shutdown::Shutdown;
use crate::sinks::Sink;
use crate::sinks::cloudwatch::sdk::{self, CloudWatchSink};
use crate::sinks::dry_run::DryRunSink;

/// What the command line chose.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mode {
    /// One cycle, then exit (`--once`).
    pub once: bool,
    /// Print datums instead of calling AWS (`--dry-run`).
    pub dry_run: bool,
}

/// Why the agent could not run at all (configuration problems are an [`Exit`] instead).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("installing signal handlers: {0}")]
    Signals(std::io::Error),
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
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
pub async fn healthcheck() -> Exit {
    let addr = match config::parse_health_addr(std::env::var("HEALTH_ADDR").ok().as_deref()) {
        Ok(addr) => addr,
        Err(why) => {
            eprintln!("invalid configuration: HEALTH_ADDR: {why}");
            return Exit::Failed;
        }
    };
    match health::check(addr).await {
        Ok(body) => {
            println!("{body}");
            Exit::Ok
        }
        Err(e) => {
            eprintln!("{e}");
            Exit::Failed
        }
    }
}

/// Reads the configuration, wires source, sink and listener together, and runs the agent
/// once or on its schedule until a signal.
pub async fn agent(mode: Mode, open_files: Option<u64>) -> Result<Exit, RunError> {
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            // Logged at info whatever LOG_LEVEL says (it may be the bad one).
            let _log = logging::init(e.log_format, "info", mode.dry_run);
            error!(variables = %e.variables().join(","), "{e}");
            return Ok(Exit::Config);
        }
    };
    // Dropped last, when run returns: the log's final lines are written out then.
    let _log = logging::init(config.log_format, &config.log_filter, mode.dry_run);
    for name in &config.ignored {
        warn!(
            variable = %name,
            "{name} is not read: variable names are upper case. Fix: set {} instead",
            name.to_ascii_uppercase()
        );
    }

    let buffer = match (&config.buffer.dir, mode.dry_run) {
        (Some(_), true) => {
            // A dry run delivers nothing, so it must not empty the real buffer.
            warn!(
                variables = "BUFFER_DIR",
                "BUFFER_DIR is not used with --dry-run; a dry run keeps its datums in memory"
            );
            Buffer::memory(config.buffer.queue_max_datums)
        }
        (Some(dir), false) => {
            match Buffer::open(dir, config.buffer.max_bytes, config.buffer.queue_max_datums) {
                Ok(buffer) => buffer,
                Err(e) => {
                    error!(variables = "BUFFER_DIR", "{e}");
                    return Ok(Exit::Config);
                }
            }
        }
        (None, _) => Buffer::memory(config.buffer.queue_max_datums),
    };

    let sink = if mode.dry_run {
        Sink::DryRun(DryRunSink::stdout())
    } else {
        let threshold_in_env = std::env::var_os("AWS_REQUEST_MIN_COMPRESSION_SIZE_BYTES").is_some();
        let sdk = sdk::loader(https_client(), threshold_in_env).load().await;
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
    let mut shutdown = Shutdown::install().map_err(RunError::Signals)?;
    info!(
        version = env!("CARGO_PKG_VERSION"),
        namespace = %config.namespace,
        schedule = %config.schedule.expr,
        targets = config.plugins.targets.len(),
        basket = config.plugins.basket.len(),
        scrape_targets = config.prometheus.targets.len(),
        target_timeout_ms = config.target_timeout.as_millis() as u64,
        dry_run = mode.dry_run,
        once = mode.once,
        health_addr = config.health_addr.map(|a| a.to_string()).unwrap_or_else(|| "disabled".into()),
        self_metrics = config.self_metrics.as_deref().unwrap_or("off"),
        buffer_dir = config.buffer.dir.as_ref().filter(|_| !mode.dry_run).map(|d| d.display().to_string()).unwrap_or_else(|| "memory".into()),
        open_files_limit = open_files,
        "starting"
    );
    let interval = config.schedule.interval(std::time::SystemTime::now());
    if interval <= config.target_timeout {
        warn!(
            interval_ms = interval.as_millis() as u64,
            target_timeout_ms = config.target_timeout.as_millis() as u64,
            "TARGET_TIMEOUT is not shorter than the schedule interval: a hung plugin makes cycles skip ticks"
        );
    }

    let mut agent = Agent::new(&config, sink, buffer);
    // One-shot runs end before any probe would ask; they get no listener.
    if let (Some(addr), false) = (config.health_addr, mode.once) {
        match health::bind(addr).await {
            Ok(listener) => health::serve(listener, agent.stats(), config.schedule.clone()),
            Err(e) => {
                error!(variables = "HEALTH_ADDR", "{e}");
                return Ok(Exit::Config);
            }
        }
    }
    let code = if mode.once {
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
