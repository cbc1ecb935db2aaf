//! A single pass over a document's text before it is parsed, refusing documents whose
//! parse would cost more than any real operation needs.
//!
//! Why before parsing: async-graphql's parser recurses once per nested list, object or
//! selection set, and only guards selection sets — `[[[ … ]]]` a few thousand levels deep
//! (a 4 KB body) overflows a worker's stack and aborts the whole process. And its memory is
//! proportional to the tokens, not the bytes: a 1 MB body of one-letter fields parses into
//! about 100 MB. Neither can be checked after the parse, so this scan counts bracket nesting
//! and tokens on the raw text, stopping at the first limit crossed; it allocates nothing.
//!
//! The scan follows the GraphQL lexical grammar closely enough that nothing the parser
//! treats as structure can hide from it: brackets inside strings, block strings and
//! comments are not structure, everywhere else they are. Where the two could disagree
//! (a line break inside a quoted string, which the parser refuses anyway) the scan counts
//! more, never less.

use async_graphql::{ErrorExtensionValues, ServerError};

use crate::error::ErrorCode;

/// The limits, from configuration.
#[derive(Debug, Clone, Copy)]
pub struct DocumentLimits {
    /// Deepest nesting of `{`, `[` and `(` together.
    pub max_nesting: usize,
    /// Most lexical tokens (names, punctuation, numbers, strings).
    pub max_tokens: usize,
}

/// What a scan found, up to the point where it stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    pub tokens: usize,
    pub max_nesting: usize,
}

impl DocumentLimits {
    /// `Ok` when `document` is within both limits; otherwise the coded request error
    /// (BAD_USER_INPUT with `extensions.limit` `nesting` or `tokens`) to answer with.
    pub fn check(&self, document: &str) -> Result<(), ServerError> {
        match scan(document, self.max_nesting, self.max_tokens) {
            Ok(_) => Ok(()),
            Err(Exceeded::Nesting) => Err(limit_error(
                format!(
                    "The document nests brackets more than {} levels deep",
                    self.max_nesting
                ),
                "nesting",
            )),
            Err(Exceeded::Tokens) => Err(limit_error(
                format!("The document has more than {} tokens", self.max_tokens),
                "tokens",
            )),
        }
    }
}

fn limit_error(message: String, limit: &str) -> ServerError {
    let mut error = ServerError::new(message, None);
    let mut extensions = ErrorExtensionValues::default();
    extensions.set("code", ErrorCode::BadUserInput.as_str());
    extensions.set("limit", limit);
    error.extensions = Some(extensions);
    error
}

/// Which limit the scan stopped at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    Nesting,
    Tokens,
}

/// Scans `text`, stopping as soon as nesting passes `max_nesting` or the token count
/// passes `max_tokens`.
pub fn scan(text: &str, max_nesting: usize, max_tokens: usize) -> Result<Scan, Exceeded> {
    let bytes = text.as_bytes();
    let mut at = 0;
    let mut tokens = 0usize;
    let mut depth = 0usize;
    let mut deepest = 0usize;
    while let Some(&byte) = bytes.get(at) {
        match byte {
            // Ignored tokens: white space, line terminators, commas, the byte order mark.
            b' ' | b'\t' | b'\n' | b'\r' | b',' => {
                at += 1;
                continue;
            }
            0xEF if bytes.get(at..at + 3) == Some(&[0xEF, 0xBB, 0xBF]) => {
                at += 3;
                continue;
            }
            b'#' => {
                at = end_of_line(bytes, at);
                continue;
            }
            b'"' if bytes.get(at..at + 3) == Some(b"\"\"\"") => at = end_of_block_string(bytes, at),
            b'"' => at = end_of_string(bytes, at),
            b'{' | b'[' | b'(' => {
                depth += 1;
                deepest = deepest.max(depth);
                if depth > max_nesting {
                    return Err(Exceeded::Nesting);
                }
                at += 1;
            }
            b'}' | b']' | b')' => {
                depth = depth.saturating_sub(1);
                at += 1;
            }
            b'.' if bytes.get(at..at + 3) == Some(b"...") => at += 3,
            b'_' | b'a'..=b'z' | b'A'..=b'Z' => {
                at += 1;
                while bytes
                    .get(at)
                    .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
                {
                    at += 1;
                }
            }
            b'-' | b'0'..=b'9' => at = end_of_number(bytes, at),
            // Other punctuation, and anything the parser will refuse: a token each.
            _ => at += utf8_width(byte),
        }
        tokens += 1;
        if tokens > max_tokens {
            return Err(Exceeded::Tokens);
        }
    }
    Ok(Scan {
        tokens,
        max_nesting: deepest,
    })
}

/// Just past a number (`-1.5e+3`) starting at `at`.
fn end_of_number(bytes: &[u8], at: usize) -> usize {
    let digits = |mut at: usize| {
        while bytes.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        at
    };
    let mut at = digits(at + 1);
    if bytes.get(at) == Some(&b'.') {
        at = digits(at + 1);
    }
    if matches!(bytes.get(at), Some(b'e' | b'E')) {
        at += 1;
        if matches!(bytes.get(at), Some(b'+' | b'-')) {
            at += 1;
        }
        at = digits(at);
    }
    at
}

/// Where a comment starting at `at` ends (its line terminator, left for the main loop).
fn end_of_line(bytes: &[u8], at: usize) -> usize {
    bytes
        .get(at..)
        .and_then(|rest| rest.iter().position(|&b| b == b'\n' || b == b'\r'))
        .map_or(bytes.len(), |offset| at + offset)
}

