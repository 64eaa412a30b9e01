//! Text from outside the agent made safe to print: what plugins answer and what the
//! environment holds.
//!
//! A plugin's error message, currency or version reaches logs and `/metrics`. Raw, a newline
//! in it forges a log line in `LOG_FORMAT=text`, an escape sequence drives the reader's
//! terminal, and a megabyte of it is a megabyte of logs per query. So every remote string is
//! passed through [`remote`] once, where it enters the agent: control characters escaped, and
//! cut to [`MAX_REMOTE_CHARS`] with a marker that says how much was cut. Configuration values
//! are echoed in error messages, and scrape URLs are logged and published as a dimension;
//! [`redact_urls`] keeps a URL's password and query values out of all of them. The log
//! itself ([`crate::logging`]) escapes, redacts and cuts every field again, whatever its
//! caller did.

use std::fmt::Write as _;

/// The longest remote string printed, in characters; docs/configuration.md states it.
pub const MAX_REMOTE_CHARS: usize = 256;

/// `text` escaped and cut to [`MAX_REMOTE_CHARS`].
pub fn remote(text: &str) -> String {
    cut(&escape(text), MAX_REMOTE_CHARS)
}

/// Control characters (C0, DEL, C1) and the Unicode line and bidirectional-override marks
/// written as `\n`, `\t` or `\u{1b}`, so the text stays on one line and cannot move the
/// cursor or reorder what a reader sees. A backslash is doubled, so an escape in the output
/// always came from here.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c => push_escaped(&mut out, c),
        }
    }
    out
}

/// `text` with its control characters and invisible marks escaped as [`escape`] writes
/// them, its backslashes left single: for our own sentences that quote outside text (already
/// escaped, or Debug-quoted), which must stay on one line.
pub fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        push_escaped(&mut out, c);
    }
    out
}

/// Writes `c` as [`escape`] does, except a backslash, which stays single: for text that may
/// have been escaped already (the log escapes every field again, so a caller's escape must
/// not double).
pub fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if c.is_control() || is_invisible_mark(c) => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
        c => out.push(c),
    }
}

