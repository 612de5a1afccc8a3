//! One page of a tenant's collection: the OData filter and order translated by
//! `odata_sql` (every value bound), `$skip`/`$top` as bound LIMIT/OFFSET, and the count
//! read in the same snapshot as the page (a REPEATABLE READ read-only transaction).

use appfence_core::odata::{Field, Page, Query, MAX_TOP};
use appfence_core::rbac::DeviceScope;
use appfence_core::Result;
use sqlx::postgres::{PgArguments, PgPool, PgRow};
use sqlx::Postgres;

use super::{ctx, read, Fail};
use crate::odata_sql::{filter_sql, order_sql, Bind, Column, Dialect};

/// How one collection is stored.
pub(super) struct Collection<F> {
    /// A table or a subquery with an alias.
    pub table: &'static str,
    pub columns: &'static str,
    pub column: fn(F) -> Column,
    pub default_order: &'static str,
    pub tiebreak: &'static str,
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
        .map(|e| filter_sql(e, c.column, Dialect::Postgres, next));
    let binds = match &filter {
        Some(f) => {
            condition.push_str(&format!(" AND ({})", f.sql));
            f.binds.as_slice()
        }
        None => &[][..],
    };
    let after = next + binds.len();
    let order = if query.order_by.is_empty() {
        c.default_order.to_string()
    } else {
        format!("{}, {}", order_sql(&query.order_by, c.column), c.tiebreak)
    };
    let top = query.top.unwrap_or(MAX_TOP);
    let page_sql = format!(
        "SELECT {} FROM {} WHERE {condition} ORDER BY {order} LIMIT ${} OFFSET ${}",
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
        let rows = bind_all(sqlx::query(&page_sql).bind(tenant_id), groups, binds)
            .bind(i64::from(top) + 1)
            .bind(i64::from(query.skip))
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| Fail::Db(c.what, e))?;
        let more = rows.len() > top as usize;
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
        Ok(Page { items, total, more })
    })
    .await
}
