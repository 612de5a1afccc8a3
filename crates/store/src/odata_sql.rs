//! Translates a parsed OData filter into a SQL `WHERE` fragment. Every value goes into
//! [`SqlFragment::binds`]; the SQL text holds only column names (from code, via the
//! caller's `column` mapping), operators and placeholders.

use appfence_core::odata::{CmpOp, Direction, Expr, Field, KeyValue, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// `?` placeholders.
    Sqlite,
    /// `$n` placeholders.
    Postgres,
}

/// A value bound to a placeholder, in placeholder order.
#[derive(Clone, Debug, PartialEq)]
pub enum Bind {
    Text(String),
    Int(i64),
}

/// How a field is stored, which decides the SQL that compares it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Column {
    /// Compared case-sensitively.
    Text(&'static str),
    /// Compared case-insensitively (e.g. DNS names, requestor).
    NoCaseText(&'static str),
    /// Integers, and timestamps stored as i64 100-ns ticks (`Value::Timestamp` binds its ticks).
    Int(&'static str),
    /// A JSON array of strings in a TEXT (SQLite) / JSONB (Postgres) column; only
    /// `Expr::Contains` applies.
    JsonTextArray(&'static str),
}

#[derive(Clone, Debug, PartialEq)]
pub struct SqlFragment {
    pub sql: String,
    pub binds: Vec<Bind>,
}

/// SQL for a predicate that applies to no column kind: NULL, so it matches no row even
/// under `NOT`. The parser never produces such predicates; this only keeps a wrong
/// column mapping from widening a query.
const UNKNOWN: &str = "CAST(NULL AS BOOLEAN)";

/// The `WHERE` condition for `expr`, fully parenthesised, with its binds in placeholder order.
/// `first_placeholder` is the 1-based number of the first `$n` (Postgres); ignored for SQLite.
pub fn filter_sql<F: Field>(
    expr: &Expr<F>,
    column: impl Fn(F) -> Column,
    dialect: Dialect,
    first_placeholder: usize,
) -> SqlFragment {
    let mut w = Writer {
        dialect,
        next: first_placeholder,
        sql: String::new(),
        binds: Vec::new(),
    };
    w.expr(expr, &column);
    SqlFragment {
        sql: w.sql,
        binds: w.binds,
    }
}

/// What every stored row of a collection guarantees beyond its schema, from which a
/// filter implies further conditions that an index can start from. The conditions
/// never change which rows match (each is implied by a conjunct the filter requires).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Implied {
    /// `upper >= lower` on every row, both integers and NOT NULL (an action's last
    /// update is never before its creation): `upper < x` implies `lower < x`, and
    /// `upper <= x` or `upper = x` implies `lower <= x`.
    AtLeast {
        upper: &'static str,
        lower: &'static str,
    },
    /// An equality with a value on this column implies `col IS NOT NULL`, which a partial
    /// index `WHERE col IS NOT NULL` needs to be seen as usable.
    NotNullWhenEqual(&'static str),
}

/// [`filter_sql`] and, ANDed to it, every condition that `implied` derives from the
/// filter's top-level conjuncts (only those: a comparison under `OR` or `NOT` implies
/// nothing about every matching row).
pub fn filter_with_implied<F: Field>(
    expr: &Expr<F>,
    column: impl Fn(F) -> Column,
    implied: &[Implied],
    dialect: Dialect,
    first_placeholder: usize,
) -> SqlFragment {
    let mut w = Writer {
        dialect,
        next: first_placeholder,
        sql: String::new(),
        binds: Vec::new(),
    };
    w.expr(expr, &column);
    let mut extra = Vec::new();
    if !implied.is_empty() {
        let mut conjuncts = Vec::new();
        top_level_conjuncts(expr, &mut conjuncts);
        for c in conjuncts {
            let Expr::Compare { field, op, value } = c else {
                continue;
            };
            let col = column(*field);
            for rule in implied {
                match (*rule, col) {
                    (Implied::AtLeast { upper, lower }, Column::Int(c)) if c == upper => {
                        let cmp = match op {
                            CmpOp::Lt => "<",
                            CmpOp::Le | CmpOp::Eq => "<=",
                            _ => continue,
                        };
                        match int_value(value) {
                            Some(v @ (Value::Integer(_) | Value::Timestamp(_))) => {
                                let p = w.bind_value(&v);
                                extra.push(format!("({lower} {cmp} {p})"));
                            }
                            _ => {}
                        }
                    }
                    (
                        Implied::NotNullWhenEqual(n),
                        Column::Text(c) | Column::NoCaseText(c) | Column::Int(c),
                    ) if c == n && *op == CmpOp::Eq && *value != Value::Null => {
                        extra.push(format!("({c} IS NOT NULL)"));
                    }
                    _ => {}
                }
            }
        }
    }
    let sql = if extra.is_empty() {
        w.sql
    } else {
        format!("({} AND {})", w.sql, extra.join(" AND "))
    };
    SqlFragment {
        sql,
        binds: w.binds,
    }
}

/// The operands of the top-level `AND`s of `e` (`e` itself if it is no `AND`).
fn top_level_conjuncts<'e, F>(e: &'e Expr<F>, out: &mut Vec<&'e Expr<F>>) {
    match e {
        Expr::And(a, b) => {
            top_level_conjuncts(a, out);
            top_level_conjuncts(b, out);
        }
        other => out.push(other),
    }
}

/// ORDER BY list (without the keywords), e.g. `created DESC NULLS LAST, seq ASC NULLS FIRST`;
/// callers append their own tie-breaker. Nulls sort as the smallest value, as OData
/// specifies (SQLite's default, Postgres's opposite, hence explicit). Case-insensitive
/// text sorts by `col COLLATE NOCASE` in SQLite and `lower(col)` in Postgres: the same
/// order (both fold ASCII only), each what that dialect's indexes serve.
pub fn order_sql<F: Field>(
    order: &[(F, Direction)],
    column: impl Fn(F) -> Column,
    dialect: Dialect,
) -> String {
    order
        .iter()
        .map(|&(field, dir)| {
            let key = key_expr(column(field), dialect);
            match dir {
                Direction::Asc => format!("{key} ASC NULLS FIRST"),
                Direction::Desc => format!("{key} DESC NULLS LAST"),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a column sorts and compares by.
fn key_expr(col: Column, dialect: Dialect) -> String {
    match (col, dialect) {
        (Column::NoCaseText(c), Dialect::Sqlite) => format!("{c} COLLATE NOCASE"),
        (Column::NoCaseText(c), Dialect::Postgres) => format!("lower({c})"),
        (Column::Text(c) | Column::Int(c) | Column::JsonTextArray(c), _) => c.to_string(),
    }
}

/// One key of a page's order: a column, its direction, and whether it holds nulls
/// (which sort first ascending and last descending).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SortKey {
    pub col: Column,
    pub dir: Direction,
    pub nullable: bool,
}

impl SortKey {
    /// The column as stored (what a continuation records).
    pub fn raw(&self) -> &'static str {
        match self.col {
            Column::Text(c) | Column::NoCaseText(c) | Column::Int(c) | Column::JsonTextArray(c) => {
                c
            }
        }
    }
}

/// A requested order in SQL: its fields, then the tie-break, which runs in the
/// direction of the last field. So one index per field (`tenant, field, tie-break`)
/// serves both directions, forwards or backwards, and an insert maintains one index
/// per orderable field, not two.
pub fn order_by_sql<F: Field>(
    order: &[(F, Direction)],
    column: impl Fn(F) -> Column,
    tiebreak: SortKey,
    dialect: Dialect,
) -> String {
    let tiebreak = following(order, tiebreak);
    let dir = match tiebreak.dir {
        Direction::Asc => "ASC",
        Direction::Desc => "DESC",
    };
    format!(
        "{}, {} {dir}",
        order_sql(order, column, dialect),
        key_expr(tiebreak.col, dialect)
    )
}

/// The tie-break in the direction of the order's last field.
fn following<F: Field>(order: &[(F, Direction)], tiebreak: SortKey) -> SortKey {
    SortKey {
        dir: order.last().map_or(tiebreak.dir, |&(_, dir)| dir),
        ..tiebreak
    }
}

/// The keys of a requested order followed by the tie-break (in the direction of the
/// last field, as [`order_by_sql`] sorts); `nullable` names the columns that may hold
/// NULL.
pub fn sort_keys<F: Field>(
    order: &[(F, Direction)],
    column: impl Fn(F) -> Column,
    nullable: &[&str],
    tiebreak: SortKey,
) -> Vec<SortKey> {
    let mut keys: Vec<SortKey> = order
        .iter()
        .map(|&(field, dir)| {
            let col = column(field);
            let mut key = SortKey {
                col,
                dir,
                nullable: false,
            };
            key.nullable = nullable.contains(&key.raw());
            key
        })
        .collect();
    keys.push(following(order, tiebreak));
    keys
}

/// The condition "the row sorts strictly after the row whose key is `values`" under
/// `keys` (a keyset continuation), with a leading bound on the first key that an index
/// on it can range over. `Err` says why `values` cannot be a key of this order (wrong
/// count or kind).
pub fn after_sql(
    keys: &[SortKey],
    values: &[KeyValue],
    dialect: Dialect,
    first_placeholder: usize,
) -> Result<SqlFragment, String> {
    if keys.len() != values.len() {
        return Err(format!(
            "it holds {} sort keys where this query has {}",
            values.len(),
            keys.len()
        ));
    }
    for (k, v) in keys.iter().zip(values) {
        let fits = match (k.col, v) {
            (_, KeyValue::Null) => k.nullable,
            (Column::Int(_), KeyValue::Int(_)) => true,
            (Column::Text(_) | Column::NoCaseText(_), KeyValue::Text(_)) => true,
            _ => false,
        };
        if !fits {
            return Err(format!("its value for {} does not fit", k.raw()));
        }
    }
    let mut w = Writer {
        dialect,
        next: first_placeholder,
        sql: String::new(),
        binds: Vec::new(),
    };
    // PostgreSQL: where every key has one direction and none holds NULL, "after" is one
    // row-value comparison, which a B-tree index on the keys (in that order) seeks to
    // exactly, instead of ranging over the first key only.
    let one_direction = keys.iter().all(|k| k.dir == keys[0].dir && !k.nullable);
    if dialect == Dialect::Postgres && keys.len() > 1 && one_direction {
        let left: Vec<String> = keys.iter().map(|k| key_expr(k.col, dialect)).collect();
        let right: Vec<String> = keys
            .iter()
            .zip(values)
            .map(|(k, v)| w.bind_key(k, v))
            .collect();
        let op = match keys[0].dir {
            Direction::Asc => ">",
            Direction::Desc => "<",
        };
        return Ok(SqlFragment {
            sql: format!("(({}) {op} ({}))", left.join(", "), right.join(", ")),
            binds: w.binds,
        });
    }
    // The bound: at or after the first key's value.
    let first = &keys[0];
    let bound = w.key_bound(first, &values[0]);
    let rest = w.after_from(keys, values);
    let sql = match bound {
        Some(b) => format!("({b} AND {rest})"),
        None => rest,
    };
    Ok(SqlFragment {
        sql,
        binds: w.binds,
    })
}

/// A value compared with an integer column: integers and timestamps as they are, a
/// string holding an integer (MDE writes indicator ids as strings) as that integer;
/// `None` for anything else (it matches no row).
fn int_value(v: &Value) -> Option<Value> {
    match v {
        Value::String(s) => s.trim().parse::<i64>().ok().map(Value::Integer),
        other => Some(other.clone()),
    }
}

struct Writer {
    dialect: Dialect,
    /// Number of the next Postgres placeholder.
    next: usize,
    sql: String,
    binds: Vec<Bind>,
}

impl Writer {
    /// Records a bind and returns its placeholder.
    fn bind(&mut self, b: Bind) -> String {
        self.binds.push(b);
        match self.dialect {
            Dialect::Sqlite => "?".to_string(),
            Dialect::Postgres => {
                let p = format!("${}", self.next);
                self.next += 1;
                p
            }
        }
    }

    fn bind_key(&mut self, k: &SortKey, v: &KeyValue) -> String {
        let p = match v {
            KeyValue::Int(i) => self.bind(Bind::Int(*i)),
            KeyValue::Text(t) => self.bind(Bind::Text(t.clone())),
            KeyValue::Null => "NULL".to_string(),
        };
        match (k.col, self.dialect) {
            (Column::NoCaseText(_), Dialect::Postgres) => format!("lower({p})"),
            _ => p,
        }
    }

    /// `key` at or after `v` (`None`: no bound helps).
    fn key_bound(&mut self, k: &SortKey, v: &KeyValue) -> Option<String> {
        let e = key_expr(k.col, self.dialect);
        match (k.dir, v) {
            (Direction::Asc, KeyValue::Null) => None,
            (Direction::Asc, v) => Some(format!("{e} >= {}", self.bind_key(k, v))),
            (Direction::Desc, KeyValue::Null) => Some(format!("{} IS NULL", k.raw())),
            (Direction::Desc, _) if k.nullable => None,
            (Direction::Desc, v) => Some(format!("{e} <= {}", self.bind_key(k, v))),
        }
    }

    /// Strictly after `values` under `keys`: after on the first key, or equal on it and
    /// after on the rest.
    fn after_from(&mut self, keys: &[SortKey], values: &[KeyValue]) -> String {
        let (k, v) = (&keys[0], &values[0]);
        let e = key_expr(k.col, self.dialect);
        let strictly = match (k.dir, v) {
            (Direction::Asc, KeyValue::Null) => format!("{} IS NOT NULL", k.raw()),
            (Direction::Asc, v) => format!("{e} > {}", self.bind_key(k, v)),
            (Direction::Desc, KeyValue::Null) => "1 = 0".to_string(),
            (Direction::Desc, v) if k.nullable => {
                format!("({e} < {} OR {} IS NULL)", self.bind_key(k, v), k.raw())
            }
            (Direction::Desc, v) => format!("{e} < {}", self.bind_key(k, v)),
        };
        if keys.len() == 1 {
            return format!("({strictly})");
        }
        let equal = match v {
            KeyValue::Null => format!("{} IS NULL", k.raw()),
            v => format!("{e} = {}", self.bind_key(k, v)),
        };
        let rest = self.after_from(&keys[1..], &values[1..]);
        format!("({strictly} OR ({equal} AND {rest}))")
    }

    fn bind_value(&mut self, v: &Value) -> String {
        match v {
            Value::String(s) => self.bind(Bind::Text(s.clone())),
            Value::Integer(i) => self.bind(Bind::Int(*i)),
            Value::Timestamp(t) => self.bind(Bind::Int(t.ticks())),
            Value::Null => "NULL".to_string(),
        }
    }

    /// Writes one node, always wrapped in parentheses.
    fn expr<F: Field>(&mut self, e: &Expr<F>, column: &impl Fn(F) -> Column) {
        self.sql.push('(');
        match e {
            Expr::And(a, b) | Expr::Or(a, b) => {
                self.expr(a, column);
                self.sql.push_str(if matches!(e, Expr::And(..)) {
                    " AND "
                } else {
                    " OR "
                });
                self.expr(b, column);
            }
            Expr::Not(a) => {
                self.sql.push_str("NOT ");
                self.expr(a, column);
            }
            Expr::Compare { field, op, value } => self.compare(column(*field), *op, value),
            Expr::In { field, values } => self.in_list(column(*field), values),
            Expr::StartsWith { field, prefix } => self.starts_with(column(*field), prefix),
            Expr::Contains { field, value } => self.contains(column(*field), value),
        }
        self.sql.push(')');
    }

    fn compare(&mut self, col: Column, op: CmpOp, value: &Value) {
        let op = match (op, value) {
            (CmpOp::Eq, Value::Null) => return self.push_col(col, " IS NULL"),
            (CmpOp::Ne, Value::Null) => return self.push_col(col, " IS NOT NULL"),
            (CmpOp::Eq, _) => "=",
            (CmpOp::Ne, _) => "<>",
            (CmpOp::Gt, _) => ">",
            (CmpOp::Ge, _) => ">=",
            (CmpOp::Lt, _) => "<",
            (CmpOp::Le, _) => "<=",
        };
        let sql = match col {
            Column::Int(c) => match int_value(value) {
                Some(v) => format!("{c} {op} {}", self.bind_value(&v)),
                None => UNKNOWN.to_string(),
            },
            Column::Text(c) => format!("{c} {op} {}", self.bind_value(value)),
            Column::NoCaseText(c) => {
                let p = self.bind_value(value);
                match self.dialect {
                    Dialect::Sqlite => format!("{c} {op} {p} COLLATE NOCASE"),
                    Dialect::Postgres => format!("lower({c}) {op} lower({p})"),
                }
            }
            Column::JsonTextArray(_) => UNKNOWN.to_string(),
        };
        self.sql.push_str(&sql);
    }

    /// `col IS NULL` and the like, which have the same shape for every scalar column.
    fn push_col(&mut self, col: Column, suffix: &str) {
        match col {
            Column::Text(c) | Column::NoCaseText(c) | Column::Int(c) => {
                self.sql.push_str(c);
                self.sql.push_str(suffix);
            }
            Column::JsonTextArray(_) => self.sql.push_str(UNKNOWN),
        }
    }

    fn in_list(&mut self, col: Column, values: &[Value]) {
        if let Column::Int(_) = col {
            // Ids written as strings ('42') compare as numbers; a string that is no
            // number matches nothing.
            let numbers: Option<Vec<Value>> = values.iter().map(int_value).collect();
            return match numbers {
                Some(numbers) => self.in_values(col, &numbers),
                None => self.sql.push_str(UNKNOWN),
            };
        }
        self.in_values(col, values)
    }

    fn in_values(&mut self, col: Column, values: &[Value]) {
        let (c, nocase) = match col {
            Column::Text(c) | Column::Int(c) => (c, false),
            Column::NoCaseText(c) => (c, true),
            Column::JsonTextArray(_) => return self.sql.push_str(UNKNOWN),
        };
        if values.is_empty() {
            // `IN ()` is not valid everywhere; an empty list matches nothing.
            return self.sql.push_str("1 = 0");
        }
        let lower_binds = nocase && self.dialect == Dialect::Postgres;
        let items: Vec<String> = values
            .iter()
            .map(|v| {
                let p = self.bind_value(v);
                if lower_binds {
                    format!("lower({p})")
                } else {
                    p
                }
            })
            .collect();
        let left = match (nocase, self.dialect) {
            (false, _) => c.to_string(),
            // The left operand's collation governs IN in SQLite.
            (true, Dialect::Sqlite) => format!("{c} COLLATE NOCASE"),
            (true, Dialect::Postgres) => format!("lower({c})"),
        };
        self.sql
            .push_str(&format!("{left} IN ({})", items.join(", ")));
    }

    /// Compares the leading characters instead of using LIKE, so `%` and `_` in the
    /// prefix are plain characters.
    fn starts_with(&mut self, col: Column, prefix: &str) {
        let sql = match (col, self.dialect) {
            (Column::Text(c), Dialect::Sqlite) => {
                let (a, b) = (
                    self.bind(Bind::Text(prefix.into())),
                    self.bind(Bind::Text(prefix.into())),
                );
                format!("substr({c}, 1, length({a})) = {b}")
            }
            (Column::NoCaseText(c), Dialect::Sqlite) => {
                let (a, b) = (
                    self.bind(Bind::Text(prefix.into())),
                    self.bind(Bind::Text(prefix.into())),
                );
                format!("substr({c}, 1, length({a})) = {b} COLLATE NOCASE")
            }
            (Column::Text(c), Dialect::Postgres) => {
                format!("starts_with({c}, {})", self.bind(Bind::Text(prefix.into())))
            }
            (Column::NoCaseText(c), Dialect::Postgres) => {
                format!(
                    "starts_with(lower({c}), lower({}))",
                    self.bind(Bind::Text(prefix.into()))
                )
            }
            (Column::Int(_) | Column::JsonTextArray(_), _) => UNKNOWN.to_string(),
        };
        self.sql.push_str(&sql);
    }

    fn contains(&mut self, col: Column, value: &str) {
        let sql = match (col, self.dialect) {
            (Column::JsonTextArray(c), Dialect::Sqlite) => format!(
                "EXISTS (SELECT 1 FROM json_each({c}) WHERE value = {})",
                self.bind(Bind::Text(value.into()))
            ),
            // `col ? $n` would clash with placeholder syntax in some drivers.
            (Column::JsonTextArray(c), Dialect::Postgres) => format!(
                "{c} @> jsonb_build_array({}::text)",
                self.bind(Bind::Text(value.into()))
            ),
            _ => UNKNOWN.to_string(),
        };
        self.sql.push_str(&sql);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use appfence_core::odata::{parse_query, MachineField as M, Query};
    use appfence_proto::Timestamp;

    /// A mapping with one column of each kind.
    fn col(f: M) -> Column {
        match f {
            M::ComputerDnsName => Column::NoCaseText("dns"),
            M::RbacGroupId => Column::Int("grp"),
            M::LastSeen => Column::Int("last_seen"),
            M::MachineTags => Column::JsonTextArray("tags"),
            _ => Column::Text("id"),
        }
    }

    fn parse(filter: &str) -> Expr<M> {
        let q: Query<M> = parse_query(&[("$filter".to_string(), filter.to_string())]).unwrap();
        q.filter.unwrap()
    }

    fn sql(filter: &str, dialect: Dialect) -> SqlFragment {
        filter_sql(&parse(filter), col, dialect, 1)
    }

    fn text(s: &str) -> Bind {
        Bind::Text(s.to_string())
    }

    #[test]
    fn implied_conditions_come_only_from_top_level_conjuncts() {
        // As if lastSeen >= rbacGroupId held on every row, and dns had a partial index.
        let implied = [
            Implied::AtLeast {
                upper: "last_seen",
                lower: "grp",
            },
            Implied::NotNullWhenEqual("dns"),
        ];
        let with = |f: &str, d| filter_with_implied(&parse(f), col, &implied, d, 1);
        let frag = with("lastSeen lt 2024-01-01T00:00:00Z", Dialect::Postgres);
        assert_eq!(frag.sql, "((last_seen < $1) AND (grp < $2))");
        assert_eq!(frag.binds[0], frag.binds[1]);
        let frag = with(
            "id eq 'a' and (lastSeen le 2024-01-01T00:00:00Z and computerDnsName eq 'X')",
            Dialect::Sqlite,
        );
        assert_eq!(
            frag.sql,
            "(((id = ?) AND ((last_seen <= ?) AND (dns = ? COLLATE NOCASE))) \
             AND (grp <= ?) AND (dns IS NOT NULL))"
        );
        assert_eq!(frag.binds.len(), 4);
        assert_eq!(frag.binds[1], frag.binds[3]);
        assert_eq!(
            with("lastSeen eq 2024-01-01T00:00:00Z", Dialect::Sqlite).sql,
            "((last_seen = ?) AND (grp <= ?))"
        );
        // Nothing is implied under OR or NOT, by a lower bound, or by a comparison with null.
        for f in [
            "lastSeen lt 2024-01-01T00:00:00Z or id eq 'a'",
            "not (lastSeen lt 2024-01-01T00:00:00Z)",
            "lastSeen gt 2024-01-01T00:00:00Z",
            "lastSeen ge 2024-01-01T00:00:00Z",
            "lastSeen ne 2024-01-01T00:00:00Z",
            "lastSeen eq null",
            "computerDnsName eq null",
            "computerDnsName ne 'x'",
            "computerDnsName eq 'x' or id eq 'a'",
        ] {
            for d in [Dialect::Sqlite, Dialect::Postgres] {
                assert_eq!(with(f, d), sql(f, d), "{f}");
            }
        }
    }

    #[test]
    fn continuations_in_one_direction_are_one_row_comparison_in_postgres() {
        let key = |col, dir| SortKey {
            col,
            dir,
            nullable: false,
        };
        let keys = [
            key(Column::NoCaseText("dns"), Direction::Desc),
            key(Column::Int("seq"), Direction::Desc),
        ];
        let values = [KeyValue::Text("a".into()), KeyValue::Int(7)];
        let frag = after_sql(&keys, &values, Dialect::Postgres, 3).unwrap();
        assert_eq!(frag.sql, "((lower(dns), seq) < (lower($3), $4))");
        assert_eq!(frag.binds, vec![text("a"), Bind::Int(7)]);
        let asc = [
            key(Column::Int("grp"), Direction::Asc),
            key(Column::Int("seq"), Direction::Asc),
        ];
        let frag = after_sql(
            &asc,
            &[KeyValue::Int(1), KeyValue::Int(2)],
            Dialect::Postgres,
            1,
        );
        assert_eq!(frag.unwrap().sql, "((grp, seq) > ($1, $2))");
        // Mixed directions, a nullable key, or SQLite: the expanded form.
        let mixed = [keys[0], key(Column::Int("seq"), Direction::Asc)];
        assert!(!after_sql(&mixed, &values, Dialect::Postgres, 1)
            .unwrap()
            .sql
            .starts_with("(("));
        let nullable = [
            SortKey {
                nullable: true,
                ..keys[0]
            },
            keys[1],
        ];
        assert!(!after_sql(&nullable, &values, Dialect::Postgres, 1)
            .unwrap()
            .sql
            .contains(") < ("));
        assert!(!after_sql(&keys, &values, Dialect::Sqlite, 1)
            .unwrap()
            .sql
            .contains(") < ("));
    }

    #[test]
    fn comparisons_in_both_dialects() {
        let f = "id eq 'a' and (grp gt 3 or not lastSeen le 2024-01-01T00:00:00Z)"
            .replace("grp", "rbacGroupId");
        let ticks = Timestamp::parse("2024-01-01T00:00:00Z").unwrap().ticks();
        let binds = vec![text("a"), Bind::Int(3), Bind::Int(ticks)];
        assert_eq!(
            sql(&f, Dialect::Sqlite),
            SqlFragment {
                sql: "((id = ?) AND ((grp > ?) OR (NOT (last_seen <= ?))))".into(),
                binds: binds.clone(),
            }
        );
        assert_eq!(
            sql(&f, Dialect::Postgres),
            SqlFragment {
                sql: "((id = $1) AND ((grp > $2) OR (NOT (last_seen <= $3))))".into(),
                binds,
            }
        );
        // Placeholders continue from the caller's count.
        let frag = filter_sql(&parse(&f), col, Dialect::Postgres, 4);
        assert_eq!(
            frag.sql,
            "((id = $4) AND ((grp > $5) OR (NOT (last_seen <= $6))))"
        );
    }

    #[test]
    fn every_operator() {
        for (word, op) in [
            ("eq", "="),
            ("ne", "<>"),
            ("gt", ">"),
            ("ge", ">="),
            ("lt", "<"),
            ("le", "<="),
        ] {
            let frag = sql(&format!("rbacGroupId {word} 1"), Dialect::Sqlite);
            assert_eq!(frag.sql, format!("(grp {op} ?)"));
            assert_eq!(frag.binds, vec![Bind::Int(1)]);
        }
    }

    #[test]
    fn nulls() {
        let frag = sql("lastSeen eq null or id ne null", Dialect::Postgres);
        assert_eq!(frag.sql, "((last_seen IS NULL) OR (id IS NOT NULL))");
        assert!(frag.binds.is_empty());
        assert_eq!(
            sql("computerDnsName eq null", Dialect::Sqlite).sql,
            "(dns IS NULL)"
        );
    }

    #[test]
    fn case_insensitive_text() {
        let frag = sql("computerDnsName eq 'Srv-1'", Dialect::Sqlite);
        assert_eq!(frag.sql, "(dns = ? COLLATE NOCASE)");
        assert_eq!(frag.binds, vec![text("Srv-1")]);
        assert_eq!(
            sql("computerDnsName ne 'Srv-1'", Dialect::Postgres).sql,
            "(lower(dns) <> lower($1))"
        );
    }

    #[test]
    fn in_lists() {
        let frag = sql("id in ('a','b','c')", Dialect::Sqlite);
        assert_eq!(frag.sql, "(id IN (?, ?, ?))");
        assert_eq!(frag.binds, vec![text("a"), text("b"), text("c")]);
        assert_eq!(
            sql("id in ('a','b')", Dialect::Postgres).sql,
            "(id IN ($1, $2))"
        );
        assert_eq!(
            sql("computerDnsName in ('a','b')", Dialect::Sqlite).sql,
            "(dns COLLATE NOCASE IN (?, ?))"
        );
        assert_eq!(
            sql("computerDnsName in ('a','b')", Dialect::Postgres).sql,
            "(lower(dns) IN (lower($1), lower($2)))"
        );
        let empty: Expr<M> = Expr::In {
            field: M::Id,
            values: vec![],
        };
        let frag = filter_sql(&empty, col, Dialect::Postgres, 1);
        assert_eq!((frag.sql.as_str(), frag.binds.len()), ("(1 = 0)", 0));
    }

    #[test]
    fn starts_with() {
        let frag = sql("startswith(id,'a%_')", Dialect::Sqlite);
        assert_eq!(frag.sql, "(substr(id, 1, length(?)) = ?)");
        assert_eq!(frag.binds, vec![text("a%_"), text("a%_")]);
        assert_eq!(
            sql("startswith(computerDnsName,'A')", Dialect::Sqlite).sql,
            "(substr(dns, 1, length(?)) = ? COLLATE NOCASE)"
        );
        let frag = sql("startswith(id,'a') and id eq 'b'", Dialect::Postgres);
        assert_eq!(frag.sql, "((starts_with(id, $1)) AND (id = $2))");
        assert_eq!(frag.binds, vec![text("a"), text("b")]);
        assert_eq!(
            sql("startswith(computerDnsName,'A')", Dialect::Postgres).sql,
            "(starts_with(lower(dns), lower($1)))"
        );
    }

    #[test]
    fn contains_on_json_arrays() {
        let frag = sql("machineTags/any(t: t eq 'prod')", Dialect::Sqlite);
        assert_eq!(
            frag.sql,
            "(EXISTS (SELECT 1 FROM json_each(tags) WHERE value = ?))"
        );
        assert_eq!(frag.binds, vec![text("prod")]);
        let frag = sql(
            "machineTags/any(t: t eq 'prod') and id eq 'x'",
            Dialect::Postgres,
        );
        assert_eq!(
            frag.sql,
            "((tags @> jsonb_build_array($1::text)) AND (id = $2))"
        );
    }

    #[test]
    fn strings_compared_with_integer_columns_become_integers() {
        // What the parser gives for a field typed as a string but stored as an integer
        // (an indicator's id, which MDE writes as a string).
        let eq = |v: &str| Expr::Compare {
            field: M::RbacGroupId,
            op: CmpOp::Eq,
            value: Value::String(v.into()),
        };
        let frag = filter_sql(&eq("42"), col, Dialect::Postgres, 1);
        assert_eq!(frag.sql, "(grp = $1)");
        assert_eq!(frag.binds, vec![Bind::Int(42)]);
        let list: Expr<M> = Expr::In {
            field: M::RbacGroupId,
            values: vec![Value::String("1".into()), Value::String("2".into())],
        };
        let frag = filter_sql(&list, col, Dialect::Postgres, 1);
        assert_eq!(frag.binds, vec![Bind::Int(1), Bind::Int(2)]);
        let frag = filter_sql(&eq("x"), col, Dialect::Postgres, 1);
        assert_eq!(
            (frag.sql.as_str(), frag.binds.len()),
            ("(CAST(NULL AS BOOLEAN))", 0)
        );
    }

    #[test]
    fn mismatched_columns_match_nothing_without_binds() {
        let e: Expr<M> = Expr::Compare {
            field: M::MachineTags,
            op: CmpOp::Eq,
            value: Value::String("x".into()),
        };
        let frag = filter_sql(&e, col, Dialect::Sqlite, 1);
        assert_eq!(frag.sql, format!("({UNKNOWN})"));
        assert!(frag.binds.is_empty());
        let e: Expr<M> = Expr::In {
            field: M::MachineTags,
            values: vec![Value::String("x".into())],
        };
        assert!(filter_sql(&e, col, Dialect::Postgres, 1).binds.is_empty());
        let e: Expr<M> = Expr::Contains {
            field: M::Id,
            value: "x".into(),
        };
        assert_eq!(
            filter_sql(&e, col, Dialect::Postgres, 1).sql,
            format!("({UNKNOWN})")
        );
        let e: Expr<M> = Expr::StartsWith {
            field: M::RbacGroupId,
            prefix: "1".into(),
        };
        assert_eq!(
            filter_sql(&e, col, Dialect::Sqlite, 1).sql,
            format!("({UNKNOWN})")
        );
    }

    #[test]
    fn hostile_values_stay_in_binds() {
        let hostile = "x' OR 1=1 --";
        let filter = "id eq 'x'' OR 1=1 --' or computerDnsName in ('x'' OR 1=1 --') or \
                      startswith(id,'x'' OR 1=1 --') or machineTags/any(t: t eq 'x'' OR 1=1 --')";
        for dialect in [Dialect::Sqlite, Dialect::Postgres] {
            let frag = sql(filter, dialect);
            assert!(!frag.sql.contains('\''), "{}", frag.sql);
            assert!(!frag.sql.contains("1=1"), "{}", frag.sql);
            assert!(!frag.sql.contains("--"), "{}", frag.sql);
            assert!(
                frag.binds.iter().all(|b| *b == text(hostile)),
                "{:?}",
                frag.binds
            );
        }
    }

    #[test]
    fn order_by() {
        let order = [
            (M::LastSeen, Direction::Desc),
            (M::ComputerDnsName, Direction::Asc),
            (M::Id, Direction::Asc),
        ];
        assert_eq!(
            order_sql(&order, col, Dialect::Postgres),
            "last_seen DESC NULLS LAST, lower(dns) ASC NULLS FIRST, id ASC NULLS FIRST"
        );
        assert_eq!(
            order_sql(&order, col, Dialect::Sqlite),
            "last_seen DESC NULLS LAST, dns COLLATE NOCASE ASC NULLS FIRST, id ASC NULLS FIRST"
        );
        assert_eq!(order_sql::<M>(&[], col, Dialect::Sqlite), "");
    }

    /// Runs translated filters against a real SQLite to prove the SQL is valid and picks
    /// the right rows.
    #[tokio::test]
    async fn runs_against_sqlite() {
        use sqlx::{Connection, SqliteConnection};

        let mut db = SqliteConnection::connect("sqlite::memory:").await.unwrap();
        sqlx::query(
            "CREATE TABLE m (id TEXT NOT NULL, dns TEXT, grp INTEGER NOT NULL, \
             last_seen INTEGER, tags TEXT NOT NULL)",
        )
        .execute(&mut db)
        .await
        .unwrap();
        let t = |s: &str| Timestamp::parse(s).unwrap().ticks();
        // id, dns, grp, last_seen, tags
        type Row = (
            &'static str,
            Option<&'static str>,
            i64,
            Option<i64>,
            &'static str,
        );
        let rows: [Row; 5] = [
            (
                "a",
                Some("Srv-1.corp"),
                0,
                Some(t("2024-01-01T00:00:00Z")),
                r#"["prod","web"]"#,
            ),
            (
                "b",
                Some("srv-2.corp"),
                5,
                Some(t("2024-06-01T00:00:00Z")),
                r#"["dev"]"#,
            ),
            ("c", Some("db%1.corp"), 5, None, "[]"),
            (
                "d",
                None,
                7,
                Some(t("2023-01-01T00:00:00Z")),
                r#"["x' OR 1=1 --"]"#,
            ),
            ("A", Some("srvx"), 0, None, r#"["PROD"]"#),
        ];
        for (id, dns, grp, seen, tags) in rows {
            sqlx::query("INSERT INTO m VALUES (?, ?, ?, ?, ?)")
                .bind(id)
                .bind(dns)
                .bind(grp)
                .bind(seen)
                .bind(tags)
                .execute(&mut db)
                .await
                .unwrap();
        }

        let cases: &[(&str, &[&str])] = &[
            ("id eq 'a'", &["a"]),
            ("id ne 'a'", &["A", "b", "c", "d"]),
            ("computerDnsName eq 'SRV-1.CORP'", &["a"]),
            ("computerDnsName ne 'srv-1.corp'", &["A", "b", "c"]),
            ("computerDnsName eq null", &["d"]),
            ("lastSeen ne null and rbacGroupId ge 5", &["b", "d"]),
            ("lastSeen gt 2023-12-31T00:00:00Z", &["a", "b"]),
            ("lastSeen lt '2024-02-01T00:00:00Z'", &["a", "d"]),
            ("startswith(computerDnsName,'SRV-')", &["a", "b"]),
            ("startswith(computerDnsName,'srv')", &["A", "a", "b"]),
            // `%` and `_` are not wildcards.
            ("startswith(computerDnsName,'db%')", &["c"]),
            ("startswith(computerDnsName,'d_')", &[]),
            ("startswith(id,'A')", &["A"]),
            ("id in ('a','c','zz')", &["a", "c"]),
            ("computerDnsName in ('SRVX','DB%1.CORP')", &["A", "c"]),
            ("rbacGroupId in (0, 7)", &["A", "a", "d"]),
            ("machineTags/any(t: t eq 'prod')", &["a"]),
            ("machineTags/any(t: t eq 'dev' or t eq 'web')", &["a", "b"]),
            ("machineTags/any(t: t eq 'x'' OR 1=1 --')", &["d"]),
            ("id eq 'x'' OR 1=1 --'", &[]),
            ("not (rbacGroupId eq 5 or id eq 'a')", &["A", "d"]),
            (
                "(id eq 'a' or id eq 'b') and not machineTags/any(t: t eq 'dev')",
                &["a"],
            ),
        ];
        for (filter, want) in cases {
            let frag = sql(filter, Dialect::Sqlite);
            let text = format!("SELECT id FROM m WHERE {} ORDER BY id", frag.sql);
            let mut q = sqlx::query_scalar::<_, String>(&text);
            for b in frag.binds {
                q = match b {
                    Bind::Text(s) => q.bind(s),
                    Bind::Int(i) => q.bind(i),
                };
            }
            let got = q
                .fetch_all(&mut db)
                .await
                .unwrap_or_else(|e| panic!("{filter}: {text}: {e}"));
            assert_eq!(got, *want, "{filter} -> {text}");
        }

        // ORDER BY runs too, with nulls first ascending.
        let order = order_sql(
            &[
                (M::LastSeen, Direction::Asc),
                (M::ComputerDnsName, Direction::Desc),
            ],
            col,
            Dialect::Sqlite,
        );
        let ids: Vec<String> =
            sqlx::query_scalar(&format!("SELECT id FROM m ORDER BY {order}, id"))
                .fetch_all(&mut db)
                .await
                .unwrap();
        assert_eq!(ids, ["A", "c", "d", "a", "b"]);

        // Keyset continuation: walking one row at a time after the previous row's key
        // visits every row once, in the full listing's order, for every order shape
        // (nulls first ascending, last descending, case-insensitive text, two keys).
        let tiebreak = SortKey {
            col: Column::Text("id"),
            dir: Direction::Asc,
            nullable: false,
        };
        let nullable = ["dns", "last_seen"];
        let orders: &[&[(M, Direction)]] = &[
            &[(M::LastSeen, Direction::Asc)],
            &[(M::LastSeen, Direction::Desc)],
            &[(M::ComputerDnsName, Direction::Asc)],
            &[(M::ComputerDnsName, Direction::Desc)],
            &[
                (M::RbacGroupId, Direction::Desc),
                (M::LastSeen, Direction::Asc),
            ],
            &[
                (M::RbacGroupId, Direction::Asc),
                (M::ComputerDnsName, Direction::Desc),
            ],
            &[],
        ];
        for order in orders {
            let keys = sort_keys(order, col, &nullable, tiebreak);
            let by = if order.is_empty() {
                "id ASC".to_string()
            } else {
                order_by_sql(order, col, tiebreak, Dialect::Sqlite)
            };
            let picks: Vec<String> = keys.iter().map(|k| k.raw().to_string()).collect();
            let all: Vec<String> = sqlx::query_scalar(&format!("SELECT id FROM m ORDER BY {by}"))
                .fetch_all(&mut db)
                .await
                .unwrap();
            let mut walked = Vec::new();
            let mut after: Option<Vec<KeyValue>> = None;
            loop {
                let (cond, binds) = match &after {
                    None => ("1 = 1".to_string(), Vec::new()),
                    Some(v) => {
                        let f = after_sql(&keys, v, Dialect::Sqlite, 1).unwrap();
                        (f.sql, f.binds)
                    }
                };
                let text = format!(
                    "SELECT id, {} FROM m WHERE {cond} ORDER BY {by} LIMIT 1",
                    picks.join(", ")
                );
                let mut q = sqlx::query(&text);
                for b in &binds {
                    q = match b {
                        Bind::Text(s) => q.bind(s.clone()),
                        Bind::Int(i) => q.bind(*i),
                    };
                }
                let Some(row) = q.fetch_optional(&mut db).await.unwrap() else {
                    break;
                };
                use sqlx::Row;
                walked.push(row.get::<String, _>(0));
                let key = keys
                    .iter()
                    .enumerate()
                    .map(|(i, k)| match k.col {
                        Column::Int(_) => row
                            .get::<Option<i64>, _>(i + 1)
                            .map_or(KeyValue::Null, KeyValue::Int),
                        _ => row
                            .get::<Option<String>, _>(i + 1)
                            .map_or(KeyValue::Null, KeyValue::Text),
                    })
                    .collect();
                after = Some(key);
                assert!(walked.len() <= all.len(), "{order:?}: {walked:?}");
            }
            assert_eq!(walked, all, "{order:?}");
        }
        // A key of the wrong shape is refused, not run.
        let keys = sort_keys(&[(M::LastSeen, Direction::Asc)], col, &nullable, tiebreak);
        assert!(after_sql(&keys, &[KeyValue::Int(1)], Dialect::Sqlite, 1).is_err());
        assert!(after_sql(
            &keys,
            &[KeyValue::Text("x".into()), KeyValue::Text("a".into())],
            Dialect::Sqlite,
            1
        )
        .is_err());
        assert!(after_sql(
            &keys,
            &[KeyValue::Int(1), KeyValue::Null],
            Dialect::Sqlite,
            1
        )
        .is_err());
    }
}
