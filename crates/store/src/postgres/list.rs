//! One page of a tenant's collection: the OData filter and order translated by
//! `odata_sql` (every value bound), `$skip`/`$top` as bound LIMIT/OFFSET, and the count
//! read in the same snapshot as the page (a REPEATABLE READ read-only transaction).

use appfence_core::odata::{Field, KeyValue, Page, Query, MAX_TOP};
use appfence_core::rbac::DeviceScope;
use appfence_core::Result;
use sqlx::postgres::{PgArguments, PgPool, PgRow};
use sqlx::Postgres;

use super::{ctx, read, Fail};
use crate::odata_sql::{
    after_sql, filter_with_implied, order_by_sql, sort_keys, Bind, Column, Dialect, Implied,
    SortKey,
};

/// How one collection is stored.
pub(super) struct Collection<F> {
    /// A table or a subquery with an alias.
    pub table: &'static str,
    pub columns: &'static str,
    pub column: fn(F) -> Column,
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
    pub what: &'static str,
    pub device_group: &'static str,
}

type PgQuery<'q> = sqlx::query::Query<'q, Postgres, PgArguments>;

fn bind_all<'q>(mut q: PgQuery<'q>, groups: &'q [i64], binds: &'q [Bind]) -> PgQuery<'q> {
    if !groups.is_empty() {
        q = q.bind(groups);
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
    pool: &PgPool,
    c: &Collection<F>,
    tenant_id: &str,
    scope: &DeviceScope,
    query: &Query<F>,
    decode: fn(&PgRow) -> Result<T>,
) -> Result<Page<T>> {
    // $1 the tenant, $2 the visible device groups (an array) if scoped, then the
    // filter's values, then LIMIT and OFFSET.
    let groups: &[i64] = match scope {
        DeviceScope::All => &[],
        DeviceScope::Groups(ids) => ids,
    };
    let mut condition = "tenant_id = $1".to_string();
    let mut next = 2;
    if !groups.is_empty() {
        condition.push_str(&format!(" AND {} = ANY($2)", c.device_group));
        next = 3;
    }
    let filter = query
        .filter
        .as_ref()
        .map(|e| filter_with_implied(e, c.column, c.implied, Dialect::Postgres, next));
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
            order_by_sql(&query.order_by, c.column, c.tiebreak_key, Dialect::Postgres),
            sort_keys(&query.order_by, c.column, c.nullable, c.tiebreak_key),
        )
    };
    // A continuation: only rows after the previous page's last one (the count ignores it).
    let continuation = query
        .after
        .as_ref()
        .map(|values| after_sql(&keys, values, Dialect::Postgres, next + binds.len()))
        .transpose()
        .map_err(|why| {
            appfence_core::Error::OData(format!(
                "The $skiptoken is not valid for this query: {why}"
            ))
        })?;
    let page_condition = match &continuation {
        Some(a) => format!("{condition} AND {}", a.sql),
        None => condition.clone(),
    };
    let after_binds = continuation
        .as_ref()
        .map_or(&[][..], |a| a.binds.as_slice());
    let after = next + binds.len() + after_binds.len();
    let key_columns: String = keys
        .iter()
        .enumerate()
        .map(|(i, k)| format!(", {} AS appfence_key_{i}", k.raw()))
        .collect();
    let top = query.top.unwrap_or(MAX_TOP);
    let page_sql = format!(
        "SELECT {}{key_columns} FROM {} WHERE {page_condition} ORDER BY {order} LIMIT ${} OFFSET ${}",
        c.columns,
        c.table,
        after,
        after + 1
    );
    read(async {
        let mut tx = pool.begin().await.map_err(ctx("cannot begin a read"))?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(ctx("cannot begin a read"))?;
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
            .map_err(|e| Fail::Db(c.what, e))?;
        let more = rows.len() > top as usize;
        let last_key = match rows.get(top as usize) {
            Some(_) if top > 0 => {
                Some(row_key(&rows[top as usize - 1], &keys).map_err(|e| Fail::Db(c.what, e))?)
            }
            _ => None,
        };
        let items = rows
            .iter()
            .take(top as usize)
            .map(decode)
            .collect::<Result<Vec<T>>>()?;
        let total = if query.count {
            let count_sql = format!("SELECT COUNT(*) FROM {} WHERE {condition}", c.table);
            let row = bind_all(sqlx::query(&count_sql).bind(tenant_id), groups, binds)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| Fail::Db(c.what, e))?;
            let n: i64 = sqlx::Row::try_get(&row, 0).map_err(|e| Fail::Db(c.what, e))?;
            Some(n as u64)
        } else {
            None
        };
        tx.rollback().await.map_err(ctx("cannot end a read"))?;
        Ok(Page {
            items,
            total,
            more,
            last_key,
        })
    })
    .await
}

/// The sort key of a row, from the `appfence_key_N` columns the page selects.
fn row_key(row: &PgRow, keys: &[SortKey]) -> Result<Vec<KeyValue>, sqlx::Error> {
    use sqlx::Row;
    keys.iter()
        .enumerate()
        .map(|(i, k)| {
            let name = format!("appfence_key_{i}");
            Ok(match k.col {
                Column::Int(_) => row
                    .try_get::<Option<i64>, _>(name.as_str())?
                    .map_or(KeyValue::Null, KeyValue::Int),
                _ => row
                    .try_get::<Option<String>, _>(name.as_str())?
                    .map_or(KeyValue::Null, KeyValue::Text),
            })
        })
        .collect()
}
