//! Master-key rotation on PostgreSQL: every secret read, then rewritten in one transaction.

use sqlx::{PgPool, Row};

use crate::*;

pub(super) async fn all_sealed_secrets(pool: &PgPool) -> Result<Vec<SealedSecret>, StoreError> {
    let rows = sqlx::query(
        "SELECT tenant_id, name, nonce, ciphertext, previous_nonce, previous_ciphertext
         FROM secrets ORDER BY tenant_id, name",
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            let prev: (Option<Vec<u8>>, Option<Vec<u8>>) = (r.try_get(4)?, r.try_get(5)?);
            Ok(SealedSecret {
                tenant_id: r.try_get(0)?,
                name: r.try_get(1)?,
                nonce: r.try_get(2)?,
                ciphertext: r.try_get(3)?,
                previous: match prev {
                    (Some(n), Some(ct)) => Some((n, ct)),
                    _ => None,
                },
            })
        })
        .collect()
}

pub(super) async fn reseal_secrets(
    pool: &PgPool,
    resealed: &[ResealedSecret],
    check_key: &str,
    check_value: &str,
) -> Result<(), StoreError> {
    // Rolled back when dropped without commit: any error changes nothing.
    let mut tx = pool.begin().await?;
    // No secret may be added, changed or deleted until the commit.
    sqlx::query("LOCK TABLE secrets IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM secrets")
        .fetch_one(&mut *tx)
        .await?;
    if count != resealed.len() as i64 {
        return Err(changed());
    }
    for r in resealed {
        let (pn, pc) = r.new.previous.clone().unzip();
        let n = sqlx::query(
            "UPDATE secrets SET nonce = $3, ciphertext = $4, previous_nonce = $5, previous_ciphertext = $6
             WHERE tenant_id = $1 AND name = $2 AND nonce = $7 AND ciphertext = $8",
        )
        .bind(&r.new.tenant_id)
        .bind(&r.new.name)
        .bind(&r.new.nonce)
        .bind(&r.new.ciphertext)
        .bind(pn)
        .bind(pc)
        .bind(&r.old.nonce)
        .bind(&r.old.ciphertext)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n != 1 {
            return Err(changed());
        }
    }
    sqlx::query(
        "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
    )
    .bind(check_key)
    .bind(check_value)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

fn changed() -> StoreError {
    StoreError::Conflict(
        "the secrets changed while they were being re-encrypted; nothing was changed, run the rotation again (with the hub stopped)".into(),
    )
}
