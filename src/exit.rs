//! How the process ends: every exit code the agent can give, decided in one place and
//! described once for `--help` and the README.

use std::process::ExitCode;

/// The outcome of a run, as the process's exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: everything collected was delivered (or a `healthcheck` found the agent healthy).
    Ok,
    /// 1: datums could not be delivered (without BUFFER_DIR they are lost with the process),
    /// or a `healthcheck` found the agent unhealthy or silent.
    Failed,
    /// 78 (EX_CONFIG from sysexits.h): invalid configuration or command-line flag,
    /// HEALTH_ADDR unusable, or BUFFER_DIR unusable or locked by another agent.
    Config,
    /// 128 + n: a second signal `n` during shutdown ended the process at once.
    Signal(i32),
}

impl Exit {
    /// What `--help` says of the exit codes.
    pub const HELP: &'static str = "Exit codes:\n  \
        0   success, or stopped by SIGTERM/SIGINT/SIGHUP with everything delivered (or kept in BUFFER_DIR); healthcheck: healthy\n  \
        1   datums could not be delivered (--once, or a shutdown without BUFFER_DIR whose SHUTDOWN_TIMEOUT ran out); healthcheck: unhealthy or no answer\n  \
        78  invalid configuration or flag, HEALTH_ADDR cannot be listened on, or BUFFER_DIR unusable or held by another agent\n  \
        129/130/143  second SIGHUP/SIGINT/SIGTERM during shutdown\n";

    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Failed => 1,
            Exit::Config => 78,
            Exit::Signal(n) => u8::try_from(128 + n).unwrap_or(255),
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_conventions() {
        assert_eq!(Exit::Ok.code(), 0);
        assert_eq!(Exit::Failed.code(), 1);
        assert_eq!(Exit::Config.code(), 78);
        assert_eq!(Exit::Signal(15).code(), 143);
        assert_eq!(Exit::Signal(1).code(), 129);
    }

    #[test]
    fn the_help_names_every_code() {
        for exit in [
            Exit::Ok,
            Exit::Failed,
            Exit::Config,
            Exit::Signal(1),
            Exit::Signal(2),
            Exit::Signal(15),
        ] {
            assert!(Exit::HELP.contains(&exit.code().to_string()), "{exit:?}");
        }
    }
}
