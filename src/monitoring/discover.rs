//! Finds the plugin regions to alarm on, the way the agent's plugin source names them: a
//! target of PLUGIN_TARGETS serves the region it is configured with, and a discovered port
//! serves the region its plugin reports through GetPluginInfo.

use futures_util::future::join_all;
use tokio::time::Instant;

use crate::config::Config;
use crate::sources::plugins::Target;
use crate::sources::plugins::client::PluginClient;
use crate::untrusted;

/// What one target said about its region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub base_url: String,
    /// The region, or why there is none.
    pub region: Result<String, String>,
}

/// Every plugin target's region; discovered ports are asked all at once, each within
/// TARGET_TIMEOUT.
pub async fn plugin_regions(config: &Config) -> Vec<Found> {
    let client = PluginClient::new();
    let deadline = Instant::now() + config.target_timeout;
    let targets = Target::from_config(&config.plugins.targets);
    join_all(targets.into_iter().map(|t| {
        let client = &client;
        async move {
            let region = match t.configured_region {
                Some(region) => Ok(region),
                None => match client.plugin_info(&t.base_url, deadline).await {
                    Ok(info) => info
                        .region()
                        .map(str::to_string)
                        .ok_or_else(|| "GetPluginInfo reported no well-formed region".to_string()),
                    Err(e) => Err(untrusted::remote(&e.to_string())),
                },
            };
            Found {
                base_url: t.base_url,
                region,
            }
        }
    }))
    .await
}
