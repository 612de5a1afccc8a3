//! One page of a tenant's collection: the OData filter and order translated by
//! `odata_sql` (every value bound), `$skip`/`$top` as bound LIMIT/OFFSET, and the count
//! read in the same snapshot as the page.

use appfence_core::odata::{Field, KeyValue, Page, Query, MAX_TOP};
use appfence_core::rbac::DeviceScope;
use appfence_core::Result;
use sqlx::sqlite::{SqliteArguments, SqlitePool, SqliteRow};
use sqlx::Sqlite;

use super::db_err;
use crate::odata_sql::{
    after_sql, filter_with_implied, order_by_sql, sort_keys, Bind, Column, Dialect, Implied,
    SortKey,
};

/// How one collection is stored.
pub(super) struct Collection<F> {
    pub table: &'static str,
    pub columns: &'static str,
    pub column: fn(F) -> Column,
    /// `ORDER BY` when the query names no order: newest first.
    pub default_order: &'static str,
    /// The keys of `default_order`, the tie-break last (for keyset continuations).
    pub default_keys: &'static [SortKey],
    /// Appended to a requested order, in the direction of its last field, so that
    /// pages never overlap or skip rows.
    pub tiebreak_key: SortKey,
    /// The orderable columns that may hold NULL.
    pub nullable: &'static [&'static str],
    /// What the rows guarantee, from which a filter implies conditions an index can use.
    pub implied: &'static [Implied],
    /// Names the collection in error messages.
    pub what: &'static str,
    /// The SQL expression giving a row's device group (`rbacGroupId`), for callers that
    /// may see only some device groups.
    pub device_group: &'static str,
}

type SqliteQuery<'q> = sqlx::query::Query<'q, Sqlite, SqliteArguments<'q>>;

fn bind_all<'q>(mut q: SqliteQuery<'q>, groups: &[i64], binds: &'q [Bind]) -> SqliteQuery<'q> {
    for g in groups {
        q = q.bind(*g);
    }
    for b in binds {
        q = match b {
            Bind::Text(s) => q.bind(s.as_str()),
            Bind::Int(i) => q.bind(*i),
        };
    }
    q
}

pub(super) async fn page<F: Field, T>(
    reader: &SqlitePool,
    c: &Collection<F>,
    tenant_id: &str,
    scope: &DeviceScope,
    query: &Query<F>,
    decode: fn(&SqliteRow) -> Result<T>,
) -> Result<Page<T>> {
    // Placeholders are all plain `?`, bound in text order: the tenant, the visible
    // device groups, the filter's values, then LIMIT and OFFSET. (sqlx numbers a plain
    // `?` by its own count, so a `?N` among them would be bound to the wrong value.)
    let groups: &[i64] = match scope {
        DeviceScope::All => &[],
        DeviceScope::Groups(ids) => ids,
    };
    let mut condition = "tenant_id = ?".to_string();
    if let DeviceScope::Groups(ids) = scope {
        let marks = vec!["?"; ids.len()].join(", ");
        condition.push_str(&format!(" AND {} IN ({marks})", c.device_group));
    }
    let filter = query
        .filter
        .as_ref()
        .map(|e| filter_with_implied(e, c.column, c.implied, Dialect::Sqlite, 2 + groups.len()));
    let binds = match &filter {
        Some(f) => {
            condition.push_str(&format!(" AND ({})", f.sql));
            f.binds.as_slice()
        }
        None => &[][..],
    };
    let (order, keys) = if query.order_by.is_empty() {
        (c.default_order.to_string(), c.default_keys.to_vec())
    } else {
        (
            order_by_sql(&query.order_by, c.column, c.tiebreak_key, Dialect::Sqlite),
            sort_keys(&query.order_by, c.column, c.nullable, c.tiebreak_key),
        )
    };
    // A continuation: only rows after the previous page's last one (the count ignores it).
    let after = query
        .after
        .as_ref()
        .map(|values| after_sql(&keys, values, Dialect::Sqlite, 0))
        .transpose()
        .map_err(|why| {
            appfence_core::Error::OData(format!(
                "The $skiptoken is not valid for this query: {why}"
            ))
        })?;
    let page_condition = match &after {
        Some(a) => format!("{condition} AND {}", a.sql),
        None => condition.clone(),
    };
    let after_binds = after.as_ref().map_or(&[][..], |a| a.binds.as_slice());
    let key_columns: String = keys
        .iter()
        .enumerate()
        .map(|(i, k)| format!(", {} AS appfence_key_{i}", k.raw()))
        .collect();
    let top = query.top.unwrap_or(MAX_TOP);
    let page_sql = format!(
        "SELECT {}{key_columns} FROM {} WHERE {page_condition} ORDER BY {order} LIMIT ? OFFSET ?",
        c.columns, c.table,
    );

    // A read transaction: the page and the count see the same snapshot.
    let mut tx = reader
        .begin()
        .await
        .map_err(db_err("cannot begin a read"))?;
    // One row beyond the page tells whether more remain.
    let mut q = bind_all(sqlx::query(&page_sql).bind(tenant_id), groups, binds);
    for b in after_binds {
        q = match b {
            Bind::Text(s) => q.bind(s.as_str()),
            Bind::Int(i) => q.bind(*i),
        };
    }
    let rows = q
        .bind(i64::from(top) + 1)
        .bind(i64::from(query.skip))
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| with_what(e, "cannot list", c.what))?;
    let more = rows.len() > top as usize;
    let last_key = match rows.get(top as usize) {
        Some(_) if top > 0 => Some(row_key(&rows[top as usize - 1], &keys, c.what)?),
        _ => None,
    };
    let items = rows
        .iter()
        .take(top as usize)
        .map(decode)
        .collect::<Result<Vec<T>>>()?;

    let total = if query.count {
        let count_sql = format!("SELECT COUNT(*) FROM {} WHERE {condition}", c.table);
        let n: i64 = bind_all(sqlx::query(&count_sql).bind(tenant_id), groups, binds)
            .fetch_one(&mut *tx)
            .await
            .and_then(|row| sqlx::Row::try_get(&row, 0))
            .map_err(|e| with_what(e, "cannot count", c.what))?;
        Some(n as u64)
    } else {
        None
    };
    tx.rollback().await.map_err(db_err("cannot end a read"))?;
    Ok(Page {
        items,
        total,
        more,
        last_key,
    })
}

/// The sort key of a row, from the `appfence_key_N` columns the page selects.
fn row_key(row: &SqliteRow, keys: &[SortKey], what: &str) -> Result<Vec<KeyValue>> {
    use sqlx::Row;
    keys.iter()
        .enumerate()
        .map(|(i, k)| {
            let name = format!("appfence_key_{i}");
            let value = match k.col {
                Column::Int(_) => row
                    .try_get::<Option<i64>, _>(name.as_str())
                    .map(|v| v.map_or(KeyValue::Null, KeyValue::Int)),
                _ => row
                    .try_get::<Option<String>, _>(name.as_str())
                    .map(|v| v.map_or(KeyValue::Null, KeyValue::Text)),
            };
            value.map_err(|e| with_what(e, "cannot read the sort key of", what))
        })
        .collect()
}

/// [`db_err`] for a context that names the collection.
fn with_what(e: sqlx::Error, verb: &str, what: &str) -> appfence_core::Error {
    match super::classify(&e) {
        Some(fault) => appfence_core::Error::storage(fault, format!("{verb} {what}: {e}")),
        None => appfence_core::Error::Internal(format!("{verb} {what}: {e}")),
    }
}
