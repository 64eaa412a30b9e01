//! One log line, bounded whatever its fields hold.
//!
//! A field can carry outside text: a metric name or label value from a scrape, a URL, an
//! error body. Printed whole, a 25 MB metric name was a 25 MB line, and a queue of such lines
//! for a stdout nobody reads took gigabytes. So every field is formatted here, not by
//! tracing-subscriber's formatters: at most [`MAX_FIELD_BYTES`] of it are kept (the message
//! [`MAX_MESSAGE_BYTES`], the whole line [`MAX_LINE_BYTES`]) with a `...[N more bytes cut]`
//! marker, and what is cut is never held in memory, only counted. Every field also has its
//! URLs redacted (no password, no query value) and, in `LOG_FORMAT=text`, its control
//! characters escaped, so no caller can forget to.
//!
//! The JSON shape is tracing-subscriber's, flattened: `timestamp`, `level`, then the fields
//! in the order the event gives them, `message` first; the text shape is
//! `<timestamp> <level> <message> name=value ...`.

use std::fmt::{self, Write as _};
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogFormat;
use crate::untrusted;

/// The most bytes of one field's value written, escapes included; docs/reliability.md.
pub const MAX_FIELD_BYTES: usize = 4 * 1024;
/// The message may carry a whole configuration error, every bad variable at once.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;
/// The most bytes of all the values of one line together; the fields after the budget is
/// spent keep only their names and a marker.
pub const MAX_LINE_BYTES: usize = 32 * 1024;

/// The agent's line format: [`FormatEvent`] for tracing-subscriber's fmt layer.
pub struct Line {
    pub format: LogFormat,
}

impl<S, N> FormatEvent<S, N> for Line
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let json = self.format == LogFormat::Json;
        let mut fields = Fields {
            json,
            room: MAX_LINE_BYTES,
            out: Vec::new(),
        };
        event.record(&mut fields);
        let timestamp = humantime::format_rfc3339_micros(SystemTime::now());
        let level = event.metadata().level();
        if json {
            write!(w, "{{\"timestamp\":\"{timestamp}\",\"level\":\"{level}\"")?;
            for (name, value) in &fields.out {
                write!(w, ",{}:", json_string(name)?)?;
                match value {
                    Value::Text(text) => w.write_str(&json_string(text)?)?,
                    Value::Plain(plain) => w.write_str(plain)?,
                }
            }
            w.write_str("}\n")
        } else {
            write!(w, "{timestamp} {level:>5}")?;
            for (name, value) in &fields.out {
                w.write_char(' ')?;
                if *name != "message" {
                    write!(w, "{name}=")?;
                }
                let (Value::Text(text) | Value::Plain(text)) = value;
                w.write_str(text)?;
            }
            w.write_char('\n')
        }
    }
}

fn json_string(text: &str) -> Result<String, fmt::Error> {
    serde_json::to_string(text).map_err(|_| fmt::Error)
}

/// A field's value as it will be written.
enum Value {
    /// Text: a JSON string in JSON (escaped on writing), written as is in text (already
    /// escaped, and quoted when it was a string).
    Text(String),
    /// A number or a boolean, written as is.
    Plain(String),
}

/// The fields of one event, each bounded as it is recorded.
struct Fields {
    json: bool,
    /// Bytes the line's values may still take.
    room: usize,
    out: Vec<(&'static str, Value)>,
}

impl Fields {
    fn name(field: &Field) -> Option<&'static str> {
        match field.name() {
            // Metadata the `log` bridge adds, already in the line.
            name if name.starts_with("log.") => None,
            name => Some(name.strip_prefix("r#").unwrap_or(name)),
        }
    }

    fn room_for(&self, name: &str) -> usize {
        let cap = if name == "message" {
            MAX_MESSAGE_BYTES
        } else {
            MAX_FIELD_BYTES
        };
        cap.min(self.room)
    }

    fn text(&mut self, field: &Field, captured: Captured, quoted: bool) {
        let Some(name) = Self::name(field) else {
            return;
        };
        let room = self.room_for(name);
        let text = captured.finish(room, self.json, quoted, name == "message");
        self.room = self.room.saturating_sub(text.len());
        self.out.push((name, Value::Text(text)));
    }

    fn plain(&mut self, field: &Field, plain: String) {
        let Some(name) = Self::name(field) else {
            return;
        };
        self.room = self.room.saturating_sub(plain.len());
        self.out.push((name, Value::Plain(plain)));
    }

