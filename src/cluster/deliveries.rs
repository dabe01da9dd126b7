//! The last deliveries to each tenant's phone system, shared by the replicas
//! (`presence::deliveries`): the leader delivers and writes each attempt, any replica reads
//! them. The table comes from the store's migrations (`migrations/0006_phone_deliveries.sql`);
//! the store deletes a tenant's rows with the tenant, and none is written for a tenant gone.

use serde_json::Value;
use sqlx::PgPool;

/// Writes one attempt and drops the tenant's older ones beyond `kept`.
pub async fn record(pool: &PgPool, tenant: &str, delivery: &Value, kept: i64) -> Result<(), sqlx::Error> {
    // Not for a tenant deleted meanwhile: a tenant re-created under its id starts without them.
    sqlx::query(
        "INSERT INTO phone_deliveries (tenant, data) SELECT $1, $2 WHERE EXISTS (SELECT 1 FROM tenants WHERE id = $1)",
    )
    .bind(tenant)
    .bind(delivery.to_string())
    .execute(pool)
    .await?;
    sqlx::query(
        "DELETE FROM phone_deliveries WHERE tenant = $1 AND id <= \
         (SELECT id FROM phone_deliveries WHERE tenant = $1 ORDER BY id DESC OFFSET $2 LIMIT 1)",
    )
    .bind(tenant)
    .bind(kept)
    .execute(pool)
    .await?;
    Ok(())
}

/// The tenant's last `kept` attempts as written, newest first (the reader parses them).
pub async fn list(pool: &PgPool, tenant: &str, kept: i64) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT data FROM phone_deliveries WHERE tenant = $1 ORDER BY id DESC LIMIT $2")
            .bind(tenant)
            .bind(kept)
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().map(|(data,)| data).collect())
}
