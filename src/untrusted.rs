//! Text from outside the agent made safe to print: what plugins answer and what the
//! environment holds.
//!
//! A plugin's error message, currency or version reaches logs and `/metrics`. Raw, a newline
//! in it forges a log line in `LOG_FORMAT=text`, an escape sequence drives the reader's
//! terminal, and a megabyte of it is a megabyte of logs per query. So every remote string is
//! passed through [`remote`] once, where it enters the agent: control characters escaped, and
//! cut to [`MAX_REMOTE_CHARS`] with a marker that says how much was cut. Configuration values
//! are echoed in error messages; [`redact_userinfo`] keeps a password in a URL out of them.

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
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || is_invisible_mark(c) => {
                out.push_str(&format!("\\u{{{:x}}}", c as u32));
            }
            c => out.push(c),
        }
    }
    out
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

/// Every `scheme://user:password@` in `text` written `scheme://***@`, wherever it stands
/// (a URL alone or inside a list of them).
pub fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let authority_end = tail
            .find(|c: char| matches!(c, '/' | '?' | '#' | ',' | '"' | '\'') || c.is_whitespace())
            .unwrap_or(tail.len());
        match tail[..authority_end].rfind('@') {
            Some(user_end) => {
                out.push_str("***");
                rest = &tail[user_end..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
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
            redact_userinfo("us-east-1=http://user:pass@host:8001,eu-west-1=http://a:1"),
            "us-east-1=http://***@host:8001,eu-west-1=http://a:1"
        );
        assert_eq!(
            redact_userinfo("\"http://u:p@h:1\": credentials"),
            "\"http://***@h:1\": credentials"
        );
        assert_eq!(
            redact_userinfo("http://p@ss:w@rd@h:1/x"),
            "http://***@h:1/x"
        );
        assert_eq!(redact_userinfo("http://h:1/path@x"), "http://h:1/path@x");
        assert_eq!(redact_userinfo("no url, a@b"), "no url, a@b");
        assert_eq!(redact_userinfo("http://"), "http://");
    }
}
