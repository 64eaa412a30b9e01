//! The Prometheus text exposition format (0.0.4) and OpenMetrics text, parsed into families
//! of samples. Pure: text in, families out.
//!
//! A line that does not parse is skipped and counted, never the whole scrape: one bad line
//! from an exporter must not cost every other series. The work is linear in the body
//! whatever it holds (a sample's labels are capped at [`MAX_LABELS`] before any are compared,
//! the families remembered at [`MAX_FAMILIES`]), and a caller can stop a parse between lines
//! when its time is up ([`parse_each_until`]). Written by hand because the crates
//! that do this either split label sets with a regex that breaks on an escaped `}` in a
//! value (`prometheus-parse`) or are LGPL and pull in a parser generator
//! (`openmetrics-parser`); `prometheus_client`'s parser is the oracle in the tests.

use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::hash_map::Entry;

/// Which text format the body is in, from the response's Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`: timestamps in integer milliseconds.
    Text,
    /// `application/openmetrics-text`: timestamps in seconds, `# EOF` at the end.
    OpenMetrics,
}

/// A metric family's type, as its `# TYPE` line says (untyped when there is none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    GaugeHistogram,
    Summary,
    Info,
    StateSet,
    Untyped,
}

impl Kind {
    fn parse(word: &str) -> Option<Kind> {
        Some(match word {
            "counter" => Kind::Counter,
            "gauge" => Kind::Gauge,
            "histogram" => Kind::Histogram,
            "gaugehistogram" => Kind::GaugeHistogram,
            "summary" => Kind::Summary,
            "info" => Kind::Info,
            "stateset" => Kind::StateSet,
            "untyped" | "unknown" => Kind::Untyped,
            _ => return None,
        })
    }

    /// The suffixes a family of this kind may add to its name for its samples.
    fn suffixes(self) -> &'static [&'static str] {
        match self {
            Kind::Counter => &["_total", "_created"],
            Kind::Histogram => &["_bucket", "_sum", "_count", "_created"],
            Kind::GaugeHistogram => &["_bucket", "_gsum", "_gcount"],
            Kind::Summary => &["_sum", "_count", "_created"],
            Kind::Info => &["_info"],
            Kind::Gauge | Kind::StateSet | Kind::Untyped => &[],
        }
    }
}

/// The most labels one sample may carry; a line with more is refused as malformed as soon as
/// its 129th label is read. CloudWatch takes at most 30 dimensions, real exporters write a
/// dozen, and without a cap a single line of 300,000 labels cost minutes of comparisons.
pub const MAX_LABELS: usize = 128;
/// The most metric families one scrape's parser remembers (to find a sample's family and
/// refuse a `# TYPE` after its samples). Past it, a `# TYPE`, `# HELP` or `# UNIT` line of a
/// new family is refused as malformed and a sample of a new family is read as untyped, so a
/// body of millions of distinct names costs a bounded table (about 3 MB), not 3 bytes of
/// table per byte of body.
pub const MAX_FAMILIES: usize = 100_000;
/// How often a parse asks its caller whether to stop: every this many bytes of lines...
const STOP_CHECK_BYTES: usize = 64 << 10;
/// ...or this many lines, whichever comes first (a line costs some work even when empty).
const STOP_CHECK_LINES: usize = 1024;

/// Every suffix any kind adds to its family's name.
const ALL_SUFFIXES: [&str; 8] = [
    "_total", "_created", "_bucket", "_sum", "_count", "_gsum", "_gcount", "_info",
];

/// One sample line. Names and labels borrow from the body: a 100k-series scrape is 220k
/// sample lines, and owning their strings cost about 45 MB at once.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    /// The sample's own name, suffix included (`http_requests_total`, `latency_bucket`).
    pub name: &'a str,
    /// In the order written.
    pub labels: Labels<'a>,
    pub value: f64,
    pub timestamp_ms: Option<i64>,
}

/// A sample's labels, in the order written; a value is owned only when it had escapes.
pub type Labels<'a> = Vec<(&'a str, Cow<'a, str>)>;

impl Sample<'_> {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_ref())
    }
}

/// A metric family: its name, type, help and samples in the order written.
#[derive(Debug, Clone, PartialEq)]
pub struct Family<'a> {
    pub name: &'a str,
    pub kind: Kind,
    pub help: Option<String>,
    pub unit: Option<String>,
    pub samples: Vec<Sample<'a>>,
}

/// What a body held: its families, and the lines that were skipped.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Scrape<'a> {
    pub families: Vec<Family<'a>>,
    pub skipped: Skipped,
}

/// What [`parse_each`] hands over, a line at a time.
#[derive(Debug, Clone, PartialEq)]
pub enum Line<'a> {
    /// A `# TYPE`, `# HELP` or `# UNIT` line: the family's type so far, and the help or
    /// unit it gave.
    Meta {
        family: &'a str,
        kind: Kind,
        help: Option<String>,
        unit: Option<String>,
    },
    /// A sample, with the family it belongs to and that family's type (final by now: a
    /// `# TYPE` after a family's samples is refused).
    Sample {
        family: &'a str,
        kind: Kind,
        sample: Sample<'a>,
    },
}

/// The lines of a body that were skipped.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Skipped {
    /// Lines skipped as malformed.
    pub malformed: usize,
    /// The first skipped line's number (from 1) and why, for the log.
    pub first_error: Option<(usize, String)>,
    /// Where the parse was stopped ([`parse_each_until`]): the number of the first line not
    /// read, and how many lines were not read from there on (blank ones included).
    pub stopped: Option<(usize, usize)>,
}

