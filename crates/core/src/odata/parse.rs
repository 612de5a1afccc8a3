//! Parser for the OData query options of a collection request.

mod filter;
mod lexer;
#[cfg(test)]
mod properties;

use super::{Direction, Field, Query, MAX_TOP};
use crate::Error;

/// Longest value accepted for any query option, in bytes; with the filter's depth limit
/// this bounds the work and recursion a hostile query can cause.
const MAX_OPTION_LEN: usize = 8 * 1024;

/// Parses the `$filter`, `$top`, `$skip`, `$orderby` and `$count` options from already
/// URL-decoded `(name, value)` pairs. Option names match case-insensitively; any other
/// `$` option, or one given twice, is an `ODataError`; parameters without `$` are ignored.
pub fn parse_query<F: Field>(params: &[(String, String)]) -> Result<Query<F>, Error> {
    let mut query = Query::default();
    let mut seen: Vec<&'static str> = Vec::new();
    for (name, value) in params {
        if !name.starts_with('$') {
            continue;
        }
        let option = match name.to_ascii_lowercase().as_str() {
            "$filter" => "$filter",
            "$top" => "$top",
            "$skip" => "$skip",
            "$orderby" => "$orderby",
            "$count" => "$count",
            "$expand" if !F::expandable().is_empty() => "$expand",
            _ => {
                return Err(Error::OData(format!(
                    "Query option '{name}' is not supported"
                )))
            }
        };
        if seen.contains(&option) {
            return Err(Error::OData(format!(
                "Query option '{option}' was specified more than once"
            )));
        }
        seen.push(option);
        if value.len() > MAX_OPTION_LEN {
            return Err(Error::OData(format!(
                "The value of '{option}' is too long ({} bytes); at most {MAX_OPTION_LEN} are allowed",
                value.len()
            )));
        }
        match option {
            "$filter" => query.filter = Some(filter::parse_filter(value)?),
            "$top" => {
                let top = parse_count_value(option, value)?;
                if top > u64::from(MAX_TOP) {
                    return Err(Error::OData(format!(
                        "The value of $top ({top}) exceeds the limit of {MAX_TOP}"
                    )));
                }
                query.top = Some(top as u32);
            }
            "$skip" => {
                let skip = parse_count_value(option, value)?;
                query.skip = u32::try_from(skip).map_err(|_| {
                    Error::OData(format!("The value of $skip ({skip}) is too large"))
                })?;
            }
            "$orderby" => query.order_by = parse_order_by(value)?,
            "$count" => {
                query.count = match value.trim() {
                    v if v.eq_ignore_ascii_case("true") => true,
                    v if v.eq_ignore_ascii_case("false") => false,
                    v => {
                        return Err(Error::OData(format!(
                            "The value '{v}' is not valid for $count; expected true or false"
                        )))
                    }
                }
            }
            "$expand" => query.expand = parse_expand::<F>(value)?,
            _ => unreachable!("every option named above is handled"),
        }
    }
    Ok(query)
}

/// `property, ...`: each one of the collection's navigation properties, once.
fn parse_expand<F: Field>(value: &str) -> Result<Vec<&'static str>, Error> {
    let mut out = Vec::new();
    for item in value.split(',') {
        let name = item.trim();
        let property = F::expandable()
            .iter()
            .find(|p| p.eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                Error::OData(format!(
                    "Could not find a navigation property named '{}' on type '{}'; $expand supports {}",
                    crate::ids::truncate(name, 64),
                    F::ENTITY,
                    F::expandable().join(", ")
                ))
            })?;
        if !out.contains(property) {
            out.push(*property);
        }
    }
    Ok(out)
}

/// A non-negative integer option (`$top`, `$skip`).
fn parse_count_value(option: &str, value: &str) -> Result<u64, Error> {
    let v = value.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::OData(format!(
            "The value '{v}' is not valid for {option}; expected a non-negative integer"
        )));
    }
    // All digits, so the only possible failure is overflow: saturate, the caller rejects it.
    Ok(v.parse().unwrap_or(u64::MAX))
}

