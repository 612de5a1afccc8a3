//! Splits a `$filter` string into tokens, each remembering where it starts so errors can
//! point at it.

use appfence_proto::Timestamp;

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Tok {
    /// A property name, keyword (`and`, `eq`, `null`, ...) or function name; keywords are
    /// recognised by the parser, case-insensitively.
    Ident,
    /// A single-quoted string, with `''` already unescaped.
    Str(String),
    Int(i64),
    /// An unquoted RFC 3339 timestamp (`2024-01-01T00:00:00Z`).
    Time(Timestamp),
    LParen,
    RParen,
    Comma,
    Slash,
    Colon,
    End,
}

#[derive(Clone, Debug, PartialEq)]
pub(super) struct Token<'a> {
    pub tok: Tok,
    /// Byte offset of the token in the source.
    pub start: usize,
    /// The token's source text, quotes included (empty for `End`).
    pub text: &'a str,
}

impl Token<'_> {
    /// Whether this is the identifier `word`, ignoring ASCII case.
    pub fn is_word(&self, word: &str) -> bool {
        self.tok == Tok::Ident && self.text.eq_ignore_ascii_case(word)
    }

    /// How an error message names this token.
    pub fn describe(&self) -> String {
        match self.tok {
            Tok::End => "end of input".to_string(),
            _ => format!("'{}'", self.text),
        }
    }
}

/// A lexing failure: the byte offset and what is wrong there.
#[derive(Debug, PartialEq)]
pub(super) struct LexError {
    pub at: usize,
    pub message: String,
}

/// Tokenises the whole input; the last token is always `End`.
pub(super) fn tokenize(src: &str) -> Result<Vec<Token<'_>>, LexError> {
    let bytes = src.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        let tok = match c {
            b' ' | b'\t' | b'\r' | b'\n' => {
                i += 1;
                continue;
            }
            b'(' => single(&mut i, Tok::LParen),
            b')' => single(&mut i, Tok::RParen),
            b',' => single(&mut i, Tok::Comma),
            b'/' => single(&mut i, Tok::Slash),
            b':' => single(&mut i, Tok::Colon),
            b'\'' => Tok::Str(string(src, &mut i)?),
            b'0'..=b'9' => number_or_time(src, &mut i)?,
            b'-' if bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                number_or_time(src, &mut i)?
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                Tok::Ident
            }
            _ => {
                let ch = src[i..].chars().next().unwrap_or_default();
                return Err(LexError {
                    at: start,
                    message: format!("unexpected character '{ch}'"),
                });
            }
        };
        tokens.push(Token {
            tok,
            start,
            text: &src[start..i],
        });
    }
    tokens.push(Token {
        tok: Tok::End,
        start: src.len(),
        text: "",
    });
    Ok(tokens)
}

fn single(i: &mut usize, tok: Tok) -> Tok {
    *i += 1;
    tok
}

/// Reads a quoted string starting at the opening quote; `''` stands for one quote.
fn string(src: &str, i: &mut usize) -> Result<String, LexError> {
    let start = *i;
    let mut out = String::new();
    let mut rest = src[start + 1..].char_indices();
    while let Some((off, ch)) = rest.next() {
        if ch != '\'' {
            out.push(ch);
            continue;
        }
        let after = start + 1 + off + 1;
        if src.as_bytes().get(after) == Some(&b'\'') {
            out.push('\'');
            rest.next();
        } else {
            *i = after;
            return Ok(out);
        }
    }
    Err(LexError {
        at: start,
        message: "unterminated string literal".to_string(),
    })
}

/// Reads an integer or an unquoted timestamp: both start with a digit (or `-`), so the
/// whole run of characters that can appear in either is read and then classified.
fn number_or_time(src: &str, i: &mut usize) -> Result<Tok, LexError> {
    let start = *i;
    let bytes = src.as_bytes();
    *i += 1;
    while *i < bytes.len() && (bytes[*i].is_ascii_alphanumeric() || b":.+-".contains(&bytes[*i])) {
        *i += 1;
    }
    let text = &src[start..*i];
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().map(Tok::Int).map_err(|_| LexError {
            at: start,
            message: format!("the integer {text} is out of range"),
        });
    }
    Timestamp::parse(text).map(Tok::Time).ok_or_else(|| LexError {
        at: start,
        message: format!(
            "'{text}' is neither an integer nor an RFC 3339 timestamp (such as 2024-01-01T00:00:00Z)"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(src: &str) -> Vec<Tok> {
        tokenize(src).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn splits_punctuation_words_and_literals() {
        assert_eq!(
            toks("machineTags/any(t: t eq 'a') and (rbacGroupId ne -12,3)"),
            vec![
                Tok::Ident,
                Tok::Slash,
                Tok::Ident,
                Tok::LParen,
                Tok::Ident,
                Tok::Colon,
                Tok::Ident,
                Tok::Ident,
                Tok::Str("a".into()),
                Tok::RParen,
                Tok::Ident,
                Tok::LParen,
                Tok::Ident,
                Tok::Ident,
                Tok::Int(-12),
                Tok::Comma,
                Tok::Int(3),
                Tok::RParen,
                Tok::End,
            ]
        );
    }

    #[test]
    fn unescapes_doubled_quotes_and_keeps_unicode() {
        assert_eq!(
            toks("'O''Brien'"),
            vec![Tok::Str("O'Brien".into()), Tok::End]
        );
        assert_eq!(toks("''''"), vec![Tok::Str("'".into()), Tok::End]);
        assert_eq!(toks("''"), vec![Tok::Str(String::new()), Tok::End]);
        assert_eq!(toks("'zoë'"), vec![Tok::Str("zoë".into()), Tok::End]);
        let t = tokenize("x eq 'it''s'").unwrap();
        assert_eq!(t[2].text, "'it''s'");
        assert_eq!(t[2].start, 5);
        assert_eq!(t[3].start, 12);
    }

    #[test]
    fn reads_unquoted_timestamps() {
        let t = toks("2024-10-21T11:27:58.1447302Z)");
        assert_eq!(
            t,
            vec![
                Tok::Time(Timestamp::parse("2024-10-21T11:27:58.1447302Z").unwrap()),
                Tok::RParen,
                Tok::End
            ]
        );
        assert!(matches!(toks("2024-10-21T13:00:00+02:00")[0], Tok::Time(_)));
    }

    #[test]
    fn reports_bad_input_with_its_offset() {
        let e = tokenize("id eq 'abc").unwrap_err();
        assert_eq!(e.at, 6);
        assert!(e.message.contains("unterminated"));
        let e = tokenize("x eq 2024-01-01").unwrap_err();
        assert_eq!(e.at, 5);
        assert!(
            e.message.contains("'2024-01-01' is neither"),
            "{}",
            e.message
        );
        let e = tokenize("x eq 99999999999999999999").unwrap_err();
        assert!(e.message.contains("out of range"));
        let e = tokenize("x = 1").unwrap_err();
        assert_eq!((e.at, e.message.as_str()), (2, "unexpected character '='"));
        let e = tokenize("x eq é").unwrap_err();
        assert_eq!(e.message, "unexpected character 'é'");
    }
}