/// Parses a whole body into its families; never fails, counts what it skips. A family
/// whose lines are written in two groups is one family here, its samples in order.
pub fn parse(text: &str, format: Format) -> Scrape<'_> {
    let mut families: Vec<Family> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    let skipped = parse_each(text, format, |line| {
        let (name, kind) = match &line {
            Line::Meta { family, kind, .. } | Line::Sample { family, kind, .. } => (*family, *kind),
        };
        let i = *index.entry(name).or_insert_with(|| {
            families.push(Family {
                name,
                kind,
                help: None,
                unit: None,
                samples: Vec::new(),
            });
            families.len() - 1
        });
        let f = &mut families[i];
        match line {
            Line::Meta {
                kind, help, unit, ..
            } => {
                f.kind = kind;
                f.help = help.or(f.help.take());
                f.unit = unit.or(f.unit.take());
            }
            Line::Sample { sample, .. } => f.samples.push(sample),
        }
    });
    Scrape { families, skipped }
}

/// Parses a body and hands over each line as it is read, so that nothing of the body's
/// size is held: a 100k-series body's samples took 58 MB at once, and real exporters put
/// most of their series in a few families.
pub fn parse_each<'a>(text: &'a str, format: Format, each: impl FnMut(Line<'a>)) -> Skipped {
    run(text, format, None::<fn() -> bool>, each)
}

/// [`parse_each`] that asks `stop` every 64 KiB or 1024 lines whether to go on: when it
/// says stop, the parse ends there and the lines not read are counted. This is how a
/// scrape's parse keeps within its target's deadline.
pub fn parse_each_until<'a>(
    text: &'a str,
    format: Format,
    stop: impl FnMut() -> bool,
    each: impl FnMut(Line<'a>),
) -> Skipped {
    run(text, format, Some(stop), each)
}

fn run<'a>(
    text: &'a str,
    format: Format,
    mut stop: Option<impl FnMut() -> bool>,
    each: impl FnMut(Line<'a>),
) -> Skipped {
    let mut parser = Parser {
        format,
        each,
        known: HashMap::new(),
        eof: false,
    };
    // The body's lines (a last newline ends the last one) are counted before the parse, in
    // the time it has: once told to stop it does nothing more. Counting what was left after
    // the stop ran past the deadline (27 MB: 2 s of an unoptimised build's time).
    let lines_in_body = match stop {
        Some(_) => newlines(text.as_bytes()) + 1 - usize::from(text.ends_with('\n')),
        None => 0,
    };
    let mut skipped = Skipped::default();
    let (mut bytes, mut lines) = (0, 0);
    for (i, line) in text.split('\n').enumerate() {
        // Asked before a line is read, so a long line is never started late.
        bytes += line.len() + 1;
        lines += 1;
        if let Some(stop) = stop.as_mut()
            && (bytes >= STOP_CHECK_BYTES || lines >= STOP_CHECK_LINES)
        {
            (bytes, lines) = (0, 0);
            if stop() {
                // `i` lines were read.
                skipped.stopped = Some((i + 1, lines_in_body.saturating_sub(i)));
                break;
            }
        }
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Err(why) = parser.line(line) {
            skipped.malformed += 1;
            if skipped.first_error.is_none() {
                skipped.first_error = Some((i + 1, why.to_string()));
            }
        }
    }
    skipped
}

struct Parser<'a, F> {
    format: Format,
    /// Takes each line once it is parsed.
    each: F,
    /// Families named so far (at most [`MAX_FAMILIES`]), by name: their type, and whether
    /// they have had samples.
    known: HashMap<&'a str, Known>,
    /// OpenMetrics' `# EOF` was seen: nothing may follow it.
    eof: bool,
}

#[derive(Clone, Copy)]
struct Known {
    kind: Kind,
    sampled: bool,
}