/// Just past a `"…"` string starting at `at`. A line terminator ends it too: the parser
/// refuses such a string, and ending it early only makes the scan count more.
fn end_of_string(bytes: &[u8], at: usize) -> usize {
    let mut at = at + 1;
    while let Some(&byte) = bytes.get(at) {
        match byte {
            b'"' => return at + 1,
            b'\n' | b'\r' => return at,
            b'\\' => at += 2,
            _ => at += 1,
        }
    }
    bytes.len()
}

/// Just past a `"""…"""` block string starting at `at`; `\"""` does not end it.
fn end_of_block_string(bytes: &[u8], at: usize) -> usize {
    let mut at = at + 3;
    while at < bytes.len() {
        if bytes.get(at..at + 4) == Some(b"\\\"\"\"") {
            at += 4;
        } else if bytes.get(at..at + 3) == Some(b"\"\"\"") {
            return at + 3;
        } else {
            at += 1;
        }
    }
    bytes.len()
}

/// Bytes in the UTF-8 sequence that `first` starts (1 for a stray continuation byte).
fn utf8_width(first: u8) -> usize {
    match first {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(text: &str) -> usize {
        match scan(text, usize::MAX, usize::MAX) {
            Ok(scan) => scan.tokens,
            Err(e) => panic!("{e:?}"),
        }
    }

    fn nesting(text: &str) -> usize {
        match scan(text, usize::MAX, usize::MAX) {
            Ok(scan) => scan.max_nesting,
            Err(e) => panic!("{e:?}"),
        }
    }

    #[test]
    fn counts_the_tokens_the_parser_sees() {
        assert_eq!(tokens(""), 0);
        assert_eq!(tokens("{ __typename }"), 3);
        // query Q ( $ id : ID ! ) { workflow ( id : $ id ) { ... on Workflow { name } } }
        assert_eq!(
            tokens("query Q($id: ID!) { workflow(id: $id) { ... on Workflow { name } } }"),
            26
        );
        // Numbers, strings and block strings are one token each; commas, comments and the
        // byte order mark are none.
        assert_eq!(tokens("-1.5e+3, 42 \"a [ b\" \"\"\"x { y\"\"\""), 4);
        assert_eq!(tokens("\u{feff}# a comment [[[\n{ a }"), 3);
        assert_eq!(tokens("{ a(s: \"é\") }"), 8);
        // A spread written without spaces is still three tokens.
        assert_eq!(tokens("{a...F}"), 5);
        assert_eq!(tokens("{ a(x: 1.5, y: -2e3, z: [0 1]) }"), 17);
    }

    #[test]
    fn nesting_counts_brackets_outside_strings_and_comments() {
        assert_eq!(nesting("{ a { b(x: [[1]]) } }"), 5);
        assert_eq!(nesting("{ a(s: \"[[[[\") }"), 2);
        assert_eq!(nesting("{ a(s: \"\\\"[[[[\") }"), 2);
        assert_eq!(nesting("{ a(s: \"\"\"[[[ \\\"\"\" [[[ \"\"\") }"), 2);
        assert_eq!(nesting("# {{{{\n{ a }"), 1);
        // Closing brackets never take the depth below zero, so they cannot buy room.
        assert_eq!(nesting("}}}}}} { [ [ ] ] }"), 3);
        // A line break ends a quoted string for the scan (the parser refuses it anyway),
        // so what follows is counted rather than hidden.
        assert_eq!(nesting("{ a(s: \"\n[[[[ ]]]] \") }"), 6);
        // An unterminated string hides nothing from a parse that fails at its start.
        assert_eq!(nesting("{ a(s: \"[[[["), 2);
    }

    #[test]
    fn stops_at_the_first_limit_crossed() {
        let deep = format!("{{ a(x: {}{}) }}", "[".repeat(2_000), "]".repeat(2_000));
        assert_eq!(scan(&deep, 64, 100_000), Err(Exceeded::Nesting));
        let exactly = format!("{{ a(x: {}{}) }}", "[".repeat(62), "]".repeat(62));
        assert_eq!(nesting(&exactly), 64);
        assert!(scan(&exactly, 64, 100_000).is_ok());
        let wide = format!("{{ {} }}", "a ".repeat(1_000));
        assert_eq!(scan(&wide, 64, 1_002).map(|s| s.tokens), Ok(1_002));
        assert_eq!(scan(&wide, 64, 1_001), Err(Exceeded::Tokens));
    }

    #[test]
    fn refusals_carry_the_code_and_the_limit() {
        let limits = DocumentLimits {
            max_nesting: 4,
            max_tokens: 10,
        };
        assert!(limits.check("{ a { b } }").is_ok());
        for (text, limit) in [
            ("{ a { b { c { d { e } } } } }", "nesting"),
            ("{ a b c d e f g h i j }", "tokens"),
        ] {
            let Err(error) = limits.check(text) else {
                panic!("{text} was accepted");
            };
            let extensions = error.extensions.unwrap_or_default();
            assert_eq!(
                extensions.get("code"),
                Some(&async_graphql::Value::from("BAD_USER_INPUT"))
            );
            assert_eq!(
                extensions.get("limit"),
                Some(&async_graphql::Value::from(limit))
            );
        }
    }
}