/// Line and paragraph separators, and the marks that reorder text.
fn is_invisible_mark(c: char) -> bool {
    matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` cut to `max` characters, with a marker saying how many more there were.
pub fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((at, _)) => {
            let rest = text[at..].chars().count();
            format!("{}...[{rest} more characters cut]", &text[..at])
        }
    }
}

/// An error and its causes, `a: b: c` (hyper's own text says only "client error (Connect)"),
/// made safe like any remote text: what a peer sent can appear in it.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    remote(&text)
}

/// What a query or fragment value is written as.
pub const REDACTED: &str = "REDACTED";

/// `text` with the secrets of every URL in it hidden, as the agent prints URLs anywhere (an
/// error, a dimension, `/metrics`, `monitoring`'s output, a log field). For `text` that is a
/// value (a URL, a list of them, a variable as set); [`redact_urls_in_prose`] is for
/// sentences that quote URLs.
///
/// - **Userinfo.** Users paste passwords unencoded, so `/`, `?`, `#`, `,`, spaces and even
///   `@` may stand in one: the userinfo is everything from `://` to the *last* `@` before the
///   URL ends, and a URL ends only where the next `scheme://` begins (or the text does).
///   It is written `***`: `http://u:p#s3cret@host/` is `http://***@host/`. A `@` in a path
///   or query hides the host too: more is hidden, never less.
/// - **Query and fragment.** After the host, everything from the first `?` or `#` is a list
///   of items separated by `&`, `;`, `?` or `#`: each `key=value` is written
///   `key=REDACTED`, and an item without `=` is written `REDACTED`. A scrape URL's
///   `?token=...` is a credential as often as not.
///
/// Idempotent; a URL in a list (`a=http://..,b=http://..`) keeps its separators. A password
/// that itself holds `://` may show what comes before that.
pub fn redact_urls(text: &str) -> String {
    redact(text, false, false)
}

/// [`redact_urls`] for a sentence that quotes URLs (an error's reason, a log message): a
/// query there ends at white space, a quote, `,`, `<` or `>`, so the words after it stay.
pub fn redact_urls_in_prose(text: &str) -> String {
    redact(text, true, false)
}

/// [`redact_urls_in_prose`] for a sentence that quotes values as Rust's `{:?}` writes them
/// (`"..."`, an inner quote written `\"`): each quoted value is redacted as a value, so a
/// query value is hidden whole whatever it holds (a space, a quote), and one that was cut
/// (its `more characters cut]` marker) is hidden from its last `://` on, since the cut may
/// have taken the `@` away. The words around them are redacted as prose.
pub fn redact_sentence(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('"') {
        out.push_str(&redact_urls_in_prose(&rest[..open]));
        out.push('"');
        let quoted = &rest[open + 1..];
        let close = closing_quote(quoted);
        let value = &quoted[..close.unwrap_or(quoted.len())];
        out.push_str(&redact(
            value,
            false,
            value.contains(" more characters cut]"),
        ));
        let Some(close) = close else {
            return out;
        };
        out.push('"');
        rest = &quoted[close + 1..];
    }
    out.push_str(&redact_urls_in_prose(rest));
    out
}

/// `sentence`, a reason given about `value`, with each `{:?}`-quoted piece of `value` that
/// shows part of a secret replaced by [`HIDDEN_ECHO`]. `shown` is `value` as
/// [`redact_urls`] shows it. A parser splits a value (at `,`, `=`, ...) and quotes the piece
/// it refuses, so a password holding a comma is quoted half in one piece and half in the
/// next, neither of which looks like a URL any more. Redaction leaves everything outside a
/// secret as it was, so a piece that is not part of `shown` overlaps a secret.
pub fn hide_secret_echoes(sentence: &str, shown: &str) -> String {
    let mut out = String::with_capacity(sentence.len());
    let mut rest = sentence;
    while let Some(open) = rest.find('"') {
        out.push_str(&rest[..=open]);
        let quoted = &rest[open + 1..];
        let close = closing_quote(quoted).unwrap_or(quoted.len());
        let piece = unescape_debug(&quoted[..close]);
        let piece = match piece.rfind("...[") {
            Some(at) if piece.ends_with(" more characters cut]") => &piece[..at],
            _ => piece.as_str(),
        };
        if shown.contains(piece) {
            out.push_str(&quoted[..close]);
        } else {
            out.push_str(HIDDEN_ECHO);
        }
        rest = &quoted[close..];
        if let Some(after) = rest.strip_prefix('"') {
            out.push('"');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// What [`hide_secret_echoes`] writes for a piece it hides.
pub const HIDDEN_ECHO: &str = "(a part of a URL's password or query, not shown)";

/// The text Rust's `{:?}` quoted (without its quotes): `\"`, `\\`, `\n`, `\u{1b}` and
/// the like read back.
fn unescape_debug(quoted: &str) -> String {
    let mut out = String::with_capacity(quoted.len());
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('0') => out.push('\0'),
            Some('u') => {
                let code: String = chars.by_ref().skip(1).take_while(|&c| c != '}').collect();
                match u32::from_str_radix(&code, 16).ok().and_then(char::from_u32) {
                    Some(c) => out.push(c),
                    None => out.push('\u{fffd}'),
                }
            }
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// Where the `{:?}`-quoted string `quoted` (after its opening quote) ends.
fn closing_quote(quoted: &str) -> Option<usize> {
    let mut escaped = false;
    for (at, c) in quoted.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(at),
            _ => {}
        }
    }
    None
}

/// [`redact_urls`] (or, with `prose`, [`redact_urls_in_prose`]) for text already cut short:
/// a URL running into the cut may have lost the `@` that ends its userinfo, so everything
/// after its `://` is hidden.
pub fn redact_cut_urls(text: &str, prose: bool) -> String {
    redact(text, prose, true)
}

/// `url` as an error message echoes it: redacted, then cut to `max` characters. Redacting
/// after the cut would miss an `@` beyond it and print the password before it.
pub fn shown_url(url: &str, max: usize) -> String {
    cut(&redact_urls(url), max)
}

fn redact(text: &str, prose: bool, was_cut: bool) -> String {
    let marks: Vec<usize> = text.match_indices("://").map(|(at, _)| at).collect();
    let Some(&first) = marks.first() else {
        return redact_bare(text);
    };
    // Each URL starts at its scheme, the letters, digits, `+`, `-` and `.` before `://`.
    let start = |mark: usize| {
        text[..mark]
            .trim_end_matches(|c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
            .len()
    };
    let mut out = redact_bare(&text[..start(first)]);
    for (i, &mark) in marks.iter().enumerate() {
        let next = marks.get(i + 1).map(|&m| start(m));
        out.push_str(&text[start(mark)..mark + 3]);
        let span = &text[mark + 3..next.unwrap_or(text.len())];
        if was_cut && next.is_none() {
            out.push_str("***");
            continue;
        }
        // Before another URL: the list's separator and that URL's `region=` stay as written.
        let (url, separator) = match next {
            Some(_) => split_separator(span),
            None => (span, ""),
        };
        let rest = match url.rfind('@') {
            Some(at) => {
                out.push_str("***@");
                &url[at + 1..]
            }
            None => url,
        };
        redact_query(rest, prose, &mut out);
        out.push_str(separator);
    }
    out
}

/// Text without a `://`: a URL mistyped (`http:/u:p@h`, `//u:p@h`) or written without its
/// scheme (`u:p@h:9100/m`, `region=u:p@h`) still carries a password before an `@`. In each
/// word (between white space, `,`, `=` and quotes) holding an `@`, what comes before its last
/// `@` is hidden, but for a leading `scheme:/` and slashes; an e-mail address loses its name.
fn redact_bare(text: &str) -> String {
    if !text.contains('@') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut word_start = 0;
    let boundary = |c: char| c.is_whitespace() || matches!(c, ',' | '=' | '"' | '\'' | '<' | '>');
    for (at, c) in text.char_indices().chain([(text.len(), ' ')]) {
        if at < text.len() && !boundary(c) {
            continue;
        }
        let word = &text[word_start..at];
        match word.rfind('@') {
            Some(last) => {
                let scheme = word
                    .find(':')
                    .filter(|&colon| {
                        colon > 0
                            && word[colon + 1..].starts_with('/')
                            && word[..colon]
                                .chars()
                                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
                    })
                    .map_or(0, |colon| colon + 1);
                let slashes = word[scheme..].len() - word[scheme..].trim_start_matches('/').len();
                let keep = (scheme + slashes).min(last);
                out.push_str(&word[..keep]);
                out.push_str("***");
                out.push_str(&word[last..]);
            }
            None => out.push_str(word),
        }
        if at < text.len() {
            out.push(c);
        }
        word_start = at + c.len_utf8();
    }
    out
}

/// `span` split before a trailing `, ` or `,region=` that leads to the next URL.
fn split_separator(span: &str) -> (&str, &str) {
    let mut end = span.len();
    if let Some(name) = span.strip_suffix('=') {
        end = name
            .trim_end_matches(|c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            .len();
    }
    let url_end = span[..end]
        .trim_end_matches(|c: char| c == ',' || c.is_whitespace())
        .len();
    if url_end == end {
        // Nothing separates it from the next URL: all of it may be a password.
        return (span, "");
    }
    span.split_at(url_end)
}

/// Writes `rest` (a URL after its userinfo) with the values of its query and fragment
/// hidden.
fn redact_query(rest: &str, prose: bool, out: &mut String) {
    let Some(q) = rest.find(['?', '#']) else {
        out.push_str(rest);
        return;
    };
    out.push_str(&rest[..=q]);
    let body = &rest[q + 1..];
    let end = match prose {
        true => body
            .find(|c: char| matches!(c, ',' | '"' | '\'' | '<' | '>') || c.is_whitespace())
            .unwrap_or(body.len()),
        false => body.len(),
    };
    let items = &body[..end];
    let mut from = 0;
    let ends = items
        .match_indices(['&', ';', '?', '#'])
        .chain([(items.len(), "")]);
    for (at, separator) in ends {
        let item = &items[from..at];
        match item.split_once('=') {
            Some((key, value)) if !value.is_empty() => {
                out.push_str(key);
                out.push('=');
                out.push_str(REDACTED);
            }
            _ if item.is_empty() || item.ends_with('=') => out.push_str(item),
            _ => out.push_str(REDACTED),
        }
        out.push_str(separator);
        from = at + separator.len();
    }
    out.push_str(&body[end..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newlines_and_terminal_escapes_cannot_leave_the_line() {
        assert_eq!(
            escape("bad\n{\"level\":\"ERROR\"}\r\x1b[2J\x07"),
            "bad\\n{\"level\":\"ERROR\"}\\r\\u{1b}[2J\\u{7}"
        );
        assert_eq!(escape("tab\there\u{7f}\u{85}"), "tab\\there\\u{7f}\\u{85}");
        assert_eq!(escape("a\u{2028}b\u{202e}c"), "a\\u{2028}b\\u{202e}c");
    }

    #[test]
    fn a_backslash_in_the_input_cannot_pose_as_an_escape() {
        assert_eq!(escape("\\n"), "\\\\n");
    }

    #[test]
    fn escaping_controls_only_leaves_escapes_as_they_are() {
        assert_eq!(escape_controls("a\nb \\n \u{1b}"), "a\\nb \\n \\u{1b}");
    }

    #[test]
    fn ordinary_text_and_unicode_pass_unchanged() {
        for s in [
            "",
            "not_found",
            "no price for t3.micro in us-east-1",
            "Preis €, 東京",
        ] {
            assert_eq!(remote(s), s);
        }
    }

    #[test]
    fn long_text_is_cut_with_a_marker_on_a_character_boundary() {
        let long = "é".repeat(1000);
        let out = remote(&long);
        assert!(out.starts_with(&"é".repeat(MAX_REMOTE_CHARS)));
        assert!(out.ends_with("...[744 more characters cut]"), "{out}");
        assert_eq!(cut("abc", 3), "abc");
        assert_eq!(cut("abcd", 3), "abc...[1 more characters cut]");
    }

    #[test]
    fn a_megabyte_becomes_a_few_hundred_bytes() {
        let out = remote(&"\n".repeat(1 << 20));
        assert!(out.len() < 600, "{}", out.len());
    }

    #[test]
    fn userinfo_is_redacted_wherever_a_url_stands() {
        assert_eq!(
            redact_urls("us-east-1=http://user:pass@host:8001,eu-west-1=http://a:1"),
            "us-east-1=http://***@host:8001,eu-west-1=http://a:1"
        );
        assert_eq!(
            redact_urls("\"http://u:p@h:1\": credentials"),
            "\"http://***@h:1\": credentials"
        );
        assert_eq!(redact_urls("http://p@ss:w@rd@h:1/x"), "http://***@h:1/x");
        // Without `://`, an `@` still ends what may be a password (outside attack, round 2).
        assert_eq!(redact_urls("no url, a@b"), "no url, ***@b");
        for (text, shown) in [
            (
                "http:/user:hunter2@prom.internal:9090/metrics",
                "http:/***@prom.internal:9090/metrics",
            ),
            ("//u:hunter2@h/", "//***@h/"),
            ("u:hunter2@h:9101/m", "***@h:9101/m"),
            ("http//u:hunter2@h/", "***@h/"),
            ("admin:hunter2@127.0.0.1", "***@127.0.0.1"),
            ("us-east-1=u:hunter2@h:8001", "us-east-1=***@h:8001"),
            ("\"u:p@ss@h\": not a URL", "\"***@h\": not a URL"),
            ("u:hunter2@h,http://v:hunter2@k/m", "***@h,http://***@k/m"),
            ("mailto:x", "mailto:x"),
        ] {
            assert_eq!(redact_urls(text), shown, "{text}");
            assert_eq!(shown_url(text, 200), shown, "{text}");
        }
        assert_eq!(redact_urls("http://"), "http://");
        assert_eq!(redact_urls("http://h:1/metrics"), "http://h:1/metrics");
    }

    /// Every shape a password can be pasted in: it never shows, the host after it does.
    #[test]
    fn a_password_never_shows_whatever_it_holds() {
        for (text, shown) in [
            ("http://u:p#s3cret@host/", "http://***@host/"),
            ("http://u:p?s3cret@host/m", "http://***@host/m"),
            ("http://u:p/s3cret@host:9100/m", "http://***@host:9100/m"),
            ("http://u:p@s3cret@host/", "http://***@host/"),
            ("http://u:p,s3cret@host/", "http://***@host/"),
            ("http://u:p s3cret@host/", "http://***@host/"),
            ("http://u:p\"s3cret@host/", "http://***@host/"),
            ("https://:s3cret@host", "https://***@host"),
            ("http://s3cret@[::1]:80/m", "http://***@[::1]:80/m"),
            ("HTTP://u:s3cret@host", "HTTP://***@host"),
            ("://u:s3cret@host", "://***@host"),
            ("svn+ssh://u:s3cret@host", "svn+ssh://***@host"),
            (
                "a=http://h:1/m,us-east-1=http://u:s3cret@h:2/m, http://h:3",
                "a=http://h:1/m,us-east-1=http://***@h:2/m, http://h:3",
            ),
            (
                "http://u:s3cret@h:1,http://v:s3cret@h:2",
                "http://***@h:1,http://***@h:2",
            ),
        ] {
            assert_eq!(redact_urls(text), shown, "{text}");
            assert_eq!(redact_urls(shown), shown, "idempotent: {shown}");
        }
    }

    /// A `@` after the host (a path, a query) hides the host as well: the grammar cannot
    /// tell `http://h/p@x` from the password `h/p` of host `x`.
    #[test]
    fn an_at_sign_after_the_host_hides_more_never_less() {
        assert_eq!(redact_urls("http://h:1/path@x"), "http://***@x");
        assert_eq!(redact_urls("http://h/m?mail=a@b"), "http://***@b");
    }

    #[test]
    fn query_and_fragment_values_never_show() {
        for (text, shown) in [
            ("http://h/m?token=s3cret", "http://h/m?token=REDACTED"),
            (
                "http://h/m?token=s3cret&format=text",
                "http://h/m?token=REDACTED&format=REDACTED",
            ),
            ("http://h/m?s3cret", "http://h/m?REDACTED"),
            (
                "http://h/m?a=1;b=s3cret",
                "http://h/m?a=REDACTED;b=REDACTED",
            ),
            ("http://h/m?a=&&b", "http://h/m?a=&&REDACTED"),
            ("http://h?k=s3cret", "http://h?k=REDACTED"),
            (
                "http://h/m#access_token=s3cret",
                "http://h/m#access_token=REDACTED",
            ),
            (
                "http://h/m?a=1#k=s3cret",
                "http://h/m?a=REDACTED#k=REDACTED",
            ),
            (
                "http://h/m?a=1?b=s3cret",
                "http://h/m?a=REDACTED?b=REDACTED",
            ),
            // In a value, nothing ends a query value but the next item or URL.
            ("http://h/m?t=s3 cr\"et,x", "http://h/m?t=REDACTED"),
            ("http://h/m?a b=s3cret", "http://h/m?a b=REDACTED"),
            (
                "http://h/m?t=s3cret,us-east-1=http://h/n?t=s3cret",
                "http://h/m?t=REDACTED,us-east-1=http://h/n?t=REDACTED",
            ),
        ] {
            assert_eq!(redact_urls(text), shown, "{text}");
            assert_eq!(redact_urls(shown), shown, "idempotent: {shown}");
        }
    }

    #[test]
    fn prose_keeps_the_words_after_a_url() {
        for (text, shown) in [
            (
                "(\"http://h:0/m?token=s3cret\": the port must be 1-65535)",
                "(\"http://h:0/m?token=REDACTED\": the port must be 1-65535)",
            ),
            (
                "http://u:p@h/m?t=s3cret is down",
                "http://***@h/m?t=REDACTED is down",
            ),
            ("is http://h/m up? yes", "is http://h/m up? yes"),
        ] {
            assert_eq!(redact_urls_in_prose(text), shown, "{text}");
            assert_eq!(redact_urls_in_prose(shown), shown, "idempotent: {shown}");
        }
    }

    /// An error's reason quotes values with `{:?}`: a value is redacted whole whatever it
    /// holds, the sentence around it keeps its words.
    #[test]
    fn quoted_values_in_a_sentence_are_redacted_as_values() {
        for (text, shown) in [
            (
                r#"globs ("http://h/m?t=a's3cret b" is not one); fix it"#,
                r#"globs ("http://h/m?t=REDACTED" is not one); fix it"#,
            ),
            (
                r#"entry "http://h/m?t=a\"s3cret": bad, see http://x/?k=v here"#,
                r#"entry "http://h/m?t=REDACTED": bad, see http://x/?k=REDACTED here"#,
            ),
            (
                r#"("http://u:s3cret...[9 more characters cut]" is not one)"#,
                r#"("http://***" is not one)"#,
            ),
            (
                r#"unterminated "http://u:s3cret@h"#,
                r#"unterminated "http://***@h"#,
            ),
            ("no quotes, no urls", "no quotes, no urls"),
        ] {
            assert_eq!(redact_sentence(text), shown, "{text}");
            assert_eq!(redact_sentence(shown), shown, "idempotent: {shown}");
        }
    }

    /// A password with a comma, split by a list's parser: each half is hidden where the
    /// parser quotes it, the pieces without a secret stay.
    #[test]
    fn quoted_pieces_of_a_secret_are_hidden() {
        let value = "http://u:pa,ss@h/m,http://h:99999/m?t=a b";
        let shown = redact_urls(value);
        assert_eq!(shown, "http://***@h/m,http://h:99999/m?t=REDACTED");
        for (piece, kept) in [
            ("http://u:pa", false),
            ("ss@h/m", false),
            ("http://h:99999/m?t=a b", false),
            ("http://h:99999/m?t=REDACTED", true),
            ("h:99999", true),
        ] {
            let sentence = format!("entries ({piece:?}: bad)");
            let out = hide_secret_echoes(&sentence, &shown);
            let expected = if kept {
                sentence.clone()
            } else {
                format!("entries (\"{HIDDEN_ECHO}\": bad)")
            };
            assert_eq!(out, expected, "{piece}");
        }
        let quoted = format!("{:?}", "a\"b\\c\n\u{1b}é");
        assert_eq!(
            unescape_debug(&quoted[1..quoted.len() - 1]),
            "a\"b\\c\n\u{1b}é"
        );
    }

    #[test]
    fn a_url_cut_before_its_at_sign_is_hidden_whole() {
        let url = format!("http://u:{}@host/", "p".repeat(300));
        let cut_first = cut(&url, 80);
        assert_eq!(
            redact_cut_urls(&cut_first, false),
            "http://***",
            "the cut took the @ away"
        );
        assert_eq!(shown_url(&url, 80), "http://***@host/");
        assert_eq!(
            redact_cut_urls("seen http://h:1/m and http://u:pppp", true),
            "seen http://h:1/m and http://***"
        );
    }
}
