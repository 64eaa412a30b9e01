//! Turns SIGTERM, SIGINT and SIGHUP into a shutdown the agent can wait for.
//!
//! The first signal asks for a clean stop (finish the cycle, flush the queue); the agent
//! calls [`Shutdown::recv`] again while it drains, and a second signal ends the process at
//! once. SIGHUP (a closed terminal, or `kill -HUP` from habit) would otherwise end the
//! process without a flush; the agent has no configuration to reload, so it stops cleanly.

use futures_util::StreamExt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_tokio::Signals;

pub struct Shutdown {
    signals: Signals,
}

impl Shutdown {
    /// Installs the handlers; from here on the signals no longer kill the process.
    pub fn install() -> std::io::Result<Self> {
        Ok(Shutdown {
            signals: Signals::new([SIGTERM, SIGINT, SIGHUP])?,
        })
    }

    /// Waits for the next signal and returns its number.
    pub async fn recv(&mut self) -> i32 {
        match self.signals.next().await {
            Some(signal) => signal,
            // The stream ends only if the handle is closed, which this type never does.
            None => std::future::pending().await,
        }
    }

    pub fn name(signal: i32) -> &'static str {
        match signal {
            SIGTERM => "SIGTERM",
            SIGINT => "SIGINT",
            SIGHUP => "SIGHUP",
            _ => "signal",
        }
    }
}
