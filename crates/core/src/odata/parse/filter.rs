//! Recursive-descent parser for `$filter`, type-checking every literal against its field.
//!
//! Grammar (keywords case-insensitive):
//! ```text
//! or      := and ("or" and)*
//! and     := unary ("and" unary)*
//! unary   := "not" unary | primary
//! primary := "(" or ")"
//!          | "startswith" "(" field "," string ")" [("eq" | "ne") ("true" | "false")]
//!          | field "/" "any" "(" var ":" var "eq" string ("or" var "eq" string)* ")"
//!          | field ("eq"|"ne"|"gt"|"ge"|"lt"|"le") literal
//!          | field "in" "(" literal ("," literal)* ")"
//! literal := string | integer | timestamp | "null"
//! ```

use std::marker::PhantomData;

use super::lexer::{tokenize, Tok, Token};
use crate::odata::{CmpOp, Expr, Field, FieldType, Value};
use crate::Error;
use appfence_proto::Timestamp;

/// Deepest nesting of parentheses and `not` accepted, so recursion stays bounded.
pub(super) const MAX_DEPTH: usize = 64;

const COMPARISON_HINT: &str = "expected a comparison operator (eq, ne, gt, ge, lt, le) or 'in'";

/// Parses a `$filter`; the caller has already bounded its length.
pub(super) fn parse_filter<F: Field>(src: &str) -> Result<Expr<F>, Error> {
    let tokens = tokenize(src).map_err(|e| syntax(src, e.at, &e.message))?;
    let mut p = Parser::<F> {
        src,
        tokens,
        next: 0,
        depth: 0,
        _field: PhantomData,
    };
    let expr = p.or()?;
    let t = p.peek();
    if t.tok != Tok::End {
        return Err(p.error_at(
            &t,
            &format!(
                "expected 'and', 'or' or the end of the filter, found {}",
                t.describe()
            ),
        ));
    }
    Ok(expr)
}

fn syntax(src: &str, byte_at: usize, message: &str) -> Error {
    // Positions are 0-based character offsets, as in the .NET OData parser's messages.
    let at = src[..byte_at].chars().count();
    Error::OData(format!(
        "Syntax error at position {at} in '$filter': {message}"
    ))
}

/// A literal before it is checked against a field.
enum Literal {
    Str(String),
    Int(i64),
    Time(Timestamp),
    Null,
}

struct Parser<'a, F> {
    src: &'a str,
    tokens: Vec<Token<'a>>,
    next: usize,
    depth: usize,
    _field: PhantomData<F>,
}

