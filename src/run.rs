//! Runs the agent as the command line asks: reads and checks the configuration, wires the
//! source, the sink and the health listener together, and hands them to the scheduler; or
//! answers the `healthcheck` and `monitoring` commands. `main.rs` only parses the command
//! line.

use tracing::{error, info, warn};

use crate::agent::Agent;
use crate::buffer::Buffer;
use crate::config::{self, Config};
use crate::exit::Exit;
use crate::health;
use crate::logging;
use crate::monitoring::{self, Fleet, Knobs, Output, Render, Settings, discover};
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
                "invalid configuration: AWS_REGION is unset and no region was found in the profile, ECS or IMDS: set AWS_REGION, e.g. AWS_REGION=us-east-1 (RUST_LOG=aws_config=debug shows why each source had none)"
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
        publish_splay = %config.publish_splay,
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
    if !mode.once {
        info!(
            publish_offset_ms = scheduler::tick_offset(&agent, interval).as_millis() as u64,
            interval_ms = interval.as_millis() as u64,
            "each cycle sends this long after its tick (PUBLISH_SPLAY, from AGENT_NAME and the host name)"
        );
    }
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

/// Prints the alarms, the dashboard body or the CloudFormation template for the configured
/// agent on stdout; what it found and skipped goes to stderr, so stdout can be piped.
pub async fn monitoring(output: Output, settings: Settings) -> Exit {
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Exit::Config;
        }
    };
    let interval = config.schedule.interval(std::time::SystemTime::now());
    let knobs = match Knobs::new(&settings, interval) {
        Ok(k) => k,
        Err(why) => {
            eprintln!("invalid flag: {why}");
            return Exit::Config;
        }
    };
    if knobs.period < 60 {
        eprintln!(
            "note: --period {} is below the 60 s resolution the agent publishes at; only an emulator evaluates such alarms usefully",
            knobs.period
        );
    }
    let text = match output {
        // SEARCH finds every region by itself; the body needs only where the agent writes.
        Output::Dashboard => {
            let Some(region) = config.aws_region.as_deref() else {
                eprintln!(
                    "invalid configuration: AWS_REGION is unset: the dashboard's widgets name the region the agent publishes to. Fix: set AWS_REGION, e.g. AWS_REGION=us-east-1 (RUST_LOG=aws_config=debug shows why each source had none)"
                );
                return Exit::Config;
            };
            monitoring::dashboard::body(&config.namespace, region, knobs.period).to_string()
        }
        Output::Alarms | Output::Cloudformation => {
            let regions = match plugin_regions(&config, &settings).await {
                Ok(regions) => regions,
                Err(exit) => return exit,
            };
            let fleet = Fleet::new(&config, regions);
            if fleet.agent.is_none() {
                eprintln!(
                    "note: SELF_METRICS=false: no alarms on the agent itself (silence, backlog, publish failures, drops)"
                );
            }
            let alarms = monitoring::alarms::alarms(&fleet, Render::Values(&knobs));
            let (metrics, usd) = monitoring::alarms::monthly_cost(&alarms, &knobs);
            eprintln!(
                "{} alarms in {} (plugin regions: {}, scrape targets: {}) reading {metrics} metrics: about ${usd:.2} a month, plus $3.00 for the dashboard beyond an account's first three",
                alarms.len(),
                fleet.namespace,
                fleet.regions.len(),
                fleet.scrape_targets.len()
            );
            if output == Output::Alarms {
                alarms
                    .into_iter()
                    .map(|a| serde_json::Value::Object(a.definition).to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            } else {
                // Compact: CloudFormation takes at most 51,200 bytes of template inline.
                let text = monitoring::template::template(&fleet, &knobs).to_string();
                if text.len() > monitoring::template::MAX_INLINE_BYTES {
                    eprintln!(
                        "note: the template is {} bytes, more than the {} CloudFormation takes inline: deploy it through S3 (aws cloudformation deploy --s3-bucket)",
                        text.len(),
                        monitoring::template::MAX_INLINE_BYTES
                    );
                }
                text
            }
        }
    };
    println!("{text}");
    Exit::Ok
}

/// The regions `--regions` names, or else those the configured plugins report; after saying
/// why, a bad `--regions` is a configuration error, and plugins of which none named its
/// region a failure.
async fn plugin_regions(config: &Config, settings: &Settings) -> Result<Vec<String>, Exit> {
    if !settings.regions.is_empty() {
        let bad: Vec<_> = settings
            .regions
            .iter()
            .filter(|r| !config::is_region(r))
            .collect();
        if !bad.is_empty() {
            eprintln!("invalid flag: --regions: {bad:?} are not region names such as us-east-1");
            return Err(Exit::Config);
        }
        return Ok(settings.regions.clone());
    }
    let found = discover::plugin_regions(config).await;
    let mut regions = Vec::new();
    for f in &found {
        match &f.region {
            Ok(region) => {
                eprintln!("{}: {region}", f.base_url);
                regions.push(region.clone());
            }
            Err(why) => eprintln!(
                "{}: no region ({why}); its region gets no alarm unless --regions names it",
                f.base_url
            ),
        }
    }
    if regions.is_empty() && !found.is_empty() {
        eprintln!(
            "no plugin of the {} configured targets named its region. Fix: start the fleet, check PLUGIN_HOST and PLUGIN_PORTS, or pass --regions",
            found.len()
        );
        return Err(Exit::Failed);
    }
    Ok(regions)
}