impl<'a, F: FnMut(Line<'a>)> Parser<'a, F> {
    fn line(&mut self, line: &'a str) -> Result<(), &'static str> {
        let trimmed = line.trim_matches(|c| c == ' ' || c == '\t');
        if trimmed.is_empty() {
            return Ok(());
        }
        if self.eof {
            return Err("content after # EOF");
        }
        if let Some(comment) = trimmed.strip_prefix('#') {
            return self.comment(comment);
        }
        let sample = self.sample(trimmed)?;
        let (family, kind) = self.family_of(sample.name);
        (self.each)(Line::Sample {
            family,
            kind,
            sample,
        });
        Ok(())
    }

    /// `# HELP`, `# TYPE`, `# UNIT`, `# EOF`; any other comment is ignored.
    fn comment(&mut self, rest: &'a str) -> Result<(), &'static str> {
        let rest = rest.trim_start_matches([' ', '\t']);
        if rest == "EOF" && self.format == Format::OpenMetrics {
            self.eof = true;
            return Ok(());
        }
        let (keyword, rest) = split_token(rest);
        if !matches!(keyword, "HELP" | "TYPE" | "UNIT") {
            return Ok(());
        }
        let (name, rest) = split_token(rest.trim_start_matches([' ', '\t']));
        if !is_metric_name(name) {
            return Err("a # HELP, # TYPE or # UNIT line without a valid metric name");
        }
        let text = rest.trim_start_matches([' ', '\t']);
        let (mut help, mut unit) = (None, None);
        let kind = match keyword {
            "TYPE" => {
                let kind = Kind::parse(text.trim_end()).ok_or("an unknown metric type")?;
                let known = self.remember(name, kind)?;
                if known.sampled {
                    return Err("# TYPE after the family's samples");
                }
                known.kind = kind;
                kind
            }
            "HELP" => {
                help = Some(unescape_help(text));
                self.remember(name, Kind::Untyped)?.kind
            }
            _ => {
                unit = Some(text.trim_end().to_string());
                self.remember(name, Kind::Untyped)?.kind
            }
        };
        (self.each)(Line::Meta {
            family: name,
            kind,
            help,
            unit,
        });
        Ok(())
    }

    /// A family as remembered, first mentioned now with type `kind` when it is new; an
    /// error when it is new and [`MAX_FAMILIES`] are remembered already.
    fn remember(&mut self, name: &'a str, kind: Kind) -> Result<&mut Known, &'static str> {
        let full = self.known.len() >= MAX_FAMILIES;
        match self.known.entry(name) {
            Entry::Occupied(known) => Ok(known.into_mut()),
            Entry::Vacant(_) if full => Err("more than 100000 metric families in one scrape"),
            Entry::Vacant(new) => Ok(new.insert(Known {
                kind,
                sampled: false,
            })),
        }
    }

    /// The family a sample belongs to and its type: the declared family it names, with or
    /// without one of that family's suffixes; else an untyped family of its own name
    /// (remembered while there is room).
    fn family_of(&mut self, sample: &'a str) -> (&'a str, Kind) {
        if let Some(known) = self.known.get_mut(sample) {
            known.sampled = true;
            return (sample, known.kind);
        }
        // A lookup per known suffix, not a scan of every family: a body may hold 100k series.
        for suffix in ALL_SUFFIXES {
            let Some(base) = sample.strip_suffix(suffix) else {
                continue;
            };
            if let Some((&name, known)) = self.known.get_key_value(base)
                && known.kind.suffixes().contains(&suffix)
            {
                let kind = known.kind;
                if let Some(known) = self.known.get_mut(name) {
                    known.sampled = true;
                }
                return (name, kind);
            }
        }
        if let Ok(known) = self.remember(sample, Kind::Untyped) {
            known.sampled = true;
        }
        (sample, Kind::Untyped)
    }

    /// `name{label="value",...} value [timestamp] [# exemplar]`.
    fn sample(&self, line: &'a str) -> Result<Sample<'a>, &'static str> {
        let name_end = line
            .find(['{', ' ', '\t'])
            .ok_or("a sample without a value")?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err("an invalid metric name");
        }
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(after) = rest.strip_prefix('{') {
            let (parsed, after) = parse_labels(after)?;
            labels = parsed;
            rest = after;
        }
        if !rest.starts_with([' ', '\t']) {
            return Err("no blank between the labels and the value");
        }
        // An OpenMetrics exemplar follows " # "; it is not the sample's business here.
        let rest = match rest.find(" # ") {
            Some(at) if self.format == Format::OpenMetrics => &rest[..at],
            _ => rest,
        };
        let mut tokens = rest.split([' ', '\t']).filter(|t| !t.is_empty());
        let value = parse_value(tokens.next().ok_or("a sample without a value")?)?;
        let timestamp_ms = match tokens.next() {
            None => None,
            Some(t) => Some(self.timestamp(t)?),
        };
        if tokens.next().is_some() {
            return Err("more than a value and a timestamp after the labels");
        }
        Ok(Sample {
            name,
            labels,
            value,
            timestamp_ms,
        })
    }

    fn timestamp(&self, token: &str) -> Result<i64, &'static str> {
        match self.format {
            Format::Text => token
                .parse()
                .map_err(|_| "a timestamp that is not whole milliseconds"),
            Format::OpenMetrics => token
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite())
                .map(|s| (s * 1000.0).round() as i64)
                .ok_or("a timestamp that is not a number of seconds"),
        }
    }
}

/// Labels after the `{`, up to and including the `}`: the labels and what follows. Linear in
/// the line: at most [`MAX_LABELS`] are read, and they are checked for a name given twice
/// once, by sorting.
fn parse_labels(mut s: &str) -> Result<(Labels<'_>, &str), &'static str> {
    let mut labels: Labels = Vec::new();
    loop {
        s = s.trim_start_matches([' ', '\t']);
        if let Some(after) = s.strip_prefix('}') {
            if has_a_name_twice(&labels) {
                return Err("a label given twice");
            }
            return Ok((labels, after));
        }
        if labels.len() == MAX_LABELS {
            return Err("more than 128 labels on one sample");
        }
        let eq = s.find('=').ok_or("a label without '='")?;
        let name = s[..eq].trim_end_matches([' ', '\t']);
        if !is_label_name(name) {
            return Err("an invalid label name");
        }
        s = s[eq + 1..].trim_start_matches([' ', '\t']);
        s = s.strip_prefix('"').ok_or("a label value without quotes")?;
        let (value, end) = label_value(s)?;
        labels.push((name, value));
        s = s[end + 1..].trim_start_matches([' ', '\t']);
        if let Some(after) = s.strip_prefix(',') {
            s = after;
        } else if !s.starts_with('}') {
            return Err("labels not separated by ','");
        }
    }
}

/// How many `\n` bytes `bytes` holds, eight at a time: this runs after a deadline, on up to
/// 32 MiB, and must cost little in any build (a loop over bytes or matches took a second of
/// an unoptimised build's time past the deadline).
fn newlines(bytes: &[u8]) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x7f; 8]);
    const NEWLINES: u64 = u64::from_ne_bytes([b'\n'; 8]);
    let words = bytes.chunks_exact(8);
    let tail = words.remainder().iter().filter(|b| **b == b'\n').count();
    words.fold(tail, |n, word| {
        let mut w = [0; 8];
        w.copy_from_slice(word);
        // Each byte of `x` is zero where a newline was; `zero` has the top bit of exactly
        // those bytes set (no borrow crosses bytes, unlike the usual has-zero test).
        let x = u64::from_ne_bytes(w) ^ NEWLINES;
        let zero = !(((x & ONES).wrapping_add(ONES)) | x | ONES);
        n + zero.count_ones() as usize
    })
}

