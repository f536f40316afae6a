//! Master-key rotation on SQLite: every secret read, then rewritten in one transaction.

use rusqlite::{params, Connection, TransactionBehavior};

use crate::*;

pub(super) fn all_sealed_secrets(c: &Connection) -> Result<Vec<SealedSecret>, StoreError> {
    let mut st = c.prepare(
        "SELECT tenant_id, name, nonce, ciphertext, previous_nonce, previous_ciphertext
         FROM secrets ORDER BY tenant_id, name",
    )?;
    let rows = st.query_map([], |r| {
        let prev: (Option<Vec<u8>>, Option<Vec<u8>>) = (r.get(4)?, r.get(5)?);
        Ok(SealedSecret {
            tenant_id: r.get(0)?,
            name: r.get(1)?,
            nonce: r.get(2)?,
            ciphertext: r.get(3)?,
            previous: match prev {
                (Some(n), Some(ct)) => Some((n, ct)),
                _ => None,
            },
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn reseal_secrets(
    c: &Connection,
    resealed: &[ResealedSecret],
    check_key: &str,
    check_value: &str,
) -> Result<(), StoreError> {
    // IMMEDIATE: the write lock from the start, so nothing changes between the count and the
    // updates. Dropped without commit on any error: nothing is changed.
    let tx = rusqlite::Transaction::new_unchecked(c, TransactionBehavior::Immediate)?;
    let count: i64 = tx.query_row("SELECT COUNT(*) FROM secrets", [], |r| r.get(0))?;
    if count != resealed.len() as i64 {
        return Err(changed());
    }
    for r in resealed {
        let (pn, pc) = r.new.previous.clone().unzip();
        let n = tx.execute(
            "UPDATE secrets SET nonce = ?3, ciphertext = ?4, previous_nonce = ?5, previous_ciphertext = ?6
             WHERE tenant_id = ?1 AND name = ?2 AND nonce = ?7 AND ciphertext = ?8",
            params![
                r.new.tenant_id,
                r.new.name,
                r.new.nonce,
                r.new.ciphertext,
                pn,
                pc,
                r.old.nonce,
                r.old.ciphertext
            ],
        )?;
        if n != 1 {
            return Err(changed());
        }
    }
    tx.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![check_key, check_value],
    )?;
    tx.commit()?;
    Ok(())
}

fn changed() -> StoreError {
    StoreError::Conflict(
        "the secrets changed while they were being re-encrypted; nothing was changed, run the rotation again (with the hub stopped)".into(),
    )
}