    fn limit(&self, field: &Field) -> usize {
        self.room_for(field.name())
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        let mut captured = Captured::new(self.limit(field));
        let _ = captured.write_str(value);
        // A string field is quoted in text, as tracing-subscriber writes it.
        self.text(field, captured, field.name() != "message");
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let mut captured = Captured::new(self.limit(field));
        let _ = write!(captured, "{value:?}");
        self.text(field, captured, false);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.plain(field, value.to_string());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.plain(field, value.to_string());
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.plain(field, value.to_string());
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.plain(field, value.to_string());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.plain(field, value.to_string());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity: serde_json writes them null.
        let plain = if self.json {
            serde_json::to_string(&value).unwrap_or_else(|_| "null".into())
        } else {
            value.to_string()
        };
        self.plain(field, plain);
    }
}

/// The first bytes of a value as it is formatted, and a count of the rest: a 25 MB
/// `Display` costs the time to format it, never the memory.
struct Captured {
    kept: String,
    limit: usize,
    /// Bytes formatted after `kept` was full.
    rest: usize,
}

impl Captured {
    fn new(limit: usize) -> Self {
        Captured {
            kept: String::new(),
            limit,
            rest: 0,
        }
    }

    /// The value redacted (as a sentence when `prose`: the message), escaped for the
    /// format, cut to `room` bytes as written, with a marker saying how many bytes were left
    /// out.
    fn finish(self, room: usize, json: bool, quoted: bool, prose: bool) -> String {
        let text = match (self.rest > 0, prose) {
            (true, _) => untrusted::redact_cut_urls(&self.kept, prose),
            (false, true) => untrusted::redact_urls_in_prose(&self.kept),
            (false, false) => untrusted::redact_urls(&self.kept),
        };
        let mut out = String::with_capacity(text.len().min(room) + 2);
        if quoted && !json {
            out.push('"');
        }
        let mut width = 0;
        let mut left_out = self.rest;
        for (at, c) in text.char_indices() {
            let before = out.len();
            let w = if json {
                out.push(c);
                json_width(c)
            } else {
                match c {
                    '"' if quoted => out.push_str("\\\""),
                    '\\' if quoted => out.push_str("\\\\"),
                    c => untrusted::push_escaped(&mut out, c),
                }
                out.len() - before
            };
            if width + w > room {
                out.truncate(before);
                left_out += text.len() - at;
                break;
            }
            width += w;
        }
        if quoted && !json {
            out.push('"');
        }
        if left_out > 0 {
            out.push_str(&format!("...[{left_out} more bytes cut]"));
        }
        out
    }
}

impl fmt::Write for Captured {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.rest > 0 {
            self.rest += s.len();
            return Ok(());
        }
        let mut take = s.len().min(self.limit - self.kept.len());
        while !s.is_char_boundary(take) {
            take -= 1;
        }
        self.kept.push_str(&s[..take]);
        self.rest += s.len() - take;
        Ok(())
    }
}

