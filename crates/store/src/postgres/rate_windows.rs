//! MDE's rate limits across replicas: the calls of each key counted per window in
//! `rate_windows` (UNLOGGED), one statement per call.

use appfence_core::ratelimit::{decide, window_start, Decision, RateLimitPolicy};
use appfence_core::Result;
use appfence_proto::Timestamp;
use sqlx::postgres::PgPool;

use super::{ctx, retry};

/// Counts a call in one statement (a prepared one: its plan is kept). The minute
/// window's counter goes up only while under its limit, and the hour's only if the
/// minute's did and it is under its own, so the hour never counts a refused call. (When
/// the hour refuses, the minute has counted the call; that is never seen: the hour
/// refuses until it ends, and an hour ends on a minute boundary, with a fresh minute.)
/// Each upsert locks its row, minute then hour for every replica, so the counts are
/// exact however many replicas admit calls at once. Returns the counts after the call
/// (NULL where a window refused) and the hour's count as it was.
const COUNT_A_CALL: &str = "\
    WITH minute AS ( \
        INSERT INTO rate_windows AS w (key, window_start, calls) VALUES ($1, $2, 1) \
        ON CONFLICT (key, window_start) DO UPDATE SET calls = w.calls + 1 \
        WHERE w.calls < $3 \
        RETURNING calls \
    ), hour AS ( \
        INSERT INTO rate_windows AS w (key, window_start, calls) \
        SELECT $4, $5, 1 WHERE EXISTS (SELECT 1 FROM minute) \
        ON CONFLICT (key, window_start) DO UPDATE SET calls = w.calls + 1 \
        WHERE w.calls < $6 \
        RETURNING calls \
    ) \
    SELECT (SELECT calls FROM minute), (SELECT calls FROM hour), \
        (SELECT calls FROM rate_windows WHERE key = $4 AND window_start = $5)";

pub(super) async fn acquire(
    pool: &PgPool,
    key: &str,
    policy: &RateLimitPolicy,
    now: Timestamp,
) -> Result<Decision> {
    let windows = policy.windows();
    let keys = [
        format!("{key}|{}", windows[0].name),
        format!("{key}|{}", windows[1].name),
    ];
    let starts = [
        window_start(now, windows[0].length),
        window_start(now, windows[1].length),
    ];
    let limit = |i: usize| i64::from(windows[i].limit);
    retry(|| async {
        let (minute_after, hour_after, hour_before): (Option<i64>, Option<i64>, Option<i64>) =
            sqlx::query_as(COUNT_A_CALL)
                .bind(&keys[0])
                .bind(starts[0])
                .bind(limit(0))
                .bind(&keys[1])
                .bind(starts[1])
                .bind(limit(1))
                .fetch_one(pool)
                .await
                .map_err(ctx("cannot count a call"))?;
        // The counts before this call, as `decide` takes them; a refusing window is full.
        let before = match (minute_after, hour_after) {
            (Some(m), Some(h)) => [m - 1, h - 1],
            (Some(m), None) => [m - 1, limit(1)],
            (None, _) => [limit(0), hour_before.unwrap_or(0)],
        };
        let counts = before.map(|c| c.clamp(0, i64::from(u32::MAX)) as u32);
        Ok(decide(policy, counts, now))
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
