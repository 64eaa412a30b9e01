//! The buffer's configuration: where the disk buffer lives (BUFFER_DIR), how large it may
//! grow (BUFFER_MAX_BYTES) and how many datums wait in memory (QUEUE_MAX_DATUMS). The
//! buffer owns these variables' syntax and their entries in `config::VARIABLES`.

use std::path::PathBuf;

use serde::Deserialize;

use crate::config::{Problems, Variable};

pub const DEFAULT_QUEUE_MAX_DATUMS: &str = "50000";
pub const DEFAULT_MAX_BYTES: &str = "256MiB";
const MAX_QUEUE_DATUMS: usize = 10_000_000;
const MIN_BYTES: u64 = 64 << 10;
const MAX_BYTES: u64 = 1 << 40;

pub const QUEUE_MAX_DATUMS: Variable = Variable {
    name: "QUEUE_MAX_DATUMS",
    default: DEFAULT_QUEUE_MAX_DATUMS,
    meaning: "datums kept in memory while CloudWatch is unreachable (or BUFFER_DIR cannot be written); oldest dropped first",
    example: "100000",
};
pub const BUFFER_DIR: Variable = Variable {
    name: "BUFFER_DIR",
    default: "",
    meaning: "directory of the disk buffer (a mounted volume): what is collected survives restarts and kill -9; unset keeps it in memory",
    example: "/var/lib/cloudwatch-publisher",
};
pub const BUFFER_MAX_BYTES: Variable = Variable {
    name: "BUFFER_MAX_BYTES",
    default: DEFAULT_MAX_BYTES,
    meaning: "largest the disk buffer grows (bytes, KB/MB/GB or KiB/MiB/GiB); oldest dropped first",
    example: "1GiB",
};

/// The buffer's part of the configuration, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufferConfig {
    pub dir: Option<PathBuf>,
    pub max_bytes: u64,
    pub queue_max_datums: usize,
}

/// The buffer's variables as envy reads them: text, so each is validated on its own.
#[derive(Debug, Default, Deserialize)]
pub struct Raw {
    buffer_dir: Option<String>,
    buffer_max_bytes: Option<String>,
    queue_max_datums: Option<String>,
}

/// Validates the buffer's variables, reporting each problem; None when any was bad.
pub fn parse(raw: Raw, problems: &mut Problems) -> Option<BufferConfig> {
    let queue_text = raw
        .queue_max_datums
        .unwrap_or_else(|| DEFAULT_QUEUE_MAX_DATUMS.into());
    let queue_max_datums = match queue_text.trim().parse::<usize>() {
        Ok(n) if n <= MAX_QUEUE_DATUMS => Some(n),
        _ => {
            problems.bad(
                "QUEUE_MAX_DATUMS",
                &queue_text,
                format!("a whole number from 0 to {MAX_QUEUE_DATUMS}"),
            );
            None
        }
    };
    let dir = match raw.buffer_dir.as_deref().map(str::trim) {
        None | Some("") => Some(None),
        Some(d) if d.starts_with('/') && !d.contains('\0') => Some(Some(PathBuf::from(d))),
        Some(d) => {
            problems.bad(
                "BUFFER_DIR",
                d,
                "an absolute path to a mounted volume, e.g. /var/lib/cloudwatch-publisher".into(),
            );
            None
        }
    };
    let bytes_text = raw
        .buffer_max_bytes
        .unwrap_or_else(|| DEFAULT_MAX_BYTES.into());
    let max_bytes = match parse_bytes(&bytes_text) {
        Some(n) if (MIN_BYTES..=MAX_BYTES).contains(&n) => Some(n),
        _ => {
            problems.bad(
                "BUFFER_MAX_BYTES",
                &bytes_text,
                "a size from 64KiB to 1TiB: a whole number of bytes, or with KB, MB, GB, KiB, MiB, GiB or TiB, e.g. 256MiB".into(),
            );
            None
        }
    };
    Some(BufferConfig {
        dir: dir?,
        max_bytes: max_bytes?,
        queue_max_datums: queue_max_datums?,
    })
}

/// `256MiB`, `500 MB`, `1048576`: decimal (KB, MB, GB, TB) and binary (KiB, MiB, GiB, TiB)
/// units, case as written; None for anything else or past u64.
pub fn parse_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1000,
        "MB" => 1000_u64.pow(2),
        "GB" => 1000_u64.pow(3),
        "TB" => 1000_u64.pow(4),
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(scale)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sizes_in_every_unit() {
        for (text, n) in [
            ("0", 0),
            ("1048576", 1 << 20),
            ("512B", 512),
            ("64KiB", 64 << 10),
            ("256MiB", 256 << 20),
            (" 2 GiB ", 2 << 30),
            ("1TiB", 1 << 40),
            ("500MB", 500_000_000),
            ("3KB", 3000),
            ("1GB", 1_000_000_000),
            ("2TB", 2_000_000_000_000),
        ] {
            assert_eq!(parse_bytes(text), Some(n), "{text}");
        }
        for bad in [
            "",
            "MiB",
            "1.5GiB",
            "-1",
            "1 mib",
            "1kb",
            "1M",
            "1 GiB x",
            "0x10",
            "99999999999999999999",
            "20000000TiB",
        ] {
            assert_eq!(parse_bytes(bad), None, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn any_text_parses_or_is_refused_without_panic(text in "\\PC{0,24}") {
            let _ = parse_bytes(&text);
        }

        #[test]
        fn a_number_of_bytes_round_trips(n: u64) {
            prop_assert_eq!(parse_bytes(&n.to_string()), Some(n));
            prop_assert_eq!(parse_bytes(&format!("{n} B")), Some(n));
        }
    }
}