impl<'a, F: Field> Parser<'a, F> {
    fn peek(&self) -> Token<'a> {
        self.tokens[self.next].clone()
    }

    fn peek_second(&self) -> Token<'a> {
        self.tokens[(self.next + 1).min(self.tokens.len() - 1)].clone()
    }

    fn bump(&mut self) -> Token<'a> {
        let t = self.peek();
        if t.tok != Tok::End {
            self.next += 1;
        }
        t
    }

    fn error_at(&self, t: &Token<'_>, message: &str) -> Error {
        syntax(self.src, t.start, message)
    }

    fn expect(&mut self, want: Tok, what: &str) -> Result<Token<'a>, Error> {
        let t = self.bump();
        if t.tok == want {
            Ok(t)
        } else {
            Err(self.error_at(&t, &format!("expected {what}, found {}", t.describe())))
        }
    }

    fn eat_word(&mut self, word: &str) -> bool {
        if self.peek().is_word(word) {
            self.next += 1;
            true
        } else {
            false
        }
    }

    /// Runs `f` one nesting level deeper, refusing to go past [`MAX_DEPTH`].
    fn nested<T>(
        &mut self,
        at: Token<'_>,
        f: impl FnOnce(&mut Self) -> Result<T, Error>,
    ) -> Result<T, Error> {
        if self.depth >= MAX_DEPTH {
            return Err(self.error_at(
                &at,
                &format!("the filter is nested more than {MAX_DEPTH} levels deep"),
            ));
        }
        self.depth += 1;
        let r = f(self);
        self.depth -= 1;
        r
    }

    fn or(&mut self) -> Result<Expr<F>, Error> {
        let mut left = self.and()?;
        while self.eat_word("or") {
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr<F>, Error> {
        let mut left = self.unary()?;
        while self.eat_word("and") {
            let right = self.unary()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr<F>, Error> {
        let t = self.peek();
        if t.is_word("not") {
            self.bump();
            return self.nested(t, |p| Ok(Expr::Not(Box::new(p.unary()?))));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr<F>, Error> {
        let t = self.peek();
        match t.tok {
            Tok::LParen => {
                self.bump();
                let inner = self.nested(t, |p| p.or())?;
                self.expect(Tok::RParen, "')'")?;
                Ok(inner)
            }
            Tok::Ident if self.peek_second().tok == Tok::LParen => self.function(),
            Tok::Ident if is_keyword(t.text) => {
                Err(self.error_at(&t, &format!("expected an expression, found {}", t.describe())))
            }
            Tok::Ident => self.property_predicate(),
            Tok::Str(_) | Tok::Int(_) | Tok::Time(_) => Err(self.error_at(
                &t,
                &format!(
                    "expected a property name, found the value {}; the property must be on the left of a comparison",
                    t.describe()
                ),
            )),
            _ => Err(self.error_at(&t, &format!("expected an expression, found {}", t.describe()))),
        }
    }

    /// `name(...)`: only `startswith` is supported.
    fn function(&mut self) -> Result<Expr<F>, Error> {
        let name = self.bump();
        if !name.is_word("startswith") {
            return Err(Error::OData(format!(
                "The function '{}' is not supported in $filter; the supported function is startswith",
                name.text
            )));
        }
        self.expect(Tok::LParen, "'('")?;
        let field = self.field()?;
        if !matches!(field.field_type(), FieldType::String | FieldType::Enum(_)) {
            return Err(Error::OData(format!(
                "The function startswith cannot be applied to '{}', which is not a string property",
                field.name()
            )));
        }
        self.expect(Tok::Comma, "','")?;
        let arg = self.bump();
        let Tok::Str(prefix) = arg.tok.clone() else {
            return Err(self.error_at(
                &arg,
                &format!(
                    "expected a quoted string as the second argument of startswith, found {}",
                    arg.describe()
                ),
            ));
        };
        self.expect(Tok::RParen, "')'")?;
        let expr = Expr::StartsWith { field, prefix };
        // Clients also write `startswith(a,'x') eq true`.
        let op_tok = self.peek();
        let Some(op) = cmp_op(&op_tok) else {
            return Ok(expr);
        };
        self.bump();
        let b = self.bump();
        let wanted = match (op, b.is_word("true"), b.is_word("false")) {
            (CmpOp::Eq, true, _) | (CmpOp::Ne, _, true) => true,
            (CmpOp::Eq, _, true) | (CmpOp::Ne, true, _) => false,
            _ => {
                return Err(self.error_at(
                    &op_tok,
                    "startswith(...) can only be compared with 'eq true' or 'eq false'",
                ));
            }
        };
        Ok(if wanted {
            expr
        } else {
            Expr::Not(Box::new(expr))
        })
    }

    /// Reads a property name and looks it up.
    fn field(&mut self) -> Result<F, Error> {
        let t = self.bump();
        if t.tok != Tok::Ident {
            return Err(self.error_at(
                &t,
                &format!("expected a property name, found {}", t.describe()),
            ));
        }
        F::lookup(t.text).ok_or_else(|| {
            Error::OData(format!(
                "Could not find a property named '{}' on type '{}'",
                t.text,
                F::ENTITY
            ))
        })
    }

    /// `field op literal`, `field in (...)` or `collection/any(...)`.
    fn property_predicate(&mut self) -> Result<Expr<F>, Error> {
        let field = self.field()?;
        if field.field_type() == FieldType::StringCollection {
            return self.any(field);
        }
        let t = self.bump();
        if t.is_word("in") {
            return self.in_list(field);
        }
        let Some(op) = cmp_op(&t) else {
            return Err(self.error_at(&t, &format!("{COMPARISON_HINT}, found {}", t.describe())));
        };
        let (lit, lit_tok) = self.literal()?;
        let value = check_value(field, Some(op), lit, &lit_tok)?;
        Ok(Expr::Compare { field, op, value })
    }

    fn in_list(&mut self, field: F) -> Result<Expr<F>, Error> {
        self.expect(Tok::LParen, "'(' after 'in'")?;
        let mut values = Vec::new();
        loop {
            let (lit, lit_tok) = self.literal()?;
            values.push(check_value(field, None, lit, &lit_tok)?);
            let sep = self.bump();
            match sep.tok {
                Tok::Comma => continue,
                Tok::RParen => break,
                _ => {
                    return Err(self.error_at(
                        &sep,
                        &format!("expected ',' or ')', found {}", sep.describe()),
                    ));
                }
            }
        }
        Ok(Expr::In { field, values })
    }

    /// `tags/any(t: t eq 'a' or t eq 'b')`, the only way to filter a collection.
    fn any(&mut self, field: F) -> Result<Expr<F>, Error> {
        let t = self.bump();
        if t.tok != Tok::Slash {
            return Err(Error::OData(format!(
                "The property '{name}' is a collection and cannot be compared directly; use {name}/any(t: t eq 'value')",
                name = field.name()
            )));
        }
        let f = self.bump();
        if !f.is_word("any") {
            return Err(self.error_at(
                &f,
                &format!(
                    "expected 'any', found {}; only any() is supported on collections",
                    f.describe()
                ),
            ));
        }
        self.expect(Tok::LParen, "'('")?;
        let var = self.expect(Tok::Ident, "a lambda variable name")?;
        self.expect(Tok::Colon, "':'")?;
        let mut expr = None;
        loop {
            let v = self.bump();
            if !(v.tok == Tok::Ident && v.text == var.text) {
                return Err(self.error_at(
                    &v,
                    &format!(
                        "expected the lambda variable '{}', found {}",
                        var.text,
                        v.describe()
                    ),
                ));
            }
            let op = self.bump();
            if !op.is_word("eq") {
                return Err(self.error_at(
                    &op,
                    &format!(
                        "expected 'eq', found {}; only '{} eq value' is supported inside any()",
                        op.describe(),
                        var.text
                    ),
                ));
            }
            let s = self.bump();
            let Tok::Str(value) = s.tok.clone() else {
                return Err(self.error_at(
                    &s,
                    &format!("expected a quoted string, found {}", s.describe()),
                ));
            };
            let one = Expr::Contains { field, value };
            expr = Some(match expr {
                None => one,
                Some(prev) => Expr::Or(Box::new(prev), Box::new(one)),
            });
            if !self.eat_word("or") {
                break;
            }
        }
        self.expect(Tok::RParen, "')' or 'or'")?;
        Ok(expr.expect("the loop runs at least once"))
    }

    fn literal(&mut self) -> Result<(Literal, Token<'a>), Error> {
        let t = self.bump();
        let lit = match &t.tok {
            Tok::Str(s) => Literal::Str(s.clone()),
            Tok::Int(i) => Literal::Int(*i),
            Tok::Time(ts) => Literal::Time(*ts),
            Tok::Ident if t.is_word("null") => Literal::Null,
            Tok::Ident if F::lookup(t.text).is_some() => {
                return Err(self.error_at(
                    &t,
                    &format!("expected a value, found the property {}; comparing two properties is not supported", t.describe()),
                ));
            }
            _ => {
                return Err(self.error_at(&t, &format!("expected a value, found {}", t.describe())))
            }
        };
        Ok((lit, t))
    }
}

fn is_keyword(word: &str) -> bool {
    [
        "and", "or", "not", "eq", "ne", "gt", "ge", "lt", "le", "in", "null", "true", "false",
    ]
    .iter()
    .any(|k| k.eq_ignore_ascii_case(word))
}

fn cmp_op(t: &Token<'_>) -> Option<CmpOp> {
    if t.tok != Tok::Ident {
        return None;
    }
    Some(match t.text.to_ascii_lowercase().as_str() {
        "eq" => CmpOp::Eq,
        "ne" => CmpOp::Ne,
        "gt" => CmpOp::Gt,
        "ge" => CmpOp::Ge,
        "lt" => CmpOp::Lt,
        "le" => CmpOp::Le,
        _ => return None,
    })
}

fn op_name(op: CmpOp) -> &'static str {
    match op {
        CmpOp::Eq => "eq",
        CmpOp::Ne => "ne",
        CmpOp::Gt => "gt",
        CmpOp::Ge => "ge",
        CmpOp::Lt => "lt",
        CmpOp::Le => "le",
    }
}

/// Checks a literal against the field's type; `op` is `None` inside an `in` list.
fn check_value<F: Field>(
    field: F,
    op: Option<CmpOp>,
    lit: Literal,
    tok: &Token<'_>,
) -> Result<Value, Error> {
    let name = field.name();
    let ordering = op.filter(|o| !matches!(o, CmpOp::Eq | CmpOp::Ne));
    if let Literal::Null = lit {
        return match (op, ordering) {
            (None, _) => Err(Error::OData(format!(
                "null is not allowed in the 'in' list for '{name}'"
            ))),
            (Some(_), Some(o)) => Err(Error::OData(format!(
                "null cannot be compared with '{}'; use 'eq null' or 'ne null' for '{name}'",
                op_name(o)
            ))),
            (Some(_), None) => Ok(Value::Null),
        };
    }
    let invalid = |expected: &str| {
        Error::OData(format!(
            "The value {} is not valid for '{name}'; expected {expected}",
            tok.text
        ))
    };
    match field.field_type() {
        FieldType::String => match lit {
            Literal::Str(s) => Ok(Value::String(s)),
            _ => Err(invalid("a string in single quotes")),
        },
        FieldType::Enum(allowed) => {
            if let Some(o) = ordering {
                return Err(Error::OData(format!(
                    "The operator '{}' cannot be applied to '{name}'; use eq, ne or in",
                    op_name(o)
                )));
            }
            let expected = format!("one of {}", allowed.join(", "));
            match lit {
                Literal::Str(s) => allowed
                    .iter()
                    .find(|a| a.eq_ignore_ascii_case(&s))
                    .map(|a| Value::String((*a).to_string()))
                    .ok_or_else(|| invalid(&expected)),
                _ => Err(invalid(&expected)),
            }
        }
        FieldType::Timestamp => {
            let expected = "an RFC 3339 timestamp such as 2024-01-01T00:00:00Z";
            match lit {
                Literal::Time(t) => Ok(Value::Timestamp(t)),
                Literal::Str(s) => Timestamp::parse(&s)
                    .map(Value::Timestamp)
                    .ok_or_else(|| invalid(expected)),
                _ => Err(invalid(expected)),
            }
        }
        FieldType::Integer => match lit {
            Literal::Int(i) => Ok(Value::Integer(i)),
            _ => Err(invalid("an integer")),
        },
        // Collections never reach here: `property_predicate` routes them to `any`.
        FieldType::StringCollection => Err(invalid("a lambda such as any(t: t eq 'value')")),
    }
}