/// Bytes `c` takes in a JSON string once serde_json has escaped it.
fn json_width(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::prelude::*;

    use super::*;

    /// Collects what the layer writes.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Sink {
        type Writer = Sink;
        fn make_writer(&'a self) -> Sink {
            self.clone()
        }
    }

    /// The lines `log` writes in `format`.
    fn lines(format: LogFormat, log: impl FnOnce()) -> Vec<String> {
        let sink = Sink::default();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .event_format(Line { format })
                .with_writer(sink.clone()),
        );
        tracing::subscriber::with_default(subscriber, log);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_string).collect()
    }

    fn json(log: impl FnOnce()) -> serde_json::Value {
        let [line] = lines(LogFormat::Json, log).try_into().expect("one line");
        serde_json::from_str(&line).expect("a JSON line")
    }

    /// The shape tracing-subscriber's JSON formatter gave: timestamp, level, the fields
    /// flattened with their JSON types.
    #[test]
    fn json_lines_keep_their_shape_and_types() {
        let v = json(|| {
            tracing::warn!(
                target = "http://h:1/metrics",
                count = 3u64,
                delta = -2i64,
                ratio = 0.5,
                nan = f64::NAN,
                ok = true,
                debug = ?Some("x"),
                "the message {}",
                7
            )
        });
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["message"], "the message 7");
        assert_eq!(v["target"], "http://h:1/metrics");
        assert_eq!(v["count"], 3);
        assert_eq!(v["delta"], -2);
        assert_eq!(v["ratio"], 0.5);
        assert_eq!(v["nan"], serde_json::Value::Null);
        assert_eq!(v["ok"], true);
        assert_eq!(v["debug"], "Some(\"x\")");
        let ts = v["timestamp"].as_str().unwrap();
        assert!(
            ts.ends_with('Z') && ts.len() == "2026-01-01T00:00:00.000000Z".len(),
            "{ts}"
        );
    }

    #[test]
    fn text_lines_keep_their_shape() {
        let [line] = lines(LogFormat::Text, || {
            tracing::info!(region = "us-east-1", cost_errors = 3, error = %"bad\nthing", "cycle complete")
        })
        .try_into()
        .unwrap();
        let (_, rest) = line.split_once(' ').unwrap();
        assert_eq!(
            rest,
            " INFO cycle complete region=\"us-east-1\" cost_errors=3 error=bad\\nthing"
        );
    }

    /// The repro of the 1.9 GB log queue: a 25 MB metric name in a warning is a line of a
    /// few KiB, and formatting it held no copy of it.
    #[test]
    fn a_25_mb_field_is_cut_to_its_cap_with_a_marker() {
        let name = "n".repeat(25 << 20);
        let v = json(|| tracing::warn!(datum = %name, "invalid datum dropped"));
        let datum = v["datum"].as_str().unwrap();
        let marker = format!("...[{} more bytes cut]", (25 << 20) - MAX_FIELD_BYTES);
        assert_eq!(datum.len(), MAX_FIELD_BYTES + marker.len());
        assert!(datum.ends_with(&marker), "{}", &datum[datum.len() - 40..]);
        let [line] = lines(LogFormat::Text, || {
            tracing::warn!(name = name.as_str(), "x")
        })
        .try_into()
        .unwrap();
        assert!(line.len() < MAX_FIELD_BYTES + 200, "{}", line.len());
    }

    #[test]
    fn a_line_of_many_large_fields_stays_under_its_cap() {
        let big = "é".repeat(10_000);
        let [line] = lines(LogFormat::Json, || {
            tracing::warn!(
                a = %big, b = %big, c = %big, d = %big, e = %big, f = %big, g = %big,
                h = %big, i = %big, j = %big, k = %big, "{big}"
            )
        })
        .try_into()
        .unwrap();
        assert!(line.len() < MAX_LINE_BYTES + 1024, "{}", line.len());
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert!(v["k"].as_str().unwrap().starts_with("...["), "{}", v["k"]);
    }

    /// Escapes count: a field of control characters is cut by its escaped size, and the
    /// line stays one line in both formats.
    #[test]
    fn escapes_count_against_the_cap() {
        let controls = "\u{1}".repeat(MAX_FIELD_BYTES);
        let v = json(|| tracing::warn!(body = %controls, "x"));
        let body = v["body"].as_str().unwrap();
        let shown = body.split("...[").next().unwrap();
        assert_eq!(shown.len(), MAX_FIELD_BYTES / 6);
        let text = lines(
            LogFormat::Text,
            || tracing::warn!(body = %controls, quoted = "a\"b\\c\n", "m\r\u{1b}[2J"),
        );
        assert_eq!(text.len(), 1);
        assert!(text[0].contains(" m\\r\\u{1b}[2J "), "{}", text[0]);
        assert!(text[0].contains("quoted=\"a\\\"b\\\\c\\n\""), "{}", text[0]);
        assert!(text[0].len() < MAX_FIELD_BYTES + 200, "{}", text[0].len());
    }

    #[test]
    fn urls_in_any_field_lose_their_secrets() {
        let v = json(|| {
            tracing::warn!(
                target = "http://u:p#s3cret@h:9100/m?token=s3cret",
                error = %"GET http://h/x?key=s3cret failed",
                "scrape of http://v:s3cret@h/ failed"
            )
        });
        let line = v.to_string();
        assert!(!line.contains("s3cret"), "{line}");
        assert_eq!(v["target"], "http://***@h:9100/m?token=REDACTED");
        // A field is a value: its query runs to its end. The message is a sentence.
        assert_eq!(v["error"], "GET http://h/x?key=REDACTED");
        // A URL cut before its @ is hidden whole.
        let long = format!("http://u:{}@h/", "s3cret".repeat(2000));
        let v = json(|| tracing::warn!(target = %long, "x"));
        assert!(!v.to_string().contains("s3cret"), "{v}");
    }
}
