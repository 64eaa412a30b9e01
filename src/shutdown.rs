//! Turns SIGTERM, SIGINT and SIGHUP into a shutdown the agent can wait for.
//!
//! The first signal asks for a clean stop (finish the cycle, flush the queue); the agent
//! calls [`Shutdown::recv`] again while it drains, and a second signal ends the process at
//! once. SIGHUP (a closed terminal, or `kill -HUP` from habit) would otherwise end the
//! process without a flush; the agent has no configuration to reload, so it stops cleanly.

use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_tokio::Signals;

/// Signal numbers as they arrive: the process's own, or a test's.
pub struct Shutdown {
    signals: Pin<Box<dyn Stream<Item = i32> + Send>>,
}

impl Shutdown {
    /// Installs the handlers; from here on the signals no longer kill the process.
    pub fn install() -> std::io::Result<Self> {
        Ok(Shutdown {
            signals: Box::pin(Signals::new([SIGTERM, SIGINT, SIGHUP])?),
        })
    }

    /// Signals sent through a channel instead of by the kernel, so the scheduler's drain is
    /// tested without touching the test process's own handlers.
    #[cfg(test)]
    pub fn from_channel(rx: tokio::sync::mpsc::UnboundedReceiver<i32>) -> Self {
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|signal| (signal, rx))
        });
        Shutdown {
            signals: Box::pin(stream),
        }
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