/// Whether two labels share a name: compared pairwise when there are a few (as nearly always),
/// by sorting their names when there are more.
fn has_a_name_twice(labels: &Labels) -> bool {
    if labels.len() <= 8 {
        return labels
            .iter()
            .enumerate()
            .any(|(i, (k, _))| labels[..i].iter().any(|(j, _)| j == k));
    }
    let mut names: Vec<&str> = labels.iter().map(|(k, _)| *k).collect();
    names.sort_unstable();
    names.windows(2).any(|w| w[0] == w[1])
}

/// A quoted label value after its opening quote: the value, unescaped, and where its closing
/// quote is. Borrowed unless it has escapes.
fn label_value(s: &str) -> Result<(Cow<'_, str>, usize), &'static str> {
    let Some(first) = s.find(['"', '\\']) else {
        return Err("a label value without its closing quote");
    };
    if s.as_bytes()[first] == b'"' {
        return Ok((Cow::Borrowed(&s[..first]), first));
    }
    let mut value = String::from(&s[..first]);
    let mut chars = s[first..].char_indices().map(|(i, c)| (i + first, c));
    let end = loop {
        match chars.next() {
            None => return Err("a label value without its closing quote"),
            Some((i, '"')) => break i,
            Some((_, '\\')) => match chars.next() {
                Some((_, '\\')) => value.push('\\'),
                Some((_, '"')) => value.push('"'),
                Some((_, 'n')) => value.push('\n'),
                _ => return Err("an unknown escape in a label value"),
            },
            Some((_, c)) => value.push(c),
        }
    };
    Ok((Cow::Owned(value), end))
}

/// A float as Go and Python read it: decimal or exponent forms, NaN, +Inf, -Inf.
fn parse_value(token: &str) -> Result<f64, &'static str> {
    let lower = token.to_ascii_lowercase();
    let body = lower.trim_start_matches(['+', '-']);
    // Rust also reads "infinity"; the exposition format writes +Inf.
    if body.starts_with("infinity") || body.contains('_') {
        return Err("a value that is not a number");
    }
    token
        .parse::<f64>()
        .map_err(|_| "a value that is not a number")
}

fn split_token(s: &str) -> (&str, &str) {
    match s.find([' ', '\t']) {
        Some(at) => (&s[..at], &s[at..]),
        None => (s, ""),
    }
}

