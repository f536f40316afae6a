//! `cistern secrets rotate-master-key` (issue 16, item 13): every secret of every tenant, current
//! and previous values, reads back identically under the new key; the old key opens none of them;
//! a failure changes nothing; on SQLite and PostgreSQL.

mod common;

use std::path::Path;

use cistern_server::secrets::{self, MasterKey};
use cistern_store::Store;
use common::{backends, TestApp};
use serde_json::json;

async fn put(app: &TestApp, key: &str, name: &str, value: &str) -> u16 {
    app.client
        .put(app.url(&format!("/api/v1/secrets/{name}")))
        .header("Authorization", format!("Bearer {key}"))
        .json(&json!({ "value": value }))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

type Clear = Vec<(String, String, Option<(Vec<u8>, Option<Vec<u8>>)>)>;

/// Every secret in the clear under `key`, or the first error.
async fn read_all(store: &dyn Store, key: &MasterKey) -> Result<Clear, String> {
    let mut out = Vec::new();
    for s in store.all_sealed_secrets().await.unwrap() {
        let v = secrets::reveal(store, key, &s.tenant_id, &s.name).await?;
        // reveal() drops a previous value whose grace has passed; check it directly too.
        if let Some((n, c)) = &s.previous {
            key.decrypt(&secrets::context(&s.tenant_id, &s.name), n, c)?;
        }
        out.push((s.tenant_id, s.name, v));
    }
    Ok(out)
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn rotation_reseals_every_secret_and_the_old_key_opens_none() {
    for backend in backends() {
        let mut app = TestApp::spawn(&backend).await;
        let admin = app.key_for("default", &[cistern_store::Scope::Admin]).await;
        let other = app.key_for("acme", &[cistern_store::Scope::Admin]).await;
        for (k, name, value) in [
            (&admin, "jenkins", "deployer:11aa"),
            (&admin, "hook", "first"),
            (&admin, "hook", "second"), // keeps "first" as the previous value
            (&other, "hook", "acme's own"),
        ] {
            assert!(matches!(put(&app, k, name, value).await, 200 | 201));
        }
        let file = Path::new(&app.master_key_file).to_owned();
        let old = MasterKey::load(None, &file).unwrap();
        let store = app.store.clone();
        let before = read_all(store.as_ref(), &old).await.unwrap();
        assert_eq!(before.len(), 3);
        let old_text = std::fs::read_to_string(&file).unwrap();
        // The hub is stopped, as the README asks.
        app.shutdown().await;

        // A secret that does not open (tampered): the rotation fails and changes nothing.
        let t = store.tenant_by_slug("default").await.unwrap().unwrap();
        let grace = time::OffsetDateTime::now_utc();
        store
            .put_secret(&t.id, "broken", &[0u8; 12], b"garbage", grace)
            .await
            .unwrap();
        let e = secrets::rotate_master_key(store.as_ref(), &file)
            .await
            .unwrap_err();
        assert!(e.contains("broken") && e.contains("unchanged"), "{e}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), old_text);
        assert!(!secrets::sibling(&file, ".new").exists());
        assert!(!secrets::sibling(&file, ".old").exists());
        old.check(store.as_ref()).await.unwrap();
        assert!(store.delete_secret(&t.id, "broken").await.unwrap());
        assert_eq!(read_all(store.as_ref(), &old).await.unwrap(), before);

        let n = secrets::rotate_master_key(store.as_ref(), &file)
            .await
            .unwrap();
        assert_eq!(n, 3);
        assert_ne!(std::fs::read_to_string(&file).unwrap(), old_text);
        #[cfg(unix)]
        assert_eq!(mode(&file), 0o600);
        assert!(!secrets::sibling(&file, ".new").exists());
        assert!(
            !secrets::sibling(&file, ".old").exists(),
            "the old key is gone once done"
        );
        let new = MasterKey::load(None, &file).unwrap();
        new.check(store.as_ref()).await.unwrap();
        assert_eq!(read_all(store.as_ref(), &new).await.unwrap(), before);
        // The old key opens nothing, and a hub started with it refuses to start.
        assert!(old.check(store.as_ref()).await.is_err());
        for s in store.all_sealed_secrets().await.unwrap() {
            let ctx = secrets::context(&s.tenant_id, &s.name);
            assert!(old.decrypt(&ctx, &s.nonce, &s.ciphertext).is_err());
            if let Some((n, c)) = &s.previous {
                assert!(old.decrypt(&ctx, n, c).is_err());
            }
        }
        let old_hex = old_text.trim().to_owned();
        let refused = cistern_server::Application::build(cistern_server::Config {
            listen: "127.0.0.1:0".into(),
            database_url: app.database_url.clone(),
            master_key: Some(old_hex),
            ..cistern_server::Config::default()
        })
        .await;
        assert!(refused.is_err(), "a hub with the old key must not start");

        // Restarted with the key file, the hub reads and writes secrets as before.
        let app = app.restart(|_| {}).await;
        assert_eq!(put(&app, &admin, "jenkins", "deployer:22bb").await, 200);
        let v = secrets::reveal(app.store.as_ref(), &new, &t.id, "jenkins")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(v.0, b"deployer:22bb");
        assert_eq!(v.1.as_deref(), Some(&b"deployer:11aa"[..]));
    }
}

#[tokio::test]
async fn a_hub_still_holding_the_old_key_refuses_to_seal_with_it() {
    let app = TestApp::spawn(&common::Backend::Sqlite).await;
    let admin = app.key_for("default", &[cistern_store::Scope::Admin]).await;
    assert_eq!(put(&app, &admin, "hook", "v1").await, 201);
    let file = Path::new(&app.master_key_file).to_owned();
    secrets::rotate_master_key(app.store.as_ref(), &file)
        .await
        .unwrap();
    // The running hub was not restarted: sealing under its old key would lose the value.
    let resp = app
        .client
        .put(app.url("/api/v1/secrets/hook"))
        .header("Authorization", format!("Bearer {admin}"))
        .json(&json!({ "value": "v2" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
    assert!(resp.text().await.unwrap().contains("restart"));
}

#[tokio::test]
async fn an_interrupted_rotation_is_completed_at_the_next_start() {
    for backend in backends() {
        let mut app = TestApp::spawn(&backend).await;
        let admin = app.key_for("default", &[cistern_store::Scope::Admin]).await;
        assert_eq!(put(&app, &admin, "hook", "value").await, 201);
        app.shutdown().await;
        let file = Path::new(&app.master_key_file).to_owned();
        let old = MasterKey::load(None, &file).unwrap();
        // The database part done, then the process stopped before the rename.
        let new_file = secrets::sibling(&file, ".new");
        let new = MasterKey::load(None, &new_file).unwrap();
        secrets::reseal_all(app.store.as_ref(), &old, &new)
            .await
            .unwrap();
        let app = app.restart(|_| {}).await;
        assert!(!new_file.exists(), "the new key file was moved into place");
        let t = app.store.tenant_by_slug("default").await.unwrap().unwrap();
        let key = MasterKey::load(None, &file).unwrap();
        let v = secrets::reveal(app.store.as_ref(), &key, &t.id, "hook")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(v.0, b"value");
    }
}

#[tokio::test]
async fn a_reseal_that_meets_a_changed_secret_changes_nothing() {
    for backend in backends() {
        let app = TestApp::spawn(&backend).await;
        let admin = app.key_for("default", &[cistern_store::Scope::Admin]).await;
        assert_eq!(put(&app, &admin, "a", "1").await, 201);
        assert_eq!(put(&app, &admin, "b", "2").await, 201);
        let store = app.store.clone();
        let sealed = store.all_sealed_secrets().await.unwrap();
        let resealed =
            |sealed: &[cistern_store::SealedSecret]| -> Vec<cistern_store::ResealedSecret> {
                sealed
                    .iter()
                    .map(|s| cistern_store::ResealedSecret {
                        old: s.clone(),
                        new: cistern_store::SealedSecret {
                            ciphertext: b"new".to_vec(),
                            ..s.clone()
                        },
                    })
                    .collect()
            };
        // "b" set again after it was read: its row is not what the rotation read.
        assert_eq!(put(&app, &admin, "b", "3").await, 200);
        let e = store
            .reseal_secrets(resealed(&sealed), "master_key_check", "x")
            .await
            .unwrap_err();
        assert!(matches!(e, cistern_store::StoreError::Conflict(_)), "{e}");
        // One secret fewer than read: refused too.
        let e = store
            .reseal_secrets(resealed(&sealed[..1]), "master_key_check", "x")
            .await
            .unwrap_err();
        assert!(matches!(e, cistern_store::StoreError::Conflict(_)), "{e}");
        // Nothing changed: "a" (first in the transaction) still opens, and so does the check.
        let key = MasterKey::load(None, Path::new(&app.master_key_file)).unwrap();
        key.check(store.as_ref()).await.unwrap();
        let t = store.tenant_by_slug("default").await.unwrap().unwrap();
        let a = secrets::reveal(store.as_ref(), &key, &t.id, "a")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(a.0, b"1");
    }
}
