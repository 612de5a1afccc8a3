//! MDE's rate limits across replicas: the calls of each key counted per window in
//! `rate_windows` (UNLOGGED). Both windows' rows are locked for the decision, so the
//! count is exact however many replicas admit calls at once.

use appfence_core::ratelimit::{decide, window_start, Decision, RateLimitPolicy};
use appfence_core::Result;
use appfence_proto::Timestamp;
use sqlx::postgres::PgPool;

use super::{begin, commit, ctx, retry};

pub(super) async fn acquire(
    pool: &PgPool,
    key: &str,
    policy: &RateLimitPolicy,
    now: Timestamp,
) -> Result<Decision> {
    let windows = policy.windows();
    let keys = [format!("{key}|{}", windows[0].name), format!("{key}|{}", windows[1].name)];
    let starts = [window_start(now, windows[0].length), window_start(now, windows[1].length)];
    retry(|| async {
        let mut tx = begin(pool).await?;
        let mut counts = [0u32; 2];
        // Always minute then hour: one lock order for every replica.
        for i in 0..2 {
            let calls: i64 = sqlx::query_scalar(
                "INSERT INTO rate_windows (key, window_start, calls) VALUES ($1, $2, 0) \
                 ON CONFLICT (key, window_start) DO UPDATE SET calls = rate_windows.calls \
                 RETURNING calls",
            )
            .bind(&keys[i])
            .bind(starts[i])
            .fetch_one(&mut *tx)
            .await
            .map_err(ctx("cannot read a rate-limit counter"))?;
            counts[i] = calls.clamp(0, i64::from(u32::MAX)) as u32;
        }
        let decision = decide(policy, counts, now);
        if decision.admitted {
            for i in 0..2 {
                sqlx::query(
                    "UPDATE rate_windows SET calls = calls + 1 WHERE key = $1 AND window_start = $2",
                )
                .bind(&keys[i])
                .bind(starts[i])
                .execute(&mut *tx)
                .await
                .map_err(ctx("cannot count a call"))?;
            }
        }
        commit(tx).await?;
        Ok(decision)
    })
    .await
}

pub(super) async fn prune(pool: &PgPool, before: Timestamp) -> Result<u64> {
    retry(|| async {
        let done = sqlx::query("DELETE FROM rate_windows WHERE window_start < $1")
            .bind(before.ticks())
            .execute(pool)
            .await
            .map_err(ctx("cannot prune rate-limit counters"))?;
        Ok(done.rows_affected())
    })
    .await
}