/// `\\` and `\n` are the only escapes in help text; anything else stays as written.
fn unescape_help(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
fn is_metric_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`; DROP_LABELS is checked by the same rule.
pub(super) fn is_label_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(body: &str) -> Scrape<'_> {
        parse(body, Format::Text)
    }

    /// Each family's name, type and number of samples.
    fn shape<'a>(s: &Scrape<'a>) -> Vec<(&'a str, Kind, usize)> {
        s.families
            .iter()
            .map(|f| (f.name, f.kind, f.samples.len()))
            .collect()
    }

    fn owned(labels: &Labels) -> Vec<(String, String)> {
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_documented_example_parses_whole() {
        // From the exposition format's documentation.
        let s = text(
            r#"# HELP http_requests_total The total number of HTTP requests.
# TYPE http_requests_total counter
http_requests_total{method="post",code="200"} 1027 1395066363000
http_requests_total{method="post",code="400"}    3 1395066363000

# Escaping in label values:
msdos_file_access_time_seconds{path="C:\\DIR\\FILE.TXT",error="Cannot find file:\n\"FILE.TXT\""} 1.458255915e9

# Minimalistic line:
metric_without_timestamp_and_labels 12.47

# A weird metric from before the epoch:
something_weird{problem="division by zero"} +Inf -3982045

# A histogram, which has a pretty complex representation in the text format:
# HELP http_request_duration_seconds A histogram of the request duration.
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{le="0.05"} 24054
http_request_duration_seconds_bucket{le="0.1"} 33444
http_request_duration_seconds_bucket{le="+Inf"} 144320
http_request_duration_seconds_sum 53423
http_request_duration_seconds_count 144320

# Finally a summary, which has a complex representation, too:
# HELP rpc_duration_seconds A summary of the RPC duration in seconds.
# TYPE rpc_duration_seconds summary
rpc_duration_seconds{quantile="0.01"} 3102
rpc_duration_seconds{quantile="0.99"} 76656
rpc_duration_seconds_sum 1.7560473e+07
rpc_duration_seconds_count 2693
"#,
        );
        assert_eq!(s.skipped.malformed, 0, "{:?}", s.skipped.first_error);
        let names = shape(&s);
        assert_eq!(
            names,
            [
                ("http_requests_total", Kind::Counter, 2),
                ("msdos_file_access_time_seconds", Kind::Untyped, 1),
                ("metric_without_timestamp_and_labels", Kind::Untyped, 1),
                ("something_weird", Kind::Untyped, 1),
                ("http_request_duration_seconds", Kind::Histogram, 5),
                ("rpc_duration_seconds", Kind::Summary, 4),
            ]
        );
        let first = &s.families[0].samples[0];
        assert_eq!(
            owned(&first.labels),
            labels(&[("method", "post"), ("code", "200")])
        );
        assert_eq!(
            (first.value, first.timestamp_ms),
            (1027.0, Some(1395066363000))
        );
        assert_eq!(
            s.families[0].help.as_deref(),
            Some("The total number of HTTP requests.")
        );
        let msdos = &s.families[1].samples[0];
        assert_eq!(msdos.label("path"), Some(r"C:\DIR\FILE.TXT"));
        assert_eq!(
            msdos.label("error"),
            Some("Cannot find file:\n\"FILE.TXT\"")
        );
        let weird = &s.families[3].samples[0];
        assert_eq!(
            (weird.value, weird.timestamp_ms),
            (f64::INFINITY, Some(-3982045))
        );
        assert_eq!(s.families[4].samples[2].label("le"), Some("+Inf"));
    }

    #[test]
    fn lines_are_handed_over_as_read_with_their_familys_type() {
        let body = "# TYPE a counter\na_total 1\n# HELP b gauge b\nb 3\nbad line\n# TYPE a counter\na_created 5\n";
        let mut seen: Vec<String> = Vec::new();
        let skipped = parse_each(body, Format::Text, |line| {
            seen.push(match line {
                Line::Meta {
                    family, kind, help, ..
                } => format!("meta {family} {kind:?} {help:?}"),
                Line::Sample {
                    family,
                    kind,
                    sample,
                } => format!("{} of {family} {kind:?} = {}", sample.name, sample.value),
            })
        });
        assert_eq!(
            seen,
            [
                "meta a Counter None",
                "a_total of a Counter = 1",
                "meta b Untyped Some(\"gauge b\")",
                "b of b Untyped = 3",
                "a_created of a Counter = 5",
            ],
            "a TYPE after a's samples is refused and changes nothing"
        );
        assert_eq!(
            (skipped.malformed, skipped.first_error.map(|e| e.0)),
            (2, Some(5))
        );
    }

    #[test]
    fn a_family_written_in_two_groups_is_parsed_as_one() {
        let body = "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nother 5\nh_bucket{le=\"+Inf\"} 2\nh_count 2\n";
        assert_eq!(
            shape(&text(body)),
            [("h", Kind::Histogram, 3), ("other", Kind::Untyped, 1)]
        );
    }

    #[test]
    fn nan_and_infinities_are_values() {
        let s = text("a NaN\nb +Inf\nc -Inf\nd Inf\ne 1e-3\nf -0\n");
        let values: Vec<f64> = s.families.iter().map(|f| f.samples[0].value).collect();
        assert!(values[0].is_nan());
        assert_eq!(
            values[1..],
            [f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, 0.001, -0.0]
        );
        assert_eq!(s.skipped.malformed, 0);
        // Go and Python read neither spelling; Rust would read both.
        let s = text("g Infinity\nh -infinity\ni 1_000\n");
        assert_eq!((s.families.len(), s.skipped.malformed), (0, 3));
    }

    #[test]
    fn a_malformed_line_is_skipped_and_counted_never_the_rest() {
        let s = text(
            "good 1\n{no_name=\"x\"} 1\nbad{a=\"unterminated} 1\nalso_good 2\nx{a=\"1\",a=\"2\"} 3\nnot_a_number abc\nx{a=\"\\q\"} 1\ny 1 2 3\n",
        );
        let names: Vec<&str> = s.families.iter().map(|f| f.name).collect();
        assert_eq!(names, ["good", "also_good"]);
        assert_eq!(s.skipped.malformed, 6);
        assert_eq!(s.skipped.first_error.as_ref().map(|e| e.0), Some(2));
    }

    #[test]
    fn blanks_tabs_trailing_commas_and_crlf_are_tolerated() {
        let s = text("  \t\nm{a=\"1\" , b=\"2\",}\t7\r\n\n   # just a comment\n");
        assert_eq!(s.skipped.malformed, 0, "{:?}", s.skipped.first_error);
        let m = &s.families[0].samples[0];
        assert_eq!((m.labels.len(), m.value), (2, 7.0));
    }

    #[test]
    fn an_escaped_brace_or_quote_in_a_value_does_not_end_the_labels() {
        let s = text(r#"m{path="/a}b",q="say \"hi\""} 1"#);
        assert_eq!(s.skipped.malformed, 0);
        let m = &s.families[0].samples[0];
        assert_eq!(m.label("path"), Some("/a}b"));
        assert_eq!(m.label("q"), Some("say \"hi\""));
    }

    #[test]
    fn samples_without_a_type_are_untyped_families_of_their_own() {
        let s = text("x_bucket{le=\"1\"} 1\nx_sum 2\n");
        let kinds: Vec<(&str, Kind)> = s.families.iter().map(|f| (f.name, f.kind)).collect();
        assert_eq!(
            kinds,
            [("x_bucket", Kind::Untyped), ("x_sum", Kind::Untyped)]
        );
    }

    #[test]
    fn a_type_after_its_samples_is_skipped() {
        let s = text("m 1\n# TYPE m gauge\nm 2\n");
        assert_eq!(s.skipped.malformed, 1);
        assert_eq!(s.families[0].kind, Kind::Untyped);
        assert_eq!(s.families[0].samples.len(), 2);
    }

    #[test]
    fn help_text_unescapes_backslash_and_newline_only() {
        let s = text("# HELP m a\\\\b\\nc\\d\nm 1\n");
        assert_eq!(s.families[0].help.as_deref(), Some("a\\b\nc\\d"));
    }

    #[test]
    fn openmetrics_counters_units_exemplars_created_and_eof() {
        let s = parse(
            "# TYPE requests counter\n# UNIT requests requests\n# HELP requests Requests.\nrequests_total{path=\"/\"} 5 1700000000.5 # {trace_id=\"abc\"} 1 1700000000\nrequests_created{path=\"/\"} 1699999000\n# TYPE info_thing info\ninfo_thing_info{version=\"1\"} 1\n# EOF\n",
            Format::OpenMetrics,
        );
        assert_eq!(s.skipped.malformed, 0, "{:?}", s.skipped.first_error);
        let requests = &s.families[0];
        assert_eq!(
            (requests.kind, requests.unit.as_deref()),
            (Kind::Counter, Some("requests"))
        );
        assert_eq!(requests.samples.len(), 2);
        assert_eq!(requests.samples[0].timestamp_ms, Some(1_700_000_000_500));
        assert_eq!(requests.samples[1].name, "requests_created");
        assert_eq!(s.families[1].samples[0].name, "info_thing_info");
    }

    #[test]
    fn openmetrics_gaugehistograms_and_statesets_are_families_of_their_type() {
        // The OpenMetrics specification's own shapes: a gauge histogram's _bucket, _gsum and
        // _gcount, and a stateset's one sample a state.
        let s = parse(
            "# TYPE queue_wait gaugehistogram\nqueue_wait_bucket{le=\"1\"} 2\nqueue_wait_bucket{le=\"+Inf\"} 3\nqueue_wait_gsum 4.5\nqueue_wait_gcount 3\n# TYPE feature stateset\nfeature{feature=\"a\"} 1\nfeature{feature=\"b\"} 0\n# EOF\n",
            Format::OpenMetrics,
        );
        assert_eq!(s.skipped.malformed, 0, "{:?}", s.skipped.first_error);
        let kinds: Vec<_> = s
            .families
            .iter()
            .map(|f| (f.name, f.kind, f.samples.len()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("queue_wait", Kind::GaugeHistogram, 4),
                ("feature", Kind::StateSet, 2)
            ]
        );
    }

    #[test]
    fn nothing_may_follow_openmetrics_eof() {
        let s = parse("a 1\n# EOF\nb 2\n", Format::OpenMetrics);
        assert_eq!((s.families.len(), s.skipped.malformed), (1, 1));
        // In 0.0.4 text, "# EOF" is only a comment.
        let s = text("a 1\n# EOF\nb 2\n");
        assert_eq!((s.families.len(), s.skipped.malformed), (2, 0));
    }

    #[test]
    fn names_follow_the_grammar() {
        assert!(is_metric_name("a:b_c1"));
        assert!(is_metric_name("_x"));
        assert!(!is_metric_name("1x"));
        assert!(!is_metric_name(""));
        assert!(!is_metric_name("a-b"));
        assert!(is_label_name("le"));
        assert!(!is_label_name("a:b"));
        assert!(!is_label_name("9"));
    }

    /// A line of `n` labels, the shape of the freeze: `m{l0="v",l1="v",...} 1`.
    fn label_bomb(n: usize) -> String {
        let mut line = String::with_capacity(n * 12 + 8);
        line.push_str("m{");
        for i in 0..n {
            line.push_str(&format!("l{i}=\"v\","));
        }
        line.push_str("} 1\n");
        line
    }

    #[test]
    fn a_line_of_300k_labels_is_refused_in_well_under_a_second_and_the_rest_is_read() {
        let body = format!("before 1\n{}after 2\n", label_bomb(300_000));
        // CPU time, not the wall clock: a busy machine must not fail it.
        let took = crate::complexity::best_cpu_time(|| drop(text(&body)));
        assert!(took < 0.3, "{took:.3} s");
        let s = text(&body);
        let names: Vec<&str> = s.families.iter().map(|f| f.name).collect();
        assert_eq!(names, ["before", "after"]);
        assert_eq!(s.skipped.malformed, 1);
        assert_eq!(
            s.skipped.first_error,
            Some((2, "more than 128 labels on one sample".to_string()))
        );
    }

    #[test]
    fn a_sample_keeps_up_to_128_labels_and_a_name_twice_is_found_among_many() {
        let most = label_bomb(MAX_LABELS);
        let s = text(&most);
        assert_eq!(s.skipped.malformed, 0, "{:?}", s.skipped.first_error);
        assert_eq!(s.families[0].samples[0].labels.len(), 128);
        let over = label_bomb(MAX_LABELS + 1);
        let s = text(&over);
        assert_eq!((s.families.len(), s.skipped.malformed), (0, 1));
        // The duplicate is the last of 100 labels: found by the sorted check.
        let twice = label_bomb(99).replace("} 1", "l5=\"w\"} 1");
        let s = text(&twice);
        assert_eq!(
            s.skipped.first_error,
            Some((1, "a label given twice".to_string()))
        );
    }

    /// Complexity guards ([`crate::complexity`]): each shape of body at size n and 4n.
    #[test]
    fn parsing_time_grows_linearly_with_the_body_whatever_its_shape() {
        type Shape = (&'static str, fn(usize) -> String);
        let shapes: [Shape; 8] = [
            ("one line of n labels", |n| label_bomb(n * 8)),
            ("n lines of 128 labels", |n| {
                label_bomb(MAX_LABELS).repeat(n / 16)
            }),
            ("n lines of 129 labels, each refused", |n| {
                label_bomb(MAX_LABELS + 1).repeat(n / 16)
            }),
            ("n distinct families", |n| {
                (0..n * 4).map(|i| format!("f{i} 1\n")).collect()
            }),
            ("n typed families", |n| {
                (0..n * 2)
                    .map(|i| format!("# TYPE h{i} histogram\nh{i}_bucket{{le=\"1\"}} 1\n"))
                    .collect()
            }),
            ("one escaped label value of n characters", |n| {
                format!("m{{a=\"{}\"}} 1\n", "\\\"x".repeat(n * 64))
            }),
            ("one name of n characters", |n| {
                format!("{} 1\n", "a".repeat(n * 256))
            }),
            ("n lines of the same series", |n| "d 1\n".repeat(n * 4)),
        ];
        for (what, body) in shapes {
            let n = 1_000;
            let (small, large) = (body(n), body(4 * n));
            for format in [Format::Text, Format::OpenMetrics] {
                crate::complexity::assert_linear(
                    &format!("{what} ({format:?})"),
                    small.as_str(),
                    large.as_str(),
                    |body| drop(parse(body, format)),
                );
            }
        }
    }

    #[test]
    fn newlines_are_counted_a_word_at_a_time_exactly() {
        for text in [
            "",
            "\n",
            "a\nb",
            "\n\n\n\n\n\n\n\n\n",
            "0123456\n89\n\u{8a}\x0b\n",
        ] {
            let slow = text.bytes().filter(|b| *b == b'\n').count();
            assert_eq!(newlines(text.as_bytes()), slow, "{text:?}");
        }
        // Every byte value in every place of a word: 16 newlines in 4096 bytes, then 0, 1, 2.
        let all: Vec<u8> = (0..=255).cycle().take(4099).collect();
        assert_eq!(newlines(&all), 16);
        assert_eq!(newlines(&all[1..]), 16);
    }

    #[test]
    fn a_parse_stops_when_asked_and_counts_what_it_did_not_read() {
        let body: String = (0..5000).map(|i| format!("m{{i=\"{i}\"}} 1\n\n")).collect();
        let (samples, skipped) = stopped_at_the_second_ask(&body);
        // Asked every 1024 lines (a sample and a blank line each): the first time lets it
        // on, the second (before line 2048) stops it.
        assert_eq!(samples, 1024);
        // Not read: the blank line 2048 and the 3976 samples left, each with its blank line.
        assert_eq!(skipped.stopped, Some((2048, 1 + 2 * (5000 - 1024))));
        assert_eq!(skipped.malformed, 0);
        // A parse never asked to stop reads everything.
        assert_eq!(parse_each(&body, Format::Text, |_| {}).stopped, None);

        // Long lines: asked once 64 KiB have been read, newlines included. Each line here is
        // 64 KiB with its newline, so the parse is asked before each line and stops at the
        // second of three.
        let line = format!("m{{l=\"{}\"}} 1\n", "x".repeat((64 << 10) - 10));
        assert_eq!(line.len(), 64 << 10);
        let (samples, skipped) = stopped_at_the_second_ask(&line.repeat(3));
        assert_eq!((samples, skipped.stopped), (1, Some((2, 2))));
    }

    /// A text parse told to stop the second time it asks: the samples it read, and what it
    /// says it skipped.
    fn stopped_at_the_second_ask(body: &str) -> (usize, Skipped) {
        let (mut asked, mut samples) = (0, 0);
        let skipped = parse_each_until(
            body,
            Format::Text,
            || {
                asked += 1;
                asked == 2
            },
            |line| samples += usize::from(matches!(line, Line::Sample { .. })),
        );
        (samples, skipped)
    }

    #[test]
    fn exemplars_are_openmetrics_only() {
        let line = "requests_total 5 # {trace_id=\"abc\"} 1\n";
        assert_eq!(parse(line, Format::OpenMetrics).skipped.malformed, 0);
        // In 0.0.4 text the "#" stands where a timestamp would.
        let s = text(line);
        assert_eq!(s.skipped.malformed, 1);
        assert_eq!(
            s.skipped.first_error,
            Some((1, "a timestamp that is not whole milliseconds".to_string()))
        );
    }

    #[test]
    fn past_100000_families_a_new_type_line_is_refused_and_new_samples_are_untyped() {
        let mut body: String = (0..MAX_FAMILIES).map(|i| format!("f{i} 1\n")).collect();
        body.push_str("# TYPE late counter\nlate_total 5\nf7 2\n");
        let mut kinds = Vec::new();
        let skipped = parse_each(&body, Format::Text, |line| {
            if let Line::Sample {
                family,
                kind,
                sample,
            } = line
                && sample.value != 1.0
            {
                kinds.push((family, kind));
            }
        });
        assert_eq!(
            skipped.first_error,
            Some((
                MAX_FAMILIES + 1,
                "more than 100000 metric families in one scrape".to_string()
            ))
        );
        assert_eq!(skipped.malformed, 1);
        assert_eq!(
            kinds,
            [("late_total", Kind::Untyped), ("f7", Kind::Untyped)]
        );
    }

    /// Where `make oracle` (run by `make test` before the unit tests) leaves real exporter
    /// text and prometheus_client's reading of it: tests/oracle/capture.py. `ORACLE_DIR`
    /// points elsewhere (`make mutants` builds a copy of the tree, without `target/`).
    fn oracle_dir() -> String {
        std::env::var("ORACLE_DIR")
            .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target/oracle").into())
    }

    /// A sample as compared: name, sorted labels, value bits (so NaN equals NaN), and its
    /// family's type as prometheus_client names it.
    type Key = (String, Vec<(String, String)>, u64, String);

    fn sample_set(
        samples: impl Iterator<Item = (String, Vec<(String, String)>, f64, String)>,
    ) -> Vec<Key> {
        let mut out: Vec<_> = samples
            .map(|(name, mut labels, value, kind)| {
                labels.sort();
                let bits = if value.is_nan() {
                    f64::NAN.to_bits()
                } else {
                    value.to_bits()
                };
                (name, labels, bits, kind)
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn the_parser_agrees_with_prometheus_client_on_real_exporters() {
        let oracle_dir = oracle_dir();
        for exporter in ["node_exporter", "prometheus"] {
            let read = |ext: &str| {
                std::fs::read_to_string(format!("{oracle_dir}/{exporter}.{ext}")).unwrap_or_else(|e| {
                    panic!(
                        "{oracle_dir}/{exporter}.{ext}: {e}. Run `make oracle` first (`make test` does)"
                    )
                })
            };
            let body = read("txt");
            type Oracle = (
                String,
                std::collections::BTreeMap<String, String>,
                String,
                String,
            );
            let oracle: Vec<Oracle> = serde_json::from_str(&read("json")).unwrap_or_else(|e| {
                panic!("{oracle_dir}/{exporter}.json: {e}. Run `make oracle` again")
            });
            let theirs = sample_set(oracle.into_iter().map(|(name, labels, value, kind)| {
                let value = parse_value(&value).expect("oracle value");
                (name, labels.into_iter().collect(), value, kind)
            }));
            let scrape = parse(&body, Format::Text);
            assert_eq!(
                scrape.skipped.malformed, 0,
                "{exporter}: {:?}",
                scrape.skipped.first_error
            );
            let ours = sample_set(
                scrape
                    .families
                    .into_iter()
                    .flat_map(|f| {
                        // prometheus_client's names for the types of the text format.
                        let kind = match f.kind {
                            Kind::Counter => "counter",
                            Kind::Gauge => "gauge",
                            Kind::Histogram => "histogram",
                            Kind::Summary => "summary",
                            _ => "unknown",
                        };
                        f.samples.into_iter().map(move |s| (s, kind))
                    })
                    .map(|(s, kind)| {
                        (
                            s.name.to_string(),
                            owned(&s.labels),
                            s.value,
                            kind.to_string(),
                        )
                    }),
            );
            assert!(
                theirs.len() > 100,
                "{exporter}: only {} samples",
                theirs.len()
            );
            assert_eq!(ours.len(), theirs.len(), "{exporter}");
            for (a, b) in ours.iter().zip(&theirs) {
                assert_eq!(a, b, "{exporter}");
            }
        }
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        /// Renders a sample as an exporter would write it, escaping label values.
        fn render(name: &str, labels: &[(String, String)], value: f64) -> String {
            let mut out = name.to_string();
            if !labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let v = v
                        .replace('\\', "\\\\")
                        .replace('"', "\\\"")
                        .replace('\n', "\\n");
                    out.push_str(&format!("{k}=\"{v}\""));
                }
                out.push('}');
            }
            let value = if value.is_nan() {
                "NaN".to_string()
            } else if value.is_infinite() {
                if value > 0.0 { "+Inf" } else { "-Inf" }.to_string()
            } else {
                format!("{value:e}")
            };
            format!("{out} {value}\n")
        }

        fn value() -> impl Strategy<Value = f64> {
            prop_oneof![
                any::<f64>(),
                Just(f64::NAN),
                Just(f64::INFINITY),
                Just(f64::NEG_INFINITY),
                Just(0.0),
            ]
        }

        proptest! {
            #[test]
            fn any_sample_an_exporter_writes_parses_back_to_itself(
                name in "[a-zA-Z_:][a-zA-Z0-9_:]{0,30}",
                labels in proptest::collection::btree_map("[a-zA-Z_][a-zA-Z0-9_]{0,12}", any::<String>(), 0..6),
                value in value(),
            ) {
                let labels: Vec<(String, String)> = labels.into_iter().collect();
                let body = render(&name, &labels, value);
                let scrape = parse(&body, Format::Text);
                prop_assert_eq!(scrape.skipped.malformed, 0, "{:?}", scrape.skipped.first_error);
                let sample = &scrape.families[0].samples[0];
                prop_assert_eq!(sample.name, name.as_str());
                prop_assert_eq!(&super::owned(&sample.labels), &labels);
                prop_assert!(sample.value == value || (sample.value.is_nan() && value.is_nan()));
            }

            #[test]
            fn arbitrary_text_never_panics(text in any::<String>()) {
                for format in [Format::Text, Format::OpenMetrics] {
                    let scrape = parse(&text, format);
                    let samples: usize = scrape.families.iter().map(|f| f.samples.len()).sum();
                    prop_assert!(samples + scrape.skipped.malformed <= text.split('\n').count());
                }
            }

            /// Exactly: each sample line an exporter writes is one sample, each broken line
            /// one malformed, and blank lines and plain comments neither, in both formats.
            #[test]
            fn every_line_is_a_sample_or_counted_as_malformed(pieces in proptest::collection::vec(piece(), 0..40)) {
                let text: String = pieces.iter().map(|(_, line)| format!("{line}\n")).collect();
                let want = |k: Piece| pieces.iter().filter(|(p, _)| *p == k).count();
                for (format, body) in [(Format::Text, text.clone()), (Format::OpenMetrics, format!("{text}# EOF\n"))] {
                    let scrape = parse(&body, format);
                    let samples: usize = scrape.families.iter().map(|f| f.samples.len()).sum();
                    prop_assert_eq!(
                        (samples, scrape.skipped.malformed),
                        (want(Piece::Sample), want(Piece::Broken)),
                        "{:?}: {:?}", format, scrape.skipped.first_error
                    );
                }
            }
        }

        #[derive(Debug, Clone, Copy, PartialEq)]
        enum Piece {
            Sample,
            Broken,
            Comment,
            Blank,
        }

        /// A line of a body, and what it is.
        fn piece() -> impl Strategy<Value = (Piece, String)> {
            prop_oneof![
                (
                    "[a-zA-Z_:][a-zA-Z0-9_:]{0,20}",
                    proptest::collection::btree_map(
                        "[a-zA-Z_][a-zA-Z0-9_]{0,8}",
                        any::<String>(),
                        0..4
                    ),
                    value(),
                )
                    .prop_map(|(name, labels, value)| {
                        let labels: Vec<(String, String)> = labels.into_iter().collect();
                        (
                            Piece::Sample,
                            render(&name, &labels, value).trim_end().to_string(),
                        )
                    }),
                // No metric name starts with a digit.
                "[0-9][^\n]{0,40}".prop_map(|t| (Piece::Broken, t)),
                "[^\n]{0,40}".prop_map(|t| (Piece::Comment, format!("# note {t}"))),
                "[ \t]{0,3}".prop_map(|t| (Piece::Blank, t)),
            ]
        }
    }
}