/// `field [asc|desc], ...`
fn parse_order_by<F: Field>(value: &str) -> Result<Vec<(F, Direction)>, Error> {
    let mut order = Vec::new();
    for item in value.split(',') {
        let mut words = item.split_whitespace();
        let Some(name) = words.next() else {
            return Err(Error::OData(format!(
                "The $orderby '{value}' has an empty item; expected 'property [asc|desc]' separated by commas"
            )));
        };
        let field = F::lookup(name).ok_or_else(|| {
            Error::OData(format!(
                "Could not find a property named '{name}' on type '{}'",
                F::ENTITY
            ))
        })?;
        if !field.sortable() {
            return Err(Error::OData(format!(
                "The property '{}' cannot be used in $orderby",
                field.name()
            )));
        }
        let direction = match words.next() {
            None => Direction::Asc,
            Some(d) if d.eq_ignore_ascii_case("asc") => Direction::Asc,
            Some(d) if d.eq_ignore_ascii_case("desc") => Direction::Desc,
            Some(d) => {
                return Err(Error::OData(format!(
                    "The sort direction '{d}' in $orderby is not valid; expected asc or desc"
                )))
            }
        };
        if let Some(extra) = words.next() {
            return Err(Error::OData(format!(
                "Unexpected '{extra}' in $orderby after '{}'; separate properties with commas",
                item.trim()
            )));
        }
        order.push((field, direction));
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::odata::{ActionField as A, CmpOp, Expr, MachineField as M, Value};
    use appfence_proto::Timestamp;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn actions(filter: &str) -> Result<Expr<A>, Error> {
        parse_query::<A>(&params(&[("$filter", filter)])).map(|q| q.filter.unwrap())
    }

    fn machines(filter: &str) -> Result<Expr<M>, Error> {
        parse_query::<M>(&params(&[("$filter", filter)])).map(|q| q.filter.unwrap())
    }

    /// The message of an expected `ODataError`.
    fn err<T: std::fmt::Debug>(r: Result<T, Error>) -> String {
        match r {
            Err(Error::OData(m)) => m,
            other => panic!("expected an ODataError, got {other:?}"),
        }
    }

    fn cmp<F>(field: F, op: CmpOp, value: Value) -> Expr<F> {
        Expr::Compare { field, op, value }
    }

    fn s(v: &str) -> Value {
        Value::String(v.to_string())
    }

    fn and<F>(a: Expr<F>, b: Expr<F>) -> Expr<F> {
        Expr::And(Box::new(a), Box::new(b))
    }

    fn or<F>(a: Expr<F>, b: Expr<F>) -> Expr<F> {
        Expr::Or(Box::new(a), Box::new(b))
    }

    fn not<F>(a: Expr<F>) -> Expr<F> {
        Expr::Not(Box::new(a))
    }

    fn ts(s: &str) -> Value {
        Value::Timestamp(Timestamp::parse(s).unwrap())
    }

    // --- real-world filters ---

    #[test]
    fn machine_and_status() {
        assert_eq!(
            actions("machineId eq 'abc' and status eq 'Pending'").unwrap(),
            and(
                cmp(A::MachineId, CmpOp::Eq, s("abc")),
                cmp(A::Status, CmpOp::Eq, s("Pending"))
            )
        );
    }

    #[test]
    fn type_and_unquoted_timestamp() {
        assert_eq!(
            actions("type eq 'RestrictCodeExecution' and creationDateTimeUtc gt 2024-10-21T11:27:58.1447302Z")
                .unwrap(),
            and(
                cmp(A::Type, CmpOp::Eq, s("RestrictCodeExecution")),
                cmp(A::CreationDateTimeUtc, CmpOp::Gt, ts("2024-10-21T11:27:58.1447302Z"))
            )
        );
    }

    #[test]
    fn status_in_list() {
        assert_eq!(
            actions("status in ('Pending','InProgress')").unwrap(),
            Expr::In {
                field: A::Status,
                values: vec![s("Pending"), s("InProgress")]
            }
        );
    }

    #[test]
    fn startswith_dns_name() {
        assert_eq!(
            machines("startswith(computerDnsName,'srv-')").unwrap(),
            Expr::StartsWith {
                field: M::ComputerDnsName,
                prefix: "srv-".into()
            }
        );
    }

    #[test]
    fn parenthesised_or_with_escaped_quote() {
        assert_eq!(
            actions("(status eq 'Failed' or status eq 'TimeOut') and requestor eq 'O''Brien'")
                .unwrap(),
            and(
                or(
                    cmp(A::Status, CmpOp::Eq, s("Failed")),
                    cmp(A::Status, CmpOp::Eq, s("TimeOut"))
                ),
                cmp(A::Requestor, CmpOp::Eq, s("O'Brien"))
            )
        );
    }

    // --- constructs ---

    #[test]
    fn every_comparison_operator() {
        for (word, op) in [
            ("eq", CmpOp::Eq),
            ("ne", CmpOp::Ne),
            ("gt", CmpOp::Gt),
            ("ge", CmpOp::Ge),
            ("lt", CmpOp::Lt),
            ("le", CmpOp::Le),
        ] {
            assert_eq!(
                actions(&format!("requestor {word} 'x'")).unwrap(),
                cmp(A::Requestor, op, s("x"))
            );
            assert_eq!(
                machines(&format!("rbacGroupId {} 7", word.to_uppercase())).unwrap(),
                cmp(M::RbacGroupId, op, Value::Integer(7))
            );
        }
    }

    #[test]
    fn precedence_not_over_and_over_or() {
        // a or b and not c  ==  a or (b and (not c))
        assert_eq!(
            actions("id eq 'a' or id eq 'b' and not id eq 'c'").unwrap(),
            or(
                cmp(A::Id, CmpOp::Eq, s("a")),
                and(
                    cmp(A::Id, CmpOp::Eq, s("b")),
                    not(cmp(A::Id, CmpOp::Eq, s("c")))
                )
            )
        );
        // Chains associate to the left.
        assert_eq!(
            actions("id eq 'a' and id eq 'b' and id eq 'c'").unwrap(),
            and(
                and(cmp(A::Id, CmpOp::Eq, s("a")), cmp(A::Id, CmpOp::Eq, s("b"))),
                cmp(A::Id, CmpOp::Eq, s("c"))
            )
        );
        // Parentheses override.
        assert_eq!(
            actions("not (id eq 'a' or id eq 'b')").unwrap(),
            not(or(
                cmp(A::Id, CmpOp::Eq, s("a")),
                cmp(A::Id, CmpOp::Eq, s("b"))
            ))
        );
        assert_eq!(
            actions("((id eq 'a'))").unwrap(),
            cmp(A::Id, CmpOp::Eq, s("a"))
        );
        assert_eq!(
            actions("not(id eq 'a')").unwrap(),
            not(cmp(A::Id, CmpOp::Eq, s("a")))
        );
    }

    #[test]
    fn keywords_and_properties_are_case_insensitive() {
        assert_eq!(
            actions("STATUS EQ 'pending' AND NOT MachineID Ne 'm' OR Type In ('isolate')").unwrap(),
            or(
                and(
                    cmp(A::Status, CmpOp::Eq, s("Pending")),
                    not(cmp(A::MachineId, CmpOp::Ne, s("m")))
                ),
                Expr::In {
                    field: A::Type,
                    values: vec![s("Isolate")]
                }
            )
        );
        assert_eq!(
            machines("startsWith(COMPUTERDNSNAME,'a')").unwrap(),
            Expr::StartsWith {
                field: M::ComputerDnsName,
                prefix: "a".into()
            }
        );
    }

    #[test]
    fn string_values_keep_their_case_and_content() {
        assert_eq!(
            actions("id eq 'AbC'").unwrap(),
            cmp(A::Id, CmpOp::Eq, s("AbC"))
        );
        assert_eq!(actions("id eq ''").unwrap(), cmp(A::Id, CmpOp::Eq, s("")));
        assert_eq!(
            actions("id eq ''''").unwrap(),
            cmp(A::Id, CmpOp::Eq, s("'"))
        );
        assert_eq!(
            actions("requestor eq 'a and b or (c)'").unwrap(),
            cmp(A::Requestor, CmpOp::Eq, s("a and b or (c)"))
        );
        assert_eq!(
            actions("requestor eq 'x'' OR 1=1 --'").unwrap(),
            cmp(A::Requestor, CmpOp::Eq, s("x' OR 1=1 --"))
        );
    }

    #[test]
    fn timestamps_quoted_unquoted_and_with_offsets() {
        let want = cmp(
            A::LastUpdateDateTimeUtc,
            CmpOp::Le,
            ts("2024-01-01T00:00:00Z"),
        );
        assert_eq!(
            actions("lastUpdateDateTimeUtc le 2024-01-01T00:00:00Z").unwrap(),
            want
        );
        assert_eq!(
            actions("lastUpdateDateTimeUtc le '2024-01-01T00:00:00Z'").unwrap(),
            want
        );
        assert_eq!(
            actions("lastUpdateDateTimeUtc le 2024-01-01T02:00:00+02:00").unwrap(),
            want
        );
        assert_eq!(
            machines("lastSeen ge 2024-10-21T11:25:48.330819Z").unwrap(),
            cmp(M::LastSeen, CmpOp::Ge, ts("2024-10-21T11:25:48.330819Z"))
        );
        assert_eq!(
            actions("creationDateTimeUtc in ('2024-01-01T00:00:00Z', 2024-01-02T00:00:00Z)")
                .unwrap(),
            Expr::In {
                field: A::CreationDateTimeUtc,
                values: vec![ts("2024-01-01T00:00:00Z"), ts("2024-01-02T00:00:00Z")]
            }
        );
    }

    #[test]
    fn null_comparisons() {
        assert_eq!(
            machines("lastSeen eq null").unwrap(),
            cmp(M::LastSeen, CmpOp::Eq, Value::Null)
        );
        assert_eq!(
            actions("status ne NULL").unwrap(),
            cmp(A::Status, CmpOp::Ne, Value::Null)
        );
        assert_eq!(
            machines("rbacGroupId eq null").unwrap(),
            cmp(M::RbacGroupId, CmpOp::Eq, Value::Null)
        );
    }

    #[test]
    fn integers_including_negative() {
        assert_eq!(
            machines("rbacGroupId in (0, -3, 42)").unwrap(),
            Expr::In {
                field: M::RbacGroupId,
                values: vec![Value::Integer(0), Value::Integer(-3), Value::Integer(42)]
            }
        );
    }

    #[test]
    fn any_lambda_on_collections() {
        assert_eq!(
            machines("machineTags/any(t: t eq 'prod')").unwrap(),
            Expr::Contains {
                field: M::MachineTags,
                value: "prod".into()
            }
        );
        assert_eq!(
            machines("MachineTags/ANY(tag:tag eq 'a' or tag eq 'b') and healthStatus eq 'Active'")
                .unwrap(),
            and(
                or(
                    Expr::Contains {
                        field: M::MachineTags,
                        value: "a".into()
                    },
                    Expr::Contains {
                        field: M::MachineTags,
                        value: "b".into()
                    }
                ),
                cmp(M::HealthStatus, CmpOp::Eq, s("Active"))
            )
        );
    }

    #[test]
    fn startswith_compared_with_booleans() {
        let sw = Expr::StartsWith {
            field: M::ComputerDnsName,
            prefix: "db".into(),
        };
        assert_eq!(
            machines("startswith(computerDnsName,'db') eq true").unwrap(),
            sw
        );
        assert_eq!(
            machines("startswith(computerDnsName,'db') ne false").unwrap(),
            sw
        );
        assert_eq!(
            machines("startswith(computerDnsName,'db') eq false").unwrap(),
            not(sw.clone())
        );
        assert_eq!(
            machines("not startswith(computerDnsName,'db')").unwrap(),
            not(sw)
        );
        let m = err(machines("startswith(computerDnsName,'db') eq 'x'"));
        assert!(m.contains("can only be compared with 'eq true'"), "{m}");
    }

    #[test]
    fn whitespace_is_flexible() {
        assert_eq!(
            actions("  (status   eq\t'Pending')and(id eq 'a')  ").unwrap(),
            and(
                cmp(A::Status, CmpOp::Eq, s("Pending")),
                cmp(A::Id, CmpOp::Eq, s("a"))
            )
        );
    }

    // --- filter errors ---

    #[test]
    fn unknown_property() {
        assert_eq!(
            err(actions("foo eq 'x'")),
            "Could not find a property named 'foo' on type 'MachineAction'"
        );
        assert_eq!(
            err(machines("startswith(nope,'x')")),
            "Could not find a property named 'nope' on type 'Machine'"
        );
        // A MachineAction property is not a Machine property.
        assert!(err(machines("requestor eq 'x'")).contains("'requestor' on type 'Machine'"));
    }

    #[test]
    fn invalid_enum_value_lists_the_allowed_ones() {
        assert_eq!(
            err(actions("status eq 'Done'")),
            "The value 'Done' is not valid for 'status'; expected one of Pending, InProgress, \
             Succeeded, Failed, TimeOut, Cancelled"
        );
        assert!(err(actions("status in ('Pending','Canceled')"))
            .contains("The value 'Canceled' is not valid"));
        assert!(err(actions("type eq 3")).contains("The value 3 is not valid for 'type'"));
        assert_eq!(
            err(actions("status gt 'Pending'")),
            "The operator 'gt' cannot be applied to 'status'; use eq, ne or in"
        );
    }

    #[test]
    fn values_of_the_wrong_type() {
        let m = err(actions("creationDateTimeUtc gt 'yesterday'"));
        assert!(m.starts_with("The value 'yesterday' is not valid for 'creationDateTimeUtc'; expected an RFC 3339"), "{m}");
        assert!(err(actions("creationDateTimeUtc gt 5")).contains("The value 5 is not valid"));
        assert!(err(machines("rbacGroupId eq '5'"))
            .contains("The value '5' is not valid for 'rbacGroupId'; expected an integer"));
        assert!(err(actions("id eq 5")).contains("expected a string in single quotes"));
        assert!(err(actions("id eq 2024-01-01T00:00:00Z")).contains("is not valid for 'id'"));
    }

    #[test]
    fn null_only_with_eq_and_ne() {
        assert_eq!(
            err(machines("lastSeen gt null")),
            "null cannot be compared with 'gt'; use 'eq null' or 'ne null' for 'lastSeen'"
        );
        assert!(err(actions("id in ('a', null)")).contains("null is not allowed in the 'in' list"));
    }

    #[test]
    fn field_must_be_on_the_left() {
        let m = err(actions("'Pending' eq status"));
        assert!(
            m.starts_with("Syntax error at position 0 in '$filter': expected a property name"),
            "{m}"
        );
        assert!(m.contains("must be on the left"), "{m}");
        let m = err(actions("id eq machineId"));
        assert!(
            m.contains("comparing two properties is not supported"),
            "{m}"
        );
    }

    #[test]
    fn syntax_errors_name_position_and_token() {
        assert_eq!(
            err(actions("status eq 'Pending' and")),
            "Syntax error at position 23 in '$filter': expected an expression, found end of input"
        );
        assert_eq!(
            err(actions("machineId eq 'abc' and status eq )")),
            "Syntax error at position 33 in '$filter': expected a value, found ')'"
        );
        assert_eq!(
            err(actions("status 'Pending'")),
            "Syntax error at position 7 in '$filter': expected a comparison operator (eq, ne, gt, ge, \
             lt, le) or 'in', found ''Pending''"
        );
        assert_eq!(
            err(actions("(id eq 'a'")),
            "Syntax error at position 10 in '$filter': expected ')', found end of input"
        );
        assert_eq!(
            err(actions("id eq 'a' id eq 'b'")),
            "Syntax error at position 10 in '$filter': expected 'and', 'or' or the end of the \
             filter, found 'id'"
        );
        assert!(err(actions("id eq 'a' and or id eq 'b'")).contains("position 14"));
        assert!(err(actions("id in 'a'")).contains("expected '(' after 'in'"));
        assert!(err(actions("id in ()")).contains("expected a value, found ')'"));
        assert!(err(actions("id in ('a' 'b')")).contains("expected ',' or ')'"));
        assert!(err(actions("id eq 'abc"))
            .contains("position 6 in '$filter': unterminated string literal"));
        assert!(
            err(actions("id = 'a'")).contains("position 3 in '$filter': unexpected character '='")
        );
        assert!(err(actions(""))
            .contains("position 0 in '$filter': expected an expression, found end of input"));
        assert!(err(actions(")")).contains("expected an expression, found ')'"));
        // Positions count characters, not bytes.
        assert!(err(actions("id eq 'é' x")).contains("position 10"));
    }

    #[test]
    fn unsupported_functions_and_operators() {
        assert_eq!(
            err(machines("contains(computerDnsName,'x')")),
            "The function 'contains' is not supported in $filter; the supported function is startswith"
        );
        assert!(err(machines("startswith(lastSeen,'2024')")).contains("not a string property"));
        assert!(err(machines("startswith(computerDnsName,5)")).contains("expected a quoted string"));
        assert!(err(machines("startswith(computerDnsName 'x')")).contains("expected ','"));
        assert!(err(actions("id has 'x'")).contains("expected a comparison operator"));
    }

    #[test]
    fn collections_only_through_any() {
        assert_eq!(
            err(machines("machineTags eq 'x'")),
            "The property 'machineTags' is a collection and cannot be compared directly; use \
             machineTags/any(t: t eq 'value')"
        );
        assert!(
            err(machines("machineTags/all(t: t eq 'x')")).contains("expected 'any', found 'all'")
        );
        assert!(err(machines("machineTags/any(t: t ne 'x')")).contains("expected 'eq', found 'ne'"));
        assert!(err(machines("machineTags/any(t: x eq 'x')"))
            .contains("expected the lambda variable 't'"));
        assert!(err(machines("machineTags/any(t: t eq 5)")).contains("expected a quoted string"));
        assert!(err(machines("machineTags/any(t: t eq 'a' and t eq 'b')"))
            .contains("expected ')' or 'or'"));
        assert!(err(machines("machineTags/any()")).contains("expected a lambda variable name"));
        assert!(err(machines("status/any(t: t eq 'x')")).contains("'status' on type 'Machine'"));
        assert!(err(machines("healthStatus/any(t: t eq 'x')"))
            .contains("expected a comparison operator"));
    }

    #[test]
    fn hostile_inputs_are_bounded() {
        let deep = format!("{}id eq 'a'{}", "(".repeat(65), ")".repeat(65));
        let m = err(actions(&deep));
        assert!(m.contains("nested more than 64 levels"), "{m}");
        let ok = format!("{}id eq 'a'{}", "(".repeat(64), ")".repeat(64));
        assert_eq!(actions(&ok).unwrap(), cmp(A::Id, CmpOp::Eq, s("a")));
        let nots = format!("{}id eq 'a'", "not ".repeat(100));
        assert!(err(actions(&nots)).contains("nested more than 64 levels"));
        // Far deeper than any stack could take, rejected by length before parsing.
        let huge = "(".repeat(100_000);
        assert!(err(actions(&huge)).starts_with("The value of '$filter' is too long"));
        // Long but flat filters are fine up to the limit.
        let terms: Vec<String> = (0..500).map(|i| format!("id eq '{i}'")).collect();
        let long = terms.join(" or ");
        assert!(long.len() < 8192);
        assert!(actions(&long).is_ok());
    }

    // --- the other options ---

    #[test]
    fn top_skip_orderby_count() {
        let q = parse_query::<A>(&params(&[
            ("$top", "10"),
            ("$skip", "20"),
            ("$orderby", "creationDateTimeUtc desc, Status,id ASC"),
            ("$count", "true"),
            ("api-version", "1.0"),
        ]))
        .unwrap();
        assert_eq!(q.filter, None);
        assert_eq!(q.top, Some(10));
        assert_eq!(q.skip, 20);
        assert_eq!(
            q.order_by,
            vec![
                (A::CreationDateTimeUtc, Direction::Desc),
                (A::Status, Direction::Asc),
                (A::Id, Direction::Asc)
            ]
        );
        assert!(q.count);
        let q = parse_query::<A>(&params(&[("$count", "FALSE"), ("$TOP", "0")])).unwrap();
        assert!(!q.count);
        assert_eq!(q.top, Some(0));
        assert_eq!(parse_query::<A>(&[]).unwrap(), Query::default());
    }

    #[test]
    fn top_limit() {
        let q = parse_query::<A>(&params(&[("$top", "10000")])).unwrap();
        assert_eq!(q.top, Some(MAX_TOP));
        assert_eq!(
            err(parse_query::<A>(&params(&[("$top", "10001")]))),
            "The value of $top (10001) exceeds the limit of 10000"
        );
        assert!(err(parse_query::<A>(&params(&[(
            "$top",
            "99999999999999999999999"
        )])))
        .contains("exceeds the limit of 10000"));
        assert_eq!(
            err(parse_query::<A>(&params(&[("$top", "-1")]))),
            "The value '-1' is not valid for $top; expected a non-negative integer"
        );
        assert!(err(parse_query::<A>(&params(&[("$top", "")]))).contains("non-negative integer"));
        assert!(err(parse_query::<A>(&params(&[("$top", "1.5")]))).contains("non-negative integer"));
    }

    #[test]
    fn skip_errors() {
        assert!(err(parse_query::<A>(&params(&[("$skip", "abc")]))).contains("not valid for $skip"));
        assert!(err(parse_query::<A>(&params(&[("$skip", "5000000000")])))
            .contains("$skip (5000000000) is too large"));
    }

    #[test]
    fn orderby_errors() {
        assert_eq!(
            err(parse_query::<A>(&params(&[("$orderby", "bogus desc")]))),
            "Could not find a property named 'bogus' on type 'MachineAction'"
        );
        assert_eq!(
            err(parse_query::<M>(&params(&[("$orderby", "machineTags")]))),
            "The property 'machineTags' cannot be used in $orderby"
        );
        assert!(
            err(parse_query::<A>(&params(&[("$orderby", "id sideways")])))
                .contains("sort direction 'sideways'")
        );
        assert!(
            err(parse_query::<A>(&params(&[("$orderby", "id desc status")])))
                .contains("Unexpected 'status'")
        );
        assert!(err(parse_query::<A>(&params(&[("$orderby", "id,")]))).contains("empty item"));
        assert!(err(parse_query::<A>(&params(&[("$orderby", "")]))).contains("empty item"));
    }

    #[test]
    fn count_errors() {
        assert_eq!(
            err(parse_query::<A>(&params(&[("$count", "yes")]))),
            "The value 'yes' is not valid for $count; expected true or false"
        );
    }

    #[test]
    fn unsupported_and_repeated_options() {
        for opt in ["$select", "$expand", "$search", "$apply"] {
            assert_eq!(
                err(parse_query::<A>(&params(&[(opt, "x")]))),
                format!("Query option '{opt}' is not supported")
            );
        }
        assert_eq!(
            err(parse_query::<A>(&params(&[("$top", "1"), ("$Top", "2")]))),
            "Query option '$top' was specified more than once"
        );
        assert!(err(parse_query::<A>(&params(&[
            ("$filter", "id eq 'a'"),
            ("$filter", "id eq 'b'")
        ])))
        .contains("'$filter' was specified more than once"));
        // Without `$` a parameter is not an OData option.
        let q = parse_query::<A>(&params(&[("filter", "garbage"), ("top", "x")])).unwrap();
        assert_eq!(q, Query::default());
    }

    #[test]
    fn filter_errors_win_over_later_options() {
        let m = err(parse_query::<A>(&params(&[
            ("$filter", "nope eq 1"),
            ("$top", "5"),
        ])));
        assert!(m.contains("'nope'"));
    }
}
